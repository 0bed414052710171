// Design-operator tests (scheduler/design.h): function-preserving operators give children whose
// inherited weights compute the parent's function; the rest give valid, correctly shaped children;
// designs are pure functions of their inputs, stay within the limits over long chains of
// generations, self-adapt their genes, and a linear seed finds convolutions.
//   ctest --test-dir build -R Design
#include <gtest/gtest.h>

#include "blocks.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <set>

#include "rsi/kernels/rng.h"
#include "rsi/models/morphism.h"
#include "rsi/models/network.h"
#include "rsi/scheduler/design.h"

using namespace rsi;
using models::Block;
using models::BlockOrigin;
using scheduler::DesignLimits;

using namespace rsi::test_blocks;

namespace {

const models::InputSpec kSmall{1, 8, 8, 3};
const models::InputSpec kReal{1, 28, 28, 10};


models::Genome seed(const std::string& name) { return models::load_genome(std::string(RSI_SOURCE_DIR) + "/experiments/genomes/" + name + ".yaml"); }
models::Genome linear_seed() { return models::from_yaml("architecture:\n  - dense: {units: 10}\n"); }

kernels::CounterRng design_rng(std::uint64_t seed_value, std::uint64_t model = 1) {
  return kernels::CounterRng(seed_value, kernels::rng_stream(kernels::RngUse::Design, model));
}

// The first child (over rng seeds) that `op` designs, with genes that strongly favour `op`, and
// that satisfies `accept`.
scheduler::DesignedChild design_as(models::Genome parent, const std::string& op, const models::InputSpec& input,
                                   const std::function<bool(const scheduler::DesignedChild&)>& accept = {},
                                   const models::Genome* mate = nullptr, const DesignLimits& limits = {}) {
  parent.designer = scheduler::complete_designer_genes(parent.designer);
  parent.designer[scheduler::kScheduleGene] = 0.01;  // in the extended recipe space (below), every operator applies
  for (auto& [name, value] : parent.designer)
    if (name.rfind("p.", 0) == 0) value = name == "p." + op ? 10.0 : 0.01;
  scheduler::DesignMode mode;
  mode.extended_recipe = true;
  for (std::uint64_t s = 0; s < 400; ++s) {
    auto child = scheduler::design_child(parent, mate, design_rng(s), limits, input, mode);
    if (child.op == op && (!accept || accept(child))) return child;
  }
  ADD_FAILURE() << "operator " << op << " never designed an acceptable child";
  return {};
}


double relative_difference(models::Network& parent, models::Network& child, int N = 4) {
  const kernels::CounterRng rng(11, 77);
  std::vector<float> x(static_cast<std::size_t>(N) * parent.input().height * parent.input().width);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(i);
  const auto& a_out = parent.forward(x.data(), N, {});
  const std::vector<float> a(a_out.data(), a_out.data() + a_out.numel());
  const auto& b = child.forward(x.data(), N, {});
  double scale = 1.0, diff = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(a[i])));
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[static_cast<std::int64_t>(i)])));
  }
  return diff / scale;
}

struct Inherited {
  models::Network parent, child;
  models::InheritReport report;
};

Inherited inherit(const models::Genome& parent_genome, const scheduler::DesignedChild& designed,
                  const models::InputSpec& input) {
  models::Network parent = random_network(parent_genome, input, 1);
  models::Network child(designed.genome, input);
  child.initialize(2, 8);
  const auto report = models::inherit_weights(parent, child, designed.morphism);
  return {std::move(parent), std::move(child), report};
}

void expect_preserving(const models::Genome& parent, const scheduler::DesignedChild& designed,
                       const models::InputSpec& input) {
  SCOPED_TRACE(designed.description);
  EXPECT_TRUE(designed.morphism.function_preserving);
  Inherited n = inherit(parent, designed, input);
  EXPECT_TRUE(n.report.function_preserving);
  EXPECT_GT(n.report.inherited, 0);
  EXPECT_LT(relative_difference(n.parent, n.child), 1e-5);
}

