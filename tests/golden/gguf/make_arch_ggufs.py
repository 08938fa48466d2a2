"""Writes tests/golden/gguf/{qwen2,qwen3}.gguf and arch_ggufs.expected.json: GGUFs of other architectures.

What: the tiny fp32 checkpoints tests/golden/qwen2/ and tests/golden/qwen3/ (made by make_golden.py)
converted to GGUF the way llama.cpp's convert_hf_to_gguf.py does for Qwen2Model / Qwen3Model, plus a
small byte-level BPE tokenizer (vocab 128, the models' vocab size) in the GGUF metadata. The JSON holds
what transformers' own GGUF loader makes of the files: the derived config, the logits on fixed ids,
and the tokenizer it builds (encodings of sample texts and the whole `tokenizer.json` structure).

Why: spindle's GGUF loader must map llama.cpp tensor names and metadata keys back to its model code for
more than the llama architecture, and build the byte-level BPE tokenizer such files carry. These
files are the reference for both, computed by the reference Python implementations.

How the files are written (llama.cpp conventions, checked against gguf-py 0.19.0's tables):
- Tensor names come from gguf.get_tensor_name_map(MODEL_ARCH.QWEN2/QWEN3, 2), i.e. llama.cpp's
  map_tensor_name; each is asserted to be one of gguf.MODEL_TENSORS[arch]. Tensors are written in the
  safetensors' sorted key order.
- q/k rows are NOT permuted. llama.cpp's LlamaModel.modify_tensors permutes attn_q/attn_k for the llama
  architecture only; Qwen2Model/Qwen3Model write them unchanged. transformers 5.24's GGUF loader
  (modeling_gguf_pytorch_utils.py) un-permutes only through LlamaTensorProcessor, and its
  TENSOR_PROCESSORS table has no "qwen2"/"qwen3" entry (they get the identity TensorProcessor).
  The logits check below confirms it.
- Metadata keys follow TextModel.set_gguf_parameters: `{arch}.attention.key_length`/`value_length`
  are written only when config.json has `head_dim`, so qwen3 (head_dim 16 != 32/4) has them and
  qwen2 does not. general.file_type is 0 (ALL_F32, as `--outtype f32`), although one matrix per file
  (blk.1.ffn_down.weight) is then stored as Q8_0 (gguf.quants.quantize) to exercise dequantisation.
- Tokenizer: tokenizer.ggml.model "gpt2", pre "qwen2", tokens (byte-level spelling), token_type
  (1 normal; 3 control for `<|endoftext|>`, id 127), merges, bos/eos/padding id 127, add_bos_token
  false. The vocabulary is the byte-level characters of every byte the texts below use (sorted by byte)
  followed by the results of BPE merges learned here (greedy, ties broken by the pair's spelling) on
  CORPUS and SAMPLES after the Qwen2 pre-tokenizer split, until there are 127 normal tokens (55 bytes
  + 72 merges). Bytes outside that alphabet have no token, so SAMPLES use only it (asserted).

JSON, per arch: GGUFReader's metadata and tensor table; input_ids [2,10] (the first 10 tokens of
SAMPLES[0] and [1]); the logits [2,10,128] of AutoModelForCausalLM.from_pretrained(gguf_file=...)
(float32, eager, eval, no mask); their max |diff| against the safetensors fixture (the Q8_0 effect)
and against the fixture with that matrix's Q8_0 round trip substituted (expected 0); the config
transformers derives; and AutoTokenizer.from_pretrained(gguf_file=...)'s encodings of SAMPLES
(add_special_tokens=False, cross-checked by an independent BPE here) and its tokenizer.json.

transformers 5.24.0 reads the qwen3 GGUF with the legacy loader, whose qwen3 key table has no
`attention.key_length`; see the "head_dim" entries of the JSON and tests/golden/README.md for what it
derives and how the reference logits were obtained.

Versions (pinned, also in requirements.txt beside this script; the venv lives outside the repo):
    python 3.11, torch 2.13.0 (CPU), transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0,
    gguf 0.19.0, numpy 2.4.6, regex 2026.12.2, accelerate 1.16.0 (transformers refuses to load a GGUF
    without it): the golden venv of tests/golden/requirements.txt plus the lines for this script in
    requirements.txt beside it.
Run from the repo root:
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python tests/golden/gguf/make_arch_ggufs.py

Deterministic (no randomness, no timestamps, one thread): two runs give byte-identical files.
Floats in the JSON are the shortest decimal that round-trips the float32 value (asserted).
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import json
from collections import Counter
from importlib.metadata import version

import numpy as np
import regex
import torch
import gguf
from gguf import GGMLQuantizationType as T, MODEL_ARCH
from safetensors import safe_open

from gguf_fixture import as_floats, dumps, f32, gguf_name, read_metadata, read_tensors

import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode as hf_bytes_to_unicode
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

VERSIONS = {"torch": "2.13.0", "transformers": "5.24.0", "tokenizers": "0.23.3", "safetensors": "0.8.0",
            "gguf": "0.19.0", "numpy": "2.4.6", "regex": "2026.12.2", "accelerate": "1.16.0"}
_got = {name: version(name) for name in VERSIONS}
assert _got == VERSIONS, _got
torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.dirname(HERE)
EXPECTED = os.path.join(HERE, "arch_ggufs.expected.json")
ARCHS = {"qwen2": MODEL_ARCH.QWEN2, "qwen3": MODEL_ARCH.QWEN3}
Q8_0_TENSOR = "blk.1.ffn_down.weight"
EOT = "<|endoftext|>"
VOCAB = 128
N_IDS = 10

# The Qwen2 split regex llama.cpp uses for pre "qwen2" (llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2),
# the same string transformers' Qwen2Tokenizer and its GGUF loader use. \p{N} is one digit at a time.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
assert QWEN2_SPLIT == PRETOKENIZE_REGEX

CORPUS = (
    "The model reads the text and then it writes the next word. This is the test of the tokenizer: "
    "it should split the words into pieces, and the pieces into tokens. When the text is long, there "
    "are more tokens than words; when it is short, there are fewer. We don't want to see every letter "
    "on its own, so the common ones are merged: the, and, in, on, of, to, is, it, er, re, ing, ed.\n\n"
    "Here is another line. And here is one more, with numbers like 2024 and 12345 in it.\n"
    "They're here, we're there, it's fine, I'm sure, you'll see, she'd know, we've done it.\n"
    "Hello world! Is this the end? No, there is more text after the line.\n\n"
    "Counting   spaces:  two, three   and more    here."
)
SAMPLES = [
    "Hello world! The test is here.",
    "In 2024 we counted 12345 tokens, didn't we?",
    "I don't know. You can't stop; it's fine: we'll see.",
    "First line.\n\nSecond line after a blank line.\n",
    "Spaces:   three here, and  two there.",
    "MiXeD CaSe: THE Words and the WORDS",
    " leading space, trailing space ",
    "End of text" + EOT + "Next text",
]


def b2u() -> dict[int, str]:
    """GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + list(
        range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    out = dict(zip(bs, (chr(c) for c in cs)))
    assert out == hf_bytes_to_unicode()
    return out


B2U = b2u()


def pieces(text: str) -> list[str]:
    """The Qwen2 pre-tokenizer split, each piece spelled in the byte-level alphabet."""
    return ["".join(B2U[b] for b in p.encode("utf-8")) for p in regex.findall(QWEN2_SPLIT, text)]


def plain_parts(text: str) -> list[str]:
    return [p for p in text.split(EOT) if p]


def build_vocab() -> tuple[list[str], list[str]]:
    """(tokens without the control token, merges): base alphabet, then greedy BPE merges on CORPUS."""
    used = sorted({b for t in [CORPUS] + SAMPLES for p in plain_parts(t) for b in p.encode("utf-8")})
    assert all(b < 128 for b in used), "ASCII only"
    tokens = [B2U[b] for b in used]
    words = Counter(x for t in [CORPUS] + SAMPLES for p in plain_parts(t) for x in pieces(p))
    split = {w: list(w) for w in words}
    merges = []
    while len(tokens) < VOCAB - 1:
        pairs = Counter()
        for w, n in words.items():
            s = split[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        assert pairs, "corpus too small for the vocabulary"
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append(f"{a} {b}")
        if a + b not in tokens:
            tokens.append(a + b)
        for w, s in split.items():
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            split[w] = out
    return tokens, merges


def bpe_encode(text: str, vocab: dict[str, int], merges: list[str]) -> list[int]:
    """Independent byte-level BPE (lowest merge rank first), to cross-check transformers' encodings."""
    rank = {tuple(m.split(" ")): i for i, m in enumerate(merges)}
    ids = []
    chunks = regex.split("(" + regex.escape(EOT) + ")", text)
    for chunk in chunks:
        if chunk == EOT:
            ids.append(vocab[EOT])
            continue
        for piece in pieces(chunk):
            s = list(piece)
            while len(s) > 1:
                best = min(range(len(s) - 1), key=lambda i: (rank.get((s[i], s[i + 1]), 1 << 30), i))
                if (s[best], s[best + 1]) not in rank:
                    break
                s[best:best + 2] = [s[best] + s[best + 1]]
            ids.extend(vocab[t] for t in s)
    return ids


def write_gguf(arch: str, tokens: list[str], merges: list[str]) -> tuple[str, list[str], list[str]]:
    src = os.path.join(GOLDEN, arch)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["vocab_size"] == VOCAB and len(tokens) == VOCAB
    assert cfg["rope_parameters"]["rope_type"] == "default"
    n_layers = cfg["num_hidden_layers"]
    path = os.path.join(HERE, f"{arch}.gguf")
    w = gguf.GGUFWriter(path, arch=arch)  # general.architecture
    w.add_type("model")
    w.add_name(f"spindle tiny {arch}")
    # TextModel.set_gguf_parameters, in its order
    w.add_block_count(n_layers)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    if cfg.get("head_dim") is not None:
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # _set_vocab_gpt2 + SpecialVocab.add_to_gguf
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([int(gguf.TokenType.CONTROL) if t == EOT else int(gguf.TokenType.NORMAL) for t in tokens])
    w.add_token_merges(merges)
    eot = tokens.index(EOT)
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_pad_token_id(eot)
    w.add_add_bos_token(False)

    name_map = gguf.get_tensor_name_map(ARCHS[arch], n_layers)
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[ARCHS[arch]] for b in range(n_layers)}
    written = []
    with safe_open(os.path.join(src, "model.safetensors"), "np") as st:
        for hf_name in sorted(st.keys()):
            x = st.get_tensor(hf_name)
            assert x.dtype == np.float32
            name = gguf_name(name_map, hf_name)
            assert name.rsplit(".", 1)[0] in allowed, name
            if name == Q8_0_TENSOR:
                data = gguf.quants.quantize(x, T.Q8_0)
                w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=T.Q8_0)
            else:
                w.add_tensor(name, x)
            written.append(name)
    assert Q8_0_TENSOR in written and "output.weight" in written
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    keys = [k for k in gguf.GGUFReader(path).fields if not k.startswith("GGUF.")]
    return path, keys, written


