//! `cargo xtask test`: every test of the workspace, the way CI runs it.
//!
//! Real-model tests (gated on SPINDLE_SLOW_TESTS in the test code, so a plain `cargo test` stays
//! offline) run unless `--quick` is given.
//!
//! Order: libtorch (installed if missing), doctests (`cargo test --doc`, which needs
//! LD_LIBRARY_PATH because rustdoc links its test programs without our rpath), then cargo-nextest
//! over the whole workspace. nextest goes last so its summary line ("N passed") is the last thing
//! printed; its exit status becomes ours.
//!
//! The tests that read the offline data folder (`$SPINDLE_DATA`, `./data`, `../shared/data`, the
//! convention spindle itself follows) run as far as the folder allows, and this says which before
//! nextest starts (`.config/nextest.toml`):
//! - the whole offline folder (it has its `SHA256SUMS`): every test;
//! - a folder holding every file that has a public source (`eval/data_sources.toml`; what
//!   `spindle data fetch --named` builds on a runner without the offline folder): the `hub-data`
//!   profile, which leaves out only the tests that need the re-packaged files no repository holds;
//! - no folder, or one with neither: the `no-data` profile, which leaves out every test that
//!   reads the folder.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, libtorch, project_root, run_echoed};

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

/// The offline data folder by spindle's convention, as the tests resolve it from the workspace
/// root: `$SPINDLE_DATA` (which must exist), else `./data`, else `../shared/data`; `None` when
/// there is none.
fn data_folder(root: &Path) -> Result<Option<PathBuf>> {
    data_folder_with(std::env::var_os("SPINDLE_DATA").as_deref(), root)
}

fn data_folder_with(env: Option<&std::ffi::OsStr>, root: &Path) -> Result<Option<PathBuf>> {
    if let Some(env) = env.filter(|v| !v.is_empty()) {
        let path = root.join(env);
        if !path.is_dir() {
            bail!("SPINDLE_DATA={} does not exist", path.display());
        }
        return Ok(Some(path));
    }
    Ok([root.join("data"), root.join("..").join("shared").join("data")].into_iter().find(|p| p.is_dir()))
}

/// What the tests can read, and so which nextest profile runs them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DataSet {
    /// The offline folder, complete (its SHA256SUMS is there): the default profile.
    Offline(PathBuf),
    /// Every file with a public source and no `SHA256SUMS`: profile `hub-data`.
    Hub(PathBuf),
    /// No folder, or one with neither: profile `no-data`.
    Nothing,
}

impl DataSet {
    fn profile(&self) -> Option<&'static str> {
        match self {
            DataSet::Offline(_) => None,
            DataSet::Hub(_) => Some("hub-data"),
            DataSet::Nothing => Some("no-data"),
        }
    }
}

