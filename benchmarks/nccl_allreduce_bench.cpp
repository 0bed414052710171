// nccl_allreduce_bench — nccl-tests style all-reduce benchmark of the nccl backend: our
// Communicator::allreduce_async(float*, n, Sum, stream) next to a raw ncclAllReduce(in place,
// ncclFloat, ncclSum) on a second NCCL communicator of the same ranks, on the same device buffer
// and the same stream, for messages of 4 KiB .. 256 MiB.
//
// What it measures: per size, rounds of `batch` back-to-back all-reduces enqueued on the stream and
// waited for once (as nccl-tests does, so launch latency overlaps); the time of one all-reduce is a
// round's time / batch, the slowest rank's; reported is the median over rounds. Ours and raw
// alternate round by round (which goes first alternates too). algbw = bytes / time and busbw =
// algbw * 2(n-1)/n for n ranks (a ring all-reduce's traffic per link, as nccl-tests), and the
// ratio ours/raw (= raw time / our time). The first all-reduce of each side and size is checked
// (every element must equal the number of ranks).
//
// One rank (one GPU): NCCL's in-place all-reduce of one rank moves no data, so busbw is 0 and the
// ratio compares the two sides' per-call overheads only; a meaningful busbw needs >= 2 GPUs.
//
// How to run (after building the nccl_allreduce_bench target):
//   build/benchmarks/nccl_allreduce_bench                  # one rank, no mpirun needed
//   mpirun -n 8 build/benchmarks/nccl_allreduce_bench      # one rank per GPU
//   options: --max-mib M --min-kib K --rounds N --batch N --warmup N
// The last line is the summary: the geometric mean of the ratio over sizes >= 1 MiB against the
// goal (>= 0.95). Exit status 0 when the run completes (goal met or not) or when there is no GPU
// (it says so), 1 when a result is wrong or a call fails.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "rsi/collective/communicator.h"

namespace {

struct Options {
  std::size_t min_bytes = std::size_t{4} << 10;
  std::size_t max_bytes = std::size_t{256} << 20;
  int rounds = 9;
  int batch = 0;  // 0: chosen per size
  int warmup = 2;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] { return rsi::bench::option_value(argc, argv, i); };
    if (a == "--max-mib") o.max_bytes = static_cast<std::size_t>(value()) << 20;
    else if (a == "--min-kib") o.min_bytes = static_cast<std::size_t>(value()) << 10;
    else if (a == "--rounds") o.rounds = static_cast<int>(value());
    else if (a == "--batch") o.batch = static_cast<int>(value());
    else if (a == "--warmup") o.warmup = static_cast<int>(value());
    else
      throw std::runtime_error("unknown option " + a +
                               " (options: --max-mib M --min-kib K --rounds N --batch N --warmup N)");
  }
  if (o.rounds < 1 || o.batch < 0 || o.warmup < 0 || o.min_bytes < 4 || o.max_bytes < o.min_bytes)
    throw std::runtime_error("bad options: need --rounds >= 1, --batch >= 0, --warmup >= 0, 4 B <= min <= max");
  return o;
}

// About 2 GiB moved per round at large sizes, at most 50 calls per round at small ones; one rank
// moves nothing (a call is a fraction of a microsecond), so 1000 calls per round keep the one
// stream sync per round from dominating.
int batch_for(std::size_t bytes, const Options& o, int ranks) {
  if (o.batch > 0) return o.batch;
  if (ranks == 1) return 1000;
  return static_cast<int>(std::clamp<std::size_t>((std::size_t{2} << 30) / bytes, 5, 50));
}

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(rc) + ": " + cudaGetErrorString(rc));
}
void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw std::runtime_error(std::string(what) + ": " + ncclGetErrorString(rc));
}

using rsi::bench::human_bytes;
using rsi::bench::median;

bool g_mpi = false;

