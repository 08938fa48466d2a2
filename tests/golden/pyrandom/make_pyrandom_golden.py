"""Write golden.json: draws from CPython's `random` module that spindle's PyRandom must reproduce.

Standard library only. Run with CPython 3.11.x from the repository root or from anywhere:

    python3.11 tests/golden/pyrandom/make_pyrandom_golden.py

Every list starts from a fresh `random.seed(seed)`, exactly as the Wanda/SparseGPT calibration
loaders seed the module-level generator before drawing windows. Floats are recorded twice: as
`repr` (for people) and as the IEEE-754 bit pattern (for the exact comparison).
"""

import json
import platform
import random
import struct
import sys
from pathlib import Path

assert platform.python_implementation() == "CPython", platform.python_implementation()
assert sys.version_info[:2] == (3, 11), f"CPython 3.11.x required, got {sys.version}"

SEEDS = [0, 1, 42, 2**32 + 7, 2**40, -5]
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def f64_bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def fresh(seed):
    random.seed(seed)
    return random


def case(seed):
    out = {"seed": seed}
    r = fresh(seed)
    out["getrandbits_32"] = [r.getrandbits(32) for _ in range(20)]
    r = fresh(seed)
    out["getrandbits_7"] = [r.getrandbits(7) for _ in range(10)]
    r = fresh(seed)
    out["getrandbits_64"] = [r.getrandbits(64) for _ in range(10)]
    r = fresh(seed)
    out["getrandbits_33"] = [r.getrandbits(33) for _ in range(5)]
    r = fresh(seed)
    out["randint_0_999"] = [r.randint(0, 999) for _ in range(20)]
    r = fresh(seed)
    out["randint_0_2p31m1"] = [r.randint(0, 2**31 - 1) for _ in range(20)]
    r = fresh(seed)
    # Width 2**40 + 1 (bit_length 41) and width 2**64 (bit_length 65, so getrandbits(65)).
    out["randint_pm2p40"] = [r.randint(-(2**40), 2**40) for _ in range(5)]
    r = fresh(seed)
    out["randint_i64_full"] = [r.randint(I64_MIN, I64_MAX) for _ in range(5)]
    r = fresh(seed)
    # Width 1: _randbelow(1) draws getrandbits(1) until it is 0; the state must advance alike.
    out["randint_3_3_then_getrandbits_32"] = [r.randint(3, 3) for _ in range(5)] + [r.getrandbits(32)]
    r = fresh(seed)
    floats = [r.random() for _ in range(10)]
    out["random_repr"] = [repr(x) for x in floats]
    out["random_bits"] = [f64_bits(x) for x in floats]
    return out


def wanda_loop():
    # As in Wanda's get_c4/get_wikitext2: seed once, then per sample a document index and a window
    # start. Here 1000 documents of 5000 tokens each and seqlen 2048.
    random.seed(0)
    pairs = []
    for _ in range(50):
        i = random.randint(0, 999)
        j = random.randint(0, 5000 - 2048 - 1)
        pairs.append([i, j])
    return pairs


def main():
    golden = {
        "generator": "tests/golden/pyrandom/make_pyrandom_golden.py",
        "python": sys.version,
        "cases": [case(s) for s in SEEDS],
        "wanda_seed0_i_j": wanda_loop(),
    }
    path = Path(__file__).with_name("golden.json")
    path.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
