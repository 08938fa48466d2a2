//! `cargo xtask test`: every test of the workspace, the way CI runs it.
//!
//! Real-model tests (gated on SPINDLE_SLOW_TESTS in the test code, so a plain `cargo test` stays
//! offline) run unless `--quick` is given.
//!
//! Order: libtorch (installed if missing), doctests (`cargo test --doc`, which needs
//! LD_LIBRARY_PATH because rustdoc links its test programs without our rpath), then cargo-nextest
//! over the whole workspace. nextest goes last so its summary line ("N passed") is the last thing
//! printed; its exit status becomes ours.

use std::ffi::OsString;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{cargo, libtorch, run_echoed};

#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Skip the real-model tests (SmolLM2: a 93 MB download on first use, then ~20 s). Without
    /// this flag they run (SPINDLE_SLOW_TESTS=1), as in CI.
    #[arg(long)]
    quick: bool,
    /// Arguments passed on to `cargo nextest run` (a filter, `--no-fail-fast`, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    nextest_args: Vec<String>,
}

/// LD_LIBRARY_PATH with libtorch's lib folder in front.
fn library_path() -> Result<OsString> {
    let mut paths = vec![libtorch::lib_dir()];
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        paths.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(paths).context("libtorch's path cannot go into LD_LIBRARY_PATH (does it contain ':'?)")
}

fn ensure_nextest() -> Result<()> {
    let present = cargo().args(["nextest", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !present {
        eprintln!("cargo-nextest is not installed: installing it with `cargo install --locked cargo-nextest`");
        run_echoed(cargo().args(["install", "--locked", "cargo-nextest"])).context("installing cargo-nextest")?;
    }
    Ok(())
}

pub(crate) fn run(args: &TestArgs) -> Result<()> {
    libtorch::ensure()?;
    ensure_nextest()?;
    let ld = library_path()?;
    let with_env = |cmd: &mut Command| {
        cmd.env("LD_LIBRARY_PATH", &ld);
        if !args.quick {
            cmd.env("SPINDLE_SLOW_TESTS", "1");
        }
    };

    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc", "--quiet"]);
    with_env(&mut doc);
    run_echoed(&mut doc).context("doctests failed")?;

    let mut nextest = cargo();
    nextest.args(["nextest", "run", "--workspace", "--no-tests=pass"]).args(&args.nextest_args);
    with_env(&mut nextest);
    eprintln!("$ cargo nextest run --workspace --no-tests=pass {}", args.nextest_args.join(" "));
    let status = nextest.status().context("could not start cargo nextest")?;
    // nextest has printed its summary; add nothing after it.
    std::process::exit(status.code().unwrap_or(1));
}
