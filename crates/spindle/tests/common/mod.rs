//! What the binary's integration tests share: the offline data folder and the real tiny model in
//! it (stories260K, converted by the binary under test). Each test binary uses some of these.
#![allow(dead_code, clippy::unwrap_used)] // shared by several test binaries; tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

/// The offline data folder, found by the usual convention ($SPINDLE_DATA, else ./data or
/// ../shared/data beside the workspace).
pub fn data() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    spindle_data::DataDir::resolve_from(None, &root).unwrap().root().to_path_buf()
}

/// The stories260K folder of the offline data.
pub fn stories_dir() -> PathBuf {
    data().join("models/stories260K")
}

/// Converts stories260K into a Hugging Face directory `out` with the spindle binary `bin`.
pub fn convert_stories(bin: &Path, out: &Path) {
    let s = stories_dir();
    let o = Command::new(bin)
        .args(["--threads", "1", "convert"])
        .arg(s.join("stories260K.bin"))
        .arg("--tokenizer")
        .arg(s.join("tok512.bin"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}
