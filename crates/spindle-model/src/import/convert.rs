//! Import into a Hugging Face model directory: from GGUF (the llama — dense, or Mixtral with
//! `llama.expert_count` —, qwen2, qwen3, gemma2, gemma3 and phi3 architectures, with a byte-level
//! BPE or a SentencePiece vocabulary; F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K
//! dequantized to fp32; llama.cpp's q/k row permutation and Gemma's `w + 1` norms undone;
//! tokenizer.json rebuilt from the GGUF metadata as transformers builds it) and from a llama2.c checkpoint with its tokenizer. The result
//! loads with [`crate::Model`] and with Hugging Face transformers.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tch::{Kind, Tensor};

use crate::ModelConfig;
use crate::gguf::{GgufError, GgufFile, GgufValue};
use crate::llama2c::{self, Llama2cError};
use crate::save::{HfDirWriter, SaveError};

use super::spm::{SpmFlavour, SpmVocab, spm_tokenizer};

/// Why a checkpoint could not be converted; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Llama2c(#[from] Llama2cError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error("{path}: metadata key `{key}` is missing or has the wrong type")]
    MissingKey { path: PathBuf, key: String },
    #[error("{path}: unsupported {what}: {value}")]
    Unsupported { path: PathBuf, what: &'static str, value: String },
    /// A metadata key (named in full, with its architecture prefix) holds a value spindle cannot
    /// convert.
    #[error("{path}: unsupported {key}: {value}")]
    UnsupportedKey { path: PathBuf, key: String, value: String },
    /// The file parses, but what it describes is not a model spindle (or transformers) could
    /// load: checked before anything is written.
    #[error("{path}: {what}; nothing was written")]
    Invalid { path: PathBuf, what: String },
}

/// Shards of at most this many bytes, as transformers' `save_pretrained` does by default.
const SHARD_BYTES: usize = 2 << 30;

/// Collects tensors and writes a shard whenever enough have accumulated.
struct ShardedOut {
    writer: HfDirWriter,
    pending: Vec<(String, Tensor)>,
    bytes: usize,
}

impl ShardedOut {
    fn push(&mut self, name: String, t: Tensor) -> Result<(), SaveError> {
        let size = t.numel() * t.kind().elt_size_in_bytes();
        if self.bytes + size > SHARD_BYTES && !self.pending.is_empty() {
            self.flush()?;
        }
        self.bytes += size;
        self.pending.push((name, t));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SaveError> {
        if !self.pending.is_empty() {
            self.writer.write_shard(&self.pending)?;
            self.pending.clear();
            self.bytes = 0;
        }
        Ok(())
    }
}

/// HF's `permute` (Meta/llama.cpp interleaved RoPE pairs → transformers' rotate_half halves) on a
/// q or k projection `[rows, cols]` with `heads` heads.
pub(crate) fn unpermute_rope_rows(w: &Tensor, heads: i64) -> Tensor {
    let size = w.size();
    let (rows, cols) = (size[0], size[1]);
    w.view([heads, rows / heads / 2, 2, cols]).transpose(1, 2).reshape([rows, cols])
}

fn gguf_u64(g: &GgufFile, key: &str) -> Result<u64, ConvertError> {
    g.get(key).and_then(GgufValue::as_u64).ok_or_else(|| ConvertError::MissingKey { path: g.path().to_path_buf(), key: key.to_owned() })
}

fn gguf_f64(g: &GgufFile, key: &str, default: f64) -> f64 {
    g.get(key).and_then(GgufValue::as_f64).unwrap_or(default)
}

fn gguf_strings(g: &GgufFile, key: &str) -> Result<Vec<String>, ConvertError> {
    let missing = || ConvertError::MissingKey { path: g.path().to_path_buf(), key: key.to_owned() };
    g.get(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(missing)?
        .iter()
        .map(|v| v.as_str().map(str::to_owned).ok_or_else(missing))
        .collect()
}

/// The transformers family a GGUF converts into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Llama,
    Qwen2,
    Qwen3,
    /// llama.cpp stores Mixtral as architecture `llama` with `llama.expert_count`.
    Mixtral,
    Gemma2,
    Gemma3,
    Phi3,
}

impl Target {
    fn hf_class(self) -> &'static str {
        match self {
            Target::Llama => "LlamaForCausalLM",
            Target::Qwen2 => "Qwen2ForCausalLM",
            Target::Qwen3 => "Qwen3ForCausalLM",
            Target::Mixtral => "MixtralForCausalLM",
            Target::Gemma2 => "Gemma2ForCausalLM",
            Target::Gemma3 => "Gemma3ForCausalLM",
            Target::Phi3 => "Phi3ForCausalLM",
        }
    }