// Parameters of child block `child_block` equal those of parent block `parent_block`.
void expect_block_copied(const models::Network& parent, const models::Network& child, int parent_block, int child_block) {
  const std::string p = "block" + std::to_string(parent_block) + ".", c = "block" + std::to_string(child_block) + ".";
  for (const auto& cs : child.segments()) {
    if (cs.name.rfind(c, 0) != 0) continue;
    const std::string part = cs.name.substr(c.size());
    const auto ps = std::find_if(parent.segments().begin(), parent.segments().end(),
                                 [&](const models::ParamSegment& s) { return s.name == p + part; });
    ASSERT_NE(ps, parent.segments().end()) << cs.name;
    ASSERT_EQ(ps->size, cs.size) << cs.name;
    EXPECT_TRUE(std::equal(parent.parameters().data() + ps->offset, parent.parameters().data() + ps->offset + ps->size,
                           child.parameters().data() + cs.offset))
        << cs.name;
  }
}

void expect_copies_hold(const models::Genome& parent, const scheduler::DesignedChild& designed,
                        const models::InputSpec& input) {
  SCOPED_TRACE(designed.description);
  EXPECT_FALSE(designed.morphism.function_preserving);
  Inherited n = inherit(parent, designed, input);
  EXPECT_FALSE(n.report.function_preserving);
  EXPECT_EQ(n.report.inherited + n.report.fresh, n.child.parameter_count());
  for (std::size_t i = 0; i < designed.morphism.blocks.size(); ++i) {
    const BlockOrigin& o = designed.morphism.blocks[i];
    if (o.kind == BlockOrigin::Kind::Copy) expect_block_copied(n.parent, n.child, o.parent_block, static_cast<int>(i));
  }
}

void expect_within_limits(const models::Genome& g, const DesignLimits& limits, const models::InputSpec& input) {
  models::GenomeLimits gl;
  gl.max_parameters = limits.max_parameters, gl.max_flops = limits.max_flops, gl.max_blocks = limits.max_blocks;
  EXPECT_NO_THROW(models::validate(g, input, gl)) << models::to_yaml(g);
  for (std::size_t i = 0; i + 1 < g.blocks.size(); ++i) {
    if (g.blocks[i].kind == Block::Kind::Dense) {
      EXPECT_LE(g.blocks[i].units, limits.max_units);
    }
    if (g.blocks[i].kind == Block::Kind::Conv) {
      EXPECT_LE(g.blocks[i].channels, limits.max_channels);
    }
  }
  EXPECT_GE(g.recipe.epochs, 1);
  EXPECT_LE(g.recipe.epochs, limits.max_epochs);
}

bool has_conv(const models::Genome& g) {
  return std::any_of(g.blocks.begin(), g.blocks.end(), [](const Block& b) { return b.kind == Block::Kind::Conv; });
}

const models::Genome kSmallMlp = genome_of({dense(6), relu(), dense(5), relu(), dense(3)});
const models::Genome kSmallCnn = genome_of({conv(4), relu(), pool(), dense(6), relu(), dense(3)});

}  // namespace

TEST(Design, OperatorNamesAndDefaultGenes) {
  const auto& ops = scheduler::design_operators();
  EXPECT_EQ(ops.size(), 17u);
  const auto genes = scheduler::default_designer_genes();
  for (const auto& op : ops) {
    if (op == "schedule") {  // the extended recipe space's: not a default gene (older genomes keep their text)
      EXPECT_FALSE(genes.count("p." + op));
      continue;
    }
    ASSERT_TRUE(genes.count("p." + op)) << op;
    EXPECT_GT(genes.at("p." + op), 0.0);
  }
  EXPECT_GT(genes.at("p.add_conv"), genes.at("p.lr"));
  EXPECT_DOUBLE_EQ(genes.at("tau"), 0.2);
  EXPECT_DOUBLE_EQ(genes.at("step.widen"), 0.5);
  EXPECT_DOUBLE_EQ(genes.at("step.lr"), 0.3);
  EXPECT_DOUBLE_EQ(genes.at("step.recipe"), 0.2);
  // Completing keeps what is given.
  const auto completed = scheduler::complete_designer_genes({{"p.widen", 3.0}, {"custom", 1.5}});
  EXPECT_DOUBLE_EQ(completed.at("p.widen"), 3.0);
  EXPECT_DOUBLE_EQ(completed.at("custom"), 1.5);
  EXPECT_DOUBLE_EQ(completed.at("p.lr"), genes.at("p.lr"));
}

