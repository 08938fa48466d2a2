//! The hostile-input suite (issue #21): the `spindle` binary run on generated bad models and
//! flags, one family per defect class and more. Every case asserts what a user is promised:
//!
//! - exit code 1 or 2, with exactly one line on stderr, `spindle: error: …`, that names the file,
//!   field, flag or value at fault (a substring each case gives);
//! - no panic or abort (a panic prints "panicked", an abort is a signal, not an exit code);
//! - a finish within [`TIME_BOUND`];
//! - every input file byte-identical afterwards;
//! - nothing left behind: no `--out`, no report, no `.spindle-partial-*` copy.
//!
//! Each bad model is made in a temporary directory from the stories260K checkpoint (converted
//! by the binary itself), so no bad file is committed. Each family runs its mutation under every
//! command it breaks: a config that cannot be resolved breaks every command that opens the model,
//! a non-finite weight only those that read it.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use spindle_model::Weights;
use tch::{Device, Kind, Tensor};

const TIME_BOUND: Duration = Duration::from_secs(120);

/// The binary under test: this build's, or `$SPINDLE_HOSTILE_BIN` (to show which cases an older
/// build fails: run with `SPINDLE_HOSTILE_BIN=OLD/spindle cargo test --test hostile`).
fn bin() -> PathBuf {
    std::env::var_os("SPINDLE_HOSTILE_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_spindle")), PathBuf::from)
}

use common::data;

/// stories260K converted once per test process; each case copies it.
fn stories() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("stories");
        common::convert_stories(&bin(), &out);
        (t, out)
    })
    .1
}

/// A copy of the converted stories260K at `model` (a new folder), for a case to change.
fn copy_stories(model: &Path) {
    std::fs::create_dir(model).unwrap();
    for e in std::fs::read_dir(stories()).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, model.join(p.file_name().unwrap())).unwrap();
    }
}

/// Every file under `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            } else {
                // A link or a device node: what it is, never what it reads as.
                out.insert(p.clone(), format!("{:?} -> {:?}", meta.file_type(), std::fs::read_link(&p).ok()).into_bytes());
            }
        }
    }
    out
}

/// What a bad model is made from: the converted checkpoint, changed.
type Mutation = fn(&Path);

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(v.as_object_mut().unwrap());
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn set(dir: &Path, key: &str, value: serde_json::Value) {
    edit_config(dir, |m| {
        m.insert(key.to_owned(), value);
    });
}

/// Rewrites model.safetensors with `f` applied to the (name, tensor) list.
fn edit_weights(dir: &Path, f: impl FnOnce(&mut Vec<(String, Tensor)>)) {
    let w = Weights::open(dir).unwrap();
    let mut tensors: Vec<(String, Tensor)> = w
        .names()
        .map(|n| {
            let shape = w.shape(n).unwrap().to_vec();
            (n.to_owned(), w.load(n, &shape, Kind::Float, Device::Cpu).unwrap())
        })
        .collect();
    drop(w);
    f(&mut tensors);
    spindle_model::write_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
}

fn is_block_linear(name: &str) -> bool {
    name.contains(".layers.") && name.ends_with("proj.weight")
}

/// One command a mutation is run under: its arguments, with `MODEL`, `OUT` and `JSON` standing
/// for paths in the case's directory.
struct Cmd {
    name: &'static str,
    args: &'static [&'static str],
}

const PRUNE_MAGNITUDE: Cmd = Cmd {
    name: "prune magnitude",
    args: &["prune", "--model", "MODEL", "--method", "magnitude", "--sparsity", "0.5", "--out", "OUT", "--json", "JSON"],
};
const PRUNE_WANDA: Cmd = Cmd {
    name: "prune wanda",
    args: &[
        "prune",
        "--model",
        "MODEL",
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--out",
        "OUT",
        "--json",
        "JSON",
    ],
};
const PRUNE_WANDA_F16: Cmd = Cmd {
    name: "prune wanda f16",
    args: &[
        "prune",
        "--model",
        "MODEL",
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--dtype",
        "float16",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--out",
        "OUT",
    ],
};
const PRUNE_RIA_F16: Cmd = Cmd {
    name: "prune ria f16",
    args: &[
        "prune",
        "--model",
        "MODEL",
        "--method",
        "ria",
        "--sparsity",
        "0.5",
        "--dtype",
        "float16",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--out",
        "OUT",
    ],
};
const PRUNE_SPARSEGPT: Cmd = Cmd {
    name: "prune sparsegpt 2:4",
    args: &["prune", "--model", "MODEL", "--method", "sparsegpt", "--pattern", "2:4", "--nsamples", "2", "--seqlen", "32", "--out", "OUT"],
};
const PRUNE_RIA: Cmd = Cmd {
    name: "prune ria",
    args: &["prune", "--model", "MODEL", "--method", "ria", "--sparsity", "0.5", "--nsamples", "2", "--seqlen", "32", "--out", "OUT"],
};
const PRUNE_OWL: Cmd = Cmd {
    name: "prune wanda owl",
    args: &[
        "prune",
        "--model",
        "MODEL",
        "--method",
        "wanda",
        "--sparsity",
        "0.5",
        "--allocation",
        "owl",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--out",
        "OUT",
    ],
};
const PRUNE_SI: Cmd = Cmd {
    name: "prune magnitude + SI",
    args: &[
        "prune",
        "--model",
        "MODEL",
        "--method",
        "magnitude",
        "--sparsity",
        "0.5",
        "--induce",
        "distribution,feature",
        "--feature-epochs",
        "1",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--out",
        "OUT",
    ],
};
const INDUCE: Cmd =
    Cmd { name: "induce", args: &["induce", "--model", "MODEL", "--nsamples", "2", "--seqlen", "32", "--out", "OUT", "--json", "JSON"] };
