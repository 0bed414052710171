// commit_generation (scheduler/commit.h): the coordinator's population commit, checked without MPI,
// workers or files — counts, the slow-down red line, truncation and aging selection, and the
// statistics a GenerationRecord carries.
#include <gtest/gtest.h>

#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/scheduler/commit.h"

namespace {

using rsi::scheduler::Commit;
using rsi::scheduler::CommitSettings;
using rsi::scheduler::ModelRecord;
using rsi::scheduler::SelectionKind;

ModelRecord model(std::uint64_t id, double val, double test, std::vector<std::uint64_t> parents = {},
                  double parent_val = 0.0, std::uint64_t lineage = 1) {
  ModelRecord m;
  m.id = id;
  m.metrics.val_accuracy = val;
  m.metrics.test_accuracy = test;
  m.parents = std::move(parents);
  m.parent_val_accuracy = parent_val;
  m.designer_lineage = lineage;
  return m;
}

ModelRecord with_status(ModelRecord m, ModelRecord::Status s, const std::string& why) {
  m.status = s;
  m.failure = why;
  return m;
}

// Every model has the same one-layer genome (diversity 0): diversity itself is design.cpp's.
struct Genomes {
  rsi::models::Genome genome = rsi::models::from_yaml("architecture: [{dense: {units: 10}}]\n");
  std::function<const rsi::models::Genome&(std::uint64_t)> of() {
    return [this](std::uint64_t) -> const rsi::models::Genome& { return genome; };
  }
};

TEST(Commit, CountsSelectsAndSummarises) {
  Genomes g;
  const std::vector<ModelRecord> population = {model(1, 0.80, 0.79), model(2, 0.70, 0.69)};
  std::vector<ModelRecord> children = {
      model(5, 0.85, 0.82, {1}, 0.80, 1),                                               // +0.05, lineage 1
      with_status(model(4, 0, 0, {2}), ModelRecord::Status::Failed, "diverged"),        // failed
      model(3, 0.60, 0.58, {2}, 0.70, 2),                                               // -0.10, lineage 2
      with_status(model(6, 0, 0, {1}), ModelRecord::Status::Refused, "red line: FLOPs"),  // refused at design
  };
  CommitSettings s;
  s.population_size = 2;
  const Commit c = rsi::scheduler::commit_generation(3, children, population, g.of(), s, "t");
  const auto& r = c.record;
  EXPECT_EQ(r.generation, 3);
  EXPECT_EQ(r.trained, 2);
  EXPECT_EQ(r.failed, 1);
  EXPECT_EQ(r.refused, 1);
  ASSERT_EQ(r.children.size(), 4u);  // in id order, never arrival order
  for (std::size_t i = 0; i < r.children.size(); ++i) EXPECT_EQ(r.children[i].id, 3 + i);
  // Truncation keeps the two best of the old population and the trained children: 5 and 1.
  EXPECT_EQ(r.population, (std::vector<std::uint64_t>{1, 5}));
  ASSERT_EQ(c.population.size(), 2u);
  EXPECT_EQ(c.population[1].id, 5u);
  EXPECT_EQ(r.best_id, 5u);
  EXPECT_DOUBLE_EQ(r.best_val, 0.85);
  EXPECT_DOUBLE_EQ(r.best_model_test, 0.82);
  EXPECT_DOUBLE_EQ(r.best_test, 0.82);
  EXPECT_DOUBLE_EQ(r.median_val, (0.80 + 0.85) / 2);
  EXPECT_DOUBLE_EQ(r.gain, 0.85 - 0.80);
  EXPECT_DOUBLE_EQ(r.design_skill, ((0.85 - 0.80) + (0.60 - 0.70)) / 2);  // the mean of the children's gains
  EXPECT_DOUBLE_EQ(r.design_skill_by_lineage.at(1), 0.85 - 0.80);
  EXPECT_DOUBLE_EQ(r.design_skill_by_lineage.at(2), 0.60 - 0.70);
  EXPECT_DOUBLE_EQ(r.goodhart_gap, 0.85 - 0.82);
  EXPECT_EQ(r.pseudo_label_accuracy, -1.0);  // no child measured one
  EXPECT_TRUE(c.events.empty());
}

TEST(Commit, SlowDownRedLineRefusesTheJumpButKeepsItsMetrics) {
  Genomes g;
  const std::vector<ModelRecord> population = {model(1, 0.80, 0.79)};
  CommitSettings s;
  s.population_size = 2;
  s.max_gain_per_generation = 0.02;
  const Commit c = rsi::scheduler::commit_generation(
      1, {model(2, 0.90, 0.88, {1}, 0.80), model(3, 0.81, 0.80, {1}, 0.80)}, population, g.of(), s, "when");
  EXPECT_EQ(c.record.refused, 1);
  EXPECT_EQ(c.record.trained, 1);
  EXPECT_EQ(c.record.children[0].status, ModelRecord::Status::Refused);
  EXPECT_DOUBLE_EQ(c.record.children[0].metrics.val_accuracy, 0.90);  // on record, not admitted
  EXPECT_NE(c.record.children[0].failure.find("max_gain_per_generation"), std::string::npos);
  EXPECT_EQ(c.record.population, (std::vector<std::uint64_t>{1, 3}));
  ASSERT_EQ(c.events.size(), 1u);
  EXPECT_EQ(c.events[0].kind, "red_line");
  EXPECT_EQ(c.events[0].model_id, 2u);
  EXPECT_EQ(c.events[0].when, "when");
}

TEST(Commit, AgingKeepsTheNewestAfterGenerationZero) {
  Genomes g;
  const std::vector<ModelRecord> population = {model(1, 0.95, 0.9), model(2, 0.90, 0.9)};
  CommitSettings s;
  s.selection = SelectionKind::Aging;
  s.population_size = 2;
  const Commit c = rsi::scheduler::commit_generation(
      4, {model(3, 0.50, 0.5, {1}, 0.95), model(4, 0.40, 0.4, {2}, 0.90)}, population, g.of(), s, "t");
  EXPECT_EQ(c.record.population, (std::vector<std::uint64_t>{3, 4}));  // the oldest leave, however good
  EXPECT_EQ(c.record.best_id, 3u);
  EXPECT_DOUBLE_EQ(c.record.gain, 0.50 - 0.95);
}

TEST(Commit, GenerationZeroHasNoGainAndEverySeedFailingIsAnError) {
  Genomes g;
  CommitSettings s;
  const Commit c = rsi::scheduler::commit_generation(0, {model(1, 0.7, 0.6), model(2, 0.8, 0.7)}, {}, g.of(), s, "t");
  EXPECT_EQ(c.record.gain, 0.0);
  EXPECT_EQ(c.record.design_skill, 0.0);  // seeds have no parents
  EXPECT_EQ(c.record.population, (std::vector<std::uint64_t>{1, 2}));
  EXPECT_THROW(rsi::scheduler::commit_generation(
                   0, {with_status(model(1, 0, 0), ModelRecord::Status::Failed, "bad seed")}, {}, g.of(), s, "t"),
               std::runtime_error);
}

}  // namespace
