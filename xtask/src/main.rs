//! `cargo xtask`: spindle's task runner.
//!
//! It owns the chores around the Rust code, so that a new user types two commands and nothing
//! else: `cargo xtask reproduce table2` (the main job) and `cargo xtask test` (every test). Both
//! install libtorch first when it is missing (see [`libtorch`]).
//!
//! Architecture Invariant: xtask never links libtorch, nor any `spindle-*` crate. It drives the
//! `spindle` binary and cargo as subprocesses, so `cargo xtask --help` works on a machine where
//! libtorch has never been installed. A test in `tests/architecture.rs` keeps `tch` out of its
//! dependency tree.

mod bench;
mod cache;
mod compare;
mod figure;
mod figures;
mod fuzz;
mod libtorch;
mod report;
mod reproduce;
mod slurm;
mod spec;
mod test;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "spindle's task runner (setup, tests, table reproduction)")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install libtorch 2.13.0 from the PyPI torch wheel into the cache and link it as `.libtorch`.
    ///
    /// Idempotent: a finished install is reused. `cargo xtask test` and `cargo xtask reproduce`
    /// run this step themselves; call it directly only to prepare a machine or to switch to CUDA.
    Setup(libtorch::SetupArgs),
    /// Run every test: installs libtorch if needed, then doctests, then cargo-nextest on the
    /// whole workspace (its summary line is printed last).
    Test(test::TestArgs),
    /// Reproduce one of the paper's tables (the main job): runs cached under results/cache,
    /// the table written to results/<table>.md, .json and .csv.
    Reproduce(reproduce::ReproduceArgs),
    /// Compare a reproduced table with its committed baseline (eval/baselines), cell by cell.
    Compare(compare::CompareArgs),
    /// Benchmark spindle against the Python reference in one run; writes docs/results/bench.md.
    Bench(bench::BenchArgs),
    /// Fuzz every parser of untrusted bytes with cargo-fuzz (nightly); records the runs in
    /// docs/results/fuzz.json and fuzz.md.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup(args) => libtorch::setup(&args).map(|install| {
            println!("libtorch ready: {}", install.display());
        }),
        Task::Test(args) => test::run(&args),
        Task::Reproduce(args) => reproduce::run(&args),
        Task::Compare(args) => compare::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A JSON file, or an error naming it: the one reader of the spindle reports xtask consumes.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The release `spindle` binary that `cargo build --release` writes: under `$CARGO_TARGET_DIR`
/// where that is set (relative to the workspace root, as cargo reads it), else `target/`.
pub(crate) fn release_binary(root: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()).map(PathBuf::from) {
        Some(d) if d.is_relative() => root.join(d),
        Some(d) => d,
        None => root.join("target"),
    };
    target.join("release").join("spindle")
}

/// `cargo` as cargo itself was invoked (the `CARGO` variable), else the one on PATH.
pub(crate) fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root());
    cmd
}

/// Runs `cmd`, echoing it first; fails with the command line and exit status when it fails.
pub(crate) fn run_echoed(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {}", shown.replace('"', ""));
    let status = cmd.status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}
