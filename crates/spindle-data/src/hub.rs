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
    let api = hf_hub::api::sync::Api::new().map_err(|e| err(e.to_string()))?;
    let downloaded =
        api.repo(Repo::with_revision(repo.to_owned(), RepoType::Dataset, revision.to_owned())).get(file).map_err(|e| err(e.to_string()))?;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|io| DataError::Io { path: parent.to_path_buf(), io })?;
    }
    std::fs::copy(&downloaded, &target).map_err(|io| DataError::Io { path: target.clone(), io })?;
    Ok(target)
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
