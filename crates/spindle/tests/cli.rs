//! The `spindle` binary as a user meets it: help, exit codes, one-line errors, JSON output.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::process::{Command, Output};

const SUBCOMMANDS: &[&str] = &["convert", "inspect", "induce", "prune", "eval", "data"];

fn spindle(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(args)
        .current_dir(cwd)
        .env_remove("SPINDLE_DATA")
        .env_remove("RUST_LOG")
        .output()
        .expect("spindle runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A data folder with one intact file, one listed in SHA256SUMS.
fn data_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(t.path().join("data/sub")).unwrap();
    std::fs::write(t.path().join("data/sub/a.txt"), "hello\n").unwrap();
    std::fs::write(t.path().join("data/SHA256SUMS"), "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  sub/a.txt\n")
        .unwrap();
    t
}

#[test]
fn help_works_for_the_binary_and_every_subcommand() {
    let here = Path::new(".");
    let o = spindle(&["--help"], here);
    assert_eq!(o.status.code(), Some(0));
    for sub in SUBCOMMANDS {
        assert!(stdout(&o).contains(sub), "--help lists {sub}");
        let o = spindle(&[sub, "--help"], here);
        assert_eq!(o.status.code(), Some(0), "spindle {sub} --help: {}", stderr(&o));
        assert!(stdout(&o).contains(&format!("Usage: spindle {sub}")), "{}", stdout(&o));
    }
    for sub in ["locate", "verify"] {
        assert_eq!(spindle(&["data", sub, "--help"], here).status.code(), Some(0));
    }
}

#[test]
fn an_unknown_flag_exits_2_with_one_clear_line() {
    let o = spindle(&["data", "verify", "--frobnicate"], Path::new("."));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "spindle: error: unexpected argument '--frobnicate' found (see `spindle --help`)\n");
    assert!(stdout(&o).is_empty());
    let o = spindle(&["frob"], Path::new("."));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn bad_induction_flags_are_usage_errors_before_anything_is_loaded() {
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("out.json");
    let json = json.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["induce", "--model", "m", "--out", "o", "--json", json, "--induce", "scaling"], "--induce: unknown stage \"scaling\""),
        (&["induce", "--model", "m", "--out", "o", "--induce", "none"], "--induce none: nothing to do"),
        (
            &["induce", "--model", "m", "--out", "o", "--induce", "equivalent-snl", "--snl", "none"],
            "induce.equivalent_snl.snl (--snl) must not be none",
        ),
        (&["induce", "--model", "m", "--out", "o", "--si-lr", "0"], "induce.distribution.lr (--si-lr) must be positive and finite, got 0"),
        (
            &[
                "prune",
                "--model",
                "m",
                "--method",
                "wanda",
                "--sparsity",
                "0.5",
                "--out",
                "o",
                "--induce",
                "feature",
                "--feature-epochs",
                "0",
            ],
            "induce.feature.epochs (--feature-epochs) must be at least 1, got 0",
        ),
        (
            &["induce", "--model", "m", "--out", "o", "--pruning-aware", "pruned"],
            "--pruning-aware pruned is now `spindle prune --reconstruct`",
        ),
        (
            &["prune", "--model", "m", "--method", "wanda", "--sparsity", "0.5", "--out", "o", "--recon-epochs", "2"],
            "--recon-epochs is an option of the reconstruction: it needs --reconstruct",
        ),
        (
            &[
                "prune",
                "--model",
                "m",
                "--method",
                "sparsegpt",
                "--sparsity",
                "0.5",
                "--out",
                "o",
                "--induce",
                "distribution",
                "--pruning-aware",
                "mask",
            ],
            "--pruning-aware is an option of the feature stage: it needs --induce ...,feature",
        ),
    ];
    for (args, want) in cases {
        let o = spindle(args, t.path());
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("spindle: error: ") && err.contains(want), "{err}");
        assert!(stdout(&o).is_empty());
    }
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "no output files");
}

