//! Conversion end to end on the real tiny llama2.c model in the offline data folder
//! (`models/stories260K`): spindle converts it, loads the result like any Hugging Face model, and
//! reproduces the figures the data folder's README gives for it.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use spindle_model::Model;
use spindle_model::llama2c;
use tch::{Device, Kind, Tensor};

use common::stories_dir as stories;

fn convert(out: &Path) {
    common::convert_stories(Path::new(env!("CARGO_BIN_EXE_spindle")), out);
}

fn sample_ids() -> Vec<u32> {
    let s = stories();
    let tok = llama2c::read_tokenizer(&s.join("tok512.bin"), 512).unwrap();
    let text = std::fs::read_to_string(s.join("tinystories-sample.txt")).unwrap();
    tok.encode(text.trim(), true)
}

fn ids_tensor(ids: &[u32]) -> Tensor {
    let v: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_slice(&v).view([1, -1])
}

#[test]
fn converted_stories260k_reproduces_its_known_nll() {
    tch::set_num_threads(1);
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("stories");
    convert(&out);
    let model = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
    let ids = sample_ids();
    assert!(ids.len() >= 512, "the sample encodes to {} tokens", ids.len());
    let window = ids_tensor(&ids[..512]);
    let logits = model.forward(&window, None).unwrap();
    let logp = logits.narrow(1, 0, 511).log_softmax(-1, Kind::Double);
    let targets = window.narrow(1, 1, 511).unsqueeze(-1);
    let nll = -logp.gather(-1, &targets, false).mean(Kind::Double).double_value(&[]);
    assert!((nll - 1.7192).abs() <= 1e-3, "mean NLL {nll}, README says 1.7192");
}

#[test]
fn converted_stories260k_continues_the_known_story_greedily() {
    tch::set_num_threads(1);
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("stories");
    convert(&out);
    let model = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
    let s = stories();
    let tok = llama2c::read_tokenizer(&s.join("tok512.bin"), 512).unwrap();
    let mut ids = tok.encode("Once upon a time", true);
    let prompt = ids.len();
    let mut text = String::new();
    for _ in 0..40 {
        let logits = model.forward(&ids_tensor(&ids), None).unwrap();
        let next = logits.select(1, -1).argmax(-1, false).int64_value(&[0]) as u32;
        text.push_str(&tok.decode_piece(ids[ids.len() - 1], next));
        ids.push(next);
    }
    assert!(ids.len() > prompt);
    let expected = ", there was a little girl named Lily. She loved to play outside in the park.";
    assert!(text.starts_with(expected), "greedy continuation: {text:?}");
}

#[test]
fn the_converted_tokenizer_json_encodes_like_llama2c() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("stories");
    convert(&out);
    let hf = spindle_data::Tokenizer::from_file(&out.join("tokenizer.json")).unwrap();
    let s = stories();
    let text = std::fs::read_to_string(s.join("tinystories-sample.txt")).unwrap();
    assert_eq!(hf.encode(text.trim(), true).unwrap(), sample_ids());
    assert_eq!(
        hf.encode("Once upon a time", true).unwrap(),
        llama2c::read_tokenizer(&s.join("tok512.bin"), 512).unwrap().encode("Once upon a time", true)
    );
}

