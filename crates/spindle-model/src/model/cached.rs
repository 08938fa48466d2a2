//! The forward pass with a key/value cache: a prefix is run once through every block, each block
//! keeping its keys and values ([`KvCache`]), and later tokens are run at positions offset by the
//! prefix's length, attending to the cached prefix and to themselves. Zero-shot scoring uses it
//! to encode the context shared by a question's choices once.
//!
//! [`Block::forward_cached`] runs the family's one forward pass, the steps of [`Block::forward`]
//! (the same norms, linears, RoPE tables and `scaled_dot_product_attention`), with a cache to read
//! and to fill; what differs is that the keys and values of earlier positions come from the cache and that
//! positions start at the cache's length: RoPE's rotation angles, OPT's learned positions, the
//! causal mask over `[past; new]` and Mistral's sliding window all count from the start of the
//! prefix. A run without a past (the prefix itself) builds its mask and tables with
//! [`Model::context`], so it computes exactly what [`Block::forward`] computes; a run after a
//! cache agrees with the full pass to float rounding (libtorch's fused attention sums a row over
//! as many keys as its block holds, so its last bits depend on the sequence around it, as they
//! do between two uncached passes of different lengths).

use tch::{Kind, Tensor};

use super::{Block, ForwardCtx, Model, ModelError};
use crate::arch::{InputMap, Step, rope_tables};
use crate::config::{AttentionWindow, RopeScaling};

/// The keys and values one block computed for a run of positions, after RoPE and before
/// grouped-query attention repeats them: `[batch, kv_heads, positions, head_dim]` each.
#[derive(Debug)]
pub struct KvCache {
    pub keys: Tensor,
    pub values: Tensor,
}

impl KvCache {
    /// How many positions the cache holds.
    pub fn len(&self) -> i64 {
        self.keys.size().get(2).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cache of the first `len` positions (at most all of them): with causal attention the
    /// keys and values of a position do not depend on later ones (up to the last bits of the
    /// fused attention's sums), so the cache of a longer run serves a prefix of it.
    pub fn first(&self, len: i64) -> KvCache {
        let len = len.clamp(0, self.len());
        KvCache { keys: self.keys.narrow(2, 0, len), values: self.values.narrow(2, 0, len) }
    }

    fn batch(&self) -> i64 {
        self.keys.size().first().copied().unwrap_or(0)
    }
}

/// Per-batch state of a cached run: the positions `past .. past + seq` of `batch` rows, with the
/// additive mask over `[past; new]` keys and the rotary tables of those positions. Built by
/// [`Model::context_at`].
#[derive(Debug)]
pub struct CachedCtx {
    ctx: ForwardCtx,
    past: i64,
    batch: i64,
    seq: i64,
}

impl CachedCtx {
    /// The number of cached positions before this run's first.
    pub fn past(&self) -> i64 {
        self.past
    }
}

impl Model {
    /// The mask and rotary tables of a run of `seq` new positions (right-padded rows of `batch`)
    /// after `past` cached ones. With `past` 0 this is [`Model::context`] without a padding mask.
    /// Otherwise the additive mask `[1, 1, seq, past + seq]` lets new position `i` (absolute
    /// position `past + i`) see every key `j ≤ past + i`, and, under a sliding window `w`, only
    /// those with `past + i − j < w`; padding at the right of a row is invisible to its real
    /// positions, as in the uncached pass.
    pub fn context_at(&self, batch: i64, seq: i64, past: i64) -> CachedCtx {
        if past == 0 {
            return CachedCtx { ctx: self.context(batch, seq, None), past, batch, seq };
        }
        let arch = self.config.family.arch();
        let mut ctx = self.context_after(seq, past, self.config.window, arch.rope());
        if let Some((window, rope)) = arch.sliding_layers() {
            ctx.sliding = Some(Box::new(self.context_after(seq, past, AttentionWindow::Sliding(window), rope)));
        }
        CachedCtx { ctx, past, batch, seq }
    }

