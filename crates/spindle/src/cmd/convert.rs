//! `spindle convert INPUT --out DIR [--tokenizer PATH]`.

use anyhow::Context;
use spindle::progress;

use crate::Failure;
use crate::cmd::cli::ConvertArgs;

pub fn run(args: ConvertArgs) -> Result<(), Failure> {
    let input = &args.input;
    let ext = input.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut inputs = vec![input.as_path()];
    inputs.extend(args.tokenizer.as_deref());
    crate::cmd::check_outputs(Some(&args.out), &[], &inputs)?;
    let out = match ext {
        "gguf" => {
            let bar = progress::items("converting");
            let out = spindle_model::convert_gguf(input, &args.out, &mut |done, total| progress::update(&bar, done, total))
                .with_context(|| format!("converting {}", input.display()))?;
            bar.finish_and_clear();
            out
        }
        "bin" => {
            let tokenizer = match &args.tokenizer {
                Some(t) => t.clone(),
                None => {
                    let beside = input.with_file_name("tokenizer.bin");
                    if !beside.is_file() {
                        return Err(Failure::Usage(format!(
                            "{} is a llama2.c checkpoint: pass its tokenizer with --tokenizer PATH (no tokenizer.bin beside it)",
                            input.display()
                        )));
                    }
                    beside
                }
            };
            spindle_model::convert_llama2c(input, &tokenizer, &args.out).with_context(|| format!("converting {}", input.display()))?
        }
        _ => {
            return Err(Failure::Usage(format!(
                "{}: cannot tell the format; expected a .gguf file or a llama2.c .bin checkpoint",
                input.display()
            )));
        }
    };
    say!("{}", out.display());
    Ok(())
}
