//! `cargo xtask reproduce <table>`: the main job.
//!
//! It reads the table's spec (`eval/tables/<table>.toml`, see [`crate::spec`]), expands the chosen
//! profile into runs (one `spindle prune` and one or more `spindle eval` per model × row ×
//! calibration seed), and executes the runs that are not cached yet with the release `spindle`
//! binary, `--jobs` at a time, under one progress bar.
//!
//! **Cache.** Runs are cached by [`crate::cache`], keyed by everything that determines their
//! figures. An interrupted run keeps what it finished: a pruned model that was completely
//! written is evaluated without pruning again. The thread count is not in the key. Several
//! runners (processes, or the `--jobs` workers of one) may share one cache: each run is claimed
//! by a lock file before it is computed, so none is computed twice at once.
//!
//! **Outputs.** `results/<table>.md` (the `cpu` profile; `results/<table>-<profile>.md` for
//! others), `.json` and `.csv` beside it, rendered from the cache by [`crate::report`] after
//! every finished run, so an interrupted table shows what it has. The Markdown is also printed.
//!
//! **Archive.** `results/runs/<table>/<key>.json` holds finished runs' records (`--archive` writes
//! them; they are small and meant for git). A run the cache lacks and the archive holds is copied
//! into the cache before anything runs or renders: its key hashes everything that determines its
//! figures, code version included, so a checkout at the same code version on a fresh disk renders
//! the table from git, or resumes it where the archive stops.
//!
//! `--dry-run` lists the runs, their keys and whether each is cached, without building anything.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::cache::{Fingerprint, Planned, RunLock, cache_dir, fingerprint, output_stem, plan};
use crate::report;
use crate::spec::{self, Measure, Table};
use crate::{cargo, libtorch, project_root, run_echoed};

