#!/usr/bin/env python3
"""Reference pruning pipeline (magnitude / Wanda / SparseGPT) for checking spindle's Rust implementation.

What: a self-contained re-implementation of the Wanda repository's pruning code
(github.com/locuslab/wanda: lib/prune.py prune_magnitude / prune_wanda / prune_sparsegpt,
lib/layerwrapper.py WrappedGPT, lib/sparsegpt.py SparseGPT, lib/data.py get_c4, lib/eval.py
eval_ppl_wikitext), adapted to transformers 5.x and fp32 (CPU by default, --device cuda with TF32 off), followed by the WikiText-2 perplexity
of the pruned model. The numbers it writes (--json) are what spindle's `prune` + `eval` are compared with.

Protocol (as in the Wanda repo):
  * calibration: C4 windows drawn like get_c4 (random.seed(seed); for each sample: draw documents with
    random.randint until one has > seqlen tokens, then an offset with random.randint(0, len-seqlen-1)).
    Offline pool: documents [0, 1000) of c4/en/c4-validation-sample-2k.parquet (spindle's convention,
    same as tests/golden/calib/make_calib_golden.py).
  * layer-0 inputs (and the layer call's keyword arguments) captured by stopping the model at layer 0;
  * per layer (not true-sequential): collect statistics of every linear of the layer by running the
    still-dense layer on every sample (one at a time), prune all its linears, re-run the pruned layer
    on every sample to get the next layer's inputs (inps, outs = outs, inps);
  * magnitude: per linear, threshold sort(|W|.flatten())[int(numel*p)], prune |W| <= threshold;
  * wanda: metric |W| * sqrt(scaler_row), per-row stable sort, prune the int(in*p) smallest per row;
  * sparsegpt: H = 2/n sum x x^T, fasterprune(blocksize 128, percdamp 0.01), lazy N:M selection;
  * N:M: prune_n of every prune_m consecutive input columns (topk smallest), per row.
  * WikiText-2: "\\n\\n".join(test.text), tokenized once, nsamples = numel // seqlen windows,
    nll_i = CE(mean over seqlen-1 shifted targets, fp32) * seqlen, ppl = exp(sum / (nsamples*seqlen))
    (float32 torch sum, as in the papers; see tests/golden/ppl).

Versions (asserted in main() unless --any-versions, which only records them): python 3.11, torch 2.13.0
(CPU), transformers 5.24.0, tokenizers 0.23.3, pyarrow 26.0.1, safetensors 0.8.0 -- the venv
/root/.cache/spindle/golden-venv.

Model: --model DIR (config.json, model.safetensors, tokenizer.json), or --gguf FILE --tokenizer tokenizer.json
(transformers' own GGUF loader, dequantized to fp32; needs the `gguf` package).

Run from the repo root, e.g.
    /root/.cache/spindle/golden-venv/bin/python tests/reference/prune_reference.py \\
        --model ~/.cache/spindle/models/smollm2-135m --method wanda --sparsity 0.5 \\
        --nsamples 32 --seqlen 512 --seed 0 --json /tmp/ref_wanda_0.5.json
See tests/reference/README.md for the full set of commands and the deviations from the Wanda repo.
"""
import argparse
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np
import pyarrow
import pyarrow.parquet as pq
import safetensors
import tokenizers
import torch
import torch.nn as nn
import transformers
from transformers import AutoModelForCausalLM

PINNED = {"python": "3.11", "torch": "2.13.0", "transformers": "5.24.0", "tokenizers": "0.23.3",
          "pyarrow": "26.0.1", "safetensors": "0.8.0"}


def check_versions():
    """The pinned versions of the golden venv (skipped with --any-versions, which only records them)."""
    assert "%d.%d" % sys.version_info[:2] == PINNED["python"], sys.version
    assert torch.__version__.split("+")[0] == PINNED["torch"], torch.__version__
    assert transformers.__version__ == PINNED["transformers"], transformers.__version__
    assert tokenizers.__version__ == PINNED["tokenizers"], tokenizers.__version__
    assert pyarrow.__version__ == PINNED["pyarrow"], pyarrow.__version__
    assert safetensors.__version__ == PINNED["safetensors"], safetensors.__version__