def check_model(arch: str, ids: torch.Tensor) -> dict:
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    name = f"{arch}.gguf"
    # The config exactly as transformers derives it from the file's metadata.
    c = AutoConfig.from_pretrained(HERE, gguf_file=name)
    fields = gguf.GGUFReader(os.path.join(HERE, name)).fields
    key_length = f"{arch}.attention.key_length"
    file_head_dim = (int(fields[key_length].contents()) if key_length in fields
                     else c.hidden_size // c.num_attention_heads)
    # transformers 5.24's legacy GGUF key table for qwen3 does not map attention.key_length, so the
    # derived head_dim is Qwen3Config's default 128 and the weights would not fit. The logits are then
    # computed with head_dim overridden to the file's key_length; the weights still come from the GGUF
    # through transformers' loader.
    overrides = {}
    if getattr(c, "head_dim", None) not in (None, file_head_dim):
        overrides["head_dim"] = file_head_dim
    model, info = AutoModelForCausalLM.from_pretrained(HERE, gguf_file=name, output_loading_info=True,
                                                       **overrides, **kw)
    model.eval()
    problems = {k: v for k, v in info.items() if v}
    assert not problems, (arch, problems)
    for k, v in overrides.items():
        assert getattr(model.config, k) == v
    ref = AutoModelForCausalLM.from_pretrained(os.path.join(GOLDEN, arch), **kw).eval()
    # Same fixture weights with blk.1.ffn_down replaced by its Q8_0 round trip: isolates the
    # quantisation effect from any mapping error.
    r = gguf.GGUFReader(os.path.join(HERE, f"{arch}.gguf"))
    t = next(t for t in r.tensors if t.name == Q8_0_TENSOR)
    deq = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy())
    ref_q = AutoModelForCausalLM.from_pretrained(os.path.join(GOLDEN, arch), **kw).eval()
    with torch.no_grad():
        down = ref_q.model.layers[1].mlp.down_proj.weight
        quant_err = float((down - deq).abs().max())
        down.copy_(deq)
        logits = model(input_ids=ids).logits
        ref_logits = ref(input_ids=ids).logits
        ref_q_logits = ref_q(input_ids=ids).logits
    params = {k: v for k, v in model.state_dict().items()}
    ref_params = ref_q.state_dict()
    assert params.keys() == ref_params.keys(), set(params) ^ set(ref_params)
    param_diff = max(float((params[k] - ref_params[k]).abs().max()) for k in params)
    head_dim = getattr(c, "head_dim", None)
    return {
        "transformers_version": transformers.__version__,
        "input_ids": ids.tolist(),
        "logits_shape": list(logits.shape),
        "logits": as_floats(logits),
        "max_abs_diff_vs_safetensors_fixture": float((logits - ref_logits).abs().max()),
        "max_abs_diff_vs_fixture_with_q8_0_roundtrip": float((logits - ref_q_logits).abs().max()),
        "max_abs_param_diff_vs_fixture_with_q8_0_roundtrip": param_diff,
        "config_overrides_for_logits": overrides,
        "q8_0_tensor": Q8_0_TENSOR,
        "q8_0_max_abs_weight_error": quant_err,
        "derived_config": {
            "model_type": c.model_type,
            "architectures": c.architectures,
            "model_class": type(model).__name__,
            "file_head_dim": file_head_dim,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.num_hidden_layers,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "head_dim": head_dim,
            "max_position_embeddings": c.max_position_embeddings,
            "rms_norm_eps": c.rms_norm_eps,
            "rope_parameters": c.rope_parameters,
            "tie_word_embeddings": c.tie_word_embeddings,
            "vocab_size": c.vocab_size,
            "bos_token_id": c.bos_token_id,
            "eos_token_id": c.eos_token_id,
            "pad_token_id": c.pad_token_id,
        },
    }


