"""Writes tests/golden/gguf/{llama-spm,gemma2,gemma3,phi3,mixtral}.gguf and spm_ggufs.expected.json.

What: the tiny fp32 checkpoints tests/golden/{llama-gqa,gemma2,gemma3,phi3,mixtral}/ (made by make_golden.py)
converted to GGUF the way llama.cpp's convert_hf_to_gguf.py (LlamaModel, Gemma2Model, Gemma3Model,
Phi3MiniModel; Mixtral goes through LlamaModel) writes them, each with a small SentencePiece-style
vocabulary (tokenizer.ggml.model "llama": tokens + scores + token_type, no merges) of 128 tokens, the
models' vocab size. The JSON holds what transformers' own GGUF loader makes of each file: the derived
config, the logits on fixed ids (or the exact error), and the tokenizer it builds (encodings of sample
texts and the whole `tokenizer.json` structure). SPM.md beside this script describes the algorithms.

Why: spindle's GGUF loader must map llama.cpp tensor names, transforms and metadata keys back to its
model code for these architectures, and build the SentencePiece-BPE tokenizer such files carry (merges
recovered from the scores). These files are the reference, computed by the reference implementations.

How the files are written (llama.cpp conventions, checked against gguf-py 0.19.0's tables):
- Tensor names come from gguf.get_tensor_name_map(arch, n_layers) (llama.cpp's map_tensor_name) and are
  asserted to be in gguf.MODEL_TENSORS[arch]. Tensors are written in the safetensors' sorted key order
  (Mixtral's stacked experts when a layer's last expert is reached: gate_exps, down_exps, up_exps).
- llama / mixtral (architecture "llama"): attn_q / attn_k rows are permuted by LlamaModel.permute
  (rows reshaped [n_head, 2, hd/2], axes 1 and 2 swapped; k uses n_kv_head). Mixtral: the router
  block_sparse_moe.gate -> blk.N.ffn_gate_inp.weight [E, H]; experts w1/w2/w3 stacked on a new dim 0 ->
  blk.N.ffn_gate_exps [E, I, H] / ffn_down_exps [E, H, I] / ffn_up_exps [E, I, H] (torch order), plus
  llama.expert_count / expert_used_count.
- gemma2 / gemma3: every tensor whose HF name ends in "norm.weight" is stored as w + 1 (also gemma3's
  q_norm / k_norm). No output.weight (tied).
- phi3: qkv_proj -> attn_qkv and gate_up_proj -> ffn_up, fused, unchanged.
- Metadata keys, in the converters' order: TextModel.set_gguf_parameters (block_count, context_length,
  embedding_length, feed_forward_length, head_count, head_count_kv, rope.freq_base [, rope.freq_base_swa],
  layer_norm_rms_epsilon [, expert_count, expert_used_count] [, key_length, value_length], file_type)
  then the model class's own (see write_params). GGUFWriter overwrites a repeated key in place.
- general.file_type is 0 (ALL_F32, as `--outtype f32`), although one matrix per file (blk.1.ffn_down, for
  mixtral blk.1.ffn_down_exps) is then stored as Q8_0 (gguf.quants.quantize) to exercise dequantisation.
- Tokenizer (_set_vocab_sentencepiece + SpecialVocab.add_to_gguf): model "llama", pre "default", tokens,
  scores, token_type, bos / eos / unknown [/ padding] ids, add_bos_token true (phi3: false), add_eos_token
  false; gemma2/3 also add_space_prefix false. The vocabulary is laid out like a SentencePiece BPE model:
  the specials, 24 byte-fallback tokens <0xXX> (type 6, score 0; all 256 do not fit in 128, so only the
  bytes in BYTES have one), the pieces learned by BPE here on CORPUS (greedy, ties broken by the pair's
  spelling; score -rank), then the single characters (scores continue downwards). Gemma files start
  with <pad> <eos> <bos> <unk> and the user-defined (type 4, score -1000) tokens "\\n", "  ", "   " (Gemma
  stores whitespace runs with real spaces); phi3 ends with the control token <|end|> (type 3).
  Characters in NO_TOKEN (^ = \\ ` ") have neither a piece nor a byte token.

JSON, per file: GGUFReader's metadata and tensor table; input_ids [2,10] (the first 10 ids of SAMPLES[0]
and [1] encoded with add_special_tokens=True); the logits [2,10,128] of
AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32, eager) in eval, no mask; their max
|diff| against the safetensors fixture, and against the fixture weights (with the Q8_0 round trip
substituted) run with the config transformers derived from the GGUF (isolates config-derivation
differences from weight mapping; expected 0.0); the max parameter diff against those weights; the
derived config; and AutoTokenizer.from_pretrained(gguf_file=...)'s encodings of SAMPLES with
add_special_tokens True and False, tokens, decode, and its tokenizer.json. Where transformers cannot
load a file the exact error / loading report is recorded instead of logits.

Versions (pinned, also in requirements.txt beside this script; the venv lives outside the repo):
    python 3.11, torch 2.13.0 (CPU), transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0,
    gguf 0.19.0, numpy 2.4.6, regex 2026.12.2, accelerate 1.16.0.
Run from the repo root:
    OMP_NUM_THREADS=1 /root/.cache/spindle/golden-venv/bin/python tests/golden/gguf/make_spm_ggufs.py

Deterministic (no randomness, no timestamps, one thread): two runs give byte-identical files.
Floats in the JSON are the shortest decimal that round-trips the float32 value (asserted).
"""

