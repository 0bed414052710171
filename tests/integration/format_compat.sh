#!/usr/bin/env bash
# Lineages written before a format change still verify, resume and reproduce (issue 15).
# tests/golden/lineage-format1/ is a small Fashion-MNIST lineage (tests/manifests/resume-fashion.yaml,
# generations 0 and 1, 2 ranks) written by rsi in lineage format 1, whose weight digests started
# from a wrong FNV offset basis (checkpoints/FORMAT.md, "Format versions"). This rsi writes format 2.
#   - rsi verify passes on it, and rsi export (HDF5 and ONNX) / rsi eval read its models;
#   - rsi reproduce re-runs it in format 1 and every generation hash matches the original;
#   - a resume continues it in format 1 (every new file says format_version 1) and verifies, and
#     its models are those of a fresh run of the same manifest in format 2 except for the digest text;
#   - a fresh run is written in format 2 and verifies.
#   bash tests/integration/format_compat.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: format_compat.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: format_compat.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "format_compat.sh: no rsi executable at $rsi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
manifest=$source_dir/tests/manifests/resume-fashion.yaml
fixture=$source_dir/tests/golden/lineage-format1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-format.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
versions() {  # the format_version of every generation file, space-separated
  for f in "$1"/gen-??????.h5; do h5dump -a format_version "$f" | awk '/\(0\)/ { printf "%s ", $2 }'; done
}
without_digests() { cut -f1-11,13- "$1/models.tsv"; }  # column 12 is the weights digest

cp -r "$fixture" "$tmp/old"
[[ $(versions "$tmp/old") == "1 1 " ]] || fail "the fixture is not format 1: $(versions "$tmp/old")"
"$rsi" verify "$tmp/old" >"$tmp/verify.log" 2>&1 || { fail "rsi verify on the format-1 lineage:"; cat "$tmp/verify.log" >&2; }
echo "== format 1 verifies"
"$rsi" export "$tmp/old" 2 --out "$tmp/model2.h5" >/dev/null && "$rsi" eval "$tmp/model2.h5" --threads 1 >"$tmp/eval.log" 2>&1 ||
  { fail "rsi export / eval of a format-1 model:"; cat "$tmp/eval.log" >&2; }
echo "== its models export and evaluate to their recorded accuracy"
"$rsi" export "$tmp/old" 2 --format onnx --out "$tmp/model2.onnx" >"$tmp/onnx.log" 2>&1 && [[ -s $tmp/model2.onnx ]] ||
  { fail "rsi export --format onnx of a format-1 model (no tensor table: derived from the genome):"; cat "$tmp/onnx.log" >&2; }
echo "== and export to ONNX (python/tests/test_onnx.py runs them in onnxruntime)"

"$rsi" reproduce "$tmp/old" --generations 1 --out "$tmp/reproduced" >"$tmp/reproduce.log" 2>&1 ||
  { fail "rsi reproduce of the format-1 lineage diverged:"; tail -5 "$tmp/reproduce.log" >&2; }
[[ $(versions "$tmp/reproduced") == "1 1 " ]] || fail "the reproduction is not in format 1: $(versions "$tmp/reproduced")"
echo "== rsi reproduce re-runs it in format 1, every generation hash equal"

mpirun -n 2 "$rsi" run "$manifest" --out "$tmp/old" --generations 3 >"$tmp/resume.log" 2>&1 ||
  { fail "resuming the format-1 lineage:"; tail -10 "$tmp/resume.log" >&2; }
grep -q "resuming after generation 1" "$tmp/resume.log" || fail "it did not resume after generation 1"
[[ $(versions "$tmp/old") == "1 1 1 1 " ]] || fail "the resumed lineage changed format: $(versions "$tmp/old")"
"$rsi" verify "$tmp/old" >/dev/null 2>&1 || fail "the resumed format-1 lineage does not verify"
echo "== a resume continues it in format 1: $(versions "$tmp/old")"

mpirun -n 2 "$rsi" run "$manifest" --out "$tmp/new" --generations 3 >"$tmp/new.log" 2>&1 ||
  { fail "a fresh run:"; tail -10 "$tmp/new.log" >&2; }
[[ $(versions "$tmp/new") == "2 2 2 2 " ]] || fail "a fresh run is not format 2: $(versions "$tmp/new")"
"$rsi" verify "$tmp/new" >/dev/null 2>&1 || fail "the fresh format-2 run does not verify"
diff <(without_digests "$tmp/old") <(without_digests "$tmp/new") >&2 ||
  fail "the resumed format-1 lineage and a fresh format-2 run differ beyond the digest text"
cmp -s "$tmp/old/models.tsv" "$tmp/new/models.tsv" && fail "format 1 and 2 digests are equal: the basis did not change"
echo "== a fresh run is format 2: the same models, digests from the standard FNV basis"

((failures == 0)) && echo "format_compat: all checks passed" || { echo "format_compat: $failures failure(s)" >&2; exit 1; }
