//! The cached forward pass (`Model::embed_at`, `Model::context_at`, `Block::forward_cached`)
//! against the plain one on the tiny golden checkpoints of `tests/golden/`: a prefix run once,
//! then right-padded rows of later tokens attending to its cache, give the hidden states a full
//! pass gives at those positions. The checkpoints cover grouped-query attention (llama-gqa,
//! qwen2 with one kv head), Mistral's sliding window of 6 (prefixes longer than the window),
//! Llama 3's RoPE scaling, and OPT's learned positions (pre- and post-norm, with projections).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use spindle_model::{KvCache, Model};
use tch::{Device, Kind, Tensor};

const MODELS: &[&str] =
    &["llama-gqa", "llama3-rope", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mixtral", "opt-pre", "opt-post-proj"];
const TOLERANCE: f64 = 1e-5;

fn open(name: &str) -> Model {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name);
    Model::open(&dir, Device::Cpu, Kind::Float).unwrap()
}

/// A deterministic token sequence of `len` ids inside the tiny models' vocabulary of 128.
fn tokens(seed: i64, len: usize) -> Vec<i64> {
    (0..len as i64).map(|i| (seed * 31 + i * 17 + i * i * 7) % 125 + 3).collect()
}

/// The final hidden states of the plain pass over `ids` `[1, seq]`.
fn full(model: &Model, ids: &[i64]) -> Tensor {
    let t = Tensor::from_slice(ids).view([1, ids.len() as i64]);
    let ctx = model.context(1, ids.len() as i64, None);
    let mut h = model.embed(&t, None).unwrap();
    for i in 0..model.config().num_layers {
        h = model.block(i).unwrap().forward(&h, &ctx);
    }
    h.squeeze_dim(0)
}

/// Runs `prefix` through every block keeping the caches; returns its hidden states and caches.
fn run_prefix(model: &Model, prefix: &[i64]) -> (Tensor, Vec<KvCache>) {
    let t = Tensor::from_slice(prefix).view([1, prefix.len() as i64]);
    let ctx = model.context_at(1, prefix.len() as i64, 0);
    let mut h = model.embed_at(&t, 0).unwrap();
    let mut caches = Vec::new();
    for i in 0..model.config().num_layers {
        let (out, kv) = model.block(i).unwrap().forward_cached(&h, &ctx, None).unwrap();
        h = out;
        caches.push(kv);
    }
    (h.squeeze_dim(0), caches)
}

/// Runs the right-padded `rows` after the cached prefix; returns `[rows, width, hidden]`.
fn run_rows(model: &Model, rows: &[Vec<i64>], caches: &[KvCache]) -> Tensor {
    let past = caches.first().map_or(0, KvCache::len);
    let width = rows.iter().map(Vec::len).max().unwrap();
    let mut flat = Vec::new();
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(0i64, width - r.len()));
    }
    let ids = Tensor::from_slice(&flat).view([rows.len() as i64, width as i64]);
    let ctx = model.context_at(rows.len() as i64, width as i64, past);
    assert_eq!(ctx.past(), past);
    let mut h = model.embed_at(&ids, past).unwrap();
    for i in 0..model.config().num_layers {
        h = model.block(i).unwrap().forward_cached(&h, &ctx, caches.get(i)).unwrap().0;
    }
    h
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn a_prefix_run_without_a_past_is_the_plain_pass_bit_for_bit() {
    let _guard = tch::no_grad_guard();
    for name in MODELS {
        let model = open(name);
        let ids = tokens(1, 13);
        let (h, caches) = run_prefix(&model, &ids);
        assert!(h.equal(&full(&model, &ids)), "{name}: the prefix pass differs from Block::forward");
        assert_eq!(caches.len(), model.config().num_layers);
        let c = model.config();
        assert_eq!(caches[0].keys.size(), [1, c.num_kv_heads as i64, 13, c.head_dim as i64], "{name}");
        assert_eq!(caches[0].values.size(), caches[0].keys.size(), "{name}");
    }
}