TEST(Design, FunctionPreservingOperatorsKeepTheParentsOutputs) {
  const auto widened_conv = [](const scheduler::DesignedChild& c) { return c.genome.blocks[0].channels > 4; };
  expect_preserving(kSmallMlp, design_as(kSmallMlp, "widen", kSmall), kSmall);
  expect_preserving(kSmallCnn, design_as(kSmallCnn, "widen", kSmall, widened_conv), kSmall);
  const auto bn_cnn = genome_of({conv(4), batchnorm(), relu(), pool(), dense(3)});
  expect_preserving(bn_cnn, design_as(bn_cnn, "widen", kSmall), kSmall);
  expect_preserving(kSmallMlp, design_as(kSmallMlp, "add_dense", kSmall), kSmall);
  expect_preserving(kSmallCnn, design_as(kSmallCnn, "add_conv", kSmall), kSmall);
  expect_preserving(kSmallCnn, design_as(kSmallCnn, "residual", kSmall), kSmall);
  const auto grown = design_as(kSmallCnn, "kernel", kSmall, [](const auto& c) { return c.genome.blocks[0].kernel == 5; });
  expect_preserving(kSmallCnn, grown, kSmall);
  for (const char* op : {"lr", "epochs", "batch", "weight_decay", "augment", "distill"}) {
    const auto child = design_as(kSmallCnn, op, kSmall);
    EXPECT_EQ(child.genome.blocks, kSmallCnn.blocks);
    expect_preserving(kSmallCnn, child, kSmall);
  }
  const auto mate = seed("mlp");
  const auto crossed = design_as(kSmallCnn, "crossover", kSmall, {}, &mate);
  EXPECT_EQ(crossed.genome.blocks, kSmallCnn.blocks);
  expect_preserving(kSmallCnn, crossed, kSmall);
}

TEST(Design, FunctionPreservingOnTheRealInputWithTheSeedGenomes) {
  const auto cnn = seed("cnn"), mlp = seed("mlp");
  expect_preserving(cnn, design_as(cnn, "widen", kReal), kReal);
  expect_preserving(cnn, design_as(cnn, "add_conv", kReal), kReal);
  expect_preserving(mlp, design_as(mlp, "widen", kReal), kReal);
  expect_preserving(mlp, design_as(mlp, "add_dense", kReal), kReal);
}

TEST(Design, NonPreservingOperatorsGiveValidChildrenAndCopyWhatTheySay) {
  expect_copies_hold(kSmallCnn, design_as(kSmallCnn, "narrow", kSmall), kSmall);
  expect_copies_hold(kSmallCnn, design_as(kSmallCnn, "remove", kSmall), kSmall);
  expect_copies_hold(kSmallMlp, design_as(kSmallMlp, "remove", kSmall), kSmall);
  expect_copies_hold(kSmallCnn, design_as(kSmallCnn, "activation", kSmall), kSmall);
  expect_copies_hold(kSmallCnn, design_as(kSmallCnn, "kernel", kSmall, [](const auto& c) { return c.genome.blocks[0].kernel == 1; }),
                     kSmall);
  const auto deep = genome_of({conv(4), relu(), conv(4), relu(), dense(3)});
  const auto pooled = design_as(deep, "pool", kSmall);
  EXPECT_EQ(pooled.genome.blocks.size(), deep.blocks.size() + 1);
  expect_copies_hold(deep, pooled, kSmall);
  // Stem for a model without spatial blocks; fresh hidden layer for one without a hidden ReLU.
  const auto stem = design_as(kSmallMlp, "add_conv", kSmall);
  ASSERT_TRUE(has_conv(stem.genome));
  EXPECT_EQ(stem.genome.blocks[2].kind, Block::Kind::Pool);
  expect_copies_hold(kSmallMlp, stem, kSmall);
  const auto linear = genome_of({dense(3)});
  const auto hidden = design_as(linear, "add_dense", kSmall);
  EXPECT_EQ(hidden.genome.blocks.size(), 3u);
  expect_copies_hold(linear, hidden, kSmall);
}

TEST(Design, SameRngSameChild) {
  const auto cnn = seed("cnn"), mlp = seed("mlp");
  for (std::uint64_t s = 0; s < 20; ++s) {
    const auto a = scheduler::design_child(cnn, &mlp, design_rng(s), {}, kReal);
    const auto b = scheduler::design_child(cnn, &mlp, design_rng(s), {}, kReal);
    EXPECT_EQ(models::to_yaml(a.genome), models::to_yaml(b.genome));
    EXPECT_EQ(a.genome, b.genome);
    EXPECT_EQ(a.morphism, b.morphism);
    EXPECT_EQ(a.op, b.op);
    EXPECT_EQ(a.description, b.description);
    // The canonical text round-trips the designed genome exactly.
    EXPECT_EQ(models::from_yaml(models::to_yaml(a.genome)), a.genome);
  }
  // Different draws give different children.
  std::set<std::string> texts;
  for (std::uint64_t s = 0; s < 20; ++s) texts.insert(models::to_yaml(scheduler::design_child(cnn, nullptr, design_rng(s), {}, kReal).genome));
  EXPECT_GT(texts.size(), 10u);
}

