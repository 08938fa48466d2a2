//! Every pruner on every architecture family's golden checkpoint (`tests/golden/`, made with
//! transformers by `make_golden.py`): magnitude, Wanda and SparseGPT at 50% and 2:4 give their
//! exact pattern on every decoder linear, fused ones included, and leave every other tensor
//! bit-identical; the pruned directory loads and runs.
//!
//! With `SPINDLE_KEEP_PRUNED=DIR`, each pruned checkpoint is kept under `DIR/<family>-<run>/`
//! with `spindle_logits.safetensors` (the pruned model's logits on the golden `input_ids`, as
//! spindle computes them), for `tests/golden/check_pruned_in_transformers.py` to load the same
//! directories in transformers and compare.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use spindle::prune::{Allocation, Method, PruneConfig, prune_model};
use spindle_model::{Model, Weights};
use spindle_prune::magnitude::Scope;
use spindle_prune::{ColumnNorms, Pattern};
use tch::{Device, Kind, Tensor};

/// Every family's golden checkpoint (each of spindle's architectures at least once).
const FAMILIES: &[&str] =
    &["llama-gqa", "llama3-rope", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mixtral", "opt-pre", "opt-post-proj"];

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name)
}

fn golden(name: &str, key: &str) -> Tensor {
    let tensors = Tensor::read_safetensors(golden_dir(name).join("golden.safetensors")).unwrap();
    tensors.into_iter().find(|(k, _)| k == key).map(|(_, t)| t).unwrap()
}

/// Every tensor of a checkpoint by name, as stored.
fn tensors(dir: &Path) -> BTreeMap<String, Tensor> {
    let w = Weights::open(dir).unwrap();
    w.names()
        .map(|n| {
            let shape = w.shape(n).unwrap().to_vec();
            (n.to_owned(), w.load(n, &shape, w.stored_kind(n).unwrap(), Device::Cpu).unwrap())
        })
        .collect()
}

fn cfg(method: Method, pattern: Pattern) -> PruneConfig {
    cfg_with(method, pattern, Allocation::Uniform)
}

fn cfg_with(method: Method, pattern: Pattern, allocation: Allocation) -> PruneConfig {
    PruneConfig { method, pattern, allocation, true_sequential: false, layer_errors: false, batch_size: 2, induce: None, reconstruct: None }
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.logical_xor(b).sum(Kind::Int64).int64_value(&[]) == 0
}

/// The exact mask each method's reference rule gives, for the methods whose mask is a function
/// of the dense weight and its input alone (SparseGPT's depends on its own updates).
fn reference_mask(method: Method, w: &Tensor, x: &Tensor, pattern: Pattern) -> Option<Tensor> {
    match method {
        Method::Magnitude(scope) => Some(spindle_prune::magnitude::mask(w, pattern, scope).unwrap()),
        Method::Wanda => {
            let mut norms = ColumnNorms::new(w.size()[1], Device::Cpu);
            norms.add_batch(x).unwrap();
            Some(spindle_prune::wanda::mask(w, norms.get().unwrap(), pattern).unwrap())
        }
        Method::Ria(c) => {
            let mut norms = ColumnNorms::new(w.size()[1], Device::Cpu);
            norms.add_batch(x).unwrap();
            Some(spindle_prune::ria::mask(w, norms.get().unwrap(), pattern, c).unwrap())
        }
        Method::SparseGpt(_) => None,
    }
}

