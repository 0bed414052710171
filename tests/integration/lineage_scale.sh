#!/usr/bin/env bash
# The lineage view at scale: a 10,003-model surrogate run (tests/manifests/lineage-scale.yaml, 50
# generations of 200 children at no cost per model; its time is printed), then `rsi lineage`:
# the SVG's width and height within 4000 pt; --json checked against the run's own files (models.tsv,
# the newest gen-*.h5's population) by an independent Python reading of the pruning rules — every
# model drawn or folded exactly once, a drawn model is live (a descendant in the final population or
# on the best path), at most 36 models per generation row and 24 generation rows, --best-path is the
# best model's first-parent line and its mates only, --population the population and its ancestors,
# --last K folds the generations before the last K into one node; text and dot carry one row per
# generation. The same views of a 6,003-model run whose population of 200 is kept by truncation
# (tests/manifests/lineage-scale-wide.yaml: rows reach the 36-model bound). Then `rsi report` on the same run, and headless Chromium screenshots of the lineage
# SVG and of the report's lineage figure, both checked not blank (lib/screenshot_check.py).
# RSI_KEEP=DIR keeps the SVG, JSON, report and the two PNGs in DIR for inspection. About a minute on
# 2 cores; the screenshots are skipped without chromium.
#   RSI=build/runtime/rsi bash tests/integration/lineage_scale.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build_dir=${1:?usage: lineage_scale.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: lineage_scale.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
lib=$(cd "$(dirname "$0")" && pwd)/lib
# Debian's Python by path (h5py reads the population): the first python3 on PATH may lack it.
py=/usr/bin/python3
[ -x "$py" ] || py=python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-lineage-scale.XXXXXX")
keep=${RSI_KEEP:-}
finish() {
  if [ -n "$keep" ]; then
    mkdir -p "$keep"
    cp -f "$tmp"/*.svg "$tmp"/*.json "$tmp"/*.png "$tmp"/*.html "$tmp"/*.txt "$keep"/ 2>/dev/null || true
    [ -d "$tmp/wide-views" ] && cp -f "$tmp/wide-views/lineage.svg" "$keep/wide-lineage.svg" || true
    echo "   kept the SVG, JSON, report and screenshots in $keep"
  fi
  rm -rf "$tmp"
}
trap finish EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
command -v dot >/dev/null || { echo "lineage_scale.sh: SKIP: no Graphviz 'dot' (install the Debian package 'graphviz')"; exit 0; }

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
start=$EPOCHREALTIME
RSI_PROGRESS=plain "$rsi" run "$source_dir/tests/manifests/lineage-scale.yaml" --out "$tmp/run" >"$tmp/run.log" 2>&1 ||
  { tail -20 "$tmp/run.log" >&2; fail "rsi run"; }
run_seconds=$(elapsed "$start")
models=$(($(wc -l <"$tmp/run/models.tsv") - 1))
((models >= 10000)) || fail "the run made $models models, expected at least 10000"
echo "== run: $models models in $(($(wc -l <"$tmp/run/generations.tsv") - 1)) generations, $run_seconds s"

timed() {  # timed NAME COMMAND...: runs it (its output dropped), prints its time
  local t0=$EPOCHREALTIME
  "${@:2}" >/dev/null || fail "$1"
  printf '   %-28s %s s\n' "$1" "$(elapsed "$t0")"
}
# views OUT RUN: the SVGs and JSON views lineage_view_check.py reads.
views() {
  local out=$1 run=$2
  mkdir -p "$out"
  timed "rsi lineage --format svg" "$rsi" lineage "$run" --format svg --out "$out/lineage.svg"
  timed "rsi lineage --json" "$rsi" lineage "$run" --json --out "$out/default.json"
  "$rsi" lineage "$run" --json --best-path >"$out/best-path.json" || fail "rsi lineage --json --best-path"
  "$rsi" lineage "$run" --json --population >"$out/population.json" || fail "rsi lineage --json --population"
  "$rsi" lineage "$run" --json --last 5 >"$out/last5.json" || fail "rsi lineage --json --last 5"
  "$rsi" lineage "$run" --json --best-path --last 10 >"$out/best-path-last10.json" || fail "rsi lineage --json --best-path --last 10"
  "$rsi" lineage "$run" --json --best-path --all >"$out/best-path-all.json" || fail "rsi lineage --json --best-path --all"
  "$rsi" lineage "$run" --best-path --format svg --out "$out/best-path.svg" >/dev/null || fail "rsi lineage --best-path --format svg"
  "$py" "$lib/lineage_view_check.py" "$out" "$run" || exit 1
}
views "$tmp" "$tmp/run"
"$rsi" lineage "$tmp/run" >"$tmp/lineage.txt" || fail "rsi lineage (text)"
"$rsi" lineage "$tmp/run" --format dot >"$tmp/lineage.dot" || fail "rsi lineage --format dot"
rc=0
"$rsi" lineage "$tmp/run" --json --format dot >/dev/null 2>"$tmp/excl.log" || rc=$?
((rc == 2)) || fail "rsi lineage --json --format dot: exit $rc, expected 2 (they exclude each other)"
rc=0
"$rsi" lineage "$tmp/run" --last 0 >/dev/null 2>"$tmp/last0.log" || rc=$?
((rc == 2)) || fail "rsi lineage --last 0: exit $rc, expected 2"


# The worst case for the bounds: a population of 200 kept by truncation (rows at 36 models, edges
# spanning generations); Graphviz scales its drawing down to the bound.
start=$EPOCHREALTIME
RSI_PROGRESS=plain "$rsi" run "$source_dir/tests/manifests/lineage-scale-wide.yaml" --out "$tmp/wide" >"$tmp/wide.log" 2>&1 ||
  { tail -20 "$tmp/wide.log" >&2; fail "rsi run (wide)"; }
echo "== wide run: $(($(wc -l <"$tmp/wide/models.tsv") - 1)) models, $(elapsed "$start") s"
views "$tmp/wide-views" "$tmp/wide"
"$py" -c 'import json, sys
v = json.load(open(sys.argv[1]))
widest = max(sum(n["kind"] == "model" for n in v["nodes"] if n["id"] in r["nodes"]) for r in v["rows"])
print(f"   wide: the widest row draws {widest} models")
sys.exit(0 if widest == 36 else "FAIL: the wide run does not reach the 36-model bound of a row")' "$tmp/wide-views/default.json" || exit 1

best=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "best_id") c = i } NR > 1 { b = $c } END { print b }' "$tmp/run/generations.tsv")
grep -q "^\* gen .* model $best " "$tmp/lineage.txt" || fail "rsi lineage (text) does not mark the best model $best"
rows=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["rows"]))' "$tmp/default.json")
[ "$(grep -c '^gens\? [0-9]' "$tmp/lineage.txt")" = "$rows" ] || fail "the text has not one header line per row ($rows rows)"
[ "$(grep -c 'rank=same' "$tmp/lineage.dot")" = "$rows" ] || fail "the dot has not one rank per row ($rows rows)"
grep -q '+[0-9]* others (best val' "$tmp/lineage.txt" || fail "no '+N others' summary in the text"
echo "   text and dot: $rows rows, e.g. $(grep -m1 'others (best val' "$tmp/lineage.txt" | sed 's/^ *//')"

timed "rsi report" "$rsi" report "$tmp/run" --out "$tmp/report.html"
python3 - "$tmp/report.html" "$tmp/report-tree.html" "$models" <<'EOF'
import re, sys
page, out, models = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3])
start = page.index('<figure class="chart wide" data-chart="lineage"')
figure = page[start:page.index('</figure>', start) + len('</figure>')]
represented = int(re.search(r'data-models="(\d+)"', figure).group(1))
if represented != models:
    sys.exit(f'FAIL: the report\'s lineage stands for {represented} models, the run has {models}')
