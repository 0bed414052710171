// Tests of where-the-ranks-run helpers of `rsi run` (runtime/src/placement.h): the lineage's host
// list keeps host names whole (node1 is not dropped because node10 came first), the rank ranges,
// the "host (ranks a-b)" summary and the ranks.tsv table the batch script reads after a node loss.
//   build-dir/tests/test_placement            (well under a second)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../../runtime/src/placement.h"

namespace {

using rsi::runtime::distinct_hosts;
using rsi::runtime::rank_ranges;
using rsi::runtime::rank_table;
using rsi::runtime::ranks_by_host;

TEST(Placement, HostListComparesWholeNames) {
  // The old list kept a host only when its name was not a substring of the list so far.
  EXPECT_EQ(distinct_hosts({"node10", "node10", "node1", "node1"}), "node10,node1");
  EXPECT_EQ(distinct_hosts({"node1", "node10", "node1"}), "node1,node10");
  EXPECT_EQ(distinct_hosts({"gpu-a1", "a1", "gpu-a"}), "gpu-a1,a1,gpu-a");
  EXPECT_EQ(distinct_hosts({"vm", "vm"}), "vm");
  EXPECT_EQ(distinct_hosts({}), "");
}

TEST(Placement, RankRanges) {
  EXPECT_EQ(rank_ranges({0, 1}), "0-1");
  EXPECT_EQ(rank_ranges({6, 4, 7, 0, 1}), "0-1,4,6-7");
  EXPECT_EQ(rank_ranges({3}), "3");
  EXPECT_EQ(rank_ranges({2, 2, 3}), "2-3");
  EXPECT_EQ(rank_ranges({}), "");
}

TEST(Placement, RanksByHost) {
  EXPECT_EQ(ranks_by_host({"node1", "node1", "node2", "node2"}), "node1 (ranks 0-1), node2 (ranks 2-3)");
  // Round-robin placement (mpirun --map-by node) and a one-rank host.
  EXPECT_EQ(ranks_by_host({"node1", "node10", "node1", "node10", "node3"}),
            "node1 (ranks 0,2), node10 (ranks 1,3), node3 (rank 4)");
  EXPECT_EQ(ranks_by_host({"vm"}), "vm (rank 0)");
}

TEST(Placement, RankTable) {
  EXPECT_EQ(rank_table({"node1", "node2"}, {101, 202}), "rank\thost\tpid\n0\tnode1\t101\n1\tnode2\t202\n");
  EXPECT_EQ(rank_table({"node1"}, {}), "rank\thost\tpid\n0\tnode1\t-\n");
}

}  // namespace
