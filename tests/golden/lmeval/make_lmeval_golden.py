#!/usr/bin/env python3
"""lm-eval (EleutherAI lm-evaluation-harness) golden data for spindle's eval crate.

What: runs lm_eval.simple_evaluate, zero-shot, limit=200, on SmolLM2-135M-Instruct (spindle's fp32
conversion), for piqa, boolq, openbookqa, arc_easy, arc_challenge, winogrande, rte, hellaswag, using
task YAMLs in ./tasks that are copies of lm-eval's own definitions reading the local parquet files of
/work/shared/data/tasks (task names get a `_local` suffix so they don't clash with the built-ins).
Writes lmeval_golden.json: versions, hashes, HFLM settings, per task n/acc/acc_norm, per item the
per-choice loglikelihood sums and is_greedy, gold, predicted index for acc and acc_norm, and for the
first 3 items the exact request (context, continuation) strings plus their token ids as HFLM encodes them.
Why: spindle's Rust evaluator must rebuild the same requests and reproduce the same scores.

Versions: lm-eval 0.4.13 (pip install lm-eval==0.4.13), python 3.11.7, torch 2.13.0+cu130 (run on CPU), transformers 5.24.0,
tokenizers 0.23.3, datasets 5.2.0 (all recorded in the JSON).

Rerun from the repo root (~13 min on one thread):
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \\
      /root/.cache/spindle/golden-venv/bin/python tests/golden/lmeval/make_lmeval_golden.py
Options: --limit N (default 200), --tasks a,b (default all 8), --out PATH.
"""
import argparse
import hashlib
import json
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch

torch.set_num_threads(1)

import datasets
import lm_eval
import numpy as np
import tokenizers
import transformers
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager, get_task_dict

