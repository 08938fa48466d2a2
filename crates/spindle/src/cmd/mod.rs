//! The binary's half of the crate: flag parsing and one module per command. Only this folder and
//! `main.rs` print to the terminal.

/// `println!` for a command's report: a closed or full standard output is a [`Failure`] the
/// caller returns (`?`), never a panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($t)*).map_err(crate::Failure::stdout)?
    }};
}

pub mod cli;
pub mod common;
pub mod convert;
pub mod data;
pub mod eval;
pub mod flags;
pub mod induce;
pub mod inspect;
pub mod plot;
pub mod prune;

use std::path::{Path, PathBuf};

use spindle::output::{OutputKind, check_output_path};
use spindle::{progress, zoo};

use crate::Failure;

/// A `--model` argument resolved to a directory: an unknown name is a usage error (exit 2); a
/// known one is fetched and converted on first use, with a progress bar.
pub fn resolve_model(arg: &str) -> Result<PathBuf, Failure> {
    let bar = progress::items("preparing the model");
    let resolved = zoo::resolve_model(arg, &zoo::cache_dir(), &mut |done, total| progress::update(&bar, done, total));
    bar.finish_and_clear();
    match resolved {
        Ok(dir) => Ok(dir),
        Err(e @ zoo::ZooError::Unknown { .. }) => Err(Failure::Usage(e.to_string())),
        Err(e) => Err(Failure::Other(e.into())),
    }
}

/// The files and folders a run reads: the model directory, and a corpus given as a path.
pub fn inputs<'a>(model_dir: &'a Path, corpora: &[&'a str]) -> Vec<&'a Path> {
    let mut v = vec![model_dir];
    v.extend(corpora.iter().map(|c| Path::new(*c)).filter(|p| p.exists()));
    v
}

/// Checks every output path of a run before any work (a usage error, exit 2, naming the flag):
/// `--out` (a new directory) and the report files given with their flags.
pub fn check_outputs(out: Option<&Path>, files: &[(&'static str, Option<&Path>)], inputs: &[&Path]) -> Result<(), Failure> {
    let usage = |e: spindle::output::OutputPathError| Failure::Usage(e.to_string());
    if let Some(out) = out {
        check_output_path("--out", out, OutputKind::NewDir, inputs, &[]).map_err(usage)?;
    }
    let others: Vec<&Path> = out.into_iter().collect();
    for (flag, path) in files {
        if let Some(path) = path {
            check_output_path(flag, path, OutputKind::File, inputs, &others).map_err(usage)?;
        }
    }
    Ok(())
}

/// After a run published `out`, a report it was asked for could not be written: remove `out`
/// (the run created it), so that an output is complete with its reports or absent.
pub fn roll_back(out: &Path, err: anyhow::Error) -> Failure {
    match std::fs::remove_dir_all(out) {
        Ok(()) => Failure::Other(err.context(format!("{} was removed, so no output is left without its report", out.display()))),
        Err(io) => Failure::Other(err.context(format!("{} could not be removed either ({io})", out.display()))),
    }
}

/// A corpus that cannot be used: asking for a split the corpus has not is a usage error (exit
/// 2); a file that cannot be read or parsed is a failure (exit 1), as it is for `--ppl`.
pub fn corpus_failure(e: spindle_data::DataError) -> Failure {
    match e {
        e @ spindle_data::DataError::NoCalibrationSplit { .. } => Failure::Usage(e.to_string()),
        e => Failure::Other(e.into()),
    }
}
