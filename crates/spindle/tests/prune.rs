//! The sequential pruning pipeline: its wiring (which activations feed which linear's
//! statistics), what it leaves untouched, the exact N:M structure of its output, and its errors,
//! on the tiny golden checkpoint and on the real tiny stories260K model converted from the
//! offline data folder.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spindle::prune::{Allocation, Method, PruneConfig, prune_model};
use spindle_model::{Model, Weights};
use spindle_prune::{ColumnNorms, Pattern};
use tch::{Device, Kind, Tensor};

fn golden_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name)
}

fn calib_ids(n: i64, s: i64, vocab: i64) -> Tensor {
    tch::manual_seed(3);
    Tensor::randint(vocab, [n, s], (Kind::Int64, Device::Cpu))
}

fn cfg(method: Method, pattern: Pattern, true_sequential: bool) -> PruneConfig {
    PruneConfig {
        method,
        pattern,
        allocation: Allocation::Uniform,
        true_sequential,
        layer_errors: true,
        batch_size: 3,
        induce: None,
        reconstruct: None,
    }
}

/// Every tensor of a checkpoint by name.
fn tensors(dir: &Path) -> BTreeMap<String, Tensor> {
    let w = Weights::open(dir).unwrap();
    w.names()
        .map(|n| {
            let shape = w.shape(n).unwrap().to_vec();
            (n.to_owned(), w.load(n, &shape, w.stored_kind(n).unwrap(), Device::Cpu).unwrap())
        })
        .collect()
}

/// The input each linear group of `block` sees when it runs on `h`.
fn group_inputs(model: &Model, block: &spindle_model::Block, h: &Tensor) -> BTreeMap<&'static str, Tensor> {
    let size = h.size();
    let ctx = model.context(size[0], size[1], None);
    let mut seen = BTreeMap::new();
    let _ = block.forward_observed(h, &ctx, &mut |paths, x| {
        seen.insert(paths[0], x.shallow_clone());
    });
    seen
}

fn wanda_mask(w: &Tensor, x: &Tensor) -> Tensor {
    let mut norms = ColumnNorms::new(w.size()[1], Device::Cpu);
    norms.add_batch(x).unwrap();
    spindle_prune::wanda::mask(w, norms.get().unwrap(), Pattern::Unstructured { sparsity: 0.5 }).unwrap()
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.logical_xor(b).sum(Kind::Int64).int64_value(&[]) == 0
}

