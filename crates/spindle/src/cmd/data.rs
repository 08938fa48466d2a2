//! `spindle data locate|verify`.

use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::json;
use spindle::{output, progress, zoo};
use spindle_data::cache::TokenCache;
use spindle_data::corpus::{Corpus, calibration_documents, eval_tokens};
use spindle_data::{DataDir, DataError, Fetch, FileStatus, Tokenizer};

use crate::Failure;
use crate::cmd::cli::{CalibArgs, DataCommand, FetchArgs, StatsArgs};

/// The data folder a command reads named corpora and tasks from, with missing files fetched
/// from their public repositories when online ([`spindle_data::sources`]); with no folder found
/// and the hub reachable in principle, a folder in spindle's cache that fills as files are needed.
pub(crate) fn data_dir(flag: Option<&Path>) -> Result<DataDir, Failure> {
    let fetch = if !cfg!(feature = "hub") {
        Fetch::Never
    } else if spindle::hub::offline() {
        Fetch::Offline
    } else {
        Fetch::Hub
    };
    match DataDir::resolve(flag) {
        Ok(dir) => Ok(dir.with_fetch(fetch)),
        Err(DataError::NoDataDir { looked }) if fetch == Fetch::Hub => {
            let root = zoo::cache_dir().join("data");
            tracing::debug!(
                "no data folder in {}: using {}, where named corpora and tasks are fetched as needed",
                looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                root.display()
            );
            Ok(DataDir::in_cache(&root).with_fetch(fetch))
        }
        Err(e) => Err(Failure::Usage(e.to_string())),
    }
}

pub fn run(cmd: DataCommand, flag: Option<&Path>) -> Result<(), Failure> {
    // A data directory that cannot be found is a usage problem: the fix is a flag or a variable.
    let resolve = || DataDir::resolve(flag).map_err(|e| Failure::Usage(e.to_string()));
    match cmd {
        DataCommand::Locate { json } => {
            let dir = resolve()?;
            crate::cmd::check_outputs(None, &[("--json", json.as_deref())], &[dir.root()])?;
            say!("{} (from {})", dir.root().display(), dir.source());
            if let Some(path) = json {
                let value = json!({"data_dir": dir.root(), "source": dir.source().to_string()});
                output::write_json(&path, &value).map_err(anyhow::Error::from)?;
            }
            Ok(())
        }
        DataCommand::Verify { json } => {
            let dir = resolve()?;
            crate::cmd::check_outputs(None, &[("--json", json.as_deref())], &[dir.root()])?;
            verify(&dir, json.as_deref())
        }
        DataCommand::Calib(args) => calib(&data_dir(flag)?, args),
        DataCommand::Stats(args) => stats(&data_dir(flag)?, args),
        // Writes into its own --into folder; needs no existing data folder.
        DataCommand::Fetch(args) => fetch(args),
    }
}

#[cfg(feature = "hub")]
fn fetch(args: FetchArgs) -> Result<(), Failure> {
    let (repo, file) = match (&args.repo, &args.file, args.named) {
        (_, _, true) => return fetch_named(&args.into),
        (Some(repo), Some(file), false) => (repo, file),
        _ => return Err(Failure::Usage("give REPO and FILE, or --named".into())),
    };
    // A path that would leave the data folder is a usage error, found before any download.
    spindle_data::hub::local_path(&args.into, repo, file).map_err(|e| Failure::Usage(e.to_string()))?;
    let path = spindle_data::hub::fetch(repo, &args.revision, file, &args.into).map_err(anyhow::Error::from)?;
    say!("{}", path.display());
    Ok(())
}

/// Every named file with a hub origin into `into` (kept only when its SHA-256 is the recorded
/// one; a file already there is left as it is), then the files left out and why.
#[cfg(feature = "hub")]
fn fetch_named(into: &Path) -> Result<(), Failure> {
    use spindle_data::sources::{Origin, sources};
    let dir = DataDir::in_cache(into).with_fetch(if spindle::hub::offline() { Fetch::Offline } else { Fetch::Hub });
    let mut left_out = Vec::new();
    for s in sources() {
        match &s.origin {
            Origin::Hub(_) => {
                let path = dir.file(&s.path).map_err(anyhow::Error::from)?;
                say!("{}", path.display());
            }
            Origin::Unavailable(reason) => left_out.push(format!("  {}: {reason}", s.path)),
        }
    }
    if !left_out.is_empty() {
        say!("left out, as no public repository holds them:\n{}", left_out.join("\n"));
    }
    Ok(())
}

