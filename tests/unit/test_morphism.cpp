// Weight-inheritance tests (models/morphism.h): every function-preserving morphism (copy, Net2Net
// widen of dense and conv blocks through batch norm / pool / flatten, identity deepening, kernel
// growth) gives a child whose evaluation-mode logits equal its parent's on random inputs; the
// others copy what they say and leave the rest fresh; misfitting morphisms are clear errors.
//   ctest --test-dir build -R Morphism
#include <gtest/gtest.h>

#include "blocks.h"

#include <algorithm>
#include <cmath>

#include "rsi/kernels/rng.h"
#include "rsi/models/morphism.h"
#include "rsi/models/network.h"

using namespace rsi;
using models::Block;
using models::BlockOrigin;
using models::Morphism;
using Origin = BlockOrigin::Kind;
using namespace rsi::test_blocks;

namespace {

const models::InputSpec kSmall{1, 8, 8, 3};

models::Network random_network(const models::Genome& genome, std::uint64_t seed, const models::InputSpec& input = kSmall) {
  return test_blocks::random_network(genome, input, seed);
}

std::vector<float> random_inputs(int N, int pixels, std::uint64_t seed) {
  const kernels::CounterRng rng(seed, 77);
  std::vector<float> x(static_cast<std::size_t>(N) * pixels);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(i);
  return x;
}

std::vector<float> logits(models::Network& net, const std::vector<float>& x, int N) {
  const auto& out = net.forward(x.data(), N, {});
  return {out.data(), out.data() + out.numel()};
}

// Largest |child - parent| logit difference relative to the parent's logit scale (at least 1).
double relative_difference(models::Network& parent, models::Network& child, int N = 6) {
  const auto x = random_inputs(N, parent.input().height * parent.input().width, 5);
  const auto a = logits(parent, x, N), b = logits(child, x, N);
  EXPECT_EQ(a.size(), b.size());
  double scale = 1.0, diff = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, static_cast<double>(std::abs(a[i])));
    diff = std::max(diff, static_cast<double>(std::abs(a[i] - b[i])));
  }
  return diff / scale;
}

Morphism copies_with(const models::Genome& child, std::vector<std::pair<int, BlockOrigin>> overrides) {
  Morphism m = models::copy_morphism(child);
  for (const auto& [i, origin] : overrides) m.blocks[static_cast<std::size_t>(i)] = origin;
  return m;
}

// Parent and child with the morphism applied; expects the child to compute the parent's function.
void expect_preserved(const models::Genome& parent_genome, const models::Genome& child_genome, const Morphism& m,
                      const models::InputSpec& input = kSmall) {
  models::Network parent = random_network(parent_genome, 1, input);
  models::Network child(child_genome, input);
  child.initialize(2, 8);
  const models::InheritReport report = models::inherit_weights(parent, child, m);
  EXPECT_TRUE(report.function_preserving);
  EXPECT_EQ(report.inherited + report.fresh, child.parameter_count());
  EXPECT_LT(relative_difference(parent, child), 1e-5);
}

std::vector<int> unit_map(int old_width, int new_width, std::uint64_t seed) {
  const kernels::CounterRng rng(seed, 3);
  std::vector<int> map;
  for (int j = 0; j < new_width; ++j)
    map.push_back(j < old_width ? j : static_cast<int>(rng.below(static_cast<std::uint64_t>(j), static_cast<std::uint32_t>(old_width))));
  return map;
}

}  // namespace

TEST(Morphism, CopyOfEveryBlockKindIsExact) {
  const auto g = genome_of({conv(4), batchnorm(), act(kernels::Activation::GELU), residual(3), pool(), conv(5, 1),
                            act(kernels::Activation::Tanh), dense(7), batchnorm(), dropout(0.3f), act(), dense(3)});
  models::Network parent = random_network(g, 1);
  models::Network child(g, kSmall);
  child.initialize(2, 8);
  const auto report = models::inherit_weights(parent, child, models::copy_morphism(g));
  EXPECT_TRUE(report.function_preserving);
  EXPECT_EQ(report.inherited, child.parameter_count());
  EXPECT_EQ(report.fresh, 0);
  EXPECT_TRUE(std::equal(parent.parameters().span().begin(), parent.parameters().span().end(),
                         child.parameters().span().begin()));
  EXPECT_TRUE(std::equal(parent.state().span().begin(), parent.state().span().end(), child.state().span().begin()));
  EXPECT_EQ(relative_difference(parent, child), 0.0);
}

TEST(Morphism, FreshMorphismInheritsNothing) {
  const auto g = genome_of({dense(6), act(), dense(3)});
  models::Network parent = random_network(g, 1);
  models::Network child(g, kSmall);
  child.initialize(2, 8);
  const std::vector<float> before(child.parameters().span().begin(), child.parameters().span().end());
  const auto report = models::inherit_weights(parent, child, models::fresh_morphism(g));
  EXPECT_FALSE(report.function_preserving);
  EXPECT_EQ(report.inherited, 0);
  EXPECT_EQ(report.fresh, child.parameter_count());
  EXPECT_TRUE(std::equal(before.begin(), before.end(), child.parameters().span().begin()));
}