MODEL_DIR = "/tmp/slowcache/models/smollm2-135m"
HERE = os.path.dirname(os.path.abspath(__file__))
TASK_DIR = os.path.join(HERE, "tasks")
TASKS = ["piqa", "boolq", "openbookqa", "arc_easy", "arc_challenge", "winogrande", "rte", "hellaswag"]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def version_of(pkg):
    from importlib.metadata import version
    try:
        return version(pkg)
    except Exception:
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default=os.path.join(HERE, "lmeval_golden.json"))
    args = ap.parse_args()
    short = [t for t in args.tasks.split(",") if t]
    names = [t + "_local" for t in short]

    t_all = time.time()
    lm = HFLM(pretrained=MODEL_DIR, tokenizer=MODEL_DIR, dtype="float32", device="cpu", batch_size=1)
    tok = lm.tokenizer
    hflm_info = {
        "backend": lm.backend,
        "max_length": lm.max_length,
        "add_bos_token": lm.add_bos_token,
        "prefix_token_id": lm.prefix_token_id,
        "prefix_token": tok.decode([lm.prefix_token_id]),
        "eot_token_id": lm.eot_token_id,
        "logits_cache": lm.logits_cache,
        "softmax_dtype": str(lm.softmax_dtype),
        "batch_size": lm.batch_size,
        "model_dtype": str(lm.model.dtype),
        "attn_implementation": lm.model.config._attn_implementation,
        "tokenizer_class": type(tok).__name__,
        "tokenizer_bos_token_id": tok.bos_token_id,
        "tokenizer_eos_token_id": tok.eos_token_id,
        "tokenizer_pad_token_id": tok.pad_token_id,
        "tok_encode('Hello world')": lm.tok_encode("Hello world"),
        "tokenizer.encode('Hello world') (default add_special_tokens=True)": tok.encode("Hello world"),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(hflm_info, indent=1), flush=True)

    tm = TaskManager(include_path=TASK_DIR, include_defaults=True)
    task_dict = get_task_dict(names, tm)

    t0 = time.time()
    results = simple_evaluate(
        model=lm,
        tasks=list(task_dict.values()) if False else names,
        task_manager=tm,
        num_fewshot=0,
        limit=args.limit,
        log_samples=True,
        batch_size=1,
        device="cpu",
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
        fewshot_random_seed=0,
    )
    eval_s = time.time() - t0

    out = {
        "what": "lm-eval zero-shot golden data (simple_evaluate, hf model, limit per task, log_samples)",
        "versions": {
            "python": platform.python_version(),
            "lm_eval": version_of("lm_eval"),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "datasets": datasets.__version__,
            "numpy": np.__version__,
        },
        "model_dir": MODEL_DIR,
        "model_safetensors_sha256": sha256(os.path.join(MODEL_DIR, "model.safetensors")),
        "tokenizer_json_sha256": sha256(os.path.join(MODEL_DIR, "tokenizer.json")),
        "simple_evaluate_args": {
            "model": "hf (HFLM instance)", "pretrained": MODEL_DIR, "tokenizer": MODEL_DIR,
            "dtype": "float32", "device": "cpu", "batch_size": 1, "num_fewshot": 0,
            "limit": args.limit, "log_samples": True, "include_path": "tests/golden/lmeval/tasks",
            "bootstrap_iters": 0,
        },
        "hflm": hflm_info,
        "elapsed_s": {"evaluate": eval_s},
        "tasks": {},
    }

    for s, name in zip(short, names):
        task = task_dict[name]
        res = results["results"][name]
        samples = sorted(results["samples"][name], key=lambda x: x["doc_id"])
        multiple_input = bool(getattr(task, "multiple_input", 0))
        has_norm = "acc_norm,none" in res
        items = []
        requests = []
        for smp in samples:
            doc = smp["doc"]
            choices = task.doc_to_choice(doc)
            gold = task.doc_to_text(doc) if multiple_input else task.doc_to_target(doc)
            if isinstance(gold, str):
                gold = choices.index(gold)
            resps = smp["filtered_resps"]
            lls = [float(r[0]) for r in resps]
            greedy = [bool(r[1]) for r in resps]
            pred = int(np.argmax(lls))
            item = {
                "doc_id": int(smp["doc_id"]),
                "gold": int(gold),
                "ll": lls,
                "is_greedy": greedy,
                "pred_acc": pred,
                "acc": float(smp["acc"]),
            }
            assert (pred == gold) == (smp["acc"] == 1.0), (name, smp["doc_id"])
            if has_norm:
                clen = np.array([float(len(c)) for c in choices])
                pn = int(np.argmax(np.array(lls) / clen))
                item["choice_len_chars"] = [len(c) for c in choices]
                item["pred_acc_norm"] = pn
                item["acc_norm"] = float(smp["acc_norm"])
                assert (pn == gold) == (smp["acc_norm"] == 1.0), (name, smp["doc_id"])
            else:
                item["pred_acc_norm"] = None
                item["acc_norm"] = None
            items.append(item)
            if len(requests) < 3:
                args_list = [smp["arguments"][k] for k in sorted(smp["arguments"], key=lambda k: int(k.split("_")[-1]))] \
                    if isinstance(smp["arguments"], dict) else smp["arguments"]
                reqs = []
                for a in args_list:
                    if isinstance(a, dict):
                        ctx, cont = a["arg_0"], a["arg_1"]
                    else:
                        ctx, cont = a[0], a[1]
                    cenc, wenc = lm._encode_pair(ctx, cont)
                    reqs.append({"context": ctx, "continuation": cont,
                                 "context_enc": cenc, "continuation_enc": wenc})
                requests.append({"doc_id": int(smp["doc_id"]), "doc": {k: v for k, v in doc.items()},
                                 "choices": choices, "gold": int(gold), "requests": reqs})
        accs = [it["acc"] for it in items]
        entry = {
            "lm_eval_task": s,
            "task_name": name,
            "output_type": task.OUTPUT_TYPE,
            "multiple_input": multiple_input,
            "target_delimiter": task.config.target_delimiter,
            "n": len(items),
            "acc": res.get("acc,none"),
            "acc_norm": res.get("acc_norm,none"),
            "acc_check_from_items": float(np.mean(accs)),
            "first3_requests": requests,
            "items": items,
        }
        if has_norm:
            entry["acc_norm_check_from_items"] = float(np.mean([it["acc_norm"] for it in items]))
        out["tasks"][s] = entry
        print(f"{s}: n={len(items)} acc={entry['acc']} acc_norm={entry['acc_norm']}", flush=True)

    out["elapsed_s"]["total"] = time.time() - t_all
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=True, default=str)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t_all:.1f}s", flush=True)


if __name__ == "__main__":
    main()
