#!/usr/bin/env bash
# The determinism contract end to end: `rsi run` on 1, 2 and 4 ranks (1, 2 and 4 trainer groups of
# one rank) writes byte-identical models.tsv files — the same genomes, metrics and weight digests —
# for a small Fashion-MNIST run (plain, and with every self-improvement switch on) and for the
# surrogate task. On a difference it prints the diff.
#   RSI=build/runtime/rsi bash tests/integration/determinism.sh BUILD_DIR SOURCE_DIR
# About a minute on 2 cores (4 ranks are oversubscribed).
set -euo pipefail

build_dir=${1:?usage: determinism.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: determinism.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "determinism.sh: no rsi executable at $rsi (build the 'rsi' target or set RSI)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-determinism.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=0

# Runs MANIFEST on 1, 2 and 4 ranks and compares the three models.tsv files with the first.
check_manifest() {
  local manifest=$1 label=$2
  local dir="$tmp/$label"
  echo "== $label: $manifest"
  for n in 1 2 4; do
    local extra=()
    ((n > 2)) && extra=(--oversubscribe)
    local start=$SECONDS
    if ! mpirun -n "$n" "${extra[@]}" "$rsi" run "$manifest" --out "$dir/np$n" >"$dir.np$n.log" 2>&1; then
      echo "FAIL: $label: mpirun -n $n $rsi run $manifest exited non-zero; its output:" >&2
      tail -n 30 "$dir.np$n.log" >&2
      failures=$((failures + 1))
      return
    fi
    echo "   ran on $n rank(s) in $((SECONDS - start)) s: $(($(wc -l <"$dir/np$n/models.tsv") - 1)) models"
  done
  local trained
  trained=$(awk -F'\t' 'NR > 1 && $5 == "trained"' "$dir/np1/models.tsv" | wc -l)
  if ((trained == 0)); then
    echo "FAIL: $label: no model was trained; nothing to compare" >&2
    failures=$((failures + 1))
    return
  fi
  for n in 2 4; do
    echo "   compare models.tsv (genomes' ops and descriptions, status, val/test accuracy, params, flops, weight digests): 1 rank vs $n ranks"
    if ! cmp -s "$dir/np1/models.tsv" "$dir/np$n/models.tsv"; then
      echo "FAIL: $label: models.tsv differs between 1 and $n ranks:" >&2
      diff "$dir/np1/models.tsv" "$dir/np$n/models.tsv" >&2 || true
      failures=$((failures + 1))
    fi
  done
  ((failures == 0)) && echo "   identical ($trained trained models)"
  return 0
}

check_manifest "$source_dir/tests/manifests/determinism-fashion.yaml" fashion
check_manifest "$source_dir/tests/manifests/surrogate-small.yaml" surrogate
# Every self-improvement switch on (the learned designer, deduplication, rungs that keep one schedule
# and one optimizer state, niches, distillation only where it teaches): the same lineage too.
check_manifest "$source_dir/tests/manifests/resume-fashion-improving.yaml" improving

if ((failures > 0)); then
  echo "determinism.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "determinism.sh: identical lineages on 1, 2 and 4 ranks"
