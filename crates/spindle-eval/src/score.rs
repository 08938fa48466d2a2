//! Log-likelihood scoring with lm-evaluation-harness semantics, and the `acc` / `acc_norm`
//! metrics.
//!
//! A (context, continuation) pair is encoded as lm-eval's `HFLM._encode_pair` does: trailing
//! whitespace of the context moves to the front of the continuation; `context + continuation` is
//! encoded whole and split at `len(encode(context))`; an empty context becomes the model's prefix
//! token. Encoding uses the tokenizer's own special-token handling, as lm-eval 0.4.13 does when
//! `add_bos_token` is left unset (`tokenizer.encode` with its default `add_special_tokens=True`):
//! a Llama tokenizer's BOS is there, SmolLM2's tokenizer adds nothing. The model sees
//! `(context + continuation)[-(max_length + 1):][:-1]`; the score is the sum of the continuation
//! tokens' log-probabilities. Requests are batched longest first with right padding, which a
//! causal model cannot see.
//!
//! Two paths give those scores. [`loglikelihoods`] runs every request whole, as lm-eval does.
//! [`loglikelihoods_shared`] (the default of [`crate::evaluate_task`]) shares work between the
//! choices of one question: the longest common prefix of their model inputs runs once, keeping
//! each block's keys and values (`spindle-model`'s `Block::forward_cached`), and only each
//! choice's remaining tokens run after it. The scores agree to float rounding (tested to 1e-5 on
//! the tiny golden models and on SmolLM2's lm-eval golden items).

use spindle_data::Tokenizer;
use spindle_model::Model;
use tch::{Kind, Tensor};

use crate::task::Item;
use crate::{EvalError, Resident};

/// One request, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub context: Vec<u32>,
    pub continuation: Vec<u32>,
}

/// lm-eval's `_encode_pair` (and its empty-context rule, with `prefix` as the prefix token: the
/// model's BOS, else its EOS).
pub fn encode_pair(tokenizer: &Tokenizer, context: &str, continuation: &str, prefix: Option<u32>) -> Result<Encoded, EvalError> {
    if context.is_empty() {
        let prefix =
            prefix.ok_or_else(|| EvalError::Config("a request has an empty context and the model declares no BOS or EOS token".into()))?;
        return Ok(Encoded { context: vec![prefix], continuation: tokenizer.encode(continuation, true)? });
    }
    let trimmed = context.trim_end();
    let (context, continuation) = if trimmed.len() < context.len() {
        (trimmed.to_owned(), format!("{}{continuation}", &context[trimmed.len()..]))
    } else {
        (context.to_owned(), continuation.to_owned())
    };
    let whole = tokenizer.encode(&format!("{context}{continuation}"), true)?;
    let context_ids = tokenizer.encode(&context, true)?;
    let split = context_ids.len().min(whole.len());
    Ok(Encoded { continuation: whole[split..].to_vec(), context: context_ids })
}

/// The score of one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLikelihood {
    /// Sum of the continuation tokens' log-probabilities.
    pub logprob: f64,
    /// Whether greedy decoding would produce the continuation.
    pub is_greedy: bool,
}

/// The model input of a request and how many of its last positions predict continuation tokens:
/// `(context + continuation)[-(max_length + 1):][:-1]`, as lm-eval's `_loglikelihood_tokens`
/// builds it.
fn model_input(index: usize, r: &Encoded, max_length: usize) -> Result<(Vec<i64>, usize), EvalError> {
    if r.continuation.is_empty() {
        return Err(EvalError::Config(format!("request {index} has an empty continuation")));
    }
    let mut all: Vec<i64> = r.context.iter().chain(&r.continuation).map(|&t| i64::from(t)).collect();
    let keep = max_length + 1;
    if all.len() > keep {
        all.drain(..all.len() - keep);
    }
    all.pop();
    let cont = r.continuation.len().min(all.len());
    Ok((all, cont))
}

/// The log-probabilities rows of `logp` `[n, vocab]` (on the CPU) give to `targets` (n tokens):
/// (gathered log-probabilities, whether each row's argmax is its target).
fn pick(logp: &Tensor, targets: &[u32]) -> (Tensor, Tensor) {
    let targets: Vec<i64> = targets.iter().map(|&t| i64::from(t)).collect();
    let targets = Tensor::from_slice(&targets);
    let picked = logp.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1);
    let greedy = logp.argmax(1, false).eq_tensor(&targets);
    (picked, greedy)
}

