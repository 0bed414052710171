// rsi::collective::Communicator — the collective operations a trainer group needs (allreduce,
// broadcast, barrier, split), behind one interface with build-time backends: `local` (one rank,
// no MPI), `mpi` (Open MPI) and, with the GPU issue, `nccl`.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace rsi::collective {

enum class ReduceOp { Sum, Average };

struct CollectiveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;
  // In place over every rank's `data`; the reduction order is fixed (rank order) so results are
  // bitwise identical on every run with the same layout.
  virtual void allreduce(std::span<float> data, ReduceOp op) = 0;
  virtual void allreduce(std::span<double> data, ReduceOp op) = 0;
  virtual void broadcast(std::span<std::byte> data, int root) = 0;
  virtual void barrier() = 0;
  // Ranks with the same color form a new communicator, ordered by key then rank.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;
};

// A communicator of one rank: every collective is a no-op.
std::unique_ptr<Communicator> make_local_communicator();
// MPI_COMM_WORLD (MPI must be initialised by the caller).
std::unique_ptr<Communicator> make_mpi_world_communicator();

}  // namespace rsi::collective
