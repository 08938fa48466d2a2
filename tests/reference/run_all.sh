#!/usr/bin/env bash
# Run the seven reference configurations of tests/reference/README.md one after another:
#   dense; magnitude 0.5; magnitude 2:4; wanda 0.5; wanda 2:4; sparsegpt 0.5; sparsegpt 2:4
# (N:M runs with --nm-tiebreak stable), each with --nsamples 32 --seqlen 512 --seed 0 --eval-seqlen 512.
#
# usage: tests/reference/run_all.sh OUTDIR [extra args for prune_reference.py ...]
#   e.g. tests/reference/run_all.sh /tmp/ref --model ~/.cache/spindle/models/smollm2-135m --threads 1
#        tests/reference/run_all.sh $OUT --device cuda --any-versions --gguf /tmp/ref/model.gguf \
#            --tokenizer .devcarry/tokenizer.json --data .devcarry/data
# The extra args come after the defaults, so they can also override them (e.g. --nsamples 2).
# Writes OUTDIR/<name>.json and OUTDIR/<name>.log (the run's stderr), prints one summary line per run
# (also appended to OUTDIR/summary.txt), goes on past a failed run and exits 1 if any run failed.
# The interpreter is ${PYTHON:-python3}.
set -u
if [ $# -lt 1 ]; then
    echo "usage: $0 OUTDIR [extra args for prune_reference.py ...]" >&2
    exit 2
fi
OUTDIR=$1
shift
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/prune_reference.py
mkdir -p "$OUTDIR" || exit 2

RUNS=(
    "dense|--method dense"
    "magnitude_0.5|--method magnitude --sparsity 0.5"
    "magnitude_2-4|--method magnitude --pattern 2:4 --nm-tiebreak stable"
    "wanda_0.5|--method wanda --sparsity 0.5"
    "wanda_2-4|--method wanda --pattern 2:4 --nm-tiebreak stable"
    "sparsegpt_0.5|--method sparsegpt --sparsity 0.5"
    "sparsegpt_2-4|--method sparsegpt --pattern 2:4 --nm-tiebreak stable"
)

summarize() {  # name json rc seconds
    "$PY" - "$@" <<'EOF'
import json, sys
name, path, rc, wall = sys.argv[1:5]
try:
    r = json.load(open(path))
    s = r.get("seconds", {})
    print(f"{name:14s} rc={rc} ppl={r.get('ppl')!r} windows={r.get('eval_windows')}/{r.get('eval_windows_total')} "
          f"sparsity={r.get('sparsity_overall', float('nan')):.6f} device={r.get('device')} "
          f"load={s.get('load', 0):.1f}s prune={s.get('calibrate_prune', 0):.1f}s eval={s.get('eval', 0):.1f}s "
          f"wall={wall}s")
except Exception as e:
    print(f"{name:14s} rc={rc} no usable JSON ({type(e).__name__}: {e}) wall={wall}s")
EOF
}

failed=()
echo "# $(date -u +%FT%TZ) $PY $SCRIPT, extra args: $*" | tee -a "$OUTDIR/summary.txt"
for run in "${RUNS[@]}"; do
    name=${run%%|*}
    read -r -a margs <<<"${run#*|}"
    json=$OUTDIR/$name.json
    log=$OUTDIR/$name.log
    rm -f "$json"
    t0=$(date +%s)
    "$PY" "$SCRIPT" "${margs[@]}" --nsamples 32 --seqlen 512 --seed 0 --eval-seqlen 512 --json "$json" "$@" 2>"$log"
    rc=$?
    wall=$(( $(date +%s) - t0 ))
    if [ $rc -ne 0 ] || [ ! -s "$json" ]; then
        [ $rc -eq 0 ] && rc=1
        failed+=("$name")
        echo "---- $name failed (rc=$rc); last lines of $log:" >&2
        tail -n 20 "$log" >&2
    fi
    summarize "$name" "$json" "$rc" "$wall" | tee -a "$OUTDIR/summary.txt"
done

if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED: ${failed[*]}" | tee -a "$OUTDIR/summary.txt"
    exit 1
fi
echo "all ${#RUNS[@]} runs OK" | tee -a "$OUTDIR/summary.txt"