#[test]
fn impossible_runtime_requests_are_usage_errors() {
    let t = data_dir();
    let o = spindle(&["--device", "cuda:0", "data", "locate"], t.path());
    assert_eq!(o.status.code(), Some(2));
    if !cfg!(feature = "cuda") {
        assert_eq!(
            stderr(&o),
            "spindle: error: device cuda:0 asked for, but this spindle was built without the `cuda` feature (see README: GPU build)\n"
        );
    }
    let o = spindle(&["--device", "tpu", "data", "locate"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("unknown device \"tpu\""), "{}", stderr(&o));
    let o = spindle(&["--threads", "0", "data", "locate"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "spindle: error: --threads must be at least 1, got 0\n");
}

#[test]
fn data_locate_follows_the_convention() {
    let t = data_dir();
    let o = spindle(&["data", "locate"], t.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{} (from ./data)\n", t.path().join("data").display()));

    let o = Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["data", "locate"])
        .current_dir(t.path())
        .env("SPINDLE_DATA", t.path().join("data/sub"))
        .output()
        .unwrap();
    assert_eq!(stdout(&o), format!("{} (from SPINDLE_DATA)\n", t.path().join("data/sub").display()));

    let o = spindle(&["--data-dir", "missing", "data", "locate"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("spindle: error: data directory {} (from --data-dir) does not exist\n", t.path().join("missing").display())
    );
}

#[test]
fn data_verify_reports_intact_and_damaged_files_with_json() {
    let t = data_dir();
    let json = t.path().join("verify.json");
    let o = spindle(&["data", "verify", "--json", json.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("1 files, 0.0 MiB: all intact in "), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["bytes"], 6);
    assert_eq!(v["files"][0]["path"], "sub/a.txt");
    assert_eq!(v["files"][0]["status"], "ok");

    std::fs::write(t.path().join("data/sub/a.txt"), "changed\n").unwrap();
    let o = spindle(&["data", "verify", "--json", json.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!("spindle: error: 1 of 1 files in {} failed their checksum: sub/a.txt (changed)\n", t.path().join("data").display())
    );
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["files"][0]["status"], "changed");
}

#[test]
fn convert_refuses_what_it_cannot_do_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("notes.txt"), "x").unwrap();
    std::fs::write(t.path().join("m.bin"), "x").unwrap();
    std::fs::create_dir(t.path().join("exists")).unwrap();
    let o = spindle(&["convert", "notes.txt", "--out", "o"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "spindle: error: notes.txt: cannot tell the format; expected a .gguf file or a llama2.c .bin checkpoint\n");
    let o = spindle(&["convert", "m.bin", "--out", "o"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("pass its tokenizer with --tokenizer PATH"), "{}", stderr(&o));
    let o = spindle(&["convert", "m.bin", "--tokenizer", "m.bin", "--out", "o"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).starts_with("spindle: error: converting m.bin: m.bin: "), "{}", stderr(&o));
    assert!(!t.path().join("o").exists(), "no partial output");
}

#[test]
fn inspect_reports_shapes_and_sparsity_as_text_and_json() {
    let t = tempfile::tempdir().unwrap();
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/qwen2");
    let json = t.path().join("inspect.json");
    let o = spindle(&["inspect", golden.to_str().unwrap(), "--json", json.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("architecture: Qwen2ForCausalLM, 2 blocks, hidden 32, heads 4/1 (head_dim 8)"), "{out}");
    assert!(out.contains("block linears: 14 layers, sparsity 0.00%"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["architecture"], "Qwen2ForCausalLM");
    assert_eq!(v["linears"].as_array().unwrap().len(), 14);
    assert_eq!(v["linears"][0]["name"], "model.layers.0.mlp.down_proj.weight");
    assert_eq!(v["linears"][0]["shape"], serde_json::json!([32, 64]));
    let o = spindle(&["inspect", "no-such-model"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "spindle: error: model \"no-such-model\" is neither a model directory, a known name (known: smollm2-135m), nor a hub id ORG/NAME[@REVISION]\n"
    );
}

#[test]
fn data_fetch_validates_then_needs_the_hub_feature() {
    let t = tempfile::tempdir().unwrap();
    let o = spindle(&["data", "fetch", "Salesforce/wikitext", "../../escape.parquet"], t.path());
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "spindle: error: hub dataset Salesforce/wikitext, file ../../escape.parquet: the file must be a relative path inside the repository\n"
    );
    if !cfg!(feature = "hub") {
        let o = spindle(&["data", "fetch", "Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet"], t.path());
        assert_eq!(o.status.code(), Some(2));
        assert!(stderr(&o).contains("built without the `hub` feature"), "{}", stderr(&o));
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    }
}

#[test]
fn a_bad_recipe_file_is_one_usage_line_naming_it_before_anything_is_loaded() {
    let t = tempfile::tempdir().unwrap();
    let p = |name: &str, text: &str| {
        let path = t.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let garbage = p("garbage.toml", "[prune\nmethod = ");
    let unknown = p("unknown.toml", "[prune]\nmethod = \"wanda\"\nsparsity = 0.5\nsparstiy = 0.5\n");
    let value = p("value.toml", "[prune]\nmethod = \"wanda\"\nsparsity = 0.5\n[calibration]\nnsamples = -1\n");
    let range =
        p("range.toml", "[prune]\nmethod = \"wanda\"\nsparsity = 0.5\n[induce]\nstages = [\"feature\"]\n[induce.feature]\nlr = -1.0\n");
    let dir = t.path().to_str().unwrap().to_owned();
    let cases: &[(&str, &str)] = &[
        (&garbage, "--recipe "),
        (&unknown, "unknown field `sparstiy`"),
        (&value, "nsamples"),
        (&range, "induce.feature.lr (--feature-lr) must be positive and finite, got -1"),
        (&dir, "not a regular file"),
        ("/dev/zero", "not a regular file"),
        ("/nonexistent/recipe.toml", "--recipe /nonexistent/recipe.toml: "),
    ];
    for (file, want) in cases {
        let o = spindle(&["prune", "--model", "m", "--recipe", file, "--out", "o"], t.path());
        assert_eq!(o.status.code(), Some(2), "{file}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("spindle: error: ") && err.contains(want), "{file}: {err}");
        if *file != "/dev/zero" && *file != "/nonexistent/recipe.toml" {
            assert!(err.contains(*file) || err.contains("induce.feature.lr"), "names the file: {err}");
        }
    }
    assert!(!t.path().join("o").exists());
}
