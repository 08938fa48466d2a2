//! Masks and weights against the Python references in `tests/golden/prune/` (its generator,
//! `make_prune_golden.py`, follows the Wanda, SparseGPT, RIA and llm-compressor code line for
//! line): masks bit-identical, SparseGPT weights allclose.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashMap;
use std::path::Path;

use spindle_prune::magnitude::Scope;
use spindle_prune::owl::OwlConfig;
use spindle_prune::ria::RiaConfig;
use spindle_prune::{ActNorms, ColumnNorms, Hessian, Pattern, SparseGptConfig};
use tch::{Kind, Tensor};

fn golden() -> HashMap<String, Tensor> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/prune/prune_golden.safetensors");
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

fn get<'a>(g: &'a HashMap<String, Tensor>, name: &str) -> &'a Tensor {
    g.get(name).unwrap_or_else(|| panic!("golden file lacks {name}"))
}

fn mask_of(g: &HashMap<String, Tensor>, name: &str) -> Tensor {
    get(g, name).to_kind(Kind::Bool)
}

fn assert_same_mask(ours: &Tensor, theirs: &Tensor, what: &str) {
    assert_eq!(ours.size(), theirs.size(), "{what}: shape");
    let differ = ours.logical_xor(theirs).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(differ, 0, "{what}: {differ} mask entries differ");
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-30);
    (a - b).abs().max().double_value(&[]) / scale
}

const CASES: [&str; 3] = ["a", "b", "c"];
const U50: Pattern = Pattern::Unstructured { sparsity: 0.5 };
const NM24: Pattern = Pattern::NM { n: 2, m: 4 };
const NM48: Pattern = Pattern::NM { n: 4, m: 8 };

#[test]
fn statistics_accumulate_like_the_reference() {
    let g = golden();
    for c in CASES {
        let x = get(&g, &format!("{c}.inputs"));
        let columns = x.size()[2];
        let (mut norms, mut hessian) = (ColumnNorms::new(columns, tch::Device::Cpu), Hessian::new(columns, tch::Device::Cpu));
        let mut acts = ActNorms::new(columns, x.size()[0] as usize, tch::Device::Cpu);
        // One sequence at a time, as the reference's loop over samples feeds them.
        for s in 0..x.size()[0] {
            let seq = x.narrow(0, s, 1);
            norms.add_batch(&seq).unwrap();
            hessian.add_batch(&seq).unwrap();
            acts.add_batch(&seq).unwrap();
        }
        assert!(max_rel(norms.get().unwrap(), get(&g, &format!("{c}.scaler_row"))) < 1e-6, "{c} scaler_row");
        assert!(max_rel(hessian.get().unwrap(), get(&g, &format!("{c}.hessian"))) < 1e-6, "{c} hessian");
        assert!(max_rel(acts.get().unwrap(), get(&g, &format!("{c}.act_norm"))) < 1e-6, "{c} act_norm");
        assert_eq!(norms.nsamples(), x.size()[0] as usize);
        // A whole batch at once is the same running mean, one update.
        let mut batched = Hessian::new(columns, tch::Device::Cpu);
        batched.add_batch(x).unwrap();
        assert!(max_rel(batched.get().unwrap(), get(&g, &format!("{c}.hessian"))) < 1e-5, "{c} batched hessian");
    }
}

#[test]
fn magnitude_masks_are_bit_identical() {
    let g = golden();
    for c in CASES {
        let w = get(&g, &format!("{c}.weight"));
        for (tag, pattern, scope) in [
            ("magnitude.u50", U50, Scope::Matrix),
            ("magnitude.u30", Pattern::Unstructured { sparsity: 0.3 }, Scope::Matrix),
            ("magnitude_row.u50", U50, Scope::Row),
            ("magnitude.2_4", NM24, Scope::Matrix),
        ] {
            let m = spindle_prune::magnitude::mask(w, pattern, scope).unwrap();
            assert_same_mask(&m, &mask_of(&g, &format!("{c}.{tag}.mask")), &format!("{c}.{tag}"));
        }
    }
}

#[test]
fn wanda_and_ria_masks_are_bit_identical() {
    let g = golden();
    for c in CASES {
        let w = get(&g, &format!("{c}.weight"));
        let s = get(&g, &format!("{c}.scaler_row"));
        for (tag, pattern) in [("u50", U50), ("u70", Pattern::Unstructured { sparsity: 0.7 }), ("2_4", NM24), ("4_8", NM48)] {
            let m = spindle_prune::wanda::mask(w, s, pattern).unwrap();
            assert_same_mask(&m, &mask_of(&g, &format!("{c}.wanda.{tag}.mask")), &format!("{c}.wanda.{tag}"));
        }
        for (tag, pattern) in [("u50", U50), ("2_4", NM24)] {
            let m = spindle_prune::ria::mask(w, s, pattern, RiaConfig::default()).unwrap();
            assert_same_mask(&m, &mask_of(&g, &format!("{c}.ria.{tag}.mask")), &format!("{c}.ria.{tag}"));
        }
    }
}

#[test]
fn sparsegpt_weights_match_including_dead_columns_and_4_8() {
    let g = golden();
    for c in CASES {
        let w = get(&g, &format!("{c}.weight"));
        let h = get(&g, &format!("{c}.hessian"));
        for (tag, pattern) in [("u50", U50), ("2_4", NM24), ("4_8", NM48)] {
            let out = spindle_prune::sparsegpt::prune(w, h, pattern, SparseGptConfig::default()).unwrap();
            let expected = get(&g, &format!("{c}.sparsegpt.{tag}.weight"));
            assert_same_mask(&out.mask, &mask_of(&g, &format!("{c}.sparsegpt.{tag}.mask")), &format!("{c}.sparsegpt.{tag}"));
            let close = out.weight.allclose(expected, 1e-4, 1e-6, false);
            assert!(close, "{c}.sparsegpt.{tag}: max relative difference {}", max_rel(&out.weight, expected));
            assert!(out.retries.is_empty());
            assert_eq!(out.weight.kind(), Kind::Float);
        }
    }
}

#[test]
fn owl_sparsities_follow_llm_compressor() {
    let g = golden();
    let mut ratios = Vec::new();
    for k in 0..4 {
        let mut scores = Vec::new();
        for j in 0..2 {
            let w = get(&g, &format!("owl.block{k}.linear{j}.weight"));
            let x = get(&g, &format!("owl.block{k}.linear{j}.inputs"));
            let mut acts = ActNorms::new(x.size()[2], x.size()[0] as usize, tch::Device::Cpu);
            for s in 0..x.size()[0] {
                acts.add_batch(&x.narrow(0, s, 1)).unwrap();
            }
            assert!(max_rel(acts.get().unwrap(), get(&g, &format!("owl.block{k}.linear{j}.act_norm"))) < 1e-6);
            scores.push(spindle_prune::owl::score(w, get(&g, &format!("owl.block{k}.linear{j}.act_norm"))).unwrap());
        }
        ratios.push(spindle_prune::owl::outlier_ratio(&scores, 5.0).unwrap());
    }
    let raw = Vec::<f64>::try_from(get(&g, "owl.ratios_raw")).unwrap();
    assert_eq!(ratios, raw, "outlier ratios");
    let ours = spindle_prune::owl::sparsities(&ratios, 0.5, OwlConfig::default()).unwrap();
    let theirs = Vec::<f64>::try_from(get(&g, "owl.sparsities")).unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        assert!((a - b).abs() < 1e-12, "{ours:?} vs {theirs:?}");
    }
}
