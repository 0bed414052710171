// Tests of the RSI loop (scheduler/loop.h) on one rank: the surrogate task for the loop's
// bookkeeping (generation order, model-id order, lineage, selection, gain, design skill, diversity,
// failures as data, determinism) and a small Fashion-MNIST run for the real training path.
//   build-dir/tests/test_loop            (about 10 s; the Fashion-MNIST test needs the data set)
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"
#include "rsi/kernels/fnv1a.h"
#include "rsi/models/genome.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/record.h"
#include "seed_genomes.h"

namespace {

using rsi::models::Genome;
using rsi::scheduler::GenerationRecord;
using rsi::scheduler::LoopConfig;
using rsi::scheduler::MemorySink;
using rsi::scheduler::ModelRecord;
using rsi::scheduler::SelectionKind;
using rsi::scheduler::TaskSpec;
using Records = std::vector<GenerationRecord>;


// Linear and MLP seeds on the surrogate landscape, no cost per task.
LoopConfig surrogate_config(SelectionKind selection = SelectionKind::Truncation) {
  LoopConfig c;
  c.seed = 11;
  c.generations = 5;
  c.population_size = 4;
  c.children_per_generation = 6;
  c.selection = selection;
  c.tournament_size = 2;
  c.task.kind = TaskSpec::Kind::Surrogate;
  c.task.surrogate_cost_seconds = 0.0;
  c.task.surrogate_noise = 0.005;
  c.seeds = {seed_genome("linear"), seed_genome("mlp")};
  return c;
}

Records run(const LoopConfig& config) {
  auto world = rsi::collective::make_local_communicator();
  MemorySink sink;
  rsi::scheduler::run_loop(config, *world, {&sink});
  return sink.records;
}

std::map<std::uint64_t, const ModelRecord*> by_id(const Records& records) {
  std::map<std::uint64_t, const ModelRecord*> out;
  for (const auto& g : records)
    for (const auto& m : g.children) out[m.id] = &m;
  return out;
}

// The ids of `pool` ordered best first by the given score (ties: older first), cut to k, then
// returned in id order as GenerationRecord::population is.
std::vector<std::uint64_t> top_k(std::vector<const ModelRecord*> pool, std::size_t k, bool by_test) {
  const auto score = [by_test](const ModelRecord* m) {
    return by_test ? m->metrics.test_accuracy : m->metrics.val_accuracy;
  };
  std::sort(pool.begin(), pool.end(), [&](auto* a, auto* b) {
    return score(a) != score(b) ? score(a) > score(b) : a->id < b->id;
  });
  pool.resize(std::min(k, pool.size()));
  std::vector<std::uint64_t> ids;
  for (auto* m : pool) ids.push_back(m->id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

// What selection chose from in generation g: the previous population and g's trained children.
std::vector<const ModelRecord*> selection_pool(const Records& records, std::size_t g) {
  const auto models = by_id(records);
  std::vector<const ModelRecord*> pool;
  if (g > 0)
    for (auto id : records[g - 1].population) pool.push_back(models.at(id));
  for (const auto& m : records[g].children)
    if (m.trained()) pool.push_back(&m);
  return pool;
}

// Everything a lineage holds that must not depend on timing: ids, genomes, metrics, digests.
void expect_same_lineage(const Records& a, const Records& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t g = 0; g < a.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    EXPECT_EQ(a[g].population, b[g].population);
    EXPECT_EQ(a[g].best_id, b[g].best_id);
    EXPECT_EQ(a[g].best_val, b[g].best_val);
    EXPECT_EQ(a[g].gain, b[g].gain);
    EXPECT_EQ(a[g].design_skill, b[g].design_skill);
    EXPECT_EQ(a[g].design_skill_by_lineage, b[g].design_skill_by_lineage);
    EXPECT_EQ(a[g].diversity, b[g].diversity);
    ASSERT_EQ(a[g].children.size(), b[g].children.size());
    for (std::size_t i = 0; i < a[g].children.size(); ++i) {
      const ModelRecord &x = a[g].children[i], &y = b[g].children[i];
      SCOPED_TRACE("model " + std::to_string(x.id));
      EXPECT_EQ(x.id, y.id);
      EXPECT_EQ(x.parents, y.parents);
      EXPECT_EQ(x.genome_yaml, y.genome_yaml);
      EXPECT_EQ(x.op, y.op);
      EXPECT_EQ(x.description, y.description);
      EXPECT_EQ(x.status, y.status);
      EXPECT_EQ(x.failure, y.failure);
      EXPECT_EQ(x.inherited, y.inherited);
      EXPECT_EQ(x.function_preserving, y.function_preserving);
      EXPECT_EQ(x.metrics.val_accuracy, y.metrics.val_accuracy);
      EXPECT_EQ(x.metrics.val_loss, y.metrics.val_loss);
      EXPECT_EQ(x.metrics.test_accuracy, y.metrics.test_accuracy);
      EXPECT_EQ(x.metrics.test_loss, y.metrics.test_loss);
      EXPECT_EQ(x.metrics.val_per_class, y.metrics.val_per_class);
      EXPECT_EQ(x.metrics.test_per_class, y.metrics.test_per_class);
      EXPECT_EQ(x.metrics.parameters, y.metrics.parameters);
      EXPECT_EQ(x.metrics.flops, y.metrics.flops);
      EXPECT_EQ(x.metrics.samples, y.metrics.samples);
      EXPECT_EQ(x.weights_digest, y.weights_digest);
    }
  }
}

// ---- structure of the records ------------------------------------------------------------------

TEST(Loop, RecordsComeInGenerationOrderWithChildrenInIdOrder) {
  const LoopConfig config = surrogate_config();
  const Records records = run(config);
  ASSERT_EQ(records.size(), static_cast<std::size_t>(config.generations + 1));
  std::uint64_t last_id = 0;
  for (std::size_t g = 0; g < records.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const GenerationRecord& r = records[g];
    EXPECT_EQ(r.generation, static_cast<int>(g));
    EXPECT_EQ(r.children.size(), g == 0 ? config.seeds.size() : static_cast<std::size_t>(config.children_per_generation));
    int trained = 0, failed = 0, refused = 0;
    for (const ModelRecord& m : r.children) {
      EXPECT_GT(m.id, last_id) << "ids must be unique and increase in commit order";
      last_id = m.id;
      EXPECT_EQ(m.generation, static_cast<int>(g));
      trained += m.status == ModelRecord::Status::Trained;
      failed += m.status == ModelRecord::Status::Failed;
      refused += m.status == ModelRecord::Status::Refused;
      if (!m.trained()) {
        EXPECT_FALSE(m.failure.empty()) << "a failed or refused model says why";
      }
      EXPECT_NO_THROW(rsi::models::from_yaml(m.genome_yaml));
    }
    EXPECT_EQ(r.trained, trained);
    EXPECT_EQ(r.failed, failed);
    EXPECT_EQ(r.refused, refused);
  }
}

TEST(Loop, ParentsComeFromThePreviousPopulationAndItsSizeIsRespected) {
  const LoopConfig config = surrogate_config();
  const Records records = run(config);
  const auto models = by_id(records);
  std::size_t trained_so_far = 0;
  for (std::size_t g = 0; g < records.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const GenerationRecord& r = records[g];
    trained_so_far += static_cast<std::size_t>(r.trained);
    EXPECT_EQ(r.population.size(), std::min<std::size_t>(config.population_size, trained_so_far));
    EXPECT_TRUE(std::is_sorted(r.population.begin(), r.population.end()));
    for (auto id : r.population) EXPECT_TRUE(models.at(id)->trained()) << "model " << id;
    for (const ModelRecord& m : r.children) {
      if (g == 0) {
        EXPECT_TRUE(m.parents.empty());
        EXPECT_EQ(m.op, "seed");
        EXPECT_EQ(m.designer_lineage, m.id) << "a seed starts its own designer lineage";
        continue;
      }
      ASSERT_FALSE(m.parents.empty()) << "model " << m.id;
      EXPECT_LE(m.parents.size(), 2u);
      if (m.parents.size() == 2) {
        EXPECT_NE(m.parents[0], m.parents[1]);
      }
      const auto& previous = records[g - 1].population;
      for (auto p : m.parents)
        EXPECT_NE(std::find(previous.begin(), previous.end(), p), previous.end())
            << "model " << m.id << ": parent " << p << " was not in generation " << g - 1 << "'s population";
      const ModelRecord& parent = *models.at(m.parents[0]);
      EXPECT_EQ(m.parent_val_accuracy, parent.metrics.val_accuracy);
      EXPECT_EQ(m.designer_lineage, parent.designer_lineage) << "designer genes descend from the first parent";
    }
  }
}

TEST(Loop, GainIsTheChangeOfTheBestValidationAccuracy) {
  const Records records = run(surrogate_config());
  const auto models = by_id(records);
  for (std::size_t g = 0; g < records.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const GenerationRecord& r = records[g];
    double best = -1.0, best_test = -1.0;
    for (auto id : r.population) {
      best = std::max(best, models.at(id)->metrics.val_accuracy);
      best_test = std::max(best_test, models.at(id)->metrics.test_accuracy);
    }
    EXPECT_EQ(r.best_val, best);
    EXPECT_EQ(models.at(r.best_id)->metrics.val_accuracy, best);
    EXPECT_EQ(r.best_model_test, models.at(r.best_id)->metrics.test_accuracy);
    EXPECT_EQ(r.best_test, best_test);
    EXPECT_EQ(r.gain, g == 0 ? 0.0 : r.best_val - records[g - 1].best_val);
    EXPECT_GE(r.gain, 0.0) << "truncation keeps the best, so the best never gets worse";
  }
  EXPECT_GT(records.back().best_val, records.front().best_val) << "five generations should improve on the seeds";
}

TEST(Loop, DesignSkillIsMeasuredPerGenerationAndByLineage) {
  const Records records = run(surrogate_config());
  std::set<std::uint64_t> lineages_seen;
  for (std::size_t g = 0; g < records.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const GenerationRecord& r = records[g];
    double sum = 0.0;
    int n = 0;
    std::map<std::uint64_t, std::pair<double, int>> per_lineage;
    for (const ModelRecord& m : r.children) {
      if (!m.trained() || m.parents.empty()) continue;
      const double gain = m.metrics.val_accuracy - m.parent_val_accuracy;
      EXPECT_EQ(m.gain_over_parent(), gain);
      sum += gain, ++n;
      per_lineage[m.designer_lineage].first += gain;
      ++per_lineage[m.designer_lineage].second;
    }
    EXPECT_NEAR(r.design_skill, n ? sum / n : 0.0, 1e-12);
    ASSERT_EQ(r.design_skill_by_lineage.size(), per_lineage.size());
    for (const auto& [lineage, acc] : per_lineage) {
      ASSERT_TRUE(r.design_skill_by_lineage.count(lineage)) << "lineage " << lineage;
      EXPECT_NEAR(r.design_skill_by_lineage.at(lineage), acc.first / acc.second, 1e-12) << "lineage " << lineage;
      lineages_seen.insert(lineage);
    }
  }
  EXPECT_TRUE(records[0].design_skill_by_lineage.empty()) << "seeds have no parents to gain over";
  // Both seeds are in the first population, so both designer lineages design in generation 1.
  EXPECT_EQ(records[1].design_skill_by_lineage.size(), 2u);
  EXPECT_EQ(lineages_seen, (std::set<std::uint64_t>{1, 2}));
}

TEST(Loop, DiversityIsPositiveOnceThePopulationDiffers) {
  const Records records = run(surrogate_config());
  const auto models = by_id(records);
  for (const GenerationRecord& r : records) {
    std::set<std::string> genomes;
    for (auto id : r.population) genomes.insert(models.at(id)->genome_yaml);
    if (genomes.size() > 1) {
      EXPECT_GT(r.diversity, 0.0) << "generation " << r.generation;
    } else {
      EXPECT_EQ(r.diversity, 0.0) << "generation " << r.generation;
    }
  }
  EXPECT_GT(records[0].diversity, 0.0) << "a linear and an MLP seed differ";
}

// ---- selection -----------------------------------------------------------------------------------

TEST(Loop, TruncationKeepsTheTopKByValidation) {
  const LoopConfig config = surrogate_config();
  const Records records = run(config);
  const auto models = by_id(records);
  for (std::size_t g = 0; g < records.size(); ++g) {
    EXPECT_EQ(records[g].population, top_k(selection_pool(records, g), config.population_size, false))
        << "generation " << g;
    if (g == 0) continue;
    // Parents design in rank order of validation accuracy: child i's parent is the (i mod k)-th best.
    std::vector<const ModelRecord*> ranked;
    for (auto id : records[g - 1].population) ranked.push_back(models.at(id));
    std::stable_sort(ranked.begin(), ranked.end(), [](auto* a, auto* b) {
      return a->metrics.val_accuracy > b->metrics.val_accuracy;
    });
    for (std::size_t i = 0; i < records[g].children.size(); ++i)
      EXPECT_EQ(records[g].children[i].parents[0], ranked[i % ranked.size()]->id)
          << "generation " << g << " child " << i;
  }
}

// The hidden test set never selects: with enough noise the order by test differs from the order by
// validation, and the population follows validation.
TEST(Loop, HiddenTestAccuracyIsNeverUsedForSelection) {
  LoopConfig config = surrogate_config();
  config.task.surrogate_noise = 0.03;
  config.generations = 8;
  const Records records = run(config);
  int test_would_differ = 0;
  for (std::size_t g = 0; g < records.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const auto pool = selection_pool(records, g);
    const auto by_val = top_k(pool, config.population_size, false);
    const auto by_test = top_k(pool, config.population_size, true);
    EXPECT_EQ(records[g].population, by_val);
    test_would_differ += by_test != by_val;
  }
  EXPECT_GT(test_would_differ, 0) << "the check needs a run where selecting by test would choose differently";
}

TEST(Loop, AgingKeepsTheNewest) {
  const LoopConfig config = surrogate_config(SelectionKind::Aging);
  const Records records = run(config);
  const auto models = by_id(records);
  for (std::size_t g = 0; g < records.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const auto pool = selection_pool(records, g);
    if (g == 0) {
      EXPECT_EQ(records[g].population, top_k(pool, config.population_size, false));
      continue;
    }
    std::vector<std::uint64_t> ids;
    for (auto* m : pool) ids.push_back(m->id);
    std::sort(ids.rbegin(), ids.rend());
    ids.resize(std::min<std::size_t>(ids.size(), config.population_size));
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(records[g].population, ids);
    for (auto id : records[g].population) EXPECT_EQ(models.at(id)->generation, static_cast<int>(g));
  }
}

TEST(Loop, TournamentRuns) {
  const LoopConfig config = surrogate_config(SelectionKind::Tournament);
  const Records records = run(config);
  ASSERT_EQ(records.size(), static_cast<std::size_t>(config.generations + 1));
  std::set<std::uint64_t> parents;
  for (std::size_t g = 1; g < records.size(); ++g) {
    const auto& previous = records[g - 1].population;
    for (const ModelRecord& m : records[g].children) {
      ASSERT_FALSE(m.parents.empty());
      EXPECT_NE(std::find(previous.begin(), previous.end(), m.parents[0]), previous.end());
      parents.insert(m.parents[0]);
    }
    EXPECT_EQ(records[g].population, top_k(selection_pool(records, g), config.population_size, false));
  }
  EXPECT_GT(parents.size(), 1u) << "tournaments of two should not always pick the same parent";
  EXPECT_EQ(run(config).back().population, records.back().population) << "tournament draws are deterministic";
}

// ---- failures are data ---------------------------------------------------------------------------

TEST(Loop, ADivergingSeedBecomesAFailedRecordAndTheRunGoesOn) {
  LoopConfig config = surrogate_config();
  config.seeds[0].recipe.learning_rate = 0.09f;  // the surrogate "diverges" above 0.05
  const Records records = run(config);
  ASSERT_EQ(records.size(), static_cast<std::size_t>(config.generations + 1));
  const ModelRecord& bad = records[0].children[0];
  EXPECT_EQ(bad.status, ModelRecord::Status::Failed);
  EXPECT_NE(bad.failure.find("diverged"), std::string::npos) << bad.failure;
  EXPECT_TRUE(bad.weights_digest.empty());
  EXPECT_TRUE(records[0].children[1].trained());
  EXPECT_EQ(records[0].failed, 1);
  EXPECT_EQ(records[0].trained, 1);
  EXPECT_EQ(records[0].population, std::vector<std::uint64_t>{records[0].children[1].id});
  for (const GenerationRecord& r : records) {
    EXPECT_EQ(std::count(r.population.begin(), r.population.end(), bad.id), 0) << "generation " << r.generation;
    for (const ModelRecord& m : r.children)
      EXPECT_EQ(std::count(m.parents.begin(), m.parents.end(), bad.id), 0) << "model " << m.id;
  }
  EXPECT_GT(records.back().trained, 0);
}

TEST(Loop, AllSeedsFailingStopsTheRunWithTheReason) {
  LoopConfig config = surrogate_config();
  for (Genome& g : config.seeds) g.recipe.learning_rate = 0.09f;
  try {
    run(config);
    FAIL() << "run_loop returned although every seed failed";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("seed"), std::string::npos) << what;
    EXPECT_NE(what.find("diverged"), std::string::npos) << what;
  }
}

TEST(Loop, NoSeedsIsAClearError) {
  LoopConfig config = surrogate_config();
  config.seeds.clear();
  EXPECT_THROW(run(config), std::invalid_argument);
}

// ---- determinism ------------------------------------------------------------------------------

TEST(Loop, TheSameConfigGivesTheSameLineage) {
  LoopConfig config = surrogate_config();
  config.task.surrogate_noise = 0.02;
  const Records a = run(config), b = run(config);
  expect_same_lineage(a, b);
  config.seed = 12;
  const Records c = run(config);
  bool differs = false;
  for (std::size_t g = 0; g < c.size(); ++g)
    for (std::size_t i = 0; i < c[g].children.size(); ++i)
      differs |= c[g].children[i].metrics.val_accuracy != a[g].children[i].metrics.val_accuracy;
  EXPECT_TRUE(differs) << "another seed should give another lineage";
}

// ---- stopping at a safe point ----------------------------------------------------------------

TEST(Loop, AStopRequestEndsTheRunAtAGenerationBoundaryAndAResumeEndsInTheSameLineage) {
  const LoopConfig config = surrogate_config();
  const Records whole = run(config);

  LoopConfig stopping = config;
  MemorySink first;
  stopping.stop_requested = [&first] { return first.records.size() == 3; };  // after generation 2
  auto world = rsi::collective::make_local_communicator();
  const auto summary = rsi::scheduler::run_loop(stopping, *world, {&first});
  EXPECT_TRUE(summary.stopped);
  EXPECT_EQ(summary.generations_done, 3);
  ASSERT_EQ(first.records.size(), 3u) << "the generation in flight when the stop came is finished, no more";

  rsi::scheduler::ResumeState resume;
  resume.generation = first.records.back().generation;
  resume.next_model_id = first.records.back().next_model_id;
  resume.population = first.records.back().population_models;
  MemorySink rest;
  const auto resumed = rsi::scheduler::run_loop(config, *world, {&rest}, {}, &resume);
  EXPECT_FALSE(resumed.stopped);
  Records joined = first.records;
  joined.insert(joined.end(), rest.records.begin(), rest.records.end());
  expect_same_lineage(whole, joined);
}

// ---- the real path: Fashion-MNIST ----------------------------------------------------------------

bool have_fashion_mnist() {
  const std::string dir = rsi::models::kFashionMnistDir;
  return std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz") || std::filesystem::exists(dir + "/train-images-idx3-ubyte");
}
const std::string kNoFashionMnist = std::string("Fashion-MNIST is not installed in ") + rsi::models::kFashionMnistDir +
                                    " (apt-get install dataset-fashion-mnist)";

// A Fashion-MNIST run small enough for a unit test: 600 labeled, 200 unlabeled, 200 validation,
// the linear seed at one epoch, population 2, seed 3.
LoopConfig small_fashion_mnist_run(int generations, int children) {
  LoopConfig config;
  config.seed = 3;
  config.generations = generations;
  config.population_size = 2;
  config.children_per_generation = children;
  config.task.kind = TaskSpec::Kind::FashionMnist;
  config.task.data_dir = rsi::models::kFashionMnistDir;
  config.task.split = {600, 200, 200};
  config.limits.max_flops = 5'000'000;  // keeps a designed child small enough for a unit test
  Genome seed = seed_genome("linear");
  seed.recipe.epochs = 1;
  config.seeds = {seed};
  return config;
}

TEST(LoopFashionMnist, SmokeTestTrainsInheritsAndIsDeterministic) {
  if (!have_fashion_mnist()) GTEST_SKIP() << kNoFashionMnist;
  LoopConfig config = small_fashion_mnist_run(/*generations=*/1, /*children=*/2);

  const Records records = run(config);
  ASSERT_EQ(records.size(), 2u);
  int inherited = 0;
  for (const GenerationRecord& r : records) {
    for (const ModelRecord& m : r.children) {
      SCOPED_TRACE("model " + std::to_string(m.id) + " (" + m.description + ")");
      ASSERT_TRUE(m.trained()) << m.failure;
      EXPECT_EQ(m.weights_digest.size(), 16u);
      ASSERT_TRUE(m.weights);
      EXPECT_EQ(m.weights_digest, rsi::scheduler::weights_digest(*m.weights));
      EXPECT_GT(m.metrics.test_accuracy, 0.3);
      EXPECT_LT(m.metrics.test_accuracy, 1.0);
      EXPECT_GT(m.metrics.val_accuracy, 0.3);
      EXPECT_GT(m.metrics.samples, 0);
      EXPECT_EQ(m.metrics.test_per_class.size(), 10u);
      if (m.parents.empty()) {
        EXPECT_FALSE(m.inherited);
        EXPECT_LT(m.metrics.pseudo_label_accuracy, 0.0) << "a seed has no parent to label the pool";
      } else {
        EXPECT_GT(m.metrics.pseudo_label_accuracy, 0.3) << "the parent labels the unlabeled pool";
      }
      if (m.function_preserving) {
        EXPECT_TRUE(m.inherited) << "a function-preserving child starts from its parent";
      }
      inherited += m.inherited;
    }
  }
  EXPECT_EQ(records[1].trained, 2);
  EXPECT_GE(inherited, 1) << "with seed 3 at least one child inherits its parent's weights";

  expect_same_lineage(records, run(config));
}

// design.distill: when_changed: a function-preserving child skips the distillation phase (its
// samples are its fine-tuning epochs only, and no pseudo-labels are handed to it); a child whose
// design changed its parent's function still distils over the labeled set and the unlabeled pool.
TEST(LoopFashionMnist, DistillWhenChangedSkipsItForFunctionPreservingChildren) {
  if (!have_fashion_mnist()) GTEST_SKIP() << kNoFashionMnist;
  LoopConfig config = small_fashion_mnist_run(/*generations=*/2, /*children=*/4);
  config.improvement.distill = rsi::scheduler::ImprovementConfig::Distill::FunctionChanged;

  const Records records = run(config);
  int preserving = 0, changed = 0;
  for (const GenerationRecord& r : records) {
    for (const ModelRecord& m : r.children) {
      if (m.parents.empty()) continue;
      SCOPED_TRACE("model " + std::to_string(m.id) + " (" + m.description + ")");
      ASSERT_TRUE(m.trained()) << m.failure;
      const Genome g = rsi::models::from_yaml(m.genome_yaml, "child");
      const std::int64_t fine_tuning = 600 * g.recipe.epochs;
      if (m.function_preserving) {
        ++preserving;
        EXPECT_EQ(m.metrics.samples, fine_tuning) << "no distillation phase";
        EXPECT_LT(m.metrics.pseudo_label_accuracy, 0.0) << "no pseudo-labels were handed to it";
      } else {
        ++changed;
        EXPECT_EQ(m.metrics.samples, fine_tuning + (600 + 200) * g.recipe.distill_epochs);
        EXPECT_GT(m.metrics.pseudo_label_accuracy, 0.3);
      }
    }
  }
  EXPECT_GE(preserving, 1) << "with seed 3 some child keeps its parent's function";
  EXPECT_GE(changed, 1) << "with seed 3 some child changes it";
  expect_same_lineage(records, run(config));
}

}  // namespace

// Known answers for the digests FORMAT.md describes: FNV-1a 64 (offset basis 14695981039346656037,
// prime 1099511628211) — the standard's own test vectors — and weights_digest over the bytes of
// params then state, computed here independently of its implementation's loop (values from a
// separate Python FNV-1a over struct.pack('<3f', 1.0, -2.5, 0.5)). Lineage format 1 started from a
// wrong basis (1469598103934665603); its value is pinned too, since old lineages still verify.
TEST(Digests, Fnv1aKnownAnswers) {
  using rsi::kernels::fnv1a64;
  EXPECT_EQ(fnv1a64("", 0), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar", 6), 0x85944171f73967e8ull);
  EXPECT_EQ(rsi::kernels::fnv1a_hex(0xaf63dc4c8601ec8cull), "af63dc4c8601ec8c");
  rsi::scheduler::Weights w;
  w.params = {1.0f, -2.5f};
  w.state = {0.5f};
  EXPECT_EQ(rsi::scheduler::weights_digest(w), "00f39869ef34f295");
  EXPECT_EQ(rsi::scheduler::weights_digest(w, /*format1_basis=*/true), "d268704cd88638d3");
}
