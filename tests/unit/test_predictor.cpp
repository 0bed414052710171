// Tests of the self-improvement parts of the design step: the learned designer's predictor
// (scheduler/predictor.h), the designer's switches, deduplication and screening
// (scheduler/designer.h), multi-fidelity rungs and niche selection, all on the surrogate task.
//   build-dir/tests/test_predictor            (a few seconds)
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"
#include "rsi/models/genome.h"
#include "rsi/scheduler/commit.h"
#include "rsi/scheduler/design.h"
#include "rsi/scheduler/designer.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/predictor.h"
#include "rsi/scheduler/surrogate.h"
#include "seed_genomes.h"

namespace {

using rsi::models::Genome;
using rsi::scheduler::GenerationRecord;
using rsi::scheduler::LoopConfig;
using rsi::scheduler::MemorySink;
using rsi::scheduler::ModelRecord;
using Records = std::vector<GenerationRecord>;


LoopConfig surrogate_config() {
  LoopConfig c;
  c.seed = 21;
  c.generations = 8;
  c.population_size = 4;
  c.children_per_generation = 8;
  c.selection = rsi::scheduler::SelectionKind::Tournament;
  c.tournament_size = 2;
  c.task.kind = rsi::scheduler::TaskSpec::Kind::Surrogate;
  c.task.surrogate_cost_seconds = 0.0;
  c.task.surrogate_noise = 0.01;
  c.limits.max_parameters = 1'000'000;
  c.limits.max_flops = 20'000'000;
  c.seeds = {seed_genome("linear")};
  return c;
}

LoopConfig everything_on() {
  LoopConfig c = surrogate_config();
  c.improvement.deduplicate = true;
  c.improvement.predictor.enabled = true;
  c.improvement.predictor.min_examples = 8;
  c.improvement.rungs.enabled = true;
  c.improvement.rungs.first_epochs = 1;
  c.improvement.niches.enabled = true;
  return c;
}

Records run(const LoopConfig& config, const rsi::scheduler::ResumeState* resume = nullptr) {
  auto world = rsi::collective::make_local_communicator();
  MemorySink sink;
  rsi::scheduler::run_loop(config, *world, {&sink}, {}, resume);
  return sink.records;
}

TEST(RankCorrelation, KnownValues) {
  EXPECT_DOUBLE_EQ(rsi::scheduler::rank_correlation({1, 2, 3, 4}, {10, 20, 30, 40}), 1.0);
  EXPECT_DOUBLE_EQ(rsi::scheduler::rank_correlation({1, 2, 3, 4}, {4, 3, 2, 1}), -1.0);
  // Ranks, not values: any increasing map is a perfect correlation.
  EXPECT_DOUBLE_EQ(rsi::scheduler::rank_correlation({0.1, 0.2, 5.0}, {1, 100, 101}), 1.0);
  // Ties take their average rank: x ranks (0.5, 0.5, 2), y ranks (0, 1, 2): 0.866...
  EXPECT_NEAR(rsi::scheduler::rank_correlation({1, 1, 2}, {1, 2, 3}), std::sqrt(3.0) / 2.0, 1e-12);
  EXPECT_TRUE(std::isnan(rsi::scheduler::rank_correlation({1, 2}, {1, 2}))) << "under 3 pairs";
  EXPECT_TRUE(std::isnan(rsi::scheduler::rank_correlation({1, 1, 1}, {1, 2, 3}))) << "a constant side";
}

TEST(GainPredictor, RecoversALinearRule) {
  // gain = 0.02 * (add_conv) - 0.01 * (lr step) + noise-free: the ranking of fresh designs follows it.
  const Genome linear = seed_genome("linear"), mlp = seed_genome("mlp");
  rsi::scheduler::GainPredictor p(1e-3);
  for (int i = 0; i < 40; ++i) {
    const std::string op = i % 2 ? "add_conv" : "lr";
    const double parent_val = 0.80 + 0.002 * i;
    p.add(rsi::scheduler::design_features(linear, parent_val, mlp, op), op == "add_conv" ? 0.02 : -0.01);
  }
  p.fit();
  EXPECT_EQ(p.examples(), 40u);
  const auto x_conv = rsi::scheduler::design_features(linear, 0.85, mlp, "add_conv");
  const auto x_lr = rsi::scheduler::design_features(linear, 0.85, mlp, "lr");
  EXPECT_NEAR(p.predict(x_conv), 0.02, 2e-3);
  EXPECT_NEAR(p.predict(x_lr), -0.01, 2e-3);
}

TEST(DesignHash, IgnoresTheDesignerGenesOnly) {
  Genome a = seed_genome("mlp");
  Genome b = a;
  b.designer["p.widen"] = 3.0;
  EXPECT_EQ(rsi::scheduler::design_hash(a), rsi::scheduler::design_hash(b));
  b.recipe.learning_rate *= 2;
  EXPECT_NE(rsi::scheduler::design_hash(a), rsi::scheduler::design_hash(b));
}

TEST(Designer, NoDesignIsTrainedTwiceAndDuplicatesAreCounted) {
  LoopConfig config = surrogate_config();
  config.improvement.deduplicate = true;
  const Records records = run(config);
  std::set<std::uint64_t> seen;
  int duplicates = 0;
  for (const GenerationRecord& g : records) {
    ASSERT_TRUE(g.improvement.has_value());
    duplicates += g.improvement->duplicates;
    for (const ModelRecord& m : g.children) {
      if (m.status == ModelRecord::Status::Refused) continue;
      EXPECT_TRUE(seen.insert(rsi::scheduler::design_hash(rsi::models::from_yaml(m.genome_yaml))).second)
          << "model " << m.id << " repeats an earlier design";
    }
  }
  // Without deduplication the same landscape repeats designs (so the check above means something).
  const Records plain = run(surrogate_config());
  std::set<std::uint64_t> plain_seen;
  int repeats = 0;
  for (const GenerationRecord& g : plain)
    for (const ModelRecord& m : g.children)
      repeats += !plain_seen.insert(rsi::scheduler::design_hash(rsi::models::from_yaml(m.genome_yaml))).second;
  EXPECT_GT(repeats, 0);
  EXPECT_GT(duplicates, 0);
}

TEST(Designer, FrozenGenesStayAtTheSeedsAndRandomDesignIgnoresThem) {
  LoopConfig config = surrogate_config();
  config.improvement.freeze_genes = true;
  const Records frozen = run(config);
  const auto seed_genes = rsi::models::from_yaml(frozen[0].children[0].genome_yaml).designer;
  for (const GenerationRecord& g : frozen)
    for (const ModelRecord& m : g.children) EXPECT_EQ(rsi::models::from_yaml(m.genome_yaml).designer, seed_genes);
  config.improvement.freeze_genes = false;
  config.improvement.strategy = rsi::scheduler::ImprovementConfig::Strategy::Random;
  const Records random = run(config);
  std::map<std::string, int> ops;
  for (const GenerationRecord& g : random)
    for (const ModelRecord& m : g.children) {
      EXPECT_EQ(rsi::models::from_yaml(m.genome_yaml).designer, seed_genes);
      ++ops[m.op];
    }
  EXPECT_GE(ops.size(), 8u) << "uniform operators: most of them are drawn in 64 designs";
}

TEST(Designer, ThePredictorScreensAndItsCorrelationIsRecorded) {
  const Records records = run(everything_on());
  int predicted = 0, screened = 0, correlations = 0;
  for (const GenerationRecord& g : records) {
    ASSERT_TRUE(g.improvement.has_value());
    for (const ModelRecord& m : g.children) {
      predicted += m.predicted_gain.has_value();
      screened += m.candidates > 1;
    }
    correlations += !std::isnan(g.improvement->predictor_rank_correlation);
    if (g.generation > 1) {
      EXPECT_GT(g.improvement->predictor_examples, 0) << "generation 1 learns from the seeds: none";
    }
  }
  EXPECT_GT(predicted, 0);
  EXPECT_GT(screened, 0);
  EXPECT_GT(correlations, 0);
  EXPECT_EQ(records.back().improvement->predictor_weights.size(), rsi::scheduler::design_feature_count());
}

// design.predictor.min_correlation: a generation is screened only when the mean of the last 3
// recorded correlations (each measured before the predictor learned from that generation) reaches
// the floor; the predictor keeps predicting meanwhile. A floor of 1 (perfect ranking only) screens
// nothing until it is met; the gate is a pure function of the lineage, so a resume follows it too.
TEST(Designer, ThePredictorScreensOnlyOnceItsCorrelationEarnsIt) {
  for (const double floor : {1.0, 0.0}) {
    LoopConfig config = everything_on();
    config.improvement.predictor.min_correlation = floor;
    const Records records = run(config);
    std::vector<double> recent;
    int predicted = 0, screened_generations = 0;
    for (const GenerationRecord& g : records) {
      double mean = -2.0;
      if (!recent.empty()) {
        mean = 0.0;
        for (double c : recent) mean += c;
        mean /= static_cast<double>(recent.size());
      }
      bool screened = false;
      for (const ModelRecord& m : g.children) {
        predicted += m.predicted_gain.has_value();
        screened |= m.candidates > 1;
      }
      SCOPED_TRACE("floor " + std::to_string(floor) + ", generation " + std::to_string(g.generation));
      if (screened) {
        EXPECT_GE(mean, floor) << "screened while the recent correlations averaged " << mean;
      }
      screened_generations += screened;
      if (const double c = g.improvement->predictor_rank_correlation; !std::isnan(c)) {
        recent.push_back(c);
        if (recent.size() > 3) recent.erase(recent.begin());
      }
    }
    EXPECT_GT(predicted, 0) << "gated, it still predicts (and is measured)";
    if (floor == 1.0) {
      EXPECT_EQ(screened_generations, 0);
    }
  }
}

// The predictor learns from validation only: the same lineage with every hidden-test figure
// changed teaches it the same weights and makes the designer propose the same children.
TEST(Designer, NoHiddenTestFigureReachesThePredictor) {
  const LoopConfig config = everything_on();
  const Records records = run(config);
  Records scrambled = records;
  for (GenerationRecord& g : scrambled)
    for (auto* models : {&g.children, &g.population_models})
      for (ModelRecord& m : *models) {
        m.metrics.test_accuracy = 1.0 - m.metrics.test_accuracy;
        m.metrics.test_loss += 7.0;
        for (double& c : m.metrics.test_per_class) c = 0.5 * c;
      }
  rsi::scheduler::Designer a(config), b(config);
  a.replay(records);
  b.replay(scrambled);
  std::map<std::uint64_t, Genome> genomes;
  for (const ModelRecord& m : records.back().population_models) genomes[m.id] = rsi::models::from_yaml(m.genome_yaml);
  std::uint64_t next_a = records.back().next_model_id, next_b = next_a;
  const auto da = a.design(99, next_a, records.back().population_models, genomes);
  const auto db = b.design(99, next_b, scrambled.back().population_models, genomes);
  ASSERT_EQ(da.children.size(), db.children.size());
  for (std::size_t i = 0; i < da.children.size(); ++i) {
    EXPECT_EQ(da.children[i].genome_yaml, db.children[i].genome_yaml);
    ASSERT_TRUE(da.children[i].predicted_gain && db.children[i].predicted_gain);
    EXPECT_EQ(*da.children[i].predicted_gain, *db.children[i].predicted_gain);
  }
}

TEST(Rungs, TheBestFractionTrainsOnAndEveryRungIsRecorded) {
  LoopConfig config = surrogate_config();
  config.improvement.rungs.enabled = true;
  config.improvement.rungs.first_epochs = 1;
  config.improvement.rungs.promote = 0.5;
  const Records records = run(config);
  for (const GenerationRecord& g : records) {
    SCOPED_TRACE("generation " + std::to_string(g.generation));
    std::vector<const ModelRecord*> trained;
    int promoted = 0;
    for (const ModelRecord& m : g.children) {
      if (!m.trained()) continue;
      trained.push_back(&m);
      const int epochs = rsi::models::from_yaml(m.genome_yaml).recipe.epochs;
      ASSERT_FALSE(m.rung_epochs.empty());
      EXPECT_EQ(m.rung_epochs.front(), std::min(epochs, 1));
      EXPECT_EQ(m.rung_epochs.size(), m.rung_val_accuracy.size());
      EXPECT_EQ(m.rung_val_accuracy.back(), m.metrics.val_accuracy) << "the last rung is the model's figure";
      if (m.rung_epochs.size() == 2) {
        ++promoted;
        EXPECT_EQ(m.rung_epochs.back(), epochs);
      }
    }
    // Promotion follows the first rung's validation: no promoted child ranks below one that was not
    // promoted but could have been.
    for (const ModelRecord* p : trained)
      for (const ModelRecord* q : trained)
        if (p->rung_epochs.size() == 2 && q->rung_epochs.size() == 1 &&
            rsi::models::from_yaml(q->genome_yaml).recipe.epochs > 1) {
          EXPECT_GE(p->rung_val_accuracy.front(), q->rung_val_accuracy.front());
        }
    EXPECT_LE(promoted, static_cast<int>((trained.size() + 1) / 2));
    ASSERT_TRUE(g.improvement.has_value());
    EXPECT_EQ(g.improvement->promoted, promoted);
    // Selection compares models trained in full only.
    for (const ModelRecord& m : g.population_models)
      EXPECT_TRUE(rsi::scheduler::trained_in_full(m)) << "model " << m.id << " stopped at a rung is in the population";
  }
}

TEST(Niches, SelectionKeepsTheBestOfEveryNicheFirst) {
  LoopConfig config = surrogate_config();
  config.population_size = 6;
  config.improvement.niches.enabled = true;
  const Records with = run(config);
  config.improvement.niches.enabled = false;
  const Records without = run(config);
  auto covered = [&](const GenerationRecord& g) {
    std::set<int> niches;
    for (const ModelRecord& m : g.population_models)
      niches.insert(rsi::scheduler::niche_of(rsi::models::from_yaml(m.genome_yaml), m.metrics.parameters,
                                             LoopConfig{}.improvement.niches, config.limits.max_parameters));
    return static_cast<int>(niches.size());
  };
  int more = 0;
  for (std::size_t g = 0; g < with.size(); ++g) {
    ASSERT_TRUE(with[g].improvement.has_value());
    EXPECT_EQ(with[g].improvement->niches, covered(with[g]));
    more += covered(with[g]) - covered(without[g]);
  }
  EXPECT_GT(more, 0) << "niche selection should cover more niches than plain truncation";
}

// Everything the loop learned about design is rebuilt on a resume: a run stopped and resumed
// equals one that was not.
TEST(Designer, AResumedRunDesignsWhatAnUninterruptedOneDid) {
  for (const double floor : {-1.0, 0.0}) {  // 0: the correlation gate's state comes back with the history too
    SCOPED_TRACE("min_correlation " + std::to_string(floor));
    LoopConfig config = everything_on();
    config.improvement.predictor.min_correlation = floor;
    const Records whole = run(config);
    LoopConfig stopping = config;
    MemorySink first;
    stopping.stop_requested = [&first] { return first.records.size() == 4; };
    auto world = rsi::collective::make_local_communicator();
    rsi::scheduler::run_loop(stopping, *world, {&first});
    ASSERT_EQ(first.records.size(), 4u);
    rsi::scheduler::ResumeState resume;
    resume.generation = first.records.back().generation;
    resume.next_model_id = first.records.back().next_model_id;
    resume.population = first.records.back().population_models;
    resume.history = first.records;
    const Records rest = run(config, &resume);
    ASSERT_EQ(first.records.size() + rest.size(), whole.size());
    for (std::size_t i = 0; i < rest.size(); ++i) {
      const GenerationRecord &x = whole[first.records.size() + i], &y = rest[i];
      SCOPED_TRACE("generation " + std::to_string(x.generation));
      EXPECT_EQ(x.population, y.population);
      ASSERT_EQ(x.children.size(), y.children.size());
      for (std::size_t k = 0; k < x.children.size(); ++k) {
        EXPECT_EQ(x.children[k].genome_yaml, y.children[k].genome_yaml);
        EXPECT_EQ(x.children[k].predicted_gain, y.children[k].predicted_gain);
        EXPECT_EQ(x.children[k].rung_epochs, y.children[k].rung_epochs);
        EXPECT_EQ(x.children[k].metrics.val_accuracy, y.children[k].metrics.val_accuracy);
      }
      EXPECT_EQ(x.improvement->predictor_weights, y.improvement->predictor_weights);
      EXPECT_EQ(x.improvement->duplicates, y.improvement->duplicates);
    }
  }
}

// The surrogate's drifting payoffs (for studies of the recursion): off by default, bounded by the
// amplitude, and which design pays changes with the generation.
TEST(SurrogateDrift, PayoffsAreBoundedAndDrift) {
  const Genome cnn = seed_genome("cnn"), mlp = seed_genome("mlp");
  rsi::scheduler::SurrogateDrift drift;
  EXPECT_EQ(rsi::scheduler::surrogate_drift_payoff(cnn, 5, drift), 0.0);
  const auto plain = rsi::scheduler::surrogate_evaluate(cnn, 5, 7, 0.0);
  EXPECT_EQ(rsi::scheduler::surrogate_evaluate(cnn, 5, 7, 0.0, drift).metrics.val_accuracy, plain.metrics.val_accuracy);
  drift.amplitude = 0.08;
  drift.period = 8;
  int order_changes = 0;
  bool cnn_ahead_before = false;
  for (int g = 0; g < 16; ++g) {
    drift.generation = g;
    const double a = rsi::scheduler::surrogate_drift_payoff(cnn, 5, drift);
    const double b = rsi::scheduler::surrogate_drift_payoff(mlp, 5, drift);
    EXPECT_LE(std::abs(a), drift.amplitude);
    EXPECT_LE(std::abs(b), drift.amplitude);
    if (g > 0 && (a > b) != cnn_ahead_before) ++order_changes;
    cnn_ahead_before = a > b;
  }
  EXPECT_GT(order_changes, 0) << "over two periods the design that pays more should change";
}

}  // namespace

namespace {

// The extended recipe space: the schedule operator is drawn only with it on, and a run without it
// never changes a schedule except through crossover.
TEST(Designer, TheScheduleOperatorIsOnlyInTheExtendedRecipeSpace) {
  LoopConfig config = surrogate_config();
  config.generations = 10;
  int schedule_ops = 0;
  for (const GenerationRecord& g : run(config))
    for (const ModelRecord& m : g.children) schedule_ops += m.op == "schedule";
  EXPECT_EQ(schedule_ops, 0);
  config.improvement.extended_recipe = true;
  std::set<std::pair<int, float>> schedules;  // (schedule, warm-up)
  for (const GenerationRecord& g : run(config))
    for (const ModelRecord& m : g.children) {
      schedule_ops += m.op == "schedule";
      const auto recipe = rsi::models::from_yaml(m.genome_yaml).recipe;
      schedules.insert({static_cast<int>(recipe.schedule), recipe.warmup});
    }
  EXPECT_GT(schedule_ops, 0);
  EXPECT_GE(schedules.size(), 2u);
}

}  // namespace
