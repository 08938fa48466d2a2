"""Writes tests/golden/gguf/tiny.gguf and tiny.expected.json for spindle-model's GGUF reader.

Versions (pinned, also in requirements.txt beside this script; the venv lives outside the repo):
    python 3.11, gguf==0.19.0, numpy==2.4.6
    python3 -m venv /root/.cache/spindle/gguf-venv
    /root/.cache/spindle/gguf-venv/bin/pip install gguf==0.19.0 numpy==2.4.6
Run from the repo root:
    /root/.cache/spindle/gguf-venv/bin/python tests/golden/gguf/make_gguf_fixture.py

Deterministic (fixed seed, no timestamps): two runs give byte-identical files.

The expected values are what the `gguf` package itself reads back (GGUFReader for metadata,
tensor types and ne-order dims; gguf.quants.dequantize for values), not what was written, so the
Rust reader is compared against the reference Python implementation. Floats are written with
Python's repr of the float32 value widened to float64, which round-trips exactly.
"""

import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T, GGUFValueType as V

from importlib.metadata import version

assert version("gguf") == "0.19.0" and np.__version__ == "2.4.6", (version("gguf"), np.__version__)
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "tiny.gguf")
EXPECTED = os.path.join(HERE, "tiny.expected.json")
KQ_OUT = os.path.join(HERE, "kquants.gguf")
KQ_EXPECTED = os.path.join(HERE, "kquants.expected.json")
# K-quant super-blocks: (bytes per 256 values, byte offsets of their f16 scales). gguf 0.19 can
# dequantize these types but not quantize them, so the blocks are random bytes (every bit of the
# packed 6-bit scales and mins, the high bits and the nibbles exercised) with finite f16 scales.
KQUANTS = {T.Q4_K: (144, [0, 2]), T.Q5_K: (176, [0, 2]), T.Q6_K: (210, [208])}
NESTED = [[1, 2], [3]]
ALIGNMENT = 64  # not the default 32, so a reader that ignores general.alignment fails


def main() -> None:
    rng = np.random.default_rng(20240607)
    w = gguf.GGUFWriter(OUT, arch="llama")  # writes general.architecture = "llama"
    w.add_custom_alignment(ALIGNMENT)  # general.alignment (u32)
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_string("general.name", "tiny fixture \u00e9\u4e2d")  # non-ASCII UTF-8
    w.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "\u0120the", "a b", ""])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_bool("spindle.test.false", False)
    w.add_uint64("spindle.test.u64", 2**40 + 7)
    w.add_uint8("spindle.test.u8", 200)
    w.add_int8("spindle.test.i8", -100)
    w.add_uint16("spindle.test.u16", 60000)
    w.add_int16("spindle.test.i16", -30000)
    w.add_int32("spindle.test.i32", -7)
    w.add_int64("spindle.test.i64", -(2**40))
    w.add_float64("spindle.test.f64", 0.1)
    w.add_array("spindle.test.i32_array", [1, -2, 3])
    w.add_array("spindle.test.f32_array", [0.5, -1.25, 3.0e-3])
    # An array of arrays. GGUFReader.contents() flattens nested arrays, so its expected value is
    # the written one (checked below against the flattened form the reader returns).
    w.add_key_value("spindle.test.nested", NESTED, V.ARRAY, sub_type=V.ARRAY)

    tensors = []  # (name, numpy-order shape, qtype, data to write)

    def add(name, shape, qtype, scale=1.0):
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        if qtype == T.F32:
            data = x
            w.add_tensor(name, data)
        elif qtype == T.F16:
            data = x.astype(np.float16)
            w.add_tensor(name, data)
        else:
            data = gguf.quants.quantize(x, qtype)
            w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        tensors.append(name)

    add("f32.weight", (8,), T.F32)
    add("f16.weight", (2, 16), T.F16, scale=1e-3)  # small values: some fp16 subnormals
    add("bf16.weight", (32,), T.BF16)
    add("q8_0.weight", (64,), T.Q8_0, scale=3.0)
    add("q4_0.weight", (4, 64), T.Q4_0)  # 2-D: ne = [64, 4], shape [4, 64]
    add("q4_1.weight", (3, 32), T.Q4_1, scale=0.02)
    # A type the Rust reader does not dequantize: opens fine, refused on dequantize.
    w.add_tensor("i32.unsupported", np.arange(6, dtype=np.int32).reshape(2, 3))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    r = gguf.GGUFReader(OUT)
    expected = {"version": int(r.fields["GGUF.version"].parts[-1][0]), "alignment": int(r.alignment)}
    meta = {}
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue
        value = jsonable(field.contents())
        if name == "spindle.test.nested":
            assert value == [x for inner in NESTED for x in inner], value
            value = NESTED
        meta[name] = {"type": describe_type(field), "value": value}
    expected["metadata"] = meta
    out_tensors = []
    for t in r.tensors:
        entry = {"name": t.name, "ggml_type": int(t.tensor_type), "type_name": t.tensor_type.name,
                 "dims": [int(d) for d in t.shape]}
        if t.name in tensors:
            values = gguf.quants.dequantize(t.data, t.tensor_type)
            entry["shape"] = [int(d) for d in values.shape]
            assert values.dtype == np.float32
            entry["values"] = [float(v) for v in values.reshape(-1)]
            assert all(np.isfinite(entry["values"]))
        out_tensors.append(entry)
    expected["tensors"] = out_tensors
    with open(EXPECTED, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"{OUT}: {os.path.getsize(OUT)} bytes; {EXPECTED}: {os.path.getsize(EXPECTED)} bytes")
    total = os.path.getsize(OUT) + os.path.getsize(EXPECTED)
    assert total < 100_000, total


def describe_type(field) -> str:
    kinds = [V(t).name for t in field.types]
    return "/".join(kinds)


def jsonable(v):
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v)
    if isinstance(v, str):
        return v
    raise TypeError(type(v))


def kquants() -> None:
    """kquants.gguf: one tensor per K-quant type, and what gguf.quants.dequantize reads back."""
    rng = np.random.default_rng(20261205)
    w = gguf.GGUFWriter(KQ_OUT, arch="llama")
    names = []
    for qtype, (size, f16_at) in KQUANTS.items():
        rows, blocks_per_row = 3, 2
        raw = rng.integers(0, 256, size=(rows * blocks_per_row, size), dtype=np.uint8)
        for at in f16_at:
            scale = (rng.standard_normal(rows * blocks_per_row) * 0.01).astype(np.float16)
            raw[:, at:at + 2] = scale.view(np.uint8).reshape(-1, 2)
        data = raw.reshape(rows, blocks_per_row * size)
        name = f"{qtype.name.lower()}.weight"
        w.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        names.append(name)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = gguf.GGUFReader(KQ_OUT)
    out = []
    for t in r.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        assert values.dtype == np.float32 and np.all(np.isfinite(values)), t.name
        out.append({"name": t.name, "ggml_type": int(t.tensor_type), "type_name": t.tensor_type.name,
                    "dims": [int(d) for d in t.shape], "shape": [int(d) for d in values.shape],
                    "values": [float(v) for v in values.reshape(-1)]})
    assert [t["name"] for t in out] == names
    with open(KQ_EXPECTED, "w") as f:
        json.dump({"tensors": out}, f, indent=1)
        f.write("\n")
    print(f"{KQ_OUT}: {os.path.getsize(KQ_OUT)} bytes; {KQ_EXPECTED}: {os.path.getsize(KQ_EXPECTED)} bytes")


if __name__ == "__main__":
    main()
    kquants()
