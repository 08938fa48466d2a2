//! llama2.c import: the legacy (version-0) `.bin` checkpoint that karpathy/llama2.c's `run.c`
//! reads, and its `tokenizer.bin` vocabulary.
//!
//! This module owns the translation from llama2.c's conventions to Hugging Face's, so that the rest
//! of spindle sees a llama2.c model exactly as it sees a Hugging Face Llama: weights under HF
//! tensor names and `[out, in]` shapes, with the q/k rows permuted from Meta's interleaved RoPE
//! pairs to HF's `rotate_half` layout (HF's `permute` in `convert_llama_weights_to_hf.py`, the
//! inverse of `permute_reverse` in llama2.c's `export.py`), and a tokenizer that is both run.c's
//! `encode` reproduced exactly and an equivalent `tokenizer.json`. It exists because the one real,
//! trained, full-precision model small enough for tests (stories260K) ships in this format.
//!
//! Everything here follows the reference code, not a reading of it: `read_checkpoint` walks the
//! file in `memory_map_weights` order (skipping the two `freq_cis` tables as run.c does),
//! `encode` is run.c's `encode` (dummy-prefix space, codepoint lookup with byte fallback, greedy
//! highest-score merges, first pair on ties), `decode_piece` is run.c's `decode`, and
//! `to_tokenizer_json` emits what transformers' `LlamaConverter` emits for a legacy Llama
//! tokenizer. Files are checked before they are trusted: a header whose dimensions are implausible
//! or a file whose size disagrees with its header is a typed error naming the file, never a panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde_json::{Map, Value, json};

/// A llama2.c file that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum Llama2cError {
    #[error("cannot read {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error("{path}: not a usable llama2.c checkpoint header: {problem}")]
    Header { path: PathBuf, problem: String },
    #[error(
        "{path}: the header ({config}) implies a {expected}-byte legacy llama2.c checkpoint, but the file holds {actual} bytes (truncated, or not a version-0 llama2.c file)"
    )]
    Size { path: PathBuf, config: String, expected: u64, actual: u64 },
    #[error("{path}: tensor `{name}` holds NaN or infinite values")]
    NotFinite { path: PathBuf, name: String },
    #[error("{path}: llama2.c tokenizer truncated: {problem}")]
    TokenizerTruncated { path: PathBuf, problem: String },
    #[error("{path}: not a usable llama2.c tokenizer: {problem}")]
    Tokenizer { path: PathBuf, problem: String },
}

/// The seven header values of a legacy llama2.c checkpoint, as run.c's `Config` holds them, with
/// the sign of `vocab_size` turned into `shared_classifier`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Llama2cConfig {
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub vocab_size: usize,
    pub seq_len: usize,
    /// The classifier is the embedding table (positive `vocab_size` in the file); otherwise the
    /// file ends with its own `[vocab_size, dim]` classifier.
    pub shared_classifier: bool,
}

impl Llama2cConfig {
    /// `dim / n_heads`.
    pub fn head_size(&self) -> usize {
        self.dim / self.n_heads
    }

    /// `n_kv_heads * head_size`, the output width of k_proj and v_proj.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_size()
    }
}

impl std::fmt::Display for Llama2cConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dim {}, hidden_dim {}, n_layers {}, n_heads {}, n_kv_heads {}, vocab_size {}, seq_len {}, {} classifier",
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.vocab_size,
            self.seq_len,
            if self.shared_classifier { "shared" } else { "unshared" }
        )
    }
}

/// One tensor: its Hugging Face name, its values row-major, its shape.
pub type NamedTensor = (String, Vec<f32>, Vec<usize>);

/// A llama2.c checkpoint under Hugging Face Llama names: `(name, values row-major, shape)`, in the
/// order embeddings, each layer (input_layernorm, q, k, v, o, post_attention_layernorm, gate, up,
/// down), final norm, and `lm_head.weight` only when the classifier is unshared.
#[derive(Debug, Clone)]
pub struct Llama2cCheckpoint {
    pub config: Llama2cConfig,
    pub tensors: Vec<NamedTensor>,
}

/// Bytes of the legacy header: seven native-endian (little-endian in practice) `i32`s.
const HEADER_BYTES: usize = 7 * 4;
/// `"ak42"` as a little-endian `u32`: the magic of the version-1 and -2 llama2.c exports.
const MAGIC_AK42: u32 = 0x616b_3432;

fn header_error(path: &Path, problem: impl Into<String>) -> Llama2cError {
    Llama2cError::Header { path: path.to_path_buf(), problem: problem.into() }
}

/// Parses and checks the seven header values (`bytes` holds at least [`HEADER_BYTES`]).
fn parse_config(path: &Path, bytes: &[u8]) -> Result<Llama2cConfig, Llama2cError> {
    let field = |i: usize| i32::from_le_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]);
    if u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == MAGIC_AK42 {
        return Err(header_error(
            path,
            format!(
                "it starts with the magic \"ak42\" of a version-{} llama2.c export; only the legacy version-0 format (run.c's) is read",
                field(1)
            ),
        ));
    }
    let names = ["dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"];
    let raw: Vec<i32> = (0..7).map(field).collect();
    for (name, &v) in names.iter().zip(&raw) {
        // vocab_size may be negative: that is the legacy flag for an unshared classifier.
        let bad = if *name == "vocab_size" { v == 0 || v == i32::MIN } else { v <= 0 };
        if bad {
            return Err(header_error(path, format!("{name} is {v} (header values: {raw:?})")));
        }
    }
    let u = |v: i32| v.unsigned_abs() as usize;
    let config = Llama2cConfig {
        dim: u(raw[0]),
        hidden_dim: u(raw[1]),
        n_layers: u(raw[2]),
        n_heads: u(raw[3]),
        n_kv_heads: u(raw[4]),
        vocab_size: u(raw[5]),
        seq_len: u(raw[6]),
        shared_classifier: raw[5] > 0,
    };
    if !config.dim.is_multiple_of(config.n_heads) {
        return Err(header_error(path, format!("n_heads {} does not divide dim {}", config.n_heads, config.dim)));
    }
    if !config.n_heads.is_multiple_of(config.n_kv_heads) {
        return Err(header_error(path, format!("n_kv_heads {} does not divide n_heads {}", config.n_kv_heads, config.n_heads)));
    }
    if !config.head_size().is_multiple_of(2) {
        return Err(header_error(path, format!("head size dim/n_heads = {} is odd; RoPE rotates pairs", config.head_size())));
    }
    Ok(config)
}

