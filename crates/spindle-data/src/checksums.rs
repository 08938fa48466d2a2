//! Integrity of a data directory: every file listed in its `SHA256SUMS` is present and hashes to
//! the listed digest (the same check as `sha256sum -c SHA256SUMS`).

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::hex;
use crate::{DataDir, DataError};

/// The outcome for one listed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileStatus {
    /// Present with the listed digest.
    Ok,
    /// Present with another digest (given here).
    Mismatch { actual: String },
    /// Listed but absent.
    Missing,
}

/// One line of `SHA256SUMS` and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCheck {
    /// Path relative to the data directory, as listed.
    pub path: PathBuf,
    /// The listed digest, lower-case hex.
    pub expected: String,
    pub status: FileStatus,
}

/// The whole check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub files: Vec<FileCheck>,
    /// Bytes hashed.
    pub bytes: u64,
}

impl VerifyReport {
    /// True when every listed file is present and intact.
    pub fn is_ok(&self) -> bool {
        self.files.iter().all(|f| f.status == FileStatus::Ok)
    }
}

/// Parses `SHA256SUMS` text (`path` names it in errors): each line `<sha256>  <file>` or `<sha256> *<file>`,
/// every file inside the folder.
pub fn parse_sums(path: &Path, text: &str) -> Result<Vec<(String, PathBuf)>, DataError> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || DataError::BadChecksumLine { path: path.to_path_buf(), line: i + 1, text: line.to_owned() };
        let (digest, rest) = line.split_once(' ').ok_or_else(bad)?;
        // `sha256sum` writes "<digest>  <file>" (text mode) or "<digest> *<file>" (binary mode).
        let file = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('*')).ok_or_else(bad)?;
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) || file.is_empty() {
            return Err(bad());
        }
        // Every listed file lies inside the data folder: no absolute path, no `..`.
        if !Path::new(file).components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir)) {
            return Err(DataError::ChecksumOutside { path: path.to_path_buf(), line: i + 1, file: file.to_owned() });
        }
        entries.push((digest.to_ascii_lowercase(), PathBuf::from(file)));
    }
    Ok(entries)
}

/// Checks every file listed in `<dir>/SHA256SUMS`. `progress(done, total)` is called with bytes
/// hashed so far and the total to hash, so a caller can draw a bar.
pub fn verify(dir: &DataDir, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport, DataError> {
    let sums_path = dir.join("SHA256SUMS");
    let text = spindle_io::read_to_string(&sums_path).map_err(|io| DataError::Io { path: sums_path.clone(), io })?;
    let entries = parse_sums(&sums_path, &text)?;
    let total: u64 = entries.iter().filter_map(|(_, f)| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum();
    let mut done = 0u64;
    progress(done, total);
    let mut files = Vec::with_capacity(entries.len());
    let mut buf = vec![0u8; 1 << 20];
    for (expected, rel) in entries {
        let path = dir.join(&rel);
        let status = match spindle_io::regular_file(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileStatus::Missing,
            Err(io) => return Err(DataError::Io { path, io }),
            Ok(mut file) => {
                let mut hasher = Sha256::new();
                loop {
                    let n = file.read(&mut buf).map_err(|io| DataError::Io { path: path.clone(), io })?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    done += n as u64;
                    progress(done, total);
                }
                let actual = hex(&hasher.finalize());
                if actual == expected { FileStatus::Ok } else { FileStatus::Mismatch { actual } }
            }
        };
        files.push(FileCheck { path: rel, expected, status });
    }
    Ok(VerifyReport { files, bytes: done })
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha256("hello\n")
    const HELLO: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

    fn dir_with(files: &[(&str, &[u8])], sums: &str) -> (tempfile::TempDir, DataDir) {
        let t = tempfile::tempdir().unwrap();
        for (name, content) in files {
            let p = t.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        std::fs::write(t.path().join("SHA256SUMS"), sums).unwrap();
        let d = DataDir::resolve_with(Some(t.path()), None, t.path()).unwrap();
        (t, d)
    }

    #[test]
    fn intact_changed_and_missing_files_are_told_apart() {
        let sums = format!("{HELLO}  a/ok.txt\n{HELLO} *changed.txt\n{HELLO}  gone.txt\n");
        let (_t, d) = dir_with(&[("a/ok.txt", b"hello\n"), ("changed.txt", b"hullo\n")], &sums);
        let mut calls = Vec::new();
        let report = verify(&d, &mut |done, total| calls.push((done, total))).unwrap();
        assert_eq!(report.files[0].status, FileStatus::Ok);
        assert!(matches!(&report.files[1].status, FileStatus::Mismatch { actual } if actual != HELLO));
        assert_eq!(report.files[2].status, FileStatus::Missing);
        assert!(!report.is_ok());
        assert_eq!(report.bytes, 12);
        assert_eq!(calls.first(), Some(&(0, 12)));
        assert_eq!(calls.last(), Some(&(12, 12)));
    }

    #[test]
    fn entries_that_leave_the_data_folder_are_refused() {
        for (file, line) in [("../../../../etc/hostname", 2), ("/etc/hostname", 2), ("a/../../x", 2)] {
            let (t, d) = dir_with(&[("x", b"hello\n")], &format!("{HELLO}  x\n{HELLO}  {file}\n"));
            let err = verify(&d, &mut |_, _| {}).unwrap_err();
            assert_eq!(err.to_string(), format!("{}:{line}: {file} lies outside the data folder", t.path().join("SHA256SUMS").display()));
        }
    }

    #[test]
    fn a_listed_device_or_fifo_is_an_error_never_read() {
        let (t, d) = dir_with(&[], &format!("{HELLO}  zero\n"));
        std::os::unix::fs::symlink("/dev/zero", t.path().join("zero")).unwrap();
        let err = verify(&d, &mut |_, _| {}).unwrap_err().to_string();
        assert_eq!(err, format!("cannot read {}: a device, not a regular file", t.path().join("zero").display()));
        let (t, d) = dir_with(&[], &format!("{HELLO}  fifo\n"));
        assert!(std::process::Command::new("mkfifo").arg(t.path().join("fifo")).status().unwrap().success());
        let err = verify(&d, &mut |_, _| {}).unwrap_err().to_string();
        assert_eq!(err, format!("cannot read {}: a FIFO, not a regular file", t.path().join("fifo").display()));
    }

    #[test]
    fn all_intact_is_ok() {
        let (_t, d) = dir_with(&[("x", b"hello\n")], &format!("{HELLO}  x\n\n"));
        assert!(verify(&d, &mut |_, _| {}).unwrap().is_ok());
    }

    #[test]
    fn a_malformed_line_is_an_error_naming_file_and_line() {
        let (t, d) = dir_with(&[], &format!("{HELLO}  x\nnot-a-digest  y\n"));
        let err = verify(&d, &mut |_, _| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}:2: not a `<sha256>  <file>` line: \"not-a-digest  y\"", t.path().join("SHA256SUMS").display())
        );
    }
}
