#!/usr/bin/env bash
# rsi report end to end: a small surrogate run (its progress written as plain log lines with time and
# rank), `rsi report`, then checks that the page is self-contained (no http(s)://, src=, <link>,
# @import or url( references), opens it in headless Chromium for a screenshot (a real, non-blank PNG)
# and for the DOM after loading, and fails when any chart has no data marks or fewer than the lineage
# holds (one point per generation and series, one per trained model, one cell per class and
# generation, a lineage row per generation whose nodes, drawn or folded, stand for every model). Also: a directory without a run is refused (exit 3), and a missing
# Graphviz is named (exit 1). About 15 s; skips (exit 0) without chromium.
#   RSI=build/runtime/rsi bash tests/integration/report.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build_dir=${1:?usage: report.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: report.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "report.sh: SKIP: no chromium to open the report in (install the Debian package 'chromium')"
  exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-report.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

RSI_PROGRESS=plain "$rsi" run "$source_dir/tests/manifests/surrogate-small.yaml" --out "$tmp/run" >"$tmp/run.log" 2>&1 ||
  { tail -20 "$tmp/run.log" >&2; fail "rsi run"; }
grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z \[rank 0\] gen  5/5  best val .* ETA ' "$tmp/run.log" ||
  { cat "$tmp/run.log" >&2; fail "the plain progress lines carry no time and rank"; }
grep -q $'\033' "$tmp/run.log" && fail "terminal escapes in the plain progress output"
echo "== run: $(($(wc -l <"$tmp/run/models.tsv") - 1)) models; progress: $(grep -m1 'gen  5/5' "$tmp/run.log" | cut -c1-60)..."

"$rsi" report "$tmp/run" --out "$tmp/report.html" >"$tmp/report.log" || { cat "$tmp/report.log" >&2; fail "rsi report"; }
echo "   $(cat "$tmp/report.log")"
if grep -noE 'https?://|src=|<link|@import|url\(' "$tmp/report.html" | head -5 >"$tmp/external.txt" && [ -s "$tmp/external.txt" ]; then
  cat "$tmp/external.txt" >&2
  fail "the report references something outside itself"
fi

# Chromium without network (a closed proxy), with its own profile so parallel tests never share one.
browse() {
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$tmp/profile" --proxy-server=127.0.0.1:9 --window-size=1400,2600 "$@" "file://$tmp/report.html"
}
# Half scale: the pixel check below decodes the PNG in plain Python (no PIL on a bare Debian).
browse --screenshot="$tmp/report.png" --force-device-scale-factor=0.5 >"$tmp/chromium-shot.log" 2>&1 || { tail "$tmp/chromium-shot.log" >&2; fail "chromium --screenshot"; }
browse --dump-dom >"$tmp/dom.html" 2>"$tmp/chromium-dom.log" || { tail "$tmp/chromium-dom.log" >&2; fail "chromium --dump-dom"; }

python3 "$(dirname "$0")/lib/screenshot_check.py" "$tmp/report.png" || exit 1
python3 - "$tmp/dom.html" "$tmp/run/models.tsv" "$tmp/run/generations.tsv" <<'EOF'
import csv, sys
from html.parser import HTMLParser

dom, models_tsv, generations_tsv = sys.argv[1:4]

# The DOM after loading: every chart's data marks.
class Charts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.charts, self.lineage_models = [], {}, None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get('class') or '').split()
        if tag == 'figure' and 'chart' in classes:
            self.stack.append(a.get('data-chart'))
            self.charts[self.stack[-1]] = 0
            if self.stack[-1] == 'lineage':
                self.lineage_models = int(a.get('data-models', -1))
        elif self.stack and ('mark' in classes or (self.stack[-1] == 'lineage' and 'node' in classes)):
            self.charts[self.stack[-1]] += 1
        if tag == 'figure' and 'chart' not in classes:
            self.stack.append(None)
    def handle_endtag(self, tag):
        if tag == 'figure' and self.stack:
            self.stack.pop()
parser = Charts()
parser.feed(open(dom).read())

models = list(csv.DictReader(open(models_tsv), delimiter='\t'))
generations = list(csv.DictReader(open(generations_tsv), delimiter='\t'))
g, trained = len(generations), sum(m['status'] == 'trained' for m in models)
expected = {'capability': 4 * g, 'gain': g - 1, 'design_skill': g - 1, 'pareto': trained,
            'per_class': 10 * g, 'monitors': g, 'lineage': g}
print('   marks per chart: ' + ', '.join(f'{k} {v}' for k, v in parser.charts.items()))
problems = [f'chart {name}: {parser.charts.get(name, "missing")} data marks, at least {n} expected'
            for name, n in expected.items() if parser.charts.get(name, 0) < max(n, 1)]
problems += [f'chart {name} is empty' for name, n in parser.charts.items() if n == 0]
if parser.lineage_models != len(models):
    problems.append(f'the lineage tree stands for {parser.lineage_models} models (drawn or folded), the run has {len(models)}')
if problems:
    sys.exit('FAIL: ' + '; '.join(problems))
EOF

mkdir "$tmp/empty"
rc=0
"$rsi" report "$tmp/empty" --out "$tmp/none.html" >/dev/null 2>"$tmp/empty.log" || rc=$?
((rc == 3)) || fail "rsi report on a directory without a run: exit $rc, expected 3"
grep -q "no generation files" "$tmp/empty.log" || { cat "$tmp/empty.log" >&2; fail "no clear error for a directory without a run"; }
rc=0
PATH=/nonexistent "$rsi" report "$tmp/run" --out "$tmp/nodot.html" >/dev/null 2>"$tmp/nodot.log" || rc=$?
((rc == 1)) || fail "rsi report without Graphviz: exit $rc, expected 1"
grep -q "install the Debian package 'graphviz'" "$tmp/nodot.log" || { cat "$tmp/nodot.log" >&2; fail "a missing 'dot' is not named"; }
[ ! -e "$tmp/nodot.html" ] || fail "a report was written without its lineage tree"
echo "   errors: $(cat "$tmp/empty.log")"
echo "           $(cat "$tmp/nodot.log")"
echo "report: all checks passed"
