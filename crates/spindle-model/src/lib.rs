//! `spindle-model` owns models: reading checkpoints, the architectures of the pruning literature,
//! the forward pass, and writing a model back.
//!
//! Pruning research runs the same forward pass thousands of times, one decoder block at a time,
//! on checkpoints that do not fit twice in memory. This crate is built for that shape of work:
//! a model is an embedding, a sequence of blocks that load themselves by tensor-name path, and a
//! head; each block exposes its linear layers and norms by their Hugging Face names so that the
//! pipeline can scale and prune them; and nothing requires the whole model to be resident.
//!
//! What exists: one module per architecture family ([`arch`]: Llama, Mistral, Qwen2 and Qwen3 in
//! `arch::llama`, Gemma 2 and 3 in `arch::gemma`, Phi-3 in `arch::phi3`, Mixtral in
//! `arch::mixtral`, OPT in `arch::opt`), each resolving its
//! `config.json` in both the transformers-4 and -5 key layouts ([`ModelConfig`]); memory-mapped safetensors, single or
//! sharded, read one tensor at a time with shape and finiteness checks ([`Weights`]); the
//! block-wise forward pass ([`Model`]: `embed` → `block(i).forward` → `head`, logits for every
//! position), equal to transformers' to ~2e-6 in fp32; importers ([`import`]) from GGUF ([`gguf`],
//! [`convert_gguf`]) and llama2.c ([`llama2c`], [`convert_llama2c`]); atomic writing of safetensors
//! files and whole model directories ([`HfDirWriter`]); per-linear sparsity ([`inspect()`]); and
//! the compute runtime ([`Runtime`]).
//!
//! Architecture Invariant: spindle-model knows no pruner, no induction method, no dataset and no
//! evaluation protocol. It turns files into modules and ids into logits; what is done with the
//! weights and the logits is decided elsewhere.
//!
//! ```
//! use spindle_model::ModelConfig;
//! // config.json as transformers writes it for SmolLM2-135M, resolved into typed sizes.
//! let json = r#"{"architectures":["LlamaForCausalLM"],"hidden_size":576,"intermediate_size":1536,
//!   "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"vocab_size":49152,
//!   "rms_norm_eps":1e-5,"rope_theta":100000,"max_position_embeddings":8192}"#;
//! let c = ModelConfig::from_json(std::path::Path::new("config.json"), json)?;
//! assert_eq!((c.num_layers, c.head_dim, c.num_kv_heads), (30, 64, 3));
//! # Ok::<(), spindle_model::ConfigError>(())
//! ```

pub mod arch;
mod config;
mod device;
pub mod import;
mod inspect;
mod model;
mod safetensors_write;
mod save;
mod weights;

pub use arch::Family;
pub use config::{Architecture, AttentionWindow, BiasSlot, ConfigError, DType, ModelConfig, RopeScaling};
pub use device::{DeviceSpec, Runtime, RuntimeError};
pub use import::{ConvertError, convert_gguf, convert_llama2c, gguf, llama2c};
pub use inspect::{Inspection, LinearSparsity, inspect};
pub use model::{Block, ForwardCtx, KvRepeat, Linear, Model, ModelError, Norm, Observer, ScaleProducer, ScalingSite};
pub use model::{CachedCtx, KvCache};
pub use safetensors_write::{
    Loader, TensorSpec, WriteError, safetensors_bytes, write_file_atomic, write_safetensors, write_safetensors_lazy,
};
pub use save::{HfDirWriter, SaveError, remove_partials, sweep_partials};
pub use weights::{Weights, WeightsError};