TEST(Design, EveryOperatorIsReachableAndValid) {
  const auto cnn = seed("cnn"), mlp = seed("mlp");
  const DesignLimits limits;
  for (const auto& op : scheduler::design_operators()) {
    SCOPED_TRACE(op);
    const auto child = design_as(cnn, op, kReal, {}, &mlp);
    EXPECT_EQ(child.op, op);
    EXPECT_FALSE(child.description.empty());
    EXPECT_EQ(child.morphism.blocks.size(), child.genome.blocks.size());
    expect_within_limits(child.genome, limits, kReal);
  }
  // And under the default genes, each operator but the extended space's schedule turns up.
  std::set<std::string> seen;
  for (std::uint64_t s = 0; s < 600 && seen.size() < scheduler::design_operators().size() - 1; ++s)
    seen.insert(scheduler::design_child(cnn, &mlp, design_rng(s), limits, kReal).op);
  EXPECT_EQ(seen.size(), scheduler::design_operators().size() - 1);
  EXPECT_FALSE(seen.count("schedule"));
}

TEST(Design, ChainedDesignsStayValidAndWithinLimits) {
  DesignLimits limits;
  limits.max_parameters = 2'000'000;
  limits.max_flops = 60'000'000;
  limits.max_blocks = 16;
  limits.max_epochs = 6;
  // The extended recipe space, so that every operator (the schedule one too) is drawn.
  std::vector<models::Genome> seeds = {seed("mlp"), seed("cnn"), linear_seed()};
  for (auto& s : seeds) s.designer[scheduler::kScheduleGene] = 0.7;
  scheduler::DesignMode extended;
  extended.extended_recipe = true;
  int designs = 0;
  std::set<std::string> ops;
  for (std::size_t k = 0; k < seeds.size(); ++k) {
    for (std::uint64_t lineage = 0; lineage < 28; ++lineage) {
      models::Genome genome = seeds[k];
      for (std::uint32_t generation = 0; generation < 24; ++generation) {
        const models::Genome mate = seeds[(k + 1 + generation) % seeds.size()];
        const kernels::CounterRng rng(lineage * 31 + k, kernels::rng_stream(kernels::RngUse::Design, generation), generation);
        const auto child = scheduler::design_child(genome, &mate, rng, limits, kReal, extended);
        ASSERT_EQ(child.morphism.blocks.size(), child.genome.blocks.size());
        expect_within_limits(child.genome, limits, kReal);
        if (::testing::Test::HasFailure()) FAIL() << "after " << designs << " designs: " << child.description;
        ops.insert(child.op);
        genome = child.genome;
        ++designs;
      }
    }
  }
  EXPECT_GE(designs, 2000);
  EXPECT_EQ(ops.size(), scheduler::design_operators().size());
}

TEST(Design, DesignedMorphismsAlwaysFitAndPreservingOnesPreserve) {
  // Chains on the small input, inheriting weights at every step: no morphism a design produces
  // may misfit its networks, and each one it calls function-preserving must be.
  DesignLimits limits;
  limits.max_parameters = 60'000;
  limits.max_blocks = 14;
  const std::vector<models::Genome> seeds = {kSmallMlp, kSmallCnn, genome_of({dense(3)})};
  int preserving = 0;
  for (std::size_t k = 0; k < seeds.size(); ++k) {
    for (std::uint64_t lineage = 0; lineage < 5; ++lineage) {
      models::Genome genome = seeds[k];
      for (std::uint32_t generation = 0; generation < 12; ++generation) {
        const auto child = scheduler::design_child(genome, &seeds[(k + 1) % seeds.size()],
                                                   design_rng(lineage * 7 + k, generation), limits, kSmall);
        SCOPED_TRACE(child.description);
        Inherited n = inherit(genome, child, kSmall);
        EXPECT_EQ(n.report.function_preserving, child.morphism.function_preserving);
        if (n.report.function_preserving) {
          EXPECT_LT(relative_difference(n.parent, n.child), 1e-5);
          ++preserving;
        }
        if (::testing::Test::HasFailure()) FAIL() << models::to_yaml(genome);
        genome = child.genome;
      }
    }
  }
  EXPECT_GT(preserving, 40);
}

