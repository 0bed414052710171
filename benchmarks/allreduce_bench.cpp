// allreduce_bench — nccl-tests style all-reduce benchmark: our Communicator::allreduce(span<float>,
// Sum) on the MPI backend next to a raw MPI_Allreduce(MPI_IN_PLACE, ..., MPI_SUM, MPI_COMM_WORLD) on
// the same buffer, for float messages of 4 KiB .. 64 MiB.
//
// What it measures: per size, the time of one all-reduce (the median over the timed iterations of
// the slowest rank's time; the median, not the mean, because the machines this runs on are shared
// and oversubscribed, and one descheduled rank would dominate a mean), its algorithm bandwidth
// algbw = bytes / time and
// bus bandwidth busbw = algbw · 2(n−1)/n (n ranks; the traffic of a ring all-reduce per link, as in
// nccl-tests), for ours and for raw MPI, and the ratio ours/raw (= raw time / our time). Ours and
// raw alternate iteration by iteration (and which goes first alternates too), each after a barrier
// and a refill of the buffer, so both see the same machine state. A warm-up precedes the timing,
// and every result is checked (each element must equal the number of ranks).
//
// How to run (from the repository root, after building the allreduce_bench target):
//   benchmarks/allreduce                       # 2 ranks; RANKS=4 benchmarks/allreduce for 4
//   mpirun -n 2 --oversubscribe build/benchmarks/allreduce_bench [--iters N] [--warmup N] [--max-mib M]
// The last line is the summary: the geometric mean of the busbw ratio over sizes >= 1 MiB against
// the goal (>= 0.95). Exit status 0 when the run completes (a measurement, goal met or not), 1 when
// a result is wrong or an MPI call fails.
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "rsi/collective/communicator.h"

namespace {

struct Options {
  int iters = 0;  // 0: chosen per size (more for small messages)
  int warmup = 3;
  std::size_t max_bytes = std::size_t{64} << 20;
  std::size_t min_bytes = std::size_t{4} << 10;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] { return rsi::bench::option_value(argc, argv, i); };
    if (a == "--iters") o.iters = static_cast<int>(value());
    else if (a == "--warmup") o.warmup = static_cast<int>(value());
    else if (a == "--max-mib") o.max_bytes = static_cast<std::size_t>(value()) << 20;
    else if (a == "--min-kib") o.min_bytes = static_cast<std::size_t>(value()) << 10;
    else throw std::runtime_error("unknown option " + a + " (options: --iters N --warmup N --max-mib M --min-kib K)");
  }
  if (o.iters < 0 || o.warmup < 0 || o.min_bytes < 4 || o.max_bytes < o.min_bytes)
    throw std::runtime_error("bad options: need --iters >= 0, --warmup >= 0, 4 B <= min <= max");
  return o;
}

// Enough iterations for a stable median without making the large sizes slow: about 512 MiB moved
// per side, between 15 and 200 iterations (about 30 s for both sides on a loaded 2-core machine).
int iterations_for(std::size_t bytes, const Options& o) {
  if (o.iters > 0) return o.iters;
  return static_cast<int>(std::clamp<std::size_t>((std::size_t{512} << 20) / bytes, 15, 200));
}

void check_mpi(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char err[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, err, &len);
    throw std::runtime_error(std::string(what) + " failed: " + std::string(err, len));
  }
}