w, h = (float(v) for v in re.search(r'<svg width="([\d.]+)pt" height="([\d.]+)pt"', figure).groups())
if w > 4000 or h > 4000:
    sys.exit(f'FAIL: the report\'s lineage tree is {w:.0f} x {h:.0f} pt, above 4000 pt')
style = re.search(r'<style>.*?</style>', page, re.S).group(0)
# The figure alone at its full size (the page scrolls it in a 720 px box, in a body 1340 px wide), with the
# report's style sheet.
open(out, 'w').write('<!DOCTYPE html><html><head><meta charset="utf-8">' + style +
                     '<style>body{max-width:none;margin:8px}figure.chart{display:inline-block}'
                     '.scroll{max-height:none;overflow:visible}</style></head><body>' + figure + '</body></html>')
print(f'   report: lineage tree {w:.0f} x {h:.0f} pt, standing for {represented} models')
EOF

chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "lineage_scale: all checks passed (screenshots skipped: no chromium; install the Debian package 'chromium')"
  exit 0
fi
# Chromium without network (a closed proxy), its own profile; a window the size of the SVG (1 pt =
# 4/3 px) at a quarter scale, so the whole picture is in the PNG and the pixel check stays quick.
shoot() {  # shoot FILE PNG WIDTH_PX HEIGHT_PX
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$tmp/profile" --proxy-server=127.0.0.1:9 --window-size="$3,$4" \
    --force-device-scale-factor=0.25 --screenshot="$2" "file://$1" >"$tmp/chromium.log" 2>&1 ||
    { tail "$tmp/chromium.log" >&2; fail "chromium --screenshot $1"; }
}
read -r w h < <(python3 -c 'import re, sys
w, h = (float(v) for v in re.search(r"<svg width=\"([\d.]+)pt\" height=\"([\d.]+)pt\"", open(sys.argv[1]).read()).groups())
print(int(w * 4 / 3) + 16, int(h * 4 / 3) + 16)' "$tmp/lineage.svg")
shoot "$tmp/lineage.svg" "$tmp/lineage.png" "$w" "$h"
python3 "$lib/screenshot_check.py" "$tmp/lineage.png" || fail "the lineage SVG renders blank"
shoot "$tmp/report-tree.html" "$tmp/report-tree.png" "$((w + 80))" "$((h + 200))"
python3 "$lib/screenshot_check.py" "$tmp/report-tree.png" || fail "the report's lineage tree renders blank"
echo "lineage_scale: all checks passed"
