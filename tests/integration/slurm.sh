#!/usr/bin/env bash
# `rsi submit` against a real Slurm (22.05, Debian's slurm-wlm): starts munged, slurmctld and
# slurmd on localhost (slurm/local/), then
#   job 1: submits tests/manifests/slurm-surrogate.yaml (2 ranks) with `rsi submit`, waits for it and
#          checks the lineage with `rsi verify`;
#   job 2: submits the same manifest, sends SIGUSR1 to its batch script once generation 1 is durable
#          (what Slurm does before a time limit with --signal=B:USR1@N), sees the job stop at a
#          generation boundary and requeue itself, releases it, and checks that it resumed and ended
#          in a lineage identical to job 1's (models.tsv byte for byte, every generation hash).
# Also the errors of `rsi submit` without sbatch, with a job shape the manifest cannot run, and into
# a run directory that holds another manifest's run.
# Skips (exit code 77) when not root or when slurm-wlm/munge are missing. About a minute.
#   RSI=build/runtime/rsi bash tests/integration/slurm.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: slurm.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: slurm.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "slurm.sh: no rsi executable at $rsi" >&2; exit 1; }
rsi=$(cd "$(dirname "$rsi")" && pwd)/$(basename "$rsi")
source_dir=$(cd "$source_dir" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
export PATH=$PATH:/usr/sbin
manifest=$source_dir/tests/manifests/slurm-surrogate.yaml
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-slurm.XXXXXX")
cluster=$tmp/cluster
cleanup() {
  "$source_dir/slurm/local/stop" "$cluster" >/dev/null 2>&1 || true
  [[ -n ${RSI_KEEP_TMP:-} ]] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

echo "== rsi submit without a Slurm: clear errors"
rc=0
PATH=/nonexistent "$rsi" submit "$manifest" --out "$tmp/nosbatch" >/dev/null 2>"$tmp/nosbatch.err" || rc=$?
if [[ $rc == 1 ]] && grep -q "cannot run sbatch" "$tmp/nosbatch.err"; then
  echo "   $(head -1 "$tmp/nosbatch.err")"
else
  fail "rsi submit without sbatch on PATH: exit code $rc, message: $(cat "$tmp/nosbatch.err")"
fi
printf 'seeds: [{architecture: [{dense: {units: 10}}]}]\ncluster: {group_size: 3, tasks_per_node: 2}\n' >"$tmp/bad-shape.yaml"
rc=0
"$rsi" submit "$tmp/bad-shape.yaml" --dry-run >/dev/null 2>"$tmp/bad-shape.err" || rc=$?
[[ $rc == 2 ]] && grep -q "group_size 3 does not divide the job's 2 ranks" "$tmp/bad-shape.err" ||
  fail "a group size that does not divide the ranks: exit code $rc, message: $(cat "$tmp/bad-shape.err")"
"$rsi" submit "$manifest" --dry-run >"$tmp/dry-run.sbatch"
for line in "#SBATCH --ntasks-per-node=2" "#SBATCH --signal=B:USR1@60" "#SBATCH --requeue" "#SBATCH --time=00:10:00" \
  "rsi='$rsi'" "manifest='$manifest'"; do
  grep -qxF -- "$line" "$tmp/dry-run.sbatch" || fail "the dry-run script lacks the line: $line"
done

echo "== local Slurm cluster"
rc=0
"$source_dir/slurm/local/start" "$cluster" >"$tmp/start.log" 2>&1 || rc=$?
if [[ $rc == 77 ]]; then
  echo "SKIP: $(tail -1 "$tmp/start.log")"
  exit 77
fi
((rc == 0)) || { echo "FAIL: the local Slurm cluster did not start:" >&2; cat "$tmp/start.log" >&2; exit 1; }
export SLURM_CONF=$cluster/slurm.conf
sinfo | sed 's/^/   /'

source "$(dirname "$0")/lib/jobs.sh"  # job_field, wait_for, job_finished
job_requeued() { [[ $(job_field "$1" JobState) == PENDING && $(job_field "$1" Restarts) -ge 1 ]]; }
submit() {  # RUN_DIR: rsi submit from the test's directory; prints the job id
  local out
  out=$(cd "$tmp" && "$rsi" submit "$manifest" --out "$1") || { echo "FAIL: rsi submit failed" >&2; return 1; }
  echo "$out" >&2
  grep -o 'submitted batch job [0-9]*' <<<"$out" | awk '{ print $4 }'
}
source "$(dirname "$0")/lib/lineage.sh"  # generation_hashes

echo "== job 1: rsi submit, run to the end"
start=$SECONDS
job1=$(submit "$tmp/job1")
wait_for 120 "job $job1 to finish" job_finished "$job1" || { show_job "$job1" "$tmp/job1"; exit 1; }
echo "   job $job1: $(job_field "$job1" JobState), exit code $(job_field "$job1" ExitCode), $((SECONDS - start)) s"
[[ $(job_field "$job1" JobState) == COMPLETED && $(job_field "$job1" ExitCode) == 0:0 ]] ||
  { show_job "$job1" "$tmp/job1"; echo "FAIL: job 1 did not complete" >&2; exit 1; }
"$rsi" verify "$tmp/job1" >"$tmp/verify1.log" 2>&1 || { fail "rsi verify failed on job 1's run"; cat "$tmp/verify1.log" >&2; }
generations=$(generation_hashes "$tmp/job1" | wc -l)
echo "   $generations generations, $(($(wc -l <"$tmp/job1/models.tsv") - 1)) models; rsi verify passed"

sed -e "s|\.\./\.\./experiments|$source_dir/experiments|" -e 's/seed: 11/seed: 12/' "$manifest" >"$tmp/other-seed.yaml"
rc=0
"$rsi" submit "$tmp/other-seed.yaml" --out "$tmp/job1" >/dev/null 2>"$tmp/other-seed.err" || rc=$?
[[ $rc == 3 ]] && grep -q "run.seed: 11 -> 12" "$tmp/other-seed.err" ||
  fail "submitting another manifest into job 1's run directory: exit code $rc, message: $(cat "$tmp/other-seed.err")"

echo "== job 2: SIGUSR1 once generation 1 is durable, requeue, resume"
start=$SECONDS
job2=$(submit "$tmp/job2")
wait_for 60 "job $job2's generation 1" test -f "$tmp/job2/gen-000001.h5" || { show_job "$job2" "$tmp/job2"; exit 1; }
scancel --signal=USR1 --batch "$job2"
echo "   SIGUSR1 sent to job $job2's batch script after $((SECONDS - start)) s"
wait_for 60 "job $job2 to requeue itself" job_requeued "$job2" || { show_job "$job2" "$tmp/job2"; exit 1; }
durable=$(ls "$tmp/job2" | grep -c '^gen-[0-9]*\.h5$')
echo "   requeued (Restarts=$(job_field "$job2" Restarts), Reason=$(job_field "$job2" Reason)) with $durable of $generations generations durable"
((durable < generations)) || fail "the run was not stopped mid-run: all $durable generations were done before the requeue"
# A requeued job waits about 2 minutes (BeginTime) before it may start again; let it start now, but
# only once slurmd has finished the first start's cleanup: released sooner, the new start was refused
# ("Killing non-startable batch JobId=2: Job credential revoked") and the job failed.
node_idle() { [[ $(sinfo -h -N -o %t 2>/dev/null | head -1) == idle ]]; }
wait_for 30 "the node to be idle after job $job2's first start" node_idle || { show_job "$job2" "$tmp/job2"; exit 1; }
sleep 2
scontrol update JobId="$job2" StartTime=now
wait_for 120 "requeued job $job2 to finish" job_finished "$job2" || { show_job "$job2" "$tmp/job2"; exit 1; }
echo "   job $job2: $(job_field "$job2" JobState), exit code $(job_field "$job2" ExitCode), $((SECONDS - start)) s in all"
[[ $(job_field "$job2" JobState) == COMPLETED && $(job_field "$job2" ExitCode) == 0:0 ]] ||
  { show_job "$job2" "$tmp/job2"; echo "FAIL: job 2 did not complete after its requeue" >&2; exit 1; }
log=$tmp/job2/slurm-$job2.out
grep -q "stopped after generation" "$log" || fail "job 2's output has no 'stopped after generation' line"
grep -q "requeueing job $job2" "$log" || fail "job 2's batch script did not requeue it"
grep -q "resuming after generation" "$log" || fail "job 2 did not resume from its durable generation"
grep -q ", start 2: " "$log" || fail "job 2's script did not start a second time"
echo "   $(grep -m1 'stopped after generation' "$log" | sed 's/^rsi run: //')"
echo "   $(grep -m1 'resuming after generation' "$log" | sed 's/^ *//')"

cmp -s "$tmp/job1/models.tsv" "$tmp/job2/models.tsv" ||
  { fail "job 2's models.tsv differs from job 1's"; diff "$tmp/job1/models.tsv" "$tmp/job2/models.tsv" >&2 || true; }
diff <(generation_hashes "$tmp/job1") <(generation_hashes "$tmp/job2") >/dev/null ||
  { fail "job 2's generation hashes differ from job 1's"; diff <(generation_hashes "$tmp/job1") <(generation_hashes "$tmp/job2") >&2 || true; }
"$rsi" verify "$tmp/job2" >"$tmp/verify2.log" 2>&1 || { fail "rsi verify failed on job 2's run"; cat "$tmp/verify2.log" >&2; }
((failures == 0)) && echo "   lineage identical to job 1's: models.tsv and $generations generation hashes"

((failures == 0)) && echo "slurm: all checks passed" || { echo "slurm: $failures failure(s)" >&2; exit 1; }