#[test]
fn data_calib_and_stats_use_the_models_tokenizer() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("stories");
    convert(&out);
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_spindle"))
            .args(["--threads", "1"])
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .env("SPINDLE_CACHE", t.path().join("cache"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let model = out.to_str().unwrap();
    let json = t.path().join("calib.json");
    let printed = run(&[
        "data",
        "calib",
        "--model",
        model,
        "--calib",
        "c4",
        "--nsamples",
        "32",
        "--seqlen",
        "256",
        "--seed",
        "0",
        "--json",
        json.to_str().unwrap(),
    ]);
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/calib/calib_golden.json")).unwrap(),
    )
    .unwrap();
    let case = golden["cases"].as_array().unwrap().iter().find(|c| c["name"] == "stories260k").unwrap();
    let ours: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let pairs = |v: &serde_json::Value| -> Vec<(u64, u64)> {
        v.as_array().unwrap().iter().map(|w| (w["doc"].as_u64().unwrap(), w["offset"].as_u64().unwrap())).collect()
    };
    assert_eq!(pairs(&ours["windows"]), pairs(&case["windows"]));
    assert!(printed.starts_with(&format!("0\tdoc {}\toffset {}\n", case["windows"][0]["doc"], case["windows"][0]["offset"])), "{printed}");
    assert!(printed.contains("no train shard offline"), "{printed}");

    let stats_json = t.path().join("stats.json");
    let printed =
        run(&["data", "stats", "--model", model, "--corpus", "wikitext2", "--seqlen", "512", "--json", stats_json.to_str().unwrap()]);
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats_json).unwrap()).unwrap();
    let tokens = stats["tokens"].as_u64().unwrap();
    assert_eq!(stats["windows"].as_u64().unwrap(), tokens / 512);
    assert!(printed.starts_with(&format!("wikitext2: 4358 documents, {tokens} tokens; {} windows of 512", tokens / 512)), "{printed}");
    // The second run reads the token cache.
    let again = run(&["data", "stats", "--model", model, "--corpus", "wikitext2", "--seqlen", "512"]);
    assert_eq!(again, printed);
    assert_eq!(std::fs::read_dir(t.path().join("cache/tokens")).unwrap().count(), 2);
}

