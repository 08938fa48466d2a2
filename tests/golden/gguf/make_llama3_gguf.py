"""Writes tests/golden/gguf/llama3.gguf and llama3_gguf.expected.json: a Llama-3-style GGUF.

What: the tiny fp32 checkpoint tests/golden/llama3-rope/ (made by make_golden.py: Llama with
"llama3" RoPE scaling, factor 8, low/high frequency factors 1/4, original context 16) converted to
GGUF as llama.cpp's convert_hf_to_gguf.py converts a Llama 3.x model, with the byte-level BPE
vocabulary of make_arch_ggufs.py (128 tokens) under the pre-tokenizer name Llama-3 files carry,
`tokenizer.ggml.pre = "llama-bpe"`.

Why: most GGUFs of Llama 3.1/3.2/3.3 store their RoPE scaling only as the tensor `rope_freqs.weight`
(one divisor per frequency; LlamaModel.generate_extra_tensors), and name their split "llama-bpe".
spindle's converter must turn both back into what transformers reads: `rope_scaling` of type
llama3, and the Llama-3 split regex. transformers 5.24's own GGUF loader does neither for the
RoPE: its legacy llama key table has no scaling and `rope_freqs.weight` maps to no parameter, so
the tensor is dropped and the model it builds rotates without the scaling (recorded below). The
reference logits are therefore transformers' on the safetensors fixture itself.

How, as llama.cpp does (convert_hf_to_gguf.py, LlamaModel):
- q/k rows permuted: `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2)` (n_kv_head for k).
- rope_freqs: `freqs = 1 / base ** (arange(0, dim, 2, float32) / dim)`; per frequency, wavelen =
  2π / freq; 1 below `old_context_len / high_freq_factor`, `factor` above `old_context_len /
  low_freq_factor`, else `1 / ((1 - smooth) / factor + smooth)` with smooth = (old_context_len /
  wavelen - low) / (high - low); stored float32. old_context_len is the fixture's
  original_max_position_embeddings (16).
- `llama.rope.dimension_count` = head_dim, `llama.rope.freq_base`, `attention.key_length` (head_dim
  16 != 32 / 2). Tied embeddings: no `output.weight`. All tensors F32.

JSON: the metadata, input_ids [2, 10] (the first 10 ids of two samples through transformers'
tokenizer built from this GGUF), that tokenizer's encodings of the samples (no special tokens), the
fixture's logits on input_ids (transformers, safetensors, float32, eager), and the max |diff| of
transformers' GGUF loader from them (the dropped scaling).

Versions: as make_arch_ggufs.py (whose vocabulary and helpers this imports).
Run from the repo root:
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python tests/golden/gguf/make_llama3_gguf.py
Deterministic: two runs give byte-identical files.
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import json
import math
import sys

import numpy as np
import torch
import gguf
from gguf import MODEL_ARCH
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_arch_ggufs as arch_ggufs  # noqa: E402  (asserts the pinned versions)
from gguf_fixture import as_floats, dumps, f32, gguf_name, permute, read_metadata, read_tensors  # noqa: E402

HERE = arch_ggufs.HERE
GOLDEN = arch_ggufs.GOLDEN
SRC = os.path.join(GOLDEN, "llama3-rope")
OUT = os.path.join(HERE, "llama3.gguf")
EXPECTED = os.path.join(HERE, "llama3_gguf.expected.json")


def rope_factors(cfg: dict) -> torch.Tensor:
    rp = cfg["rope_parameters"]
    base = rp["rope_theta"]
    dim = cfg["head_dim"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old = rp["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(out, dtype=torch.float32)


def main() -> None:
    with open(os.path.join(SRC, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["rope_parameters"]["rope_type"] == "llama3" and cfg["vocab_size"] == arch_ggufs.VOCAB
    tokens, merges = arch_ggufs.build_vocab()
    tokens = tokens + [arch_ggufs.EOT]
    n_layers, n_head, n_kv = cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    w = gguf.GGUFWriter(OUT, arch="llama")
    w.add_type("model")
    w.add_name("spindle tiny llama3")
    w.add_block_count(n_layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_key_length(cfg["head_dim"])
    w.add_value_length(cfg["head_dim"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_vocab_size(cfg["vocab_size"])
    w.add_rope_dimension_count(cfg["head_dim"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types([int(gguf.TokenType.CONTROL) if t == arch_ggufs.EOT else int(gguf.TokenType.NORMAL) for t in tokens])
    w.add_token_merges(merges)
    eot = tokens.index(arch_ggufs.EOT)
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(False)
    name_map = gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, n_layers)
    w.add_tensor("rope_freqs.weight", rope_factors(cfg).numpy())
    with safe_open(os.path.join(SRC, "model.safetensors"), "np") as st:
        for hf_name in sorted(st.keys()):
            x = st.get_tensor(hf_name)
            assert x.dtype == np.float32
            name = gguf_name(name_map, hf_name)
            if name.endswith("attn_q.weight"):
                x = permute(x, n_head)
            elif name.endswith("attn_k.weight"):
                x = permute(x, n_head, n_kv)
            w.add_tensor(name, np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    tok = AutoTokenizer.from_pretrained(HERE, gguf_file="llama3.gguf")
    enc = [tok(s, add_special_tokens=False)["input_ids"] for s in arch_ggufs.SAMPLES]
    ids = torch.tensor([enc[0][: arch_ggufs.N_IDS], enc[1][: arch_ggufs.N_IDS]])
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(SRC, **kw).eval()(ids).logits
        via_gguf = AutoModelForCausalLM.from_pretrained(HERE, gguf_file="llama3.gguf", **kw).eval()
        got = via_gguf(ids).logits
    out = {
        "gguf": "llama3.gguf",
        "fixture": "llama3-rope",
        "metadata": read_metadata(OUT),
        "tensors": read_tensors(OUT),
        "rope_freqs": [f32(v) for v in rope_factors(cfg).tolist()],
        "tokenizer": {"encodings": [{"text": s, "input_ids": e} for s, e in zip(arch_ggufs.SAMPLES, enc)]},
        "input_ids": ids.tolist(),
        "logits": as_floats(want),
        "transformers_gguf_loader": {
            "config_rope": getattr(via_gguf.config, "rope_parameters", None),
            "max_abs_diff_from_fixture_logits": f32((got - want).abs().max().item()),
            "note": "transformers 5.24 drops rope_freqs.weight and builds the model without the llama3 scaling",
        },
    }
    with open(EXPECTED, "w") as f:
        f.write(dumps(out))


if __name__ == "__main__":
    main()
