#!/usr/bin/env bash
# rsi study and rsi compare end to end, on a tiny surrogate study (tests/manifests/study-small.yaml,
# 2 arms x 2 seeds, about 1.5 s a run):
#   1. an undisturbed study (--jobs 2) finishes every run and marks it (study-run.done);
#   2. the same study, run one at a time, is killed with SIGKILL in the middle of its second run (the
#      whole session: the study and its `rsi run` children, checked gone), then run again: the finished
#      run is skipped, the killed one resumes from its last durable generation, the others run;
#   3. `rsi compare --json` of the resumed study equals that of the undisturbed one, except the wall
#      times (measured, not deterministic: every such key contains "wall") and the directories;
#   4. a study whose arm changed after its runs finished: those runs refuse the other manifest (exit 3
#      of rsi run), the study names each with its exit code and log, and exits 1;
#   5. predictor quality is read where generation files carry predictor_rank_correlation, and is
#      null where they do not;
#   6. the compare HTML page is self-contained and renders in headless Chromium (a non-blank
#      screenshot; a capability chart with a median mark per arm and generation; a table row per arm
#      and metric). Skipped (and said so) without chromium.
# Also: --submit --dry-run prints one sbatch script per run (real Slurm: not exercised here). About
# 20 s on 2 cores.
#   RSI=build/runtime/rsi bash tests/integration/study.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build_dir=${1:?usage: study.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: study.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "study.sh: no rsi executable at $rsi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-study.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

write_study() {  # FILE TOURNAMENT_SIZE
  cat >"$1" <<EOF
name: tiny
manifest: $source_dir/tests/manifests/study-small.yaml
seeds: {count: 2, first: 3}
arms:
  - name: truncation
  - name: tournament
    overrides:
      selection.kind: tournament
      selection.tournament_size: $2
EOF
}
write_study "$tmp/tiny.yaml" 2

echo "== dry run"
"$rsi" study "$tmp/tiny.yaml" --out "$tmp/reference" --dry-run >"$tmp/dry.log" || { cat "$tmp/dry.log" >&2; fail "--dry-run"; }
grep -q "2 arm(s) x 2 seed(s) = 4 runs" "$tmp/dry.log" || { cat "$tmp/dry.log" >&2; fail "the dry run does not list 4 runs"; }
grep -q "arm tournament: selection.kind=tournament selection.tournament_size=2" "$tmp/dry.log" ||
  { cat "$tmp/dry.log" >&2; fail "the dry run does not show the overrides"; }
[ ! -e "$tmp/reference" ] || fail "--dry-run wrote $tmp/reference"

"$rsi" study "$tmp/tiny.yaml" --out "$tmp/submitted" --submit --dry-run --sbatch-arg=--qos=high >"$tmp/submit.log" 2>&1 ||
  { cat "$tmp/submit.log" >&2; fail "--submit --dry-run"; }
(($(grep -c '^#SBATCH --qos=high$' "$tmp/submit.log") == 4)) && grep -q "^#SBATCH --job-name=tiny.tournament.seed-4$" "$tmp/submit.log" &&
  grep -q "^manifest='$tmp/submitted/tournament/seed-4/manifest.yaml'$" "$tmp/submit.log" ||
  { cat "$tmp/submit.log" >&2; fail "--submit --dry-run does not print one job script per run"; }

echo "== undisturbed study, 2 runs at once"
start=$SECONDS
"$rsi" study "$tmp/tiny.yaml" --out "$tmp/reference" --jobs 2 >"$tmp/reference.log" 2>&1 ||
  { cat "$tmp/reference.log" >&2; fail "the undisturbed study"; }
grep -q "4 finished, 0 skipped (finished before), 0 failed" "$tmp/reference.log" || { cat "$tmp/reference.log" >&2; fail "summary"; }
for run in truncation/seed-3 truncation/seed-4 tournament/seed-3 tournament/seed-4; do
  [ -f "$tmp/reference/$run/study-run.done" ] && [ -f "$tmp/reference/$run/gen-000005.h5" ] ||
    fail "$run: not finished (no marker or no generation 5)"
  grep -q "selection:" "$tmp/reference/$run/manifest.yaml" || fail "$run: no resolved manifest"
done
grep -q "kind: tournament" "$tmp/reference/tournament/seed-3/manifest.yaml" || fail "the arm's override is not in its manifest"
grep -q "seed: 4" "$tmp/reference/tournament/seed-4/manifest.yaml" || fail "run.seed is not the study's seed"
echo "   $((SECONDS - start)) s"

echo "== killed in its second run, then resumed"
setsid "$rsi" study "$tmp/tiny.yaml" --out "$tmp/killed" >"$tmp/killed.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
  grep -q "\[2/4\] truncation/seed-4: started" "$tmp/killed.log" && break
  sleep 0.05
