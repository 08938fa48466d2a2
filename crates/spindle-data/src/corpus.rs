//! Named corpora with the reference text construction, and calibration windows drawn exactly as
//! the Wanda and SparseGPT loaders draw them.
//!
//! Evaluation text (perplexity), as SparseGPT/Wanda build it:
//! - `wikitext2`: `"\n\n".join(test rows)`;
//! - `c4`: `" ".join(documents)`, tokenized, truncated to 256 × seqlen tokens. With the papers'
//!   shards in the data folder (`c4/en/c4-train.00000-of-01024.json.gz` and
//!   `c4/en/c4-validation.00000-of-00008.json.gz`, as `allenai/c4` holds them; `spindle data fetch`
//!   puts them there), perplexity uses the validation shard's first 1100 documents and calibration
//!   the whole train shard, exactly as the SparseGPT/Wanda loaders do. Without them, the offline
//!   sample stands in: perplexity uses documents [1000, 2000) of `c4-validation-sample-2k.parquet`
//!   and calibration documents [0, 1000) ([`C4_NOTE`] says so in every report). Which one is used
//!   depends only on the files present ([`c4_source`]), never on the network;
//! - `ptb`: `" ".join(test sentences)`;
//! - a file: a `.txt` file's whole text, or `"\n\n".join` of the `text` column of a `.jsonl` or
//!   `.parquet` file.
//!
//! Calibration ([`sample_windows`]): `random.seed(seed)`; per sample, draw a document with
//! `randint(0, len(docs) - 1)` until one tokenizes to more than seqlen tokens, then an offset with
//! `randint(0, ntokens - seqlen - 1)` — through [`crate::pyrandom`], CPython's Mersenne Twister,
//! so the same seed picks the same windows as Python.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::cache::{CacheOutcome, TokenCache};
use crate::pyrandom::PyRandom;
use crate::{DataDir, DataError, Tokenizer};

/// What every report that involves C4 says about the offline split.
pub const C4_NOTE: &str = "C4: no train shard offline; calibration draws from documents [0, 1000) and perplexity uses documents [1000, 2000) of c4/en/c4-validation-sample-2k.parquet";

const WIKITEXT2_TEST: &str = "wikitext/wikitext-2-raw-v1/test-00000-of-00001.parquet";
const C4_SAMPLE: &str = "c4/en/c4-validation-sample-2k.parquet";
/// The papers' C4 files (`allenai/c4`), relative to the data folder.
pub const C4_TRAIN_SHARD: &str = "c4/en/c4-train.00000-of-01024.json.gz";
pub const C4_VALIDATION_SHARD: &str = "c4/en/c4-validation.00000-of-00008.json.gz";
/// The reference's C4 perplexity text: `" ".join(valdata[:1100]["text"])`.
const C4_VALIDATION_DOCS: usize = 1100;

/// Which C4 files a run reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C4Source {
    /// The papers' train and validation shards.
    Shards,
    /// The offline validation sample, split in two.
    Sample,
}

impl fmt::Display for C4Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            C4Source::Shards => "shards",
            C4Source::Sample => "sample",
        })
    }
}

/// The shards when both are in the data folder, else the sample.
pub fn c4_source(root: &Path) -> C4Source {
    if root.join(C4_TRAIN_SHARD).is_file() && root.join(C4_VALIDATION_SHARD).is_file() { C4Source::Shards } else { C4Source::Sample }
}

/// The `text` field of each line of a gzipped JSON-lines file (C4's shards).
pub fn read_json_gz_documents(path: &Path) -> Result<Vec<String>, DataError> {
    use std::io::BufRead;
    let file = spindle_io::regular_file(path).map_err(|io| DataError::Io { path: path.to_path_buf(), io })?;
    let reader = std::io::BufReader::new(flate2::read::MultiGzDecoder::new(file));
    let bad = |problem: String| DataError::Corpus { path: path.to_path_buf(), problem };
    let mut docs = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| bad(format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| bad(format!("line {}: not JSON: {e}", i + 1)))?;
        let text = value.get("text").and_then(|t| t.as_str()).ok_or_else(|| bad(format!("line {}: no string field `text`", i + 1)))?;
        docs.push(text.to_owned());
    }
    Ok(docs)
}
const PTB_TEST: &str = "ptb_text_only/penn_treebank/test-00000-of-00001.parquet";

