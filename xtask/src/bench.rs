//! `cargo xtask bench`: spindle against the Python reference, measured in one run on the same
//! machine with the same thread count, written to `docs/results/bench.md` (and `bench.json`).
//!
//! Every figure comes from a child process timed from spawn to exit, its peak resident memory
//! read from `wait4`'s rusage, so both sides pay for what a user's run pays for (interpreter
//! start, imports, model load, save). The sections, each repeated `--repeats` times with the
//! two sides alternating (medians reported):
//!
//! - **matmul**: the machine's fp32 `torch.mm` rate (`tests/reference/bench_matmul.py`, the same
//!   libtorch build spindle links), the ceiling for the forward's FLOP rate, and the rate of the
//!   model's own linears against M, the tokens of one pass (what batching windows can gain);
//! - **ppl**: perplexity-evaluation throughput, `spindle eval --max-windows K` against
//!   `tests/reference/bench_ppl.py` (transformers); only the window loop is timed on either side,
//!   and spindle's FLOP rate is its tokens/s times the model's FLOPs per token;
//! - **zeroshot**: zero-shot scoring throughput (items/s), `spindle eval --tasks ... --limit N`
//!   against `tests/reference/bench_zeroshot.py` (lm-evaluation-harness 0.4.13's `hf` backend)
//!   on the same model directory, tasks, items, batch size and threads; each side times its own
//!   encoding-and-scoring loop per task, and whole processes are timed too;
//! - **prune**: end-to-end `spindle prune` (load → calibrate → prune → save) against
//!   `tests/reference/prune_reference.py --no-eval --save` (the Wanda repository's code) for
//!   magnitude, Wanda and SparseGPT;
//! - **induce**: `spindle prune --induce distribution,feature` (each pruner's default SI
//!   configuration) next to the plain run, for magnitude, Wanda and SparseGPT: SI's own time, also
//!   per block per calibration window; there is no Python reference for it;
//! - **scaling**: peak memory of both sides' Wanda prune on random-weight Llamas written here as
//!   safetensors, at 1×, 2× and 4× the layers;
//! - **eval-memory**: peak memory of `spindle eval` resident and streamed by layer (`--stream`)
//!   on random-weight bf16 Llamas of a 3B shape, at 1×, 2× and 4× the layers (28: 3.0 B).
//!
//! xtask never links libtorch: the figures are the binaries' and scripts' own JSON, and the
//! random models are written byte by byte.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, libtorch, project_root, read_json, run_echoed};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Section {
    Matmul,
    Ppl,
    Zeroshot,
    Prune,
    Induce,
    Scaling,
    EvalMemory,
}

#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// CPU threads for both sides.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Perplexity windows per measurement.
    #[arg(long, default_value_t = 16)]
    windows: usize,
    /// Tokens per perplexity window.
    #[arg(long, default_value_t = 512)]
    seqlen: usize,
    /// Windows per forward pass on spindle's side of the perplexity figure (`spindle eval
    /// --batch-size`; the perplexity is the same). The reference runs one window at a time, as
    /// the SparseGPT/Wanda loop does.
    #[arg(long, default_value_t = 1)]
    ppl_batch_size: usize,
    /// Zero-shot tasks of the `zeroshot` section, comma-separated.
    #[arg(long, default_value = "arc_easy,hellaswag,piqa")]
    zeroshot_tasks: String,
    /// Items per zero-shot task (the first N of each).
    #[arg(long, default_value_t = 200)]
    zeroshot_limit: usize,
    /// Requests per forward pass on both sides of the `zeroshot` section.
    #[arg(long, default_value_t = 1)]
    zeroshot_batch_size: usize,
    /// Calibration windows of each prune.
    #[arg(long, default_value_t = 8)]
    nsamples: usize,
    /// Tokens per calibration window.
    #[arg(long, default_value_t = 512)]
    calib_seqlen: usize,
    /// Measurements per side and figure (medians are reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Measurements of each Sparsity Induction figure (a run takes minutes).
    #[arg(long, default_value_t = 1)]
    induce_repeats: usize,
    /// Decoder layers of the smallest random model of the scaling curve (then 2× and 4×).
    #[arg(long, default_value_t = 4)]
    scaling_layers: usize,
    /// Decoder layers of the smallest random 3B-shaped bf16 model of the eval-memory curve (then
    /// 2× and 4×: 28 layers is the 3B model).
    #[arg(long, default_value_t = 7)]
    eval_memory_layers: usize,
    /// Only these sections (repeatable; default all). A partial run still writes the report.
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// The model (a directory or a known name).
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// The Python with the pinned reference packages (tests/golden/requirements.txt); default
    /// $SPINDLE_BENCH_PYTHON, else the golden venv in the cache.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Where the report goes (a .json with the same figures is written beside it).
    #[arg(long, default_value = "docs/results/bench.md")]
    out: PathBuf,
}

