// Device selection by local rank (see device.h).
#include "device.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <span>
#include <stdexcept>
#include <string>

#include "rsi/kernels/cuda.h"

namespace rsi::runtime {

const char* device_policy_name(DevicePolicy policy) {
  switch (policy) {
    case DevicePolicy::Cpu: return "cpu";
    case DevicePolicy::Auto: return "auto";
    case DevicePolicy::Cuda: return "cuda";
  }
  return "?";
}

bool parse_device_policy(const std::string& text, DevicePolicy* policy) {
  if (text == "cpu") *policy = DevicePolicy::Cpu;
  else if (text == "auto") *policy = DevicePolicy::Auto;
  else if (text == "cuda") *policy = DevicePolicy::Cuda;
  else return false;
  return true;
}

namespace {
// A non-negative integer environment variable; -1 when unset or not a number. With
// leading_number, "2(x3)" (Slurm's SLURM_TASKS_PER_NODE) reads as 2.
int env_index(const char* name, bool leading_number = false) {
  const char* v = std::getenv(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (end == v || (*end != '\0' && !leading_number) || n < 0 || n > 1'000'000) return -1;
  return static_cast<int>(n);
}
}  // namespace

LocalRank local_rank_from_environment() {
  LocalRank local;
  // Slurm's first: under srun (and under mpirun inside an allocation) it is the launcher's view.
  if (const int r = env_index("SLURM_LOCALID"); r >= 0) {
    local.rank = r;
    local.size = std::max(0, env_index("SLURM_NTASKS_PER_NODE"));
    if (local.size == 0) local.size = std::max(0, env_index("SLURM_TASKS_PER_NODE", true));
    local.source = "SLURM_LOCALID";
  } else if (const int o = env_index("OMPI_COMM_WORLD_LOCAL_RANK"); o >= 0) {
    local.rank = o;
    local.size = std::max(0, env_index("OMPI_COMM_WORLD_LOCAL_SIZE"));
    local.source = "OMPI_COMM_WORLD_LOCAL_RANK";
  }
  return local;
}

LocalRank detect_local_rank(collective::Communicator& world) {
  LocalRank local = local_rank_from_environment();
  if (!local.source.empty()) return local;
  try {
    const auto node = world.split_by_node();
    local.rank = node->rank();
    local.size = node->size();
    local.source = std::string(world.backend()) + " ranks on this node";
  } catch (const collective::CollectiveError&) {
    local.source = "none (rank 0 of 1 assumed)";
  }
  return local;
}

GpuInventory count_gpus() {
  GpuInventory inventory;
  std::string why;
  if (!kernels::cuda_available(&why)) {
    inventory.why_none = why.empty() ? "no usable CUDA device" : why;
    return inventory;
  }
  inventory.count = kernels::cuda_device_count();
  if (inventory.count == 0) inventory.why_none = "the CUDA runtime reports 0 devices";
  return inventory;
}

std::string DeviceChoice::describe() const { return cuda ? "cuda:" + std::to_string(gpu) : "cpu"; }

DeviceChoice choose_device(DevicePolicy policy, int gpus_per_node, const LocalRank& local, const GpuInventory& gpus,
                           const std::string& host, int world_rank) {
  DeviceChoice choice;
  const std::string who = host + " rank " + std::to_string(world_rank) + " (local rank " + std::to_string(local.rank) +
                          " from " + (local.source.empty() ? "nowhere" : local.source) + ")";
  if (policy == DevicePolicy::Cpu) {
    if (gpus_per_node > 0)
      choice.warning = "cluster.device is cpu: the " + std::to_string(gpus_per_node) +
                       " GPU(s) per node that cluster.gpus_per_node asks for stay unused";
    return choice;
  }
  if (gpus.count <= 0) {
    const std::string why = gpus.why_none.empty() ? "no GPU visible" : gpus.why_none;
    if (policy == DevicePolicy::Cuda)
      throw DeviceError("cluster.device is cuda, but " + who + " sees no GPU (" + why +
                        "); run on a GPU node (check nvidia-smi and CUDA_VISIBLE_DEVICES), or set cluster.device: auto "
                        "to fall back to the CPU");
    choice.warning = who + " sees no GPU (" + why + "); training on the CPU (cluster.device: auto)";
    return choice;
  }
  choice.cuda = true;
  choice.gpu = local.rank % gpus.count;
  if (local.size > gpus.count)
    choice.warning = host + " runs " + std::to_string(local.size) + " ranks on " + std::to_string(gpus.count) +
                     " GPU(s): ranks share GPUs, and NCCL refuses two ranks of one trainer group on one GPU";
  else if (gpus_per_node > gpus.count)
    choice.warning = "cluster.gpus_per_node is " + std::to_string(gpus_per_node) + " but " + host + " shows " +
                     std::to_string(gpus.count) + " GPU(s)";
  return choice;
}

void bind_device(const DeviceChoice& choice) {
  if (!choice.cuda) return;
  try {
    kernels::cuda_set_device(choice.gpu);
    // A bad RSI_CUDA_CONV, or cudnn where cuDNN cannot be loaded, stops the run here, named.
    if (kernels::cuda::conv_backend_from_env() == kernels::cuda::ConvBackend::Cudnn) {
      std::string why;
      if (kernels::cuda::cudnn_library_version(&why).empty()) throw std::runtime_error("RSI_CUDA_CONV=cudnn: " + why);
    }
    // Training (models::TrainOptions::device) follows the process-wide default from here on.
    kernels::set_default_device(kernels::Device::CUDA);
  } catch (const std::exception& e) {
    throw DeviceError("cannot use GPU " + std::to_string(choice.gpu) + ": " + e.what());
  }
}

RunDevice select_run_device(DevicePolicy policy, int gpus_per_node, collective::Communicator& world) {
  RunDevice run;
  const int rank = world.rank(), size = world.size();
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  run.local = detect_local_rank(world);
  GpuInventory gpus;
  if (policy != DevicePolicy::Cpu) gpus = count_gpus();
  run.gpus_here = gpus.count;
  try {
    run.choice = choose_device(policy, gpus_per_node, run.local, gpus, host, rank);
    run.warning = run.choice.warning;
  } catch (const DeviceError& e) {
    run.error = e.what();
  }
  // Summed over the world: [0] ranks that failed, [1] ranks not on a GPU.
  double all[2] = {run.error.empty() ? 0.0 : 1.0, run.choice.cuda ? 0.0 : 1.0};  // small counts: exact
  world.allreduce(std::span<double>(all), collective::ReduceOp::Sum);
  if (all[0] > 0) {
    run.failed = true;
    return run;
  }
  if (run.choice.cuda && all[1] > 0) {
    run.choice = DeviceChoice{};
    run.warning = std::to_string(static_cast<int>(all[1])) + " of " + std::to_string(size) +
                  " ranks see no GPU, so every rank trains on the CPU (cluster.device: auto)";
  }
  if (run.choice.cuda) {
    try {
      bind_device(run.choice);
    } catch (const DeviceError& e) {
      run.error = std::string(host) + " rank " + std::to_string(rank) + ": " + e.what();
    }
    double any_bad[1] = {run.error.empty() ? 0.0 : 1.0};
    world.allreduce(std::span<double>(any_bad), collective::ReduceOp::Sum);
    if (any_bad[0] > 0) {
      run.failed = true;
      return run;
    }
  }
  run.summary = std::string("device ") + device_policy_name(policy) + " -> " +
                (run.choice.cuda ? "cuda: one GPU per rank by local rank (rank " + std::to_string(rank) + ": GPU " +
                                       std::to_string(run.choice.gpu) + " of " + std::to_string(gpus.count) + " on " +
                                       host + ", " + kernels::cuda_device_description() + ", local rank from " +
                                       run.local.source + ", convolution " +
                                       kernels::cuda::conv_backend_name(kernels::cuda::conv_backend_from_env()) + ")"
                                 : std::string("cpu"));
  return run;
}

}  // namespace rsi::runtime
