#include "lineage_view.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "rsi/monitoring/exporter.h"

namespace rsi::runtime {

namespace {

using Models = std::map<std::uint64_t, checkpoints::StoredModel>;
using Ids = std::set<std::uint64_t>;

// The models of `roots` and all their ancestors (every parent, crossover mates too) that the run holds.
Ids with_ancestors(const Models& models, std::vector<std::uint64_t> to_visit) {
  Ids out;
  while (!to_visit.empty()) {
    const std::uint64_t id = to_visit.back();
    to_visit.pop_back();
    const auto it = models.find(id);
    if (it == models.end() || !out.insert(id).second) continue;
    for (const auto p : it->second.record.parents) to_visit.push_back(p);
  }
  return out;
}

// What each model is to a view: on the best path, a path model's crossover mate, in the final
// population, live (itself or a descendant in the population or on the path, or a mate).
struct Roles {
  Ids path, mates, population, live;
};

Roles roles_of(const RunLineage& run) {
  Roles r;
  for (const auto id : best_path(run.models, run.best_id))
    if (run.models.count(id)) r.path.insert(id);
  for (const auto id : r.path) {
    const auto& parents = run.models.at(id).record.parents;
    for (std::size_t i = 1; i < parents.size(); ++i)
      if (run.models.count(parents[i]) && !r.path.count(parents[i])) r.mates.insert(parents[i]);
  }
  for (const auto id : run.generations.back().population)
    if (run.models.count(id)) r.population.insert(id);
  std::vector<std::uint64_t> roots(r.population.begin(), r.population.end());
  roots.insert(roots.end(), r.path.begin(), r.path.end());
  r.live = with_ancestors(run.models, roots);
  r.live.insert(r.mates.begin(), r.mates.end());
  return r;
}

Ids selected_models(const RunLineage& run, const Roles& roles, const LineageViewOptions& o) {
  Ids out;
  if (!o.best_path && !o.population) {
    for (const auto& [id, m] : run.models) out.insert(out.end(), id);
    return out;
  }
  if (o.best_path) {
    out.insert(roles.path.begin(), roles.path.end());
    out.insert(roles.mates.begin(), roles.mates.end());
  }
  if (o.population) {
    const Ids ancestors = with_ancestors(run.models, {roles.population.begin(), roles.population.end()});
    out.insert(ancestors.begin(), ancestors.end());
  }
  return out;
}

// The rows: an Earlier row for the generations before the last K, then one row per generation, at most
// kMaxRows of them (unless `all`): the first kHeadRows, a folded row, the last ones.
std::vector<ViewRow> plan_rows(const std::vector<int>& generations, const LineageViewOptions& o) {
  const std::size_t n = generations.size();
  const std::size_t start = o.last > 0 && static_cast<std::size_t>(o.last) < n ? n - o.last : 0;
  std::vector<ViewRow> rows;
  auto generation_row = [&](std::size_t i) { rows.push_back({generations[i], generations[i], false, 0, {}}); };
  if (start > 0) rows.push_back({generations.front(), generations[start - 1], true, 0, {}});
  if (o.all || n - start <= static_cast<std::size_t>(kMaxRows)) {
    for (std::size_t i = start; i < n; ++i) generation_row(i);
    return rows;
  }
  const std::size_t tail = n - static_cast<std::size_t>(kMaxRows - kHeadRows);
  for (std::size_t i = start; i < start + kHeadRows; ++i) generation_row(i);
  rows.push_back({generations[start + kHeadRows], generations[tail - 1], true, 0, {}});
  for (std::size_t i = tail; i < n; ++i) generation_row(i);
  return rows;
}

double val_or_lowest(const Models& models, std::uint64_t id) {
  const double v = models.at(id).record.metrics.val_accuracy;
  return std::isfinite(v) ? v : -1.0;
}

// A generation's selected models split into those drawn one by one and those folded into "+N others":
// the live ones are drawn, at most kMaxModelsPerRow (the best path first, then the population and the
// mates, then by validation accuracy); with `all` every one.
std::pair<std::vector<std::uint64_t>, std::vector<std::uint64_t>> split_row(const std::vector<std::uint64_t>& ids,
                                                                            const Roles& roles, const Models& models,
                                                                            bool all) {
  if (all) return {ids, {}};
  std::vector<std::uint64_t> drawn, others;
  for (const auto id : ids) (roles.live.count(id) ? drawn : others).push_back(id);
  auto priority = [&](std::uint64_t id) {
    return roles.path.count(id) ? 0 : roles.population.count(id) ? 1 : roles.mates.count(id) ? 2 : 3;
  };
  std::sort(drawn.begin(), drawn.end(), [&](std::uint64_t a, std::uint64_t b) {
    return std::make_tuple(priority(a), -val_or_lowest(models, a), a) <
           std::make_tuple(priority(b), -val_or_lowest(models, b), b);
  });
  if (drawn.size() > static_cast<std::size_t>(kMaxModelsPerRow)) {
    others.insert(others.end(), drawn.begin() + kMaxModelsPerRow, drawn.end());
    drawn.resize(kMaxModelsPerRow);
  }
  std::sort(drawn.begin(), drawn.end());
  std::sort(others.begin(), others.end());
  return {drawn, others};
}

void add_group(LineageView& v, std::size_t row, ViewNode::Kind kind, std::vector<std::uint64_t> ids,
               const Models& models, const Roles& roles, std::map<std::uint64_t, std::size_t>& node_of) {
  ViewNode n;
  n.kind = kind;
  n.first_generation = v.rows[row].first_generation;
  n.last_generation = v.rows[row].last_generation;
  n.key = kind == ViewNode::Kind::Others
              ? "others_" + std::to_string(n.first_generation)
              : "earlier_" + std::to_string(n.first_generation) + "_" + std::to_string(n.last_generation);
  for (const auto id : ids) {
    const auto& r = models.at(id).record;
    if (r.trained()) {
      n.best_val = n.trained == 0 ? r.metrics.val_accuracy : std::max(n.best_val, r.metrics.val_accuracy);
      ++n.trained;
    } else {
      ++n.failed;
    }
    n.on_best_path = n.on_best_path || roles.path.count(id) > 0;
    node_of[id] = v.nodes.size();
  }
  v.folded += ids.size();
  n.members = std::move(ids);
  v.rows[row].nodes.push_back(v.nodes.size());
  v.nodes.push_back(std::move(n));
}

void add_model(LineageView& v, std::size_t row, std::uint64_t id, const Models& models, const Roles& roles,
               std::map<std::uint64_t, std::size_t>& node_of) {
  ViewNode n;
  n.key = "m" + std::to_string(id);
  n.model = id;
  n.first_generation = n.last_generation = models.at(id).record.generation;
  n.on_best_path = roles.path.count(id) > 0;
  n.in_population = roles.population.count(id) > 0;
  n.mate = roles.mates.count(id) > 0;
  node_of[id] = v.nodes.size();
  v.rows[row].nodes.push_back(v.nodes.size());
  v.nodes.push_back(std::move(n));
  ++v.drawn;
}

// Edges into every model drawn, from wherever its parents are (themselves or the group holding them);
// parents the view does not select are left out; the same edge is drawn once.
void connect(LineageView& v, const Models& models, const Roles& roles,
             const std::map<std::uint64_t, std::size_t>& node_of) {
  std::set<std::tuple<std::size_t, std::size_t, bool>> seen;
  for (std::size_t to = 0; to < v.nodes.size(); ++to) {
    if (v.nodes[to].kind != ViewNode::Kind::Model) continue;
    const std::uint64_t child = v.nodes[to].model;
    const auto& parents = models.at(child).record.parents;
    for (std::size_t i = 0; i < parents.size(); ++i) {
      const auto from = node_of.find(parents[i]);
      if (from == node_of.end() || from->second == to) continue;
      const ViewEdge e{from->second, to, i > 0, i == 0 && roles.path.count(child) && roles.path.count(parents[i])};
      if (seen.insert({e.from, e.to, e.mate}).second) v.edges.push_back(e);
    }
  }
}

}  // namespace

LineageView build_lineage_view(const RunLineage& run, const LineageViewOptions& options) {
  LineageView v;
  v.options = options;
  v.best = run.best_id;
  v.run_models = run.models.size();
  v.run_generations = run.generations.size();
  const Roles roles = roles_of(run);
  const Ids selected = selected_models(run, roles, options);
  v.selected = selected.size();
  std::vector<int> generations;
  for (const auto& g : run.generations) generations.push_back(g.generation);
  v.rows = plan_rows(generations, options);
  std::map<int, std::size_t> row_of;
  for (std::size_t r = 0; r < v.rows.size(); ++r)
    for (const int g : generations)
      if (g >= v.rows[r].first_generation && g <= v.rows[r].last_generation) row_of[g] = r;
  for (const auto& [id, m] : run.models)
    if (const auto it = row_of.find(m.record.generation); it != row_of.end()) ++v.rows[it->second].models;

  std::vector<std::vector<std::uint64_t>> members(v.rows.size());
  for (const auto id : selected)
    if (const auto it = row_of.find(run.models.at(id).record.generation); it != row_of.end())
      members[it->second].push_back(id);
  std::map<std::uint64_t, std::size_t> node_of;
  for (std::size_t r = 0; r < v.rows.size(); ++r) {
    if (v.rows[r].folded) {
      if (!members[r].empty()) add_group(v, r, ViewNode::Kind::Earlier, members[r], run.models, roles, node_of);
      continue;
    }
    auto [drawn, others] = split_row(members[r], roles, run.models, options.all);
    for (const auto id : drawn) add_model(v, r, id, run.models, roles, node_of);
    if (!others.empty()) add_group(v, r, ViewNode::Kind::Others, std::move(others), run.models, roles, node_of);
  }
  connect(v, run.models, roles, node_of);
  return v;
}

std::string LineageView::describe() const {
  std::string what;
  if (options.best_path) what = "the best model's line with its crossover mates";
  if (options.population) what += (what.empty() ? "" : " and ") + std::string("the final population with its ancestors");
  if (what.empty()) what = "every model";
  if (options.last > 0) what += ", the last " + std::to_string(options.last) + " generation(s) one by one";
  std::string how = options.all ? "no pruning"
                                 : "dead branches folded, at most " + std::to_string(kMaxModelsPerRow) +
                                       " models per generation and " + std::to_string(kMaxRows) + " generation rows";
  return "shown: " + what + " (" + how + "): " + std::to_string(drawn) + " of " + std::to_string(selected) +
         " selected models drawn one by one, the rest folded into summary nodes";
}

namespace {

std::string generations_text(const ViewRow& row) {
  return row.first_generation == row.last_generation
             ? "gen " + std::to_string(row.first_generation)
             : "gens " + std::to_string(row.first_generation) + "-" + std::to_string(row.last_generation);
}

std::string group_text(const ViewNode& n) {
  char best[48] = "none trained";
  if (n.trained > 0) std::snprintf(best, sizeof best, "best val %.4f", n.best_val);
  std::string s = n.kind == ViewNode::Kind::Others ? "+" + std::to_string(n.members.size()) + " others"
                                                   : "\u2026 " + std::to_string(n.members.size()) + " earlier models";
  s += std::string(" (") + best;
  if (n.failed > 0) s += ", " + std::to_string(n.failed) + " failed";
  return s + ")";
}

}  // namespace

std::string lineage_view_text(const LineageView& v, const RunLineage& run) {
  std::ostringstream text;
  text << v.run_models << " models in " << v.run_generations << " generations; " << v.describe() << "\n";
  for (const auto& row : v.rows) {
    text << generations_text(row) << " (" << row.models << " models)\n";
    for (const auto i : row.nodes) {
      const ViewNode& n = v.nodes[i];
      if (n.kind != ViewNode::Kind::Model) {
        text << "  " << generations_text(row) << "  " << group_text(n) << (n.on_best_path ? "  [holds the best path]" : "")
             << "\n";
        continue;
      }
      const auto& r = run.models.at(n.model).record;
      text << (n.on_best_path ? "* " : "  ") << "gen " << r.generation << "  model " << n.model << "  " << r.op;
      if (!r.parents.empty()) {
        text << " of";
        for (const auto p : r.parents) text << " " << p;
      }
      char acc[96];
      std::snprintf(acc, sizeof acc, "  val %.4f test %.4f  %s", r.metrics.val_accuracy, r.metrics.test_accuracy,
                    scheduler::status_name(r.status));
      text << acc << (n.in_population ? "  [population]" : "") << (n.mate ? "  [mate]" : "") << "\n";
    }
  }
  text << "(* = the path to the best model " << v.best
       << "; [population] = in the final population; [mate] = a crossover mate of a model on the path)\n";
  return text.str();
}

namespace {

std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return out;
}

// "0.9123" as ".912": a node's label must fit its fixed width.
std::string short_accuracy(double v) {
  if (!std::isfinite(v)) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf[0] == '0' ? buf + 1 : buf;
}

std::string model_dot(const ViewNode& n, const scheduler::ModelRecord& r) {
  std::ostringstream s;
  char tooltip[256];
  std::snprintf(tooltip, sizeof tooltip, "model %llu, generation %d, %s: val %.4f, test %.4f, %s",
                static_cast<unsigned long long>(n.model), r.generation, r.op.c_str(), r.metrics.val_accuracy,
                r.metrics.test_accuracy, scheduler::status_name(r.status));
  s << "  " << n.key << " [label=\"" << n.model << "\\n" << dot_escape(r.op.substr(0, 12)) << "\\nv"
    << short_accuracy(r.metrics.val_accuracy) << " t" << short_accuracy(r.metrics.test_accuracy) << "\", tooltip=\""
    << dot_escape(tooltip) << "\"";
  if (n.on_best_path)
    s << ", style=filled, fillcolor=\"#ffd54f\", penwidth=2";
  else if (n.in_population)
    s << ", style=filled, fillcolor=\"#c8e6c9\"";
  else if (n.mate)
    s << ", style=filled, fillcolor=\"#fff3c4\"";
  if (!r.trained()) s << ", color=\"#c62828\", fontcolor=\"#c62828\"";
  s << "];\n";
  return s.str();
}

std::string group_dot(const ViewNode& n) {
  const std::string text = group_text(n);  // "+N others (best val ...)": two lines in the node
  const auto open = text.find(" (");
  std::ostringstream s;
  s << "  " << n.key << " [label=\"" << dot_escape(text.substr(0, open)) << "\\n"
    << dot_escape(text.substr(open + 2, text.size() - open - 3)) << "\", fixedsize=false, fontcolor=\"#555555\", "
    << (n.kind == ViewNode::Kind::Others ? "style=\"rounded,dashed\", color=\"#999999\""
                                         : "style=\"rounded,filled\", fillcolor=\"#eeeeee\", color=\"#999999\"")
    << (n.on_best_path ? ", penwidth=2, color=\"#f57f17\"" : "") << "];\n";
  return s.str();
}

}  // namespace

