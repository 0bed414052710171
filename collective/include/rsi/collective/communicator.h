// rsi::collective::Communicator — the collective operations a trainer group needs (allreduce,
// broadcast, barrier, split), behind one interface with build-time backends: `local` (one rank,
// no MPI), `mpi` (Open MPI) and, with the GPU issue, `nccl`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace rsi::collective {

enum class ReduceOp { Sum, Average };

struct CollectiveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A point-to-point message (the coordinator/worker protocol).
struct Message {
  int source = -1;
  int tag = -1;
  std::vector<std::byte> data;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;
  // In place over every rank's `data`. The result is bitwise identical on every rank and on every
  // run with the same communicator size and message size (Open MPI's algorithm choice depends on
  // those alone); it is not necessarily the left-to-right sum over ranks.
  virtual void allreduce(std::span<float> data, ReduceOp op) = 0;
  virtual void allreduce(std::span<double> data, ReduceOp op) = 0;
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;
  // Ranks with the same color form a new communicator, ordered by key then rank.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Point-to-point. send() blocks until the buffer may be reused.
  virtual void send(std::span<const std::byte> data, int dest, int tag) = 0;
  // A message from any source with any tag, if one has arrived; never blocks.
  virtual std::optional<Message> try_receive() = 0;
  // Waits for a message from `source` (any source when < 0) with `tag` (any tag when < 0). Waits
  // by polling with a growing sleep (up to 1 ms), so idle ranks do not burn a core when
  // oversubscribed.
  virtual Message receive(int source, int tag) = 0;

  // Broadcasts a byte vector of any size from `root` (size first, then the bytes).
  std::vector<std::byte> broadcast_bytes(std::vector<std::byte> data, int root);
};

// A communicator of one rank: every collective is a no-op.
std::unique_ptr<Communicator> make_local_communicator();
// MPI_COMM_WORLD (MPI must be initialised by the caller).
std::unique_ptr<Communicator> make_mpi_world_communicator();

}  // namespace rsi::collective
