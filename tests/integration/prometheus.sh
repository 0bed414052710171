#!/usr/bin/env bash
# The exporter against a real Prometheus server (Debian `prometheus`), end to end on loopback:
#  1. a Prometheus on a free port, with file_sd pointing at the run's targets file, a 1 s scrape
#     interval and monitoring/prometheus/rules.yml loaded;
#  2. `rsi run` with monitoring.port set to the port Prometheus holds: exit code 3 before training,
#     with a message naming 127.0.0.1:PORT, and no generation written;
#  3. `mpirun -n 2 rsi run tests/manifests/monitoring-small.yaml` on a free port, scraped live (2
#     scrapes or more while it trains);
#  4. while its endpoint lingers after the run, every PromQL expression of the Grafana dashboard
#     (monitoring/grafana/dashboards/rsi.json) is asked of Prometheus's HTTP API; the test fails
#     naming each one that returns nothing. Also: the rules loaded, the targets file lists the run.
#   RSI=build/runtime/rsi bash tests/integration/prometheus.sh BUILD_DIR SOURCE_DIR
# About 20 s on 2 cores. Needs /usr/bin/prometheus and python3 (skips, exit 0, without prometheus).
set -euo pipefail

build_dir=${1:?usage: prometheus.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: prometheus.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "prometheus.sh: no rsi executable at $rsi (build the 'rsi' target or set RSI)" >&2; exit 1; }
prometheus=${PROMETHEUS:-$(command -v prometheus || true)}
if [[ -z $prometheus ]]; then
  echo "prometheus.sh: SKIP: no prometheus server (install the Debian package 'prometheus')"
  exit 0
