//! Sparsity Induction on whole models: the distribution-level and equivalent SNL stages leave
//! every supported architecture's logits unchanged and Wanda's masks identical; the feature stage
//! changes the model deterministically; everything outside the decoder blocks is untouched.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use spindle::induce::{InduceConfig, SiteChoice, induce_model};
use spindle::prune::{Allocation, Method, PruneConfig, prune_model};
use spindle_induce::{DistributionConfig, EquivalentSnlConfig, FeatureConfig, PruningAware, Scorer, Start};
use spindle_model::{Model, Weights};
use spindle_prune::Pattern;
use tch::{Device, Kind, Tensor};

const ARCHS: [&str; 11] =
    ["llama-gqa", "llama3-rope", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mixtral", "opt-pre", "opt-post-proj"];
const HALF: Pattern = Pattern::Unstructured { sparsity: 0.5 };

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name)
}

fn ids(n: i64, s: i64, vocab: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randint(vocab, [n, s], (Kind::Int64, Device::Cpu))
}

fn open(dir: &Path) -> Model {
    Model::open(dir, Device::Cpu, Kind::Float).unwrap()
}

fn distribution(scorer: Scorer) -> InduceConfig {
    InduceConfig {
        distribution: Some(DistributionConfig {
            scorer,
            steps: 10,
            // far from identity, so the exactness tests prove something
            start: Start::SmoothQuant { alpha: 0.5 },
            ..Default::default()
        }),
        refine: None,
        equivalent: None,
        feature: None,
        pruning_aware: PruningAware::Mask,
        mask: scorer,
        pattern: HALF,
        sites: SiteChoice::All,
        shift: false,
    }
}

fn logits(model: &Model, ids: &Tensor) -> Tensor {
    let _g = tch::no_grad_guard();
    model.forward(ids, None).unwrap()
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a - b).abs().max().double_value(&[]);
    d / a.abs().max().double_value(&[])
}

/// Every tensor outside the decoder blocks, and whether it is bit-identical.
fn outside_blocks_identical(a: &Path, b: &Path) -> bool {
    let (wa, wb) = (Weights::open(a).unwrap(), Weights::open(b).unwrap());
    wa.names().filter(|n| !n.contains(".layers.")).all(|n| {
        let shape = wa.shape(n).unwrap().to_vec();
        let ta = wa.load(n, &shape, Kind::Float, Device::Cpu).unwrap();
        let tb = wb.load(n, &shape, Kind::Float, Device::Cpu).unwrap();
        ta.equal(&tb)
    })
}

#[test]
fn equivalent_stages_leave_every_architecture_s_logits_unchanged() {
    for arch in ARCHS {
        let dir = golden_dir(arch);
        let model = open(&dir);
        let vocab = model.config().vocab_size as i64;
        let calib = ids(4, 16, vocab, 1);
        let t = tempfile::tempdir().unwrap();
        for (name, cfg) in [
            ("distribution", distribution(Scorer::Magnitude)),
            // The trained refinement moves the scales further, through the pruner's mask; the
            // dense function must still not move.
            (
                "distribution refined",
                InduceConfig {
                    refine: Some(FeatureConfig { epochs: 2, lr: 5e-2, ..Default::default() }),
                    ..distribution(Scorer::Magnitude)
                },
            ),
            (
                "equivalent-snl",
                InduceConfig {
                    distribution: None,
                    equivalent: Some(EquivalentSnlConfig { steps: 5, ..Default::default() }),
                    ..distribution(Scorer::Magnitude)
                },
            ),
        ] {
            let out = t.path().join(name);
            let report = induce_model(&model, &calib, &cfg, 2, &out, &mut |_, _| {}).unwrap();
            let moved = report
                .blocks
                .iter()
                .flat_map(|b| &b.sites)
                .filter(|s| (s.scale_range.0 - 1.0).abs() > 1e-3 || (s.scale_range.1 - 1.0).abs() > 1e-3)
                .count();
            assert!(moved > 0, "{arch} {name}: no site was rescaled, the test would prove nothing");
            let induced = open(&out);
            let probe = ids(2, 12, vocab, 7);
            let rel = max_rel(&logits(&model, &probe), &logits(&induced, &probe));
            assert!(rel <= 1e-4, "{arch} {name}: logits moved by {rel:e} (relative)");
            assert!(outside_blocks_identical(&dir, &out), "{arch} {name}");
            // the stage did change the weights a pruner sees
            let changed: usize = (0..model.config().num_layers)
                .map(|i| {
                    let (b0, b1) = (model.block(i).unwrap(), induced.block(i).unwrap());
                    b0.linears().zip(b1.linears()).filter(|((_, a), (_, b))| !a.weight.equal(&b.weight)).count()
                })
                .sum();
            assert!(changed > 0, "{arch} {name}");
        }
    }
}