import os

os.environ["OMP_NUM_THREADS"] = "1"

import json
import logging
from collections import Counter
from importlib.metadata import version

import numpy as np
import regex
import torch
import gguf
from gguf import GGMLQuantizationType as T, MODEL_ARCH
from safetensors import safe_open

from gguf_fixture import as_floats, dumps, f32, gguf_name, permute, read_metadata, read_tensors

import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

VERSIONS = {"torch": "2.13.0", "transformers": "5.24.0", "tokenizers": "0.23.3", "safetensors": "0.8.0",
            "gguf": "0.19.0", "numpy": "2.4.6", "regex": "2026.12.2", "accelerate": "1.16.0"}
_got = {name: version(name) for name in VERSIONS}
assert _got == VERSIONS, _got
torch.set_num_threads(1)
logging.getLogger("gguf.gguf_writer").setLevel(logging.ERROR)  # the intended "Duplicated key" overwrites

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.dirname(HERE)
EXPECTED = os.path.join(HERE, "spm_ggufs.expected.json")
VOCAB = 128
N_IDS = 10
SP = "\u2581"

# file stem -> (fixture dir, llama.cpp architecture, vocabulary family)
FILES = {
    "llama-spm": ("llama-gqa", MODEL_ARCH.LLAMA, "llama"),
    "gemma2": ("gemma2", MODEL_ARCH.GEMMA2, "gemma"),
    "gemma3": ("gemma3", MODEL_ARCH.GEMMA3, "gemma"),
    "phi3": ("phi3", MODEL_ARCH.PHI3, "phi3"),
    "mixtral": ("mixtral", MODEL_ARCH.LLAMA, "llama"),
}

# byte-fallback tokens present (all 256 cannot fit in 128): tab, newline, and symbols, plus "Z"
BYTES = [0x09, 0x0A, 0x21, 0x23, 0x24, 0x25, 0x26, 0x28, 0x29, 0x2A, 0x2B, 0x2F, 0x3B, 0x3C, 0x3E, 0x3F,
         0x40, 0x5A, 0x5B, 0x5D, 0x7B, 0x7C, 0x7D, 0x7E]
NO_TOKEN = set('^=\\`"')  # neither a piece nor a byte token: <unk> (or dropped)

