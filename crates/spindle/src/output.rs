//! Output files are written atomically: to a temporary file in the destination folder, flushed,
//! then renamed over the destination. A crash or a failed run never leaves a partial file, and a
//! reader never sees a half-written one.

use std::path::{Path, PathBuf};

/// A failed write, naming the destination.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {io}")]
pub struct OutputError {
    pub path: PathBuf,
    pub io: std::io::Error,
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    spindle_model::write_file_atomic(path, bytes).map_err(|io| OutputError { path: path.to_path_buf(), io })
}

/// Writes `value` as pretty JSON (with a final newline) to `path` atomically.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), OutputError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| OutputError { path: path.to_path_buf(), io: e.into() })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Why an output path cannot be used: one line naming the flag and the path. Found before any
/// work is done, so a run never computes for an hour and then fails to write.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {why}")]
pub struct OutputPathError {
    pub flag: &'static str,
    pub path: PathBuf,
    pub why: String,
}

/// What an output path will hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A file written whole and renamed into place (a report): it may replace an earlier
    /// report, but never a directory, a device or any other non-regular file.
    File,
    /// A new directory (a model, plots): it must not exist yet.
    NewDir,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Checks an output path given with `flag` before any work: its folder exists and can be
/// written to, it replaces no input (nothing is written inside `inputs`, the folders and files
/// the run reads) and no non-regular file, and it does not collide with `others` (the run's
/// other outputs, e.g. `--out`).
pub fn check_output_path(
    flag: &'static str,
    path: &Path,
    kind: OutputKind,
    inputs: &[&Path],
    others: &[&Path],
) -> Result<(), OutputPathError> {
    let fail = |why: String| Err(OutputPathError { flag, path: path.to_path_buf(), why });
    if let Ok(meta) = std::fs::metadata(path) {
        match kind {
            OutputKind::NewDir => return fail("already exists; spindle writes a new directory and never overwrites".into()),
            OutputKind::File if meta.is_dir() => return fail("is a directory".into()),
            OutputKind::File if !meta.is_file() => return fail("is not a regular file; a report never replaces one".into()),
            OutputKind::File => {}
        }
    }
    for other in others {
        let other = absolute(other);
        if absolute(path) == other || absolute(path).starts_with(&other) || other.starts_with(absolute(path)) {
            return fail(format!("collides with the output {}", other.display()));
        }
    }
    let parent = spindle_io::parent_dir(path);
    if !parent.is_dir() {
        return fail(format!("the folder {} does not exist", parent.display()));
    }
    let here = std::fs::canonicalize(&parent).unwrap_or_else(|_| absolute(&parent));
    let target = here.join(path.file_name().unwrap_or_default());
    for input in inputs {
        let Ok(input) = std::fs::canonicalize(input) else { continue };
        if target == input || target.starts_with(&input) {
            return fail(format!("would write into the input {}; inputs are never written", input.display()));
        }
    }
    if let Err(io) = tempfile::Builder::new().prefix(".spindle-probe-").tempfile_in(&parent) {
        return fail(format!("cannot write in {}: {io}", parent.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_are_checked_before_any_work() {
        let t = tempfile::tempdir().unwrap();
        let model = t.path().join("model");
        std::fs::create_dir(&model).unwrap();
        std::fs::write(model.join("config.json"), "{}").unwrap();
        let out = t.path().join("out");
        let ok = |p: &Path| check_output_path("--json", p, OutputKind::File, &[&model], &[&out]);
        assert!(ok(&t.path().join("r.json")).is_ok());
        std::fs::write(t.path().join("old.json"), "{}").unwrap();
        assert!(ok(&t.path().join("old.json")).is_ok(), "an earlier report may be replaced");
        let why = |p: &Path| ok(p).unwrap_err().why;
        assert_eq!(
            why(&model.join("config.json")),
            format!("would write into the input {}; inputs are never written", model.canonicalize().unwrap().display())
        );
        assert_eq!(
            why(&model.join("new.json")),
            format!("would write into the input {}; inputs are never written", model.canonicalize().unwrap().display())
        );
        assert_eq!(why(Path::new("/dev/full")), "is not a regular file; a report never replaces one");
        assert_eq!(why(t.path()), "is a directory");
        assert_eq!(why(&t.path().join("missing/r.json")), format!("the folder {} does not exist", t.path().join("missing").display()));
        assert_eq!(why(&out), format!("collides with the output {}", out.display()));
        assert_eq!(why(&out.join("r.json")), format!("collides with the output {}", out.display()));
        let e = check_output_path("--out", &model, OutputKind::NewDir, &[], &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("--out {}: already exists; spindle writes a new directory and never overwrites", model.display())
        );
        assert!(
            check_output_path("--out", &model.join("pruned"), OutputKind::NewDir, &[&model], &[]).is_err(),
            "no output inside an input"
        );
        // Nothing was left behind by the probes.
        let mut names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["model", "old.json"]);
    }

    #[test]
    fn writes_and_replaces_whole_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("out.json");
        write_json(&p, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\n  \"a\": 1\n}\n");
        write_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // Only the destination is left: no temporary files.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_file() {
        let err = write_atomic(Path::new("/no/such/dir/out.json"), b"x").unwrap_err();
        assert!(err.to_string().starts_with("cannot write /no/such/dir/out.json: "), "{err}");
    }
}
