//! `tokenizer.json` for a GGUF whose vocabulary is SentencePiece-style (`tokenizer.ggml.model =
//! "llama"`: tokens, scores and token types, no merges), built as transformers 5.24 builds it
//! from the same file, so that the converted directory tokenizes as `AutoTokenizer` with
//! `gguf_file=` does. `tests/golden/gguf/SPM.md` describes that behaviour with file and line;
//! the sections cited below are its sections.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// Which of transformers' three SentencePiece builders a GGUF architecture gets (SPM.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpmFlavour {
    /// `sentencepiece_tokenizer` (LlamaTokenizer): llama, and Mixtral stored as llama.
    Llama,
    /// `gemma_tokenizer` (GemmaTokenizer): gemma2, gemma3.
    Gemma,
    /// `phi3_tokenizer`: phi3.
    Phi3,
}

/// What the GGUF metadata says about the vocabulary.
pub(crate) struct SpmVocab<'a> {
    pub tokens: &'a [String],
    /// `tokenizer.ggml.scores`; only the llama and phi3 flavours read them.
    pub scores: &'a [f64],
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub types: &'a [u64],
    pub bos: Option<usize>,
    pub eos: Option<usize>,
    pub unk: Option<usize>,
    pub pad: Option<usize>,
    pub add_bos: bool,
    pub add_eos: bool,
}

/// Python's `str.isspace` on one character: Unicode White_Space plus the four ASCII separators
/// U+001C..U+001F that Python counts as whitespace.
fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Gemma GGUFs store the runs of spaces (user-defined tokens) with real spaces; transformers
/// respells every token that contains a space and is only whitespace as that many `▁` (SPM.md §2).
fn gemma_respell(token: &str) -> String {
    if token.contains(' ') && token.chars().all(python_isspace) { "\u{2581}".repeat(token.chars().count()) } else { token.to_owned() }
}

/// transformers' `generate_merges(vocab, vocab_scores)` (SPM.md §2): every split of every piece
/// into two pieces of the vocabulary is a merge ranked by the piece's score (highest first),
/// then the longer left part, then the longer right part; ties keep the order of the pieces,
/// and within a piece the order of the parts' ids.
fn generate_merges(vocab: &HashMap<&str, usize>, scores: &[(&str, f64)]) -> Vec<(String, String)> {
    struct Candidate<'a> {
        left: &'a str,
        right: &'a str,
        score: f64,
        left_len: usize,
        right_len: usize,
    }
    let mut all: Vec<Candidate> = Vec::new();
    for &(piece, score) in scores {
        let start = all.len();
        for (k, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(k);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                all.push(Candidate { left, right, score, left_len: left.chars().count(), right_len: right.chars().count() });
            }
        }
        all[start..].sort_by_key(|c| (vocab[c.left], vocab[c.right]));
    }
    // Descending and stable, as Python's `sorted(..., reverse=True)`; -0.0 equals 0.0 there too
    // (the scores are checked to be numbers before).
    all.sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_len.cmp(&a.left_len))
            .then(b.right_len.cmp(&a.right_len))
    });
    all.into_iter().map(|c| (c.left.to_owned(), c.right.to_owned())).collect()
}