TEST(Design, GenesSelfAdaptDeterministically) {
  const auto cnn = seed("cnn");
  const auto defaults = scheduler::default_designer_genes();
  const auto a = scheduler::design_child(cnn, nullptr, design_rng(3), {}, kReal);
  const auto b = scheduler::design_child(cnn, nullptr, design_rng(3), {}, kReal);
  EXPECT_EQ(a.genome.designer, b.genome.designer);
  ASSERT_EQ(a.genome.designer.size(), defaults.size());
  int changed = 0;
  for (const auto& [name, value] : a.genome.designer) {
    if (value != defaults.at(name)) ++changed;
    if (name.rfind("p.", 0) == 0) {
      EXPECT_GE(value, 0.01);
      EXPECT_LE(value, 10.0);
    }
  }
  EXPECT_EQ(changed, static_cast<int>(defaults.size()));
  EXPECT_GE(a.genome.designer.at("tau"), 0.05);
  EXPECT_LE(a.genome.designer.at("tau"), 0.5);
  // Genes at the clamps stay there; another draw gives other genes.
  const auto c = scheduler::design_child(cnn, nullptr, design_rng(4), {}, kReal);
  EXPECT_NE(a.genome.designer, c.genome.designer);
  // Over generations the genes drift, but stay in range.
  models::Genome g = cnn;
  for (std::uint32_t generation = 0; generation < 50; ++generation) g = scheduler::design_child(g, nullptr, design_rng(9, generation), {}, kReal).genome;
  for (const auto& [name, value] : g.designer) {
    EXPECT_TRUE(std::isfinite(value)) << name;
    const std::map<std::string, std::pair<double, double>> ranges = {
        {"step.widen", {0.1, 1.0}}, {"step.lr", {0.05, 1.0}}, {"step.recipe", {0.05, 0.5}}, {"tau", {0.05, 0.5}}};
    const auto range = ranges.find(name);
    const auto [low, high] = range != ranges.end() ? range->second : std::pair{0.01, 10.0};
    EXPECT_GE(value, low) << name;
    EXPECT_LE(value, high) << name;
  }
}

TEST(Design, CrossoverTakesRecipeFieldsFromBoth) {
  auto parent = seed("cnn"), mate = seed("mlp");
  mate.recipe.optimizer = models::Recipe::Optimizer::Sgd;
  mate.recipe.learning_rate = 0.05f;
  mate.recipe.schedule = models::Recipe::Schedule::Step;
  mate.recipe.momentum = 0.8f;
  mate.recipe.batch_size = 64;
  mate.recipe.epochs = 3;
  mate.recipe.weight_decay = 1e-4f;
  mate.recipe.augmentation = {2, true};
  mate.recipe.distill_temperature = 2.0f;
  mate.recipe.distill_mix = 0.25f;
  mate.recipe.distill_epochs = 2;
  mate.designer = {{"p.widen", 4.0}};
  parent.designer = scheduler::complete_designer_genes({});
  for (auto& [name, value] : parent.designer)
    if (name.rfind("p.", 0) == 0) value = name == "p.crossover" ? 10.0 : 0.01;
  int crossovers = 0;
  for (std::uint64_t s = 0; s < 40 && crossovers < 6; ++s) {
    const auto child = scheduler::design_child(parent, &mate, design_rng(s), {}, kReal);
    if (child.op != "crossover") continue;
    ++crossovers;
    EXPECT_TRUE(child.crossover);
    EXPECT_EQ(child.genome.blocks, parent.blocks);
    const auto& r = child.genome.recipe;
    int from_parent = 0, from_mate = 0;
    const auto count = [&](bool is_parent, bool is_mate) {
      EXPECT_TRUE(is_parent || is_mate);
      from_parent += is_parent, from_mate += is_mate;
    };
    count(r.optimizer == parent.recipe.optimizer, r.optimizer == mate.recipe.optimizer);
    count(r.learning_rate == parent.recipe.learning_rate, r.learning_rate == mate.recipe.learning_rate);
    count(r.schedule == parent.recipe.schedule, r.schedule == mate.recipe.schedule);
    count(r.momentum == parent.recipe.momentum, r.momentum == mate.recipe.momentum);
    count(r.batch_size == parent.recipe.batch_size, r.batch_size == mate.recipe.batch_size);
    count(r.epochs == parent.recipe.epochs, r.epochs == mate.recipe.epochs);
    count(r.weight_decay == parent.recipe.weight_decay, r.weight_decay == mate.recipe.weight_decay);
    count(r.augmentation.shift == parent.recipe.augmentation.shift, r.augmentation.shift == mate.recipe.augmentation.shift);
    count(r.augmentation.flip == parent.recipe.augmentation.flip, r.augmentation.flip == mate.recipe.augmentation.flip);
    count(r.distill_temperature == parent.recipe.distill_temperature, r.distill_temperature == mate.recipe.distill_temperature);
    count(r.distill_mix == parent.recipe.distill_mix, r.distill_mix == mate.recipe.distill_mix);
    count(r.distill_epochs == parent.recipe.distill_epochs, r.distill_epochs == mate.recipe.distill_epochs);
    EXPECT_GT(from_parent, 0);
    EXPECT_GT(from_mate, 0);
    // Genes are the mean of the parent's (mutated, p.widen near 0.01) and the mate's (p.widen 4).
    EXPECT_GT(child.genome.designer.at("p.widen"), 1.9);
    EXPECT_LT(child.genome.designer.at("p.widen"), 2.1);
  }
  EXPECT_GE(crossovers, 6);
  // Without a mate there is no crossover.
  for (std::uint64_t s = 0; s < 40; ++s) EXPECT_NE(scheduler::design_child(parent, nullptr, design_rng(s), {}, kReal).op, "crossover");
}