# (token, llama.cpp token type, score) before the byte tokens; and after the pieces
HEADER = {
    "llama": [("<unk>", 2, 0.0), ("<s>", 3, 0.0), ("</s>", 3, 0.0)],
    "phi3": [("<unk>", 2, 0.0), ("<s>", 3, 0.0), ("</s>", 3, 0.0)],
    "gemma": [("<pad>", 3, 0.0), ("<eos>", 3, 0.0), ("<bos>", 3, 0.0), ("<unk>", 2, 0.0),
              ("\n", 4, -1000.0), ("  ", 4, -1000.0), ("   ", 4, -1000.0)],
}
TRAILER = {"llama": [], "gemma": [], "phi3": [("<|end|>", 3, -1000.0)]}
# special ids as SpecialVocab writes them (bos, eos, unk, pad order), and the add_*_token flags
SPECIAL_IDS = {
    "llama": {"bos": "<s>", "eos": "</s>", "unk": "<unk>"},
    "phi3": {"bos": "<s>", "eos": "</s>", "unk": "<unk>", "pad": "</s>"},
    "gemma": {"bos": "<bos>", "eos": "<eos>", "unk": "<unk>", "pad": "<pad>"},
}
ADD_BOS = {"llama": True, "gemma": True, "phi3": False}

CORPUS = (
    "The model reads the text and then it writes the next word. This is the test of the tokenizer: "
    "it should split the words into pieces, and the pieces into tokens. When the text is long, there "
    "are more tokens than words; when it is short, there are fewer. We don't want to see every letter "
    "on its own, so the common ones are merged: the, and, in, on, of, to, is, it, er, re, ing, ed.\n\n"
    "Here is another line. And here is one more, with numbers like 2024 and 12345 in it.\n"
    "Hello world! Is this the end? No, there is more text after the line.\n"
    "Counting  spaces:  two  and  two  again, here  and  there."
)
SAMPLES = [
    "Hello world! The test is here.",
    "In 2024 we counted 12345 tokens, didn't we?",
    " leading space,  double  spaces and trailing space ",
    "First line.\nSecond line\n\nThird\ttab",
    "Zebra {curly} [square] (round) <angle> @home #tag $5 & 100% ~ | * + / ; ?",
    'Unknown: caret ^ equals = backslash \\ backtick ` quote "',
    "MiXeD CaSe: THE Words and the WORDS",
    "Specials: <s> </s> <unk> <pad> <bos> <eos> <|end|> end",
]
Q8_0_TENSOR = {"mixtral": "blk.1.ffn_down_exps.weight"}
Q8_0_DEFAULT = "blk.1.ffn_down.weight"


def alphabet() -> list[str]:
    """Single-character pieces: the meta space, a-z, the capitals the texts use (but Z), digits, . , : '"""
    text = CORPUS + "".join(SAMPLES)
    caps = sorted({c for c in text if "A" <= c <= "Z"} - {"Z"})
    return [SP] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + caps + list("0123456789") + list(".,:'")