def versions():
    v = {
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "pyarrow": pyarrow.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__,
    }
    try:
        import gguf  # only needed (and only imported by transformers) for --gguf
        v["gguf"] = getattr(gguf, "__version__", None)
        if v["gguf"] is None:
            from importlib.metadata import version
            v["gguf"] = version("gguf")
    except Exception:
        v["gguf"] = None
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
        v["cudnn"] = torch.backends.cudnn.version()
    return v


def _get(f):
    try:
        return f()
    except Exception as e:  # some torch versions refuse to mix the legacy and the new precision API
        return f"error: {e}"


def precision_settings():
    """The float32 matmul settings in force (recorded in the JSON)."""
    return {
        "cuda_matmul_allow_tf32": _get(lambda: torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": _get(lambda: torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": _get(torch.get_float32_matmul_precision),
        "cuda_matmul_fp32_precision": _get(lambda: getattr(torch.backends.cuda.matmul, "fp32_precision", None)),
        "cuda_matmul_allow_fp16_reduced_precision_reduction":
            _get(lambda: torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction),
    }

C4_REL = "c4/en/c4-validation-sample-2k.parquet"
C4_POOL = 1000  # documents [0, 1000) are the calibration pool
WIKI_REL = "wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"

# the device everything runs on (--device); set once in main() before anything is allocated
DEV = torch.device("cpu")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# data


def draw_calibration(docs, tok, nsamples, seqlen, seed):
    """Wanda/SparseGPT get_c4 window drawing. Returns [(doc, offset)] and the windows [nsamples, seqlen]."""
    random.seed(seed)
    where, wins = [], []
    for _ in range(nsamples):
        while True:
            i = random.randint(0, len(docs) - 1)
            ids = tok.encode(docs[i]).ids
            if len(ids) > seqlen:
                break
        j = random.randint(0, len(ids) - seqlen - 1)
        where.append([i, j])
        wins.append(ids[j:j + seqlen])
    return where, torch.tensor(wins, dtype=torch.long, device=DEV)


# ----------------------------------------------------------------------------------------------
# Wanda repo helpers


def find_layers(module, layers=(nn.Linear,), name=""):
    """lib/prune.py find_layers: every nn.Linear below `module`, by dotted name."""
    if type(module) in layers:
        return {name: module}
    res = {}
    for name1, child in module.named_children():
        res.update(find_layers(child, layers=layers, name=name + "." + name1 if name != "" else name1))
    return res


def check_sparsity(model):
    """lib/prune.py check_sparsity, also returning the sparsity of each linear."""
    layers = model.model.layers
    count, total, per = 0, 0, {}
    for i, layer in enumerate(layers):
        for name, lin in find_layers(layer).items():
            W = lin.weight.data
            z = (W == 0).sum().item()
            count += z
            total += W.numel()
            per[f"model.layers.{i}.{name}"] = z / W.numel()
    return count / total, per


class _StopForward(Exception):
    pass


def prepare_calibration_input(model, windows):
    """lib/prune.py prepare_calibration_input (the Catcher), written as a forward pre-hook.

    transformers 5.x calls a decoder layer as layer(hidden_states, attention_mask=..., position_embeddings=
    (cos, sin), position_ids=..., cache=None, use_cache=False): instead of picking attention_mask and
    position_ids out of the kwargs (the old Catcher), every keyword argument layer 0 receives is kept and
    replayed for every layer. All windows have the same length, so these are the same for every sample;
    like the Catcher, the last one is kept (and checked to equal the first).
    """
    layers = model.model.layers
    nsamples, seqlen = windows.shape
    dtype = next(iter(model.parameters())).dtype
    inps = torch.zeros((nsamples, seqlen, model.config.hidden_size), dtype=dtype, device=DEV)
    cache = {"i": 0, "kwargs": None, "first": None}

    def catcher(module, args, kwargs):
        hs = args[0] if args else kwargs["hidden_states"]
        inps[cache["i"]] = hs[0]
        cache["i"] += 1
        kw = dict(kwargs)
        kw.pop("hidden_states", None)
        cache["kwargs"] = kw
        if cache["first"] is None:
            cache["first"] = kw
        raise _StopForward

    h = layers[0].register_forward_pre_hook(catcher, with_kwargs=True)
    try:
        for j in range(nsamples):
            try:
                model(windows[j:j + 1])
            except _StopForward:
                pass
    finally:
        h.remove()
    assert cache["i"] == nsamples
    _assert_same_kwargs(cache["first"], cache["kwargs"])
    outs = torch.zeros_like(inps)
    return inps, outs, cache["kwargs"]


def _assert_same_kwargs(a, b):
    assert a.keys() == b.keys(), (a.keys(), b.keys())
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), k
        elif isinstance(x, (tuple, list)):
            assert len(x) == len(y) and all(torch.equal(p, q) for p, q in zip(x, y)), k
        else:
            assert x == y, k