/// One run of floats in the file, in `memory_map_weights` order.
struct Segment {
    /// HF name pattern: `{}` is replaced by the layer index (per-layer segments), or the name.
    name: &'static str,
    per_layer: bool,
    /// Shape of one tensor (per layer, if `per_layer`); empty for a skipped run.
    shape: Vec<usize>,
    /// Floats in the whole run (skipped runs only).
    skip: usize,
}

/// The file's layout as run.c's `memory_map_weights` walks it.
fn layout(c: &Llama2cConfig) -> Vec<Segment> {
    let seg = |name, per_layer, shape: Vec<usize>| Segment { name, per_layer, shape, skip: 0 };
    let freq = c.seq_len * c.head_size() / 2;
    let mut v = vec![
        seg("model.embed_tokens.weight", false, vec![c.vocab_size, c.dim]),
        seg("model.layers.{}.input_layernorm.weight", true, vec![c.dim]),
        seg("model.layers.{}.self_attn.q_proj.weight", true, vec![c.n_heads * c.head_size(), c.dim]),
        seg("model.layers.{}.self_attn.k_proj.weight", true, vec![c.kv_dim(), c.dim]),
        seg("model.layers.{}.self_attn.v_proj.weight", true, vec![c.kv_dim(), c.dim]),
        seg("model.layers.{}.self_attn.o_proj.weight", true, vec![c.dim, c.n_heads * c.head_size()]),
        seg("model.layers.{}.post_attention_layernorm.weight", true, vec![c.dim]),
        seg("model.layers.{}.mlp.gate_proj.weight", true, vec![c.hidden_dim, c.dim]),
        seg("model.layers.{}.mlp.down_proj.weight", true, vec![c.dim, c.hidden_dim]),
        seg("model.layers.{}.mlp.up_proj.weight", true, vec![c.hidden_dim, c.dim]),
        seg("model.norm.weight", false, vec![c.dim]),
        // What used to be freq_cis_real and freq_cis_imag: run.c skips seq_len * head_size / 2
        // floats for each.
        Segment { name: "freq_cis_real", per_layer: false, shape: Vec::new(), skip: freq },
        Segment { name: "freq_cis_imag", per_layer: false, shape: Vec::new(), skip: freq },
    ];
    if !c.shared_classifier {
        v.push(seg("lm_head.weight", false, vec![c.vocab_size, c.dim]));
    }
    v
}

/// Floats in a segment, or `None` on overflow.
fn segment_floats(s: &Segment, n_layers: usize) -> Option<usize> {
    if s.shape.is_empty() {
        return Some(s.skip);
    }
    let one = s.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if s.per_layer { one.checked_mul(n_layers) } else { Some(one) }
}

/// Hugging Face's `permute(w, n_heads, dim1, dim2)` from `convert_llama_weights_to_hf.py`:
/// `w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)`. Within
/// each head, the rows of Meta's interleaved RoPE pairs `(2i, 2i+1)` move to `(i, i + half)`, the
/// layout HF's `rotate_half` expects. `w` is `[dim1, dim2]` row-major; `dim1 / n_heads` is even.
pub fn permute_for_hf(w: &[f32], n_heads: usize, dim1: usize, dim2: usize) -> Vec<f32> {
    let head = dim1 / n_heads;
    let half = head / 2;
    let mut out = vec![0.0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                let src = (h * head + 2 * i + j) * dim2;
                let dst = (h * head + j * half + i) * dim2;
                out[dst..dst + dim2].copy_from_slice(&w[src..src + dim2]);
            }
        }
    }
    out
}