const EVAL: Cmd = Cmd {
    name: "eval",
    args: &["eval", "--model", "MODEL", "--ppl", "wikitext2", "--seqlen", "32", "--max-windows", "2", "--json", "JSON"],
};
const INSPECT: Cmd = Cmd { name: "inspect", args: &["inspect", "MODEL", "--json", "JSON"] };

/// Every command that opens the model.
const ALL: &[Cmd] = &[PRUNE_MAGNITUDE, PRUNE_WANDA, PRUNE_SPARSEGPT, PRUNE_RIA, PRUNE_OWL, PRUNE_SI, INDUCE, EVAL, INSPECT];
/// Every command that runs the model's forward pass on calibration data.
const CALIBRATED: &[Cmd] = &[PRUNE_WANDA, PRUNE_SPARSEGPT, PRUNE_RIA, PRUNE_OWL, PRUNE_SI, INDUCE];

/// Runs `mutation` under each of `cmds`, asserting the suite's promises; `names` must occur in
/// the one error line. Returns how many cases ran.
fn family(mutation: Mutation, cmds: &[Cmd], names: &str) -> usize {
    family_at(mutation, cmds, names, |t, _| t.join("report.json"))
}

/// Where `JSON` points, from the case's directory and its model directory.
type JsonAt = fn(&Path, &Path) -> PathBuf;

/// [`family`] with the report path chosen by `json_at`.
fn family_at(mutation: Mutation, cmds: &[Cmd], names: &str, json_at: JsonAt) -> usize {
    let mut failures = Vec::new();
    for cmd in cmds {
        if let Err(e) = case(mutation, cmd, names, json_at) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cmds.len(), failures.join("\n"));
    cmds.len()
}

