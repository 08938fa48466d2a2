//! Writing a Hugging Face model directory, atomically: everything goes into a temporary folder
//! beside the destination (same filesystem), shards are written as they are produced (so a
//! pipeline can write block by block and hold one block at a time), and only a complete directory
//! is renamed into place. An existing destination, or one that is the input model, is refused.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tch::Tensor;

use crate::safetensors_write::{Loader, TensorSpec, WriteError, write_safetensors, write_safetensors_lazy};

/// Why a model directory could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("{out} already exists; choose another output directory (spindle never overwrites a directory)")]
    Exists { out: PathBuf },
    #[error("{out} is the input model {input}; spindle never overwrites its input")]
    WouldOverwriteInput { out: PathBuf, input: PathBuf },
    #[error("cannot write {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error(transparent)]
    Tensor(#[from] WriteError),
    #[error("tensor `{name}` is written twice")]
    Duplicate { name: String },
    #[error("a shard was written after the directory was sealed")]
    Sealed,
}

/// The partial directories this process is writing, for [`remove_partials`].
static PARTIALS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// The name prefix of a partial directory: `.spindle-partial-<pid>-`, so that a later run can
/// tell a leftover of a process that is gone from the work of one still running.
const PARTIAL: &str = ".spindle-partial-";

/// Removes every partial directory this process is writing. For a signal handler: after it,
/// the process must exit without finishing a write.
pub fn remove_partials() {
    let dirs = match PARTIALS.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Removes, in `parent`, the partial directories of processes that no longer run (killed with
/// SIGKILL, or a crash), and returns them. One whose owner cannot be told (an older name with no
/// process id) is left and returned second, for the caller to report.
pub fn sweep_partials(parent: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut removed, mut unknown) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(parent) else { return (removed, unknown) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PARTIAL) else { continue };
        let pid = rest.split_once('-').and_then(|(p, _)| p.parse::<u32>().ok());
        match pid {
            Some(pid) if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() => {}
            Some(_) => {
                if std::fs::remove_dir_all(e.path()).is_ok() {
                    removed.push(e.path());
                }
            }
            None => unknown.push(e.path()),
        }
    }
    (removed, unknown)
}

/// Registers a partial directory while it exists.
#[derive(Debug)]
struct Registered(PathBuf);

impl Registered {
    fn new(p: &Path) -> Registered {
        if let Ok(mut g) = PARTIALS.lock() {
            g.push(p.to_path_buf());
        }
        Registered(p.to_path_buf())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut g) = PARTIALS.lock() {
            g.retain(|p| p != &self.0);
        }
    }
}

/// A model directory being written.
#[derive(Debug)]
pub struct HfDirWriter {
    out: PathBuf,
    // Declared before `tmp`: deregistered before the directory is removed.
    _registered: Registered,
    tmp: tempfile::TempDir,
    /// Per shard (in order): its temporary file name and the tensors it holds with their bytes.
    shards: Vec<(String, Vec<String>, u64)>,
    /// The shards have their final names.
    sealed: bool,
}

