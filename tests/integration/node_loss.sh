#!/usr/bin/env bash
# A node lost mid-run, on the emulated 3-node Slurm cluster (slurm/local/start --nodes; see
# multinode.sh): tests/manifests/multinode-fashion.yaml (small Fashion-MNIST) as a job of 2 nodes x
# 2 ranks submitted with `rsi submit`; once generation 3 is in flight, every process of the node
# that holds ranks 2-3 is killed with SIGKILL (its slurmd, slurmstepd, Open MPI daemon and ranks:
# all that is in the node's network namespace). Then:
#   - the job ends, and its output names the lost node and its ranks, the last durable generation
#     and the command that resumes;
#   - the last durable generation (2) is intact (`rsi verify`) and nothing of generation 3 was kept:
#     the work lost is the generation in flight;
#   - `rsi submit` of the same manifest into the same run directory runs on the nodes that answer,
#     resumes after generation 2 and ends in the lineage of the undisturbed one-node run
#     (models.tsv byte for byte, every generation hash, rsi verify);
#   - the cluster is stopped and nothing is left (no namespace, process or interface).
# Prints what the loss cost: the generation in flight, and the seconds from the kill to the job's
# end, to the resumed run's start and to its end. Skips (exit code 77) when not root, slurm-wlm/munge
# are missing or namespaces cannot be created. About a minute on 2 cores.
#   RSI=build/runtime/rsi bash tests/integration/node_loss.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: node_loss.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: node_loss.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "node_loss.sh: no rsi executable at $rsi" >&2; exit 1; }
source "$(dirname "$0")/lib/multinode.sh"
manifest=$source_dir/tests/manifests/multinode-fashion.yaml
test_start=$SECONDS
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

echo "== emulated cluster (slurm/local/start --nodes=3)"
start_cluster

echo "== reference: the manifest on one node"
reference_run "$tmp/one-node"

echo "== job 1: 2 nodes x 2 ranks; a node lost while generation 3 is in flight"
run=$tmp/run
job1=$(submit "$run")
log1=$run/slurm-$job1.out
in_flight() { grep -q "gen 3/5 started" "$log1" 2>/dev/null; }
wait_for 90 "generation 3 of job $job1 to start" in_flight || { show_job "$job1" "$run"; exit 1; }
sleep 0.5  # into the generation: its first children are training
lost=$(awk 'NR > 1 && $1 == 2 { print $2 }' "$run/ranks.tsv")
[[ $lost =~ ^node[0-9]+$ && $lost != node1 ]] || { fail "rank 2 runs on '$lost', not on a node other than the batch host"; exit 1; }
netns=$(awk -v n="$lost" '$1 == n { print $3 }' "$cluster/namespaces")
[[ -e $run/gen-000003.h5 ]] && fail "generation 3 was already durable when the node was to be lost; the test proves little"
durable_before=$(ls "$run" | grep -c '^gen-[0-9]*\.h5$')
killed=0
for _ in 1 2 3; do  # until the namespace is empty: a process may fork while the first list is killed
  pids=$(ip netns pids "$netns")
  [[ -z $pids ]] && break
  kill -9 $pids 2>/dev/null || true
  killed=$((killed + $(wc -w <<<"$pids")))
  sleep 0.1
done
kill_time=$(now)
echo "   killed all $killed processes of $lost ($netns) with $durable_before generation file(s) durable"
# The batch script ends as soon as mpirun does; Slurm keeps the job COMPLETING until it has heard
# from every node or set the silent one DOWN (SlurmdTimeout), but the resubmission need not wait.
script_done() { grep -q "^rsi job: the run exited with code" "$log1" 2>/dev/null; }
wait_for 90 "job $job1's batch script to end after the loss" script_done || { show_job "$job1" "$run"; exit 1; }
ended=$(since "$kill_time")
echo "   job $job1's batch script ended $ended s after the kill ($(job_field "$job1" JobState) in Slurm):"
grep "^rsi job: " "$log1" | grep -v "start 1:" | sed 's/^/   | /'
grep -q "rsi job: lost node $lost (ranks 2-3 of this run, 4 ranks in all)" "$log1" ||
  { fail "job $job1's output does not name node $lost and ranks 2-3"; show_job "$job1" "$run"; }
