#!/usr/bin/env python3
# Writes dashboards/rsi.json, the Grafana dashboard of rsi runs, from the panel list below.
#   python3 monitoring/grafana/make_dashboard.py > monitoring/grafana/dashboards/rsi.json
# Every expression here is asked of a live Prometheus by tests/integration/prometheus.sh, which
# fails on any that returns nothing: a new panel needs a metric the exporter really exposes.
import json
# The data source is a dashboard variable (any Prometheus the user has), not a fixed uid.
DS = {"type": "prometheus", "uid": "${datasource}"}
R = 'run=~"$run"'
panels = []
pid = [0]
# Panels flow left to right in lines 24 units wide; a line is as tall as its tallest panel, and a
# row header starts a new line (tests/integration/dashboard.sh checks that nothing overlaps).
y = [0]
x = [0]
line_h = [0]
def new_line():
    y[0] += line_h[0]
    x[0] = 0
    line_h[0] = 0
def row(title):
    if x[0] > 0: new_line()
    pid[0] += 1
    panels.append({"type": "row", "title": title, "id": pid[0], "collapsed": False,
                   "gridPos": {"h": 1, "w": 24, "x": 0, "y": y[0]}, "panels": []})
    y[0] += 1
def place(w, h):
    if x[0] + w > 24: new_line()
    g = {"h": h, "w": w, "x": x[0], "y": y[0]}
    x[0] += w
    line_h[0] = max(line_h[0], h)
    if x[0] >= 24: new_line()
    return g
def ts(title, targets, unit="short", desc="", w=8, h=8, minv=None, maxv=None, kind="timeseries"):
    pid[0] += 1
    p = {"type": kind, "title": title, "id": pid[0], "datasource": DS, "description": desc,
         "gridPos": place(w, h),
         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
         "targets": [{"refId": chr(65 + i), "datasource": DS, "expr": e, "legendFormat": l, "range": kind != "table", "instant": kind == "table"}
                     for i, (e, l) in enumerate(targets)]}
    if minv is not None: p["fieldConfig"]["defaults"]["min"] = minv
    if maxv is not None: p["fieldConfig"]["defaults"]["max"] = maxv
    if kind == "timeseries":
        p["options"] = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
    panels.append(p)
    return p
def by_generation(title, series, unit="percentunit", desc=""):
    # x = rsi_generation, y = the series: a point per scrape, so one column per generation.
    pid[0] += 1
    targets = [{"refId": "A", "datasource": DS, "expr": f'max(rsi_generation{{{R}}})', "legendFormat": "generation", "range": True}]
    for i, (e, l) in enumerate(series):
        targets.append({"refId": chr(66 + i), "datasource": DS, "expr": e, "legendFormat": l, "range": True})
    panels.append({"type": "xychart", "title": title, "id": pid[0], "datasource": DS, "description": desc,
                   "gridPos": place(12, 9),
                   "fieldConfig": {"defaults": {"unit": unit, "custom": {"show": "points+lines", "pointSize": {"fixed": 6}}}, "overrides": []},
                   "options": {"dims": {"frame": 0, "x": "generation"}, "seriesMapping": "auto", "legend": {"displayMode": "list", "placement": "bottom"}},
                   "transformations": [{"id": "joinByField", "options": {"byField": "Time", "mode": "outer"}}],
                   "targets": targets})

row("Capability (validation selects; the hidden test set is only reported)")
ts("Generation", [(f'rsi_generation{{{R}}}', "completed"), (f'rsi_generation_started{{{R}}}', "in flight")], w=6, kind="stat")
ts("Best and median accuracy", [(f'rsi_best_accuracy_ratio{{{R}}}', "best {{set}}"), (f'rsi_median_accuracy_ratio{{{R}}}', "median {{set}}"),
    (f'rsi_best_model_hidden_test_accuracy_ratio{{{R}}}', "best-by-validation model, hidden test")], unit="percentunit", w=10)
ts("Capability gain per loop", [(f'rsi_capability_gain_ratio{{{R}}}', "gain of best validation")], unit="percentunit", w=8,
   desc="Best validation accuracy now minus one generation before")
by_generation("Best accuracy by generation", [(f'rsi_best_accuracy_ratio{{{R},set="validation"}}', "validation"),
                                              (f'rsi_best_accuracy_ratio{{{R},set="hidden_test"}}', "hidden test")])
by_generation("Gain and design skill by generation", [(f'rsi_capability_gain_ratio{{{R}}}', "gain"), (f'rsi_design_skill_ratio{{{R}}}', "design skill")])
ts("Design skill", [(f'rsi_design_skill_ratio{{{R}}}', "mean child gain over parent")], unit="percentunit", w=8)
ts("Population diversity", [(f'rsi_population_diversity{{{R}}}', "mean genome distance")], w=8)
ts("Models per second", [(f'rsi_models_per_second{{{R}}}', "last generation"), (f'rate(rsi_models_trained_total{{{R}}}[$__rate_interval])', "trained, rate")], w=8)

