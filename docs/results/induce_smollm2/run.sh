#!/usr/bin/env bash
# The Sparsity Induction table on SmolLM2-135M-Instruct (docs/results/induce_smollm2.md).
# usage: docs/results/induce_smollm2/run.sh OUTDIR [ROW ...]   (default: every row)
# Every row: `spindle prune` at 50% unstructured with the same 32 C4 windows of 512 tokens
# (seed 0), induction (if any) in the same pass, then `spindle eval` on WikiText-2 at seqlen 512,
# the first $WINDOWS windows (default 64; WINDOWS=all for the protocol's 595); NSAMPLES
# calibration windows (default 32). A row whose
# eval JSON exists is skipped, so an interrupted run resumes. One libtorch thread ($THREADS).
set -u
OUT=${1:?usage: run.sh OUTDIR [ROW ...]}
shift
BIN=${SPINDLE:-target/release/spindle}
T=${THREADS:-1}
W=${WINDOWS:-64}
mkdir -p "$OUT"
D="--si-sites norms --si-start act-norm --si-steps 0"
PA="--pruning-aware true --snl none"
SNL="--pruning-aware false --snl-lambda 1e-3"
ONP="--pruning-aware false --feature-on-pruned true --snl none"
declare -A ROWS=(
  [magnitude]="--method magnitude"
  [wanda]="--method wanda"
  [sparsegpt]="--method sparsegpt"
  [dist.magnitude]="--method magnitude --induce distribution $D"
  [dist-all.magnitude]="--method magnitude --induce distribution --si-sites all --si-start act-norm --si-steps 40"
  [dist-sq.magnitude]="--method magnitude --induce distribution --si-sites norms --si-start smoothquant --si-steps 40"
  [equiv-snl.magnitude]="--method magnitude --induce equivalent-snl --si-sites norms --snl nuclear"
  [dist+pa.magnitude]="--method magnitude --induce distribution,feature $D $PA"
  [pa.wanda]="--method wanda --induce feature $PA"
  [pa.sparsegpt]="--method sparsegpt --induce feature $PA"
  [snl-nuclear.wanda]="--method wanda --induce feature $SNL --snl nuclear"
  [snl-sf.wanda]="--method wanda --induce feature $SNL --snl spectral-frobenius"
  [snl-se.wanda]="--method wanda --induce feature $SNL --snl spectral-energy"
  [pa+snl.wanda]="--method wanda --induce feature --pruning-aware true --snl nuclear --snl-lambda 1e-3"
  [pa+snl-small.wanda]="--method wanda --induce feature --pruning-aware true --snl nuclear --snl-lambda 1e-5"
  [pa.magnitude]="--method magnitude --induce feature $PA"
  [snl-out.wanda]="--method wanda --induce feature $SNL --snl nuclear --snl-features output"
  [pa-lr1e-3.sparsegpt]="--method sparsegpt --induce feature $PA --feature-lr 1e-3"
  [onpruned.sparsegpt]="--method sparsegpt --induce feature $ONP"
  [onpruned.wanda]="--method wanda --induce feature $ONP"
  [dist+onpruned.magnitude]="--method magnitude --induce distribution,feature $D $ONP"
)
ORDER="magnitude wanda sparsegpt dist.magnitude dist+pa.magnitude pa.wanda pa.sparsegpt dist-all.magnitude equiv-snl.magnitude pa.magnitude snl-nuclear.wanda snl-sf.wanda snl-se.wanda snl-out.wanda pa+snl.wanda pa+snl-small.wanda pa-lr1e-3.sparsegpt dist-sq.magnitude onpruned.sparsegpt onpruned.wanda dist+onpruned.magnitude"
[ $# -gt 0 ] && ORDER="$*"
EVAL=(--max-windows "$W")
[ "$W" = all ] && EVAL=()
for row in $ORDER; do
  args=${ROWS[$row]:?unknown row $row}
  [ -f "$OUT/$row.eval.json" ] && { echo "$row: done"; continue; }
  rm -rf "$OUT/$row.model"
  echo "$row: spindle prune $args"
  # shellcheck disable=SC2086
  "$BIN" --threads "$T" prune --model smollm2-135m --sparsity 0.5 --nsamples "${NSAMPLES:-32}" --seqlen 512 --seed 0 $args \
      --out "$OUT/$row.model" --json "$OUT/$row.prune.json" > "$OUT/$row.prune.log" 2>&1 || { echo "$row: prune failed"; continue; }
  "$BIN" --threads "$T" eval --model "$OUT/$row.model" --ppl wikitext2 --seqlen 512 "${EVAL[@]}" \
      --json "$OUT/$row.eval.json.tmp" > "$OUT/$row.eval.log" 2>&1 && mv "$OUT/$row.eval.json.tmp" "$OUT/$row.eval.json"
  rm -rf "$OUT/$row.model"
  grep wikitext2 "$OUT/$row.eval.log" | sed "s/^/$row: /"
done