fn zero_masks(dir: &Path) -> Vec<(String, Tensor)> {
    let w = Weights::open(dir).unwrap();
    let mut out: Vec<(String, Tensor)> = w
        .names()
        .filter(|n| n.contains(".layers.") && n.ends_with("proj.weight") || n.ends_with("fc1.weight") || n.ends_with("fc2.weight"))
        .map(|n| {
            let shape = w.shape(n).unwrap().to_vec();
            (n.to_owned(), w.load(n, &shape, Kind::Float, Device::Cpu).unwrap().eq(0.0))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn wanda_masks_are_identical_after_the_distribution_stage() {
    for arch in ["llama-gqa", "qwen2", "opt-pre"] {
        let dir = golden_dir(arch);
        let model = open(&dir);
        let calib = ids(4, 16, model.config().vocab_size as i64, 2);
        let t = tempfile::tempdir().unwrap();
        for pattern in [HALF, Pattern::NM { n: 2, m: 4 }] {
            let plain = PruneConfig {
                method: Method::Wanda,
                pattern,
                allocation: Allocation::Uniform,
                true_sequential: false,
                layer_errors: false,
                batch_size: 2,
                induce: None,
                reconstruct: None,
            };
            // scales chosen for magnitude (so they are far from identity), then Wanda prunes
            let induced = PruneConfig { induce: Some(InduceConfig { pattern, ..distribution(Scorer::Magnitude) }), ..plain };
            let a = t.path().join(format!("plain-{pattern}"));
            let b = t.path().join(format!("induced-{pattern}"));
            prune_model(&model, Some(&calib), &plain, &a, &mut |_, _| {}).unwrap();
            let report = prune_model(&model, Some(&calib), &induced, &b, &mut |_, _| {}).unwrap();
            assert!(report.induction.iter().flat_map(|b| &b.sites).any(|s| s.chosen != "identity"), "{arch}: scales stayed at identity");
            let (za, zb) = (zero_masks(&a), zero_masks(&b));
            assert!(za.len() >= 12 && za.len() == zb.len(), "{arch}: {} linears", za.len());
            for ((name, ma), (_, mb)) in za.iter().zip(zb) {
                let moved = ma.logical_xor(&mb).sum(Kind::Int64).int64_value(&[]);
                assert_eq!(moved, 0, "{arch} {pattern} {name}: {moved} mask entries moved");
            }
        }
    }
}

#[test]
fn the_feature_stage_changes_the_model_deterministically() {
    let dir = golden_dir("llama-gqa");
    let model = open(&dir);
    let calib = ids(4, 16, model.config().vocab_size as i64, 3);
    let t = tempfile::tempdir().unwrap();
    let cfg = InduceConfig {
        distribution: None,
        feature: Some(FeatureConfig { epochs: 2, lambda: 0.1, snl: Some(spindle_induce::Snl::NuclearOverSpectral), ..Default::default() }),
        pruning_aware: PruningAware::Off,
        ..distribution(Scorer::Magnitude)
    };
    let a = t.path().join("a");
    let b = t.path().join("b");
    let ra = induce_model(&model, &calib, &cfg, 1, &a, &mut |_, _| {}).unwrap();
    induce_model(&model, &calib, &cfg, 1, &b, &mut |_, _| {}).unwrap();
    assert_eq!(ra.blocks.len(), 2);
    for blk in &ra.blocks {
        assert_eq!(blk.feature_epochs.len(), 2);
        assert_eq!(blk.scaler_ranges.len(), 4, "one scaler per input group");
        assert!(blk.feature_epochs.iter().all(|e| e.snl >= 1.0), "the nuclear/spectral ratio is at least 1");
    }
    let (ma, mb) = (open(&a), open(&b));
    let probe = ids(1, 12, model.config().vocab_size as i64, 9);
    let (la, lb) = (logits(&ma, &probe), logits(&mb, &probe));
    assert!(la.equal(&lb), "two runs with one seed differ");
    assert!(max_rel(&logits(&model, &probe), &la) > 1e-6, "the feature stage left the model unchanged");
    assert!(outside_blocks_identical(&dir, &a));
}

#[test]
fn pruning_aware_induction_then_pruning_runs_in_one_pass() {
    let dir = golden_dir("llama-gqa");
    let model = open(&dir);
    let calib = ids(4, 16, model.config().vocab_size as i64, 4);
    let t = tempfile::tempdir().unwrap();
    let induce = InduceConfig {
        feature: Some(FeatureConfig { epochs: 1, ..Default::default() }),
        pruning_aware: PruningAware::Mask,
        ..distribution(Scorer::Magnitude)
    };
    let cfg = PruneConfig {
        method: Method::Magnitude(spindle_prune::magnitude::Scope::Matrix),
        pattern: HALF,
        allocation: Allocation::Uniform,
        true_sequential: false,
        layer_errors: false,
        batch_size: 2,
        induce: Some(induce),
        reconstruct: None,
    };
    let out = t.path().join("p");
    let r = prune_model(&model, Some(&calib), &cfg, &out, &mut |_, _| {}).unwrap();
    assert_eq!(r.induction.len(), 2);
    assert!((r.overall_sparsity - 0.5).abs() < 0.01, "{}", r.overall_sparsity);
    // without calibration data induction is refused, with the reason
    let e = prune_model(&model, None, &cfg, &t.path().join("q"), &mut |_, _| {}).unwrap_err();
    assert_eq!(e.to_string(), "sparsity induction needs calibration data");
    assert!(!t.path().join("q").exists());
}

#[test]
fn reconstruction_after_pruning_keeps_sparsegpt_s_mask_and_lowers_its_error() {
    let dir = golden_dir("llama-gqa");
    let model = open(&dir);
    let calib = ids(4, 16, model.config().vocab_size as i64, 5);
    let t = tempfile::tempdir().unwrap();
    let prune = |reconstruct: Option<FeatureConfig>, out: &Path| {
        let cfg = PruneConfig {
            method: Method::SparseGpt(Default::default()),
            pattern: HALF,
            allocation: Allocation::Uniform,
            true_sequential: false,
            layer_errors: false,
            batch_size: 2,
            induce: None,
            reconstruct,
        };
        prune_model(&model, Some(&calib), &cfg, out, &mut |_, _| {}).unwrap()
    };
    let (plain, trained) = (t.path().join("plain"), t.path().join("trained"));
    prune(None, &plain);
    let r = prune(Some(FeatureConfig { epochs: 4, lr: 2e-2, ..Default::default() }), &trained);
    assert!(r.induction.is_empty(), "reconstruction is not induction");
    // Block 0 sees the same inputs in both runs, so SparseGPT chose the same mask there; the
    // scalers multiply columns of the pruned weights, so its zeros are exactly SparseGPT's.
    let (a, b) = (zero_masks(&plain), zero_masks(&trained));
    let mut compared = 0;
    for ((na, ma), (nb, mb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        if na.contains(".layers.0.") {
            assert!(ma.equal(mb), "{na}: the mask moved");
            compared += 1;
        }
    }
    assert_eq!(compared, 7);
    assert!((r.overall_sparsity - 0.5).abs() < 0.01, "{}", r.overall_sparsity);
    // The scalers learned: the reconstruction loss falls from the first epoch to the last.
    assert_eq!(r.reconstruction.len(), 2);
    for block in &r.reconstruction {
        let (first, last) = (block.epochs[0].reconstruction, block.epochs[3].reconstruction);
        assert!(last < first, "block {}: {first} -> {last}", block.index);
        assert_eq!(block.scaler_ranges.len(), 4);
    }
    assert!(outside_blocks_identical(&plain, &trained));
}

/// The equivalent shift: with each group's biases raised by `W·z` and its input shifted to
/// `x − z`, every block computes what it did, on every architecture where its linears can carry a
/// bias (Mistral's, Phi-3's and Mixtral's cannot, and are refused).
#[test]
fn the_shift_is_an_equivalent_change_wherever_biases_can_hold_it() {
    use spindle_model::BiasSlot;
    for arch in ARCHS {
        let model = open(&golden_dir(arch));
        let slots = model.config().bias_slots();
        if slots.iter().all(|s| *s == BiasSlot::Impossible) {
            assert!(["mistral", "phi3", "mixtral"].contains(&arch), "{arch} can carry no bias");
            continue;
        }
        let _g = tch::no_grad_guard();
        let probe = ids(2, 12, model.config().vocab_size as i64, 11);
        let ctx = model.context(2, 12, None);
        let mut h = model.embed(&probe, None).unwrap();
        for i in 0..model.config().num_layers {
            let mut block = model.block(i).unwrap();
            let want = block.forward(&h, &ctx);
            // A shift far from zero for every group that can take one.
            let groups = block.input_groups();
            let shifts: Vec<Option<Tensor>> = groups
                .iter()
                .zip(slots.iter().copied())
                .map(|(g, slot)| {
                    (slot != BiasSlot::Impossible)
                        .then(|| Tensor::randn([block.linear_at(g[0]).unwrap().weight.size()[1]], (Kind::Float, Device::Cpu)))
                })
                .collect();
            for (g, z) in groups.iter().zip(&shifts) {
                let Some(z) = z else { continue };
                for path in *g {
                    let l = block.linear_at_mut(path).unwrap();
                    let wz = l.weight.mv(z);
                    l.bias = Some(match l.bias.take() {
                        Some(b) => b + wz,
                        None => wz,
                    });
                }
            }
            let got = block.forward_input_shifted(&h, &ctx, &shifts, &mut |_, _| {}).unwrap();
            let rel = max_rel(&want, &got);
            assert!(rel <= 1e-4, "{arch} block {i}: the shifted block moved by {rel:e}");
            h = want;
        }
    }
}

/// The shift through the pipeline: Wanda prunes on centred statistics (other masks than plain
/// Wanda's), each bias keeps `(W − W′)·z`, the sparsity is exact, a Llama gains the biases and the
/// config.json keys that load them, and the written model computes what the pipeline computed.
#[test]
fn pruning_with_the_shift_keeps_the_bias_it_leaves() {
    let t = tempfile::tempdir().unwrap();
    let cfg = |shift: bool| PruneConfig {
        method: Method::Wanda,
        pattern: HALF,
        allocation: Allocation::Uniform,
        true_sequential: false,
        layer_errors: false,
        batch_size: 2,
        induce: shift.then(|| InduceConfig { distribution: None, shift: true, ..distribution(Scorer::Wanda) }),
        reconstruct: None,
    };
    for arch in ["llama-gqa", "qwen2", "opt-pre"] {
        let dir = golden_dir(arch);
        let model = open(&dir);
        let calib = ids(4, 16, model.config().vocab_size as i64, 6);
        let (plain, shifted) = (t.path().join(format!("{arch}-plain")), t.path().join(format!("{arch}-shift")));
        prune_model(&model, Some(&calib), &cfg(false), &plain, &mut |_, _| {}).unwrap();
        let r = prune_model(&model, Some(&calib), &cfg(true), &shifted, &mut |_, _| {}).unwrap();
        assert!((r.overall_sparsity - 0.5).abs() < 0.01, "{arch}: {}", r.overall_sparsity);
        let moved = zero_masks(&plain).iter().zip(zero_masks(&shifted)).filter(|((_, a), (_, b))| !a.equal(b)).count();
        assert!(moved > 0, "{arch}: centred statistics chose the same masks everywhere");
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(shifted.join("config.json")).unwrap()).unwrap();
        match arch {
            // Llama gains a bias on every linear (q/k/v/o and the MLP) and the keys that load them.
            "llama-gqa" => {
                let per_block: i64 = 32 + 16 + 16 + 32 + 64 + 64 + 32;
                assert_eq!(r.added_bias_parameters, 2 * per_block as u64);
                assert_eq!((config["attention_bias"].as_bool(), config["mlp_bias"].as_bool()), (Some(true), Some(true)));
            }
            // Qwen2's q/k/v biases hold it, and nothing else can: no parameter is added.
            "qwen2" => {
                assert_eq!(r.added_bias_parameters, 0);
                assert!(config.get("attention_bias").is_none());
            }
            // OPT has biases everywhere.
            _ => assert_eq!(r.added_bias_parameters, 0),
        }
        // The written model loads, and its logits are those of the pruned blocks the pipeline
        // ran: the first block's output, recomputed from the loaded checkpoint, matches a block
        // whose bias is exactly b + (W − W')·z for the dense block's own z.
        let loaded = open(&shifted);
        let probe = ids(2, 12, model.config().vocab_size as i64, 8);
        let out = logits(&loaded, &probe);
        assert!(bool::try_from(out.isfinite().all()).unwrap(), "{arch}");
        let _g = tch::no_grad_guard();
        let (dense, pruned) = (model.block(0).unwrap(), loaded.block(0).unwrap());
        let x = model.embed(&calib, None).unwrap();
        let c = model.context(4, 16, None);
        let mut means: Vec<Option<Tensor>> = (0..4).map(|_| None).collect();
        let groups = dense.input_groups();
        let _ = dense.forward_observed(&x, &c, &mut |paths, input| {
            if let Some(k) = groups.iter().position(|g| g[0] == paths[0]) {
                let cols = input.size().last().copied().unwrap();
                means[k] = Some(
                    input.reshape([-1, cols]).to_kind(Kind::Double).mean_dim([0i64].as_slice(), false, Kind::Double).to_kind(Kind::Float),
                );
            }
        });
        let slots = model.config().bias_slots();
        for (k, g) in groups.iter().enumerate() {
            for path in *g {
                let (d, p) = (dense.linear_at(path).unwrap(), pruned.linear_at(path).unwrap());
                let base = d.bias.as_ref().map_or_else(|| Tensor::zeros([d.weight.size()[0]], (Kind::Float, Device::Cpu)), Tensor::copy);
                match (&means[k], slots[k]) {
                    (Some(z), slot) if slot != spindle_model::BiasSlot::Impossible => {
                        let want = base + (&d.weight - &p.weight).mv(z);
                        let got = p.bias.as_ref().unwrap();
                        let err = (&want - got).abs().max().double_value(&[]);
                        assert!(err <= 1e-5 * (1.0 + want.abs().max().double_value(&[])), "{arch} {path}: bias off by {err}");
                    }
                    _ => assert_eq!(p.bias.is_some(), d.bias.is_some(), "{arch} {path}: no bias where the shift cannot go"),
                }
            }
        }
    }
    // Mistral's linears cannot carry a bias: the shift is refused, with the reason, and nothing is written.
    let model = open(&golden_dir("mistral"));
    let calib = ids(4, 16, model.config().vocab_size as i64, 6);
    let e = prune_model(&model, Some(&calib), &cfg(true), &t.path().join("m"), &mut |_, _| {}).unwrap_err();
    assert_eq!(e.to_string(), "the shift needs linears that can carry a bias, and MistralForCausalLM has none");
    assert!(!t.path().join("m").exists());
}
