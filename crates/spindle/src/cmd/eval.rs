//! `spindle eval --model MODEL [--ppl ...] [--tasks ...]`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use serde_json::Value;
use spindle::{output, progress, zoo};
use spindle_data::Tokenizer;
use spindle_data::cache::TokenCache;
use spindle_data::corpus::{Corpus, eval_tokens};
use spindle_eval::{PplConfig, Scoring, TaskConfig};
use spindle_model::{Model, Runtime};
use tch::Kind;

use crate::Failure;
use crate::cmd::cli::EvalArgs;

/// `spindle eval --json`: the report, field for field.
#[derive(Serialize)]
struct EvalJson<'a> {
    model: &'a str,
    model_dir: &'a Path,
    /// The hub commit the model directory is a snapshot of (`--model ORG/NAME[@REVISION]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    model_commit: Option<String>,
    /// Perplexity by corpus.
    perplexity: BTreeMap<String, f64>,
    /// Per corpus, each window's mean cross-entropy × seqlen (the reference's
    /// `neg_log_likelihood`), so the figure of the first k windows is
    /// `exp(Σ first k / (k · seqlen))` without another run.
    perplexity_nlls: BTreeMap<String, Vec<f64>>,
    perplexity_timing: BTreeMap<String, PplTiming>,
    tasks: BTreeMap<String, TaskFigures>,
    task_timing: BTreeMap<String, TaskTiming>,
    config: EvalConfigJson<'a>,
}

#[derive(Serialize)]
struct PplTiming {
    windows: usize,
    /// The windows the whole corpus has (more than `windows` under `--max-windows`).
    of_windows: usize,
    seconds: f64,
    tokens_per_second: f64,
}

/// A task's figures, with lm-evaluation-harness's standard errors.
#[derive(Serialize)]
struct TaskFigures {
    acc: f64,
    acc_norm: Option<f64>,
    /// `None` for fewer than two items.
    acc_stderr: Option<f64>,
    acc_norm_stderr: Option<f64>,
    majority: f64,
    n: usize,
    version: u32,
}

#[derive(Serialize)]
struct TaskTiming {
    items: usize,
    seconds: f64,
    items_per_second: f64,
}

#[derive(Serialize)]
struct EvalConfigJson<'a> {
    seqlen: usize,
    limit: Option<usize>,
    max_windows: Option<usize>,
    batch_size: usize,
    scoring: &'static str,
    dtype: &'static str,
    /// `resident` (every block read once) or `streamed` (by layer, one block at a time), for
    /// perplexity and tasks alike; `perplexity` is the same, under its first name.
    residence: &'static str,
    perplexity: &'static str,
    device: String,
    threads: usize,
    notes: Vec<&'a str>,
}

/// The bytes the model's tensors take in `kind` (what the resident path holds).
fn resident_bytes(dir: &Path, kind: Kind) -> anyhow::Result<u64> {
    let w = spindle_model::Weights::open(dir).with_context(|| format!("reading {}", dir.display()))?;
    let elements: u64 = w.names().filter_map(|n| w.shape(n)).map(|s| s.iter().map(|&d| d as u64).product::<u64>()).sum();
    Ok(elements * kind.elt_size_in_bytes() as u64)
}

