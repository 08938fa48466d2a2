//! Writing safetensors files: the format's header (8-byte little-endian length, JSON with each
//! tensor's dtype, shape and data offsets, padded with spaces to 8 bytes) followed by the raw
//! little-endian data, in the order given. Written to a temporary file and renamed, so a crash
//! never leaves a partial file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use tch::{Device, Kind, Tensor};

/// A tensor that cannot be written, or a write that failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("cannot write {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error("{path}: tensor `{name}` has dtype {kind:?}; only f32, f16 and bf16 are written")]
    DType { path: PathBuf, name: String, kind: Kind },
    #[error("{path}: cannot copy tensor `{name}`: {err}")]
    Copy { path: PathBuf, name: String, err: tch::TchError },
    #[error("{path}: tensor `{name}`: {problem}")]
    Load { path: PathBuf, name: String, problem: String },
}

/// Tensors are copied out in slices of about this many bytes.
const CHUNK_BYTES: usize = 1 << 20;

/// What the header says of one tensor, known before its data is read.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub kind: Kind,
}

impl TensorSpec {
    pub fn of(name: &str, t: &Tensor) -> TensorSpec {
        TensorSpec { name: name.to_owned(), shape: t.size(), kind: t.kind() }
    }
}

fn dtype_name(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Float => Some("F32"),
        Kind::Half => Some("F16"),
        Kind::BFloat16 => Some("BF16"),
        _ => None,
    }
}

/// The header of a safetensors file holding `specs`, padded.
fn header(path: &Path, specs: &[TensorSpec]) -> Result<Vec<u8>, WriteError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for spec in specs {
        let dtype = dtype_name(spec.kind).ok_or_else(|| WriteError::DType {
            path: path.to_path_buf(),
            name: spec.name.clone(),
            kind: spec.kind,
        })?;
        let len = spec.shape.iter().product::<i64>() as usize * spec.kind.elt_size_in_bytes();
        header.insert(spec.name.clone(), json!({"dtype": dtype, "shape": spec.shape, "data_offsets": [offset, offset + len]}));
        offset += len;
    }
    let mut header = Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    Ok(header)
}

/// A tensor's data, read when its turn comes.
pub type Loader<'a> = &'a mut dyn FnMut(&TensorSpec) -> Result<Tensor, String>;

/// Streams a safetensors file into `out`: the header from `specs`, then each tensor as `load`
/// returns it (checked against its spec), so only one tensor is held at a time.
fn write_to(path: &Path, specs: &[TensorSpec], load: Loader<'_>, out: &mut dyn Write) -> Result<(), WriteError> {
    let io = |io| WriteError::Io { path: path.to_path_buf(), io };
    let header = header(path, specs)?;
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let mut buf: Vec<u8> = Vec::new();
    for spec in specs {
        let fail = |problem: String| WriteError::Load { path: path.to_path_buf(), name: spec.name.clone(), problem };
        let t = load(spec).map_err(fail)?;
        if t.size() != spec.shape || t.kind() != spec.kind {
            return Err(fail(format!("is {:?} {:?}, the header says {:?} {:?}", t.kind(), t.size(), spec.kind, spec.shape)));
        }
        if t.numel() == 0 {
            // A zero-sized tensor has a header entry and no bytes.
            continue;
        }
        // In slices of rows, so a large tensor is not held twice (tensor and bytes).
        let rows = spec.shape.first().copied().unwrap_or(1).max(1);
        let row_bytes = (t.numel() * t.kind().elt_size_in_bytes()) / rows as usize;
        let rows_per = if spec.shape.is_empty() { 1 } else { (CHUNK_BYTES / row_bytes.max(1)).max(1) as i64 };
        let mut r0 = 0;
        while r0 < rows {
            let n = rows_per.min(rows - r0);
            let part = if spec.shape.is_empty() {
                t.shallow_clone()
            } else {
                t.f_narrow(0, r0, n).map_err(|err| WriteError::Copy { path: path.to_path_buf(), name: spec.name.clone(), err })?
            };
            let part = part.to_device(Device::Cpu).contiguous();
            let numel = part.numel();
            buf.clear();
            buf.resize(numel * part.kind().elt_size_in_bytes(), 0);
            part.f_copy_data_u8(&mut buf, numel).map_err(|err| WriteError::Copy {
                path: path.to_path_buf(),
                name: spec.name.clone(),
                err,
            })?;
            out.write_all(&buf).map_err(io)?;
            r0 += n;
        }
    }
    Ok(())
}

fn specs_of(tensors: &[(String, Tensor)]) -> Vec<TensorSpec> {
    tensors.iter().map(|(n, t)| TensorSpec::of(n, t)).collect()
}

/// The bytes of a safetensors file holding `tensors` (each stored in its own dtype).
pub fn safetensors_bytes(path: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::new();
    let mut k = 0;
    write_to(
        path,
        &specs_of(tensors),
        &mut |_| {
            k += 1;
            Ok(tensors[k - 1].1.shallow_clone())
        },
        &mut out,
    )?;
    Ok(out)
}

/// Writes `tensors` to `path` atomically, streaming.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), WriteError> {
    let mut k = 0;
    write_safetensors_lazy(path, &specs_of(tensors), &mut |_| {
        k += 1;
        Ok(tensors[k - 1].1.shallow_clone())
    })
}

/// Writes the tensors of `specs` to `path` atomically, reading each with `load` only when it
/// is written (memory: the largest tensor, twice).
pub fn write_safetensors_lazy(path: &Path, specs: &[TensorSpec], load: Loader<'_>) -> Result<(), WriteError> {
    let io = |io| WriteError::Io { path: path.to_path_buf(), io };
    let mut tmp = atomic_temp(path).map_err(io)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        write_to(path, specs, load, &mut w)?;
        w.flush().map_err(io)?;
    }
    persist(tmp, path).map_err(io)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, given the
/// usual `rw-r--r--` permissions, then renamed over `path`. A reader never sees a partial file.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = atomic_temp(path)?;
    tmp.write_all(bytes)?;
    persist(tmp, path)
}

/// A temporary file in `path`'s folder.
fn atomic_temp(path: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    tempfile::NamedTempFile::new_in(dir)
}

/// Syncs `tmp`, gives it `rw-r--r--` and renames it over `path`.
fn persist(tmp: tempfile::NamedTempFile, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_sized_tensors_are_written_as_a_header_entry_without_bytes() {
        let d = tempfile::tempdir().unwrap();
        let empty = Tensor::zeros([0, 3], (tch::Kind::Float, Device::Cpu));
        let one = Tensor::from_slice(&[1.5f32, -2.0]);
        write_safetensors(&d.path().join("model.safetensors"), &[("e".into(), empty), ("o".into(), one)]).unwrap();
        let w = crate::Weights::open(d.path()).unwrap();
        assert_eq!(w.shape("e"), Some(&[0usize, 3][..]));
        let o = w.load("o", &[2], tch::Kind::Float, Device::Cpu).unwrap();
        assert_eq!(Vec::<f32>::try_from(&o).unwrap(), [1.5, -2.0]);
    }
}
