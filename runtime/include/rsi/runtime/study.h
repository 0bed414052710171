// Studies: many runs of one base manifest, arms (sets of manifest overrides) x seeds, and the
// statistics that compare the arms (`rsi study`, `rsi compare`; the file format is in
// runtime/README.md, "Study files", and experiments/README.md).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rsi/runtime/manifest.h"

namespace rsi::runtime {

// A study file that does not validate, or an arm whose overrides make an invalid manifest: the
// message names the study file with line:column, the arm and the key.
struct StudyError : ManifestError {
  using ManifestError::ManifestError;
};

struct StudyOverride {
  std::string key;       // dotted manifest key, e.g. "selection.kind"
  std::string value;     // the value as YAML text (flow style), applied to the manifest's tree
  std::string position;  // "study.yaml:12:7" of the key in the study file
};

struct StudyArm {
  std::string name;
  std::vector<StudyOverride> overrides;
  std::string position;  // of the arm in the study file
};

struct Study {
  std::string name;            // default: the study file's stem
  std::string path;            // the study file
  std::string text;            // its text
  std::string manifest_path;   // the base manifest (relative paths: to the study file's folder)
  std::string manifest_text;
  std::vector<StudyArm> arms;  // in the file's order
  std::size_t baseline = 0;    // index into arms
  std::vector<std::uint64_t> seeds;
  int ranks = 1;               // MPI ranks per run
};

// Files of a study directory (rsi study writes them, rsi compare reads the index).
inline constexpr const char* kStudyIndexFile = "study-index.tsv";  // arm, seed, directory, baseline (1/0)
inline constexpr const char* kStudySourceFile = "study-source.yaml";  // the study file's text
inline constexpr const char* kStudyDoneFile = "study-run.done";  // in a run directory: exited 0, for this manifest

// Reads and validates a study file: its own keys (unknown ones with a did-you-mean), the base
// manifest, and every arm's overrides applied to it (each checked as the manifest loader checks a
// key). Throws StudyError (or ManifestError for the base manifest itself).
Study parse_study(const std::string& text, const std::string& source, const std::string& base_dir);
Study load_study(const std::string& path);

// The run of one arm and seed: the base manifest's tree with the arm's overrides, run.name
// "<study>.<arm>.seed-<s>", run.seed and output.directory set, parsed by the manifest loader.
RunConfig study_run_config(const Study& study, std::size_t arm, std::uint64_t seed, const std::string& run_dir);

// ---- statistics (rsi compare) ----

// The mean of `values` and a percentile bootstrap confidence interval for it: `resamples`
// resamples with replacement drawn by a fixed-seed generator, so the same values give the same
// interval on every machine. Empty values: n = 0 and NaNs.
struct Estimate {
  int n = 0;
  double mean = 0, low = 0, high = 0;
};
inline constexpr int kBootstrapResamples = 2000;
inline constexpr std::uint64_t kBootstrapSeed = 2000;
Estimate bootstrap_mean(const std::vector<double>& values, double confidence = 0.95,
                        int resamples = kBootstrapResamples, std::uint64_t seed = kBootstrapSeed);

// An arm against the baseline, paired by seed: the differences arm - baseline of the seeds both
// have (pairs with a missing side are dropped), their mean with a bootstrap interval, and how many
// seeds the arm won, lost and tied (higher_is_better says which direction wins).
struct PairedComparison {
  Estimate difference;
  int wins = 0, losses = 0, ties = 0;
};
PairedComparison paired_comparison(const std::vector<std::optional<double>>& arm,
                                   const std::vector<std::optional<double>>& baseline, bool higher_is_better,
                                   double confidence = 0.95);

// Least-squares slope of y over x (0 with fewer than two distinct x).
double least_squares_slope(const std::vector<double>& x, const std::vector<double>& y);

// Area under a curve sampled at increasing x, by the trapezoid rule, divided by the x span: the
// curve's mean height (the value itself for a single point; NaN for none).
double normalised_area(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace rsi::runtime