#[test]
fn statistics_come_from_the_right_activations() {
    tch::set_num_threads(1);
    let dir = golden_dir("llama-gqa");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let ids = calib_ids(6, 16, 128);
    let t = tempfile::tempdir().unwrap();
    for true_sequential in [false, true] {
        let out = t.path().join(format!("wanda-{true_sequential}"));
        let report = prune_model(
            &model,
            Some(&ids),
            &cfg(Method::Wanda, Pattern::Unstructured { sparsity: 0.5 }, true_sequential),
            &out,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(report.linears.len(), 14);
        let pruned = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
        let mut h = model.embed(&ids, None).unwrap();
        for i in 0..2 {
            let dense = model.block(i).unwrap();
            let after = pruned.block(i).unwrap();
            // Non-sequential: every group's statistics come from the dense block on this
            // block's inputs. True-sequential: from the block as pruned so far (a group's own
            // weights never affect its input, so the finished block shows the same inputs).
            let inputs = group_inputs(&model, if true_sequential { &after } else { &dense }, &h);
            for (path, linear) in dense.linears() {
                let group = dense.input_groups().iter().find(|g| g.contains(&path)).unwrap()[0];
                let expected = wanda_mask(&linear.weight, &inputs[group]);
                let got = after.linear(path.rsplit('.').next().unwrap()).unwrap().weight.eq(0.0);
                assert!(same(&got, &expected), "block {i} {path} (true_sequential {true_sequential})");
            }
            // The next block's inputs come from the pruned block.
            let size = h.size();
            h = after.forward(&h, &model.context(size[0], size[1], None));
        }
    }
}

#[test]
fn n_m_runs_leave_exactly_n_nonzeros_per_group_and_nothing_else_changed() {
    tch::set_num_threads(1);
    let dir = golden_dir("llama-gqa");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let ids = calib_ids(4, 16, 128);
    let t = tempfile::tempdir().unwrap();
    let before = tensors(&dir);
    let methods =
        [Method::Magnitude(Default::default()), Method::Wanda, Method::Ria(Default::default()), Method::SparseGpt(Default::default())];
    for (k, method) in methods.into_iter().enumerate() {
        for (n, m) in [(2usize, 4usize), (4, 8)] {
            let out = t.path().join(format!("m{k}-{n}-{m}"));
            let calib = if matches!(method, Method::Magnitude(_)) { None } else { Some(&ids) };
            let r = prune_model(&model, calib, &cfg(method, Pattern::NM { n, m }, false), &out, &mut |_, _| {}).unwrap();
            assert!((r.overall_sparsity - 0.5).abs() < 1e-12, "{method:?} {n}:{m}: {}", r.overall_sparsity);
            for (name, t) in tensors(&out) {
                let is_decoder_linear = name.contains(".layers.") && name.ends_with("_proj.weight");
                if is_decoder_linear {
                    let (o, i) = (t.size()[0], t.size()[1]);
                    let nonzeros = t.ne(0.0).to_kind(Kind::Int64).reshape([o, i / m as i64, m as i64]).sum_dim_intlist(
                        [2i64].as_slice(),
                        false,
                        Kind::Int64,
                    );
                    assert!(bool::try_from(nonzeros.eq(n as i64).all()).unwrap(), "{method:?} {n}:{m} {name}");
                } else {
                    assert!(t.equal(&before[&name]), "{method:?} changed {name}");
                }
            }
        }
    }
}

#[test]
fn bad_requests_fail_before_writing_anything() {
    let dir = golden_dir("llama-gqa");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("never");
    // A calibration-free method runs without ids; Wanda cannot.
    let err =
        prune_model(&model, None, &cfg(Method::Wanda, Pattern::Unstructured { sparsity: 0.5 }, false), &out, &mut |_, _| {}).unwrap_err();
    assert_eq!(err.to_string(), "wanda needs calibration data");
    // N:M whose M does not divide an input dimension (hidden 32, intermediate 64): 3:12.
    let err =
        prune_model(&model, None, &cfg(Method::Magnitude(Default::default()), Pattern::NM { n: 3, m: 12 }, false), &out, &mut |_, _| {})
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "model.layers.0.self_attn.q_proj: 3:12 needs an input dimension divisible by 12, but the weight is [32, 32]"
    );
    let owl = PruneConfig { allocation: Allocation::Owl(Default::default()), ..cfg(Method::Wanda, Pattern::NM { n: 2, m: 4 }, false) };
    let err = prune_model(&model, None, &owl, &out, &mut |_, _| {}).unwrap_err();
    assert!(err.to_string().starts_with("OWL allocates unstructured sparsity per block"), "{err}");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "no output, not even a partial one");
}

#[test]
fn owl_gives_blocks_different_sparsities_around_the_target() {
    tch::set_num_threads(1);
    let dir = golden_dir("llama-gqa");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let ids = calib_ids(4, 16, 128);
    let t = tempfile::tempdir().unwrap();
    let c = PruneConfig {
        allocation: Allocation::Owl(spindle_prune::owl::OwlConfig { m: 2.0, lambda: 0.08 }),
        ..cfg(Method::Wanda, Pattern::Unstructured { sparsity: 0.5 }, false)
    };
    let r = prune_model(&model, Some(&ids), &c, &t.path().join("owl"), &mut |_, _| {}).unwrap();
    let targets: Vec<f64> = r.blocks.iter().map(|b| b.target).collect();
    let ratios: Vec<f64> = r.blocks.iter().map(|b| b.outlier_ratio.unwrap()).collect();
    let expected = spindle_prune::owl::sparsities(&ratios, 0.5, spindle_prune::owl::OwlConfig { m: 2.0, lambda: 0.08 }).unwrap();
    assert_eq!(targets, expected);
    assert!((targets[0] - targets[1]).abs() > 0.1, "two blocks spread over ±λ: {targets:?}");
    assert!(((targets[0] + targets[1]) / 2.0 - 0.5).abs() < 1e-12);
    for l in &r.linears {
        let block: usize = l.name.split('.').nth(2).unwrap().parse().unwrap();
        assert!((l.sparsity - targets[block]).abs() < 0.05, "{} {} vs {}", l.name, l.sparsity, targets[block]);
    }
}

