//! Hugging Face hub ids as models: `--model ORG/NAME[@REVISION]` resolves to a snapshot directory
//! of the standard Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), the one transformers fills, so a model it already downloaded is
//! used as is. Online (the `hub` feature, on by default), the revision is resolved to its commit
//! and the files a checkpoint needs are downloaded from `$HF_ENDPOINT` (default
//! `https://huggingface.co`) with `$HF_TOKEN` for gated repositories. `HF_HUB_OFFLINE=1` reads the
//! cache only; an unreachable hub falls back to a cached snapshot, and says so.
//!
//! The snapshot directory is named by its commit (`.../snapshots/<sha>`), so every report that
//! names the model directory names the commit too ([`commit_of`]).

use std::path::{Path, PathBuf};

/// `ORG/NAME[@REVISION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    pub repo: String,
    pub revision: String,
}

impl HubId {
    /// A hub id, or `None` for anything else (a path, a known name).
    pub fn parse(arg: &str) -> Option<HubId> {
        let (repo, revision) = match arg.split_once('@') {
            Some((r, rev)) if !rev.is_empty() => (r, rev),
            Some(_) => return None,
            None => (arg, "main"),
        };
        let (org, name) = repo.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let rev_ok = revision.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')) && !revision.contains("..");
        (ok(org) && ok(name) && rev_ok).then(|| HubId { repo: repo.to_owned(), revision: revision.to_owned() })
    }

    fn folder(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

impl std::fmt::Display for HubId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.repo, self.revision)
    }
}

/// Why a hub id could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub model {id}: HF_HUB_OFFLINE is set and {cache} holds no snapshot of it; download it once online, or unset HF_HUB_OFFLINE")]
    Offline { id: HubId, cache: PathBuf },
    #[error(
        "hub model {id}: {endpoint} cannot be reached ({problem}) and {cache} holds no snapshot of it; connect, or point HF_HUB_CACHE at a cache that has it"
    )]
    Unreachable { id: HubId, endpoint: String, problem: String, cache: PathBuf },
    #[error("hub model {id}: access denied by {endpoint} (HTTP {status}); {hint}")]
    Denied { id: HubId, endpoint: String, status: u16, hint: &'static str },
    #[error("hub model {id}: {endpoint} has no such repository or revision (HTTP 404)")]
    NotFound { id: HubId, endpoint: String },
    #[error("hub model {id}: the repository holds no safetensors checkpoint (its files: {files})")]
    NoSafetensors { id: HubId, files: String },
    #[error("hub model {id}: {problem}")]
    Other { id: HubId, problem: String },
    #[error("hub model {id}: this spindle was built without the `hub` feature, and {cache} holds no snapshot of it")]
    NoHubFeature { id: HubId, cache: PathBuf },
}

/// The Hugging Face cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn cache_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
        .unwrap_or_else(|| PathBuf::from(".cache/huggingface/hub"))
}

/// `HF_HUB_OFFLINE` is set to a true value: nothing is downloaded.
pub fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit())
}

/// The cached snapshot of `id` that holds a config.json: `(commit, directory)`.
fn cached_snapshot(cache: &Path, id: &HubId) -> Option<(String, PathBuf)> {
    let repo = cache.join(id.folder());
    let commit = if is_commit(&id.revision) {
        id.revision.clone()
    } else {
        spindle_io::read_to_string(&repo.join("refs").join(&id.revision)).ok()?.trim().to_owned()
    };
    let dir = repo.join("snapshots").join(&commit);
    dir.join("config.json").is_file().then_some((commit, dir))
}

/// The commit a model directory is a hub snapshot of (`.../snapshots/<sha>`), if it is one.
pub fn commit_of(dir: &Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    (dir.parent()?.file_name()? == "snapshots" && is_commit(name)).then(|| name.to_owned())
}

/// The files of a repository a Hugging Face model directory needs.
fn wanted(file: &str) -> bool {
    const SIDE: [&str; 9] = [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "vocab.json",
        "merges.txt",
        "model.safetensors.index.json",
    ];
    SIDE.contains(&file) || (file.ends_with(".safetensors") && !file.contains('/'))
}

/// `id` as a model directory: the cached snapshot, downloaded first where needed.
/// `progress(done, total)` counts files; `warn` hears a fallback to the cache.
pub fn resolve(id: &HubId, progress: &mut dyn FnMut(usize, usize), warn: &mut dyn FnMut(&str)) -> Result<PathBuf, HubError> {
    let cache = cache_root();
    if offline() {
        return cached_snapshot(&cache, id).map(|(_, dir)| dir).ok_or(HubError::Offline { id: id.clone(), cache });
    }
    #[cfg(feature = "hub")]
    {
        match guarded(id, || download(id, &cache, progress)) {
            Ok(dir) => Ok(dir),
            Err(HubError::Unreachable { id, endpoint, problem, cache }) => match cached_snapshot(&cache, &id) {
                Some((commit, dir)) => {
                    warn(&format!("{endpoint} cannot be reached ({problem}); using the cached snapshot {commit} of {id}"));
                    Ok(dir)
                }
                None => Err(HubError::Unreachable { id, endpoint, problem, cache }),
            },
            Err(e) => Err(e),
        }
    }
    #[cfg(not(feature = "hub"))]
    {
        let _ = (progress, warn);
        cached_snapshot(&cache, id).map(|(_, dir)| dir).ok_or(HubError::NoHubFeature { id: id.clone(), cache })
    }
}