fi
python=$(command -v python3 || true)
[[ -n $python ]] || { echo "prometheus.sh: needs python3 (JSON and HTTP checks)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
dashboard=$source_dir/monitoring/grafana/dashboards/rsi.json

tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-prometheus.XXXXXX")
prom_pid=
run_pid=
cleanup() {
  [[ -n $run_pid ]] && kill -- "-$run_pid" 2>/dev/null || true
  [[ -n $prom_pid ]] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

# A free port BELOW the kernel's ephemeral range (32768-60999): a port the kernel hands out with
# bind(0) can be handed out again at once, e.g. to the TCP sockets Open MPI opens while the job starts,
# before the exporter binds it (seen: "Address already in use" on a port picked that way).
free_port() {
  "$python" -c '
import random, socket
while True:
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break'
}
prom_port=$(free_port)
rsi_port=$(free_port)
while [[ $rsi_port == "$prom_port" ]]; do rsi_port=$(free_port); done
api=http://127.0.0.1:$prom_port/api/v1

# The manifest with this test's port and targets file; seeds by absolute path.
manifest() {  # manifest PORT OUT_FILE
  sed -e "s|^  port: .*|  port: $1|" -e "s|^  targets_file: .*|  targets_file: $tmp/targets/rsi.json|" \
    -e "s|\.\./\.\./experiments/|$source_dir/experiments/|" "$source_dir/tests/manifests/monitoring-small.yaml" >"$2"
}
mkdir -p "$tmp/targets"
manifest "$rsi_port" "$tmp/run.yaml"
manifest "$prom_port" "$tmp/busy.yaml"

cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $source_dir/monitoring/prometheus/rules.yml
scrape_configs:
  - job_name: rsi
    scrape_timeout: 1s
    file_sd_configs:
      - files: ['$tmp/targets/*.json']
        refresh_interval: 1s
EOF

echo "== prometheus on 127.0.0.1:$prom_port"
"$prometheus" --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
prom_pid=$!
for _ in $(seq 100); do
  "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$prom_port/-/ready', timeout=1)" \
    2>/dev/null && break
  kill -0 "$prom_pid" 2>/dev/null || { echo "FAIL: prometheus exited:" >&2; cat "$tmp/prometheus.log" >&2; exit 1; }
  sleep 0.2
done

echo "== a port in use stops the run before training (exit code 3)"
set +e
mpirun -n 2 "$rsi" run "$tmp/busy.yaml" --out "$tmp/busy" >"$tmp/busy.log" 2>&1
busy_rc=$?
set -e
if [[ $busy_rc -ne 3 ]] || ! grep -q "127.0.0.1:$prom_port" "$tmp/busy.log"; then
  echo "FAIL: rsi run on a port in use: exit code $busy_rc (expected 3) and a message naming 127.0.0.1:$prom_port:" >&2
  cat "$tmp/busy.log" >&2
  exit 1
fi
if compgen -G "$tmp/busy/gen-*.h5" >/dev/null; then
  echo "FAIL: rsi run on a port in use wrote generations:" >&2
  ls "$tmp/busy" >&2
  exit 1
fi
grep -m1 "127.0.0.1:$prom_port" "$tmp/busy.log" | sed 's/^/   /'

echo "== mpirun -n 2 rsi run monitoring-small.yaml, metrics on 127.0.0.1:$rsi_port"
start=$SECONDS
setsid mpirun -n 2 "$rsi" run "$tmp/run.yaml" --out "$tmp/run" >"$tmp/run.log" 2>&1 &
run_pid=$!
# Wait for the linger (the run is over, the endpoint still up), then two more scrapes.
until grep -q "metrics stay up" "$tmp/run.log"; do
  if ! kill -0 "$run_pid" 2>/dev/null; then
    echo "FAIL: the run ended without lingering:" >&2
    tail -30 "$tmp/run.log" >&2
    exit 1
  fi
  ((SECONDS - start < 300)) || { echo "FAIL: the run took over 300 s" >&2; tail -30 "$tmp/run.log" >&2; exit 1; }
  sleep 0.2
done
echo "   run done in $((SECONDS - start)) s; endpoint lingering"
grep -q "coordinator" "$tmp/targets/rsi.json" ||
  { echo "FAIL: the targets file does not list the coordinator while it is up:" >&2; cat "$tmp/targets/rsi.json" >&2; exit 1; }
# The moment to query: Prometheus has scraped the ended run (rsi_run_active 0) and holds at least 3
# scrapes (rate() needs 2). Waits at most 5 s of the 6 s linger.
query_time=$("$python" - "$api" <<'PY'
import json, sys, time, urllib.parse, urllib.request
def query(q):
    url = sys.argv[1] + "/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)["data"]["result"]
deadline = time.time() + 5
while time.time() < deadline:
    if query("rsi_run_active == 0") and query("count_over_time(rsi_run_info[5m]) >= 3"):
        break
    time.sleep(0.2)
print(time.time())
PY
)
if ! wait "$run_pid"; then
  run_pid=
  echo "FAIL: the run exited non-zero:" >&2
  tail -30 "$tmp/run.log" >&2
  exit 1
fi
run_pid=
# Ended as it should: its targets are gone (RsiEndpointDown would fire for them otherwise).
if grep -q "targets" "$tmp/targets/rsi.json"; then
  echo "FAIL: the ended run's targets are still in the file_sd file:" >&2
  cat "$tmp/targets/rsi.json" >&2
  exit 1
fi

echo "== every PromQL expression of the dashboard, at the end of the run"
"$python" - "$dashboard" "$api" "$query_time" <<'EOF'
import json, sys, urllib.parse, urllib.request

dashboard, api, at = sys.argv[1], sys.argv[2], sys.argv[3]

def get(path, **params):
    url = api + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)

def exprs(panels):
    for p in panels:
        yield from exprs(p.get("panels", []))
        for t in p.get("targets", []):
            if t.get("expr"):
                yield p["title"], t["expr"]

# Grafana's variables, as Grafana would expand them for "All" runs.
def expand(expr):
    return expr.replace("$__rate_interval", "1m").replace("$run", ".*")

samples = get("/query", query="count_over_time(rsi_run_info[5m])", time=at)["data"]["result"]
live = get("/query", query="sum_over_time(rsi_run_active[5m])", time=at)["data"]["result"]
live = int(float(live[0]["value"][1])) if live else 0
print(f"   {samples[0]['value'][1] if samples else 0} scrapes of the run, {live} of them while it trained")
failures, checked = [], 0
if live < 2:
    failures.append(f"only {live} scrape(s) while the run trained (rsi_run_active 1); expected 2 or more")
for title, expr in exprs(json.load(open(dashboard))["panels"]):
    checked += 1
    result = get("/query", query=expand(expr), time=at)
    series = result["data"]["result"] if result.get("status") == "success" else []
    if not series:
        failures.append(f"{title}: {expr} ({result.get('error', 'no data')})")
    else:
        print(f"   {len(series)} series  {series[0]['value'][1]:>12.12}  {title}: {expr}")
rules = get("/rules")["data"]["groups"]
rule_count = sum(len(g["rules"]) for g in rules)
if rule_count == 0:
    failures.append("the alert rules (monitoring/prometheus/rules.yml) did not load")
print(f"   {checked} expressions checked; {rule_count} alert rules loaded")
if failures:
    print("FAIL: dashboard expressions that returned nothing:", file=sys.stderr)
    for f in failures:
        print("  " + f, file=sys.stderr)
    sys.exit(1)
EOF
echo "prometheus.sh: OK"
