//! The run cache: what determines a run's figures, and so its key.
//!
//! Each run lives in `results/cache/<key>/`, where the key is a SHA-256 over exactly what
//! determines its figures: the `spindle` arguments (the calibration seed among them), the
//! model's identity (a known name, or the bytes of `config.json` and every safetensors header and
//! length of a directory), the data folder's `SHA256SUMS`, and the code version (see
//! [`code_version`]: each crate's sources and manifest, `Cargo.lock`, `eval/tasks/`; not the
//! tests). A run is finished when its `run.json` exists (written atomically, last). Runners that
//! share one cache take a run by locking its `run.lock` (`flock`, see [`RunLock`]), so two never compute
//! the same run at once.
//!
//! Every run computes with one set of ATen CPU kernels, [`kernels`]: libtorch picks the widest
//! its CPU has (AVX-512 on the machines this project ran on), and SparseGPT's and SI's figures
//! move with that choice (up to 2.8% on table1, `docs/results/cross_cpu.md`), while Intel and AMD
//! CPUs computed bit-identical figures with the same kernels. Pinned to AVX2, which every x86-64
//! CPU of the last decade and every hosted CI runner has, ATen computes the same on any of them;
//! MKL's own sgemm dispatch is not pinned, and on a third VM table1's calibrated rows still moved
//! by up to 2.0%, within the nightly's tolerance.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::spec::{self, Run, Table};

/// What a run's cache key is computed from, besides its own arguments.
pub(crate) struct Fingerprint {
    pub data_dir: PathBuf,
    pub data_hash: String,
    pub code_version: String,
    /// The ATen CPU kernels the runs compute with ([`kernels`]).
    pub kernels: String,
}

/// The ATen CPU capability runs are computed with: `$ATEN_CPU_CAPABILITY` when the caller set it,
/// else `avx2` on x86-64 (the kernels every such CPU has, so figures do not depend on whether it
/// also has AVX-512), else `native` (libtorch's own choice, not pinned).
pub(crate) fn kernels() -> String {
    kernels_from(std::env::var("ATEN_CPU_CAPABILITY").ok().as_deref(), cfg!(target_arch = "x86_64"))
}

fn kernels_from(env: Option<&str>, x86_64: bool) -> String {
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => v.to_owned(),
        None if x86_64 => "avx2".to_owned(),
        None => "native".to_owned(),
    }
}

/// A run with its cache key and state.
pub(crate) struct Planned {
    pub run: Run,
    /// The expanded model source (`None` when it cannot be resolved here: the reason).
    pub source: Result<String, String>,
    pub key: Option<String>,
}

impl Planned {
    pub(crate) fn dir(&self, cache: &Path) -> Option<PathBuf> {
        self.key.as_ref().map(|k| cache.join(k))
    }

    /// `model / row`, with the seed where the row has one: how progress lines name a run.
    pub(crate) fn name(&self) -> String {
        match self.run.seed {
            Some(s) => format!("{} / {} / seed {s}", self.run.model.id, self.run.row.id),
            None => format!("{} / {}", self.run.model.id, self.run.row.id),
        }
    }

    /// The figures of a finished run, from its `run.json`.
    pub(crate) fn finished(&self, cache: &Path) -> Option<Value> {
        crate::read_json(&self.dir(cache)?.join("run.json")).ok()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The data folder, by the convention every `spindle` command follows.
pub(crate) fn data_dir(flag: Option<&Path>, root: &Path) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("SPINDLE_DATA").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    for candidate in [root.join("data"), root.join("../shared/data")] {
        if candidate.is_dir() {
            return Ok(candidate);
        }
    }
    bail!("no data folder: pass --data-dir, set SPINDLE_DATA, or place the offline data at ./data or ../shared/data")
}

/// SHA-256 of the code that computes a figure, in sorted order, names included: each crate's
/// `Cargo.toml`, `build.rs` and `src/` (not its tests, benches or examples), the workspace
/// `Cargo.toml` (profiles, features), the task data `eval/tasks/`, and the `Cargo.lock` entries
/// of the packages those crates depend on (see [`locked_closure`]). A change to a test, a comment
/// outside `src/`, or xtask's own dependencies leaves cached runs valid.
pub(crate) fn code_version(root: &Path) -> Result<String> {
    let mut files = Vec::new();
    for p in ["Cargo.toml", "eval/tasks"] {
        collect_files(&root.join(p), &mut files)?;
    }
    let crates = root.join("crates");
    let mut members = Vec::new();
    for entry in std::fs::read_dir(&crates).with_context(|| format!("reading {}", crates.display()))? {
        let dir = entry?.path();
        if !dir.is_dir() {
            continue;
        }
        for p in ["Cargo.toml", "build.rs", "src"] {
            if dir.join(p).exists() {
                collect_files(&dir.join(p), &mut files)?;
            }
        }
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            let text = std::fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
            let value: toml::Value = toml::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
            if let Some(name) = value.get("package").and_then(|p| p.get("name")).and_then(|n| n.as_str()) {
                members.push(name.to_owned());
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(&f);
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0]);
        h.update(std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?);
        h.update([0]);
    }
    let lock = root.join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).with_context(|| format!("reading {}", lock.display()))?;
    h.update(b"Cargo.lock\0");
    h.update(locked_closure(&text, &members).with_context(|| format!("reading {}", lock.display()))?.as_bytes());
    Ok(hex(&h.finalize()))
}

