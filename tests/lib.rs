//! `spindle-tests` holds the workspace's integration tests that are about the workspace itself:
//! the dependency invariants of ARCHITECTURE.md (`architecture.rs`) and the house conventions
//! (`conventions.rs`), checked by ordinary `#[test]`s so that a violation fails CI like any bug.
//!
//! Architecture Invariant: nothing here is linked into a product; this library only offers the
//! helpers the tests share (the workspace root, reading files).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

/// The workspace root (this crate sits one level below it).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// A file of the workspace as text, with a panic message naming it (tests only).
pub fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
