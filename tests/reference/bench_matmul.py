#!/usr/bin/env python3
"""The machine's own fp32 matmul rate, the ceiling `cargo xtask bench` sets spindle's forward
against: `torch.mm` of two n×n fp32 matrices on the CPU, with the same libtorch build spindle
links (torch 2.13.0, whose BLAS is the same MKL/oneDNN), at `--threads`. One warm-up, then
`--repeats` timed products; the median and the best are reported as GFLOP/s (2·n³ per product).

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
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"gflops": out["gflops"]}))


if __name__ == "__main__":
    main()