/// The data-folder files the named corpora read.
pub const NAMED_FILES: [&str; 3] = [WIKITEXT2_TEST, C4_SAMPLE, PTB_TEST];

/// A corpus as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corpus {
    WikiText2,
    C4,
    Ptb,
    /// A `.txt`, `.jsonl` or `.parquet` file (the latter two with a `text` column).
    File(PathBuf),
}

impl FromStr for Corpus {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "wikitext2" => Corpus::WikiText2,
            "c4" => Corpus::C4,
            "ptb" => Corpus::Ptb,
            path => Corpus::File(PathBuf::from(path)),
        })
    }
}

impl fmt::Display for Corpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corpus::WikiText2 => f.write_str("wikitext2"),
            Corpus::C4 => f.write_str("c4"),
            Corpus::Ptb => f.write_str("ptb"),
            Corpus::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The documents of a corpus, where they came from, and how the reference joins them.
#[derive(Debug, Clone)]
pub struct Documents {
    pub docs: Vec<String>,
    /// The file they were read from (for cache keys and messages).
    pub source: PathBuf,
    /// A note for reports (e.g. [`C4_NOTE`]), empty when there is nothing to say.
    pub note: &'static str,
}

/// The rows of a file corpus: a `.txt` file is one document; `.jsonl` and `.parquet` files give
/// one document per row of their `text` column.
pub fn read_file_documents(path: &Path) -> Result<Vec<String>, DataError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "txt" => Ok(vec![spindle_io::read_to_string(path).map_err(|io| DataError::Io { path: path.to_path_buf(), io })?]),
        "parquet" => crate::parquet::read_string_column(path, "text"),
        "jsonl" => {
            let text = spindle_io::read_to_string(path).map_err(|io| DataError::Io { path: path.to_path_buf(), io })?;
            let mut docs = Vec::new();
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let bad = |problem: String| DataError::Corpus { path: path.to_path_buf(), problem };
                let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(format!("line {}: not JSON: {e}", i + 1)))?;
                let text =
                    value.get("text").and_then(|t| t.as_str()).ok_or_else(|| bad(format!("line {}: no string field `text`", i + 1)))?;
                docs.push(text.to_owned());
            }
            Ok(docs)
        }
        _ => Err(DataError::Corpus {
            path: path.to_path_buf(),
            problem: format!("unknown corpus file type {ext:?} (expected .txt, .jsonl or .parquet with a `text` column)"),
        }),
    }
}

/// The documents perplexity is computed on, before joining.
pub fn eval_documents(corpus: &Corpus, dir: &DataDir) -> Result<Documents, DataError> {
    let docs = match corpus {
        Corpus::WikiText2 => {
            let source = dir.file(WIKITEXT2_TEST)?;
            Documents { docs: crate::parquet::read_string_column(&source, "text")?, source, note: "" }
        }
        Corpus::C4 if c4_source(dir.root()) == C4Source::Shards => {
            let source = dir.join(C4_VALIDATION_SHARD);
            let mut docs = read_json_gz_documents(&source)?;
            docs.truncate(C4_VALIDATION_DOCS);
            Documents { docs, source, note: "" }
        }
        Corpus::C4 => {
            let source = dir.file(C4_SAMPLE)?;
            let all = crate::parquet::read_string_column(&source, "text")?;
            let docs = all.get(1000..2000).map(<[String]>::to_vec).ok_or_else(|| DataError::Corpus {
                path: source.clone(),
                problem: format!("{} documents; the C4 evaluation split needs documents [1000, 2000)", all.len()),
            })?;
            Documents { docs, source, note: C4_NOTE }
        }
        Corpus::Ptb => {
            let source = dir.file(PTB_TEST)?;
            Documents { docs: crate::parquet::read_string_column(&source, "sentence")?, source, note: "" }
        }
        Corpus::File(path) => Documents { docs: read_file_documents(path)?, source: path.clone(), note: "" },
    };
    if docs.docs.iter().all(|d| d.is_empty()) {
        return Err(DataError::Corpus { path: docs.source, problem: "the corpus is empty".into() });
    }
    Ok(docs)
}

