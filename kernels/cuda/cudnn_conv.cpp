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
#include <cstdint>
#include <initializer_list>
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
  decltype(&cudnnGetConvolutionForwardAlgorithmMaxCount) forward_max;
  decltype(&cudnnGetConvolutionBackwardDataAlgorithmMaxCount) data_max;
  decltype(&cudnnGetConvolutionBackwardFilterAlgorithmMaxCount) filter_max;
  decltype(&cudnnGetConvolutionForwardWorkspaceSize) forward_workspace;
  decltype(&cudnnGetConvolutionBackwardDataWorkspaceSize) data_workspace;
  decltype(&cudnnGetConvolutionBackwardFilterWorkspaceSize) filter_workspace;
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
  bind("cudnnGetConvolutionForwardAlgorithmMaxCount", g_api.forward_max);
  bind("cudnnGetConvolutionBackwardDataAlgorithmMaxCount", g_api.data_max);
  bind("cudnnGetConvolutionBackwardFilterAlgorithmMaxCount", g_api.filter_max);
  bind("cudnnGetConvolutionForwardWorkspaceSize", g_api.forward_workspace);
  bind("cudnnGetConvolutionBackwardDataWorkspaceSize", g_api.data_workspace);
  bind("cudnnGetConvolutionBackwardFilterWorkspaceSize", g_api.filter_workspace);
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

// A status saying "this algorithm does not take these tensors" (layout, shape, padding, alignment,
// launch limits): the next candidate, or im2col, computes it instead. Anything else — a null
// pointer, a too-small workspace, a stream or driver mismatch, a missing sub-library — is a bug or
// a broken install and is thrown.
bool refused(cudnnStatus_t s) {
  switch (s) {
    case CUDNN_STATUS_BAD_PARAM:
    case CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER:
    case CUDNN_STATUS_NOT_SUPPORTED:
    case CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN:
    case CUDNN_STATUS_NOT_SUPPORTED_SHAPE:
    case CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE:
    case CUDNN_STATUS_NOT_SUPPORTED_LAYOUT:
    case CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT:
    case CUDNN_STATUS_NOT_SUPPORTED_PADDING:
    case CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM: return true;
    default: return false;
  }
}

std::string status_text(cudnnStatus_t s) {
  return std::string(g_api.error_string(s)) + " (" + std::to_string(static_cast<int>(s)) + ")";
}

struct Candidate {
  int algo;
  cudnnMathType_t math;  // the math type it runs with (set on the descriptor before each call)
  std::size_t bytes;     // its workspace with that math type
};

// One direction of one plan: the heuristics' usable algorithms in their order, then the one that ran.
struct Direction {
  std::vector<Candidate> candidates;
  int chosen = -1;  // index into candidates; -1 until a call ran
  std::string why;  // set when no candidate ran (or none was offered)
  bool failed() const { return chosen < 0 && !why.empty(); }
};

// The heuristics' results that are deterministic, succeed, fit in the workspace cap and keep FP32
// accuracy: strict mode (the default) runs them with CUDNN_FMA_MATH and leaves out tensor-core
// entries and WINOGRAD_NONFUSED (whose rounding NVIDIA warns about); with RSI_CUDA_TF32=1 each runs
// with the math type the heuristic gave it (never ALLOW_CONVERSION, which may round to FP16).
// `winograd_nonfused` is that algorithm's enum value in this direction. `workspace(algo, math,
// &bytes)` asks cuDNN for the size with the descriptor as it will run; false when cuDNN refuses.
template <typename Perf, typename Workspace>
std::vector<Candidate> usable(const std::vector<Perf>& perf, int count, bool tf32, int winograd_nonfused,
                              Workspace workspace, std::string& why) {
  std::vector<Candidate> out;
  int nondeterministic = 0, too_big = 0, precision = 0, failed = 0, unsizable = 0;
  for (int i = 0; i < count; ++i) {
    const Perf& p = perf[static_cast<std::size_t>(i)];
    const int algo = static_cast<int>(p.algo);
    const bool fp32 = p.mathType == CUDNN_FMA_MATH || p.mathType == CUDNN_DEFAULT_MATH;
    // ALLOW_CONVERSION may round FP32 data down to FP16: never, in either mode.
    const bool converts = p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    if (p.status != CUDNN_STATUS_SUCCESS) {
      ++failed;
    } else if (p.determinism != CUDNN_DETERMINISTIC) {
      ++nondeterministic;
    } else if (converts || (!tf32 && (!fp32 || algo == winograd_nonfused))) {
      ++precision;
    } else {
      const cudnnMathType_t math = tf32 ? p.mathType : CUDNN_FMA_MATH;
      std::size_t sized = 0;
      if (!workspace(algo, math, &sized)) {
        ++unsizable;
        continue;
      }
      const std::size_t bytes = std::max(p.memory, sized);
      if (bytes > kMaxWorkspaceBytes) ++too_big;
      else if (std::none_of(out.begin(), out.end(), [&](const Candidate& c) { return c.algo == algo && c.math == math; }))
        out.push_back({algo, math, bytes});
    }
  }
  if (out.empty())
    why = "no usable algorithm among " + std::to_string(count) + " (" + std::to_string(failed) + " not supported, " +
          std::to_string(nondeterministic) + " nondeterministic, " + std::to_string(precision) +
          " below FP32 accuracy, " + std::to_string(unsizable) + " refused a workspace size, " +
          std::to_string(too_big) + " over " + std::to_string(kMaxWorkspaceBytes >> 20) + " MiB of workspace)";
  return out;
}

