//! Helpers shared by the fuzz targets: a scratch folder per process (in /dev/shm where it
//! exists), because the parsers under test read files, as spindle does.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// This process's scratch folder, emptied of the last input by each write.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let t = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("a scratch folder");
        let p = t.path().to_path_buf();
        (t, p)
    })
    .1
}

/// Writes `data` as `name` in a fresh scratch subfolder and returns the folder.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let dir = scratch().join("case");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the case folder");
    std::fs::write(dir.join(name), data).expect("the case file");
    dir
}
