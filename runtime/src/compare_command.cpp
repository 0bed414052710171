// `rsi compare RUN_OR_STUDY... [--json] [--html FILE] [--baseline ARM] [--thresholds 0.85,0.90]`:
// the runs' lineages side by side, one arm per study arm (a study directory expands to its arms and
// seeds through its study-index.tsv) or per plain run directory. Per run: the final hidden-test
// accuracy of the best-by-validation model, generations / compute / wall time to first reach each
// threshold of it, the normalised area under that capability curve, the design-skill slope, mean
// diversity and mean predictor quality (when the lineage records predictor_rank_correlation). Per
// arm: mean and 95% bootstrap interval over seeds; against the baseline, differences paired by seed.
// Everything but the wall times is deterministic: the same lineages give the same numbers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "compare.h"
#include "html_chart.h"
#include "lineage_graph.h"
#include "rsi/checkpoints/store.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"
#include "rsi/runtime/study.h"

namespace rsi::runtime {

namespace {

namespace fs = std::filesystem;

std::uint64_t manifest_seed(const std::string& manifest_text) {
  try {
    const YAML::Node seed = YAML::Load(manifest_text)["run"]["seed"];
    return seed ? seed.as<std::uint64_t>() : 0;
  } catch (const YAML::Exception&) {
    return 0;
  }
}

}  // namespace

ComparedRun read_compared_run(const fs::path& dir, const std::vector<double>& thresholds,
                              std::optional<std::uint64_t> seed) {
  const auto files = checkpoints::generation_files(dir);
  if (files.empty())
    throw checkpoints::CheckpointError(dir.string() + ": no generation files (gen-N.h5): not a run directory, or a "
                                       "run that has not finished generation 0 yet");
  ComparedRun r;
  r.dir = dir.string();
  std::vector<double> skill_x, skill_y, predictor;
  double diversity = 0, wall = 0;
  r.reached.assign(thresholds.size(), {});
  for (const auto& file : files) {
    const checkpoints::StoredGeneration g = checkpoints::read_generation(file, false);
    if (r.generations.empty() && !seed) seed = manifest_seed(g.run.manifest_text);
    const scheduler::GenerationRecord& rec = g.record;
    r.generations.push_back(rec.generation);
    r.capability.push_back(rec.best_model_test);
    wall += rec.seconds;
    diversity += rec.diversity;
    if (rec.generation > 0) skill_x.push_back(rec.generation), skill_y.push_back(rec.design_skill);
    // NaN where a generation had too few predictions to correlate (checkpoints/FORMAT.md): left out.
    if (const auto p = checkpoints::read_generation_real(file, "predictor_rank_correlation"); p && std::isfinite(*p))
      predictor.push_back(*p);
    for (std::size_t t = 0; t < thresholds.size(); ++t)
      if (!r.reached[t] && rec.best_model_test >= thresholds[t])
        r.reached[t] = Reached{rec.generation, rec.model_seconds, wall};
    r.model_seconds = rec.model_seconds;
  }
  r.seed = seed.value_or(0);
  r.wall_seconds = wall;
  r.final_test = r.capability.back();
  std::vector<double> x(r.generations.begin(), r.generations.end());
  r.area = normalised_area(x, r.capability);
  if (skill_x.size() >= 2) r.design_skill_slope = least_squares_slope(skill_x, skill_y);
  r.diversity = diversity / static_cast<double>(files.size());
  if (!predictor.empty()) {
    double sum = 0;
    for (double p : predictor) sum += p;
    r.predictor = sum / static_cast<double>(predictor.size());
  }
  return r;
}

std::vector<Metric> compare_metrics(const std::vector<double>& thresholds) {
  using R = const ComparedRun&;
  std::vector<Metric> m = {
      {"final_test", "final hidden test of the best-by-validation model", true, false, 4,
       [](R r) -> std::optional<double> { return r.final_test; }},
      {"capability_area", "area under the capability curve (normalised)", true, false, 4,
       [](R r) -> std::optional<double> { return r.area; }},
      {"design_skill_slope", "design-skill slope per generation", true, false, 5,
       [](R r) { return r.design_skill_slope; }},
      {"diversity", "diversity (mean over generations)", true, false, 3,
       [](R r) -> std::optional<double> { return r.diversity; }},
      {"predictor_rank_correlation", "predictor quality (mean rank correlation)", true, false, 3,
       [](R r) { return r.predictor; }},
      {"model_seconds", "compute, estimated (model-seconds)", false, false, -4,
       [](R r) -> std::optional<double> { return r.model_seconds; }},
      {"wall_seconds", "wall time (s)", false, true, -4, [](R r) -> std::optional<double> { return r.wall_seconds; }},
  };
  for (std::size_t t = 0; t < thresholds.size(); ++t) {
    const std::string at = threshold_text(thresholds[t]);
    m.push_back({"generations_to_" + at, "generations to reach " + at, false, false, 2, [t](R r) {
                   return r.reached[t] ? std::optional<double>(r.reached[t]->generation) : std::nullopt;
                 }, true});
    m.push_back({"model_seconds_to_" + at, "compute to reach " + at + " (model-seconds)", false, false, -4, [t](R r) {
                   return r.reached[t] ? std::optional<double>(r.reached[t]->model_seconds) : std::nullopt;
                 }, true});
    m.push_back({"wall_seconds_to_" + at, "wall time to reach " + at + " (s)", false, true, -4, [t](R r) {
                   return r.reached[t] ? std::optional<double>(r.reached[t]->wall_seconds) : std::nullopt;
                 }, true});
  }
  return m;
}

std::string threshold_text(double threshold) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", threshold);
  return buf;
}

