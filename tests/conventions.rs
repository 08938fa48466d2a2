//! House conventions, enforced as tests (rust-analyzer's "tidy" idea): documentation that must
//! exist, code that must not appear in library sources, and the README/CI contract.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use spindle_tests::{read, workspace_root};

const CRATES: &[&str] =
    &["spindle-io", "spindle-recipe", "spindle-model", "spindle-data", "spindle-induce", "spindle-prune", "spindle-eval", "spindle"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The non-test part of a source file: everything before its first `#[cfg(test)]`.
fn non_test_code(text: &str) -> &str {
    text.find("#[cfg(test)]").map_or(text, |i| &text[..i])
}

#[test]
fn every_crate_opens_with_a_doc_essay() {
    for krate in CRATES {
        let lib = read(&format!("crates/{krate}/src/lib.rs"));
        assert!(lib.starts_with("//! "), "crates/{krate}/src/lib.rs must open with a `//!` doc saying what it owns");
        let essay_lines = lib.lines().take_while(|l| l.starts_with("//!")).count();
        assert!(essay_lines >= 5, "crates/{krate}/src/lib.rs: the `//!` doc is {essay_lines} lines; say what the crate owns and why");
    }
    assert!(read("xtask/src/main.rs").starts_with("//! "));
    assert!(read("tests/lib.rs").starts_with("//! "));
}

#[test]
fn every_library_crate_has_a_running_doctest_and_the_repository_its_licenses() {
    for krate in CRATES {
        let lib = read(&format!("crates/{krate}/src/lib.rs"));
        let doc: Vec<&str> = lib.lines().take_while(|l| l.starts_with("//!")).collect();
        let fences = doc.iter().filter(|l| l.trim_start_matches("//!").trim() == "```").count();
        assert!(fences >= 2, "crates/{krate}/src/lib.rs: its `//!` doc needs an example (a doctest that runs)");
        assert!(!doc.iter().any(|l| l.contains("```ignore") || l.contains("```no_run")), "crates/{krate}: the doctest must run");
    }
    // The manifests say `MIT OR Apache-2.0`.
    assert!(read("LICENSE-MIT").contains("Permission is hereby granted, free of charge"));
    assert!(read("LICENSE-APACHE").contains("Apache License") && read("LICENSE-APACHE").contains("Version 2.0"));
}

#[test]
fn architecture_md_maps_every_crate_and_states_invariants() {
    let arch = read("ARCHITECTURE.md");
    for path in CRATES.iter().map(|c| format!("crates/{c}")).chain(["xtask".into(), "eval".into(), "tests".into()]) {
        assert!(arch.contains(&format!("`{path}`")), "ARCHITECTURE.md's code map must cover `{path}`");
    }
    assert!(arch.matches("Architecture Invariant:").count() >= CRATES.len(), "ARCHITECTURE.md needs an invariant per crate");
}

#[test]
fn library_code_has_no_unwrap_no_stubs_no_prints() {
    let mut offenders = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&workspace_root().join("crates").join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Binaries print; libraries report through return values and callbacks.
            let is_binary = file.ends_with("main.rs") || file.parent().is_some_and(|p| p.ends_with("src/cmd"));
            for (i, line) in non_test_code(&text).lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let mut bad: Vec<&str> =
                    [".unwrap()", ".expect(", "todo!(", "unimplemented!(", "dbg!("].into_iter().filter(|p| code.contains(p)).collect();
                if !is_binary && (code.contains("println!(") || code.contains("eprintln!(")) {
                    bad.push("print");
                }
                if !bad.is_empty() {
                    offenders.push(format!(
                        "{}:{}: {bad:?}: {}",
                        file.strip_prefix(workspace_root()).unwrap().display(),
                        i + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "library code must return typed errors, not panic or print:\n{}", offenders.join("\n"));
}

/// ARCHITECTURE.md: architecture knowledge lives in `spindle-model/src/arch/`. Anywhere else in
/// the workspace's library code, a match on a family or a look at a linear's name to decide what
/// a block is would be a second place a new family has to touch.
#[test]
fn only_the_arch_modules_know_families() {
    let mut offenders = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&workspace_root().join("crates").join(krate).join("src"), &mut files);
        for file in files.iter().filter(|f| !f.to_string_lossy().contains("spindle-model/src/arch/")) {
            let text = std::fs::read_to_string(file).unwrap();
            for (i, line) in non_test_code(&text).lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                let sniffs = ["Family::", "linear(\"o_proj\")", "linear(\"fc1\")", "linear(\"qkv_proj\")"].iter().any(|p| code.contains(p));
                if sniffs {
                    offenders.push(format!("{}:{}: {}", file.strip_prefix(workspace_root()).unwrap().display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "family knowledge outside spindle-model/src/arch/:\n{}", offenders.join("\n"));
}

#[test]
fn no_ignored_tests_stand_in_for_work() {
    let mut files = Vec::new();
    for dir in ["crates", "tests", "xtask"] {
        rust_files(&workspace_root().join(dir), &mut files);
    }
    let marker = concat!("#[", "ignore");
    let hits: Vec<_> =
        files.iter().filter(|f| std::fs::read_to_string(f).unwrap().contains(marker)).map(|f| f.display().to_string()).collect();
    assert!(hits.is_empty(), "ignored tests: gate slow tests on SPINDLE_SLOW_TESTS instead: {hits:?}");
}

/// The README's test command: the command in the code block under "## Set up".
fn readme_command(label: &str) -> String {
    let readme = read("README.md");
    let section = readme.split("## Set up").nth(1).expect("README has a `## Set up` section");
    let line = section
        .lines()
        .find(|l| l.trim_start().starts_with("cargo ") && l.contains(label))
        .unwrap_or_else(|| panic!("README's set-up section has no `cargo ...` line marked `{label}`"));
    line.split('#').next().unwrap().trim().to_owned()
}

#[test]
fn ci_runs_the_readme_test_command_and_the_readme_has_two_setup_commands() {
    let test_cmd = readme_command("# every test");
    let main_cmd = readme_command("# the main job");
    assert_eq!(test_cmd, "cargo xtask test");
    assert_eq!(main_cmd, "cargo xtask reproduce table2");
    let ci = read(".ci/run");
    let commands: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("set ") && !l.starts_with("cd "))
        .collect();
    assert_eq!(commands.last().copied(), Some(test_cmd.as_str()), ".ci/run must end by running the README's test command");
    let workflow = read(".github/workflows/ci.yml");
    assert!(workflow.contains("bash .ci/run"), "the CI workflow must run .ci/run");
    assert!(read(".github/workflows/nightly.yml").contains("cargo xtask"), "the nightly workflow drives xtask");
}