done
grep -q "\[2/4\] truncation/seed-4: started" "$tmp/killed.log" || { cat "$tmp/killed.log" >&2; fail "the second run never started"; }
sleep 0.8  # into the second run: a generation or two durable
procs=$(pgrep -s "$pid" | wc -l)
pkill -9 -s "$pid" || true
wait "$pid" 2>/dev/null || true  # bash then prints its own "Killed" notice for the job: expected
for _ in $(seq 50); do pgrep -s "$pid" >/dev/null || break; sleep 0.1; done
if pgrep -s "$pid" >/dev/null; then pgrep -a -s "$pid" >&2; fail "processes of the killed study survived"; fi
[ -f "$tmp/killed/truncation/seed-3/study-run.done" ] || fail "the first run was not marked finished before the kill"
[ ! -e "$tmp/killed/truncation/seed-4/study-run.done" ] || fail "the killed run is marked finished"
durable=$(ls "$tmp/killed/truncation/seed-4" | grep -c '^gen-[0-9]*\.h5$' || true)
echo "   SIGKILL to the study's session ($procs processes): the second run had $durable durable generation(s)"
"$rsi" study "$tmp/tiny.yaml" --out "$tmp/killed" >"$tmp/resumed.log" 2>&1 || { cat "$tmp/resumed.log" >&2; fail "the resumed study"; }
grep -q "\[1/4\] truncation/seed-3: finished before (study-run.done), skipped" "$tmp/resumed.log" ||
  { cat "$tmp/resumed.log" >&2; fail "the finished run was not skipped"; }
grep -q "3 finished, 1 skipped (finished before), 0 failed" "$tmp/resumed.log" || { cat "$tmp/resumed.log" >&2; fail "resumed summary"; }
(($(grep -c "== rsi study: rsi run" "$tmp/killed/truncation/seed-4/run.log") == 2)) ||
  fail "the killed run's log does not hold both of its starts"
if ((durable > 0)); then
  grep -q "resuming after generation" "$tmp/killed/truncation/seed-4/run.log" || { cat "$tmp/killed/truncation/seed-4/run.log" >&2; fail "the killed run did not resume"; }
fi

echo "== compare: the resumed study equals the undisturbed one (wall times aside)"
"$rsi" compare "$tmp/reference" --json >"$tmp/reference.json" || fail "rsi compare --json (reference)"
"$rsi" compare "$tmp/killed" --json --html "$tmp/compare.html" >"$tmp/killed.json" 2>"$tmp/compare.err" ||
  { cat "$tmp/compare.err" >&2; fail "rsi compare --json --html (resumed)"; }
"$rsi" compare "$tmp/killed" >"$tmp/compare.txt" || fail "rsi compare (text)"
python3 - "$tmp/reference.json" "$tmp/killed.json" <<'EOF'
import json, sys
def deterministic(x):  # wall times are measured; directories differ between the two studies
    if isinstance(x, dict):
        return {k: deterministic(v) for k, v in x.items() if 'wall' not in k and k not in ('dir', 'source')}
    if isinstance(x, list):
        return [deterministic(v) for v in x]
    return x
a, b = (json.load(open(p)) for p in sys.argv[1:3])
if deterministic(a) != deterministic(b):
    sys.exit('FAIL: compare --json differs between the undisturbed and the resumed study')
arms = {arm['name']: arm for arm in a['arms']}
assert a['baseline'] == 'truncation' and set(arms) == {'truncation', 'tournament'}, a['baseline']
for arm in a['arms']:
    assert [r['seed'] for r in arm['runs']] == [3, 4], arm['runs']
    assert all(r['generations'] == 6 for r in arm['runs'])
    final = arm['metrics']['final_test']
    assert final['n'] == 2 and final['ci'][0] <= final['mean'] <= final['ci'][1], final
    assert arm['metrics']['predictor_rank_correlation']['n'] in (0, 2)
t = arms['tournament']['vs_baseline']['final_test']
assert t['wins'] + t['losses'] + t['ties'] == 2, t
print(f"   equal; tournament vs truncation, final hidden test: {t['difference']['mean']:+.4f} "
      f"[{t['difference']['ci'][0]:+.4f}, {t['difference']['ci'][1]:+.4f}], won {t['wins']} of 2")
EOF
grep -q "^arm tournament: 2 run(s), seeds 3 4" "$tmp/compare.txt" || { cat "$tmp/compare.txt" >&2; fail "the text table"; }

