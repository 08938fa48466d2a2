//! `spindle-prune` owns the pruning algorithms of the literature (magnitude, Wanda, SparseGPT,
//! RIA; unstructured and N:M patterns; uniform and OWL layer-wise allocation) as pure functions.
//!
//! Each algorithm is two kinds of function, in the manner of llm-compressor: one accumulates
//! statistics from a linear layer's input activations (`[.., in]` → column norms, a Hessian,
//! activation norms: [`stats`]), the other sparsifies a weight `[out, in]` from those statistics
//! and a typed configuration and returns the mask it chose ([`magnitude`], [`wanda`], [`ria`],
//! [`sparsegpt`]); [`owl`] turns per-block outlier ratios into per-block sparsities. Keeping them
//! pure is what makes them testable against the reference implementations mask for mask
//! (`tests/golden/prune/`), and reusable outside spindle's pipeline: a researcher can call Wanda
//! on one matrix without a model, a file or a dataset.
//!
//! The numerics follow the published code exactly, quirks included, because published tables
//! were made with it: statistics are running means in f32 over sequences; magnitude's threshold
//! is `sorted(|W|)[floor(numel·p)]` compared with `<=`; Wanda and RIA rank within each output row
//! with a stable sort; N:M groups take the `M − N` smallest scores of each group; SparseGPT works
//! on blocks of 128 columns with the upper Cholesky factor of the damped inverse Hessian. Two
//! deliberate departures, each documented where it happens: sparsity 0 prunes nothing (the
//! reference's `<=` threshold would still prune the smallest weight), and ties inside an N:M group
//! go to the lower input index (the reference's `topk` leaves them to the kernel, and
//! dequantized checkpoints tie often).
//!
//! A mask is a `Bool` tensor shaped like the weight, `true` where a weight is removed.
//!
//! Architecture Invariant: spindle-prune knows nothing of files, tensor names, architectures or
//! datasets. It never depends on safetensors, parquet, arrow or tokenizers, nor on any other
//! spindle crate; `tests/architecture.rs` fails if it does. Which weight of which block is pruned
//! with which statistics is decided by the pipeline in `spindle`.
//!
//! Wanda on one matrix, without a model:
//!
//! ```
//! use spindle_prune::{ColumnNorms, Pattern, apply_mask, wanda};
//! use tch::{Device, Kind, Tensor};
//! let w = Tensor::from_slice(&[1.0f32, -2.0, 3.0, -4.0, 0.5, 0.1, -0.2, 8.0]).view([2, 4]);
//! // The layer's inputs: 3 tokens of one sequence, every column of norm √3.
//! let mut norms = ColumnNorms::new(4, Device::Cpu);
//! norms.add_batch(&Tensor::ones([1, 3, 4], (Kind::Float, Device::Cpu)))?;
//! let mask = wanda::mask(&w, norms.get()?, Pattern::Unstructured { sparsity: 0.5 })?;
//! let pruned = apply_mask(&w, &mask);
//! // Each row loses its two smallest |W|·‖x‖.
//! assert_eq!(Vec::<f32>::try_from(pruned.view([-1]))?, [0.0, 0.0, 3.0, -4.0, 0.5, 0.0, 0.0, 8.0]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod magnitude;
pub mod mask;
pub mod owl;
pub mod ria;
pub mod sparsegpt;
pub mod stats;
pub mod wanda;

use std::fmt;

pub use mask::{apply_mask, check_pattern, sparsity};
pub use sparsegpt::{DampRetry, SparseGptConfig, SparseGptOutcome};
pub use stats::{ActNorms, ColumnNorms, Hessian};

/// Which weights may be removed together.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Any `sparsity` share of the weights, `0 <= sparsity < 1`.
    Unstructured { sparsity: f64 },
    /// At most `n` nonzeros in every `m` consecutive weights along the input dimension
    /// (2:4 keeps 2 of every 4), `0 < n < m`.
    NM { n: usize, m: usize },
}

impl Pattern {
    /// Checks the pattern's own numbers (not yet against a weight).
    pub fn validate(self) -> Result<Pattern, PruneError> {
        match self {
            Pattern::Unstructured { sparsity } if !(0.0..1.0).contains(&sparsity) => {
                Err(PruneError::BadPattern(format!("sparsity must be in [0, 1), got {sparsity}")))
            }
            Pattern::NM { n, m } if n == 0 || n >= m => Err(PruneError::BadPattern(format!("N:M needs 0 < N < M, got {n}:{m}"))),
            p => Ok(p),
        }
    }

    /// The share of weights this pattern removes.
    pub fn ratio(self) -> f64 {
        match self {
            Pattern::Unstructured { sparsity } => sparsity,
            Pattern::NM { n, m } => (m - n) as f64 / m as f64,
        }
    }

    /// How many of every group of `m` are removed (`m − n`), for N:M.
    pub fn pruned_per_group(self) -> Option<(usize, usize)> {
        match self {
            Pattern::NM { n, m } => Some((m - n, m)),
            Pattern::Unstructured { .. } => None,
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Unstructured { sparsity } => write!(f, "{:.0}% unstructured", sparsity * 100.0),
            Pattern::NM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Why a weight cannot be pruned as asked. Each variant carries the numbers that were wrong.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("bad sparsity pattern: {0}")]
    BadPattern(String),
    /// A method option out of its range, e.g. SparseGPT's blocksize or damping.
    #[error("bad {method} option: {problem}")]
    BadOption { method: &'static str, problem: String },
    #[error("{pattern} needs an input dimension divisible by {m}, but the weight is {shape:?}")]
    NotDivisible { pattern: String, m: usize, shape: Vec<i64> },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("statistics are empty: no activations were accumulated")]
    NoStatistics,
    #[error(
        "the Cholesky factorisation of the damped Hessian failed at every damping up to {max_percdamp} \
         (tried {tried:?}); the calibration activations may be degenerate"
    )]
    Cholesky { tried: Vec<f64>, max_percdamp: f64 },
    #[error("{what} is not finite")]
    NotFinite { what: String },
    #[error("OWL cannot allocate: {0}")]
    Owl(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// `[out, in]` of a 2-D weight, or a shape error.
pub(crate) fn dims2(w: &tch::Tensor) -> Result<(i64, i64), PruneError> {
    match w.size()[..] {
        [o, i] => Ok((o, i)),
        ref s => Err(PruneError::Shape(format!("a weight must be [out, in], got {s:?}"))),
    }
}
