// Which device each rank trains on: its GPU is picked by local rank (the rank's index among the
// job's ranks on its node) modulo the GPUs it can see, as Slurm and Open MPI lay ranks out one per
// GPU. The decision itself (choose_device) is a pure function of the policy, the local rank and
// the GPU count, so it is tested without GPUs.
#pragma once

#include <stdexcept>
#include <string>

#include "rsi/collective/communicator.h"

namespace rsi::runtime {

// cluster.device in the manifest.
enum class DevicePolicy { Cpu, Auto, Cuda };
const char* device_policy_name(DevicePolicy policy);
// "cpu" | "auto" | "cuda"; false for anything else.
bool parse_device_policy(const std::string& text, DevicePolicy* policy);

// The manifest demands a GPU this rank does not have: a clear error before training (exit code 3).
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct LocalRank {
  int rank = 0;        // index among this node's ranks
  int size = 1;        // ranks on this node (0 when the environment did not say)
  std::string source;  // where it came from: SLURM_LOCALID, OMPI_COMM_WORLD_LOCAL_RANK, ...
};
// SLURM_LOCALID, else OMPI_COMM_WORLD_LOCAL_RANK; source stays empty when neither is set.
LocalRank local_rank_from_environment();
// The environment's answer, else the rank among the ranks of `world` on this node
// (Communicator::split_by_node; collective over `world` in that case: every rank must call it).
LocalRank detect_local_rank(collective::Communicator& world);

struct GpuInventory {
  int count = 0;
  std::string why_none;  // when count is 0: the CUDA runtime's reason, or that the build has no CUDA
};
// kernels::cuda_available / cuda_device_count; never throws (no driver = no GPUs, with the reason).
GpuInventory count_gpus();

struct DeviceChoice {
  bool cuda = false;
  int gpu = -1;          // CUDA device index when cuda
  std::string warning;   // non-empty: say it (fallback to CPU, ranks sharing a GPU, ...)
  std::string describe() const;  // "cuda:1" or "cpu"
};
// cpu: always the CPU. cuda: GPU local_rank % count, DeviceError without one. auto: like cuda
// when a GPU is visible, else the CPU with a warning. gpus_per_node is the manifest's expectation
// (0 = none); a node that shows fewer GPUs, or more local ranks than GPUs, gets a warning.
DeviceChoice choose_device(DevicePolicy policy, int gpus_per_node, const LocalRank& local, const GpuInventory& gpus,
                           const std::string& host, int world_rank);
// Makes choice.gpu this thread's current CUDA device and CUDA the default training device
// (kernels::set_default_device); DeviceError on failure.
void bind_device(const DeviceChoice& choice);

// A run's device, agreed by every rank of `world` (collective). All ranks train on the same kind
// of device: under auto, one rank without a GPU puts every rank on the CPU (a trainer group cannot
// mix NCCL and CPU ranks, and a run's lineage should not depend on which ranks got GPUs).
struct RunDevice {
  DeviceChoice choice;       // bound (cudaSetDevice) when choice.cuda
  LocalRank local;
  int gpus_here = 0;         // GPUs this rank sees
  bool failed = false;       // on every rank when any rank failed: exit 3 before training
  std::string error;         // this rank's own failure (empty on ranks whose peers failed)
  std::string warning;       // this rank's warning, if any
  std::string summary;       // one line for rank 0 to print
};
RunDevice select_run_device(DevicePolicy policy, int gpus_per_node, collective::Communicator& world);

}  // namespace rsi::runtime