/// The score of request `index` from its gathered log-probabilities and greedy matches, in
/// continuation order.
fn finish(index: usize, picked: &Tensor, greedy: &Tensor) -> Result<LogLikelihood, EvalError> {
    let logprob = picked.sum(Kind::Double).double_value(&[]);
    if !logprob.is_finite() {
        return Err(EvalError::NotFinite { what: format!("log-likelihood of request {index}") });
    }
    Ok(LogLikelihood { logprob, is_greedy: greedy.all().int64_value(&[]) == 1 })
}

/// Log-probabilities `[rows, vocab]`, in fp32 on the CPU, of the hidden states `rows`.
fn log_probs(model: &Model, rows: &Tensor) -> Tensor {
    model.head(rows).to_kind(Kind::Float).log_softmax(-1, Kind::Float).to_device(tch::Device::Cpu)
}

/// Scores `requests` one by one, in batches of `batch_size` across all of them (longest first);
/// `progress(done, total)` counts requests. [`loglikelihoods_shared`] gives the same scores with
/// less work when requests share a context.
pub fn loglikelihoods(
    model: &Model,
    requests: &[Encoded],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    let _guard = tch::no_grad_guard();
    let resident = Resident::load(model)?;
    per_request(&resident, requests, max_length, batch_size, progress)
}

pub(crate) fn per_request(
    resident: &Resident,
    requests: &[Encoded],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    if batch_size == 0 {
        return Err(EvalError::Config("batch size must be at least 1".into()));
    }
    let model = resident.model;
    // (index, model input, continuation length)
    let mut inputs: Vec<(usize, Vec<i64>, usize)> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let (all, cont) = model_input(i, r, max_length)?;
        inputs.push((i, all, cont));
    }
    // Longest first, as lm-eval orders them (so padding is small and the first batch shows the
    // memory high-water mark).
    inputs.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut out = vec![LogLikelihood { logprob: 0.0, is_greedy: false }; requests.len()];
    let _guard = tch::no_grad_guard();
    let mut done = 0;
    for batch in inputs.chunks(batch_size) {
        progress(done, requests.len());
        let width = batch.iter().map(|b| b.1.len()).max().unwrap_or(1);
        let mut flat = Vec::with_capacity(batch.len() * width);
        for (_, ids, _) in batch {
            flat.extend_from_slice(ids);
            flat.extend(std::iter::repeat_n(0i64, width - ids.len()));
        }
        let ids = Tensor::from_slice(&flat).view([batch.len() as i64, width as i64]).to_device(model.device());
        let hidden = resident.hidden(&ids)?;
        // Only the positions that predict continuation tokens go through the head: the
        // vocabulary projection and its softmax dominate short-continuation scoring otherwise.
        let mut rows = Vec::with_capacity(batch.len());
        for (row, (_, ids, cont)) in batch.iter().enumerate() {
            rows.push(hidden.get(row as i64).narrow(0, (ids.len() - cont) as i64, *cont as i64));
        }
        let logp = log_probs(model, &Tensor::cat(&rows, 0));
        let mut at = 0i64;
        for (index, _, cont) in batch {
            let c = &requests[*index].continuation;
            let (picked, greedy) = pick(&logp.narrow(0, at, *cont as i64), &c[c.len() - cont..]);
            at += *cont as i64;
            out[*index] = finish(*index, &picked, &greedy)?;
        }
        done += batch.len();
    }
    progress(requests.len(), requests.len());
    Ok(out)
}

/// Scores `requests` in groups of consecutive requests (`groups` holds each group's size: the
/// choices of one question), sharing work inside a group: the longest common prefix of the
/// group's model inputs (the token sequences [`loglikelihoods`] would run, after the same
/// truncation) runs through the model once, each block keeping its keys and values (it runs as
/// the start of the group's longest input, which is scored from that same pass), and the other
/// requests' remaining tokens then run together, right-padded and longest first, at the
/// positions after it, attending to the cache (in batches of `batch_size` where that exceeds a
/// question's choices). A question thus takes two forward passes, whatever its choices.
/// The positions that predict continuation tokens go through the head once per question. Only
/// tokens are shared:
/// WinoGrande's choices differ in their contexts and share their continuation, so only the words
/// before the blank are shared, and a group whose inputs differ from the first token runs as
/// [`loglikelihoods`] does. One group's cache is held at a time. The scores equal
/// [`loglikelihoods`]'s up to float rounding (the attention over a cached prefix sums in
/// another order). `progress(done, total)` counts requests.
pub fn loglikelihoods_shared(
    model: &Model,
    requests: &[Encoded],
    groups: &[usize],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    let _guard = tch::no_grad_guard();
    let resident = Resident::load(model)?;
    shared_prefix(&resident, requests, groups, max_length, batch_size, progress)
}

