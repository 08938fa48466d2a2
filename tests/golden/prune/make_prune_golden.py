#!/usr/bin/env python3
"""Reference masks, statistics and pruned weights for spindle's pruning algorithms.

What it produces
----------------
``tests/golden/prune/prune_golden.safetensors`` (about 1 MB), holding, for three seeded
random cases ``a`` (W [16,64], X [4,8,64]), ``b`` (W [24,256], X [6,16,256]: two SparseGPT
blocks of 128) and ``c`` (W [16,200], X [4,16,200], input columns 3, 77, 150 exactly 0 in
every sequence: dead Hessian columns, and 200 = 128 + 72 gives a short last block):

* ``{c}.weight`` f32 [out,in], ``{c}.inputs`` f32 [nseq,seq,in];
* ``{c}.scaler_row`` f32 [in] (Wanda), ``{c}.hessian`` f32 [in,in] (SparseGPT, raw: before
  the dead-column fix and dampening), ``{c}.act_norm`` f32 [in] (OWL activation norm);
* masks, uint8 [out,in], 1 = pruned:
  ``{c}.magnitude.u50.mask``, ``{c}.magnitude.u30.mask``, ``{c}.magnitude_row.u50.mask``,
  ``{c}.magnitude.2_4.mask``, ``{c}.wanda.{u50,u70,2_4,4_8}.mask``, ``{c}.ria.{u50,2_4}.mask``;
* SparseGPT: ``{c}.sparsegpt.{u50,2_4,4_8}.weight`` f32 (the pruned, error-compensated
  weight) and ``.mask`` uint8 (= weight == 0).

and, for OWL, 4 "blocks" of 2 linears each: ``owl.block{k}.linear{j}.{weight,inputs,act_norm}``
(inputs [2,8,in]), ``owl.ratios_raw`` f64 [4] (percent outlier ratios before rescaling) and
``owl.sparsities`` f64 [4] (block order). The safetensors header metadata records the
versions and the parameters (M, lmbda, a, percdamp, blocksize, ...).

"u50" = unstructured sparsity 0.5, "u30"/"u70" likewise; "2_4" = prune_n 2, prune_m 4 (2 of
every 4 PRUNED); "4_8" = prune_n 4, prune_m 8.

Algorithm sources followed (re-written here, same op order, float32 throughout)
-------------------------------------------------------------------------------
* Wanda (locuslab/wanda): ``lib/layerwrapper.py`` ``WrappedGPT.add_batch`` (scaler_row) and
  ``lib/prune.py`` ``prune_magnitude`` (global ``sort(|W|.flatten())[0][int(numel*p)]``,
  ``|W| <= thresh``; N:M by topk(largest=False) per group of M) and ``prune_wanda``
  (metric ``|W| * sqrt(scaler_row)``; per-row ``torch.sort(..., dim=-1, stable=True)``,
  first ``int(in*p)`` indices; N:M as above).
* SparseGPT (IST-DASLab/sparsegpt): ``sparsegpt.py`` ``SparseGPT.add_batch`` and
  ``SparseGPT.fasterprune(sparsity, prunen, prunem, blocksize=128, percdamp=.01)``.
* RIA (RIA repo ``lib/prune.py`` ``prune_ria``): metric
  ``(|W|/sum(|W|,0) + |W|/sum(|W|,1).reshape(-1,1)) * sqrt(scaler_row)**a``, a = 0.5,
  unstructured with ``per_outneuron`` (per-row stable sort), N:M "directly N:M" (no channel
  reallocation, no LSA).
* OWL (vllm-project/llm-compressor, SparsityModifierBase): ``_get_activations``
  (``acts += 1/nsamples * x.pow(2).sum(dim=(0,1)).sqrt()`` per forward; here nsamples = the
  number of sequences) and ``_infer_owl_layer_sparsity`` (threshold = mean*M, ratio =
  100*count(>thr)/numel, rescale ``(r-min) * (1/(max-min) * lmbda * 2)``,
  ``sparsity = 1 - (r - mean(r) + (1 - target))``).
* "magnitude_row" is a spindle option, defined here as: per row,
  ``torch.sort(|W|, dim=-1, stable=True)`` and the first ``int(in*p)`` indices pruned.

Every statistic is accumulated one sequence at a time (tmp = 1 per add_batch call).

Versions: torch 2.13.0 (PyPI wheel, CPU, 1 thread), safetensors 0.8.0, numpy 2.4.6.
Deterministic: fixed seed, CPU, single thread (two runs give byte-identical files).

Rerun from the repo root:
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python tests/golden/prune/make_prune_golden.py
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import struct  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

assert torch.__version__.startswith("2.13.0"), torch.__version__
assert safetensors.__version__ == "0.8.0", safetensors.__version__
assert np.__version__ == "2.4.6", np.__version__

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HERE = Path(__file__).resolve().parent
OUT = HERE / "prune_golden.safetensors"
SEED = 20240611

OWL_M = 5
OWL_LMBDA = 0.08
OWL_TARGET = 0.5
RIA_A = 0.5
PERCDAMP = 0.01
BLOCKSIZE = 128
DEAD_COLS = [3, 77, 150]

NOTES = []  # surprising facts (ties etc.), printed at the end


# --------------------------------------------------------------------------- statistics
def wanda_scaler_row(X):
    """Wanda WrappedGPT.add_batch, one sequence per call."""
    columns = X.shape[-1]
    scaler_row = torch.zeros((columns,), dtype=torch.float32)
    nsamples = 0
    for s in range(X.shape[0]):
        inp = X[s : s + 1]  # [1, seq, in]
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).t()  # [in, tokens]
        scaler_row *= nsamples / (nsamples + tmp)
        nsamples += tmp
        inp = inp.type(torch.float32)
        scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / nsamples
    return scaler_row


def sparsegpt_hessian(X):
    """SparseGPT.add_batch, one sequence per call."""
    columns = X.shape[-1]
    H = torch.zeros((columns, columns), dtype=torch.float32)
    nsamples = 0
    for s in range(X.shape[0]):
        inp = X[s : s + 1]
        tmp = inp.shape[0]
        inp = inp.reshape((-1, inp.shape[-1])).t()
        H *= nsamples / (nsamples + tmp)
        nsamples += tmp
        inp = math.sqrt(2 / nsamples) * inp.float()
        H += inp.matmul(inp.t())
    return H


def owl_act_norm(X):
    """llm-compressor _get_activations, one [1, seq, in] forward per sequence."""
    nsamples = X.shape[0]
    acts = 0
    for s in range(X.shape[0]):
        inp = X[s : s + 1]
        acts += 1.0 / nsamples * inp.pow(2).sum(dim=(0, 1)).sqrt()
    return acts


# --------------------------------------------------------------------------- masks
def check_row_ties(metric, k, label):
    """Note a tie across the per-row cut (sorted[k-1] == sorted[k])."""
    s = torch.sort(metric, dim=-1, stable=True)[0]
    if 0 < k < metric.shape[1]:
        n = int((s[:, k - 1] == s[:, k]).sum())
        if n:
            NOTES.append(f"{label}: {n} row(s) with a tie at the per-row cut k={k}")


def check_nm_ties(metric, prune_n, prune_m, label):
    n_ties = 0
    for ii in range(0, metric.shape[1], prune_m):
        s = torch.sort(metric[:, ii : ii + prune_m], dim=1)[0]
        n_ties += int((s[:, prune_n - 1] == s[:, prune_n]).sum())
    if n_ties:
        NOTES.append(f"{label}: {n_ties} group(s) with a tie at the N:M cut")


def magnitude_unstructured(W, p, label):
    W_metric = torch.abs(W)
    thresh = torch.sort(W_metric.flatten())[0][int(W.numel() * p)]
    W_mask = W_metric <= thresh
    n_eq = int((W_metric == thresh).sum())
    if n_eq > 1:
        NOTES.append(f"{label}: {n_eq} entries equal the threshold")
    return W_mask


def per_row_sorted(W_metric, p, label):
    check_row_ties(W_metric, int(W_metric.shape[1] * p), label)
    W_mask = torch.zeros_like(W_metric) == 1
    sort_res = torch.sort(W_metric, dim=-1, stable=True)
    indices = sort_res[1][:, : int(W_metric.shape[1] * p)]
    W_mask.scatter_(1, indices, True)
    return W_mask


def n_m(W_metric, prune_n, prune_m, label):
    check_nm_ties(W_metric, prune_n, prune_m, label)
    W_mask = torch.zeros_like(W_metric) == 1
    for ii in range(W_metric.shape[1]):
        if ii % prune_m == 0:
            tmp = W_metric[:, ii : (ii + prune_m)].float()
            W_mask.scatter_(1, ii + torch.topk(tmp, prune_n, dim=1, largest=False)[1], True)
    return W_mask


def wanda_metric(W, scaler_row):
    return torch.abs(W) * torch.sqrt(scaler_row.reshape((1, -1)))


def ria_metric(W, scaler_row, a):
    return (
        torch.abs(W) / torch.sum(torch.abs(W), dim=0)
        + torch.abs(W) / torch.sum(torch.abs(W), dim=1).reshape(-1, 1)
    ) * (torch.sqrt(scaler_row.reshape((1, -1)))) ** a


# --------------------------------------------------------------------------- SparseGPT
def fasterprune(W_in, H_in, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    """SparseGPT.fasterprune (no quantizer). Returns (pruned W, algorithm mask)."""
    W = W_in.clone().float()
    rows, columns = W.shape
    H = H_in.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    Losses = torch.zeros(rows)

    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H

    full_mask = torch.zeros_like(W) == 1
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1

        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Losses1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        if prunen == 0:
            tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
            n_eq = int((tmp == thresh).sum())
            if n_eq > 1:
                NOTES.append(
                    f"sparsegpt u{int(sparsity*100)} block {i1}:{i2}: {n_eq} entries equal "
                    f"the threshold {thresh.item():.3g}"
                )
        else:
            mask1 = torch.zeros_like(W1) == 1

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]

            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i : (i + prunem)] ** 2 / (torch.diag(Hinv1)[i : (i + prunem)].reshape((1, -1))) ** 2
                s = torch.sort(tmp, dim=1)[0]
                n_t = int((s[:, prunen - 1] == s[:, prunen]).sum())
                if n_t:
                    NOTES.append(f"sparsegpt {prunen}:{prunem} col {i1 + i}: {n_t} tie(s) at the cut")
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)

            q = w.clone()
            q[mask1[:, i]] = 0

            Q1[:, i] = q
            Losses1[:, i] = (w - q) ** 2 / d**2

            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        Losses += torch.sum(Losses1, 1) / 2
        full_mask[:, i1:i2] = mask1

        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

    return W, full_mask


# --------------------------------------------------------------------------- data
def make_inputs(nseq, seq, cols):
    """Heterogeneous activations: log-normal per-column scales plus a few big outlier columns."""
    X = torch.randn(nseq, seq, cols)
    col_scale = torch.exp(0.5 * torch.randn(cols))
    n_out = max(2, cols // 32)
    out_idx = torch.randperm(cols)[:n_out]
    col_scale[out_idx] *= 25.0
    return (X * col_scale.reshape(1, 1, -1)).contiguous()


def u8(mask):
    return mask.to(torch.uint8).contiguous()


def run_case(name, out_f, in_f, nseq, seq, dead=(), tensors=None):
    W = torch.randn(out_f, in_f)
    X = make_inputs(nseq, seq, in_f)
    for col in dead:
        X[:, :, col] = 0.0
    scaler_row = wanda_scaler_row(X)
    H = sparsegpt_hessian(X)
    act = owl_act_norm(X)
    if dead:
        assert torch.all(torch.diag(H)[list(dead)] == 0) and torch.all(scaler_row[list(dead)] == 0)
        assert int((torch.diag(H) == 0).sum()) == len(dead)

    t = tensors
    t[f"{name}.weight"] = W.clone()
    t[f"{name}.inputs"] = X.clone()
    t[f"{name}.scaler_row"] = scaler_row.clone()
    t[f"{name}.hessian"] = H.clone()
    t[f"{name}.act_norm"] = act.clone()

    m = {}
    m["magnitude.u50"] = magnitude_unstructured(W, 0.5, f"{name}.magnitude.u50")
    m["magnitude.u30"] = magnitude_unstructured(W, 0.3, f"{name}.magnitude.u30")
    m["magnitude_row.u50"] = per_row_sorted(torch.abs(W), 0.5, f"{name}.magnitude_row.u50")
    m["magnitude.2_4"] = n_m(torch.abs(W), 2, 4, f"{name}.magnitude.2_4")
    wm = wanda_metric(W, scaler_row)
    m["wanda.u50"] = per_row_sorted(wm, 0.5, f"{name}.wanda.u50")
    m["wanda.u70"] = per_row_sorted(wm, 0.7, f"{name}.wanda.u70")
    m["wanda.2_4"] = n_m(wm, 2, 4, f"{name}.wanda.2_4")
    m["wanda.4_8"] = n_m(wm, 4, 8, f"{name}.wanda.4_8")
    rm = ria_metric(W, scaler_row, RIA_A)
    m["ria.u50"] = per_row_sorted(rm, 0.5, f"{name}.ria.u50")
    m["ria.2_4"] = n_m(rm, 2, 4, f"{name}.ria.2_4")
    for k, v in m.items():
        t[f"{name}.{k}.mask"] = u8(v)

    # sanity: exact counts
    for k in ("magnitude_row.u50", "wanda.u50", "ria.u50"):
        assert torch.all(m[k].sum(1) == int(in_f * 0.5)), k
    assert torch.all(m["wanda.u70"].sum(1) == int(in_f * 0.7))
    for k in ("magnitude.2_4", "wanda.2_4", "ria.2_4"):
        assert torch.all(m[k].reshape(out_f, -1, 4).sum(-1) == 2), k
    assert torch.all(m["wanda.4_8"].reshape(out_f, -1, 8).sum(-1) == 4)
    assert int(m["magnitude.u50"].sum()) >= int(W.numel() * 0.5) + 1
    if dead:  # dead columns have wanda / ria metric 0, so they are always pruned
        for k in ("wanda.u50", "wanda.u70", "wanda.2_4", "wanda.4_8", "ria.u50", "ria.2_4"):
            assert torch.all(m[k][:, list(dead)]), k

    for tag, (sp, pn, pm) in {"u50": (0.5, 0, 0), "2_4": (0.0, 2, 4), "4_8": (0.0, 4, 8)}.items():
        Wp, algo_mask = fasterprune(W, H, sp, pn, pm, blocksize=BLOCKSIZE, percdamp=PERCDAMP)
        zero = Wp == 0
        assert torch.equal(zero, algo_mask), f"{name} sparsegpt {tag}: W==0 differs from mask1"
        if pn:
            assert torch.all(zero.reshape(out_f, -1, pm).sum(-1) == pn)
        if dead:
            assert torch.all(zero[:, list(dead)])
        t[f"{name}.sparsegpt.{tag}.weight"] = Wp.contiguous()
        t[f"{name}.sparsegpt.{tag}.mask"] = u8(zero)
        kept = ~zero
        print(
            f"  {name} sparsegpt {tag}: pruned {int(zero.sum())}/{zero.numel()}, "
            f"max |W_out - W| on kept {float((Wp - W)[kept].abs().max()):.4f}"
        )
    print(
        f"case {name}: W {list(W.shape)} X {list(X.shape)}; magnitude u50 pruned "
        f"{int(m['magnitude.u50'].sum())}/{W.numel()} (k={int(W.numel()*0.5)}), u30 "
        f"{int(m['magnitude.u30'].sum())} (k={int(W.numel()*0.3)}); int(in*0.7)={int(in_f*0.7)}"
    )


def run_owl(tensors):
    shapes = [((32, 48), (48, 32)), ((24, 40), (40, 24)), ((16, 64), (64, 16)), ((40, 24), (24, 40))]
    # per-block outlier strength so the blocks have different outlier ratios
    boosts = [(3, 40.0), (1, 10.0), (6, 60.0), (0, 1.0)]
    groups = []
    for k, (shp_pair, (n_out, boost)) in enumerate(zip(shapes, boosts)):
        zs = []
        for j, (o, i) in enumerate(shp_pair):
            W = torch.randn(o, i)
            X = torch.randn(2, 8, i) * torch.exp(0.3 * torch.randn(i)).reshape(1, 1, -1)
            if n_out:
                X[:, :, torch.randperm(i)[:n_out]] *= boost
            act = owl_act_norm(X)
            pre = f"owl.block{k}.linear{j}"
            tensors[f"{pre}.weight"] = W.clone()
            tensors[f"{pre}.inputs"] = X.contiguous().clone()
            tensors[f"{pre}.act_norm"] = act.clone()
            zs.append(W.abs() * act.unsqueeze(0))
        groups.append(torch.cat([item.flatten().cpu() for item in zs]))

    outlier_ratios = {}
    for k, g in enumerate(groups):
        threshold = torch.mean(g) * OWL_M
        outlier_ratios[k] = 100 * (g > threshold).sum().item() / g.numel()
    raw = np.array([outlier_ratios[k] for k in outlier_ratios], dtype=np.float64)
    assert raw.max() > raw.min(), raw
    outlier_ratios_arr = np.array([outlier_ratios[k] for k in outlier_ratios])
    for k in outlier_ratios:
        outlier_ratios[k] = (outlier_ratios[k] - outlier_ratios_arr.min()) * (
            1 / (outlier_ratios_arr.max() - outlier_ratios_arr.min()) * OWL_LMBDA * 2
        )
    outlier_ratios_arr = np.array([outlier_ratios[k] for k in outlier_ratios])
    sparsities = {
        k: 1 - (outlier_ratios[k] - np.mean(outlier_ratios_arr) + (1 - float(OWL_TARGET)))
        for k in outlier_ratios
    }
    sp = np.array([sparsities[k] for k in range(len(groups))], dtype=np.float64)
    assert abs(sp.mean() - OWL_TARGET) < 1e-12
    tensors["owl.ratios_raw"] = torch.from_numpy(raw.copy())
    tensors["owl.sparsities"] = torch.from_numpy(sp.copy())
    print(f"owl: ratios_raw {raw.tolist()}\n     sparsities {sp.tolist()}")


def canonical_header(data):
    """safetensors 0.8.0 writes ``__metadata__`` from a hash map, so its key order changes
    from run to run. Re-emit the header with sorted metadata keys (tensor entries and the
    data section unchanged; header padded with spaces to a multiple of 8 as safetensors
    does) so two runs give byte-identical files."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__")
    new = {"__metadata__": dict(sorted(meta.items()))}
    new.update(header)
    hb = json.dumps(new, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    return struct.pack("<Q", len(hb)) + hb + data[8 + n :]


def main():
    torch.manual_seed(SEED)
    tensors = {}
    run_case("a", 16, 64, 4, 8, tensors=tensors)
    run_case("b", 24, 256, 6, 16, tensors=tensors)
    run_case("c", 16, 200, 4, 16, dead=DEAD_COLS, tensors=tensors)
    run_owl(tensors)

    metadata = {
        "format": "pt",
        "generator": "tests/golden/prune/make_prune_golden.py",
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "seed": str(SEED),
        "owl_M": str(OWL_M),
        "owl_lmbda": str(OWL_LMBDA),
        "owl_target_sparsity": str(OWL_TARGET),
        "ria_a": str(RIA_A),
        "percdamp": str(PERCDAMP),
        "blocksize": str(BLOCKSIZE),
        "dead_cols_case_c": ",".join(map(str, DEAD_COLS)),
        "mask_convention": "uint8, 1 = pruned",
        "nm_convention": "N_M: prune_n=N pruned of every prune_m=M",
    }
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    save_file(tensors, str(OUT), metadata=metadata)
    data = canonical_header(OUT.read_bytes())
    OUT.write_bytes(data)
    os.chmod(OUT, 0o644)  # save_file creates the file 0600
    from safetensors import safe_open

    with safe_open(str(OUT), "pt") as f:  # re-read check of the rewritten header
        assert f.metadata() == metadata and sorted(f.keys()) == list(tensors)
        for k, v in tensors.items():
            assert torch.equal(f.get_tensor(k), v), k
    print(f"wrote {OUT} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
    assert len(data) < 1_500_000
    print("notes:" if NOTES else "notes: no ties at any cut")
    for n in NOTES:
        print("  " + n)


if __name__ == "__main__":
    main()
