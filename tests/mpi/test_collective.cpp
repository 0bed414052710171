// ranks: 1 2 4
// MPI tests of rsi::collective::Communicator (the `mpi` backend on MPI_COMM_WORLD, and the `local`
// backend as a one-rank world). Every expected value is computed from the rank and the world size,
// so the same program checks 1, 2 and 4 ranks.
//
// Run (after building the test_collective target):
//   export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
//   mpirun -n 4 --oversubscribe build/tests/test_collective
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <regex>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "mpi_gtest.h"
#include "rsi/collective/communicator.h"

namespace {

using rsi::collective::CollectiveError;
using rsi::collective::Communicator;
using rsi::collective::Message;
using rsi::collective::ReduceOp;

// The world communicator, shared by the tests (MPI is initialised by mpi_gtest.h's main()). It
// does not own MPI_COMM_WORLD, so destroying it after MPI_Finalize calls no MPI function.
Communicator& world() {
  static const std::unique_ptr<Communicator> comm = rsi::collective::make_mpi_world_communicator();
  return *comm;
}

std::uint64_t fnv1a(std::span<const std::byte> bytes) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::byte b : bytes) h = (h ^ static_cast<std::uint64_t>(b)) * 1099511628211ull;
  return h;
}

// Every rank's value of `mine`, gathered with raw MPI (independent of the code under test).
std::vector<std::uint64_t> gather_all(std::uint64_t mine) {
  std::vector<std::uint64_t> all(static_cast<std::size_t>(world().size()));
  MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, MPI_COMM_WORLD);
  return all;
}

// True on every rank when the bytes are identical on every rank.
bool identical_on_every_rank(std::span<const std::byte> bytes) {
  const auto hashes = gather_all(fnv1a(bytes));
  return std::all_of(hashes.begin(), hashes.end(), [&](std::uint64_t h) { return h == hashes[0]; });
}

template <typename T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

// ---------------------------------------------------------------------------------------------
// allreduce

// Element i on rank r is r*1000 + i: an integer that float holds exactly for every size used here
// (3e6 + 4000 and the 4-rank sum 1.2e7 + 6000 stay below 2^24), so Sum must be exact:
//   sum_i = 1000·R(R−1)/2 + R·i, and Average = sum_i / R.
template <typename T>
void check_integer_allreduce(std::size_t n, ReduceOp op, std::int64_t bucket = 0) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  std::vector<T> data(n);
  for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<T>(r * 1000 + static_cast<std::int64_t>(i));
  if (bucket <= 0) {
    comm.allreduce(std::span<T>(data), op);
  } else {  // as the trainer does: consecutive buckets of at most `bucket` elements
    for (std::size_t at = 0; at < n; at += static_cast<std::size_t>(bucket))
      comm.allreduce(std::span<T>(data.data() + at, std::min<std::size_t>(static_cast<std::size_t>(bucket), n - at)), op);
  }
  std::size_t wrong = 0, first_wrong = n;
  for (std::size_t i = 0; i < n; ++i) {
    const double sum = 1000.0 * R * (R - 1) / 2.0 + static_cast<double>(R) * static_cast<double>(i);
    bool ok;
    if (op == ReduceOp::Sum) {
      ok = data[i] == static_cast<T>(sum);
    } else {
      // Average: the exact mean, to within one rounding of T (exact when R is a power of two).
      const double mean = sum / R;
      ok = std::abs(static_cast<double>(data[i]) - mean) <= std::abs(mean) * std::numeric_limits<T>::epsilon();
    }
    if (!ok && wrong++ == 0) first_wrong = i;
  }
  EXPECT_EQ(wrong, 0u) << "n=" << n << " op=" << (op == ReduceOp::Sum ? "Sum" : "Average") << " rank " << r << "/" << R
                       << ": first wrong element " << first_wrong
                       << (first_wrong < n ? " = " + std::to_string(data[first_wrong]) : std::string());
  EXPECT_TRUE(identical_on_every_rank(bytes_of(data))) << "n=" << n;
}