echo "== predictor quality where the lineage records it (an attribute added to copies of two runs)"
mkdir "$tmp/predicted"
cp -r "$tmp/killed/tournament/seed-3" "$tmp/predicted/p3"
cp -r "$tmp/killed/tournament/seed-4" "$tmp/predicted/p4"
/usr/bin/python3 - "$tmp/predicted" <<'PY'
import glob, sys, h5py
for run, value in (('p3', 0.5), ('p4', 0.25)):
    for i, f in enumerate(sorted(glob.glob(f'{sys.argv[1]}/{run}/gen-*.h5'))):
        with h5py.File(f, 'r+') as h:  # a float64 scalar, as a lineage that has it writes it
            # generation 0: NaN (too few predictions), left out; the mean of generations 1-5: value + 0.06
            h.attrs['predictor_rank_correlation'] = float('nan') if i == 0 else value + 0.1 * (i % 2)
PY
"$rsi" compare "$tmp/predicted/p3" "$tmp/predicted/p4" "$tmp/reference/truncation/seed-3" --json >"$tmp/predicted.json" ||
  fail "rsi compare with predictor_rank_correlation"
python3 - "$tmp/predicted.json" <<'PY'
import json, sys
arms = {a['name']: a for a in json.load(open(sys.argv[1]))['arms']}
got = [arms[n]['runs'][0]['predictor_rank_correlation'] for n in ('p3', 'p4', 'seed-3')]
if abs(got[0] - 0.56) > 1e-9 or abs(got[1] - 0.31) > 1e-9 or got[2] is not None:
    sys.exit(f'FAIL: predictor_rank_correlation per run {got}, expected [0.56, 0.31, None]')
print(f'   mean predictor_rank_correlation per run: {got} (None: not in that lineage)')
PY

echo "== an arm changed after its runs finished: they refuse the other manifest"
write_study "$tmp/changed.yaml" 3
rc=0
"$rsi" study "$tmp/changed.yaml" --out "$tmp/reference" >"$tmp/changed.log" 2>&1 || rc=$?
((rc == 1)) || { cat "$tmp/changed.log" >&2; fail "a study with failed runs exited $rc, expected 1"; }
grep -q "tournament/seed-3: FAILED after .*, exit code 3; log $tmp/reference/tournament/seed-3/run.log" "$tmp/changed.log" ||
  { cat "$tmp/changed.log" >&2; fail "the failed run is not named with its exit code and log"; }
grep -q "0 finished, 2 skipped (finished before), 2 failed" "$tmp/changed.log" ||
  { cat "$tmp/changed.log" >&2; fail "changed-study summary"; }
grep -q "different manifest" "$tmp/reference/tournament/seed-3/run.log" || fail "rsi run's refusal is not in the log"

echo "== the compare page"
if grep -noE 'https?://|src=|<link|@import|url\(' "$tmp/compare.html" | head -5 >"$tmp/external.txt" && [ -s "$tmp/external.txt" ]; then
  cat "$tmp/external.txt" >&2
  fail "the compare page references something outside itself"
fi
chromium=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chromium" ]; then
  echo "study.sh: the browser check SKIPPED: no chromium (install the Debian package 'chromium')"
  echo "study: all other checks passed"
  exit 0
fi
browse() {  # a closed proxy: no network; its own profile
  timeout 120 "$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
    --user-data-dir="$tmp/profile" --proxy-server=127.0.0.1:9 --window-size=1400,1400 "$@" "file://$tmp/compare.html"
}
browse --screenshot="$tmp/compare.png" --force-device-scale-factor=0.5 >"$tmp/shot.log" 2>&1 || { tail "$tmp/shot.log" >&2; fail "chromium --screenshot"; }
browse --dump-dom >"$tmp/dom.html" 2>"$tmp/dom.log" || { tail "$tmp/dom.log" >&2; fail "chromium --dump-dom"; }
python3 "$(dirname "$0")/lib/screenshot_check.py" "$tmp/compare.png" || exit 1
python3 - "$tmp/dom.html" <<'EOF'
import sys
from html.parser import HTMLParser
class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.chart, self.marks, self.rows = None, 0, {}
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'figure' and a.get('data-chart') == 'capability':
            self.chart = True
        elif self.chart and 'mark' in (a.get('class') or '').split():
            self.marks += 1
        if tag == 'tr' and 'data-arm' in a:
            self.rows[a['data-arm']] = self.rows.get(a['data-arm'], 0) + 1
    def handle_endtag(self, tag):
        if tag == 'figure':
            self.chart = None
page = Page()
page.feed(open(sys.argv[1]).read())
print(f'   capability chart: {page.marks} marks; table rows per arm: {page.rows}')
if page.marks < 2 * 6:
    sys.exit(f'FAIL: the capability chart has {page.marks} marks, expected 12 (2 arms x 6 generations)')
if set(page.rows) != {'truncation', 'tournament'} or min(page.rows.values()) < 7:
    sys.exit(f'FAIL: the table has rows {page.rows}')
EOF
echo "study: all checks passed"
