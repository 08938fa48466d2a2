//! Logits parity with Hugging Face transformers on the tiny random checkpoints in
//! `tests/golden/` (made by `tests/golden/make_golden.py`, transformers 5.24.0, eager attention,
//! fp32). Each model is loaded from both config layouts (transformers 5's `config.json`,
//! transformers 4's `config.tf4.json`), and run with a right-padded mask and without one; the
//! output of block 0 is compared too, so a mismatch points at a block or at the head.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use spindle_model::Model;
use tch::{Device, Kind, Tensor};

const MODELS: &[&str] =
    &["llama-gqa", "llama3-rope", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "mixtral", "opt-pre", "opt-post-proj"];
const TOLERANCE: f64 = 1e-4;

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name)
}

fn golden(name: &str, key: &str) -> Tensor {
    let tensors = Tensor::read_safetensors(golden_dir(name).join("golden.safetensors")).unwrap();
    tensors.into_iter().find(|(k, _)| k == key).map(|(_, t)| t).unwrap_or_else(|| panic!("{name}: no {key}"))
}

/// A copy of the golden model directory with `config` as its config.json.
fn with_config(name: &str, config: &str) -> tempfile::TempDir {
    let src = golden_dir(name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(src.join(config), dir.path().join("config.json")).unwrap();
    dir
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn check(name: &str, config: &str) {
    let dir = with_config(name, config);
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let ids = golden(name, "input_ids");
    let mask = golden(name, "attention_mask");

    let logits = model.forward(&ids, Some(&mask)).unwrap();
    let d = max_abs_diff(&logits, &golden(name, "logits"));
    assert!(d <= TOLERANCE, "{name} ({config}): masked logits differ by {d}");

    let logits = model.forward(&ids, None).unwrap();
    let d = max_abs_diff(&logits, &golden(name, "logits_nomask"));
    assert!(d <= TOLERANCE, "{name} ({config}): unmasked logits differ by {d}");

    let (b, s) = (ids.size()[0], ids.size()[1]);
    let h = model.embed(&ids, None).unwrap();
    let h = model.block(0).unwrap().forward(&h, &model.context(b, s, None));
    let d = max_abs_diff(&h, &golden(name, "hidden_block0"));
    assert!(d <= TOLERANCE, "{name} ({config}): block 0 output differs by {d}");
}

#[test]
fn logits_match_transformers_with_transformers5_configs() {
    for name in MODELS {
        check(name, "config.json");
    }
}

#[test]
fn logits_match_transformers_with_transformers4_configs() {
    for name in MODELS {
        check(name, "config.tf4.json");
    }
}

#[test]
fn blocks_expose_their_linears_and_norms_by_hf_name() {
    let dir = with_config("qwen2", "config.json");
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let block = model.block(1).unwrap();
    let names: Vec<_> = block.linears().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    );
    assert!(block.linear("q_proj").unwrap().bias.is_some());
    assert!(block.linear("o_proj").unwrap().bias.is_none());
    assert_eq!(block.linear("k_proj").unwrap().weight.size(), [8, 32]);
    let norms: Vec<_> = block.norms().map(|(n, _)| n).collect();
    assert_eq!(norms, ["input_layernorm", "post_attention_layernorm"]);

    let dir = with_config("opt-post-proj", "config.json");
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let block = model.block(0).unwrap();
    let names: Vec<_> = block.linears().map(|(n, _)| n).collect();
    assert_eq!(names, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"]);
    assert_eq!(model.block_prefix(0), "model.decoder.layers.0.");
    assert_eq!(model.block(2).unwrap_err().to_string(), "block 2 does not exist: the model has 2 blocks");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = with_config("llama-gqa", "config.json");
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let err = model.forward(&Tensor::from_slice(&[1i64, 500]).view([1, 2]), None).unwrap_err();
    assert_eq!(err.to_string(), "token id 500 is outside the vocabulary (size 128)");
    let err = model.forward(&Tensor::from_slice(&[1i64, 2]), None).unwrap_err();
    assert_eq!(err.to_string(), "input ids must be a [batch, seq] int64 tensor, got Int64 of shape [2]");
}

#[test]
fn a_config_that_disagrees_with_the_weights_names_the_tensor() {
    let dir = with_config("llama-gqa", "config.json");
    let path = dir.path().join("config.json");
    let text = std::fs::read_to_string(&path).unwrap().replace("\"intermediate_size\": 64", "\"intermediate_size\": 96");
    std::fs::write(&path, text).unwrap();
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let err = model.block(0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: tensor `model.layers.0.mlp.gate_proj.weight` has shape [64, 32], config.json implies [96, 32]",
            dir.path().join("model.safetensors").display()
        )
    );
}

#[test]
fn a_saved_model_keeps_names_dtypes_and_changes() {
    let dir = with_config("llama3-rope", "config.json");
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    let ids = golden("llama3-rope", "input_ids");
    let out = tempfile::tempdir().unwrap();
    let saved = out.path().join("pruned");
    // Zero the first row of block 1's up_proj, as a pruner would.
    model
        .save(&saved, &mut |i| -> Result<_, spindle_model::ModelError> {
            let mut b = model.block(i)?;
            if i == 1 {
                let up = b.linear_mut("up_proj").unwrap();
                let _ = up.weight.get(0).fill_(0.0);
            }
            Ok(b)
        })
        .unwrap();
    let original = spindle_model::Weights::open(dir.path()).unwrap();
    let reloaded = spindle_model::Weights::open(&saved).unwrap();
    assert_eq!(original.names().collect::<Vec<_>>(), reloaded.names().collect::<Vec<_>>(), "same names, tied head still absent");
    assert!(!reloaded.contains("lm_head.weight"));
    let again = Model::open(&saved, Device::Cpu, Kind::Float).unwrap();
    let up = again.block(1).unwrap().linear("up_proj").unwrap().weight.get(0);
    assert_eq!(up.abs().sum(Kind::Float).double_value(&[]), 0.0);
    // Block 0 was saved unchanged, so its output is identical.
    let (b, s) = (ids.size()[0], ids.size()[1]);
    let ctx = model.context(b, s, None);
    let h0 = model.block(0).unwrap().forward(&model.embed(&ids, None).unwrap(), &ctx);
    let h1 = again.block(0).unwrap().forward(&again.embed(&ids, None).unwrap(), &ctx);
    assert_eq!(max_abs_diff(&h0, &h1), 0.0);
    assert!(saved.join("config.json").is_file());
    // Saving over the input is refused.
    let err = model.save(dir.path(), &mut |i| model.block(i)).unwrap_err();
    assert!(err.to_string().contains("spindle never overwrites its input"), "{err}");
}

#[test]
fn opt_checkpoints_without_the_model_prefix_load_alike() {
    // Some published OPT checkpoints name their tensors `decoder.*` instead of `model.decoder.*`.
    let src = golden_dir("opt-pre");
    let weights = spindle_model::Weights::open(&src).unwrap();
    let renamed: Vec<(String, Tensor)> = weights
        .names()
        .map(|n| {
            let shape = weights.shape(n).unwrap().to_vec();
            let t = weights.load(n, &shape, Kind::Float, Device::Cpu).unwrap();
            (n.strip_prefix("model.").unwrap_or(n).to_owned(), t)
        })
        .collect();
    assert!(renamed.iter().all(|(n, _)| n.starts_with("decoder.")));
    let dir = tempfile::tempdir().unwrap();
    spindle_model::write_safetensors(&dir.path().join("model.safetensors"), &renamed).unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let model = Model::open(dir.path(), Device::Cpu, Kind::Float).unwrap();
    assert_eq!(model.block_prefix(1), "decoder.layers.1.");
    let logits = model.forward(&golden("opt-pre", "input_ids"), Some(&golden("opt-pre", "attention_mask"))).unwrap();
    assert!(max_abs_diff(&logits, &golden("opt-pre", "logits")) <= TOLERANCE);
}
