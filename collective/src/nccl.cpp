// The NCCL backend of Communicator: device buffers are reduced and broadcast by NCCL on this
// rank's GPU; host buffers, barriers and point-to-point messages go to the host communicator it
// wraps (the MPI world in a run). Each communicator creates its NCCL communicator on its first
// device operation, with the ncclUniqueId made on its rank 0 and broadcast over the host
// communicator, so a job gets one NCCL communicator per trainer group that uses device buffers.
// Every failure names host, rank, GPU, the call, file:line and NCCL's own description.
#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "rsi/collective/communicator.h"

namespace rsi::collective {
namespace {

std::string hostname() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> host, int device) : host_(std::move(host)), device_(device) {
    if (!host_) throw CollectiveError("make_nccl_communicator: the host communicator is null");
    if (device_ < 0)
      throw CollectiveError("make_nccl_communicator on " + hostname() + " rank " + std::to_string(host_->rank()) +
                            ": GPU index " + std::to_string(device_) + " is negative (pick one by local rank)");
  }
  ~NcclCommunicator() override {
    if (!comm_ && !stream_) return;
    cudaSetDevice(device_);
    if (comm_) {
      // Non-throwing teardown: a communicator with a pending asynchronous error (a peer died)
      // would hang in ncclCommDestroy, so it is aborted instead.
      ncclResult_t async = ncclSuccess;
      if (ncclCommGetAsyncError(comm_, &async) != ncclSuccess || async != ncclSuccess) {
        ncclCommAbort(comm_);
      } else {
        ncclCommDestroy(comm_);
      }
    }
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const char* backend() const override { return "nccl"; }
  bool supports_device_buffers() const override { return true; }

  void allreduce(std::span<float> data, ReduceOp op) override {
    if (data.empty()) return;
    if (!on_device(data.data(), "allreduce")) return host_->allreduce(data, op);
    enqueue_allreduce(data.data(), data.size(), ncclFloat, op, own_stream(), "allreduce");
    synchronize(stream_, "allreduce");
  }
  void allreduce(std::span<double> data, ReduceOp op) override {
    if (data.empty()) return;
    if (!on_device(data.data(), "allreduce")) return host_->allreduce(data, op);
    enqueue_allreduce(data.data(), data.size(), ncclDouble, op, own_stream(), "allreduce");
    synchronize(stream_, "allreduce");
  }
  void broadcast(std::span<std::byte> data, int root) override {
    if (data.empty()) return host_->broadcast(data, root);  // still checks the root
    if (!on_device(data.data(), "broadcast")) return host_->broadcast(data, root);
    enqueue_broadcast(data.data(), data.size(), root, own_stream());
    synchronize(stream_, "broadcast");
  }
  void barrier() override {
    if (stream_) synchronize(stream_, "barrier");
    host_->barrier();
  }
  std::unique_ptr<Communicator> split(int color, int key) override {
    return std::make_unique<NcclCommunicator>(host_->split(color, key), device_);
  }
  std::unique_ptr<Communicator> split_by_node() override {
    return std::make_unique<NcclCommunicator>(host_->split_by_node(), device_);
  }
  [[noreturn]] void abort(int code) override {
    host_->abort(code);
    std::_Exit(code);  // not reached: the host's abort ends the process
  }

  void send(std::span<const std::byte> data, int dest, int tag) override { host_->send(data, dest, tag); }
  std::optional<Message> try_receive() override { return host_->try_receive(); }
  Message receive(int source, int tag) override { return host_->receive(source, tag); }

  void allreduce_async(float* data, std::size_t count, ReduceOp op, void* stream) override {
    enqueue_allreduce(data, count, ncclFloat, op, static_cast<cudaStream_t>(stream), "allreduce_async");
  }
  void allreduce_async(double* data, std::size_t count, ReduceOp op, void* stream) override {
    enqueue_allreduce(data, count, ncclDouble, op, static_cast<cudaStream_t>(stream), "allreduce_async");
  }
  void broadcast_async(void* data, std::size_t bytes, int root, void* stream) override {
    enqueue_broadcast(data, bytes, root, static_cast<cudaStream_t>(stream));
  }

 private:
  std::string where(const char* file, int line) const {
    return " on " + hostname() + " rank " + std::to_string(host_->rank()) + " of " + std::to_string(host_->size()) +
           " (GPU " + std::to_string(device_) + ", " + file + ":" + std::to_string(line) + ")";
  }
  [[noreturn]] void fail_nccl(ncclResult_t rc, const char* call, const char* file, int line) const {
    std::string msg = std::string(call) + " failed" + where(file, line) + ": " + ncclGetErrorString(rc);
    const char* detail = comm_ ? ncclGetLastError(comm_) : ncclGetLastError(nullptr);
    if (detail && *detail) msg += " (" + std::string(detail) + ")";
    if (rc == ncclInvalidUsage || rc == ncclSystemError)
      msg += "; run with NCCL_DEBUG=WARN for NCCL's own account";
    throw CollectiveError(msg);
  }
  [[noreturn]] void fail_cuda(cudaError_t rc, const char* call, const char* file, int line) const {
    std::string msg = std::string(call) + " failed" + where(file, line) + ": " + cudaGetErrorName(rc) + ": " +
                      cudaGetErrorString(rc);
    if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver || rc == cudaErrorInvalidDevice)
      msg += "; this rank needs a visible GPU (check nvidia-smi, CUDA_VISIBLE_DEVICES and the local-rank binding)";
    throw CollectiveError(msg);
  }
#define RSI_NCCL_CHECK(stmt)                                      \
  do {                                                            \
    const ncclResult_t rc_ = (stmt);                              \
    if (rc_ != ncclSuccess) fail_nccl(rc_, #stmt, __FILE__, __LINE__); \
  } while (0)
#define RSI_CUDA_CHECK(stmt)                                      \
  do {                                                            \
    const cudaError_t rc_ = (stmt);                               \
    if (rc_ != cudaSuccess) fail_cuda(rc_, #stmt, __FILE__, __LINE__); \
  } while (0)

  // Device or managed memory goes to NCCL; anything else (pageable or pinned host memory) is the
  // host communicator's.
  bool on_device(const void* p, const char* op) const {
    cudaPointerAttributes attributes{};
    const cudaError_t rc = cudaPointerGetAttributes(&attributes, p);
    if (rc != cudaSuccess) {
      // Without a usable driver no pointer can be device memory: the data is the host's.
      cudaGetLastError();
      if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver) return false;
      fail_cuda(rc, (std::string("cudaPointerGetAttributes (") + op + ")").c_str(), __FILE__, __LINE__);
    }
    return attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged;
  }

  // Collective over the host communicator: every rank of it reaches this on the same device call.
  // The ranks agree that each could select its GPU (and rank 0 make the id) before any of them
  // enters ncclCommInitRank, which would otherwise wait forever for a rank that already failed.
  void ensure_comm() {
    if (comm_) return;
    std::string local_failure;
    ncclUniqueId id;
    std::memset(&id, 0, sizeof id);
    try {
      RSI_CUDA_CHECK(cudaSetDevice(device_));
      if (host_->rank() == 0) RSI_NCCL_CHECK(ncclGetUniqueId(&id));
    } catch (const CollectiveError& e) {
      local_failure = e.what();
    }
    double failures = local_failure.empty() ? 0.0 : 1.0;
    host_->allreduce(std::span(&failures, 1), ReduceOp::Sum);
    if (!local_failure.empty()) throw CollectiveError(local_failure);
    if (failures > 0)
      throw CollectiveError("creating the NCCL communicator" + where(__FILE__, __LINE__) + ": " +
                            std::to_string(static_cast<int>(failures)) +
                            " other rank(s) of this group could not select their GPU or create the NCCL id (their "
                            "own errors name them)");
    host_->broadcast(std::as_writable_bytes(std::span(&id, 1)), 0);
    ncclComm_t comm = nullptr;
    RSI_NCCL_CHECK(ncclCommInitRank(&comm, host_->size(), id, host_->rank()));
    comm_ = comm;
  }
  // The synchronous calls' stream. A blocking stream: it waits for work on the legacy default
  // stream, so data written there (or by synchronous copies) is complete before NCCL reads it.
  // Work the caller queued on its own non-blocking streams must be complete (or use *_async).
  cudaStream_t own_stream() {
    if (!stream_) {
      RSI_CUDA_CHECK(cudaSetDevice(device_));
      RSI_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamDefault));
    }
    return stream_;
  }
  void synchronize(cudaStream_t stream, const char* op) {
    const cudaError_t rc = cudaStreamSynchronize(stream);
    if (rc != cudaSuccess) fail_cuda(rc, (std::string("cudaStreamSynchronize after ") + op).c_str(), __FILE__, __LINE__);
    check_async(op);
  }
  // A peer's failure surfaces as an asynchronous error on this communicator, not as a return code.
  void check_async(const char* op) {
    if (!comm_) return;
    ncclResult_t async = ncclSuccess;
    RSI_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
    if (async != ncclSuccess)
      fail_nccl(async, (std::string("asynchronous error after ") + op).c_str(), __FILE__, __LINE__);
  }

  void enqueue_allreduce(void* data, std::size_t count, ncclDataType_t type, ReduceOp op, cudaStream_t stream,
                         const char* what) {
    if (count == 0) return;
    if (!data) throw CollectiveError(std::string(what) + where(__FILE__, __LINE__) + ": null device pointer");
    ensure_comm();  // NCCL switches to the communicator's GPU itself: no cudaSetDevice per call
    RSI_NCCL_CHECK(ncclAllReduce(data, data, count, type, op == ReduceOp::Average ? ncclAvg : ncclSum, comm_, stream));
  }
  void enqueue_broadcast(void* data, std::size_t bytes, int root, cudaStream_t stream) {
    if (bytes == 0) return;
    if (root < 0 || root >= host_->size())
      throw CollectiveError("broadcast" + where(__FILE__, __LINE__) + ": root " + std::to_string(root) +
                            " is not a rank of this communicator (size " + std::to_string(host_->size()) + ")");
    if (!data) throw CollectiveError("broadcast" + where(__FILE__, __LINE__) + ": null device pointer");
    ensure_comm();
    RSI_NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream));
  }
#undef RSI_NCCL_CHECK
#undef RSI_CUDA_CHECK

  std::unique_ptr<Communicator> host_;
  int device_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

bool nccl_available_in_build() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> host, int device) {
  return std::make_unique<NcclCommunicator>(std::move(host), device);
}

}  // namespace rsi::collective
