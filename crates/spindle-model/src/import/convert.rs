//! Import into a Hugging Face model directory: from GGUF (the llama, qwen2 and qwen3
//! architectures, with a byte-level BPE tokenizer; F32, F16, BF16,
//! Q8_0, Q4_0, Q4_1, Q4_K, Q5_K and Q6_K dequantized to fp32; llama.cpp's q/k row permutation undone; tokenizer.json
//! rebuilt from the GGUF metadata) and from a llama2.c checkpoint with its tokenizer. The result
//! loads with [`crate::Model`] and with Hugging Face transformers.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tch::{Kind, Tensor};

use crate::ModelConfig;
use crate::gguf::{GgufError, GgufFile, GgufValue};
use crate::llama2c::{self, Llama2cError};
use crate::save::{HfDirWriter, SaveError};

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

/// What a GGUF `general.architecture` converts into.
#[derive(Debug, Clone, Copy)]
struct GgufArch {
    /// `general.architecture`, also the prefix of its metadata keys.
    name: &'static str,
    /// The transformers class and `model_type`.
    hf_class: &'static str,
    model_type: &'static str,
    /// llama.cpp interleaves the RoPE pairs of q/k rows for the llama architecture only
    /// (`LlamaModel.permute` in `convert_hf_to_gguf.py`); Qwen's are stored as transformers has them.
    permuted_qk: bool,
}

const GGUF_ARCHS: &[GgufArch] = &[
    GgufArch { name: "llama", hf_class: "LlamaForCausalLM", model_type: "llama", permuted_qk: true },
    GgufArch { name: "qwen2", hf_class: "Qwen2ForCausalLM", model_type: "qwen2", permuted_qk: false },
    GgufArch { name: "qwen3", hf_class: "Qwen3ForCausalLM", model_type: "qwen3", permuted_qk: false },
];

/// The GGUF → Hugging Face name of a llama, qwen2 or qwen3 tensor, and whether its rows need
/// un-permuting (with how many heads).
fn hf_name(gguf_name: &str, heads: i64, kv_heads: i64, arch: GgufArch) -> Option<(String, Option<i64>)> {
    let top = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = top {
        return Some((name.to_owned(), None));
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (index, part) = rest.split_once('.')?;
    let index: usize = index.parse().ok()?;
    let (hf, permute) = match part {
        "attn_norm.weight" => ("input_layernorm.weight", None),
        "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
        "attn_q.weight" => ("self_attn.q_proj.weight", arch.permuted_qk.then_some(heads)),
        "attn_k.weight" => ("self_attn.k_proj.weight", arch.permuted_qk.then_some(kv_heads)),
        "attn_v.weight" => ("self_attn.v_proj.weight", None),
        // Qwen2's q/k/v biases and Qwen3's per-head q/k norms (neither permuted); anything else
        // is a tensor the converted model would not load, and refused.
        "attn_q.bias" if arch.name == "qwen2" => ("self_attn.q_proj.bias", None),
        "attn_k.bias" if arch.name == "qwen2" => ("self_attn.k_proj.bias", None),
        "attn_v.bias" if arch.name == "qwen2" => ("self_attn.v_proj.bias", None),
        "attn_q_norm.weight" if arch.name == "qwen3" => ("self_attn.q_norm.weight", None),
        "attn_k_norm.weight" if arch.name == "qwen3" => ("self_attn.k_norm.weight", None),
        "attn_output.weight" => ("self_attn.o_proj.weight", None),
        "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
        "ffn_up.weight" => ("mlp.up_proj.weight", None),
        "ffn_down.weight" => ("mlp.down_proj.weight", None),
        _ => return None,
    };
    Some((format!("model.layers.{index}.{hf}"), permute))
}

/// transformers' `PRETOKENIZE_REGEX` of Qwen2 (`models/qwen2/tokenization_qwen2.py`), which its
/// GGUF loader uses for `tokenizer.ggml.pre = "qwen2"`.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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
        other => Err(ConvertError::Unsupported {
            path: path.to_path_buf(),
            what: "tokenizer.ggml.pre",
            value: format!("{other:?} (supported: smollm, gpt2, default, qwen2)"),
        }),
    }
}

