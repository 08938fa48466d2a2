#!/usr/bin/env python3
"""WikiText-2 perplexity golden data for spindle's eval crate (SparseGPT/Wanda protocol).

What: exact reproduction of the perplexity loop used by SparseGPT (`datautils.get_wikitext2` +
`llama_eval`) and Wanda (`lib/eval.py::eval_ppl_wikitext`) on SmolLM2-135M-Instruct (spindle's fp32
conversion), over the FULL WikiText-2 raw v1 test split, for seqlen 512 and 2048.
Why: spindle's Rust evaluator must reproduce the literature's number bit-for-bit in protocol and to
~1e-4 relative in value; the per-window NLLs let a mismatch be localised to a window.

Protocol (as in the papers' code):
    text = "\\n\\n".join(test["text"])
    ids  = tokenizer(text, return_tensors="pt").input_ids         # AutoTokenizer of the model dir
    nsamples = ids.numel() // seqlen                                # tail tokens dropped
    for i in range(nsamples):
        batch = ids[:, i*seqlen:(i+1)*seqlen]
        logits = model(batch).logits
        shift_logits = logits[:, :-1, :]; shift_labels = batch[:, 1:]
        loss = CrossEntropyLoss()(shift_logits.reshape(-1, V).float(), shift_labels.reshape(-1))
        nll = loss.float() * seqlen                                 # NB: * seqlen, not seqlen-1
    ppl = exp(sum(nlls) / (nsamples * seqlen))
Model fp32, attn_implementation="eager", eval(), torch.no_grad(), CPU, one thread.

Versions: python 3.11.7, torch 2.13.0+cu130 (PyPI wheel, run on CPU), transformers 5.24.0, tokenizers 0.23.3 (venv
/root/.cache/spindle/golden-venv). Exact versions and file hashes are written into ppl_golden.json.

Rerun from the repo root (on one thread: seqlen 512 ~20 min, seqlen 2048 ~45 min):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 \\
      /root/.cache/spindle/golden-venv/bin/python tests/golden/ppl/make_ppl_golden.py --seqlen 512
    ... --seqlen 2048      (results are merged into ppl_golden.json; partial results are written
                            after every window, with "complete": false until the run ends)
    ... --sdpa-check       (compares eager vs sdpa NLL on window 0 at seqlen 512)
"""
import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pyarrow.parquet as pq
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_DIR = "/tmp/slowcache/models/smollm2-135m"
DATA = "/work/shared/data/wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "ppl_golden.json")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_out():
    if os.path.exists(OUT):
        with open(OUT) as f:
            return json.load(f)
    return {}


