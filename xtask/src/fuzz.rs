//! `cargo xtask fuzz [--minutes N] [--only TARGET]`: coverage-guided fuzzing of every parser of
//! untrusted bytes (#21) with cargo-fuzz (libFuzzer, nightly toolchain), the targets in `fuzz/`.
//!
//! Seed corpora are made from the fixtures (the tiny checkpoints of `tests/golden/`, the GGUF
//! fixture, stories260K, the task specs, the data folder's SHA256SUMS) into `fuzz/corpus/<target>/`,
//! which libFuzzer then grows. Each run is appended to `docs/results/fuzz.json` (target, seconds,
//! executions, coverage, crashes) and `docs/results/fuzz.md` is rewritten from all of them, so
//! the total time each target has had is on record. A crash stops with its artifact's path: it
//! becomes a regression test.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::project_root;

/// The fuzz targets, as `fuzz/Cargo.toml` names them.
pub(crate) const TARGETS: &[&str] =
    &["safetensors", "safetensors_index", "gguf", "llama2c_model", "llama2c_tokenizer", "config_json", "task_toml", "sha256sums", "recipe"];

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Minutes per target.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Fuzz only this target (repeatable).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    only: Vec<String>,
    /// Offline data folder, for seeds (default: $SPINDLE_DATA, else ./data, else ../shared/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// One target's run, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct FuzzRun {
    target: String,
    /// Seconds since the Unix epoch when the run ended.
    unix_time: u64,
    seconds: f64,
    executions: u64,
    /// libFuzzer's final `cov:` (edges) and `ft:` (features).
    coverage: u64,
    features: u64,
    corpus: u64,
    crashed: bool,
    machine: String,
}

fn copy_seed(from: &Path, dir: &Path, name: &str) -> Result<()> {
    if from.is_file() {
        std::fs::copy(from, dir.join(name)).with_context(|| format!("copying the seed {}", from.display()))?;
    }
    Ok(())
}

/// Fills `fuzz/corpus/<target>/` with seeds from the fixtures (kept across runs: libFuzzer adds
/// what it finds).
fn seed(root: &Path, data: &Path, target: &str) -> Result<PathBuf> {
    let dir = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let golden = root.join("tests/golden");
    let fixtures = ["llama-gqa", "llama3-rope", "mistral", "qwen2", "opt-pre", "opt-post-proj"];
    match target {
        "safetensors" => {
            for f in fixtures {
                copy_seed(&golden.join(f).join("model.safetensors"), &dir, &format!("{f}.safetensors"))?;
            }
        }
        "safetensors_index" => std::fs::write(
            dir.join("index.json"),
            r#"{"metadata":{"total_size":8},"weight_map":{"a.weight":"model-00001-of-00001.safetensors"}}"#,
        )?,
        "gguf" => {
            copy_seed(&golden.join("gguf/tiny.gguf"), &dir, "tiny.gguf")?;
            copy_seed(&golden.join("gguf/kquants.gguf"), &dir, "kquants.gguf")?;
        }
        "llama2c_model" => {
            copy_seed(&data.join("models/stories260K/stories260K.bin"), &dir, "stories260K.bin")?;
            std::fs::write(dir.join("tiny.bin"), tiny_llama2c())?;
        }
        "llama2c_tokenizer" => {
            let tok = data.join("models/stories260K/tok512.bin");
            if tok.is_file() {
                // The target reads the vocabulary size from the first two bytes (512 = 0x0200).
                let mut bytes = vec![0x00, 0x02];
                bytes.extend(std::fs::read(&tok)?);
                std::fs::write(dir.join("tok512"), bytes)?;
            }
        }
        "config_json" => {
            for f in fixtures {
                copy_seed(&golden.join(f).join("config.json"), &dir, &format!("{f}.json"))?;
            }
        }
        "task_toml" => {
            for e in std::fs::read_dir(root.join("eval/tasks"))? {
                let p = e?.path();
                if let Some(name) = p.file_name().and_then(|n| n.to_str()) {
                    copy_seed(&p, &dir, name)?;
                }
            }
        }
        "sha256sums" => copy_seed(&data.join("SHA256SUMS"), &dir, "SHA256SUMS")?,
        "recipe" => {
            std::fs::write(
                dir.join("full.toml"),
                "dtype = \"bfloat16\"\n[calibration]\nsource = \"c4\"\nnsamples = 8\nseqlen = 64\nseed = 3\nbatch_size = 2\n\
                 [prune]\nmethod = \"ria\"\nsparsity = 0.6\nallocation = \"owl\"\n[prune.owl]\nm = 5.0\nlambda = 0.08\n[prune.ria]\nalpha = 0.5\n\
                 [induce]\nstages = [\"distribution\", \"equivalent-snl\", \"feature\", \"shift\"]\nsites = \"all\"\n\
                 [induce.distribution]\nstart = \"smoothquant\"\nsmoothquant_alpha = 0.5\nfit = \"reconstruction\"\n[induce.distribution.refine]\nepochs = 1\n\
                 [induce.feature]\npruning_aware = \"off\"\nsnl = \"nuclear\"\n[reconstruct]\nsnl = \"spectral-energy\"\n",
            )?;
            std::fs::write(dir.join("nm.toml"), "[prune]\nmethod = \"sparsegpt\"\npattern = \"2:4\"\n[prune.sparsegpt]\nblocksize = 64\n")?;
        }
        other => bail!("unknown fuzz target {other}"),
    }
    Ok(dir)
}

