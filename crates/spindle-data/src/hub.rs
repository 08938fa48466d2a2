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

/// Downloads `file` of dataset `repo` at `revision` (through hf-hub's own cache) and places it
/// at [`local_path`]; returns that path. An existing file there is kept.
#[cfg(feature = "hub")]
pub fn fetch(repo: &str, revision: &str, file: &str, into: &Path) -> Result<PathBuf, DataError> {
    use hf_hub::{Repo, RepoType};
    let target = local_path(into, repo, file)?;
    if target.is_file() {
        return Ok(target);
    }
    let err = |problem: String| DataError::Hub { repo: repo.to_owned(), file: file.to_owned(), problem };
    let api = hf_hub::api::sync::ApiBuilder::from_env().with_progress(false).build().map_err(|e| err(e.to_string()))?;
    let downloaded =
        api.repo(Repo::with_revision(repo.to_owned(), RepoType::Dataset, revision.to_owned())).get(file).map_err(|e| err(e.to_string()))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|io| DataError::Io { path: parent.to_path_buf(), io })?;
    }
    std::fs::copy(&downloaded, &target).map_err(|io| DataError::Io { path: target.clone(), io })?;
    Ok(target)
}

/// Downloads `h` (through hf-hub's cache: `HF_HOME`, `HF_ENDPOINT`, and `HF_TOKEN` for a gated
/// repository), checks its SHA-256 against the recorded one and places it at `target`
/// atomically (a temporary file beside it, renamed). A file with another digest is not placed.
#[cfg(feature = "hub")]
pub fn fetch_verified(h: &crate::sources::HubFile, target: &Path) -> Result<(), DataError> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};
    let err = |problem: String| DataError::Hub { repo: h.repo.clone(), file: h.file.clone(), problem };
    // No progress bar from this crate (ARCHITECTURE.md); the download is logged.
    let mut builder = ApiBuilder::from_env().with_progress(false);
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| err(e.to_string()))?;
    let repo = api.repo(Repo::with_revision(h.repo.clone(), RepoType::Dataset, h.revision.clone()));
    tracing::info!(repo = %h.repo, file = %h.file, "not in the data folder: fetching");
    // hf-hub 0.4 panics on some malformed answers (a redirect without a Location).
    let downloaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| repo.get(&h.file)))
        .map_err(|_| err("the hub's answer broke the download client".into()))?
        .map_err(|e| err(e.to_string()))?;
    let digest = crate::cache::file_sha256(&downloaded)?;
    if digest != h.sha256 {
        return Err(err(format!(
            "downloaded SHA-256 {digest}, not the recorded {} (eval/data_sources.toml): the file is not used",
            h.sha256
        )));
    }
    let parent = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|io| DataError::Io { path: parent.to_path_buf(), io })?;
    let partial = parent.join(format!(".{}.partial", target.file_name().and_then(|n| n.to_str()).unwrap_or("download")));
    std::fs::copy(&downloaded, &partial).map_err(|io| DataError::Io { path: partial.clone(), io })?;
    std::fs::rename(&partial, target).map_err(|io| DataError::Io { path: target.to_path_buf(), io })?;
    // A download is worth seeing: where the data now is.
    tracing::warn!("fetched {} from hub dataset {} (SHA-256 checked) into {}", h.file, h.repo, target.display());
    Ok(())
}

/// Without the `hub` feature nothing is downloaded.
#[cfg(not(feature = "hub"))]
pub fn fetch_verified(h: &crate::sources::HubFile, _target: &Path) -> Result<(), DataError> {
    Err(DataError::Hub { repo: h.repo.clone(), file: h.file.clone(), problem: "this build has no hub feature (network)".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

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