    fn model_type(self) -> &'static str {
        match self {
            Target::Llama => "llama",
            Target::Qwen2 => "qwen2",
            Target::Qwen3 => "qwen3",
            Target::Mixtral => "mixtral",
            Target::Gemma2 => "gemma2",
            Target::Gemma3 => "gemma3_text",
            Target::Phi3 => "phi3",
        }
    }

    fn gemma(self) -> bool {
        matches!(self, Target::Gemma2 | Target::Gemma3)
    }
}

/// What a GGUF `general.architecture` converts into.
#[derive(Debug, Clone, Copy)]
struct GgufArch {
    /// `general.architecture`, also the prefix of its metadata keys.
    name: &'static str,
    target: Target,
    /// llama.cpp interleaves the RoPE pairs of q/k rows for the llama architecture only
    /// (`LlamaModel.permute` in `convert_hf_to_gguf.py`); the others are stored as transformers has them.
    permuted_qk: bool,
    /// transformers' tokenizer builder for a SentencePiece vocabulary of this architecture.
    spm: SpmFlavour,
}

const GGUF_ARCHS: &[GgufArch] = &[
    GgufArch { name: "llama", target: Target::Llama, permuted_qk: true, spm: SpmFlavour::Llama },
    GgufArch { name: "qwen2", target: Target::Qwen2, permuted_qk: false, spm: SpmFlavour::Llama },
    GgufArch { name: "qwen3", target: Target::Qwen3, permuted_qk: false, spm: SpmFlavour::Llama },
    GgufArch { name: "gemma2", target: Target::Gemma2, permuted_qk: false, spm: SpmFlavour::Gemma },
    GgufArch { name: "gemma3", target: Target::Gemma3, permuted_qk: false, spm: SpmFlavour::Gemma },
    GgufArch { name: "phi3", target: Target::Phi3, permuted_qk: false, spm: SpmFlavour::Phi3 },
];

/// How a GGUF tensor becomes its Hugging Face tensor(s).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    Copy,
    /// Undo llama.cpp's RoPE row interleaving, with this many heads.
    Unpermute(i64),
    /// llama.cpp's Gemma converter stores every norm weight as `w + 1`; transformers keeps `w`.
    MinusOne,
    /// A stacked `[experts, rows, cols]` tensor split into one tensor per expert, named
    /// `{name}.{expert}.{this}.weight`.
    Experts(&'static str),
    /// One expert's tensor as llama.cpp wrote Mixtral before it stacked them (`blk.N.ffn_gate.E`
    /// and its up/down twins, until April 2024): copied, once `E` is checked against the count.
    Expert(u64),
    /// Read into the config instead (llama.cpp's `rope_freqs.weight`): not written.
    Consumed,
}

