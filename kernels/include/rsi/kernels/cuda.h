// rsi::kernels CUDA runtime: is a GPU usable, device selection, execution contexts (an explicit
// stream with a cuBLAS handle bound to it) and host <-> device copies. This header never includes
// CUDA headers, so every target can include it; in a build without nvcc (RSI_HAVE_CUDA=0)
// cuda_available() is false with "built without CUDA" and the rest throws with that reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "rsi/kernels/tensor.h"

namespace rsi::kernels {

// How a failed GPU allocation's error starts ("out of memory on the GPU: cudaMalloc of N bytes
// failed (...)"). It is thrown as OutOfDeviceMemory: a child that runs out of GPU memory is a failed
// record of kind out_of_memory (ModelRecord::FailureKind), like one that runs out of host memory.
inline constexpr const char* kOutOfDeviceMemory = "out of memory on the GPU";
struct OutOfDeviceMemory : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// True when this build contains the CUDA backend (nvcc was found at configure time).
bool cuda_built();
// True when a CUDA device can be used now. Otherwise false, and `reason` (if given) says why:
// built without CUDA, no driver, or cudaGetDeviceCount's error string. Never throws.
bool cuda_available(std::string* reason = nullptr);
// Number of visible devices (0 when cuda_available() is false).
int cuda_device_count();
// Makes `device` current for this thread (the runtime picks it by local rank).
void cuda_set_device(int device);
int cuda_current_device();
// "NVIDIA H100 80GB HBM3 (sm_90, 79 GiB)" for the current device.
std::string cuda_device_description();

// The process-wide device that training uses when a caller does not say (models::TrainOptions::device
// starts from it). CPU unless the runtime sets it after choosing this rank's GPU; setting CUDA
// without a usable GPU throws with cuda_available()'s reason.
void set_default_device(Device device);
Device default_device();

// Per-op GPU time (RSI_PROFILE_OPS=1 in the environment before the first CUDA op): every op that
// dispatch.h runs on the GPU is bracketed by CUDA events. The report waits for the device, lists
// calls, total and mean time per op (largest first) and forgets what it reported. Off: one line
// saying how to turn it on. For tuning runs only (the events cost a few µs per op).
std::string cuda_op_profile_report();

namespace cuda {

// How a context computes convolutions (conv2d_forward / conv2d_backward's GEMM part; bias and its
// gradient are our kernels either way). Im2col: an im2col kernel + one cuBLAS SGEMM over the whole
// batch, the parity-tested default. Cudnn: cuDNN's convolution (dlopen'ed libcudnn.so.<major>, the
// legacy API on our CNHW tensors described by strides), algorithms picked by cuDNN's heuristics
// (no timing) among the deterministic FP32 ones (no tensor cores, no WINOGRAD_NONFUSED unless
// RSI_CUDA_TF32=1) and kept per plan, so a run stays reproducible on one GPU model and cuDNN
// version; a call cuDNN cannot run falls back to im2col (conv_report() / conv_counts() say which and
// why). The two differ in float rounding only: a run's backend includes this choice.
enum class ConvBackend { Im2col, Cudnn };
const char* conv_backend_name(ConvBackend b);
// "im2col" or "cudnn"; anything else throws std::invalid_argument naming the valid values.
ConvBackend parse_conv_backend(const std::string& name);
// RSI_CUDA_CONV from the environment (unset or empty: im2col); a bad value throws as above.
ConvBackend conv_backend_from_env();
// "cuDNN 9.19.0 (libcudnn.so.9)" when cuDNN can be loaded (no GPU needed); otherwise empty, with
// the reason (library missing, built without cuDNN headers, version mismatch) in `why`.
std::string cudnn_library_version(std::string* why = nullptr);

class CudnnConvolutions;  // kernels/cuda/cudnn_conv.h

// Convolution calls (a forward, or a backward with its gradients) that a context's cudnn backend ran
// wholly through cuDNN, and those that fell back to im2col in whole or part (a shape, call or
// alignment cuDNN refused). Host calls: a replayed CUDA graph repeats what its capture counted once.
struct ConvCounts {
  std::int64_t cudnn = 0, fallback = 0;
};

// Where CUDA work is queued: one stream, a cuBLAS handle bound to it and a small pinned host
// buffer for scalar read-backs (losses). Ops take the context explicitly, so nothing runs on the
// legacy default stream. Not thread-safe: one context per thread of work.
class Context {
 public:
  Context();  // a new non-blocking stream on the current device
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  void* stream() const;  // cudaStream_t
  void* cublas() const;  // cublasHandle_t
  // Waits for all work queued so far; throws with the CUDA error if any op failed.
  void synchronize() const;
  // Pinned host scalars, valid after synchronize(); `count` ≤ 64.
  float* host_scalars() const;
  // The convolution backend of this context's ops: RSI_CUDA_CONV when it was created, or as set.
  // Choosing cudnn loads cuDNN and creates its handle now (throws with the reason when it cannot).
  // Change it between steps, never between a layer's forward and its backward (the im2col backward
  // reuses what its forward left in `col`).
  ConvBackend conv_backend() const;
  void set_conv_backend(ConvBackend b);
  // One line per convolution plan this context made for cuDNN (shape, call, alignment): the
  // algorithm chosen, or why it fell back to im2col; then the call counts. Empty when none.
  std::string conv_report() const;
  ConvCounts conv_counts() const;
  // cuDNN's per-context state (handle, workspace, one plan per shape), created on first use.
  CudnnConvolutions& cudnn_convolutions();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The calling thread's context (created on first use on the current device).
Context& default_context();

// For tests: kernels that index in 32-bit integers when every index fits (the usual case) take
// their 64-bit path instead while this is on, so both are checked to give the same bits.
void set_wide_indexing(bool on);

// Work queued on a context's stream, recorded once as a CUDA graph and replayed with one launch
// (a small network's training step is bound by kernel launches: replaying it as one graph removes
// the per-launch cost). Capture records without running anything, and freezes every pointer and
// kernel argument: re-capture whenever a buffer may have moved or a value changed.
class StreamGraph {
 public:
  explicit StreamGraph(Context& ctx);
  ~StreamGraph();
  StreamGraph(const StreamGraph&) = delete;
  StreamGraph& operator=(const StreamGraph&) = delete;