TEST(Allreduce, SumFloatExactForEverySize) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{3'000'000}})
    check_integer_allreduce<float>(n, ReduceOp::Sum);
}
TEST(Allreduce, SumDoubleExactForEverySize) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{3'000'000}})
    check_integer_allreduce<double>(n, ReduceOp::Sum);
}
TEST(Allreduce, AverageFloat) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{3'000'000}})
    check_integer_allreduce<float>(n, ReduceOp::Average);
}
TEST(Allreduce, AverageDouble) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1000}, std::size_t{3'000'000}})
    check_integer_allreduce<double>(n, ReduceOp::Average);
}
// 3 million floats in the trainer's bucket size (1 << 20) and in an odd one: the last bucket is short.
TEST(Allreduce, BucketedThreeMillion) {
  check_integer_allreduce<float>(3'000'000, ReduceOp::Sum, 1 << 20);
  check_integer_allreduce<float>(3'000'000, ReduceOp::Sum, 999'983);
  check_integer_allreduce<double>(3'000'000, ReduceOp::Average, 1 << 20);
}

// Values whose sum rounds (not integers): the result must still be bitwise identical on every
// rank and on every repetition with the same layout (the determinism contract). Whether it equals
// a left-to-right sum in rank order depends on Open MPI's algorithm for the message size; that is
// printed (rank 0) but not asserted.
template <typename T>
void check_rounding_allreduce(std::size_t n) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  auto value = [](int rank, std::size_t i) {
    return static_cast<T>(std::sin(0.37 * static_cast<double>(i) + 1.3 * rank) * (1.0 + rank) / 3.0);
  };
  std::vector<T> first(n), second(n), in_rank_order(n, T(0));
  for (std::size_t i = 0; i < n; ++i) first[i] = second[i] = value(r, i);
  for (int q = 0; q < R; ++q)
    for (std::size_t i = 0; i < n; ++i) in_rank_order[i] += value(q, i);
  comm.allreduce(std::span<T>(first), ReduceOp::Sum);
  comm.allreduce(std::span<T>(second), ReduceOp::Sum);
  EXPECT_TRUE(identical_on_every_rank(bytes_of(first))) << "n=" << n;
  EXPECT_EQ(std::memcmp(first.data(), second.data(), n * sizeof(T)), 0) << "n=" << n << ": repeat differs";
  std::size_t differ = 0;
  double worst = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    differ += first[i] != in_rank_order[i];
    worst = std::max(worst, std::abs(static_cast<double>(first[i]) - static_cast<double>(in_rank_order[i])));
  }
  // Within a few roundings of the rank-order sum (|values| <= R/3, R terms).
  EXPECT_LE(worst, 4.0 * R * R * std::numeric_limits<T>::epsilon()) << "n=" << n;
  if (r == 0 && n > 0)
    std::printf("[info] %s allreduce of %zu over %d ranks: %zu of %zu elements differ from a rank-order sum (max %.3g)\n",
                sizeof(T) == 4 ? "float" : "double", n, R, differ, n, worst);
}

TEST(Allreduce, RoundingSumsAreBitwiseIdenticalOnEveryRankAndRepeat) {
  for (std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{3'000'000}}) {
    check_rounding_allreduce<float>(n);
    check_rounding_allreduce<double>(n);
  }
}

// ---------------------------------------------------------------------------------------------
// broadcast

TEST(Broadcast, FromEveryRoot) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  for (int root = 0; root < R; ++root) {
    std::vector<std::byte> data(4099);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>((r * 31 + i * 7) & 0xff);
    comm.broadcast(data, root);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < data.size(); ++i) wrong += data[i] != static_cast<std::byte>((root * 31 + i * 7) & 0xff);
    EXPECT_EQ(wrong, 0u) << "root " << root << " rank " << r;
  }
}

