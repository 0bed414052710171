#!/usr/bin/env bash
# Governance end to end, with the real `rsi run` under mpirun -n 2 on surrogate manifests:
#   1. gates: a gate fires at generation 2, `rsi approve` (in the background, as a person would)
#      lets the run go on; the gate at generation 4 is rejected and the population rolls back;
#      a red line refuses designs; `rsi audit` shows it all; `rsi verify` passes;
#   2. timeout: nobody decides within approval_timeout_seconds: exit code 5, the generation durable
#      and awaiting approval; `rsi approve`, then the same command resumes and finishes;
#   3. kill switch: `rsi stop` stops the run with exit code 4 at a generation boundary; the same
#      command resumes it, and `rsi reproduce` (an uninterrupted run of the same manifest) finds the
#      same generation hashes; the monitors' alerts are in the lineage.
#   RSI=build/runtime/rsi bash tests/integration/governance.sh BUILD_DIR SOURCE_DIR
# About 15 s on 2 cores.
set -euo pipefail

build_dir=${1:?usage: governance.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: governance.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "governance.sh: no rsi executable at $rsi (build the 'rsi' target or set RSI)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
manifests=$source_dir/tests/manifests
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-governance.XXXXXX")
pid=
cleanup() {
  if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then kill -9 -- "-$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

source "$(dirname "$0")/lib/background.sh"  # fail, wait_for

start_run() {  # start_run MANIFEST OUT: in the background, in its own process group; sets pid
  setsid mpirun -n 2 "$rsi" run "$1" --out "$2" >>"$2.log" 2>&1 &
  pid=$!
}

finish_run() {  # finish_run: waits for the background run; sets rc to its exit code
  rc=0
  wait "$pid" || rc=$?
  pid=
}

awaiting() {  # awaiting RUN GENERATION: the run's latest generation awaits approval
  "$rsi" audit "$1" 2>/dev/null | grep -q "the latest, generation $2, is awaiting_approval"
}

audit_has() {  # audit_has RUN KIND TEXT: an audit line of that kind mentioning TEXT
  awk -F'\t' -v kind="$2" -v text="$3" '$4 == kind && index($0, text) { found = 1 } END { exit !found }' "$1"
}

echo "== 1. gates: approve generation 2, reject generation 4"
run=$tmp/gate
start_run "$manifests/governance-gate.yaml" "$run"
wait_for 60 awaiting "$run" 2 || fail "generation 2 never awaited approval"
"$rsi" approve "$run" --generation 2 --reason "reviewed: gains look plausible" >/dev/null
wait_for 60 awaiting "$run" 4 || fail "generation 4 never awaited approval"
# Deciding on a generation that is not awaiting approval is refused.
rc=0
"$rsi" approve "$run" --generation 3 --reason "wrong generation" 2>"$tmp/wrong.err" >/dev/null || rc=$?
((rc == 2)) || fail "approving a generation that is not awaiting approval exited $rc, not 2"
grep -q "not awaiting approval" "$tmp/wrong.err" || fail "no clear message for a wrong generation: $(cat "$tmp/wrong.err")"
"$rsi" reject "$run" --generation 4 --reason "too fast, roll back" >/dev/null
finish_run
((rc == 0)) || fail "the gated run exited $rc"
"$rsi" audit "$run" >"$tmp/gate.audit"
audit_has "$tmp/gate.audit" gate "every 2 generations" || fail "no gate in the audit"
audit_has "$tmp/gate.audit" approved "reviewed: gains look plausible" || fail "no approval in the audit"
audit_has "$tmp/gate.audit" rejected "rolled back" || fail "no rejection in the audit"
audit_has "$tmp/gate.audit" red_line "governance.red_lines.max_parameters" || fail "no red line in the audit"
audit_has "$tmp/gate.audit" alert "goodhart" || fail "no Goodhart alert in the audit"
who=$(awk -F'\t' '$4 == "approved" { print $5; exit }' "$tmp/gate.audit")
[[ $who == *@* ]] || fail "the approval does not say who (user@host): '$who'"
# After the rejection, generation 5's parents come from generation 3's population only.
population_of() {  # population_of FILE: the population's ids, one per line
  h5dump -a /population "$1" | sed -n 's/^ *([0-9]*): //p' | tr ',' '\n' | tr -d ' ' | grep . | sort -u
}
population_of "$run/gen-000003.h5" >"$tmp/pop3"
[[ -s $tmp/pop3 ]] || fail "cannot read generation 3's population with h5dump"
awk -F'\t' '$1 == 5 && $3 != "-" { n = split($3, p, ","); for (i = 1; i <= n; ++i) print p[i] }' "$run/models.tsv" |
  sort -u >"$tmp/parents5"
[[ -s $tmp/parents5 ]] || fail "generation 5 has no children with parents"
extra=$(comm -23 "$tmp/parents5" "$tmp/pop3" | tr '\n' ' ')
[[ -z $extra ]] || fail "after the rollback, generation 5 has parents outside generation 3's population: $extra"
"$rsi" verify "$run" >"$tmp/gate.verify" || fail "rsi verify failed: $(cat "$tmp/gate.verify")"
echo "   gate, approval, rejection (generation 5 bred from generation 3's population), red line and alert recorded; verified"

echo "== 2. timeout: exit code 5, approve, resume"
run=$tmp/timeout
start_run "$manifests/governance-timeout.yaml" "$run"
finish_run
((rc == 5)) || fail "the unanswered gate exited $rc, not 5"
awaiting "$run" 3 || fail "generation 3 is not durable as awaiting approval after the timeout"
"$rsi" status "$run" --json >"$tmp/timeout.status" || fail "rsi status exited $? after the timeout"
/usr/bin/python3 -c "import json, sys; d = json.load(open(sys.argv[1])); assert d['state'] == 'awaiting_approval' \
  and d['exit_code'] == 5 and d['last_durable_generation'] == 3 and 'rsi approve' in d['detail'], d" "$tmp/timeout.status" ||
  fail "rsi status does not say the run ended awaiting approval of generation 3"
"$rsi" approve "$run" --generation 3 --reason "approved after the timeout" >/dev/null
start_run "$manifests/governance-timeout.yaml" "$run"
finish_run
((rc == 0)) || fail "the resumed run exited $rc"
grep -q "resuming after generation 3" "$run.log" || fail "the rerun did not resume after generation 3"
"$rsi" audit "$run" >"$tmp/timeout.audit"
audit_has "$tmp/timeout.audit" approved "approved after the timeout" || fail "the resume did not record the approval"
[[ -f $run/gen-000004.h5 ]] || fail "the resumed run did not write generation 4"
"$rsi" status "$run" >"$tmp/timeout.status.txt"
grep -q "state       completed" "$tmp/timeout.status.txt" || fail "rsi status does not say the resumed run completed"
"$rsi" verify "$run" >/dev/null || fail "rsi verify failed after the resume"
echo "   exit code 5, approved, resumed to generation 4; verified"

echo "== 3. kill switch: rsi stop, exit code 4, resume, identical to an uninterrupted run"
run=$tmp/stop
start_run "$manifests/governance-stop.yaml" "$run"
wait_for 60 test -f "$run/gen-000001.h5" || fail "generation 1 never became durable"
"$rsi" stop "$run" --reason "integration test" >/dev/null
finish_run
((rc == 4)) || fail "the stopped run exited $rc, not 4"
[[ ! -f $run/gen-000008.h5 ]] || fail "the run finished before the stop landed (make the manifest slower)"
stopped_at=$(ls "$run" | grep -c '^gen-[0-9]*\.h5$')
start_run "$manifests/governance-stop.yaml" "$run"
finish_run
((rc == 0)) || fail "the resumed run exited $rc"
"$rsi" audit "$run" >"$tmp/stop.audit"
audit_has "$tmp/stop.audit" stop_requested "integration test" || fail "the stop request is not in the audit"
audit_has "$tmp/stop.audit" stopped "stop requested" || fail "the honoured stop is not in the audit"
audit_has "$tmp/stop.audit" alert "bias" || fail "no bias alert in the audit"
audit_has "$tmp/stop.audit" alert "pseudo-label entropy" || fail "no collapse alert in the audit"
"$rsi" verify "$run" >/dev/null || fail "rsi verify failed after the stop and resume"
"$rsi" reproduce "$run" --out "$tmp/uninterrupted" >"$tmp/reproduce.log" 2>&1 ||
  fail "the stopped and resumed lineage differs from an uninterrupted run: $(grep -i diverg "$tmp/reproduce.log")"
cmp -s "$run/models.tsv" "$tmp/uninterrupted/models.tsv" || fail "models.tsv differs from the uninterrupted run"
echo "   stopped after $stopped_at generation(s) with exit code 4, resumed; generation hashes identical to an uninterrupted run"

echo "governance.sh: gates, approval, rejection, timeout, red line, kill switch and alerts end to end"
