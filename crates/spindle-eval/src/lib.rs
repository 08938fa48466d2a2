//! `spindle-eval` owns scoring a model the way the pruning literature does: perplexity exactly as
//! the SparseGPT and Wanda scripts compute it (WikiText-2, C4, PTB), and zero-shot multiple choice
//! with lm-evaluation-harness semantics on tasks declared as versioned data in `eval/tasks/`.
//!
//! A pruning paper's numbers are only comparable when the protocol matches to the token: which
//! windows, which delimiter, how a continuation is split from its context, what `acc_norm`
//! normalises by. That protocol lives here, in one place, with parity tests against the reference
//! tools.
//!
//! The protocols land with the evaluation issue (#5); this crate is empty until then.
//!
//! Architecture Invariant: spindle-eval knows models only through `spindle-model`'s forward API
//! and text only through `spindle-data`; it knows no pruner and no induction method, so a pruned
//! model is scored exactly like a dense one.