#[test]
fn spindle_eval_reports_perplexity_and_tasks_as_text_and_json() {
    tch::set_num_threads(1);
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("stories");
    convert(&out);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let spindle = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_spindle"))
            .arg("--threads")
            .arg("1")
            .args(args)
            .current_dir(&root)
            .env("SPINDLE_CACHE", t.path().join("cache"))
            .output()
            .unwrap()
    };
    let json = t.path().join("eval.json");
    let model = out.to_str().unwrap();
    // A file corpus keeps this quick: WikiText-2 is ~800k tokens in this 512-token vocabulary.
    let sample = stories().join("tinystories-sample.txt");
    let o = spindle(&[
        "eval",
        "--model",
        model,
        "--ppl",
        sample.to_str().unwrap(),
        "--seqlen",
        "128",
        "--tasks",
        "piqa,winogrande",
        "--limit",
        "6",
        "--batch-size",
        "4",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let ppl = v["perplexity"][sample.to_str().unwrap()].as_f64().unwrap();
    assert_eq!(v["tasks"]["piqa"]["n"], 6);
    assert!(v["tasks"]["piqa"]["acc_norm"].is_f64());
    assert!(v["tasks"]["winogrande"]["acc_norm"].is_null(), "lm-eval reports no acc_norm for winogrande");
    // lm-eval's standard error of a mean of 0/1 scores, by hand: sqrt(p (1 − p) / (n − 1)).
    for (task, metric) in [("piqa", "acc"), ("piqa", "acc_norm"), ("winogrande", "acc")] {
        let p = v["tasks"][task][metric].as_f64().unwrap();
        let se = v["tasks"][task][format!("{metric}_stderr")].as_f64().unwrap();
        assert!((se - (p * (1.0 - p) / 5.0).sqrt()).abs() < 1e-12, "{task} {metric}: stderr {se} at accuracy {p}");
    }
    assert!(v["tasks"]["winogrande"]["acc_norm_stderr"].is_null());
    // Gold indices of the first 6 items: piqa 0 1 1 1 0 1, winogrande 1 0 1 0 0 0 (tests/golden/lmeval).
    for task in ["piqa", "winogrande"] {
        assert!((v["tasks"][task]["majority"].as_f64().unwrap() - 4.0 / 6.0).abs() < 1e-15, "{task}: majority");
        assert_eq!(v["task_timing"][task]["items"], 6);
        assert!(v["task_timing"][task]["items_per_second"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(v["config"]["seqlen"], 128);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("{} ppl {ppl:>10.4}", sample.display())), "{text}");

    // The same figure through the library, on the same tokens.
    let m = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
    let tok = spindle_data::Tokenizer::from_file(&out.join("tokenizer.json")).unwrap();
    let data = spindle_data::DataDir::resolve_from(None, &root).unwrap();
    let cache = spindle_data::cache::TokenCache::new(t.path().join("cache2"));
    let (ids, _, _, _) =
        spindle_data::corpus::eval_tokens(&spindle_data::corpus::Corpus::File(sample.clone()), &data, &tok, &cache).unwrap();
    // The file is one document: its text as is, with the tokenizer's BOS.
    assert_eq!(ids.len(), tok.encode(&std::fs::read_to_string(&sample).unwrap(), true).unwrap().len());
    let r = spindle_eval::perplexity(&m, &ids, spindle_eval::PplConfig { seqlen: 128, batch_size: 7 }, &mut |_, _| {}).unwrap();
    assert!(((r.ppl - ppl) / ppl).abs() < 1e-5, "batching must not change the figure: {} vs {ppl}", r.ppl);
    assert_eq!(r.nsamples, ids.len() / 128);
    // Streamed by layer (one block resident), every window's figure is the resident one, bit for
    // bit, at each batch size; and `spindle eval --stream` prints the same figure.
    for batch_size in [1, 3, 7] {
        let cfg = spindle_eval::PplConfig { seqlen: 128, batch_size };
        let resident = spindle_eval::perplexity(&m, &ids, cfg, &mut |_, _| {}).unwrap();
        let mut blocks = Vec::new();
        let streamed = spindle_eval::perplexity_streamed(&m, &ids, cfg, &mut |d, t| blocks.push((d, t))).unwrap();
        let bits = |r: &spindle_eval::PplResult| r.nlls.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&streamed), bits(&resident), "batch size {batch_size}");
        assert_eq!(streamed.ppl.to_bits(), resident.ppl.to_bits());
        assert_eq!(blocks.last(), Some(&(5, 5)), "progress counts stories260K's 5 blocks");
    }
    let json = t.path().join("streamed.json");
    let o = spindle(&[
        "eval",
        "--model",
        model,
        "--ppl",
        sample.to_str().unwrap(),
        "--seqlen",
        "128",
        "--stream",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&format!("{} ppl {ppl:>10.4}", sample.display())));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((v["config"]["perplexity"].as_str(), v["config"]["dtype"].as_str()), (Some("streamed"), Some("float32")));
    // The first k windows' figure from a whole evaluation's per-window figures (how
    // `cargo xtask reproduce` derives a k-window column) equals a `--max-windows k` run, bit for
    // bit, where k is a multiple of the batch size.
    let whole = t.path().join("whole.json");
    let first = t.path().join("first.json");
    let sample_s = sample.to_str().unwrap();
    for (path, extra) in [(&whole, &[][..]), (&first, &["--max-windows", "8"][..])] {
        let mut args =
            vec!["eval", "--model", model, "--ppl", sample_s, "--seqlen", "32", "--batch-size", "4", "--json", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = spindle(&args);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let read = |p: &Path| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
    let (whole, first) = (read(&whole), read(&first));
    let key = sample_s;
    let nlls: Vec<f64> = whole["perplexity_nlls"][key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(nlls.len() > 8, "{} windows", nlls.len());
    let mut total = 0f64;
    for v in &nlls[..8] {
        total += v;
    }
    let derived = (total / (8 * 32) as f64).exp();
    assert_eq!(derived.to_bits(), first["perplexity"][key].as_f64().unwrap().to_bits(), "{derived} vs {}", first["perplexity"][key]);

    let o = spindle(&["eval", "--model", model, "--tasks", "squad"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("spindle: error: unknown task \"squad\" (known: arc_challenge, arc_easy, "));
    let o = spindle(&["eval", "--model", model]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "spindle: error: nothing to evaluate: pass --ppl CORPORA and/or --tasks TASKS\n");
}

/// A JSON file of `tests/golden/gguf/`.
fn gguf_golden(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/gguf").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Recorded `input_ids` rows `[batch, seq]`.
fn recorded_ids(ids: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<i64>> = serde_json::from_value(ids.clone()).unwrap();
    Tensor::from_slice(&rows.concat()).view([rows.len() as i64, -1])
}

/// Recorded `logits` `[batch, seq, vocab]`.
fn recorded_logits(logits: &serde_json::Value) -> Tensor {
    let w: Vec<Vec<Vec<f32>>> = serde_json::from_value(logits.clone()).unwrap();
    let (b, s) = (w.len() as i64, w.first().map_or(0, Vec::len) as i64);
    Tensor::from_slice(&w.concat().concat()).view([b, s, -1])
}

/// Every recorded sample encodes (no special tokens) to its recorded ids.
fn assert_encodings(tok: &spindle_data::Tokenizer, samples: &serde_json::Value, what: &str) {
    for sample in samples.as_array().unwrap() {
        let text = sample["text"].as_str().unwrap();
        let ids: Vec<u32> = serde_json::from_value(sample["input_ids"].clone()).unwrap();
        assert_eq!(tok.encode(text, false).unwrap(), ids, "{what}: {text:?}");
    }
}

/// GGUF files of the qwen2 and qwen3 architectures (`tests/golden/gguf/make_arch_ggufs.py`:
/// the tiny transformers fixtures written as llama.cpp writes them, one matrix in Q8_0, a
/// byte-level BPE tokenizer with the `qwen2` pre-tokenizer) convert into directories whose logits
/// equal those of transformers' own GGUF loader, and whose tokenizer.json encodes every sample
/// text as transformers' tokenizer built from the same GGUF does, the special token included.
#[test]
fn qwen2_and_qwen3_ggufs_convert_to_transformers_logits_and_tokens() {
    tch::set_num_threads(1);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/gguf");
    let expected = gguf_golden("arch_ggufs.expected.json");
    let t = tempfile::tempdir().unwrap();
    for arch in ["qwen2", "qwen3"] {
        let e = &expected["archs"][arch];
        let out = t.path().join(arch);
        spindle_model::convert_gguf(&dir.join(format!("{arch}.gguf")), &out, &mut |_, _| {}).unwrap();
        let model = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
        let c = model.config();
        assert_eq!(c.architecture.hf_name(), e["derived_config"]["model_class"].as_str().unwrap(), "{arch}");
        // Qwen3's head size is the file's key_length (16), not hidden / heads (8).
        assert_eq!(c.head_dim, if arch == "qwen3" { 16 } else { 8 }, "{arch}");
        let ids = recorded_ids(&e["input_ids"]);
        let diff = (model.forward(&ids, None).unwrap() - recorded_logits(&e["logits"])).abs().max().double_value(&[]);
        assert!(diff <= 1e-4, "{arch}: logits differ from transformers' GGUF loader by {diff}");
        let tok = spindle_data::Tokenizer::from_file(&out.join("tokenizer.json")).unwrap();
        assert_encodings(&tok, &e["tokenizer"]["encodings"], arch);
    }
}

/// A Llama-3-style GGUF (`tests/golden/gguf/make_llama3_gguf.py`: the `llama3-rope` fixture as
/// llama.cpp writes Llama 3.x, its RoPE scaling only in `rope_freqs.weight`, the split named
/// "llama-bpe") converts into a directory with the fixture's llama3 RoPE scaling (recovered from
/// the tensor, which is not written), logits equal to transformers' on the fixture itself, and a
/// tokenizer that encodes as transformers' tokenizer built from the GGUF. transformers' own GGUF
/// loader drops the tensor and rotates without the scaling (its logits differ by 1.9, recorded).
#[test]
fn a_llama3_gguf_keeps_its_rope_scaling_and_its_split() {
    tch::set_num_threads(1);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let dir = golden.join("gguf");
    let e = gguf_golden("llama3_gguf.expected.json");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("llama3");
    spindle_model::convert_gguf(&dir.join("llama3.gguf"), &out, &mut |_, _| {}).unwrap();
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden.join("llama3-rope/config.json")).unwrap()).unwrap();
    let (want, got) = (&fixture["rope_parameters"], &config["rope_scaling"]);
    assert_eq!((got["rope_type"].as_str(), want["rope_type"].as_str()), (Some("llama3"), Some("llama3")));
    for key in ["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"] {
        assert_eq!(got[key].as_f64(), want[key].as_f64(), "{key}");
    }
    assert!(!dir_tensors(&out).contains_key("rope_freqs.weight"), "the tensor is read, not written");
    let model = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
    let logits = model.forward(&recorded_ids(&e["input_ids"]), None).unwrap();
    let diff = (&logits - recorded_logits(&e["logits"])).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "logits differ from transformers' on the fixture by {diff}");
    let tok = spindle_data::Tokenizer::from_file(&out.join("tokenizer.json")).unwrap();
    assert_encodings(&tok, &e["tokenizer"]["encodings"], "llama3");
}

/// The tensors of a Hugging Face directory's safetensors files, by name.
fn dir_tensors(dir: &Path) -> std::collections::BTreeMap<String, Tensor> {
    let mut all = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "safetensors") && !p.ends_with("golden.safetensors") {
            all.extend(Tensor::read_safetensors(&p).unwrap());
        }
    }
    all
}

