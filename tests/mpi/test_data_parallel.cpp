// ranks: 2
// Data-parallel training over a trainer group (rsi::models::train with TrainOptions::group) against
// the same training on one rank with the same global batch.
//
// The requirement: "training a child on a group of 2 gives the same weights as on 1 rank with the
// same global batch (bitwise where the reduction order is fixed; else within 1e-6 relative, and say
// which in the test)".
//
// Which it is: a TOLERANCE, not bitwise. On one rank a weight gradient is one GEMM whose K-sum runs
// over the whole batch; on a group of 2 each rank sums its half of the rows and the all-reduce adds
// the two halves, a different rounding order. Measured on this genome (conv, dense, spatial and
// flat dropout, shift+flip augmentation, an odd global batch so the shards differ in size, and a
// last batch of one row so one rank's shard is empty), as max |Δp| / max |p| over the worst
// parameter segment (Open MPI 4.1, OpenBLAS then, x86-64 AVX2; the figures are similar with our GEMM):
//   after 1 step:              SGD+momentum 6.0e-8, Adam 1.2e-7   → asserted ≤ 1e-6 (the requirement)
//   after 12 steps (4 epochs): SGD+momentum 1.1e-7, Adam 9.6e-8   → asserted ≤ 1e-5, a looser bound
//     kept on purpose: over several steps a rounding difference can flip a ReLU or max-pool tie
//     and then grows with training
// (each run prints its figures as [info] lines). What IS bitwise: the two ranks of the group hold
// identical parameters after training (same all-reduce result, same optimizer step), the one-rank
// runs agree across ranks, and a repeated group run gives identical weights.
//
// Batch norm is left out of the strict comparison: each shard normalises with its own statistics
// (as PyTorch DDP without SyncBN), so a group of 2 trains a different function by design. It is
// tested separately: the run stays finite and both ranks end with identical parameters and state.
//
// Run (after building the test_data_parallel target):
//   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
//   mpirun -n 2 --oversubscribe build/tests/test_data_parallel
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "mpi_gtest.h"
#include "rsi/collective/communicator.h"
#include "rsi/kernels/rng.h"
#include "rsi/models/data.h"
#include "rsi/models/genome.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"

