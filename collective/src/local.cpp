// The single-rank backend: collectives over one rank leave the data as it is.
#include <cstdlib>
#include <cstring>
#include <deque>

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
  std::unique_ptr<Communicator> split_by_node() override { return std::make_unique<LocalCommunicator>(); }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
  void send(std::span<const std::byte> data, int dest, int tag) override {
    if (dest != 0) throw CollectiveError("local communicator: send to rank " + std::to_string(dest) + " (size 1)");
    queue_.push_back({0, tag, std::vector<std::byte>(data.begin(), data.end())});
  }
  std::optional<Message> try_receive() override {
    if (queue_.empty()) return std::nullopt;
    Message m = std::move(queue_.front());
    queue_.pop_front();
    return m;
  }
  Message receive(int, int tag) override {
    for (auto it = queue_.begin(); it != queue_.end(); ++it)
      if (tag < 0 || it->tag == tag) {
        Message m = std::move(*it);
        queue_.erase(it);
        return m;
      }
    throw CollectiveError("local communicator: receive would wait forever (no message queued)");
  }

 private:
  std::deque<Message> queue_;
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() { return std::make_unique<LocalCommunicator>(); }

std::vector<std::byte> Communicator::broadcast_bytes(std::vector<std::byte> data, int root) {
  if (size() == 1) return data;
  std::uint64_t n = data.size();
  broadcast(std::as_writable_bytes(std::span(&n, 1)), root);
  data.resize(n);
  broadcast(data, root);
  return data;
}

std::vector<std::vector<std::byte>> Communicator::allgather_bytes(std::span<const std::byte> mine) {
  std::vector<std::vector<std::byte>> all(static_cast<std::size_t>(size()));
  for (int r = 0; r < size(); ++r)
    all[static_cast<std::size_t>(r)] =
        broadcast_bytes(r == rank() ? std::vector<std::byte>(mine.begin(), mine.end()) : std::vector<std::byte>{}, r);
  return all;
}

std::vector<std::string> Communicator::allgather_strings(const std::string& mine) {
  std::vector<std::string> out;
  for (const auto& bytes : allgather_bytes(std::as_bytes(std::span(mine.data(), mine.size()))))
    out.emplace_back(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return out;
}

int Communicator::agree(int value) {
  if (size() > 1) broadcast(std::as_writable_bytes(std::span(&value, 1)), 0);
  return value;
}

// Device buffers on a backend without them: one rank's reduction or broadcast is the identity;
// more ranks need the nccl backend.
namespace {
void require_one_rank(const Communicator& c, const char* op) {
  if (c.size() != 1)
    throw CollectiveError(std::string(op) + " of device buffers needs the nccl backend; the '" + c.backend() +
                          "' communicator of " + std::to_string(c.size()) +
                          " ranks has none (build with CUDA and NCCL, and run with cluster.device: cuda or auto)");
}
}  // namespace
void Communicator::allreduce_async(float*, std::size_t, ReduceOp, void*) { require_one_rank(*this, "allreduce_async"); }
void Communicator::allreduce_async(double*, std::size_t, ReduceOp, void*) { require_one_rank(*this, "allreduce_async"); }
void Communicator::broadcast_async(void*, std::size_t, int root, void*) {
  require_one_rank(*this, "broadcast_async");
  if (root != 0)
    throw CollectiveError("broadcast_async: root " + std::to_string(root) + " does not exist (size 1)");
}

}  // namespace rsi::collective
