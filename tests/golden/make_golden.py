#!/usr/bin/env python3
"""Generate tiny golden checkpoints and reference logits for spindle's Rust loaders.

What it makes
-------------
For each tiny, randomly initialised architecture below, a directory
``tests/golden/<name>/`` holding:

* ``model.safetensors``   fp32 weights written by transformers ``save_pretrained``
                          (original Hugging Face tensor names). In 5.24.0
                          ``save_pretrained`` has no ``safe_serialization`` argument any
                          more: it always writes safetensors.
* ``config.json``         the config exactly as transformers 5 writes it
                          (``rope_parameters`` / ``dtype`` keys).
* ``config.tf4.json``     the same config in the transformers-4 layout that most
                          published checkpoints use (``rope_theta`` /
                          ``rope_scaling`` / ``torch_dtype`` at top level).
* ``generation_config.json`` written by ``save_pretrained`` (not needed by spindle).
* ``golden.safetensors``  ``input_ids`` (i64 [2,12]), ``attention_mask`` (i64 [2,12];
                          row 0 all ones, row 1 right-padded: last 3 positions 0),
                          ``logits`` (f32 [2,12,vocab]) = model(input_ids,
                          attention_mask=attention_mask).logits, ``logits_nomask``
                          (f32) = model(input_ids).logits, and ``hidden_block0``
                          (f32 [2,12,hidden]) = hidden_states[1] of the no-mask run,
                          i.e. the residual stream after decoder layer 0.
                          mixtral also: ``router_logits_block0`` (f32 [2,12,E], layer 0
                          router logits of the no-mask run, pre-softmax) and
                          ``expert_counts_block0`` (i64 [E], (token, chosen expert) pairs
                          of layer 0's top-k per expert, no-mask run).
* ``tensors.txt``         name, dtype, shape of every tensor in model.safetensors.

Architectures: llama-gqa, llama3-rope, mistral, qwen2, opt-pre, opt-post-proj, and
qwen3, phi3, gemma2, gemma3, mixtral (see ``SPECS`` below, README.md and FAMILIES.md
beside this file). For the last five, ``reference_forward`` (an independent re-implementation
written from FAMILIES.md, reading only config.json + model.safetensors) must reproduce the
transformers references (it does, max |diff| 0.0).

All logits are computed in fp32, eval mode, ``attn_implementation="eager"``, from
the model *reloaded* from the written directory, so what Rust loads is exactly
what produced the references.

Why
---
spindle's Rust model code must reproduce transformers' logits within 1e-4 in fp32.
These files let `cargo test` check that without Python. Every norm weight/bias and
every linear bias is overwritten with non-trivial random values, so a loader that
ignores one of them fails the comparison.

Versions (pinned; see requirements.txt beside this file)
--------------------------------------------------------
python 3.11, torch==2.13.0 (PyPI wheel, run on CPU), transformers==5.24.0,
safetensors==0.8.0, numpy==2.4.6 (huggingface_hub==2.4.0, tokenizers==0.23.3
came in as transformers dependencies).

Optional cross-check of config.tf4.json against real transformers 4 output:
``check_tf4_configs.py`` (run with transformers==4.55.4, the last 4.x release that
still writes ``torch_dtype``; 4.56+ writes ``dtype``).

How to rerun
------------
From the repository root::

    python3 -m venv /root/.cache/spindle/golden-venv
    /root/.cache/spindle/golden-venv/bin/pip install -r tests/golden/requirements.txt
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python tests/golden/make_golden.py [name ...]

With no names every directory is rebuilt; with names (e.g. ``qwen3 phi3 gemma2 gemma3
mixtral``) only those. The script is deterministic on one machine (fixed seeds, single
thread, CPU); another CPU can change the reference tensors in golden.safetensors in the
last bits (<= 2e-6) but not the weights or configs. It prints a fact report (the facts
are recorded in README.md).

Measured facts (transformers 5.24.0; printed again by each run)
---------------------------------------------------------------
* config.tf4.json loads in transformers 5 (legacy ``rope_theta``/``rope_scaling``/
  ``torch_dtype`` keys are accepted) and gives logits bit-identical to config.json
  for all six models (max |diff| = 0.0).
* Tied models (llama3-rope, opt-pre, opt-post-proj) have NO ``lm_head.weight`` in
  model.safetensors; lm_head uses ``model.embed_tokens.weight`` (Llama) /
  ``model.decoder.embed_tokens.weight`` (OPT).
* Mistral eager attention applies the sliding window (through the mask built by
  ``create_sliding_window_causal_mask``): query i sees keys j with
  i - sliding_window < j <= i. Qwen2 with ``use_sliding_window: false`` sets
  ``sliding_window`` to None and uses full causal attention in every layer.
* Padding (eager): additive mask 0 / finfo(float32).min on keys only; padded
  query rows are not zeroed, see README.md.
* Qwen3: q_norm/k_norm = RMSNorm over head_dim per head, before RoPE; head_dim is explicit.
* Phi-3: qkv_proj rows are q, k, v; gate_up_proj rows are gate then up; partial_rotary_factor
  defaults to 1.0; a non-null sliding_window applies to every layer.
* Gemma 2/3: embeddings x fp32 sqrt(hidden) cast to the weight dtype; RMSNorm in fp32 with
  (1 + w); four norms per block (post-norms on the sublayer output before the residual add);
  scaling query_pre_attn_scalar**-0.5; Gemma 2 softcaps scores (tanh(s/c)*c, before the mask)
  and logits; Gemma 3 ignores attn_logit_softcapping and uses RoPE theta per layer type
  (sliding: rope_local_base_freq / rope_parameters.sliding_attention; full: rope_theta /
  rope_parameters.full_attention, the only one rope_scaling applies to).
* Mixtral: save_pretrained writes the transformers-4 per-expert names
  ``block_sparse_moe.experts.{e}.w1/w2/w3.weight`` + ``block_sparse_moe.gate.weight``;
  transformers 5 fuses them in memory (``mlp.experts.gate_up_proj`` = cat(w1, w3),
  ``mlp.experts.down_proj`` = w2) and loads both layouts. Router: fp32 softmax over all
  experts, top-k, renormalise; no jitter at eval.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

PINNED = {
    "torch": "2.13.0",
    "transformers": "5.24.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
}

HERE = Path(__file__).resolve().parent
VOCAB = 128
BATCH, SEQ, PAD_TAIL = 2, 12, 3
MAX_POS = 64

# name -> (model class, config class, config kwargs, seed)
SPECS = {
    "llama-gqa": (
        LlamaForCausalLM,
        LlamaConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # head_dim 8, 2 query heads per kv head
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=False,
        ),
        1001,
    ),
    "llama3-rope": (
        LlamaForCausalLM,
        LlamaConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,  # head_dim 16
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
            tie_word_embeddings=True,
        ),
        1002,
    ),
    "mistral": (
        MistralForCausalLM,
        MistralConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            sliding_window=6,
            tie_word_embeddings=False,
        ),
        1003,
    ),
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,  # 4 query heads share one kv head
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
            sliding_window=6,  # ignored (set to None) because use_sliding_window is False
            max_window_layers=1,
            tie_word_embeddings=False,
        ),
        1004,
    ),
    "opt-pre": (
        OPTForCausalLM,
        OPTConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            word_embed_proj_dim=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_POS,
            do_layer_norm_before=True,
            activation_function="relu",
            enable_bias=True,
        ),
        1005,
    ),
    "opt-post-proj": (
        OPTForCausalLM,
        OPTConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            word_embed_proj_dim=16,  # != hidden_size -> project_in / project_out (as OPT-350m)
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_POS,
            do_layer_norm_before=False,
            activation_function="relu",
            enable_bias=True,
        ),
        1006,
    ),
    # ---- added families (see FAMILIES.md beside this file) -------------------
    "qwen3": (
        Qwen3ForCausalLM,
        Qwen3Config,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,  # explicit, != hidden/heads (8): q_proj [64,32], o_proj [32,64]
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
            max_window_layers=2,
            attention_bias=False,
            tie_word_embeddings=False,
        ),
        1007,
    ),
    "phi3": (
        Phi3ForCausalLM,
        Phi3Config,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,  # qkv_proj rows: 32 q + 16 k + 16 v = 64
            max_position_embeddings=MAX_POS,
            original_max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            # Phi-3 default: partial_rotary_factor 1.0 (full rotary), default (not longrope) RoPE
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
            sliding_window=None,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=2,  # the class default 32000 is out of range for vocab 128 (padding_idx)
            tie_word_embeddings=False,
        ),
        1008,
    ),
    "gemma2": (
        Gemma2ForCausalLM,
        Gemma2Config,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,  # default layer_types: layer 0 sliding, layer 1 full
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,  # q_proj [64,32]
            query_pre_attn_scalar=24,  # scaling 24**-0.5, != head_dim**-0.5
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            sliding_window=4,
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
            tie_word_embeddings=True,
        ),
        1009,
    ),
    "gemma3": (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            # = sliding_window_pattern 3: layer i is full iff (i+1) % 3 == 0
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            query_pre_attn_scalar=24,
            hidden_activation="gelu_pytorch_tanh",
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-6,
            rope_parameters={
                "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
            sliding_window=4,
            # Gemma 3 defaults: no softcapping at all
            attn_logit_softcapping=None,
            final_logit_softcapping=None,
            tie_word_embeddings=True,
        ),
        1010,
    ),
    "mixtral": (
        MixtralForCausalLM,
        MixtralConfig,
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POS,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            sliding_window=None,
            num_local_experts=4,
            num_experts_per_tok=2,
            tie_word_embeddings=False,
        ),
        1011,
    ),
}


def log(*a):
    print(*a, flush=True)


def check_versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }
    bad = {k: (got[k], v) for k, v in PINNED.items() if got[k] != v}
    if bad:
        sys.exit(f"version mismatch (got, pinned): {bad}; install tests/golden/requirements.txt")


@torch.no_grad()
def randomise(model, gen):
    """Re-initialise every parameter so logits are O(1) and nothing is trivial.

    Norm weights are 1+0.3*N(0,1), except for Gemma's RMSNorm, which multiplies by
    (1 + weight) and is initialised to zeros: there the weight is 0.3*N(0,1), so the
    effective scale is again 1+0.3*N(0,1). Mixtral's fused expert tensors and router
    (plain nn.Parameters, not nn.Linear) get N(0,1)/sqrt(fan_in) like linears.
    """
    norm_types = (torch.nn.LayerNorm,)
    touched = set()
    for mname, module in model.named_modules():
        tname = type(module).__name__
        if isinstance(module, torch.nn.Embedding):
            d = module.weight.shape[1]
            # std chosen so tied lm_heads (logits = h . E) still give O(1) logits
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (1.5 / math.sqrt(d)))
        elif isinstance(module, torch.nn.Linear):
            fan_in = module.weight.shape[1]
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
            if module.bias is not None:
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, norm_types) or "RMSNorm" in tname:
            if tname.startswith("Gemma"):
                # Gemma RMSNorm: out = norm(x) * (1 + weight), weight initialised to 0
                module.weight.copy_(0.3 * torch.randn(module.weight.shape, generator=gen))
            else:
                module.weight.copy_(1.0 + 0.3 * torch.randn(module.weight.shape, generator=gen))
            if getattr(module, "bias", None) is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        elif tname.endswith("TopKRouter"):
            # router [E, H]: logits std ~1 on a normalised input, so tokens pick different experts
            fan_in = module.weight.shape[1]
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
        elif tname.endswith("Experts"):
            # fused expert tensors [E, out, in]: gate_up_proj [E, 2I, H], down_proj [E, H, I]
            for pname, p in module.named_parameters(recurse=False):
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        else:
            continue
        touched.update(id(p) for p in module.parameters(recurse=False))
    # every parameter must have been touched: no exact 0/1 constant tensors left
    for n, p in model.named_parameters():
        assert id(p) in touched, f"randomise() did not touch {n}"
        assert p.std() > 0, n


# transformers-4.55 config classes without a ``rope_scaling`` attribute: their
# configs carry ``rope_theta`` only (published Mistral-7B-v0.1 / Mixtral / Gemma 2 configs)
TF4_NO_ROPE_SCALING = {"gemma2", "mixtral"}
# keys transformers 5.24 writes that the 4.55 config class does not have (4.55 never writes them)
TF5_ONLY_KEYS = {"gemma2": ("use_bidirectional_attention",), "gemma3_text": ("use_bidirectional_attention",)}


def to_tf4_layout(cfg5: dict, cfg_cls) -> dict:
    """Translate a transformers-5 config dict into the transformers-4 (<=4.55) layout.

    transformers 4.x (e.g. 4.45-4.55, which wrote most published Llama-3/Mistral/Qwen2
    configs) kept ``rope_theta`` and ``rope_scaling`` at the top level (``rope_scaling``
    is null for default RoPE, otherwise a dict with ``rope_type`` and the scaling
    parameters), wrote ``torch_dtype`` instead of ``dtype``, and LlamaConfig also
    serialised ``pretraining_tp: 1``. OPT has no RoPE, only the dtype key changes.

    Per family (checked against 4.55.4 by check_tf4_configs.py):
    * phi3: ``partial_rotary_factor`` is a top-level key in 4.55 (inside
      ``rope_parameters`` in 5.x).
    * gemma3_text: the nested ``rope_parameters`` {full_attention, sliding_attention}
      become ``rope_theta`` (full/global layers), ``rope_local_base_freq`` (sliding/local
      layers, always default RoPE) and ``rope_scaling`` (full layers only).
    * gemma2, mixtral: the 4.55 classes have no ``rope_scaling`` attribute, so no key.
    """
    model_type = cfg5.get("model_type")
    defaults = cfg_cls()
    out = {}
    for k, v in cfg5.items():
        if k == "rope_parameters":
            if model_type == "gemma3_text":
                full = dict(v["full_attention"])
                local = dict(v["sliding_attention"])
                out["rope_theta"] = float(full.pop("rope_theta"))
                out["rope_local_base_freq"] = float(local.pop("rope_theta"))
                assert local == {"rope_type": "default"}, local  # 4.55 has no local scaling
                out["rope_scaling"] = None if full == {"rope_type": "default"} else full
                continue
            rp = dict(v)
            out["rope_theta"] = float(rp.pop("rope_theta"))
            if model_type == "phi3":
                out["partial_rotary_factor"] = rp.pop("partial_rotary_factor", 1.0)
            rope_type = rp.get("rope_type", "default")
            scaling = None if rope_type == "default" and len(rp) == 1 else rp
            if model_type in TF4_NO_ROPE_SCALING:
                assert scaling is None, (model_type, scaling)
            else:
                out["rope_scaling"] = scaling
        elif k == "dtype":
            out["torch_dtype"] = v
        elif k in TF5_ONLY_KEYS.get(model_type, ()):
            continue
        else:
            out[k] = v
    if model_type == "llama":
        out.setdefault("pretraining_tp", 1)
    # transformers 4 saves with use_diff=True: a key is omitted when its value equals both
    # the PretrainedConfig default and the model class's default. So null bos/eos/pad ids
    # are omitted unless the class has a non-null default (then 4.55 writes null), and
    # tie_word_embeddings=true is omitted only where the class default is tied too (OPT,
    # Gemma); LlamaConfig defaults to untied, so 4.55 keeps "tie_word_embeddings": true.
    # Verified by check_tf4_configs.py.
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k in out and out[k] is None and getattr(defaults, k, None) is None:
            del out[k]
    if out.get("tie_word_embeddings") is True and defaults.tie_word_embeddings:
        del out["tie_word_embeddings"]
    return dict(sorted(out.items()))


# extra from_pretrained kwargs per fixture: Mixtral's experts run the reference per-expert
# loop ("eager"); 5.24 would otherwise pick "grouped_mm" where torch supports it
LOAD_KW = {"mixtral": {"experts_implementation": "eager"}}


def load(path: Path, config_file: str = "config.json", **kw):
    """Load the directory with transformers (fp32, eager), optionally with another config file."""
    if config_file == "config.json":
        src = path
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory()
        src = Path(tmp.name)
        shutil.copy(path / "model.safetensors", src / "model.safetensors")
        shutil.copy(path / config_file, src / "config.json")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager", **kw)
    model.eval()
    if tmp is not None:
        tmp.cleanup()
    return model


@torch.no_grad()
def run(model, ids, mask, **kw):
    return model(ids, attention_mask=mask, **kw)


def make_inputs(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g, dtype=torch.int64)
    mask = torch.ones(BATCH, SEQ, dtype=torch.int64)
    mask[1, SEQ - PAD_TAIL :] = 0
    return ids, mask


def maxdiff(a, b):
    return (a - b).abs().max().item()


def write_tensors_txt(path: Path):
    lines = []
    with safe_open(path / "model.safetensors", framework="pt") as f:
        meta = f.metadata()
        for name in sorted(f.keys()):
            t = f.get_slice(name)
            lines.append(f"{name}\t{t.get_dtype()}\t{list(t.get_shape())}")
    (path / "tensors.txt").write_text("\n".join(lines) + "\n")
    return [ln.split("\t")[0] for ln in lines], meta


NEW_FAMILIES = ("qwen3", "phi3", "gemma2", "gemma3", "mixtral")


@torch.no_grad()
def reference_forward(path: Path, ids, mask=None, stats=None):
    """Independent fp32 forward pass of the added families, written from FAMILIES.md.

    Reads only ``config.json`` and ``model.safetensors`` (the names on disk, e.g. Mixtral's
    per-expert ``block_sparse_moe.experts.{e}.w1/w2/w3``), so it checks the tensor layout
    and every formula the Rust code is to implement. Returns (logits, hidden_block0);
    ``stats`` (a dict), if given, gets the largest |scaled attention score| per layer
    before softcapping and masking.
    """
    cfg = json.loads((path / "config.json").read_text())
    mt = cfg["model_type"]
    with safe_open(path / "model.safetensors", framework="pt") as f:
        W = {k: f.get_tensor(k) for k in f.keys()}
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    eps = cfg["rms_norm_eps"]
    gemma = mt in ("gemma2", "gemma3_text")
    B, S = ids.shape
    layer_types = cfg.get("layer_types") or ["full_attention"] * L
    if mt in ("phi3", "mixtral") and cfg.get("sliding_window") is not None:
        layer_types = ["sliding_attention"] * L  # one mask for every layer

    def rms(x, w):
        x32 = x.float()
        n = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        return n * (1.0 + w.float()) if gemma else w * n

    def act(x):
        if mt in ("gemma2", "gemma3_text"):
            return torch.nn.functional.gelu(x, approximate="tanh")
        return torch.nn.functional.silu(x)

    def rope_tables(layer_type):
        rp = cfg["rope_parameters"]
        if mt == "gemma3_text":
            rp = rp[layer_type]
        assert rp["rope_type"] in ("default", "linear"), rp
        rot = int(hd * rp.get("partial_rotary_factor", 1.0))
        inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.float) / rot))
        if rp["rope_type"] == "linear":
            inv = inv / rp["factor"]
        fr = torch.arange(S, dtype=torch.float)[:, None] * inv[None, :]
        emb = torch.cat([fr, fr], -1)
        return emb.cos(), emb.sin(), rot

    def apply_rope(x, cos, sin, rot):  # x [B, heads, S, hd]
        xr, xp = x[..., :rot], x[..., rot:]
        half = rot // 2
        rh = torch.cat([-xr[..., half:], xr[..., :half]], -1)
        return torch.cat([xr * cos + rh * sin, xp], -1)

    am = torch.ones(B, S, dtype=torch.int64) if mask is None else mask
    i = torch.arange(S)[:, None]
    j = torch.arange(S)[None, :]
    neg = torch.finfo(torch.float32).min

    def mask_for(layer_type):
        ok = (j <= i)[None] & (am[:, None, :] == 1)
        if layer_type == "sliding_attention":
            ok = ok & (j > i - cfg["sliding_window"])[None]
        return torch.where(ok, 0.0, neg)[:, None]  # [B,1,S,S]

    x = W["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * torch.tensor(H**0.5, dtype=torch.float32)
    hidden_block0 = None
    for li in range(L):
        p = f"model.layers.{li}."
        lt = layer_types[li]
        h = rms(x, W[p + "input_layernorm.weight"])
        if mt == "phi3":
            qkv = h @ W[p + "self_attn.qkv_proj.weight"].T
            q, k, v = qkv.split([nh * hd, nkv * hd, nkv * hd], -1)
        else:
            q = h @ W[p + "self_attn.q_proj.weight"].T
            k = h @ W[p + "self_attn.k_proj.weight"].T
            v = h @ W[p + "self_attn.v_proj.weight"].T
        q = q.view(B, S, nh, hd).transpose(1, 2)
        k = k.view(B, S, nkv, hd).transpose(1, 2)
        v = v.view(B, S, nkv, hd).transpose(1, 2)
        if mt in ("qwen3", "gemma3_text"):  # per-head RMSNorm over head_dim, before RoPE
            q = rms(q, W[p + "self_attn.q_norm.weight"])
            k = rms(k, W[p + "self_attn.k_norm.weight"])
        cos, sin, rot = rope_tables(lt)
        q, k = apply_rope(q, cos, sin, rot), apply_rope(k, cos, sin, rot)
        k = k.repeat_interleave(nh // nkv, dim=1)  # query head h uses kv head h // (nh/nkv)
        v = v.repeat_interleave(nh // nkv, dim=1)
        scale = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else hd**-0.5
        sc = (q @ k.transpose(2, 3)) * scale
        if stats is not None:
            causal = (j <= i)[None, None]
            stats.setdefault("max_abs_scaled_score_per_layer", []).append(
                round(sc.abs().masked_fill(~causal, 0).max().item(), 3))
        if mt == "gemma2" and cfg.get("attn_logit_softcapping") is not None:  # gemma3 ignores it
            c = cfg["attn_logit_softcapping"]
            sc = torch.tanh(sc / c) * c
        sc = sc + mask_for(lt)
        a = torch.softmax(sc.float(), -1) @ v
        a = a.transpose(1, 2).reshape(B, S, nh * hd) @ W[p + "self_attn.o_proj.weight"].T
        if gemma:
            x = x + rms(a, W[p + "post_attention_layernorm.weight"])
            h = rms(x, W[p + "pre_feedforward_layernorm.weight"])
        else:
            x = x + a
            h = rms(x, W[p + "post_attention_layernorm.weight"])
        if mt == "phi3":
            gate, up = (h @ W[p + "mlp.gate_up_proj.weight"].T).chunk(2, -1)  # gate rows first
            m_out = (act(gate) * up) @ W[p + "mlp.down_proj.weight"].T
        elif mt == "mixtral":
            E, K = cfg["num_local_experts"], cfg["num_experts_per_tok"]
            flat = h.reshape(-1, H)
            logits_r = flat @ W[p + "block_sparse_moe.gate.weight"].T  # [T, E]
            probs = torch.softmax(logits_r.float(), -1)
            topv, topi = torch.topk(probs, K, -1)
            topv = topv / topv.sum(-1, keepdim=True)
            out = torch.zeros_like(flat)
            for e in range(E):
                w1 = W[p + f"block_sparse_moe.experts.{e}.w1.weight"]  # gate [I, H]
                w3 = W[p + f"block_sparse_moe.experts.{e}.w3.weight"]  # up [I, H]
                w2 = W[p + f"block_sparse_moe.experts.{e}.w2.weight"]  # down [H, I]
                ye = (act(flat @ w1.T) * (flat @ w3.T)) @ w2.T
                wt = (topv * (topi == e)).sum(-1, keepdim=True)  # 0 where e is not chosen
                out = out + wt * ye
            m_out = out.view(B, S, H)
        else:
            m_out = (act(h @ W[p + "mlp.gate_proj.weight"].T) * (h @ W[p + "mlp.up_proj.weight"].T)) @ W[
                p + "mlp.down_proj.weight"
            ].T
        if gemma:
            x = x + rms(m_out, W[p + "post_feedforward_layernorm.weight"])
        else:
            x = x + m_out
        if li == 0:
            hidden_block0 = x
    x = rms(x, W["model.norm.weight"])
    lm = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    logits = x @ lm.T
    if cfg.get("final_logit_softcapping") is not None:
        c = cfg["final_logit_softcapping"]
        logits = torch.tanh(logits / c) * c
    return logits, hidden_block0


def variant(m, cls, **changes):
    """Same weights as ``m``, config attributes changed (fresh eager model, fp32)."""
    cfg = copy.deepcopy(m.config)
    for k, v in changes.items():
        setattr(cfg, k, v)
    mv = cls(cfg).eval()
    mv.config._attn_implementation = "eager"
    mv.load_state_dict(m.state_dict())
    return mv


@torch.no_grad()
def variant_vs_reference(m, cls, ids, mask, **changes):
    """Max |diff| between transformers and reference_forward for a config variant (not saved)."""
    mv = variant(m, cls, **changes)
    with tempfile.TemporaryDirectory() as td:
        mv.save_pretrained(td)
        ref, _ = reference_forward(Path(td), ids, mask)
    return maxdiff(ref, run(mv, ids, mask).logits)


def shapes(tensor_names, path, pred):
    with safe_open(path / "model.safetensors", framework="pt") as fh:
        return {n: list(fh.get_slice(n).get_shape()) for n in tensor_names if pred(n)}


@torch.no_grad()
def new_family_facts(name, f, m, cls, out, ids, mask, logits, logits_nomask, hidden_block0, tensor_names):
    """Facts and self-checks for qwen3 / phi3 / gemma2 / gemma3 / mixtral (see FAMILIES.md)."""
    # the independent re-implementation written from FAMILIES.md must reproduce transformers
    ref_logits, ref_h0 = reference_forward(out, ids, mask)
    st = {}
    ref_logits_nm, ref_h0_nm = reference_forward(out, ids, None, st)
    f["max_abs_scaled_attn_score_per_layer_before_cap"] = st["max_abs_scaled_score_per_layer"]
    f["reference_forward_logits_maxdiff"] = maxdiff(ref_logits, logits)
    f["reference_forward_logits_nomask_maxdiff"] = maxdiff(ref_logits_nm, logits_nomask)
    f["reference_forward_hidden_block0_maxdiff"] = maxdiff(ref_h0_nm, hidden_block0)
    f["block0_tensors"] = shapes(tensor_names, out, lambda n: ".layers.0." in n)
    f["non_block_tensors"] = shapes(tensor_names, out, lambda n: ".layers." not in n)
    f["num_tensors"] = len(tensor_names)
    cfg = m.config
    f["parsed_layer_types"] = list(getattr(cfg, "layer_types", None) or [])
    f["parsed_sliding_window"] = getattr(cfg, "sliding_window", None)
    f["parsed_rope_parameters"] = cfg.rope_parameters
    f["attn_scaling_per_layer"] = [layer.self_attn.scaling for layer in m.model.layers]
    f["attn_sliding_window_attr_per_layer"] = [getattr(layer.self_attn, "sliding_window", "n/a")
                                               for layer in m.model.layers]
    n_valid = SEQ - PAD_TAIL

    if name == "qwen3":
        f["qwen3_head_dim"] = m.model.layers[0].self_attn.head_dim
        f["qwen3_q_norm_weight_std"] = round(m.model.layers[0].self_attn.q_norm.weight.std().item(), 3)
        f["qwen3_k_norm_eps"] = m.model.layers[0].self_attn.k_norm.variance_epsilon
        m_v = variant(m, cls)
        for layer in m_v.model.layers:
            layer.self_attn.q_norm.weight.fill_(1.0)
            layer.self_attn.k_norm.weight.fill_(1.0)
        f["qwen3_q_k_norm_weights_set_to_1_logits_maxdiff"] = maxdiff(run(m_v, ids, None).logits, logits_nomask)

    if name == "phi3":
        f["phi3_default_rope_parameters"] = Phi3Config().rope_parameters
        f["phi3_default_sliding_window"] = Phi3Config().sliding_window
        f["phi3_rotary_inv_freq_len"] = int(m.model.rotary_emb.inv_freq.numel())
        f["phi3_head_dim"] = m.model.layers[0].self_attn.head_dim
        # wrong fused order must be caught: swap the gate/up halves of gate_up_proj
        m_v = variant(m, cls)
        for layer in m_v.model.layers:
            w = layer.mlp.gate_up_proj.weight
            w.copy_(torch.cat(w.chunk(2, 0)[::-1], 0))
        f["phi3_gate_up_halves_swapped_logits_maxdiff"] = maxdiff(run(m_v, ids, None).logits, logits_nomask)
        # informational: Phi-3 applies sliding_window (when not null) to EVERY layer
        m_sw = variant(m, cls, sliding_window=4)
        sw = run(m_sw, ids, None).logits
        f["phi3_if_sliding_window_4_first4_positions_maxdiff"] = maxdiff(sw[:, :4], logits_nomask[:, :4])
        f["phi3_if_sliding_window_4_positions_4plus_maxdiff"] = maxdiff(sw[:, 4:], logits_nomask[:, 4:])
        f["phi3_if_sliding_window_4_reference_forward_maxdiff"] = variant_vs_reference(
            m, cls, ids, mask, sliding_window=4)
        # partial rotary (Phi-4-mini style 0.75; 0.5 here): RoPE on the first dims of each head only
        prf = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
        f["phi3_if_partial_rotary_0.5_reference_forward_maxdiff"] = variant_vs_reference(
            m, cls, ids, mask, rope_parameters=prf)
        m_p = variant(m, cls, rope_parameters=prf)
        f["phi3_if_partial_rotary_0.5_logits_maxdiff"] = maxdiff(run(m_p, ids, None).logits, logits_nomask)

    if name in ("gemma2", "gemma3"):
        emb = m.model.embed_tokens
        f["gemma_embed_scale_buffer"] = [float(emb.embed_scale), str(emb.embed_scale.dtype)]
        f["gemma_embed_scale_sqrt_hidden_fp32"] = float(torch.tensor(32**0.5, dtype=torch.float32))
        f["gemma_embed_scale_in_bf16"] = float(torch.tensor(32**0.5).to(torch.bfloat16))
        f["gemma_embedding_output_vs_weight_times_scale_maxdiff"] = maxdiff(
            emb(ids), m.model.embed_tokens.weight[ids] * torch.tensor(32**0.5, dtype=torch.float32))
        f["gemma_norm_weight_mean_abs"] = round(m.model.norm.weight.abs().mean().item(), 3)
        # window: a window as long as the context (same layer types, so the same RoPE per
        # layer) -> positions < window unchanged, later ones differ
        m_full = variant(m, cls, sliding_window=MAX_POS)
        full = run(m_full, ids, None).logits
        w = cfg.sliding_window
        f["no_window_vs_window_first_window_positions_maxdiff"] = maxdiff(full[:, :w], logits_nomask[:, :w])
        f["no_window_vs_window_later_positions_maxdiff"] = maxdiff(full[:, w:], logits_nomask[:, w:])
        from transformers.masking_utils import create_sliding_window_causal_mask

        sm = create_sliding_window_causal_mask(config=m.config, inputs_embeds=m.model.embed_tokens(ids),
                                               attention_mask=mask, cache=None,
                                               position_ids=torch.arange(SEQ)[None])
        f["sliding_mask_row1_allowed_keys_per_query"] = [
            [j for j in range(SEQ) if sm[1, 0, i, j] == 0] for i in range(SEQ)
        ]
        m_q = variant(m, cls, query_pre_attn_scalar=16)
        f["query_pre_attn_scalar_16_instead_of_24_logits_maxdiff"] = maxdiff(run(m_q, ids, None).logits,
                                                                             logits_nomask)

    if name == "gemma2":
        f["gemma2_logits_absmax_with_final_cap_3"] = round(logits_nomask.abs().max().item(), 4)
        m_nf = variant(m, cls, final_logit_softcapping=None)
        raw = run(m_nf, ids, None).logits
        f["gemma2_no_final_softcap_logits_absmax"] = round(raw.abs().max().item(), 4)
        f["gemma2_no_final_softcap_vs_capped_maxdiff"] = maxdiff(raw, logits_nomask)
        f["gemma2_final_softcap_formula_tanh(x/3)*3_maxdiff"] = maxdiff(torch.tanh(raw / 3.0) * 3.0, logits_nomask)
        f["gemma2_fraction_raw_logits_abs_gt_1.5"] = round((raw.abs() > 1.5).float().mean().item(), 4)
        m_na = variant(m, cls, attn_logit_softcapping=None)
        f["gemma2_no_attn_softcap_vs_capped_maxdiff"] = maxdiff(run(m_na, ids, None).logits, logits_nomask)

    if name == "gemma3":
        rot = m.model.rotary_emb
        f["gemma3_rotary_layer_types"] = rot.layer_types
        f["gemma3_inv_freq_full_attention"] = [float(x) for x in rot.full_attention_inv_freq]
        f["gemma3_inv_freq_sliding_attention"] = [float(x) for x in rot.sliding_attention_inv_freq]
        f["gemma3_attention_scaling_per_type"] = [rot.full_attention_attention_scaling,
                                                  rot.sliding_attention_attention_scaling]
        f["gemma3_q_norm_shape"] = list(m.model.layers[0].self_attn.q_norm.weight.shape)
        # Gemma3Attention never passes softcap= to the attention function: the key is ignored
        m_sc = variant(m, cls, attn_logit_softcapping=5.0)
        f["gemma3_attn_logit_softcapping_5_is_ignored_maxdiff"] = maxdiff(run(m_sc, ids, None).logits,
                                                                          logits_nomask)
        m_fc = variant(m, cls, final_logit_softcapping=3.0)
        f["gemma3_final_logit_softcapping_3_would_change_logits_maxdiff"] = maxdiff(
            run(m_fc, ids, None).logits, logits_nomask)
        same = {"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1000000.0}}
        m_th = variant(m, cls, rope_parameters=same)
        f["gemma3_local_theta_1e6_instead_of_1e4_logits_maxdiff"] = maxdiff(run(m_th, ids, None).logits,
                                                                            logits_nomask)
        # Gemma 3 4B+ style: linear RoPE scaling (factor 8) on the full-attention layers only
        lin = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
               "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}
        f["gemma3_if_linear8_on_full_reference_forward_maxdiff"] = variant_vs_reference(
            m, cls, ids, mask, rope_parameters=lin)
        f["gemma3_if_linear8_on_full_logits_maxdiff"] = maxdiff(run(variant(m, cls, rope_parameters=lin), ids,
                                                                    None).logits, logits_nomask)
        # BC: old configs have sliding_window_pattern and no layer_types
        d4 = json.loads((out / "config.tf4.json").read_text())
        d4.pop("layer_types")
        f["gemma3_tf4_without_layer_types_default_pattern6"] = Gemma3TextConfig.from_dict(d4).layer_types
        d4["_sliding_window_pattern"] = 3  # the private key 5.24/4.55 write is NOT read back
        f["gemma3_tf4_underscore_sliding_window_pattern_3_no_layer_types"] = Gemma3TextConfig.from_dict(d4).layer_types
        d4["sliding_window_pattern"] = 3  # the public (older hub) key is
        f["gemma3_tf4_sliding_window_pattern_3_no_layer_types"] = Gemma3TextConfig.from_dict(d4).layer_types
        f["gemma3_config_json_underscore_sliding_window_pattern"] = json.loads(
            (out / "config.json").read_text()).get("_sliding_window_pattern")
        d4s = json.loads((out / "config.tf4.json").read_text())
        d4s["rope_scaling"] = {"rope_type": "linear", "factor": 8.0}
        f["gemma3_tf4_rope_scaling_linear8_parsed"] = Gemma3TextConfig.from_dict(d4s).rope_parameters
        d5 = json.loads((out / "config.json").read_text())
        del d5["rope_parameters"]
        f["gemma3_tf5_without_rope_parameters_defaults"] = Gemma3TextConfig.from_dict(d5).rope_parameters

    if name == "mixtral":
        f["mixtral_expert_tensor_names_layer0"] = sorted(n for n in tensor_names if ".layers.0." in n and "moe" in n)
        f["mixtral_in_memory_parameter_names_layer0_mlp"] = {
            n: list(p.shape) for n, p in m.named_parameters() if n.startswith("model.layers.0.mlp")}
        with tempfile.TemporaryDirectory() as td:
            m.save_pretrained(td, save_original_format=False)
            with safe_open(Path(td) / "model.safetensors", framework="pt") as fh:
                fused = {n: list(fh.get_slice(n).get_shape()) for n in fh.keys() if ".layers.0.mlp" in n}
                gu = fh.get_tensor("model.layers.0.mlp.experts.gate_up_proj")
                dn = fh.get_tensor("model.layers.0.mlp.experts.down_proj")
            f["mixtral_save_original_format_False_names_layer0"] = fused
            m_fused = AutoModelForCausalLM.from_pretrained(td, dtype=torch.float32, attn_implementation="eager",
                                                           experts_implementation="eager").eval()
            f["mixtral_fused_format_checkpoint_reload_logits_maxdiff"] = maxdiff(
                run(m_fused, ids, None).logits, logits_nomask)
        with safe_open(out / "model.safetensors", framework="pt") as fh:
            e = 1
            w1 = fh.get_tensor(f"model.layers.0.block_sparse_moe.experts.{e}.w1.weight")
            w3 = fh.get_tensor(f"model.layers.0.block_sparse_moe.experts.{e}.w3.weight")
            w2 = fh.get_tensor(f"model.layers.0.block_sparse_moe.experts.{e}.w2.weight")
        f["mixtral_gate_up_proj[e] == cat(w1_e, w3_e)"] = bool(torch.equal(gu[e], torch.cat([w1, w3], 0)))
        f["mixtral_down_proj[e] == w2_e"] = bool(torch.equal(dn[e], w2))
        m_def = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()
        f["mixtral_default_experts_implementation_cpu"] = m_def.config._experts_implementation
        f["mixtral_default_experts_impl_vs_eager_logits_maxdiff"] = maxdiff(run(m_def, ids, mask).logits, logits)
        f["mixtral_router_jitter_noise"] = cfg.router_jitter_noise
        f["mixtral_padded_row_valid_prefix_masked_vs_nomask"] = maxdiff(logits[1, :n_valid],
                                                                       logits_nomask[1, :n_valid])


@torch.no_grad()
def build_one(name):
    cls, cfg_cls, cfg_kwargs, seed = SPECS[name]
    out = HERE / name
    if out.exists():
        shutil.rmtree(out)
    torch.manual_seed(seed)
    config = cfg_cls(**copy.deepcopy(cfg_kwargs))
    config._attn_implementation = "eager"
    model = cls(config).to(torch.float32).eval()
    randomise(model, torch.Generator().manual_seed(seed))
    model.save_pretrained(out)

    # config.tf4.json
    cfg5 = json.loads((out / "config.json").read_text())
    (out / "config.tf4.json").write_text(json.dumps(to_tf4_layout(cfg5, cfg_cls), indent=2, sort_keys=True) + "\n")

    tensor_names, meta = write_tensors_txt(out)

    ids, mask = make_inputs(seed + 7)
    lkw = LOAD_KW.get(name, {})
    m = load(out, **lkw)
    o_mask = run(m, ids, mask)
    o_nomask = run(m, ids, None, output_hidden_states=True)
    logits = o_mask.logits.float().contiguous()
    logits_nomask = o_nomask.logits.float().contiguous()
    hidden_block0 = o_nomask.hidden_states[1].float().contiguous()
    assert len(o_nomask.hidden_states) == config.num_hidden_layers + 1

    # hidden_block0 really is the output of decoder layer 0: recompute via a hook
    captured = {}
    layers = m.model.decoder.layers if hasattr(m.model, "decoder") else m.model.layers
    h = layers[0].register_forward_hook(lambda mod, a, o: captured.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    run(m, ids, None)
    h.remove()
    f = {"hidden_block0_is_layer0_output_maxdiff": maxdiff(captured["h"], hidden_block0)}

    golden = {
        "input_ids": ids.contiguous(),
        "attention_mask": mask.contiguous(),
        "logits": logits,
        "logits_nomask": logits_nomask,
        "hidden_block0": hidden_block0,
    }
    if name == "mixtral":
        # router of decoder layer 0 in the no-mask run: logits (transformers returns them
        # flattened [B*S, E], batch-major; stored here as [B, S, E]) and, per expert, how many
        # (token, chosen expert) pairs of the top-k picked it (sums to B*S*k)
        cap = {}
        hk = m.model.layers[0].mlp.gate.register_forward_hook(lambda mod, a, o: cap.__setitem__("r", o))
        o_router = run(m, ids, None, output_router_logits=True)
        hk.remove()
        router_logits0 = o_router.router_logits[0].float()
        f["router_logits_output_shape"] = list(router_logits0.shape)
        f["router_logits_output_vs_hook_maxdiff"] = maxdiff(router_logits0, cap["r"][0])
        f["router_run_logits_vs_nomask_maxdiff"] = maxdiff(o_router.logits, logits_nomask)
        E = m.config.num_local_experts
        top_idx = cap["r"][2]
        golden["router_logits_block0"] = router_logits0.reshape(BATCH, SEQ, E).contiguous()
        golden["expert_counts_block0"] = torch.bincount(top_idx.reshape(-1), minlength=E).to(torch.int64)
        f["expert_counts_block0"] = golden["expert_counts_block0"].tolist()
        f["router_top_k_index_block0_row0"] = top_idx[:SEQ].tolist()
        f["router_distinct_expert_sets_block0"] = len({tuple(sorted(t)) for t in top_idx.tolist()})
        f["router_top_k_weights_sum_to_1_maxdiff"] = maxdiff(cap["r"][1].sum(-1), torch.ones(BATCH * SEQ))
    save_file(
        golden,
        str(out / "golden.safetensors"),
        # a single key: safetensors writes metadata from a hash map, so several keys
        # come out in a random order and the file would not be byte-reproducible
        metadata={
            "source": f"tests/golden/make_golden.py transformers=={transformers.__version__} "
            f"torch=={torch.__version__} eager fp32 eval",
        },
    )

    # ---- checks / facts -------------------------------------------------
    f["safetensors_metadata"] = meta
    f["has_lm_head_weight"] = "lm_head.weight" in tensor_names
    f["tie_word_embeddings"] = bool(m.config.tie_word_embeddings)
    if m.config.tie_word_embeddings:
        f["lm_head_is_embed_tokens"] = m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()
    f["tensor_prefix"] = sorted({n.split(".layers.")[0] for n in tensor_names if ".layers." in n})
    f["logits_std"] = round(logits_nomask.std().item(), 3)
    f["logits_absmax"] = round(logits_nomask.abs().max().item(), 3)
    f["softmax_max_prob_max"] = round(torch.softmax(logits_nomask, -1).max().item(), 3)
    f["hidden_block0_std"] = round(hidden_block0.std().item(), 3)

    # masked vs unmasked
    n_valid = SEQ - PAD_TAIL
    f["row0_masked_eq_nomask"] = maxdiff(logits[0], logits_nomask[0])
    f["row1_valid_prefix_masked_vs_nomask"] = maxdiff(logits[1, :n_valid], logits_nomask[1, :n_valid])
    f["row1_padded_positions_masked_vs_nomask"] = maxdiff(logits[1, n_valid:], logits_nomask[1, n_valid:])
    f["all_logits_finite"] = bool(torch.isfinite(logits).all() and torch.isfinite(logits_nomask).all())
    f["batch_vs_single_row1"] = maxdiff(run(m, ids[1:, :n_valid], None).logits, logits[1:, :n_valid])

    # use_cache default (DynamicCache) vs use_cache=False: same logits
    f["use_cache_false_vs_default"] = maxdiff(run(m, ids, mask, use_cache=False).logits, logits)

    # eager vs sdpa (informational)
    try:
        m_sdpa = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="sdpa",
                                                      **lkw).eval()
    except ValueError as e:  # Gemma 2: _supports_sdpa = False (sdpa has no softcapping)
        m_sdpa = None
        f["sdpa_unsupported"] = str(e).split(".")[0]
    if m_sdpa is not None:
        f["sdpa_vs_eager_masked_valid"] = maxdiff(
            run(m_sdpa, ids, mask).logits[:, :n_valid], logits[:, :n_valid]
        )
        f["sdpa_vs_eager_nomask"] = maxdiff(run(m_sdpa, ids, None).logits, logits_nomask)

    # legacy transformers-4 config layout
    m4 = load(out, "config.tf4.json", **lkw)
    f["tf4_config_logits_maxdiff"] = maxdiff(run(m4, ids, mask).logits, logits)
    f["tf4_config_nomask_maxdiff"] = maxdiff(run(m4, ids, None).logits, logits_nomask)
    f["tf4_config_parsed_rope_parameters"] = getattr(m4.config, "rope_parameters", None)

    # eager mask actually used (as built by the model's mask function)
    if name == "llama-gqa":
        from transformers.masking_utils import create_causal_mask

        emb = m.model.embed_tokens(ids)
        cm = create_causal_mask(config=m.config, inputs_embeds=emb, attention_mask=mask, cache=None,
                                position_ids=torch.arange(SEQ)[None])
        f["eager_mask_shape"] = list(cm.shape)
        f["eager_mask_dtype"] = str(cm.dtype)
        f["eager_mask_values"] = sorted({float(x) for x in cm.unique()})
        f["eager_mask_row1_allowed_keys_per_query"] = [
            [j for j in range(SEQ) if cm[1, 0, i, j] == 0] for i in range(SEQ)
        ]
        cm0 = create_causal_mask(config=m.config, inputs_embeds=emb, attention_mask=None, cache=None,
                                 position_ids=torch.arange(SEQ)[None])
        f["eager_mask_without_attention_mask"] = "None" if cm0 is None else f"tensor{list(cm0.shape)}"

    if name == "llama3-rope":
        rot = m.model.rotary_emb
        cfg_default = copy.deepcopy(m.config)
        cfg_default.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
        base = 1.0 / (500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float) / 16))
        f["rope_inv_freq_default"] = [float(x) for x in base]
        f["rope_inv_freq_llama3"] = [float(x) for x in rot.inv_freq]
        f["rope_attention_scaling"] = float(rot.attention_scaling)
        f["rope_wavelen_default"] = [round(2 * math.pi / float(x), 3) for x in base]
        # same weights with default RoPE: logits must differ
        m_def = cls(cfg_default).eval()
        m_def.load_state_dict(m.state_dict())
        f["llama3_vs_default_rope_logits_maxdiff"] = maxdiff(run(m_def, ids, None).logits, logits_nomask)

    if name == "mistral":
        from transformers.masking_utils import create_sliding_window_causal_mask

        emb = m.model.embed_tokens(ids)
        sm = create_sliding_window_causal_mask(config=m.config, inputs_embeds=emb, attention_mask=mask,
                                               cache=None, position_ids=torch.arange(SEQ)[None])
        f["sliding_mask_row0_allowed_keys_per_query"] = [
            [j for j in range(SEQ) if sm[0, 0, i, j] == 0] for i in range(SEQ)
        ]
        f["sliding_mask_row1_allowed_keys_per_query"] = [
            [j for j in range(SEQ) if sm[1, 0, i, j] == 0] for i in range(SEQ)
        ]
        cfg_full = copy.deepcopy(m.config)
        cfg_full.sliding_window = None
        m_full = cls(cfg_full).eval()
        m_full.config._attn_implementation = "eager"
        m_full.load_state_dict(m.state_dict())
        full = run(m_full, ids, None).logits
        f["no_window_vs_window_first6_positions_maxdiff"] = maxdiff(full[:, :6], logits_nomask[:, :6])
        f["no_window_vs_window_positions_6plus_maxdiff"] = maxdiff(full[:, 6:], logits_nomask[:, 6:])
        m_sdpa_nomask = run(m_sdpa, ids, None).logits
        f["sdpa_also_windows_maxdiff_vs_eager"] = maxdiff(m_sdpa_nomask, logits_nomask)

    if name == "qwen2":
        f["qwen2_config_sliding_window_after_init"] = m.config.sliding_window
        f["qwen2_layer_types"] = list(m.config.layer_types)
        f["qwen2_attn_sliding_window_per_layer"] = [layer.self_attn.sliding_window for layer in m.model.layers]
        f["qwen2_has_sliding_layers"] = m.model.has_sliding_layers
        biases = {n: float(p.abs().mean()) for n, p in m.named_parameters() if n.endswith(".bias")}
        f["qwen2_bias_tensors"] = sorted(biases)
        # what if it had been turned on (informational): window 6 on layers >= max_window_layers
        cfg_sw = copy.deepcopy(m.config)
        cfg_sw.use_sliding_window = True
        cfg_sw.sliding_window = 6
        cfg_sw.layer_types = ["full_attention", "sliding_attention"]
        m_sw = cls(cfg_sw).eval()
        m_sw.config._attn_implementation = "eager"
        m_sw.load_state_dict(m.state_dict())
        f["qwen2_if_sliding_enabled_maxdiff"] = maxdiff(run(m_sw, ids, None).logits, logits_nomask)

    if name.startswith("opt"):
        dec = m.model.decoder
        f["opt_embed_positions_shape"] = list(dec.embed_positions.weight.shape)
        f["opt_positions_offset"] = dec.embed_positions.offset
        pos = torch.cumsum(mask, dim=1)
        pos = (pos * mask - 1).long()
        f["opt_position_ids_masked_formula_cumsum(mask)*mask-1"] = pos.tolist()
        f["opt_embedding_rows_used_(pos+2)"] = (pos + 2).tolist()
        # prove the formula is what the model uses: feed explicit position_ids
        o_explicit = m(ids, attention_mask=mask, position_ids=pos)
        f["opt_explicit_positions_vs_default_maxdiff"] = maxdiff(o_explicit.logits, logits)
        o_arange = m(ids, attention_mask=mask, position_ids=torch.arange(SEQ)[None].expand(BATCH, -1))
        f["opt_arange_positions_vs_default_maxdiff (padded rows differ)"] = maxdiff(o_arange.logits, logits)
        f["opt_project_in_out"] = [dec.project_in is not None, dec.project_out is not None]
        f["opt_final_layer_norm_present"] = dec.final_layer_norm is not None
        f["opt_layer_norm_eps"] = dec.layers[0].self_attn_layer_norm.eps
        f["opt_padding_idx"] = dec.embed_tokens.padding_idx

    if name in NEW_FAMILIES:
        new_family_facts(name, f, m, cls, out, ids, mask, logits, logits_nomask, hidden_block0, tensor_names)
    return f


# per-directory size limit (bytes); Mixtral's 4 experts x 2 layers need more room
SIZE_LIMIT = {"mixtral": 320 * 1024, "gemma3": 240 * 1024}


def main(argv):
    names = argv or list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        sys.exit(f"unknown fixture(s) {unknown}; choose from {list(SPECS)}")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    check_versions()
    transformers.logging.set_verbosity_error()
    all_facts = {}
    for name in names:
        log(f"== {name}")
        all_facts[name] = build_one(name)
        for k, v in all_facts[name].items():
            log(f"   {k}: {v}")
    # hard requirements
    for name, f in all_facts.items():
        assert f["tf4_config_logits_maxdiff"] == 0.0, name
        assert f["row0_masked_eq_nomask"] < 1e-6, name
        assert f["all_logits_finite"], name
        assert f["hidden_block0_is_layer0_output_maxdiff"] == 0.0, name
        assert f["has_lm_head_weight"] == (not f["tie_word_embeddings"]), name
        if name in NEW_FAMILIES:
            assert f["reference_forward_logits_maxdiff"] < 1e-4, name
            assert f["reference_forward_logits_nomask_maxdiff"] < 1e-4, name
            assert f["reference_forward_hidden_block0_maxdiff"] < 1e-4, name
    if "gemma2" in all_facts:
        f = all_facts["gemma2"]
        assert f["gemma2_no_final_softcap_vs_capped_maxdiff"] > 0.1, "final softcap does not bite"
        assert f["gemma2_no_attn_softcap_vs_capped_maxdiff"] > 0.01, "attn softcap does not bite"
        assert f["no_window_vs_window_first_window_positions_maxdiff"] == 0.0
        assert f["no_window_vs_window_later_positions_maxdiff"] > 0.01, "window does not bite"
    if "gemma3" in all_facts:
        f = all_facts["gemma3"]
        assert f["no_window_vs_window_first_window_positions_maxdiff"] == 0.0
        assert f["no_window_vs_window_later_positions_maxdiff"] > 0.01, "window does not bite"
        assert f["gemma3_attn_logit_softcapping_5_is_ignored_maxdiff"] == 0.0
        assert f["gemma3_local_theta_1e6_instead_of_1e4_logits_maxdiff"] > 0.01, "local theta does not matter"
    if "mixtral" in all_facts:
        f = all_facts["mixtral"]
        assert f["router_distinct_expert_sets_block0"] > 1, "routing is the same for every token"
        assert f["mixtral_fused_format_checkpoint_reload_logits_maxdiff"] == 0.0
    # only this script's directories (others, e.g. lmeval/ or gguf/, come from other scripts)
    sizes = {n: sum(q.stat().st_size for q in (HERE / n).iterdir()) for n in SPECS if (HERE / n).is_dir()}
    for n, s in sizes.items():
        log(f"size {n}: {s} bytes")
        assert s < SIZE_LIMIT.get(n, 200 * 1024), n
    log("ok")


if __name__ == "__main__":
    main(sys.argv[1:])
