#!/usr/bin/env bash
# Portable determinism across CPUs, checked over time: a small Fashion-MNIST run
# (tests/manifests/determinism-fashion.yaml) must reproduce, byte for byte, the models.tsv committed
# in tests/golden/ — genomes, accuracies and the SHA-256 of every model's weights — whatever CPU this
# is. The machines this project is built and tested on change between AMD EPYC and Intel Xeon
# (AVX2, AVX-512, AMX), so CI checks the contract on each of them as they come.
#
# Here it runs with every CPU kernel family this CPU supports (best, avx2, generic: same bits by
# construction, kernels/README.md), once with 2 threads per rank instead of 1, and once on 2 ranks.
#   bash tests/integration/portable.sh BUILD_DIR SOURCE_DIR            check (about 30 s on 2 cores)
#   bash tests/integration/portable.sh BUILD_DIR SOURCE_DIR --update   rewrite the golden file after a
#                                                                      change that alters the arithmetic on purpose
set -euo pipefail

build_dir=${1:?usage: portable.sh BUILD_DIR SOURCE_DIR [--update]}
source_dir=$(cd "${2:?usage: portable.sh BUILD_DIR SOURCE_DIR [--update]}" && pwd)
update=${3:-}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "portable.sh: no rsi executable at $rsi (build the 'rsi' target or set RSI)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
unset RSI_CPU_KERNEL

manifest=$source_dir/tests/manifests/determinism-fashion.yaml
golden=$source_dir/tests/golden/determinism-fashion.models.tsv
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "portable.sh: CPU: $cpu ($(nproc) cores)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-portable.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The same manifest with 2 threads per rank (its seed path made absolute, as the copy lives elsewhere).
sed -e 's/threads_per_rank: 1/threads_per_rank: 2/' \
    -e "s#\.\./\.\./experiments/#$source_dir/experiments/#" "$manifest" >"$tmp/threads2.yaml"
grep -q 'threads_per_rank: 2' "$tmp/threads2.yaml" || { echo "portable.sh: could not make the 2-thread manifest" >&2; exit 1; }

run() {  # label, ranks, manifest, env...
  local label=$1 ranks=$2 file=$3
  shift 3
  local start=$SECONDS
  if ! env "$@" mpirun -n "$ranks" "$rsi" run "$file" --out "$tmp/$label" >"$tmp/$label.log" 2>&1; then
    echo "FAIL: $label: rsi run exited non-zero; its output:" >&2
    tail -n 30 "$tmp/$label.log" >&2
    exit 1
  fi
  echo "   $label: $(grep -o 'cpu kernels [a-z0-9]*' "$tmp/$label.log" | head -n 1), $ranks rank(s), $((SECONDS - start)) s"
}

run best 1 "$manifest"
if [[ $update == --update ]]; then
  mkdir -p "$(dirname "$golden")"
  cp "$tmp/best/models.tsv" "$golden"
  echo "portable.sh: wrote $golden from this CPU ($cpu)"
  exit 0
fi
[[ -f $golden ]] || { echo "portable.sh: no golden file $golden (make one with --update)" >&2; exit 1; }

labels=(best)
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  run avx2 1 "$manifest" RSI_CPU_KERNEL=avx2
  labels+=(avx2)
fi
run generic 1 "$manifest" RSI_CPU_KERNEL=generic
labels+=(generic)
run threads2 1 "$tmp/threads2.yaml"
run ranks2 2 "$manifest"
labels+=(threads2 ranks2)

failures=0
for label in "${labels[@]}"; do
  if ! cmp -s "$golden" "$tmp/$label/models.tsv"; then
    echo "FAIL: $label: models.tsv differs from $golden (made on another CPU, or the arithmetic changed):" >&2
    diff "$golden" "$tmp/$label/models.tsv" >&2 || true
    failures=$((failures + 1))
  fi
done
if ((failures > 0)); then
  echo "portable.sh: $failures of ${#labels[@]} runs differ from the golden lineage on $cpu" >&2
  exit 1
fi
echo "portable.sh: ${#labels[@]} runs (${labels[*]}) reproduce $(basename "$golden") bit for bit on $cpu"
