#!/usr/bin/env python3
"""Zero-shot scoring throughput of lm-evaluation-harness, the reference side of `cargo xtask
bench`'s `zeroshot` section (spindle's side is `spindle eval --tasks ... --limit N`, timed the
same way).

lm-eval 0.4.13's `hf` backend (HFLM) on a local model directory, fp32, CPU, with its defaults
(logits cache on, transformers' default attention), scores the first `--limit` items of each task
with the task YAMLs of tests/golden/lmeval/tasks (lm-eval's own definitions reading the local
parquet files; the data folder they name is replaced by `--data`). Each task is one
`simple_evaluate` call in this one process (the model is loaded once); what is timed per task is
HFLM's `loglikelihood` call, which encodes the requests (`_encode_pair`) and scores them, the
same work spindle's timing covers. Building the requests, dataset loading and metric
aggregation are outside it on both sides.

Versions: the pinned ones of tests/golden/requirements.txt plus lm-eval 0.4.13 (the golden venv
of tests/golden/lmeval); they are recorded in the JSON.

    HF_DATASETS_OFFLINE=1 python tests/reference/bench_zeroshot.py --model DIR \\
        --data ../shared/data --tasks arc_easy,hellaswag,piqa --limit 200 --threads 1 \\
        --batch-size 1 --json out.json
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASK_DIR = HERE.parent / "golden" / "lmeval" / "tasks"
# The data folder the committed task YAMLs name.
YAML_DATA = "/work/shared/data"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--tasks", default="arc_easy,hellaswag,piqa")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()

    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    import accelerate
    import lm_eval
    import transformers
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    class TimedHFLM(HFLM):
        """HFLM whose `loglikelihood` calls are timed."""

        seconds = 0.0
        requests = 0

        def loglikelihood(self, requests, disable_tqdm=False):
            start = time.perf_counter()
            out = super().loglikelihood(requests, disable_tqdm=True)
            TimedHFLM.seconds += time.perf_counter() - start
            TimedHFLM.requests += len(requests)
            return out

    data = str(Path(args.data).resolve())
    include = Path(tempfile.mkdtemp(prefix="bench-zeroshot-tasks-"))
    try:
        for f in TASK_DIR.iterdir():
            if f.suffix == ".yaml":
                (include / f.name).write_text(f.read_text().replace(YAML_DATA, data))
            elif f.suffix == ".py":
                shutil.copy(f, include / f.name)
        tm = TaskManager(include_path=str(include), include_defaults=True)
        load_start = time.perf_counter()
        lm = TimedHFLM(pretrained=args.model, tokenizer=args.model, dtype="float32", device="cpu",
                       batch_size=args.batch_size)
        load_seconds = time.perf_counter() - load_start
        tasks = {}
        for task in [t for t in args.tasks.split(",") if t]:
            name = task + "_local"
            TimedHFLM.seconds, TimedHFLM.requests = 0.0, 0
            start = time.perf_counter()
            res = simple_evaluate(model=lm, tasks=[name], task_manager=tm, num_fewshot=0,
                                  limit=args.limit, batch_size=args.batch_size, device="cpu",
                                  bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                                  torch_random_seed=0, fewshot_random_seed=0)
            total = time.perf_counter() - start
            n = int(res["n-samples"][name]["effective"])
            r = res["results"][name]
            tasks[task] = {
                "items": n, "requests": TimedHFLM.requests, "seconds": TimedHFLM.seconds,
                "items_per_second": n / TimedHFLM.seconds, "simple_evaluate_seconds": total,
                "acc": r.get("acc,none"), "acc_norm": r.get("acc_norm,none"),
            }
    finally:
        shutil.rmtree(include, ignore_errors=True)
    out = {
        "tasks": tasks, "limit": args.limit, "threads": args.threads, "batch_size": args.batch_size,
        "model_load_seconds": load_seconds, "logits_cache": lm.logits_cache,
        "attn_implementation": lm.model.config._attn_implementation,
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "lm_eval": lm_eval.__version__,
                     "accelerate": accelerate.__version__},
    }
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({t: {k: v[k] for k in ("items", "seconds", "items_per_second", "acc")} for t, v in tasks.items()}))


if __name__ == "__main__":
    main()