/// A valid llama2.c checkpoint small enough for libFuzzer's input limit (stories260K is cut to
/// it): dim 8, hidden 16, one layer, 2 heads, vocabulary 512 (shared classifier), 8 positions.
fn tiny_llama2c() -> Vec<u8> {
    let (dim, hidden, layers, heads, kv, vocab, seq) = (8usize, 16usize, 1usize, 2usize, 2usize, 512usize, 8usize);
    let hs = dim / heads;
    let floats = vocab * dim
        + layers * dim
        + 2 * layers * dim * dim
        + 2 * layers * dim * kv * hs
        + layers * dim
        + 3 * layers * dim * hidden
        + dim
        + seq * hs;
    let mut b = Vec::new();
    for v in [dim, hidden, layers, heads, kv, vocab, seq] {
        b.extend((v as i32).to_le_bytes());
    }
    for i in 0..floats {
        b.extend(((((i % 13) as f32) - 6.0) * 0.05).to_le_bytes());
    }
    b
}

/// The last value of `key` (e.g. `cov:`) in libFuzzer's output.
fn last_stat(out: &str, key: &str) -> u64 {
    out.lines()
        .rev()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            while let Some(w) = words.next() {
                if w == key {
                    return words.next().and_then(|v| v.parse().ok());
                }
            }
            None
        })
        .unwrap_or(0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    format!("{cpu}, {cores} cores")
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    let root = project_root();
    let data = crate::cache::data_dir(args.data_dir.as_deref(), &root)?;
    let version = Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output();
    if !version.is_ok_and(|o| o.status.success()) {
        bail!("cargo-fuzz on the nightly toolchain is needed: `rustup toolchain install nightly` and `cargo install cargo-fuzz`");
    }
    crate::libtorch::ensure()?;
    let targets: Vec<&str> = if args.only.is_empty() { TARGETS.to_vec() } else { args.only.iter().map(String::as_str).collect() };
    let seconds = (args.minutes * 60.0).round().max(1.0) as u64;
    let record = root.join("docs/results/fuzz.json");
    // Fails early on a record that cannot be read, before any fuzzing time is spent.
    read_record(&record)?;
    let lib = crate::libtorch::lib_dir();
    let mut crashed = Vec::new();
    for target in targets {
        let corpus = seed(&root, &data, target)?;
        println!("fuzzing {target} for {seconds} s");
        let started = std::time::Instant::now();
        let out = Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "fuzz", "run", target])
            .arg(&corpus)
            .args(["--", &format!("-max_total_time={seconds}"), "-rss_limit_mb=4096", "-max_len=65536", "-print_final_stats=1"])
            .env("LD_LIBRARY_PATH", &lib)
            .output()
            .with_context(|| format!("running cargo fuzz for {target}"))?;
        let text = String::from_utf8_lossy(&out.stderr);
        let run = FuzzRun {
            target: target.to_owned(),
            unix_time: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            seconds: started.elapsed().as_secs_f64(),
            executions: last_stat(&text, "stat::number_of_executed_units:"),
            coverage: last_stat(&text, "cov:"),
            features: last_stat(&text, "ft:"),
            corpus: std::fs::read_dir(&corpus).map_or(0, |d| d.count() as u64),
            crashed: !out.status.success(),
            machine: machine(),
        };
        println!(
            "  {} executions, cov {}, ft {}, corpus {}{}",
            run.executions,
            run.coverage,
            run.features,
            run.corpus,
            if run.crashed { ", CRASHED" } else { "" }
        );
        if run.crashed {
            let tail: Vec<&str> = text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect();
            eprintln!("{}", tail.join("\n"));
            crashed.push(target.to_owned());
        }
        append_record(&record, run)?;
    }
    if !crashed.is_empty() {
        bail!("crashes in {} (artifacts under fuzz/artifacts/): make each a regression test", crashed.join(", "));
    }
    Ok(())
}