/// [`loglikelihoods_shared`] streamed by layer (one block in memory at a time, see
/// [`crate::Residence::Streamed`]): the same scores, bit for bit. `progress(done, total)`
/// counts blocks.
pub fn loglikelihoods_shared_streamed(
    model: &Model,
    requests: &[Encoded],
    groups: &[usize],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    shared_prefix_streamed(model, requests, groups, max_length, batch_size, progress)
}

/// The length of the longest common prefix of `seqs`.
fn common_prefix(seqs: &[&[i64]]) -> usize {
    let Some((first, rest)) = seqs.split_first() else { return 0 };
    let mut n = first.len();
    for s in rest {
        n = n.min(s.iter().zip(first.iter()).take_while(|(a, b)| a == b).count());
    }
    n
}

/// One question's passes, planned from its token sequences alone: which request's input runs
/// whole as the lead (keeping each block's keys and values of the shared prefix), and which
/// requests' remaining tokens run after the prefix, in which batches.
struct QuestionPlan {
    /// The index of the question's first request.
    start: usize,
    /// Per request: its model input and how many continuation tokens it scores.
    inputs: Vec<(Vec<i64>, usize)>,
    /// Per request: the first position that predicts a continuation token.
    first: Vec<usize>,
    /// The shared prefix's length (0: none; every request then runs in the batches).
    p: usize,
    /// The request that runs whole, when there is a prefix.
    lead: Option<usize>,
    /// The other requests, longest first, in batches, each run after the prefix.
    batches: Vec<Vec<usize>>,
}

impl QuestionPlan {
    fn new(start: usize, group: &[Encoded], max_length: usize, batch_size: usize) -> Result<QuestionPlan, EvalError> {
        let size = group.len();
        let inputs: Vec<(Vec<i64>, usize)> =
            group.iter().enumerate().map(|(k, r)| model_input(start + k, r, max_length)).collect::<Result<_, _>>()?;
        let p = common_prefix(&inputs.iter().map(|(ids, _)| ids.as_slice()).collect::<Vec<_>>());
        let len = |k: usize| inputs[k].0.len();
        let first: Vec<usize> = inputs.iter().map(|(ids, cont)| ids.len() - cont).collect();
        let mut rest: Vec<usize> = (0..size).collect();
        let mut lead = None;
        if p > 0 {
            // The lead (the longest input, the first of those) runs whole; its first p positions
            // are the shared prefix. Folding the prefix into one request's pass saves a pass per
            // question.
            let l = (0..size).max_by(|&a, &b| len(a).cmp(&len(b)).then(b.cmp(&a))).unwrap_or(0);
            rest.retain(|&k| k != l && len(k) > p);
            lead = Some(l);
        }
        // The remaining tokens of the others, longest first, after the prefix: all of them in
        // one batch (a question's choices are few, and each pass reads every weight once), or in
        // batches of `batch_size` where that is larger.
        rest.sort_by(|&a, &b| len(b).cmp(&len(a)).then(a.cmp(&b)));
        let batches = rest.chunks(batch_size.max(rest.len()).max(1)).map(<[usize]>::to_vec).collect();
        Ok(QuestionPlan { start, inputs, first, p, lead, batches })
    }

    fn len(&self, k: usize) -> usize {
        self.inputs[k].0.len()
    }

    /// The lead's whole input `[1, len]`.
    fn lead_ids(&self, lead: usize, device: tch::Device) -> Tensor {
        Tensor::from_slice(&self.inputs[lead].0).view([1, self.len(lead) as i64]).to_device(device)
    }

    /// A batch's tokens after the prefix, right-padded `[rows, width]`.
    fn batch_ids(&self, batch: &[usize], device: tch::Device) -> Tensor {
        let width = self.len(batch[0]) - self.p;
        let mut flat = Vec::with_capacity(batch.len() * width);
        for &k in batch {
            let tail = &self.inputs[k].0[self.p..];
            flat.extend_from_slice(tail);
            flat.extend(std::iter::repeat_n(0i64, width - tail.len()));
        }
        Tensor::from_slice(&flat).view([batch.len() as i64, width as i64]).to_device(device)
    }

