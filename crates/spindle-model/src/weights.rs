//! Checkpoint weights: safetensors files, single or sharded (`model.safetensors.index.json`),
//! memory-mapped and read one tensor at a time. Nothing is copied until a tensor is asked for,
//! so a caller that loads one decoder block at a time holds one block in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

/// A weight file that cannot be used, naming the file (and tensor) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error("{path}: not a valid safetensors file: {problem}")]
    Format { path: PathBuf, problem: String },
    #[error("{dir}: no model.safetensors and no model.safetensors.index.json")]
    NoWeights { dir: PathBuf },
    #[error("{path}: not a valid shard index: {problem}")]
    Index { path: PathBuf, problem: String },
    #[error("{dir}: tensor `{name}` is missing from the checkpoint")]
    Missing { dir: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {actual:?}, config.json implies {expected:?}")]
    Shape { path: PathBuf, name: String, actual: Vec<usize>, expected: Vec<usize> },
    #[error("{path}: tensor `{name}` has unsupported dtype {dtype} (supported: F32, F16, BF16)")]
    DType { path: PathBuf, name: String, dtype: String },
    #[error("{path}: tensor `{name}` holds NaN or infinite values")]
    NotFinite { path: PathBuf, name: String },
}

/// The dtypes spindle reads, as safetensors names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F16,
    BF16,
    /// Any other dtype the header names (refused when the tensor is loaded).
    Other,
}

impl Dtype {
    /// The dtype and its bytes per element, for every dtype the safetensors format defines;
    /// `None` for a name it does not.
    fn parse(s: &str) -> Option<(Dtype, usize)> {
        Some(match s {
            "F32" => (Dtype::F32, 4),
            "F16" => (Dtype::F16, 2),
            "BF16" => (Dtype::BF16, 2),
            "F64" | "I64" | "U64" => (Dtype::Other, 8),
            "I32" | "U32" => (Dtype::Other, 4),
            "I16" | "U16" => (Dtype::Other, 2),
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => (Dtype::Other, 1),
            _ => return None,
        })
    }
}

/// One tensor as a safetensors header describes it.
struct HeaderEntry {
    name: String,
    dtype: Dtype,
    dtype_name: String,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Parses and checks a safetensors header against the file's length: every tensor's byte range
/// matches its shape and dtype, the ranges tile the data section exactly. Returns the absolute
/// offset of the data section and the entries.
///
/// `bytes` is the start of the file, at least its 8-byte length and the header it gives where
/// the file is that long; `file_len` is the whole file's length.
fn parse_header(bytes: &[u8], file_len: usize) -> Result<(usize, Vec<HeaderEntry>), String> {
    if bytes.len() < 8 || file_len < 8 {
        return Err("file shorter than its 8-byte header length (truncated?)".into());
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[..8]);
    let n = u64::from_le_bytes(len8);
    if n > (file_len - 8) as u64 || n > (bytes.len() - 8) as u64 {
        return Err(format!("header length {n} points past the end of the {file_len}-byte file (truncated?)"));
    }
    let data_start = 8 + n as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..data_start]).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let object = header.as_object().ok_or("header is not a JSON object")?;
    let mut entries = Vec::new();
    for (name, info) in object {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format!("tensor `{name}`: {what}");
        let dtype_name = info.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype"))?;
        let shape = info
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|s| s.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| bad("no valid shape"))?;
        let offsets = info
            .get("data_offsets")
            .and_then(|o| o.as_array())
            .and_then(|o| o.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>())
            .filter(|o| o.len() == 2)
            .ok_or_else(|| bad("no valid data_offsets"))?;
        let (dtype, size) = Dtype::parse(dtype_name).ok_or_else(|| bad(&format!("unknown dtype {dtype_name:?}")))?;
        let needed = shape.iter().try_fold(size, |acc, &d| acc.checked_mul(d)).ok_or_else(|| bad("size overflows"))?;
        let (start, end) = (offsets[0], offsets[1]);
        if end < start || end - start != needed {
            return Err(format!(
                "the data offsets of tensor `{name}` span {} bytes, but its shape {shape:?} and dtype {dtype_name} need {needed}",
                end.saturating_sub(start)
            ));
        }
        entries.push(HeaderEntry { name: name.clone(), dtype, dtype_name: dtype_name.to_owned(), shape, start, end });
    }
    entries.sort_by_key(|e| e.start);
    let mut cursor = 0;
    for e in &entries {
        if e.start != cursor {
            return Err(format!("the data of tensor `{}` starts at byte {} where {cursor} was expected (overlap or gap)", e.name, e.start));
        }
        cursor = e.end;
    }
    let data_len = file_len - data_start;
    if cursor != data_len {
        return Err(format!("the tensors cover {cursor} bytes of data but the file holds {data_len} (truncated, or offsets that lie)"));
    }
    Ok((data_start, entries))
}

