//! Shared-prefix scoring (`loglikelihoods_shared`) against request-by-request scoring
//! (`loglikelihoods`) on the tiny golden checkpoints of `tests/golden/` (grouped-query attention,
//! Mistral's sliding window of 6, Llama 3's RoPE scaling, Qwen2's biases, Qwen3's q/k norms, Gemma's
//! alternating windows and soft-caps, Phi-3's fused projections, Mixtral's experts, OPT's learned
//! positions pre- and post-norm): every request's log-likelihood within 1e-5 and the same greedy flag, for
//! groups whose inputs share a long prefix, a short one, none at all, or everything, with
//! left-truncated inputs, at batch sizes 1, 2 and 8.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;

use spindle_eval::{Encoded, LogLikelihood, loglikelihoods, loglikelihoods_shared, loglikelihoods_shared_streamed};
use spindle_model::Model;
use tch::{Device, Kind};

const MODELS: &[&str] =
    &["llama-gqa", "llama3-rope", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mixtral", "opt-pre", "opt-post-proj"];
const TOLERANCE: f64 = 1e-5;

fn open(name: &str) -> Model {
    Model::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name), Device::Cpu, Kind::Float).unwrap()
}

/// `len` deterministic ids inside the tiny vocabulary of 128.
fn ids(seed: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| (seed * 29 + i * 13 + i * i * 5) % 125 + 3).collect()
}

fn req(context: Vec<u32>, continuation: Vec<u32>) -> Encoded {
    Encoded { context, continuation }
}

/// Groups of requests covering the ways a question's choices can share tokens.
fn groups() -> Vec<Vec<Encoded>> {
    let question = ids(1, 14);
    let long = ids(2, 30);
    vec![
        // One context, continuations of 1 to 6 tokens (ARC-like): every first continuation token
        // is predicted inside the shared prefix.
        vec![
            req(question.clone(), ids(3, 1)),
            req(question.clone(), ids(4, 3)),
            req(question.clone(), ids(5, 6)),
            req(question.clone(), ids(6, 2)),
        ],
        // Continuations that share their first tokens too (the prefix reaches into them).
        vec![req(question.clone(), [ids(7, 3), ids(8, 2)].concat()), req(question.clone(), [ids(7, 3), ids(9, 5)].concat())],
        // Contexts that differ from their first token and a shared continuation (WinoGrande-like):
        // no common prefix.
        vec![req(ids(10, 9), ids(12, 4)), req(ids(11, 5), ids(12, 4))],
        // Contexts that share a few tokens, then diverge.
        vec![req([ids(13, 3), ids(14, 6)].concat(), ids(15, 2)), req([ids(13, 3), ids(16, 8)].concat(), ids(15, 2))],
        // Identical requests: the whole input is the prefix, nothing runs after it.
        vec![req(question.clone(), ids(17, 4)), req(question.clone(), ids(17, 4))],
        // A one-request group.
        vec![req(long.clone(), ids(18, 5))],
        // Long inputs (30 + 10 tokens, past Mistral's window) that the test's max_length of 24
        // truncates on the left.
        vec![req(long.clone(), ids(19, 10)), req(long.clone(), ids(20, 3)), req(long, ids(21, 7))],
    ]
}

fn compare(name: &str, what: &str, ours: &[LogLikelihood], theirs: &[LogLikelihood]) {
    assert_eq!(ours.len(), theirs.len());
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        let d = (a.logprob - b.logprob).abs();
        assert!(d <= TOLERANCE, "{name} ({what}), request {i}: {} vs {} (differ by {d})", a.logprob, b.logprob);
        assert_eq!(a.is_greedy, b.is_greedy, "{name} ({what}), request {i}: greedy");
    }
}

#[test]
fn shared_prefix_scores_equal_request_by_request_scores() {
    let groups = groups();
    // An empty group (a question without choices) is allowed and scores nothing.
    let sizes: Vec<usize> = [vec![0], groups.iter().map(Vec::len).collect()].concat();
    let requests: Vec<Encoded> = groups.into_iter().flatten().collect();
    for name in MODELS {
        let model = open(name);
        for max_length in [63usize, 24] {
            let reference = loglikelihoods(&model, &requests, max_length, 1, &mut |_, _| {}).unwrap();
            assert!(reference.iter().all(|l| l.logprob < 0.0), "{name}: log-likelihoods are negative");
            for batch in [1usize, 2, 8] {
                let mut seen = Vec::new();
                let shared = loglikelihoods_shared(&model, &requests, &sizes, max_length, batch, &mut |d, t| seen.push((d, t))).unwrap();
                compare(name, &format!("max_length {max_length}, batch {batch}"), &shared, &reference);
                assert_eq!(seen.first(), Some(&(0, requests.len())));
                assert_eq!(seen.last(), Some(&(requests.len(), requests.len())));
            }
        }
    }
}

/// Streamed by layer (every question's passes through block i before block i + 1), the scores are
/// the resident shared-prefix path's bit for bit, on every family; progress counts blocks.
#[test]
fn streamed_scores_equal_resident_scores_bit_for_bit() {
    let groups = groups();
    let sizes: Vec<usize> = [vec![0], groups.iter().map(Vec::len).collect()].concat();
    let requests: Vec<Encoded> = groups.into_iter().flatten().collect();
    for name in MODELS {
        let model = open(name);
        for (max_length, batch) in [(63usize, 1usize), (24, 8)] {
            let resident = loglikelihoods_shared(&model, &requests, &sizes, max_length, batch, &mut |_, _| {}).unwrap();
            let mut seen = Vec::new();
            let streamed =
                loglikelihoods_shared_streamed(&model, &requests, &sizes, max_length, batch, &mut |d, t| seen.push((d, t))).unwrap();
            for (i, (a, b)) in streamed.iter().zip(&resident).enumerate() {
                assert_eq!((a.logprob.to_bits(), a.is_greedy), (b.logprob.to_bits(), b.is_greedy), "{name} request {i}");
            }
            let layers = model.config().num_layers;
            assert_eq!(seen, (0..=layers).map(|i| (i, layers)).collect::<Vec<_>>(), "{name}: progress counts blocks");
        }
    }
}

#[test]
fn groups_must_cover_the_requests() {
    let model = open("llama-gqa");
    let requests = vec![req(ids(1, 4), ids(2, 2)), req(ids(1, 4), ids(3, 2))];
    let err = loglikelihoods_shared(&model, &requests, &[1], 63, 1, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.to_string(), "groups of 1 requests in all for 2 requests");
    let err = loglikelihoods_shared(&model, &requests, &[2], 63, 0, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.to_string(), "batch size must be at least 1");
    let err = loglikelihoods_shared(&model, &[req(ids(1, 4), vec![])], &[1], 63, 1, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.to_string(), "request 0 has an empty continuation");
}
