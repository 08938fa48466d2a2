//! `spindle-eval` owns scoring a model the way the pruning literature does: perplexity exactly as
//! the SparseGPT and Wanda scripts compute it ([`perplexity`]), and zero-shot multiple choice with
//! lm-evaluation-harness semantics ([`evaluate_task`]) on tasks declared as versioned data in
//! `eval/tasks/*.toml` ([`task`]).
//!
//! A pruning paper's numbers are only comparable when the protocol matches to the token: which
//! windows, which delimiter, how a continuation is split from its context, what `acc_norm`
//! normalises by. That protocol lives here, in one place, with parity tests against the reference
//! tools (a transformers script for perplexity, lm-eval itself for the tasks).
//!
//! Zero-shot scoring shares work where the protocol allows it: the choices of one question are
//! scored by running the longest common prefix of their token sequences once, each block keeping
//! its keys and values, and only each choice's remaining tokens after it
//! ([`loglikelihoods_shared`], the default [`Scoring`]); every request can still be run whole, as
//! lm-eval runs it ([`loglikelihoods`], [`Scoring::PerRequest`]), and the tests hold the two to
//! the same scores. A task's figures carry lm-eval's standard errors ([`mean_stderr`]), the
//! majority-answer baseline and the scoring loop's wall time.
//!
//! Architecture Invariant: spindle-eval knows models only through `spindle-model`'s forward API
//! and text only through `spindle-data`; it knows no pruner and no induction method, so a pruned
//! model is scored exactly like a dense one. It prints nothing; progress goes through callbacks.
//!
//! ```
//! // lm-eval's standard error of a mean of 0/1 scores: sqrt(p(1 − p) / (n − 1)).
//! let se = spindle_eval::mean_stderr(&[1.0, 0.0, 1.0, 1.0]).unwrap();
//! assert!((se - (0.75f64 * 0.25 / 3.0).sqrt()).abs() < 1e-12);
//! // The task specs are data: the built-in copies of eval/tasks.
//! let specs = spindle_eval::task::builtin_specs()?;
//! assert!(specs.contains_key("piqa") && specs.contains_key("hellaswag"));
//! # Ok::<(), spindle_eval::EvalError>(())
//! ```

pub mod perplexity;
pub mod score;
pub mod task;

mod resident;
pub use resident::Resident;

use std::path::PathBuf;

use serde_json::Value;
use spindle_data::Tokenizer;
use spindle_model::{Model, ModelError};

pub use perplexity::{PplConfig, PplResult, perplexity, perplexity_streamed};
pub use score::{
    Encoded, ItemResult, LogLikelihood, encode_pair, item_result, loglikelihoods, loglikelihoods_shared, loglikelihoods_shared_streamed,
    mean_stderr,
};
pub use task::{Item, TaskSpec, load_specs};

/// Why an evaluation could not run; each variant names what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Data(#[from] spindle_data::DataError),
    #[error(transparent)]
    Task(#[from] spindle_data::tasks::TaskError),
    #[error("cannot read {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error("{path}: {problem}")]
    TaskSpec { path: PathBuf, problem: String },
    #[error("task {task}, item {index}: {problem}")]
    Item { task: String, index: usize, problem: String },
    #[error("{0}")]
    Config(String),
    #[error("{what} is not finite")]
    NotFinite { what: String },
}

/// A task's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub name: String,
    pub version: u32,
    pub n: usize,
    pub acc: f64,
    /// Only for tasks where lm-eval reports it.
    pub acc_norm: Option<f64>,
    /// lm-eval's standard error of `acc` ([`mean_stderr`] of the per-item 0/1 scores); `None`
    /// for a single item, where lm-eval reports "N/A".
    pub acc_stderr: Option<f64>,
    /// The same for `acc_norm`.
    pub acc_norm_stderr: Option<f64>,
    /// The share of the scored items whose gold index is the most frequent one: the accuracy of
    /// always answering it, the baseline tables compare against.
    pub majority: f64,
    /// Wall time of encoding and scoring the requests, blocks already resident (for throughput
    /// figures: `n / seconds` items per second).
    pub seconds: f64,
    pub items: Vec<ItemResult>,
}

/// How the requests of a task are scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scoring {
    /// The choices of one item share one pass over their common token prefix
    /// ([`loglikelihoods_shared`]).
    #[default]
    SharedPrefix,
    /// Every request runs whole, batched across the task longest first ([`loglikelihoods`]), as
    /// lm-eval runs them; the path the shared one is tested against.
    PerRequest,
}

