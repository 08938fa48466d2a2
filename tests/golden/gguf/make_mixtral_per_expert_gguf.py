"""Writes tests/golden/gguf/mixtral-per-expert.gguf: mixtral.gguf with its experts stored one tensor each.

What: tests/golden/gguf/mixtral.gguf (make_spm_ggufs.py) rewritten with every key-value pair and
tensor as they are, except the stacked expert tensors `blk.N.ffn_{gate,up,down}_exps.weight`
(shape [experts, rows, columns]), each split into `blk.N.ffn_{gate,up,down}.E.weight`, one per
expert E, in expert order at the place of the stacked one. The bytes of each expert are the stacked
tensor's slice (the Q8_0 `blk.1.ffn_down_exps.weight` stays Q8_0: its blocks run along the columns,
so an expert's rows are whole blocks).

Why: llama.cpp's converter wrote Mixtral this way until it stacked the experts (llama.cpp PR 6387,
April 2024; the names were MODEL_TENSOR.FFN_GATE_EXP "blk.{bid}.ffn_gate.{xid}" and its up/down
twins), and many published Mixtral GGUFs of that time are still in use. spindle must convert such a
file to exactly what it makes of the stacked one; the test compares the two conversions tensor by
tensor.

Versions: gguf as tests/golden/gguf/requirements.txt.
Run from the repo root:
    /root/.cache/spindle/golden-venv/bin/python tests/golden/gguf/make_mixtral_per_expert_gguf.py
Deterministic: two runs give byte-identical files.
"""

import re

import gguf
import numpy as np

SRC = "tests/golden/gguf/mixtral.gguf"
OUT = "tests/golden/gguf/mixtral-per-expert.gguf"
STACKED = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$")


def main() -> None:
    r = gguf.GGUFReader(SRC)
    arch = r.fields["general.architecture"]
    w = gguf.GGUFWriter(OUT, arch=str(bytes(arch.parts[arch.data[0]]), "utf-8"))
    for name, field in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                value = [str(bytes(field.parts[i]), "utf-8") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            w.add_key_value(name, value, kind, sub_type=sub)
        elif kind == gguf.GGUFValueType.STRING:
            w.add_key_value(name, str(bytes(field.parts[field.data[0]]), "utf-8"), kind)
        else:
            w.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind)
    for t in r.tensors:
        data = np.asarray(t.data)
        m = STACKED.match(t.name)
        if m is None:
            w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
            continue
        bid, which = m.group(1), m.group(2)
        # GGUFReader gives the raw data with the shape reversed ([experts, rows, bytes or columns]).
        for e in range(data.shape[0]):
            w.add_tensor(f"blk.{bid}.ffn_{which}.{e}.weight", np.ascontiguousarray(data[e]), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
