#!/usr/bin/env bash
# `rsi status` on real runs (a small Fashion-MNIST run under mpirun -n 2, tests/manifests/resume-fashion.yaml):
#   1. live: `rsi status --json --watch` polls a running run; it must say running (the process alive),
#      a generation advancing, children done and an ETA, and end by itself when the run completes;
#      then the run reads completed (exit code 0, every generation durable, its best model);
#      `rsi show --json` of the best model and `rsi audit --json` parse and agree with it;
#   2. killed: a run whose whole job gets SIGKILL must read died (its process gone), not running;
#   3. stopped: the same run resumed and stopped with `rsi stop` reads stopped (exit code 4), and
#      `rsi audit --json` lists the stop.
#   RSI=build/runtime/rsi bash tests/integration/status.sh BUILD_DIR SOURCE_DIR
# About 15 s on 2 cores (12-17 s measured).
set -euo pipefail

build_dir=${1:?usage: status.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: status.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "status.sh: no rsi executable at $rsi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
manifest=$source_dir/tests/manifests/resume-fashion.yaml
py=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-status.XXXXXX")
pid= watcher=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then pkill -9 -s "$pid" 2>/dev/null || true; fi
  if [[ -n $watcher ]]; then kill "$watcher" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

source "$(dirname "$0")/lib/background.sh"  # fail, wait_for

start_run() {  # start_run OUT: the whole job in its own session, in the background; sets pid
  setsid mpirun -n 2 "$rsi" run "$manifest" --out "$1" --generations 3 >>"$1.log" 2>&1 &
  pid=$!
}

check() {  # check FILE PYTHON_ASSERTION: the JSON object in FILE (d) satisfies it
  "$py" -c "import json, sys; d = json.load(open(sys.argv[1])); assert $2, d" "$1" ||
    fail "$1 does not satisfy: $2"
}

status_says() {  # status_says RUN PYTHON_ASSERTION: rsi status --json of RUN satisfies it
  "$rsi" status "$1" --json >"$tmp/now.json" 2>/dev/null &&
    "$py" -c "import json, sys; d = json.load(open(sys.argv[1])); sys.exit(0 if $2 else 1)" "$tmp/now.json"
}

echo "== 1. a live run, watched to its end"
start=$SECONDS
run=$tmp/live
start_run "$run"
wait_for 30 test -f "$run/status.json" || fail "rsi run wrote no status.json"
"$rsi" status "$run" --json --watch 0.2 >"$tmp/watch.jsonl" 2>"$tmp/watch.log" &
watcher=$!
rc=0
wait "$pid" || rc=$?
pid=
((rc == 0)) || fail "the run exited $rc"
wait_for 10 bash -c "! kill -0 $watcher" || fail "rsi status --watch did not end when the run ended"
wait "$watcher" || fail "rsi status --watch exited $?"
watcher=
"$py" - "$tmp/watch.jsonl" <<'EOF' || fail "the watched reports do not show a live run advancing (above)"
import json, sys
reports = [json.loads(line) for line in open(sys.argv[1])]
running = [r for r in reports if r["state"] == "running"]
assert len(running) >= 3, f"{len(reports)} reports, {len(running)} of them running"
assert all(r["alive"] is True and r["pid"] > 0 for r in running), "a running report whose process is not alive"
durable = [r["last_durable_generation"] for r in running if r["last_durable_generation"] is not None]
assert durable and max(durable) > min(durable), f"no generation advanced while running: {sorted(set(durable))}"
assert durable == sorted(durable), f"the durable generation went back: {durable}"
flights = [r["in_flight"] for r in running if r["in_flight"]]
assert flights and any(f["children_done"] > 0 for f in flights), "no children done seen in flight"
assert all(0 <= f["children_done"] <= f["children_total"] for f in flights), flights
etas = [r["eta_seconds"] for r in running if r["eta_seconds"] is not None]
assert etas and all(e >= 0 for e in etas) and max(etas) > 0, f"no ETA while running: {etas}"
assert reports[-1]["state"] == "completed", f"the last report says {reports[-1]['state']}"
print(f"   {len(reports)} reports, {len(running)} running: durable generations {sorted(set(durable))}, "
      f"ETA {max(etas):.1f} s .. {min(etas):.1f} s")
EOF
"$rsi" status "$run" --json >"$tmp/done.json"
check "$tmp/done.json" "d['state'] == 'completed' and d['exit_code'] == 0 and d['alive'] is None"
check "$tmp/done.json" "d['last_durable_generation'] == 3 and d['generations'] == 3 and d['in_flight'] is None"
check "$tmp/done.json" "d['best']['id'] > 0 and 0.5 < d['best']['validation'] <= 1 and d['eta_seconds'] is None"
check "$tmp/done.json" "d['name'] == 'resume-fashion' and d['manifest'].endswith('resume-fashion.yaml') and d['warnings'] == []"
"$rsi" status "$run" >"$tmp/done.txt"
grep -q "state       completed" "$tmp/done.txt" || fail "the text status does not say completed: $(cat "$tmp/done.txt")"
best=$("$py" -c "import json, sys; print(json.load(open(sys.argv[1]))['best']['id'])" "$tmp/done.json")
"$rsi" show "$run" "$best" --json >"$tmp/show.json" || fail "rsi show --json exited $?"
check "$tmp/show.json" "d['id'] == $best and d['status'] == 'trained' and d['genome'].strip() and d['run'] == '$run'"
"$py" - "$tmp/show.json" "$tmp/done.json" <<'EOF' || fail "rsi show --json disagrees with the status or itself"
import json, sys
show, status = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert show["metrics"]["val_accuracy"] == status["best"]["validation"], (show["metrics"], status["best"])
assert show["metrics"]["test_accuracy"] == status["best"]["hidden_test"]
assert len(show["metrics"]["test_per_class"]) == 10 and show["metrics"]["parameters"] > 0
if show["parents"]:
    g = show["gain"]
    assert g["parent"] == show["parents"][0] and isinstance(g["validation"], float) and show["design_diff"]
else:
    assert show["gain"] is None and show["design_diff"] is None
assert len(show["provenance"]) == 64
EOF
"$rsi" audit "$run" --json >"$tmp/audit.json" || fail "rsi audit --json exited $?"
check "$tmp/audit.json" "d['latest_generation'] == 3 and d['generation_files'] == 4 and d['problems'] == []"
check "$tmp/audit.json" "all(e['source'] in ('lineage', 'audit.log') and e['kind'] for e in d['events'])"
echo "   completed after $((SECONDS - start)) s; show --json and audit --json parse and agree"

echo "== 2. a run killed with SIGKILL"
run=$tmp/killed
start_run "$run"
wait_for 60 status_says "$run" "d['state'] == 'running' and d['last_durable_generation'] is not None" ||
  fail "the run never made a generation durable: $(cat "$tmp/now.json" 2>/dev/null)"
pkill -9 -s "$pid" || true
wait "$pid" 2>/dev/null || true
wait_for 10 bash -c "! pgrep -s $pid" || fail "processes of the killed job survived"
pid=
"$rsi" status "$run" --json >"$tmp/killed.json"
check "$tmp/killed.json" "d['state'] == 'died' and d['alive'] is False and d['eta_seconds'] is None"
check "$tmp/killed.json" "'is gone' in d['detail'] and d['last_durable_generation'] >= 0"
"$rsi" status "$run" >"$tmp/killed.txt"
grep -q "state       died" "$tmp/killed.txt" || fail "the text status does not say died: $(cat "$tmp/killed.txt")"
echo "   $(grep -m1 'state ' "$tmp/killed.txt" | cut -c1-110)..."

echo "== 3. the same run resumed, then stopped with rsi stop"
start_run "$run"
wait_for 60 status_says "$run" "d['state'] == 'running' and d['alive'] is True" ||
  fail "the resumed run never read running: $(cat "$tmp/now.json" 2>/dev/null)"
"$rsi" stop "$run" --reason "status test" >/dev/null
rc=0
wait "$pid" || rc=$?
pid=
((rc == 4)) || fail "the stopped run exited $rc, not 4"
"$rsi" status "$run" --json >"$tmp/stopped.json"
check "$tmp/stopped.json" "d['state'] == 'stopped' and d['exit_code'] == 4 and d['alive'] is None"
check "$tmp/stopped.json" "'stop requested' in d['detail'] and 'resumes' in d['detail']"
check "$tmp/stopped.json" "d['last_event']['kind'] == 'stopped' and d['last_event']['source'] == 'audit.log'"
"$rsi" audit "$run" --json >"$tmp/stopped-audit.json"
check "$tmp/stopped-audit.json" "[e['kind'] for e in d['events'] if e['source'] == 'audit.log'] == ['stop_requested', 'stopped']"
check "$tmp/stopped-audit.json" "[e['reason'] for e in d['events'] if e['kind'] == 'stop_requested'] == ['status test']"
echo "   $(cut -c1-110 <<<"$("$rsi" status "$run" | grep -m1 'state ')")..."

echo "status: all checks passed ($((SECONDS - start)) s)"