def run_layer(layer, x, layer_kwargs):
    """Wanda's `layer(inps[j].unsqueeze(0), attention_mask=..., position_ids=...)[0]` for one sample.

    In transformers 5.x the decoder layer returns the hidden states tensor, not a tuple."""
    out = layer(x.unsqueeze(0), **layer_kwargs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    return out[0]


# N:M group selection. Wanda/SparseGPT use torch.topk(tmp, prune_n, dim=1, largest=False); on CPU its
# choice among equal values at the boundary is that of libstdc++'s nth_element (no simple index rule).
# --nm-tiebreak stable replaces it by a stable sort (among ties the lowest column index is pruned), a rule
# another implementation can reproduce exactly. Boundary ties (prune_n-th smallest == (prune_n+1)-th
# smallest, value > 0) are counted in NM["boundary_ties"] either way (nm_boundary_ties in the JSON).
NM = {"tiebreak": "torch", "groups": 0, "boundary_ties": 0}


def nm_select(tmp, prune_n):
    s = torch.sort(tmp, dim=1, stable=True)
    v = s[0]
    NM["groups"] += tmp.shape[0]
    NM["boundary_ties"] += int(((v[:, prune_n - 1] == v[:, prune_n]) & (v[:, prune_n] > 0)).sum())
    if NM["tiebreak"] == "stable":
        return s[1][:, :prune_n]
    return torch.topk(tmp, prune_n, dim=1, largest=False)[1]


def nm_mask(W_metric, prune_n, prune_m):
    """The N:M mask loop of prune_magnitude / prune_wanda (prune_n smallest of every prune_m columns)."""
    W_mask = torch.zeros_like(W_metric) == 1
    for ii in range(W_metric.shape[1]):
        if ii % prune_m == 0:
            tmp = W_metric[:, ii:(ii + prune_m)].float()
            W_mask.scatter_(1, ii + nm_select(tmp, prune_n), True)
    return W_mask


class WrappedGPT:
    """lib/layerwrapper.py WrappedGPT (nn.Linear case): running mean over samples of ||x_col||^2."""

    def __init__(self, layer):
        self.layer = layer
        self.rows, self.columns = layer.weight.data.shape
        self.scaler_row = torch.zeros((self.columns,), device=layer.weight.device)
        self.nsamples = 0

    def add_batch(self, inp, out):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.scaler_row *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = inp.type(torch.float32)
        self.scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / self.nsamples


class SparseGPT:
    """lib/sparsegpt.py SparseGPT (nn.Linear case)."""

    def __init__(self, layer):
        self.layer = layer
        W = layer.weight.data.clone()
        self.rows, self.columns = W.shape
        self.H = torch.zeros((self.columns, self.columns), device=layer.weight.device)
        self.nsamples = 0

    def add_batch(self, inp, out):
        if len(inp.shape) == 2:
            inp = inp.unsqueeze(0)
        tmp = inp.shape[0]
        if len(inp.shape) == 3:
            inp = inp.reshape((-1, inp.shape[-1]))
        inp = inp.t()
        self.H *= self.nsamples / (self.nsamples + tmp)
        self.nsamples += tmp
        inp = math.sqrt(2 / self.nsamples) * inp.float()
        self.H += inp.matmul(inp.t())

    def fasterprune(self, sparsity, prune_n=0, prune_m=0, blocksize=128, percdamp=0.01):
        W = self.layer.weight.data.clone().float()
        H = self.H
        del self.H
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        W[:, dead] = 0

        Losses = torch.zeros(self.rows, device=W.device)

        damp = percdamp * torch.mean(torch.diag(H))
        diag = torch.arange(self.columns, device=W.device)
        H[diag, diag] += damp
        H = torch.linalg.cholesky(H)
        H = torch.cholesky_inverse(H)
        H = torch.linalg.cholesky(H, upper=True)
        Hinv = H

        mask = None
        for i1 in range(0, self.columns, blocksize):
            i2 = min(i1 + blocksize, self.columns)
            count = i2 - i1

            W1 = W[:, i1:i2].clone()
            Q1 = torch.zeros_like(W1)
            Err1 = torch.zeros_like(W1)
            Losses1 = torch.zeros_like(W1)
            Hinv1 = Hinv[i1:i2, i1:i2]

            if prune_n == 0:
                if mask is not None:
                    mask1 = mask[:, i1:i2]
                else:
                    tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
                    thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                    mask1 = tmp <= thresh
            else:
                mask1 = torch.zeros_like(W1) == 1

            for i in range(count):
                w = W1[:, i]
                d = Hinv1[i, i]

                if prune_n != 0 and i % prune_m == 0:
                    tmp = W1[:, i:(i + prune_m)] ** 2 / (torch.diag(Hinv1)[i:(i + prune_m)].reshape((1, -1))) ** 2
                    mask1.scatter_(1, i + nm_select(tmp, prune_n), True)

                q = w.clone()
                q[mask1[:, i]] = 0

                Q1[:, i] = q
                Losses1[:, i] = (w - q) ** 2 / d ** 2

                err1 = (w - q) / d
                W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
                Err1[:, i] = err1

            W[:, i1:i2] = Q1
            Losses += torch.sum(Losses1, 1) / 2

            W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])

        self.layer.weight.data = W.reshape(self.layer.weight.shape).to(self.layer.weight.data.dtype)

    def free(self):
        self.H = None


