//! What the pruners promise beyond parity: exact pattern counts, untouched inputs, one clear
//! error per bad input, and SparseGPT's reported damping retries.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use spindle_prune::magnitude::Scope;
use spindle_prune::{Pattern, PruneError, SparseGptConfig};
use tch::{Device, Kind, Tensor};

fn weight(rows: i64, cols: i64) -> Tensor {
    tch::manual_seed(7);
    Tensor::randn([rows, cols], (Kind::Float, Device::Cpu))
}

#[test]
fn every_n_m_mask_keeps_exactly_n_in_every_group() {
    let w = weight(12, 32);
    let norms = Tensor::rand([32], (Kind::Float, Device::Cpu));
    for (n, m) in [(2usize, 4usize), (4, 8), (1, 4), (3, 8)] {
        let p = Pattern::NM { n, m };
        let masks = [
            spindle_prune::magnitude::mask(&w, p, Scope::Matrix).unwrap(),
            spindle_prune::wanda::mask(&w, &norms, p).unwrap(),
            spindle_prune::ria::mask(&w, &norms, p, Default::default()).unwrap(),
        ];
        for mask in masks {
            let per_group =
                mask.to_kind(Kind::Int64).reshape([12, 32 / m as i64, m as i64]).sum_dim_intlist([2i64].as_slice(), false, Kind::Int64);
            assert!(bool::try_from(per_group.eq((m - n) as i64).all()).unwrap(), "{n}:{m}");
        }
    }
}

#[test]
fn pruners_never_modify_their_inputs() {
    let w = weight(8, 16);
    let h = {
        let x = Tensor::randn([64, 16], (Kind::Float, Device::Cpu));
        x.tr().matmul(&x)
    };
    let (w0, h0) = (w.copy(), h.copy());
    let _ = spindle_prune::sparsegpt::prune(&w, &h, Pattern::Unstructured { sparsity: 0.5 }, SparseGptConfig::default()).unwrap();
    let _ = spindle_prune::magnitude::mask(&w, Pattern::NM { n: 2, m: 4 }, Scope::Matrix).unwrap();
    assert!(w.equal(&w0) && h.equal(&h0));
}

#[test]
fn sparsity_zero_prunes_nothing() {
    let w = weight(8, 16);
    let zero = Pattern::Unstructured { sparsity: 0.0 };
    assert_eq!(spindle_prune::magnitude::mask(&w, zero, Scope::Matrix).unwrap().sum(Kind::Int64).int64_value(&[]), 0);
    let h = Tensor::eye(16, (Kind::Float, Device::Cpu));
    let out = spindle_prune::sparsegpt::prune(&w, &h, zero, SparseGptConfig::default()).unwrap();
    assert!(out.weight.equal(&w));
}

#[test]
fn bad_inputs_get_one_clear_error() {
    let w = weight(8, 18);
    let err = spindle_prune::magnitude::mask(&w, Pattern::NM { n: 2, m: 4 }, Scope::Matrix).unwrap_err();
    assert_eq!(err.to_string(), "2:4 needs an input dimension divisible by 4, but the weight is [8, 18]");
    let err = spindle_prune::magnitude::mask(&w, Pattern::Unstructured { sparsity: 1.0 }, Scope::Matrix).unwrap_err();
    assert_eq!(err.to_string(), "bad sparsity pattern: sparsity must be in [0, 1), got 1");
    let err = spindle_prune::wanda::mask(&w, &Tensor::ones([4], (Kind::Float, Device::Cpu)), Pattern::NM { n: 4, m: 2 }).unwrap_err();
    assert_eq!(err.to_string(), "bad sparsity pattern: N:M needs 0 < N < M, got 4:2");
    let err = spindle_prune::wanda::mask(&w, &Tensor::ones([4], (Kind::Float, Device::Cpu)), Pattern::Unstructured { sparsity: 0.5 })
        .unwrap_err();
    assert_eq!(err.to_string(), "shape mismatch: scaler_row [4] does not match a weight with 18 inputs");
    let err = spindle_prune::sparsegpt::prune(
        &w,
        &Tensor::eye(4, (Kind::Float, Device::Cpu)),
        Pattern::Unstructured { sparsity: 0.5 },
        SparseGptConfig::default(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "shape mismatch: Hessian [4, 4] does not match a weight with 18 inputs");
    let mut n = spindle_prune::ColumnNorms::new(18, Device::Cpu);
    assert!(matches!(n.get(), Err(PruneError::NoStatistics)));
    assert_eq!(
        n.add_batch(&Tensor::ones([2, 3, 5], (Kind::Float, Device::Cpu))).unwrap_err().to_string(),
        "shape mismatch: activations [2, 3, 5] do not end in the layer's 18 inputs"
    );
}

#[test]
fn a_failed_cholesky_is_retried_with_more_damping_and_reported() {
    let w = weight(4, 4);
    // Mean diagonal 0.625: damping 0.00625 and 0.0625 leave it indefinite, 0.625 does not.
    let h = Tensor::from_slice(&[1.0f32, 1.0, 1.0, -0.5]).diag(0);
    let out = spindle_prune::sparsegpt::prune(&w, &h, Pattern::Unstructured { sparsity: 0.5 }, SparseGptConfig::default()).unwrap();
    assert_eq!(out.percdamp, 1.0);
    assert_eq!(out.retries.len(), 2);
    assert_eq!((out.retries[0].failed_percdamp, out.retries[1].next_percdamp), (0.01, 1.0));
    // Beyond the bound: an error, never an identity fallback.
    let h = Tensor::from_slice(&[1.0f32, 1.0, 1.0, -0.9]).diag(0);
    let err = spindle_prune::sparsegpt::prune(&w, &h, Pattern::Unstructured { sparsity: 0.5 }, SparseGptConfig::default()).unwrap_err();
    assert!(matches!(&err, PruneError::Cholesky { tried, .. } if tried.len() == 3), "{err}");
}
