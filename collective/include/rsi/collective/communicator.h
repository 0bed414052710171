// rsi::collective::Communicator — the collective operations a trainer group needs (allreduce,
// broadcast, barrier, split), behind one interface with build-time backends: `local` (one rank,
// no MPI), `mpi` (Open MPI) and `nccl` (device buffers over NCCL, host work over another backend).
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

  // Ranks that share a node (MPI_COMM_TYPE_SHARED for MPI), ordered by rank; collective.
  virtual std::unique_ptr<Communicator> split_by_node() = 0;
  // Ends every rank of the job with `code` (an error one rank cannot tell the others about in
  // order); does not return.
  [[noreturn]] virtual void abort(int code) = 0;

  // Broadcasts a byte vector of any size from `root` (size first, then the bytes).
  std::vector<std::byte> broadcast_bytes(std::vector<std::byte> data, int root);
  // Every rank's bytes (any size each), in rank order, on every rank; collective. For start-up
  // exchanges (host names, ports, pids): one broadcast per rank.
  std::vector<std::vector<std::byte>> allgather_bytes(std::span<const std::byte> mine);
  std::vector<std::string> allgather_strings(const std::string& mine);
  // Rank 0's value on every rank; collective.
  int agree(int value);

  // Device (GPU) buffers, stream-ordered: the operation is enqueued on `stream` (a cudaStream_t;
  // nullptr = the legacy default stream) and these calls return before it completes, so a trainer
  // can all-reduce one gradient bucket while the backward pass computes the next. Every rank of the
  // communicator must enqueue the same operations in the same order. `void*` keeps CUDA headers out
  // of this interface (a cudaStream_t converts to it). The `nccl` backend has them; on the others
  // a one-rank communicator leaves the data as it is (the reduction of one rank is the identity)
  // and a larger one throws CollectiveError (check supports_device_buffers()).
  virtual bool supports_device_buffers() const { return size() == 1; }
  virtual void allreduce_async(float* device_data, std::size_t count, ReduceOp op, void* stream);
  virtual void allreduce_async(double* device_data, std::size_t count, ReduceOp op, void* stream);
  virtual void broadcast_async(void* device_data, std::size_t bytes, int root, void* stream);
};

// A communicator of one rank: every collective is a no-op.
std::unique_ptr<Communicator> make_local_communicator();
// MPI_COMM_WORLD (MPI must be initialised by the caller, e.g. by an MpiSession).
std::unique_ptr<Communicator> make_mpi_world_communicator();

// MPI for one command: MPI_Init_thread with MPI_THREAD_FUNNELED (only the main thread calls MPI,
// other threads exist) on construction, MPI_Finalize exactly once on destruction, whichever way the
// command leaves (returns and exceptions alike). Callers check thread_level_ok() before relying on
// threads. Nothing of MPI's headers shows here.
class MpiSession {
 public:
  MpiSession();
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
  int provided() const { return provided_; }  // the thread level MPI gave
  int required() const;                       // MPI_THREAD_FUNNELED's value
  bool thread_level_ok() const { return provided_ >= required(); }
  // MPI_COMM_WORLD as a communicator (valid while the session lives).
  std::unique_ptr<Communicator> world() const { return make_mpi_world_communicator(); }

 private:
  int provided_ = 0;
};

// True when this build has the NCCL backend (CUDA and NCCL were found at configure time).
bool nccl_available_in_build();
// The NCCL backend on top of `host` (usually the MPI world): host buffers and point-to-point go to
// `host`; device buffers (the *_async calls, and allreduce/broadcast spans that point into device
// memory) go to NCCL on GPU `device` of this rank. Each communicator, and each one split() returns,
// creates its NCCL communicator on its first device operation: its rank 0 calls ncclGetUniqueId
// and broadcasts the id over `host`, so every trainer group gets its own NCCL communicator and the
// world gets none unless it is used for device buffers. NCCL refuses two ranks of one communicator
// on the same GPU. Throws CollectiveError in a build without NCCL.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, int device);

}  // namespace rsi::collective