TEST(Morphism, WidenDenseNet2NetPreservesFunction) {
  const auto parent = genome_of({dense(5), act(), dense(4), act(), dense(3)});
  auto child = parent;
  child.blocks[2].units = 9;
  Morphism m = copies_with(child, {{2, {Origin::Widened, 2}}, {4, {Origin::Consumer, 4}}});
  m.unit_map = unit_map(4, 9, 1);
  expect_preserved(parent, child, m);
}

TEST(Morphism, WidenDenseThroughBatchNormAndDropout) {
  const auto parent = genome_of({dense(5), batchnorm(), act(), dropout(0.2f), dense(3)});
  auto child = parent;
  child.blocks[0].units = 8;
  Morphism m = copies_with(child, {{0, {Origin::Widened, 0}}, {4, {Origin::Consumer, 4}}});
  m.unit_map = unit_map(5, 8, 2);
  expect_preserved(parent, child, m);
}

TEST(Morphism, WidenConvThroughPoolAndFlattenIntoDense) {
  const auto parent = genome_of({conv(4), act(), pool(), dense(3)});
  auto child = parent;
  child.blocks[0].channels = 7;
  Morphism m = copies_with(child, {{0, {Origin::Widened, 0}}, {3, {Origin::Consumer, 3}}});
  m.unit_map = unit_map(4, 7, 3);
  expect_preserved(parent, child, m);
}

TEST(Morphism, WidenConvWithBatchNormIntoConv) {
  const auto parent = genome_of({conv(4), batchnorm(), act(), conv(5, 5), act(), pool(), dense(3)});
  auto child = parent;
  child.blocks[0].channels = 6;
  Morphism m = copies_with(child, {{0, {Origin::Widened, 0}}, {3, {Origin::Consumer, 3}}});
  m.unit_map = unit_map(4, 6, 4);
  expect_preserved(parent, child, m);
}

TEST(Morphism, WidenConvOnRealInput) {
  const models::InputSpec real{1, 28, 28, 10};
  const auto parent = genome_of({conv(6), act(), pool(), conv(8), batchnorm(), act(), pool(), dense(16), act(), dense(10)});
  auto child = parent;
  child.blocks[3].channels = 12;
  Morphism m = copies_with(child, {{3, {Origin::Widened, 3}}, {7, {Origin::Consumer, 7}}});
  m.unit_map = unit_map(8, 12, 5);
  expect_preserved(parent, child, m, real);
}

TEST(Morphism, IdentityDenseConvAndResidualInsertions) {
  // dense(F) + relu after a relu.
  const auto mlp = genome_of({dense(6), act(), dense(3)});
  auto deeper = mlp;
  deeper.blocks.insert(deeper.blocks.begin() + 2, {dense(6), act()});
  expect_preserved(mlp, deeper,
                   {{{Origin::Copy, 0}, {Origin::Copy, 1}, {Origin::Identity, -1}, {Origin::Identity, -1}, {Origin::Copy, 2}},
                    {},
                    true});
  // conv(C, k) + relu after a spatial relu, for every kernel size.
  const auto cnn = genome_of({conv(4), act(), pool(), dense(3)});
  for (int k : {1, 3, 5}) {
    auto with_conv = cnn;
    with_conv.blocks.insert(with_conv.blocks.begin() + 2, {conv(4, k), act()});
    expect_preserved(cnn, with_conv,
                     {{{Origin::Copy, 0}, {Origin::Copy, 1}, {Origin::Identity, -1}, {Origin::Identity, -1},
                       {Origin::Copy, 2}, {Origin::Copy, 3}},
                      {},
                      true});
  }
  // A residual block: its fresh init (bn2.gamma = 0) is the identity.
  auto with_residual = cnn;
  with_residual.blocks.insert(with_residual.blocks.begin() + 2, residual(3));
  expect_preserved(cnn, with_residual,
                   {{{Origin::Copy, 0}, {Origin::Copy, 1}, {Origin::Identity, -1}, {Origin::Copy, 2}, {Origin::Copy, 3}},
                    {},
                    true});
}

TEST(Morphism, GrownKernelPreservesFunction) {
  for (int stride : {1, 2}) {
    for (auto [from, to] : {std::pair{3, 5}, std::pair{1, 3}, std::pair{1, 5}}) {
      const auto parent = genome_of({conv(4, from, stride), act(), conv(3, 3), act(), dense(3)});
      auto child = parent;
      child.blocks[0].kernel = to;
      expect_preserved(parent, child, copies_with(child, {{0, {Origin::GrownKernel, 0}}}));
    }
  }
}

