//! `spindle-model` owns models: reading checkpoints, the architectures of the pruning literature,
//! the forward pass, and writing a model back.
//!
//! Pruning research runs the same forward pass thousands of times, one decoder block at a time,
//! on checkpoints that do not fit twice in memory. This crate is built for that shape of work:
//! a model is an embedding, a sequence of blocks that load themselves by tensor-name path, and a
//! head; each block exposes its linear layers and norms by their Hugging Face names so that the
//! pipeline can scale and prune them; and nothing requires the whole model to be resident.
//!
//! Today it holds the compute runtime ([`Runtime`]): which device tensors live on (the `cuda`
//! feature adds GPUs) and how many CPU threads libtorch uses. Configs, checkpoints (safetensors,
//! GGUF, llama2.c), the block-wise forward and saving arrive with the model-IO issue.
//!
//! Architecture Invariant: spindle-model knows no pruner, no induction method, no dataset and no
//! evaluation protocol. It turns files into modules and ids into logits; what is done with the
//! weights and the logits is decided elsewhere.

mod device;

pub use device::{DeviceSpec, Runtime, RuntimeError};