/// Reads a legacy (version-0) llama2.c `.bin` as run.c's `read_checkpoint` does (seven `i32`s,
/// negative `vocab_size` = unshared classifier, then the floats in `memory_map_weights` order, the
/// two `freq_cis` tables skipped) and returns the weights under Hugging Face Llama names, `[out, in]`
/// shapes, q_proj and k_proj rows permuted to HF's layout ([`permute_for_hf`]; k with
/// `n_kv_heads`). w1 = gate_proj, w3 = up_proj, w2 = down_proj.
pub fn read_checkpoint(path: &Path) -> Result<Llama2cCheckpoint, Llama2cError> {
    let io = |io| Llama2cError::Io { path: path.to_path_buf(), io };
    let file = spindle_io::regular_file(path).map_err(io)?;
    // SAFETY: the map is read-only and private to this process; checkpoints are not modified while
    // spindle reads them (spindle never writes into an input model).
    #[allow(unsafe_code)]
    let map = unsafe { Mmap::map(&file) }.map_err(io)?;
    let bytes: &[u8] = &map;
    if bytes.len() < HEADER_BYTES {
        return Err(header_error(path, format!("the file holds {} bytes, fewer than the {HEADER_BYTES}-byte header", bytes.len())));
    }
    let config = parse_config(path, bytes)?;
    let segments = layout(&config);
    let overflow = || header_error(path, format!("the sizes implied by the header overflow ({config})"));
    let mut floats = 0usize;
    for s in &segments {
        floats = floats.checked_add(segment_floats(s, config.n_layers).ok_or_else(overflow)?).ok_or_else(overflow)?;
    }
    let expected = floats.checked_mul(4).and_then(|b| b.checked_add(HEADER_BYTES)).ok_or_else(overflow)?;
    if expected != bytes.len() {
        return Err(Llama2cError::Size {
            path: path.to_path_buf(),
            config: config.to_string(),
            expected: expected as u64,
            actual: bytes.len() as u64,
        });
    }

    let mut cursor = HEADER_BYTES;
    let mut take = |n: usize| -> Vec<f32> {
        let v = bytes[cursor..cursor + 4 * n].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        cursor += 4 * n;
        v
    };
    // Per-layer tensors are stored by kind (all layers' q, then all layers' k, ...); collect them
    // by kind, then emit layer by layer.
    let mut global: Vec<NamedTensor> = Vec::new();
    let mut per_layer: Vec<Vec<NamedTensor>> = Vec::new();
    for s in &segments {
        if s.shape.is_empty() {
            take(s.skip);
            continue;
        }
        let numel: usize = s.shape.iter().product();
        if s.per_layer {
            let mut kind = Vec::with_capacity(config.n_layers);
            for l in 0..config.n_layers {
                let name = s.name.replace("{}", &l.to_string());
                let mut values = take(numel);
                if name.ends_with("q_proj.weight") {
                    values = permute_for_hf(&values, config.n_heads, s.shape[0], s.shape[1]);
                } else if name.ends_with("k_proj.weight") {
                    values = permute_for_hf(&values, config.n_kv_heads, s.shape[0], s.shape[1]);
                }
                kind.push((name, values, s.shape.clone()));
            }
            per_layer.push(kind);
        } else {
            global.push((s.name.to_owned(), take(numel), s.shape.clone()));
        }
    }
    let mut tensors = Vec::with_capacity(global.len() + per_layer.len() * config.n_layers);
    let mut global = global.into_iter();
    tensors.extend(global.next()); // model.embed_tokens.weight
    // The file stores gate (w1), down (w2), up (w3); HF lists gate, up, down.
    let order = [0usize, 1, 2, 3, 4, 5, 6, 8, 7];
    let mut per_layer: Vec<std::vec::IntoIter<_>> = per_layer.into_iter().map(Vec::into_iter).collect();
    for _ in 0..config.n_layers {
        for &k in &order {
            tensors.extend(per_layer[k].next());
        }
    }
    tensors.extend(global); // model.norm.weight, then lm_head.weight when unshared
    for (name, values, _) in &tensors {
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Llama2cError::NotFinite { path: path.to_path_buf(), name: name.clone() });
        }
    }
    Ok(Llama2cCheckpoint { config, tensors })
}

/// A llama2.c `tokenizer.bin`: `max_token_length` (`u32`), then per piece its score (`f32`), its
/// length (`u32`) and its bytes, as llama2.c's `tokenizer.py` writes them (sentencepiece's `▁`
/// already turned into a space, BOS and EOS written as `"\n<s>\n"` and `"\n</s>\n"`).
#[derive(Debug, Clone)]
pub struct Llama2cTokenizer {
    vocab: Vec<Vec<u8>>,
    scores: Vec<f32>,
    max_token_length: u32,
    /// Piece bytes → id (the lowest id if a piece occurs twice).
    lookup: HashMap<Vec<u8>, u32>,
    /// The id of the `" "` piece, the dummy prefix.
    space: u32,
}

/// Reads the first `vocab_size` pieces of a llama2.c tokenizer, as run.c's `build_tokenizer`
/// does (any bytes after them are not read, as in run.c).
pub fn read_tokenizer(path: &Path, vocab_size: usize) -> Result<Llama2cTokenizer, Llama2cError> {
    let bytes = spindle_io::read_at_most(path, u64::MAX).map_err(|io| Llama2cError::Io { path: path.to_path_buf(), io })?;
    let truncated = |problem: String| Llama2cError::TokenizerTruncated { path: path.to_path_buf(), problem };
    let bad = |problem: String| Llama2cError::Tokenizer { path: path.to_path_buf(), problem };
    if vocab_size < 259 {
        return Err(bad(format!(
            "vocab_size {vocab_size} is below 259: llama2.c's byte fallback needs <unk>, <s>, </s> and 256 byte pieces"
        )));
    }
    let u32_at = |at: usize| -> Option<u32> { bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) };
    let max_token_length = u32_at(0).ok_or_else(|| truncated(format!("{} bytes, fewer than the 4-byte max_token_length", bytes.len())))?;
    let mut at = 4usize;
    let mut vocab = Vec::with_capacity(vocab_size);
    let mut scores = Vec::with_capacity(vocab_size);
    for i in 0..vocab_size {
        let (Some(score), Some(len)) = (u32_at(at), u32_at(at + 4)) else {
            return Err(truncated(format!(
                "piece {i} of {vocab_size}: its 8-byte score and length would start at byte {at}, but the file holds {} bytes",
                bytes.len()
            )));
        };
        let start = at + 8;
        let piece = start.checked_add(len as usize).and_then(|end| bytes.get(start..end)).ok_or_else(|| {
            truncated(format!("piece {i} of {vocab_size}: {len} bytes at byte {start}, but the file holds {} bytes", bytes.len()))
        })?;
        scores.push(f32::from_bits(score));
        vocab.push(piece.to_vec());
        at = start + len as usize;
    }
    let mut lookup = HashMap::with_capacity(vocab_size);
    for (id, piece) in vocab.iter().enumerate() {
        lookup.entry(piece.clone()).or_insert(id as u32);
    }
    let space = *lookup.get(b" ".as_slice()).ok_or_else(|| bad("no \" \" piece (the dummy prefix run.c's encode prepends)".into()))?;
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(bad(format!("piece {i} has a NaN score")));
    }
    Ok(Llama2cTokenizer { vocab, scores, max_token_length, lookup, space })
}

/// A candidate merge of the adjacent tokens at `i` and `i + 1`: the merged piece's id and score.
type Candidate = Option<(f32, u32)>;

