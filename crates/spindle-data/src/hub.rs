//! The Hugging Face hub as a source of the same files: a dataset file is downloaded and placed
//! into a data folder at `<repo name>/<path in repo>` — the layout of `../shared/data`, which
//! mirrors the hub's dataset repositories — so every reader of this crate serves a download and
//! the offline folder alike. Network access lives only here, behind the `hub` feature.

use std::path::{Path, PathBuf};

use crate::DataError;

/// Where `file` of dataset `repo` (`owner/name` or `name`) lives inside a data folder `into`:
/// `into/<name>/<file>`. Paths that would leave `into` are refused.
pub fn local_path(into: &Path, repo: &str, file: &str) -> Result<PathBuf, DataError> {
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let bad = |what: &str| DataError::Hub { repo: repo.to_owned(), file: file.to_owned(), problem: what.to_owned() };
    if name.is_empty() || name == ".." || name == "." {
        return Err(bad("not a dataset repository name"));
    }
    let rel = Path::new(file);
    if file.is_empty() || rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(bad("the file must be a relative path inside the repository"));
    }
    Ok(into.join(name).join(rel))
}

/// Downloads `file` of dataset `repo` at `revision` through hf-hub's cache (`HF_HOME`,
/// `HF_ENDPOINT`, and `HF_TOKEN` for a gated repository); the path of the cached file.
#[cfg(feature = "hub")]
fn download(repo: &str, revision: &str, file: &str) -> Result<PathBuf, DataError> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    let err = |problem: String| DataError::Hub { repo: repo.to_owned(), file: file.to_owned(), problem };
    // No progress bar from this crate (ARCHITECTURE.md); the download is logged.
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| err(e.to_string()))?;
    let handle = api.repo(Repo::with_revision(repo.to_owned(), RepoType::Dataset, revision.to_owned()));
    tracing::info!(repo, file, "fetching");
    // hf-hub 0.4 panics on some malformed answers (a redirect without a Location).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.get(file)))
        .map_err(|_| err("the hub's answer broke the download client".into()))?
        .map_err(|e| err(e.to_string()))
}

/// Checks a downloaded file against the checksum the hub sent as its ETag, which hf-hub names
/// the cached blob by: the SHA-256 of a file stored in LFS, the git blob id (SHA-1 of
/// `blob <len>\0` and the bytes) of one that is not. Anything else cannot be verified and is
/// refused.
#[cfg(feature = "hub")]
fn verify_etag(downloaded: &Path, repo: &str, file: &str) -> Result<(), DataError> {
    use sha1::Digest as _;
    let err = |problem: String| DataError::Hub { repo: repo.to_owned(), file: file.to_owned(), problem };
    let blob = std::fs::canonicalize(downloaded).map_err(|io| DataError::Io { path: downloaded.to_path_buf(), io })?;
    let etag = blob.file_name().and_then(|n| n.to_str()).unwrap_or("").to_owned();
    let hex_of = |n: usize| etag.len() == n && etag.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let actual = if hex_of(64) {
        crate::cache::file_sha256(&blob)?
    } else if hex_of(40) {
        let bytes = std::fs::read(&blob).map_err(|io| DataError::Io { path: blob.clone(), io })?;
        let mut h = sha1::Sha1::new();
        h.update(format!("blob {}\0", bytes.len()).as_bytes());
        h.update(&bytes);
        crate::cache::hex(&h.finalize())
    } else {
        return Err(err(format!("the hub's ETag {etag:?} is neither a SHA-256 nor a git blob id, so the file cannot be verified")));
    };
    if actual != etag {
        return Err(err(format!("the downloaded bytes hash to {actual}, not the hub's ETag {etag}: the file is not used")));
    }
    Ok(())
}