#[test]
fn rows_after_a_cached_prefix_equal_the_full_pass_at_their_positions() {
    let _guard = tch::no_grad_guard();
    for name in MODELS {
        let model = open(name);
        // Prefix lengths on both sides of Mistral's window of 6; rows of different lengths
        // (right padding), alone and batched.
        for prefix_len in [1usize, 5, 9, 20] {
            let prefix = tokens(prefix_len as i64, prefix_len);
            let rows: Vec<Vec<i64>> = [4usize, 1, 11, 7].iter().enumerate().map(|(k, &n)| tokens(100 + k as i64, n)).collect();
            let (_, caches) = run_prefix(&model, &prefix);
            let batched = run_rows(&model, &rows, &caches);
            for (k, row) in rows.iter().enumerate() {
                let whole = full(&model, &[prefix.clone(), row.clone()].concat());
                let expected = whole.narrow(0, prefix_len as i64, row.len() as i64);
                let alone = run_rows(&model, std::slice::from_ref(row), &caches).squeeze_dim(0);
                let d = max_abs_diff(&alone, &expected);
                assert!(d <= TOLERANCE, "{name}, prefix {prefix_len}, row {k} alone: differs by {d}");
                let d = max_abs_diff(&batched.get(k as i64).narrow(0, 0, row.len() as i64), &expected);
                assert!(d <= TOLERANCE, "{name}, prefix {prefix_len}, row {k} batched: differs by {d}");
            }
        }
    }
}

#[test]
fn the_first_positions_of_a_longer_runs_cache_serve_as_a_prefix() {
    let _guard = tch::no_grad_guard();
    for name in MODELS {
        let model = open(name);
        let (prefix, lead, row) = (tokens(7, 9), tokens(8, 6), tokens(9, 5));
        // The cache of prefix + lead, cut to the prefix, against the prefix's own cache.
        let (_, long) = run_prefix(&model, &[prefix.clone(), lead].concat());
        let cut: Vec<KvCache> = long.iter().map(|c| c.first(prefix.len() as i64)).collect();
        assert_eq!(cut[0].len(), 9);
        assert_eq!(long[0].first(100).len(), 15, "first() keeps at most every position");
        let h = run_rows(&model, std::slice::from_ref(&row), &cut).squeeze_dim(0);
        let whole = full(&model, &[prefix.clone(), row.clone()].concat()).narrow(0, prefix.len() as i64, row.len() as i64);
        let d = max_abs_diff(&h, &whole);
        assert!(d <= TOLERANCE, "{name}: a cut cache differs by {d}");
    }
}

#[test]
fn a_cache_that_does_not_fit_the_context_is_an_error() {
    let _guard = tch::no_grad_guard();
    let model = open("llama-gqa");
    let (_, caches) = run_prefix(&model, &tokens(3, 6));
    let block = model.block(0).unwrap();
    let h = model.embed_at(&Tensor::from_slice(&tokens(4, 3)).view([1, 3]), 6).unwrap();
    // A context after 5 positions with a cache of 6.
    let err = block.forward_cached(&h, &model.context_at(1, 3, 5), Some(&caches[0])).unwrap_err();
    assert_eq!(err.to_string(), "key/value cache mismatch: a cache of 6 positions for a context after 5");
    // A context after 6 positions without a cache.
    let err = block.forward_cached(&h, &model.context_at(1, 3, 6), None).unwrap_err();
    assert_eq!(err.to_string(), "key/value cache mismatch: a cache of 0 positions for a context after 6");
    // Hidden states of another shape than the context's.
    let err = block.forward_cached(&h, &model.context_at(2, 3, 6), Some(&caches[0])).unwrap_err();
    assert!(err.to_string().contains("hidden states of shape [1, 3, 32] for a context of 2 rows of 3 positions"), "{err}");
    // OPT's learned positions end at max_position_embeddings (64).
    let opt = open("opt-pre");
    let err = opt.embed_at(&Tensor::from_slice(&tokens(5, 8)).view([1, 8]), 60).unwrap_err();
    assert_eq!(err.to_string(), "sequence length 68 exceeds the model's 64 learned positions");
}
