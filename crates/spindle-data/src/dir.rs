//! The data-directory convention: `--data-dir DIR`, else `$SPINDLE_DATA`, else `./data`, else
//! `../shared/data` (the offline folder that sits beside a checkout, and on CI); with none of
//! them, online, a folder in spindle's cache that fills as files are needed.
//!
//! A file a named corpus or task needs and the folder lacks is fetched from its public dataset
//! repository ([`crate::sources`]) into the folder, checked by SHA-256, when fetching is on
//! ([`DataDir::with_fetch`]).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::DataError;

/// Where the data directory came from, for messages and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirSource {
    /// `--data-dir DIR`.
    Flag,
    /// The `SPINDLE_DATA` environment variable.
    Env,
    /// `./data` in the working directory.
    LocalData,
    /// `../shared/data` beside the working directory.
    SharedData,
    /// spindle's cache (no folder found; files are fetched as needed).
    Cache,
}

impl fmt::Display for DataDirSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataDirSource::Flag => "--data-dir",
            DataDirSource::Env => "SPINDLE_DATA",
            DataDirSource::LocalData => "./data",
            DataDirSource::SharedData => "../shared/data",
            DataDirSource::Cache => "spindle's cache",
        })
    }
}

/// A located data directory laid out like the Hugging Face dataset repositories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
    source: DataDirSource,
    /// Whether a missing file with a hub origin is downloaded ([`DataDir::file`]).
    fetch: Fetch,
}

/// What [`DataDir::file`] does about a missing file that has a hub origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Nothing: the reader reports the missing file (a build without the `hub` feature).
    Never,
    /// Refuse, naming the source (`HF_HUB_OFFLINE`).
    Offline,
    /// Download it and check its SHA-256.
    Hub,
}

impl DataDir {
    /// Resolves the convention from the process environment and working directory.
    pub fn resolve(flag: Option<&Path>) -> Result<DataDir, DataError> {
        let cwd = std::env::current_dir().map_err(|io| DataError::Io { path: PathBuf::from("."), io })?;
        Self::resolve_from(flag, &cwd)
    }

    /// The convention as if run from `dir`: `flag`, else `$SPINDLE_DATA`, else `dir/data`, else
    /// `dir/../shared/data` (tests resolve from the workspace root this way).
    pub fn resolve_from(flag: Option<&Path>, dir: &Path) -> Result<DataDir, DataError> {
        let env = std::env::var_os("SPINDLE_DATA").filter(|v| !v.is_empty()).map(PathBuf::from);
        Self::resolve_with(flag, env.as_deref(), dir)
    }

    /// The convention with every input explicit: an explicit choice (flag, then variable) must
    /// exist; otherwise the first existing default wins.
    pub fn resolve_with(flag: Option<&Path>, env: Option<&Path>, cwd: &Path) -> Result<DataDir, DataError> {
        let explicit = flag.map(|p| (p, DataDirSource::Flag)).or_else(|| env.map(|p| (p, DataDirSource::Env)));
        if let Some((path, source)) = explicit {
            let root = cwd.join(path);
            return if root.is_dir() {
                Ok(DataDir { root, source, fetch: Fetch::Never })
            } else {
                Err(DataError::MissingDataDir { path: root, from: source })
            };
        }
        let defaults =
            [(cwd.join("data"), DataDirSource::LocalData), (cwd.join("..").join("shared").join("data"), DataDirSource::SharedData)];
        for (root, source) in &defaults {
            if root.is_dir() {
                return Ok(DataDir { root: root.clone(), source: *source, fetch: Fetch::Never });
            }
        }
        Err(DataError::NoDataDir { looked: defaults.into_iter().map(|(p, _)| p).collect() })
    }

    /// A data folder in spindle's cache (`root`, created when a file is fetched into it), for
    /// when no folder is found and files can be fetched.
    pub fn in_cache(root: &Path) -> DataDir {
        DataDir { root: root.to_path_buf(), source: DataDirSource::Cache, fetch: Fetch::Never }
    }

