//! Where each file of the data folder comes from online (`eval/data_sources.toml`, data, not
//! code): a dataset repository, revision, path and the SHA-256 a download must have, or the reason
//! a file cannot be fetched (a re-packaging no repository holds). [`crate::DataDir::file`] reads
//! it when a file is missing.

use std::sync::OnceLock;

use serde::Deserialize;

/// A file of a hub dataset repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    pub repo: String,
    pub revision: String,
    pub file: String,
    /// Lower-case hex; a download with another digest is refused.
    pub sha256: String,
}

/// Where a data-folder file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Hub(HubFile),
    /// No repository holds this file; why.
    Unavailable(String),
}

/// One entry: the file's path inside the data folder and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    pub path: String,
    pub origin: Origin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    repo: Option<String>,
    revision: Option<String>,
    file: Option<String>,
    sha256: Option<String>,
    unavailable: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSources {
    file: Vec<RawFile>,
}

const SOURCES: &str = include_str!("../../../eval/data_sources.toml");

/// The table, parsed and checked (a malformed entry is a build-time mistake, caught by the tests;
/// here it is an error message naming the entry).
fn parse(text: &str) -> Result<Vec<DataSource>, String> {
    let raw: RawSources = toml::from_str(text).map_err(|e| format!("eval/data_sources.toml: {e}"))?;
    raw.file
        .into_iter()
        .map(|f| {
            let bad = |what: &str| format!("eval/data_sources.toml: {}: {what}", f.path);
            let origin = match (f.repo, f.revision, f.file, f.sha256, f.unavailable) {
                (Some(repo), Some(revision), Some(file), Some(sha256), None) => {
                    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                        return Err(bad("sha256 must be 64 lower-case hex digits"));
                    }
                    Origin::Hub(HubFile { repo, revision, file, sha256 })
                }
                (None, None, None, None, Some(reason)) => Origin::Unavailable(reason),
                _ => return Err(bad("give either repo, revision, file and sha256, or unavailable")),
            };
            Ok(DataSource { path: f.path, origin })
        })
        .collect()
}

/// Every entry of `eval/data_sources.toml`.
pub fn sources() -> &'static [DataSource] {
    static PARSED: OnceLock<Vec<DataSource>> = OnceLock::new();
    // The table is compiled in and parsed by a test; were it ever broken, nothing is fetched and
    // each missing file is reported by its reader, never read from a wrong source.
    PARSED.get_or_init(|| {
        parse(SOURCES).unwrap_or_else(|e| {
            tracing::error!("{e}; no data file will be fetched");
            Vec::new()
        })
    })
}

/// The entry of a data-folder path.
pub fn source_of(path: &str) -> Option<&'static DataSource> {
    sources().iter().find(|s| s.path == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file a named corpus or task reads has an entry, and the table parses.
    #[test]
    fn every_named_file_has_a_source() {
        assert!(parse(SOURCES).is_ok(), "{:?}", parse(SOURCES).err());
        let mut named: Vec<&str> = crate::tasks::Task::ALL.iter().map(|t| t.relative_path()).collect();
        named.extend(crate::corpus::NAMED_FILES);
        for path in named {
            assert!(source_of(path).is_some(), "{path} has no entry in eval/data_sources.toml");
        }
        let err = parse("[[file]]\npath = \"a\"\nrepo = \"r\"\nunavailable = \"x\"\n").unwrap_err();
        assert_eq!(err, "eval/data_sources.toml: a: give either repo, revision, file and sha256, or unavailable");
    }

    /// The recorded digests are the offline folder's own (its `SHA256SUMS`).
    #[test]
    fn the_recorded_digests_are_the_offline_folders() {
        let dir = crate::DataDir::resolve_from(None, std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").as_path()).unwrap();
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        let listed = crate::parse_sums(&dir.join("SHA256SUMS"), &sums).unwrap();
        let mut fetchable = 0;
        for s in sources() {
            let (digest, _) = listed.iter().find(|(_, p)| p.to_str() == Some(s.path.as_str())).unwrap_or_else(|| panic!("{}", s.path));
            if let Origin::Hub(h) = &s.origin {
                assert_eq!(&h.sha256, digest, "{}", s.path);
                fetchable += 1;
            }
        }
        assert_eq!(fetchable, 6);
    }
}