std::string lineage_view_dot(const LineageView& v, const RunLineage& run) {
  std::ostringstream text;
  text << "digraph lineage {\n"
       << "  graph [rankdir=TB, " << (v.options.all ? "" : "size=\"55,55\", ") << "nodesep=0.1, ranksep=0.3, fontname=\"Helvetica\", fontsize=11, labelloc=t, label=\""
       << v.run_models << " models, " << v.run_generations << " generations; " << v.drawn << " drawn, "
       << v.folded << " folded; best model " << v.best << "\"];\n"
       << "  node [shape=box, fontname=\"Helvetica\", fontsize=8, fixedsize=true, width=0.82, height=0.44, "
          "margin=0.02];\n"
       << "  edge [arrowsize=0.5, color=\"#888888\"];\n";
  // The generation label column: one plain-text node per row, chained top to bottom.
  for (std::size_t r = 0; r < v.rows.size(); ++r) {
    const ViewRow& row = v.rows[r];
    text << "  row" << r << " [shape=plaintext, fixedsize=false, fontsize=10, label=\"" << generations_text(row)
         << "\\n" << row.models << " models\"];\n";
    if (r > 0) text << "  row" << (r - 1) << " -> row" << r << " [style=invis, weight=100];\n";
  }
  for (std::size_t r = 0; r < v.rows.size(); ++r) {
    text << "  { rank=same; row" << r << ";";
    for (const auto i : v.rows[r].nodes) text << " " << v.nodes[i].key << ";";
    text << " }\n";
    for (const auto i : v.rows[r].nodes) {
      const ViewNode& n = v.nodes[i];
      text << (n.kind == ViewNode::Kind::Model ? model_dot(n, run.models.at(n.model).record) : group_dot(n));
    }
  }
  for (const auto& e : v.edges) {
    text << "  " << v.nodes[e.from].key << " -> " << v.nodes[e.to].key;
    if (e.on_best_path)
      text << " [color=\"#f57f17\", penwidth=2.5]";
    else if (e.mate)
      text << " [style=dashed]";
    else if (v.nodes[e.from].kind != ViewNode::Kind::Model)
      text << " [style=dotted]";
    text << ";\n";
  }
  text << "}\n";
  return text.str();
}

