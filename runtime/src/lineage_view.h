// A lineage view that scales to 10,000 models, shared by `rsi lineage` and `rsi report`: which models
// are drawn one by one and which are folded into summary nodes, laid out one row per generation, as
// text, Graphviz dot and JSON.
//
// Selection (combinable): every model; or the best model's first-parent line with its crossover mates
// (`best_path`) and/or the final population with all its ancestors (`population`); `last` keeps the
// last K generations and folds the selected models before them into one "… N earlier models" node.
// Pruning (off with `all`): a dead branch — a model none of whose descendants is in the final
// population or on the best path, and that is neither itself — joins its generation's "+N others"
// node; a generation row draws at most kMaxModelsPerRow models (the best path first, then the
// population, then by validation accuracy; the rest join "+N others"); at most kMaxRows generation
// rows are drawn, the first kHeadRows and the last ones, the generations between folded into one
// "… N earlier models" node. With these bounds a drawing is at most about 36 x 66 pt of models per
// row (plus the group, the label column and edges that pass between rows) by 25 rows of 54 pt; the
// dot text asks Graphviz to scale anything larger down to 3960 pt a side (`size`), so the SVG never
// exceeds it (tests/integration/lineage_scale.sh measures a 10,000-model run).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "lineage_graph.h"

namespace rsi::runtime {

inline constexpr int kMaxModelsPerRow = 36;
inline constexpr int kMaxRows = 24;
inline constexpr int kHeadRows = 4;

struct LineageViewOptions {
  bool best_path = false;   // only the best model's first-parent line and its crossover mates
  bool population = false;  // only the final population and all its ancestors
  int last = 0;             // only the last K generations one by one (0: all of them)
  bool all = false;         // no pruning: every selected model drawn, no bounds
};

struct ViewNode {
  enum class Kind { Model, Others, Earlier } kind = Kind::Model;
  std::string key;  // the Graphviz and JSON id: "m12", "others_5", "earlier_4_29"
  int first_generation = 0, last_generation = 0;  // equal but for an Earlier node
  std::uint64_t model = 0;                        // Kind::Model
  std::vector<std::uint64_t> members;             // Others and Earlier: the models folded in, by id
  bool on_best_path = false;                      // a Model on the path, or a group holding a part of it
  bool in_population = false, mate = false;       // Kind::Model: in the final population, a path model's mate
  double best_val = 0.0;                          // groups: best validation accuracy of the trained members
  int trained = 0, failed = 0;                    // groups: members trained, and failed or refused
};

struct ViewEdge {
  std::size_t from = 0, to = 0;  // node indices; `to` is always a Model
  bool mate = false;             // from a second parent (crossover)
  bool on_best_path = false;     // from a path model's first parent on the path
};

struct ViewRow {
  int first_generation = 0, last_generation = 0;  // equal for a generation row
  bool folded = false;                            // a row of folded generations (one Earlier node)
  std::size_t models = 0;                         // models of these generations in the run
  std::vector<std::size_t> nodes;                 // node indices, models by id, then the group
};

struct LineageView {
  LineageViewOptions options;
  std::uint64_t best = 0;
  std::size_t run_models = 0, run_generations = 0;
  std::size_t selected = 0;  // models the options select (shown one by one or folded)
  std::size_t drawn = 0;     // models drawn one by one
  std::size_t folded = 0;    // models folded into groups (drawn + folded = selected)
  std::vector<ViewRow> rows;
  std::vector<ViewNode> nodes;
  std::vector<ViewEdge> edges;

  // One line: what the view selects, and how it prunes.
  std::string describe() const;
};

LineageView build_lineage_view(const RunLineage& run, const LineageViewOptions& options);

// One block per row: a header line, then "* gen G  model ID  OP of PARENTS  val V test T  STATUS"
// per model drawn (the star marks the best path), then the row's "+N others" line.
std::string lineage_view_text(const LineageView& view, const RunLineage& run);
// A Graphviz digraph: one rank per row, a generation label column on the left, the best path filled
// and bold, the final population green, failed models red, groups dashed.
std::string lineage_view_dot(const LineageView& view, const RunLineage& run);
// {run, best, models, generations, selected, drawn, view, rows, nodes, edges} (runtime/README.md).
std::string lineage_view_json(const LineageView& view, const RunLineage& run, const std::string& run_dir);

}  // namespace rsi::runtime