row("Monitors (hidden test set, never selected on)")
ts("Goodhart gap", [(f'rsi_goodhart_gap_ratio{{{R}}}', "validation - hidden test")], unit="percentunit", w=8)
by_generation("Goodhart gap by generation", [(f'rsi_goodhart_gap_ratio{{{R}}}', "gap")])
ts("Per-class disparity", [(f'rsi_worst_class_accuracy_ratio{{{R}}}', "worst class"), (f'rsi_class_disparity_ratio{{{R}}}', "max - min")], unit="percentunit", w=8)
ts("Pseudo-label accuracy", [(f'rsi_pseudo_label_accuracy_ratio{{{R}}}', "parents' labels on the unlabeled pool")], unit="percentunit", w=8,
   desc="NaN (no value) when no child distilled on the unlabeled pool")

row("Models")
ts("Models trained and failed", [(f'rsi_models_trained_total{{{R}}}', "trained"), (f'sum by (reason) (rsi_models_failed_total{{{R}}})', "failed: {{reason}}")], w=12)
ts("Failures by reason, rate", [(f'sum by (reason) (rate(rsi_models_failed_total{{{R}}}[$__rate_interval]))', "{{reason}}")], unit="ops", w=12)

row("Throughput")
ts("Training samples per second", [(f'rsi_training_samples_per_second{{{R}}}', "per task second, generation in flight"),
    (f'rate(rsi_training_samples_total{{{R}}}[$__rate_interval])', "job")], w=8)
ts("Task seconds", [(f'histogram_quantile(0.5, sum by (le) (rate(rsi_task_duration_seconds_bucket{{{R}}}[$__rate_interval])))', "median"),
    (f'histogram_quantile(0.9, sum by (le) (rate(rsi_task_duration_seconds_bucket{{{R}}}[$__rate_interval])))', "p90"),
    (f'rate(rsi_task_duration_seconds_sum{{{R}}}[$__rate_interval]) / rate(rsi_task_duration_seconds_count{{{R}}}[$__rate_interval])', "mean")], unit="s", w=8)
ts("Trainer group busy ratio", [(f'rsi_group_busy_ratio{{{R}}}', "busy")], unit="percentunit", w=8)
ts("Trainer groups", [(f'rsi_trainer_groups{{{R}}}', "groups")], w=8, kind="stat")
ts("Generation seconds", [(f'rsi_generation_duration_seconds{{{R}}}', "last generation"), (f'time() - rsi_generation_completed_timestamp_seconds{{{R}}}', "since last completed")], unit="s", w=8)

row("Checkpoints")
ts("Checkpoint write seconds", [(f'rsi_checkpoint_write_seconds{{{R}}}', "last generation")], unit="s", w=8)
ts("Checkpoint bytes", [(f'rsi_checkpoint_write_bytes{{{R}}}', "last generation")], unit="bytes", w=8)
ts("Checkpoint write rate", [(f'rate(rsi_checkpoint_written_bytes_total{{{R}}}[$__rate_interval])', "written")], unit="Bps", w=8)
ts("Time spent writing checkpoints", [(f'rate(rsi_checkpoint_write_seconds_total{{{R}}}[$__rate_interval])', "fraction of wall time")],
   unit="percentunit", w=8)

row("Governance")
ts("Approvals pending", [(f'rsi_approval_pending{{{R}}}', "pending")], w=8, kind="stat")
ts("Red-line events", [(f'rsi_red_line_events_total{{{R}}}', "red lines")], w=8)
ts("Governance events by kind", [(f'sum by (kind) (rsi_governance_events_total{{{R}}})', "{{kind}}")], w=8)

row("Nodes and run")
ts("Endpoints up", [(f'up{{job="rsi",{R}}}', "{{role}} {{instance}}")], w=8)
ts("Rank resident memory", [(f'rsi_node_rank_resident_memory_bytes{{{R}}}', "rank {{rank}} on {{host}}")], unit="bytes", w=8)
ts("Rank CPU", [(f'rate(rsi_node_rank_cpu_seconds_total{{{R}}}[$__rate_interval])', "rank {{rank}} on {{host}}")], unit="percentunit", w=8)
ts("Runs", [(f'rsi_run_info{{{R}}}', ""), (f'rsi_run_active{{{R}}}', "")], w=24, kind="table")

dash = {
    "uid": "rsi-overview", "title": "rsi — recursive self-improvement", "tags": ["rsi"],
    "timezone": "utc", "schemaVersion": 38, "version": 1, "editable": True, "refresh": "10s",
    "time": {"from": "now-1h", "to": "now"},
    "description": "One rsi run (or several): capability by generation and over time, monitors, throughput, checkpoints, governance and node endpoints. Metric names: monitoring/README.md.",
    "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                             "current": {"text": "rsi-prometheus", "value": "rsi-prometheus"}, "hide": 0},
                            {"name": "run", "label": "run", "type": "query", "datasource": DS,
                             "query": {"query": "label_values(rsi_run_info, run)", "refId": "run"},
                             "definition": "label_values(rsi_run_info, run)", "refresh": 2,
                             "includeAll": True, "multi": True, "allValue": ".*",
                             "current": {"text": "All", "value": "$__all"}}]},
    "annotations": {"list": []},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
