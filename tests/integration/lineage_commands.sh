#!/usr/bin/env bash
# The lineage commands end to end on a small Fashion-MNIST run (2 ranks): rsi lineage (text, dot,
# svg through Graphviz, --all, --json), rsi show (the design diff and gain), rsi export + rsi eval (the exported
# model scores exactly its recorded hidden-test accuracy), rsi reproduce (identical generation
# hashes), and rsi run refusing a different manifest on the same directory with the differing keys.
#   RSI=build/runtime/rsi bash tests/integration/lineage_commands.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build_dir=${1:?usage: lineage_commands.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: lineage_commands.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
manifest=$source_dir/tests/manifests/determinism-fashion.yaml
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-lineage.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

mpirun -n 2 "$rsi" run "$manifest" --out "$tmp/run" >"$tmp/run.log" 2>&1 || { tail -20 "$tmp/run.log" >&2; fail "rsi run"; }
best=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "best_id") c = i } NR > 1 { b = $c } END { print b }' "$tmp/run/generations.tsv")
echo "== run: $(($(wc -l <"$tmp/run/models.tsv") - 1)) models, best $best"

"$rsi" lineage "$tmp/run" >"$tmp/lineage.txt"
grep -q "^\* gen .* model $best " "$tmp/lineage.txt" || fail "rsi lineage does not mark the best model $best"
"$rsi" lineage "$tmp/run" --format dot | grep -q "digraph lineage" || fail "rsi lineage --format dot"
"$rsi" lineage "$tmp/run" --format svg --out "$tmp/lineage.svg" >/dev/null
grep -q "<svg" "$tmp/lineage.svg" || fail "rsi lineage --format svg wrote no SVG"
models=$(($(wc -l <"$tmp/run/models.tsv") - 1))
[ "$("$rsi" lineage "$tmp/run" --all | grep -c '^[* ] gen [0-9]* *model ')" = "$models" ] ||
  fail "rsi lineage --all does not list every one of the $models models"
"$rsi" lineage "$tmp/run" --json | python3 -c 'import json, sys
v = json.load(sys.stdin)
assert v["drawn"] + v["folded"] == v["models"] == int(sys.argv[1]) and v["best"] == int(sys.argv[2]), v' "$models" "$best" ||
  fail "rsi lineage --json does not account for every model"
echo "   lineage: text, dot, svg ($(stat -c %s "$tmp/lineage.svg") bytes), --all and --json"

child=$(awk -F'\t' 'NR > 1 && $3 != "-" && $5 == "trained" { print $2; exit }' "$tmp/run/models.tsv")
"$rsi" show "$tmp/run" "$child" >"$tmp/show.txt"
grep -q "gain over parent" "$tmp/show.txt" || fail "rsi show $child: no gain over the parent"
grep -q "design diff against parent" "$tmp/show.txt" || fail "rsi show $child: no design diff"
"$rsi" show "$tmp/run" 999999 >/dev/null 2>&1 && fail "rsi show accepted a missing model"
echo "   show $child: $(grep 'gain over parent' "$tmp/show.txt")"

"$rsi" export "$tmp/run" "$best" --out "$tmp/best.h5" >/dev/null
"$rsi" eval "$tmp/best.h5" --threads 1 >"$tmp/eval.txt" || { cat "$tmp/eval.txt" >&2; fail "rsi eval differs from the record"; }
echo "   eval: $(head -1 "$tmp/eval.txt")"

mpirun -n 2 "$rsi" reproduce "$tmp/run" --out "$tmp/again" >"$tmp/reproduce.log" 2>&1 ||
  { tail -20 "$tmp/reproduce.log" >&2; fail "rsi reproduce found a divergence"; }
echo "   reproduce: $(grep reproduced "$tmp/reproduce.log")"

sed "s/seed: 10/seed: 11/; s#\.\./\.\./experiments#$source_dir/experiments#" "$manifest" >"$tmp/other.yaml"
rc=0
mpirun -n 2 "$rsi" run "$tmp/other.yaml" --out "$tmp/run" >"$tmp/other.log" 2>&1 || rc=$?
((rc != 0)) || fail "rsi run resumed a run of a different manifest"
grep -q "run.seed: 10 -> 11" "$tmp/other.log" || { cat "$tmp/other.log" >&2; fail "the refusal does not name the differing key"; }
echo "   a different manifest is refused: $(grep -m1 'run.seed' "$tmp/other.log" | sed 's/^ *//')"
echo "lineage_commands: all checks passed"
