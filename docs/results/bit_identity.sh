#!/bin/bash
# The bit-identity check for refactors (#18): prunes SmolLM2-135M twelve ways with the binary $1
# into $2, then, given a second folder $3 made by another build, compares each checkpoint's
# sha256 over its weights, index and config.json (the recipe file, new in 7dff581, is left out).
# Usage: bash docs/results/bit_identity.sh target/release/spindle /tmp/after [/tmp/before]
set -u
B=$1; O=$2; M=smollm2-135m; D=${SPINDLE_DATA:-../shared/data}
C="--threads 1 --data-dir $D prune --model $M --nsamples 4 --seqlen 128"
mkdir -p "$O"
for m in magnitude wanda sparsegpt; do
  for p in "--sparsity 0.5" "--pattern 2:4"; do
    tag=$m-$(echo $p | tr -d ' -:.')
    $B $C --method $m $p --out $O/$tag > /dev/null 2>&1 || echo "FAIL $tag"
    $B $C --method $m $p --induce distribution,feature --feature-epochs 1 --out $O/$tag-si > /dev/null 2>&1 || echo "FAIL $tag-si"
  done
done
hash() { (cd "$1" && cat model-*.safetensors model.safetensors.index.json config.json | sha256sum | cut -c1-16); }
[ $# -ge 3 ] || exit 0
for d in $(ls "$O"); do
  x=$(hash "$3/$d"); y=$(hash "$O/$d")
  echo "$d $x $y $([ "$x" = "$y" ] && echo same || echo DIFF)"
done
