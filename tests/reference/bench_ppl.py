#!/usr/bin/env python3
"""Perplexity-evaluation throughput of Hugging Face transformers, the reference side of
`cargo xtask bench` (spindle's side is `spindle eval --max-windows K`, timed the same way).

The loop is the SparseGPT/Wanda perplexity loop (see tests/golden/ppl/make_ppl_golden.py): the
WikiText-2 raw test text joined with "\\n\\n", tokenized once, non-overlapping windows of
`--seqlen`, one forward per window, fp32 loss. Only the window loop is timed (model load and
tokenization are not, on either side). transformers' default attention (sdpa) is used: this is a
speed comparison against transformers as a user runs it; the exactness comparison lives in
tests/golden/ppl (eager).

Versions: the pinned ones of tests/golden/requirements.txt (torch 2.13.0 CPU use, transformers
5.24.0, tokenizers 0.23.3, pyarrow); they are recorded in the JSON.

    python tests/reference/bench_ppl.py --model DIR --data ../shared/data --seqlen 512 \\
        --windows 16 --threads 1 --json out.json
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--windows", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(args.threads)
    import pyarrow.parquet as pq
    import tokenizers
    import transformers

    text_file = Path(args.data) / "wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"
    text = "\n\n".join(pq.read_table(text_file).column("text").to_pylist())
    tok = tokenizers.Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    ids = torch.tensor(tok.encode(text).ids, dtype=torch.long).unsqueeze(0)
    n = min(ids.numel() // args.seqlen, args.windows)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.eval()
    nlls = []
    with torch.no_grad():
        start = time.perf_counter()
        for i in range(n):
            batch = ids[:, i * args.seqlen:(i + 1) * args.seqlen]
            logits = model(batch).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1, :].reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))
            nlls.append(loss.float().item() * args.seqlen)
        seconds = time.perf_counter() - start
    out = {
        "windows": n, "seqlen": args.seqlen, "seconds": seconds,
        "tokens_per_second": n * args.seqlen / seconds,
        "ppl": math.exp(sum(nlls) / (n * args.seqlen)),
        "threads": args.threads, "attn_implementation": model.config._attn_implementation,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "tokenizers": tokenizers.__version__},
    }
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("windows", "seconds", "tokens_per_second", "ppl")}))


if __name__ == "__main__":
    main()