namespace {

std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

std::string json_ids(const std::vector<std::uint64_t>& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? ", " : "") + std::to_string(ids[i]);
  return s + "]";
}

const char* json_bool(bool b) { return b ? "true" : "false"; }

std::string node_json(const ViewNode& n, const RunLineage& run) {
  using monitoring::json_string;
  std::ostringstream s;
  s << "{\"id\": " << json_string(n.key);
  if (n.kind == ViewNode::Kind::Model) {
    const auto& r = run.models.at(n.model).record;
    s << ", \"kind\": \"model\", \"model\": " << n.model << ", \"generation\": " << r.generation
      << ", \"parents\": " << json_ids(r.parents) << ", \"op\": " << json_string(r.op)
      << ", \"val_accuracy\": " << json_number(r.metrics.val_accuracy)
      << ", \"test_accuracy\": " << json_number(r.metrics.test_accuracy)
      << ", \"status\": " << json_string(scheduler::status_name(r.status)) << ", \"on_best_path\": "
      << json_bool(n.on_best_path) << ", \"in_population\": " << json_bool(n.in_population)
      << ", \"mate\": " << json_bool(n.mate) << "}";
    return s.str();
  }
  s << ", \"kind\": " << (n.kind == ViewNode::Kind::Others ? "\"others\"" : "\"earlier\"")
    << ", \"first_generation\": " << n.first_generation << ", \"last_generation\": " << n.last_generation
    << ", \"count\": " << n.members.size() << ", \"trained\": " << n.trained << ", \"failed\": " << n.failed
    << ", \"best_val\": " << (n.trained > 0 ? json_number(n.best_val) : "null")
    << ", \"on_best_path\": " << json_bool(n.on_best_path) << ", \"models\": " << json_ids(n.members) << "}";
  return s.str();
}

}  // namespace

