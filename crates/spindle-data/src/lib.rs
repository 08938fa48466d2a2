//! `spindle-data` owns the text that spindle reads: where the offline data lives, what is in it,
//! and (as it grows) how corpora become token streams and calibration windows.
//!
//! The pruning literature compares numbers that depend on exactly which text was scored and which
//! calibration windows were drawn. This crate is where that exactness lives, separate from models
//! and pruners, so a data question ("which 128 windows did seed 0 pick?") is answered without
//! loading a model, and a model question never touches a file format.
//!
//! It holds the data-directory convention ([`DataDir`]), the integrity check of a data directory
//! against its `SHA256SUMS` ([`verify`]), tokenization ([`Tokenizer`], the `tokenizers` crate
//! reading a Hugging Face `tokenizer.json`), string columns of Parquet files
//! ([`parquet::read_string_column`]), the named corpora and the reference loaders' calibration
//! sampling ([`corpus`], drawing with [`pyrandom`]), the token cache ([`cache`]), the zero-shot
//! task records ([`tasks`]) and, behind the `hub` feature, downloads ([`hub`]).
//!
//! Architecture Invariant: spindle-data knows no tensors and no models. It does not link libtorch;
//! it produces text and token ids, and the crates that own tensors turn those into tensors. It
//! draws no progress bars: long work reports through a callback and the binary renders it.
//!
//! ```
//! // The windows a seed picks are Python's: `random.seed(0)` then `randint(0, 100)` three
//! // times gives 49, 97, 53 in CPython, and here.
//! let mut r = spindle_data::pyrandom::PyRandom::new(0);
//! let draws: Vec<i64> = (0..3).map(|_| r.randint(0, 100)).collect::<Result<_, _>>()?;
//! assert_eq!(draws, [49, 97, 53]);
//! # Ok::<(), spindle_data::pyrandom::PyRandomError>(())
//! ```

pub mod cache;
mod checksums;
pub mod corpus;
mod dir;
pub mod hub;
pub mod parquet;
pub mod pyrandom;
pub mod sources;
pub mod tasks;
mod tokenizer;

pub use checksums::{FileCheck, FileStatus, VerifyReport, parse_sums, verify};
pub use dir::{DataDir, DataDirSource, Fetch};
pub use tokenizer::Tokenizer;

use std::path::PathBuf;

/// Everything that can go wrong while locating or reading data; each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The directory given by `--data-dir` or `$SPINDLE_DATA` does not exist.
    #[error("data directory {path} (from {from}) does not exist")]
    MissingDataDir { path: PathBuf, from: DataDirSource },
    /// No flag, no variable, and none of the default places exists.
    #[error("no data directory found: pass --data-dir DIR or set SPINDLE_DATA (looked in {})", .looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoDataDir { looked: Vec<PathBuf> },
    /// A file could not be read.
    #[error("cannot read {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    /// A line of a `SHA256SUMS` file is not `<64 hex digits>  <relative path>`.
    #[error("{path}:{line}: not a `<sha256>  <file>` line: {text:?}")]
    BadChecksumLine { path: PathBuf, line: usize, text: String },
    #[error("{path}:{line}: {file} lies outside the data folder")]
    ChecksumOutside { path: PathBuf, line: usize, file: String },
    /// A corpus file that cannot serve as asked.
    #[error("{path}: {problem}")]
    Corpus { path: PathBuf, problem: String },
    /// Calibration asked of a corpus whose training split is not available offline.
    #[error("{corpus} has no calibration (train) split offline; calibrate on c4 or a file")]
    NoCalibrationSplit { corpus: String },
    /// No document can hold a calibration window.
    #[error(
        "{path}: no document is longer than seqlen {seqlen} tokens (the longest has {longest}); the reference loader would never finish"
    )]
    NoLongDocument { path: PathBuf, seqlen: usize, longest: usize },
    /// A file the data folder lacks, whose origin cannot be fetched.
    #[error("{path}: not in the data folder, and it cannot be fetched: {reason}")]
    NotFetchable { path: PathBuf, reason: String },
    /// A file the data folder lacks, with fetching switched off.
    #[error(
        "{path}: not in the data folder, and HF_HUB_OFFLINE is set, so it is not fetched from hub dataset {repo} ({file}); unset it, or pass --data-dir with a folder that has the file"
    )]
    Offline { path: PathBuf, repo: String, file: String },
    /// A hub download that failed or was refused.
    #[error("hub dataset {repo}, file {file}: {problem}")]
    Hub { repo: String, file: String, problem: String },
    /// A Parquet file that cannot be read as asked.
    #[error("{path}: {problem}")]
    Parquet { path: PathBuf, problem: String },
    /// A `tokenizer.json` that the tokenizers library rejects, or text it cannot encode.
    #[error("{path}: not a usable tokenizer: {problem}")]
    Tokenizer { path: PathBuf, problem: String },
}
