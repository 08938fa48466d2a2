//! Tokenization through the `tokenizers` crate: a Hugging Face `tokenizer.json` gives the same ids
//! here as Hugging Face's fast tokenizer in Python, including its post-processor (which decides
//! whether a BOS is added: OPT adds `</s>`, Llama adds `<s>`, Qwen2 and SmolLM2 add none; spindle
//! never hard-codes one).

use std::path::{Path, PathBuf};

use crate::DataError;

/// A loaded `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Tokenizer, DataError> {
        let text = spindle_io::read_to_string(path).map_err(|io| DataError::Io { path: path.to_path_buf(), io })?;
        Self::from_json(path, &text)
    }

    /// Parses `tokenizer.json` text; `path` names it in messages.
    pub fn from_json(path: &Path, json: &str) -> Result<Tokenizer, DataError> {
        let inner = <tokenizers::Tokenizer as std::str::FromStr>::from_str(json)
            .map_err(|e: tokenizers::Error| DataError::Tokenizer { path: path.to_path_buf(), problem: e.to_string() })?;
        Ok(Tokenizer { inner, path: path.to_path_buf() })
    }

    /// The file this tokenizer came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token ids of `text`; with `add_special_tokens`, the post-processor's BOS/EOS are added as
    /// the tokenizer declares them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, DataError> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| DataError::Tokenizer { path: self.path.clone(), problem: e.to_string() })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, DataError> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| DataError::Tokenizer { path: self.path.clone(), problem: e.to_string() })
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal byte-level BPE with digits split one by one (SmolLM2's pipeline).
    const TINY: &str = r#"{
      "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
      "normalizer": null,
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
          {"type": "Digits", "individual_digits": true},
          {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
      "post_processor": null,
      "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
      "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
        "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
        "vocab": {"a": 0, "b": 1, "ab": 2, "1": 3, "2": 4, "12": 5, "Ġ": 6, "Ġab": 7},
        "merges": [["a", "b"], ["1", "2"], ["Ġ", "ab"]]}
    }"#;

    #[test]
    fn encodes_with_the_declared_pipeline() {
        let t = Tokenizer::from_json(Path::new("tiny.json"), TINY).unwrap();
        // "12" would merge, but the Digits pre-tokenizer splits it first.
        assert_eq!(t.encode("ab 12", false).unwrap(), [2, 6, 3, 4]);
        assert_eq!(t.encode("ab ab", true).unwrap(), [2, 7]);
        assert_eq!(t.decode(&[2, 7], false).unwrap(), "ab ab");
        assert_eq!(t.vocab_size(), 8);
        assert_eq!(t.token_to_id("Ġab"), Some(7));
    }

    #[test]
    fn a_broken_tokenizer_file_is_named() {
        let err = Tokenizer::from_json(Path::new("m/tokenizer.json"), "{}").unwrap_err();
        assert!(err.to_string().starts_with("m/tokenizer.json: not a usable tokenizer: "), "{err}");
    }
}