fn same_place(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

impl HfDirWriter {
    /// Starts writing `out`; `input` is the model being transformed, if any (never overwritten).
    pub fn create(out: &Path, input: Option<&Path>) -> Result<HfDirWriter, SaveError> {
        if let Some(input) = input
            && same_place(out, input)
        {
            return Err(SaveError::WouldOverwriteInput { out: out.to_path_buf(), input: input.to_path_buf() });
        }
        if out.exists() {
            return Err(SaveError::Exists { out: out.to_path_buf() });
        }
        let parent = spindle_io::parent_dir(out);
        std::fs::create_dir_all(&parent).map_err(|io| SaveError::Io { path: parent.clone(), io })?;
        let (removed, unknown) = sweep_partials(&parent);
        for r in removed {
            tracing::warn!(path = %r.display(), "removed the partial output of a spindle process that no longer runs");
        }
        for u in unknown {
            tracing::warn!(path = %u.display(), "a partial output of an earlier spindle run; remove it if no spindle is running");
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{PARTIAL}{}-", std::process::id()))
            .tempdir_in(&parent)
            .map_err(|io| SaveError::Io { path: parent.clone(), io })?;
        let registered = Registered::new(tmp.path());
        Ok(HfDirWriter { out: out.to_path_buf(), _registered: registered, tmp, shards: Vec::new(), sealed: false })
    }

    /// The partial directory being written (renamed to the destination by [`HfDirWriter::finish`]).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Writes one shard of tensors (names as in the checkpoint, each in its own dtype).
    pub fn write_shard(&mut self, tensors: &[(String, Tensor)]) -> Result<(), SaveError> {
        if self.sealed {
            return Err(SaveError::Sealed);
        }
        for (name, _) in tensors {
            if self.shards.iter().any(|(_, names, _)| names.contains(name)) {
                return Err(SaveError::Duplicate { name: name.clone() });
            }
        }
        let file = format!("shard-{:05}.safetensors", self.shards.len());
        write_safetensors(&self.tmp.path().join(&file), tensors)?;
        let bytes = tensors.iter().map(|(_, t)| (t.numel() * t.kind().elt_size_in_bytes()) as u64).sum();
        self.shards.push((file, tensors.iter().map(|(n, _)| n.clone()).collect(), bytes));
        Ok(())
    }

    /// Writes one shard whose tensors are read by `load` one at a time as they are written.
    pub fn write_shard_lazy(&mut self, specs: &[TensorSpec], load: Loader<'_>) -> Result<(), SaveError> {
        if self.sealed {
            return Err(SaveError::Sealed);
        }
        for spec in specs {
            if self.shards.iter().any(|(_, names, _)| names.contains(&spec.name)) {
                return Err(SaveError::Duplicate { name: spec.name.clone() });
            }
        }
        let file = format!("shard-{:05}.safetensors", self.shards.len());
        write_safetensors_lazy(&self.tmp.path().join(&file), specs, load)?;
        let bytes = specs.iter().map(|s| (s.shape.iter().product::<i64>() as usize * s.kind.elt_size_in_bytes()) as u64).sum();
        self.shards.push((file, specs.iter().map(|s| s.name.clone()).collect(), bytes));
        Ok(())
    }

    /// Writes a side file (config.json, tokenizer.json, ...).
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), SaveError> {
        let path = self.tmp.path().join(name);
        std::fs::write(&path, bytes).map_err(|io| SaveError::Io { path, io })
    }

    /// Writes `value` as pretty JSON.
    pub fn write_json(&self, name: &str, value: &Value) -> Result<(), SaveError> {
        let path = self.tmp.path().join(name);
        let mut text = serde_json::to_string_pretty(value).map_err(|e| SaveError::Io { path, io: e.into() })?;
        text.push('\n');
        self.write_file(name, text.as_bytes())
    }

    /// Copies a side file from another directory, if it exists there.
    pub fn copy_if_present(&self, from_dir: &Path, name: &str) -> Result<bool, SaveError> {
        let src = from_dir.join(name);
        if !src.is_file() {
            return Ok(false);
        }
        std::fs::copy(&src, self.tmp.path().join(name)).map_err(|io| SaveError::Io { path: src, io })?;
        Ok(true)
    }

    /// Names the shards as transformers expects (`model.safetensors`, or
    /// `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`): the partial
    /// directory ([`HfDirWriter::path`]) is then a complete model a caller can check before
    /// [`HfDirWriter::finish`] publishes it. No shard may be written after.
    pub fn seal(&mut self) -> Result<(), SaveError> {
        if self.sealed {
            return Ok(());
        }
        self.sealed = true;
        let dir = self.tmp.path().to_path_buf();
        let io = |path: PathBuf| move |io| SaveError::Io { path, io };
        let n = self.shards.len();
        if n == 1 {
            let (file, _, _) = &self.shards[0];
            std::fs::rename(dir.join(file), dir.join("model.safetensors")).map_err(io(dir.join(file)))?;
        } else if n > 1 {
            let mut weight_map = Map::new();
            let mut total = 0u64;
            for (i, (file, names, bytes)) in self.shards.iter().enumerate() {
                let final_name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
                std::fs::rename(dir.join(file), dir.join(&final_name)).map_err(io(dir.join(file)))?;
                for name in names {
                    weight_map.insert(name.clone(), Value::String(final_name.clone()));
                }
                total += bytes;
            }
            self.write_json("model.safetensors.index.json", &json!({"metadata": {"total_size": total}, "weight_map": weight_map}))?;
        }
        Ok(())
    }

    /// Seals the directory (if [`HfDirWriter::seal`] was not called) and moves it into place.
    pub fn finish(mut self) -> Result<PathBuf, SaveError> {
        self.seal()?;
        let io = |path: PathBuf| move |io| SaveError::Io { path, io };
        if self.out.exists() {
            return Err(SaveError::Exists { out: self.out.clone() });
        }
        let kept = self.tmp.keep();
        {
            use std::os::unix::fs::PermissionsExt;
            // tempdir creates rwx------; a model directory is as readable as any other.
            std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o755)).map_err(io(kept.clone()))?;
        }
        std::fs::rename(&kept, &self.out).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            SaveError::Io { path: self.out.clone(), io: e }
        })?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::Weights;
    use tch::{Device, Kind};

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    #[test]
    fn one_shard_becomes_model_safetensors() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("m");
        let mut w = HfDirWriter::create(&out, None).unwrap();
        w.write_shard(&[("a".into(), t(&[1.0, 2.0]))]).unwrap();
        w.write_json("config.json", &json!({"x": 1})).unwrap();
        assert!(!out.exists(), "nothing is visible before finish");
        w.finish().unwrap();
        let mut files: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        files.sort();
        assert_eq!(files, ["config.json", "model.safetensors"]);
        // Only the finished directory is left beside it.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn several_shards_get_an_index_transformers_reads() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("m");
        let mut w = HfDirWriter::create(&out, None).unwrap();
        w.write_shard(&[("a".into(), t(&[1.0, 2.0]))]).unwrap();
        w.write_shard(&[("b".into(), t(&[3.0]).to_kind(Kind::Half))]).unwrap();
        assert!(matches!(w.write_shard(&[("a".into(), t(&[0.0]))]), Err(SaveError::Duplicate { .. })));
        w.finish().unwrap();
        let index: Value = serde_json::from_str(&std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap()).unwrap();
        assert_eq!(index["weight_map"]["b"], "model-00002-of-00002.safetensors");
        assert_eq!(index["metadata"]["total_size"], 10);
        let weights = Weights::open(&out).unwrap();
        assert_eq!(weights.stored_kind("b"), Some(Kind::Half));
        assert_eq!(weights.load("b", &[1], Kind::Float, Device::Cpu).unwrap().double_value(&[0]), 3.0);
    }

    #[test]
    fn the_input_and_existing_directories_are_never_overwritten() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::create_dir(&input).unwrap();
        let err = HfDirWriter::create(&input, Some(&input)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is the input model {}; spindle never overwrites its input", input.display(), input.display())
        );
        let err = HfDirWriter::create(&d.path().join("in/../in"), Some(&input)).unwrap_err();
        assert!(matches!(err, SaveError::WouldOverwriteInput { .. }));
        let err = HfDirWriter::create(&input, None).unwrap_err();
        assert!(err.to_string().ends_with("already exists; choose another output directory (spindle never overwrites a directory)"));
    }

    #[test]
    fn partial_outputs_of_gone_processes_are_swept_and_ours_removed_on_request() {
        let d = tempfile::tempdir().unwrap();
        let dead = d.path().join(".spindle-partial-4999999-abc123");
        let old = d.path().join(".spindle-partial-Xy12Zq");
        let ours = d.path().join(format!(".spindle-partial-{}-zz", std::process::id()));
        for p in [&dead, &old, &ours] {
            std::fs::create_dir(p).unwrap();
        }
        // pid 4999999 is above Linux's largest pid (2^22): no process has it.
        assert_eq!(sweep_partials(d.path()), (vec![dead.clone()], vec![old.clone()]));
        assert!(!dead.exists() && old.exists() && ours.exists());

        let out = d.path().join("m");
        let w = HfDirWriter::create(&out, None).unwrap();
        let partial = w.tmp.path().to_path_buf();
        assert!(partial.file_name().unwrap().to_str().unwrap().starts_with(&format!(".spindle-partial-{}-", std::process::id())));
        // Registered for `remove_partials` (the signal handler's; calling it here would reach
        // the other tests of this process) while it exists, and no longer after.
        assert!(PARTIALS.lock().unwrap().contains(&partial));
        drop(w);
        assert!(!PARTIALS.lock().unwrap().contains(&partial));
        assert!(!partial.exists() && !out.exists());
    }

    #[test]
    fn an_abandoned_write_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("m");
        {
            let mut w = HfDirWriter::create(&out, None).unwrap();
            w.write_shard(&[("a".into(), t(&[1.0]))]).unwrap();
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
