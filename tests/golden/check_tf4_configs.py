#!/usr/bin/env python3
"""Cross-check config.tf4.json against what transformers 4 itself writes.

make_golden.py builds ``<name>/config.tf4.json`` by translating the transformers-5
``config.json`` (rope_parameters -> rope_theta + rope_scaling, dtype -> torch_dtype).
This script, run with transformers==4.55.4 (the last 4.x release that writes
``torch_dtype``; 4.56+ already writes ``dtype``), rebuilds each config with the 4.x
config classes from the same hyper-parameters and reports every key whose value
differs from config.tf4.json. It also lists every config.tf4.json key that is not an
attribute of a default-constructed 4.x config (an extra key survives the round trip
above, because 4.x keeps unknown kwargs, yet 4.x itself would never write it).
It needs no torch and writes nothing. Pass fixture names to check only those.

Rerun (from the repository root)::

    python3 -m venv /root/.cache/spindle/tf4-venv
    /root/.cache/spindle/tf4-venv/bin/pip install transformers==4.55.4
    /root/.cache/spindle/tf4-venv/bin/python tests/golden/check_tf4_configs.py
"""

import json
import sys
from pathlib import Path

import transformers
from transformers import AutoConfig

HERE = Path(__file__).resolve().parent
NAMES = ["llama-gqa", "llama3-rope", "mistral", "qwen2", "opt-pre", "opt-post-proj",
         "qwen3", "phi3", "gemma2", "gemma3", "mixtral"]


def main(names):
    print("transformers", transformers.__version__)
    for name in names or NAMES:
        tf4 = json.loads((HERE / name / "config.tf4.json").read_text())
        kwargs = {k: v for k, v in tf4.items() if k not in ("model_type", "transformers_version")}
        cfg = AutoConfig.for_model(tf4["model_type"], **kwargs)
        written = json.loads(cfg.to_json_string(use_diff=True))
        diffs = []
        for k in sorted(set(written) | set(tf4)):
            if k == "transformers_version":
                continue
            a, b = written.get(k, "<absent>"), tf4.get(k, "<absent>")
            if a != b:
                diffs.append(f"{k}: transformers {transformers.__version__} writes {a!r}, config.tf4.json has {b!r}")
        known = set(type(cfg)().to_dict())
        extra = sorted(k for k in tf4 if k not in known)
        print(f"{name}: {'identical' if not diffs else ''}")
        for d in diffs:
            print("   ", d)
        if extra:
            print(f"    keys that {type(cfg).__name__} {transformers.__version__} does not have "
                  f"(it would not write them): {extra}")


if __name__ == "__main__":
    main(sys.argv[1:])
