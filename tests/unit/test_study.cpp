// Study files (rsi study) and the statistics of rsi compare: each bad study file gets the message it
// must produce (file:line:column, the arm and key, the manifest loader's own words, a did-you-mean),
// a run's manifest carries the arm's overrides and the study's seed, and the bootstrap intervals and
// paired comparisons are deterministic and right on cases worked by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "rsi/runtime/study.h"

using rsi::runtime::bootstrap_mean;
using rsi::runtime::least_squares_slope;
using rsi::runtime::normalised_area;
using rsi::runtime::paired_comparison;
using rsi::runtime::parse_study;
using rsi::runtime::Study;
using rsi::runtime::StudyError;

namespace {

const std::string kBase = "manifest: " + std::string(RSI_SOURCE_DIR) + "/tests/manifests/surrogate-small.yaml\n";

Study parse(const std::string& text) { return parse_study(text, "study.yaml", "/nonexistent"); }

// The message parse() throws (any ManifestError), or "" when the study is valid.
std::string error_of(const std::string& text) {
  try {
    parse(text);
  } catch (const rsi::runtime::ManifestError& e) {
    return e.what();
  }
  return "";
}

TEST(StudyFile, ValidStudyWithDefaults) {
  const Study s = parse(kBase +
                        "arms:\n"
                        "  - name: plain\n"
                        "  - name: tournament\n"
                        "    overrides: {selection.kind: tournament, population.children: 8}\n"
                        "seeds: {count: 3, first: 5}\n");
  EXPECT_EQ(s.name, "study");  // the file's stem
  ASSERT_EQ(s.arms.size(), 2u);
  EXPECT_EQ(s.baseline, 0u);  // the first arm
  EXPECT_TRUE(s.arms[0].overrides.empty());
  ASSERT_EQ(s.arms[1].overrides.size(), 2u);
  EXPECT_EQ(s.arms[1].overrides[0].key, "selection.kind");
  EXPECT_EQ(s.arms[1].overrides[0].position, "study.yaml:5:17");
  EXPECT_EQ(s.seeds, (std::vector<std::uint64_t>{5, 6, 7}));
  EXPECT_EQ(s.ranks, 1);
}

TEST(StudyFile, ShippedStudiesValidate) {
  for (const auto& entry : std::filesystem::directory_iterator(std::string(RSI_SOURCE_DIR) + "/experiments/studies")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    const Study s = rsi::runtime::load_study(entry.path().string());
    EXPECT_FALSE(s.arms.empty());
  }
}

TEST(StudyFile, RunConfigCarriesOverridesSeedAndDirectory) {
  const Study s = parse(kBase + "name: sel\nbaseline: t\nranks: 2\nseeds: [11, 3]\narms:\n  - name: a\n"
                                "  - name: t\n    overrides:\n      selection.kind: tournament\n"
                                "      selection.tournament_size: 3\n");
  EXPECT_EQ(s.baseline, 1u);
  EXPECT_EQ(s.ranks, 2);
  EXPECT_EQ(s.seeds, (std::vector<std::uint64_t>{11, 3}));
  const auto base = rsi::runtime::study_run_config(s, 0, 11, "/tmp/x/a/seed-11");
  const auto arm = rsi::runtime::study_run_config(s, 1, 3, "/tmp/x/t/seed-3");
  EXPECT_EQ(base.loop.seed, 11u);
  EXPECT_EQ(base.output_directory, "/tmp/x/a/seed-11");
  EXPECT_EQ(base.name, "sel.a.seed-11");
  EXPECT_EQ(rsi::scheduler::selection_name(base.loop.selection), std::string("truncation"));
  EXPECT_EQ(arm.loop.seed, 3u);
  EXPECT_EQ(rsi::scheduler::selection_name(arm.loop.selection), std::string("tournament"));
  EXPECT_EQ(arm.loop.tournament_size, 3);
  EXPECT_EQ(arm.loop.population_size, base.loop.population_size);  // untouched keys keep the base's values
  EXPECT_EQ(arm.loop.seeds.size(), base.loop.seeds.size());       // seed genomes found relative to the base
}

TEST(StudyFile, ErrorsNamePositionArmKeyAndMeaning) {
  const std::string seeds = "seeds: [0, 1]\n";
  const std::pair<std::string, std::string> cases[] = {
      {kBase + "arm:\n  - name: a\n" + seeds,
       "study.yaml:2:1: study: unknown key 'arm' (did you mean 'arms'?); valid keys: name, manifest, arms, baseline, "
       "seeds, ranks"},
      {kBase + "arms:\n  - name: a\n    overrides: {selction.kind: tournament}\n" + seeds,
       "study.yaml:4:17: arm 'a', override 'selction.kind': manifest: unknown key 'selction' (did you mean "
       "'selection'?)"},
      {kBase + "arms:\n  - name: a\n  - name: b\n    overrides:\n      selection.kind: best\n" + seeds,
       "study.yaml:6:7: arm 'b', override 'selection.kind': selection.kind: expected one of truncation, tournament, "
       "aging, got 'best'"},
      {kBase + "arms:\n  - name: a\n    overrides:\n      population.children: \"8\"\n" + seeds,
       "study.yaml:5:7: arm 'a', override 'population.children': population.children: expected an integer in "
       "[1, 10000], got \"8\" (a quoted string)"},
      {kBase + "arms:\n  - name: a\n    overides: {}\n" + seeds,
       "study.yaml:4:5: study.arms[0]: unknown key 'overides' (did you mean 'overrides'?)"},
      {kBase + "arms: [{name: a}]\nseeds: {count: 2, frist: 1}\n",
       "study.yaml:3:19: study.seeds: unknown key 'frist' (did you mean 'first'?)"},
      {kBase + "arms: [{name: a}]\nseeds: [1, -2]\n", "study.yaml:3:12: study.seeds: expected a non-negative integer"},
      {kBase + "arms: [{name: a}]\nseeds: [4, 4]\n", "study.yaml:3:12: study.seeds: seed 4 is listed twice"},
      {kBase + "arms: [{name: a}, {name: a}]\n" + seeds, "study.arms: two arms are named 'a'"},
      {kBase + "arms: [{name: a, overrides: {run.seed: 3}}]\n" + seeds,
       "study.yaml:2:30: arm 'a', override 'run.seed': the study sets it for every run"},
      {kBase + "arms: [{name: \"a/b\"}]\n" + seeds, "study.yaml:2:15: study.arms[0].name: expected a name of letters"},
      {kBase + "baseline: c\narms: [{name: a}]\n" + seeds,
       "study.yaml:2:11: study.baseline: no arm is named 'c'; the arms are a"},
      {kBase + "arms: [{name: a, overrides: {task.labeled: 30000, task.unlabeled: 30000}}]\n" + seeds,
       "study.yaml:2:8: arm 'a': its overrides together make an invalid manifest: task: labeled + unlabeled + "
       "validation exceed the 60000 training images"},
      {kBase + "seeds: [1]\n", "study.yaml: study: missing 'arms'"},
      {"manifest: nowhere.yaml\narms: [{name: a}]\n" + seeds, "nowhere.yaml: cannot open the manifest"},
      {kBase + "arms: [{name: a}]\n" + seeds + "ranks: 0\n", "study.yaml:4:8: study.ranks: expected an integer in"},
  };
  for (const auto& [text, expected] : cases) {
    const std::string got = error_of(text);
    EXPECT_NE(got.find(expected), std::string::npos) << "study:\n" << text << "\nexpected: " << expected
                                                     << "\ngot: " << got;
  }
}

TEST(StudyStatistics, BootstrapIsDeterministicAndBracketsTheMean) {
  const std::vector<double> v = {0.81, 0.84, 0.79, 0.88, 0.85};
  const auto a = bootstrap_mean(v), b = bootstrap_mean(v);
  EXPECT_EQ(a.n, 5);
  EXPECT_DOUBLE_EQ(a.mean, 0.834);
  EXPECT_EQ(a.low, b.low);  // bit for bit: a fixed seed and no distribution object
  EXPECT_EQ(a.high, b.high);
  EXPECT_LT(a.low, a.mean);
  EXPECT_GT(a.high, a.mean);
  EXPECT_GE(a.low, 0.79);  // a mean of resamples lies within the values
  EXPECT_LE(a.high, 0.88);
  const auto other_seed = bootstrap_mean(v, 0.95, 2000, 7);
  EXPECT_NE(other_seed.low == a.low && other_seed.high == a.high, true);
  const auto narrow = bootstrap_mean(v, 0.5);
  EXPECT_GT(narrow.low, a.low);  // a lower confidence gives a narrower interval
  EXPECT_LT(narrow.high, a.high);
  const auto constant = bootstrap_mean({0.5, 0.5, 0.5});
  EXPECT_EQ(constant.low, 0.5);
  EXPECT_EQ(constant.high, 0.5);
  const auto one = bootstrap_mean({0.7});
  EXPECT_EQ(one.low, 0.7);
  const auto none = bootstrap_mean({});
  EXPECT_EQ(none.n, 0);
  EXPECT_TRUE(std::isnan(none.mean));
}

TEST(StudyStatistics, PairedComparisonBySeed) {
  // Seeds 0..4; the baseline lacks seed 3 and the arm lacks seed 4: three pairs remain.
  const std::vector<std::optional<double>> arm = {0.90, 0.85, 0.80, 0.70, std::nullopt};
  const std::vector<std::optional<double>> base = {0.88, 0.85, 0.83, std::nullopt, 0.9};
  const auto higher = paired_comparison(arm, base, true);
  EXPECT_EQ(higher.difference.n, 3);
  EXPECT_NEAR(higher.difference.mean, (0.02 + 0.0 - 0.03) / 3, 1e-12);
  EXPECT_EQ(higher.wins, 1);
  EXPECT_EQ(higher.losses, 1);
  EXPECT_EQ(higher.ties, 1);
  EXPECT_LE(higher.difference.low, higher.difference.mean);
  EXPECT_GE(higher.difference.high, higher.difference.mean);
  const auto lower = paired_comparison(arm, base, false);  // times: lower wins
  EXPECT_EQ(lower.wins, 1);
  EXPECT_EQ(lower.losses, 1);
  EXPECT_EQ(lower.difference.mean, higher.difference.mean);
  const auto same = paired_comparison(arm, base, true);
  EXPECT_EQ(same.difference.low, higher.difference.low);
  // Every seed better by exactly 0.01: the interval is that point.
  const auto shifted = paired_comparison({0.51, 0.61, 0.71}, {0.5, 0.6, 0.7}, true);
  EXPECT_EQ(shifted.wins, 3);
  EXPECT_NEAR(shifted.difference.low, 0.01, 1e-12);
  EXPECT_NEAR(shifted.difference.high, 0.01, 1e-12);
}

TEST(StudyStatistics, SlopeAndArea) {
  EXPECT_DOUBLE_EQ(least_squares_slope({1, 2, 3, 4}, {0.5, 0.7, 0.9, 1.1}), 0.2);
  EXPECT_DOUBLE_EQ(least_squares_slope({1, 2, 3}, {1, 3, 2}), 0.5);
  EXPECT_EQ(least_squares_slope({1}, {4}), 0.0);
  EXPECT_DOUBLE_EQ(normalised_area({0, 1, 2}, {0.5, 0.5, 0.5}), 0.5);
  EXPECT_DOUBLE_EQ(normalised_area({0, 1, 2}, {0.0, 0.5, 1.0}), 0.5);
  EXPECT_DOUBLE_EQ(normalised_area({0, 1, 3}, {0.0, 1.0, 1.0}), (0.5 + 2.0) / 3);
  EXPECT_DOUBLE_EQ(normalised_area({4}, {0.8}), 0.8);
  EXPECT_TRUE(std::isnan(normalised_area({}, {})));
}

}  // namespace
