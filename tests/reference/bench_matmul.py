#!/usr/bin/env python3
"""The machine's own fp32 matmul rate, the ceiling `cargo xtask bench` sets spindle's forward
against: `torch.mm` of two n×n fp32 matrices on the CPU, with the same libtorch build spindle
links (torch 2.13.0, whose BLAS is the same MKL/oneDNN), at `--threads`. One warm-up, then
`--repeats` timed products; the median and the best are reported as GFLOP/s (2·n³ per product).

With `--linear OUT,IN` (repeatable) and `--m M` (repeatable) it also measures the rate of a model's
own linears, `F.linear(x, w)` with `x` `[M, IN]` and `w` `[OUT, IN]` as a forward pass computes
them, at each row count M (tokens per pass: a window of 512 tokens is M = 512, four windows
batched are 2048). Each M's figure is the median over repeats of the whole set's FLOPs over its
time, so shapes weigh as they do in the forward: the GEMM efficiency against M, which bounds what
batching windows can gain.

Versions: the pinned ones of tests/golden/requirements.txt; recorded in the JSON.

    python tests/reference/bench_matmul.py --n 2048 --threads 1 --json out.json
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, action="append", help="square size (repeatable; default 1024 and 2048)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--linear", action="append", default=[], help="OUT,IN of a linear (repeatable)")
    ap.add_argument("--m", type=int, action="append", default=[], help="rows of the linears' input (repeatable)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = args.n or [1024, 2048]
    out = {"threads": args.threads, "repeats": args.repeats, "sizes": {},
           "versions": {"python": sys.version.split()[0], "torch": torch.__version__}}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            rates.append(2 * n ** 3 / (time.perf_counter() - start) / 1e9)
        out["sizes"][str(n)] = {"gflops": rates, "median": statistics.median(rates), "best": max(rates)}
    out["gflops"] = max(v["median"] for v in out["sizes"].values())
    linears = [tuple(int(x) for x in spec.split(",")) for spec in args.linear]
    if linears and args.m:
        ws = [torch.randn(o, i) for o, i in linears]
        out["linears"] = {"shapes": [list(s) for s in linears], "m": {}}
        for m in args.m:
            xs = {i: torch.randn(m, i) for _, i in linears}
            flops = sum(2 * m * o * i for o, i in linears)
            for w in ws:
                torch.nn.functional.linear(xs[w.shape[1]], w)
            rates = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                for w in ws:
                    torch.nn.functional.linear(xs[w.shape[1]], w)
                rates.append(flops / (time.perf_counter() - start) / 1e9)
            out["linears"]["m"][str(m)] = {"gflops": rates, "median": statistics.median(rates), "best": max(rates)}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"gflops": out["gflops"]}))


if __name__ == "__main__":
    main()
