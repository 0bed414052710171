// The determinism contract across layouts: the RSI loop on the surrogate task gives the same
// lineage (ids, genomes, metrics, digests) on every rank count and trainer-group size as on one
// rank alone, whatever order the results arrive in.
//   mpirun -n 4 --oversubscribe build-dir/tests/test_loop_layouts
// ranks: 2 4
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "mpi_gtest.h"
#include "rsi/collective/communicator.h"
#include "rsi/models/genome.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/record.h"

namespace {

using rsi::scheduler::GenerationRecord;
using rsi::scheduler::LoopConfig;
using rsi::scheduler::MemorySink;
using rsi::scheduler::ModelRecord;
using Records = std::vector<GenerationRecord>;

LoopConfig surrogate_config(int group_size) {
  const std::string genomes = std::string(RSI_SOURCE_DIR) + "/experiments/genomes/";
  LoopConfig c;
  c.seed = 5;
  c.generations = 4;
  c.population_size = 4;
  c.children_per_generation = 6;
  c.task.kind = rsi::scheduler::TaskSpec::Kind::Surrogate;
  // A small cost so tasks overlap and results arrive out of id order.
  c.task.surrogate_cost_seconds = 0.002;
  c.task.surrogate_noise = 0.01;
  c.seeds = {rsi::models::load_genome(genomes + "linear.yaml"), rsi::models::load_genome(genomes + "mlp.yaml")};
  c.group_size = group_size;
  return c;
}

// Collective: every rank of `world` calls it; only rank 0 gets the records.
Records run(const LoopConfig& config, rsi::collective::Communicator& world) {
  MemorySink sink;
  rsi::scheduler::run_loop(config, world, {&sink});
  world.barrier();
  return sink.records;
}

void expect_same_lineage(const Records& a, const Records& b) {
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t g = 0; g < a.size(); ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    EXPECT_EQ(a[g].population, b[g].population);
    EXPECT_EQ(a[g].best_id, b[g].best_id);
    EXPECT_EQ(a[g].gain, b[g].gain);
    EXPECT_EQ(a[g].design_skill, b[g].design_skill);
    EXPECT_EQ(a[g].diversity, b[g].diversity);
    ASSERT_EQ(a[g].children.size(), b[g].children.size());
    for (std::size_t i = 0; i < a[g].children.size(); ++i) {
      const ModelRecord &x = a[g].children[i], &y = b[g].children[i];
      SCOPED_TRACE("model " + std::to_string(x.id));
      EXPECT_EQ(x.id, y.id);
      EXPECT_EQ(x.parents, y.parents);
      EXPECT_EQ(x.genome_yaml, y.genome_yaml);
      EXPECT_EQ(x.op, y.op);
      EXPECT_EQ(x.status, y.status);
      EXPECT_EQ(x.failure, y.failure);
      EXPECT_EQ(x.inherited, y.inherited);
      EXPECT_EQ(x.metrics.val_accuracy, y.metrics.val_accuracy);
      EXPECT_EQ(x.metrics.test_accuracy, y.metrics.test_accuracy);
      EXPECT_EQ(x.metrics.parameters, y.metrics.parameters);
      EXPECT_EQ(x.metrics.flops, y.metrics.flops);
      EXPECT_EQ(x.weights_digest, y.weights_digest);
    }
  }
}

void expect_layout_matches_one_rank(int group_size) {
  auto world = rsi::collective::make_mpi_world_communicator();
  if (world->size() % group_size != 0) GTEST_SKIP() << group_size << " does not divide " << world->size() << " ranks";
  const LoopConfig config = surrogate_config(group_size);
  const Records distributed = run(config, *world);
  if (world->rank() != 0) {
    EXPECT_TRUE(distributed.empty()) << "sinks are used on the coordinator only";
    return;
  }
  ASSERT_EQ(distributed.size(), static_cast<std::size_t>(config.generations + 1));
  auto local = rsi::collective::make_local_communicator();
  LoopConfig alone = config;
  alone.group_size = 1;
  alone.task.surrogate_cost_seconds = 0.0;  // the cost is spent waiting; it does not change outcomes
  MemorySink sink;
  rsi::scheduler::run_loop(alone, *local, {&sink});
  SCOPED_TRACE(std::to_string(world->size()) + " ranks in groups of " + std::to_string(group_size) +
               " against 1 rank");
  expect_same_lineage(distributed, sink.records);
}

TEST(LoopLayouts, GroupsOfOneMatchOneRank) { expect_layout_matches_one_rank(1); }

TEST(LoopLayouts, GroupsOfTwoMatchOneRank) {
  auto world = rsi::collective::make_mpi_world_communicator();
  if (world->size() < 4) GTEST_SKIP() << "groups of two need 4 ranks for more than one group";
  expect_layout_matches_one_rank(2);
}

}  // namespace
