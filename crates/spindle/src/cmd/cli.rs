//! The command line, stage one: raw flags as clap parses them. Each command validates these into
//! typed configuration before doing any work (stage two), so a bad value is reported before a
//! model is loaded.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use spindle_model::DeviceSpec;

#[derive(Debug, Parser)]
#[command(
    name = "spindle",
    version,
    about = "Sparsity Induction and post-training pruning for large language models",
    long_about = "Sparsity Induction and post-training pruning for large language models.\n\n\
        Exit codes: 0 success, 2 usage error, 1 any other failure, 130 interrupted, 141 standard output closed."
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// CPU threads for libtorch (default: one per core). Benchmark on an idle machine.
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Compute device: auto, cpu, cuda or cuda:N (GPUs need a build with the `cuda` feature).
    #[arg(long, global = true, default_value = "auto", value_name = "DEVICE")]
    pub device: DeviceSpec,
    /// Offline data folder (default: $SPINDLE_DATA, else ./data, else ../shared/data).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Convert a checkpoint (GGUF, llama2.c, Hugging Face) into a Hugging Face directory.
    Convert(ConvertArgs),
    /// Show a model's architecture, shapes, dtypes and per-layer sparsity.
    Inspect(InspectArgs),
    /// Sparsity Induction: absorbable scaling and the Spectral Norm Loss, before pruning.
    Induce(InduceArgs),
    /// Prune a model (magnitude, Wanda, SparseGPT, RIA; unstructured or N:M).
    Prune(PruneArgs),
    /// Evaluate a model: perplexity and zero-shot tasks.
    Eval(EvalArgs),
    /// Locate and check the offline data.
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The checkpoint to convert: a .gguf file, a llama2.c .bin, or a Hugging Face directory.
    pub input: PathBuf,
    /// The Hugging Face directory to write (must not exist yet).
    #[arg(long)]
    pub out: PathBuf,
    /// The tokenizer of a llama2.c checkpoint (default: tokenizer.bin beside it).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A Hugging Face model directory, or a known name (smollm2-135m), fetched and converted on
    /// first use into the cache.
    pub model: String,
    /// Also write the figures as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InduceArgs {
    /// The dense model to transform: a Hugging Face directory, or a known name (smollm2-135m).
    #[arg(long)]
    pub model: String,
    /// The pruner the model is being prepared for (its selection is what the distribution stage
    /// optimises, and what the pruning-aware feature stage prunes through).
    #[arg(long, value_enum, default_value = "magnitude")]
    pub target: MethodArg,
    /// The unstructured sparsity it will be pruned to.
    #[arg(long, conflicts_with = "pattern", default_value_t = 0.5)]
    pub sparsity: f64,
    /// Or the N:M pattern, e.g. 2:4.
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<String>,
    /// With `--target ria`: RIA's activation exponent a, as `spindle prune --ria-alpha`.
    #[arg(long, default_value_t = 0.5)]
    pub ria_alpha: f64,
    #[command(flatten)]
    pub induce: InduceFlags,
    #[command(flatten)]
    pub calib: CalibFlags,
    /// Calibration windows per forward pass [default: 1].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Where to write the induced dense model (a new directory; never the input).
    #[arg(long)]
    pub out: PathBuf,
    /// Also draw PNG plots of the importance distributions before and after (first, middle and
    /// last block) into DIR.
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Also write the report as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Sparsity Induction's options, shared by `spindle induce` and `spindle prune --induce`. Each
/// sets a field of the recipe's `[induce]` section; a flag not given leaves the recipe's value
/// (or its default) in place.
#[derive(Debug, Args)]
#[command(next_help_heading = "Sparsity Induction (before pruning)")]
pub struct InduceFlags {
    /// Induction stages, comma-separated: distribution, equivalent-snl, feature, shift; or none
    /// (default: `distribution,feature` for `spindle induce`, none for `spindle prune`). `shift`
    /// (`spindle prune` only): each input group's consumers see `x − mean(x)` and `W·mean(x)`
    /// goes into their bias, an equivalent change that the pruner's statistics see; on Llama
    /// checkpoints it adds bias parameters (config.json's attention_bias and mlp_bias).
    #[arg(long, value_name = "STAGES")]
    pub induce: Option<String>,
    /// Which absorbable sites the equivalent stages rescale: all, or only the norm → linear ones
    /// (no pruned matrix is divided by the scales) [default: norms].
    #[arg(long, value_enum)]
    pub si_sites: Option<SitesArg>,
    /// Distribution stage: where the search for the scales starts [default: act-norm].
    #[arg(long, value_enum)]
    pub si_start: Option<StartArg>,
    /// Distribution stage: SmoothQuant's migration strength α of the start [default: 0.5].
    #[arg(long)]
    pub si_alpha: Option<f64>,
    /// Distribution stage: gradient steps on log D per site (0: the start is only compared with
    /// identity; at norm sites the act-norm start is already the objective's optimum) [default: 0].
    #[arg(long)]
    pub si_steps: Option<usize>,
    /// Distribution stage: Adam's learning rate on log D [default: 0.05].
    #[arg(long)]
    pub si_lr: Option<f64>,
    /// Distribution stage: the soft mask's temperature (relative to the threshold) [default: 0.05].
    #[arg(long)]
    pub si_temperature: Option<f64>,
    /// Distribution stage: the bound on |log D| [default: 8].
    #[arg(long)]
    pub si_max_log_scale: Option<f64>,
    /// Distribution stage: how the scales are chosen. `closed-form`: the start (and its
    /// `--si-steps`) alone. `reconstruction`: then refined by training further absorbable scales
    /// at the same sites on the block pruned through the target's mask (straight-through) to
    /// reconstruct the dense block, optionally with `--si-refine-snl`; the dense function stays
    /// unchanged [default: closed-form].
    #[arg(long, value_enum)]
    pub si_fit: Option<FitArg>,
    /// Distribution stage, `--si-fit reconstruction`: epochs over the calibration windows [default: 2].
    #[arg(long)]
    pub si_refine_epochs: Option<usize>,
    /// Distribution stage, `--si-fit reconstruction`: Adam's learning rate on log D [default: 5e-3].
    #[arg(long)]
    pub si_refine_lr: Option<f64>,
    /// Distribution stage, `--si-fit reconstruction`: an SNL of the consumers' inputs added to
    /// the loss, weighted by `--snl-lambda` [default: none].
    #[arg(long, value_enum)]
    pub si_refine_snl: Option<SnlArg>,
    /// The feature stage's Spectral Norm Loss [default: none]; the equivalent stage's [default:
    /// nuclear], which needs one.
    #[arg(long, value_enum)]
    pub snl: Option<SnlArg>,
    /// The SNL's weight λ (feature stage, and the distribution stage's reconstruction fit)
    /// [default: 1e-5].
    #[arg(long)]
    pub snl_lambda: Option<f64>,
    /// The features the SNL acts on (feature stage and reconstruction) [default: inputs].
    #[arg(long, value_enum)]
    pub snl_features: Option<SnlFeaturesArg>,
    /// Tokens of each feature matrix that enter the SNL [default: 256].
    #[arg(long)]
    pub snl_tokens: Option<i64>,
    /// Feature stage: AdamW's learning rate on the scalers [default: 5e-3].
    #[arg(long)]
    pub feature_lr: Option<f64>,
    /// Feature stage: epochs over the calibration windows, per block [default: 2].
    #[arg(long)]
    pub feature_epochs: Option<usize>,
    /// Feature stage: AdamW's decoupled weight decay (toward scalers of 1) [default: 0].
    #[arg(long)]
    pub feature_weight_decay: Option<f64>,
    /// Feature stage: what the scalers reconstruct before the pruner runs. `mask`: the block
    /// through the target pruner's mask, re-chosen at every step, straight-through (SparseGPT's
    /// mask approximated by Wanda's). `off`: the dense block (then only the SNL moves the
    /// scalers). Default: mask. Training on the pruned block, after the pruner, is
    /// `spindle prune --reconstruct`.
    #[arg(long, value_enum, value_name = "HOW")]
    pub pruning_aware: Option<PruningAwareArg>,
    /// Equivalent SNL stage: gradient steps per site [default: 30].
    #[arg(long)]
    pub equiv_steps: Option<usize>,
    /// Equivalent SNL stage: the bound on |log D| [default: 1].
    #[arg(long)]
    pub equiv_max_log_scale: Option<f64>,
}