impl Llama2cTokenizer {
    /// The number of pieces.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The header's `max_token_length` (the longest piece, in bytes, as the exporter recorded it).
    pub fn max_token_length(&self) -> u32 {
        self.max_token_length
    }

    /// The bytes of piece `id` as the file stores them (spaces, not `▁`).
    pub fn piece(&self, id: u32) -> Option<&[u8]> {
        self.vocab.get(id as usize).map(Vec::as_slice)
    }

    /// The score of piece `id`.
    pub fn score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    fn candidate(&self, a: u32, b: u32) -> Candidate {
        let mut joined = Vec::with_capacity(self.vocab[a as usize].len() + self.vocab[b as usize].len());
        joined.extend_from_slice(&self.vocab[a as usize]);
        joined.extend_from_slice(&self.vocab[b as usize]);
        self.lookup.get(&joined).map(|&id| (self.scores[id as usize], id))
    }

    /// Exactly run.c's `encode` (without EOS): BOS (id 1) if `bos`; the dummy-prefix `" "` piece
    /// when the text is non-empty; each UTF-8 codepoint looked up as a piece, or else its bytes as
    /// ids `byte + 3`; then, repeatedly, the adjacent pair whose concatenation is a piece with the
    /// highest score (strictly above -1e10; the first such pair on ties, as run.c's strict `>`)
    /// is merged. Like run.c, which sees a C string, the text ends at its first NUL.
    pub fn encode(&self, text: &str, bos: bool) -> Vec<u32> {
        let text = text.split('\0').next().unwrap_or("");
        let mut tokens: Vec<u32> = Vec::with_capacity(text.len() + 2);
        if bos {
            tokens.push(1);
        }
        if !text.is_empty() {
            tokens.push(self.space);
        }
        let mut buf = [0u8; 4];
        for c in text.chars() {
            let bytes = c.encode_utf8(&mut buf).as_bytes();
            match self.lookup.get(bytes) {
                Some(&id) => tokens.push(id),
                None => tokens.extend(bytes.iter().map(|&b| u32::from(b) + 3)),
            }
        }
        // candidates[i] is the merge of tokens[i] and tokens[i + 1]; only the neighbours of a
        // merge change, so each round rescans scores but recomputes at most two lookups.
        let mut candidates: Vec<Candidate> = tokens.windows(2).map(|w| self.candidate(w[0], w[1])).collect();
        loop {
            let mut best: Option<(usize, f32, u32)> = None;
            let mut best_score = -1e10f32;
            for (i, c) in candidates.iter().enumerate() {
                if let Some((score, id)) = *c
                    && score > best_score
                {
                    best_score = score;
                    best = Some((i, score, id));
                }
            }
            let Some((i, _, id)) = best else { break };
            tokens[i] = id;
            tokens.remove(i + 1);
            candidates.remove(i);
            if i + 1 < tokens.len() {
                candidates[i] = self.candidate(tokens[i], tokens[i + 1]);
            }
            if i > 0 {
                candidates[i - 1] = self.candidate(tokens[i - 1], tokens[i]);
            }
        }
        tokens
    }

    /// run.c's `decode` as bytes: the piece of `id`, without its leading space when `prev` is BOS
    /// (id 1), and a `<0xXX>` piece as the raw byte. An id outside the vocabulary gives nothing.
    pub fn decode_piece_bytes(&self, prev: u32, id: u32) -> Vec<u8> {
        let Some(mut piece) = self.piece(id) else { return Vec::new() };
        if prev == 1 && piece.first() == Some(&b' ') {
            piece = &piece[1..];
        }
        // sscanf(piece, "<0x%02hhX>", &byte) == 1: "<0x", then one or two hex digits.
        if let Some(rest) = piece.strip_prefix(b"<0x") {
            let digits: Vec<u8> = rest.iter().take(2).take_while(|b| b.is_ascii_hexdigit()).copied().collect();
            if let Some(byte) = std::str::from_utf8(&digits).ok().and_then(|d| u8::from_str_radix(d, 16).ok()) {
                return vec![byte];
            }
        }
        piece.to_vec()
    }

    /// run.c's `decode` ([`Self::decode_piece_bytes`]) as text; a lone byte of a multi-byte UTF-8
    /// character becomes U+FFFD (concatenate [`Self::decode_piece_bytes`] to decode exactly).
    pub fn decode_piece(&self, prev: u32, id: u32) -> String {
        String::from_utf8_lossy(&self.decode_piece_bytes(prev, id)).into_owned()
    }

    /// The piece of `id` as Hugging Face names it: `<unk>`, `<s>`, `</s>` for ids 0–2 (what
    /// `LlamaConverter.vocab` takes from the original tokenizer), otherwise the piece with spaces
    /// turned back into sentencepiece's `▁`.
    fn hf_piece(&self, id: usize) -> String {
        match id {
            0 => "<unk>".to_owned(),
            1 => "<s>".to_owned(),
            2 => "</s>".to_owned(),
            _ => String::from_utf8_lossy(&self.vocab[id]).replace(' ', "\u{2581}"),
        }
    }