#[test]
fn every_pruner_gives_its_exact_pattern_on_every_family_and_changes_nothing_else() {
    tch::set_num_threads(1);
    let keep = std::env::var_os("SPINDLE_KEEP_PRUNED").map(PathBuf::from);
    let t = tempfile::tempdir().unwrap();
    for family in FAMILIES {
        let dir = golden_dir(family);
        let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
        let vocab = model.config().vocab_size as i64;
        tch::manual_seed(5);
        let calib = Tensor::randint(vocab, [4, 12], (Kind::Int64, Device::Cpu));
        let before = tensors(&dir);
        let (half, two_four) = (Pattern::Unstructured { sparsity: 0.5 }, Pattern::NM { n: 2, m: 4 });
        let methods =
            [Method::Magnitude(Scope::Matrix), Method::Wanda, Method::SparseGpt(Default::default()), Method::Ria(Default::default())];
        // Every method at both patterns, and OWL's per-block sparsities (unstructured only) over Wanda.
        let runs = methods.into_iter().flat_map(|m| [(m, half, Allocation::Uniform), (m, two_four, Allocation::Uniform)]).chain([(
            Method::Wanda,
            half,
            Allocation::Owl(Default::default()),
        )]);
        for (method, pattern, allocation) in runs {
            {
                let owl = matches!(allocation, Allocation::Owl(_));
                let run = format!(
                    "{}{}-{}",
                    method.name(),
                    if owl { "-owl" } else { "" },
                    if matches!(pattern, Pattern::NM { .. }) { "2of4" } else { "50" }
                );
                let what = format!("{family} {run}");
                let out = t.path().join(format!("{family}-{run}"));
                let uses_calib = !matches!(method, Method::Magnitude(_));
                let report =
                    prune_model(&model, uses_calib.then_some(&calib), &cfg_with(method, pattern, allocation), &out, &mut |_, _| {})
                        .unwrap();
                if owl {
                    // OWL spreads the sparsity over the blocks around the target, mean unchanged.
                    let targets: Vec<f64> = report.blocks.iter().map(|b| b.target).collect();
                    let mean = targets.iter().sum::<f64>() / targets.len() as f64;
                    assert!((mean - 0.5).abs() < 1e-9, "{what}: OWL's block targets {targets:?} average {mean}");
                    // The spread (max − min) is 2λ, with λ = 0.08 by default.
                    let spread = targets.iter().cloned().fold(f64::MIN, f64::max) - targets.iter().cloned().fold(f64::MAX, f64::min);
                    assert!(spread <= 0.16 + 1e-9 && spread > 0.0, "{what}: {targets:?}");
                }
                let after = tensors(&out);
                assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "{what}: tensor names");
                let pruned = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
                let linears: Vec<String> = (0..model.config().num_layers)
                    .flat_map(|i| {
                        let p = model.block_prefix(i);
                        model.block(i).unwrap().linears().map(move |(path, _)| format!("{p}{path}.weight")).collect::<Vec<_>>()
                    })
                    .collect();
                assert_eq!(report.linears.len(), linears.len(), "{what}: every decoder linear is reported");
                // Each linear against its pattern; the inputs each block's groups saw (dense
                // block, non-sequential statistics) for the reference masks.
                let mut h = model.embed(&calib, None).unwrap();
                for i in 0..model.config().num_layers {
                    let (dense, got) = (model.block(i).unwrap(), pruned.block(i).unwrap());
                    let pattern = if owl { Pattern::Unstructured { sparsity: report.blocks[i].target } } else { pattern };
                    let size = h.size();
                    let ctx = model.context(size[0], size[1], None);
                    let mut inputs = BTreeMap::new();
                    let _ = dense.forward_observed(&h, &ctx, &mut |paths, x| {
                        inputs.insert(paths[0], x.shallow_clone());
                    });
                    for (path, linear) in got.linears() {
                        let name = format!("{}{path}.weight", model.block_prefix(i));
                        let w = &linear.weight;
                        let (o, n_in) = (w.size()[0], w.size()[1]);
                        let zeros = w.eq(0.0);
                        match pattern {
                            Pattern::NM { n, m } => {
                                let kept = zeros
                                    .logical_not()
                                    .to_kind(Kind::Int64)
                                    .reshape([o, n_in / m as i64, m as i64])
                                    .sum_dim_intlist([2i64].as_slice(), false, Kind::Int64);
                                assert!(bool::try_from(kept.eq(n as i64).all()).unwrap(), "{what}: {name} is not {n}:{m}");
                            }
                            Pattern::Unstructured { sparsity } => {
                                let s = zeros.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
                                let slack = 1.0 / n_in as f64 + 1.0 / o as f64;
                                assert!((s - sparsity).abs() <= slack, "{what}: {name} has sparsity {s}");
                            }
                        }
                        let group = dense.input_groups().iter().find(|g| g.contains(&path)).unwrap()[0];
                        let dense_w = &dense.linear_at(path).unwrap().weight;
                        let reported = report.linears.iter().find(|l| l.name == name.trim_end_matches(".weight")).unwrap();
                        // An expert no calibration token reached has magnitude's mask, and says so.
                        let reference = match inputs.get(group) {
                            Some(x) => reference_mask(method, dense_w, x, pattern),
                            None => {
                                assert_eq!(
                                    reported.fallback.as_deref(),
                                    uses_calib.then_some(spindle::prune::UNREACHED_RULE),
                                    "{what}: {name}"
                                );
                                Some(spindle_prune::magnitude::mask(dense_w, pattern, Scope::Matrix).unwrap())
                            }
                        };
                        if inputs.contains_key(group) {
                            assert_eq!(reported.fallback, None, "{what}: {name}");
                        }
                        if let Some(expected) = reference {
                            assert!(same(&zeros, &expected), "{what}: {name}'s mask is not the reference rule's");
                            // Mask-only methods keep every surviving weight as it was.
                            assert!(w.equal(&dense_w.masked_fill(&expected, 0.0)), "{what}: {name} changed kept weights");
                        }
                    }
                    h = got.forward(&h, &ctx);
                }
                for (name, t) in &after {
                    if !linears.contains(name) {
                        assert!(t.equal(&before[name]), "{what}: {name} changed");
                    }
                }
                let ids = golden(family, "input_ids");
                let logits = pruned.forward(&ids, None).unwrap();
                assert!(bool::try_from(logits.isfinite().all()).unwrap(), "{what}: logits are not finite");
                if let Some(keep) = &keep {
                    let dest = keep.join(format!("{family}-{run}"));
                    std::fs::create_dir_all(&dest).unwrap();
                    for entry in std::fs::read_dir(&out).unwrap() {
                        let entry = entry.unwrap();
                        std::fs::copy(entry.path(), dest.join(entry.file_name())).unwrap();
                    }
                    Tensor::write_safetensors(&[("logits", &logits), ("input_ids", &ids)], dest.join("spindle_logits.safetensors"))
                        .unwrap();
                }
            }
        }
    }
}

