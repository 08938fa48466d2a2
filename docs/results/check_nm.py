#!/usr/bin/env python3
"""Checks the N:M structure of a pruned checkpoint against its dense original: in every decoder
linear, every group of M consecutive inputs holds at most N nonzeros, and a group holds fewer only
where the dense weights already had zeros; every other tensor is bit-identical to the dense one.

    python docs/results/check_nm.py DENSE_DIR PRUNED_DIR [N M]
(safetensors + numpy; used for docs/results/prune_smollm2.md)
"""
import sys

import numpy as np
from safetensors.numpy import load_file

dense_dir, pruned_dir = sys.argv[1], sys.argv[2]
n, m = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (2, 4)
dense = load_file(f"{dense_dir}/model.safetensors")
pruned = {}
import glob
for f in sorted(glob.glob(f"{pruned_dir}/*.safetensors")):
    pruned.update(load_file(f))
assert set(dense) == set(pruned), set(dense) ^ set(pruned)
linears = groups_total = groups_extra = unexplained = changed = 0
for name, w in pruned.items():
    if ".layers." in name and name.endswith("_proj.weight"):
        linears += 1
        g = w.reshape(w.shape[0], -1, m)
        nz = (g != 0).sum(-1)
        assert nz.max() <= n, f"{name}: a group keeps {nz.max()} of {m}"
        extra = nz < n
        groups_total += nz.size
        groups_extra += int(extra.sum())
        # A group with fewer than n nonzeros must contain a weight that was zero in the dense model.
        dense_zero = (dense[name].reshape(w.shape[0], -1, m) == 0).any(-1)
        unexplained += int((extra & ~dense_zero).sum())
    elif not np.array_equal(w, dense[name]):
        changed += 1
        print("changed:", name)
print(f"{linears} decoder linears, {groups_total} groups of {m}: every group keeps at most {n}; "
      f"{groups_extra} keep fewer, {unexplained} of them not explained by zeros of the dense model; "
      f"{changed} other tensors changed")
sys.exit(1 if unexplained or changed else 0)