    /// The question's scores from the final hidden states of its lead's run and of its batches:
    /// the positions that predict continuation tokens go through the head once for the whole
    /// question, as in the request-by-request path.
    fn score(
        &self,
        model: &Model,
        group: &[Encoded],
        lead_hidden: Option<&Tensor>,
        batch_hidden: &[Tensor],
    ) -> Result<Vec<LogLikelihood>, EvalError> {
        let (size, p, first) = (group.len(), self.p, &self.first);
        // The rows that go through the head, and per request where its scored positions' rows
        // are in them, in order: (start row, count) in the lead's run (shared between
        // requests), then in its own run after the prefix.
        let mut head_rows: Vec<Tensor> = Vec::new();
        let mut spans: Vec<Vec<(i64, i64)>> = (0..size).map(|_| Vec::new()).collect();
        let mut at = 0i64;
        if let (Some(lead), Some(hidden)) = (self.lead, lead_hidden) {
            // Scored positions inside the lead's run: the lead's own, and the others' inside the
            // prefix (the same rows for several requests go through the head once).
            let end = |k: usize| if k == lead { self.len(k) } else { p };
            let lo = (0..size).filter(|&k| first[k] < end(k)).map(|k| first[k]).min().unwrap_or(p);
            if lo < self.len(lead) {
                head_rows.push(hidden.get(0).narrow(0, lo as i64, (self.len(lead) - lo) as i64));
                for k in (0..size).filter(|&k| first[k] < end(k)) {
                    spans[k].push(((first[k] - lo) as i64, (end(k) - first[k]) as i64));
                }
                at = (self.len(lead) - lo) as i64;
            }
        }
        for (batch, hidden) in self.batches.iter().zip(batch_hidden) {
            for (row, &k) in batch.iter().enumerate() {
                let from = first[k].max(p);
                let n = (self.len(k) - from) as i64;
                head_rows.push(hidden.get(row as i64).narrow(0, (from - p) as i64, n));
                spans[k].push((at, n));
                at += n;
            }
        }
        let logp = log_probs(model, &Tensor::cat(&head_rows, 0));
        let mut out = Vec::with_capacity(size);
        for (k, r) in group.iter().enumerate() {
            let cont = self.inputs[k].1;
            let rows: Vec<Tensor> = spans[k].iter().map(|&(from, n)| logp.narrow(0, from, n)).collect();
            let (picked, greedy) = pick(&Tensor::cat(&rows, 0), &r.continuation[r.continuation.len() - cont..]);
            out.push(finish(self.start + k, &picked, &greedy)?);
        }
        Ok(out)
    }
}

