//! A model with every block resident, for evaluation: an evaluation runs thousands of forward
//! passes, so the blocks are read from the checkpoint once rather than once per pass (the pruning
//! pipeline, which runs one pass per block, keeps the opposite trade-off).

use spindle_model::{Block, Model, ModelError};
use tch::Tensor;

/// `model` with its blocks loaded.
#[derive(Debug)]
pub struct Resident<'a> {
    pub model: &'a Model,
    blocks: Vec<Block>,
}

impl<'a> Resident<'a> {
    pub fn load(model: &'a Model) -> Result<Resident<'a>, ModelError> {
        let blocks = (0..model.config().num_layers).map(|i| model.block(i)).collect::<Result<_, _>>()?;
        Ok(Resident { model, blocks })
    }

    /// The final hidden states `[batch, seq, hidden]` of `ids` (no padding mask: right padding is
    /// invisible to a causal model at the real positions).
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor, ModelError> {
        let size = ids.size();
        let ctx = self.model.context(size[0], size[1], None);
        let mut h = self.model.embed(ids, None)?;
        for block in &self.blocks {
            h = block.forward(&h, &ctx);
        }
        Ok(h)
    }
}