/// Where one tensor lives.
#[derive(Debug, Clone)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    dtype_name: String,
    shape: Vec<usize>,
    /// Absolute byte range in the shard file.
    start: usize,
    end: usize,
}

/// Tensors larger than this are read in slices of rows.
const CHUNK_BYTES: usize = 1 << 20;

/// The largest header a safetensors file may have (the format's own limit, 100 MB).
const MAX_HEADER: usize = 100_000_000;

/// One safetensors file.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    /// Read with positioned reads, never memory-mapped: a file truncated while spindle reads it
    /// is then an error naming it, not a SIGBUS.
    file: std::fs::File,
}

impl Shard {
    /// The bytes `start..end` of the file.
    fn read(&self, start: usize, end: usize, buf: &mut Vec<u8>) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        buf.clear();
        buf.resize(end - start, 0);
        self.file.read_exact_at(buf, start as u64)
    }
}

/// The weights of a checkpoint directory, indexed by tensor name, read lazily.
#[derive(Debug)]
pub struct Weights {
    dir: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
}

impl Weights {
    /// Opens `dir/model.safetensors`, or every shard named by `dir/model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Weights, WeightsError> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files = if single.is_file() {
            vec![single]
        } else if index.is_file() {
            shard_files(&index)?
        } else {
            return Err(WeightsError::NoWeights { dir: dir.to_path_buf() });
        };
        let mut weights = Weights { dir: dir.to_path_buf(), shards: Vec::new(), entries: BTreeMap::new() };
        for path in files {
            weights.add_shard(path)?;
        }
        Ok(weights)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<(), WeightsError> {
        use std::io::Read;
        let file = spindle_io::regular_file(&path).map_err(|io| WeightsError::Io { path: path.clone(), io })?;
        let io = |io| WeightsError::Io { path: path.clone(), io };
        let file_len = file.metadata().map_err(io)?.len() as usize;
        // The 8-byte length, then the header it announces (safetensors caps it at 100 MB).
        let mut head = Vec::new();
        (&file).take(8).read_to_end(&mut head).map_err(io)?;
        if head.len() == 8 {
            let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
            if n > MAX_HEADER as u64 {
                return Err(WeightsError::Format {
                    path: path.clone(),
                    problem: format!("header length {n} is more than the format's limit of {MAX_HEADER} bytes"),
                });
            }
            if n <= (file_len - 8) as u64 {
                (&file).take(n).read_to_end(&mut head).map_err(io)?;
            }
        }
        let (data_start, header) = parse_header(&head, file_len).map_err(|problem| WeightsError::Format { path: path.clone(), problem })?;
        let shard = self.shards.len();
        for e in header {
            let entry = Entry {
                shard,
                dtype: e.dtype,
                dtype_name: e.dtype_name,
                shape: e.shape,
                start: data_start + e.start,
                end: data_start + e.end,
            };
            self.entries.insert(e.name, entry);
        }
        self.shards.push(Shard { path, file });
        Ok(())
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Reads `name`, checks its shape against `expected` and that it is finite, and returns it on
    /// `device` as `kind`.
    pub fn load(&self, name: &str, expected: &[usize], kind: Kind, device: Device) -> Result<Tensor, WeightsError> {
        let entry = self.entries.get(name).ok_or_else(|| WeightsError::Missing { dir: self.dir.clone(), name: name.to_owned() })?;
        let shard = &self.shards[entry.shard];
        if entry.shape != expected {
            return Err(WeightsError::Shape {
                path: shard.path.clone(),
                name: name.to_owned(),
                actual: entry.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        let stored = match entry.dtype {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::Other => {
                return Err(WeightsError::DType { path: shard.path.clone(), name: name.to_owned(), dtype: entry.dtype_name.clone() });
            }
        };
        let shape: Vec<i64> = entry.shape.iter().map(|&d| d as i64).collect();
        let format = |e: tch::TchError| WeightsError::Format { path: shard.path.clone(), problem: format!("tensor `{name}`: {e}") };
        // Large tensors are read (and checked) in slices of rows, so reading never holds a tensor
        // twice (bytes and copy), nor the temporaries of a whole-tensor finiteness check.
        let row_bytes = if shape.is_empty() { 0 } else { (entry.end - entry.start) / (shape[0].max(1) as usize) };
        let not_finite = || WeightsError::NotFinite { path: shard.path.clone(), name: name.to_owned() };
        let short = |io: std::io::Error| WeightsError::Format {
            path: shard.path.clone(),
            problem: format!("tensor `{name}` cannot be read ({io}); was the file truncated or changed while spindle read it?"),
        };
        let mut buf = Vec::new();
        let tensor = if shape.len() >= 2 && entry.end - entry.start > CHUNK_BYTES && row_bytes > 0 {
            let tensor = Tensor::f_empty(&shape, (stored, Device::Cpu)).map_err(format)?;
            let rows_per = (CHUNK_BYTES / row_bytes).max(1) as i64;
            let mut r0 = 0i64;
            while r0 < shape[0] {
                let n = rows_per.min(shape[0] - r0);
                let (a, b) = (entry.start + r0 as usize * row_bytes, entry.start + (r0 + n) as usize * row_bytes);
                let mut chunk_shape = shape.clone();
                chunk_shape[0] = n;
                shard.read(a, b, &mut buf).map_err(short)?;
                let chunk = Tensor::f_from_data_size(&buf, &chunk_shape, stored).map_err(format)?;
                if chunk.isfinite().all().int64_value(&[]) != 1 {
                    return Err(not_finite());
                }
                tensor.f_narrow(0, r0, n).and_then(|mut t| t.f_copy_(&chunk)).map_err(format)?;
                r0 += n;
            }
            tensor
        } else {
            shard.read(entry.start, entry.end, &mut buf).map_err(short)?;
            let tensor = Tensor::f_from_data_size(&buf, &shape, stored).map_err(format)?;
            if tensor.isfinite().all().int64_value(&[]) != 1 {
                return Err(not_finite());
            }
            tensor
        };
        Ok(tensor.to_kind(kind).to_device(device))
    }

    /// The dtype `name` is stored in.
    pub fn stored_kind(&self, name: &str) -> Option<Kind> {
        self.entries.get(name).and_then(|e| match e.dtype {
            Dtype::F32 => Some(Kind::Float),
            Dtype::F16 => Some(Kind::Half),
            Dtype::BF16 => Some(Kind::BFloat16),
            Dtype::Other => None,
        })
    }
}

/// The shard files an index names, in a stable order, each once.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let text = spindle_io::read_to_string(index).map_err(|io| WeightsError::Io { path: index.to_path_buf(), io })?;
    let bad = |problem: String| WeightsError::Index { path: index.to_path_buf(), problem };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object".into()))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("`{name}` maps to a non-string")))?;
        if file.contains('/') || file.contains("..") {
            return Err(bad(format!("`{name}` maps to {file:?}, outside the model directory")));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_owned());
        }
    }
    files.sort();
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::safetensors_write::{safetensors_bytes, write_safetensors};

    fn t(values: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    fn two_tensors() -> Vec<(String, Tensor)> {
        vec![
            ("a.weight".into(), t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])),
            ("b.bias".into(), t(&[0.5, -0.5], &[2]).to_kind(Kind::BFloat16)),
        ]
    }

    #[test]
    fn round_trips_names_shapes_dtypes_and_values() {
        let d = tempfile::tempdir().unwrap();
        write_safetensors(&d.path().join("model.safetensors"), &two_tensors()).unwrap();
        let w = Weights::open(d.path()).unwrap();
        assert_eq!(w.names().collect::<Vec<_>>(), ["a.weight", "b.bias"]);
        assert_eq!(w.stored_kind("b.bias"), Some(Kind::BFloat16));
        let a = w.load("a.weight", &[2, 3], Kind::Float, Device::Cpu).unwrap();
        assert_eq!(Vec::<f32>::try_from(a.flatten(0, -1)).unwrap(), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = w.load("b.bias", &[2], Kind::Float, Device::Cpu).unwrap();
        assert_eq!(Vec::<f32>::try_from(b).unwrap(), [0.5, -0.5]);
    }

    #[test]
    fn sharded_checkpoints_load_through_their_index() {
        let d = tempfile::tempdir().unwrap();
        let mut ts = two_tensors();
        let b = ts.pop().unwrap();
        write_safetensors(&d.path().join("model-00001-of-00002.safetensors"), &ts).unwrap();
        write_safetensors(&d.path().join("model-00002-of-00002.safetensors"), &[b]).unwrap();
        std::fs::write(
            d.path().join("model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"a.weight":"model-00001-of-00002.safetensors","b.bias":"model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let w = Weights::open(d.path()).unwrap();
        assert_eq!(w.load("b.bias", &[2], Kind::Float, Device::Cpu).unwrap().double_value(&[1]), -0.5);
    }

    fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, Result<Weights, WeightsError>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model.safetensors"), bytes).unwrap();
        let w = Weights::open(d.path());
        (d, w)
    }

    #[test]
    fn a_file_truncated_after_it_was_opened_is_an_error_not_a_bus_error() {
        // F9: the weights used to be memory-mapped, and a read past the new end raised SIGBUS.
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("model.safetensors");
        write_safetensors(&path, &two_tensors()).unwrap();
        let w = Weights::open(d.path()).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 8).unwrap();
        let err = w.load("a.weight", &[2, 3], Kind::Float, Device::Cpu).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: not a valid safetensors file: tensor `a.weight` cannot be read (", path.display())), "{err}");
        assert!(err.ends_with("was the file truncated or changed while spindle read it?"), "{err}");
    }

    #[test]
    fn a_truncated_file_is_named() {
        let p = Path::new("x");
        let bytes = safetensors_bytes(p, &two_tensors()).unwrap();
        let (d, w) = open_bytes(&bytes[..bytes.len() - 3]);
        assert_eq!(
            w.unwrap_err().to_string(),
            format!(
                "{}: not a valid safetensors file: the tensors cover 28 bytes of data but the file holds 25 (truncated, or offsets that lie)",
                d.path().join("model.safetensors").display()
            )
        );
        let (d, w) = open_bytes(&bytes[..5]);
        assert_eq!(
            w.unwrap_err().to_string(),
            format!(
                "{}: not a valid safetensors file: file shorter than its 8-byte header length (truncated?)",
                d.path().join("model.safetensors").display()
            )
        );
    }

    #[test]
    fn a_header_whose_offsets_lie_is_named() {
        let mut bytes = safetensors_bytes(Path::new("x"), &two_tensors()).unwrap();
        // a.weight is 24 bytes; make the header claim 20 (same header length).
        let needle = b"\"data_offsets\":[0,24]";
        let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
        bytes[at + needle.len() - 3..at + needle.len() - 1].copy_from_slice(b"20");
        let (_d, w) = open_bytes(&bytes);
        let err = w.unwrap_err().to_string();
        assert!(err.ends_with("not a valid safetensors file: the data offsets of tensor `a.weight` span 20 bytes, but its shape [2, 3] and dtype F32 need 24"), "{err}");
        // A dtype the format does not define is named as such, not as a size mismatch.
        let mut bytes = safetensors_bytes(Path::new("x"), &two_tensors()).unwrap();
        let at = bytes.windows(5).position(|w| w == b"\"F32\"").unwrap();
        bytes[at + 1..at + 4].copy_from_slice(b"F99");
        let (_d, w) = open_bytes(&bytes);
        let err = w.unwrap_err().to_string();
        assert!(err.ends_with("not a valid safetensors file: tensor `a.weight`: unknown dtype \"F99\""), "{err}");
    }

    #[test]
    fn shape_missing_and_non_finite_tensors_are_named() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("model.safetensors");
        let mut ts = two_tensors();
        ts.push(("c.weight".into(), t(&[1.0, f32::NAN], &[2])));
        write_safetensors(&path, &ts).unwrap();
        let w = Weights::open(d.path()).unwrap();
        let err = w.load("a.weight", &[3, 2], Kind::Float, Device::Cpu).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: tensor `a.weight` has shape [2, 3], config.json implies [3, 2]", path.display()));
        let err = w.load("z.weight", &[1], Kind::Float, Device::Cpu).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: tensor `z.weight` is missing from the checkpoint", d.path().display()));
        let err = w.load("c.weight", &[2], Kind::Float, Device::Cpu).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: tensor `c.weight` holds NaN or infinite values", path.display()));
    }

    #[test]
    fn a_directory_without_weights_is_named() {
        let d = tempfile::tempdir().unwrap();
        let err = Weights::open(d.path()).unwrap_err();
        assert_eq!(err.to_string(), format!("{}: no model.safetensors and no model.safetensors.index.json", d.path().display()));
    }
}
