#!/usr/bin/env bash
# The Grafana dashboard (monitoring/grafana/dashboards/rsi.json) as a user imports it: generated
# from make_dashboard.py (the committed file is its output), no two panels on the same grid cells
# and none wider than the grid, the data source a dashboard variable (no hard-coded uid in any
# panel or query), and one unit per panel. prometheus.sh asks every query of a live Prometheus.
#   bash tests/integration/dashboard.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
source_dir=${2:?usage: dashboard.sh BUILD_DIR SOURCE_DIR}
dir=$source_dir/monitoring/grafana
/usr/bin/python3 "$dir/make_dashboard.py" | cmp -s - "$dir/dashboards/rsi.json" ||
  { echo "FAIL: dashboards/rsi.json is not make_dashboard.py's output: regenerate it" >&2; exit 1; }
/usr/bin/python3 - "$dir/dashboards/rsi.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
problems = []
cells = {}
for p in d["panels"]:
    g, t = p["gridPos"], p["title"]
    if g["x"] < 0 or g["x"] + g["w"] > 24 or g["w"] <= 0 or g["h"] <= 0:
        problems.append(f"{t}: outside the 24-column grid: {g}")
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                problems.append(f"{t} overlaps {cells[(x, y)]} at x={x} y={y}")
                break
            cells[(x, y)] = t
        else:
            continue
        break
    if p["type"] == "row":
        continue
    for where in [p] + p.get("targets", []):
        uid = where.get("datasource", {}).get("uid")
        if uid != "${datasource}":
            problems.append(f"{t}: data source uid {uid!r}, not the ${{datasource}} variable")
    units = {p.get("fieldConfig", {}).get("defaults", {}).get("unit")}
    for o in p.get("fieldConfig", {}).get("overrides", []):
        units |= {prop["value"] for prop in o.get("properties", []) if prop.get("id") == "unit"}
    if len(units) != 1:
        problems.append(f"{t}: more than one unit on one axis: {units}")
variables = {v["name"]: v for v in d["templating"]["list"]}
if variables.get("datasource", {}).get("type") != "datasource":
    problems.append("no 'datasource' variable of type datasource")
for p in problems:
    print("FAIL:", p, file=sys.stderr)
print(f"dashboard: {len(d['panels'])} panels, {len(cells)} grid cells, no overlap; data source ${{datasource}}; one unit per panel")
sys.exit(1 if problems else 0)
PY
