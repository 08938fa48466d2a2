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
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| OutputError { path: path.to_path_buf(), io: e.into() })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

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