std::vector<ComparedArm> read_compared_arms(const std::vector<std::string>& paths,
                                            const std::vector<double>& thresholds,
                                            std::string* study_baseline) {
  std::vector<ComparedArm> arms;
  auto arm_named = [&arms](const std::string& name, const std::string& source) -> ComparedArm& {
    for (auto& a : arms)
      if (a.name == name) {
        if (a.source != source)
          throw std::invalid_argument("two arms are named '" + name + "' (" + a.source + " and " + source +
                                      "); compare them in separate calls, or rename a study's arm");
        return a;
      }
    arms.push_back({name, source, {}, {}});
    return arms.back();
  };
  for (const auto& path : paths) {
    const fs::path index = fs::path(path) / kStudyIndexFile;
    if (!fs::exists(index)) {  // a plain run: its own arm, named by its directory (by its path when taken)
      fs::path normal = fs::path(path).lexically_normal();
      if (normal.filename().empty()) normal = normal.parent_path();
      std::string name = normal.filename().string();
      for (const auto& other : arms)
        if (other.name == name) name = normal.string();
      ComparedArm& arm = arm_named(name, path);
      arm.runs.push_back(read_compared_run(path, thresholds, std::nullopt));
      continue;
    }
    std::ifstream in(index);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream row(line);
      std::string name, seed, dir, baseline;
      const bool parsed = std::getline(row, name, '\t') && std::getline(row, seed, '\t') &&
                          std::getline(row, dir, '\t') && std::getline(row, baseline, '\t') && !seed.empty() &&
                          seed.find_first_not_of("0123456789") == std::string::npos && seed.size() <= 19;
      if (!parsed)
        throw checkpoints::CheckpointError(index.string() +
                                           ": a line is not 'arm<TAB>seed<TAB>directory<TAB>baseline'");
      if (baseline == "1" && study_baseline && study_baseline->empty()) *study_baseline = name;
      ComparedArm& arm = arm_named(name, path);
      const fs::path run = fs::path(path) / dir;
      if (checkpoints::generation_files(run).empty()) {
        arm.missing.push_back(run.string());
        continue;
      }
      arm.runs.push_back(read_compared_run(run, thresholds, std::stoull(seed)));
    }
  }
  return arms;
}

ArmSummary summarise_arm(const ComparedArm& arm, const ComparedArm& baseline, const std::vector<Metric>& metrics) {
  ArmSummary s;
  for (const Metric& m : metrics) {
    std::vector<double> values;
    for (const auto& r : arm.runs)
      if (const auto v = m.get(r)) values.push_back(*v);
    s.estimates.push_back(bootstrap_mean(values));
    // Paired by seed: the baseline's value for each of this arm's seeds.
    std::vector<std::optional<double>> mine, theirs;
    for (const auto& r : arm.runs) {
      const auto it = std::find_if(baseline.runs.begin(), baseline.runs.end(),
                                   [&](const ComparedRun& b) { return b.seed == r.seed; });
      mine.push_back(m.get(r));
      theirs.push_back(it == baseline.runs.end() ? std::nullopt : m.get(*it));
    }
    s.paired.push_back(paired_comparison(mine, theirs, m.higher_is_better));
  }
  return s;
}

namespace {

struct CompareArgs {
  std::vector<std::string> paths;
  bool json = false;
  std::string html, baseline, thresholds = "0.85,0.90";
};

// "0.85,0.9" -> {0.85, 0.9}; each in (0, 1]. Empty text: no thresholds.
std::optional<std::vector<double>> parse_thresholds(const std::string& text) {
  std::vector<double> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    std::size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      return std::nullopt;
    }
    if (used != item.size() || !(v > 0 && v <= 1)) return std::nullopt;
    out.push_back(v);
  }
  return out;
}