/// The `Cargo.lock` entries reachable from the packages named in `roots` (the crates under
/// `crates/`), one canonical line each, sorted: name, version, source, checksum and
/// dependencies. A package only xtask or the tests crate pulls in (a plotting crate for a
/// report, say) is not part of it, so adding one does not orphan the cached runs.
pub(crate) fn locked_closure(lock: &str, roots: &[String]) -> Result<String> {
    let value: toml::Value = toml::from_str(lock).context("not a Cargo.lock")?;
    let packages = value.get("package").and_then(|p| p.as_array()).context("no [[package]] entries")?;
    let field = |p: &toml::Value, k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let deps = |p: &toml::Value| -> Vec<String> {
        p.get("dependencies")
            .and_then(|d| d.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    // A dependency is written "name", "name version" or "name version (source)".
    let find = |dep: &str| -> Result<usize> {
        let mut parts = dep.split(' ');
        let name = parts.next().unwrap_or_default();
        let version = parts.next();
        let hits: Vec<usize> = packages
            .iter()
            .enumerate()
            .filter(|(_, p)| field(p, "name") == name && version.is_none_or(|v| field(p, "version") == v))
            .map(|(i, _)| i)
            .collect();
        match hits.as_slice() {
            [i] => Ok(*i),
            [] => bail!("dependency {dep:?} has no [[package]] entry"),
            _ => bail!("dependency {dep:?} matches {} [[package]] entries", hits.len()),
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = Vec::new();
    for r in roots {
        todo.push(find(r)?);
    }
    while let Some(i) = todo.pop() {
        if seen.insert(i) {
            for d in deps(&packages[i]) {
                todo.push(find(&d)?);
            }
        }
    }
    let mut lines: Vec<String> = seen
        .iter()
        .map(|&i| {
            let p = &packages[i];
            format!("{} {} {} {} [{}]", field(p, "name"), field(p, "version"), field(p, "source"), field(p, "checksum"), deps(p).join(", "))
        })
        .collect();
    lines.sort();
    Ok(lines.join("\n"))
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
    } else if meta.is_dir() {
        for entry in std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))? {
            collect_files(&entry?.path(), out)?;
        }
    }
    Ok(())
}

/// A model's identity: a known name as itself (the binary pins its download by SHA-256); a
/// directory by its config.json and its safetensors headers and lengths (a header lists every
/// tensor's name, dtype, shape and offsets, so any re-export changes it).
fn model_hash(source: &str) -> Result<String> {
    let dir = Path::new(source);
    if !dir.exists() && !source.contains('/') {
        return Ok(format!("name:{source}"));
    }
    if !dir.is_dir() {
        bail!("model {source}: no such directory");
    }
    let mut h = Sha256::new();
    let config = dir.join("config.json");
    h.update(std::fs::read(&config).with_context(|| format!("model {source}: reading {}", config.display()))?);
    let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    weights.sort();
    if weights.is_empty() {
        bail!("model {source}: no .safetensors files");
    }
    for w in weights {
        let mut f = File::open(&w).with_context(|| format!("opening {}", w.display()))?;
        let len = f.metadata()?.len();
        let mut n = [0u8; 8];
        f.read_exact(&mut n).with_context(|| format!("{}: not a safetensors file", w.display()))?;
        let header_len = u64::from_le_bytes(n);
        if header_len > len.saturating_sub(8) {
            bail!("{}: its header length {header_len} exceeds the file", w.display());
        }
        let mut header = vec![0u8; header_len as usize];
        f.read_exact(&mut header).with_context(|| format!("reading the header of {}", w.display()))?;
        h.update(w.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        h.update(len.to_le_bytes());
        h.update(&header);
    }
    Ok(format!("dir:{}", hex(&h.finalize())))
}

/// The cache key of a run.
pub(crate) fn run_key(run: &Run, model_hash: &str, fp: &Fingerprint) -> String {
    let mut h = Sha256::new();
    let mut line = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update([0x1f]);
        h.update(v.as_bytes());
        h.update([0x1e]);
    };
    line("schema", "spindle-run/3");
    line("model", model_hash);
    let prune = match &run.prune {
        Some(r) => r.to_toml().unwrap_or_else(|e| format!("unwritable recipe: {e}")),
        None => "dense".to_owned(),
    };
    line("prune", &prune);
    for e in &run.evals {
        line("eval", &e.args.join("\u{1f}"));
    }
    line("data", &fp.data_hash);
    line("code", &fp.code_version);
    line("kernels", &fp.kernels);
    hex(&h.finalize())[..24].to_owned()
}

/// Expands and keys the runs of a table's profile, filtered by `--only`.
pub(crate) fn plan(table: &Table, profile: &str, only: &[String], fp: &Fingerprint) -> Result<Vec<Planned>> {
    let profile = table.profile(profile)?;
    for o in only {
        if table.row(o).is_none() {
            let rows: Vec<&str> = table.rows.iter().map(|r| r.id.as_str()).collect();
            bail!("--only {o:?}: table {} has no such row (its rows: {})", table.name, rows.join(", "));
        }
    }
    let mut hashes: std::collections::BTreeMap<String, Result<(String, String), String>> = Default::default();
    let mut out = Vec::new();
    for run in table.runs(profile) {
        if !only.is_empty() && !only.contains(&run.row.id) {
            continue;
        }
        let resolved = hashes
            .entry(run.model.id.clone())
            .or_insert_with(|| {
                let src = spec::expand_source(&run.model.source).map_err(|e| format!("{e:#}"))?;
                let h = model_hash(&src).map_err(|e| format!("{e:#}"))?;
                Ok((src, h))
            })
            .clone();
        let (source, key) = match resolved {
            Ok((src, h)) => {
                let key = run_key(&run, &h, fp);
                (Ok(src), Some(key))
            }
            Err(e) => (Err(e), None),
        };
        out.push(Planned { run, source, key });
    }
    Ok(out)
}

/// `results/` of the workspace, or `$SPINDLE_RESULTS` where set (a shared filesystem several
/// machines run one table into, or a test's own folder).
pub(crate) fn results_dir(root: &Path) -> PathBuf {
    match std::env::var_os("SPINDLE_RESULTS").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => root.join("results"),
    }
}

