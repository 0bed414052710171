#!/usr/bin/env bash
# Extreme values (issue 19): every integer key of the manifest — found in `rsi validate`'s resolved
# output, so a key added later is covered without touching this test — is set in turn to extreme
# values (-2^63, -1, 0, 1, 2^31-1, 2^31, 2^63-1, 10^30) on a small surrogate manifest. Each must get
# an answer within seconds and bounded memory: `rsi validate` refuses it (exit 3) or accepts it,
# and then the largest and smallest accepted value of each key runs one generation to the end
# (or to a gate's approval timeout, exit code 5).
# Before this, `selection.tournament_size: 2147483647` drew 2^31 times per tournament and
# `population.children: 2000000000` grew the coordinator's memory without bound.
#   bash tests/integration/extreme_values.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: extreme_values.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: extreme_values.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "extreme_values.sh: no rsi executable at $rsi" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-extreme.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

RSI=$rsi TMP=$tmp SEED=$(realpath "$source_dir/experiments/genomes/linear.yaml") /usr/bin/python3 - <<'EOF'
import json, os, re, resource, subprocess, sys, time, yaml

rsi, tmp, seed = os.environ["RSI"], os.environ["TMP"], os.environ["SEED"]
VALIDATE_SECONDS, RUN_SECONDS, MEMORY = 10, 60, 4 << 30  # each answer within these, under this address space
base = {
    "run": {"name": "extreme", "seed": 1},
    "task": {"kind": "surrogate", "surrogate_cost_seconds": 0},
    "population": {"size": 2, "children": 2, "generations": 1},
    "seeds": [seed],
    "cluster": {"group_size": 1, "threads_per_rank": 1},
    # A gate (every_n_generations) makes the run wait for a person: exit code 5 after this long.
    "governance": {"gates": {"approval_timeout_seconds": 1}},
}
values = [-2**63, -1, 0, 1, 2**31 - 1, 2**31, 2**63 - 1, 10**30]

def limit():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

def answer(args, seconds):
    start = time.time()
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=seconds, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return None, time.time() - start, "no answer within %d s" % seconds
    return p.returncode, time.time() - start, p.stdout + p.stderr

def write(path, manifest):
    with open(path, "w") as f:
        json.dump(manifest, f)  # JSON is YAML

# The integer keys, from the resolved manifest (bool is an int in Python: left out).
write(f"{tmp}/base.yaml", base)
rc, _, text = answer([rsi, "validate", f"{tmp}/base.yaml"], VALIDATE_SECONDS)
assert rc == 0, text
resolved = yaml.safe_load(text)
keys = []
def walk(node, path):
    for k, v in node.items():
        if isinstance(v, dict):
            walk(v, path + [k])
        elif isinstance(v, int) and not isinstance(v, bool):
            keys.append(path + [k])
walk(resolved, [])
print(f"{len(keys)} integer keys x {len(values)} values")

failures, runs, validations, slowest = [], 0, 0, 0.0
for key in keys:
    name = ".".join(key)
    accepted, tried, bounds = [], [], set()
    queue = list(values)
    while queue:
        v = queue.pop(0)
        if v in tried:
            continue
        tried.append(v)
        m = json.loads(json.dumps(base))
        node = m
        for k in key[:-1]:
            node = node.setdefault(k, {})
        node[key[-1]] = v
        path = f"{tmp}/{name}={v}.yaml"
        write(path, m)
        rc, seconds, text = answer([rsi, "validate", path], VALIDATE_SECONDS)
        validations += 1
        slowest = max(slowest, seconds)
        # A refusal gives the valid range: its ends are tried too (the largest value the manifest
        # accepts must be one the loop serves).
        for lo, hi in re.findall(r"in \[(-?\d+), (-?\d+)\]", text if rc == 3 else ""):
            queue += [int(lo), int(hi)]
        if rc == 0:
            accepted.append((v, path))
        elif rc != 3 or not text.startswith(f"rsi validate: {path}:"):
            failures.append(f"{name}: {v}: rsi validate answered {rc} in {seconds:.1f} s: {text.strip()[-300:]}")
    accepted.sort()
    # The extremes the loop would have to serve: run them.
    seconds_max = 0.0
    for v, path in {accepted[0][0]: accepted[0], accepted[-1][0]: accepted[-1]}.values() if accepted else []:
        rc, seconds, text = answer([rsi, "run", path, "--out", f"{tmp}/run-{name}={v}", "--generations", "1"],
                                   RUN_SECONDS)
        runs += 1
        slowest = max(slowest, seconds)
        seconds_max = max(seconds_max, seconds)
        # 0: finished; 2/3: refused at start (e.g. a group size that does not divide the job's ranks);
        # 5: a gate waits for a decision and the approval timeout ran out.
        if rc not in (0, 2, 3, 5):
            failures.append(f"{name}: {v}: one generation answered {rc} after {seconds:.1f} s: {text.strip()[-400:]}")
    print(f"  {name}: accepted {[v for v, _ in accepted]}; ran {accepted[0][0] if accepted else '-'} and "
          f"{accepted[-1][0] if accepted else '-'} ({seconds_max:.1f} s at most)")

print(f"{validations} validations and {runs} one-generation runs; slowest answer {slowest:.1f} s")
for f in failures:
    print("FAIL:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
echo "extreme_values: all checks passed"
