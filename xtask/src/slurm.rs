//! `cargo xtask reproduce TABLE --emit slurm`: a table's uncached runs as a Slurm job array.
//!
//! Runs are content-addressed and several runners may share one cache (each run is claimed by a
//! lock file), so a cluster needs no scheduler of ours: one array task per uncached run, each
//! addressed by its run key (`reproduce --run-key KEY`), all on one checkout on a shared
//! filesystem, and a last job that renders the table from the cache and archives its runs
//! (`reproduce --render --archive`).
//! The script is written beside the table (`results/<table>.slurm.sh`); `bash SCRIPT submit`
//! builds once and submits both jobs, `bash SCRIPT task` (with `SLURM_ARRAY_TASK_ID`) is one
//! array task, and `bash SCRIPT render` the last step, so every step can also be run by hand.

use std::path::Path;

/// What the script needs to know.
pub(crate) struct SlurmPlan<'a> {
    pub table: &'a str,
    pub profile: &'a str,
    pub threads: usize,
    /// The checkout every task runs in (on the shared filesystem).
    pub root: &'a Path,
    /// `--data-dir` as the user gave it, passed on to every task.
    pub data_dir: Option<&'a Path>,
    /// The uncached runs, in plan order: (key, what it is).
    pub runs: Vec<(String, String)>,
    pub code_version: &'a str,
}

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The job-array script.
pub(crate) fn script(p: &SlurmPlan) -> String {
    let mut common = format!("{} --profile {} --threads {}", p.table, p.profile, p.threads);
    if let Some(d) = p.data_dir {
        common += &format!(" --data-dir {}", quote(&d.to_string_lossy()));
    }
    let job = format!("spindle-{}-{}", p.table, p.profile);
    let mut s = String::new();
    s += "#!/usr/bin/env bash\n";
    s += &format!(
        "# Emitted by `cargo xtask reproduce {common} --emit slurm` at code {}.\n\
         # One Slurm array task per run not cached when it was emitted ({} runs), then a job that\n\
         # renders results/ from the shared cache. Every task runs in the checkout below, which must\n\
         # be on a filesystem all nodes share (its results/cache is the shared cache).\n\
         #   bash THIS submit   build once, submit the array and the render job after it\n\
         #   bash THIS task     one array task (SLURM_ARRAY_TASK_ID picks the run)\n\
         #   bash THIS render   write the table from whatever the cache holds, and keep the finished\n\
         #                      runs' records in results/runs/ (`--archive`: commit them)\n\
         # A run already cached or held by another runner is skipped, so resubmitting is safe.\n",
        &p.code_version[..p.code_version.len().min(12)],
        p.runs.len()
    );
    s += "set -euo pipefail\n";
    s += &format!("cd {}\n", quote(&p.root.to_string_lossy()));
    s += "KEYS=(\n";
    for (key, what) in &p.runs {
        s += &format!("  {key}  # {what}\n");
    }
    s += ")\n";
    s += &format!(
        "case \"${{1:-task}}\" in\n\
         \x20 submit)\n\
         \x20   mkdir -p results/slurm\n\
         \x20   cargo build --release --quiet --package spindle\n\
         \x20   cargo build --quiet --package xtask\n\
         \x20   if [ ${{#KEYS[@]}} -eq 0 ]; then exec bash \"$0\" render; fi\n\
         \x20   jid=$(sbatch --parsable --job-name={job} --array=0-$((${{#KEYS[@]}} - 1)) --cpus-per-task={threads} \\\n\
         \x20     --output=results/slurm/%x-%A_%a.log \"$0\" task)\n\
         \x20   sbatch --job-name={job}-render --dependency=afterany:\"$jid\" --output=results/slurm/%x-%j.log \"$0\" render\n\
         \x20   ;;\n\
         \x20 task)\n\
         \x20   key=${{KEYS[${{SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID to the run index}}]}}\n\
         \x20   cargo xtask reproduce {common} --run-key \"$key\"\n\
         \x20   ;;\n\
         \x20 render)\n\
         \x20   cargo xtask reproduce {common} --render --archive\n\
         \x20   ;;\n\
         \x20 *)\n\
         \x20   echo \"usage: bash $0 submit|task|render\" >&2\n\
         \x20   exit 2\n\
         \x20   ;;\n\
         esac\n",
        threads = p.threads,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_addresses_each_run_by_key_and_renders_last() {
        let root = Path::new("/shared/it's here");
        let p = SlurmPlan {
            table: "table2",
            profile: "cpu",
            threads: 1,
            root,
            data_dir: Some(Path::new("/data")),
            runs: vec![("aaa".into(), "m / wanda / seed 0".into()), ("bbb".into(), "m / wanda / seed 1".into())],
            code_version: "0123456789abcdef",
        };
        let s = script(&p);
        assert!(s.starts_with("#!/usr/bin/env bash\n"));
        assert!(s.contains("at code 0123456789ab.\n"));
        assert!(s.contains("cd '/shared/it'\\''s here'\n"), "{s}");
        assert!(s.contains("KEYS=(\n  aaa  # m / wanda / seed 0\n  bbb  # m / wanda / seed 1\n)\n"), "{s}");
        assert!(s.contains("cargo xtask reproduce table2 --profile cpu --threads 1 --data-dir '/data' --run-key \"$key\"\n"), "{s}");
        assert!(s.contains("cargo xtask reproduce table2 --profile cpu --threads 1 --data-dir '/data' --render --archive\n"), "{s}");
        assert!(s.contains("--array=0-$((${#KEYS[@]} - 1)) --cpus-per-task=1"), "{s}");
        assert!(s.contains("--dependency=afterany:\"$jid\""), "{s}");
    }

    /// The script is valid bash, and its task step picks the run the index names (checked with
    /// `cargo` replaced by `echo`, so nothing runs).
    #[test]
    fn the_task_step_runs_the_indexed_key() {
        let dir = std::env::temp_dir().join(format!("spindle-slurm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = SlurmPlan {
            table: "t",
            profile: "cpu",
            threads: 2,
            root: &dir,
            data_dir: None,
            runs: vec![("k0".into(), "a".into()), ("k1".into(), "b".into())],
            code_version: "c",
        };
        let path = dir.join("t.slurm.sh");
        std::fs::write(&path, script(&p)).unwrap();
        let run = |arg: &str, index: Option<&str>| {
            let mut cmd = std::process::Command::new("bash");
            cmd.arg("-c").arg(format!("cargo() {{ echo cargo \"$@\"; }}; export -f cargo; bash {} {arg}", path.display()));
            if let Some(i) = index {
                cmd.env("SLURM_ARRAY_TASK_ID", i);
            } else {
                cmd.env_remove("SLURM_ARRAY_TASK_ID");
            }
            cmd.output().unwrap()
        };
        let out = run("task", Some("1"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "cargo xtask reproduce t --profile cpu --threads 2 --run-key k1\n");
        let out = run("render", None);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "cargo xtask reproduce t --profile cpu --threads 2 --render --archive\n");
        let out = run("task", None);
        assert!(!out.status.success(), "a task without an index fails");
        assert!(String::from_utf8_lossy(&out.stderr).contains("set SLURM_ARRAY_TASK_ID"));
        let out = run("bogus", None);
        assert_eq!(out.status.code(), Some(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
