// Where the ranks of a job run (placement.h).
#include "placement.h"

#include <algorithm>
#include <cstddef>

namespace rsi::runtime {

namespace {
std::vector<std::string> hosts_in_order(const std::vector<std::string>& host_of_rank) {
  std::vector<std::string> hosts;
  for (const auto& h : host_of_rank)
    if (std::find(hosts.begin(), hosts.end(), h) == hosts.end()) hosts.push_back(h);
  return hosts;
}
}  // namespace

std::string distinct_hosts(const std::vector<std::string>& host_of_rank) {
  std::string out;
  for (const auto& h : hosts_in_order(host_of_rank)) out += (out.empty() ? "" : ",") + h;
  return out;
}

std::string rank_ranges(std::vector<int> ranks) {
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  std::string out;
  for (std::size_t i = 0; i < ranks.size();) {
    std::size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    // append(), not a + b: GCC 12 reports a false -Wrestrict for "," + std::to_string(...)
    if (!out.empty()) out.append(",");
    out.append(std::to_string(ranks[i]));
    if (j > i) out.append("-").append(std::to_string(ranks[j]));
    i = j + 1;
  }
  return out;
}

std::string ranks_by_host(const std::vector<std::string>& host_of_rank) {
  std::string out;
  for (const auto& h : hosts_in_order(host_of_rank)) {
    std::vector<int> ranks;
    for (std::size_t r = 0; r < host_of_rank.size(); ++r)
      if (host_of_rank[r] == h) ranks.push_back(static_cast<int>(r));
    out += (out.empty() ? "" : ", ") + h + (ranks.size() == 1 ? " (rank " : " (ranks ") + rank_ranges(ranks) + ")";
  }
  return out;
}

std::string rank_table(const std::vector<std::string>& host_of_rank, const std::vector<int>& pid_of_rank) {
  std::string out = "rank\thost\tpid\n";
  for (std::size_t r = 0; r < host_of_rank.size(); ++r)
    out += std::to_string(r) + "\t" + host_of_rank[r] + "\t" +
           (r < pid_of_rank.size() ? std::to_string(pid_of_rank[r]) : std::string("-")) + "\n";
  return out;
}

}  // namespace rsi::runtime
