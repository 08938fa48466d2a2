//! `spindle-io` reads the files a user names the way every spindle crate must: only regular
//! files, and never more bytes than such a file can legitimately hold.
//!
//! It exists because a path is hostile input. A `tokenizer.json` that is a link to `/dev/zero`
//! reads forever while memory grows by gigabytes a second, a FIFO nobody writes to blocks
//! forever, and a directory where a file was expected gives an error naming nothing. Every crate
//! that reads a user's small text or binary file (configs, tokenizers, task specs, checksum
//! lists, corpora) goes through [`read`] or [`read_to_string`]; large tensors are memory-mapped
//! by `spindle-model` after the same [`regular_file`] check. It depends on nothing, so the
//! lowest crates can use it.
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("config.json");
//! std::fs::write(&path, "{}")?;
//! assert_eq!(spindle_io::read_to_string(&path)?, "{}");
//! // A device where a file was expected is refused by name, never read.
//! let err = spindle_io::read(std::path::Path::new("/dev/zero")).unwrap_err();
//! assert_eq!(err.to_string(), "a device, not a regular file");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The most a text file spindle reads whole may hold (configs, tokenizers, task specs,
/// checksum lists, one corpus file): 4 GiB. A larger one is refused, never read.
pub const MAX_WHOLE_FILE: u64 = 4 << 30;

/// Opens `path` for reading if it is a regular file (a symbolic link to one is fine); a
/// directory, device, FIFO or socket is an [`io::ErrorKind::InvalidInput`] error that says what
/// it is. The check is made on the opened handle, so a file swapped after a check cannot slip by.
pub fn regular_file(path: &Path) -> io::Result<File> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    // A FIFO swapped in between the check and the open would block in open(); opening
    // non-blocking is not portable here, and the check above makes the window tiny.
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok(file)
}

fn not_regular(meta: &std::fs::Metadata) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let what = if t.is_dir() {
        "a directory"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    io::Error::new(io::ErrorKind::InvalidInput, format!("{what}, not a regular file"))
}

/// The whole of the regular file `path`, if it holds at most `max` bytes.
pub fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = regular_file(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{len} bytes, more than the {max} such a file may hold")));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    // The file may grow while it is read: never take more than `max`.
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("grew past the {max} bytes such a file may hold while it was read"),
        ));
    }
    Ok(bytes)
}

/// [`read_at_most`] with [`MAX_WHOLE_FILE`].
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    read_at_most(path, MAX_WHOLE_FILE)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not UTF-8 text ({e})")))
}

/// The folder an output path will be written into: its parent, or `.` for a bare file name
/// (whose `parent()` is the empty path, which no file-system call accepts).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_is_written_into_the_working_folder() {
        assert_eq!(parent_dir(Path::new("out")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/out")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/out")), Path::new("/"));
    }

    #[test]
    fn only_regular_files_are_read_and_never_past_their_bound() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("a.json");
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(read_to_string(&f).unwrap(), "{}");
        let link = t.path().join("link.json");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert_eq!(read(&link).unwrap(), b"{}");
        assert_eq!(read_at_most(&f, 1).unwrap_err().to_string(), "2 bytes, more than the 1 such a file may hold");

        let zero = t.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert_eq!(read(&zero).unwrap_err().to_string(), "a device, not a regular file");
        assert_eq!(read(t.path()).unwrap_err().to_string(), "a directory, not a regular file");
        let fifo = t.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert_eq!(read(&fifo).unwrap_err().to_string(), "a FIFO, not a regular file");
        std::fs::write(t.path().join("bad.txt"), [0xff, 0xfe]).unwrap();
        assert!(read_to_string(&t.path().join("bad.txt")).unwrap_err().to_string().starts_with("not UTF-8 text"));
    }
}