/// The evaluation text exactly as the reference builds it, and the token limit per seqlen
/// (`Some(256)` for C4: the reference keeps the first 256 × seqlen tokens).
pub fn eval_text(corpus: &Corpus, docs: &Documents) -> (String, Option<usize>) {
    match corpus {
        Corpus::WikiText2 | Corpus::File(_) => (docs.docs.join("\n\n"), None),
        Corpus::C4 => (docs.docs.join(" "), Some(256)),
        Corpus::Ptb => (docs.docs.join(" "), None),
    }
}

/// The documents calibration windows are drawn from.
pub fn calibration_documents(corpus: &Corpus, dir: &DataDir) -> Result<Documents, DataError> {
    let docs = match corpus {
        Corpus::C4 if c4_source(dir.root()) == C4Source::Shards => {
            let source = dir.join(C4_TRAIN_SHARD);
            Documents { docs: read_json_gz_documents(&source)?, source, note: "" }
        }
        Corpus::C4 => {
            let source = dir.file(C4_SAMPLE)?;
            let mut all = crate::parquet::read_string_column(&source, "text")?;
            all.truncate(1000);
            Documents { docs: all, source, note: C4_NOTE }
        }
        Corpus::File(path) => Documents { docs: read_file_documents(path)?, source: path.clone(), note: "" },
        Corpus::WikiText2 | Corpus::Ptb => {
            return Err(DataError::NoCalibrationSplit { corpus: corpus.to_string() });
        }
    };
    if docs.docs.is_empty() || docs.docs.iter().all(|d| d.is_empty()) {
        return Err(DataError::Corpus { path: docs.source, problem: "the corpus is empty".into() });
    }
    Ok(docs)
}

/// Each document's token ids (with the tokenizer's own special tokens, as `tokenizer(text)` gives
/// them), through the token cache. `recipe` names how the documents were built (it is part of the
/// cache key).
pub fn tokenize_documents(
    docs: &Documents,
    recipe: &str,
    tokenizer: &Tokenizer,
    cache: &TokenCache,
) -> Result<(Vec<Vec<u32>>, CacheOutcome), DataError> {
    let key = TokenCache::key(tokenizer.path(), &docs.source, recipe)?;
    cache.get_or_build(&key, &mut || docs.docs.iter().map(|d| tokenizer.encode(d, true)).collect())
}

/// The evaluation token stream of `corpus` (the reference text, tokenized once, cached), before
/// any per-seqlen truncation, with the truncation rule of [`eval_text`].
pub fn eval_tokens(
    corpus: &Corpus,
    dir: &DataDir,
    tokenizer: &Tokenizer,
    cache: &TokenCache,
) -> Result<(Vec<u32>, Option<usize>, Documents, CacheOutcome), DataError> {
    let docs = eval_documents(corpus, dir)?;
    let (text, limit) = eval_text(corpus, &docs);
    let joined = Documents { docs: vec![text], source: docs.source.clone(), note: docs.note };
    let (mut streams, outcome) = tokenize_documents(&joined, &format!("eval:{corpus}"), tokenizer, cache)?;
    let ids = streams.pop().unwrap_or_default();
    Ok((ids, limit, docs, outcome))
}

/// One calibration window: which document, where in it, and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub doc: usize,
    pub offset: usize,
    pub ids: Vec<u32>,
}

