//! A recipe, run from code: Wanda 2:4 after Sparsity Induction, calibrated on eight windows of the
//! offline C4 sample, into a checkpoint that carries its `spindle_recipe.toml`.
//!
//! `cargo run -p spindle --example prune_with_recipe -- MODEL_DIR OUT` (a Hugging Face directory,
//! e.g. one `spindle convert` wrote; the data folder as `spindle` finds it). Its test runs it on
//! stories260K.
use std::path::{Path, PathBuf};

use spindle::recipe::{Event, Recipe, RecipeReport};
use spindle_data::DataDir;

const RECIPE: &str = r#"
[prune]
method = "wanda"
pattern = "2:4"

[calibration]
nsamples = 8
seqlen = 64

[induce]
stages = ["distribution", "feature"]
[induce.feature]
epochs = 1
"#;

fn prune(model: &Path, out: &Path, data: &DataDir) -> Result<RecipeReport, Box<dyn std::error::Error>> {
    let recipe = Recipe::from_toml_str(RECIPE)?.resolve()?;
    let tokens = spindle_data::cache::TokenCache::new(spindle::zoo::cache_dir().join("tokens"));
    let report = spindle::prune_with_recipe(model, &recipe, out, Some(data), &tokens, tch::Device::Cpu, &mut |e| {
        if let Event::Blocks { done, total } = e {
            eprint!("\rblock {done}/{total}");
        }
    })?;
    Ok(report)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [model, out] = args.as_slice() else { return Err("usage: prune_with_recipe MODEL_DIR OUT".into()) };
    let report = prune(model, out, &DataDir::resolve(None)?)?;
    println!("\noverall sparsity {:.4}; {} holds the recipe:\n{}", report.prune.overall_sparsity, out.display(), report.recipe.to_toml()?);
    Ok(())
}

#[test]
fn it_prunes_stories260k_and_the_checkpoint_carries_the_recipe() -> Result<(), Box<dyn std::error::Error>> {
    let data = DataDir::resolve_from(None, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))?;
    let s = data.root().join("models/stories260K");
    let t = tempfile::tempdir()?;
    let model = t.path().join("stories");
    spindle_model::convert_llama2c(&s.join("stories260K.bin"), &s.join("tok512.bin"), &model)?;
    let report = prune(&model, &t.path().join("pruned"), &data)?;
    assert!((report.prune.overall_sparsity - 0.5).abs() < 1e-9);
    let saved = std::fs::read_to_string(t.path().join("pruned/spindle_recipe.toml"))?;
    assert_eq!(Recipe::from_toml_str(&saved)?.resolve()?, report.recipe);
    assert!(saved.contains("seqlen = 64") && saved.contains("pattern = \"2:4\""), "{saved}");
    Ok(())
}
