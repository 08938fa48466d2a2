"""What the GGUF fixture scripts of this folder share (make_arch_ggufs.py, make_spm_ggufs.py,
make_llama3_gguf.py): llama.cpp's tensor naming and q/k permutation, reading a written file back
with gguf-py, and the JSON layout of the expected files. Imported, never run; versions are pinned
by the scripts that import it.
"""

import json

import numpy as np
import regex
import torch
import gguf


def gguf_name(name_map, hf_name: str) -> str:
    """llama.cpp's map_tensor_name: strip .weight/.bias, map, put the suffix back."""
    out = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    assert out is not None, hf_name
    return out


def permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp LlamaModel.permute (q rows with n_head; k rows with n_head_kv when it differs)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def f32(x) -> float:
    """Shortest decimal that round-trips the float32 value."""
    v = np.float32(x)
    out = float(str(v))
    assert np.float32(out) == v, (v, out)
    return out


def as_floats(t: torch.Tensor):
    return [as_floats(r) for r in t] if t.dim() > 1 else [f32(v) for v in t.tolist()]


def read_metadata(path: str) -> dict:
    """Every key (GGUF.* header fields aside) with its value type(s) and value, as GGUFReader reads it."""
    out = {}
    for name, field in gguf.GGUFReader(path).fields.items():
        if name.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, float):
            value = f32(value)
        elif isinstance(value, list) and value and isinstance(value[0], float):
            value = [f32(v) for v in value]
        out[name] = {"type": "/".join(gguf.GGUFValueType(t).name for t in field.types), "value": value}
    return out


def read_tensors(path: str) -> list[dict]:
    """Name, ggml type and dims (ne order, innermost first) of every tensor, in file order."""
    return [{"name": t.name, "ggml_type": int(t.tensor_type), "type_name": t.tensor_type.name,
             "dims": [int(d) for d in t.shape]} for t in gguf.GGUFReader(path).tensors]


def dumps(obj) -> str:
    """json with indent 1, but every list of plain numbers on one line (the logits stay compact)."""
    leaves = []

    def mark(o):
        if isinstance(o, dict):
            return {k: mark(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            if o and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in o):
                leaves.append(json.dumps(list(o)))
                return f"@@{len(leaves) - 1}@@"
            return [mark(x) for x in o]
        return o

    text = json.dumps(mark(obj), indent=1)
    return regex.sub(r'"@@(\d+)@@"', lambda m: leaves[int(m.group(1))], text) + "\n"
