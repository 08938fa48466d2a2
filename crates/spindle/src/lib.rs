//! `spindle` is the only crate that knows both models and pruners: it owns the pipeline that walks
//! a model block by block, feeds calibration activations to the pruning and induction math, and
//! writes the result; and it owns the `spindle` binary.
//!
//! The other crates are deliberately narrow so that researchers can import one without the rest:
//! `spindle-prune` and `spindle-induce` are math on tensors, `spindle-model` is files to modules,
//! `spindle-data` is files to tokens, `spindle-eval` is scoring. Everything that needs to know two
//! of those at once (which linear of which block gets which statistics, where the output goes)
//! lives here.
//!
//! It holds the sequential pruning pipeline ([`prune`]: calibration inputs through one resident
//! block at a time, statistics, the pruners of `spindle-prune`, the pruned block written as it
//! goes) and the pieces every command shares: atomic output files ([`output`]), progress
//! reporting ([`progress`]), peak memory ([`mem`]) and the model zoo ([`zoo`]).
//!
//! Architecture Invariant: the library half of this crate draws nothing on the terminal except
//! through [`progress`], and never exits the process; the binary (`src/main.rs`) maps errors to
//! exit codes: 0 success, 2 usage error, 1 any
//! other failure, always with a one-line cause on stderr.
//!
//! ```
//! use spindle::output::{OutputKind, check_output_path};
//! let dir = tempfile::tempdir()?;
//! let model = dir.path().join("model");
//! std::fs::create_dir(&model)?;
//! // Before any work: a report may not land inside the model it describes.
//! let err = check_output_path("--json", &model.join("report.json"), OutputKind::File, &[&model], &[]).unwrap_err();
//! assert!(err.to_string().ends_with("inputs are never written"));
//! assert!(check_output_path("--json", &dir.path().join("report.json"), OutputKind::File, &[&model], &[]).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod activations;
mod error;
pub mod hub;
pub mod induce;
pub mod mem;
pub mod output;
pub mod progress;
pub mod prune;
pub mod recipe;
pub mod zoo;

pub use recipe::{Recipe, prune_with_recipe};