fn case(mutation: Mutation, cmd: &Cmd, names: &str, json_at: JsonAt) -> Result<(), String> {
    {
        let t = tempfile::tempdir().unwrap();
        let model = t.path().join("model");
        copy_stories(&model);
        mutation(&model);
        let before = snapshot(t.path());
        let args: Vec<String> = cmd
            .args
            .iter()
            .map(|a| match *a {
                "OUT" => t.path().join("out").display().to_string(),
                "JSON" => json_at(t.path(), &model).display().to_string(),
                "MODEL" => model.display().to_string(),
                a => a.to_owned(),
            })
            .collect();
        let started = Instant::now();
        let mut child = Command::new(bin())
            .args(["--threads", "1", "--data-dir"])
            .arg(data())
            .args(&args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > TIME_BOUND {
                let _ = child.kill();
                panic!("{}: still running after {TIME_BOUND:?}", cmd.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        let what = format!("{names} under `{}`", cmd.name);
        let check = |ok: bool, why: String| if ok { Ok(()) } else { Err(format!("{what}: {why}")) };
        check(matches!(status.code(), Some(1 | 2)), format!("exit {status:?}, stderr: {stderr}"))?;
        check(!stderr.contains("panicked"), stderr.to_string())?;
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        check(lines.len() == 1, format!("one line expected: {stderr}"))?;
        check(lines[0].starts_with("spindle: error: "), stderr.to_string())?;
        check(lines[0].contains(names), format!("the line does not name {names:?}: {stderr}"))?;
        let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        check(snapshot(t.path()) == before, format!("the inputs changed or something was left: {left:?}"))?;
    }
    Ok(())
}

// ---- config.json that resolves to nonsense -----------------------------------------------------

#[test]
fn config_values_that_make_activations_non_finite_are_refused() {
    family(|d| set(d, "rms_norm_eps", (-1.0).into()), ALL, "rms_norm_eps");
    family(|d| set(d, "rope_theta", 0.into()), ALL, "rope_theta");
    family(|d| set(d, "max_position_embeddings", 0.into()), ALL, "max_position_embeddings");
}

#[test]
fn config_sizes_that_disagree_with_the_weights_are_refused() {
    // F1: a block count no machine could allocate; F14: a block past the count.
    family(|d| set(d, "num_hidden_layers", 1_000_000_000_000u64.into()), ALL, "num_hidden_layers = 1000000000000");
    family(|d| set(d, "num_hidden_layers", 4.into()), ALL, "model.layers.4.");
    family(|d| set(d, "num_hidden_layers", 6.into()), ALL, "block 5 is missing");
    family(|d| set(d, "vocab_size", 0.into()), ALL, "vocab_size");
    family(|d| set(d, "num_key_value_heads", 3.into()), ALL, "num_key_value_heads");
    family(|d| set(d, "hidden_size", 0.into()), ALL, "hidden_size");
}

#[test]
fn configs_that_cannot_be_read_name_the_file_and_key() {
    family(|d| edit_config(d, |m| drop(m.remove("architectures"))), ALL, "architectures");
    family(|d| set(d, "architectures", serde_json::json!(["GPT2LMHeadModel"])), ALL, "GPT2LMHeadModel");
    family(|d| set(d, "hidden_act", "gelu".into()), ALL, "hidden_act");
    family(|d| set(d, "torch_dtype", "int8".into()), ALL, "dtype");
    family(|d| std::fs::write(d.join("config.json"), "{not json").unwrap(), ALL, "config.json");
    family(|d| std::fs::write(d.join("config.json"), "").unwrap(), ALL, "config.json");
}

// ---- weights -----------------------------------------------------------------------------------

#[test]
fn statistics_that_overflow_are_an_error_naming_the_linear_not_an_unpruned_model() {
    // F5: the block linears ×300 overflow float16 activations; Wanda and RIA used to keep every
    // weight (sparsity 0.0556) and exit 0.
    let big: Mutation = |d| {
        edit_weights(d, |ts| {
            for (n, t) in ts.iter_mut() {
                if is_block_linear(n) {
                    *t = &*t * 300.0;
                }
            }
        })
    };
    family(big, &[PRUNE_WANDA_F16, PRUNE_RIA_F16], "is not finite");
    family(big, &[PRUNE_WANDA_F16, PRUNE_RIA_F16], "model.layers.");
}

#[test]
fn activations_that_overflow_float32_stop_every_command_that_runs_the_model() {
    // F4: finite weights ×1e30 overflow the first block's activations in f32 too.
    let huge: Mutation = |d| {
        edit_weights(d, |ts| {
            for (n, t) in ts.iter_mut() {
                if is_block_linear(n) {
                    *t = &*t * 1e30;
                }
            }
        })
    };
    family(huge, CALIBRATED, "is not finite");
    family(huge, &[EVAL], "perplexity at seqlen 32 is not finite");
}

#[test]
fn a_non_finite_weight_is_named() {
    let nan: Mutation = |d| {
        edit_weights(d, |ts| {
            for (n, t) in ts.iter_mut() {
                if n == "model.layers.2.mlp.up_proj.weight" {
                    let _ = t.get(3).get(5).fill_(f64::NAN);
                }
            }
        })
    };
    family(nan, &[PRUNE_MAGNITUDE, EVAL], "model.layers.2.mlp.up_proj.weight` holds NaN");
    family(nan, CALIBRATED, "model.layers.2.mlp.up_proj.weight` holds NaN");
}

#[test]
fn damaged_safetensors_name_the_file() {
    let st = |d: &Path| d.join("model.safetensors");
    // F9's first half: a file cut short before the run (the run-time half is a signal test).
    family(
        |d| {
            let b = std::fs::read(d.join("model.safetensors")).unwrap();
            std::fs::write(d.join("model.safetensors"), &b[..b.len() / 2]).unwrap()
        },
        ALL,
        "model.safetensors",
    );
    family(
        |d| {
            let mut b = std::fs::read(d.join("model.safetensors")).unwrap();
            b[8] = b'[';
            std::fs::write(d.join("model.safetensors"), b).unwrap()
        },
        ALL,
        "model.safetensors",
    );
    family(|d| std::fs::write(d.join("model.safetensors"), [0u8; 4]).unwrap(), ALL, "model.safetensors");
    family(|d| std::fs::remove_file(d.join("model.safetensors")).unwrap(), ALL, "model");
    let _ = st;
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    family(
        |d| edit_weights(d, |ts| ts.retain(|(n, _)| n != "model.layers.1.self_attn.o_proj.weight")),
        &[PRUNE_MAGNITUDE, PRUNE_WANDA, PRUNE_SPARSEGPT, PRUNE_SI, INDUCE, EVAL],
        "model.layers.1.self_attn.o_proj.weight",
    );
    family(
        |d| {
            edit_weights(d, |ts| {
                for (n, t) in ts.iter_mut() {
                    if n == "model.layers.3.mlp.down_proj.weight" {
                        *t = t.narrow(1, 0, 100).contiguous();
                    }
                }
            })
        },
        &[PRUNE_MAGNITUDE, PRUNE_WANDA, PRUNE_SPARSEGPT, PRUNE_SI, INDUCE, EVAL],
        "model.layers.3.mlp.down_proj.weight",
    );
    // (`inspect` describes the files as they are; it does not load the model.)
    family(
        |d| edit_weights(d, |ts| ts.retain(|(n, _)| n != "model.embed_tokens.weight")),
        &ALL[..ALL.len() - 1],
        "model.embed_tokens.weight",
    );
}

#[test]
fn unreadable_tokenizers_are_named_and_never_read_without_bound() {
    family(
        |d| std::fs::write(d.join("tokenizer.json"), "{\"version\": ").unwrap(),
        &[PRUNE_WANDA, PRUNE_SPARSEGPT, PRUNE_SI, INDUCE, EVAL],
        "tokenizer.json",
    );
    family(
        |d| std::fs::remove_file(d.join("tokenizer.json")).unwrap(),
        &[PRUNE_WANDA, PRUNE_SPARSEGPT, PRUNE_SI, INDUCE, EVAL],
        "tokenizer",
    );
    // F10: a tokenizer that is a device node of endless bytes, or a FIFO nobody writes to.
    family(
        |d| {
            std::fs::remove_file(d.join("tokenizer.json")).unwrap();
            std::os::unix::fs::symlink("/dev/zero", d.join("tokenizer.json")).unwrap()
        },
        &[PRUNE_WANDA, EVAL],
        "tokenizer.json",
    );
}

// ---- output paths (F6, F7) ---------------------------------------------------------------------

/// The commands that write a report with `--json`.
const REPORTING: &[Cmd] = &[PRUNE_MAGNITUDE, PRUNE_WANDA, INDUCE, EVAL, INSPECT];

#[test]
fn a_report_never_replaces_an_input_and_bad_report_paths_fail_before_any_work() {
    let none: Mutation = |_| {};
    // F6: `--json MODEL/config.json` used to overwrite the input model's config.
    family_at(none, REPORTING, "inputs are never written", |_, m| m.join("config.json"));
    family_at(none, REPORTING, "inputs are never written", |_, m| m.join("report.json"));
    // F7: a missing folder, a directory, or the --out path itself.
    family_at(none, REPORTING, "does not exist", |t, _| t.join("missing/report.json"));
    family_at(none, REPORTING, "is a directory", |t, _| t.to_path_buf());
    family_at(none, &[PRUNE_MAGNITUDE, PRUNE_WANDA, INDUCE], "collides with the output", |t, _| t.join("out"));
    family_at(none, &[PRUNE_MAGNITUDE, INDUCE], "collides with the output", |t, _| t.join("out/report.json"));
}

// ---- signals (F8) ------------------------------------------------------------------------------

fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".spindle-partial-"))
        .collect()
}

