//! `spindle-prune` owns the pruning algorithms of the literature (magnitude, Wanda, SparseGPT,
//! RIA; unstructured and N:M patterns; uniform and OWL layer-wise allocation) as pure functions.
//!
//! Each algorithm is two kinds of function, in the manner of llm-compressor: one accumulates
//! statistics from a linear layer's input activations (`[tokens, in]` → column norms, a Hessian),
//! the other sparsifies a weight `[out, in]` from those statistics and a typed configuration, and
//! returns the mask it chose. Keeping them pure is what makes them testable against the reference
//! implementations mask for mask, and reusable outside spindle's pipeline: a researcher can call
//! Wanda on one matrix without a model, a file or a dataset.
//!
//! The algorithms land with the pruning issue (#6); this crate is empty until then.
//!
//! Architecture Invariant: spindle-prune knows nothing of files, tensor names, architectures or
//! datasets. It never depends on safetensors, parquet, arrow or tokenizers, nor on any other
//! spindle crate; `tests/architecture.rs` fails if it does. Which weight of which block is pruned
//! with which statistics is decided by the pipeline in `spindle`.