TEST(Broadcast, BytesOfAnySizeFromFirstAndLastRoot) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  for (int root : {0, R - 1}) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1'000'000}}) {
      auto pattern = [&](std::size_t i) { return static_cast<std::byte>((i * 131 + static_cast<std::size_t>(root) + n) & 0xff); };
      // Non-roots start with a buffer of a different size and content: only the root's counts.
      std::vector<std::byte> mine(r == root ? n : static_cast<std::size_t>(r + 3), std::byte{0x5a});
      if (r == root)
        for (std::size_t i = 0; i < n; ++i) mine[i] = pattern(i);
      const std::vector<std::byte> got = comm.broadcast_bytes(std::move(mine), root);
      // (Non-fatal checks only: returning early would leave the other ranks in a collective.)
      EXPECT_EQ(got.size(), n) << "root " << root << " rank " << r;
      std::size_t wrong = 0;
      for (std::size_t i = 0; i < std::min(n, got.size()); ++i) wrong += got[i] != pattern(i);
      EXPECT_EQ(wrong, 0u) << "root " << root << " n " << n << " rank " << r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// barrier: a rank that arrives late (it sleeps first) must have arrived before anyone leaves.
// Arrival is recorded as a file in a directory every rank shares (the ranks of an MPI test run on
// one host).

TEST(Barrier, NobodyLeavesBeforeEveryoneArrived) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  char dir_name[256] = {};
  if (r == 0) {
    const auto dir = std::filesystem::temp_directory_path() / ("rsi_barrier_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::snprintf(dir_name, sizeof dir_name, "%s", dir.c_str());
  }
  MPI_Bcast(dir_name, sizeof dir_name, MPI_CHAR, 0, MPI_COMM_WORLD);
  const std::filesystem::path dir(dir_name);
  for (int late = 0; late < R; ++late) {
    if (r == late) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ofstream(dir / ("round" + std::to_string(late) + "_rank" + std::to_string(r))) << r;
    comm.barrier();
    int arrived = 0;
    for (int q = 0; q < R; ++q)
      arrived += std::filesystem::exists(dir / ("round" + std::to_string(late) + "_rank" + std::to_string(q)));
    EXPECT_EQ(arrived, R) << "rank " << r << " left the barrier before rank " << late << " (late) arrived";
  }
  comm.barrier();
  if (r == 0) std::filesystem::remove_all(dir);
}

// ---------------------------------------------------------------------------------------------
// split

TEST(Split, GroupsOfTwoByColorRankOverTwo) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  const int color = r / 2;
  const std::unique_ptr<Communicator> group = comm.split(color, r);
  const int expected_size = std::min(2, R - 2 * color);
  EXPECT_EQ(group->size(), expected_size) << "rank " << r;
  EXPECT_EQ(group->rank(), r % 2) << "rank " << r;
  EXPECT_STREQ(group->backend(), "mpi");

  // A sum inside the group sees only the group's members: world ranks 2c (+ 2c+1).
  double members[2] = {static_cast<double>(r), 1.0};
  group->allreduce(std::span<double>(members), ReduceOp::Sum);
  EXPECT_EQ(members[0], expected_size == 2 ? 4.0 * color + 1.0 : 2.0 * color) << "rank " << r;
  EXPECT_EQ(members[1], expected_size) << "rank " << r;

  // Broadcast inside the group from its last member.
  std::int32_t from = r;
  group->broadcast(std::as_writable_bytes(std::span(&from, 1)), group->size() - 1);
  EXPECT_EQ(from, 2 * color + expected_size - 1) << "rank " << r;

  // A split of the split, ordered by a descending key: ranks come out reversed.
  const std::unique_ptr<Communicator> reversed = group->split(0, -group->rank());
  EXPECT_EQ(reversed->size(), group->size());
  EXPECT_EQ(reversed->rank(), group->size() - 1 - group->rank());
}

TEST(Split, EveryRankItsOwnGroup) {
  Communicator& comm = world();
  const std::unique_ptr<Communicator> alone = comm.split(comm.rank(), 0);
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  float x[3] = {1.5f, -2.0f, 3.25f};
  alone->allreduce(std::span<float>(x), ReduceOp::Sum);
  EXPECT_EQ(x[0], 1.5f);
  EXPECT_EQ(x[1], -2.0f);
  EXPECT_EQ(x[2], 3.25f);
}

// ---------------------------------------------------------------------------------------------
// start-up exchanges: by node, every rank's bytes, rank 0's verdict

TEST(SplitByNode, MatchesMpiSharedMemorySplit) {
  Communicator& comm = world();
  const std::unique_ptr<Communicator> node = comm.split_by_node();
  MPI_Comm raw;  // the reference, with raw MPI
  ASSERT_EQ(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL, &raw), MPI_SUCCESS);
  int raw_rank = -1, raw_size = -1;
  MPI_Comm_rank(raw, &raw_rank);
  MPI_Comm_size(raw, &raw_size);
  MPI_Comm_free(&raw);
  EXPECT_EQ(node->rank(), raw_rank) << "rank " << comm.rank();
  EXPECT_EQ(node->size(), raw_size) << "rank " << comm.rank();
  EXPECT_STREQ(node->backend(), "mpi");
  double one[1] = {1.0};  // a collective inside the node sees only its ranks
  node->allreduce(std::span<double>(one), ReduceOp::Sum);
  EXPECT_EQ(one[0], raw_size);
}

