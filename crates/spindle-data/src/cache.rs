//! The token cache: a tokenized corpus stored on disk under a key made of what determines the ids
//! (the tokenizer file's hash, the source file's hash and the recipe that built the text), so
//! re-running an evaluation never re-tokenizes. Each entry carries its own SHA-256; a damaged,
//! truncated or foreign entry is detected, reported and rebuilt — never used.
//!
//! Entry layout (little-endian): magic `SPINDLETOK1\0`, u64 document count, u64 total ids, one u64
//! length per document, the u32 ids, then the SHA-256 of everything before it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::DataError;

const MAGIC: &[u8; 12] = b"SPINDLETOK1\0";

/// How a cache lookup was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    /// Not in the cache; tokenized and stored.
    Built,
    /// In the cache but unusable (the reason says why); tokenized again and replaced.
    Rebuilt {
        reason: String,
    },
}

/// A folder of cached token streams.
#[derive(Debug, Clone)]
pub struct TokenCache {
    dir: PathBuf,
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's bytes, hex.
pub fn file_sha256(path: &Path) -> Result<String, DataError> {
    let io = |io| DataError::Io { path: path.to_path_buf(), io };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn encode(docs: &[Vec<u32>]) -> Vec<u8> {
    let total: usize = docs.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(12 + 16 + 8 * docs.len() + 4 * total + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(docs.len() as u64).to_le_bytes());
    out.extend_from_slice(&(total as u64).to_le_bytes());
    for d in docs {
        out.extend_from_slice(&(d.len() as u64).to_le_bytes());
    }
    for d in docs {
        for id in d {
            out.extend_from_slice(&id.to_le_bytes());
        }
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Parses an entry, or says why it cannot be used.
fn decode(bytes: &[u8]) -> Result<Vec<Vec<u32>>, String> {
    if bytes.len() < 12 + 16 + 32 || &bytes[..12] != MAGIC {
        return Err("not a spindle token cache entry".into());
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch (damaged or truncated)".into());
    }
    let u64_at = |at: usize| -> Result<u64, String> {
        body.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).ok_or_else(|| "truncated header".to_string())
    };
    let n_docs = u64_at(12)? as usize;
    let total = u64_at(20)? as usize;
    let lengths_end = 28usize.checked_add(n_docs.checked_mul(8).ok_or("bad document count")?).ok_or("bad document count")?;
    if body.len() != lengths_end + total.checked_mul(4).ok_or("bad id count")? {
        return Err("size disagrees with the header".into());
    }
    let mut docs = Vec::with_capacity(n_docs);
    let mut at = lengths_end;
    let mut sum = 0usize;
    for d in 0..n_docs {
        let len = u64_at(28 + 8 * d)? as usize;
        sum = sum.checked_add(len).ok_or("bad lengths")?;
        if sum > total {
            return Err("document lengths exceed the id count".into());
        }
        let ids = body[at..at + 4 * len].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        docs.push(ids);
        at += 4 * len;
    }
    if sum != total {
        return Err("document lengths do not add up to the id count".into());
    }
    Ok(docs)
}

impl TokenCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: PathBuf) -> TokenCache {
        TokenCache { dir }
    }

    /// The key of a tokenized corpus: what tokenizer, which source file, which recipe (how the
    /// text was built from the file, e.g. `wikitext2:test:join-nn`).
    pub fn key(tokenizer: &Path, source: &Path, recipe: &str) -> Result<String, DataError> {
        let mut h = Sha256::new();
        h.update(file_sha256(tokenizer)?.as_bytes());
        h.update(b"\0");
        h.update(file_sha256(source)?.as_bytes());
        h.update(b"\0");
        h.update(recipe.as_bytes());
        Ok(hex(&h.finalize()))
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.tokens"))
    }

    /// The cached documents for `key`, or `build()`'s, stored for next time.
    pub fn get_or_build(
        &self,
        key: &str,
        build: &mut dyn FnMut() -> Result<Vec<Vec<u32>>, DataError>,
    ) -> Result<(Vec<Vec<u32>>, CacheOutcome), DataError> {
        let path = self.path(key);
        let outcome = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes) {
                Ok(docs) => return Ok((docs, CacheOutcome::Hit)),
                Err(reason) => {
                    tracing::warn!(entry = %path.display(), %reason, "token cache entry unusable; rebuilding");
                    CacheOutcome::Rebuilt { reason }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheOutcome::Built,
            Err(io) => return Err(DataError::Io { path, io }),
        };
        let docs = build()?;
        let io = |io| DataError::Io { path: self.dir.clone(), io };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        tmp.write_all(&encode(&docs)).map_err(io)?;
        tmp.persist(&path).map_err(|e| DataError::Io { path: path.clone(), io: e.error })?;
        Ok((docs, outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_once_then_hits() {
        let t = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(t.path().join("tokens"));
        let docs = vec![vec![1, 2, 3], vec![], vec![u32::MAX]];
        let mut builds = 0;
        let mut build = || {
            builds += 1;
            Ok(docs.clone())
        };
        assert_eq!(cache.get_or_build("k", &mut build).unwrap(), (docs.clone(), CacheOutcome::Built));
        assert_eq!(cache.get_or_build("k", &mut build).unwrap(), (docs.clone(), CacheOutcome::Hit));
        assert_eq!(builds, 1);
    }

    #[test]
    fn damaged_entries_are_detected_and_rebuilt() {
        let t = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(t.path().to_path_buf());
        let docs = vec![vec![5, 6, 7, 8]];
        let mut build = || Ok(docs.clone());
        cache.get_or_build("k", &mut build).unwrap();
        let path = t.path().join("k.tokens");
        let good = std::fs::read(&path).unwrap();
        // A flipped bit in an id.
        let mut bad = good.clone();
        bad[40] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let (got, outcome) = cache.get_or_build("k", &mut build).unwrap();
        assert_eq!((got, outcome), (docs.clone(), CacheOutcome::Rebuilt { reason: "checksum mismatch (damaged or truncated)".into() }));
        assert_eq!(std::fs::read(&path).unwrap(), good);
        // A truncated entry, and a foreign file.
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        assert!(matches!(cache.get_or_build("k", &mut build).unwrap().1, CacheOutcome::Rebuilt { .. }));
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(
            cache.get_or_build("k", &mut build).unwrap().1,
            CacheOutcome::Rebuilt { reason: "not a spindle token cache entry".into() }
        );
    }

    #[test]
    fn keys_change_with_tokenizer_source_and_recipe() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::write(&a, "tokenizer").unwrap();
        std::fs::write(&b, "text").unwrap();
        let k = TokenCache::key(&a, &b, "r").unwrap();
        assert_eq!(k, TokenCache::key(&a, &b, "r").unwrap());
        assert_ne!(k, TokenCache::key(&b, &a, "r").unwrap());
        assert_ne!(k, TokenCache::key(&a, &b, "r2").unwrap());
        std::fs::write(&b, "text!").unwrap();
        assert_ne!(k, TokenCache::key(&a, &b, "r").unwrap());
    }
}