namespace {

using rsi::collective::Communicator;
using rsi::models::Block;
using rsi::models::Dataset;
using rsi::models::Genome;
using rsi::models::Network;
using rsi::models::TrainOptions;

const rsi::models::InputSpec kSpec{1, 8, 8, 3};
constexpr std::uint64_t kSeed = 20240611, kModelId = 7;

// Bounds of the one-rank vs group-of-2 comparison (max |Δp| / max |p| over each parameter segment).
constexpr double kOneStepBound = 1e-6;
constexpr double kManyStepBound = 1e-5;

Communicator& world() {
  static const std::unique_ptr<Communicator> comm = rsi::collective::make_mpi_world_communicator();
  return *comm;
}

Block conv(int channels) {
  Block b;
  b.kind = Block::Kind::Conv, b.channels = channels, b.kernel = 3;
  return b;
}
Block dense(int units) {
  Block b;
  b.kind = Block::Kind::Dense, b.units = units;
  return b;
}
Block relu() {
  Block b;
  b.kind = Block::Kind::Activation, b.activation = rsi::kernels::Activation::ReLU;
  return b;
}
Block max_pool() {
  Block b;
  b.kind = Block::Kind::Pool, b.pool_kind = Block::PoolKind::Max, b.size = 2, b.stride = 2;
  return b;
}
Block dropout(float rate) {
  Block b;
  b.kind = Block::Kind::Dropout, b.rate = rate;
  return b;
}
Block batchnorm() {
  Block b;
  b.kind = Block::Kind::BatchNorm;
  return b;
}

// conv → relu → spatial dropout → pool → dense hidden → relu → flat dropout → dense classes, with
// shift and flip augmentation. Batch 33: shards of 16 and 17 rows; 100 examples make the last
// batch of each epoch a single row (rank 0's shard is empty there).
Genome strict_genome(rsi::models::Recipe::Optimizer optimizer) {
  Genome g;
  g.blocks = {conv(4), relu(), dropout(0.2f), max_pool(), dense(16), relu(), dropout(0.3f), dense(kSpec.classes)};
  g.recipe.optimizer = optimizer;
  g.recipe.learning_rate = optimizer == rsi::models::Recipe::Optimizer::Sgd ? 0.05f : 3e-3f;
  g.recipe.momentum = 0.9f;
  g.recipe.batch_size = 33;
  g.recipe.epochs = 100;
  g.recipe.augmentation.shift = 1;
  g.recipe.augmentation.flip = true;
  rsi::models::validate(g, kSpec);
  return g;
}

// A learnable synthetic set: class c has a bright horizontal band at rows 2c..2c+1 plus noise;
// labels are spread so every batch mixes the classes.
Dataset synthetic(std::int64_t count, std::uint64_t salt) {
  Dataset d;
  d.rows = kSpec.height, d.cols = kSpec.width;
  d.images.resize(static_cast<std::size_t>(count * d.pixels()));
  d.labels.resize(static_cast<std::size_t>(count));
  const rsi::kernels::CounterRng rng(salt, 99);
  for (std::int64_t i = 0; i < count; ++i) {
    const int label = static_cast<int>((i * 7 + static_cast<std::int64_t>(salt)) % kSpec.classes);
    d.labels[static_cast<std::size_t>(i)] = label;
    for (int p = 0; p < d.pixels(); ++p) {
      const int row = p / d.cols;
      const float band = row / 2 == label ? 0.7f : 0.0f;
      d.images[static_cast<std::size_t>(i * d.pixels() + p)] =
          std::clamp(band + 0.3f * rng.uniform(static_cast<std::uint64_t>(i * d.pixels() + p)), 0.0f, 1.0f);
    }
  }
  return d;
}

struct Trained {
  std::vector<float> params, state;
  rsi::models::TrainResult result;
};

Trained train_copy(const Genome& g, const Dataset& data, Communicator& group, std::int64_t steps,
                   const TrainOptions& extra = {}) {
  Network net(g, kSpec);
  net.initialize(kSeed, kModelId);
  TrainOptions o = extra;
  o.seed = kSeed;
  o.model_id = kModelId;
  o.max_steps = steps;
  o.group = &group;
  o.bucket_floats = 257;  // several buckets, the last one short
  Trained t;
  t.result = rsi::models::train(net, data, o);
  t.params.assign(net.parameters().data(), net.parameters().data() + net.parameter_count());
  t.state.assign(net.state().data(), net.state().data() + net.state().numel());
  return t;
}

// max over parameter segments of max |a−b| / max |a| (the segment's scale), and where it is.
struct Difference {
  double relative = 0.0;
  std::string segment;
  std::int64_t differing = 0;  // elements not bitwise equal
};
Difference compare(const Genome& g, const std::vector<float>& a, const std::vector<float>& b) {
  const Network shape(g, kSpec);
  Difference d;
  for (const rsi::models::ParamSegment& s : shape.segments()) {
    double scale = 0.0, worst = 0.0;
    for (std::int64_t i = s.offset; i < s.offset + s.size; ++i) {
      const auto k = static_cast<std::size_t>(i);
      scale = std::max(scale, std::abs(static_cast<double>(a[k])));
      worst = std::max(worst, std::abs(static_cast<double>(a[k]) - static_cast<double>(b[k])));
      d.differing += a[k] != b[k];
    }
    const double relative = scale > 0 ? worst / scale : worst;
    if (relative >= d.relative) d.relative = relative, d.segment = s.name;
  }
  return d;
}

// Rank 0's copy of `v` on every rank (raw MPI: independent of the code under test).
std::vector<float> rank0_copy(std::vector<float> v) {
  MPI_Bcast(v.data(), static_cast<int>(v.size()), MPI_FLOAT, 0, MPI_COMM_WORLD);
  return v;
}
bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool all_finite(const std::vector<float>& v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

void info(const char* what, std::int64_t steps, const Difference& d) {
  if (world().rank() == 0)
    std::printf("[info] %s, %lld step(s): max |dp|/max|p| = %.3g (in %s), %lld elements not bitwise equal\n", what,
                static_cast<long long>(steps), d.relative, d.segment.c_str(), static_cast<long long>(d.differing));
}

void check_group_matches_one_rank(rsi::models::Recipe::Optimizer optimizer, const char* name) {
  ASSERT_EQ(world().size(), 2) << "this test is written for a group of 2 (run with mpirun -n 2)";
  const Genome g = strict_genome(optimizer);
  const Dataset data = synthetic(100, 1);
  const std::unique_ptr<Communicator> local = rsi::collective::make_local_communicator();
  for (std::int64_t steps : {std::int64_t{1}, std::int64_t{12}}) {
    const Trained group = train_copy(g, data, world(), steps);
    const Trained alone = train_copy(g, data, *local, steps);
    EXPECT_EQ(group.result.steps, steps);
    EXPECT_EQ(alone.result.steps, steps);
    EXPECT_FALSE(group.result.diverged);
    EXPECT_TRUE(all_finite(group.params));
    // Bitwise: the two ranks of the group hold the same weights; the one-rank runs agree too.
    EXPECT_TRUE(bitwise_equal(group.params, rank0_copy(group.params))) << name << ": ranks of the group differ";
    EXPECT_TRUE(bitwise_equal(alone.params, rank0_copy(alone.params))) << name << ": one-rank runs differ by rank";
    // Tolerance: the group against one rank with the same global batch.
    const Difference d = compare(g, alone.params, group.params);
    info(name, steps, d);
    const double bound = steps == 1 ? kOneStepBound : kManyStepBound;
    EXPECT_LE(d.relative, bound) << name << " after " << steps << " step(s): worst segment " << d.segment;
    // The global loss the group reports is the one-rank loss (summed over shards).
    EXPECT_NEAR(group.result.final_loss, alone.result.final_loss, 1e-5 * std::abs(alone.result.final_loss))
        << name << " after " << steps << " step(s)";
  }
}

TEST(DataParallel, GroupOfTwoMatchesOneRankSgd) {
  check_group_matches_one_rank(rsi::models::Recipe::Optimizer::Sgd, "sgd+momentum");
}

TEST(DataParallel, GroupOfTwoMatchesOneRankAdam) {
  check_group_matches_one_rank(rsi::models::Recipe::Optimizer::Adam, "adam");
}

TEST(DataParallel, GroupRunIsBitwiseRepeatable) {
  const Genome g = strict_genome(rsi::models::Recipe::Optimizer::Adam);
  const Dataset data = synthetic(100, 1);
  const Trained first = train_copy(g, data, world(), 6);
  const Trained second = train_copy(g, data, world(), 6);
  EXPECT_TRUE(bitwise_equal(first.params, second.params));
}

// The gradient all-reduce goes bucket by bucket while the backward pass runs (GradientReducer): most
// buckets are issued before the lower layers finish, and on a group of 2 (a + b needs no order)
// the weights are bitwise those of one bucket reduced after the whole backward pass.
TEST(DataParallel, BucketsOverlapTheBackwardPassWithoutChangingTheWeights) {
  const Genome g = strict_genome(rsi::models::Recipe::Optimizer::Adam);
  const Dataset data = synthetic(100, 1);
  const Trained bucketed = train_copy(g, data, world(), 6);  // 257 floats per bucket
  TrainOptions one_bucket;
  one_bucket.bucket_floats = std::int64_t{1} << 30;
  Network shape(g, kSpec);
  const std::int64_t buckets = (shape.parameter_count() + 256) / 257;
  ASSERT_GT(buckets, 3);
  EXPECT_EQ(bucketed.result.buckets_reduced, 6 * buckets);
  EXPECT_GT(bucketed.result.buckets_overlapped, 6 * buckets / 2) << "most buckets should start before backward ends";
  Network net(g, kSpec);
  net.initialize(kSeed, kModelId);
  one_bucket.seed = kSeed;
  one_bucket.model_id = kModelId;
  one_bucket.max_steps = 6;
  one_bucket.group = &world();
  const rsi::models::TrainResult whole = rsi::models::train(net, data, one_bucket);
  EXPECT_EQ(whole.buckets_reduced, 6);
  EXPECT_EQ(whole.buckets_overlapped, 0);
  const std::vector<float> params(net.parameters().data(), net.parameters().data() + net.parameter_count());
  EXPECT_TRUE(bitwise_equal(bucketed.params, params));
}

// Distillation mixes labeled examples and an unlabeled pool in one global batch, and the trainer
// puts labeled rows first (the cross-entropy call takes a prefix). Augmentation and dropout must
// still be keyed by the same row on one rank and on a group, or the masks differ (with dropout the
// difference is then ~1e-2 after one step, not ~1e-7: the with-dropout case guards that).
void check_distillation(bool with_dropout, const char* name) {
  Genome g = strict_genome(rsi::models::Recipe::Optimizer::Sgd);
  if (!with_dropout)
    std::erase_if(g.blocks, [](const Block& b) { return b.kind == Block::Kind::Dropout; });
  g.recipe.distill_epochs = 1;
  g.recipe.distill_mix = 0.5f;
  g.recipe.distill_temperature = 2.0f;
  g.recipe.batch_size = 20;
  const Dataset labeled = synthetic(60, 1), pool = synthetic(40, 5);
  TrainOptions extra;
  extra.unlabeled = &pool;
  // A fixed teacher: logit c is the mean brightness of band c (what the synthetic classes encode).
  extra.teacher = [](const float* x, int n, float* logits) {
    const int pixels = kSpec.width * kSpec.height;
    for (int i = 0; i < n; ++i)
      for (int c = 0; c < kSpec.classes; ++c) {
        float sum = 0.0f;
        for (int p = 2 * c * kSpec.width; p < (2 * c + 2) * kSpec.width; ++p) sum += x[i * pixels + p];
        logits[i * kSpec.classes + c] = 4.0f * sum / static_cast<float>(2 * kSpec.width);
      }
  };
  extra.epochs = 0;  // the distillation phase alone: (60 + 40) / 20 = 5 steps
  const std::unique_ptr<Communicator> local = rsi::collective::make_local_communicator();
  for (std::int64_t steps : {std::int64_t{1}, std::int64_t{5}}) {
    const Trained group = train_copy(g, labeled, world(), steps, extra);
    const Trained alone = train_copy(g, labeled, *local, steps, extra);
    EXPECT_EQ(group.result.steps, steps);
    EXPECT_TRUE(bitwise_equal(group.params, rank0_copy(group.params))) << name << ": ranks of the group differ";
    const Difference d = compare(g, alone.params, group.params);
    info(name, steps, d);
    EXPECT_LE(d.relative, steps == 1 ? kOneStepBound : kManyStepBound)
        << name << " after " << steps << " step(s): worst segment " << d.segment;
  }
}

TEST(DataParallel, DistillationGroupOfTwoMatchesOneRank) { check_distillation(false, "distill sgd"); }

TEST(DataParallel, DistillationWithDropoutGroupOfTwoMatchesOneRank) {
  check_distillation(true, "distill sgd + dropout");
}

// Batch norm: per-shard statistics by design, so no comparison with one rank; the group run stays
// finite and both ranks end with identical parameters and running statistics.
TEST(DataParallel, BatchNormGroupStaysFiniteAndRanksAgree) {
  Genome g;
  g.blocks = {conv(4), batchnorm(), relu(), max_pool(), dense(16), batchnorm(), relu(), dropout(0.2f), dense(kSpec.classes)};
  g.recipe.optimizer = rsi::models::Recipe::Optimizer::Adam;
  g.recipe.learning_rate = 3e-3f;
  g.recipe.batch_size = 33;
  g.recipe.augmentation.shift = 1;
  rsi::models::validate(g, kSpec);
  const Dataset data = synthetic(100, 1);
  TrainOptions extra;
  extra.epochs = 3;
  const Trained group = train_copy(g, data, world(), 12, extra);
  EXPECT_EQ(group.result.steps, 12);
  EXPECT_FALSE(group.result.diverged);
  EXPECT_TRUE(std::isfinite(group.result.final_loss));
  EXPECT_TRUE(all_finite(group.params));
  EXPECT_TRUE(all_finite(group.state));
  EXPECT_FALSE(group.state.empty());
  EXPECT_TRUE(bitwise_equal(group.params, rank0_copy(group.params))) << "parameters differ between ranks";
  EXPECT_TRUE(bitwise_equal(group.state, rank0_copy(group.state))) << "running statistics differ between ranks";
}

// evaluate() with a group: each rank takes its share and the counts are summed.
TEST(DataParallel, GroupEvaluationMatchesOneRank) {
  const Genome g = strict_genome(rsi::models::Recipe::Optimizer::Adam);
  const Dataset data = synthetic(101, 3);
  Network net(g, kSpec);
  net.initialize(kSeed, kModelId);
  const rsi::models::Evaluation alone = rsi::models::evaluate(net, data, 16);
  const rsi::models::Evaluation group = rsi::models::evaluate(net, data, 16, &world());
  EXPECT_EQ(group.count, alone.count);
  EXPECT_EQ(group.accuracy, alone.accuracy);
  EXPECT_EQ(group.per_class, alone.per_class);
  EXPECT_NEAR(group.mean_loss, alone.mean_loss, 1e-6 * std::abs(alone.mean_loss));
}

}  // namespace
