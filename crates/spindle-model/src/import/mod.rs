//! Importers: checkpoints in other formats turned into Hugging Face model directories that
//! [`crate::Model`] (and transformers) load. Each reads its format, checks it, and writes through
//! [`crate::HfDirWriter`]; none of them runs a forward pass of its own.
//!
//! Architecture Invariant: an importer writes files; it never builds a `Block`. What a family's
//! tensors mean is the business of `crate::arch`.

mod convert;
pub mod gguf;
pub mod llama2c;
mod spm;

pub use convert::{ConvertError, convert_gguf, convert_llama2c};
