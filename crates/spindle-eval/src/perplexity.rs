//! Perplexity exactly as the SparseGPT and Wanda scripts compute it: the corpus is tokenized
//! once; N = numel // seqlen non-overlapping windows (the tail is dropped); each window's mean
//! cross-entropy over its seqlen − 1 next-token predictions, in fp32, is multiplied by seqlen;
//! ppl = exp(Σ / (N · seqlen)).

use spindle_model::Model;
use tch::{Kind, Tensor};

use crate::{EvalError, Resident};

/// The size of one head-and-log-softmax pass's fp32 logits (see [`perplexity`]): 128 positions
/// of a 49k vocabulary at batch size 1. Small enough for the allocator to reuse the buffer from its heap (glibc
/// maps anything over 32 MiB afresh) and large enough that the head's weight, read once per
/// chunk, is not re-read too often (64 positions measured slower than 128).
const HEAD_CHUNK_BYTES: i64 = 24 << 20;

/// How to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PplConfig {
    /// Tokens per window.
    pub seqlen: usize,
    /// Windows per forward pass.
    pub batch_size: usize,
}

/// The figure and what it was computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct PplResult {
    pub ppl: f64,
    pub seqlen: usize,
    /// Number of windows.
    pub nsamples: usize,
    /// Per window: mean cross-entropy × seqlen (the reference's `neg_log_likelihood`).
    pub nlls: Vec<f64>,
    /// Wall time of the window loop alone (blocks already resident), for throughput figures.
    pub seconds: f64,
}

/// Perplexity of `model` on `ids`; `progress(done, total)` counts windows.
pub fn perplexity(model: &Model, ids: &[u32], cfg: PplConfig, progress: &mut dyn FnMut(usize, usize)) -> Result<PplResult, EvalError> {
    if cfg.seqlen < 2 {
        return Err(EvalError::Config(format!("seqlen must be at least 2, got {}", cfg.seqlen)));
    }
    if cfg.batch_size == 0 {
        return Err(EvalError::Config("batch size must be at least 1".into()));
    }
    let nsamples = ids.len() / cfg.seqlen;
    if nsamples == 0 {
        return Err(EvalError::Config(format!("the corpus has {} tokens, fewer than one window of {}", ids.len(), cfg.seqlen)));
    }
    let all: Vec<i64> = ids[..nsamples * cfg.seqlen].iter().map(|&i| i64::from(i)).collect();
    let all = Tensor::from_slice(&all).view([nsamples as i64, cfg.seqlen as i64]);
    let s = cfg.seqlen as i64;
    let vocab = model.config().vocab_size.max(1) as i64;
    let mut nlls = Vec::with_capacity(nsamples);
    let _guard = tch::no_grad_guard();
    let resident = Resident::load(model)?;
    let started = std::time::Instant::now();
    let mut start = 0;
    while start < nsamples {
        progress(start, nsamples);
        let b = cfg.batch_size.min(nsamples - start);
        let batch = all.narrow(0, start as i64, b as i64).to_device(model.device());
        let hidden = resident.hidden(&batch)?;
        let chunk = (HEAD_CHUNK_BYTES / (4 * vocab * b as i64)).max(16);
        // The head and its log-softmax, `chunk` positions at a time: every row is computed
        // exactly as in one pass, but the `[b, seqlen, vocab]` logits and log-probabilities
        // (2 × 100 MB for a 49k vocabulary at 512 tokens) are never materialised, so no fresh
        // pages are faulted in for them on every window.
        let mut picked = Vec::new();
        let mut pos = 0;
        while pos < s - 1 {
            let n = chunk.min(s - 1 - pos);
            let logp = model.head(&hidden.narrow(1, pos, n)).to_kind(Kind::Float).log_softmax(-1, Kind::Float);
            let targets = batch.narrow(1, pos + 1, n).unsqueeze(-1);
            picked.push(logp.gather(-1, &targets, false).squeeze_dim(-1));
            pos += n;
        }
        // Mean over the window's seqlen − 1 predictions, in fp32, as CrossEntropyLoss does.
        let loss = -Tensor::cat(&picked, 1).mean_dim(1, false, Kind::Float);
        let loss: Vec<f32> =
            Vec::<f32>::try_from(loss.to_device(tch::Device::Cpu)).map_err(|e| EvalError::Config(format!("reading losses: {e}")))?;
        for l in loss {
            // `loss.float() * seqlen` in the reference: an fp32 product.
            nlls.push(f64::from(l * cfg.seqlen as f32));
        }
        start += b;
    }
    progress(nsamples, nsamples);
    let seconds = started.elapsed().as_secs_f64();
    let total: f64 = nlls.iter().sum();
    let ppl = (total / (nsamples * cfg.seqlen) as f64).exp();
    if !ppl.is_finite() {
        return Err(EvalError::NotFinite { what: format!("perplexity at seqlen {}", cfg.seqlen) });
    }
    Ok(PplResult { ppl, seqlen: cfg.seqlen, nsamples, nlls, seconds })
}