/// Runs the hub client, whose download path has `unwrap`s and an `assert!` a hostile answer can
/// reach (a redirect without a `Location`): a panic there becomes an error naming the id, with
/// the panic's own report silenced for the call.
#[cfg(feature = "hub")]
fn guarded(id: &HubId, f: impl FnOnce() -> Result<PathBuf, HubError>) -> Result<PathBuf, HubError> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    outcome.unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(HubError::Other { id: id.clone(), problem: format!("the hub's answer broke the download client ({what})") })
    })
}

#[cfg(feature = "hub")]
fn download(id: &HubId, cache: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<PathBuf, HubError> {
    use hf_hub::api::sync::{ApiBuilder, ApiError};
    use hf_hub::{Cache, Repo, RepoType};
    let endpoint = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()).unwrap_or_else(|| "https://huggingface.co".into());
    let token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    let has_token = token.is_some();
    let classify = |e: ApiError| -> HubError {
        match e {
            ApiError::RequestError(r) => match *r {
                ureq::Error::Status(status @ (401 | 403), _) => HubError::Denied {
                    id: id.clone(),
                    endpoint: endpoint.clone(),
                    status,
                    hint: if has_token {
                        "the token in HF_TOKEN was refused"
                    } else {
                        "a gated or private repository needs a token: set HF_TOKEN"
                    },
                },
                ureq::Error::Status(404, _) => HubError::NotFound { id: id.clone(), endpoint: endpoint.clone() },
                ureq::Error::Status(status, _) => HubError::Other { id: id.clone(), problem: format!("{endpoint} answered HTTP {status}") },
                ureq::Error::Transport(t) => {
                    HubError::Unreachable { id: id.clone(), endpoint: endpoint.clone(), problem: t.to_string(), cache: cache.to_path_buf() }
                }
            },
            other => HubError::Other { id: id.clone(), problem: other.to_string() },
        }
    };
    let builder = ApiBuilder::from_cache(Cache::new(cache.to_path_buf())).with_endpoint(endpoint.clone()).with_progress(false);
    let builder = match token {
        Some(t) => builder.with_token(Some(t)),
        None => builder,
    };
    let api = builder.build().map_err(classify)?;
    let repo = api.repo(Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision.clone()));
    let info = repo.info().map_err(classify)?;
    if !is_commit(&info.sha) {
        return Err(HubError::Other { id: id.clone(), problem: format!("the hub gave {:?} as the revision's commit", info.sha) });
    }
    let files: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).filter(|f| wanted(f)).collect();
    if !files.iter().any(|f| f.ends_with(".safetensors")) {
        let all: Vec<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
        return Err(HubError::NoSafetensors { id: id.clone(), files: all.join(", ") });
    }
    let dir = cache.join(id.folder()).join("snapshots").join(&info.sha);
    for (k, file) in files.iter().enumerate() {
        progress(k, files.len());
        if !dir.join(file).is_file() {
            let got = repo.download(file).map_err(classify)?;
            if got.parent() != Some(dir.as_path()) {
                return Err(HubError::Other {
                    id: id.clone(),
                    problem: format!("{file} came from another commit than {} (the revision moved while downloading)", info.sha),
                });
            }
        }
    }
    progress(files.len(), files.len());
    // The revision's ref, so an offline run finds this snapshot (hf-hub writes it on download; a
    // fully cached snapshot downloads nothing).
    let refs = cache.join(id.folder()).join("refs");
    if !is_commit(&id.revision) {
        let path = refs.join(&id.revision);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| HubError::Other { id: id.clone(), problem: format!("{}: {e}", parent.display()) })?;
        }
        std::fs::write(&path, &info.sha).map_err(|e| HubError::Other { id: id.clone(), problem: format!("{}: {e}", path.display()) })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_org_name_and_an_optional_revision() {
        let id = |s: &str| HubId::parse(s).map(|h| (h.repo, h.revision));
        assert_eq!(id("meta-llama/Llama-2-7b-hf"), Some(("meta-llama/Llama-2-7b-hf".into(), "main".into())));
        assert_eq!(id("Qwen/Qwen2.5-0.5B@v1.0"), Some(("Qwen/Qwen2.5-0.5B".into(), "v1.0".into())));
        assert_eq!(id("org/name@refs/pr/1"), Some(("org/name".into(), "refs/pr/1".into())));
        for not in ["smollm2-135m", "a/b/c", "/abs/path", "./x", "../x/y", "org/", "org/name@", "org/na me", "org/name@../x"] {
            assert_eq!(id(not), None, "{not}");
        }
        let dir = Path::new("/c/models--a--b/snapshots/0123456789abcdef0123456789abcdef01234567");
        assert_eq!(commit_of(dir).as_deref(), Some("0123456789abcdef0123456789abcdef01234567"));
        assert_eq!(commit_of(Path::new("/models/smollm2-135m")), None);
    }
}