/// The GGUF → Hugging Face name of a tensor and how to convert it (SPM.md §5 for the
/// SentencePiece families), or None for a tensor the converted model would not load.
fn hf_name(gguf_name: &str, heads: i64, kv_heads: i64, arch: GgufArch, target: Target) -> Option<(String, Transform)> {
    let gemma = target.gemma();
    let norm = if gemma { Transform::MinusOne } else { Transform::Copy };
    let top = match gguf_name {
        // Read into the config's rope_scaling (`llama3_rope_scaling`); elsewhere refused.
        "rope_freqs.weight" if target == Target::Llama => Some(("", Transform::Consumed)),
        "token_embd.weight" => Some(("model.embed_tokens.weight", Transform::Copy)),
        "output_norm.weight" => Some(("model.norm.weight", norm)),
        "output.weight" => Some(("lm_head.weight", Transform::Copy)),
        _ => None,
    };
    if let Some((name, t)) = top {
        return Some((name.to_owned(), t));
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (index, part) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let permute = |n| if arch.permuted_qk { Transform::Unpermute(n) } else { Transform::Copy };
    let (phi3, moe) = (target == Target::Phi3, target == Target::Mixtral);
    if moe && let Some((which, expert)) = per_expert(part) {
        return Some((format!("model.layers.{index}.block_sparse_moe.experts.{expert}.{which}.weight"), Transform::Expert(expert)));
    }
    let (hf, transform) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", norm),
        "ffn_norm.weight" if gemma => ("pre_feedforward_layernorm.weight", norm),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", norm),
        "post_attention_norm.weight" if gemma => ("post_attention_layernorm.weight", norm),
        "post_ffw_norm.weight" if gemma => ("post_feedforward_layernorm.weight", norm),
        "attn_q.weight" if !phi3 => ("self_attn.q_proj.weight", permute(heads)),
        "attn_k.weight" if !phi3 => ("self_attn.k_proj.weight", permute(kv_heads)),
        "attn_v.weight" if !phi3 => ("self_attn.v_proj.weight", Transform::Copy),
        // Phi-3's fused projections, kept fused as transformers' Phi3 has them.
        "attn_qkv.weight" if phi3 => ("self_attn.qkv_proj.weight", Transform::Copy),
        // Qwen2's q/k/v biases and the per-head q/k norms of Qwen3 and Gemma 3.
        "attn_q.bias" if target == Target::Qwen2 => ("self_attn.q_proj.bias", Transform::Copy),
        "attn_k.bias" if target == Target::Qwen2 => ("self_attn.k_proj.bias", Transform::Copy),
        "attn_v.bias" if target == Target::Qwen2 => ("self_attn.v_proj.bias", Transform::Copy),
        "attn_q_norm.weight" if matches!(target, Target::Qwen3 | Target::Gemma3) => ("self_attn.q_norm.weight", norm),
        "attn_k_norm.weight" if matches!(target, Target::Qwen3 | Target::Gemma3) => ("self_attn.k_norm.weight", norm),
        "attn_output.weight" => ("self_attn.o_proj.weight", Transform::Copy),
        "ffn_gate.weight" if !phi3 && !moe => ("mlp.gate_proj.weight", Transform::Copy),
        "ffn_up.weight" if phi3 => ("mlp.gate_up_proj.weight", Transform::Copy),
        "ffn_up.weight" if !moe => ("mlp.up_proj.weight", Transform::Copy),
        "ffn_down.weight" if !moe => ("mlp.down_proj.weight", Transform::Copy),
        // Mixtral: the router, and the experts' w1 (gate), w3 (up) and w2 (down) stacked.
        "ffn_gate_inp.weight" if moe => ("block_sparse_moe.gate.weight", Transform::Copy),
        "ffn_gate_exps.weight" if moe => ("block_sparse_moe.experts", Transform::Experts("w1")),
        "ffn_up_exps.weight" if moe => ("block_sparse_moe.experts", Transform::Experts("w3")),
        "ffn_down_exps.weight" if moe => ("block_sparse_moe.experts", Transform::Experts("w2")),
        _ => return None,
    };
    Some((format!("model.layers.{index}.{hf}"), transform))
}

/// `ffn_gate.E.weight` (and up, down): the Mixtral expert tensor names of llama.cpp's converter
/// before April 2024, as transformers' w1 (gate), w3 (up) and w2 (down) of expert `E`.
fn per_expert(part: &str) -> Option<(&'static str, u64)> {
    let (kind, rest) = part.strip_prefix("ffn_")?.split_once('.')?;
    let which = match kind {
        "gate" => "w1",
        "up" => "w3",
        "down" => "w2",
        _ => return None,
    };
    let expert = rest.strip_suffix(".weight")?;
    if expert.is_empty() || !expert.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((which, expert.parse().ok()?))
}

/// transformers' `PRETOKENIZE_REGEX` of Qwen2 (`models/qwen2/tokenization_qwen2.py`), which its
/// GGUF loader uses for `tokenizer.ggml.pre = "qwen2"`.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// transformers' `_LLAMA3_SPLIT` (`integrations/gguf/gguf_tokenizer_mapping.py`), the split of
/// Llama 3's vocabulary (`tokenizer.ggml.pre` "llama-bpe" and the names transformers maps to it):
/// as Qwen2's, but digits in runs of up to three.
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer llama.cpp names in `tokenizer.ggml.pre`, as a tokenizers pipeline.
fn pre_tokenizer(path: &Path, pre: &str) -> Result<Value, ConvertError> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    match pre {
        // SmolLM2: every digit is its own pre-token, then GPT-2's byte-level split.
        "smollm" => Ok(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            byte_level,
        ]})),
        "gpt2" | "default" => Ok(byte_level),
        // Qwen2 and Qwen3: transformers' Qwen2 split (digits one by one), then the byte-level
        // mapping without GPT-2's own split.
        "qwen2" => Ok(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]})),
        // Llama 3.x, and the vocabularies transformers' GGUF loader splits the same way.
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "falcon3" | "dbrx" => Ok(json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]})),
        other => Err(ConvertError::Unsupported {
            path: path.to_path_buf(),
            what: "tokenizer.ggml.pre",
            value: format!("{other:?} (supported: smollm, gpt2, default, qwen2, llama-bpe, llama3, llama-v3, smaug-bpe, falcon3, dbrx)"),
        }),
    }
}