/// Copies `from` to `target` atomically (a temporary file beside it, renamed).
#[cfg(feature = "hub")]
fn place(from: &Path, target: &Path) -> Result<(), DataError> {
    let parent = spindle_io::parent_dir(target);
    std::fs::create_dir_all(&parent).map_err(|io| DataError::Io { path: parent.to_path_buf(), io })?;
    let partial = parent.join(format!(".{}.partial", target.file_name().and_then(|n| n.to_str()).unwrap_or("download")));
    std::fs::copy(from, &partial).map_err(|io| DataError::Io { path: partial.clone(), io })?;
    std::fs::rename(&partial, target).map_err(|io| DataError::Io { path: target.to_path_buf(), io })?;
    // A download is worth seeing: where the data now is.
    tracing::warn!("fetched {} (checksum verified) into {}", from.display(), target.display());
    Ok(())
}

/// Downloads `file` of dataset `repo` at `revision`, checks it against the hub's own checksum
/// (its ETag), and places it at [`local_path`]; returns that path. An existing file there is kept.
#[cfg(feature = "hub")]
pub fn fetch(repo: &str, revision: &str, file: &str, into: &Path) -> Result<PathBuf, DataError> {
    let target = local_path(into, repo, file)?;
    if target.is_file() {
        return Ok(target);
    }
    let downloaded = download(repo, revision, file)?;
    verify_etag(&downloaded, repo, file)?;
    place(&downloaded, &target)?;
    Ok(target)
}

/// Downloads `h`, checks its SHA-256 against the recorded one (`eval/data_sources.toml`) and
/// places it at `target`. A file with another digest is not placed.
#[cfg(feature = "hub")]
pub fn fetch_verified(h: &crate::sources::HubFile, target: &Path) -> Result<(), DataError> {
    let downloaded = download(&h.repo, &h.revision, &h.file)?;
    let digest = crate::cache::file_sha256(&downloaded)?;
    if digest != h.sha256 {
        return Err(DataError::Hub {
            repo: h.repo.clone(),
            file: h.file.clone(),
            problem: format!("downloaded SHA-256 {digest}, not the recorded {} (eval/data_sources.toml): the file is not used", h.sha256),
        });
    }
    place(&downloaded, target)
}

/// Without the `hub` feature nothing is downloaded.
#[cfg(not(feature = "hub"))]
pub fn fetch_verified(h: &crate::sources::HubFile, _target: &Path) -> Result<(), DataError> {
    Err(DataError::Hub { repo: h.repo.clone(), file: h.file.clone(), problem: "this build has no hub feature (network)".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hub's ETag is the SHA-256 of an LFS file and the git blob id of any other; a download
    /// is checked against whichever it is, and an ETag that is neither is not trusted.
    #[cfg(feature = "hub")]
    #[test]
    fn downloads_are_checked_against_the_hubs_etag() {
        let t = tempfile::tempdir().unwrap();
        let blob = |etag: &str| {
            let p = t.path().join(etag);
            std::fs::write(&p, "hello\n").unwrap();
            p
        };
        // `git hash-object` and `sha256sum` of "hello\n".
        assert!(verify_etag(&blob("ce013625030ba8dba906f756967f9e9ca394464a"), "r", "f").is_ok());
        assert!(verify_etag(&blob("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"), "r", "f").is_ok());
        let err = verify_etag(&blob(&"0".repeat(40)), "r", "f").unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "hub dataset r, file f: the downloaded bytes hash to ce013625030ba8dba906f756967f9e9ca394464a, not the hub's ETag {}: the file is not used",
                "0".repeat(40)
            )
        );
        let err = verify_etag(&blob("W-abc"), "r", "f").unwrap_err().to_string();
        assert_eq!(
            err,
            "hub dataset r, file f: the hub's ETag \"W-abc\" is neither a SHA-256 nor a git blob id, so the file cannot be verified"
        );
    }

    #[test]
    fn hub_files_land_where_the_offline_folder_has_them() {
        let into = Path::new("/data");
        assert_eq!(
            local_path(into, "Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet").unwrap(),
            Path::new("/data/wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet")
        );
        assert_eq!(
            local_path(into, "piqa", "validation-00000-of-00001.parquet").unwrap(),
            Path::new("/data/piqa/validation-00000-of-00001.parquet")
        );
        let err = local_path(into, "x/wikitext", "../../etc/passwd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "hub dataset x/wikitext, file ../../etc/passwd: the file must be a relative path inside the repository"
        );
        assert!(local_path(into, "x/..", "a").is_err());
    }
}
