// CUDA runtime side of kernels/: device discovery, contexts (stream + cuBLAS handle), device
// memory for Tensor and copies between devices.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <map>
#include <utility>
#include <vector>
#include <mutex>
#include <functional>
#include <string>

#include "check.h"
#include "cublas_loader.h"
#include "cudnn_conv.h"
#include "cuda_ops.h"
#include "rsi/kernels/cuda.h"
#include "rsi/kernels/dispatch.h"

namespace rsi::kernels {

namespace cuda {
void launch_fill(float* p, std::int64_t n, float value, cudaStream_t stream);  // elementwise.cu
}

bool cuda_built() { return true; }

bool cuda_available(std::string* reason) {
  // cudaGetDeviceCount is the one call that reports "no driver" / "no device" without side effects
  // worth caching around; the answer cannot change within a process, so ask once.
  static std::once_flag once;
  static int count = 0;
  static std::string why;
  std::call_once(once, [] {
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
      count = 0;
      cudaGetLastError();  // clear the sticky-free error so later calls start clean
    } else if (count == 0) {
      why = "cudaGetDeviceCount found 0 devices";
    }
  });
  if (count == 0 && reason) *reason = why;
  return count > 0;
}

int cuda_device_count() {
  std::string ignored;
  if (!cuda_available(&ignored)) return 0;
  int n = 0;
  RSI_CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

namespace {
// The device the runtime chose for this rank. cudaSetDevice is per thread: a thread that first
// touches CUDA later (a worker thread) makes it current before creating its context.
std::atomic<int> g_selected_device{-1};
}  // namespace

void cuda_set_device(int device) {
  std::string why;
  if (!cuda_available(&why)) throw std::runtime_error("cannot select CUDA device " + std::to_string(device) + ": " + why);
  RSI_CUDA_CHECK(cudaSetDevice(device));
  g_selected_device.store(device);
}

int cuda_current_device() {
  int device = 0;
  RSI_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

std::string cuda_device_description() {
  std::string why;
  if (!cuda_available(&why)) return "no CUDA device (" + why + ")";
  const int device = cuda_current_device();
  cudaDeviceProp prop{};
  RSI_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " (device " + std::to_string(device) + ", sm_" + std::to_string(prop.major) +
         std::to_string(prop.minor) + ", " + std::to_string(prop.totalGlobalMem >> 30) + " GiB, " +
         std::to_string(prop.multiProcessorCount) + " SMs)";
}

namespace cuda {

struct Context::Impl {
  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  float* pinned = nullptr;
  void* blas_workspace = nullptr;
  ConvBackend conv = ConvBackend::Im2col;
  std::unique_ptr<CudnnConvolutions> cudnn;  // created when the cudnn backend is chosen

  // Here rather than in ~Context, so a constructor that throws half-way frees what it made.
  ~Impl() {
    cudnn.reset();  // its handle and workspace belong to this stream
    if (pinned) RSI_CUDA_CHECK_NOTHROW(cudaFreeHost(pinned));
    if (blas) blas::api().destroy(blas);
    if (blas_workspace) RSI_CUDA_CHECK_NOTHROW(cudaFree(blas_workspace));
    if (stream) RSI_CUDA_CHECK_NOTHROW(cudaStreamDestroy(stream));
  }
};

bool tf32_allowed() {
  const char* tf32 = std::getenv("RSI_CUDA_TF32");
  return tf32 && std::strcmp(tf32, "1") == 0;
}

// cuBLAS's workspace, owned by the context and set explicitly (after cublasSetStream, which resets
// it): cuBLAS then never allocates inside a stream capture (StreamGraph). NVIDIA's recommended size
// for Hopper.
constexpr std::size_t kBlasWorkspaceBytes = std::size_t{32} << 20;

Context::Context() : impl_(std::make_unique<Impl>()) {
  std::string why;
  if (!cuda_available(&why)) throw std::runtime_error("cannot create a CUDA context: " + why);
  const ConvBackend conv = conv_backend_from_env();  // a bad RSI_CUDA_CONV fails here, before any work
  RSI_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
  RSI_CUBLAS_CHECK(blas::api().create(&impl_->blas));
  RSI_CUBLAS_CHECK(blas::api().set_stream(impl_->blas, impl_->stream));
  // FP32 GEMMs stay FP32 (no TF32 tensor cores) unless RSI_CUDA_TF32=1: the parity suite compares
  // against the CPU at FP32 tolerances, and TF32's 10-bit mantissa would not meet them.
  RSI_CUBLAS_CHECK(
      blas::api().set_math_mode(impl_->blas, tf32_allowed() ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
  RSI_CUDA_CHECK(cudaMalloc(&impl_->blas_workspace, kBlasWorkspaceBytes));
  RSI_CUBLAS_CHECK(blas::api().set_workspace(impl_->blas, impl_->blas_workspace, kBlasWorkspaceBytes));
  RSI_CUDA_CHECK(cudaMallocHost(&impl_->pinned, 64 * sizeof(float)));
  set_conv_backend(conv);  // cudnn: loaded now, so a machine without it says so before any work
}

Context::~Context() = default;

void* Context::stream() const { return impl_->stream; }
void* Context::cublas() const { return impl_->blas; }
float* Context::host_scalars() const { return impl_->pinned; }

ConvBackend Context::conv_backend() const { return impl_->conv; }
void Context::set_conv_backend(ConvBackend b) {
  if (b == ConvBackend::Cudnn) (void)cudnn_convolutions();
  impl_->conv = b;
}
std::string Context::conv_report() const { return impl_->cudnn ? impl_->cudnn->report() : std::string(); }
ConvCounts Context::conv_counts() const { return impl_->cudnn ? impl_->cudnn->counts() : ConvCounts{}; }
CudnnConvolutions& Context::cudnn_convolutions() {
  if (!impl_->cudnn) impl_->cudnn = std::make_unique<CudnnConvolutions>(*this);
  return *impl_->cudnn;
}

void Context::synchronize() const { RSI_CUDA_CHECK(cudaStreamSynchronize(impl_->stream)); }

struct SideStream::Impl {
  Context* main = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t main_done = nullptr, side_done = nullptr;  // timing off: recording costs nothing
};

SideStream::SideStream(Context& main) : impl_(std::make_unique<Impl>()) {
  impl_->main = &main;
  RSI_CUDA_CHECK(cudaStreamCreateWithFlags(&impl_->stream, cudaStreamNonBlocking));
  RSI_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->main_done, cudaEventDisableTiming));
  RSI_CUDA_CHECK(cudaEventCreateWithFlags(&impl_->side_done, cudaEventDisableTiming));
}

SideStream::~SideStream() {
  if (!impl_) return;
  // Destroying a stream with queued work is allowed (the work completes); the events likewise.
  if (impl_->main_done) RSI_CUDA_CHECK_NOTHROW(cudaEventDestroy(impl_->main_done));
  if (impl_->side_done) RSI_CUDA_CHECK_NOTHROW(cudaEventDestroy(impl_->side_done));
  if (impl_->stream) RSI_CUDA_CHECK_NOTHROW(cudaStreamDestroy(impl_->stream));
}

void* SideStream::stream() const { return impl_->stream; }

void SideStream::follow_main() {
  RSI_CUDA_CHECK(cudaEventRecord(impl_->main_done, static_cast<cudaStream_t>(impl_->main->stream())));
  RSI_CUDA_CHECK(cudaStreamWaitEvent(impl_->stream, impl_->main_done, 0));
}

void SideStream::join_main() {
  RSI_CUDA_CHECK(cudaEventRecord(impl_->side_done, impl_->stream));
  RSI_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(impl_->main->stream()), impl_->side_done, 0));
}

struct StreamGraph::Impl {
  Context* ctx = nullptr;
  cudaGraphExec_t exec = nullptr;
};

StreamGraph::StreamGraph(Context& ctx) : impl_(std::make_unique<Impl>()) { impl_->ctx = &ctx; }

StreamGraph::~StreamGraph() { reset(); }

void StreamGraph::reset() {
  if (impl_ && impl_->exec) {
    RSI_CUDA_CHECK_NOTHROW(cudaGraphExecDestroy(impl_->exec));
    impl_->exec = nullptr;
  }
}

bool StreamGraph::captured() const { return impl_->exec != nullptr; }

namespace {
bool op_profiling();
}  // namespace

bool StreamGraph::capture(const std::function<void()>& work, std::string* why) {
  reset();
  if (op_profiling()) {
    if (why) *why = "op profiling is on (RSI_PROFILE_OPS=1): ops are timed one by one, not as a graph";
    return false;
  }
  const auto stream = static_cast<cudaStream_t>(impl_->ctx->stream());
  // Thread-local mode: only this thread's unsafe calls (a synchronisation, a cudaMalloc) break the
  // capture; other threads of the process go on.
  RSI_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  std::string failure;
  try {
    work();
  } catch (const std::exception& e) {
    failure = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (failure.empty() && ended != cudaSuccess)
    failure = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(ended);
  if (failure.empty()) {
    const cudaError_t made = cudaGraphInstantiate(&impl_->exec, graph, 0);
    if (made != cudaSuccess) {
      impl_->exec = nullptr;
      failure = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(made);
    }
  }
  if (graph) RSI_CUDA_CHECK_NOTHROW(cudaGraphDestroy(graph));
  if (failure.empty()) return true;
  (void)cudaGetLastError();  // a failed capture leaves its error behind; the stream stays usable
  if (why) *why = failure;
  return false;
}

void StreamGraph::launch() {
  if (!impl_->exec) throw std::logic_error("StreamGraph::launch: nothing was captured");
  RSI_CUDA_CHECK(cudaGraphLaunch(impl_->exec, static_cast<cudaStream_t>(impl_->ctx->stream())));
}

Context& default_context() {
  thread_local std::unique_ptr<Context> context;
  if (!context) {
    const int selected = g_selected_device.load();
    if (selected >= 0) RSI_CUDA_CHECK(cudaSetDevice(selected));
    context = std::make_unique<Context>();
  }
  return *context;
}

}  // namespace cuda

namespace cuda {

namespace {
struct OpRecord {
  const char* name;
  cudaEvent_t start, stop;
};
// Profiling is for single-threaded tuning runs (the benchmark); records are appended in order.
std::vector<OpRecord> g_op_records;

bool op_profiling() {
  static const bool on = [] {
    const char* v = std::getenv("RSI_PROFILE_OPS");
    return v && std::strcmp(v, "1") == 0;
  }();
  return on;
}
}  // namespace

OpTimer::OpTimer(Context& ctx, const char* name) : ctx_(&ctx) {
  if (!op_profiling()) return;
  OpRecord r{name, nullptr, nullptr};
  RSI_CUDA_CHECK(cudaEventCreate(&r.start));
  RSI_CUDA_CHECK(cudaEventCreate(&r.stop));
  RSI_CUDA_CHECK(cudaEventRecord(r.start, static_cast<cudaStream_t>(ctx.stream())));
  slot_ = static_cast<long>(g_op_records.size());
  g_op_records.push_back(r);
}

OpTimer::~OpTimer() {
  if (slot_ < 0) return;
  RSI_CUDA_CHECK_NOTHROW(
      cudaEventRecord(g_op_records[static_cast<std::size_t>(slot_)].stop, static_cast<cudaStream_t>(ctx_->stream())));
}

}  // namespace cuda

std::string cuda_op_profile_report() {
  if (!cuda::op_profiling()) return "op profile: off (set RSI_PROFILE_OPS=1 before the first CUDA op)";
  RSI_CUDA_CHECK(cudaDeviceSynchronize());
  struct Total {
    long calls = 0;
    double ms = 0.0;
  };
  std::map<std::string, Total> totals;
  double all = 0.0;
  for (const auto& r : cuda::g_op_records) {
    float ms = 0.0f;
    RSI_CUDA_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
    Total& t = totals[r.name];
    ++t.calls;
    t.ms += ms;
    all += ms;
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.stop);
  }
  cuda::g_op_records.clear();
  std::vector<std::pair<std::string, Total>> rows(totals.begin(), totals.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::string out = "op profile (GPU time between events per op, incl. launch gaps):\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-26s %8s %11s %10s %6s\n", "op", "calls", "total ms", "mean us", "share");
  out += line;
  for (const auto& [name, t] : rows) {
    std::snprintf(line, sizeof line, "  %-26s %8ld %11.3f %10.2f %5.1f%%\n", name.c_str(), t.calls, t.ms,
                  1000.0 * t.ms / static_cast<double>(t.calls), all > 0 ? 100.0 * t.ms / all : 0.0);
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-26s %8s %11.3f\n", "all ops", "", all);
  out += line;
  return out;
}

Exec Exec::gpu() { return {Device::CUDA, &cuda::default_context()}; }

void copy_floats(float* dst, Device dst_device, const float* src, Device src_device, std::int64_t n,
                 cuda::Context* ctx) {
  if (n <= 0) return;
  if (dst_device == Device::CPU && src_device == Device::CPU) {
    std::copy_n(src, n, dst);
    return;
  }
  const cudaMemcpyKind kind = src_device == Device::CPU   ? cudaMemcpyHostToDevice
                              : dst_device == Device::CPU ? cudaMemcpyDeviceToHost
                                                          : cudaMemcpyDeviceToDevice;
  const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(float);
  // Our streams are non-blocking (they do not wait for the legacy default stream, nor it for them),
  // so a synchronous copy goes through the default context's stream and waits there: it then sees
  // every op queued on that context before it.
  cuda::Context& on = ctx ? *ctx : cuda::default_context();
  RSI_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, static_cast<cudaStream_t>(on.stream())));
  if (!ctx) on.synchronize();
}

namespace detail {

float* cuda_alloc_floats(std::int64_t count) {
  std::string why;
  if (!cuda_available(&why)) throw std::runtime_error("cannot allocate a CUDA tensor: " + why);
  void* p = nullptr;
  const std::size_t bytes = static_cast<std::size_t>(std::max<std::int64_t>(count, 1)) * sizeof(float);
  const cudaError_t err = cudaMalloc(&p, bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw OutOfDeviceMemory(std::string(kOutOfDeviceMemory) + ": cudaMalloc of " + std::to_string(bytes) + " bytes failed (" +
                             cudaGetErrorString(err) + ")");
  }
  return static_cast<float*>(p);
}

void cuda_free(void* p) noexcept {
  if (p) RSI_CUDA_CHECK_NOTHROW(cudaFree(p));
}

void cuda_fill(float* p, std::int64_t n, float value) {
  if (n <= 0) return;
  // Synchronous on the default context's stream: Tensor::fill is called from host code that
  // expects the values to be there when it returns.
  cuda::Context& ctx = cuda::default_context();
  cuda::launch_fill(p, n, value, static_cast<cudaStream_t>(ctx.stream()));
  ctx.synchronize();
}

}  // namespace detail

}  // namespace rsi::kernels