/// A mixture of experts: each expert's statistics come from the tokens routed to it alone (the
/// counts equal transformers' routing of the golden ids), the router stays dense, and an expert
/// no calibration token reaches is pruned by magnitude and reported, never left dense.
#[test]
fn experts_are_pruned_on_their_own_tokens_and_unreached_ones_by_magnitude() {
    tch::set_num_threads(1);
    let dir = golden_dir("mixtral");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let t = tempfile::tempdir().unwrap();
    let ids = golden("mixtral", "input_ids");
    let report =
        prune_model(&model, Some(&ids), &cfg(Method::Wanda, Pattern::Unstructured { sparsity: 0.5 }), &t.path().join("w"), &mut |_, _| {})
            .unwrap();
    let counts: Vec<u64> = (0..4)
        .map(|e| {
            let name = format!("model.layers.0.block_sparse_moe.experts.{e}.w1");
            report.linears.iter().find(|l| l.name == name).unwrap().calibration_tokens.unwrap()
        })
        .collect();
    let expected: Vec<i64> = Vec::try_from(golden("mixtral", "expert_counts_block0")).unwrap();
    assert_eq!(counts, expected.iter().map(|c| *c as u64).collect::<Vec<_>>(), "tokens routed to each expert of block 0");
    let attention = report.linears.iter().find(|l| l.name == "model.layers.0.self_attn.q_proj").unwrap();
    assert_eq!(attention.calibration_tokens, Some(24));
    assert!(report.linears.iter().all(|l| !l.name.contains("block_sparse_moe.gate")), "the router is not pruned");
    let (before, after) = (tensors(&dir), tensors(&t.path().join("w")));
    for name in before.keys().filter(|n| n.contains("block_sparse_moe.gate")) {
        assert!(before[name].equal(&after[name]), "{name} changed");
    }
    // One calibration token reaches two experts per block: the other two fall back.
    let one = Tensor::from_slice(&[5i64]).view([1, 1]);
    let out = t.path().join("one");
    let report =
        prune_model(&model, Some(&one), &cfg(Method::SparseGpt(Default::default()), Pattern::NM { n: 2, m: 4 }), &out, &mut |_, _| {})
            .unwrap();
    let pruned = tensors(&out);
    for block in 0..2 {
        let experts: Vec<_> =
            report.linears.iter().filter(|l| l.name.starts_with(&format!("model.layers.{block}.block_sparse_moe.experts."))).collect();
        assert_eq!(experts.len(), 12);
        let unreached: Vec<_> = experts.iter().filter(|l| l.calibration_tokens == Some(0)).collect();
        assert_eq!(unreached.len(), 6, "block {block}: two of four experts unreached, three linears each");
        for l in unreached {
            assert_eq!(l.fallback.as_deref(), Some(spindle::prune::UNREACHED_RULE));
            let w = &before[&format!("{}.weight", l.name)];
            let expected = spindle_prune::magnitude::mask(w, Pattern::NM { n: 2, m: 4 }, Scope::Matrix).unwrap();
            assert!(pruned[&format!("{}.weight", l.name)].equal(&w.masked_fill(&expected, 0.0)), "{} is magnitude-pruned", l.name);
        }
        assert!(experts.iter().filter(|l| l.calibration_tokens == Some(1)).all(|l| l.fallback.is_none()));
    }
}

