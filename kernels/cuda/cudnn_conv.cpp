// cuDNN's convolution for ConvBackend::Cudnn (see cudnn_conv.h): a dlopen loader for the legacy
// convolution API (deprecated in cuDNN 9, still shipped and the one that takes arbitrary strides,
// which our CNHW tensors need) and one plan per convolution shape.
//
// Reproducibility: algorithms come from cuDNN's heuristics (cudnnGet*Algorithm_v7, no timing), keep
// only deterministic ones that run in FP32 (CUDNN_FMA_MATH unless RSI_CUDA_TF32=1), and are tried in
// the heuristics' order on the first call of a shape until one runs; the one that ran is kept. The
// same GPU model and cuDNN version therefore always compute a shape the same way.
#include "cudnn_conv.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "dl_library.h"

#if RSI_HAVE_CUDNN
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <cudnn.h>
#endif

namespace rsi::kernels::cuda {

#if RSI_HAVE_CUDNN

namespace {

struct Api {
  decltype(&cudnnGetVersion) get_version;
  decltype(&cudnnGetErrorString) error_string;
  decltype(&cudnnCreate) create;
  decltype(&cudnnDestroy) destroy;
  decltype(&cudnnSetStream) set_stream;
  decltype(&cudnnCreateTensorDescriptor) create_tensor;
  decltype(&cudnnSetTensor4dDescriptorEx) set_tensor;
  decltype(&cudnnDestroyTensorDescriptor) destroy_tensor;
  decltype(&cudnnCreateFilterDescriptor) create_filter;
  decltype(&cudnnSetFilter4dDescriptor) set_filter;
  decltype(&cudnnDestroyFilterDescriptor) destroy_filter;
  decltype(&cudnnCreateConvolutionDescriptor) create_conv;
  decltype(&cudnnSetConvolution2dDescriptor) set_conv;
  decltype(&cudnnSetConvolutionMathType) set_math;
  decltype(&cudnnDestroyConvolutionDescriptor) destroy_conv;
  decltype(&cudnnGetConvolutionForwardAlgorithm_v7) forward_algos;
  decltype(&cudnnGetConvolutionBackwardDataAlgorithm_v7) data_algos;
  decltype(&cudnnGetConvolutionBackwardFilterAlgorithm_v7) filter_algos;
  decltype(&cudnnConvolutionForward) forward;
  decltype(&cudnnConvolutionBackwardData) backward_data;
  decltype(&cudnnConvolutionBackwardFilter) backward_filter;
};

Api g_api{};
std::string g_error;

std::string library_name() { return "libcudnn.so." + std::to_string(CUDNN_MAJOR); }

std::string version_text(std::size_t v) {
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

void load() {
  const std::string name = library_name();
  void* library = open_library(name, "cuDNN",
                               "install cuDNN " + std::to_string(CUDNN_MAJOR) +
                                   " or add its directory to LD_LIBRARY_PATH, or use the im2col convolution "
                                   "(RSI_CUDA_CONV=im2col, the default)");
  auto bind = [&](const char* symbol, auto& fn) { bind_symbol(library, name, symbol, fn); };
  // Kept loaded for the life of the process, like cuBLAS.
  bind("cudnnGetVersion", g_api.get_version);
  bind("cudnnGetErrorString", g_api.error_string);
  const std::size_t version = g_api.get_version();
  if (version / 10000 != CUDNN_MAJOR)
    throw std::runtime_error(name + " is cuDNN " + version_text(version) + " but rsi was built against cuDNN " +
                             version_text(CUDNN_VERSION) + " headers (major versions differ)");
  bind("cudnnCreate", g_api.create);
  bind("cudnnDestroy", g_api.destroy);
  bind("cudnnSetStream", g_api.set_stream);
  bind("cudnnCreateTensorDescriptor", g_api.create_tensor);
  bind("cudnnSetTensor4dDescriptorEx", g_api.set_tensor);
  bind("cudnnDestroyTensorDescriptor", g_api.destroy_tensor);
  bind("cudnnCreateFilterDescriptor", g_api.create_filter);
  bind("cudnnSetFilter4dDescriptor", g_api.set_filter);
  bind("cudnnDestroyFilterDescriptor", g_api.destroy_filter);
  bind("cudnnCreateConvolutionDescriptor", g_api.create_conv);
  bind("cudnnSetConvolution2dDescriptor", g_api.set_conv);
  bind("cudnnSetConvolutionMathType", g_api.set_math);
  bind("cudnnDestroyConvolutionDescriptor", g_api.destroy_conv);
  bind("cudnnGetConvolutionForwardAlgorithm_v7", g_api.forward_algos);
  bind("cudnnGetConvolutionBackwardDataAlgorithm_v7", g_api.data_algos);
  bind("cudnnGetConvolutionBackwardFilterAlgorithm_v7", g_api.filter_algos);
  bind("cudnnConvolutionForward", g_api.forward);
  bind("cudnnConvolutionBackwardData", g_api.backward_data);
  bind("cudnnConvolutionBackwardFilter", g_api.backward_filter);
}

const Api& api() {
  static std::once_flag once;
  load_once(once, g_error, load);
  return g_api;
}

[[noreturn]] void throw_cudnn(cudnnStatus_t status, const char* stmt, const char* file, int line) {
  int device = -1;
  cudaGetDevice(&device);
  throw std::runtime_error(std::string("cuDNN error ") + api().error_string(status) + " in `" + stmt + "` at " +
                           file + ":" + std::to_string(line) + " on device " + std::to_string(device));
}

#define RSI_CUDNN_CHECK(stmt)                                                          \
  do {                                                                                 \
    const cudnnStatus_t rsi_cudnn_status_ = (stmt);                                    \
    if (rsi_cudnn_status_ != CUDNN_STATUS_SUCCESS)                                     \
      throw_cudnn(rsi_cudnn_status_, #stmt, __FILE__, __LINE__);                       \
  } while (0)

// Largest workspace one algorithm may ask for; the fastest ones for our sizes need far less.
constexpr std::size_t kMaxWorkspaceBytes = std::size_t{128} << 20;

const char* const kForwardNames[] = {"IMPLICIT_GEMM", "IMPLICIT_PRECOMP_GEMM", "GEMM", "DIRECT",
                                     "FFT",           "FFT_TILING",            "WINOGRAD", "WINOGRAD_NONFUSED"};
const char* const kDataNames[] = {"ALGO_0", "ALGO_1", "FFT", "FFT_TILING", "WINOGRAD", "WINOGRAD_NONFUSED"};
const char* const kFilterNames[] = {"ALGO_0", "ALGO_1", "FFT", "ALGO_3", "WINOGRAD", "WINOGRAD_NONFUSED", "FFT_TILING"};

template <std::size_t N>
const char* algo_name(const char* const (&names)[N], int algo) {
  return algo >= 0 && static_cast<std::size_t>(algo) < N ? names[algo] : "?";
}

struct Candidate {
  int algo;
  std::size_t bytes;
};

// One direction of one shape: the heuristics' usable algorithms in their order, then the one that ran.
struct Direction {
  std::vector<Candidate> candidates;
  int chosen = -1;  // index into candidates; -1 until a call ran
  std::string why;  // set when no candidate ran (or none was offered)
};

// Keeps the heuristics' results that are deterministic, FP32 (unless TF32 is allowed), succeed and fit.
template <typename Perf>
std::vector<Candidate> usable(const Perf* perf, int count, bool tf32, std::string& why) {
  std::vector<Candidate> out;
  int nondeterministic = 0, too_big = 0, tensor_op = 0, failed = 0;
  for (int i = 0; i < count; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) ++failed;
    else if (p.determinism != CUDNN_DETERMINISTIC) ++nondeterministic;
    else if (p.memory > kMaxWorkspaceBytes) ++too_big;
    else if (!tf32 && p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) ++tensor_op;
    else out.push_back({static_cast<int>(p.algo), p.memory});
  }
  if (out.empty())
    why = "no usable algorithm among " + std::to_string(count) + " (" + std::to_string(failed) + " not supported, " +
          std::to_string(nondeterministic) + " nondeterministic, " + std::to_string(too_big) + " over " +
          std::to_string(kMaxWorkspaceBytes >> 20) + " MiB of workspace, " + std::to_string(tensor_op) +
          " on TF32 tensor cores)";
  return out;
}

struct Plan {
  std::string tag;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Direction forward, data, filter;
  bool usable = false;  // forward and filter gradient have candidates (the data gradient may not)
  std::string why;      // why not usable

  ~Plan() {
    const Api& a = g_api;  // loaded: a plan exists only after api() succeeded
    if (x) a.destroy_tensor(x);
    if (y) a.destroy_tensor(y);
    if (w) a.destroy_filter(w);
    if (conv) a.destroy_conv(conv);
  }
};

using Key = std::array<int, 8>;

}  // namespace

struct CudnnConvolutions::Impl {
  Context* ctx = nullptr;
  cudnnHandle_t handle = nullptr;
  float* workspace = nullptr;
  std::size_t workspace_bytes = 0;
  // Outgrown workspaces stay allocated until this object goes: a captured CUDA graph, or work still
  // queued, may hold the old pointer. Growth is rare (a new shape), so this costs little.
  std::vector<float*> retired;
  std::map<Key, std::unique_ptr<Plan>> plans;

