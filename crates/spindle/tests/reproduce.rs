//! `cargo xtask reproduce` interrupted at several points (#21 item 4): during a prune, during an
//! evaluation, between runs, and killed outright; and two runners sharing one cache. Each time the cache holds no partial output and
//! no half-written run, and the resumed table equals an uninterrupted one, figure for figure. The
//! table is a spec of its own on stories260K, run by this package's `spindle` (`$SPINDLE_BIN`)
//! into temporary results folders (`$SPINDLE_RESULTS`).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIME_BOUND: Duration = Duration::from_secs(300);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use common::data;

/// The xtask binary `cargo xtask` runs (built here if this test runs before it ever was).
fn xtask() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let bin = target.join("debug/xtask");
    if !bin.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let ok = Command::new(cargo).current_dir(root()).args(["build", "--quiet", "-p", "xtask"]).status().unwrap();
        assert!(ok.success(), "building xtask");
    }
    bin
}

fn stories(out: &Path) {
    common::convert_stories(Path::new(env!("CARGO_BIN_EXE_spindle")), out);
}

/// Dense, Wanda and Wanda + SI at two calibration seeds: five runs, four of them pruning.
fn spec(dir: &Path, model: &Path) -> PathBuf {
    let profile = |name: &str| {
        format!(
            "[profiles.{name}]\ndescription = \"d\"\nmodels = [{{ id = \"stories\", label = \"stories260K\", source = \"{}\" }}]\n\
             nsamples = 4\nseqlen = 64\nseeds = [0, 1]\nmax_windows = 4\n",
            model.display()
        )
    };
    let text = format!(
        "name = \"interrupt_check\"\nversion = 1\ntitle = \"t\"\ncolumns = [{{ id = \"w\", label = \"W\", ppl = \"wikitext2\" }}]\n\
         tolerance = {{ ppl_rel = 0.01, acc_abs = 1.0 }}\n{}{}\
         [[rows]]\nid = \"dense\"\nlabel = \"Dense\"\nmethod = \"dense\"\n\
         [[rows]]\nid = \"wanda\"\nlabel = \"Wanda\"\nmethod = \"wanda\"\nsparsity = 0.5\n\
         [[rows]]\nid = \"wanda+si\"\nlabel = \"Wanda + SI\"\nmethod = \"wanda\"\nsparsity = 0.5\nbase = \"wanda\"\n\
         si = {{ stages = [\"feature\"] }}\nrecipe = {{ induce = {{ feature = {{ epochs = 4 }} }} }}\n",
        profile("cpu"),
        profile("paper")
    );
    let path = dir.join("interrupt_check.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `cargo xtask reproduce SPEC` into `results`, in a process group of its own.
fn reproduce(spec: &Path, results: &Path) -> std::process::Child {
    reproduce_with(spec, results, &[])
}

/// `cargo xtask reproduce SPEC ARGS...` into `results`, in a process group of its own.
fn reproduce_with(spec: &Path, results: &Path, args: &[&str]) -> std::process::Child {
    Command::new(xtask())
        .current_dir(root())
        .arg("reproduce")
        .arg(spec)
        .args(args)
        .arg("--data-dir")
        .arg(data())
        .env("SPINDLE_RESULTS", results)
        .env("SPINDLE_BIN", env!("CARGO_BIN_EXE_spindle"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap()
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

fn name_is(p: &Path, f: impl Fn(&str) -> bool) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(f)
}

/// The cache's run folders: `(folder, finished)`.
fn runs(results: &Path) -> Vec<(PathBuf, bool)> {
    let Ok(entries) = std::fs::read_dir(results.join("cache")) else { return Vec::new() };
    entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()).map(|p| (p.clone(), p.join("run.json").is_file())).collect()
}

/// Waits until `at(results)` holds, then sends `signal` to the runner's whole process group (as a
/// terminal's Ctrl-C does) and waits for the runner; returns its stderr.
fn interrupt_when(spec: &Path, results: &Path, signal: &str, what: &str, at: impl Fn(&Path) -> bool) -> String {
    let mut child = reproduce(spec, results);
    let started = Instant::now();
    while !at(results) {
        assert!(child.try_wait().unwrap().is_none(), "the table finished before {what}");
        assert!(started.elapsed() < TIME_BOUND, "{what} never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    let group = format!("-{}", child.id());
    assert!(Command::new("kill").arg(format!("-{signal}")).arg("--").arg(&group).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    assert_ne!(o.status.code(), Some(0), "SIG{signal} at {what}: the runner did not stop");
    // The group's spindle has gone too (`kill -0` on the group fails once nobody is left).
    let gone = Instant::now();
    while Command::new("kill").args(["-0", "--", &group]).stderr(Stdio::null()).status().unwrap().success() {
        assert!(gone.elapsed() < TIME_BOUND, "SIG{signal} at {what}: spindle outlived its runner");
        std::thread::sleep(Duration::from_millis(10));
    }
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The figures of a rendered table, without what differs between two runs of it (timings).
fn figures(results: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(results.join("interrupt_check.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.retain(|k, _| !k.contains("seconds") && k != "generated" && k != "threads" && k != "machine");
                m.values_mut().for_each(strip);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut v);
    v
}

#[test]
fn an_interrupted_table_leaves_a_consistent_cache_and_resumes_to_the_same_figures() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let spec = spec(t.path(), &model);

    // The reference: the table run through once.
    let reference = t.path().join("reference");
    let o = reproduce(&spec, &reference).wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(runs(&reference).len(), 5);
    let want = figures(&reference);
    let text = want.to_string();
    assert!(text.contains("wanda+si") && text.contains("\"w\""), "the reference holds every row's figures: {text}");

    let results = t.path().join("results");
    let partial = |r: &Path| walk(r).iter().any(|p| name_is(p, |n| n.starts_with(".spindle-partial-")));
    let evaluating = |r: &Path| runs(r).iter().any(|(d, done)| !done && d.join("eval.log").is_file());
    let finished = |n: usize| move |r: &Path| runs(r).iter().filter(|(_, done)| *done).count() >= n;
    let check = |what: &str| {
        let left: Vec<PathBuf> = walk(&results).into_iter().filter(|p| name_is(p, |n| n.starts_with(".spindle-partial-"))).collect();
        assert!(left.is_empty(), "{what}: partial outputs left: {left:?}");
        for (dir, done) in runs(&results) {
            if done {
                let text = std::fs::read_to_string(dir.join("run.json")).unwrap();
                serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{what}: {}: {e}", dir.display()));
            }
            assert!(!dir.join("model").exists() || dir.join("model/config.json").is_file(), "{what}: a half-written model");
        }
    };
    interrupt_when(&spec, &results, "INT", "the first prune", partial);
    check("SIGINT during a prune");
    interrupt_when(&spec, &results, "TERM", "an evaluation", evaluating);
    check("SIGTERM during an evaluation");
    let done = runs(&results).iter().filter(|(_, d)| *d).count();
    interrupt_when(&spec, &results, "INT", "the end of a run", finished(done + 1));
    check("SIGINT between runs");
    // SIGKILL cannot be caught: its partial directory stays, and the next run sweeps it.
    interrupt_when(&spec, &results, "KILL", "a prune", partial);
    assert!(partial(&results), "SIGKILL leaves its partial directory");
    let o = reproduce(&spec, &results).wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    check("the resumed table");
    assert_eq!(runs(&results).len(), 5);
    assert!(runs(&results).iter().all(|(_, done)| *done));
    assert_eq!(figures(&results), want, "the resumed table differs from the uninterrupted one");

    // Two runners sharing one cache: each run is done once, by one of them, and the table is
    // the same.
    let shared = t.path().join("shared");
    let (a, b) = (reproduce(&spec, &shared), reproduce(&spec, &shared));
    let mut done_by = Vec::new();
    for o in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{err}");
        done_by.push(err.lines().filter(|l| l.starts_with("finished ")).count());
    }
    assert_eq!(done_by.iter().sum::<usize>(), 5, "each run done by exactly one runner: {done_by:?}");
    assert!(runs(&shared).iter().all(|(_, done)| *done) && runs(&shared).len() == 5);
    assert_eq!(figures(&shared), want, "two runners side by side changed the table");

    // The run archive: `--render --archive` keeps each finished run's record in
    // runs/<table>/<key>.json; a results folder holding only that archive lists the runs as
    // archived and renders the same table from it, running nothing (no spindle is reachable).
    let o = reproduce_with(&spec, &shared, &["--render", "--archive"]).wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let archived: Vec<PathBuf> = walk(&shared.join("runs/interrupt_check"));
    assert_eq!(archived.len(), 5, "{archived:?}");
    let fresh = t.path().join("fresh");
    std::fs::create_dir_all(fresh.join("runs/interrupt_check")).unwrap();
    for f in &archived {
        std::fs::copy(f, fresh.join("runs/interrupt_check").join(f.file_name().unwrap())).unwrap();
    }
    let listing = Command::new(xtask())
        .current_dir(root())
        .args(["reproduce".as_ref(), spec.as_os_str(), "--dry-run".as_ref(), "--data-dir".as_ref(), data().as_os_str()])
        .env("SPINDLE_RESULTS", &fresh)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert_eq!(text.matches("archived in").count(), 5, "{text}");
    let o = Command::new(xtask())
        .current_dir(root())
        .args(["reproduce".as_ref(), spec.as_os_str(), "--render".as_ref(), "--data-dir".as_ref(), data().as_os_str()])
        .env("SPINDLE_RESULTS", &fresh)
        .env("SPINDLE_BIN", "/nonexistent/spindle")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("restored 5 finished run(s)"), "{err}");
    assert_eq!(figures(&fresh), want, "the table rendered from the archive differs");
}

/// Every spindle a table runs computes with the pinned ATen kernels: `avx2` unless the caller
/// set `ATEN_CPU_CAPABILITY`, whose value is then used and recorded; runs of other kernels are
/// other runs (another key), since SparseGPT's and SI's figures move with the kernels.
#[cfg(target_arch = "x86_64")]
#[test]
fn every_run_computes_with_the_pinned_aten_kernels() {
    use std::os::unix::fs::PermissionsExt;
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let spec = spec(t.path(), &model);
    let log = t.path().join("kernels.log");
    let wrapper = t.path().join("spindle-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"${{ATEN_CPU_CAPABILITY-unset}}\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            env!("CARGO_BIN_EXE_spindle")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |results: &Path, kernels: Option<&str>| {
        let mut c = Command::new(xtask());
        c.current_dir(root()).arg("reproduce").arg(&spec).args(["--only", "wanda", "--data-dir"]).arg(data());
        c.env("SPINDLE_RESULTS", results).env("SPINDLE_BIN", &wrapper).env_remove("RUST_LOG").env_remove("ATEN_CPU_CAPABILITY");
        if let Some(k) = kernels {
            c.env("ATEN_CPU_CAPABILITY", k);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let lines = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        let recorded: Vec<serde_json::Value> = runs(results)
            .iter()
            .map(|(dir, _)| serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap())
            .collect();
        (lines, recorded)
    };
    let (lines, recorded) = run(&t.path().join("pinned"), None);
    // Two seeds, a prune and an evaluation each.
    assert_eq!(lines, "avx2\n".repeat(4));
    assert!(recorded.len() == 2 && recorded.iter().all(|r| r["kernels"] == "avx2"), "{recorded:?}");
    let (lines, other) = run(&t.path().join("chosen"), Some("default"));
    assert_eq!(lines, "default\n".repeat(4));
    assert!(other.iter().all(|r| r["kernels"] == "default"), "{other:?}");
    let keys = |v: &[serde_json::Value]| v.iter().map(|r| r["key"].as_str().unwrap().to_owned()).collect::<std::collections::BTreeSet<_>>();
    assert!(keys(&recorded).is_disjoint(&keys(&other)), "runs of other kernels are other runs");
}