pub(crate) fn cache_dir(root: &Path) -> PathBuf {
    results_dir(root).join("cache")
}

/// `results/<table>` for the cpu profile, `results/<table>-<profile>` otherwise (no extension).
pub(crate) fn output_stem(root: &Path, table: &str, profile: &str) -> PathBuf {
    let name = if profile == "cpu" { table.to_owned() } else { format!("{table}-{profile}") };
    results_dir(root).join(name)
}

/// The papers' C4 shards (`spindle_data::corpus::C4_TRAIN_SHARD`, `C4_VALIDATION_SHARD`): with
/// both in the data folder spindle reads C4 from them instead of the offline sample.
const C4_SHARDS: [&str; 2] = ["c4/en/c4-train.00000-of-01024.json.gz", "c4/en/c4-validation.00000-of-00008.json.gz"];

/// The data folder and code version runs are keyed by, from `--data-dir` or the convention. The
/// data hash covers the folder's `SHA256SUMS` and, when both are present, the C4 shards' digests
/// (which C4 a run reads is part of what determines its figures).
pub(crate) fn fingerprint(data_flag: Option<&Path>, root: &Path) -> Result<Fingerprint> {
    let data_dir = data_dir(data_flag, root)?;
    let sums = data_dir.join("SHA256SUMS");
    let mut bytes = std::fs::read(&sums).with_context(|| format!("reading {} (the data folder's checksums)", sums.display()))?;
    if C4_SHARDS.iter().all(|s| data_dir.join(s).is_file()) {
        for s in C4_SHARDS {
            let path = data_dir.join(s);
            let mut h = Sha256::new();
            std::io::copy(&mut File::open(&path).with_context(|| format!("opening {}", path.display()))?, &mut h)
                .with_context(|| format!("reading {}", path.display()))?;
            bytes.extend_from_slice(format!("\n{}  {s}", hex(&h.finalize())).as_bytes());
        }
    }
    Ok(Fingerprint { data_hash: hex(&Sha256::digest(&bytes)), data_dir, code_version: code_version(root)?, kernels: kernels() })
}

