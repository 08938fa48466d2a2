//! `cargo xtask bench`: spindle against the Python reference, measured in one run on the same
//! machine with the same thread count, written to `docs/results/bench.md`.
//!
//! Today it measures perplexity-evaluation throughput (tokens/s): `spindle eval --max-windows K`
//! against `tests/reference/bench_ppl.py` (transformers), alternating, `--repeats` times each,
//! reporting medians and their ratio. Only the window loop is timed on either side. The prune,
//! induction and memory figures of the benchmark issue extend this same command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, libtorch, project_root, run_echoed};

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// CPU threads for both sides.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Perplexity windows per measurement.
    #[arg(long, default_value_t = 16)]
    windows: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    seqlen: usize,
    /// Measurements per side (medians are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// The model (a directory or a known name).
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// The Python with the pinned reference packages (tests/golden/requirements.txt); default
    /// $SPINDLE_BENCH_PYTHON, else the golden venv in the cache.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Where the report goes (a .json with the same figures is written beside it).
    #[arg(long, default_value = "docs/results/bench.md")]
    out: PathBuf,
}

fn python(args: &BenchArgs) -> Result<PathBuf> {
    if let Some(p) = &args.python {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("SPINDLE_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = libtorch::cache_dir()?.join("golden-venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    bail!(
        "no reference Python: create a venv with the pinned packages of tests/golden/requirements.txt \
         (e.g. at {}) or pass --python / set SPINDLE_BENCH_PYTHON",
        venv.display()
    )
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("unknown").trim().to_owned();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    json!({"cpu": model, "cores": cores})
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    if args.repeats == 0 || args.windows == 0 || args.threads == 0 {
        bail!("--repeats, --windows and --threads must be at least 1");
    }
    libtorch::ensure()?;
    run_echoed(cargo().args(["build", "--release", "--quiet", "--package", "spindle"]))?;
    let root = project_root();
    let spindle = root.join("target/release/spindle");
    let python = python(args)?;
    let tmp = std::env::temp_dir().join(format!("spindle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let load_before = loadavg();

    let locate = tmp.join("locate.json");
    run_echoed(Command::new(&spindle).args(["data", "locate", "--json"]).arg(&locate))?;
    let data_dir = read_json(&locate)?["data_dir"].as_str().unwrap_or_default().to_owned();

    let threads = args.threads.to_string();
    let (windows, seqlen) = (args.windows.to_string(), args.seqlen.to_string());
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut ppls = (0.0, 0.0);
    for r in 0..args.repeats {
        let j = tmp.join(format!("spindle-{r}.json"));
        run_echoed(
            Command::new(&spindle)
                .args(["--threads", &threads, "eval", "--model", &args.model, "--ppl", "wikitext2", "--seqlen", &seqlen])
                .args(["--max-windows", &windows, "--json"])
                .arg(&j),
        )?;
        let v = read_json(&j)?;
        let model_dir = v["model_dir"].as_str().unwrap_or_default().to_owned();
        ours.push(v["perplexity_timing"]["wikitext2"]["tokens_per_second"].as_f64().context("spindle's JSON lacks tokens_per_second")?);
        ppls.0 = v["perplexity"]["wikitext2"].as_f64().unwrap_or(f64::NAN);

        let j = tmp.join(format!("reference-{r}.json"));
        run_echoed(
            Command::new(&python)
                .arg(root.join("tests/reference/bench_ppl.py"))
                .args(["--model", &model_dir, "--data", &data_dir, "--seqlen", &seqlen, "--windows", &windows, "--threads", &threads, "--json"])
                .arg(&j)
                .env("OMP_NUM_THREADS", &threads),
        )?;
        let v = read_json(&j)?;
        theirs.push(v["tokens_per_second"].as_f64().context("the reference's JSON lacks tokens_per_second")?);
        ppls.1 = v["ppl"].as_f64().unwrap_or(f64::NAN);
    }
    let (a, b) = (median(ours.clone()), median(theirs.clone()));
    let figures = json!({
        "command": format!("cargo xtask bench --threads {} --windows {} --seqlen {} --repeats {}", args.threads, args.windows, args.seqlen, args.repeats),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "model": args.model,
        "ppl_eval": {
            "threads": args.threads, "windows": args.windows, "seqlen": args.seqlen,
            "spindle_tokens_per_second": ours, "reference_tokens_per_second": theirs,
            "spindle_median": a, "reference_median": b, "ratio": a / b,
            "ppl_on_these_windows": {"spindle": ppls.0, "reference": ppls.1},
        },
    });
    let out = root.join(&args.out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out.with_extension("json"), serde_json::to_string_pretty(&figures)? + "\n")?;
    std::fs::write(&out, report(&figures, args))?;
    println!("perplexity evaluation: spindle {a:.0} tokens/s, transformers {b:.0} tokens/s, ratio {:.2}", a / b);
    println!("wrote {}", out.display());
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn report(f: &Value, args: &BenchArgs) -> String {
    let p = &f["ppl_eval"];
    let list = |v: &Value| v.as_array().map(|a| a.iter().map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    format!(
        "# Benchmarks\n\n\
         Written by `{cmd}` (this file and `bench.json` beside it). Both sides run on the same machine in \
         the same invocation, alternating, with the same thread count; medians of {repeats} runs.\n\n\
         Machine: {cpu}, {cores} cores. Load average before / after: {lb} / {la} (a figure taken on a busy \
         machine is slower for both sides, and the ratio is what the run compares).\n\n\
         ## Perplexity evaluation (WikiText-2, fp32, CPU)\n\n\
         {windows} windows of {seqlen} tokens of {model}, {threads} thread(s); only the window loop is timed \
         (model load and tokenization excluded on both sides). The reference is \
         `tests/reference/bench_ppl.py`: transformers with its default attention (sdpa), the \
         SparseGPT/Wanda loop.\n\n\
         | | tokens/s (median) | runs |\n|---|---:|---|\n\
         | spindle | {a:.0} | {ra} |\n| transformers | {b:.0} | {rb} |\n| **ratio spindle / transformers** | **{ratio:.2}** | |\n\n\
         Perplexity over these windows: spindle {pa:.4}, transformers {pb:.4}.\n",
        cmd = f["command"].as_str().unwrap_or_default(),
        repeats = args.repeats,
        cpu = f["machine"]["cpu"].as_str().unwrap_or_default(),
        cores = f["machine"]["cores"],
        lb = f["load_average_before"].as_str().unwrap_or_default(),
        la = f["load_average_after"].as_str().unwrap_or_default(),
        windows = p["windows"],
        seqlen = p["seqlen"],
        model = f["model"].as_str().unwrap_or_default(),
        threads = p["threads"],
        a = p["spindle_median"].as_f64().unwrap_or(f64::NAN),
        b = p["reference_median"].as_f64().unwrap_or(f64::NAN),
        ratio = p["ratio"].as_f64().unwrap_or(f64::NAN),
        ra = list(&p["spindle_tokens_per_second"]),
        rb = list(&p["reference_tokens_per_second"]),
        pa = p["ppl_on_these_windows"]["spindle"].as_f64().unwrap_or(f64::NAN),
        pb = p["ppl_on_these_windows"]["reference"].as_f64().unwrap_or(f64::NAN),
    )
}