#[derive(Debug, clap::Args)]
pub(crate) struct ReproduceArgs {
    /// The table: a spec in eval/tables (table1 perplexity ± SI, table2 zero-shot ± SI, table3 N:M
    /// ± SI, table4 the SI ablation), or the path of a spec of your own (`*.toml`). Results go to
    /// results/ (`$SPINDLE_RESULTS` to put the cache and tables elsewhere); `$SPINDLE_BIN` runs a
    /// spindle binary built elsewhere instead of building the release one.
    table: String,
    /// `cpu` (the converted SmolLM2-135M on a budget that fits a laptop) or `paper` (the paper's
    /// models from $SPINDLE_MODELS, full protocol).
    #[arg(long, default_value = "cpu")]
    profile: String,
    /// Run only this row (repeatable); the table is still written, with the other rows as cached.
    #[arg(long, value_name = "ROW")]
    only: Vec<String>,
    /// List the runs and whether each is cached; build and run nothing.
    #[arg(long)]
    dry_run: bool,
    /// CPU threads for libtorch. One by default: SparseGPT's and Sparsity Induction's figures
    /// change with the thread count (table2 at 1 and 2 threads differed by up to 9 points on a
    /// task), and a table must not depend on the machine's cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Runs at once, each at `--threads` threads: on a machine with N cores, `--jobs N` runs
    /// N one-thread runs side by side.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// The offline data folder (default: $SPINDLE_DATA, else ./data, else ../shared/data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Run only the run with this key (repeatable; the keys `--dry-run` lists): one task of a
    /// job array.
    #[arg(long, value_name = "KEY")]
    run_key: Vec<String>,
    /// Write the table from whatever the cache holds; run nothing.
    #[arg(long)]
    render: bool,
    /// Instead of running, write a script that runs the uncached runs elsewhere:
    /// `slurm` writes results/<table>.slurm.sh, one Slurm array task per run, then a render job.
    #[arg(long, value_enum, value_name = "WHAT")]
    emit: Option<Emit>,
    /// Also keep every finished run's record in results/runs/<table>/<key>.json, to commit: a
    /// checkout at the same code version restores archived runs from there instead of computing
    /// them again (with --render: archive what the cache holds).
    #[arg(long)]
    archive: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Emit {
    Slurm,
}

/// The perplexity of the first `d.windows` windows of `d.corpus`, from an evaluation of every
/// window: `exp(Σ first k nlls / (k · seqlen))`, the sums and the division in f64 exactly as
/// `spindle eval` computes a `--max-windows k` figure.
pub(crate) fn derived_ppl(eval: &Value, d: &crate::spec::Derived) -> Result<f64> {
    let nlls = eval["perplexity_nlls"][&d.corpus].as_array().context("no per-window figures (perplexity_nlls)")?;
    let seqlen = eval["config"]["seqlen"].as_u64().context("no config.seqlen")?;
    if nlls.len() < d.windows {
        bail!("{} windows of {}, fewer than the {} asked for", nlls.len(), d.corpus, d.windows);
    }
    let mut total = 0f64;
    for v in &nlls[..d.windows] {
        total += v.as_f64().context("a per-window figure is not a number")?;
    }
    Ok((total / (d.windows as u64 * seqlen) as f64).exp())
}

/// The data hash of a listing made without a data folder (never a real SHA-256).
const NO_DATA: &str = "none (no data folder)";

pub(crate) fn run(args: &ReproduceArgs) -> Result<()> {
    let root = project_root();
    let table = spec::load(&root, &args.table)?;
    // A listing needs no data folder: the runs are the spec's, only their keys hash the folder.
    // Without one, `--dry-run` lists them with no keys (CI checks the specs this way in a fork).
    let listing_without_data = args.dry_run && crate::cache::data_dir(args.data_dir.as_deref(), &root).is_err();
    let fp = if listing_without_data {
        crate::cache::Fingerprint {
            data_dir: PathBuf::from("(no data folder)"),
            data_hash: NO_DATA.to_owned(),
            code_version: crate::cache::code_version(&root)?,
            kernels: crate::cache::kernels(),
        }
    } else {
        fingerprint(args.data_dir.as_deref(), &root)?
    };
    let mut planned = plan(&table, &args.profile, &args.only, &fp)?;
    let cache = cache_dir(&root);
    let archive = archive_dir(&root, &table.name, &args.profile);
    if args.jobs == 0 || args.threads == 0 {
        bail!("--jobs and --threads must be at least 1");
    }
    if [args.dry_run, args.render, args.emit.is_some()].iter().filter(|&&b| b).count() > 1 {
        bail!("--dry-run, --render and --emit each replace running the table: give one of them");
    }
    if !args.run_key.is_empty() {
        if args.render || args.emit.is_some() {
            bail!("--run-key picks runs to run: it does not go with --render or --emit");
        }
        planned = select_keys(planned, &args.run_key).map_err(|k| {
            anyhow::anyhow!(
                "--run-key {k}: table {} (profile {}) has no such run here (`--dry-run` lists the keys)",
                table.name,
                args.profile
            )
        })?;
    }
    if args.dry_run && args.archive {
        bail!("--archive keeps finished runs: it does not go with --dry-run, which writes nothing");
    }
    if !args.dry_run {
        // Every row's runs, also under --only or --run-key: the table renders them all.
        let n = restore(&plan(&table, &args.profile, &[], &fp)?, &cache, &archive)?;
        if n > 0 {
            eprintln!("restored {n} finished run(s) from {} into the cache", archive.display());
        }
    }
    if args.render {
        let all_planned = plan(&table, &args.profile, &[], &fp)?;
        if args.archive {
            let n = archive_finished(&all_planned, &cache, &archive)?;
            eprintln!("archived {n} more finished run(s) in {}", archive.display());
        }
        let md = report::write(&root, &table, &args.profile, &all_planned, &cache, &fp)?;
        print!("{md}");
        return Ok(());
    }
    if let Some(Emit::Slurm) = args.emit {
        for p in &planned {
            if let Err(e) = &p.source {
                bail!("{}: {e}", p.name());
            }
        }
        let runs: Vec<(String, String)> =
            planned.iter().filter(|p| p.finished(&cache).is_none()).filter_map(|p| p.key.clone().map(|k| (k, p.name()))).collect();
        let text = crate::slurm::script(&crate::slurm::SlurmPlan {
            table: &table.name,
            profile: &args.profile,
            threads: args.threads,
            root: &root,
            data_dir: args.data_dir.as_deref(),
            runs,
            code_version: &fp.code_version,
        });
        let mut path = output_stem(&root, &table.name, &args.profile).into_os_string();
        path.push(".slurm.sh");
        let path = PathBuf::from(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        write_atomic(&path, &text)?;
        println!("wrote {}; submit it with: bash {} submit", path.display(), path.display());
        return Ok(());
    }

    if args.dry_run {
        let data = if listing_without_data {
            "no data folder (pass --data-dir, set SPINDLE_DATA, or place it at ./data or ../shared/data): run keys not shown".to_owned()
        } else {
            format!("data {} ({})", &fp.data_hash[..12], fp.data_dir.display())
        };
        println!(
            "{} ({} profile): {} runs; code {}, {data}, ATen CPU kernels {}",
            table.name,
            args.profile,
            planned.len(),
            &fp.code_version[..12],
            fp.kernels
        );
        for p in &planned {
            let state = match (&p.source, p.finished(&cache)) {
                (Err(e), _) => format!("cannot run: {e}"),
                (Ok(_), Some(_)) => "cached".to_owned(),
                (Ok(_), None) if p.key.as_ref().is_some_and(|k| archive.join(format!("{k}.json")).is_file()) => {
                    format!("archived in {} (restored when run or rendered)", archive.display())
                }
                (Ok(_), None) if p.dir(&cache).is_some_and(|d| d.join("model/config.json").is_file()) => "pruned, to evaluate".to_owned(),
                (Ok(_), None) => "to run".to_owned(),
            };
            let key = if listing_without_data { "-" } else { p.key.as_deref().unwrap_or("-") };
            let seed = p.run.seed.map_or_else(|| "-".to_owned(), |s| s.to_string());
            println!("  {:<14} {:<28} seed {seed:<3} {key:<24}  {state}", p.run.model.id, p.run.row.id);
            if let Ok(src) = &p.source {
                if let Some(r) = &p.run.prune {
                    let text = r.to_toml().map_err(anyhow::Error::from)?;
                    println!(
                        "      spindle prune --model {src} --recipe recipe.toml  # {}",
                        text.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
                    );
                }
                for e in &p.run.evals {
                    println!("      spindle eval --model {} {}", if p.run.prune.is_some() { "<pruned>" } else { src }, e.args.join(" "));
                    for d in &e.derived {
                        println!("        column {}: the first {} windows of {}, from the figures above", d.column, d.windows, d.corpus);
                    }
                }
            }
        }
        return Ok(());
    }

    for p in &planned {
        if let Err(e) = &p.source {
            bail!("{}: {e}", p.name());
        }
    }
    let pending: Vec<&Planned> = planned.iter().filter(|p| p.finished(&cache).is_none()).collect();
    // `$SPINDLE_BIN`: a spindle built elsewhere (a cluster's shared build, a test's debug build);
    // its runs are keyed by this workspace's code version all the same.
    let spindle = match std::env::var_os("SPINDLE_BIN").filter(|v| !v.is_empty()) {
        Some(bin) => PathBuf::from(bin),
        None => {
            if !pending.is_empty() {
                libtorch::ensure()?;
                run_echoed(cargo().args(["build", "--release", "--quiet", "--package", "spindle"]))?;
            }
            crate::release_binary(&root)
        }
    };
    eprintln!(
        "{} ({} profile): {} runs, {} cached, {} to run, {} at a time",
        table.name,
        args.profile,
        planned.len(),
        planned.len() - pending.len(),
        pending.len(),
        args.jobs.min(pending.len().max(1))
    );
    let bar = ProgressBar::new(pending.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{wide_bar}] {pos}/{len} runs, ETA {eta} {msg}")
            .map_err(|e| anyhow::anyhow!("progress template: {e}"))?,
    );
    let all_planned = plan(&table, &args.profile, &[], &fp)?;
    // Workers take the next pending run; the table is rendered after every finished run, one
    // render at a time. A run another runner holds is left to it.
    let queue = Mutex::new(pending.into_iter());
    let render = Mutex::new(());
    let failures: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    let skipped = Mutex::new(0usize);
    let ctx = Ctx { table: &table, spindle: &spindle, cache: &cache, fp: &fp, threads: args.threads, bar: &bar };
    std::thread::scope(|scope| {
        for _ in 0..args.jobs {
            scope.spawn(|| {
                loop {
                    if !failures.lock().map(|f| f.is_empty()).unwrap_or(false) {
                        return;
                    }
                    let Some(p) = queue.lock().ok().and_then(|mut q| q.next()) else { return };
                    let what = p.name();
                    let t0 = Instant::now();
                    match claim_and_execute(p, &ctx) {
                        Ok(Claim::Executed) => {
                            bar.inc(1);
                            let line = format!(
                                "finished {what} in {:.1} min ({}/{})",
                                t0.elapsed().as_secs_f64() / 60.0,
                                bar.position(),
                                bar.length().unwrap_or(0)
                            );
                            // A hidden bar (stderr is not a terminal, as in CI) drops println: say it plainly there.
                            if bar.is_hidden() {
                                eprintln!("{line}")
                            } else {
                                bar.println(line)
                            }
                            let _one = render.lock();
                            let kept = if args.archive { archive_finished(&all_planned, &cache, &archive).map(|_| ()) } else { Ok(()) };
                            if let Err(e) =
                                kept.and_then(|()| report::write(&root, &table, &args.profile, &all_planned, &cache, &fp).map(|_| ()))
                                && let Ok(mut f) = failures.lock()
                            {
                                f.push(e);
                            }
                        }
                        Ok(claim @ (Claim::Held | Claim::DoneElsewhere)) => {
                            bar.inc(1);
                            if let (Claim::Held, Ok(mut n)) = (&claim, skipped.lock()) {
                                *n += 1;
                            }
                            // Only runs computed here are reported as finished (one line per
                            // run across every runner sharing the cache).
                            let line = match claim {
                                Claim::Held => format!("{what}: another runner holds it; left to it"),
                                _ => format!("{what}: another runner finished it"),
                            };
                            if bar.is_hidden() { eprintln!("{line}") } else { bar.println(line) }
                        }
                        Err(e) => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(e.context(format!("run {what}")));
                            }
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    let failures = failures.into_inner().unwrap_or_default();
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    if args.archive {
        // Runs another runner sharing the cache finished are archived here too.
        archive_finished(&all_planned, &cache, &archive)?;
        let n = all_planned.iter().filter(|p| p.key.as_ref().is_some_and(|k| archive.join(format!("{k}.json")).is_file())).count();
        eprintln!("{n} of {} runs archived in {}", all_planned.len(), archive.display());
    }
    let md = report::write(&root, &table, &args.profile, &all_planned, &cache, &fp)?;
    print!("{md}");
    let skipped = skipped.into_inner().unwrap_or(0);
    if skipped > 0 {
        eprintln!("{skipped} run(s) were held by another runner; rerun to render them once they finish");
    }
    Ok(())
}

/// `results/runs/<table>` (`<table>-<profile>` for profiles other than `cpu`): the run archive.
pub(crate) fn archive_dir(root: &Path, table: &str, profile: &str) -> PathBuf {
    let name = if profile == "cpu" { table.to_owned() } else { format!("{table}-{profile}") };
    crate::cache::results_dir(root).join("runs").join(name)
}

/// Copies into the cache every planned run the cache lacks and the archive holds; how many.
/// An archived record whose `key` field is not its file name is an error naming the file, never
/// a run silently taken for another.
fn restore(planned: &[Planned], cache: &Path, archive: &Path) -> Result<usize> {
    let mut n = 0;
    for p in planned {
        let (Some(key), Some(dir)) = (&p.key, p.dir(cache)) else { continue };
        let file = archive.join(format!("{key}.json"));
        if p.finished(cache).is_some() || !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let record: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        if record["key"].as_str() != Some(key.as_str()) {
            bail!("{}: its key field is {}, not {key}, the key its name says", file.display(), record["key"]);
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        write_atomic(&dir.join("run.json"), &text)?;
        n += 1;
    }
    Ok(n)
}

/// Copies every finished planned run the archive lacks into it; how many.
fn archive_finished(planned: &[Planned], cache: &Path, archive: &Path) -> Result<usize> {
    let mut n = 0;
    for p in planned {
        let (Some(key), Some(dir)) = (&p.key, p.dir(cache)) else { continue };
        let (src, dst) = (dir.join("run.json"), archive.join(format!("{key}.json")));
        if dst.is_file() || !src.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
        std::fs::create_dir_all(archive).with_context(|| format!("creating {}", archive.display()))?;
        write_atomic(&dst, &text)?;
        n += 1;
    }
    Ok(n)
}

/// The planned runs whose keys are `keys`, in plan order; the first key no run has is the error.
fn select_keys(planned: Vec<Planned>, keys: &[String]) -> Result<Vec<Planned>, String> {
    if let Some(k) = keys.iter().find(|k| !planned.iter().any(|p| p.key.as_deref() == Some(k.as_str()))) {
        return Err(k.clone());
    }
    Ok(planned.into_iter().filter(|p| p.key.as_ref().is_some_and(|k| keys.contains(k))).collect())
}

/// What every run of one invocation shares.
struct Ctx<'a> {
    table: &'a Table,
    spindle: &'a Path,
    cache: &'a Path,
    fp: &'a Fingerprint,
    threads: usize,
    bar: &'a ProgressBar,
}

/// What became of a pending run.
enum Claim {
    /// Computed here.
    Executed,
    /// Another runner finished it between the plan and the claim.
    DoneElsewhere,
    /// Another runner holds it.
    Held,
}

/// Claims the run and computes it, unless another runner holds it or has finished it.
fn claim_and_execute(p: &Planned, ctx: &Ctx<'_>) -> Result<Claim> {
    let dir = p.dir(ctx.cache).context("the run has no resolved model")?;
    let Some(_lock) = RunLock::take(&dir)? else {
        return Ok(Claim::Held);
    };
    if p.finished(ctx.cache).is_some() {
        return Ok(Claim::DoneElsewhere);
    }
    execute(p, ctx)?;
    Ok(Claim::Executed)
}

/// Shows the step on the bar, or as a line when the bar is hidden.
fn step(bar: &ProgressBar, what: String) {
    if bar.is_hidden() {
        eprintln!("{what}");
    }
    bar.set_message(what);
}

/// Runs `cmd` with its output into `log`; on failure, the error carries the log's last lines.
fn logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file.try_clone()?;
    let shown = format!("{cmd:?}").replace('"', "");
    let status = cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err)).status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{shown} failed with {status}; the end of {}:\n{}", log.display(), tail.join("\n"));
    }
    Ok(())
}

/// `seconds.total` of a finished prune's `--json` report, when a resumed run did not time the
/// prune itself. `None` when the report is missing or lacks it: the run record then says so.
fn reported_prune_seconds(report: &Path) -> Option<f64> {
    crate::read_json(report).ok()?["seconds"]["total"].as_f64()
}

/// Writes `text` to `path` through a temporary file of this process and thread beside it, so
/// that runners writing the same file at once (Slurm array tasks restoring one archive, two
/// `--archive` runners) each rename a whole file of their own into place.
fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let mut name = path.file_name().context("a file path")?.to_os_string();
    name.push(format!(".{}.{:?}.tmp", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The JSON file the `i`-th evaluation of a run writes.
pub(crate) fn eval_file(i: usize) -> String {
    if i == 0 { "eval.json".to_owned() } else { format!("eval-{i}.json") }
}

fn execute(p: &Planned, ctx: &Ctx<'_>) -> Result<()> {
    let (Ok(source), Some(dir)) = (&p.source, p.dir(ctx.cache)) else {
        bail!("the run has no resolved model");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = |cmd: &mut Command| {
        cmd.arg("--threads").arg(ctx.threads.to_string());
        cmd.arg("--data-dir").arg(&ctx.fp.data_dir);
        if ctx.fp.kernels != "native" {
            cmd.env("ATEN_CPU_CAPABILITY", &ctx.fp.kernels);
        }
    };
    let label = match p.run.seed {
        Some(s) => format!("{} seed {s}", p.run.row.id),
        None => p.run.row.id.clone(),
    };
    let model = dir.join("model");
    let t0 = Instant::now();
    let mut prune_seconds = None;
    if let Some(recipe) = &p.run.prune
        && !model.join("config.json").is_file()
    {
        if model.exists() {
            std::fs::remove_dir_all(&model).with_context(|| format!("removing the partial {}", model.display()))?;
        }
        step(ctx.bar, format!("{label}: prune"));
        let mut cmd = Command::new(ctx.spindle);
        base(&mut cmd);
        let recipe_file = dir.join("recipe.toml");
        let text = recipe.to_toml().map_err(anyhow::Error::from)?;
        std::fs::write(&recipe_file, text).with_context(|| format!("writing {}", recipe_file.display()))?;
        cmd.arg("prune").arg("--model").arg(source).arg("--recipe").arg(&recipe_file);
        cmd.arg("--out").arg(&model).arg("--json").arg(dir.join("prune.json"));
        logged(&mut cmd, &dir.join("prune.log"))?;
        prune_seconds = Some(t0.elapsed().as_secs_f64());
    } else if p.run.prune.is_some() {
        // Pruned by an earlier, interrupted runner: its time is in the prune's own report.
        prune_seconds = reported_prune_seconds(&dir.join("prune.json"));
    }
    let mut figures = serde_json::Map::new();
    let mut stderr = serde_json::Map::new();
    let mut majority = serde_json::Map::new();
    let mut eval_seconds = Vec::new();
    for (i, e) in p.run.evals.iter().enumerate() {
        step(ctx.bar, format!("{label}: eval {}/{}", i + 1, p.run.evals.len()));
        let t1 = Instant::now();
        let eval_json = dir.join(eval_file(i));
        let mut cmd = Command::new(ctx.spindle);
        base(&mut cmd);
        cmd.arg("eval").arg("--model");
        if p.run.prune.is_some() {
            cmd.arg(&model)
        } else {
            cmd.arg(source)
        };
        cmd.args(&e.args).arg("--json").arg(&eval_json);
        let log = if i == 0 { "eval.log".to_owned() } else { format!("eval-{i}.log") };
        logged(&mut cmd, &dir.join(log))?;
        eval_seconds.push(t1.elapsed().as_secs_f64());
        let eval = crate::read_json(&eval_json)?;
        for id in &e.columns {
            let c = ctx.table.columns.iter().find(|c| &c.id == id).context("an evaluation names a column the table lacks")?;
            let (v, se, maj) = match &c.measure {
                Measure::Ppl { corpus } => (eval["perplexity"][corpus].as_f64(), None, None),
                Measure::Task { task, metric } => {
                    let t = &eval["tasks"][task];
                    (
                        t[metric.key()].as_f64().map(|a| a * 100.0),
                        t[format!("{}_stderr", metric.key())].as_f64().map(|a| a * 100.0),
                        t["majority"].as_f64().map(|a| a * 100.0),
                    )
                }
            };
            let v = v.with_context(|| format!("{} lacks the figure of column {} ({:?})", eval_json.display(), c.id, c.measure))?;
            figures.insert(c.id.clone(), json!(v));
            if let Some(se) = se {
                stderr.insert(c.id.clone(), json!(se));
            }
            if let Some(m) = maj {
                majority.insert(c.id.clone(), json!(m));
            }
        }
        for d in &e.derived {
            let v = derived_ppl(&eval, d)
                .with_context(|| format!("{}: column {} from its per-window figures", eval_json.display(), d.column))?;
            figures.insert(d.column.clone(), json!(v));
        }
    }
    let record = json!({
        "key": p.key,
        "model": {"id": p.run.model.id, "source": source},
        "row": p.run.row.id,
        "seed": p.run.seed,
        "prune_recipe": p.run.prune,
        "eval_args": p.run.evals.iter().map(|e| e.args.clone()).collect::<Vec<_>>(),
        "figures": figures,
        "stderr": stderr,
        "majority": majority,
        "prune_seconds": prune_seconds,
        "eval_seconds": eval_seconds,
        "threads": ctx.threads,
        // Not part of the key, like the thread count, but a table whose runs span two CPUs may
        // mix BLAS kernels that sum in another order (SparseGPT moved by an ulp between two).
        "machine": crate::bench::machine(),
        "code_version": ctx.fp.code_version,
        "data_hash": ctx.fp.data_hash,
        "kernels": ctx.fp.kernels,
    });
    write_atomic(&dir.join("run.json"), &(serde_json::to_string_pretty(&record)? + "\n"))?;
    if model.exists() {
        std::fs::remove_dir_all(&model).with_context(|| format!("removing {}", model.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_derived_column_is_the_perplexity_of_the_first_windows() {
        let eval = serde_json::json!({"config": {"seqlen": 2}, "perplexity_nlls": {"wikitext2": [1.0, 3.0, 100.0]}});
        let d = |k: usize| crate::spec::Derived { column: "w".into(), corpus: "wikitext2".into(), windows: k };
        assert_eq!(derived_ppl(&eval, &d(2)).unwrap().to_bits(), (4.0f64 / 4.0).exp().to_bits());
        assert!(format!("{:#}", derived_ppl(&eval, &d(4)).unwrap_err()).contains("3 windows of wikitext2, fewer than the 4"));
        let old = serde_json::json!({"config": {"seqlen": 2}, "perplexity": {"wikitext2": 5.0}});
        assert!(format!("{:#}", derived_ppl(&old, &d(2)).unwrap_err()).contains("no per-window figures"));
    }

    use super::*;

    #[test]
    fn a_resumed_run_takes_its_prune_time_from_the_prune_report() {
        let dir = std::env::temp_dir().join(format!("spindle-prune-seconds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("prune.json");
        assert_eq!(reported_prune_seconds(&report), None);
        std::fs::write(&report, r#"{"seconds": {"load": 0.5, "total": 443.25}}"#).unwrap();
        assert_eq!(reported_prune_seconds(&report), Some(443.25));
        std::fs::write(&report, r#"{"seconds": {"load": 0.5}}"#).unwrap();
        assert_eq!(reported_prune_seconds(&report), None);
        std::fs::write(&report, "{ not json").unwrap();
        assert_eq!(reported_prune_seconds(&report), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    const SPEC: &str = r#"
        name = "t"
        version = 1
        title = "t"
        columns = [{ id = "w", label = "W", ppl = "wikitext2" }]
        tolerance = { ppl_rel = 0.01, acc_abs = 1.0 }
        [profiles.cpu]
        description = "d"
        models = [{ id = "m", label = "M", source = "smollm2-135m" }]
        nsamples = 8
        seqlen = 512
        seeds = [0, 1, 2]
        [profiles.paper]
        description = "d"
        models = [{ id = "m", label = "M", source = "smollm2-135m" }]
        nsamples = 8
        seqlen = 512
        [[rows]]
        id = "wanda"
        label = "Wanda"
        method = "wanda"
        sparsity = 0.5
    "#;

    /// `--run-key` keeps exactly the named runs, in plan order, and names the first key no run has.
    #[test]
    fn run_keys_select_single_runs_and_unknown_keys_are_named() {
        let t = spec::parse(SPEC).unwrap();
        let planned = || -> Vec<Planned> {
            t.runs(t.profile("cpu").unwrap())
                .into_iter()
                .enumerate()
                .map(|(i, run)| Planned { run, source: Ok("smollm2-135m".into()), key: Some(format!("key{i}")) })
                .collect()
        };
        let got = select_keys(planned(), &["key2".into(), "key0".into()]).unwrap();
        assert_eq!(
            got.iter().map(|p| (p.key.clone().unwrap(), p.run.seed)).collect::<Vec<_>>(),
            [("key0".into(), Some(0)), ("key2".into(), Some(2))]
        );
        assert_eq!(select_keys(planned(), &["key1".into(), "nope".into()]).err(), Some("nope".to_owned()));
    }

    /// `--archive` copies finished runs (and only those) out of the cache; a fresh cache takes them
    /// back before anything runs; a record under another run's name is refused, naming the file.
    #[test]
    fn archived_runs_come_back_into_an_empty_cache_and_a_misnamed_record_is_refused() {
        let t = spec::parse(SPEC).unwrap();
        let planned: Vec<Planned> = t
            .runs(t.profile("cpu").unwrap())
            .into_iter()
            .enumerate()
            .map(|(i, run)| Planned { run, source: Ok("smollm2-135m".into()), key: Some(format!("key{i}")) })
            .collect();
        let root = std::env::temp_dir().join(format!("spindle-archive-{}", std::process::id()));
        let (cache, archive) = (root.join("cache"), root.join("runs/t"));
        let record = |k: &str| format!("{{\"key\": \"{k}\", \"figures\": {{\"w\": 12.5}}}}\n");
        std::fs::create_dir_all(cache.join("key0")).unwrap();
        std::fs::write(cache.join("key0/run.json"), record("key0")).unwrap();
        // key1 was pruned but not evaluated: not finished, not archived.
        std::fs::create_dir_all(cache.join("key1/model")).unwrap();
        assert_eq!(archive_finished(&planned, &cache, &archive).unwrap(), 1);
        assert_eq!(std::fs::read_to_string(archive.join("key0.json")).unwrap(), record("key0"));
        assert!(!archive.join("key1.json").exists());
        assert_eq!(archive_finished(&planned, &cache, &archive).unwrap(), 0);

        std::fs::remove_dir_all(&cache).unwrap();
        assert_eq!(restore(&planned, &cache, &archive).unwrap(), 1);
        assert_eq!(planned[0].finished(&cache).unwrap()["figures"]["w"], 12.5);
        assert!(planned[1].finished(&cache).is_none());
        assert_eq!(restore(&planned, &cache, &archive).unwrap(), 0);

        std::fs::write(archive.join("key2.json"), record("key1")).unwrap();
        let e = format!("{:#}", restore(&planned, &cache, &archive).unwrap_err());
        assert!(e.contains("key2.json: its key field is \"key1\", not key2"), "{e}");
        assert!(planned[2].finished(&cache).is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// Writers of one file at once each rename a whole file of their own into place: none fails
    /// for another's temporary file, and the file is always one writer's text.
    #[test]
    fn concurrent_atomic_writes_of_one_file_all_succeed() {
        let dir = std::env::temp_dir().join(format!("spindle-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        std::thread::scope(|s| {
            for t in 0..8 {
                let path = &path;
                s.spawn(move || {
                    for i in 0..100 {
                        write_atomic(path, &format!("{{\"writer\": {t}, \"i\": {i}}}\n")).unwrap();
                    }
                });
            }
        });
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["i"], 99);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