/// `tokenizer.json` (and the ids of BOS/EOS) rebuilt from a byte-level BPE GGUF's metadata.
fn gguf_tokenizer(g: &GgufFile) -> Result<(Value, Value), ConvertError> {
    let path = g.path();
    let model = g.get("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("");
    if model != "gpt2" {
        return Err(ConvertError::Unsupported {
            path: path.to_path_buf(),
            what: "tokenizer.ggml.model",
            value: format!("{model:?} (supported: gpt2, i.e. byte-level BPE)"),
        });
    }
    let pre = g.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
    let tokens = gguf_strings(g, "tokenizer.ggml.tokens")?;
    let merges = gguf_strings(g, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = match g.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
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
    if let Some(template) = g.get("tokenizer.chat_template").and_then(GgufValue::as_str) {
        config["chat_template"] = json!(template);
    }
    if let Some(pad) = g.get("tokenizer.ggml.padding_token_id").and_then(GgufValue::as_u64) {
        config["pad_token"] = name(Some(pad));
    }
    Ok((tokenizer, config))
}

/// Converts a GGUF file of the llama, qwen2 or qwen3 architecture into a Hugging Face directory
/// `out` (fp32 weights). `progress(done, total)` counts tensors.
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
    let key = |k: &str| format!("{}.{k}", arch.name);
    if let Some(kind) = g.get(&key("rope.scaling.type")).and_then(GgufValue::as_str).filter(|k| *k != "none") {
        return Err(ConvertError::UnsupportedKey { path, key: key("rope.scaling.type"), value: kind.to_owned() });
    }
    let layers = gguf_u64(&g, &key("block_count"))? as usize;
    let hidden = gguf_u64(&g, &key("embedding_length"))? as usize;
    let ffn = gguf_u64(&g, &key("feed_forward_length"))? as usize;
    let heads = gguf_u64(&g, &key("attention.head_count"))? as usize;
    let kv_heads = g.get(&key("attention.head_count_kv")).and_then(GgufValue::as_u64).map_or(heads, |v| v as usize);
    let context = gguf_u64(&g, &key("context_length"))? as usize;
    // Qwen3's head size is its own (`attention.key_length`), not hidden / heads.
    let key_length = g.get(&key("attention.key_length")).and_then(GgufValue::as_u64).map(|v| v as usize);
    let (tokenizer, tokenizer_config) = gguf_tokenizer(&g)?;
    let vocab = gguf_strings(&g, "tokenizer.ggml.tokens")?.len();
    let tied = g.tensor("output.weight").is_none();
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

    let mut config = json!({
        "architectures": [arch.hf_class],
        "model_type": arch.model_type,
        "hidden_size": hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": context,
        "rms_norm_eps": gguf_f64(&g, &key("attention.layer_norm_rms_epsilon"), 1e-5),
        "rope_theta": gguf_f64(&g, &key("rope.freq_base"), 10000.0),
        "rope_scaling": null,
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    });
    if arch.name != "llama" {
        // Qwen's q/k/v biases (Qwen2) are not a config key; it has no MLP bias key either.
        if let Some(map) = config.as_object_mut() {
            map.remove("mlp_bias");
            if arch.name == "qwen2" {
                map.remove("attention_bias");
            }
            map.insert("use_sliding_window".into(), json!(false));
        }
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

    // The config as transformers and spindle will read it, resolved before any tensor is
    // converted (a block count of 2^31, a zero size ...).
    ModelConfig::from_json(&path, &config.to_string())
        .map_err(|e| ConvertError::Invalid { path: path.clone(), what: format!("the model it describes is not valid: {e}") })?;
    let mut out_dir = ShardedOut { writer: HfDirWriter::create(out, Some(src))?, pending: Vec::new(), bytes: 0 };
    let total = g.tensors().len();
    for (done, info) in g.tensors().iter().enumerate() {
        progress(done, total);
        let Some((name, permute)) = hf_name(&info.name, heads as i64, kv_heads as i64, arch) else {
            return Err(ConvertError::Unsupported {
                path,
                what: "tensor",
                value: format!("`{}` has no Hugging Face {} counterpart", info.name, arch.model_type),
            });
        };
        let shape = info.shape();
        let values = g.dequantize(&info.name)?;
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let mut t = Tensor::from_slice(&values).view(dims.as_slice());
        if let Some(h) = permute {
            t = unpermute_rope_rows(&t, h);
        }
        out_dir.push(name, t.to_kind(Kind::Float))?;
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