#[test]
fn with_owl_each_block_is_induced_for_its_own_sparsity() {
    // Induction used the global pattern while OWL pruned block i at its own target.
    tch::set_num_threads(1);
    let dir = golden_dir("llama-gqa");
    let model = Model::open(&dir, Device::Cpu, Kind::Float).unwrap();
    let ids = calib_ids(4, 16, 128);
    let t = tempfile::tempdir().unwrap();
    let half = Pattern::Unstructured { sparsity: 0.5 };
    let induce = spindle::induce::InduceConfig {
        distribution: Some(spindle_induce::DistributionConfig {
            scorer: spindle_induce::Scorer::Magnitude,
            pattern: half,
            ..Default::default()
        }),
        refine: None,
        equivalent: None,
        feature: None,
        pruning_aware: spindle_induce::PruningAware::Mask,
        mask: spindle_induce::Scorer::Magnitude,
        pattern: half,
        sites: spindle::induce::SiteChoice::All,
        shift: false,
    };
    let c = PruneConfig {
        allocation: Allocation::Owl(spindle_prune::owl::OwlConfig { m: 2.0, lambda: 0.08 }),
        induce: Some(induce),
        ..cfg(Method::Magnitude(Default::default()), half, false)
    };
    let r = prune_model(&model, Some(&ids), &c, &t.path().join("owl-si"), &mut |_, _| {}).unwrap();
    assert_eq!(r.induction.len(), r.blocks.len());
    for (b, ind) in r.blocks.iter().zip(&r.induction) {
        assert_eq!(ind.pattern, Pattern::Unstructured { sparsity: b.target }, "block {}", b.index);
    }
    assert!((r.blocks[0].target - r.blocks[1].target).abs() > 0.1, "the blocks' targets differ");
}

// ---- The binary, on the real tiny model -------------------------------------------------------

use common::data;

fn spindle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spindle"))
        .args(["--threads", "1", "--data-dir"])
        .arg(data())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn stories(out: &Path) {
    common::convert_stories(Path::new(env!("CARGO_BIN_EXE_spindle")), out);
}