/// Where a model's blocks are while it is evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Residence {
    /// Every block read once and kept: the fastest, at the whole model's memory.
    #[default]
    Resident,
    /// Streamed by layer: all windows (or all of a task's passes) through block `i` before
    /// block `i + 1`, one block in memory at a time, plus every pass's hidden states. The
    /// figures equal the resident path's bit for bit.
    Streamed,
}

/// How to run a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskConfig {
    /// The first N items only (lm-eval's `--limit`).
    pub limit: Option<usize>,
    /// Requests per forward pass (with [`Scoring::SharedPrefix`], requests' remaining tokens
    /// after their item's shared prefix, which runs as the start of one of them).
    pub batch_size: usize,
    /// Inputs are left-truncated to this many tokens (the model's context).
    pub max_length: usize,
    /// The token an empty context becomes (the model's BOS, else EOS).
    pub prefix_token: Option<u32>,
    /// Shared-prefix (the default) or request-by-request scoring.
    pub scoring: Scoring,
    /// Resident (the default) or streamed by layer; streaming scores with shared prefixes.
    pub residence: Residence,
}

/// The share of `golds` equal to their most frequent value (0 for none).
fn majority_share(golds: &[usize]) -> f64 {
    let mut counts = std::collections::BTreeMap::new();
    for g in golds {
        *counts.entry(*g).or_insert(0usize) += 1;
    }
    counts.values().max().map_or(0.0, |&c| c as f64 / golds.len() as f64)
}

/// Scores `rows` (the task's dataset records as JSON, in order) with `spec`.
pub fn evaluate_task(
    model: &Model,
    tokenizer: &Tokenizer,
    spec: &TaskSpec,
    rows: &[Value],
    cfg: TaskConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<TaskResult, EvalError> {
    let n = cfg.limit.map_or(rows.len(), |l| l.min(rows.len()));
    if n == 0 {
        return Err(EvalError::Config(format!("task {} has no items to score", spec.name)));
    }
    let items: Vec<Item> = rows[..n].iter().enumerate().map(|(i, row)| spec.item(row, i)).collect::<Result<_, _>>()?;
    if cfg.residence == Residence::Streamed && cfg.scoring == Scoring::PerRequest {
        return Err(EvalError::Config("streamed evaluation scores with shared prefixes, not request by request".into()));
    }
    let _guard = tch::no_grad_guard();
    let resident = match cfg.residence {
        Residence::Resident => Some(Resident::load(model)?),
        Residence::Streamed => None,
    };
    let started = std::time::Instant::now();
    let mut encoded = Vec::new();
    for item in &items {
        for (context, continuation) in &item.requests {
            encoded.push(encode_pair(tokenizer, context, continuation, cfg.prefix_token)?);
        }
    }
    let groups: Vec<usize> = items.iter().map(|i| i.requests.len()).collect();
    let lls = match (&resident, cfg.scoring) {
        (Some(r), Scoring::SharedPrefix) => score::shared_prefix(r, &encoded, &groups, cfg.max_length, cfg.batch_size, progress)?,
        (Some(r), Scoring::PerRequest) => score::per_request(r, &encoded, cfg.max_length, cfg.batch_size, progress)?,
        (None, _) => score::shared_prefix_streamed(model, &encoded, &groups, cfg.max_length, cfg.batch_size, progress)?,
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut at = 0;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let k = item.requests.len();
        let scores: Vec<f64> = lls[at..at + k].iter().map(|l| l.logprob).collect();
        results.push(item_result(item, &scores));
        at += k;
    }
    // Per-item scores as lm-eval's `process_results` gives them (1.0 or 0.0), then its `mean`.
    let scores = |f: &dyn Fn(&ItemResult) -> bool| -> Vec<f64> { results.iter().map(|r| if f(r) { 1.0 } else { 0.0 }).collect() };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let acc_items = scores(&|r| r.pred == r.gold);
    let norm_items = spec.acc_norm.then(|| scores(&|r| r.pred_norm == r.gold));
    let golds: Vec<usize> = results.iter().map(|r| r.gold).collect();
    Ok(TaskResult {
        name: spec.name.clone(),
        version: spec.version,
        n,
        acc: mean(&acc_items),
        acc_norm: norm_items.as_deref().map(mean),
        acc_stderr: mean_stderr(&acc_items),
        acc_norm_stderr: norm_items.as_deref().and_then(mean_stderr),
        majority: majority_share(&golds),
        seconds,
        items: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_majority_share_counts_the_most_frequent_gold_index() {
        assert_eq!(majority_share(&[0, 1, 1, 3, 1, 0]), 0.5);
        assert_eq!(majority_share(&[2]), 1.0);
        assert_eq!(majority_share(&[]), 0.0);
    }
}