fn added_token(id: usize, content: &str, special: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

/// `tokenizer.json` and `tokenizer_config.json` for `vocab` as transformers' `flavour` builder
/// makes them. The scores must be numbers (checked by the caller).
pub(crate) fn spm_tokenizer(flavour: SpmFlavour, v: &SpmVocab) -> (Value, Value) {
    let spelled: Vec<String> =
        if flavour == SpmFlavour::Gemma { v.tokens.iter().map(|t| gemma_respell(t)).collect() } else { v.tokens.to_vec() };
    // `{token: id}`: a repeated token keeps its last id.
    let mut vocab: HashMap<&str, usize> = HashMap::new();
    for (id, t) in spelled.iter().enumerate() {
        vocab.insert(t, id);
    }
    // `{token: score}`: a repeated token keeps its first position and its last score. Gemma
    // ranks by file order (score = -index), the others by the file's scores.
    let mut scores: Vec<(&str, f64)> = Vec::new();
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (id, t) in spelled.iter().enumerate() {
        let score = if flavour == SpmFlavour::Gemma { -(id as f64) } else { v.scores.get(id).copied().unwrap_or(0.0) };
        match position.get(t.as_str()) {
            Some(&p) => scores[p].1 = score,
            None => {
                position.insert(t, scores.len());
                scores.push((t, score));
            }
        }
    }
    let merges: Vec<Value> = generate_merges(&vocab, &scores).into_iter().map(|(l, r)| json!([l, r])).collect();

    let name = |id: Option<usize>| id.and_then(|i| v.tokens.get(i)).cloned();
    let (bos, eos, unk, pad) = (name(v.bos), name(v.eos), name(v.unk), name(v.pad));
    // Added tokens (SPM.md §3): control tokens as special; user-defined ones (not special) only
    // where their spelling is a key of the vocabulary; then every named special token, with a
    // new id past the end where the vocabulary lacks it (GemmaTokenizer's `<mask>`).
    let mut added: Vec<(usize, String, bool)> = Vec::new();
    for (id, (t, ty)) in v.tokens.iter().zip(v.types).enumerate() {
        match ty {
            3 => added.push((vocab.get(t.as_str()).copied().unwrap_or(id), t.clone(), true)),
            4 if vocab.contains_key(t.as_str()) => added.push((vocab[t.as_str()], t.clone(), false)),
            _ => {}
        }
    }
    let mut named: Vec<String> = [&bos, &eos, &unk, &pad].into_iter().flatten().cloned().collect();
    if flavour == SpmFlavour::Gemma {
        named.push("<mask>".to_owned());
    }
    // Every vocabulary id is a position in the token list: new ids start past its end.
    let mut next = spelled.len();
    for t in named {
        if let Some(a) = added.iter_mut().find(|a| a.1 == t) {
            a.2 = true;
        } else if let Some(&id) = vocab.get(t.as_str()) {
            added.push((id, t, true));
        } else {
            added.push((next, t, true));
            next += 1;
        }
    }
    added.sort_by_key(|a| a.0);
    let added: Vec<Value> = added.iter().map(|(id, t, special)| added_token(*id, t, *special)).collect();

    // BOS/EOS (SPM.md §4): a template with the tokens the file asks for.
    let bos_used = bos.clone().filter(|_| v.add_bos).zip(v.bos);
    let eos_used = eos.clone().filter(|_| v.add_eos).zip(v.eos);
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut special_tokens = Map::new();
    for (seq, type_id) in [("A", 0), ("B", 1)] {
        let target = if seq == "A" { &mut single } else { &mut pair };
        if let Some((t, _)) = &bos_used {
            target.push(json!({"SpecialToken": {"id": t, "type_id": type_id}}));
        }
        target.push(json!({"Sequence": {"id": seq, "type_id": type_id}}));
        if let Some((t, _)) = &eos_used {
            target.push(json!({"SpecialToken": {"id": t, "type_id": type_id}}));
        }
    }
    let pair: Vec<Value> = single.iter().cloned().chain(pair).collect();
    for (t, id) in bos_used.iter().chain(eos_used.iter()) {
        special_tokens.insert(t.clone(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    let post_processor = json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": special_tokens});

    let metaspace = json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "});
    let (normalizer, pre_tokenizer, decoder, unk_token) = match flavour {
        SpmFlavour::Llama => (
            Value::Null,
            json!({"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false}),
            json!({"type": "Sequence", "decoders": [metaspace, {"type": "ByteFallback"}, {"type": "Fuse"},
                   {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
            Value::Null,
        ),
        SpmFlavour::Phi3 => (
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"},
                   {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]}),
            Value::Null,
            json!({"type": "Sequence", "decoders": [metaspace, {"type": "ByteFallback"}, {"type": "Fuse"},
                   {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}),
            Value::Null,
        ),
        SpmFlavour::Gemma => (
            json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}),
            json!({"type": "Split", "pattern": {"String": " "}, "behavior": "MergedWithPrevious", "invert": false}),
            json!({"type": "Sequence", "decoders": [metaspace, {"type": "ByteFallback"}, {"type": "Fuse"}]}),
            json!("<unk>"),
        ),
    };
    let vocab_json: Map<String, Value> = vocab.iter().map(|(t, id)| ((*t).to_owned(), json!(id))).collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": decoder,
        "model": {"type": "BPE", "dropout": null, "unk_token": unk_token, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab_json, "merges": merges},
    });
    let config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
        "pad_token": pad,
        "add_bos_token": v.add_bos && bos.is_some(),
        "add_eos_token": v.add_eos && eos.is_some(),
        "clean_up_tokenization_spaces": false,
    });
    (tokenizer, config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merges_of(tokens: &[&str], scores: &[f64]) -> Vec<(String, String)> {
        let vocab: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        let scores: Vec<(&str, f64)> = tokens.iter().copied().zip(scores.iter().copied()).collect();
        generate_merges(&vocab, &scores)
    }

    /// A piece with several splits gives one merge per split, the longer left part first; a
    /// higher score ranks first; -0.0 ties with 0.0 and keeps file order.
    #[test]
    fn merges_rank_by_score_then_longer_left_then_longer_right() {
        let got = merges_of(&["a", "b", "c", "ab", "bc", "abc", "ca"], &[0.0, 0.0, 0.0, -1.0, -0.0, -2.0, 0.0]);
        let want = [("b", "c"), ("c", "a"), ("a", "b"), ("ab", "c"), ("a", "bc")];
        assert_eq!(got, want.map(|(l, r)| (l.to_owned(), r.to_owned())));
    }

    #[test]
    fn only_whitespace_tokens_with_a_space_are_respelled_for_gemma() {
        assert_eq!(gemma_respell("  "), "\u{2581}\u{2581}");
        assert_eq!(gemma_respell(" \t"), "\u{2581}\u{2581}");
        assert_eq!(gemma_respell("\n"), "\n");
        assert_eq!(gemma_respell(" a"), " a");
    }
}
