"""Checks that tests/golden/llama2c/tokenizer.json (written by spindle's
`Llama2cTokenizer::to_tokenizer_json`, kept equal to it by a unit test in
crates/spindle-model/src/llama2c.rs) encodes like run.c's `encode`, using Hugging Face
`tokenizers` on the reference texts of encode_reference.json.

Versions: Python 3.11, tokenizers 0.23.3 (the golden venv, see ../requirements.txt). Run from the
repo root:
    /root/.cache/spindle/golden-venv/bin/python tests/golden/llama2c/check_tokenizer_json.py [DATA_DIR]
Writes check_tokenizer_json.txt beside this script; exits non-zero on any mismatch.
"""
import json
import sys
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

here = Path(__file__).parent
data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data")
ref = json.loads((here / "encode_reference.json").read_text(encoding="utf-8"))
tok = Tokenizer.from_file(str(here / "tokenizer.json"))
sample = (data_dir / "models/stories260K/tinystories-sample.txt").read_text(encoding="utf-8").strip()

cases = [
    ("Once upon a time", ref["once_upon_a_time_bos"]),
    ("tinystories-sample.txt stripped", ref["sample_bos"], sample),
    ("unicode text", ref["unicode_bos"], ref["unicode_text"]),
]
lines = [f"tokenizers {tokenizers.__version__}"]
ok = True
for case in cases:
    name, expected = case[0], case[1]
    text = case[2] if len(case) > 2 else name
    got = tok.encode(text).ids
    same = got == expected
    first_diff = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    lines.append(f"{name}: {len(got)} ids, {'identical to' if same else 'DIFFERENT from (first at ' + str(first_diff) + ')'} run.c encode (bos)")
    decoded = tok.decode(got, skip_special_tokens=True)
    lines.append(f"{name}: decode {'round-trips' if decoded == text else 'DIFFERS'}")
    ok = ok and same and decoded == text
out = "\n".join(lines) + "\n"
(here / "check_tokenizer_json.txt").write_text(out, encoding="utf-8")
print(out, end="")
sys.exit(0 if ok else 1)