  cudaStream_t stream() const { return static_cast<cudaStream_t>(ctx->stream()); }

  Plan& plan(const Conv2dShape& s) {
    const Key key{s.N, s.C, s.H, s.W, s.K, s.kernel, s.stride, s.pad};
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    const Api& a = api();
    auto p = std::make_unique<Plan>();
    p->tag = "N" + std::to_string(s.N) + " C" + std::to_string(s.C) + " " + std::to_string(s.H) + "x" +
             std::to_string(s.W) + " K" + std::to_string(s.K) + " k" + std::to_string(s.kernel) + " s" +
             std::to_string(s.stride) + " p" + std::to_string(s.pad);
    const int OH = s.OH(), OW = s.OW();
    // CNHW described by strides: n steps one H·W plane, c steps N planes.
    RSI_CUDNN_CHECK(a.create_tensor(&p->x));
    RSI_CUDNN_CHECK(a.set_tensor(p->x, CUDNN_DATA_FLOAT, s.N, s.C, s.H, s.W, s.H * s.W, s.N * s.H * s.W, s.W, 1));
    RSI_CUDNN_CHECK(a.create_tensor(&p->y));
    RSI_CUDNN_CHECK(a.set_tensor(p->y, CUDNN_DATA_FLOAT, s.N, s.K, OH, OW, OH * OW, s.N * OH * OW, OW, 1));
    RSI_CUDNN_CHECK(a.create_filter(&p->w));  // Wt[K][C][k][k] is cuDNN's KCRS
    RSI_CUDNN_CHECK(a.set_filter(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.K, s.C, s.kernel, s.kernel));
    RSI_CUDNN_CHECK(a.create_conv(&p->conv));
    RSI_CUDNN_CHECK(a.set_conv(p->conv, s.pad, s.pad, s.stride, s.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                               CUDNN_DATA_FLOAT));
    const bool tf32 = tf32_allowed();
    RSI_CUDNN_CHECK(a.set_math(p->conv, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));

    int got = 0;
    cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    RSI_CUDNN_CHECK(a.forward_algos(handle, p->x, p->w, p->conv, p->y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fwd));
    p->forward.candidates = usable(fwd, got, tf32, p->forward.why);
    cudnnConvolutionBwdDataAlgoPerf_t data[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    RSI_CUDNN_CHECK(a.data_algos(handle, p->w, p->y, p->conv, p->x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, data));
    p->data.candidates = usable(data, got, tf32, p->data.why);
    cudnnConvolutionBwdFilterAlgoPerf_t filter[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    RSI_CUDNN_CHECK(
        a.filter_algos(handle, p->x, p->y, p->conv, p->w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, filter));
    p->filter.candidates = usable(filter, got, tf32, p->filter.why);
    p->usable = !p->forward.candidates.empty() && !p->filter.candidates.empty();
    if (!p->usable)
      p->why = p->forward.candidates.empty() ? "forward: " + p->forward.why : "filter gradient: " + p->filter.why;
    return *plans.emplace(key, std::move(p)).first->second;
  }

  void reserve(std::size_t bytes) {
    if (bytes <= workspace_bytes) return;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    RSI_CUDA_CHECK(cudaStreamIsCapturing(stream(), &capturing));
    if (capturing != cudaStreamCaptureStatusNone)
      throw std::runtime_error("cuDNN's workspace would grow during a CUDA graph capture (a new convolution shape)");
    float* grown = detail::cuda_alloc_floats(static_cast<std::int64_t>((bytes + sizeof(float) - 1) / sizeof(float)));
    if (workspace) retired.push_back(workspace);
    workspace = grown;
    workspace_bytes = bytes;
  }

  // Runs `call(algo, workspace, bytes)` with the direction's kept algorithm, or on the first call
  // with each candidate in order until one runs: an algorithm that refuses these tensors (a
  // NOT_SUPPORTED or BAD_PARAM status: our CNHW strides are not every kernel's layout) makes way for
  // the next. False when none ran (nothing was queued); `why` then lists their answers.
  template <typename Call>
  bool run(Direction& d, Call call) {
    if (d.chosen >= 0) {
      const Candidate& c = d.candidates[static_cast<std::size_t>(d.chosen)];
      RSI_CUDNN_CHECK(call(c.algo, workspace, workspace_bytes));
      return true;
    }
    if (d.candidates.empty()) return false;
    if (!d.why.empty()) return false;  // tried before: none ran
    std::string refusals;
    for (std::size_t i = 0; i < d.candidates.size(); ++i) {
      reserve(d.candidates[i].bytes);
      const cudnnStatus_t status = call(d.candidates[i].algo, workspace, workspace_bytes);
      if (status == CUDNN_STATUS_SUCCESS) {
        d.chosen = static_cast<int>(i);
        return true;
      }
      const int category = static_cast<int>(status) / 1000 * 1000;
      if (category != CUDNN_STATUS_NOT_SUPPORTED && category != CUDNN_STATUS_BAD_PARAM)
        throw_cudnn(status, "first call of a cuDNN convolution", __FILE__, __LINE__);
      refusals += std::string(refusals.empty() ? "" : "; ") + "algorithm " + std::to_string(d.candidates[i].algo) +
                  ": " + api().error_string(status);
    }
    d.why = "every candidate refused these CNHW tensors (" + refusals + ")";
    return false;
  }
};

CudnnConvolutions::CudnnConvolutions(Context& ctx) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = &ctx;
  const Api& a = api();
  RSI_CUDNN_CHECK(a.create(&impl_->handle));
  RSI_CUDNN_CHECK(a.set_stream(impl_->handle, impl_->stream()));
}

CudnnConvolutions::~CudnnConvolutions() {
  if (!impl_) return;
  impl_->plans.clear();
  if (impl_->handle) g_api.destroy(impl_->handle);
  detail::cuda_free(impl_->workspace);  // cudaFree waits for the device: nothing queued still uses them
  for (float* p : impl_->retired) detail::cuda_free(p);
}

bool CudnnConvolutions::forward(const Conv2dShape& s, const float* X, const float* Wt, float* Y, float beta) {
  Plan& p = impl_->plan(s);
  if (!p.usable) return false;
  const Api& a = g_api;
  const float one = 1.0f;
  return impl_->run(p.forward, [&](int algo, void* ws, std::size_t bytes) {
    return a.forward(impl_->handle, &one, p.x, X, p.w, Wt, p.conv, static_cast<cudnnConvolutionFwdAlgo_t>(algo), ws,
                     bytes, &beta, p.y, Y);
  });
}

bool CudnnConvolutions::backward(const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX,
                                 float* dW) {
  Plan& p = impl_->plan(s);
  if (!p.usable) return false;
  if (dX && p.data.candidates.empty()) return false;
  const Api& a = g_api;
  const float one = 1.0f, zero = 0.0f;
  auto filter = [&](int algo, void* ws, std::size_t bytes) {
    return a.backward_filter(impl_->handle, &one, p.x, X, p.y, dY, p.conv,
                             static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), ws, bytes, &zero, p.w, dW);
  };
  auto data = [&](int algo, void* ws, std::size_t bytes) {
    return a.backward_data(impl_->handle, &one, p.w, Wt, p.y, dY, p.conv, static_cast<cudnnConvolutionBwdDataAlgo_t>(algo),
                           ws, bytes, &zero, p.x, dX);
  };
  // A false return after the data gradient ran is still correct: the im2col path overwrites both.
  if (dX && !impl_->run(p.data, data)) return false;
  return impl_->run(p.filter, filter);
}

std::string CudnnConvolutions::report() const {
  std::string out;
  for (const auto& [key, p] : impl_->plans) {
    out += "conv " + p->tag + ": ";
    if (!p->usable) {
      out += "im2col (cuDNN " + p->why + ")\n";
      continue;
    }
    auto part = [](const char* what, const Direction& d, const char* name) {
      return std::string(what) + " " + (d.chosen >= 0 ? name : d.why.empty() ? "not run yet" : "im2col (" + d.why + ")");
    };
    auto chosen = [](const Direction& d) { return d.chosen >= 0 ? d.candidates[static_cast<std::size_t>(d.chosen)].algo : -1; };
    out += "cudnn " + part("forward", p->forward, algo_name(kForwardNames, chosen(p->forward))) + ", " +
           part("data", p->data, algo_name(kDataNames, chosen(p->data))) + ", " +
           part("filter", p->filter, algo_name(kFilterNames, chosen(p->filter))) + "\n";
  }
  if (!out.empty()) out += "cuDNN workspace " + std::to_string(impl_->workspace_bytes >> 10) + " KiB\n";
  return out;
}

std::string cudnn_library_version(std::string* why) {
  try {
    return "cuDNN " + version_text(api().get_version()) + " (" + library_name() + ")";
  } catch (const std::exception& e) {
    if (why) *why = e.what();
    return "";
  }
}

#pragma GCC diagnostic pop

#else  // built without cudnn.h

namespace {
const char* kNoCudnn =
    "this build of rsi has no cuDNN backend (cudnn.h was not found when it was configured): install cuDNN's "
    "headers and reconfigure, or use the im2col convolution (RSI_CUDA_CONV=im2col, the default)";
}

struct CudnnConvolutions::Impl {};
CudnnConvolutions::CudnnConvolutions(Context&) { throw std::runtime_error(kNoCudnn); }
CudnnConvolutions::~CudnnConvolutions() = default;
bool CudnnConvolutions::forward(const Conv2dShape&, const float*, const float*, float*, float) { return false; }
bool CudnnConvolutions::backward(const Conv2dShape&, const float*, const float*, const float*, float*, float*) {
  return false;
}
std::string CudnnConvolutions::report() const { return ""; }
std::string cudnn_library_version(std::string* why) {
  if (why) *why = kNoCudnn;
  return "";
}

#endif

}  // namespace rsi::kernels::cuda