int compare_main(const CompareArgs& a) {
  const auto thresholds = parse_thresholds(a.thresholds);
  if (!thresholds) {
    logf(LogLevel::Error,
         "--thresholds '%s': expected accuracies in (0, 1] separated by commas, e.g. 0.85,0.90",
         a.thresholds.c_str());
    return kExitUsage;
  }
  Comparison c;
  c.thresholds = *thresholds;
  c.metrics = compare_metrics(c.thresholds);
  std::string study_baseline;
  try {
    c.arms = read_compared_arms(a.paths, c.thresholds, &study_baseline);
  } catch (const std::invalid_argument& e) {
    log_error(e.what());
    return kExitUsage;
  }
  std::erase_if(c.arms, [](const ComparedArm& arm) {
    if (!arm.runs.empty()) return false;
    logf(LogLevel::Error, "arm %s has no run with a generation yet; left out", arm.name.c_str());
    return true;
  });
  if (c.arms.empty()) {
    logf(LogLevel::Error, "no run with a lineage among %zu path(s)", a.paths.size());
    return kExitBadInput;
  }
  const std::string baseline = a.baseline.empty() ? study_baseline : a.baseline;
  if (!baseline.empty()) {
    const auto it =
        std::find_if(c.arms.begin(), c.arms.end(), [&](const ComparedArm& x) { return x.name == baseline; });
    if (it == c.arms.end() && a.baseline.empty()) {
      logf(LogLevel::Error,
           "the study's baseline %s has no run yet; the baseline is %s instead",
           baseline.c_str(), c.arms.front().name.c_str());
    } else if (it == c.arms.end()) {
      std::string names;
      for (const auto& arm : c.arms) names += (names.empty() ? "" : ", ") + arm.name;
      logf(LogLevel::Error, "--baseline %s: no such arm; the arms are %s", baseline.c_str(),
                   names.c_str());
      return kExitUsage;
    } else {
      c.baseline = static_cast<std::size_t>(it - c.arms.begin());
    }
  }
  for (const auto& arm : c.arms) c.summaries.push_back(summarise_arm(arm, c.arms[c.baseline], c.metrics));
  std::fputs((a.json ? comparison_json(c) : comparison_text(c)).c_str(), stdout);
  if (!a.html.empty()) {
    if (!html::write_page(comparison_html(c), a.html, "compare")) return kExitFailure;
    std::fprintf(a.json ? stderr : stdout, "wrote %s\n", a.html.c_str());
  }
  return kExitOk;
}

}  // namespace

void add_compare_command(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "Compare runs and studies: one arm per study arm (a directory written by `rsi study` expands to its\n"
      "arms and seeds) or per plain run directory. Per arm, over its seeds (mean and 95% bootstrap interval,\n"
      "2000 resamples with a fixed seed: the same lineages give the same numbers):\n"
      "  final hidden-test accuracy of the best-by-validation model (best_model_test of the last generation);\n"
      "  generations, compute (estimated model-seconds) and wall time to first reach each threshold of it\n"
      "  ('not reached' when never; n counts the seeds that reached it);\n"
      "  area under that capability curve over the generations, divided by their span (its mean height);\n"
      "  design-skill slope (least squares over the designed generations); mean diversity; predictor\n"
      "  quality (mean predictor_rank_correlation, 'n/a' for lineages without it); total compute and wall time.\n"
      "Against the baseline arm (--baseline, else the study's, else the first): differences paired by seed,\n"
      "their mean and interval, and the seeds won/lost/tied (higher is better, lower for times and compute).\n"
      "Wall times are measured, not deterministic: the JSON keys of every one contain 'wall'.\n"
      "Exit code 3 when a path holds no lineage, 2 for an unknown baseline or bad thresholds.");
  cmd->add_option("runs", a->paths, "Run directories and study directories (rsi study --out)")
      ->required()
      ->check(existing_directory());
  cmd->add_flag("--json", a->json, "Print everything (per run, per arm, against the baseline) as one JSON object");
  cmd->add_option("--html", a->html,
                  "Also write one self-contained HTML page (no network, no script): the table and the arms'\n"
                  "capability curves overlaid (median over seeds, min-max band)");
  cmd->add_option("--baseline", a->baseline, "The arm the others are compared with (default: the study's baseline)");
  cmd->add_option("--thresholds", a->thresholds,
                  "Hidden-test accuracies to time the runs at, comma-separated (default 0.85,0.90)");
  cmd->callback([&run, a] {
    run = [a] { return guarded("compare", [&] { return compare_main(*a); }); };
  });
}

}  // namespace rsi::runtime