fn read_record(record: &Path) -> Result<Vec<FuzzRun>> {
    match std::fs::read_to_string(record) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", record.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", record.display())),
    }
}

/// Adds `run` to the record and re-renders the summary, under a lock on the record, re-reading
/// it first: several `cargo xtask fuzz --only ...` side by side (one per core) keep every run.
fn append_record(record: &Path, run: FuzzRun) -> Result<()> {
    let lock_path = record.with_extension("json.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;
    let mut runs = read_record(record)?;
    runs.push(run);
    std::fs::write(record, serde_json::to_string_pretty(&runs)? + "\n")?;
    let md = record.with_extension("md");
    std::fs::write(&md, render(&runs)).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

/// The summary of every recorded run: per target, total time, executions, best coverage.
fn render(runs: &[FuzzRun]) -> String {
    let mut s = String::from(
        "# Fuzzing (#21)\n\nWritten by `cargo xtask fuzz` from `fuzz.json` (every run). Targets in `fuzz/fuzz_targets/`, \
         seeds from the fixtures; coverage is libFuzzer's `cov` (edges) and `ft` (features) at the end of the target's \
         latest run.\n\n| target | runs | minutes in total | executions | cov | ft | corpus | crashes |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for t in TARGETS {
        let mine: Vec<&FuzzRun> = runs.iter().filter(|r| r.target == *t).collect();
        let Some(last) = mine.last() else { continue };
        let minutes: f64 = mine.iter().map(|r| r.seconds).sum::<f64>() / 60.0;
        let execs: u64 = mine.iter().map(|r| r.executions).sum();
        let crashes = mine.iter().filter(|r| r.crashed).count();
        s.push_str(&format!(
            "| {t} | {} | {minutes:.1} | {execs} | {} | {} | {} | {crashes} |\n",
            mine.len(),
            last.coverage,
            last.features,
            last.corpus
        ));
    }
    if let Some(m) = runs.last().map(|r| r.machine.clone()) {
        s.push_str(&format!("\nMachine of the latest run: {m}.\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_llama2c_seed_has_run_c_s_layout() {
        // 7 header ints, then the weights run.c reads (its legacy freq_cis block included).
        assert_eq!(tiny_llama2c().len(), 19196);
    }

    #[test]
    fn libfuzzer_statistics_are_read_from_its_output() {
        let out = "#1024\tpulse  cov: 310 ft: 402 corp: 12/1Kb\n#4096 DONE   cov: 355 ft: 530 corp: 20/3Kb\nstat::number_of_executed_units: 4096\n";
        assert_eq!(last_stat(out, "cov:"), 355);
        assert_eq!(last_stat(out, "ft:"), 530);
        assert_eq!(last_stat(out, "stat::number_of_executed_units:"), 4096);
        assert_eq!(last_stat(out, "nothing:"), 0);
    }

    #[test]
    fn runs_appended_by_two_runners_are_both_kept() {
        let t = tempfile_dir();
        let record = t.join("fuzz.json");
        let run = |target: &str| FuzzRun {
            target: target.to_owned(),
            unix_time: 0,
            seconds: 60.0,
            executions: 1,
            coverage: 2,
            features: 3,
            corpus: 4,
            crashed: false,
            machine: "m".into(),
        };
        // Each runner appends to what is on disk now, not to what it read when it started.
        append_record(&record, run("gguf")).unwrap();
        append_record(&record, run("recipe")).unwrap();
        let runs = read_record(&record).unwrap();
        assert_eq!(runs.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(), ["gguf", "recipe"]);
        assert!(std::fs::read_to_string(t.join("fuzz.md")).unwrap().contains("| recipe | 1 | 1.0 |"));
        std::fs::remove_dir_all(&t).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("spindle-fuzz-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_target_is_in_the_fuzz_manifest_and_has_seeds_named() {
        let manifest = std::fs::read_to_string(project_root().join("fuzz/Cargo.toml")).unwrap();
        for t in TARGETS {
            assert!(manifest.contains(&format!("name = \"{t}\"")), "{t} missing from fuzz/Cargo.toml");
            assert!(project_root().join(format!("fuzz/fuzz_targets/{t}.rs")).is_file(), "{t}.rs");
        }
    }
}