#[test]
fn spindle_prune_writes_a_model_and_a_report() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let m = model.to_str().unwrap();
    let out = t.path().join("pruned");
    let json = t.path().join("report.json");
    let o = spindle(&[
        "prune",
        "--model",
        m,
        "--method",
        "sparsegpt",
        "--pattern",
        "2:4",
        "--nsamples",
        "4",
        "--seqlen",
        "64",
        "--layer-errors",
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("sparsegpt 2:4 over 35 linears in 5 blocks: overall sparsity 0.5000"), "{stdout}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["linears"].as_array().unwrap().len(), 35);
    assert!((r["overall_sparsity"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(r["data"]["windows"].as_array().unwrap().len(), 4);
    assert_eq!(r["config"]["pattern"], serde_json::json!({"n": 2, "m": 4}));
    assert!(r["peak_rss_bytes"].as_u64().unwrap() > 0);
    assert!(r["model_sha256"]["model.safetensors"].as_str().unwrap().len() == 64);
    for l in r["linears"].as_array().unwrap() {
        assert_eq!(l["percdamp"], serde_json::json!(0.01));
        let e = l["rel_error"].as_f64().unwrap();
        assert!(e > 0.0 && e < 1.0, "{l}");
    }
    assert_eq!(r["config"]["layer_errors"], serde_json::json!(true));
    // Options as fields, not Debug strings.
    assert_eq!(r["config"]["method_options"], serde_json::json!({"blocksize": 128, "percdamp": 0.01, "max_percdamp": 1.0}));
    assert_eq!(r["config"]["allocation"], serde_json::json!("uniform"));
    assert_eq!((r["config"]["dtype"].as_str(), r["config"]["device"].as_str()), (Some("float32"), Some("cpu")));
    // The written model loads and runs.
    let pruned = Model::open(&out, Device::Cpu, Kind::Float).unwrap();
    let logits = pruned.forward(&Tensor::from_slice(&[1i64, 5, 9]).view([1, 3]), None).unwrap();
    assert!(bool::try_from(logits.isfinite().all()).unwrap());

    // Pruning in bf16 writes each tensor back in its stored dtype (f32 here).
    let bf = t.path().join("bf16");
    let o = spindle(&[
        "prune",
        "--model",
        m,
        "--method",
        "wanda",
        "--pattern",
        "2:4",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--dtype",
        "bfloat16",
        "--out",
        bf.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let w = Weights::open(&bf).unwrap();
    assert!(w.names().all(|n| w.stored_kind(n) == Some(Kind::Float)));

    // Usage errors: exit 2, one line, nothing written.
    let cases: &[(&[&str], &str)] = &[
        (&["--method", "wanda", "--pattern", "2:x"], "--pattern must be N:M with 0 < N < M (e.g. 2:4), got \"2:x\""),
        (&["--method", "wanda", "--pattern", "4:2"], "--pattern must be N:M with 0 < N < M (e.g. 2:4), got \"4:2\""),
        (&["--method", "wanda", "--sparsity", "1.5"], "prune.sparsity (--sparsity) must be in [0, 1), got 1.5"),
        (
            &["--method", "wanda", "--sparsity", "0.5", "--allocation", "owl", "--pattern", "2:4"],
            "the argument '--sparsity <SPARSITY>' cannot be used with '--pattern <N:M>'",
        ),
        (
            &["--method", "wanda", "--pattern", "2:4", "--allocation", "owl"],
            "prune.allocation (--allocation) owl needs a sparsity, not a pattern (OWL allocates unstructured sparsity per block)",
        ),
        (
            &["--method", "sparsegpt", "--sparsity", "0.5", "--percdamp", "0"],
            "prune.sparsegpt.percdamp (--percdamp) must be positive and finite, got 0",
        ),
    ];
    let fresh = t.path().join("fresh");
    for (extra, msg) in cases {
        let mut args = vec!["prune", "--model", m, "--out", fresh.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = spindle(&args);
        assert_eq!(o.status.code(), Some(2), "{extra:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(msg), "{err}");
        assert!(!fresh.exists());
    }
    // An existing output is refused, and the input is never overwritten.
    let o = spindle(&["prune", "--model", m, "--method", "magnitude", "--sparsity", "0.5", "--out", m]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    // 4:8 cannot divide stories260K's intermediate size (172): a clear error naming the layer.
    let o = spindle(&["prune", "--model", m, "--method", "magnitude", "--pattern", "4:8", "--out", fresh.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model.layers.0.mlp.down_proj: 4:8 needs an input dimension divisible by 8, but the weight is [64, 172]"),
        "{err}"
    );
    assert!(!fresh.exists(), "no partial output");
}

#[test]
fn spindle_induce_writes_an_equivalent_model_a_report_and_plots() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let m = model.to_str().unwrap();
    let out = t.path().join("induced");
    let json = t.path().join("report.json");
    let plots = t.path().join("plots");
    let o = spindle(&[
        "induce",
        "--model",
        m,
        "--target",
        "magnitude",
        "--induce",
        "distribution",
        "--si-sites",
        "all",
        "--si-steps",
        "5",
        "--nsamples",
        "4",
        "--seqlen",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plots",
        plots.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.starts_with("sparsity induction (distribution) over 5 blocks\ndistribution: true importance removed "), "{stdout}");
    // The induced model records what was done, and is no recipe `spindle prune` would run.
    let record = std::fs::read_to_string(out.join("spindle_recipe.toml")).unwrap();
    for line in
        ["[target]\nmethod = \"magnitude\"\nsparsity = 0.5", "stages = [\"distribution\"]", "sites = \"all\"", "steps = 5", "seqlen = 64"]
    {
        assert!(record.contains(line), "{line} in\n{record}");
    }
    let o = spindle(&[
        "prune",
        "--model",
        m,
        "--recipe",
        out.join("spindle_recipe.toml").to_str().unwrap(),
        "--out",
        t.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown field `target`"), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let blocks = r["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 5);
    let sites = blocks[0]["sites"].as_array().unwrap();
    assert_eq!(sites.iter().map(|s| s["label"].as_str().unwrap()).collect::<Vec<_>>(), ["attn_in", "attn_out", "ffn_in", "ffn_out"]);
    for s in sites {
        assert!(s["objective_after"].as_f64().unwrap() <= s["objective_before"].as_f64().unwrap());
        let h = s["histogram"].as_array().unwrap();
        let before: f64 = h[0].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).sum();
        assert!((before - 1.0).abs() < 1e-9, "a histogram holds every weight once");
    }
    assert_eq!(r["config"]["stages"], "distribution");
    assert!(r["data"]["windows"].as_array().unwrap().len() == 4);
    // first, middle, last block: three PNG files
    let files = r["plots"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    for f in files {
        let bytes = std::fs::read(f.as_str().unwrap()).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
    // the induced model scores like the input
    let ppl = |dir: &Path| {
        let j = t.path().join(format!("{}.eval.json", dir.file_name().unwrap().to_str().unwrap()));
        let o = spindle(&[
            "eval",
            "--model",
            dir.to_str().unwrap(),
            "--ppl",
            "wikitext2",
            "--seqlen",
            "64",
            "--max-windows",
            "4",
            "--json",
            j.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
        v["perplexity"]["wikitext2"].as_f64().unwrap()
    };
    let (a, b) = (ppl(&model), ppl(&out));
    assert!((a - b).abs() / a < 1e-4, "{a} vs {b}");
}

#[test]
fn spindle_induce_for_ria_uses_the_alpha_it_is_given() {
    // It used to hard-code alpha 0.5 whatever `spindle prune --ria-alpha` would use.
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let json = t.path().join("r.json");
    let o = spindle(&[
        "induce",
        "--model",
        model.to_str().unwrap(),
        "--target",
        "ria",
        "--ria-alpha",
        "0.25",
        "--induce",
        "distribution",
        "--nsamples",
        "2",
        "--seqlen",
        "32",
        "--out",
        t.path().join("i").to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["config"]["mask"], serde_json::json!({"ria": {"alpha": 0.25}}));
    assert_eq!(r["config"]["distribution"]["scorer"], serde_json::json!({"ria": {"alpha": 0.25}}));
}

/// Every file of a model directory, by name, as bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn the_recipe_a_checkpoint_carries_makes_it_again_bit_for_bit() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let m = model.to_str().unwrap();
    let first = t.path().join("first");
    let json = t.path().join("first.json");
    let o = spindle(&[
        "prune",
        "--model",
        m,
        "--method",
        "wanda",
        "--pattern",
        "2:4",
        "--nsamples",
        "4",
        "--seqlen",
        "32",
        "--seed",
        "7",
        "--induce",
        "distribution,feature",
        "--feature-epochs",
        "1",
        "--snl",
        "nuclear",
        "--reconstruct",
        "--recon-epochs",
        "1",
        "--out",
        first.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let recipe_path = first.join("spindle_recipe.toml");
    let recipe = std::fs::read_to_string(&recipe_path).unwrap();
    for line in [
        "method = \"wanda\"",
        "pattern = \"2:4\"",
        "seqlen = 32",
        "seed = 7",
        "stages = [\"distribution\", \"feature\"]",
        "snl = \"nuclear\"",
    ] {
        assert!(recipe.contains(line), "{line} in\n{recipe}");
    }
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["recipe"]["calibration"]["nsamples"], 4);
    assert_eq!(r["recipe"]["reconstruct"]["epochs"], 1);

    // The saved recipe alone makes the same checkpoint, and --print-recipe shows the same recipe.
    let again = t.path().join("again");
    let o = spindle(&["prune", "--model", m, "--recipe", recipe_path.to_str().unwrap(), "--out", again.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(files(&first), files(&again), "the re-run checkpoint differs");
    let o = spindle(&["prune", "--model", m, "--recipe", recipe_path.to_str().unwrap(), "--print-recipe"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim_end(), recipe.trim_end());

    // A flag beside the recipe overrides its field, and the new checkpoint says so.
    let other = t.path().join("other");
    let o = spindle(&["prune", "--model", m, "--recipe", recipe_path.to_str().unwrap(), "--seed", "8", "--out", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let other_recipe = std::fs::read_to_string(other.join("spindle_recipe.toml")).unwrap();
    assert_eq!(other_recipe, recipe.replace("seed = 7", "seed = 8"));
    let weights = |dir: &Path| files(dir).into_iter().filter(|(n, _)| n.ends_with(".safetensors")).collect::<Vec<_>>();
    assert!(!weights(&first).is_empty());
    assert_ne!(weights(&first), weights(&other), "another seed draws other windows");
}
