//! `spindle-induce` owns Sparsity Induction (arXiv 2602.21652): transformations of a dense model
//! that make it easier to prune, applied before any pruner runs.
//!
//! Two levels, as the paper describes them: (1) absorbable channel-wise scaling between a
//! producer and its consumers (a norm and the linears it feeds; v and o; up and down), which leaves
//! the dense function unchanged and reshapes the importance distribution a pruner sees; (2) a
//! Spectral Norm Loss on features, which changes the model to make its features low-rank. Both are
//! math on tensors with typed configurations, so each can be tested for exact invariance (the
//! dense output does not move) and for what it does and does not change in each pruner's mask.
//!
//! The method lands with the induction issue (#7); this crate is empty until then.
//!
//! Architecture Invariant: spindle-induce knows no files, no tensor names and no datasets. It is
//! given tensors (weights, activations) and where they sit relative to each other, never a path;
//! it never depends on safetensors, parquet, arrow or tokenizers, nor on `spindle-model` or
//! `spindle-data`. It may use `spindle-prune`'s scores, never the other way round.