impl BenchArgs {
    fn wants(&self, s: Section) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

fn python(args: &BenchArgs) -> Result<PathBuf> {
    if let Some(p) = &args.python {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("SPINDLE_BENCH_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = libtorch::cache_dir()?.join("golden-venv/bin/python");
    if venv.is_file() {
        return Ok(venv);
    }
    bail!(
        "no reference Python: create a venv with the pinned packages of tests/golden/requirements.txt \
         (e.g. at {}) or pass --python / set SPINDLE_BENCH_PYTHON",
        venv.display()
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub(crate) fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("unknown").trim().to_owned();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    json!({"cpu": model, "cores": cores})
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One measured child process: wall time from spawn to exit and its peak resident memory.
#[derive(Debug, Clone, Copy)]
struct Measured {
    seconds: f64,
    peak_rss_mb: f64,
}

/// Runs `cmd` to completion with its output in `log`, timing it and reading its peak resident
/// set size from `wait4`. Fails, with the log's tail, when it fails.
fn measure(cmd: &mut Command, log: &Path) -> Result<Measured> {
    let shown = format!("{cmd:?}").replace('"', "");
    eprintln!("$ {shown}");
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let child = cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().with_context(|| format!("could not start {shown}"))?;
    let (status, maxrss_kb) = wait4(child.id())?;
    let seconds = start.elapsed().as_secs_f64();
    if status != 0 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("{shown} failed (wait status {status}); the end of {}:\n{}", log.display(), tail.join("\n"));
    }
    Ok(Measured { seconds, peak_rss_mb: maxrss_kb as f64 / 1024.0 })
}

/// Waits for the child `pid`, returning its wait status and its `ru_maxrss` (KiB on Linux).
/// std's `Child::wait` discards the rusage, and `getrusage(RUSAGE_CHILDREN)` is a maximum over
/// every child so far, so this is the one call that gives each run its own peak.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> Result<(i32, i64)> {
    let pid = libc::pid_t::try_from(pid).context("child pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, so all-zero is a valid value; wait4 writes only into
    // the two out-pointers, which point at live locals of the right types.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("wait4({pid}) failed: {}", std::io::Error::last_os_error());
    }
    Ok((status, usage.ru_maxrss))
}

fn stats(v: &[Measured]) -> Value {
    let secs: Vec<f64> = v.iter().map(|m| m.seconds).collect();
    let rss: Vec<f64> = v.iter().map(|m| m.peak_rss_mb).collect();
    json!({"seconds": secs, "peak_rss_mb": rss, "seconds_median": median(secs.clone()), "peak_rss_mb_median": median(rss.clone())})
}

/// Forward FLOPs per token of a Llama-style config at context `seqlen`: two per weight of every
/// linear (the seven of each block and the LM head), plus the causal attention products
/// (scores and values, 2·2·d_q per earlier key; (seqlen+1)/2 keys on average). Norms,
/// activations and softmax are left out, so the rate derived from it is a lower bound.
pub(crate) fn flops_per_token(config: &Value, seqlen: usize) -> Result<f64> {
    let (block, head) = linear_shapes(config)?;
    let layers = config["num_hidden_layers"].as_f64().context("config.json lacks num_hidden_layers")?;
    let weights = |shapes: &Shapes| shapes.iter().map(|&(o, i)| (o * i) as f64).sum::<f64>();
    // q_proj's outputs: the attention's width.
    let q = block[0].0 as f64;
    let attention = 2.0 * 2.0 * q * (seqlen as f64 + 1.0) / 2.0;
    Ok(layers * (2.0 * weights(&block) + attention) + 2.0 * weights(&head))
}

/// Linear shapes, `(out, in)` each.
type Shapes = Vec<(u64, u64)>;

/// The `(out, in)` of a decoder block's seven linears (q, k, v, o, gate, up, down) and of the LM
/// head, from a Llama-family `config.json`.
pub(crate) fn linear_shapes(config: &Value) -> Result<(Shapes, Shapes)> {
    let get = |k: &str| config[k].as_u64().with_context(|| format!("config.json lacks {k}"));
    let (h, i, vocab, heads) = (get("hidden_size")?, get("intermediate_size")?, get("vocab_size")?, get("num_attention_heads")?);
    let kv = config["num_key_value_heads"].as_u64().unwrap_or(heads);
    let head_dim = config["head_dim"].as_u64().unwrap_or(h / heads.max(1));
    let (q, k) = (heads * head_dim, kv * head_dim);
    Ok((vec![(q, h), (k, h), (k, h), (h, q), (i, h), (i, h), (h, i)], vec![(vocab, h)]))
}

/// A random-weight Llama (the named sizes, `layers` blocks) written as safetensors with a copied
/// tokenizer: the scaling curve's models. Deterministic (a fixed xorshift stream).
/// The shape of a random-weight Llama the bench writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Stored as bf16 (else f32).
    pub bf16: bool,
}

/// The prune scaling curve's shape (about 40 M parameters a layer, f32).
pub(crate) const SMALL: Shape = Shape { hidden: 1024, intermediate: 2816, heads: 16, kv_heads: 4, bf16: false };

/// A 3B-class shape (Llama-3.2-3B's hidden, intermediate and heads; 28 layers give 3.0 B
/// parameters with SmolLM2's 49152-token vocabulary), in bf16.
pub(crate) const LLAMA_3B: Shape = Shape { hidden: 3072, intermediate: 8192, heads: 24, kv_heads: 8, bf16: true };

pub(crate) fn write_random_llama(dir: &Path, layers: usize, tokenizer: &Path) -> Result<u64> {
    write_random_llama_shaped(dir, layers, SMALL, tokenizer)
}

/// The parameters of a random Llama of `shape` and `layers` (tied embeddings, SmolLM2's vocabulary).
pub(crate) fn parameters(shape: Shape, layers: usize) -> u64 {
    let (h, i) = (shape.hidden as u64, shape.intermediate as u64);
    let kv = (shape.kv_heads * (shape.hidden / shape.heads)) as u64;
    let layer = 2 * h + 2 * h * h + 2 * kv * h + 3 * h * i;
    49152 * h + h + layers as u64 * layer
}

/// Writes a random-weight Llama of `shape` and `layers` to `dir` as one safetensors file (with
/// `tokenizer` copied beside it); returns the file's size in bytes.
pub(crate) fn write_random_llama_shaped(dir: &Path, layers: usize, shape: Shape, tokenizer: &Path) -> Result<u64> {
    let Shape { hidden: h, intermediate: inter, heads, kv_heads: kv, bf16 } = shape;
    let vocab = 49152usize;
    let head_dim = h / heads;
    let (dtype, width) = if bf16 { ("BF16", 2usize) } else { ("F32", 4usize) };
    std::fs::create_dir_all(dir)?;
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": h, "intermediate_size": inter, "num_attention_heads": heads, "num_key_value_heads": kv,
        "head_dim": head_dim, "num_hidden_layers": layers, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": true,
        "attention_bias": false, "mlp_bias": false, "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": if bf16 { "bfloat16" } else { "float32" },
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config)? + "\n")?;
    std::fs::copy(tokenizer, dir.join("tokenizer.json")).with_context(|| format!("copying {}", tokenizer.display()))?;
    let mut tensors: Vec<(String, Vec<usize>, bool)> = vec![("model.embed_tokens.weight".into(), vec![vocab, h], false)];
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        tensors.push((format!("{p}.input_layernorm.weight"), vec![h], true));
        tensors.push((format!("{p}.self_attn.q_proj.weight"), vec![heads * head_dim, h], false));
        tensors.push((format!("{p}.self_attn.k_proj.weight"), vec![kv * head_dim, h], false));
        tensors.push((format!("{p}.self_attn.v_proj.weight"), vec![kv * head_dim, h], false));
        tensors.push((format!("{p}.self_attn.o_proj.weight"), vec![h, heads * head_dim], false));
        tensors.push((format!("{p}.post_attention_layernorm.weight"), vec![h], true));
        tensors.push((format!("{p}.mlp.gate_proj.weight"), vec![inter, h], false));
        tensors.push((format!("{p}.mlp.up_proj.weight"), vec![inter, h], false));
        tensors.push((format!("{p}.mlp.down_proj.weight"), vec![h, inter], false));
    }
    tensors.push(("model.norm.weight".into(), vec![h], true));
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, _) in &tensors {
        let bytes = shape.iter().product::<usize>() * width;
        header.insert(name.clone(), json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}));
        offset += bytes;
    }
    let mut header = serde_json::to_string(&Value::Object(header))?.into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let path = dir.join("model.safetensors");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
    f.write_all(&(header.len() as u64).to_le_bytes())?;
    f.write_all(&header)?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = Vec::with_capacity(1 << 20);
    for (_, shape, ones) in &tensors {
        let n: usize = shape.iter().product();
        // Uniform in ±sqrt(3)/sqrt(fan_in): unit-variance outputs, so activations stay finite.
        let scale = 3f32.sqrt() / (*shape.last().unwrap_or(&1) as f32).sqrt();
        for _ in 0..n {
            let v = if *ones {
                1.0f32
            } else {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            };
            if bf16 {
                // Truncated to bf16's top 16 bits: a valid bf16 of about the same value.
                buf.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes());
            } else {
                buf.extend_from_slice(&v.to_le_bytes());
            }
            if buf.len() >= 1 << 20 {
                f.write_all(&buf)?;
                buf.clear();
            }
        }
    }
    f.write_all(&buf)?;
    f.flush()?;
    Ok((8 + header.len() + offset) as u64)
}

