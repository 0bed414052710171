// rsi compare's data: what is read of each run (compare_command.cpp) and what is printed, written
// as JSON or drawn on the HTML page (compare_output.cpp). Internal to runtime/.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "rsi/runtime/study.h"

namespace rsi::runtime {

// When a run first reached a threshold of hidden-test accuracy (of its best-by-validation model).
struct Reached {
  int generation = 0;
  double model_seconds = 0;  // estimated compute spent by then (deterministic)
  double wall_seconds = 0;   // sum of the generations' wall times up to it (not deterministic)
};

struct ComparedRun {
  std::string dir;
  std::uint64_t seed = 0;
  std::vector<int> generations;   // in order
  std::vector<double> capability;  // best_model_test of each generation
  double final_test = 0, area = 0, diversity = 0, model_seconds = 0, wall_seconds = 0;
  std::optional<double> design_skill_slope;  // needs two designed generations
  std::optional<double> predictor;           // mean predictor_rank_correlation, when the lineage has it
  std::vector<std::optional<Reached>> reached;  // one per threshold
};

struct ComparedArm {
  std::string name, source;        // source: the study directory or run directory it came from
  std::vector<ComparedRun> runs;   // in the study's seed order
  std::vector<std::string> missing;  // run directories of the study without a generation yet
};

// One figure of a run, compared across arms. `wall`: not deterministic (JSON key names hold "wall").
struct Metric {
  std::string key, label;
  bool higher_is_better = true;
  bool wall = false;
  int precision = 4;
  std::function<std::optional<double>(const ComparedRun&)> get;
  bool threshold = false;  // a "to reach" figure: missing where the run never reached it
};

struct ArmSummary {
  std::vector<Estimate> estimates;          // per metric, over the arm's seeds
  std::vector<PairedComparison> paired;     // per metric, against the baseline by seed
};

std::string threshold_text(double threshold);
std::vector<Metric> compare_metrics(const std::vector<double>& thresholds);
// Throws CheckpointError for a directory without a lineage; `seed` (a study's) or else run.seed of
// the lineage's manifest.
ComparedRun read_compared_run(const std::filesystem::path& dir, const std::vector<double>& thresholds,
                              std::optional<std::uint64_t> seed);
// Arms in the order given (a study's in its index order); `study_baseline` gets the first study's
// baseline arm. Throws std::invalid_argument for two different sources of one arm name.
std::vector<ComparedArm> read_compared_arms(const std::vector<std::string>& paths,
                                            const std::vector<double>& thresholds, std::string* study_baseline);
ArmSummary summarise_arm(const ComparedArm& arm, const ComparedArm& baseline, const std::vector<Metric>& metrics);

struct Comparison {
  std::vector<double> thresholds;
  std::vector<Metric> metrics;
  std::vector<ComparedArm> arms;
  std::vector<ArmSummary> summaries;  // per arm
  std::size_t baseline = 0;
};
std::string comparison_text(const Comparison& c);
std::string comparison_json(const Comparison& c);
std::string comparison_html(const Comparison& c);

}  // namespace rsi::runtime