# ----------------------------------------------------------------------------------------------
# pruning


@torch.no_grad()
def prune_magnitude(model, sparsity_ratio, prune_n=0, prune_m=0):
    layers = model.model.layers
    for i in range(len(layers)):
        t = time.time()
        subset = find_layers(layers[i])
        for name in subset:
            W = subset[name].weight.data
            W_metric = torch.abs(W)
            if prune_n != 0:
                W_mask = nm_mask(W_metric, prune_n, prune_m)
            else:
                thresh = torch.sort(W_metric.flatten())[0][int(W.numel() * sparsity_ratio)]
                W_mask = W_metric <= thresh
            W[W_mask] = 0
        log(f"[magnitude] layer {i}/{len(layers)} {time.time() - t:.2f}s")


@torch.no_grad()
def prune_layerwise(model, windows, method, sparsity_ratio, prune_n=0, prune_m=0):
    """prune_wanda / prune_sparsegpt of the Wanda repo (same layer loop; they differ in the statistic
    and in the per-linear pruning step)."""
    use_cache = model.config.use_cache
    model.config.use_cache = False
    nsamples = windows.shape[0]
    inps, outs, layer_kwargs = prepare_calibration_input(model, windows)

    layers = model.model.layers
    for i in range(len(layers)):
        t = time.time()
        layer = layers[i]
        subset = find_layers(layer)

        wrapped = {name: (WrappedGPT if method == "wanda" else SparseGPT)(subset[name]) for name in subset}

        def add_batch(name):
            def tmp(_, inp, out):
                wrapped[name].add_batch(inp[0].data, out.data)
            return tmp

        handles = [subset[name].register_forward_hook(add_batch(name)) for name in wrapped]
        for j in range(nsamples):
            outs[j] = run_layer(layer, inps[j], layer_kwargs)
        for h in handles:
            h.remove()

        for name in subset:
            if method == "wanda":
                W_metric = torch.abs(subset[name].weight.data) * torch.sqrt(
                    wrapped[name].scaler_row.reshape((1, -1)))
                W_mask = torch.zeros_like(W_metric) == 1
                if prune_n != 0:
                    W_mask = nm_mask(W_metric, prune_n, prune_m)
                else:
                    sort_res = torch.sort(W_metric, dim=-1, stable=True)
                    indices = sort_res[1][:, :int(W_metric.shape[1] * sparsity_ratio)]
                    W_mask.scatter_(1, indices, True)
                subset[name].weight.data[W_mask] = 0
            else:
                wrapped[name].fasterprune(sparsity_ratio, prune_n=prune_n, prune_m=prune_m,
                                          percdamp=0.01, blocksize=128)
                wrapped[name].free()

        for j in range(nsamples):
            outs[j] = run_layer(layer, inps[j], layer_kwargs)
        inps, outs = outs, inps
        log(f"[{method}] layer {i}/{len(layers)} {time.time() - t:.2f}s")

    model.config.use_cache = use_cache