TEST(Design, LinearSeedReachesAConvNetWithinAFewDesigns) {
  const auto linear = linear_seed();
  for (std::uint64_t lineage = 0; lineage < 8; ++lineage) {
    models::Genome g = linear;
    int generation = 0;
    while (!has_conv(g) && generation < 12) g = scheduler::design_child(g, nullptr, design_rng(lineage, static_cast<std::uint64_t>(++generation)), {}, kReal).genome;
    EXPECT_TRUE(has_conv(g)) << "lineage " << lineage;
    EXPECT_LE(generation, 12);
  }
}

TEST(Design, InvalidParentIsAClearError) {
  auto bad = seed("cnn");
  bad.blocks.pop_back();  // last block no longer the classifier
  EXPECT_THROW(scheduler::design_child(bad, nullptr, design_rng(0), {}, kReal), std::invalid_argument);
  // A parent over the limits that no operator can bring back.
  DesignLimits tiny;
  tiny.max_parameters = 100;
  try {
    scheduler::design_child(seed("mlp"), nullptr, design_rng(0), tiny, kReal);
    ADD_FAILURE() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("limit"), std::string::npos) << e.what();
  }
}

TEST(Design, ChildOfASeedAboveTheEpochLimitComesBackWithinIt) {
  auto long_training = seed("mlp");
  long_training.recipe.epochs = 40;
  for (std::uint64_t s = 0; s < 30; ++s) {
    const auto child = scheduler::design_child(long_training, nullptr, design_rng(s), {}, kReal);
    expect_within_limits(child.genome, {}, kReal);
  }
}

TEST(Design, PopulationDiversity) {
  const auto cnn = seed("cnn"), mlp = seed("mlp");
  EXPECT_EQ(scheduler::population_diversity({}), 0.0);
  EXPECT_EQ(scheduler::population_diversity({cnn}), 0.0);
  EXPECT_EQ(scheduler::population_diversity({cnn, cnn, cnn}), 0.0);
  EXPECT_GT(scheduler::population_diversity({cnn, mlp}), 0.0);
  auto faster = cnn;
  faster.recipe.learning_rate = cnn.recipe.learning_rate * 10.0f;  // one decade: distance 1
  EXPECT_NEAR(scheduler::population_diversity({cnn, faster}), 1.0, 1e-6);
  auto wider = cnn;
  wider.blocks[0].channels = 48;  // one substitution
  EXPECT_NEAR(scheduler::population_diversity({cnn, wider}), 1.0, 1e-9);
  // Mean over the three pairs: (0 + 1 + 1) / 3.
  EXPECT_NEAR(scheduler::population_diversity({cnn, cnn, wider}), 2.0 / 3.0, 1e-9);
}