/// `spindle eval`'s perplexity (resident and streamed by layer) on every family equals the one
/// transformers' logits give: the golden ids as a stream of two 12-token windows, each window's
/// mean cross-entropy over its 11 next-token predictions times 12, `exp(Σ / 24)`.
#[test]
fn perplexity_on_every_family_matches_transformers_logits() {
    tch::set_num_threads(1);
    for family in FAMILIES {
        let model = Model::open(&golden_dir(family), Device::Cpu, Kind::Float).unwrap();
        let ids = golden(family, "input_ids");
        let logits = golden(family, "logits_nomask");
        let (rows, seq) = (ids.size()[0], ids.size()[1]);
        let mut total = 0.0;
        for r in 0..rows {
            let logp = logits.get(r).narrow(0, 0, seq - 1).log_softmax(-1, Kind::Float);
            let targets = ids.get(r).narrow(0, 1, seq - 1);
            let nll = -logp.gather(1, &targets.unsqueeze(1), false).mean(Kind::Float).double_value(&[]);
            total += nll * seq as f64;
        }
        let reference = (total / (rows * seq) as f64).exp();
        let stream: Vec<u32> = Vec::<i64>::try_from(ids.reshape([-1])).unwrap().into_iter().map(|t| t as u32).collect();
        let cfg = spindle_eval::PplConfig { seqlen: seq as usize, batch_size: 1 };
        let resident = spindle_eval::perplexity(&model, &stream, cfg, &mut |_, _| {}).unwrap();
        let streamed = spindle_eval::perplexity_streamed(&model, &stream, cfg, &mut |_, _| {}).unwrap();
        assert_eq!(resident.nsamples, 2);
        let rel = (resident.ppl - reference).abs() / reference;
        assert!(rel < 1e-5, "{family}: spindle {} against transformers {reference}", resident.ppl);
        assert_eq!(resident.ppl, streamed.ppl, "{family}: streamed");
    }
}

/// OWL's norms are per calibration sequence, so a mixture-of-experts block shows each expert's
/// input as `[batch, seq, in]`: the routed rows where the router sent the token, zeros elsewhere
/// (an expert's norm is over the tokens of each sequence it receives, and an unreached expert's is
/// zero). OWL then runs on Mixtral, an unreached expert included.
#[test]
fn owl_sees_each_experts_tokens_per_sequence() {
    tch::set_num_threads(1);
    let model = Model::open(&golden_dir("mixtral"), Device::Cpu, Kind::Float).unwrap();
    let ids = golden("mixtral", "input_ids");
    let h = model.embed(&ids, None).unwrap();
    let size = h.size();
    let ctx = model.context(size[0], size[1], None);
    let block = model.block(0).unwrap();
    let mut routed = BTreeMap::new();
    let plain = block.forward_observed(&h, &ctx, &mut |paths, x| {
        routed.insert(paths[0], x.shallow_clone());
    });
    let mut padded = BTreeMap::new();
    let by_sequence = block.forward_observed_by_sequence(&h, &ctx, &mut |paths, x| {
        padded.insert(paths[0], x.shallow_clone());
    });
    assert!(plain.equal(&by_sequence), "the output does not depend on how inputs are shown");
    assert_eq!(routed.keys().collect::<Vec<_>>(), padded.keys().collect::<Vec<_>>());
    let counts: Vec<i64> = Vec::try_from(golden("mixtral", "expert_counts_block0")).unwrap();
    for (e, count) in counts.iter().enumerate() {
        for path in ["w1", "w2"] {
            let key = routed.keys().find(|k| k.ends_with(&format!("experts.{e}.{path}"))).copied().unwrap();
            let (r, p) = (&routed[key], &padded[key]);
            assert_eq!(p.size(), [size[0], size[1], r.size()[1]], "{key}");
            let rows = p.reshape([size[0] * size[1], -1]);
            let nonzero = rows.ne(0.0).any_dim(1, false);
            assert_eq!(nonzero.sum(Kind::Int64).int64_value(&[]), *count, "{key}: one row per routed token");
            // The routed rows, in token order (the routed input is ordered by choice slot, then token).
            let mut got: Vec<Vec<f32>> = Vec::try_from(rows.index_select(0, &nonzero.nonzero().squeeze_dim(1))).unwrap();
            let mut want: Vec<Vec<f32>> = Vec::try_from(r.shallow_clone()).unwrap();
            got.sort_by(|a, b| a.partial_cmp(b).unwrap());
            want.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert_eq!(got, want, "{key}");
        }
    }
    let t = tempfile::tempdir().unwrap();
    let owl = cfg_with(Method::Wanda, Pattern::Unstructured { sparsity: 0.5 }, Allocation::Owl(Default::default()));
    let one = Tensor::from_slice(&[5i64, 9, 17, 3]).view([1, 4]);
    let report = prune_model(&model, Some(&one), &owl, &t.path().join("owl"), &mut |_, _| {}).unwrap();
    assert!(report.blocks.iter().all(|b| b.outlier_ratio.is_some()), "{:?}", report.blocks);
    assert!(report.linears.iter().any(|l| l.fallback.is_some()), "some expert is unreached by four tokens");
}