  // Records what `work` queues on the context's stream and instantiates it. When that fails (an op
  // that cannot be captured: a host synchronisation, an allocation) returns false with the reason
  // in `why`; no GPU work of `work` ran (its host-side effects did) and the stream stays usable, so
  // the caller queues it normally. `work` must not grow buffers: run it once uncaptured first.
  bool capture(const std::function<void()>& work, std::string* why = nullptr);
  bool captured() const;
  void reset();
  void launch();  // queues one replay on the context's stream

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A second stream beside a context's, for work that overlaps it (a trainer all-reduces gradient
// buckets here while the backward pass goes on in the context's stream), ordered against it by
// events: nothing is synchronised with the host.
class SideStream {
 public:
  explicit SideStream(Context& main);  // a new non-blocking stream on the current device
  ~SideStream();
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  void* stream() const;  // cudaStream_t
  // Work queued here from now on starts after everything queued on the main stream so far.
  void follow_main();
  // Work queued on the main stream from now on starts after everything queued here so far.
  void join_main();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cuda

// Copies n floats between any two devices' memory (cpu<->cuda, cuda<->cuda, cpu<->cpu). With a
// context the copy is queued on its stream (asynchronous unless it goes to pageable host memory);
// without one it is synchronous.
void copy_floats(float* dst, Device dst_device, const float* src, Device src_device, std::int64_t n,
                 cuda::Context* ctx = nullptr);
// Copies src into dst (same element count; any devices). Synchronous.
void copy_tensor(const Tensor& src, Tensor& dst);
// A new owning tensor with src's shape and contents on `device`.
Tensor to_device(const Tensor& src, Device device);

namespace detail {
// Device memory for Tensor (kernels/cuda/ or kernels/nocuda/).
float* cuda_alloc_floats(std::int64_t count);
void cuda_free(void* p) noexcept;
void cuda_fill(float* p, std::int64_t n, float value);
}  // namespace detail

}  // namespace rsi::kernels
