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
        let prefix = prefix.ok_or_else(|| EvalError::Config("a request has an empty context and the model declares no BOS or EOS token".into()))?;
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

/// Scores `requests` in batches of `batch_size`; `progress(done, total)` counts requests.
pub fn loglikelihoods(
    model: &Model,
    requests: &[Encoded],
    max_length: usize,
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<LogLikelihood>, EvalError> {
    if batch_size == 0 {
        return Err(EvalError::Config("batch size must be at least 1".into()));
    }
    // (index, model input, continuation length)
    let mut inputs: Vec<(usize, Vec<i64>, usize)> = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        if r.continuation.is_empty() {
            return Err(EvalError::Config(format!("request {i} has an empty continuation")));
        }
        let mut all: Vec<i64> = r.context.iter().chain(&r.continuation).map(|&t| i64::from(t)).collect();
        let keep = max_length + 1;
        if all.len() > keep {
            all.drain(..all.len() - keep);
        }
        all.pop();
        let cont = r.continuation.len().min(all.len());
        inputs.push((i, all, cont));
    }
    // Longest first, as lm-eval orders them (so padding is small and the first batch shows the
    // memory high-water mark).
    inputs.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut out = vec![LogLikelihood { logprob: 0.0, is_greedy: false }; requests.len()];
    let _guard = tch::no_grad_guard();
    let resident = Resident::load(model)?;
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
        let logp = model.head(&Tensor::cat(&rows, 0)).to_kind(Kind::Float).log_softmax(-1, Kind::Float).to_device(tch::Device::Cpu);
        let mut at = 0i64;
        for (index, _, cont) in batch {
            let cont_len = *cont as i64;
            let slice = logp.narrow(0, at, cont_len);
            at += cont_len;
            let targets: Vec<i64> = requests[*index].continuation[requests[*index].continuation.len() - cont..].iter().map(|&t| i64::from(t)).collect();
            let targets = Tensor::from_slice(&targets);
            let picked = slice.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1);
            let logprob = picked.sum(Kind::Double).double_value(&[]);
            let greedy = slice.argmax(1, false).eq_tensor(&targets).all().int64_value(&[]) == 1;
            if !logprob.is_finite() {
                return Err(EvalError::NotFinite { what: format!("log-likelihood of request {index}") });
            }
            out[*index] = LogLikelihood { logprob, is_greedy: greedy };
        }
        done += batch.len();
    }
    progress(requests.len(), requests.len());
    Ok(out)
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
    fn acc_norm_divides_by_characters() {
        let item = Item { requests: vec![], choices: vec!["ab".into(), "abcdef".into()], gold: 1 };
        let r = item_result(&item, &[-2.0, -3.0]);
        assert_eq!((r.pred, r.pred_norm), (0, 1));
    }
}