int run(const Options& o) {
  std::unique_ptr<rsi::collective::Communicator> host =
      g_mpi ? rsi::collective::make_mpi_world_communicator() : rsi::collective::make_local_communicator();
  const int rank = host->rank(), ranks = host->size();
  char hostname[256] = {};
  gethostname(hostname, sizeof hostname - 1);

  int gpus = 0;
  if (const cudaError_t rc = cudaGetDeviceCount(&gpus); rc != cudaSuccess || gpus == 0) {
    if (rank == 0)
      std::printf("nccl_allreduce_bench: skipped on %s: no CUDA device (%s)\n", hostname,
                  rc != cudaSuccess ? cudaGetErrorString(rc) : "cudaGetDeviceCount reports 0");
    return 0;
  }
  const char* local_env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  if (!local_env) local_env = std::getenv("SLURM_LOCALID");
  const int device = (local_env ? std::atoi(local_env) : rank) % gpus;
  check_cuda(cudaSetDevice(device), "cudaSetDevice");

  // Ours, and the raw communicator (its id made on rank 0 and broadcast like ours).
  auto ours = rsi::collective::make_nccl_communicator(
      g_mpi ? rsi::collective::make_mpi_world_communicator() : rsi::collective::make_local_communicator(), device);
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  host->broadcast(std::as_writable_bytes(std::span(&id, 1)), 0);
  ncclComm_t raw = nullptr;
  check_nccl(ncclCommInitRank(&raw, ranks, id, rank), "ncclCommInitRank");

  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  float* buffer = nullptr;
  check_cuda(cudaMalloc(&buffer, o.max_bytes), "cudaMalloc");
  std::vector<float> ones(o.max_bytes / sizeof(float), 1.0f), back(o.max_bytes / sizeof(float));

  int nccl_version = 0;
  ncclGetVersion(&nccl_version);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, device);
  const double bus_factor = ranks > 1 ? 2.0 * (ranks - 1) / ranks : 0.0;
  if (rank == 0) {
    std::printf("# rsi nccl_allreduce_bench: %d rank(s)%s, float sum, in place; rank 0 on %s GPU %d (%s); NCCL %d\n",
                ranks, g_mpi ? " (mpirun)" : " (no mpirun)", hostname, device, prop.name, nccl_version);
    std::printf("# ours = Communicator::allreduce_async(float*, n, Sum, stream), backend %s\n", ours->backend());
    std::printf("# raw  = ncclAllReduce(buf, buf, n, ncclFloat, ncclSum, comm, stream) on its own communicator\n");
    std::printf("# time = median over %d rounds of (a round of back-to-back calls, one stream sync) / calls, the "
                "slowest rank's, in MICROseconds per call; algbw = bytes/time, busbw = algbw*2(n-1)/n (GB/s)\n",
                o.rounds);
    if (ranks == 1)
      std::printf("# ONE rank: an in-place all-reduce of one rank moves no data (busbw 0); the ratio compares per-call "
                  "overheads only. A meaningful busbw needs >= 2 GPUs (mpirun -n <GPUs>).\n");
    std::printf("# %10s %10s %6s | %10s %8s %8s | %10s %8s %8s | %8s\n", "size", "count", "calls", "ours us", "algbw",
                "busbw", "raw us", "algbw", "busbw", "ours/raw");
  }

  bool wrong = false;
  double log_ratio_sum = 0.0;
  int log_ratio_count = 0;
  for (std::size_t bytes = o.min_bytes; bytes <= o.max_bytes; bytes *= 2) {
    const std::size_t count = bytes / sizeof(float);
    const int calls = batch_for(bytes, o, ranks);
    // Correctness of one call per side.
    for (int side = 0; side < 2; ++side) {
      check_cuda(cudaMemcpy(buffer, ones.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
      if (side == 0) ours->allreduce_async(buffer, count, rsi::collective::ReduceOp::Sum, stream);
      else check_nccl(ncclAllReduce(buffer, buffer, count, ncclFloat, ncclSum, raw, stream), "ncclAllReduce");
      check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
      check_cuda(cudaMemcpy(back.data(), buffer, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
      for (std::size_t i : {std::size_t{0}, count / 2, count - 1})
        if (back[i] != static_cast<float>(ranks)) wrong = true;
    }
    std::vector<double> times[2];
    for (int round = -o.warmup; round < o.rounds; ++round) {
      double elapsed[2] = {0.0, 0.0};
      for (int turn = 0; turn < 2; ++turn) {
        const int side = (turn + round + o.warmup) % 2;
        host->barrier();
        const auto start = std::chrono::steady_clock::now();
        for (int c = 0; c < calls; ++c) {
          if (side == 0) ours->allreduce_async(buffer, count, rsi::collective::ReduceOp::Sum, stream);
          else check_nccl(ncclAllReduce(buffer, buffer, count, ncclFloat, ncclSum, raw, stream), "ncclAllReduce");
        }
        check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        elapsed[side] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / calls;
      }
      // The slowest rank's time: an allreduce of maxima over host doubles (max via -min of negatives
      // is not in the interface, so gather through a sum of one-hot slots).
      std::vector<double> slots(static_cast<std::size_t>(2 * ranks), 0.0);
      slots[static_cast<std::size_t>(2 * rank)] = elapsed[0];
      slots[static_cast<std::size_t>(2 * rank + 1)] = elapsed[1];
      host->allreduce(std::span<double>(slots), rsi::collective::ReduceOp::Sum);
      double slowest[2] = {0.0, 0.0};
      for (int r = 0; r < ranks; ++r)
        for (int s = 0; s < 2; ++s) slowest[s] = std::max(slowest[s], slots[static_cast<std::size_t>(2 * r + s)]);
      if (round >= 0)
        for (int s = 0; s < 2; ++s) times[s].push_back(slowest[s]);
    }
    const double t_ours = median(times[0]), t_raw = median(times[1]);
    const double a_ours = static_cast<double>(bytes) / t_ours / 1e9, a_raw = static_cast<double>(bytes) / t_raw / 1e9;
    const double ratio = t_raw / t_ours;
    if (bytes >= (std::size_t{1} << 20)) {
      log_ratio_sum += std::log(ratio);
      ++log_ratio_count;
    }
    if (rank == 0)
      std::printf("  %10s %10zu %6d | %10.2f %8.2f %8.2f | %10.2f %8.2f %8.2f | %8.3f\n", human_bytes(bytes).c_str(), count,
                  calls, t_ours * 1e6, a_ours, a_ours * bus_factor, t_raw * 1e6, a_raw, a_raw * bus_factor, ratio);
    std::fflush(stdout);
  }
  double wrong_anywhere = wrong ? 1.0 : 0.0;
  host->allreduce(std::span<double>(&wrong_anywhere, 1), rsi::collective::ReduceOp::Sum);
  if (rank == 0) {
    if (log_ratio_count > 0)
      std::printf("nccl allreduce ratio (ours/raw, geometric mean over sizes >= 1 MiB, %d rank(s)%s): %.3f (goal >= 0.95)\n",
                  ranks, ranks == 1 ? ", per-call overhead only" : "", std::exp(log_ratio_sum / log_ratio_count));
    if (wrong_anywhere > 0)
      std::fprintf(stderr, "nccl_allreduce_bench: a result was wrong (expected every element = %d)\n", ranks);
  }
  cudaFree(buffer);
  cudaStreamDestroy(stream);
  ncclCommDestroy(raw);
  return wrong_anywhere > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun the ranks are MPI's; started alone it is one rank (the GPU machine may have no MPI).
  g_mpi = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_RANK") || std::getenv("PMIX_RANK");
  if (g_mpi) MPI_Init(&argc, &argv);
  int status = 0;
  try {
    status = run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nccl_allreduce_bench: %s\n", e.what());
    if (g_mpi) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
  if (g_mpi) MPI_Finalize();
  return status;
}