@torch.no_grad()
def check_replay(model, windows, k=2):
    """The dense model's per-layer replay (captured layer-0 inputs + kwargs, then every layer, final norm,
    lm_head) must reproduce the full forward's logits."""
    windows = windows[:k]
    use_cache = model.config.use_cache
    model.config.use_cache = False
    inps, _, kw = prepare_calibration_input(model, windows)
    worst = 0.0
    for j in range(windows.shape[0]):
        full = model(windows[j:j + 1]).logits[0]
        h = inps[j]
        for layer in model.model.layers:
            h = run_layer(layer, h, kw)
        rep = model.lm_head(model.model.norm(h.unsqueeze(0)))[0]
        worst = max(worst, (full - rep).abs().max().item())
    model.config.use_cache = use_cache
    log(f"[check-replay] {windows.shape[0]} windows, max |logit diff| = {worst:.3g}; "
        f"layer kwargs: {sorted(kw)}")
    assert worst <= 1e-5, worst
    return worst


# ----------------------------------------------------------------------------------------------
# evaluation


@torch.no_grad()
def eval_ppl(model, ids, seqlen, limit=None, bs=1):
    """lib/eval.py eval_ppl_wikitext, with the per-window NLL kept (see tests/golden/ppl)."""
    nsamples = ids.numel() // seqlen
    n = nsamples if limit is None else min(limit, nsamples)
    nlls, t0 = [], time.time()
    for i in range(0, n, bs):
        j = min(i + bs, n)
        inputs = ids[:, i * seqlen:j * seqlen].reshape(j - i, seqlen)
        logits = model(inputs).logits
        for b in range(j - i):
            shift_logits = logits[b:b + 1, :-1, :].contiguous()
            shift_labels = inputs[b:b + 1, 1:]
            loss = nn.CrossEntropyLoss()(shift_logits.reshape(-1, shift_logits.size(-1)).float(),
                                         shift_labels.reshape(-1))
            nlls.append(loss.float() * seqlen)
        if i % 50 < bs or j == n:
            el = time.time() - t0
            log(f"[eval] {j}/{n} windows, nll={nlls[-1].item():.4f}, {el:.0f}s")
    ppl = torch.exp(torch.stack(nlls).sum() / (n * seqlen)).item()
    vals = [x.item() for x in nlls]
    ppl64 = math.exp(sum(vals) / (n * seqlen))
    return ppl, ppl64, vals, nsamples, n


# ----------------------------------------------------------------------------------------------