grep -q "rsi job: generation 2 (gen-000002.h5) and the ones before it are durable" "$log1" ||
  fail "job $job1's output does not name generation 2 as the last durable one"
grep -q "rsi job: resubmit to resume on nodes that answer: .* submit $manifest --out $run" "$log1" ||
  fail "job $job1's output does not say how to resume"
"$rsi" verify "$run" >"$tmp/verify-after-loss.log" 2>&1 ||
  { fail "rsi verify failed on the run after the node loss"; cat "$tmp/verify-after-loss.log" >&2; }
[[ -e $run/gen-000003.h5 ]] && fail "generation 3 is durable although its node was lost mid-generation"
latest=$(awk '{ print $1 }' "$run/LATEST")
[[ $latest == 2 ]] || fail "LATEST names generation $latest after the loss, not 2"
echo "   after the loss: rsi verify passed; LATEST generation $latest; generation 3 (in flight) lost"

echo "== job 2: rsi submit again, same run directory"
job2=$(submit "$run")
log2=$run/slurm-$job2.out
resumed() { grep -q "resuming after generation" "$log2" 2>/dev/null; }
wait_for 120 "job $job2 to resume" resumed || { show_job "$job2" "$run"; exit 1; }
resume_seconds=$(since "$kill_time")
wait_for 120 "job $job2 to finish" job_finished "$job2" || { show_job "$job2" "$run"; exit 1; }
done_seconds=$(since "$kill_time")
nodes2=$(job_field "$job2" NodeList)
echo "   job $job2 on $nodes2: $(job_field "$job2" JobState), exit code $(job_field "$job2" ExitCode)"
[[ $(job_field "$job2" JobState) == COMPLETED && $(job_field "$job2" ExitCode) == 0:0 ]] ||
  { show_job "$job2" "$run"; echo "FAIL: the resubmitted job did not complete" >&2; exit 1; }
echo "   $(grep -m1 'resuming after generation' "$log2" | sed 's/^ *//'); $(grep -m1 'ranks by node' "$log2" | sed 's/^ *//')"
grep -q "resuming after generation 2 " "$log2" || fail "job $job2 did not resume after generation 2"
[[ $(job_field "$job1" JobState) =~ ^(FAILED|NODE_FAIL)$ ]] || fail "job $job1 ended $(job_field "$job1" JobState) after a node loss"
echo "   job $job1 in the end: $(job_field "$job1" JobState), exit code $(job_field "$job1" ExitCode)"
hosts=$(lineage_hosts "$run/gen-000005.h5")
[[ ,$hosts, != *,$lost,* ]] || fail "the resumed run's host list $hosts names the lost node $lost"
echo "   lost node in Slurm: $(on node1 sinfo -h -n "$lost" -o '%t %E' 2>/dev/null)"

echo "== lineage: the same as the undisturbed one-node run"
same_lineage "$tmp/one-node" "$run"
((failures == 0)) && echo "   identical: models.tsv and $(generation_hashes "$run" | wc -l) generation hashes; rsi verify passed"

echo "== what the node loss cost"
gen3=$(awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") c = i } NR > 1 && $1 == 3 { print $c }' "$tmp/one-node/generations.tsv" 2>/dev/null)
echo "   work lost: generation 3, the one in flight (${gen3:-?} s of the undisturbed run's wall time), retrained after the resume"
echo "   time: the job ended ${ended} s after the kill; the resubmitted run resumed ${resume_seconds} s after it; lineage complete ${done_seconds} s after it"

echo "== stop the cluster"
stop_cluster_and_check
echo "   $((SECONDS - test_start)) s in all"
((failures == 0)) && echo "node_loss: all checks passed" || { echo "node_loss: $failures failure(s)" >&2; exit 1; }