def learn_pieces(chars: list[str], n: int) -> list[str]:
    """Greedy BPE on the corpus words (SentencePiece spelling), most frequent pair first, ties by spelling."""
    allowed = set(chars)
    words = Counter()
    for line in CORPUS.split("\n"):
        s = SP + line.replace(" ", SP)
        for w in regex.findall(SP + r"*[^" + SP + r"]+|" + SP + "+", s):
            for part in regex.split(r"[^" + regex.escape("".join(sorted(allowed))) + r"]+", w):
                if len(part) > 1:
                    words[part] += 1
    split = {w: list(w) for w in words}
    pieces = []
    while len(pieces) < n:
        pairs = Counter()
        for w, c in words.items():
            s = split[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += c
        assert pairs, "corpus too small"
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if a + b not in pieces and a + b not in allowed:
            pieces.append(a + b)
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
    return pieces


def build_vocab(family: str) -> tuple[list[str], list[float], list[int]]:
    chars = alphabet()
    assert not (set(chars) & NO_TOKEN) and all(chr(b) not in chars for b in BYTES)
    header, trailer = HEADER[family], TRAILER[family]
    n_pieces = VOCAB - len(header) - len(BYTES) - len(chars) - len(trailer)
    # Gemma: a learned piece may not collide with a whitespace token once transformers respells it
    respelled = {SP * len(t) for t, _, _ in header if t.strip() == "" and " " in t}
    learned = [p for p in learn_pieces(chars, n_pieces + len(respelled)) if p not in respelled][:n_pieces]
    tokens = [t for t, _, _ in header]
    scores = [s for _, _, s in header]
    types = [k for _, k, _ in header]
    for b in BYTES:
        tokens.append(f"<0x{b:02X}>")
        scores.append(0.0)
        types.append(int(gguf.TokenType.BYTE))
    for i, p in enumerate(learned + chars):
        tokens.append(p)
        scores.append(-float(i))
        types.append(int(gguf.TokenType.NORMAL))
    for t, k, s in trailer:
        tokens.append(t)
        scores.append(s)
        types.append(k)
    assert len(tokens) == VOCAB and len(set(tokens)) == VOCAB, (len(tokens), len(set(tokens)))
    return tokens, scores, types


def generate_merges_spec(tokens: list[str], keys: list[float]) -> list[list[str]]:
    """SPM.md's generate_merges, re-implemented independently, to cross-check transformers' merges.
    keys: the file's scores (llama, phi3) or -position (gemma)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    keyed = dict(zip(tokens, keys))
    found = []
    for piece, score in keyed.items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        found.extend(local)
    # stable sort, descending by (score, len(left), len(right)); equal keys keep their order
    order = sorted(range(len(found)), key=lambda i: (-found[i][2], -len(found[i][0]), -len(found[i][1]), i))
    return [[found[i][0], found[i][1]] for i in order]


def write_params(w: gguf.GGUFWriter, stem: str, cfg: dict, n_layers: int) -> None:
    """set_gguf_parameters of the llama.cpp converter class, in its order."""
    rope = cfg.get("rope_parameters") or {}

    def text_model():  # TextModel.set_gguf_parameters
        w.add_block_count(n_layers)
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        full = rope.get("full_attention", rope)
        assert full.get("rope_type", "default") == "default"
        w.add_rope_freq_base(full["rope_theta"])
        if (swa := rope.get("sliding_attention", {}).get("rope_theta")) is not None:
            w.add_rope_freq_base_swa(swa)
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        if cfg.get("num_local_experts") is not None:
            w.add_expert_count(cfg["num_local_experts"])
        if cfg.get("num_experts_per_tok") is not None:
            w.add_expert_used_count(cfg["num_experts_per_tok"])
        if cfg.get("head_dim") is not None:
            w.add_key_length(cfg["head_dim"])
            w.add_value_length(cfg["head_dim"])
        w.add_file_type(gguf.LlamaFileType.ALL_F32)

    if stem in ("llama-spm", "mixtral"):  # LlamaModel
        text_model()
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    elif stem == "gemma2":  # Gemma2Model (no super() call: no rope.freq_base)
        assert rope.get("rope_theta") == 10000.0  # llama.cpp's (and Gemma2Config's) default
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_embedding_length(cfg["hidden_size"])
        w.add_block_count(n_layers)
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_head_count(cfg["num_attention_heads"])
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        w.add_sliding_window(cfg["sliding_window"])
    elif stem == "gemma3":  # Gemma3Model: super() then its own keys (repeats overwrite in place)
        text_model()
        w.add_context_length(cfg.get("max_position_embeddings", 131072))
        w.add_head_count(cfg.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(cfg.get("rms_norm_eps", 1e-6))
        w.add_key_length(cfg.get("head_dim", 256))
        w.add_value_length(cfg.get("head_dim", 256))
        w.add_rope_freq_base(rope.get("full_attention", rope).get("rope_theta", 1_000_000.0))
        assert cfg.get("attn_logit_softcapping") is None
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        if cfg.get("sliding_window_pattern") != 1:
            w.add_sliding_window(cfg["sliding_window"])
        w.add_head_count_kv(cfg.get("num_key_value_heads", 4))
    elif stem == "phi3":  # Phi3MiniModel
        n_embd, n_head = cfg["hidden_size"], cfg["num_attention_heads"]
        w.add_context_length(cfg["max_position_embeddings"])
        w.add_rope_scaling_orig_ctx_len(cfg["original_max_position_embeddings"])
        w.add_embedding_length(n_embd)
        w.add_feed_forward_length(cfg["intermediate_size"])
        w.add_block_count(n_layers)
        w.add_head_count(n_head)
        w.add_head_count_kv(cfg["num_key_value_heads"])
        w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        w.add_rope_dimension_count(int(rope.get("partial_rotary_factor", 1.0) * n_embd) // n_head)
        w.add_rope_freq_base(rope["rope_theta"])
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_sliding_window(cfg.get("sliding_window") or 0)
    else:
        raise AssertionError(stem)


def write_gguf(stem: str) -> tuple[str, dict]:
    fixture, arch, family = FILES[stem]
    src = os.path.join(GOLDEN, fixture)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["vocab_size"] == VOCAB
    n_layers = cfg["num_hidden_layers"]
    tokens, scores, types = build_vocab(family)
    path = os.path.join(HERE, f"{stem}.gguf")
    w = gguf.GGUFWriter(path, arch=gguf.MODEL_ARCH_NAMES[arch])  # general.architecture
    w.add_type("model")
    w.add_name(f"spindle tiny {stem}")
    write_params(w, stem, cfg, n_layers)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # _set_vocab_sentencepiece + SpecialVocab.add_to_gguf
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    for typ, tok in SPECIAL_IDS[family].items():
        getattr(w, f"add_{typ}_token_id")(tokens.index(tok))
    w.add_add_bos_token(ADD_BOS[family])
    w.add_add_eos_token(False)
    if family == "gemma":
        w.add_add_space_prefix(False)

    name_map = gguf.get_tensor_name_map(arch, n_layers)
    allowed = {gguf.TENSOR_NAMES[t].format(bid=b) for t in gguf.MODEL_TENSORS[arch] for b in range(n_layers)}
    q8 = Q8_0_TENSOR.get(stem, Q8_0_DEFAULT)
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    written = []

    def add(name, x):
        assert name.rsplit(".", 1)[0] in allowed, name
        if name == q8:
            data = gguf.quants.quantize(x, T.Q8_0)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=T.Q8_0)
        else:
            w.add_tensor(name, np.ascontiguousarray(x))
        written.append(name)

    experts: dict[int, dict[str, np.ndarray]] = {}
    with safe_open(os.path.join(src, "model.safetensors"), "np") as st:
        for hf_name in sorted(st.keys()):
            x = st.get_tensor(hf_name)
            assert x.dtype == np.float32
            if arch == MODEL_ARCH.LLAMA:
                if hf_name.endswith("q_proj.weight"):
                    x = permute(x, n_head, n_head)
                if hf_name.endswith("k_proj.weight"):
                    x = permute(x, n_head, n_kv)
                if "block_sparse_moe.experts" in hf_name:
                    bid = int(hf_name.split(".")[2])
                    experts.setdefault(bid, {})[hf_name] = x
                    n_exp = cfg["num_local_experts"]
                    if len(experts[bid]) == n_exp * 3:
                        for wid in ("w1", "w2", "w3"):
                            stack = np.stack([experts[bid][f"model.layers.{bid}.block_sparse_moe.experts.{e}.{wid}.weight"]
                                              for e in range(n_exp)], axis=0)
                            add(gguf_name(name_map, f"layers.{bid}.feed_forward.experts.{wid}.weight"), stack)
                    continue
            if family == "gemma" and hf_name.endswith("norm.weight"):
                x = x + np.float32(1.0)
            add(gguf_name(name_map, hf_name), x)
    assert q8 in written
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, {"tokens": tokens, "scores": scores, "types": types, "cfg": cfg, "written": written, "q8": q8}


def fixture_q8(stem: str, info: dict, derived_config=None):
    """The safetensors fixture with the Q8_0 matrix's round trip substituted (optionally under the
    config transformers derived from the GGUF)."""
    fixture = os.path.join(GOLDEN, FILES[stem][0])
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if derived_config is not None:
        kw["config"] = derived_config
    m = AutoModelForCausalLM.from_pretrained(fixture, **kw).eval()
    r = gguf.GGUFReader(os.path.join(HERE, f"{stem}.gguf"))
    t = next(t for t in r.tensors if t.name == info["q8"])
    deq = torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).copy())
    with torch.no_grad():
        if stem == "mixtral":
            experts = m.model.layers[1].mlp.experts
            target = experts.down_proj  # [E, H, I] in transformers 5
        else:
            target = m.model.layers[1].mlp.down_proj.weight
        err = float((target - deq).abs().max())
        target.copy_(deq)
    return m, err


def check_model(stem: str, info: dict, ids: torch.Tensor) -> dict:
    name = f"{stem}.gguf"
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    out = {"transformers_version": transformers.__version__, "input_ids": ids.tolist()}
    c = AutoConfig.from_pretrained(HERE, gguf_file=name)
    out["derived_config"] = derived_config_dict(c)
    fixture = os.path.join(GOLDEN, FILES[stem][0])
    ref = AutoModelForCausalLM.from_pretrained(fixture, **kw).eval()
    torch.manual_seed(0)  # any randomly initialised (missing) weights stay deterministic
    try:
        model, load_info = AutoModelForCausalLM.from_pretrained(HERE, gguf_file=name, output_loading_info=True, **kw)
    except Exception as e:  # recorded, not hidden
        out["load_error"] = f"{type(e).__name__}: {e}"
        return out
    model.eval()
    problems = {k: sorted(v) if isinstance(v, (set, list)) else v for k, v in load_info.items() if v}
    out["model_class"] = type(model).__name__
    out["loading_problems"] = {k: [str(x) for x in v] for k, v in problems.items()}
    # the file's tensors that transformers' legacy name map (get_gguf_hf_weights_map) has no target for:
    # load_gguf_checkpoint drops them silently
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map
    arch_name = gguf.MODEL_ARCH_NAMES[FILES[stem][1]]
    mapping = get_gguf_hf_weights_map(model, TENSOR_PROCESSORS.get(arch_name, TensorProcessor)(config={}))
    out["gguf_tensors_dropped_by_transformers"] = [t for t in info["written"] if t not in mapping]
    if problems:
        out["logits"] = None
        out["note"] = ("transformers 5.24 reads general.architecture 'llama' as a dense LlamaConfig (its legacy "
                       "GGUF_CONFIG_MAPPING['llama'] has no expert_count / expert_used_count, and no Mixtral "
                       "entry exists), so it builds LlamaForCausalLM; blk.N.ffn_gate_inp and ffn_*_exps map to "
                       "nothing and are dropped, and the dense MLP weights are missing (randomly initialised, "
                       "only a load report). A transformers limitation (MoE-in-llama GGUFs unsupported), "
                       "arguably a bug since it loads silently; no config override can fix it "
                       "(get_gguf_hf_weights_map has no 'mixtral' in gguf's MODEL_ARCH_NAMES). No logits recorded.")
        return out
    ref_q, quant_err = fixture_q8(stem, info)
    ref_cfg, _ = fixture_q8(stem, info, derived_config=c)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        ref_logits = ref(input_ids=ids).logits
        ref_q_logits = ref_q(input_ids=ids).logits
        ref_cfg_logits = ref_cfg(input_ids=ids).logits
    params, ref_params = model.state_dict(), ref_q.state_dict()
    assert params.keys() == ref_params.keys(), set(params) ^ set(ref_params)
    param_diff = max(float((params[k] - ref_params[k]).abs().max()) for k in params)
    out.update({
        "logits_shape": list(logits.shape),
        "logits": as_floats(logits),
        "max_abs_diff_vs_safetensors_fixture": float((logits - ref_logits).abs().max()),
        "max_abs_diff_vs_fixture_with_q8_0_roundtrip": float((logits - ref_q_logits).abs().max()),
        "max_abs_diff_vs_fixture_with_q8_0_roundtrip_under_derived_config":
            float((logits - ref_cfg_logits).abs().max()),
        "max_abs_param_diff_vs_fixture_with_q8_0_roundtrip": param_diff,
        "q8_0_tensor": info["q8"],
        "q8_0_max_abs_weight_error": quant_err,
        "config_overrides_for_logits": {},
    })
    return out


CONFIG_FIELDS = ["model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                 "rms_norm_eps", "rope_parameters", "tie_word_embeddings", "vocab_size", "bos_token_id",
                 "eos_token_id", "pad_token_id", "sliding_window", "layer_types", "attn_logit_softcapping",
                 "final_logit_softcapping", "query_pre_attn_scalar", "num_local_experts",
                 "num_experts_per_tok", "original_max_position_embeddings", "hidden_act", "hidden_activation"]


def derived_config_dict(c) -> dict:
    out = {"config_class": type(c).__name__}
    for k in CONFIG_FIELDS:
        if hasattr(c, k):
            v = getattr(c, k)
            out[k] = f32(v) if isinstance(v, float) else v
    return out


def config_vs_fixture(stem: str, derived: dict) -> dict:
    """The derived config fields that differ from the fixture's config.json (as transformers reads it)."""
    fixture = AutoConfig.from_pretrained(os.path.join(GOLDEN, FILES[stem][0]))
    diffs = {}
    for k, v in derived.items():
        if k in ("config_class", "architectures") or not hasattr(fixture, k):
            continue
        fv = getattr(fixture, k)
        fv = f32(fv) if isinstance(fv, float) else fv
        if fv != v:
            diffs[k] = {"fixture": fv, "from_gguf": v}
    return diffs


