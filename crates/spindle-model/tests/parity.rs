//! Logits parity with Hugging Face transformers on the tiny random checkpoints in
//! `tests/golden/` (made by `tests/golden/make_golden.py`, transformers 5.24.0, eager attention,
//! fp32). Each model is loaded from both config layouts (transformers 5's `config.json`,
//! transformers 4's `config.tf4.json`), and run with a right-padded mask and without one; the
//! output of block 0 is compared too, so a mismatch points at a block or at the head.

use std::path::{Path, PathBuf};

use spindle_model::Model;
use tch::{Device, Kind, Tensor};

const MODELS: &[&str] = &["llama-gqa", "llama3-rope", "mistral", "qwen2", "opt-pre", "opt-post-proj"];
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
    assert_eq!(names, ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]);
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