TEST(Allgather, EveryRanksBytesOfItsOwnSizeInRankOrder) {
  Communicator& comm = world();
  // Rank r contributes r * 37 bytes (rank 0 none) of value r + 1.
  const std::vector<std::byte> mine(static_cast<std::size_t>(comm.rank()) * 37, std::byte(comm.rank() + 1));
  const auto all = comm.allgather_bytes(mine);
  ASSERT_EQ(all.size(), static_cast<std::size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r)
    EXPECT_EQ(all[r], std::vector<std::byte>(static_cast<std::size_t>(r) * 37, std::byte(r + 1))) << "from rank " << r;
  const auto names = comm.allgather_strings("rank " + std::to_string(comm.rank()));
  ASSERT_EQ(names.size(), static_cast<std::size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) EXPECT_EQ(names[r], "rank " + std::to_string(r));
}

TEST(Agree, EveryRankGetsRankZerosValue) {
  Communicator& comm = world();
  EXPECT_EQ(comm.agree(100 + comm.rank()), 100);
  const std::unique_ptr<Communicator> local = rsi::collective::make_local_communicator();
  EXPECT_EQ(local->agree(7), 7);
  EXPECT_EQ(local->allgather_strings("x"), std::vector<std::string>{"x"});
  EXPECT_EQ(local->split_by_node()->size(), 1);
}

// ---------------------------------------------------------------------------------------------
// point to point

std::vector<std::byte> encode(std::int32_t a, std::int32_t b) {
  std::vector<std::byte> out(8);
  std::memcpy(out.data(), &a, 4);
  std::memcpy(out.data() + 4, &b, 4);
  return out;
}
std::pair<std::int32_t, std::int32_t> decode(const std::vector<std::byte>& m) {
  std::int32_t a = 0, b = 0;
  if (m.size() == 8) {
    std::memcpy(&a, m.data(), 4);
    std::memcpy(&b, m.data() + 4, 4);
  }
  return {a, b};
}

TEST(PointToPoint, TryReceiveIsEmptyWhenNothingWasSent) {
  Communicator& comm = world();
  comm.barrier();
  EXPECT_FALSE(comm.try_receive().has_value()) << "rank " << comm.rank();
  comm.barrier();
}

TEST(PointToPoint, RingWithTagsAndSizes) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  const int next = (r + 1) % R, previous = (r + R - 1) % R;
  // Small message (eager) with a tag naming the sender; with one rank this is a send to itself.
  comm.send(encode(r, r * r), next, 100 + r);
  const Message m = comm.receive(previous, 100 + previous);
  EXPECT_EQ(m.source, previous);
  EXPECT_EQ(m.tag, 100 + previous);
  EXPECT_EQ(decode(m.data), std::make_pair(previous, previous * previous));
  if (R > 1) {
    // A large message (rendezvous protocol): even ranks send first, odd ranks receive first, so
    // the blocking sends cannot deadlock.
    std::vector<std::byte> big(1 << 20);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::byte>((i + static_cast<std::size_t>(r)) & 0xff);
    Message got;
    if (r % 2 == 0) {
      comm.send(big, next, 7);
      got = comm.receive(previous, 7);
    } else {
      got = comm.receive(previous, 7);
      comm.send(big, next, 7);
    }
    EXPECT_EQ(got.data.size(), big.size());
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < std::min(got.data.size(), big.size()); ++i)
      wrong += got.data[i] != static_cast<std::byte>((i + static_cast<std::size_t>(previous)) & 0xff);
    EXPECT_EQ(wrong, 0u);
  }
  comm.barrier();
  EXPECT_FALSE(comm.try_receive().has_value()) << "rank " << r << ": a message was left over";
  comm.barrier();  // nobody starts the next test's sends before every rank has checked
}

// Every other rank sends to rank 0, which takes them from any source, polling try_receive for the
// first (it must arrive without a blocking call) and receive(-1, tag) for the rest.
TEST(PointToPoint, AnySourceToRankZero) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  if (r != 0) {
    comm.send(encode(r, 1000 + r), 0, 42);
  } else if (R > 1) {
    std::set<int> sources;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::optional<Message> first;
    while (!(first = comm.try_receive()) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    EXPECT_TRUE(first.has_value()) << "try_receive never returned the message sent to rank 0";
    if (first) {
      EXPECT_EQ(first->tag, 42);
      EXPECT_EQ(decode(first->data), std::make_pair(first->source, 1000 + first->source));
      sources.insert(first->source);
    }
    for (int k = first ? 2 : 1; k < R; ++k) {
      const Message m = comm.receive(-1, 42);
      EXPECT_EQ(decode(m.data), std::make_pair(m.source, 1000 + m.source));
      sources.insert(m.source);
    }
    EXPECT_EQ(static_cast<int>(sources.size()), R - 1);
    EXPECT_EQ(sources.count(0), 0u);
  }
  comm.barrier();
  EXPECT_FALSE(comm.try_receive().has_value()) << "rank " << r;
  comm.barrier();  // nobody starts the next test's sends before every rank has checked
}

