//! `--model ORG/NAME[@REVISION]` against a hub served by this test on localhost (`HF_ENDPOINT`),
//! speaking the hub's download protocol (`/api/models/<repo>/revision/<rev>` for the commit and
//! file list; `/<repo>/resolve/<rev>/<file>` with ranges, `X-Repo-Commit` and `ETag`) and serving
//! the converted stories260K: a download, a second run with the server stopped, `HF_HUB_OFFLINE`
//! with and without a cached snapshot, a gated repository with and without a token, and a
//! revision pin. The same server serves dataset files (`/datasets/<repo>/resolve/...`): named
//! corpora and tasks missing from the data folder are fetched from it and checked by SHA-256.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;

use sha2::Digest as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_secret";

fn stories(out: &Path) {
    common::convert_stories(Path::new(env!("CARGO_BIN_EXE_spindle")), out);
}

/// A hub on localhost: `spindle-test/stories` (revisions `main` and `v1` at [`COMMIT`]),
/// `spindle-test/gated` (the same files, only with `Authorization: Bearer` [`TOKEN`]) and
/// `spindle-test/hostile` (its files answered by a redirect without a `Location`).
struct Hub {
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hub {
    fn serve(files: BTreeMap<String, Vec<u8>>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return; // the listener is dropped: connections are refused from now on
                }
                if let Ok(conn) = conn {
                    let _ = answer(conn, &files);
                }
            }
        });
        Hub { url, stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn answer(mut conn: TcpStream, files: &BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // Dataset repositories are served at the same paths under `/datasets`.
    let path = path.strip_prefix("/datasets").map(str::to_owned).unwrap_or(path);
    let repo_of = |p: &str| {
        [
            "spindle-test/stories",
            "spindle-test/gated",
            "spindle-test/hostile",
            "Salesforce/wikitext",
            "nyu-mll/glue",
            "allenai/winogrande",
            "allenai/c4",
            "ptb-text-only/ptb_text_only",
            "aps/super_glue",
        ]
        .into_iter()
        .find(|r| p.contains(r))
    };
    let Some(repo) = repo_of(&path) else { return respond(&mut conn, "404 Not Found", &[], b"no such repo") };
    if repo.ends_with("gated") && headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}")) {
        return respond(&mut conn, "401 Unauthorized", &[], b"gated");
    }
    let revision_ok = |rev: &str| ["main", "v1", COMMIT].contains(&rev);
    if let Some(rest) = path.strip_prefix(&format!("/api/models/{repo}/revision/")) {
        if !revision_ok(rest) {
            return respond(&mut conn, "404 Not Found", &[], b"no such revision");
        }
        let siblings: Vec<String> = files.keys().map(|f| format!("{{\"rfilename\":\"{f}\"}}")).collect();
        let body = format!("{{\"id\":\"{repo}\",\"sha\":\"{COMMIT}\",\"siblings\":[{}]}}", siblings.join(","));
        return respond(&mut conn, "200 OK", &[("Content-Type", "application/json".into())], body.as_bytes());
    }
    let Some(rest) = path.strip_prefix(&format!("/{repo}/resolve/")) else { return respond(&mut conn, "404 Not Found", &[], b"") };
    if repo.ends_with("hostile") {
        // A redirect without a Location, which hf-hub 0.4 unwraps.
        return respond(&mut conn, "302 Found", &[("X-Repo-Commit", COMMIT.to_owned()), ("ETag", "\"e\"".into())], b"");
    }
    let Some((rev, file)) = rest.split_once('/') else { return respond(&mut conn, "404 Not Found", &[], b"") };
    let (true, Some(body)) = (revision_ok(rev), files.get(file)) else { return respond(&mut conn, "404 Not Found", &[], b"") };
    // The hub's ETag of a file in LFS is its SHA-256 (a file named `tampered…` gets a wrong one).
    let etag = if file.contains("tampered") {
        format!("\"{}\"", "0".repeat(64))
    } else {
        format!("\"{}\"", sha2::Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    let common = vec![("X-Repo-Commit", COMMIT.to_owned()), ("ETag", etag)];
    match headers.get("range").and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((start, end)) => {
            let start: usize = start.parse().unwrap_or(0).min(body.len());
            let end: usize = if end.is_empty() { body.len().saturating_sub(1) } else { end.parse().unwrap_or(0) };
            let end = end.min(body.len().saturating_sub(1));
            let slice = if body.is_empty() { &body[..] } else { &body[start..=end] };
            let mut h = common;
            h.push(("Content-Range", format!("bytes {start}-{end}/{}", body.len())));
            respond(&mut conn, "206 Partial Content", &h, slice)
        }
        None => respond(&mut conn, "200 OK", &common, body),
    }
}