/// `tokenizer.json` (and the ids of BOS/EOS) rebuilt from a byte-level BPE GGUF's metadata.
fn bpe_tokenizer(g: &GgufFile) -> Result<(Value, Value), ConvertError> {
    let path = g.path();
    let pre = g.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
    let tokens = gguf_strings(g, "tokenizer.ggml.tokens")?;
    let merges = gguf_strings(g, "tokenizer.ggml.merges")?;
    let types = token_types(g, tokens.len())?;
    let invalid = |what: String| ConvertError::Invalid { path: path.to_path_buf(), what };
    let mut vocab = Map::new();
    for (id, token) in tokens.iter().enumerate() {
        if let Some(first) = vocab.insert(token.clone(), json!(id)) {
            return Err(invalid(format!("tokenizer.ggml.tokens lists {token:?} twice (ids {first} and {id})")));
        }
    }
    // A BPE merge joins two tokens of the vocabulary into a third.
    let merges: Vec<Value> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}")) => Ok(json!([a, b])),
            _ => {
                Err(invalid(format!("tokenizer.ggml.merges entry {i} ({m:?}) is not two tokens of the vocabulary that join into a third")))
            }
        })
        .collect::<Result<_, _>>()?;
    // llama.cpp token types: 3 = control (special), 4 = user-defined (added, not special).
    let added: Vec<Value> = tokens
        .iter()
        .zip(&types)
        .enumerate()
        .filter(|(_, (_, t))| **t == 3 || **t == 4)
        .map(|(id, (content, t))| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": *t != 3, "special": *t == 3})
        })
        .collect();
    let bos = g.get("tokenizer.ggml.bos_token_id").and_then(GgufValue::as_u64);
    let eos = g.get("tokenizer.ggml.eos_token_id").and_then(GgufValue::as_u64);
    let add_bos = matches!(g.get("tokenizer.ggml.add_bos_token"), Some(GgufValue::Bool(true)));
    let post_processor = match (add_bos, bos) {
        (true, Some(id)) => {
            let tok = tokens.get(id as usize).cloned().ok_or_else(|| ConvertError::Unsupported {
                path: path.to_path_buf(),
                what: "tokenizer.ggml.bos_token_id",
                value: format!("{id} is outside the vocabulary of {} tokens", tokens.len()),
            })?;
            json!({"type": "TemplateProcessing",
                   "single": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                   "pair": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                            {"SpecialToken": {"id": tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                   "special_tokens": {tok.clone(): {"id": tok, "ids": [id], "tokens": [tok]}}})
        }
        _ => json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true}),
    };
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(path, pre)?,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let name = |id: Option<u64>| id.and_then(|i| tokens.get(i as usize)).map_or(Value::Null, |t| json!(t));
    let mut config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(bos),
        "eos_token": name(eos),
        "add_bos_token": add_bos,
        "clean_up_tokenization_spaces": false,
    });
    if let Some(pad) = g.get("tokenizer.ggml.padding_token_id").and_then(GgufValue::as_u64) {
        config["pad_token"] = name(Some(pad));
    }
    Ok((tokenizer, config))
}

/// `tokenizer.json` and `tokenizer_config.json` rebuilt from the GGUF's vocabulary.
fn gguf_tokenizer(g: &GgufFile, arch: GgufArch) -> Result<(Value, Value), ConvertError> {
    let model = g.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("");
    let (tokenizer, mut config) = match model {
        "gpt2" => bpe_tokenizer(g)?,
        "llama" => sentencepiece_tokenizer(g, arch.spm)?,
        other => {
            return Err(ConvertError::Unsupported {
                path: g.path().to_path_buf(),
                what: "tokenizer.ggml.model",
                value: format!("{other:?} (supported: gpt2, i.e. byte-level BPE; llama, i.e. SentencePiece)"),
            });
        }
    };
    if let Some(template) = g.get("tokenizer.chat_template").and_then(GgufValue::as_str) {
        config["chat_template"] = json!(template);
    }
    Ok((tokenizer, config))
}

/// `tokenizer.ggml.token_type`, one per token (all normal where the file has none).
fn token_types(g: &GgufFile, count: usize) -> Result<Vec<u64>, ConvertError> {
    let Some(a) = g.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) else {
        return Ok(vec![1; count]);
    };
    if a.len() != count {
        return Err(ConvertError::Invalid {
            path: g.path().to_path_buf(),
            what: format!("tokenizer.ggml.token_type has {} entries for {count} tokens", a.len()),
        });
    }
    Ok(a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
}

