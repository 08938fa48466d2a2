//! `spindle data locate|verify`.

use std::path::Path;

use anyhow::{Context, anyhow};
use serde_json::json;
use spindle::{output, progress};
use spindle_data::{DataDir, FileStatus};

use crate::Failure;
use crate::cmd::cli::DataCommand;

pub fn run(cmd: DataCommand, flag: Option<&Path>) -> Result<(), Failure> {
    // A data directory that cannot be found is a usage problem: the fix is a flag or a variable.
    let dir = DataDir::resolve(flag).map_err(|e| Failure::Usage(e.to_string()))?;
    match cmd {
        DataCommand::Locate { json } => {
            println!("{} (from {})", dir.root().display(), dir.source());
            if let Some(path) = json {
                let value = json!({"data_dir": dir.root(), "source": dir.source().to_string()});
                output::write_json(&path, &value).map_err(anyhow::Error::from)?;
            }
            Ok(())
        }
        DataCommand::Verify { json } => verify(&dir, json.as_deref()),
    }
}

fn verify(dir: &DataDir, json_path: Option<&Path>) -> Result<(), Failure> {
    let bar = progress::bytes("checking data");
    let report = spindle_data::verify(dir, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("checking {}", dir.root().display()))?;
    bar.finish_and_clear();

    let status_word = |s: &FileStatus| match s {
        FileStatus::Ok => "ok",
        FileStatus::Mismatch { .. } => "changed",
        FileStatus::Missing => "missing",
    };
    if let Some(path) = json_path {
        let files: Vec<_> = report
            .files
            .iter()
            .map(|f| {
                let actual = match &f.status {
                    FileStatus::Mismatch { actual } => Some(actual.as_str()),
                    FileStatus::Ok => Some(f.expected.as_str()),
                    FileStatus::Missing => None,
                };
                json!({"path": f.path, "status": status_word(&f.status), "expected": f.expected, "actual": actual})
            })
            .collect();
        let value = json!({
            "data_dir": dir.root(),
            "source": dir.source().to_string(),
            "ok": report.is_ok(),
            "bytes": report.bytes,
            "files": files,
        });
        output::write_json(path, &value).map_err(anyhow::Error::from)?;
    }

    let bad: Vec<String> = report
        .files
        .iter()
        .filter(|f| f.status != FileStatus::Ok)
        .map(|f| format!("{} ({})", f.path.display(), status_word(&f.status)))
        .collect();
    if bad.is_empty() {
        println!(
            "{} files, {:.1} MiB: all intact in {} (from {})",
            report.files.len(),
            report.bytes as f64 / (1024.0 * 1024.0),
            dir.root().display(),
            dir.source()
        );
        Ok(())
    } else {
        Err(Failure::Other(anyhow!(
            "{} of {} files in {} failed their checksum: {}",
            bad.len(),
            report.files.len(),
            dir.root().display(),
            bad.join(", ")
        )))
    }
}
