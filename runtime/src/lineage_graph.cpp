#include "lineage_graph.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace rsi::runtime {

namespace fs = std::filesystem;

RunLineage read_lineage(const fs::path& run, bool keep_weights) {
  RunLineage out;
  for (const auto& file : checkpoints::generation_files(run)) {
    auto g = checkpoints::read_generation(file);
    for (auto& m : g.models) {
      if (!keep_weights) m.record.weights.reset();
      out.models[m.record.id] = std::move(m);
    }
    if (keep_weights) {
      for (const auto& p : g.population)
        if (p.weights) out.models[p.id].record.weights = p.weights;
    }
    for (auto& c : g.record.children) c.weights.reset();
    g.record.population_models.clear();
    out.best_id = g.record.best_id;
    out.run = g.run;
    out.generations.push_back(std::move(g.record));
  }
  if (out.generations.empty())
    throw checkpoints::CheckpointError(run.string() + ": no generation files (gen-*.h5): is this a run directory?");
  return out;
}

std::map<std::uint64_t, checkpoints::StoredModel> all_models(const fs::path& run, int* generations,
                                                             std::uint64_t* best_id) {
  RunLineage lineage = read_lineage(run, true);
  if (generations) *generations = static_cast<int>(lineage.generations.size());
  if (best_id) *best_id = lineage.best_id;
  return std::move(lineage.models);
}

std::set<std::uint64_t> best_path(const std::map<std::uint64_t, checkpoints::StoredModel>& models, std::uint64_t best) {
  std::set<std::uint64_t> path;
  for (std::uint64_t id = best; id != 0 && !path.count(id);) {
    path.insert(id);
    const auto it = models.find(id);
    id = (it == models.end() || it->second.record.parents.empty()) ? 0 : it->second.record.parents[0];
  }
  return path;
}

std::string dot_to_svg(const std::string& dot) {
  const fs::path base = fs::temp_directory_path() / ("rsi-lineage-" + std::to_string(::getpid()));
  const fs::path dot_file = base.string() + ".dot", svg_file = base.string() + ".svg",
                 err_file = base.string() + ".err";
  std::ofstream(dot_file) << dot;
  const std::string cmd =
      "dot -Tsvg '" + dot_file.string() + "' -o '" + svg_file.string() + "' 2>'" + err_file.string() + "'";
  const int status = std::system(cmd.c_str());
  std::stringstream err, svg;
  err << std::ifstream(err_file).rdbuf();
  svg << std::ifstream(svg_file).rdbuf();
  std::error_code ec;
  for (const auto& f : {dot_file, svg_file, err_file}) fs::remove(f, ec);
  const int rc = status == -1 ? -1 : WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  if (rc == 127)
    throw GraphvizError(
        "Graphviz 'dot' was not found on PATH: install the Debian package 'graphviz' to draw the lineage tree");
  if (rc != 0 || svg.str().find("<svg") == std::string::npos)
    throw GraphvizError("Graphviz 'dot -Tsvg' failed (exit " + std::to_string(rc) + "): " + err.str() +
                        " (is the Debian package 'graphviz' installed and working?)");
  return svg.str();
}

}  // namespace rsi::runtime
