//! The calibration inputs of the block being worked on, and the block run over them: what the
//! pruning pass (`prune.rs`) and the induction stages (`induce.rs`) both walk, kept apart from
//! either so the two import in one direction only (prune → induce).

use spindle_model::{Block, ForwardCtx, Model, ModelError};
use tch::Tensor;

use crate::error::PipelineError;

/// Calibration inputs of the current block, batch by batch, with their forward contexts (one
/// per distinct batch size: the mask and rotary tables depend on nothing else).
pub(crate) struct Activations {
    pub(crate) batches: Vec<Tensor>,
    ctxs: Vec<(i64, ForwardCtx)>,
}

impl Activations {
    pub(crate) fn embed(model: &Model, ids: &Tensor, batch_size: usize) -> Result<Activations, ModelError> {
        let n = ids.size()[0];
        let s = ids.size()[1];
        let mut batches = Vec::new();
        let mut ctxs: Vec<(i64, ForwardCtx)> = Vec::new();
        let mut start = 0;
        while start < n {
            let b = (batch_size as i64).min(n - start);
            let chunk = ids.narrow(0, start, b);
            batches.push(model.embed(&chunk, None)?);
            if !ctxs.iter().any(|(size, _)| *size == b) {
                ctxs.push((b, model.context(b, s, None)));
            }
            start += b;
        }
        Ok(Activations { batches, ctxs })
    }

    pub(crate) fn ctx(&self, batch: &Tensor) -> &ForwardCtx {
        let b = batch.size()[0];
        match self.ctxs.iter().find(|(size, _)| *size == b) {
            Some((_, ctx)) => ctx,
            None => unreachable!("a context is made for every batch size in `embed`"),
        }
    }

    /// Runs `block` on every batch, showing `observe` each linear's input; returns the outputs.
    pub(crate) fn run(&self, block: &Block, observe: spindle_model::Observer<'_>) -> Vec<Tensor> {
        self.batches.iter().map(|x| block.forward_observed(x, self.ctx(x), observe)).collect()
    }

    /// The same, keeping no outputs (a statistics pass).
    /// [`Activations::run`] with every observed input `[batch, seq, in]`
    /// ([`Block::forward_observed_by_sequence`]).
    pub(crate) fn run_by_sequence(&self, block: &Block, observe: spindle_model::Observer<'_>) -> Vec<Tensor> {
        self.batches.iter().map(|x| block.forward_observed_by_sequence(x, self.ctx(x), observe)).collect()
    }

    pub(crate) fn observe(&self, block: &Block, observe: spindle_model::Observer<'_>) {
        for x in &self.batches {
            drop(block.forward_observed(x, self.ctx(x), observe));
        }
    }
}

/// The input width of a group of linears that share one input.
pub(crate) fn group_columns(block: &Block, group: &[&str]) -> Result<i64, PipelineError> {
    let first = group.first().ok_or_else(|| PipelineError::Config("an empty input group".into()))?;
    block.linear_at(first).map(|l| l.weight.size()[1]).ok_or_else(|| PipelineError::Config(format!("no linear {first}")))
}