/// Keeps a converted directory for `tests/golden/check_pruned_in_transformers.py`: a copy with
/// spindle's logits on `input_ids` and spindle's encodings of the sample texts beside it.
fn keep_for_transformers(
    out: &Path,
    keep: &Path,
    input_ids: &serde_json::Value,
    tok: &spindle_data::Tokenizer,
    samples: &serde_json::Value,
) {
    std::fs::create_dir_all(keep).unwrap();
    for entry in std::fs::read_dir(out).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, keep.join(p.file_name().unwrap())).unwrap();
    }
    let ids = recorded_ids(input_ids);
    let logits = Model::open(out, Device::Cpu, Kind::Float).unwrap().forward(&ids, None).unwrap();
    Tensor::write_safetensors(&[("input_ids", &ids), ("logits", &logits)], keep.join("spindle_logits.safetensors")).unwrap();
    let encodings: Vec<serde_json::Value> = samples
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let text = s["text"].as_str().unwrap();
            serde_json::json!({"text": text, "input_ids": tok.encode(text, true).unwrap()})
        })
        .collect();
    std::fs::write(keep.join("spindle_tokens.json"), serde_json::to_string(&encodings).unwrap()).unwrap();
}

/// GGUFs with a SentencePiece vocabulary (`tokenizer.ggml.model = "llama"`) of the llama, gemma2,
/// gemma3 and phi3 architectures, and Mixtral stored as llama (`tests/golden/gguf/make_spm_ggufs.py`:
/// the tiny transformers fixtures as llama.cpp writes them, one matrix in Q8_0), convert into
/// directories that:
/// - hold every tensor of the source fixture, equal bit for bit except the Q8_0 one (within
///   half a Q8_0 step) and Gemma's norms (stored as w + 1: within 1e-7);
/// - tokenize as transformers' tokenizer built from the same GGUF: the whole tokenizer.json
///   (vocabulary, generated merges, added tokens, normalizer, pre-tokenizer, template, decoder)
///   is the recorded one, and every sample encodes and decodes to the recorded ids and text;
/// - give transformers' logits from its own GGUF loader. Gemma's GGUF keys are read as llama.cpp
///   reads them (soft-capping from the file, scores scaled by head_dim^-½, llama.cpp's
///   sliding-layer pattern), where transformers' loader uses its class defaults: those keys are
///   checked against llama.cpp's rule and then set to transformers' values for the logits check.
///   transformers cannot load the Mixtral GGUF at all (SPM.md §5), so its logits are checked
///   against the source fixture's (itself checked against transformers by `families.rs`).
#[test]
fn sentencepiece_ggufs_of_every_family_convert_to_the_fixtures_tokens_and_logits() {
    tch::set_num_threads(1);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden");
    let dir = golden.join("gguf");
    let expected = gguf_golden("spm_ggufs.expected.json");
    let t = tempfile::tempdir().unwrap();
    for (file, q8) in [
        ("llama-spm", "model.layers.1.mlp.down_proj.weight"),
        ("phi3", "model.layers.1.mlp.down_proj.weight"),
        ("gemma2", "model.layers.1.mlp.down_proj.weight"),
        ("gemma3", "model.layers.1.mlp.down_proj.weight"),
        ("mixtral", "model.layers.1.block_sparse_moe.experts.*.w2.weight"),
    ] {
        let e = &expected["files"][file];
        let out = t.path().join(file);
        spindle_model::convert_gguf(&dir.join(format!("{file}.gguf")), &out, &mut |_, _| {}).unwrap();
        let fixture = golden.join(e["fixture"].as_str().unwrap());

        // Tensors against the fixture the GGUF was written from.
        let (got, want) = (dir_tensors(&out), dir_tensors(&fixture));
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{file}: tensor names");
        for (name, w) in &want {
            let g = &got[name];
            assert_eq!(g.size(), w.size(), "{file}: {name}");
            let diff = (g - w).abs().max().double_value(&[]);
            let quantized = q8.split_once('*').map_or(name == q8, |(a, b)| name.starts_with(a) && name.ends_with(b));
            let bound = if quantized {
                // Q8_0: 32 values share one step of max|x|/127; rounding is off by half a step.
                w.abs().max().double_value(&[]) / 254.0 * (1.0 + 1e-6)
            } else if file.starts_with("gemma") && name.ends_with("norm.weight") {
                1e-7
            } else {
                0.0
            };
            assert!(diff <= bound, "{file}: {name} differs by {diff} (allowed {bound})");
        }

        // The tokenizer, as transformers builds it from the GGUF.
        let written: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer.json")).unwrap()).unwrap();
        let recorded = &e["tokenizer"]["tokenizer_json"];
        for part in ["added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"] {
            assert_eq!(written[part], recorded[part], "{file}: tokenizer.json `{part}`");
        }
        let tok = spindle_data::Tokenizer::from_file(&out.join("tokenizer.json")).unwrap();
        for sample in e["tokenizer"]["encodings"].as_array().unwrap() {
            let text = sample["text"].as_str().unwrap();
            let ids: Vec<u32> = serde_json::from_value(sample["input_ids"].clone()).unwrap();
            let plain: Vec<u32> = serde_json::from_value(sample["input_ids_no_special"].clone()).unwrap();
            assert_eq!(tok.encode(text, true).unwrap(), ids, "{file}: {text:?}");
            assert_eq!(tok.encode(text, false).unwrap(), plain, "{file}: {text:?}");
            assert_eq!(tok.decode(&plain, false).unwrap(), sample["decode_no_special"].as_str().unwrap(), "{file}: {text:?}");
        }

        if let Some(keep) = std::env::var_os("SPINDLE_KEEP_CONVERTED").map(PathBuf::from) {
            keep_for_transformers(&out, &keep.join(format!("{file}-gguf")), &e["input_ids"], &tok, &e["tokenizer"]["encodings"]);
        }

        // Logits.
        let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
        let ids = recorded_ids(&e["input_ids"]);
        if file.starts_with("gemma") {
            let layers = if file == "gemma2" { vec!["sliding_attention", "full_attention"] } else { vec!["sliding_attention"; 3] };
            assert_eq!(config["layer_types"], serde_json::json!(layers), "{file}: llama.cpp's layer pattern");
            assert_eq!(config["query_pre_attn_scalar"], 16, "{file}: llama.cpp scales by head_dim^-1/2");
            let fixture_config: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
            for key in ["attn_logit_softcapping", "final_logit_softcapping", "sliding_window", "rope_parameters"] {
                assert_eq!(config[key], fixture_config[key], "{file}: {key} as the GGUF carries it");
            }
            for key in ["attn_logit_softcapping", "final_logit_softcapping", "query_pre_attn_scalar", "layer_types"] {
                config[key] = e["derived_config"][key].clone();
            }
            std::fs::write(out.join("config.json"), config.to_string()).unwrap();
        }
        let model = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
        let logits = model.forward(&ids, None).unwrap();
        let want = if file == "mixtral" {
            Model::open(&fixture, Device::Cpu, Kind::Float).unwrap().forward(&ids, None).unwrap()
        } else {
            recorded_logits(&e["logits"])
        };
        let diff = (&logits - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]);
        // Mixtral differs from its fixture by the Q8_0 rounding of one expert matrix.
        let bound = if file == "mixtral" { 2e-2 } else { 1e-4 * scale.max(1.0) };
        assert!(diff <= bound, "{file}: logits differ by {diff} (allowed {bound})");
        let fixture_class = Model::open(&fixture, Device::Cpu, Kind::Float).unwrap().config().architecture.hf_name();
        assert_eq!(model.config().architecture.hf_name(), fixture_class, "{file}: the family of the fixture");
    }
}

