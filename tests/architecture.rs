//! The dependency invariants of ARCHITECTURE.md, checked on the real resolved graph
//! (`cargo metadata`, the data behind `cargo tree -i`): a forbidden edge, direct or transitive,
//! fails this test with the path that brings it in.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use spindle_tests::workspace_root;

/// The resolved graph: package name -> (dependency name, kinds of the edge).
struct Graph {
    edges: BTreeMap<String, Vec<(String, Vec<String>)>>,
}

fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().expect("rustc -vV");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV prints the host triple").to_owned()
}

fn graph() -> Graph {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["metadata", "--format-version", "1", "--locked", "--filter-platform"])
        .arg(host_triple())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let name_of: BTreeMap<&str, &str> =
        meta["packages"].as_array().unwrap().iter().map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap())).collect();
    let mut edges = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let from = name_of[node["id"].as_str().unwrap()].to_owned();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let kinds = d["dep_kinds"].as_array().unwrap().iter().map(|k| k["kind"].as_str().unwrap_or("normal").to_owned()).collect();
                (name_of[d["pkg"].as_str().unwrap()].to_owned(), kinds)
            })
            .collect();
        edges.insert(from, deps);
    }
    Graph { edges }
}

impl Graph {
    /// Every package `root` pulls in, each with the path that first reaches it. Dev-dependencies
    /// count only when `with_dev` (and only the root's own: a dependency's tests are not built).
    /// `tch` is opaque: it is listed when reached, but its own dependencies are not followed.
    /// tch carries safetensors and zip for its own serialization; a crate that computes on tensors
    /// necessarily pulls them in without knowing any file format, which is what the rules are about.
    fn closure(&self, root: &str, with_dev: bool) -> BTreeMap<String, Vec<String>> {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut queue = VecDeque::from([vec![root.to_owned()]]);
        while let Some(path) = queue.pop_front() {
            let here = path.last().unwrap();
            if here == "tch" {
                continue;
            }
            for (dep, kinds) in self.edges.get(here).into_iter().flatten() {
                let dev_only = kinds.iter().all(|k| k == "dev");
                if dev_only && !(with_dev && here == root) {
                    continue;
                }
                if !seen.contains_key(dep) {
                    let mut p = path.clone();
                    p.push(dep.clone());
                    seen.insert(dep.clone(), p.clone());
                    queue.push_back(p);
                }
            }
        }
        seen
    }

    fn assert_absent(&self, root: &str, forbidden: &[&str], with_dev: bool, why: &str) {
        assert!(self.edges.contains_key(root), "{root} is not a workspace package");
        let closure = self.closure(root, with_dev);
        let hits: Vec<String> = closure
            .iter()
            .filter(|(name, _)| forbidden.iter().any(|f| f == name || (f.ends_with('*') && name.starts_with(&f[..f.len() - 1]))))
            .map(|(_, path)| path.join(" -> "))
            .collect();
        assert!(hits.is_empty(), "{root} must not depend on {forbidden:?} ({why}), but: {}", hits.join("; "));
    }
}

const FILE_FORMATS: &[&str] = &["safetensors", "parquet", "arrow", "arrow-*", "tokenizers", "memmap2", "hf-hub"];

#[test]
fn pruners_know_no_files_and_no_models() {
    let g = graph();
    let mut forbidden = FILE_FORMATS.to_vec();
    forbidden.extend(["spindle-model", "spindle-data", "spindle-eval", "spindle-induce", "spindle"]);
    g.assert_absent("spindle-prune", &forbidden, false, "pruners are pure functions on tensors");
}

#[test]
fn induction_knows_no_files_and_no_models() {
    let g = graph();
    let mut forbidden = FILE_FORMATS.to_vec();
    forbidden.extend(["spindle-model", "spindle-data", "spindle-eval", "spindle"]);
    g.assert_absent("spindle-induce", &forbidden, false, "induction is math on tensors");
}

#[test]
fn xtask_never_links_libtorch() {
    let g = graph();
    let forbidden = ["tch", "torch-sys", "spindle-model", "spindle-data", "spindle-induce", "spindle-prune", "spindle-eval", "spindle"];
    // torch-sys is listed in case something reached it without tch. Dev-dependencies too: `cargo xtask` must build and its tests run on a machine without libtorch.
    g.assert_absent("xtask", &forbidden, true, "`cargo xtask --help` must work without libtorch");
}

#[test]
fn the_recipe_is_serde_types_without_libtorch() {
    let g = graph();
    let forbidden = ["tch", "torch-sys", "spindle-model", "spindle-data", "spindle-induce", "spindle-prune", "spindle-eval", "spindle"];
    // xtask writes recipes with these types, and xtask never links libtorch.
    g.assert_absent("spindle-recipe", &forbidden, false, "the recipe is data that xtask shares");
}