fn spindle(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spindle"));
    c.args(args).env_remove("RUST_LOG").env_remove("HF_TOKEN").env_remove("HF_HUB_OFFLINE").env_remove("HF_HUB_CACHE");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn hub_ids_download_into_the_hugging_face_cache_and_resolve_offline() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let files: BTreeMap<String, Vec<u8>> = std::fs::read_dir(&model)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .chain([("README.md".to_owned(), b"not a file a model needs".to_vec())])
        .collect();
    let mut hub = Hub::serve(files.clone());
    let home = t.path().join("hf");
    let home_s = home.to_str().unwrap().to_owned();
    let url = hub.url.clone();
    let env = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, String)> = vec![("HF_ENDPOINT", url.clone()), ("HF_HOME", home_s.clone())];
        v.extend(extra.iter().map(|(k, val)| (*k, (*val).to_owned())));
        v
    };
    let run = |args: &[&str], env: &[(&str, String)]| {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        spindle(args, &env)
    };
    let ok = |o: &Output| {
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let snapshot = home.join("hub/models--spindle-test--stories/snapshots").join(COMMIT);

    // Downloaded into the Hugging Face cache, at the revision's commit, the files a model needs.
    let out = ok(&run(&["inspect", "spindle-test/stories"], &env(&[])));
    assert!(out.contains("LlamaForCausalLM") || out.contains("llama"), "{out}");
    for f in files.keys().filter(|f| *f != "README.md") {
        assert_eq!(std::fs::read(snapshot.join(f)).unwrap(), files[f], "{f}");
    }
    assert!(!snapshot.join("README.md").exists(), "only the files a model needs are fetched");
    assert_eq!(std::fs::read_to_string(home.join("hub/models--spindle-test--stories/refs/main")).unwrap(), COMMIT);
    // The report names the snapshot, and so the commit.
    let json = t.path().join("inspect.json");
    ok(&run(&["inspect", "spindle-test/stories@v1", "--json", json.to_str().unwrap()], &env(&[])));
    assert!(std::fs::read_to_string(&json).unwrap().contains(COMMIT));

    // A gated repository: refused without a token, with one clear line; served with HF_TOKEN.
    let o = run(&["inspect", "spindle-test/gated"], &env(&[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("hub model spindle-test/gated@main: access denied") && err.contains("set HF_TOKEN"), "{err}");
    let o = run(&["inspect", "spindle-test/gated"], &env(&[("HF_TOKEN", "wrong")]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the token in HF_TOKEN was refused"));
    ok(&run(&["inspect", "spindle-test/gated"], &env(&[("HF_TOKEN", TOKEN)])));
    // A hostile answer is one line naming the id, never a panic.
    let o = run(&["inspect", "spindle-test/hostile"], &env(&[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("spindle: error: hub model spindle-test/hostile@main: the hub's answer broke the download client"), "{err}");
    // An unknown revision is named.
    let o = run(&["inspect", "spindle-test/stories@v9"], &env(&[]));
    assert!(String::from_utf8_lossy(&o.stderr).contains("spindle-test/stories@v9") && o.status.code() == Some(1));

    // The hub gone: the cached snapshot serves, and the run says so.
    hub.stop();
    let o = run(&["inspect", "spindle-test/stories"], &env(&[]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("using the cached snapshot {COMMIT}")));
    // Pinned to the commit, offline.
    ok(&run(&["inspect", &format!("spindle-test/stories@{COMMIT}")], &env(&[("HF_HUB_OFFLINE", "1")])));
    // HF_HUB_OFFLINE with the snapshot: no network, no warning; without one: one line saying so.
    let o = run(&["inspect", "spindle-test/stories"], &env(&[("HF_HUB_OFFLINE", "1")]));
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).is_empty());
    let o = run(&["inspect", "spindle-test/other"], &env(&[("HF_HUB_OFFLINE", "1")]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("spindle: error: hub model spindle-test/other@main: HF_HUB_OFFLINE is set and "), "{err}");
    // Unreachable and not cached: one line naming the id and what to do.
    let o = run(&["inspect", "spindle-test/other"], &env(&[]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("spindle-test/other@main") && err.contains("cannot be reached") && err.lines().count() == 1, "{err}");
    // A mistyped relative path reads as a hub id: both readings are named.
    assert!(err.trim_end().ends_with("(and no directory \"spindle-test/other\" exists)"), "{err}");

    // A pruned hub model runs end to end from the cache.
    let pruned = t.path().join("pruned");
    let report = t.path().join("prune.json");
    ok(&run(
        &[
            "prune",
            "--model",
            "spindle-test/stories",
            "--method",
            "magnitude",
            "--sparsity",
            "0.5",
            "--out",
            pruned.to_str().unwrap(),
            "--json",
            report.to_str().unwrap(),
        ],
        &env(&[("HF_HUB_OFFLINE", "1")]),
    ));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["model_commit"], COMMIT, "the report names the commit");
}

/// A named corpus or task whose file the data folder lacks is fetched from its public dataset
/// repository (`eval/data_sources.toml`), checked against the recorded SHA-256 and placed in the
/// folder; a download with other bytes is refused and not kept; a re-packaging no repository
/// holds, and `HF_HUB_OFFLINE`, are one line each naming the file and why; with no data folder at
/// all, the files go to spindle's cache.
#[test]
fn named_corpora_and_tasks_missing_from_the_data_folder_are_fetched_and_checked() {
    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("stories");
    stories(&model);
    let shared = common::data();
    let wikitext = "wikitext-2-raw-v1/test-00000-of-00001.parquet";
    let real = std::fs::read(shared.join("wikitext").join(wikitext)).unwrap();
    let mut rte = std::fs::read(shared.join("tasks/glue/rte/validation-00000-of-00001.parquet")).unwrap();
    let middle = rte.len() / 2;
    rte[middle] ^= 1;
    let files: BTreeMap<String, Vec<u8>> = [
        (wikitext.to_owned(), real.clone()),
        ("rte/validation-00000-of-00001.parquet".to_owned(), rte),
        (
            "winogrande_xl/validation-00000-of-00001.parquet".to_owned(),
            std::fs::read(shared.join("tasks/winogrande/winogrande_xl/validation-00000-of-00001.parquet")).unwrap(),
        ),
    ]
    .into();
    // Two tiny C4 shards, gzipped JSON lines as allenai/c4 holds them.
    let c4: BTreeMap<&str, Vec<u8>> = ["en/c4-validation.00000-of-00008.json.gz", "en/c4-train.00000-of-01024.json.gz"]
        .into_iter()
        .map(|shard| {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            for i in 0..1200 {
                writeln!(e, "{}", serde_json::json!({"text": format!("Once upon a time there was a cat number {i} in {shard}.")})).unwrap();
            }
            (shard, e.finish().unwrap())
        })
        .collect();
    let files: BTreeMap<String, Vec<u8>> = files
        .into_iter()
        .chain(c4.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
        .chain([("en/tampered.json.gz".to_owned(), c4["en/c4-train.00000-of-01024.json.gz"].clone())])
        .collect();
    let mut hub = Hub::serve(files);
    let url = hub.url.clone();
    let data = t.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let work = t.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let run = |args: &[&str], extra: &[(&str, &str)], cwd: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_spindle"));
        c.current_dir(cwd).args(args).env_remove("RUST_LOG").env_remove("HF_TOKEN").env_remove("HF_HUB_OFFLINE").env_remove("SPINDLE_DATA");
        c.env("HF_ENDPOINT", &url).env("HF_HOME", t.path().join("hf")).env("SPINDLE_CACHE", t.path().join("cache"));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let stats = |dir: &str, json: &Path, cwd: &Path, extra: &[(&str, &str)]| {
        let mut args = vec!["data", "stats", "--model", m, "--corpus", "wikitext2", "--seqlen", "64", "--json", json.to_str().unwrap()];
        if !dir.is_empty() {
            args.extend(["--data-dir", dir]);
        }
        let o = run(&args, extra, cwd);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
        (v["tokens"].clone(), v["windows"].clone())
    };
    let reference = stats(shared.to_str().unwrap(), &t.path().join("ref.json"), &work, &[]);
    assert!(reference.0.as_u64().unwrap() > 0, "{reference:?}");

    // Fetched into the folder, the offline file's bytes, the same counts.
    assert_eq!(stats(d, &t.path().join("a.json"), &work, &[]), reference);
    assert_eq!(std::fs::read(data.join("wikitext").join(wikitext)).unwrap(), real);

    // Other bytes than recorded: refused with both digests, nothing kept.
    let o = run(&["eval", "--model", m, "--tasks", "rte", "--limit", "2", "--data-dir", d], &[], &work);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("spindle: error")).count(), 1, "{err}");
    assert!(
        err.contains("hub dataset nyu-mll/glue, file rte/validation-00000-of-00001.parquet: downloaded SHA-256 ")
            && err.contains("not the recorded 0e2545b64ed7b3548573179c8d3ca6cb9160ab6cec18647b20086fb9759fe5b5"),
        "{err}"
    );
    assert!(!data.join("tasks/glue").exists(), "a refused download is not placed");

    // A re-packaging no repository holds.
    let o = run(&["eval", "--model", m, "--tasks", "arc_easy", "--limit", "2", "--data-dir", d], &[], &work);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("ARC-Easy/test-00000-of-00001.parquet: not in the data folder, and it cannot be fetched: recovered from"),
        "{err}"
    );

    // HF_HUB_OFFLINE: named, not fetched.
    let o = run(&["eval", "--model", m, "--tasks", "winogrande", "--limit", "2", "--data-dir", d], &[("HF_HUB_OFFLINE", "1")], &work);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE is set, so it is not fetched from hub dataset allenai/winogrande"), "{err}");
    assert!(!data.join("tasks").exists());

    // No data folder anywhere: spindle's cache holds what is fetched.
    assert_eq!(stats("", &t.path().join("b.json"), &work, &[]), reference);
    assert_eq!(std::fs::read(t.path().join("cache/data/wikitext").join(wikitext)).unwrap(), real);

    // The papers' C4 shards, fetched into the folder's layout, are what C4 then reads (no
    // offline-sample note), for perplexity and calibration.
    for shard in ["en/c4-validation.00000-of-00008.json.gz", "en/c4-train.00000-of-01024.json.gz"] {
        let o = run(&["data", "fetch", "allenai/c4", shard, "--into", d], &[], &work);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(std::fs::read(data.join("c4").join(shard)).unwrap(), c4[shard]);
    }
    // A download whose bytes do not hash to the hub's ETag is refused and not placed.
    let o = run(&["data", "fetch", "allenai/c4", "en/tampered.json.gz", "--into", d], &[], &work);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hub dataset allenai/c4, file en/tampered.json.gz: the downloaded bytes hash to ") && err.contains(&"0".repeat(64)),
        "{err}"
    );
    assert!(!data.join("c4/en/tampered.json.gz").exists());
    let json = t.path().join("c4.json");
    let o = run(
        &["data", "stats", "--model", m, "--corpus", "c4", "--seqlen", "16", "--data-dir", d, "--json", json.to_str().unwrap()],
        &[],
        &work,
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!((v["documents"].as_u64(), v["note"].as_str()), (Some(1100), Some("")), "{v}");
    let o = run(&["data", "calib", "--model", m, "--calib", "c4", "--nsamples", "2", "--seqlen", "8", "--data-dir", d], &[], &work);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.lines().count() == 2 && !out.contains("no train shard"), "{out}");

    // The hub gone: the fetched file serves.
    hub.stop();
    assert_eq!(stats(d, &t.path().join("c.json"), &work, &[]), reference);
}

/// `spindle data fetch --named` builds a data folder from public sources (CI's data step on a
/// runner without the offline folder): every file with a hub origin, byte for byte the offline
/// folder's, and a list of the re-packagings left out with their reasons; run again with the hub
/// gone, it finds them in place and fetches nothing.
#[test]
fn data_fetch_named_builds_the_hub_part_of_the_data_folder() {
    use spindle_data::sources::{Origin, sources};
    let t = tempfile::tempdir().unwrap();
    let shared = common::data();
    let hub_files: Vec<(&str, &str)> = sources()
        .iter()
        .filter_map(|s| match &s.origin {
            Origin::Hub(h) => Some((s.path.as_str(), h.file.as_str())),
            Origin::Unavailable(_) => None,
        })
        .collect();
    let unavailable = sources().len() - hub_files.len();
    assert_eq!((hub_files.len(), unavailable), (6, 7));
    let files: BTreeMap<String, Vec<u8>> =
        hub_files.iter().map(|(path, file)| ((*file).to_owned(), std::fs::read(shared.join(path)).unwrap())).collect();
    let mut hub = Hub::serve(files);
    let url = hub.url.clone();
    let data = t.path().join("built");
    let run = |extra: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_spindle"));
        c.current_dir(t.path()).args(["data", "fetch", "--named", "--into", data.to_str().unwrap()]);
        c.env_remove("RUST_LOG").env_remove("HF_TOKEN").env_remove("HF_HUB_OFFLINE").env_remove("SPINDLE_DATA");
        c.env("HF_ENDPOINT", &url).env("HF_HOME", t.path().join("hf")).env("SPINDLE_CACHE", t.path().join("cache"));
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // Offline with nothing in place: the first file is named, nothing is written.
    let o = run(&[("HF_HUB_OFFLINE", "1")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("HF_HUB_OFFLINE is set, so it is not fetched from hub dataset Salesforce/wikitext"), "{err}");
    assert!(!data.exists());

    let o = run(&[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    for (path, _) in &hub_files {
        assert_eq!(std::fs::read(data.join(path)).unwrap(), std::fs::read(shared.join(path)).unwrap(), "{path}");
    }
    let left: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("left out")).skip(1).collect();
    assert_eq!(left.len(), unavailable, "{out}");
    assert!(left.iter().any(|l| l.starts_with("  c4/en/c4-validation-sample-2k.parquet: a 2000-document sample")), "{out}");

    // In place already: the hub is not asked again.
    hub.stop();
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}