pub(crate) fn run(args: &BenchArgs) -> Result<()> {
    if [
        args.repeats,
        args.induce_repeats,
        args.windows,
        args.threads,
        args.nsamples,
        args.scaling_layers,
        args.eval_memory_layers,
        args.zeroshot_limit,
        args.zeroshot_batch_size,
        args.ppl_batch_size,
    ]
    .contains(&0)
    {
        bail!(
            "--repeats, --induce-repeats, --windows, --threads, --nsamples, --scaling-layers, --eval-memory-layers, --zeroshot-limit, \
             --zeroshot-batch-size and --ppl-batch-size must be at least 1"
        );
    }
    if zeroshot_tasks(args).is_empty() {
        bail!("--zeroshot-tasks names no task");
    }
    libtorch::ensure()?;
    run_echoed(cargo().args(["build", "--release", "--quiet", "--package", "spindle"]))?;
    let root = project_root();
    let spindle = crate::release_binary(&root);
    let python = python(args)?;
    let tmp = std::env::temp_dir().join(format!("spindle-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = run_in(args, &root, &spindle, &python, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(args: &BenchArgs, root: &Path, spindle: &Path, python: &Path, tmp: &Path) -> Result<()> {
    let load_before = loadavg();
    let threads = args.threads.to_string();
    let locate = tmp.join("locate.json");
    run_echoed(Command::new(spindle).args(["data", "locate", "--json"]).arg(&locate))?;
    let data_dir = read_json(&locate)?["data_dir"].as_str().unwrap_or_default().to_owned();
    // The model's directory (a known name is converted on first use) and config.
    let inspect = tmp.join("inspect.json");
    run_echoed(Command::new(spindle).args(["inspect", &args.model, "--json"]).arg(&inspect))?;
    let model_dir = read_json(&inspect)?["model"].as_str().context("spindle inspect's JSON lacks model")?.to_owned();
    let config = read_json(&Path::new(&model_dir).join("config.json"))?;
    let py = |script: &str| {
        let mut c = Command::new(python);
        c.arg(root.join("tests/reference").join(script)).env("OMP_NUM_THREADS", &threads).env("HF_HUB_OFFLINE", "1");
        c
    };
    let log = |name: &str| tmp.join(format!("{name}.log"));
    let mut figures = serde_json::Map::new();
    figures.insert("model".into(), json!(args.model));
    figures.insert("threads".into(), json!(args.threads));
    figures.insert("repeats".into(), json!(args.repeats));
    figures.insert("induce_repeats".into(), json!(args.induce_repeats.min(args.repeats)));

    let mut matmul_gflops = None;
    if args.wants(Section::Matmul) {
        let j = tmp.join("matmul.json");
        let m = measure(py("bench_matmul.py").args(["--threads", &threads, "--json"]).arg(&j), &log("matmul"))?;
        let v = read_json(&j)?;
        matmul_gflops = v["gflops"].as_f64();
        figures.insert("matmul".into(), json!({"result": v, "seconds": m.seconds}));
        // The GEMM efficiency against M: the block's seven linears at one to eight windows of
        // `--seqlen` tokens per pass, and the LM head at the 128 positions spindle's evaluation
        // gives it at a time and at whole windows.
        let (block, head) = linear_shapes(&config)?;
        let mut gemm = serde_json::Map::new();
        for (name, shapes, ms) in
            [("block", block, [1, 2, 4, 8].map(|b| b * args.seqlen)), ("head", head, [128, args.seqlen, 4 * args.seqlen, 8 * args.seqlen])]
        {
            let j = tmp.join(format!("gemm-{name}.json"));
            let mut c = py("bench_matmul.py");
            c.args(["--threads", &threads, "--n", "256", "--repeats", "5", "--json"]).arg(&j);
            for (o, i) in &shapes {
                c.arg("--linear").arg(format!("{o},{i}"));
            }
            for m in ms {
                c.arg("--m").arg(m.to_string());
            }
            measure(&mut c, &log(&format!("gemm-{name}")))?;
            gemm.insert(name.into(), read_json(&j)?["linears"].clone());
        }
        figures.insert("gemm_against_m".into(), Value::Object(gemm));
    }

    if args.wants(Section::Ppl) {
        let (windows, seqlen) = (args.windows.to_string(), args.seqlen.to_string());
        let (mut ours, mut theirs, mut ours_m, mut theirs_m) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut ppls = (f64::NAN, f64::NAN);
        for r in 0..args.repeats {
            let j = tmp.join(format!("eval-spindle-{r}.json"));
            ours_m.push(measure(
                Command::new(spindle)
                    .args(["--threads", &threads, "eval", "--model", &args.model, "--ppl", "wikitext2", "--seqlen", &seqlen])
                    .args(["--max-windows", &windows, "--batch-size", &args.ppl_batch_size.to_string(), "--json"])
                    .arg(&j),
                &log("eval-spindle"),
            )?);
            let v = read_json(&j)?;
            ours.push(v["perplexity_timing"]["wikitext2"]["tokens_per_second"].as_f64().context("spindle's JSON lacks tokens_per_second")?);
            ppls.0 = v["perplexity"]["wikitext2"].as_f64().unwrap_or(f64::NAN);
            let j = tmp.join(format!("eval-reference-{r}.json"));
            theirs_m.push(measure(
                py("bench_ppl.py")
                    .args([
                        "--model",
                        &model_dir,
                        "--data",
                        &data_dir,
                        "--seqlen",
                        &seqlen,
                        "--windows",
                        &windows,
                        "--threads",
                        &threads,
                        "--json",
                    ])
                    .arg(&j),
                &log("eval-reference"),
            )?);
            let v = read_json(&j)?;
            theirs.push(v["tokens_per_second"].as_f64().context("the reference's JSON lacks tokens_per_second")?);
            ppls.1 = v["ppl"].as_f64().unwrap_or(f64::NAN);
        }
        let (a, b) = (median(ours.clone()), median(theirs.clone()));
        let fpt = flops_per_token(&config, args.seqlen)?;
        let gflops = a * fpt / 1e9;
        figures.insert(
            "ppl_eval".into(),
            json!({
                "windows": args.windows, "seqlen": args.seqlen, "spindle_batch_size": args.ppl_batch_size,
                "spindle_tokens_per_second": ours, "reference_tokens_per_second": theirs,
                "spindle_median": a, "reference_median": b, "ratio": a / b,
                "ppl_on_these_windows": {"spindle": ppls.0, "reference": ppls.1},
                "spindle_process": stats(&ours_m), "reference_process": stats(&theirs_m),
                "flops_per_token": fpt, "spindle_gflops": gflops, "reference_gflops": b * fpt / 1e9,
                "spindle_share_of_matmul": matmul_gflops.map(|m| gflops / m),
            }),
        );
        println!("perplexity evaluation: spindle {a:.0} tokens/s, transformers {b:.0} tokens/s, ratio {:.2}", a / b);
    }

    if args.wants(Section::Zeroshot) {
        let tasks = zeroshot_tasks(args);
        let (limit, batch) = (args.zeroshot_limit.to_string(), args.zeroshot_batch_size.to_string());
        let joined = tasks.join(",");
        let (mut ours_m, mut theirs_m) = (Vec::new(), Vec::new());
        // Per task: items/s of each run, and the accuracies of the last run.
        let mut ours: Vec<Vec<f64>> = vec![Vec::new(); tasks.len()];
        let mut theirs: Vec<Vec<f64>> = vec![Vec::new(); tasks.len()];
        let mut acc: Vec<(Value, Value)> = vec![(Value::Null, Value::Null); tasks.len()];
        for r in 0..args.repeats {
            let j = tmp.join(format!("zeroshot-spindle-{r}.json"));
            ours_m.push(measure(
                Command::new(spindle)
                    .args([
                        "--threads",
                        &threads,
                        "eval",
                        "--model",
                        &args.model,
                        "--tasks",
                        &joined,
                        "--limit",
                        &limit,
                        "--batch-size",
                        &batch,
                        "--json",
                    ])
                    .arg(&j),
                &log("zeroshot-spindle"),
            )?);
            let v = read_json(&j)?;
            for (k, t) in tasks.iter().enumerate() {
                ours[k].push(
                    v["task_timing"][t]["items_per_second"].as_f64().with_context(|| format!("spindle's JSON lacks task_timing.{t}"))?,
                );
                acc[k].0 = json!({"acc": v["tasks"][t]["acc"], "acc_norm": v["tasks"][t]["acc_norm"], "items": v["tasks"][t]["n"]});
            }
            let j = tmp.join(format!("zeroshot-reference-{r}.json"));
            theirs_m.push(measure(
                py("bench_zeroshot.py")
                    .args([
                        "--model",
                        &model_dir,
                        "--data",
                        &data_dir,
                        "--tasks",
                        &joined,
                        "--limit",
                        &limit,
                        "--threads",
                        &threads,
                        "--batch-size",
                        &batch,
                        "--json",
                    ])
                    .arg(&j)
                    .env("HF_DATASETS_OFFLINE", "1"),
                &log("zeroshot-reference"),
            )?);
            let v = read_json(&j)?;
            for (k, t) in tasks.iter().enumerate() {
                theirs[k]
                    .push(v["tasks"][t]["items_per_second"].as_f64().with_context(|| format!("the reference's JSON lacks tasks.{t}"))?);
                acc[k].1 = json!({"acc": v["tasks"][t]["acc"], "acc_norm": v["tasks"][t]["acc_norm"], "items": v["tasks"][t]["items"]});
            }
        }
        let mut rows = Vec::new();
        for (k, t) in tasks.iter().enumerate() {
            let (a, b) = (median(ours[k].clone()), median(theirs[k].clone()));
            println!("zero-shot {t}: spindle {a:.2} items/s, lm-eval {b:.2} items/s, ratio {:.2}", a / b);
            rows.push(json!({
                "task": t, "spindle_items_per_second": ours[k], "reference_items_per_second": theirs[k],
                "spindle_median": a, "reference_median": b, "ratio": a / b, "target": zeroshot_target(t),
                "accuracy_of_the_last_run": {"spindle": acc[k].0, "reference": acc[k].1},
            }));
        }
        figures.insert(
            "zeroshot".into(),
            json!({
                "limit": args.zeroshot_limit, "batch_size": args.zeroshot_batch_size, "tasks": rows,
                "spindle_process": stats(&ours_m), "reference_process": stats(&theirs_m),
            }),
        );
    }

    let calib = [
        "--nsamples".to_owned(),
        args.nsamples.to_string(),
        "--seqlen".to_owned(),
        args.calib_seqlen.to_string(),
        "--seed".to_owned(),
        "0".to_owned(),
    ];
    // One prune of either side: `cmd` writes its model under `out_flag` and its report as
    // `--json`; the run is measured, the model removed, and the report's phase times returned.
    let timed_prune = |cmd: &mut Command, out_flag: &str, name: &str| -> Result<(Measured, Value)> {
        let (out, j) = (tmp.join(format!("{name}-out")), tmp.join(format!("{name}.json")));
        let _ = std::fs::remove_dir_all(&out);
        let m = measure(cmd.arg(out_flag).arg(&out).arg("--json").arg(&j), &log(name))?;
        let _ = std::fs::remove_dir_all(&out);
        Ok((m, read_json(&j)?["seconds"].clone()))
    };
    let spindle_prune = |model: &str, method: &str, extra: &[&str], name: &str| {
        timed_prune(
            Command::new(spindle)
                .args(["--threads", &threads, "prune", "--model", model, "--method", method, "--sparsity", "0.5"])
                .args(&calib)
                .args(extra),
            "--out",
            name,
        )
    };
    let reference_prune = |model: &str, method: &str, name: &str| {
        timed_prune(
            py("prune_reference.py")
                .args(["--model", model, "--data", &data_dir, "--method", method, "--sparsity", "0.5", "--threads", &threads, "--no-eval"])
                .args(&calib),
            "--save",
            name,
        )
    };

    if args.wants(Section::Prune) {
        let mut rows = Vec::new();
        for method in ["magnitude", "wanda", "sparsegpt"] {
            let (mut ours, mut theirs, mut phases) = (Vec::new(), Vec::new(), (Value::Null, Value::Null));
            for _ in 0..args.repeats {
                let (m, p) = spindle_prune(&model_dir, method, &[], &format!("prune-{method}-spindle"))?;
                ours.push(m);
                phases.0 = p;
                let (m, p) = reference_prune(&model_dir, method, &format!("prune-{method}-reference"))?;
                theirs.push(m);
                phases.1 = p;
            }
            let (a, b) = (stats(&ours), stats(&theirs));
            let ratio = |k: &str| a[k].as_f64().unwrap_or(f64::NAN) / b[k].as_f64().unwrap_or(f64::NAN);
            println!("prune {method}: wall ratio {:.2}, peak memory ratio {:.2}", ratio("seconds_median"), ratio("peak_rss_mb_median"));
            rows.push(json!({
                "method": method, "spindle": a.clone(), "reference": b.clone(),
                "phases_of_the_last_run": {"spindle": phases.0, "reference": phases.1},
                "wall_ratio": ratio("seconds_median"), "memory_ratio": ratio("peak_rss_mb_median"),
            }));
        }
        figures.insert("prune".into(), Value::Array(rows));
    }

    if args.wants(Section::Induce) {
        let mut rows = Vec::new();
        let layers = config["num_hidden_layers"].as_u64().context("config.json lacks num_hidden_layers")? as f64;
        // `distribution,feature` with every other option at its default: the distribution stage
        // is skipped for Wanda and SparseGPT (it cannot move their selection), so this is each
        // pruner's default SI configuration.
        for method in ["magnitude", "wanda", "sparsegpt"] {
            let (mut plain, mut si) = (Vec::new(), Vec::new());
            for _ in 0..args.induce_repeats {
                plain.push(spindle_prune(&model_dir, method, &[], &format!("induce-{method}-plain"))?.0);
                si.push(spindle_prune(&model_dir, method, &["--induce", "distribution,feature"], &format!("induce-{method}-si"))?.0);
            }
            let (a, b) = (stats(&si), stats(&plain));
            let extra = a["seconds_median"].as_f64().unwrap_or(f64::NAN) - b["seconds_median"].as_f64().unwrap_or(f64::NAN);
            let per_block_window = extra / (layers * args.nsamples as f64);
            println!(
                "prune {method} + SI: {extra:.1} s more than the plain prune ({per_block_window:.3} s per block per calibration window)"
            );
            rows.push(json!({"method": method, "si": a, "plain": b, "si_extra_seconds": extra, "si_seconds_per_block_per_window": per_block_window}));
        }
        figures.insert("induce".into(), Value::Array(rows));
    }

    if args.wants(Section::Scaling) {
        let tokenizer = Path::new(&model_dir).join("tokenizer.json");
        let mut points = Vec::new();
        for mult in [1, 2, 4] {
            let layers = args.scaling_layers * mult;
            let dir = tmp.join(format!("random-{layers}"));
            let bytes = write_random_llama(&dir, layers, &tokenizer)?;
            let dir_s = dir.to_string_lossy().into_owned();
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for _ in 0..args.induce_repeats.min(args.repeats) {
                ours.push(spindle_prune(&dir_s, "wanda", &[], &format!("scaling-{layers}-spindle"))?.0);
                theirs.push(reference_prune(&dir_s, "wanda", &format!("scaling-{layers}-reference"))?.0);
            }
            let _ = std::fs::remove_dir_all(&dir);
            let (a, b) = (stats(&ours), stats(&theirs));
            println!(
                "scaling {layers} layers ({:.0} MB of weights): peak memory spindle {:.0} MB, reference {:.0} MB",
                bytes as f64 / 1048576.0,
                a["peak_rss_mb_median"].as_f64().unwrap_or(f64::NAN),
                b["peak_rss_mb_median"].as_f64().unwrap_or(f64::NAN)
            );
            points.push(json!({"layers": layers, "weights_mb": bytes as f64 / 1048576.0, "spindle": a, "reference": b}));
        }
        figures.insert("scaling".into(), json!({"method": "wanda", "hidden_size": 1024, "intermediate_size": 2816, "points": points}));
    }

    if args.wants(Section::EvalMemory) {
        let tokenizer = Path::new(&model_dir).join("tokenizer.json");
        let mut points = Vec::new();
        for mult in [1, 2, 4] {
            let layers = args.eval_memory_layers * mult;
            let dir = tmp.join(format!("random-3b-{layers}"));
            let bytes = write_random_llama_shaped(&dir, layers, LLAMA_3B, &tokenizer)?;
            let dir_s = dir.to_string_lossy().into_owned();
            let mut point = json!({"layers": layers, "parameters": parameters(LLAMA_3B, layers), "weights_mb": bytes as f64 / 1048576.0});
            for (mode, flag) in [("resident", None), ("streamed", Some("--stream"))] {
                let mut runs = Vec::new();
                for r in 0..args.induce_repeats.min(args.repeats) {
                    let j = tmp.join(format!("evalmem-{layers}-{mode}-{r}.json"));
                    let mut cmd = Command::new(spindle);
                    cmd.args(["--threads", &threads, "eval", "--model", &dir_s, "--ppl", "wikitext2", "--seqlen", "128"])
                        .args(["--max-windows", "1", "--dtype", "model", "--json"])
                        .arg(&j)
                        .args(flag);
                    runs.push(measure(&mut cmd, &log(&format!("evalmem-{layers}-{mode}")))?);
                    let v = read_json(&j)?;
                    if v["config"]["residence"].as_str() != Some(mode) {
                        bail!("the {mode} eval of {layers} layers ran {}", v["config"]["residence"]);
                    }
                    point[format!("{mode}_ppl")] = v["perplexity"]["wikitext2"].clone();
                }
                point[mode] = stats(&runs);
            }
            let _ = std::fs::remove_dir_all(&dir);
            println!(
                "eval memory {layers} layers ({:.0} MB of bf16 weights): peak resident {:.0} MB, streamed {:.0} MB",
                bytes as f64 / 1048576.0,
                f64_of(&point["resident"]["peak_rss_mb_median"]),
                f64_of(&point["streamed"]["peak_rss_mb_median"]),
            );
            points.push(point);
        }
        figures.insert(
            "eval_memory".into(),
            json!({"hidden_size": LLAMA_3B.hidden, "intermediate_size": LLAMA_3B.intermediate, "heads": LLAMA_3B.heads,
                   "kv_heads": LLAMA_3B.kv_heads, "dtype": "bfloat16", "seqlen": 128, "windows": 1, "points": points}),
        );
    }

    let mut command = format!(
        "cargo xtask bench --threads {} --windows {} --seqlen {} --ppl-batch-size {} --zeroshot-tasks {} --zeroshot-limit {} --zeroshot-batch-size {} \
         --nsamples {} --calib-seqlen {} --repeats {} --induce-repeats {} --scaling-layers {} --eval-memory-layers {}",
        args.threads,
        args.windows,
        args.seqlen,
        args.ppl_batch_size,
        args.zeroshot_tasks,
        args.zeroshot_limit,
        args.zeroshot_batch_size,
        args.nsamples,
        args.calib_seqlen,
        args.repeats,
        args.induce_repeats,
        args.scaling_layers,
        args.eval_memory_layers
    );
    for s in &args.only {
        // The flag's own spelling (eval-memory), so the command reruns as written.
        let name = clap::ValueEnum::to_possible_value(s).map_or_else(|| format!("{s:?}").to_lowercase(), |v| v.get_name().to_owned());
        command += &format!(" --only {name}");
    }
    figures.insert("command".into(), json!(command));
    figures.insert("machine".into(), machine());
    figures.insert("load_average_before".into(), json!(load_before));
    figures.insert("load_average_after".into(), json!(loadavg()));
    let figures = Value::Object(figures);
    let out = root.join(&args.out);
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(&out.with_extension("json"), &(serde_json::to_string_pretty(&figures)? + "\n"))?;
    let previous = std::fs::read_to_string(&out).unwrap_or_default();
    write_atomic(&out, &(report(&figures) + kept_reading(&previous)))?;
    println!("wrote {}", out.display());
    Ok(())
}

/// The hand-written part of a report (from [`READING_MARKER`] on), which a rerun keeps: the
/// reading of the figures, the causes of the gaps.
const READING_MARKER: &str = "<!-- reading: kept by cargo xtask bench -->";

fn kept_reading(previous: &str) -> &str {
    previous.find(READING_MARKER).map_or("", |i| &previous[i..])
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn list(v: &Value, digits: usize) -> String {
    v.as_array().map(|a| a.iter().map(|x| format!("{:.*}", digits, f64_of(x))).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

fn zeroshot_tasks(args: &BenchArgs) -> Vec<String> {
    args.zeroshot_tasks.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned).collect()
}

/// The items/s ratio spindle / lm-eval a zero-shot task is held to (issue #22): sharing the
/// question's encoding pays most where the context is long against the choices (ARC's question,
/// HellaSwag's passage) and least on PIQA, whose two solutions are long against the goal.
fn zeroshot_target(task: &str) -> Option<f64> {
    match task {
        "arc_easy" | "hellaswag" => Some(2.0),
        "piqa" => Some(1.3),
        _ => None,
    }
}

/// Whether a measured ratio meets its target, as the report writes it.
fn verdict(ratio: f64, target: f64, at_least: bool) -> &'static str {
    let met = if at_least { ratio >= target } else { ratio <= target };
    if met { "met" } else { "**not met**" }
}

/// The Markdown report of a bench run's figures (the JSON beside it holds every measurement).
pub(crate) fn report(f: &Value) -> String {
    let mut s = String::from("# Benchmarks\n\n");
    s += &format!(
        "Written by `{}` (this file and `bench.json` beside it, which holds every measurement). Both sides \
         run on the same machine in the same invocation with the same thread count ({}), alternating; each \
         figure is the median of {} runs ({} for Sparsity Induction and the scaling curve). Every process is timed from spawn to exit and its peak resident \
         memory read from `wait4`.\n\n\
         Machine: {}, {} cores. Load average before / after: {} / {} (a busy machine slows both sides; \
         the ratios are what the run compares).\n\n",
        f["command"].as_str().unwrap_or_default(),
        f["threads"],
        f["repeats"],
        f["induce_repeats"],
        f["machine"]["cpu"].as_str().unwrap_or_default(),
        f["machine"]["cores"],
        f["load_average_before"].as_str().unwrap_or_default(),
        f["load_average_after"].as_str().unwrap_or_default(),
    );
    let matmul = f["matmul"]["result"]["gflops"].as_f64();
    if let Some(m) = matmul {
        let sizes = f["matmul"]["result"]["sizes"].as_object().map(|o| {
            o.iter()
                .map(|(n, v)| format!("{n}×{n}: median {:.1}, best {:.1}", f64_of(&v["median"]), f64_of(&v["best"])))
                .collect::<Vec<_>>()
                .join("; ")
        });
        s += &format!(
            "## The machine's matmul rate\n\n`tests/reference/bench_matmul.py`: fp32 `torch.mm` of square matrices \
             with the libtorch spindle links: **{m:.1} GFLOP/s** ({} GFLOP/s).\n\n",
            sizes.unwrap_or_default()
        );
    }
    let g = &f["gemm_against_m"];
    if g.is_object() {
        s += "### The GEMM efficiency against M\n\n`F.linear(x, w)` with `x` `[M, in]`: the set of a decoder block's seven linears \
              (q, k, v, o, gate, up, down: FLOPs summed over the set, as a forward pass weighs them) and the LM head, \
              median of 5 passes. M is the tokens of one pass: one window, or several batched (`spindle eval --batch-size`); \
              spindle's evaluation gives the head 128 positions at a time.\n\n| M | block linears GFLOP/s | share of the matmul rate | LM head GFLOP/s |\n|---:|---:|---:|---:|\n";
        // Every M either set measured, in numeric order.
        let ms: std::collections::BTreeMap<u64, &str> = ["block", "head"]
            .iter()
            .filter_map(|part| g[*part]["m"].as_object())
            .flat_map(|o| o.keys())
            .filter_map(|m| Some((m.parse::<u64>().ok()?, m.as_str())))
            .collect();
        let cell = |part: &str, m: &str| g[part]["m"][m]["median"].as_f64().map_or("–".to_owned(), |v| format!("{v:.1}"));
        for m in ms.values() {
            let share = match (g["block"]["m"][*m]["median"].as_f64(), matmul) {
                (Some(b), Some(mm)) => format!("{:.0}%", b / mm * 100.0),
                _ => "–".to_owned(),
            };
            s += &format!("| {m} | {} | {share} | {} |\n", cell("block", m), cell("head", m));
        }
        s += "\n";
    }
    let p = &f["ppl_eval"];
    if p.is_object() {
        let ratio = f64_of(&p["ratio"]);
        s += &format!(
            "## Perplexity evaluation (WikiText-2, fp32, CPU)\n\n\
             {} windows of {} tokens of {}, spindle at {} window(s) per forward pass; only the window loop is timed \
             (model load and tokenization excluded on both sides). The reference is `tests/reference/bench_ppl.py`: \
             transformers with its default attention (sdpa), the SparseGPT/Wanda loop, one window at a time.\n\n\
             | | tokens/s (median) | runs | process peak memory (MB) |\n|---|---:|---|---:|\n\
             | spindle | {:.0} | {} | {:.0} |\n| transformers | {:.0} | {} | {:.0} |\n\
             | **ratio spindle / transformers** | **{ratio:.2}** (target ≥ 1.3: {}) | | {:.2} |\n\n\
             Perplexity over these windows: spindle {:.4}, transformers {:.4}.\n\n",
            p["windows"],
            p["seqlen"],
            f["model"].as_str().unwrap_or_default(),
            p["spindle_batch_size"].as_u64().unwrap_or(1),
            f64_of(&p["spindle_median"]),
            list(&p["spindle_tokens_per_second"], 0),
            f64_of(&p["spindle_process"]["peak_rss_mb_median"]),
            f64_of(&p["reference_median"]),
            list(&p["reference_tokens_per_second"], 0),
            f64_of(&p["reference_process"]["peak_rss_mb_median"]),
            verdict(ratio, 1.3, true),
            f64_of(&p["spindle_process"]["peak_rss_mb_median"]) / f64_of(&p["reference_process"]["peak_rss_mb_median"]),
            f64_of(&p["ppl_on_these_windows"]["spindle"]),
            f64_of(&p["ppl_on_these_windows"]["reference"]),
        );
        s += &format!(
            "Forward FLOP rate: {:.1} MFLOP per token (every linear's 2·weights, the LM head and causal attention; \
             norms and softmax left out) gives spindle **{:.1} GFLOP/s** and transformers {:.1} GFLOP/s",
            f64_of(&p["flops_per_token"]) / 1e6,
            f64_of(&p["spindle_gflops"]),
            f64_of(&p["reference_gflops"]),
        );
        match p["spindle_share_of_matmul"].as_f64() {
            Some(share) => {
                s += &format!(", **{:.0}%** of the matmul rate (target ≥ 60%: {}).\n\n", share * 100.0, verdict(share, 0.6, true))
            }
            None => s += ".\n\n",
        }
    }
    let z = &f["zeroshot"];
    if let Some(rows) = z["tasks"].as_array() {
        s += &format!(
            "## Zero-shot scoring (lm-eval tasks, fp32, CPU)\n\n\
             The first {} items of each task, zero-shot, batch size {} on both sides: `spindle eval --tasks` \
             (its default shared-prefix scoring: the choices of a question share one pass over their common \
             tokens) against `tests/reference/bench_zeroshot.py`, lm-evaluation-harness 0.4.13's `hf` backend \
             (HFLM, its defaults: logits cache on, transformers' default attention) on the same model directory \
             and the same local task data. Each side times its own loop per task (encoding and scoring the \
             requests; model load, dataset reading and request building excluded on both sides).\n\n\
             | task | spindle items/s (runs) | lm-eval items/s (runs) | **ratio** | target | acc spindle / lm-eval |\n\
             |---|---:|---:|---:|---|---|\n",
            z["limit"], z["batch_size"],
        );
        for r in rows {
            let ratio = f64_of(&r["ratio"]);
            let target = match r["target"].as_f64() {
                Some(t) => format!("≥ {t}: {}", verdict(ratio, t, true)),
                None => "none".to_owned(),
            };
            let acc = |v: &Value| v["acc"].as_f64().map_or("-".to_owned(), |a| format!("{a:.3}"));
            s += &format!(
                "| {} | {:.2} ({}) | {:.2} ({}) | **{ratio:.2}** | {target} | {} / {} |\n",
                r["task"].as_str().unwrap_or_default(),
                f64_of(&r["spindle_median"]),
                list(&r["spindle_items_per_second"], 2),
                f64_of(&r["reference_median"]),
                list(&r["reference_items_per_second"], 2),
                acc(&r["accuracy_of_the_last_run"]["spindle"]),
                acc(&r["accuracy_of_the_last_run"]["reference"]),
            );
        }
        s += &format!(
            "\nWhole processes (all tasks, from spawn to exit): spindle {:.1} s ({}), lm-eval {:.1} s ({}); \
             peak memory {:.0} MB and {:.0} MB.\n\n",
            f64_of(&z["spindle_process"]["seconds_median"]),
            list(&z["spindle_process"]["seconds"], 1),
            f64_of(&z["reference_process"]["seconds_median"]),
            list(&z["reference_process"]["seconds"], 1),
            f64_of(&z["spindle_process"]["peak_rss_mb_median"]),
            f64_of(&z["reference_process"]["peak_rss_mb_median"]),
        );
    }
    if let Some(rows) = f["prune"].as_array() {
        s += "## End-to-end prune (load → calibrate → prune → save), 50% unstructured\n\n\
              `spindle prune` against `tests/reference/prune_reference.py --no-eval --save` (the Wanda \
              repository's code on transformers, fp32), the same model, calibration windows and threads; \
              whole processes (interpreter start and imports included on the reference's side).\n\n\
              | method | spindle s | reference s | **wall ratio** (target ≤ 0.7) | spindle MB | reference MB | **memory ratio** (target ≤ 0.5) |\n\
              |---|---:|---:|---:|---:|---:|---:|\n";
        for r in rows {
            let method = r["method"].as_str().unwrap_or_default();
            let (w, m) = (f64_of(&r["wall_ratio"]), f64_of(&r["memory_ratio"]));
            s += &format!(
                "| {method} | {:.1} ({}) | {:.1} ({}) | **{w:.2}** {} | {:.0} | {:.0} | **{m:.2}** {} |\n",
                f64_of(&r["spindle"]["seconds_median"]),
                list(&r["spindle"]["seconds"], 1),
                f64_of(&r["reference"]["seconds_median"]),
                list(&r["reference"]["seconds"], 1),
                verdict(w, 0.7, false),
                f64_of(&r["spindle"]["peak_rss_mb_median"]),
                f64_of(&r["reference"]["peak_rss_mb_median"]),
                verdict(m, 0.5, false),
            );
        }
        s += "\nWhere the time goes (each side's own report of its last run, seconds):\n\n";
        for r in rows {
            let phases = |v: &Value| {
                v.as_object()
                    .map(|o| o.iter().map(|(k, x)| format!("{k} {:.1}", f64_of(x))).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            s += &format!(
                "- {}: spindle {}; reference {}\n",
                r["method"].as_str().unwrap_or_default(),
                phases(&r["phases_of_the_last_run"]["spindle"]),
                phases(&r["phases_of_the_last_run"]["reference"]),
            );
        }
        s += "\n";
    }
    if let Some(rows) = f["induce"].as_array() {
        s += "## Sparsity Induction's time\n\n`spindle prune --induce distribution,feature` (each pruner's default SI \
              configuration; the distribution stage is skipped for Wanda and SparseGPT) next to the same prune without it. \
              SI's own time is the difference, also per block per calibration window. There is no Python reference for SI.\n\n\
              | method | plain s | + SI s | SI's own s | SI s per block per window | SI's share | plain MB | + SI MB |\n\
              |---|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in rows {
            let method = r["method"].as_str().unwrap_or_default();
            let (a, b) = (f64_of(&r["plain"]["seconds_median"]), f64_of(&r["si"]["seconds_median"]));
            s += &format!(
                "| {method} | {a:.1} | {b:.1} | {:.1} | {:.3} | {:.0}% | {:.0} | {:.0} |\n",
                b - a,
                f64_of(&r["si_seconds_per_block_per_window"]),
                (b - a) / b * 100.0,
                f64_of(&r["plain"]["peak_rss_mb_median"]),
                f64_of(&r["si"]["peak_rss_mb_median"]),
            );
        }
        s += "\n";
    }
    if let Some(points) = f["scaling"]["points"].as_array() {
        s += &format!(
            "## Peak memory against depth\n\nRandom-weight Llamas (hidden {}, intermediate {}, 16 heads, 4 KV heads, \
             SmolLM2's tokenizer and vocabulary) written as safetensors by the bench, pruned with Wanda by both sides.\n\n\
             | layers | weights MB | spindle peak MB | reference peak MB | spindle s | reference s |\n|---:|---:|---:|---:|---:|---:|\n",
            f["scaling"]["hidden_size"], f["scaling"]["intermediate_size"],
        );
        for p in points {
            s += &format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |\n",
                p["layers"],
                f64_of(&p["weights_mb"]),
                f64_of(&p["spindle"]["peak_rss_mb_median"]),
                f64_of(&p["reference"]["peak_rss_mb_median"]),
                f64_of(&p["spindle"]["seconds_median"]),
                f64_of(&p["reference"]["seconds_median"]),
            );
        }
        s += "\n";
    }
    if let Some(points) = f["eval_memory"]["points"].as_array() {
        s += &format!(
            "## Evaluation peak memory against depth\n\nRandom-weight Llamas of a 3B shape (hidden {}, intermediate {}, {} heads, {} KV heads, \
             SmolLM2's 49152-token vocabulary; 28 layers are 3.0 B parameters) written in bf16 by the bench, evaluated in bf16 on one \
             WikiText-2 window of {} tokens by `spindle eval`, with every block resident and streamed by layer (`--stream`).\n\n\
             | layers | parameters (B) | weights MB | resident peak MB | streamed peak MB | resident s | streamed s |\n|---:|---:|---:|---:|---:|---:|---:|\n",
            f["eval_memory"]["hidden_size"],
            f["eval_memory"]["intermediate_size"],
            f["eval_memory"]["heads"],
            f["eval_memory"]["kv_heads"],
            f["eval_memory"]["seqlen"],
        );
        for p in points {
            s += &format!(
                "| {} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} |\n",
                p["layers"],
                f64_of(&p["parameters"]) / 1e9,
                f64_of(&p["weights_mb"]),
                f64_of(&p["resident"]["peak_rss_mb_median"]),
                f64_of(&p["streamed"]["peak_rss_mb_median"]),
                f64_of(&p["resident"]["seconds_median"]),
                f64_of(&p["streamed"]["seconds_median"]),
            );
        }
        s += "\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smollm2_flops_per_token_counts_every_linear_the_head_and_causal_attention() {
        let c = json!({"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "vocab_size": 49152,
            "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64});
        // Per block: q 576², k and v 576·192 each, o 576², three MLP 576·1536; the head 576·49152.
        let linears = 30.0 * 2.0 * (2.0 * 576.0 * 576.0 + 2.0 * 576.0 * 192.0 + 3.0 * 576.0 * 1536.0);
        // Scores and values: 2·2·576 FLOPs per earlier key, 256.5 keys on average at 512.
        let attention = 30.0 * 4.0 * 576.0 * 256.5;
        let head = 2.0 * 576.0 * 49152.0;
        let got = flops_per_token(&c, 512).unwrap();
        assert!((got / (linears + attention + head) - 1.0).abs() < 1e-12, "{got}");
        assert!(format!("{:#}", flops_per_token(&json!({}), 512).unwrap_err()).contains("hidden_size"));
    }

    #[test]
    fn the_random_llama_is_a_valid_safetensors_file_of_the_named_layers() {
        let dir = std::env::temp_dir().join(format!("xtask-random-llama-{}", std::process::id()));
        let tok = std::env::temp_dir().join(format!("xtask-random-llama-tok-{}", std::process::id()));
        std::fs::write(&tok, "{}").unwrap();
        let bytes = write_random_llama(&dir, 1, &tok).unwrap();
        let data = std::fs::read(dir.join("model.safetensors")).unwrap();
        assert_eq!(data.len() as u64, bytes);
        let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&data[8..8 + n]).unwrap();
        let h = header.as_object().unwrap();
        assert_eq!(h.len(), 1 + 9 + 1, "embeddings, one block's nine tensors, the final norm");
        let end = h.values().map(|t| t["data_offsets"][1].as_u64().unwrap()).max().unwrap() as usize;
        assert_eq!(8 + n + end, data.len());
        let config = read_json(&dir.join("config.json")).unwrap();
        assert_eq!(config["num_hidden_layers"], 1);
        // The norm is ones; the weights are bounded by sqrt(3/fan_in) and not constant.
        let t = &h["model.layers.0.input_layernorm.weight"];
        let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
        assert_eq!(f32::from_le_bytes(data[at..at + 4].try_into().unwrap()), 1.0);
        let t = &h["model.layers.0.self_attn.q_proj.weight"];
        let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
        let w: Vec<f32> = data[at..at + 4096].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let bound = (3.0f32 / 1024.0).sqrt();
        assert!(w.iter().all(|v| v.abs() <= bound) && w.iter().any(|v| *v != w[0]));
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&tok).unwrap();
    }

    #[test]
    fn bf16_models_are_written_as_bf16_and_the_3b_shape_is_three_billion_parameters() {
        let dir = std::env::temp_dir().join(format!("xtask-random-bf16-{}", std::process::id()));
        let tok = std::env::temp_dir().join(format!("xtask-random-bf16-tok-{}", std::process::id()));
        std::fs::write(&tok, "{}").unwrap();
        let tiny = Shape { hidden: 64, intermediate: 128, heads: 4, kv_heads: 2, bf16: true };
        let bytes = write_random_llama_shaped(&dir, 2, tiny, &tok).unwrap();
        let data = std::fs::read(dir.join("model.safetensors")).unwrap();
        assert_eq!(data.len() as u64, bytes);
        let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
        let header: Value = serde_json::from_slice(&data[8..8 + n]).unwrap();
        let params: u64 = header
            .as_object()
            .unwrap()
            .values()
            .map(|t| t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product::<u64>())
            .sum();
        assert!(header.as_object().unwrap().values().all(|t| t["dtype"] == "BF16"));
        assert_eq!(8 + n as u64 + 2 * params, bytes);
        assert_eq!(params, parameters(tiny, 2));
        assert_eq!(read_json(&dir.join("config.json")).unwrap()["torch_dtype"], "bfloat16");
        // The norm is ones (0x3F80 in bf16).
        let t = &header["model.layers.0.input_layernorm.weight"];
        let at = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
        assert_eq!(u16::from_le_bytes(data[at..at + 2].try_into().unwrap()), 0x3F80);
        let total = parameters(LLAMA_3B, 28);
        assert!((2.95e9..3.05e9).contains(&(total as f64)), "{total} parameters at 28 layers");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_file(&tok).unwrap();
    }

    #[test]
    fn a_rerun_keeps_the_hand_written_reading_and_nothing_else() {
        let old = format!("# Benchmarks\n\nold figures\n\n{READING_MARKER}\n\n## Reading\n\nwhy\n");
        assert_eq!(kept_reading(&old), format!("{READING_MARKER}\n\n## Reading\n\nwhy\n"));
        assert_eq!(kept_reading("# Benchmarks\n\nold figures\n"), "");
    }

    #[test]
    fn the_gemm_table_lists_smollm2s_linears_and_every_m_of_either_set() {
        let c = json!({"hidden_size": 576, "intermediate_size": 1536, "vocab_size": 49152,
            "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64});
        let (block, head) = linear_shapes(&c).unwrap();
        assert_eq!(block, vec![(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]);
        assert_eq!(head, vec![(49152, 576)]);
        assert!(format!("{:#}", linear_shapes(&json!({"hidden_size": 8})).unwrap_err()).contains("intermediate_size"));
        let f = json!({"matmul": {"result": {"gflops": 100.0, "sizes": {}}},
            "gemm_against_m": {"block": {"m": {"512": {"median": 80.0}, "2048": {"median": 90.0}}},
                               "head": {"m": {"128": {"median": 70.0}, "512": {"median": 85.0}}}}});
        let text = report(&f);
        assert!(text.contains("| 128 | – | – | 70.0 |\n| 512 | 80.0 | 80% | 85.0 |\n| 2048 | 90.0 | 90% | – |\n"), "{text}");
    }

    #[test]
    fn the_zeroshot_section_reports_each_task_against_its_target() {
        let row = |task: &str, ours: f64, theirs: f64| {
            json!({"task": task, "spindle_items_per_second": [ours], "reference_items_per_second": [theirs],
                "spindle_median": ours, "reference_median": theirs, "ratio": ours / theirs, "target": zeroshot_target(task),
                "accuracy_of_the_last_run": {"spindle": {"acc": 0.5}, "reference": {"acc": 0.5}}})
        };
        let f = json!({"zeroshot": {"limit": 200, "batch_size": 1,
            "tasks": [row("arc_easy", 10.0, 4.0), row("piqa", 5.0, 4.0), row("boolq", 3.0, 1.0)],
            "spindle_process": {"seconds": [60.0], "seconds_median": 60.0, "peak_rss_mb_median": 700.0},
            "reference_process": {"seconds": [90.0], "seconds_median": 90.0, "peak_rss_mb_median": 1500.0}}});
        let text = report(&f);
        assert!(text.contains("## Zero-shot scoring"), "{text}");
        assert!(text.contains("| arc_easy | 10.00 (10.00) | 4.00 (4.00) | **2.50** | ≥ 2: met | 0.500 / 0.500 |"), "{text}");
        assert!(text.contains("| piqa | 5.00 (5.00) | 4.00 (4.00) | **1.25** | ≥ 1.3: **not met** |"), "{text}");
        assert!(text.contains("| boolq | 3.00 (3.00) | 1.00 (1.00) | **3.00** | none |"), "{text}");
        assert_eq!(zeroshot_target("hellaswag"), Some(2.0));
    }

    #[test]
    fn verdicts_compare_in_the_targets_direction() {
        assert_eq!(verdict(1.31, 1.3, true), "met");
        assert_eq!(verdict(1.29, 1.3, true), "**not met**");
        assert_eq!(verdict(0.69, 0.7, false), "met");
        assert_eq!(verdict(0.71, 0.7, false), "**not met**");
    }
}
