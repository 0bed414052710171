// The single-rank backend: collectives over one rank leave the data as it is.
#include "rsi/collective/communicator.h"

namespace rsi::collective {
namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "local"; }
  void allreduce(std::span<float>, ReduceOp) override {}
  void allreduce(std::span<double>, ReduceOp) override {}
  void broadcast(std::span<std::byte>, int root) override {
    if (root != 0) throw CollectiveError("local communicator: broadcast root " + std::to_string(root) + " does not exist (size 1)");
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return std::make_unique<LocalCommunicator>(); }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

}  // namespace rsi::collective