#[cfg(not(feature = "hub"))]
fn fetch(args: FetchArgs) -> Result<(), Failure> {
    // Validate the request even so, then say what is missing.
    if let (Some(repo), Some(file)) = (&args.repo, &args.file) {
        spindle_data::hub::local_path(&args.into, repo, file).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    Err(Failure::Usage(
        "this spindle was built without the `hub` feature: rebuild with `cargo build --release -p spindle --features hub`, or place the file in the data folder yourself".into(),
    ))
}

/// The model's tokenizer and its context length.
pub(crate) fn model_tokenizer(model: &str) -> Result<(Tokenizer, usize), Failure> {
    tokenizer_of(&crate::cmd::resolve_model(model)?)
}

/// The tokenizer and context length of a model directory.
pub(crate) fn tokenizer_of(dir: &std::path::Path) -> Result<(Tokenizer, usize), Failure> {
    let config = spindle_model::ModelConfig::from_file(&dir.join("config.json")).map_err(anyhow::Error::from)?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json")).map_err(anyhow::Error::from)?;
    Ok((tokenizer, config.max_position_embeddings))
}

/// `--seqlen`, else 2048, else the model's context if that is smaller (the reference default).
pub(crate) fn resolve_seqlen(flag: Option<usize>, context: usize) -> Result<usize, Failure> {
    match flag {
        Some(0) => Err(Failure::Usage("--seqlen must be at least 1".into())),
        Some(l) => Ok(l),
        None => Ok(2048.min(context)),
    }
}

pub(crate) fn token_cache() -> TokenCache {
    TokenCache::new(zoo::cache_dir().join("tokens"))
}

fn calib(dir: &DataDir, args: CalibArgs) -> Result<(), Failure> {
    let mut c = spindle::recipe::Calibration::default();
    args.calib.apply(&mut c);
    let c = c.resolve().map_err(|e| Failure::Usage(e.to_string()))?;
    let (tokenizer, context) = model_tokenizer(&args.model)?;
    let seqlen = c.seqlen.unwrap_or(2048.min(context));
    let Ok(corpus) = c.source.parse::<Corpus>();
    let docs = calibration_documents(&corpus, dir).map_err(crate::cmd::corpus_failure)?;
    let windows = spindle::recipe::calibration_windows(&docs, &corpus, &tokenizer, &token_cache(), c.nsamples, seqlen, c.seed)
        .map_err(anyhow::Error::from)?;
    for (k, w) in windows.iter().enumerate() {
        say!("{k}\tdoc {}\toffset {}", w.doc, w.offset);
    }
    if !docs.note.is_empty() {
        say!("{}", docs.note);
    }
    if let Some(path) = args.json {
        let list: Vec<_> = windows.iter().map(|w| json!({"doc": w.doc, "offset": w.offset})).collect();
        let value = json!({
            "model": args.model, "calib": corpus.to_string(), "nsamples": c.nsamples, "seqlen": seqlen,
            "seed": c.seed, "note": docs.note, "windows": list,
        });
        output::write_json(&path, &value).map_err(anyhow::Error::from)?;
    }
    Ok(())
}

fn stats(dir: &DataDir, args: StatsArgs) -> Result<(), Failure> {
    let (tokenizer, context) = model_tokenizer(&args.model)?;
    let seqlen = resolve_seqlen(args.seqlen, context)?;
    let Ok(corpus) = args.corpus.parse::<Corpus>();
    let (ids, limit, docs, _) = eval_tokens(&corpus, dir, &tokenizer, &token_cache()).map_err(anyhow::Error::from)?;
    let used = limit.map_or(ids.len(), |per| ids.len().min(per * seqlen));
    let windows = used / seqlen;
    say!(
        "{corpus}: {} documents, {} tokens; {} windows of {seqlen} ({} tokens of tail dropped{})",
        docs.docs.len(),
        ids.len(),
        windows,
        used - windows * seqlen,
        if used < ids.len() { format!("; truncated to {used} tokens as the reference does") } else { String::new() }
    );
    if !docs.note.is_empty() {
        say!("{}", docs.note);
    }
    if let Some(path) = args.json {
        let value = json!({
            "model": args.model, "corpus": corpus.to_string(), "documents": docs.docs.len(), "tokens": ids.len(),
            "tokens_used": used, "seqlen": seqlen, "windows": windows, "note": docs.note,
        });
        output::write_json(&path, &value).map_err(anyhow::Error::from)?;
    }
    Ok(())
}

fn verify(dir: &DataDir, json_path: Option<&Path>) -> Result<(), Failure> {
    let bar = progress::bytes("checking data");
    let report = spindle_data::verify(dir, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("checking {}", dir.root().display()))?;
    bar.finish_and_clear();

    let status_word = |s: &FileStatus| match s {
        FileStatus::Ok => "ok",
        FileStatus::Mismatch { .. } => "changed",
        FileStatus::Missing => "missing",
    };
    if let Some(path) = json_path {
        let files: Vec<_> = report
            .files
            .iter()
            .map(|f| {
                let actual = match &f.status {
                    FileStatus::Mismatch { actual } => Some(actual.as_str()),
                    FileStatus::Ok => Some(f.expected.as_str()),
                    FileStatus::Missing => None,
                };
                json!({"path": f.path, "status": status_word(&f.status), "expected": f.expected, "actual": actual})
            })
            .collect();
        let value = json!({
            "data_dir": dir.root(),
            "source": dir.source().to_string(),
            "ok": report.is_ok(),
            "bytes": report.bytes,
            "files": files,
        });
        output::write_json(path, &value).map_err(anyhow::Error::from)?;
    }

    let bad: Vec<String> = report
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Ok)
        .map(|f| format!("{} ({})", f.path.display(), status_word(&f.status)))
        .collect();
    if bad.is_empty() {
        say!(
            "{} files, {:.1} MiB: all intact in {} (from {})",
            report.files.len(),
            report.bytes as f64 / (1024.0 * 1024.0),
            dir.root().display(),
            dir.source()
        );
        Ok(())
    } else {
        Err(Failure::Other(anyhow!(
            "{} of {} files in {} failed their checksum: {}",
            bad.len(),
            report.files.len(),
            dir.root().display(),
            bad.join(", ")
        )))
    }
}