using rsi::bench::human_bytes;
using rsi::bench::median;

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const std::unique_ptr<rsi::collective::Communicator> comm = rsi::collective::make_mpi_world_communicator();
  const int rank = comm->rank(), ranks = comm->size();
  const double bus_factor = ranks > 1 ? 2.0 * (ranks - 1) / ranks : 0.0;

  char host[256] = {};
  gethostname(host, sizeof host - 1);
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int version_len = 0;
  MPI_Get_library_version(version, &version_len);
  std::string library(version, static_cast<std::size_t>(version_len));
  library = library.substr(0, library.find_first_of(",\n"));
  if (rank == 0) {
    std::printf("# rsi allreduce_bench: %d rank(s), float sum, in place; rank 0 on %s; %s\n", ranks, host, library.c_str());
    std::printf("# ours = rsi::collective::Communicator::allreduce(span<float>, Sum), backend %s\n", comm->backend());
    std::printf("# raw  = MPI_Allreduce(MPI_IN_PLACE, ..., MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD)\n");
    std::printf("# time = median over iterations of the slowest rank's time per all-reduce (us); algbw = bytes/time;"
                " busbw = algbw*2(n-1)/n (GB/s)\n");
    if (ranks == 1) std::printf("# one rank: nothing is communicated (busbw factor 0), ratios compare two no-ops\n");
    std::printf("# %10s %10s %6s | %10s %8s %8s | %10s %8s %8s | %8s\n", "size", "count", "iters", "ours us", "algbw",
                "busbw", "raw us", "algbw", "busbw", "ours/raw");
  }

  std::vector<float> buffer(o.max_bytes / sizeof(float));
  double log_ratio_sum = 0.0;
  int log_ratio_count = 0;
  bool wrong = false;
  for (std::size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const std::size_t count = bytes / sizeof(float);
    const std::span<float> data(buffer.data(), count);
    const int iters = iterations_for(bytes, o);
    std::vector<double> times[2];  // [ours, raw]: the slowest rank's time of each timed iteration
    for (int it = -o.warmup; it < iters; ++it) {
      double elapsed[2] = {0.0, 0.0};
      for (int turn = 0; turn < 2; ++turn) {
        const int which = (turn + it + o.warmup) % 2;  // alternate which side goes first
        std::fill(data.begin(), data.end(), 1.0f);
        check_mpi(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
        const double start = MPI_Wtime();
        if (which == 0)
          comm->allreduce(data, rsi::collective::ReduceOp::Sum);
        else
          check_mpi(MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                    "MPI_Allreduce");
        elapsed[which] = MPI_Wtime() - start;
        if (data.front() != static_cast<float>(ranks) || data.back() != static_cast<float>(ranks) ||
            data[count / 2] != static_cast<float>(ranks))
          wrong = true;
      }
      double slowest[2] = {0.0, 0.0};
      check_mpi(MPI_Allreduce(elapsed, slowest, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
      if (it >= 0)
        for (int side = 0; side < 2; ++side) times[side].push_back(slowest[side]);
    }
    const double ours = median(times[0]), raw = median(times[1]);
    const double ours_algbw = static_cast<double>(bytes) / ours / 1e9, raw_algbw = static_cast<double>(bytes) / raw / 1e9;
    const double ratio = raw / ours;  // = ours busbw / raw busbw, also defined for one rank
    if (bytes >= (std::size_t{1} << 20)) {
      log_ratio_sum += std::log(ratio);
      ++log_ratio_count;
    }
    if (rank == 0)
      std::printf("  %10s %10zu %6d | %10.1f %8.3f %8.3f | %10.1f %8.3f %8.3f | %8.3f\n", human_bytes(bytes).c_str(), count,
                  iters, ours * 1e6, ours_algbw, ours_algbw * bus_factor, raw * 1e6, raw_algbw, raw_algbw * bus_factor,
                  ratio);
    std::fflush(stdout);
  }
  int any_wrong = wrong, wrong_anywhere = 0;
  check_mpi(MPI_Allreduce(&any_wrong, &wrong_anywhere, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD), "MPI_Allreduce");
  if (rank == 0) {
    if (log_ratio_count > 0)
      std::printf("allreduce busbw ratio (ours/raw, geometric mean over sizes >= 1 MiB): %.3f (goal >= 0.95)\n",
                  std::exp(log_ratio_sum / log_ratio_count));
    else
      std::printf("allreduce busbw ratio (ours/raw, geometric mean over sizes >= 1 MiB): n/a, no size >= 1 MiB (goal >= 0.95)\n");
    if (wrong_anywhere) std::fprintf(stderr, "allreduce_bench: a result was wrong (expected every element = %d)\n", ranks);
  }
  return wrong_anywhere ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int status = 0;
  try {
    status = run(argc, argv);
  } catch (const std::exception& e) {
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    std::fprintf(stderr, "allreduce_bench (rank %d): %s\n", rank, e.what());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  MPI_Finalize();
  return status;
}