TEST(Morphism, IdentityThatCannotHoldIsNotFunctionPreserving) {
  const auto parent = genome_of({dense(6), act(), dense(3)});
  auto child = parent;
  child.blocks.insert(child.blocks.begin() + 2, batchnorm());
  models::Network p = random_network(parent, 1);
  models::Network c(child, kSmall);
  c.initialize(2, 8);
  const Morphism m{{{Origin::Copy, 0}, {Origin::Copy, 1}, {Origin::Identity, -1}, {Origin::Copy, 2}}, {}, true};
  EXPECT_FALSE(models::inherit_weights(p, c, m).function_preserving);
}

TEST(Morphism, NonPreservingEditCopiesOnlyWhatItSays) {
  // Narrow the hidden dense: it and its consumer are fresh, the rest copied.
  const auto parent = genome_of({conv(4), act(), pool(), dense(8), act(), dense(3)});
  auto child = parent;
  child.blocks[3].units = 5;
  const Morphism m = copies_with(child, {{3, {Origin::Fresh, -1}}, {5, {Origin::Fresh, -1}}});
  models::Network p = random_network(parent, 1);
  models::Network c(child, kSmall);
  c.initialize(2, 8);
  const auto report = models::inherit_weights(p, c, m);
  EXPECT_FALSE(report.function_preserving);
  EXPECT_EQ(report.inherited, 4 * 9 + 4);
  EXPECT_EQ(report.fresh, c.parameter_count() - report.inherited);
  for (std::int64_t i = 0; i < 40; ++i) EXPECT_EQ(c.parameters()[i], p.parameters()[i]);  // block0.conv
}

TEST(Morphism, MisfitsAreClearErrors) {
  const auto parent = genome_of({dense(6), act(), dense(3)});
  models::Network p = random_network(parent, 1);
  const auto expect_error = [&](const models::Genome& child, const Morphism& m, const std::string& needle) {
    models::Network c(child, kSmall);
    c.initialize(2, 8);
    try {
      models::inherit_weights(p, c, m);
      ADD_FAILURE() << "expected std::invalid_argument mentioning '" << needle << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto wider = parent;
  wider.blocks[0].units = 8;
  // Copy of a changed block.
  expect_error(wider, models::copy_morphism(wider), "child block 0 (dense");
  // Widened without a consumer.
  Morphism no_consumer = copies_with(wider, {{0, {Origin::Widened, 0}}});
  no_consumer.unit_map = unit_map(6, 8, 1);
  expect_error(wider, no_consumer, "Consumer");
  // A unit map that drops a parent unit.
  Morphism dropping = copies_with(wider, {{0, {Origin::Widened, 0}}, {2, {Origin::Consumer, 2}}});
  dropping.unit_map = {0, 1, 2, 3, 4, 4, 4, 4};
  expect_error(wider, dropping, "drops parent unit 5");
  // A morphism for another genome.
  expect_error(parent, models::copy_morphism(genome_of({dense(6), dense(3)})),
               "describes 2 blocks");
  // A parent block index out of range.
  expect_error(parent, copies_with(parent, {{2, {Origin::Copy, 9}}}), "parent_block 9");
  // A residual cannot consume a widened conv.
  const auto cnn = genome_of({conv(4), act(), residual(3), pool(), dense(3)});
  models::Network pc = random_network(cnn, 1);
  auto wide_cnn = cnn;
  wide_cnn.blocks[0].channels = 6;
  Morphism into_residual = copies_with(wide_cnn, {{0, {Origin::Widened, 0}}});
  into_residual.unit_map = unit_map(4, 6, 1);
  models::Network c(wide_cnn, kSmall);
  c.initialize(2, 8);
  EXPECT_THROW(models::inherit_weights(pc, c, into_residual), std::invalid_argument);
}

TEST(Morphism, WidenReplicatesIncomingAndSplitsOutgoingWeights) {
  const auto parent = genome_of({dense(2), act(), dense(3)});
  auto child = parent;
  child.blocks[0].units = 3;
  Morphism m = copies_with(child, {{0, {Origin::Widened, 0}}, {2, {Origin::Consumer, 2}}});
  m.unit_map = {0, 1, 1};
  models::Network p = random_network(parent, 1);
  models::Network c(child, kSmall);
  c.initialize(2, 8);
  models::inherit_weights(p, c, m);
  const std::int64_t in = 64;
  // block0.dense.weight [3][64]: row 2 copies parent row 1.
  for (std::int64_t i = 0; i < in; ++i) EXPECT_EQ(c.parameters()[2 * in + i], p.parameters()[in + i]);
  // block2.dense.weight [3][3]: columns 1 and 2 share parent column 1 by halves.
  const std::int64_t pw = 2 * in + 2, cw = 3 * in + 3;
  for (int o = 0; o < 3; ++o) {
    EXPECT_EQ(c.parameters()[cw + o * 3 + 0], p.parameters()[pw + o * 2 + 0]);
    EXPECT_FLOAT_EQ(c.parameters()[cw + o * 3 + 1], 0.5f * p.parameters()[pw + o * 2 + 1]);
    EXPECT_FLOAT_EQ(c.parameters()[cw + o * 3 + 2], 0.5f * p.parameters()[pw + o * 2 + 1]);
  }
}