def main() -> None:
    tokens, merges = build_vocab()
    tokens = tokens + [EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == VOCAB and vocab[EOT] == VOCAB - 1
    for m in merges:
        a, b = m.split(" ")
        assert a in vocab and b in vocab and a + b in vocab, m
    out = {"samples": SAMPLES, "vocab_size": VOCAB, "control_token": {"id": vocab[EOT], "content": EOT},
           "archs": {}}
    files = {}
    for arch in ARCHS:
        path, keys, written = write_gguf(arch, tokens, merges)
        files[arch] = path
        tok = AutoTokenizer.from_pretrained(HERE, gguf_file=f"{arch}.gguf")
        enc = [tok(s, add_special_tokens=False)["input_ids"] for s in SAMPLES]
        mine = [bpe_encode(s, vocab, merges) for s in SAMPLES]
        assert enc == mine, (enc, mine)
        for s, e in zip(SAMPLES, enc):
            assert tok.decode(e) == s, (tok.decode(e), s)
        ids = torch.tensor([enc[0][:N_IDS], enc[1][:N_IDS]])
        assert ids.shape == (2, N_IDS) and int(ids.max()) < VOCAB - 1
        entry = {"gguf": os.path.basename(path), "metadata": read_metadata(path), "tensors": read_tensors(path)}
        assert list(entry["metadata"]) == keys and [t["name"] for t in entry["tensors"]] == written
        entry.update(check_model(arch, ids))
        entry["tokenizer"] = {
            "class": type(tok).__name__,
            "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
            "unk_token": tok.unk_token,
            "encodings": [{"text": s, "input_ids": e, "tokens": tok.convert_ids_to_tokens(e)}
                          for s, e in zip(SAMPLES, enc)],
            "tokenizer_json": json.loads(tok.backend_tokenizer.to_str()),
        }
        out["archs"][arch] = entry
    with open(EXPECTED, "w") as f:
        f.write(dumps(out))
    for arch, path in files.items():
        size = os.path.getsize(path)
        print(f"{path}: {size} bytes")
        assert size < 200_000
    print(f"{EXPECTED}: {os.path.getsize(EXPECTED)} bytes")
    for arch, e in out["archs"].items():
        print(arch, "diff vs fixture", e["max_abs_diff_vs_safetensors_fixture"], "vs q8_0 round trip",
              e["max_abs_diff_vs_fixture_with_q8_0_roundtrip"], "params", e["max_abs_param_diff_vs_fixture_with_q8_0_roundtrip"])


if __name__ == "__main__":
    main()