    fn context_after(&self, seq: i64, past: i64, window: AttentionWindow, rope: Option<(f64, RopeScaling)>) -> ForwardCtx {
        let dev = self.device;
        let i = (Tensor::arange(seq, (Kind::Int64, dev)) + past).unsqueeze(1);
        let j = Tensor::arange(past + seq, (Kind::Int64, dev)).unsqueeze(0);
        let mut allowed = j.le_tensor(&i);
        if let AttentionWindow::Sliding(w) = window {
            allowed = allowed.logical_and(&(&i - &j).lt(w as i64));
        }
        let min = self.mask_min();
        let allowed = allowed.view([1, 1, seq, past + seq]);
        let mask = Tensor::zeros([1], (Kind::Float, dev)).where_self(&allowed, &Tensor::full([1], min, (Kind::Float, dev)));
        // The rotary tables of positions past .. past + seq: rows past .. past + seq of a
        // full-length context's tables, the same fp32 products.
        let rope = rope.map(|(theta, scaling)| rope_tables(theta, scaling, self.config.head_dim as i64, past, seq, dev));
        ForwardCtx { mask: Some(mask), rope, sliding: None }
    }

    /// The embeddings of `ids` `[batch, seq]` at positions `past .. past + seq` (OPT's learned
    /// positions are offset by `past`; RoPE models take their positions from
    /// [`Model::context_at`]). With `past` 0 this is [`Model::embed`] without a padding mask.
    pub fn embed_at(&self, ids: &Tensor, past: i64) -> Result<Tensor, ModelError> {
        if past == 0 {
            return self.embed(ids, None);
        }
        let (b, s) = self.check_ids(ids)?;
        let ids = ids.to_device(self.device);
        let mut h = self.token_embeddings(&ids);
        if let Some(p) = &self.project_in {
            h = p.forward(&h);
        }
        if let Some(table) = &self.embed_positions {
            let max = self.config.max_position_embeddings;
            if (past + s) as usize > max {
                return Err(ModelError::TooLong { len: (past + s) as usize, max });
            }
            // transformers' OPTLearnedPositionalEmbedding with a cache: position past + i, offset 2.
            let positions = Tensor::arange_start(past + 2, past + s + 2, (Kind::Int64, self.device)).unsqueeze(0).expand([b, s], false);
            h += Tensor::embedding(table, &positions, -1, false, false);
        }
        Ok(h)
    }
}

impl Block {
    /// Runs the block on `hidden` `[batch, seq, hidden]` at the positions `ctx` describes,
    /// attending to `past` (this block's cache of the positions before them; `None` when
    /// `ctx.past()` is 0), and returns the output with this run's own keys and values (not
    /// concatenated with `past`). A `past` of batch 1 serves every row. The numerics are those of
    /// [`Block::forward`]; errors when `past` does not match `ctx`.
    pub fn forward_cached(&self, hidden: &Tensor, ctx: &CachedCtx, past: Option<&KvCache>) -> Result<(Tensor, KvCache), ModelError> {
        let size = hidden.size();
        if size.len() != 3 || size[0] != ctx.batch || size[1] != ctx.seq {
            return Err(ModelError::KvCache(format!(
                "hidden states of shape {size:?} for a context of {} rows of {} positions",
                ctx.batch, ctx.seq
            )));
        }
        let past_len = past.map_or(0, KvCache::len);
        if past_len != ctx.past {
            return Err(ModelError::KvCache(format!("a cache of {past_len} positions for a context after {}", ctx.past)));
        }
        if let Some(p) = past {
            let expected = [self.num_kv_heads, ctx.past, self.head_dim];
            if (p.batch() != 1 && p.batch() != ctx.batch) || p.keys.size()[1..] != expected || p.values.size() != p.keys.size() {
                return Err(ModelError::KvCache(format!(
                    "cached keys {:?} and values {:?} do not fit {} rows, {} kv heads, {} positions, head size {}",
                    p.keys.size(),
                    p.values.size(),
                    ctx.batch,
                    self.num_kv_heads,
                    ctx.past,
                    self.head_dim
                )));
            }
        }
        let mut step = Step { ctx: &ctx.ctx, map: InputMap::Plain, observe: &mut |_, _| {}, past, kv: None, by_sequence: false };
        let out = self.family.arch().forward(self, hidden, &mut step);
        match step.kv {
            Some(kv) => Ok((out, kv)),
            None => unreachable!("every family's forward attends once"),
        }
    }
}