/// A Mixtral GGUF written before llama.cpp stacked the experts (one tensor per expert,
/// `blk.N.ffn_gate.E.weight` and its up/down twins, until April 2024; made from mixtral.gguf by
/// make_mixtral_per_expert_gguf.py) converts to exactly what the stacked file gives: the same
/// tensors bit for bit, the same config and tokenizer. An expert index past `llama.expert_count`
/// is refused naming the tensor.
#[test]
fn a_mixtral_gguf_with_one_tensor_per_expert_converts_like_the_stacked_one() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/gguf");
    let t = tempfile::tempdir().unwrap();
    let (stacked, split) = (t.path().join("stacked"), t.path().join("split"));
    spindle_model::convert_gguf(&dir.join("mixtral.gguf"), &stacked, &mut |_, _| {}).unwrap();
    spindle_model::convert_gguf(&dir.join("mixtral-per-expert.gguf"), &split, &mut |_, _| {}).unwrap();
    let (a, b) = (dir_tensors(&stacked), dir_tensors(&split));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(a.keys().any(|k| k == "model.layers.1.block_sparse_moe.experts.3.w2.weight"), "{:?}", a.keys());
    for (name, x) in &a {
        assert!(x.equal(&b[name]), "{name}");
    }
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(stacked.join(file)).unwrap(), std::fs::read(split.join(file)).unwrap(), "{file}");
    }

    // The same file with expert 3 renamed 9: past the count of 4.
    let mut bytes = std::fs::read(dir.join("mixtral-per-expert.gguf")).unwrap();
    let from = b"blk.0.ffn_gate.3.weight";
    let at = bytes.windows(from.len()).position(|w| w == from).unwrap();
    bytes[at + 15] = b'9';
    let bad = t.path().join("bad.gguf");
    std::fs::write(&bad, &bytes).unwrap();
    let e = spindle_model::convert_gguf(&bad, &t.path().join("bad"), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("tensor `blk.0.ffn_gate.9.weight` names expert 9, but `llama.expert_count` is 4"), "{e}");
    assert!(!t.path().join("bad").exists(), "nothing is left behind");
}
