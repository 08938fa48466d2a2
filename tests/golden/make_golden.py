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
* ``tensors.txt``         name, dtype, shape of every tensor in model.safetensors.

Architectures: llama-gqa, llama3-rope, mistral, qwen2, opt-pre, opt-post-proj
(see ``SPECS`` below and README.md beside this file).

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
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python tests/golden/make_golden.py

The script is deterministic (fixed seeds, single thread, CPU); rerunning rewrites
the directories and prints a fact report (the facts are recorded in README.md).

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
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
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
    """Re-initialise every parameter so logits are O(1) and nothing is trivial."""
    norm_types = (torch.nn.LayerNorm,)
    for mname, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding):
            d = module.weight.shape[1]
            # std chosen so tied lm_heads (logits = h . E) still give O(1) logits
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * (1.5 / math.sqrt(d)))
        elif isinstance(module, torch.nn.Linear):
            fan_in = module.weight.shape[1]
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) / math.sqrt(fan_in))
            if module.bias is not None:
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        elif isinstance(module, norm_types) or "RMSNorm" in type(module).__name__:
            module.weight.copy_(1.0 + 0.3 * torch.randn(module.weight.shape, generator=gen))
            if getattr(module, "bias", None) is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    # every parameter must have been touched: no exact 0/1 constant tensors left
    for n, p in model.named_parameters():
        assert p.std() > 0, n


def to_tf4_layout(cfg5: dict, tie_default: bool) -> dict:
    """Translate a transformers-5 config dict into the transformers-4 (<=4.55) layout.

    transformers 4.x (e.g. 4.45-4.55, which wrote most published Llama-3/Mistral/Qwen2
    configs) kept ``rope_theta`` and ``rope_scaling`` at the top level (``rope_scaling``
    is null for default RoPE, otherwise a dict with ``rope_type`` and the scaling
    parameters), wrote ``torch_dtype`` instead of ``dtype``, and LlamaConfig also
    serialised ``pretraining_tp: 1``. OPT has no RoPE, only the dtype key changes.
    """
    out = {}
    for k, v in cfg5.items():
        if k == "rope_parameters":
            rp = dict(v)
            out["rope_theta"] = float(rp.pop("rope_theta"))
            rope_type = rp.get("rope_type", "default")
            out["rope_scaling"] = None if rope_type == "default" and len(rp) == 1 else rp
        elif k == "dtype":
            out["torch_dtype"] = v
        else:
            out[k] = v
    if cfg5.get("model_type") == "llama":
        out.setdefault("pretraining_tp", 1)
    # transformers 4 saves with use_diff=True against PretrainedConfig defaults, so it
    # omits null bos/eos/pad token ids and tie_word_embeddings=true (e.g. published OPT
    # configs have no tie_word_embeddings key at all).
    # Verified by check_tf4_configs.py.
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k in out and out[k] is None:
            del out[k]
    if out.get("tie_word_embeddings") is True and tie_default:
        # only where the model's own default is tied too (OPT); LlamaConfig defaults to
        # untied, so transformers 4 keeps "tie_word_embeddings": true for Llama-3.2.
        del out["tie_word_embeddings"]
    return dict(sorted(out.items()))


def load(path: Path, config_file: str = "config.json"):
    """Load the directory with transformers (fp32, eager), optionally with another config file."""
    if config_file == "config.json":
        src = path
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory()
        src = Path(tmp.name)
        shutil.copy(path / "model.safetensors", src / "model.safetensors")
        shutil.copy(path / config_file, src / "config.json")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, attn_implementation="eager")
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
    (out / "config.tf4.json").write_text(json.dumps(to_tf4_layout(cfg5, cfg_cls().tie_word_embeddings), indent=2, sort_keys=True) + "\n")

    tensor_names, meta = write_tensors_txt(out)

    ids, mask = make_inputs(seed + 7)
    m = load(out)
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

    save_file(
        {
            "input_ids": ids.contiguous(),
            "attention_mask": mask.contiguous(),
            "logits": logits,
            "logits_nomask": logits_nomask,
            "hidden_block0": hidden_block0,
        },
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
    m_sdpa = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="sdpa").eval()
    f["sdpa_vs_eager_masked_valid"] = maxdiff(
        run(m_sdpa, ids, mask).logits[:, :n_valid], logits[:, :n_valid]
    )
    f["sdpa_vs_eager_nomask"] = maxdiff(run(m_sdpa, ids, None).logits, logits_nomask)

    # legacy transformers-4 config layout
    m4 = load(out, "config.tf4.json")
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
    return f


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    check_versions()
    transformers.logging.set_verbosity_error()
    all_facts = {}
    for name in SPECS:
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
    sizes = {p.name: sum(q.stat().st_size for q in p.iterdir()) for p in HERE.iterdir() if p.is_dir()}
    for n, s in sizes.items():
        log(f"size {n}: {s} bytes")
        assert s < 200 * 1024, n
    log("ok")


if __name__ == "__main__":
    main()
