// The MPI backend of Communicator: MPI_Allreduce / MPI_Bcast / MPI_Comm_split on a communicator
// whose errors are returned (not fatal) and turned into CollectiveError naming host, rank, file and
// line. Every failure names the MPI call that failed.
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "rsi/collective/communicator.h"

namespace rsi::collective {
namespace {

[[noreturn]] void fail(int rc, const char* what, const char* file, int line) {
  char err[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, err, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  throw CollectiveError(std::string(what) + " failed on " + host + " rank " + std::to_string(rank) + " (" + file + ":" +
                        std::to_string(line) + "): " + std::string(err, len));
}
#define RSI_MPI_CHECK(stmt)                               \
  do {                                                    \
    const int rc_ = (stmt);                               \
    if (rc_ != MPI_SUCCESS) fail(rc_, #stmt, __FILE__, __LINE__); \
  } while (0)

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    RSI_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    RSI_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    if (owned_) MPI_Comm_free(&comm_);  // non-throwing: errors here are ignored on purpose
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  void allreduce(std::span<float> data, ReduceOp op) override { reduce(data, MPI_FLOAT, op); }
  void allreduce(std::span<double> data, ReduceOp op) override { reduce(data, MPI_DOUBLE, op); }

  void broadcast(std::span<std::byte> data, int root) override {
    RSI_MPI_CHECK(MPI_Bcast(data.data(), static_cast<int>(data.size()), MPI_BYTE, root, comm_));
  }
  void barrier() override { RSI_MPI_CHECK(MPI_Barrier(comm_)); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm out;
    RSI_MPI_CHECK(MPI_Comm_split(comm_, color, key, &out));
    return std::make_unique<MpiCommunicator>(out, true);
  }
  std::unique_ptr<Communicator> split_by_node() override {
    MPI_Comm out;
    RSI_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &out));
    return std::make_unique<MpiCommunicator>(out, true);
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(comm_, code);
    std::_Exit(code);  // MPI_Abort does not return; if an implementation did, leave anyway
  }

  void send(std::span<const std::byte> data, int dest, int tag) override {
    RSI_MPI_CHECK(MPI_Send(data.data(), static_cast<int>(data.size()), MPI_BYTE, dest, tag, comm_));
  }

  std::optional<Message> try_receive() override { return probe_and_receive(MPI_ANY_SOURCE, MPI_ANY_TAG); }

  Message receive(int source, int tag) override {
    auto sleep = std::chrono::microseconds(2);
    for (;;) {
      if (auto m = probe_and_receive(source < 0 ? MPI_ANY_SOURCE : source, tag < 0 ? MPI_ANY_TAG : tag)) return *m;
      std::this_thread::sleep_for(sleep);
      sleep = std::min(sleep * 2, std::chrono::microseconds(1000));
    }
  }

 private:
  std::optional<Message> probe_and_receive(int source, int tag) {
    int flag = 0;
    MPI_Status status;
    RSI_MPI_CHECK(MPI_Iprobe(source, tag, comm_, &flag, &status));
    if (!flag) return std::nullopt;
    int count = 0;
    RSI_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &count));
    Message m;
    m.source = status.MPI_SOURCE;
    m.tag = status.MPI_TAG;
    m.data.resize(static_cast<std::size_t>(count));
    RSI_MPI_CHECK(MPI_Recv(m.data.data(), count, MPI_BYTE, m.source, m.tag, comm_, MPI_STATUS_IGNORE));
    return m;
  }

  template <typename T>
  void reduce(std::span<T> data, MPI_Datatype type, ReduceOp op) {
    if (size_ == 1 || data.empty()) return;
    RSI_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()), type, MPI_SUM, comm_));
    if (op == ReduceOp::Average) {
      const T inv = T(1) / static_cast<T>(size_);
      for (auto& x : data) x *= inv;
    }
  }

  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0, size_ = 1;
};

}  // namespace

MpiSession::MpiSession() { MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided_); }

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

int MpiSession::required() const { return MPI_THREAD_FUNNELED; }

std::unique_ptr<Communicator> make_mpi_world_communicator() {
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) throw CollectiveError("make_mpi_world_communicator: MPI_Init has not been called");
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, false);
}

}  // namespace rsi::collective