    /// The same folder with `fetch` for missing files.
    pub fn with_fetch(self, fetch: Fetch) -> DataDir {
        DataDir { fetch, ..self }
    }

    /// What happens to a missing file.
    pub fn fetch(&self) -> Fetch {
        self.fetch
    }

    /// The path of `relative` inside the folder, fetched first if it is missing and has a hub
    /// origin and fetching is on ([`crate::sources`]). A missing file with no origin, or with
    /// fetching never on, is returned as is for its reader to report.
    pub fn file(&self, relative: &str) -> Result<PathBuf, DataError> {
        let path = self.root.join(relative);
        if path.is_file() || self.fetch == Fetch::Never {
            return Ok(path);
        }
        match crate::sources::source_of(relative).map(|s| &s.origin) {
            None => Ok(path),
            Some(crate::sources::Origin::Unavailable(reason)) => Err(DataError::NotFetchable { path, reason: reason.clone() }),
            Some(crate::sources::Origin::Hub(h)) if self.fetch == Fetch::Offline => {
                Err(DataError::Offline { path, repo: h.repo.clone(), file: h.file.clone() })
            }
            Some(crate::sources::Origin::Hub(h)) => {
                crate::hub::fetch_verified(h, &path)?;
                Ok(path)
            }
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How it was chosen.
    pub fn source(&self) -> DataDirSource {
        self.source
    }

    /// A path inside the directory, e.g. `wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet`.
    pub fn join(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dirs: &[&str]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for d in dirs {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        t
    }

    #[test]
    fn flag_wins_over_env_and_defaults() {
        let t = tree(&["work/data", "shared/data", "mine", "env"]);
        let cwd = t.path().join("work");
        let d = DataDir::resolve_with(Some(&t.path().join("mine")), Some(&t.path().join("env")), &cwd).unwrap();
        assert_eq!((d.root(), d.source()), (t.path().join("mine").as_path(), DataDirSource::Flag));
    }

    #[test]
    fn env_wins_over_defaults() {
        let t = tree(&["work/data", "env"]);
        let d = DataDir::resolve_with(None, Some(&t.path().join("env")), &t.path().join("work")).unwrap();
        assert_eq!(d.source(), DataDirSource::Env);
    }

    #[test]
    fn local_data_before_shared_data() {
        let t = tree(&["work/data", "shared/data"]);
        let d = DataDir::resolve_with(None, None, &t.path().join("work")).unwrap();
        assert_eq!(d.source(), DataDirSource::LocalData);
        std::fs::remove_dir(t.path().join("work/data")).unwrap();
        let d = DataDir::resolve_with(None, None, &t.path().join("work")).unwrap();
        assert_eq!(d.source(), DataDirSource::SharedData);
        assert_eq!(d.root(), t.path().join("work/../shared/data"));
    }

    #[test]
    fn a_missing_explicit_dir_is_an_error_naming_it_never_a_fallback() {
        let t = tree(&["work/data"]);
        let err = DataDir::resolve_with(Some(Path::new("nope")), None, &t.path().join("work")).unwrap_err();
        assert_eq!(err.to_string(), format!("data directory {} (from --data-dir) does not exist", t.path().join("work/nope").display()));
        let err = DataDir::resolve_with(None, Some(Path::new("/no/such/dir")), &t.path().join("work")).unwrap_err();
        assert_eq!(err.to_string(), "data directory /no/such/dir (from SPINDLE_DATA) does not exist");
    }

    #[test]
    fn nothing_found_lists_where_it_looked() {
        let t = tree(&["work"]);
        let err = DataDir::resolve_with(None, None, &t.path().join("work")).unwrap_err();
        let w = t.path().join("work");
        assert_eq!(
            err.to_string(),
            format!(
                "no data directory found: pass --data-dir DIR or set SPINDLE_DATA (looked in {}, {})",
                w.join("data").display(),
                w.join("../shared/data").display()
            )
        );
    }
}