/// A token id key, checked to name a token of the vocabulary.
fn token_id(g: &GgufFile, key: &str, count: usize) -> Result<Option<usize>, ConvertError> {
    match g.get(key).and_then(GgufValue::as_u64) {
        Some(id) if id as usize >= count => Err(ConvertError::UnsupportedKey {
            path: g.path().to_path_buf(),
            key: key.to_owned(),
            value: format!("{id} is outside the vocabulary of {count} tokens"),
        }),
        id => Ok(id.map(|i| i as usize)),
    }
}

/// The tokenizer of a SentencePiece-style GGUF (`tokenizer.ggml.model = "llama"`), built as
/// transformers builds it for this architecture (`spm::spm_tokenizer`).
fn sentencepiece_tokenizer(g: &GgufFile, flavour: SpmFlavour) -> Result<(Value, Value), ConvertError> {
    let path = g.path();
    let invalid = |what: String| ConvertError::Invalid { path: path.to_path_buf(), what };
    let tokens = gguf_strings(g, "tokenizer.ggml.tokens")?;
    let scores: Vec<f64> = match g.get("tokenizer.ggml.scores").and_then(GgufValue::as_array) {
        Some(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| invalid(format!("tokenizer.ggml.scores entry {i} is not a finite number")))
            })
            .collect::<Result<_, _>>()?,
        // Gemma's builder ranks by file order and never reads the scores.
        None if flavour == SpmFlavour::Gemma => vec![0.0; tokens.len()],
        None => return Err(ConvertError::MissingKey { path: path.to_path_buf(), key: "tokenizer.ggml.scores".into() }),
    };
    if scores.len() != tokens.len() {
        return Err(invalid(format!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len())));
    }
    let types = token_types(g, tokens.len())?;
    let n = tokens.len();
    let vocab = SpmVocab {
        tokens: &tokens,
        scores: &scores,
        types: &types,
        bos: token_id(g, "tokenizer.ggml.bos_token_id", n)?,
        eos: token_id(g, "tokenizer.ggml.eos_token_id", n)?,
        unk: token_id(g, "tokenizer.ggml.unknown_token_id", n)?,
        pad: token_id(g, "tokenizer.ggml.padding_token_id", n)?,
        // transformers' default for a SentencePiece GGUF without the key is to add BOS.
        add_bos: g.get("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(true),
        add_eos: g.get("tokenizer.ggml.add_eos_token").and_then(GgufValue::as_bool).unwrap_or(false),
    };
    Ok(spm_tokenizer(flavour, &vocab))
}