def save_out(d):
    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f, indent=1)
        f.write("\n")
    os.replace(tmp, OUT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqlen", type=int)
    ap.add_argument("--sdpa-check", action="store_true")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run from the windows already in the output file "
                         "(their float32 NLLs are exact in JSON, so the sums are unchanged)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tok = AutoTokenizer.from_pretrained(MODEL_DIR)
    rows = pq.read_table(DATA).column("text").to_pylist()
    text = "\n\n".join(rows)
    enc = tok(text, return_tensors="pt")
    ids = enc.input_ids
    n_tokens = ids.numel()
    bos_added = tok.bos_token_id is not None and int(ids[0, 0]) == tok.bos_token_id
    # also check via the tokenizer on a short string
    short = tok("Hello world").input_ids
    print(f"tokens={n_tokens} first_ids={ids[0, :8].tolist()} bos_id={tok.bos_token_id} "
          f"bos_added={bos_added} short={short}", flush=True)

    d = load_out()
    d["meta"] = {
        "protocol": "SparseGPT/Wanda wikitext2: '\\n\\n'.join(test.text); tokenizer(text).input_ids; "
                    "nsamples=numel//seqlen; nll_i = CE(mean over seqlen-1 shifted tokens) * seqlen; "
                    "ppl = exp(sum(nll)/(nsamples*seqlen))",
        "model_dir": MODEL_DIR,
        "model_safetensors_sha256": sha256(os.path.join(MODEL_DIR, "model.safetensors")),
        "tokenizer_json_sha256": sha256(os.path.join(MODEL_DIR, "tokenizer.json")),
        "data": DATA,
        "data_sha256": sha256(DATA),
        "data_rows": len(rows),
        "text_chars": len(text),
        "n_tokens": n_tokens,
        "bos_added": bool(bos_added),
        "first_16_ids": ids[0, :16].tolist(),
        "last_16_ids": ids[0, -16:].tolist(),
        "tokenizer_class": type(tok).__name__,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
        },
        "dtype": "float32",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
    }
    save_out(d)

    if args.sdpa_check:
        seqlen = 512
        batch = ids[:, :seqlen]
        res = {}
        for impl in ("eager", "sdpa"):
            m = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32,
                                                     attn_implementation=impl).eval()
            with torch.no_grad():
                lg = m(batch).logits
            V = lg.shape[-1]
            loss = torch.nn.CrossEntropyLoss()(lg[:, :-1, :].reshape(-1, V).float(),
                                               batch[:, 1:].reshape(-1))
            res[impl] = (loss.float() * seqlen).item()
            res[impl + "_logits"] = lg
        diff = abs(res["eager"] - res["sdpa"])
        maxlog = (res["eager_logits"] - res["sdpa_logits"]).abs().max().item()
        print(f"sdpa check: eager nll={res['eager']!r} sdpa nll={res['sdpa']!r} |d|={diff} "
              f"max|dlogit|={maxlog}", flush=True)
        d = load_out()
        d["sdpa_check"] = {"seqlen": seqlen, "window": 0, "nll_eager": res["eager"],
                           "nll_sdpa": res["sdpa"], "abs_diff_nll": diff,
                           "rel_diff_nll": diff / abs(res["eager"]),
                           "max_abs_logit_diff": maxlog}
        save_out(d)
        return

    seqlen = args.seqlen
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    assert model.config._attn_implementation == "eager"
    nsamples = n_tokens // seqlen
    key = f"seqlen_{seqlen}"
    nlls = []
    nll_t = []
    t0 = time.time()
    first = 0
    prev = load_out().get(key)
    if args.resume and prev and not prev.get("complete") and prev.get("nsamples") == nsamples:
        nlls = list(prev["nll"])
        nll_t = [torch.tensor(x, dtype=torch.float32) for x in nlls]
        first = len(nlls)
        t0 -= prev.get("elapsed_s", 0.0)
        print(f"[{key}] resuming at window {first}", flush=True)
    with torch.no_grad():
        for i in range(first, nsamples):
            batch = ids[:, i * seqlen:(i + 1) * seqlen]
            logits = model(batch).logits
            shift_logits = logits[:, :-1, :]
            shift_labels = batch[:, 1:]
            V = shift_logits.shape[-1]
            loss = torch.nn.CrossEntropyLoss()(shift_logits.reshape(-1, V).float(),
                                               shift_labels.reshape(-1))
            nll = loss.float() * seqlen
            nlls.append(nll.item())
            nll_t.append(nll)
            done = i + 1 == nsamples
            if done or i % 4 == 0:
                el = time.time() - t0
                partial_ppl = math.exp(sum(nlls) / (len(nlls) * seqlen))
                d = load_out()
                d[key] = {
                    "seqlen": seqlen,
                    "nsamples": nsamples,
                    "windows_done": len(nlls),
                    "complete": done,
                    "nll": nlls,
                    # torch-style: sum float32 tensors; also reported in float64
                    # exactly as SparseGPT/Wanda: float32 torch.exp(torch.stack(nlls).sum() / (n*seqlen))
                    "ppl": torch.exp(torch.stack(nll_t).sum() / (len(nll_t) * seqlen)).item(),
                    "ppl_float64_sum": partial_ppl,
                    "elapsed_s": el,
                }
                save_out(d)
                print(f"[{key}] {len(nlls)}/{nsamples} nll={nll.item():.6f} ppl~{partial_ppl:.6f} "
                      f"{el:.0f}s", flush=True)
    print(f"[{key}] done ppl={d[key]['ppl']!r} in {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