/// Which calibration windows: shared by `spindle prune`, `spindle induce` and `spindle data calib`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Calibration")]
pub struct CalibFlags {
    /// Calibration corpus: c4, or a .txt/.jsonl/.parquet file [default: c4].
    #[arg(long)]
    pub calib: Option<String>,
    /// Number of calibration windows [default: 128].
    #[arg(long)]
    pub nsamples: Option<usize>,
    /// Tokens per calibration window [default: 2048, or the model's context if smaller].
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// The seed of Python's `random.seed` that draws the windows [default: 0].
    #[arg(long)]
    pub seed: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FitArg {
    ClosedForm,
    Reconstruction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SitesArg {
    All,
    Norms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartArg {
    Identity,
    Smoothquant,
    /// D = ‖X‖: magnitude's score becomes Wanda's, per matrix.
    ActNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnlArg {
    /// Σσ / σ₁
    Nuclear,
    /// −σ₁ / ‖F‖_F
    SpectralFrobenius,
    /// −σ₁² / Σσ²
    SpectralEnergy,
    /// No SNL (the feature stage then only reconstructs).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PruningAwareArg {
    Off,
    Mask,
    /// Renamed: `spindle prune --reconstruct` (named here only to say so).
    #[value(hide = true)]
    Pruned,
}

/// Reconstruction after pruning (`spindle prune` only): not induction, since it acts on the
/// block the pruner has already pruned.
#[derive(Debug, Args)]
#[command(next_help_heading = "Reconstruction (after pruning)")]
pub struct ReconstructFlags {
    /// After each block is pruned, train per-channel scalers on its input groups (its mask and
    /// pruned weights fixed) towards the dense block's outputs on the calibration inputs, then
    /// merge them into the pruned weights. The sparsity pattern stays the pruner's.
    #[arg(long)]
    pub reconstruct: bool,
    /// Reconstruction: an SNL added to the loss (default: none).
    #[arg(long, value_enum)]
    pub recon_snl: Option<SnlArg>,
    /// Reconstruction: the SNL's weight λ [default: 1e-5].
    #[arg(long)]
    pub recon_snl_lambda: Option<f64>,
    /// Reconstruction: AdamW's learning rate on the scalers [default: 5e-3].
    #[arg(long)]
    pub recon_lr: Option<f64>,
    /// Reconstruction: epochs over the calibration windows, per block [default: 2].
    #[arg(long)]
    pub recon_epochs: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SnlFeaturesArg {
    /// The scaled inputs of the block's linears.
    Inputs,
    /// The block's output.
    Output,
}

/// `spindle prune`: each flag sets one field of the recipe; `--recipe` reads the others from a
/// file, and anything neither names takes the recipe's default.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The model to prune: a Hugging Face directory, or a known name (smollm2-135m).
    #[arg(long)]
    pub model: String,
    /// A recipe file (TOML, e.g. the `spindle_recipe.toml` a pruned model carries); flags given
    /// beside it override its fields.
    #[arg(long, value_name = "FILE")]
    pub recipe: Option<PathBuf>,
    /// Print the resolved recipe (every default filled) and exit without pruning.
    #[arg(long)]
    pub print_recipe: bool,
    /// The pruner.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Unstructured sparsity in [0, 1), e.g. 0.5.
    #[arg(long, conflicts_with = "pattern")]
    pub sparsity: Option<f64>,
    /// N:M sparsity: at most N nonzeros in every M consecutive inputs, e.g. 2:4 or 4:8.
    #[arg(long, value_name = "N:M")]
    pub pattern: Option<String>,
    /// How the sparsity is shared between blocks (OWL: by outlier ratio, unstructured only)
    /// [default: uniform].
    #[arg(long, value_enum)]
    pub allocation: Option<AllocationArg>,
    /// OWL's outlier threshold, as a multiple of the mean score [default: 5].
    #[arg(long, value_name = "M")]
    pub owl_m: Option<f64>,
    /// OWL's λ: block sparsities spread over target ± λ [default: 0.08].
    #[arg(long, value_name = "LAMBDA")]
    pub owl_lambda: Option<f64>,
    #[command(flatten)]
    pub calib: CalibFlags,
    /// Calibration windows per forward pass (1, as the reference scripts: larger batches are no
    /// faster on a CPU and raise peak memory by their attention and MLP temporaries) [default: 1].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Prune q/k/v, then o, then gate/up, then down, re-accumulating statistics in between.
    #[arg(long)]
    pub true_sequential: bool,
    /// Report every linear's relative reconstruction error ‖X(W − Ŵ)ᵀ‖² / ‖XWᵀ‖² over the
    /// calibration inputs (two extra matmuls per linear: about 30% more time for Wanda).
    #[arg(long)]
    pub layer_errors: bool,
    /// The dtype weights and calibration activations are held in while pruning (statistics are
    /// always f32; the written model keeps each tensor's stored dtype). `model`: the checkpoint's
    /// [default: float32].
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    #[command(flatten)]
    pub induce: InduceFlags,
    #[command(flatten)]
    pub reconstruct: ReconstructFlags,
    /// Magnitude only: one threshold per matrix (the reference), or per output row [default: matrix].
    #[arg(long, value_enum)]
    pub magnitude_scope: Option<ScopeArg>,
    /// RIA only: the activation exponent a [default: 0.5].
    #[arg(long)]
    pub ria_alpha: Option<f64>,
    /// SparseGPT only: damping as a share of the mean Hessian diagonal [default: 0.01].
    #[arg(long)]
    pub percdamp: Option<f64>,
    /// SparseGPT only: the largest damping tried after failed factorisations (×10 each retry)
    /// [default: 1].
    #[arg(long)]
    pub max_percdamp: Option<f64>,
    /// SparseGPT only: columns per block [default: 128].
    #[arg(long)]
    pub blocksize: Option<i64>,
    /// Where to write the pruned model (a new directory; never the input).
    #[arg(long, required_unless_present = "print_recipe")]
    pub out: Option<PathBuf>,
    /// Also write the report as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MethodArg {
    Magnitude,
    Wanda,
    Sparsegpt,
    Ria,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    Float32,
    Bfloat16,
    Float16,
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AllocationArg {
    Uniform,
    Owl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    Matrix,
    Row,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The model to evaluate: a Hugging Face directory, or a known name (smollm2-135m).
    #[arg(long)]
    pub model: String,
    /// Perplexity corpora, comma-separated: wikitext2, c4, ptb, or a .txt/.jsonl/.parquet file.
    #[arg(long, value_name = "CORPORA")]
    pub ppl: Option<String>,
    /// Zero-shot tasks, comma-separated: piqa, boolq, openbookqa, arc_easy, arc_challenge,
    /// winogrande, rte, hellaswag.
    #[arg(long, value_name = "TASKS")]
    pub tasks: Option<String>,
    /// Perplexity window (default: 2048, or the model's context if smaller).
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// Score only the first N items of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Perplexity over only the first K windows (quick checks and benchmarks; the figure is then
    /// not the protocol's, and the output says so).
    #[arg(long, value_name = "K")]
    pub max_windows: Option<usize>,
    /// Windows or requests per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Evaluation streamed by layer: every perplexity window (every zero-shot pass) through
    /// block i before block i + 1, one block resident at a time (the same figures, bit for bit).
    /// Chosen by itself when the model in `--dtype` would take more than half the memory
    /// available.
    #[arg(long)]
    pub stream: bool,
    /// The dtype the model is evaluated in. `model`: the checkpoint's.
    #[arg(long, value_enum, default_value = "float32")]
    pub dtype: DtypeArg,
    /// Read task specs from DIR instead of the built-in copies of eval/tasks.
    #[arg(long, value_name = "DIR")]
    pub tasks_dir: Option<PathBuf>,
    /// Also write the figures as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Print the data folder in use and how it was chosen.
    Locate {
        /// Also write the answer as JSON to PATH.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// Check every file listed in the data folder's SHA256SUMS.
    Verify {
        /// Also write the per-file results as JSON to PATH.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
    /// List the calibration windows a run would use: each window's document and token offset,
    /// drawn exactly as the Wanda/SparseGPT loaders draw them. Writes nothing else.
    Calib(CalibArgs),
    /// Token and window counts of an evaluation corpus.
    Stats(StatsArgs),
    /// Download a dataset file from the Hugging Face hub into a data folder, at the place the
    /// offline folder has it (`<repo name>/<file>`). Needs a build with the `hub` feature.
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// The dataset repository, e.g. Salesforce/wikitext.
    #[arg(required_unless_present = "named")]
    pub repo: Option<String>,
    /// The file inside it, e.g. wikitext-2-raw-v1/test-00000-of-00001.parquet.
    #[arg(required_unless_present = "named")]
    pub file: Option<String>,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main", conflicts_with = "named")]
    pub revision: String,
    /// Instead of one file: every file of the named corpora and tasks that has a public source
    /// (eval/data_sources.toml), each checked against its recorded SHA-256; the files no
    /// repository holds are listed with the reason.
    #[arg(long, conflicts_with_all = ["repo", "file"])]
    pub named: bool,
    /// The data folder to place it in.
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub into: PathBuf,
}

#[derive(Debug, Args)]
pub struct CalibArgs {
    /// The model whose tokenizer is used (a directory, or a known name such as smollm2-135m).
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub calib: CalibFlags,
    /// Also write the windows as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The model whose tokenizer is used (a directory, or a known name such as smollm2-135m).
    #[arg(long)]
    pub model: String,
    /// Evaluation corpus: wikitext2, c4, ptb, or a .txt/.jsonl/.parquet file.
    #[arg(long, default_value = "wikitext2")]
    pub corpus: String,
    /// Tokens per window (default: 2048, or the model's context if smaller).
    #[arg(long)]
    pub seqlen: Option<usize>,
    /// Also write the counts as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}
