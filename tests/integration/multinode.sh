#!/usr/bin/env bash
# rsi on several nodes for real: a 3-node Slurm cluster emulated on this machine (slurm/local/start
# --nodes: each node a network + UTS namespace with its own host name and address on a private
# subnet, its own slurmd; munged and slurmctld on node1), then
#   1. tests/manifests/multinode-fashion.yaml (small Fashion-MNIST) on one node: node3, 4 ranks;
#   2. the same manifest with `rsi submit` as a job of 2 nodes x 2 ranks, Open MPI over TCP between
#      the nodes, a real Prometheus in the hub namespace scraping every node's exporter through the
#      run's file_sd targets file;
#   3. checks: the job completed; the lineage's host list names both nodes; ranks.tsv places ranks
#      0-1 and 2-3 on two nodes; Prometheus scraped the coordinator's endpoint on one node and the
#      node endpoint on the other (up == 1, rsi_node_rank_up for each node's ranks); the lineage
#      equals the one-node run's (models.tsv byte for byte, every generation hash, rsi verify);
#   4. the cluster is stopped and nothing is left: no namespace, process or network interface.
# Skips (exit code 77) when not root, slurm-wlm/munge/prometheus are missing, or namespaces cannot
# be created. About 50 s on 2 cores.
#   RSI=build/runtime/rsi bash tests/integration/multinode.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: multinode.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: multinode.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "multinode.sh: no rsi executable at $rsi" >&2; exit 1; }
prometheus=${PROMETHEUS:-$(command -v prometheus || true)}
[[ -n $prometheus ]] || { echo "SKIP: no prometheus server (install the Debian package 'prometheus')"; exit 77; }
source "$(dirname "$0")/lib/multinode.sh"
manifest=$source_dir/tests/manifests/multinode-fashion.yaml
test_start=$SECONDS

echo "== emulated cluster (slurm/local/start --nodes=3)"
start_cluster

echo "== reference: the manifest on one node"
reference_run "$tmp/one-node"

echo "== prometheus in the hub namespace (10.77.0.1:9090), file_sd on the run's targets file"
mkdir -p "$tmp/run"
cat >"$tmp/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: rsi
    scrape_timeout: 1s
    file_sd_configs:
      - files: ['$tmp/run/prometheus-targets.json']
        refresh_interval: 1s
YAML
on hub "$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prometheus-data" \
  --web.listen-address=10.77.0.1:9090 --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prometheus_ready() { on hub python3 -c "import urllib.request; urllib.request.urlopen('http://10.77.0.1:9090/-/ready', timeout=1)" 2>/dev/null; }
wait_for 30 "prometheus to be ready" prometheus_ready || { cat "$tmp/prometheus.log" >&2; exit 1; }

echo "== rsi submit: 2 nodes x 2 ranks"
start=$SECONDS
job=$(submit "$tmp/run")
wait_for 150 "job $job to finish" job_finished "$job" || { show_job "$job" "$tmp/run"; exit 1; }
echo "   job $job on $(job_field "$job" NodeList): $(job_field "$job" JobState), exit code $(job_field "$job" ExitCode), $((SECONDS - start)) s"
[[ $(job_field "$job" JobState) == COMPLETED && $(job_field "$job" ExitCode) == 0:0 ]] ||
  { show_job "$job" "$tmp/run"; echo "FAIL: the job did not complete" >&2; exit 1; }
hosts=$(lineage_hosts "$tmp/run/gen-000000.h5")
[[ $hosts =~ ^node[0-9],node[0-9]$ ]] || fail "the lineage's host list is '$hosts', not two nodes"
echo "   lineage host list: $hosts; $(grep -m1 'ranks by node' "$tmp/run/slurm-$job.out" | sed 's/^ *//')"
placement=$(awk 'NR > 1 { print $1 " " $2 }' "$tmp/run/ranks.tsv" | tr '\n' ' ')
node_a=${hosts%,*} node_b=${hosts#*,}
[[ $placement == "0 $node_a 1 $node_a 2 $node_b 3 $node_b " ]] || fail "ranks.tsv places the ranks as [$placement]"

echo "== prometheus: every node's exporter scraped"
on hub python3 - "$node_a" "$node_b" <<'PY' || fail "Prometheus did not scrape every node's exporter"
import json, sys, urllib.parse, urllib.request
coordinator, other = sys.argv[1], sys.argv[2]
def query(q):
    url = "http://10.77.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]
ok = True
up = {(s["metric"]["node"], s["metric"]["role"], s["metric"]["instance"]): s["value"][1]
      for s in query('max_over_time(up{job="rsi",run="multinode-fashion"}[10m])')}
for node, role in ((coordinator, "coordinator"), (other, "node")):
    hits = [(k, v) for k, v in up.items() if k[0] == node and k[1] == role]
    if not hits or hits[0][1] != "1":
        print(f"FAIL: no successful scrape of the {role} endpoint on {node}; targets seen: {up}", file=sys.stderr)
        ok = False
    else:
        print(f"   {role:11} endpoint {hits[0][0][2]}: up")
ranks = {}
for s in query('max_over_time(rsi_node_rank_up{run="multinode-fashion"}[10m])'):
    ranks.setdefault(s["metric"]["node"], set()).add(s["metric"]["rank"])
for node, want in ((coordinator, {"0", "1"}), (other, {"2", "3"})):
    if ranks.get(node) != want:
        print(f"FAIL: rsi_node_rank_up from {node}: ranks {sorted(ranks.get(node, []))}, expected {sorted(want)}", file=sys.stderr)
        ok = False
    else:
        print(f"   rsi_node_rank_up from {node}: ranks {','.join(sorted(want))}")
sys.exit(0 if ok else 1)
PY

echo "== lineage: the same as on one node"
same_lineage "$tmp/one-node" "$tmp/run"
((failures == 0)) && echo "   identical: models.tsv and $(generation_hashes "$tmp/run" | wc -l) generation hashes; rsi verify passed"

echo "== stop the cluster"
stop_cluster_and_check
echo "   $((SECONDS - test_start)) s in all"
((failures == 0)) && echo "multinode: all checks passed" || { echo "multinode: $failures failure(s)" >&2; exit 1; }
