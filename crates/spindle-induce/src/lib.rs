//! `spindle-induce` owns Sparsity Induction (arXiv 2602.21652): transformations of a dense model
//! that make it easier to prune, applied before any pruner runs.
//!
//! The paper's full text is not available; what is built here is a reconstruction from its
//! abstract, with every unknown choice a named option (see `docs/induction.md`). Two levels:
//!
//! 1. **Distribution level** ([`scale`], [`measure`], [`distribution`]): a positive per-channel
//!    scaling `D` between a producer (a norm, or a linear's output rows) and its consumers (the
//!    linears reading those channels) is absorbed exactly — producer ÷ D, consumer columns × D —
//!    so the dense function does not change, but the weights a pruner ranks do. `D` starts from
//!    SmoothQuant's closed form `max|X_j|^α / max|W_j|^(1−α)` and is refined by gradient descent
//!    to minimise the *true importance* (`|W_ij|·‖X_j‖`, which no absorbable scaling changes)
//!    that the target pruner's selection would remove at the target sparsity.
//! 2. **Feature level** ([`snl`], [`feature`]): the Spectral Norm Loss on a token × channel
//!    feature matrix, in two readings: *equivalent* (it only chooses the absorbable scales, the
//!    function stays the same) and *model-changing* (learnable channel scalers on the linears'
//!    inputs, trained block by block against the dense block's output plus λ·SNL, then merged).
//!
//! What can act on which pruner follows from invariances that the tests check: Wanda's score
//! `|W_ij|·‖X_j‖` is unchanged by any absorbable scaling, so its masks (unstructured and N:M)
//! are too; SparseGPT's selection and updates are equivariant under input-column scaling;
//! magnitude (and RIA's relative term) are not. So the distribution level can only help
//! magnitude and RIA; a gain for Wanda or SparseGPT must come from the model-changing feature
//! level.
//!
//! Everything here is math on tensors with typed configurations: a caller hands over weights,
//! activations or a closure that runs a block, never a name or a file.
//!
//! Architecture Invariant: spindle-induce knows no files, no tensor names and no datasets. It is
//! given tensors (weights, activations) and where they sit relative to each other, never a path;
//! it never depends on safetensors, parquet, arrow or tokenizers, nor on `spindle-model` or
//! `spindle-data`. It may use `spindle-prune`'s scores, never the other way round.
//!
//! ```
//! use spindle_induce::Snl;
//! use tch::Tensor;
//! // A rank-one feature matrix has nuclear norm equal to its spectral norm: the loss is 1, its least.
//! let x = Tensor::from_slice(&[1.0f32, 2.0, 2.0, 4.0, 3.0, 6.0]).view([3, 2]);
//! let loss = Snl::NuclearOverSpectral.loss(&x)?.double_value(&[]);
//! assert!((loss - 1.0).abs() < 1e-5);
//! # Ok::<(), spindle_induce::InduceError>(())
//! ```

pub mod distribution;
pub mod feature;
pub mod measure;
pub mod scale;
pub mod snl;

pub use distribution::{DistributionConfig, Producer, Site, SiteFit, Start};
pub use feature::{EpochLoss, EquivalentSnlConfig, FeatureConfig, FeatureSource, PruningAware, TrainOutcome};
pub use measure::{Measures, Scorer};
pub use scale::{ChannelMap, ChannelStats};
pub use snl::Snl;

/// Why an induction step cannot be carried out. Each variant carries what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum InduceError {
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("{what} is not finite")]
    NotFinite { what: String },
    #[error("scales must be positive and finite: {0}")]
    BadScales(String),
    #[error("bad induction configuration: {0}")]
    Config(String),
    #[error("statistics are empty: no activations were accumulated")]
    NoStatistics,
    #[error(transparent)]
    Prune(#[from] spindle_prune::PruneError),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