/// Each question's plan, after checking the groups and the batch size.
fn plans(requests: &[Encoded], groups: &[usize], max_length: usize, batch_size: usize) -> Result<Vec<QuestionPlan>, EvalError> {
    if batch_size == 0 {
        return Err(EvalError::Config("batch size must be at least 1".into()));
    }
    let total: usize = groups.iter().sum();
    if total != requests.len() {
        return Err(EvalError::Config(format!("groups of {total} requests in all for {} requests", requests.len())));
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(groups.len());
    for &size in groups.iter().filter(|&&size| size > 0) {
        out.push(QuestionPlan::new(start, &requests[start..start + size], max_length, batch_size)?);
        start += size;
    }
    Ok(out)
}

pub(crate) fn shared_prefix(
    resident: &Resident,
    requests: &[Encoded],
    groups: &[usize],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    let plans = plans(requests, groups, max_length, batch_size)?;
    let model = resident.model;
    let device = model.device();
    let _guard = tch::no_grad_guard();
    let mut out = Vec::with_capacity(requests.len());
    for plan in &plans {
        progress(plan.start, requests.len());
        let group = &requests[plan.start..plan.start + plan.inputs.len()];
        let mut lead_hidden = None;
        let mut caches = None;
        if let Some(lead) = plan.lead {
            // The lead runs whole, each block keeping its keys and values; the others attend to
            // the first p of them.
            let (hidden, kv) = resident.hidden_cached(&plan.lead_ids(lead, device), None)?;
            caches = Some(kv.iter().map(|c| c.first(plan.p as i64)).collect::<Vec<_>>());
            lead_hidden = Some(hidden);
        }
        let mut batch_hidden = Vec::with_capacity(plan.batches.len());
        for batch in &plan.batches {
            batch_hidden.push(resident.hidden_cached(&plan.batch_ids(batch, device), caches.as_deref())?.0);
        }
        out.extend(plan.score(model, group, lead_hidden.as_ref(), &batch_hidden)?);
    }
    progress(requests.len(), requests.len());
    Ok(out)
}

/// One pass's state while a streamed evaluation walks the blocks: its hidden states and the
/// mask and tables of its positions.
struct Pass {
    hidden: Tensor,
    ctx: spindle_model::CachedCtx,
}

/// [`shared_prefix`] streamed by layer: every question's passes go through block `i` before any
/// goes through block `i + 1`, as SparseGPT's own evaluation streams its windows, so one block
/// is resident at a time; the hidden states of every pass are held instead (tokens × hidden
/// floats). Each pass computes exactly what [`shared_prefix`] computes for it, so the scores are
/// equal bit for bit. `progress(done, total)` counts blocks.
pub(crate) fn shared_prefix_streamed(
    model: &Model,
    requests: &[Encoded],
    groups: &[usize],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    let plans = plans(requests, groups, max_length, batch_size)?;
    let device = model.device();
    let _guard = tch::no_grad_guard();
    let mut leads: Vec<Option<Pass>> = Vec::with_capacity(plans.len());
    let mut batches: Vec<Vec<Pass>> = Vec::with_capacity(plans.len());
    for plan in &plans {
        leads.push(match plan.lead {
            Some(lead) => {
                let ids = plan.lead_ids(lead, device);
                let size = ids.size();
                Some(Pass { hidden: model.embed_at(&ids, 0)?, ctx: model.context_at(size[0], size[1], 0) })
            }
            None => None,
        });
        let past = if plan.lead.is_some() { plan.p as i64 } else { 0 };
        let mut passes = Vec::with_capacity(plan.batches.len());
        for batch in &plan.batches {
            let ids = plan.batch_ids(batch, device);
            let size = ids.size();
            passes.push(Pass { hidden: model.embed_at(&ids, past)?, ctx: model.context_at(size[0], size[1], past) });
        }
        batches.push(passes);
    }
    let layers = model.config().num_layers;
    for i in 0..layers {
        progress(i, layers);
        let block = model.block(i)?;
        for (q, plan) in plans.iter().enumerate() {
            let cache = match leads[q].as_mut() {
                Some(pass) => {
                    let (out, kv) = block.forward_cached(&pass.hidden, &pass.ctx, None)?;
                    pass.hidden = out;
                    Some(kv.first(plan.p as i64))
                }
                None => None,
            };
            for pass in &mut batches[q] {
                pass.hidden = block.forward_cached(&pass.hidden, &pass.ctx, cache.as_ref())?.0;
            }
        }
    }
    let mut out = Vec::with_capacity(requests.len());
    for (q, plan) in plans.iter().enumerate() {
        let group = &requests[plan.start..plan.start + plan.inputs.len()];
        let hidden: Vec<Tensor> = batches[q].iter().map(|p| p.hidden.shallow_clone()).collect();
        out.extend(plan.score(model, group, leads[q].as_ref().map(|p| &p.hidden), &hidden)?);
    }
    progress(layers, layers);
    Ok(out)
}

/// The standard error lm-evaluation-harness 0.4.13 reports for a metric aggregated by `mean`
/// (`acc`, `acc_norm`): `mean_stderr` of `lm_eval/api/metrics.py`, the sample standard deviation
/// over the square root of n, `sqrt(Σ (x − μ)² / (n − 1)) / sqrt(n)` with `μ = sum / n`, summed in
/// order as Python 3.11's `sum` does (the golden venv's; 3.12 compensates, which can move the
/// last bits). For 0/1 scores of accuracy p this is `sqrt(p (1 − p) / (n − 1))`.
/// `None` for fewer than two values, where lm-eval reports "N/A".
pub fn mean_stderr(values: &[f64]) -> Option<f64> {
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mu = values.iter().sum::<f64>() / n as f64;
    let squares = values.iter().map(|x| (x - mu).powi(2)).sum::<f64>();
    Some((squares / (n - 1) as f64).sqrt() / (n as f64).sqrt())
}

/// numpy's `argmax`: the first maximum.
fn argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

/// One item's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemResult {
    pub loglikelihoods: Vec<f64>,
    pub gold: usize,
    /// argmax of the log-likelihoods.
    pub pred: usize,
    /// argmax of the log-likelihoods divided by each choice's length in characters.
    pub pred_norm: usize,
}