/// llama.cpp's `rope_freqs.weight` for a base `theta` and `dim` rotary dimensions, as
/// `LlamaModel.generate_extra_tensors` computes it (in f32) from Llama 3's RoPE scaling.
fn llama3_factors(theta: f64, dim: usize, factor: f32, low: f32, high: f32, old_context: f32) -> Vec<f32> {
    let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / (theta as f32).powf((2 * i) as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// The `rope_scaling` of a llama GGUF: Llama 3's, recovered from `rope_freqs.weight` (the only
/// place llama.cpp stores it), or none without that tensor. The factor is the tensor's largest
/// entry; the low/high frequency factors are Llama 3's 1 and 4, and the original context the
/// power of two that reproduces every entry (within 1e-6 relative). Scaling the three together
/// leaves the frequencies unchanged, so these are as good as the original ones; a tensor no such
/// choice reproduces is refused.
fn llama3_rope_scaling(g: &GgufFile, theta: f64, head_dim: usize) -> Result<Value, ConvertError> {
    let Some(info) = g.tensor("rope_freqs.weight") else {
        return Ok(Value::Null);
    };
    let dim = g.get("llama.rope.dimension_count").and_then(GgufValue::as_u64).map_or(head_dim, |d| d as usize);
    let invalid = |what: String| ConvertError::Invalid { path: g.path().to_path_buf(), what };
    let got = g.dequantize(&info.name)?;
    if got.len() != dim / 2 || got.iter().any(|v| !v.is_finite() || *v < 1.0) {
        return Err(invalid(format!(
            "tensor `rope_freqs.weight` holds {} values, not {} finite factors of at least 1 (one per rotary frequency)",
            got.len(),
            dim / 2
        )));
    }
    let factor = got.iter().copied().fold(1.0f32, f32::max);
    let close = |a: &[f32]| a.iter().zip(&got).all(|(x, y)| (x - y).abs() <= 1e-6 * y.abs().max(1.0));
    let Some(old_context) = (0..=24).map(|k| (1u32 << k) as f32).find(|&l| close(&llama3_factors(theta, dim, factor, 1.0, 4.0, l))) else {
        return Err(invalid(
            "tensor `rope_freqs.weight` holds frequency factors that no Llama 3 RoPE scaling (low/high frequency factors 1 and 4, a \
             power-of-two original context) reproduces"
                .into(),
        ));
    };
    Ok(json!({"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
              "original_max_position_embeddings": old_context as u64}))
}

/// Which layers of a Gemma model slide, as llama.cpp decides (`set_swa_pattern`): Gemma 2 every
/// other layer from layer 0, Gemma 3 five of every six.
fn gemma_layer_types(target: Target, layers: usize) -> Vec<&'static str> {
    let pattern = if target == Target::Gemma2 { 2 } else { 6 };
    (0..layers).map(|i| if i % pattern < pattern - 1 { "sliding_attention" } else { "full_attention" }).collect()
}

/// The Hugging Face `config.json` a GGUF describes.
fn hf_config(g: &GgufFile, arch: GgufArch, target: Target, vocab: usize) -> Result<Value, ConvertError> {
    let path = g.path().to_path_buf();
    let key = |k: &str| format!("{}.{k}", arch.name);
    if let Some(kind) = g.get(&key("rope.scaling.type")).and_then(GgufValue::as_str).filter(|k| *k != "none") {
        return Err(ConvertError::UnsupportedKey { path, key: key("rope.scaling.type"), value: kind.to_owned() });
    }
    let layers = gguf_u64(g, &key("block_count"))? as usize;
    let hidden = gguf_u64(g, &key("embedding_length"))? as usize;
    let ffn = gguf_u64(g, &key("feed_forward_length"))? as usize;
    let heads = gguf_u64(g, &key("attention.head_count"))? as usize;
    let kv_heads = g.get(&key("attention.head_count_kv")).and_then(GgufValue::as_u64).map_or(heads, |v| v as usize);
    let context = gguf_u64(g, &key("context_length"))? as usize;
    // Qwen3's and Gemma's head size is their own (`attention.key_length`), not hidden / heads.
    let key_length = g.get(&key("attention.key_length")).and_then(GgufValue::as_u64).map(|v| v as usize);
    if heads == 0 || (key_length.is_none() && !hidden.is_multiple_of(heads)) {
        return Err(ConvertError::UnsupportedKey {
            path,
            key: key("attention.head_count"),
            value: format!("{heads} for embedding length {hidden}"),
        });
    }
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(ConvertError::UnsupportedKey {
            path,
            key: key("attention.head_count_kv"),
            value: format!("{kv_heads} for {heads} attention heads"),
        });
    }
    let head_dim = key_length.unwrap_or(hidden / heads);
    let eps = gguf_f64(g, &key("attention.layer_norm_rms_epsilon"), if target.gemma() { 1e-6 } else { 1e-5 });
    let theta = gguf_f64(g, &key("rope.freq_base"), if target == Target::Gemma3 { 1e6 } else { 10000.0 });
    let tied = g.tensor("output.weight").is_none();
    let mut config = json!({
        "architectures": [target.hf_class()],
        "model_type": target.model_type(),
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rms_norm_eps": eps,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    });
    let extra = match target {
        Target::Llama | Target::Qwen2 | Target::Qwen3 => {
            let scaling = if target == Target::Llama { llama3_rope_scaling(g, theta, head_dim)? } else { Value::Null };
            let mut e = json!({"head_dim": head_dim, "rope_theta": theta, "rope_scaling": scaling, "hidden_act": "silu"});
            match target {
                Target::Llama => {
                    e["attention_bias"] = json!(false);
                    e["mlp_bias"] = json!(false);
                }
                // Qwen2's q/k/v biases are not a config key; Qwen has no MLP bias key either.
                Target::Qwen3 => e["attention_bias"] = json!(false),
                _ => {}
            }
            if target != Target::Llama {
                e["use_sliding_window"] = json!(false);
            }
            e
        }
        Target::Mixtral => json!({
            "head_dim": head_dim,
            "rope_parameters": {"rope_theta": theta, "rope_type": "default"},
            "hidden_act": "silu",
            "num_local_experts": gguf_u64(g, &key("expert_count"))?,
            "num_experts_per_tok": gguf_u64(g, &key("expert_used_count"))?,
            "sliding_window": null,
            "router_jitter_noise": 0.0,
            "output_router_logits": false,
        }),
        Target::Gemma2 | Target::Gemma3 => {
            // llama.cpp scales scores by head_dim^-½, except for the 27B models (46 layers of
            // Gemma 2, 62 of Gemma 3), which use hidden / heads; the GGUF carries no
            // `query_pre_attn_scalar`.
            let big = layers == if target == Target::Gemma2 { 46 } else { 62 };
            let scalar = if big { hidden / heads } else { head_dim };
            let window = gguf_u64(g, &key("attention.sliding_window"))?;
            let mut e = json!({
                "head_dim": head_dim,
                "hidden_activation": "gelu_pytorch_tanh",
                "query_pre_attn_scalar": scalar,
                "sliding_window": window,
                "layer_types": gemma_layer_types(target, layers),
                "attention_bias": false,
            });
            if target == Target::Gemma2 {
                // llama.cpp's defaults where the file has no soft-capping keys.
                e["attn_logit_softcapping"] = json!(gguf_f64(g, &key("attn_logit_softcapping"), 50.0));
                e["final_logit_softcapping"] = json!(gguf_f64(g, &key("final_logit_softcapping"), 30.0));
                e["rope_parameters"] = json!({"rope_theta": theta, "rope_type": "default"});
            } else {
                e["attn_logit_softcapping"] = Value::Null;
                e["final_logit_softcapping"] = Value::Null;
                let local = gguf_f64(g, &key("rope.freq_base_swa"), 10000.0);
                e["rope_parameters"] = json!({
                    "full_attention": {"rope_theta": theta, "rope_type": "default"},
                    "sliding_attention": {"rope_theta": local, "rope_type": "default"},
                });
            }
            e
        }
        Target::Phi3 => {
            let rotary = g.get(&key("rope.dimension_count")).and_then(GgufValue::as_u64).map_or(head_dim, |v| v as usize);
            let window = g.get(&key("attention.sliding_window")).and_then(GgufValue::as_u64).filter(|w| *w > 0);
            let original = g.get(&key("rope.scaling.original_context_length")).and_then(GgufValue::as_u64).unwrap_or(context as u64);
            json!({
                "hidden_act": "silu",
                "rope_parameters": {"rope_theta": theta, "rope_type": "default",
                                    "partial_rotary_factor": rotary as f64 / head_dim as f64},
                "original_max_position_embeddings": original,
                "sliding_window": window,
            })
        }
    };
    if let (Some(map), Value::Object(extra)) = (config.as_object_mut(), extra) {
        map.extend(extra);
    }
    for (key, gguf_key) in [
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ] {
        if let Some(id) = g.get(gguf_key).and_then(GgufValue::as_u64) {
            config[key] = json!(id);
        }
    }
    Ok(config)
}

/// Converts a GGUF file of the llama (dense, or Mixtral with `llama.expert_count`), qwen2, qwen3,
/// gemma2, gemma3 or phi3 architecture into a Hugging Face directory `out` (fp32 weights).
/// `progress(done, total)` counts tensors.
pub fn convert_gguf(src: &Path, out: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<PathBuf, ConvertError> {
    let g = GgufFile::open(src)?;
    let path = g.path().to_path_buf();
    let name = g.get("general.architecture").and_then(GgufValue::as_str).unwrap_or("");
    let Some(arch) = GGUF_ARCHS.iter().copied().find(|a| a.name == name) else {
        return Err(ConvertError::Unsupported {
            path,
            what: "general.architecture",
            value: format!("{name:?} (supported: {})", GGUF_ARCHS.iter().map(|a| a.name).collect::<Vec<_>>().join(", ")),
        });
    };
    let experts = g.get(&format!("{}.expert_count", arch.name)).and_then(GgufValue::as_u64).unwrap_or(0);
    let target = match (arch.target, experts) {
        (Target::Llama, 1..) => Target::Mixtral,
        (t, 0) => t,
        (t, n) => {
            return Err(ConvertError::UnsupportedKey {
                path,
                key: format!("{}.expert_count", arch.name),
                value: format!("{n} (mixture-of-experts {} models are not supported)", t.model_type()),
            });
        }
    };
    let (tokenizer, tokenizer_config) = gguf_tokenizer(&g, arch)?;
    // The token list, already read and checked by the tokenizer builder: its length.
    let vocab = g.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map_or(0, <[GgufValue]>::len);
    let config = hf_config(&g, arch, target, vocab)?;
    let (heads, kv_heads) = (config["num_attention_heads"].as_i64().unwrap_or(0), config["num_key_value_heads"].as_i64().unwrap_or(0));

    // The config as transformers and spindle will read it, resolved before any tensor is
    // converted (a block count of 2^31, a zero size ...).
    ModelConfig::from_json(&path, &config.to_string())
        .map_err(|e| ConvertError::Invalid { path: path.clone(), what: format!("the model it describes is not valid: {e}") })?;
    let mut out_dir = ShardedOut { writer: HfDirWriter::create(out, Some(src))?, pending: Vec::new(), bytes: 0 };
    let total = g.tensors().len();
    for (done, info) in g.tensors().iter().enumerate() {
        progress(done, total);
        let Some((name, transform)) = hf_name(&info.name, heads, kv_heads, arch, target) else {
            return Err(ConvertError::Unsupported {
                path,
                what: "tensor",
                value: format!("`{}` has no Hugging Face {} counterpart", info.name, target.model_type()),
            });
        };
        let dims: Vec<i64> = info.shape().iter().map(|&d| d as i64).collect();
        let values = g.dequantize(&info.name)?;
        let t = Tensor::from_slice(&values).view(dims.as_slice());
        match transform {
            Transform::Copy => out_dir.push(name, t)?,
            Transform::Consumed => {}
            Transform::Unpermute(h) => {
                // Rows in pairs per head, as the permutation needs them (else a malformed file).
                if dims.len() != 2 || h <= 0 || dims[0] % (2 * h) != 0 {
                    return Err(ConvertError::Invalid {
                        path,
                        what: format!("tensor `{}` has shape {dims:?}, not [{h} heads × an even head size, columns]", info.name),
                    });
                }
                out_dir.push(name, unpermute_rope_rows(&t, h))?
            }
            // In fp32, as transformers' Gemma2TensorProcessor does after dequantizing.
            Transform::MinusOne => out_dir.push(name, t - 1.0)?,
            Transform::Expert(e) => {
                if e >= experts {
                    return Err(ConvertError::Invalid {
                        path,
                        what: format!("tensor `{}` names expert {e}, but `llama.expert_count` is {experts}", info.name),
                    });
                }
                out_dir.push(name, t)?
            }
            Transform::Experts(which) => {
                if dims.len() != 3 || dims[0] as u64 != experts {
                    return Err(ConvertError::Invalid {
                        path,
                        what: format!("tensor `{}` has shape {dims:?}, not [{experts}, rows, columns]", info.name),
                    });
                }
                for e in 0..dims[0] {
                    out_dir.push(format!("{name}.{e}.{which}.weight"), t.get(e).contiguous())?;
                }
            }
        }
    }
    progress(total, total);
    out_dir.flush()?;
    let mut writer = out_dir.writer;
    writer.write_json("config.json", &config)?;
    writer.write_json("tokenizer.json", &tokenizer)?;
    writer.write_json("tokenizer_config.json", &tokenizer_config)?;
    writer.seal()?;
    loads(&writer, &path)?;
    Ok(writer.finish()?)
}

/// The directory being written loads as a model: its config resolves, its blocks are the ones
/// the weights hold, and every tensor a block or the embeddings need is there with its shape
/// (a tensor missing or misshapen in the source, a token count unlike the embedding's rows).
fn loads(writer: &HfDirWriter, src: &Path) -> Result<(), ConvertError> {
    let invalid =
        |e: crate::ModelError| ConvertError::Invalid { path: src.to_path_buf(), what: format!("the converted model would not load: {e}") };
    let model = crate::Model::open(writer.path(), tch::Device::Cpu, Kind::Float).map_err(invalid)?;
    for i in 0..model.config().num_layers {
        model.block(i).map_err(invalid)?;
    }
    Ok(())
}

/// Converts a llama2.c checkpoint and its tokenizer into a Hugging Face directory `out`.
pub fn convert_llama2c(src: &Path, tokenizer: &Path, out: &Path) -> Result<PathBuf, ConvertError> {
    let ckpt = llama2c::read_checkpoint(src)?;
    let c = &ckpt.config;
    let tok = llama2c::read_tokenizer(tokenizer, c.vocab_size)?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.dim,
        "intermediate_size": c.hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.seq_len,
        // run.c's rmsnorm uses 1e-5 and its RoPE base 10000.
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": null,
        "hidden_act": "silu",
        "tie_word_embeddings": c.shared_classifier,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
    });
    let mut writer = HfDirWriter::create(out, Some(src))?;
    let tensors: Vec<(String, Tensor)> = ckpt
        .tensors
        .iter()
        .map(|(name, values, shape)| {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            (name.clone(), Tensor::from_slice(values).view(dims.as_slice()))
        })
        .collect();
    writer.write_shard(&tensors)?;
    writer.write_json("config.json", &config)?;
    writer.write_json("tokenizer.json", &tok.to_tokenizer_json())?;
    writer.write_json(
        "tokenizer_config.json",
        &json!({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true}),
    )?;
    Ok(writer.finish()?)
}
