// Reading a run's lineage as a whole, shared by `rsi lineage`, `rsi show` and `rsi report`: every
// model by id, the path to the best model, Graphviz dot to SVG through `dot` (the view itself, rows
// and pruning, is lineage_view.h).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/models/data.h"
#include "rsi/runtime/commands.h"

namespace rsi::runtime {

// A run's lineage read once: every model by id, every generation's record (weights dropped: a report
// needs only metadata), the run attributes of the newest generation file and its best model.
struct RunLineage {
  std::map<std::uint64_t, checkpoints::StoredModel> models;
  std::vector<scheduler::GenerationRecord> generations;
  checkpoints::RunInfo run;
  std::uint64_t best_id = 0;
};
// Throws CheckpointError when the directory holds no generation file.
RunLineage read_lineage(const std::filesystem::path& run, bool keep_weights);

// Every model of a run, by id (metadata; weights only where stored). Throws CheckpointError when the
// directory holds no generation file.
std::map<std::uint64_t, checkpoints::StoredModel> all_models(const std::filesystem::path& run,
                                                             int* generations = nullptr,
                                                             std::uint64_t* best_id = nullptr);

// The best model and its first parents back to a seed.
std::set<std::uint64_t> best_path(const std::map<std::uint64_t, checkpoints::StoredModel>& models, std::uint64_t best);

// Graphviz is an external program: its absence or failure is reported, not a crash.
struct GraphvizError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs `dot -Tsvg` on the text; throws GraphvizError saying what to install when it fails.
std::string dot_to_svg(const std::string& dot);

// Runs a lineage-reading command, turning the errors of its input into exit codes and one line on
// stderr that names the command ("rsi NAME: ...").
template <typename F>
int guarded(const char* name, F&& f) {
  try {
    return f();
  } catch (const checkpoints::CheckpointError& e) {
    std::fprintf(stderr, "rsi %s: %s\n", name, e.what());
    return kExitBadInput;
  } catch (const models::DataError& e) {
    std::fprintf(stderr, "rsi %s: %s\n", name, e.what());
    return kExitBadInput;
  } catch (const GraphvizError& e) {
    std::fprintf(stderr, "rsi %s: %s\n", name, e.what());
    return kExitFailure;
  }
}

}  // namespace rsi::runtime