std::string lineage_view_json(const LineageView& v, const RunLineage& run, const std::string& run_dir) {
  using monitoring::json_string;
  std::ostringstream s;
  s << "{\"run\": " << json_string(run_dir) << ", \"best\": " << v.best << ", \"models\": " << v.run_models
    << ", \"generations\": " << v.run_generations << ", \"selected\": " << v.selected << ", \"drawn\": " << v.drawn << ", \"folded\": " << v.folded
    << ", \"view\": {\"best_path\": " << json_bool(v.options.best_path)
    << ", \"population\": " << json_bool(v.options.population) << ", \"last\": " << v.options.last
    << ", \"all\": " << json_bool(v.options.all) << ", \"max_models_per_row\": " << kMaxModelsPerRow
    << ", \"max_rows\": " << kMaxRows << ", \"description\": " << json_string(v.describe()) << "},\n \"rows\": [";
  for (std::size_t r = 0; r < v.rows.size(); ++r) {
    const ViewRow& row = v.rows[r];
    s << (r ? ",\n  " : "\n  ") << "{\"first_generation\": " << row.first_generation
      << ", \"last_generation\": " << row.last_generation << ", \"folded\": " << json_bool(row.folded)
      << ", \"models\": " << row.models << ", \"nodes\": [";
    for (std::size_t k = 0; k < row.nodes.size(); ++k) s << (k ? ", " : "") << json_string(v.nodes[row.nodes[k]].key);
    s << "]}";
  }
  s << "],\n \"nodes\": [";
  for (std::size_t i = 0; i < v.nodes.size(); ++i) s << (i ? ",\n  " : "\n  ") << node_json(v.nodes[i], run);
  s << "],\n \"edges\": [";
  for (std::size_t i = 0; i < v.edges.size(); ++i) {
    const ViewEdge& e = v.edges[i];
    s << (i ? ",\n  " : "\n  ") << "{\"from\": " << json_string(v.nodes[e.from].key)
      << ", \"to\": " << json_string(v.nodes[e.to].key) << ", \"kind\": " << (e.mate ? "\"mate\"" : "\"parent\"")
      << ", \"on_best_path\": " << json_bool(e.on_best_path) << "}";
  }
  s << "]}\n";
  return s.str();
}

}  // namespace rsi::runtime