// Smallest power-of-two byte alignment (capped at 16) of the pointers a call passes: cuDNN's kernels
// may need aligned operands, so calls of one shape with differently aligned weights (they sit at
// float offsets in a network's flat parameter buffer) get plans of their own.
int alignment(std::initializer_list<const void*> pointers) {
  int align = 16;
  for (const void* p : pointers) {
    if (!p) continue;
    const auto v = reinterpret_cast<std::uintptr_t>(p);
    while (align > 1 && v % static_cast<std::uintptr_t>(align) != 0) align /= 2;
  }
  return align;
}

struct Plan {
  std::string tag;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Direction forward, data, filter;

  ~Plan() {
    const Api& a = g_api;  // loaded: a plan exists only after api() succeeded
    if (x) a.destroy_tensor(x);
    if (y) a.destroy_tensor(y);
    if (w) a.destroy_filter(w);
    if (conv) a.destroy_conv(conv);
  }
};

// Fills one direction of a plan: cuDNN's heuristics for it (`max_count(&n)`, `algos(n, &got, perf)`),
// filtered by usable(); `workspace(algo, &bytes)` sizes a candidate with the descriptor's math type
// set to the one it will run with.
template <typename Perf, typename MaxCount, typename Algos, typename Workspace>
void choose(Plan& p, Direction& d, bool tf32, int winograd_nonfused, MaxCount max_count, Algos algos,
            Workspace workspace) {
  // The heuristics see the descriptor's base math type (sizing below changes it per candidate).
  RSI_CUDNN_CHECK(g_api.set_math(p.conv, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  int max = 0, got = 0;
  RSI_CUDNN_CHECK(max_count(&max));
  std::vector<Perf> perf(static_cast<std::size_t>(std::max(max, 1)));
  RSI_CUDNN_CHECK(algos(max, &got, perf.data()));
  auto sized = [&](int algo, cudnnMathType_t math, std::size_t* bytes) {
    RSI_CUDNN_CHECK(g_api.set_math(p.conv, math));
    const cudnnStatus_t status = workspace(algo, bytes);
    if (status == CUDNN_STATUS_SUCCESS) return true;
    if (!refused(status)) throw_cudnn(status, "a cuDNN workspace size query", __FILE__, __LINE__);
    return false;
  };
  d.candidates = usable(perf, got, tf32, winograd_nonfused, sized, d.why);
}

// Shape, then the call's kind: forward with beta 0, forward with beta 1, or backward; then alignment.
using Key = std::array<int, 10>;
enum CallKind { kForwardOverwrite = 0, kForwardAccumulate = 1, kBackward = 2 };

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
  ConvCounts counts;

  cudaStream_t stream() const { return static_cast<cudaStream_t>(ctx->stream()); }

  ~Impl() {
    plans.clear();
    if (handle) g_api.destroy(handle);
    detail::cuda_free(workspace);  // cudaFree waits for the device: nothing queued still uses them
    for (float* p : retired) detail::cuda_free(p);
  }

  void refuse_in_capture(const char* what) const {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    RSI_CUDA_CHECK(cudaStreamIsCapturing(stream(), &capturing));
    if (capturing != cudaStreamCaptureStatusNone)
      throw std::runtime_error(std::string("cuDNN would ") + what + " during a CUDA graph capture (a new convolution shape)");
  }

  Plan& plan(const Conv2dShape& s, CallKind kind, int align) {
    const Key key{s.N, s.C, s.H, s.W, s.K, s.kernel, s.stride, s.pad, kind, align};
    auto it = plans.find(key);
    if (it != plans.end()) return *it->second;
    refuse_in_capture("plan a convolution");  // heuristics and first-call trials run uncaptured
    const Api& a = api();
    auto p = std::make_unique<Plan>();
    p->tag = "N" + std::to_string(s.N) + " C" + std::to_string(s.C) + " " + std::to_string(s.H) + "x" +
             std::to_string(s.W) + " K" + std::to_string(s.K) + " k" + std::to_string(s.kernel) + " s" +
             std::to_string(s.stride) + " p" + std::to_string(s.pad) +
             (kind == kBackward ? " backward" : kind == kForwardAccumulate ? " forward+bias" : " forward") +
             (align < 16 ? " align " + std::to_string(align) : "");
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
    Plan& q = *p;
    using FwdAlgo = cudnnConvolutionFwdAlgo_t;
    using DataAlgo = cudnnConvolutionBwdDataAlgo_t;
    using FilterAlgo = cudnnConvolutionBwdFilterAlgo_t;
    if (kind != kBackward) {
      choose<cudnnConvolutionFwdAlgoPerf_t>(
          q, q.forward, tf32, CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED, [&](int* n) { return a.forward_max(handle, n); },
          [&](int n, int* got, auto* perf) { return a.forward_algos(handle, q.x, q.w, q.conv, q.y, n, got, perf); },
          [&](int algo, std::size_t* bytes) {
            return a.forward_workspace(handle, q.x, q.w, q.conv, q.y, static_cast<FwdAlgo>(algo), bytes);
          });
    } else {
      choose<cudnnConvolutionBwdDataAlgoPerf_t>(
          q, q.data, tf32, CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED, [&](int* n) { return a.data_max(handle, n); },
          [&](int n, int* got, auto* perf) { return a.data_algos(handle, q.w, q.y, q.conv, q.x, n, got, perf); },
          [&](int algo, std::size_t* bytes) {
            return a.data_workspace(handle, q.w, q.y, q.conv, q.x, static_cast<DataAlgo>(algo), bytes);
          });
      choose<cudnnConvolutionBwdFilterAlgoPerf_t>(
          q, q.filter, tf32, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
          [&](int* n) { return a.filter_max(handle, n); },
          [&](int n, int* got, auto* perf) { return a.filter_algos(handle, q.x, q.y, q.conv, q.w, n, got, perf); },
          [&](int algo, std::size_t* bytes) {
            return a.filter_workspace(handle, q.x, q.y, q.conv, q.w, static_cast<FilterAlgo>(algo), bytes);
          });
    }
    return *plans.emplace(key, std::move(p)).first->second;
  }

  void reserve(std::size_t bytes) {
    if (bytes <= workspace_bytes) return;
    refuse_in_capture("grow its workspace");
    // Doubling (up to the cap) keeps the retired ones under the final size in total.
    const std::size_t size = std::max(bytes, std::min(2 * workspace_bytes, kMaxWorkspaceBytes));
    float* grown = detail::cuda_alloc_floats(static_cast<std::int64_t>((size + sizeof(float) - 1) / sizeof(float)));
    if (workspace) retired.push_back(workspace);
    workspace = grown;
    workspace_bytes = size;
  }

  // Runs `call(algo, workspace, bytes)` with the direction's kept algorithm, or on the first call
  // with each candidate in order until one runs; a refusal (refused()) makes way for the next. False
  // when none ran (nothing was queued): `why` then lists their answers and the direction stays on
  // im2col. A refusal of the kept algorithm (not expected: the plan's key holds what it depends on)
  // sends that call to im2col too.
  template <typename Call>
  bool run(Plan& p, Direction& d, Call call) {
    const Api& a = g_api;
    if (d.chosen >= 0) {
      const Candidate& c = d.candidates[static_cast<std::size_t>(d.chosen)];
      RSI_CUDNN_CHECK(a.set_math(p.conv, c.math));
      const cudnnStatus_t status = call(c.algo, workspace, workspace_bytes);
      if (status == CUDNN_STATUS_SUCCESS) return true;
      if (refused(status)) return false;
      throw_cudnn(status, "a cuDNN convolution", __FILE__, __LINE__);
    }
    if (d.candidates.empty() || d.failed()) return false;
    refuse_in_capture("try its algorithms");  // a captured trial would decide nothing
    std::string refusals;
    for (std::size_t i = 0; i < d.candidates.size(); ++i) {
      const Candidate& c = d.candidates[i];
      try {
        reserve(c.bytes);
      } catch (const std::runtime_error& e) {  // out of GPU memory for this one: the next may fit
        refusals += std::string(refusals.empty() ? "" : "; ") + "algorithm " + std::to_string(c.algo) + ": " + e.what();
        continue;
      }
      RSI_CUDNN_CHECK(a.set_math(p.conv, c.math));
      const cudnnStatus_t status = call(c.algo, workspace, workspace_bytes);
      if (status == CUDNN_STATUS_SUCCESS) {
        d.chosen = static_cast<int>(i);
        return true;
      }
      if (!refused(status)) throw_cudnn(status, "the first call of a cuDNN convolution", __FILE__, __LINE__);
      refusals += std::string(refusals.empty() ? "" : "; ") + "algorithm " + std::to_string(c.algo) + ": " +
                  status_text(status);
    }
    d.why = "every candidate refused these CNHW tensors (" + refusals + ")";
    return false;
  }

  void count(bool ran) { ++(ran ? counts.cudnn : counts.fallback); }
};

CudnnConvolutions::CudnnConvolutions(Context& ctx) : impl_(std::make_unique<Impl>()) {
  impl_->ctx = &ctx;
  const Api& a = api();
  RSI_CUDNN_CHECK(a.create(&impl_->handle));  // ~Impl destroys it should the next line throw
  RSI_CUDNN_CHECK(a.set_stream(impl_->handle, impl_->stream()));
}

CudnnConvolutions::~CudnnConvolutions() = default;

bool CudnnConvolutions::forward(const Conv2dShape& s, const float* X, const float* Wt, float* Y, float beta) {
  Plan& p = impl_->plan(s, beta != 0.0f ? kForwardAccumulate : kForwardOverwrite, alignment({X, Wt, Y}));
  const Api& a = g_api;
  const float one = 1.0f;
  const bool ran = impl_->run(p, p.forward, [&](int algo, void* ws, std::size_t bytes) {
    return a.forward(impl_->handle, &one, p.x, X, p.w, Wt, p.conv, static_cast<cudnnConvolutionFwdAlgo_t>(algo), ws,
                     bytes, &beta, p.y, Y);
  });
  impl_->count(ran);
  return ran;
}

CudnnConvolutions::Parts CudnnConvolutions::backward(const Conv2dShape& s, const float* X, const float* Wt,
                                                     const float* dY, float* dX, float* dW) {
  Plan& p = impl_->plan(s, kBackward, alignment({X, Wt, dY, dX, dW}));
  const Api& a = g_api;
  const float one = 1.0f, zero = 0.0f;
  Parts done;
  done.filter = impl_->run(p, p.filter, [&](int algo, void* ws, std::size_t bytes) {
    return a.backward_filter(impl_->handle, &one, p.x, X, p.y, dY, p.conv,
                             static_cast<cudnnConvolutionBwdFilterAlgo_t>(algo), ws, bytes, &zero, p.w, dW);
  });
  if (dX) {
    done.data = impl_->run(p, p.data, [&](int algo, void* ws, std::size_t bytes) {
      return a.backward_data(impl_->handle, &one, p.w, Wt, p.y, dY, p.conv,
                             static_cast<cudnnConvolutionBwdDataAlgo_t>(algo), ws, bytes, &zero, p.x, dX);
    });
  }
  impl_->count(done.filter && (!dX || done.data));
  return done;
}

ConvCounts CudnnConvolutions::counts() const { return impl_->counts; }

std::string CudnnConvolutions::report() const {
  std::string out;
  auto part = [](const char* what, const Direction& d, const char* name) {
    return std::string(what) + " " + (d.chosen >= 0 ? name : d.why.empty() ? "not run yet" : "im2col (" + d.why + ")");
  };
  auto chosen = [](const Direction& d) {
    return d.chosen >= 0 ? d.candidates[static_cast<std::size_t>(d.chosen)].algo : -1;
  };
  for (const auto& [key, p] : impl_->plans) {
    out += "conv " + p->tag + ": ";
    if (key[8] != kBackward) {
      out += part("cudnn", p->forward, algo_name(kForwardNames, chosen(p->forward))) + "\n";
    } else {
      out += part("cudnn filter", p->filter, algo_name(kFilterNames, chosen(p->filter))) + ", " +
             part("data", p->data, algo_name(kDataNames, chosen(p->data))) + "\n";
    }
  }
  if (!out.empty())
    out += "cuDNN: " + std::to_string(impl_->counts.cudnn) + " convolution calls, " +
           std::to_string(impl_->counts.fallback) + " fell back to im2col; workspace " +
           std::to_string(impl_->workspace_bytes >> 10) + " KiB\n";
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
CudnnConvolutions::Parts CudnnConvolutions::backward(const Conv2dShape&, const float*, const float*, const float*,
                                                     float*, float*) {
  return {};
}
ConvCounts CudnnConvolutions::counts() const { return {}; }
std::string CudnnConvolutions::report() const { return ""; }
std::string cudnn_library_version(std::string* why) {
  if (why) *why = kNoCudnn;
  return "";
}

#endif

}  // namespace rsi::kernels::cuda