/// The data-folder paths of `eval/data_sources.toml`'s entries that have a public source.
fn hub_paths(root: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        path: String,
        repo: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Sources {
        file: Vec<Entry>,
    }
    let path = root.join("eval/data_sources.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let sources: Sources = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(sources.file.into_iter().filter(|f| f.repo.is_some()).map(|f| f.path).collect())
}

fn data_set(folder: Option<PathBuf>, hub_paths: &[String]) -> DataSet {
    match folder {
        Some(f) if f.join("SHA256SUMS").is_file() => DataSet::Offline(f),
        Some(f) if !hub_paths.is_empty() && hub_paths.iter().all(|p| f.join(p).is_file()) => DataSet::Hub(f),
        _ => DataSet::Nothing,
    }
}

pub(crate) fn run(args: &TestArgs) -> Result<()> {
    let root = project_root();
    let profile_given = args.nextest_args.iter().any(|a| a == "--profile" || a.starts_with("--profile=") || a == "-P");
    let folder = data_folder(&root)?;
    let data = data_set(folder.clone(), &hub_paths(&root)?);
    let profile = if profile_given { None } else { data.profile() };
    match (&data, profile_given) {
        (_, true) | (DataSet::Offline(_), _) => {}
        (DataSet::Hub(f), false) => eprintln!(
            "{} holds the data files that have a public source but not the offline folder's re-packagings (no SHA256SUMS): \
             running nextest's `hub-data` profile (.config/nextest.toml), which leaves out the tests that need those \
             (stories260K, the C4 sample, PIQA, OpenBookQA, ARC, HellaSwag); nextest counts them as skipped",
            f.display()
        ),
        (DataSet::Nothing, false) => eprintln!(
            "{}: running nextest's `no-data` profile (.config/nextest.toml), which leaves out the tests that read it \
             (stories260K, WikiText-2, C4, PTB, the task sets, SmolLM2); nextest counts them as skipped. \
             `spindle data fetch --named --into data` builds the part of it that has public sources",
            match &folder {
                Some(f) => format!(
                    "the data folder {} has neither the offline folder's SHA256SUMS nor every file that has a public source",
                    f.display()
                ),
                None => format!(
                    "no offline data folder ($SPINDLE_DATA, {}, {})",
                    root.join("data").display(),
                    root.join("../shared/data").display()
                ),
            }
        ),
    }
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
    nextest.args(["nextest", "run", "--workspace", "--no-tests=pass"]);
    if let Some(p) = profile {
        nextest.args(["--profile", p]);
    }
    nextest.args(&args.nextest_args);
    with_env(&mut nextest);
    eprintln!(
        "$ cargo nextest run --workspace --no-tests=pass {}{}",
        profile.map(|p| format!("--profile {p} ")).unwrap_or_default(),
        args.nextest_args.join(" ")
    );
    let status = nextest.status().context("could not start cargo nextest")?;
    // nextest has printed its summary; add nothing after it.
    std::process::exit(status.code().unwrap_or(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_folder_follows_spindles_convention() {
        let t = std::env::temp_dir().join(format!("xtask-data-folder-{}", std::process::id()));
        let root = t.join("work/spindle");
        std::fs::create_dir_all(&root).unwrap();
        assert_eq!(data_folder_with(None, &root).unwrap(), None);
        std::fs::create_dir_all(t.join("work/shared/data")).unwrap();
        assert_eq!(data_folder_with(None, &root).unwrap(), Some(root.join("../shared/data")));
        std::fs::create_dir_all(root.join("data")).unwrap();
        assert_eq!(data_folder_with(None, &root).unwrap(), Some(root.join("data")));
        let elsewhere = t.join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        assert_eq!(data_folder_with(Some(elsewhere.as_os_str()), &root).unwrap(), Some(elsewhere.clone()));
        let err = data_folder_with(Some(std::ffi::OsStr::new("/no/such/folder")), &root).unwrap_err();
        assert_eq!(err.to_string(), "SPINDLE_DATA=/no/such/folder does not exist");
        std::fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn the_profile_follows_what_the_data_folder_holds() {
        let root = project_root();
        let hub = hub_paths(&root).unwrap();
        assert_eq!(hub.len(), 6, "{hub:?}");
        let t = std::env::temp_dir().join(format!("xtask-data-set-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(&t).unwrap();
        assert_eq!(data_set(None, &hub), DataSet::Nothing);
        assert_eq!(data_set(Some(t.clone()), &hub), DataSet::Nothing);
        for p in &hub[1..] {
            std::fs::create_dir_all(t.join(p).parent().unwrap()).unwrap();
            std::fs::write(t.join(p), b"").unwrap();
        }
        assert_eq!(data_set(Some(t.clone()), &hub), DataSet::Nothing, "one hub file missing");
        std::fs::create_dir_all(t.join(&hub[0]).parent().unwrap()).unwrap();
        std::fs::write(t.join(&hub[0]), b"").unwrap();
        assert_eq!(data_set(Some(t.clone()), &hub), DataSet::Hub(t.clone()));
        assert_eq!(DataSet::Hub(t.clone()).profile(), Some("hub-data"));
        std::fs::write(t.join("SHA256SUMS"), b"").unwrap();
        assert_eq!(data_set(Some(t.clone()), &hub), DataSet::Offline(t.clone()));
        assert_eq!(DataSet::Offline(t.clone()).profile(), None);
        std::fs::remove_dir_all(&t).unwrap();
    }
}