def main() -> None:
    out = {"samples": SAMPLES, "vocab_size": VOCAB, "bytes_with_token": [f"<0x{b:02X}>" for b in BYTES],
           "chars_without_token": sorted(NO_TOKEN), "files": {}}
    for stem in FILES:
        path, info = write_gguf(stem)
        family = FILES[stem][2]
        tokens = info["tokens"]
        entry = {"gguf": os.path.basename(path), "fixture": FILES[stem][0], "vocab_family": family,
                 "metadata": read_metadata(path), "tensors": read_tensors(path)}
        assert [t["name"] for t in entry["tensors"]] == info["written"]
        tok = AutoTokenizer.from_pretrained(HERE, gguf_file=f"{stem}.gguf")
        tj = json.loads(tok.backend_tokenizer.to_str())
        # cross-check SPM.md's generate_merges against what transformers built
        if family == "gemma":
            resp = [SP * len(t) if " " in t and not t.strip() else t for t in tokens]
            mine = generate_merges_spec(resp, [-float(i) for i in range(len(resp))])
        else:
            mine = generate_merges_spec(tokens, info["scores"])
        assert [list(m) for m in tj["model"]["merges"]] == mine, stem
        with_sp = [tok(s, add_special_tokens=True)["input_ids"] for s in SAMPLES]
        without = [tok(s, add_special_tokens=False)["input_ids"] for s in SAMPLES]
        entry["tokenizer"] = {
            "class": type(tok).__name__,
            "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
            "unk_token": tok.unk_token, "add_bos_token": tok.add_bos_token, "add_eos_token": tok.add_eos_token,
            "len": len(tok),
            "merges_match_spm_md_generate_merges": True,
            "encodings": [{"text": s, "input_ids": a, "input_ids_no_special": b,
                           "tokens_no_special": tok.convert_ids_to_tokens(b),
                           "decode_no_special": tok.decode(b),
                           "decode_with_special_skip": tok.decode(a, skip_special_tokens=True)}
                          for s, a, b in zip(SAMPLES, with_sp, without)],
            "tokenizer_json": tj,
        }
        ids = torch.tensor([with_sp[0][:N_IDS], with_sp[1][:N_IDS]])
        assert ids.shape == (2, N_IDS)
        entry.update(check_model(stem, info, ids))
        entry["derived_config_vs_fixture"] = config_vs_fixture(stem, entry["derived_config"])
        out["files"][stem] = entry
    with open(EXPECTED, "w") as f:
        f.write(dumps(out))
    for stem in FILES:
        p = os.path.join(HERE, f"{stem}.gguf")
        print(f"{p}: {os.path.getsize(p)} bytes")
    print(f"{EXPECTED}: {os.path.getsize(EXPECTED)} bytes")
    for stem, e in out["files"].items():
        print(stem, e.get("model_class"), e.get("load_error"), e.get("loading_problems"),
              e.get("max_abs_diff_vs_safetensors_fixture"),
              e.get("max_abs_diff_vs_fixture_with_q8_0_roundtrip_under_derived_config"),
              e.get("max_abs_param_diff_vs_fixture_with_q8_0_roundtrip"))
        print("   config diffs:", e["derived_config_vs_fixture"])


if __name__ == "__main__":
    main()