    /// A Hugging Face `tokenizer.json` equivalent to [`Self::encode`] with BOS on ordinary text
    /// (text holding no `<unk>`, `<s>` or `</s>`, which HF matches as special tokens). It is what
    /// transformers' `LlamaConverter` builds for a legacy (`legacy=True`) Llama tokenizer, plus
    /// the post-processor `LlamaTokenizerFast` adds: a BPE model with `byte_fallback` and
    /// `fuse_unk`, vocabulary from the pieces (scores of ids 0–2 taken as 0), merges generated from
    /// the vocabulary as transformers' `generate_merges(vocab, vocab_scores)` does (every split of
    /// every piece into two pieces, within a piece by the ids of its halves, then a stable sort by
    /// the merged piece's score, then the halves' lengths, descending); normalizer `Prepend("▁")`
    /// then `Replace(" ", "▁")`; no pre-tokenizer; decoder `Replace("▁", " ")`, `ByteFallback`,
    /// `Fuse`, `Strip(" ", 1, 0)`; `<unk>`=0, `<s>`=1, `</s>`=2 as special added tokens; a
    /// template post-processor that prepends `<s>`.
    pub fn to_tokenizer_json(&self) -> Value {
        let pieces: Vec<String> = (0..self.vocab.len()).map(|i| self.hf_piece(i)).collect();
        let score = |i: usize| if i < 3 { 0.0 } else { self.scores[i] };
        // Python's `{piece: id}` keeps the last id of a repeated piece.
        let mut ids: HashMap<&str, usize> = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            ids.insert(p.as_str(), i);
        }
        // generate_merges: iterate `dict(vocab_scores)` (first position, last value of a repeat).
        let mut order: Vec<usize> = Vec::with_capacity(pieces.len());
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            match seen.get(p.as_str()) {
                Some(&slot) => order[slot] = i,
                None => {
                    seen.insert(p.as_str(), order.len());
                    order.push(i);
                }
            }
        }
        let mut merges: Vec<(&str, &str, f32)> = Vec::new();
        for &i in &order {
            let piece = pieces[i].as_str();
            let mut local: Vec<(&str, &str, f32)> = Vec::new();
            for (at, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(at);
                if ids.contains_key(l) && ids.contains_key(r) {
                    local.push((l, r, score(i)));
                }
            }
            local.sort_by_key(|&(l, r, _)| (ids[l], ids[r]));
            merges.extend(local);
        }
        // sorted(key=(score, len(l), len(r)), reverse=True) is stable: equal keys keep their order.
        merges.sort_by(|a, b| {
            let key = |m: &(&str, &str, f32)| (m.0.chars().count(), m.1.chars().count());
            b.2.partial_cmp(&a.2).unwrap_or(std::cmp::Ordering::Equal).then_with(|| key(b).cmp(&key(a)))
        });
        let mut vocab = Map::new();
        for (i, p) in pieces.iter().enumerate() {
            if ids[p.as_str()] == i {
                vocab.insert(p.clone(), json!(i));
            }
        }
        let merges: Vec<Value> = merges.into_iter().map(|(l, r, _)| json!([l, r])).collect();
        let added = |id: usize, content: &str| json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true});
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "\u{2581}"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}
            ]},
            "pre_tokenizer": null,
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [
                    {"SpecialToken": {"id": "<s>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}
                ],
                "pair": [
                    {"SpecialToken": {"id": "<s>", "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}}
                ],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            },
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]},
            "model": {
                "type": "BPE",
                "dropout": null,
                "unk_token": "<unk>",
                "continuing_subword_prefix": null,
                "end_of_word_suffix": null,
                "fuse_unk": true,
                "byte_fallback": true,
                "ignore_merges": false,
                "vocab": vocab,
                "merges": merges
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    fn workspace_root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// The data folder by spindle's convention: `$SPINDLE_DATA`, else `./data`, else
    /// `../shared/data` (relative to the workspace root).
    fn stories_dir() -> PathBuf {
        let root = workspace_root();
        // spindle's convention: an explicit $SPINDLE_DATA is the folder, never a fallback.
        let candidates: Vec<PathBuf> = match std::env::var_os("SPINDLE_DATA").filter(|v| !v.is_empty()) {
            Some(dir) => vec![PathBuf::from(dir)],
            None => vec![root.join("data"), root.join("../shared/data")],
        };
        candidates
            .iter()
            .map(|d| d.join("models/stories260K"))
            .find(|d| d.join("stories260K.bin").is_file())
            .unwrap_or_else(|| panic!("models/stories260K/stories260K.bin not found under any of {candidates:?}"))
    }

    fn reference() -> Value {
        let path = workspace_root().join("tests/golden/llama2c/encode_reference.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn ids(v: &Value) -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    }

    fn sample_text() -> String {
        std::fs::read_to_string(stories_dir().join("tinystories-sample.txt")).unwrap().trim().to_owned()
    }

    fn tokenizer() -> Llama2cTokenizer {
        read_tokenizer(&stories_dir().join("tok512.bin"), 512).unwrap()
    }

    fn raw_floats(path: &Path) -> Vec<f32> {
        let bytes = spindle_io::read_at_most(path, u64::MAX).unwrap();
        bytes[HEADER_BYTES..].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
    }

    #[test]
    fn stories260k_config_names_shapes_and_values() {
        let path = stories_dir().join("stories260K.bin");
        let ck = read_checkpoint(&path).unwrap();
        let c = &ck.config;
        assert_eq!(
            *c,
            Llama2cConfig {
                dim: 64,
                hidden_dim: 172,
                n_layers: 5,
                n_heads: 8,
                n_kv_heads: 4,
                vocab_size: 512,
                seq_len: 512,
                shared_classifier: true
            }
        );
        assert_eq!(ck.tensors.len(), 1 + 9 * 5 + 1, "shared classifier: no lm_head.weight");
        let shapes: HashMap<&str, &Vec<usize>> = ck.tensors.iter().map(|(n, _, s)| (n.as_str(), s)).collect();
        assert_eq!(shapes["model.embed_tokens.weight"], &vec![512, 64]);
        assert_eq!(shapes["model.norm.weight"], &vec![64]);
        assert!(!shapes.contains_key("lm_head.weight"));
        for i in 0..5 {
            let s = |n: &str| shapes[format!("model.layers.{i}.{n}.weight").as_str()].clone();
            assert_eq!(s("input_layernorm"), vec![64]);
            assert_eq!(s("post_attention_layernorm"), vec![64]);
            assert_eq!(s("self_attn.q_proj"), vec![64, 64]);
            assert_eq!(s("self_attn.k_proj"), vec![32, 64]);
            assert_eq!(s("self_attn.v_proj"), vec![32, 64]);
            assert_eq!(s("self_attn.o_proj"), vec![64, 64]);
            assert_eq!(s("mlp.gate_proj"), vec![172, 64]);
            assert_eq!(s("mlp.up_proj"), vec![172, 64]);
            assert_eq!(s("mlp.down_proj"), vec![64, 172]);
        }
        let names: Vec<&str> = ck.tensors.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            &names[..4],
            [
                "model.embed_tokens.weight",
                "model.layers.0.input_layernorm.weight",
                "model.layers.0.self_attn.q_proj.weight",
                "model.layers.0.self_attn.k_proj.weight"
            ]
        );
        assert_eq!(names[names.len() - 1], "model.norm.weight");
        for (n, v, s) in &ck.tensors {
            assert_eq!(v.len(), s.iter().product::<usize>(), "{n}");
        }

        // Values against the raw file, at run.c's offsets (in floats, after the header).
        let raw = raw_floats(&path);
        let get = |n: &str| &ck.tensors.iter().find(|(name, _, _)| name == n).unwrap().1;
        let (emb, rms, q, kv, o, hid) = (512 * 64, 5 * 64, 5 * 64 * 64, 5 * 32 * 64, 5 * 64 * 64, 5 * 172 * 64);
        assert_eq!(get("model.embed_tokens.weight")[..], raw[..emb]);
        assert_eq!(get("model.layers.1.input_layernorm.weight")[..], raw[emb + 64..emb + 128]);
        let wq = emb + rms;
        let wk = wq + q;
        let wv = wk + kv;
        let wo = wv + kv;
        let ffn_norm = wo + o;
        let w1 = ffn_norm + rms;
        let w2 = w1 + hid;
        let w3 = w2 + hid;
        let final_norm = w3 + hid;
        assert_eq!(get("model.layers.2.self_attn.v_proj.weight")[..], raw[wv + 2 * 32 * 64..wv + 3 * 32 * 64]);
        assert_eq!(get("model.layers.4.self_attn.o_proj.weight")[..], raw[wo + 4 * 4096..wo + 5 * 4096]);
        assert_eq!(get("model.layers.3.post_attention_layernorm.weight")[..], raw[ffn_norm + 3 * 64..ffn_norm + 4 * 64]);
        assert_eq!(get("model.layers.0.mlp.gate_proj.weight")[..], raw[w1..w1 + 172 * 64]);
        assert_eq!(get("model.layers.0.mlp.down_proj.weight")[..], raw[w2..w2 + 172 * 64]);
        assert_eq!(get("model.layers.0.mlp.up_proj.weight")[..], raw[w3..w3 + 172 * 64]);
        assert_eq!(get("model.norm.weight")[..], raw[final_norm..final_norm + 64]);
        // q_proj (head size 8, so half 4): HF row 1 of head 0 is Meta's row 2, row 4 is Meta's row 1.
        let q1 = get("model.layers.1.self_attn.q_proj.weight");
        let row = |base: usize, r: usize| &raw[base + r * 64..base + (r + 1) * 64];
        assert_eq!(q1[64..128], *row(wq + 4096, 2));
        assert_eq!(q1[4 * 64..5 * 64], *row(wq + 4096, 1));
        assert_eq!(q1[(8 + 5) * 64..(8 + 6) * 64], *row(wq + 4096, 8 + 3));
        let k0 = get("model.layers.0.self_attn.k_proj.weight");
        assert_eq!(k0[(3 * 8 + 7) * 64..(3 * 8 + 8) * 64], *row(wk, 3 * 8 + 7));
        assert_eq!(k0[(3 * 8 + 6) * 64..(3 * 8 + 7) * 64], *row(wk, 3 * 8 + 5));
    }

    /// llama2.c export.py's `permute_reverse`, literally, on tch tensors.
    fn permute_reverse(w: &[f32], n_heads: i64, dim1: i64, dim2: i64) -> Vec<f32> {
        let t = Tensor::from_slice(w).view([n_heads, 2, dim1 / n_heads / 2, dim2]).transpose(1, 2).reshape([dim1, dim2]);
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    /// HF convert_llama_weights_to_hf.py's `permute`, literally, on tch tensors.
    fn hf_permute(w: &[f32], n_heads: i64, dim1: i64, dim2: i64) -> Vec<f32> {
        let t = Tensor::from_slice(w).view([n_heads, dim1 / n_heads / 2, 2, dim2]).transpose(1, 2).reshape([dim1, dim2]);
        Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn permutation_is_hf_permute_and_inverts_export_py_permute_reverse() {
        // Two heads of size 4, one column: rows (0,1),(2,3) are Meta's RoPE pairs of head 0.
        let w: Vec<f32> = (0..8).map(|x| x as f32).collect();
        assert_eq!(permute_for_hf(&w, 2, 8, 1), [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        for (n_heads, dim1, dim2) in [(2usize, 8usize, 3usize), (4, 32, 5), (8, 64, 2), (4, 24, 7)] {
            let w: Vec<f32> = (0..dim1 * dim2).map(|x| x as f32 * 0.5 - 3.0).collect();
            let ours = permute_for_hf(&w, n_heads, dim1, dim2);
            let (h, d1, d2) = (n_heads as i64, dim1 as i64, dim2 as i64);
            assert_eq!(ours, hf_permute(&w, h, d1, d2), "HF permute, {n_heads} heads, {dim1}x{dim2}");
            assert_eq!(permute_reverse(&ours, h, d1, d2), w, "permute_reverse undoes it, {n_heads} heads");
            assert_eq!(permute_for_hf(&permute_reverse(&w, h, d1, d2), n_heads, dim1, dim2), w);
            assert_ne!(ours, w);
        }
    }

    #[test]
    fn encode_matches_run_c_reference() {
        let tok = tokenizer();
        let r = reference();
        assert_eq!(tok.vocab_size(), 512);
        assert_eq!(tok.encode("Once upon a time", true), [1, 403, 407, 261, 378]);
        assert_eq!(tok.encode("Once upon a time", true), ids(&r["once_upon_a_time_bos"]));
        assert_eq!(tok.encode("Once upon a time", false), ids(&r["once_upon_a_time"]));
        assert_eq!(tok.encode("", true), ids(&r["empty_bos"]));
        assert_eq!(tok.encode("", false), ids(&r["empty"]));
        assert_eq!(tok.encode(r["unicode_text"].as_str().unwrap(), true), ids(&r["unicode_bos"]));
        let sample = tok.encode(&sample_text(), true);
        let expected = ids(&r["sample_bos"]);
        assert!(sample.len() >= 512);
        assert_eq!(sample[..512], expected[..512]);
        assert_eq!(sample, expected);
        assert_eq!(sample[..20], [1, 403, 407, 261, 378, 383, 286, 261, 376, 268, 414, 422, 395, 368, 302, 426, 368, 302, 401, 396]);
    }

    #[test]
    fn decode_pieces_give_back_the_text() {
        let tok = tokenizer();
        for text in [sample_text(), reference()["unicode_text"].as_str().unwrap().to_owned()] {
            let ids = tok.encode(&text, true);
            let bytes: Vec<u8> = ids.windows(2).flat_map(|w| tok.decode_piece_bytes(w[0], w[1])).collect();
            assert_eq!(String::from_utf8(bytes).unwrap(), text);
        }
        assert_eq!(tok.decode_piece(1, 403), "Once");
        assert_eq!(tok.decode_piece(403, 403), " Once");
        assert_eq!(tok.decode_piece(0, 13), "\n");
        assert_eq!(tok.decode_piece(0, 9999), "");
    }

    #[test]
    fn tokenizer_json_is_the_committed_golden() {
        // tests/golden/llama2c/check_tokenizer_json.py checks, with HF `tokenizers`, that this file
        // encodes the reference texts to the reference ids. Set SPINDLE_WRITE_LLAMA2C_TOKENIZER_JSON
        // to rewrite it after a deliberate change.
        let json = tokenizer().to_tokenizer_json();
        let path = workspace_root().join("tests/golden/llama2c/tokenizer.json");
        if std::env::var_os("SPINDLE_WRITE_LLAMA2C_TOKENIZER_JSON").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap() + "\n").unwrap();
        }
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json, golden);
        let model = &json["model"];
        assert_eq!(model["vocab"].as_object().unwrap().len(), 512);
        assert_eq!(model["vocab"]["<s>"], 1);
        assert_eq!(model["vocab"]["\u{2581}t"], 259);
        assert_eq!(model["vocab"]["<0x0A>"], 13);
        // The first merges make the best-scored pieces: "▁t" (score -0) first.
        assert_eq!(model["merges"][0], json!(["\u{2581}", "t"]));
        assert_eq!(model["merges"][1], json!(["h", "e"]));
    }

    #[test]
    fn tokenizer_json_merges_follow_score_then_lengths_then_ids() {
        // A toy vocabulary written in llama2.c's tokenizer format.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok.bin");
        let mut pieces: Vec<(Vec<u8>, f32)> = vec![(b"<unk>".to_vec(), 0.0), (b"\n<s>\n".to_vec(), 0.0), (b"\n</s>\n".to_vec(), 0.0)];
        pieces.extend((0..256).map(|b| (format!("<0x{b:02X}>").into_bytes(), 0.0)));
        for (p, s) in [(" a", -1.0), ("ab", -2.0), ("abc", -3.0), ("bc", -4.0), (" ", -5.0), ("a", -6.0), ("b", -7.0), ("c", -8.0)] {
            pieces.push((p.as_bytes().to_vec(), s));
        }
        let mut bytes = 6u32.to_le_bytes().to_vec();
        for (p, s) in &pieces {
            bytes.extend(s.to_le_bytes());
            bytes.extend((p.len() as u32).to_le_bytes());
            bytes.extend(p);
        }
        std::fs::write(&path, &bytes).unwrap();
        let tok = read_tokenizer(&path, pieces.len()).unwrap();
        let merges = tok.to_tokenizer_json()["model"]["merges"].clone();
        // Merges come in the order of their merged piece's score; "abc" splits both as ("ab","c")
        // and ("a","bc"), both kept, ("ab","c") first (longer left half, and lower left id).
        assert_eq!(merges, json!([["\u{2581}", "a"], ["a", "b"], ["ab", "c"], ["a", "bc"], ["b", "c"]]));
        // run.c's greedy merge: " abc" -> [" ", "a", "b", "c"] -> " a" (-1) first, then "bc" (-4).
        let ids = tok.encode("abc", false);
        let pieces_out: Vec<&[u8]> = ids.iter().map(|&i| tok.piece(i).unwrap()).collect();
        assert_eq!(pieces_out, [b" a".as_slice(), b"bc".as_slice()]);
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn truncated_or_padded_checkpoints_are_size_errors() {
        let real = std::fs::read(stories_dir().join("stories260K.bin")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for cut in [28, 29, 1000, 4 * 32768 + 28, real.len() - 4 * 4096, real.len() - 1] {
            let p = write(dir.path(), "cut.bin", &real[..cut]);
            let err = read_checkpoint(&p).unwrap_err();
            assert!(matches!(err, Llama2cError::Size { expected: 1_056_540, actual, .. } if actual == cut as u64), "cut {cut}: {err}");
            let msg = err.to_string();
            assert!(msg.contains("cut.bin") && msg.contains("1056540") && msg.contains(&cut.to_string()), "{msg}");
        }
        let mut padded = real.clone();
        padded.extend([0u8; 4]);
        let err = read_checkpoint(&write(dir.path(), "padded.bin", &padded)).unwrap_err();
        assert!(matches!(err, Llama2cError::Size { actual: 1_056_544, .. }), "{err}");
        // An unshared classifier (negative vocab_size) needs 512 * 64 more floats.
        let mut unshared = real.clone();
        unshared[20..24].copy_from_slice(&(-512i32).to_le_bytes());
        let err = read_checkpoint(&write(dir.path(), "unshared.bin", &unshared)).unwrap_err();
        assert!(matches!(err, Llama2cError::Size { expected, .. } if expected == 1_056_540 + 4 * 512 * 64), "{err}");
        unshared.extend(std::iter::repeat_n(0u8, 4 * 512 * 64));
        let ck = read_checkpoint(&write(dir.path(), "unshared.bin", &unshared)).unwrap();
        assert!(!ck.config.shared_classifier);
        let (name, values, shape) = ck.tensors.last().unwrap();
        assert_eq!((name.as_str(), shape.as_slice()), ("lm_head.weight", [512, 64].as_slice()));
        assert!(values.iter().all(|&v| v == 0.0));
        for cut in [0, 3, 27] {
            let err = read_checkpoint(&write(dir.path(), "short.bin", &real[..cut])).unwrap_err();
            assert!(matches!(err, Llama2cError::Header { .. }), "cut {cut}: {err}");
            assert!(err.to_string().contains("short.bin"), "{err}");
        }
        let err = read_checkpoint(&dir.path().join("missing.bin")).unwrap_err();
        assert!(matches!(err, Llama2cError::Io { .. }) && err.to_string().contains("missing.bin"), "{err}");
    }

    #[test]
    fn implausible_headers_are_header_errors() {
        let real = std::fs::read(stories_dir().join("stories260K.bin")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cases: [(usize, i32, &str); 8] = [
            (0, 0, "dim is 0"),
            (1, -172, "hidden_dim is -172"),
            (2, 0, "n_layers is 0"),
            (3, 0, "n_heads is 0"),
            (3, 5, "n_heads 5 does not divide dim 64"),
            (4, 3, "n_kv_heads 3 does not divide n_heads 8"),
            (5, 0, "vocab_size is 0"),
            (6, -1, "seq_len is -1"),
        ];
        for (field, value, expected) in cases {
            let mut bytes = real.clone();
            bytes[4 * field..4 * field + 4].copy_from_slice(&value.to_le_bytes());
            let err = read_checkpoint(&write(dir.path(), "bad.bin", &bytes)).unwrap_err();
            assert!(matches!(err, Llama2cError::Header { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("bad.bin") && msg.contains(expected), "{msg}");
        }
        // Head size 64/16 = 4 is fine for the header; 64/32 = 2 too; 48/16 = 3 is odd.
        let mut bytes = real.clone();
        bytes[0..4].copy_from_slice(&48i32.to_le_bytes());
        bytes[12..16].copy_from_slice(&16i32.to_le_bytes());
        bytes[16..20].copy_from_slice(&16i32.to_le_bytes());
        let err = read_checkpoint(&write(dir.path(), "odd.bin", &bytes)).unwrap_err();
        assert!(err.to_string().contains("head size dim/n_heads = 3 is odd"), "{err}");
        // Huge dimensions overflow no arithmetic: they are a size error.
        let mut bytes = real.clone();
        for f in 0..7 {
            bytes[4 * f..4 * f + 4].copy_from_slice(&i32::MAX.to_le_bytes());
        }
        bytes[12..16].copy_from_slice(&1i32.to_le_bytes());
        bytes[16..20].copy_from_slice(&1i32.to_le_bytes());
        let err = read_checkpoint(&write(dir.path(), "huge.bin", &bytes)).unwrap_err();
        assert!(matches!(err, Llama2cError::Header { .. } | Llama2cError::Size { .. }), "{err}");
        // A version-1/2 export (magic "ak42") is named as such.
        let mut v1 = 0x616b_3432u32.to_le_bytes().to_vec();
        v1.extend(1i32.to_le_bytes());
        v1.extend(&real[..256]);
        let err = read_checkpoint(&write(dir.path(), "v1.bin", &v1)).unwrap_err();
        assert!(err.to_string().contains("version-1 llama2.c export"), "{err}");
        // NaN weights are refused, naming the tensor.
        let mut nan = real.clone();
        nan[28..32].copy_from_slice(&f32::NAN.to_le_bytes());
        let err = read_checkpoint(&write(dir.path(), "nan.bin", &nan)).unwrap_err();
        assert!(matches!(&err, Llama2cError::NotFinite { name, .. } if name == "model.embed_tokens.weight"), "{err}");
    }

    #[test]
    fn malformed_tokenizers_are_errors() {
        let real = std::fs::read(stories_dir().join("tok512.bin")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for cut in [0, 3, 4, 11, 12, 13, 1000, real.len() - 1] {
            let p = write(dir.path(), "tok.bin", &real[..cut]);
            let err = read_tokenizer(&p, 512).unwrap_err();
            assert!(matches!(err, Llama2cError::TokenizerTruncated { .. }), "cut {cut}: {err}");
            assert!(err.to_string().contains("tok.bin"), "{err}");
        }
        let p = write(dir.path(), "tok.bin", &real);
        let err = read_tokenizer(&p, 513).unwrap_err();
        assert!(err.to_string().contains("piece 512 of 513"), "{err}");
        assert!(matches!(read_tokenizer(&p, 100).unwrap_err(), Llama2cError::Tokenizer { .. }));
        // A length field that points far past the end.
        let mut bad = real.clone();
        bad[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_tokenizer(&write(dir.path(), "len.bin", &bad), 512).unwrap_err();
        assert!(matches!(err, Llama2cError::TokenizerTruncated { .. }) && err.to_string().contains("piece 0 of 512"), "{err}");
        let err = read_tokenizer(&dir.path().join("none.bin"), 512).unwrap_err();
        assert!(matches!(err, Llama2cError::Io { .. }), "{err}");
    }
}