// ---------------------------------------------------------------------------------------------
// errors: a failed MPI call throws CollectiveError naming the call, host, rank and file:line.

TEST(Errors, InvalidBroadcastRootNamesHostRankFileAndLine) {
  Communicator& comm = world();
  const int r = comm.rank(), R = comm.size();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::int32_t value = r;
  std::string message;
  try {
    comm.broadcast(std::as_writable_bytes(std::span(&value, 1)), R + 5);
    ADD_FAILURE() << "broadcast from root " << R + 5 << " of " << R << " ranks did not throw";
  } catch (const CollectiveError& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("MPI_Bcast"), std::string::npos) << message;
  EXPECT_NE(message.find(host), std::string::npos) << "host " << host << " missing: " << message;
  EXPECT_NE(message.find("rank " + std::to_string(r)), std::string::npos) << message;
  EXPECT_TRUE(std::regex_search(message, std::regex(R"([A-Za-z0-9_./-]+\.cpp:[0-9]+)"))) << "no file:line in: " << message;
  EXPECT_EQ(value, r) << "the failed broadcast changed the buffer";
  // The communicator is still usable after the error.
  double one = 1.0;
  comm.allreduce(std::span<double>(&one, 1), ReduceOp::Sum);
  EXPECT_EQ(one, static_cast<double>(R));
}

TEST(Errors, SendToMissingRankThrows) {
  Communicator& comm = world();
  const std::vector<std::byte> data(4);
  try {
    comm.send(data, comm.size() + 3, 1);
    ADD_FAILURE() << "send to rank " << comm.size() + 3 << " did not throw";
  } catch (const CollectiveError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("MPI_Send"), std::string::npos) << message;
    EXPECT_NE(message.find("rank " + std::to_string(comm.rank())), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------------------------
// the local backend: a world of one rank on every MPI rank

TEST(Local, BehavesAsAOneRankWorld) {
  const std::unique_ptr<Communicator> local = rsi::collective::make_local_communicator();
  EXPECT_EQ(local->rank(), 0);
  EXPECT_EQ(local->size(), 1);
  EXPECT_STREQ(local->backend(), "local");

  std::vector<float> f(1000);
  std::vector<double> d(1000);
  for (std::size_t i = 0; i < f.size(); ++i) f[i] = d[i] = static_cast<double>(i) * 0.1 - 7.0;
  const std::vector<float> f0 = f;
  const std::vector<double> d0 = d;
  local->allreduce(std::span<float>(f), ReduceOp::Sum);  // the sum over one rank is its own value
  local->allreduce(std::span<double>(d), ReduceOp::Average);
  EXPECT_EQ(f, f0);
  EXPECT_EQ(d, d0);
  local->allreduce(std::span<float>(), ReduceOp::Sum);

  std::vector<std::byte> bytes(17, std::byte{3});
  local->broadcast(bytes, 0);
  EXPECT_EQ(bytes, std::vector<std::byte>(17, std::byte{3}));
  EXPECT_THROW(local->broadcast(bytes, 1), CollectiveError);
  EXPECT_EQ(local->broadcast_bytes(bytes, 0), bytes);
  EXPECT_EQ(local->broadcast_bytes({}, 0).size(), 0u);
  local->barrier();

  const std::unique_ptr<Communicator> group = local->split(world().rank() / 2, 0);
  EXPECT_EQ(group->size(), 1);
  EXPECT_EQ(group->rank(), 0);

  EXPECT_FALSE(local->try_receive().has_value());
  local->send(encode(1, 2), 0, 5);
  local->send(encode(3, 4), 0, 6);
  const Message tagged = local->receive(0, 6);  // by tag, out of arrival order
  EXPECT_EQ(tagged.tag, 6);
  EXPECT_EQ(decode(tagged.data), std::make_pair(3, 4));
  const std::optional<Message> rest = local->try_receive();
  ASSERT_TRUE(rest.has_value());
  EXPECT_EQ(rest->source, 0);
  EXPECT_EQ(rest->tag, 5);
  EXPECT_EQ(decode(rest->data), std::make_pair(1, 2));
  EXPECT_FALSE(local->try_receive().has_value());
  EXPECT_THROW(local->receive(-1, -1), CollectiveError);  // would wait forever
  EXPECT_THROW(local->send(bytes, 1, 0), CollectiveError);
}

}  // namespace