#[test]
fn data_knows_no_tensors_and_no_models() {
    let g = graph();
    let forbidden = ["tch", "torch-sys", "spindle-model", "spindle-prune", "spindle-induce", "spindle-eval", "spindle"];
    g.assert_absent("spindle-data", &forbidden, false, "data is text and token ids");
}

#[test]
fn models_know_no_pruners_datasets_or_evaluation() {
    let g = graph();
    let forbidden = ["spindle-prune", "spindle-induce", "spindle-eval", "spindle-data", "spindle", "parquet", "arrow", "arrow-*"];
    g.assert_absent("spindle-model", &forbidden, false, "a model is files to modules, ids to logits");
}

#[test]
fn file_reading_depends_on_nothing() {
    let g = graph();
    let deps = g.closure("spindle-io", false);
    assert!(deps.is_empty(), "spindle-io must depend on nothing, so every crate can use it: {:?}", deps.keys().collect::<Vec<_>>());
}

#[test]
fn evaluation_knows_no_pruner() {
    let g = graph();
    g.assert_absent("spindle-eval", &["spindle-prune", "spindle-induce", "spindle"], false, "a pruned model is scored like a dense one");
}

#[test]
fn only_spindle_knows_both_models_and_pruners() {
    let g = graph();
    let members: BTreeSet<&str> = [
        "spindle-io",
        "spindle-recipe",
        "spindle-model",
        "spindle-data",
        "spindle-induce",
        "spindle-prune",
        "spindle-eval",
        "spindle",
        "xtask",
        "spindle-tests",
    ]
    .into();
    for member in members {
        let closure = g.closure(member, false);
        let both = closure.contains_key("spindle-model") && closure.contains_key("spindle-prune");
        assert_eq!(both, member == "spindle", "{member}: only `spindle` may depend on both spindle-model and spindle-prune");
    }
}

#[test]
fn the_checker_sees_real_edges() {
    // Guards the guard: if the graph were read wrongly, every test above would pass vacuously.
    let g = graph();
    let spindle = g.closure("spindle", false);
    for dep in ["spindle-model", "spindle-prune", "spindle-data", "tch", "clap"] {
        assert!(spindle.contains_key(dep), "spindle should reach {dep}");
    }
    assert_eq!(g.closure("spindle-model", false)["tch"], ["spindle-model", "tch"]);
    // tch is opaque: what it carries for itself is not charged to the crates using it.
    assert!(!spindle.contains_key("torch-sys"));
    // Dev-dependencies are seen only when asked for.
    assert!(!g.closure("spindle-tests", false).contains_key("serde_json"));
    assert!(g.closure("spindle-tests", true).contains_key("serde_json"));
}

/// The files of `src` (relative to `root`) that `file` names through `crate::` paths, resolved
/// to the longest module path that is a file; the crate roots are left out (every module may
/// name the root's items, and the root declares every module).
fn crate_imports(root: &Path, file: &Path) -> BTreeSet<PathBuf> {
    // Code only: a doc link (`[..](crate::prune::X)`) is not an import.
    let text: String =
        std::fs::read_to_string(file).unwrap().lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
    let src = root.join("src");
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let segs: Vec<&str> =
            rest.split("::").map(|s| s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).next().unwrap_or("")).take(4).collect();
        let mut best = None;
        let mut path = src.clone();
        for s in segs.iter().take_while(|s| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_ascii_lowercase())) {
            path = path.join(s);
            for cand in [path.with_extension("rs"), path.join("mod.rs")] {
                if cand.is_file() {
                    best = Some(cand);
                }
            }
        }
        if let Some(b) = best.filter(|b| b != file) {
            out.insert(b);
        }
    }
    out
}

#[test]
fn no_two_files_import_each_other_in_the_spindle_crate_or_xtask() {
    for krate in ["crates/spindle", "xtask"] {
        let root = workspace_root().join(krate);
        let mut files = Vec::new();
        let mut stack = vec![root.join("src")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    files.push(p);
                }
            }
        }
        let edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = files.iter().map(|f| (f.clone(), crate_imports(&root, f))).collect();
        let mut circles = Vec::new();
        for (a, targets) in &edges {
            for b in targets {
                if a < b && edges.get(b).is_some_and(|t| t.contains(a)) {
                    circles.push(format!("{} <-> {}", a.display(), b.display()));
                }
            }
        }
        assert!(circles.is_empty(), "{krate}: files that import each other: {circles:?}");
    }
    // The checker sees real edges: prune.rs names induce.rs.
    let root = workspace_root().join("crates/spindle");
    assert!(crate_imports(&root, &root.join("src/prune.rs")).contains(&root.join("src/induce.rs")));
}