/// A prune that takes a few seconds on stories260K (without `--model` and `--out`).
const SLOW_PRUNE: &[&str] = &[
    "prune",
    "--method",
    "wanda",
    "--sparsity",
    "0.5",
    "--induce",
    "feature",
    "--feature-epochs",
    "8",
    "--nsamples",
    "8",
    "--seqlen",
    "128",
];

/// Starts `args` on `model` with `--out DIR/out`, and returns once its partial output directory
/// exists in `dir`.
fn start_writing(dir: &Path, model: &Path, args: &[&str]) -> std::process::Child {
    let mut child = Command::new(bin())
        .args(["--threads", "1", "--data-dir"])
        .arg(data())
        .args(args)
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(dir.join("out"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while partials(dir).is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it started writing");
        assert!(started.elapsed() < TIME_BOUND, "no partial directory appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Starts `args` (see [`start_writing`]), waits `delay` more, and sends `signal`; returns the
/// exit code and stderr.
fn interrupt_cmd(dir: &Path, signal: &str, delay: Duration, args: &[&str]) -> (Option<i32>, String) {
    let child = start_writing(dir, stories(), args);
    std::thread::sleep(delay);
    assert!(Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// [`interrupt_cmd`] for [`SLOW_PRUNE`].
fn interrupt(dir: &Path, signal: &str, delay: Duration) -> (Option<i32>, String) {
    interrupt_cmd(dir, signal, delay, SLOW_PRUNE)
}

#[test]
fn an_interrupted_run_leaves_no_partial_output_and_a_killed_one_is_swept_next_time() {
    for signal in ["INT", "TERM", "HUP"] {
        for delay in [Duration::ZERO, Duration::from_millis(300)] {
            let t = tempfile::tempdir().unwrap();
            let (code, stderr) = interrupt(t.path(), signal, delay);
            assert_eq!(code, Some(130), "SIG{signal} after {delay:?}: {stderr}");
            assert_eq!(stderr, "spindle: error: interrupted; partial outputs were removed\n", "SIG{signal}");
            assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "SIG{signal} after {delay:?} left {:?}", partials(t.path()));
        }
    }
    // `induce` writes its model the same way.
    for signal in ["INT", "TERM"] {
        let t = tempfile::tempdir().unwrap();
        let (code, stderr) = interrupt_cmd(
            t.path(),
            signal,
            Duration::from_millis(100),
            &["induce", "--induce", "feature", "--feature-epochs", "8", "--nsamples", "8", "--seqlen", "128"],
        );
        assert_eq!(
            (code, stderr.as_str()),
            (Some(130), "spindle: error: interrupted; partial outputs were removed\n"),
            "induce, SIG{signal}"
        );
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "induce, SIG{signal}");
    }
    // SIGKILL cannot be caught: the partial directory stays until the next run writing there.
    let t = tempfile::tempdir().unwrap();
    let (code, _) = interrupt(t.path(), "KILL", Duration::from_millis(100));
    assert_eq!(code, None);
    let left = partials(t.path());
    assert_eq!(left.len(), 1);
    let o = Command::new(bin())
        .args(["--threads", "1", "prune", "--method", "magnitude", "--sparsity", "0.5", "--model"])
        .arg(stories())
        .arg("--out")
        .arg(t.path().join("next"))
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("removed the partial output of a spindle process that no longer runs"));
    assert!(partials(t.path()).is_empty(), "{left:?} was not swept");
}

/// A llama2.c checkpoint of about 150 MB (zeros; vocabulary 512 to match stories260K's tokenizer),
/// large enough that `convert` is still writing when a signal arrives.
fn big_llama2c(path: &Path) {
    use std::io::Write;
    let (dim, hidden, layers, heads, kv, vocab, seq) = (512usize, 1376usize, 12usize, 8usize, 8usize, 512usize, 256usize);
    let hs = dim / heads;
    let floats = vocab * dim + layers * (2 * dim + 2 * dim * dim + 2 * dim * kv * hs + 3 * dim * hidden) + dim + seq * hs;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for v in [dim, hidden, layers, heads, kv, vocab, seq] {
        f.write_all(&(v as i32).to_le_bytes()).unwrap();
    }
    let zeros = vec![0u8; 1 << 20];
    let mut left = floats * 4;
    while left > 0 {
        let n = left.min(zeros.len());
        f.write_all(&zeros[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

#[test]
fn an_interrupted_convert_leaves_no_partial_output() {
    let src = tempfile::tempdir().unwrap();
    let ckpt = src.path().join("big.bin");
    big_llama2c(&ckpt);
    let tok = data().join("models/stories260K/tok512.bin");
    let before = snapshot(src.path());
    for signal in ["INT", "TERM"] {
        for delay in [Duration::ZERO, Duration::from_millis(50)] {
            let t = tempfile::tempdir().unwrap();
            let mut child = Command::new(bin())
                .args(["--threads", "1", "convert"])
                .arg(&ckpt)
                .arg("--tokenizer")
                .arg(&tok)
                .arg("--out")
                .arg(t.path().join("out"))
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let started = Instant::now();
            while partials(t.path()).is_empty() {
                assert!(child.try_wait().unwrap().is_none(), "convert ended before it started writing");
                assert!(started.elapsed() < TIME_BOUND, "no partial directory appeared");
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(delay);
            assert!(Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap().success());
            let o = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                (o.status.code(), stderr.as_ref()),
                (Some(130), "spindle: error: interrupted; partial outputs were removed\n"),
                "convert, SIG{signal} after {delay:?}"
            );
            assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "SIG{signal} after {delay:?} left {:?}", partials(t.path()));
        }
    }
    assert!(snapshot(src.path()) == before, "the input was written");
}

// ---- standard output and flags (F3, F11, F12) --------------------------------------------------

#[test]
fn a_closed_or_full_standard_output_is_no_panic() {
    // F11: `spindle inspect MODEL | head -1`, made deterministic: the reader is gone before the
    // first write (with a live reader the short report could fit the pipe's buffer).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(bin()).arg("inspect").arg(stories()).stdout(writer).output().unwrap();
    assert_eq!(o.status.code(), Some(141), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    // `> /dev/full`.
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let o = Command::new(bin()).arg("inspect").arg(stories()).stdout(full).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "spindle: error: cannot write to standard output: No space left on device (os error 28)\n"
    );
}

#[test]
fn flag_errors_name_what_is_wrong() {
    let run = |args: &[&str]| {
        let o = Command::new(bin()).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // F12: the missing arguments are named: by clap, and where a recipe file may supply them, by
    // the recipe's field and flag.
    assert_eq!(
        run(&["prune", "--model", "x", "--method", "wanda"]),
        (Some(2), "spindle: error: the following required arguments were not provided: --out <OUT> (see `spindle --help`)\n".into())
    );
    assert_eq!(
        run(&["prune", "--model", "x", "--method", "wanda", "--out", "o"]),
        (
            Some(2),
            "spindle: error: prune.sparsity (--sparsity) is missing: give a sparsity (e.g. 0.5) or an N:M pattern (e.g. 2:4)\n".into()
        )
    );
    // `convert` onto an existing --out is a usage error, as it is for `prune` (it exited 1).
    let t = tempfile::tempdir().unwrap();
    let bin = data().join("models/stories260K/stories260K.bin");
    let tok = data().join("models/stories260K/tok512.bin");
    let (code, err) = run(&["convert", bin.to_str().unwrap(), "--tokenizer", tok.to_str().unwrap(), "--out", t.path().to_str().unwrap()]);
    assert_eq!(
        (code, err),
        (
            Some(2),
            format!("spindle: error: --out {}: already exists; spindle writes a new directory and never overwrites\n", t.path().display())
        )
    );
    // A corpus file that cannot be parsed is exit 1 as --calib, as it is as --ppl (it was 2).
    let bad = t.path().join("bad.jsonl");
    std::fs::write(&bad, "{not json\n").unwrap();
    let m = stories().to_str().unwrap();
    let d = data();
    let d = d.to_str().unwrap();
    for args in [
        vec![
            "--data-dir",
            d,
            "prune",
            "--model",
            m,
            "--method",
            "wanda",
            "--sparsity",
            "0.5",
            "--nsamples",
            "2",
            "--seqlen",
            "32",
            "--calib",
            bad.to_str().unwrap(),
            "--out",
            "/nonexistent-out-x",
        ],
        vec!["--data-dir", d, "eval", "--model", m, "--ppl", bad.to_str().unwrap(), "--seqlen", "32"],
    ] {
        let (code, err) = run(&args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(bad.to_str().unwrap()) && err.lines().count() == 1, "{err}");
    }
    // F3: a thread count that would exhaust the stacks.
    let (code, err) = run(&["--threads", "100000", "inspect", "x"]);
    assert_eq!(code, Some(2));
    assert!(err.starts_with("spindle: error: --threads 100000 is more than 4 per core on this machine's "), "{err}");
}

// ---- GGUF conversion (F2, F13) -----------------------------------------------------------------

/// A GGUF metadata value.
enum Kv {
    U32(u32),
    Str(&'static str),
    Strs(Vec<&'static str>),
    Bool(bool),
}

/// A tiny llama GGUF: 2 blocks, hidden 8, 2 heads over 1 KV head, feed-forward 16, vocabulary
/// "a b ab c" with the merge "a b". `edit` changes its metadata and tensors (name, ne, offset
/// shift) before it is written; F32 tensors only.
struct TinyGguf {
    kvs: Vec<(&'static str, Kv)>,
    tensors: Vec<(String, Vec<u64>)>,
    /// Added to each tensor's offset, by name (to make ranges overlap).
    shift: Vec<(String, i64)>,
}

impl TinyGguf {
    fn new() -> TinyGguf {
        let kvs = vec![
            ("general.architecture", Kv::Str("llama")),
            ("llama.block_count", Kv::U32(2)),
            ("llama.embedding_length", Kv::U32(8)),
            ("llama.feed_forward_length", Kv::U32(16)),
            ("llama.attention.head_count", Kv::U32(2)),
            ("llama.attention.head_count_kv", Kv::U32(1)),
            ("llama.context_length", Kv::U32(32)),
            ("tokenizer.ggml.model", Kv::Str("gpt2")),
            ("tokenizer.ggml.pre", Kv::Str("gpt2")),
            ("tokenizer.ggml.tokens", Kv::Strs(vec!["a", "b", "ab", "c"])),
            ("tokenizer.ggml.merges", Kv::Strs(vec!["a b"])),
            ("tokenizer.ggml.bos_token_id", Kv::U32(3)),
            ("tokenizer.ggml.add_bos_token", Kv::Bool(true)),
        ];
        // ne order: the fastest dimension first (HF shape reversed).
        let mut tensors = vec![("token_embd.weight".to_owned(), vec![8, 4]), ("output_norm.weight".to_owned(), vec![8])];
        for i in 0..2 {
            for (n, ne) in [
                ("attn_norm", vec![8]),
                ("ffn_norm", vec![8]),
                ("attn_q", vec![8, 8]),
                ("attn_k", vec![8, 4]),
                ("attn_v", vec![8, 4]),
                ("attn_output", vec![8, 8]),
                ("ffn_gate", vec![8, 16]),
                ("ffn_up", vec![8, 16]),
                ("ffn_down", vec![16, 8]),
            ] {
                tensors.push((format!("blk.{i}.{n}.weight"), ne));
            }
        }
        TinyGguf { kvs, tensors, shift: Vec::new() }
    }

    fn set(&mut self, key: &'static str, v: Kv) {
        self.kvs.retain(|(k, _)| *k != key);
        self.kvs.push((key, v));
    }

    fn bytes(&self) -> Vec<u8> {
        fn s(b: &mut Vec<u8>, x: &str) {
            b.extend((x.len() as u64).to_le_bytes());
            b.extend(x.as_bytes());
        }
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend((self.tensors.len() as u64).to_le_bytes());
        b.extend((self.kvs.len() as u64).to_le_bytes());
        for (k, v) in &self.kvs {
            s(&mut b, k);
            match v {
                Kv::U32(x) => {
                    b.extend(4u32.to_le_bytes());
                    b.extend(x.to_le_bytes());
                }
                Kv::Str(x) => {
                    b.extend(8u32.to_le_bytes());
                    s(&mut b, x);
                }
                Kv::Bool(x) => {
                    b.extend(7u32.to_le_bytes());
                    b.push(u8::from(*x));
                }
                Kv::Strs(xs) => {
                    b.extend(9u32.to_le_bytes());
                    b.extend(8u32.to_le_bytes());
                    b.extend((xs.len() as u64).to_le_bytes());
                    for x in xs {
                        s(&mut b, x);
                    }
                }
            }
        }
        let mut offset = 0u64;
        let mut data = Vec::new();
        for (k, (name, ne)) in self.tensors.iter().enumerate() {
            s(&mut b, name);
            b.extend((ne.len() as u32).to_le_bytes());
            for d in ne {
                b.extend(d.to_le_bytes());
            }
            b.extend(0u32.to_le_bytes()); // F32
            let shift = self.shift.iter().find(|(n, _)| n == name).map_or(0, |(_, s)| *s);
            b.extend(((offset as i64 + shift) as u64).to_le_bytes());
            let n: u64 = ne.iter().product();
            for i in 0..n {
                data.extend((((i + k as u64) % 7) as f32 * 0.1 - 0.3).to_le_bytes());
            }
            offset += n * 4;
            let pad = offset.div_ceil(32) * 32 - offset;
            data.extend(std::iter::repeat_n(0u8, pad as usize));
            offset += pad;
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(data);
        b
    }
}

/// Converts `g` and asserts the suite's promises; `names` must occur in the error line (or,
/// with `None`, the conversion must succeed).
fn convert_case(what: &str, g: &TinyGguf, names: Option<&str>) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("m.gguf");
    std::fs::write(&src, g.bytes()).unwrap();
    let before = snapshot(t.path());
    let out = t.path().join("out");
    let o = Command::new(bin()).arg("convert").arg(&src).arg("--out").arg(&out).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    match names {
        None => {
            assert_eq!(o.status.code(), Some(0), "{what}: {stderr}");
            let m = spindle_model::Model::open(&out, Device::Cpu, Kind::Float).unwrap();
            let ids = Tensor::from_slice(&[3i64, 0, 1, 2]).view([1, 4]);
            assert!(bool::try_from(m.forward(&ids, None).unwrap().isfinite().all()).unwrap());
        }
        Some(names) => {
            assert_eq!(o.status.code(), Some(1), "{what}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            assert!(stderr.starts_with("spindle: error: ") && stderr.contains(names), "{what}: expected {names:?} in {stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
            assert!(
                snapshot(t.path()) == before,
                "{what}: left {:?}",
                std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn a_gguf_that_describes_no_loadable_model_is_refused_before_anything_is_written() {
    convert_case("the valid tiny GGUF", &TinyGguf::new(), None);
    type Edit = Box<dyn Fn(&mut TinyGguf)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        // F2: a divide by zero in the RoPE un-permutation.
        (
            "head_count_kv 0",
            Box::new(|g| g.set("llama.attention.head_count_kv", Kv::U32(0))),
            "llama.attention.head_count_kv: 0 for 2 attention heads",
        ),
        (
            "head_count_kv 3",
            Box::new(|g| g.set("llama.attention.head_count_kv", Kv::U32(3))),
            "llama.attention.head_count_kv: 3 for 2 attention heads",
        ),
        // F13: each used to exit 0 with a model that cannot be loaded.
        ("a missing tensor", Box::new(|g| g.tensors.retain(|(n, _)| n != "blk.1.ffn_up.weight")), "model.layers.1.mlp.up_proj.weight"),
        (
            "a wrong shape",
            Box::new(|g| g.tensors.iter_mut().filter(|(n, _)| n == "blk.0.attn_v.weight").for_each(|(_, ne)| *ne = vec![8, 3])),
            "model.layers.0.self_attn.v_proj.weight",
        ),
        (
            "rope_freqs with one factor for two rotary frequencies",
            Box::new(|g| g.tensors.push(("rope_freqs.weight".into(), vec![1]))),
            "tensor `rope_freqs.weight` holds 1 values, not 2 finite factors of at least 1",
        ),
        (
            "q rows that do not pair up per head",
            Box::new(|g| g.tensors.iter_mut().filter(|(n, _)| n == "blk.0.attn_q.weight").for_each(|(_, ne)| *ne = vec![8, 7])),
            "`blk.0.attn_q.weight` has shape [7, 8], not [2 heads × an even head size, columns]",
        ),
        (
            "a zero dimension",
            Box::new(|g| g.tensors.iter_mut().filter(|(n, _)| n == "blk.0.ffn_down.weight").for_each(|(_, ne)| *ne = vec![16, 0])),
            "model.layers.0.mlp.down_proj.weight",
        ),
        (
            "more tokens than embedding rows",
            Box::new(|g| g.set("tokenizer.ggml.tokens", Kv::Strs(vec!["a", "b", "ab", "c", "d"]))),
            "model.embed_tokens.weight",
        ),
        ("block_count 2^31", Box::new(|g| g.set("llama.block_count", Kv::U32(1 << 31))), "num_hidden_layers"),
        ("block_count 3", Box::new(|g| g.set("llama.block_count", Kv::U32(3))), "block 2 is missing"),
        (
            "duplicate tokens",
            Box::new(|g| g.set("tokenizer.ggml.tokens", Kv::Strs(vec!["a", "b", "a", "c"]))),
            "tokenizer.ggml.tokens lists \"a\" twice",
        ),
        (
            "a merge of unknown tokens",
            Box::new(|g| g.set("tokenizer.ggml.merges", Kv::Strs(vec!["a b", "x y"]))),
            "tokenizer.ggml.merges entry 1",
        ),
        ("a merge without a space", Box::new(|g| g.set("tokenizer.ggml.merges", Kv::Strs(vec!["ab"]))), "tokenizer.ggml.merges entry 0"),
        (
            "a merge whose result is not a token",
            Box::new(|g| g.set("tokenizer.ggml.merges", Kv::Strs(vec!["b a"]))),
            "tokenizer.ggml.merges entry 0",
        ),
        ("BOS out of range", Box::new(|g| g.set("tokenizer.ggml.bos_token_id", Kv::U32(9))), "tokenizer.ggml.bos_token_id"),
        ("overlapping tensors", Box::new(|g| g.shift.push(("output_norm.weight".into(), -32))), "overlap"),
        ("no tokens", Box::new(|g| g.set("tokenizer.ggml.tokens", Kv::Strs(vec![]))), ""),
        (
            "an architecture spindle does not convert",
            Box::new(|g| g.set("general.architecture", Kv::Str("falcon"))),
            "general.architecture: \"falcon\" (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)",
        ),
        (
            "a tokenizer model spindle does not know",
            Box::new(|g| g.set("tokenizer.ggml.model", Kv::Str("bert"))),
            "tokenizer.ggml.model: \"bert\"",
        ),
        (
            "a SentencePiece vocabulary without scores",
            Box::new(|g| g.set("tokenizer.ggml.model", Kv::Str("llama"))),
            "metadata key `tokenizer.ggml.scores` is missing",
        ),
        (
            "experts declared, dense MLP tensors stored",
            Box::new(|g| {
                g.set("llama.expert_count", Kv::U32(2));
                g.set("llama.expert_used_count", Kv::U32(1));
            }),
            "`blk.0.ffn_gate.weight` has no Hugging Face mixtral counterpart",
        ),
    ];
    for (what, edit, names) in cases {
        let mut g = TinyGguf::new();
        edit(&mut g);
        convert_case(what, &g, Some(names));
    }
}

#[test]
fn a_checkpoint_truncated_during_a_prune_is_an_error_naming_it() {
    // F9: the input used to be memory-mapped, and the prune died of SIGBUS (exit 135).
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("model");
    copy_stories(&model);
    let child = start_writing(t.path(), &model, SLOW_PRUNE);
    let st = model.join("model.safetensors");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&st).unwrap().set_len(len / 2).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{}: not a valid safetensors file: tensor `", st.display())) && stderr.contains("was the file truncated"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["model"]);
}