/// Sparsity Induction on a mixture of experts, with an expert no calibration token reaches: the
/// distribution and feature stages run (the feature stage through Wanda's mask reads each
/// group's statistics), the unreached experts are pruned by the magnitude rule and reported, and
/// every other expert is pruned on its own tokens.
#[test]
fn sparsity_induction_runs_on_a_mixture_with_an_unreached_expert() {
    use spindle::induce::{InduceConfig, SiteChoice};
    use spindle_induce::{DistributionConfig, FeatureConfig, PruningAware, Scorer};
    tch::set_num_threads(1);
    let model = Model::open(&golden_dir("mixtral"), Device::Cpu, Kind::Float).unwrap();
    let t = tempfile::tempdir().unwrap();
    let half = Pattern::Unstructured { sparsity: 0.5 };
    let induce = InduceConfig {
        distribution: Some(DistributionConfig { scorer: Scorer::Wanda, ..Default::default() }),
        refine: None,
        equivalent: None,
        feature: Some(FeatureConfig { epochs: 1, ..Default::default() }),
        pruning_aware: PruningAware::Mask,
        mask: Scorer::Wanda,
        pattern: half,
        sites: SiteChoice::All,
        shift: false,
    };
    let one = Tensor::from_slice(&[5i64, 9, 17, 3]).view([1, 4]);
    let config = PruneConfig { induce: Some(induce), ..cfg(Method::Wanda, half) };
    let report = prune_model(&model, Some(&one), &config, &t.path().join("si"), &mut |_, _| {}).unwrap();
    assert_eq!(report.induction.len(), 2, "both blocks were induced");
    let unreached: Vec<_> = report.linears.iter().filter(|l| l.calibration_tokens == Some(0)).collect();
    assert!(!unreached.is_empty(), "four tokens leave an expert unreached");
    assert!(unreached.iter().all(|l| l.fallback.as_deref() == Some(spindle::prune::UNREACHED_RULE)));
    let pruned = Model::open(&t.path().join("si"), Device::Cpu, Kind::Float).unwrap();
    let logits = pruned.forward(&golden("mixtral", "input_ids"), None).unwrap();
    assert!(bool::try_from(logits.isfinite().all()).unwrap());
    // The equivalent shift needs biases Mixtral has nowhere: refused by name. Reconstruction after
    // pruning runs.
    let shift = InduceConfig { distribution: None, feature: None, shift: true, ..config.induce.unwrap() };
    let shifted = PruneConfig { induce: Some(shift), ..cfg(Method::Wanda, half) };
    let err = prune_model(&model, Some(&one), &shifted, &t.path().join("shift"), &mut |_, _| {}).unwrap_err();
    assert_eq!(err.to_string(), "the shift needs linears that can carry a bias, and MixtralForCausalLM has none");
    let recon = PruneConfig { reconstruct: Some(FeatureConfig { epochs: 1, ..Default::default() }), ..cfg(Method::Wanda, half) };
    let report = prune_model(&model, Some(&one), &recon, &t.path().join("recon"), &mut |_, _| {}).unwrap();
    assert_eq!(report.reconstruction.len(), 2);
    // With OWL's per-block sparsities too.
    let owl = PruneConfig { allocation: Allocation::Owl(Default::default()), ..config };
    let report = prune_model(&model, Some(&one), &owl, &t.path().join("owl"), &mut |_, _| {}).unwrap();
    assert!(report.blocks.iter().all(|b| b.outlier_ratio.is_some()) && report.induction.len() == 2);
}
