//! A model with every block resident, for evaluation: an evaluation runs thousands of forward
//! passes, so the blocks are read from the checkpoint once rather than once per pass (the pruning
//! pipeline, which runs one pass per block, keeps the opposite trade-off).

use spindle_model::{Block, KvCache, Model, ModelError};
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

    /// The final hidden states `[batch, seq, hidden]` of `ids` at the positions after `past` (each
    /// block's cache of a prefix, of batch 1 or `batch`, as an earlier call returned it, perhaps
    /// cut with `KvCache::first`; `None` for a run from position 0), with each block's keys and
    /// values of these positions. Right padding is invisible, as in [`Resident::hidden`].
    pub fn hidden_cached(&self, ids: &Tensor, past: Option<&[KvCache]>) -> Result<(Tensor, Vec<KvCache>), ModelError> {
        let size = ids.size();
        let offset = past.and_then(|p| p.first()).map_or(0, KvCache::len);
        let ctx = self.model.context_at(size[0], size[1], offset);
        let mut h = self.model.embed_at(ids, offset)?;
        let mut caches = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let (out, kv) = block.forward_cached(&h, &ctx, past.and_then(|p| p.get(i)))?;
            h = out;
            caches.push(kv);
        }
        Ok((h, caches))
    }
}
