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
}

fn dtype_name(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Float => Some("F32"),
        Kind::Half => Some("F16"),
        Kind::BFloat16 => Some("BF16"),
        _ => None,
    }
}

/// The bytes of a safetensors file holding `tensors` (each stored in its own dtype).
pub fn safetensors_bytes(path: &Path, tensors: &[(String, Tensor)]) -> Result<Vec<u8>, WriteError> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut data: Vec<u8> = Vec::new();
    for (name, t) in tensors {
        let kind = t.kind();
        let dtype = dtype_name(kind).ok_or_else(|| WriteError::DType { path: path.to_path_buf(), name: name.clone(), kind })?;
        let t = t.to_device(Device::Cpu).contiguous();
        let numel = t.numel();
        let start = data.len();
        data.resize(start + numel * kind.elt_size_in_bytes(), 0);
        t.f_copy_data_u8(&mut data[start..], numel)
            .map_err(|err| WriteError::Copy { path: path.to_path_buf(), name: name.clone(), err })?;
        let shape: Vec<Value> = t.size().into_iter().map(Value::from).collect();
        header.insert(name.clone(), json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}));
    }
    let mut header = Value::Object(header).to_string().into_bytes();
    while header.len() % 8 != 0 {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Writes `tensors` to `path` atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), WriteError> {
    let bytes = safetensors_bytes(path, tensors)?;
    write_file_atomic(path, &bytes).map_err(|io| WriteError::Io { path: path.to_path_buf(), io })
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, synced, given the
/// usual `rw-r--r--` permissions, then renamed over `path`. A reader never sees a partial file.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