def parse_pattern(s):
    n, m = map(int, s.split(":"))
    assert 0 < n < m, s
    return m - n, m  # prune_n (pruned per group), prune_m


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="Hugging Face Llama dir (config.json, model.safetensors, tokenizer.json)")
    src.add_argument("--gguf", help="GGUF file, loaded by transformers (from_pretrained(dir, gguf_file=name), "
                                    "dequantized to fp32; needs the gguf package); needs --tokenizer")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: MODEL/tokenizer.json; required with --gguf)")
    ap.add_argument("--data", default="../shared/data",
                    help=f"data dir holding {C4_REL} and {WIKI_REL}")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: model and every tensor on the GPU, fp32, TF32 off")
    ap.add_argument("--any-versions", action="store_true",
                    help="do not assert the pinned versions; only record the actual ones in the JSON")
    ap.add_argument("--method", required=True, choices=["dense", "magnitude", "wanda", "sparsegpt"])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--sparsity", type=float, help="unstructured sparsity ratio (e.g. 0.5)")
    g.add_argument("--pattern", help="N:M = N nonzeros kept of every M (2:4, 4:8); prunes M-N per group")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=512, help="calibration window length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seqlen", type=int, default=512)
    ap.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first K windows")
    ap.add_argument("--eval-batch", type=int, default=1)
    ap.add_argument("--no-eval", action="store_true")
    ap.add_argument("--attn", default="eager", choices=["eager", "sdpa"],
                    help="attention implementation (tests/golden/ppl uses eager)")
    ap.add_argument("--nm-tiebreak", default="torch", choices=["torch", "stable"],
                    help="N:M selection among equal values: torch.topk as the Wanda repo (default), or a "
                         "stable sort (lowest column index pruned first)")
    ap.add_argument("--check-replay", action="store_true",
                    help="before pruning, check that the per-layer replay reproduces the dense logits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--save", help="save the pruned model here (save_pretrained, safetensors)")
    args = ap.parse_args()
    if args.gguf and not args.tokenizer:
        ap.error("--gguf needs --tokenizer")
    if not args.any_versions:
        check_versions()

    global DEV
    if args.device == "cuda":
        if not torch.cuda.is_available():
            ap.error("--device cuda, but torch.cuda.is_available() is False")
        torch.backends.cuda.matmul.allow_tf32 = False   # fp32 matmuls in full fp32 (no TF32)
        torch.backends.cudnn.allow_tf32 = False
    DEV = torch.device(args.device)

    needed = [os.path.join(args.data, C4_REL)] if (args.method in ("wanda", "sparsegpt") or args.check_replay) else []
    if not args.no_eval:
        needed.append(os.path.join(args.data, WIKI_REL))
    missing = [f for f in needed if not os.path.isfile(f)]
    if missing:
        ap.error(f"missing data file(s) under --data {args.data}: {missing}")

    torch.set_num_threads(args.threads)
    NM["tiebreak"] = args.nm_tiebreak
    np.random.seed(args.seed)          # as Wanda's main.py (nothing below is random but the C4 draw)
    torch.random.manual_seed(args.seed)

    prune_n, prune_m, sparsity_ratio = 0, 0, 0.0
    if args.method != "dense":
        if args.pattern:
            prune_n, prune_m = parse_pattern(args.pattern)
            sparsity_ratio = 0.5       # Wanda main.py asserts 0.5 for N:M; unused by the N:M paths
        elif args.sparsity is not None:
            sparsity_ratio = args.sparsity
        else:
            ap.error("--sparsity or --pattern is required for a pruning method")

    secs = {}
    t = time.time()
    if args.gguf:
        model_src = os.path.abspath(os.path.expanduser(args.gguf))
        model = AutoModelForCausalLM.from_pretrained(os.path.dirname(model_src), gguf_file=os.path.basename(model_src),
                                                     dtype=torch.float32, attn_implementation=args.attn)
        model_dir = None
    else:
        model_src = model_dir = os.path.expanduser(args.model)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=args.attn)
    model = model.to(DEV).eval()
    assert all(p.dtype == torch.float32 and p.device.type == DEV.type for p in model.parameters())
    tok_path = os.path.expanduser(args.tokenizer) if args.tokenizer else os.path.join(model_dir, "tokenizer.json")
    tok = tokenizers.Tokenizer.from_file(tok_path)
    secs["load"] = time.time() - t
    log(f"loaded {model_src} ({sum(p.numel() for p in model.parameters()):,} params) on {DEV} in {secs['load']:.1f}s")

    sparsity_before, _ = check_sparsity(model)  # the dense weights may hold exact zeros already
    t = time.time()
    calib = []
    windows = None
    need_calib = args.method in ("wanda", "sparsegpt") or args.check_replay
    if need_calib:
        docs = pq.read_table(os.path.join(args.data, C4_REL), columns=["text"]).column("text").to_pylist()[:C4_POOL]
        calib, windows = draw_calibration(docs, tok, args.nsamples, args.seqlen, args.seed)
        log(f"calibration: {args.nsamples} windows x {args.seqlen} tokens, seed {args.seed}; first {calib[:3]}")
    replay_diff = None
    if args.check_replay:
        replay_diff = check_replay(model, windows)
    if args.method == "magnitude":
        prune_magnitude(model, sparsity_ratio, prune_n, prune_m)
    elif args.method in ("wanda", "sparsegpt"):
        prune_layerwise(model, windows, args.method, sparsity_ratio, prune_n, prune_m)
    secs["calibrate_prune"] = time.time() - t

    overall, per = check_sparsity(model)
    log(f"sparsity of the decoder linears: {overall:.6f}")
    nm_extra = 0
    if prune_n:
        # every group of prune_m consecutive input columns of every row holds >= prune_n zeros (more only
        # where the dense weights already had zeros that were not selected)
        for i, layer in enumerate(model.model.layers):
            for name, lin in find_layers(layer).items():
                z = (lin.weight.data == 0).reshape(lin.weight.shape[0], -1, prune_m).sum(-1)
                assert int(z.min()) >= prune_n, (i, name, int(z.min()))
                nm_extra += int((z > prune_n).sum())
        log(f"N:M check: every group of {prune_m} has >= {prune_n} zeros; {nm_extra} groups have more; "
            f"{NM['boundary_ties']} of {NM['groups']} selections had a tie at the boundary")

    res = {
        "method": args.method,
        "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed,
        "calib_windows": calib,
        "calib_pool": f"documents [0, {C4_POOL}) of {C4_REL}",
        "sparsity_overall": overall,
        "sparsity_before": sparsity_before,
        "per_linear": per,
    }
    if args.pattern:
        res["pattern"] = args.pattern
        res["prune_n_per_m"] = [prune_n, prune_m]
        res["nm_tiebreak"] = args.nm_tiebreak
        res["nm_groups"] = NM["groups"]
        res["nm_boundary_ties"] = NM["boundary_ties"]
        res["nm_groups_with_extra_zeros"] = nm_extra
    else:
        res["sparsity"] = sparsity_ratio
    if replay_diff is not None:
        res["replay_max_abs_logit_diff"] = replay_diff

    if args.save:
        model.save_pretrained(args.save, safe_serialization=True)
        shutil.copy(tok_path, os.path.join(args.save, "tokenizer.json"))
        if model_dir and os.path.exists(os.path.join(model_dir, "tokenizer_config.json")):
            shutil.copy(os.path.join(model_dir, "tokenizer_config.json"), os.path.join(args.save, "tokenizer_config.json"))
        log(f"saved the pruned model to {args.save}")

    t = time.time()
    if not args.no_eval:
        wiki = os.path.join(args.data, WIKI_REL)
        text = "\n\n".join(pq.read_table(wiki).column("text").to_pylist())
        ids = torch.tensor([tok.encode(text).ids], dtype=torch.long, device=DEV)
        log(f"wikitext-2 test: {ids.numel()} tokens, first ids {ids[0, :8].tolist()}")
        ppl, ppl64, nlls, total, n = eval_ppl(model, ids, args.eval_seqlen, args.eval_limit, args.eval_batch)
        log(f"ppl = {ppl!r} over {n}/{total} windows of {args.eval_seqlen}")
        res.update({
            "ppl": ppl, "ppl_float64_sum": ppl64,
            "eval_windows": n, "eval_windows_total": total, "eval_limited": n < total,
            "eval_seqlen": args.eval_seqlen, "eval_batch": args.eval_batch, "eval_tokens": ids.numel(),
            "nll": nlls,
        })
    else:
        res.update({"ppl": None, "eval_windows": 0, "eval_seqlen": args.eval_seqlen})
    secs["eval"] = time.time() - t

    res["seconds"] = secs
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    res["threads"] = torch.get_num_threads()
    res["attn_implementation"] = args.attn
    res["model"] = model_src
    res["model_format"] = "gguf" if args.gguf else "hf_dir"
    if args.gguf:
        res["gguf_sha256"] = sha256(model_src)
    res["tokenizer"] = os.path.abspath(tok_path)
    res["tokenizer_json_sha256"] = sha256(tok_path)
    res["data"] = os.path.abspath(args.data)
    res["device"] = str(DEV)
    res["precision"] = precision_settings()
    if DEV.type == "cuda":
        res["cuda_device_name"] = torch.cuda.get_device_name(DEV)
        res["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(DEV) / 2 ** 20
    res["versions"] = versions()
    res["versions_checked"] = not args.any_versions
    if not args.any_versions:
        res["versions_pinned"] = PINNED
    log(f"seconds: {json.dumps({k: round(v, 1) for k, v in secs.items()})}, peak RSS {res['peak_rss_mb']:.0f} MB"
        + (f", CUDA peak {res['cuda_peak_allocated_mb']:.0f} MB" if DEV.type == "cuda" else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
    else:
        print(json.dumps({k: v for k, v in res.items() if k not in ("per_linear", "nll")}, indent=1))


if __name__ == "__main__":
    main()
