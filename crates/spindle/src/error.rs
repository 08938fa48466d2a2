//! Why a pipeline run (pruning, induction, reconstruction) failed: one error type that both
//! `prune.rs` and `induce.rs` return, kept apart from either so neither imports the other for it.

use spindle_model::ModelError;
use spindle_prune::PruneError;

/// Why a pruning run failed. Each message is whole on one line: a wrapped error is part of the
/// message, not a `source` that a chain printer would print a second time.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    /// `linear`: the full name(s) of the linear(s), e.g. `model.layers.3.mlp.down_proj`.
    #[error("{linear}: {cause}")]
    Prune { linear: String, cause: PruneError },
    /// A pruned linear has fewer zeros than its target allows: checked for every linear before
    /// the output is published, so a statistic that went wrong never yields a quietly denser model.
    #[error("{linear}: pruned to sparsity {achieved:.4} where {target:.4} was asked; nothing was written")]
    UnderPruned { linear: String, achieved: f64, target: f64 },
    #[error("{0}")]
    Config(String),
    /// Calibration data that cannot be read, tokenized or sampled.
    #[error(transparent)]
    Data(#[from] spindle_data::DataError),
    #[error("sparsity induction: {0}")]
    Induce(spindle_induce::InduceError),
    /// An induction or reconstruction failure, with the block it happened in.
    #[error("{stage} of block {block}: {cause}")]
    InBlock { stage: &'static str, block: usize, cause: spindle_induce::InduceError },
}

impl PipelineError {
    /// Names the block (and stage) of an induction error; other errors already name their linear.
    pub(crate) fn in_block(self, stage: &'static str, block: usize) -> PipelineError {
        match self {
            PipelineError::Induce(cause) => PipelineError::InBlock { stage, block, cause },
            other => other,
        }
    }
}

impl From<spindle_induce::InduceError> for PipelineError {
    fn from(e: spindle_induce::InduceError) -> Self {
        PipelineError::Induce(e)
    }
}
