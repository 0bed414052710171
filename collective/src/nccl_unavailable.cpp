// Builds without NCCL (no CUDA toolkit or no NCCL found at configure time): the factory says so.
#include "rsi/collective/communicator.h"

namespace rsi::collective {

bool nccl_available_in_build() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, int) {
  throw CollectiveError(
      "make_nccl_communicator: this build of rsi has no NCCL backend (CMake found no CUDA toolkit or no NCCL; "
      "install CUDA with NCCL under /usr/local/cuda and reconfigure, or run with cluster.device: cpu)");
}

}  // namespace rsi::collective
