#!/usr/bin/env python3
"""Reference calibration windows, drawn exactly as the Wanda and SparseGPT loaders draw them.

The loaders (Wanda `lib/data.py` get_c4, SparseGPT `datautils.py` get_c4) do:

    random.seed(seed)
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(traindata) - 1)
            trainenc = tokenizer(traindata[i]['text'], return_tensors='pt')
            if trainenc.input_ids.shape[1] > seqlen:
                break
        i = random.randint(0, trainenc.input_ids.shape[1] - seqlen - 1)
        j = i + seqlen
        inp = trainenc.input_ids[:, i:j]

Offline there is no C4 train shard, so the pool is documents [0, 1000) of
c4/en/c4-validation-sample-2k.parquet (spindle's convention; every report says so). A fast
tokenizer's `encode(text)` with its default special-token handling is what `tokenizer(text)`
returns in transformers.

Writes calib_golden.json: for each case, the (document index, token offset) of every window.
Cases:
  * stories260K's tokenizer (tests/golden/llama2c/tokenizer.json, adds BOS), seqlen 256,
    32 samples, seed 0 — fast, always tested;
  * SmolLM2's converted tokenizer (no BOS), seqlen 2048, 128 samples, seed 0 — the issue's
    acceptance case, tested with the real model (SPINDLE_SLOW_TESTS=1).

Versions: CPython 3.11 (random), tokenizers==0.23.3, pyarrow==26.0.1.
Rerun from the repo root:
    /root/.cache/spindle/golden-venv/bin/python tests/golden/calib/make_calib_golden.py \
        --data ../shared/data --smollm2-tokenizer ~/.cache/spindle/models/smollm2-135m/tokenizer.json
"""
import argparse
import hashlib
import json
import random
import sys
from pathlib import Path

import pyarrow.parquet as pq
import tokenizers

assert sys.version_info[:2] == (3, 11), sys.version
assert tokenizers.__version__ == "0.23.3", tokenizers.__version__

HERE = Path(__file__).resolve().parent


def windows(docs, tok, nsamples, seqlen, seed):
    random.seed(seed)
    out = []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            ids = tok.encode(docs[i]).ids
            if len(ids) > seqlen:
                break
        j = random.randint(0, len(ids) - seqlen - 1)
        out.append([i, j, ids[j]])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--smollm2-tokenizer", required=True)
    a = ap.parse_args()
    c4 = Path(a.data) / "c4/en/c4-validation-sample-2k.parquet"
    docs = pq.read_table(c4, columns=["text"]).column("text").to_pylist()[:1000]
    cases = []
    for name, tok_path, nsamples, seqlen, seed in [
        ("stories260k", HERE.parent / "llama2c/tokenizer.json", 32, 256, 0),
        ("smollm2", Path(a.smollm2_tokenizer).expanduser(), 128, 2048, 0),
    ]:
        tok = tokenizers.Tokenizer.from_file(str(tok_path))
        w = windows(docs, tok, nsamples, seqlen, seed)
        long_docs = sum(1 for d in docs if len(tok.encode(d).ids) > seqlen)
        cases.append({
            "name": name,
            "tokenizer_sha256": hashlib.sha256(Path(tok_path).read_bytes()).hexdigest(),
            "nsamples": nsamples, "seqlen": seqlen, "seed": seed,
            "pool": "documents [0, 1000) of c4/en/c4-validation-sample-2k.parquet",
            "documents_longer_than_seqlen": long_docs,
            "windows": [{"doc": i, "offset": j, "first_id": f} for i, j, f in w],
        })
    out = {"python": sys.version.split()[0], "tokenizers": tokenizers.__version__, "cases": cases}
    (HERE / "calib_golden.json").write_text(json.dumps(out, indent=1) + "\n")
    for c in cases:
        print(c["name"], c["documents_longer_than_seqlen"], c["windows"][:3])


if __name__ == "__main__":
    main()
