"""Prints the Markdown table of docs/results/induce_smollm2.md from a run.sh output folder.

usage: python3 docs/results/induce_smollm2/table.py OUTDIR   (standard library only)
"""
import json
import pathlib
import sys

out = pathlib.Path(sys.argv[1])
base = {}
rows = []
for f in sorted(out.glob("*.eval.json")):
    row = f.name[: -len(".eval.json")]
    ev = json.loads(f.read_text())
    pr = json.loads((out / f"{row}.prune.json").read_text())
    ppl = ev["perplexity"]["wikitext2"]
    windows = ev.get("perplexity_timing", {}).get("wikitext2", {}).get("windows")
    method = pr["config"]["method"]
    induce = (pr["config"].get("induce") or {}).get("stages", "none")
    secs = pr["seconds"]["total"]
    rows.append((row, method, induce, ppl, windows, secs))
    if induce == "none":
        base[method] = ppl
print("| row | pruner | induction | WikiText-2 ppl | vs. base pruner | windows | prune s |")
print("|---|---|---|---:|---:|---:|---:|")
for row, method, induce, ppl, windows, secs in rows:
    b = base.get(method)
    delta = f"{(ppl / b - 1) * 100:+.1f}%" if b and induce != "none" else ""
    print(f"| {row} | {method} | {induce} | {ppl:.2f} | {delta} | {windows} | {secs:.0f} |")
