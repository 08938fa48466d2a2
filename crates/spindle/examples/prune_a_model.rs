//! The pipeline as a library: a llama2.c checkpoint converted, calibration windows cut from a
//! text file with the model's tokenizer, Wanda at 50%, the pruned model written.
//!
//! `cargo run -p spindle --example prune_a_model -- MODEL.bin TOKENIZER.bin TEXT.txt OUT`
//! e.g. with `../shared/data/models/stories260K/{stories260K.bin,tok512.bin,tinystories-sample.txt}`.
use std::path::PathBuf;

use spindle::prune::{Allocation, Method, PruneConfig, prune_model};
use spindle_prune::Pattern;
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [ckpt, tok, text, out] = args.as_slice() else {
        return Err("usage: prune_a_model MODEL.bin TOKENIZER.bin TEXT.txt OUT".into());
    };
    let dir = out.with_extension("dense");
    spindle_model::convert_llama2c(ckpt, tok, &dir)?;
    let model = spindle_model::Model::open(&dir, Device::Cpu, Kind::Float)?;
    let tokenizer = spindle_data::Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    // Eight windows of 64 tokens from the start of the text.
    let ids: Vec<i64> = tokenizer.encode(&std::fs::read_to_string(text)?, false)?.into_iter().map(i64::from).take(8 * 64).collect();
    if ids.len() < 8 * 64 {
        return Err(format!("{} holds {} tokens; 8 windows of 64 need 512", text.display(), ids.len()).into());
    }
    let calib = Tensor::from_slice(&ids).view([8, 64]);
    let cfg = PruneConfig {
        method: Method::Wanda,
        pattern: Pattern::Unstructured { sparsity: 0.5 },
        allocation: Allocation::Uniform,
        true_sequential: false,
        batch_size: 1,
        layer_errors: false,
        induce: None,
        reconstruct: None,
    };
    let report = prune_model(&model, Some(&calib), &cfg, out, &mut |done, total| eprint!("\rblock {done}/{total}"))?;
    println!("\n{} linears, overall sparsity {:.4}, written to {}", report.linears.len(), report.overall_sparsity, report.out.display());
    Ok(())
}