fn split_list(s: &Option<String>) -> Vec<String> {
    s.as_deref().map(|s| s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
}

/// BOS, else EOS, from config.json: the token lm-eval puts before an empty context.
fn prefix_token(config: &Value) -> Option<u32> {
    ["bos_token_id", "eos_token_id"].iter().find_map(|k| config.get(*k).and_then(Value::as_u64)).map(|v| v as u32)
}

pub fn run(args: EvalArgs, runtime: Runtime, data_flag: Option<&std::path::Path>) -> Result<(), Failure> {
    let corpora = split_list(&args.ppl);
    let task_names = split_list(&args.tasks);
    if corpora.is_empty() && task_names.is_empty() {
        return Err(Failure::Usage("nothing to evaluate: pass --ppl CORPORA and/or --tasks TASKS".into()));
    }
    let specs = match &args.tasks_dir {
        Some(dir) => spindle_eval::load_specs(dir),
        None => spindle_eval::task::builtin_specs(),
    }
    .map_err(anyhow::Error::from)?;
    for t in &task_names {
        if !specs.contains_key(t) {
            let known: Vec<&str> = specs.keys().map(String::as_str).collect();
            return Err(Failure::Usage(format!("unknown task {t:?} (known: {})", known.join(", "))));
        }
    }
    if args.batch_size == 0 || args.limit == Some(0) || args.seqlen == Some(0) || args.max_windows == Some(0) {
        return Err(Failure::Usage("--batch-size, --limit, --max-windows and --seqlen must be at least 1".into()));
    }
    let data = crate::cmd::data::data_dir(data_flag)?;
    let dir = crate::cmd::resolve_model(&args.model)?;
    let files: Vec<&str> = corpora.iter().map(String::as_str).collect();
    let mut inputs = crate::cmd::inputs(&dir, &files);
    inputs.extend(args.tasks_dir.as_deref());
    crate::cmd::check_outputs(None, &[("--json", args.json.as_deref())], &inputs)?;
    let kind = spindle::recipe::kind_of(crate::cmd::flags::dtype_of(args.dtype), &dir).map_err(anyhow::Error::from)?;
    // Streamed when asked, or when the resident model would take over half the memory available.
    let resident_bytes = resident_bytes(&dir, kind)?;
    let available = spindle::mem::available_bytes();
    let stream = args.stream || available.is_some_and(|a| resident_bytes > a / 2);
    if stream && !args.stream {
        say!(
            "evaluation streamed by layer: the model takes {:.1} GiB in {}, over half of the {:.1} GiB available",
            resident_bytes as f64 / f64::from(1u32 << 30),
            crate::cmd::common::kind_name(kind),
            available.unwrap_or(0) as f64 / f64::from(1u32 << 30)
        );
    }
    let model = Model::open(&dir, runtime.device, kind).with_context(|| format!("loading {}", dir.display()))?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json")).map_err(anyhow::Error::from)?;
    let raw_config: Value = serde_json::from_str(&spindle_io::read_to_string(&dir.join("config.json")).map_err(anyhow::Error::from)?)
        .map_err(anyhow::Error::from)?;
    let context = model.config().max_position_embeddings;
    let seqlen = args.seqlen.unwrap_or(2048.min(context));
    let cache = TokenCache::new(zoo::cache_dir().join("tokens"));

    let mut ppl = BTreeMap::new();
    let mut timing = BTreeMap::new();
    let mut window_nlls = BTreeMap::new();
    let mut notes: Vec<&str> = Vec::new();
    for name in &corpora {
        let Ok(corpus) = name.parse::<Corpus>();
        let (ids, limit, docs, _) = eval_tokens(&corpus, &data, &tokenizer, &cache).map_err(anyhow::Error::from)?;
        if !docs.note.is_empty() && !notes.contains(&docs.note) {
            notes.push(docs.note);
        }
        let mut used = limit.map_or(ids.len(), |per| ids.len().min(per * seqlen));
        let full_windows = used / seqlen;
        if let Some(k) = args.max_windows {
            used = used.min(k * seqlen);
        }
        let bar = progress::items("perplexity");
        let cfg = PplConfig { seqlen, batch_size: args.batch_size };
        let mut update = |d, t| progress::update(&bar, d, t);
        let r = if stream {
            spindle_eval::perplexity_streamed(&model, &ids[..used], cfg, &mut update)
        } else {
            spindle_eval::perplexity(&model, &ids[..used], cfg, &mut update)
        }
        .with_context(|| format!("perplexity on {name}"))?;
        let seconds = r.seconds;
        bar.finish_and_clear();
        let partial = if r.nsamples < full_windows {
            format!("; only the first of {full_windows}: not the protocol's figure")
        } else {
            String::new()
        };
        say!("{name:<12} ppl {:>10.4}   ({} windows of {seqlen}{partial})", r.ppl, r.nsamples);
        ppl.insert(name.clone(), r.ppl);
        window_nlls.insert(name.clone(), r.nlls.clone());
        timing.insert(
            name.clone(),
            PplTiming { windows: r.nsamples, of_windows: full_windows, seconds, tokens_per_second: (r.nsamples * seqlen) as f64 / seconds },
        );
    }

    let mut tasks = BTreeMap::new();
    let mut task_timing = BTreeMap::new();
    if !task_names.is_empty() {
        say!("{:<14} {:>6} {:>8} {:>9}", "task", "n", "acc", "acc_norm");
    }
    for name in &task_names {
        let spec = &specs[name];
        let records = spindle_data::tasks::load(spec.dataset, &data).map_err(anyhow::Error::from)?;
        let rows = records.json_rows().map_err(anyhow::Error::from)?;
        let cfg = TaskConfig {
            limit: args.limit,
            batch_size: args.batch_size,
            max_length: context,
            prefix_token: prefix_token(&raw_config),
            scoring: Scoring::SharedPrefix,
            residence: if stream { spindle_eval::Residence::Streamed } else { spindle_eval::Residence::Resident },
        };
        let bar = progress::items("scoring");
        let r = spindle_eval::evaluate_task(&model, &tokenizer, spec, &rows, cfg, &mut |d, t| progress::update(&bar, d, t))
            .with_context(|| format!("task {name}"))?;
        bar.finish_and_clear();
        let norm = r.acc_norm.map_or("-".to_owned(), |a| format!("{a:.4}"));
        say!("{:<14} {:>6} {:>8.4} {:>9}", r.name, r.n, r.acc, norm);
        tasks.insert(
            name.clone(),
            TaskFigures {
                acc: r.acc,
                acc_norm: r.acc_norm,
                acc_stderr: r.acc_stderr,
                acc_norm_stderr: r.acc_norm_stderr,
                majority: r.majority,
                n: r.n,
                version: r.version,
            },
        );
        task_timing.insert(name.clone(), TaskTiming { items: r.n, seconds: r.seconds, items_per_second: r.n as f64 / r.seconds });
    }
    for note in &notes {
        say!("{note}");
    }
    if let Some(path) = args.json {
        let value = EvalJson {
            model: &args.model,
            model_dir: &dir,
            model_commit: spindle::hub::commit_of(&dir),
            perplexity: ppl,
            perplexity_nlls: window_nlls,
            perplexity_timing: timing,
            tasks,
            task_timing,
            config: EvalConfigJson {
                seqlen,
                limit: args.limit,
                max_windows: args.max_windows,
                batch_size: args.batch_size,
                scoring: "shared-prefix",
                dtype: crate::cmd::common::kind_name(kind),
                residence: if stream { "streamed" } else { "resident" },
                perplexity: if stream { "streamed" } else { "resident" },
                device: crate::cmd::common::device_name(runtime.device),
                threads: runtime.threads,
                notes,
            },
        };
        let value = serde_json::to_value(&value).map_err(anyhow::Error::from)?;
        output::write_json(&path, &value).map_err(anyhow::Error::from)?;
    }
    Ok(())
}
