//! The binary's half of the crate: flag parsing and one module per command. Only this folder and
//! `main.rs` print to the terminal.

pub mod cli;
pub mod convert;
pub mod data;
pub mod eval;
pub mod induce;
pub mod inspect;
pub mod plot;
pub mod prune;

use std::path::PathBuf;

use spindle::{progress, zoo};

use crate::Failure;

/// A `--model` argument resolved to a directory: an unknown name is a usage error (exit 2); a
/// known one is fetched and converted on first use, with a progress bar.
pub fn resolve_model(arg: &str) -> Result<PathBuf, Failure> {
    let bar = progress::items("converting");
    let resolved = zoo::resolve_model(arg, &zoo::cache_dir(), &mut |done, total| progress::update(&bar, done, total));
    bar.finish_and_clear();
    match resolved {
        Ok(dir) => Ok(dir),
        Err(e @ zoo::ZooError::Unknown { .. }) => Err(Failure::Usage(e.to_string())),
        Err(e) => Err(Failure::Other(e.into())),
    }
}
