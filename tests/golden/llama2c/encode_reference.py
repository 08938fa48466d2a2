"""Reference token ids for spindle's llama2.c tokenizer (crates/spindle-model/src/llama2c.rs).

An independent, line-by-line Python reimplementation of karpathy/llama2.c run.c's
`build_tokenizer` and `encode` (bos=1, eos=0): optional BOS (id 1), the dummy-prefix " " piece
when the text is non-empty, the raw UTF-8 bytes grouped into codepoints (a leading byte plus at
most 3 continuation bytes, as run.c's `str_len < 4` guard), each codepoint looked up as a piece
or else emitted as ids byte+3, then repeatedly the adjacent pair whose concatenation is a piece
with the highest score (strictly above -1e10, first pair on ties) is merged.

Versions: Python 3.11, standard library only. Run from the repo root:
    python3 tests/golden/llama2c/encode_reference.py [DATA_DIR]
DATA_DIR defaults to ../shared/data; writes tests/golden/llama2c/encode_reference.json.
"""
import json
import struct
import sys
from pathlib import Path


def f32(x):
    """Rounds a Python float to float32, as run.c stores scores (`float best_score = -1e10`)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def build_tokenizer(path, vocab_size):
    data = Path(path).read_bytes()
    (max_token_length,) = struct.unpack_from("<i", data, 0)
    off = 4
    vocab, scores = [], []
    for _ in range(vocab_size):
        score, n = struct.unpack_from("<fi", data, off)
        off += 8
        vocab.append(data[off : off + n])
        off += n
        scores.append(score)
    return vocab, scores, max_token_length


def encode(vocab, scores, text, bos):
    # str_lookup: exact match (run.c bsearches a strcmp-sorted copy; pieces are unique here)
    lookup = {}
    for i, piece in enumerate(vocab):
        lookup.setdefault(piece, i)
    assert len(lookup) == len(vocab), "duplicate pieces: run.c's bsearch would be ambiguous"
    raw = text.encode("utf-8")
    raw = raw.split(b"\0")[0]  # a C string ends at NUL
    tokens = []
    if bos:
        tokens.append(1)
    if len(raw) > 0:
        tokens.append(lookup.get(b" ", -1))
    buf = b""
    for k, c in enumerate(raw):
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        nxt = raw[k + 1] if k + 1 < len(raw) else 0
        if (nxt & 0xC0) == 0x80 and len(buf) < 4:
            continue
        tid = lookup.get(buf, -1)
        if tid != -1:
            tokens.append(tid)
        else:
            tokens.extend(b + 3 for b in buf)
        buf = b""
    while True:
        best_score, best_id, best_idx = f32(-1e10), -1, -1
        for i in range(len(tokens) - 1):
            tid = lookup.get(vocab[tokens[i]] + vocab[tokens[i + 1]], -1)
            if tid != -1 and scores[tid] > best_score:
                best_score, best_id, best_idx = scores[tid], tid, i
        if best_idx == -1:
            break
        tokens[best_idx] = best_id
        del tokens[best_idx + 1]
    return tokens


# Codepoints in the vocabulary (â, €, ™), outside it (é, ï, 日, 🙂: byte fallback), and spaces.
UNICODE = "Caf\u00e9 \u00e2\u20ac\u2122 na\u00efve  \u65e5\u672c \U0001f642 <|endoftext|>\n"


def main():
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("../shared/data")
    model_dir = data_dir / "models" / "stories260K"
    vocab, scores, _ = build_tokenizer(model_dir / "tok512.bin", 512)
    sample = (model_dir / "tinystories-sample.txt").read_text(encoding="utf-8").strip()
    out = {
        "tokenizer": "models/stories260K/tok512.bin",
        "once_upon_a_time_bos": encode(vocab, scores, "Once upon a time", True),
        "once_upon_a_time": encode(vocab, scores, "Once upon a time", False),
        "sample_bos": encode(vocab, scores, sample, True),
        "unicode_text": UNICODE,
        "unicode_bos": encode(vocab, scores, UNICODE, True),
        "empty_bos": encode(vocab, scores, "", True),
        "empty": encode(vocab, scores, "", False),
    }
    dest = Path(__file__).with_name("encode_reference.json")
    dest.write_text(json.dumps(out) + "\n", encoding="utf-8")
    print("once upon a time (bos):", out["once_upon_a_time_bos"])
    print("once upon a time:", out["once_upon_a_time"])
    print("unicode (bos):", out["unicode_bos"])
    print("sample:", len(out["sample_bos"]), "ids; first 20:", out["sample_bos"][:20])


if __name__ == "__main__":
    main()
