// Where the ranks of a job run: the distinct host list the lineage records, the "host (ranks a-b)"
// summary `rsi run` prints at start, and the rank table it writes to <run dir>/ranks.tsv (the batch
// script reads it to name the ranks of a lost node). Pure functions of the rank -> host table, so
// tests/unit/test_placement.cpp checks them without MPI.
#pragma once

#include <string>
#include <vector>

namespace rsi::runtime {

// The distinct host names in first-seen order, comma-separated; names compare whole ("node1" and
// "node10" are two hosts whichever comes first).
std::string distinct_hosts(const std::vector<std::string>& host_of_rank);

// "0-1,4,6-7": sorted rank numbers with runs collapsed.
std::string rank_ranges(std::vector<int> ranks);

// "node1 (ranks 0-1), node2 (ranks 2-3)": every host in first-seen order with its ranks.
std::string ranks_by_host(const std::vector<std::string>& host_of_rank);

// The rank table: a header line "rank\thost\tpid", then one line per rank.
std::string rank_table(const std::vector<std::string>& host_of_rank, const std::vector<int>& pid_of_rank);

}  // namespace rsi::runtime