/// A claim on one run's cache directory: an exclusive advisory lock (`flock`) on its `run.lock`,
/// which the kernel releases when the holder exits however it exits (finished, failed, killed), so
/// a claim never goes stale and no runner ever has to decide that another is dead. The file stays
/// (deleting it would let two runners lock two different files of the same name); it holds the
/// holder's process id for people, and nothing reads it.
pub(crate) struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Claims `dir` (created if needed); `None` when another runner holds it.
    pub(crate) fn take(dir: &Path) -> Result<Option<RunLock>> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("run.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                use std::io::Write;
                let _ = file.set_len(0);
                let _ = write!(&file, "{}", std::process::id());
                Ok(Some(RunLock { _file: file }))
            }
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project_root;

    fn fp() -> Fingerprint {
        Fingerprint { data_dir: PathBuf::from("/d"), data_hash: "d".repeat(64), code_version: "c".repeat(64), kernels: "avx2".into() }
    }

    #[test]
    fn the_kernels_are_avx2_on_x86_64_unless_the_caller_chose() {
        assert_eq!(kernels_from(None, true), "avx2");
        assert_eq!(kernels_from(Some(""), true), "avx2");
        assert_eq!(kernels_from(Some("avx512"), true), "avx512");
        assert_eq!(kernels_from(None, false), "native");
        assert_eq!(kernels_from(Some("default"), false), "default");
    }

    #[test]
    fn the_c4_shards_are_the_ones_spindle_reads() {
        let corpus = include_str!("../../crates/spindle-data/src/corpus.rs");
        for s in C4_SHARDS {
            assert!(corpus.contains(&format!("\"{s}\"")), "{s}");
        }
    }

    #[test]
    fn keys_change_with_what_determines_the_figures_and_nothing_else() {
        let t = crate::spec::load(&project_root(), "table2").unwrap();
        let runs = t.runs(t.profile("cpu").unwrap());
        assert!(runs.len() >= 3);
        let k = |r: &Run, f: &Fingerprint| run_key(r, "name:smollm2-135m", f);
        let base = k(&runs[1], &fp());
        assert_eq!(base, k(&runs[1], &fp()), "a key is a pure function");
        assert_ne!(base, k(&runs[2], &fp()), "rows differ");
        assert_ne!(base, run_key(&runs[1], "name:other", &fp()), "models differ");
        let mut other = fp();
        other.code_version = "e".repeat(64);
        assert_ne!(base, k(&runs[1], &other), "code versions differ");
        let mut other = fp();
        other.data_hash = "e".repeat(64);
        assert_ne!(base, k(&runs[1], &other), "data differs");
        let mut other = fp();
        other.kernels = "avx512".into();
        assert_ne!(base, k(&runs[1], &other), "kernels differ");
        let mut other = fp();
        other.data_dir = PathBuf::from("/elsewhere");
        assert_eq!(base, k(&runs[1], &other), "the same data in another folder is the same run");
    }

    #[test]
    fn the_code_version_follows_sources_and_manifests_not_tests() {
        let root = std::env::temp_dir().join(format!("xtask-code-version-{}", std::process::id()));
        let w = |p: &str, text: &str| {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let lock = |xtask_dep: &str, a_dep_version: &str| {
            format!(
                "[[package]]\nname = \"a\"\nversion = \"0.1.0\"\ndependencies = [\"dep\"]\n\n\
                 [[package]]\nname = \"dep\"\nversion = \"{a_dep_version}\"\n\n\
                 [[package]]\nname = \"xtask\"\nversion = \"0.1.0\"\ndependencies = [\"dep\", \"{xtask_dep}\"]\n\n\
                 [[package]]\nname = \"{xtask_dep}\"\nversion = \"1.0.0\"\n"
            )
        };
        for (p, t) in [
            ("Cargo.toml", "[workspace]"),
            ("Cargo.lock", lock("plot", "1.0.0").as_str()),
            ("eval/tasks/piqa.toml", "v = 1"),
            ("crates/a/Cargo.toml", "[package]\nname = \"a\""),
            ("crates/a/src/lib.rs", "fn a() {}"),
            ("crates/a/tests/t.rs", "#[test] fn t() {}"),
        ] {
            w(p, t);
        }
        let v0 = code_version(&root).unwrap();
        w("crates/a/tests/t.rs", "#[test] fn t2() {}");
        assert_eq!(code_version(&root).unwrap(), v0, "a test does not compute figures");
        w("Cargo.lock", &lock("chart", "1.0.0"));
        assert_eq!(code_version(&root).unwrap(), v0, "xtask's own dependencies do not compute figures");
        for (p, t) in [
            ("crates/a/src/lib.rs", "fn b() {}"),
            ("crates/a/Cargo.toml", "[package]\nname = \"a\"\nx = 1"),
            ("Cargo.toml", "[profile]"),
            ("Cargo.lock", lock("chart", "1.0.1").as_str()),
            ("eval/tasks/piqa.toml", "v = 2"),
            ("crates/a/build.rs", "fn main() {}"),
        ] {
            let before = code_version(&root).unwrap();
            w(p, t);
            assert_ne!(code_version(&root).unwrap(), before, "{p} changes the figures");
        }
        std::fs::remove_dir_all(&root).unwrap();
        let real = std::fs::read_to_string(project_root().join("Cargo.lock")).unwrap();
        let closure = locked_closure(&real, &["spindle".to_owned()]).unwrap();
        assert!(closure.contains("\ntch 0.26"), "spindle reaches tch");
        assert!(!closure.contains("\nxtask "), "the binary does not depend on xtask");
        assert!(code_version(&project_root()).is_ok());
    }

    #[test]
    fn a_directory_model_is_known_by_its_config_and_headers() {
        let dir = std::env::temp_dir().join(format!("xtask-model-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut st = (header.len() as u64).to_le_bytes().to_vec();
        st.extend_from_slice(header);
        st.extend_from_slice(&[0, 0, 128, 63]);
        std::fs::write(dir.join("model.safetensors"), &st).unwrap();
        let src = dir.to_string_lossy().into_owned();
        let a = model_hash(&src).unwrap();
        std::fs::write(dir.join("config.json"), "{\"x\":1}").unwrap();
        let b = model_hash(&src).unwrap();
        assert_ne!(a, b);
        std::fs::write(dir.join("model.safetensors"), &st[..12]).unwrap();
        let e = format!("{:#}", model_hash(&src).unwrap_err());
        assert!(e.contains("model.safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(model_hash("smollm2-135m").unwrap(), "name:smollm2-135m");
        assert!(format!("{:#}", model_hash("/no/such/model").unwrap_err()).contains("/no/such/model"));
    }
}

#[cfg(test)]
mod lock_tests {
    use super::RunLock;

    #[test]
    fn a_run_is_claimed_once_even_by_racing_runners_and_a_dead_claim_frees_itself() {
        let dir = std::env::temp_dir().join(format!("xtask-lock-{}", std::process::id()));
        let first = RunLock::take(&dir).unwrap().expect("a free run is claimed");
        assert!(RunLock::take(&dir).unwrap().is_none(), "a held run is not claimed twice");
        drop(first);
        // Sixteen runners race for a free run: exactly one wins.
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let (dir, barrier) = (dir.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let lock = RunLock::take(&dir).unwrap();
                    let won = lock.is_some();
                    barrier.wait(); // hold it until every runner has tried
                    won
                })
            })
            .collect();
        let winners = handles.into_iter().map(|h| h.join().unwrap()).filter(|w| *w).count();
        assert_eq!(winners, 1);
        // A holder killed with SIGKILL: the kernel drops its lock, and the run is free again.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec 9<>\"$0\"; flock 9; exec sleep 30"])
            .arg(dir.join("run.lock"))
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while RunLock::take(&dir).unwrap().is_some() {
            assert!(started.elapsed().as_secs() < 10, "the other process never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(RunLock::take(&dir).unwrap().is_some(), "a killed holder's claim is free");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
