"""Compares two pruned Hugging Face checkpoints tensor by tensor (e.g. spindle's against the
reference's): how many tensors are bit-identical, and per decoder block the number of weights
whose zero/non-zero state differs in each linear.

usage: python docs/results/prune_reference/compare.py DIR_A DIR_B
(numpy and safetensors; any versions: it only reads the files.)
"""
import glob
import re
import sys

import numpy as np
from safetensors.numpy import load_file


def load(d):
    out = {}
    for f in sorted(glob.glob(f"{d}/*.safetensors")):
        out.update(load_file(f))
    return out


a, b = load(sys.argv[1]), load(sys.argv[2])
if sorted(a) != sorted(b):
    sys.exit(f"the checkpoints hold different tensors: {sorted(set(a) ^ set(b))[:5]} ...")
same = sum(1 for k in a if a[k].shape == b[k].shape and np.array_equal(a[k], b[k]))
print(f"{same} of {len(a)} tensors bit-identical")
blocks = {}
for k in a:
    m = re.match(r".*layers\.(\d+)\.(.+)\.weight$", k)
    if m and a[k].ndim == 2:
        blocks.setdefault(int(m.group(1)), []).append((m.group(2), int(((a[k] == 0) != (b[k] == 0)).sum())))
total = 0
for i in sorted(blocks):
    row = sorted(blocks[i])
    total += sum(d for _, d in row)
    print(i, " ".join(f"{n}={d}" for n, d in row))
print("differing mask entries in all decoder linears:", total)
