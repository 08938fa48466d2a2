//! Perplexity exactly as the SparseGPT and Wanda scripts compute it: the corpus is tokenized
//! once; N = numel // seqlen non-overlapping windows (the tail is dropped); each window's mean
//! cross-entropy over its seqlen − 1 next-token predictions, in fp32, is multiplied by seqlen;
//! ppl = exp(Σ / (N · seqlen)).

use spindle_model::Model;
use tch::{Kind, Tensor};

use crate::{EvalError, Residence, Resident};

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

/// Perplexity of `model` on `ids` with every block resident (read once); `progress(done,
/// total)` counts windows.
pub fn perplexity(model: &Model, ids: &[u32], cfg: PplConfig, progress: &mut dyn FnMut(usize, usize)) -> Result<PplResult, EvalError> {
    evaluate(model, ids, cfg, Residence::Resident, progress)
}

/// [`perplexity`], streamed by layer as SparseGPT's own evaluation runs: every window goes
/// through block `i` before any goes through block `i + 1`, so one block is resident at a time
/// and peak memory is about one block plus the windows' hidden states (`nsamples × seqlen ×
/// hidden` floats), whatever the depth. Each window's computation is the resident path's, so the
/// figures are equal bit for bit. `progress(done, total)` counts blocks.
pub fn perplexity_streamed(
    model: &Model,
    ids: &[u32],
    cfg: PplConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplResult, EvalError> {
    evaluate(model, ids, cfg, Residence::Streamed, progress)
}

fn evaluate(
    model: &Model,
    ids: &[u32],
    cfg: PplConfig,
    residence: Residence,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PplResult, EvalError> {
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
    let _guard = tch::no_grad_guard();
    let batches: Vec<Tensor> = (0..nsamples)
        .step_by(cfg.batch_size)
        .map(|start| all.narrow(0, start as i64, cfg.batch_size.min(nsamples - start) as i64).to_device(model.device()))
        .collect();
    let mut nlls = Vec::with_capacity(nsamples);
    let started;
    match residence {
        Residence::Resident => {
            let resident = Resident::load(model)?;
            started = std::time::Instant::now();
            let mut done = 0;
            for batch in &batches {
                progress(done, nsamples);
                nlls.extend(window_nlls(model, &resident.hidden(batch)?, batch, cfg.seqlen)?);
                done += batch.size()[0] as usize;
            }
            progress(nsamples, nsamples);
        }
        Residence::Streamed => {
            started = std::time::Instant::now();
            let layers = model.config().num_layers;
            let mut hidden: Vec<Tensor> = batches.iter().map(|b| model.embed(b, None)).collect::<Result<_, _>>()?;
            for i in 0..layers {
                progress(i, layers);
                let block = model.block(i)?;
                for (h, b) in hidden.iter_mut().zip(&batches) {
                    let size = b.size();
                    *h = block.forward(h, &model.context(size[0], size[1], None));
                }
            }
            for (h, b) in hidden.iter().zip(&batches) {
                nlls.extend(window_nlls(model, h, b, cfg.seqlen)?);
            }
            progress(layers, layers);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let total: f64 = nlls.iter().sum();
    let ppl = (total / (nsamples * cfg.seqlen) as f64).exp();
    if !ppl.is_finite() {
        return Err(EvalError::NotFinite { what: format!("perplexity at seqlen {}", cfg.seqlen) });
    }
    Ok(PplResult { ppl, seqlen: cfg.seqlen, nsamples, nlls, seconds })
}

/// Each window's mean cross-entropy × seqlen, from its final hidden states `[b, seqlen, hidden]`.
fn window_nlls(model: &Model, hidden: &Tensor, batch: &Tensor, seqlen: usize) -> Result<Vec<f64>, EvalError> {
    let s = seqlen as i64;
    let b = batch.size()[0];
    let vocab = model.config().vocab_size.max(1) as i64;
    let chunk = (HEAD_CHUNK_BYTES / (4 * vocab * b)).max(16);
    // The head and its log-softmax, `chunk` positions at a time: every row is computed exactly as
    // in one pass, but the `[b, seqlen, vocab]` logits and log-probabilities (2 × 100 MB for a 49k
    // vocabulary at 512 tokens) are never materialised, so no fresh pages are faulted in for them
    // on every window.
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
    // `loss.float() * seqlen` in the reference: an fp32 product.
    Ok(loss.into_iter().map(|l| f64::from(l * seqlen as f32)).collect())
}