/// Draws `nsamples` windows of `seqlen` tokens from `docs` as the Wanda/SparseGPT loaders do.
/// `tokens(i)` gives document `i`'s ids (a caller caches them). Before drawing, the documents are
/// checked for at least one longer than `seqlen` — the reference would loop forever otherwise.
pub fn sample_windows(
    docs: &Documents,
    tokens: &mut dyn FnMut(usize) -> Result<Vec<u32>, DataError>,
    nsamples: usize,
    seqlen: usize,
    seed: i64,
) -> Result<Vec<Window>, DataError> {
    let n = docs.docs.len();
    if n == 0 {
        return Err(DataError::Corpus { path: docs.source.clone(), problem: "the corpus is empty".into() });
    }
    if seqlen == 0 {
        return Err(DataError::Corpus { path: docs.source.clone(), problem: "seqlen must be at least 1".into() });
    }
    // Documents are tokenized only as needed (C4's train shard has 356k): first in order until
    // one is long enough (which proves the draw below ends; with none, the reference would loop
    // forever), then the drawn ones.
    let mut lengths: Vec<Option<usize>> = vec![None; n];
    let mut longest = 0;
    for (i, slot) in lengths.iter_mut().enumerate() {
        let l = tokens(i)?.len();
        *slot = Some(l);
        longest = longest.max(l);
        if l > seqlen {
            break;
        }
    }
    if longest <= seqlen {
        return Err(DataError::NoLongDocument { path: docs.source.clone(), seqlen, longest });
    }
    let mut rng = PyRandom::new(seed);
    let mut out = Vec::with_capacity(nsamples);
    for _ in 0..nsamples {
        let doc = loop {
            let i =
                rng.randint(0, n as i64 - 1).map_err(|e| DataError::Corpus { path: docs.source.clone(), problem: e.to_string() })? as usize;
            let length = match lengths[i] {
                Some(l) => l,
                None => {
                    let l = tokens(i)?.len();
                    lengths[i] = Some(l);
                    l
                }
            };
            if length > seqlen {
                break i;
            }
        };
        let ids = tokens(doc)?;
        let offset = rng
            .randint(0, (ids.len() - seqlen - 1) as i64)
            .map_err(|e| DataError::Corpus { path: docs.source.clone(), problem: e.to_string() })? as usize;
        out.push(Window { doc, offset, ids: ids[offset..offset + seqlen].to_vec() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> DataDir {
        DataDir::resolve_from(None, &Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
    }

    fn gz_lines(path: &Path, docs: &[String], extra: &str) {
        use std::io::Write;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut e = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
        for d in docs {
            writeln!(e, "{}", serde_json::json!({"text": d, "url": "u", "timestamp": "t"})).unwrap();
        }
        e.write_all(extra.as_bytes()).unwrap();
        e.finish().unwrap();
    }

    /// With the papers' two shards in the data folder, C4 perplexity is the validation shard's
    /// first 1100 documents and calibration draws from the whole train shard, with no note; with
    /// either missing, the offline sample and its note. Only the files decide.
    #[test]
    fn c4_reads_the_papers_shards_when_both_are_there() {
        let t = tempfile::tempdir().unwrap();
        let dir = DataDir::resolve_with(Some(t.path()), None, t.path()).unwrap();
        let val: Vec<String> = (0..1200).map(|i| format!("validation document {i}")).collect();
        let train: Vec<String> = (0..30).map(|i| format!("train document {i}")).collect();
        gz_lines(&t.path().join(C4_VALIDATION_SHARD), &val, "");
        assert_eq!(c4_source(t.path()), C4Source::Sample, "one shard is not enough");
        gz_lines(&t.path().join(C4_TRAIN_SHARD), &train, "\n");
        assert_eq!(c4_source(t.path()), C4Source::Shards);
        let docs = eval_documents(&Corpus::C4, &dir).unwrap();
        assert_eq!((docs.docs.as_slice(), docs.note), (&val[..1100], ""));
        assert_eq!(docs.source, t.path().join(C4_VALIDATION_SHARD));
        let (text, limit) = eval_text(&Corpus::C4, &docs);
        assert_eq!((text, limit), (val[..1100].join(" "), Some(256)));
        let docs = calibration_documents(&Corpus::C4, &dir).unwrap();
        assert_eq!((docs.docs, docs.note), (train, ""));
        // A broken line is named.
        gz_lines(&t.path().join(C4_TRAIN_SHARD), &[], "{\"text\": \"a\"}\n{\"url\": 1}\n");
        let err = calibration_documents(&Corpus::C4, &dir).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: line 2: no string field `text`", t.path().join(C4_TRAIN_SHARD).display()));
        std::fs::remove_file(t.path().join(C4_TRAIN_SHARD)).unwrap();
        // The sample is not in this folder: its reader reports it.
        assert!(calibration_documents(&Corpus::C4, &dir).unwrap_err().to_string().contains("c4-validation-sample-2k.parquet"));
    }

    fn golden_case(name: &str) -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/calib/calib_golden.json");
        let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        all["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
    }

    #[test]
    fn windows_equal_the_python_loaders_for_the_same_seed() {
        let case = golden_case("stories260k");
        let tok_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/llama2c/tokenizer.json");
        let tok = crate::Tokenizer::from_file(&tok_path).unwrap();
        let docs = calibration_documents(&Corpus::C4, &data()).unwrap();
        assert_eq!(docs.docs.len(), 1000);
        let mut cache: Vec<Option<Vec<u32>>> = vec![None; docs.docs.len()];
        let mut tokens = |i: usize| -> Result<Vec<u32>, DataError> {
            if cache[i].is_none() {
                cache[i] = Some(tok.encode(&docs.docs[i], true)?);
            }
            Ok(cache[i].clone().unwrap_or_default())
        };
        let windows = sample_windows(&docs, &mut tokens, 32, 256, 0).unwrap();
        let expected = case["windows"].as_array().unwrap();
        assert_eq!(windows.len(), expected.len());
        for (w, e) in windows.iter().zip(expected) {
            assert_eq!((w.doc as u64, w.offset as u64), (e["doc"].as_u64().unwrap(), e["offset"].as_u64().unwrap()));
            assert_eq!(u64::from(w.ids[0]), e["first_id"].as_u64().unwrap());
            assert_eq!(w.ids.len(), 256);
        }
    }

    #[test]
    fn corpora_are_built_like_the_reference() {
        let d = data();
        let wt = eval_documents(&Corpus::WikiText2, &d).unwrap();
        let (text, limit) = eval_text(&Corpus::WikiText2, &wt);
        assert_eq!((wt.docs.len(), limit), (4358, None));
        assert!(text.starts_with("\n\n = Robert Boulter = \n\n\n"), "{:?}", &text[..40]);
        let c4 = eval_documents(&Corpus::C4, &d).unwrap();
        assert_eq!((c4.docs.len(), c4.note), (1000, C4_NOTE));
        assert_eq!(eval_text(&Corpus::C4, &c4).1, Some(256));
        let ptb = eval_documents(&Corpus::Ptb, &d).unwrap();
        assert_eq!(ptb.docs.len(), 3761);
        assert!(eval_text(&Corpus::Ptb, &ptb).0.split(' ').count() >= 78_669);
    }

    #[test]
    fn bad_corpora_get_one_clear_error_each() {
        let d = data();
        let t = tempfile::tempdir().unwrap();
        // Missing file.
        let missing = t.path().join("nope.txt");
        let err = eval_documents(&Corpus::File(missing.clone()), &d).unwrap_err();
        assert!(err.to_string().starts_with(&format!("cannot read {}: ", missing.display())), "{err}");
        // Missing column.
        let rte = d.join("tasks/glue/rte/validation-00000-of-00001.parquet");
        let err = eval_documents(&Corpus::File(rte.clone()), &d).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: no column `text` (columns: sentence1, sentence2, label, idx)", rte.display()));
        // Empty corpus.
        let empty = t.path().join("empty.jsonl");
        std::fs::write(&empty, "").unwrap();
        let err = calibration_documents(&Corpus::File(empty.clone()), &d).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: the corpus is empty", empty.display()));
        // No document longer than seqlen.
        let short = t.path().join("short.jsonl");
        std::fs::write(&short, "{\"text\": \"one two three\"}\n{\"text\": \"four\"}\n").unwrap();
        let docs = calibration_documents(&Corpus::File(short.clone()), &d).unwrap();
        let mut tokens = |i: usize| Ok(docs.docs[i].split(' ').map(|_| 7u32).collect());
        let err = sample_windows(&docs, &mut tokens, 4, 8, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no document is longer than seqlen 8 tokens (the longest has 3); the reference loader would never finish",
                short.display()
            )
        );
        // No train split offline.
        let err = calibration_documents(&Corpus::WikiText2, &d).unwrap_err();
        assert_eq!(err.to_string(), "wikitext2 has no calibration (train) split offline; calibrate on c4 or a file");
        // A file type that is not a corpus.
        let err = eval_documents(&Corpus::File(PathBuf::from("model.safetensors")), &d).unwrap_err();
        assert!(err.to_string().contains("unknown corpus file type \"safetensors\""), "{err}");
    }
}
