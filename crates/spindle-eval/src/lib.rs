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
//! Architecture Invariant: spindle-eval knows models only through `spindle-model`'s forward API
//! and text only through `spindle-data`; it knows no pruner and no induction method, so a pruned
//! model is scored exactly like a dense one. It prints nothing; progress goes through callbacks.

pub mod perplexity;
pub mod score;
pub mod task;

mod resident;
pub use resident::Resident;

use std::path::PathBuf;

use serde_json::Value;
use spindle_data::Tokenizer;
use spindle_model::{Model, ModelError};

pub use perplexity::{PplConfig, PplResult, perplexity};
pub use score::{Encoded, ItemResult, LogLikelihood, encode_pair, item_result, loglikelihoods};
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
    pub items: Vec<ItemResult>,
}

/// How to run a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskConfig {
    /// The first N items only (lm-eval's `--limit`).
    pub limit: Option<usize>,
    pub batch_size: usize,
    /// Inputs are left-truncated to this many tokens (the model's context).
    pub max_length: usize,
    /// The token an empty context becomes (the model's BOS, else EOS).
    pub prefix_token: Option<u32>,
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
    let mut encoded = Vec::new();
    for item in &items {
        for (context, continuation) in &item.requests {
            encoded.push(encode_pair(tokenizer, context, continuation, cfg.prefix_token)?);
        }
    }
    let lls = loglikelihoods(model, &encoded, cfg.max_length, cfg.batch_size, progress)?;
    let mut at = 0;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        let k = item.requests.len();
        let scores: Vec<f64> = lls[at..at + k].iter().map(|l| l.logprob).collect();
        results.push(item_result(item, &scores));
        at += k;
    }
    let share = |f: &dyn Fn(&ItemResult) -> bool| results.iter().filter(|r| f(r)).count() as f64 / n as f64;
    let acc = share(&|r| r.pred == r.gold);
    let acc_norm = spec.acc_norm.then(|| share(&|r| r.pred_norm == r.gold));
    Ok(TaskResult { name: spec.name.clone(), version: spec.version, n, acc, acc_norm, items: results })
}