/// lm-eval's `process_results` for multiple choice.
pub fn item_result(item: &Item, lls: &[f64]) -> ItemResult {
    let pred = argmax(lls);
    let normed: Vec<f64> = lls.iter().zip(&item.choices).map(|(ll, c)| ll / c.chars().count() as f64).collect();
    ItemResult { loglikelihoods: lls.to_vec(), gold: item.gold, pred, pred_norm: argmax(&normed) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Item;

    #[test]
    fn argmax_takes_the_first_maximum_like_numpy() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        assert_eq!(argmax(&[-1.0]), 0);
    }

    #[test]
    fn pairs_are_encoded_whole_and_split_like_lm_eval() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/llama2c/tokenizer.json");
        let tok = Tokenizer::from_file(&path).unwrap();
        // This tokenizer adds BOS (id 1), as lm-eval's default encode keeps it.
        let e = encode_pair(&tok, "Once upon ", "a time", None).unwrap();
        let whole = tok.encode("Once upon a time", true).unwrap();
        assert_eq!(e.context, tok.encode("Once upon", true).unwrap());
        assert_eq!(e.context[0], 1);
        assert_eq!([e.context.clone(), e.continuation.clone()].concat(), whole, "the trailing space moved to the continuation");
        let err = encode_pair(&tok, "", "a", None).unwrap_err();
        assert_eq!(err.to_string(), "a request has an empty context and the model declares no BOS or EOS token");
        assert_eq!(encode_pair(&tok, "", "a", Some(1)).unwrap().context, [1]);
    }

    #[test]
    fn the_standard_error_is_lm_evals_mean_stderr() {
        // By hand: p = 3/4, Σ(x − p)² = 3/16 + 9/16 = 3/4, sqrt((3/4) / 3) / sqrt(4) = 1/4.
        assert_eq!(mean_stderr(&[1.0, 0.0, 1.0, 1.0]), Some(0.25));
        // 97 of 200: sqrt(0.485 · 0.515 / 199) = 0.0354281068329771...; lm-eval 0.4.13's
        // `mean_stderr` gives 0.03542810683297717 (its sums, in this order).
        let v: Vec<f64> = (0..200).map(|i| if i < 97 { 1.0 } else { 0.0 }).collect();
        let se = mean_stderr(&v).unwrap();
        assert!((se - (0.485f64 * 0.515 / 199.0).sqrt()).abs() < 1e-15, "{se}");
        assert_eq!(se, 0.035_428_106_832_977_17);
        assert_eq!(mean_stderr(&[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]), Some(0.184_427_778_390_829_38));
        // lm-eval reports "N/A" for a single item.
        assert_eq!(mean_stderr(&[1.0]), None);
        assert_eq!(mean_stderr(&[]), None);
    }

    #[test]
    fn the_common_prefix_is_counted_in_tokens() {
        assert_eq!(common_prefix(&[&[1, 2, 3, 4], &[1, 2, 5], &[1, 2, 3]]), 2);
        assert_eq!(common_prefix(&[&[1, 2, 3], &[1, 2, 3]]), 3);
        assert_eq!(common_prefix(&[&[1, 2], &[1, 2, 3]]), 2);
        assert_eq!(common_prefix(&[&[7, 2], &[1, 2]]), 0);
        assert_eq!(common_prefix(&[&[4, 5]]), 2);
        assert_eq!(common_prefix(&[]), 0);
    }

    #[test]
    fn model_inputs_are_truncated_on_the_left_and_drop_the_last_token() {
        let r = Encoded { context: vec![1, 2, 3, 4, 5], continuation: vec![6, 7, 8] };
        assert_eq!(model_input(0, &r, 100).unwrap(), (vec![1, 2, 3, 4, 5, 6, 7], 3));
        // Keep max_length + 1 = 5 tokens, then drop the last.
        assert_eq!(model_input(0, &r, 4).unwrap(), (vec![4, 5, 6, 7], 3));
        // A continuation longer than the input: every position scores.
        assert_eq!(model_input(0, &r, 2).unwrap(), (vec![6, 7], 2));
    }

    #[test]
    fn acc_norm_divides_by_characters() {
        let item = Item { requests: vec![], choices: vec!["ab".into(), "abcdef".into()], gold: 1 };
        let r = item_result(&item, &[-2.0, -3.0]);
        assert_eq!((r.pred, r.pred_norm), (0, 1));
    }
}
