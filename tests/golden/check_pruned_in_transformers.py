#!/usr/bin/env python3
"""Loads spindle-pruned checkpoints in transformers and compares logits with spindle's.

What: for every directory under DIR (made by ``SPINDLE_KEEP_PRUNED=DIR cargo test -p spindle
--test families``), loads it with ``AutoModelForCausalLM.from_pretrained`` (fp32, eager
attention), fails on any missing, unexpected or mismatched tensor, runs the golden
``input_ids`` stored beside it, and compares the logits with ``spindle_logits.safetensors``
(spindle's forward of the same directory). Prints one line per directory and exits 1 if any
differs by more than 1e-4 (max abs) or does not load cleanly.

Directories converted from GGUF (``SPINDLE_KEEP_CONVERTED=DIR cargo test -p spindle --test
convert``) also carry ``spindle_tokens.json`` (spindle's encodings of the sample texts); then the
directory's tokenizer is loaded with ``AutoTokenizer`` too and must encode every sample alike.

Why: the acceptance of issue #19 asks that every pruned directory loads in transformers with
the logits spindle computes, and that converted directories load there as well. Tests never need Python, so this is run by hand and its output is
recorded in tests/golden/README.md.

Versions: the venv of make_golden.py (torch 2.13.0, transformers 5.24.0, see requirements.txt).

Rerun:
    SPINDLE_KEEP_PRUNED=/tmp/pruned cargo test -p spindle --test families
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python \
        tests/golden/check_pruned_in_transformers.py /tmp/pruned
"""

import json
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

TOLERANCE = 1e-4


def check(d: Path) -> bool:
    ref = load_file(str(d / "spindle_logits.safetensors"))
    model, info = AutoModelForCausalLM.from_pretrained(
        str(d), dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
        {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    model.eval()
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    diff = (logits - ref["logits"]).abs().max().item()
    tokens = d / "spindle_tokens.json"
    if tokens.is_file():
        tok = AutoTokenizer.from_pretrained(str(d))
        for sample in json.loads(tokens.read_text()):
            got = tok(sample["text"])["input_ids"]
            if got != sample["input_ids"]:
                problems.setdefault("tokens", []).append(sample["text"])
    ok = not problems and diff <= TOLERANCE
    print(f"{d.name:32s} max|diff| {diff:.2e} {'ok' if ok else 'FAIL ' + str(problems)}")
    return ok


def main() -> int:
    root = Path(sys.argv[1])
    dirs = sorted(p for p in root.iterdir() if (p / "spindle_logits.safetensors").is_file())
    if not dirs:
        print(f"{root}: no pruned directories", file=sys.stderr)
        return 1
    results = [check(d) for d in dirs]
    print(f"{sum(results)} of {len(results)} load in transformers {__import__('transformers').__version__} with spindle's logits")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
