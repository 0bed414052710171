# Shared by tests/integration/multinode.sh and node_loss.sh (sourced, not a test of its own): the
# emulated cluster of `slurm/local/start --nodes` (3 nodes, each a network + UTS namespace), its
# cleanup, and the helpers both tests use. Expects build_dir, source_dir and rsi to be set, and sets
# tmp, cluster and the EXIT trap. The tests skip (exit code 77) where the cluster cannot run: not
# root, slurm-wlm/munge missing, or no network namespaces allowed.
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
# Open MPI talks over the cluster's private subnet only (each node also has a loopback).
export OMPI_MCA_btl_tcp_if_include=10.77.0.0/24 OMPI_MCA_oob_tcp_if_include=10.77.0.0/24
export PATH=$PATH:/usr/sbin
rsi=$(cd "$(dirname "$rsi")" && pwd)/$(basename "$rsi")
source_dir=$(cd "$source_dir" && pwd)
test_name=$(basename "$0" .sh)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-$test_name.XXXXXX")
cluster=$tmp/cluster
# Open MPI's session directories (one per node, named after it) in the test's folder: a lost node
# leaves its own behind.
export OMPI_MCA_orte_tmpdir_base=$tmp
links_before=$(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sort | tr '\n' ' ' || true)  # no ip: start skips

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -d $cluster ]]; then
    "$source_dir/slurm/local/stop" "$cluster" >"$tmp/stop-on-exit.log" 2>&1 ||
      { echo "$test_name: cleanup: $(cat "$tmp/stop-on-exit.log")" >&2; rc=1; }
  fi
  [[ -n ${RSI_KEEP_TMP:-} ]] && echo "kept $tmp" >&2 || rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

start_cluster() {  # the 3-node cluster, or exit 77 where it cannot run
  local rc=0
  "$source_dir/slurm/local/start" --nodes=3 "$cluster" >"$tmp/start.log" 2>&1 || rc=$?
  if [[ $rc == 77 ]]; then
    echo "SKIP: $(tail -1 "$tmp/start.log")"
    exit 77
  fi
  ((rc == 0)) || { echo "FAIL: the emulated cluster did not start:" >&2; cat "$tmp/start.log" >&2; exit 1; }
  echo "   $(on node1 sinfo -h -N -o '%N %t' | tr '\n' ' ')($(awk '{ printf "%s %s, ", $1, $2 }' "$cluster/namespaces" | sed 's/, $//'))"
}

# Stops the cluster and checks that nothing of it is left: no namespace, no process in one, no new
# network interface in this machine's own namespace.
stop_cluster_and_check() {
  local start=$SECONDS prefix
  prefix=$(awk 'NR == 1 { sub(/-hub$/, "", $3); print $3 }' "$cluster/namespaces")
  "$source_dir/slurm/local/stop" "$cluster" >"$tmp/stop.log" 2>&1 || fail "slurm/local/stop: $(cat "$tmp/stop.log")"
  ip netns list | grep -q "^$prefix-" && fail "namespaces left after stop: $(ip netns list | grep "^$prefix-" | tr '\n' ' ')"
  local links_after
  links_after=$(ip -o link show 2>/dev/null | awk -F': ' '{ print $2 }' | sort | tr '\n' ' ')
  [[ $links_after == "$links_before" ]] || fail "network interfaces changed in this machine's namespace: before [$links_before] after [$links_after]"
  echo "   cluster stopped in $((SECONDS - start)) s; no namespace, process or interface left"
  [[ -n ${RSI_KEEP_TMP:-} ]] || rm -rf "$cluster"
}

on() { "$source_dir/slurm/local/exec" "$cluster" "$@"; }  # NODE COMMAND...: on an emulated node

scontrol=(on node1 scontrol)
poll_seconds=0.3
source "$(dirname "${BASH_SOURCE[0]}")/jobs.sh"  # job_field, wait_for, job_finished
submit() {  # RUN_DIR: `rsi submit` on node1 (the login node); prints the job id
  local out
  out=$(cd "$tmp" && on node1 "$rsi" submit "$manifest" --out "$1") || { echo "FAIL: rsi submit failed" >&2; return 1; }
  grep -o 'submitted batch job [0-9]*' <<<"$out" | awk '{ print $4 }'
}
source "$(dirname "${BASH_SOURCE[0]}")/lineage.sh"  # generation_hashes
lineage_hosts() {  # FILE: the host list a generation file records
  h5dump -a /hosts "$1" 2>/dev/null | grep -o '"[^"]*"' | tail -1 | tr -d '"'
}

# The same manifest on one node (node3, 4 ranks, no Slurm): the lineage every placement must give.
reference_run() {  # OUT
  local start=$SECONDS
  on node3 mpirun -n 4 --oversubscribe --bind-to none "$rsi" run "$manifest" --out "$1" >"$1.log" 2>&1 ||
    { echo "FAIL: the one-node reference run failed:" >&2; tail -30 "$1.log" >&2; exit 1; }
  echo "   one node (node3, 4 ranks): $((SECONDS - start)) s, $(($(wc -l <"$1/models.tsv") - 1)) models, hosts $(lineage_hosts "$1/gen-000000.h5")"
}

same_lineage() {  # REFERENCE RUN: models.tsv byte for byte, every generation hash, rsi verify
  cmp -s "$1/models.tsv" "$2/models.tsv" ||
    { fail "$2/models.tsv differs from the one-node run's"; diff "$1/models.tsv" "$2/models.tsv" >&2 || true; }
  diff <(generation_hashes "$1") <(generation_hashes "$2") >/dev/null ||
    { fail "generation hashes differ from the one-node run's"; diff <(generation_hashes "$1") <(generation_hashes "$2") >&2 || true; }
  "$rsi" verify "$2" >"$2.verify.log" 2>&1 || { fail "rsi verify failed on $2"; cat "$2.verify.log" >&2; }
}
