// conv_gpu_bench — our GPU convolution (im2col + cuBLAS SGEMM in the CNHW layout, kernels/cuda)
// next to cuDNN on the same GPU, forward and backward, for the conv shapes of the reference CNN
// and of the genome space (batch 128). It answers the kernels' design question "cuDNN, or im2col +
// cuBLAS where that is faster for our sizes" with a measurement.
//
//   build/benchmarks/conv_gpu_bench [--reps 50] [--batch 128] [--tf32]
//
// Both sides compute the same function in FP32 (cuDNN with CUDNN_FMA_MATH: no TF32 tensor cores;
// ours with FP32 SGEMM) unless --tf32 (then cuDNN's default math and ours with RSI_CUDA_TF32=1).
// cuDNN gets its best case: NCHW, fully packed, the fastest algorithm of cudnnFind*AlgorithmEx for
// each direction, 256 MiB of workspace. Timed with CUDA events on one stream over --reps calls after
// warm-up; forward = conv + bias, backward = data + filter + bias gradients. Before timing, the two
// outputs and gradients are compared (normalised error; both sides must compute the same conv).
// The same shapes also run through rsi's own cuDNN backend (RSI_CUDA_CONV=cudnn: cuDNN on our CNHW
// tensors, heuristic deterministic algorithms; columns rsi-dnn), the choice `rsi run` actually has;
// the algorithms it picked are printed after the table.
// Prints one row per shape and a verdict; exit 3 when no GPU is usable, 1 when the two disagree.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/dispatch.h"
#include "rsi/kernels/rng.h"
#include "rsi/kernels/tensor.h"

namespace {

using namespace rsi;
using kernels::Device;

#define CHECK_CUDA(x)                                                                                      \
  do {                                                                                                     \
    const cudaError_t e_ = (x);                                                                            \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#x) + ": " + cudaGetErrorString(e_));      \
  } while (0)
#define CHECK_CUDNN(x)                                                                                     \
  do {                                                                                                     \
    const cudnnStatus_t s_ = (x);                                                                          \
    if (s_ != CUDNN_STATUS_SUCCESS) throw std::runtime_error(std::string(#x) + ": " + cudnnGetErrorString(s_)); \
  } while (0)

struct Shape {
  const char* where;
  int C, H, K, k, stride;
};

// The reference CNN's two convs, then shapes the designer reaches (wider, 5x5, strided, residual).
const Shape kShapes[] = {
    {"cnn conv1", 1, 28, 32, 3, 1},      {"cnn conv2", 32, 14, 64, 3, 1}, {"residual 28x28", 32, 28, 32, 3, 1},
    {"residual 7x7", 64, 7, 64, 3, 1},  {"wide 14x14", 64, 14, 128, 3, 1}, {"5x5 stride 2", 32, 28, 64, 5, 2},
    {"3x3 stride 2", 64, 14, 128, 3, 2}, {"1x1", 64, 14, 128, 1, 1},
};

std::vector<float> random_values(std::size_t n, std::uint64_t salt, float scale) {
  const kernels::CounterRng rng(99, salt);
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * (2.0f * rng.uniform(i) - 1.0f);
  return v;
}

float* upload(const std::vector<float>& v) {
  float* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, v.size() * sizeof(float)));
  CHECK_CUDA(cudaMemcpy(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  return p;
}
std::vector<float> download(const float* p, std::size_t n) {
  std::vector<float> v(n);
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

// [A][B][rest] -> [B][A][rest] (NCHW <-> CNHW).
std::vector<float> swap_outer(const std::vector<float>& v, int A, int B) {
  const std::size_t rest = v.size() / (static_cast<std::size_t>(A) * B);
  std::vector<float> out(v.size());
  for (int a = 0; a < A; ++a)
    for (int b = 0; b < B; ++b)
      std::copy_n(v.begin() + (static_cast<std::size_t>(a) * B + b) * rest, rest,
                  out.begin() + (static_cast<std::size_t>(b) * A + a) * rest);
  return out;
}

double normalised_error(const std::vector<float>& got, const std::vector<float>& want) {
  double max_want = 0.0, max_err = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return INFINITY;
    max_want = std::max(max_want, std::fabs(static_cast<double>(want[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  return max_err / std::max(1.0, max_want);
}

// Mean microseconds per call of `work` (queued on `stream`) over `reps` calls after 3 warm-up calls.
template <typename Work>
double time_us(cudaStream_t stream, int reps, Work work) {
  for (int i = 0; i < 3; ++i) work();
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  CHECK_CUDA(cudaEventRecord(a, stream));
  for (int i = 0; i < reps; ++i) work();
  CHECK_CUDA(cudaEventRecord(b, stream));
  CHECK_CUDA(cudaEventSynchronize(b));
  float ms = 0.0f;
  CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return 1000.0 * ms / reps;
}

struct Row {
  double ours_fwd, ours_bwd, cudnn_fwd, cudnn_bwd, err;
  double rsi_cudnn_fwd = 0.0, rsi_cudnn_bwd = 0.0;  // rsi's own cuDNN backend (RSI_CUDA_CONV=cudnn)
  std::int64_t rsi_cudnn_fallbacks = 0;             // its calls that went to im2col instead
  std::string algos;
};

// Runs `work` with rsi's convolution backend set to `b` on the default context (what Exec::gpu() uses).
template <typename Work>
void with_backend(kernels::cuda::ConvBackend b, Work work) {
  kernels::cuda::Context& ctx = kernels::cuda::default_context();
  const kernels::cuda::ConvBackend before = ctx.conv_backend();
  ctx.set_conv_backend(b);
  try {
    work();
  } catch (...) {
    ctx.set_conv_backend(before);
    throw;
  }
  ctx.set_conv_backend(before);
}

Row measure(const Shape& sh, int N, int reps, bool tf32, cudnnHandle_t dnn, void* workspace, std::size_t ws_bytes) {
  kernels::Conv2dShape s;
  s.N = N, s.C = sh.C, s.H = s.W = sh.H, s.K = sh.K, s.kernel = sh.k, s.stride = sh.stride, s.pad = sh.k / 2;
  const int OH = s.OH(), OW = s.OW();
  const std::size_t nx = static_cast<std::size_t>(N) * s.C * s.H * s.W, nw = static_cast<std::size_t>(s.K) * s.C * s.kernel * s.kernel,
                    ny = static_cast<std::size_t>(N) * s.K * OH * OW;
  const std::vector<float> x_nchw = random_values(nx, 1, 1.0f), w = random_values(nw, 2, 0.2f),
                           b = random_values(static_cast<std::size_t>(s.K), 3, 0.1f),
                           dy_nchw = random_values(ny, 4, 0.5f);

  // Ours: CNHW buffers on the default context's stream.
  const kernels::Exec exec = kernels::Exec::gpu();
  const auto stream = static_cast<cudaStream_t>(exec.ctx->stream());
  float *X = upload(swap_outer(x_nchw, N, s.C)), *W = upload(w), *B = upload(b), *dY = upload(swap_outer(dy_nchw, N, s.K));
  float *Y = upload(std::vector<float>(ny)), *dX = upload(std::vector<float>(nx)), *dW = upload(std::vector<float>(nw)),
        *db = upload(std::vector<float>(static_cast<std::size_t>(s.K)));
  float* col = upload(std::vector<float>(static_cast<std::size_t>(std::max<std::int64_t>(s.col_size(), 1))));

  // cuDNN: NCHW, packed.
  CHECK_CUDNN(cudnnSetStream(dnn, stream));
  cudnnTensorDescriptor_t xd, yd, bd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  CHECK_CUDNN(cudnnCreateTensorDescriptor(&xd));
  CHECK_CUDNN(cudnnCreateTensorDescriptor(&yd));
  CHECK_CUDNN(cudnnCreateTensorDescriptor(&bd));
  CHECK_CUDNN(cudnnCreateFilterDescriptor(&wd));
  CHECK_CUDNN(cudnnCreateConvolutionDescriptor(&cd));
  CHECK_CUDNN(cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, s.C, s.H, s.W));
  CHECK_CUDNN(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, N, s.K, OH, OW));
  CHECK_CUDNN(cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, s.K, 1, 1));
  CHECK_CUDNN(cudnnSetFilter4dDescriptor(wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.K, s.C, s.kernel, s.kernel));
  CHECK_CUDNN(cudnnSetConvolution2dDescriptor(cd, s.pad, s.pad, s.stride, s.stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                              CUDNN_DATA_FLOAT));
  CHECK_CUDNN(cudnnSetConvolutionMathType(cd, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  float *cX = upload(x_nchw), *cW = upload(w), *cB = upload(b), *cdY = upload(dy_nchw);
  float *cY = upload(std::vector<float>(ny)), *cdX = upload(std::vector<float>(nx)), *cdW = upload(std::vector<float>(nw)),
        *cdb = upload(std::vector<float>(static_cast<std::size_t>(s.K)));
  CHECK_CUDA(cudaDeviceSynchronize());  // upload()'s copies went to the legacy stream
  int got_fwd = 0, got_data = 0, got_filter = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[8];
  cudnnConvolutionBwdDataAlgoPerf_t bwd_data[8];
  cudnnConvolutionBwdFilterAlgoPerf_t bwd_filter[8];
  CHECK_CUDNN(cudnnFindConvolutionForwardAlgorithmEx(dnn, xd, cX, wd, cW, cd, yd, cY, 8, &got_fwd, fwd, workspace,
                                                     ws_bytes));
  CHECK_CUDNN(cudnnFindConvolutionBackwardDataAlgorithmEx(dnn, wd, cW, yd, cdY, cd, xd, cdX, 8, &got_data, bwd_data,
                                                          workspace, ws_bytes));
  CHECK_CUDNN(cudnnFindConvolutionBackwardFilterAlgorithmEx(dnn, xd, cX, yd, cdY, cd, wd, cdW, 8, &got_filter,
                                                            bwd_filter, workspace, ws_bytes));
  if (got_fwd < 1 || fwd[0].status != CUDNN_STATUS_SUCCESS || got_data < 1 ||
      bwd_data[0].status != CUDNN_STATUS_SUCCESS || got_filter < 1 || bwd_filter[0].status != CUDNN_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuDNN found no working algorithm for ") + sh.where);
  const float one = 1.0f, zero = 0.0f;
  auto cudnn_forward = [&] {
    CHECK_CUDNN(cudnnConvolutionForward(dnn, &one, xd, cX, wd, cW, cd, fwd[0].algo, workspace, ws_bytes, &zero, yd, cY));
    CHECK_CUDNN(cudnnAddTensor(dnn, &one, bd, cB, &one, yd, cY));
  };
  auto cudnn_backward = [&] {
    CHECK_CUDNN(cudnnConvolutionBackwardData(dnn, &one, wd, cW, yd, cdY, cd, bwd_data[0].algo, workspace, ws_bytes, &zero,
                                             xd, cdX));
    CHECK_CUDNN(cudnnConvolutionBackwardFilter(dnn, &one, xd, cX, yd, cdY, cd, bwd_filter[0].algo, workspace, ws_bytes,
                                               &zero, wd, cdW));
    CHECK_CUDNN(cudnnConvolutionBackwardBias(dnn, &one, yd, cdY, &zero, bd, cdb));
  };
  auto ours_forward = [&] { kernels::conv2d_forward(exec, s, X, W, B, Y, col); };
  auto ours_backward = [&] { kernels::conv2d_backward(exec, s, X, W, dY, dX, dW, db, col); };

  // Same function on both sides: forward output and the three gradients.
  Row r{};
  kernels::cuda::default_context().set_conv_backend(kernels::cuda::ConvBackend::Im2col);
  ours_forward();
  cudnn_forward();
  r.err = normalised_error(swap_outer(download(Y, ny), s.K, N), download(cY, ny));
  ours_forward();  // col holds the forward's im2col again for the backward
  ours_backward();
  cudnn_backward();
  r.err = std::max({r.err, normalised_error(swap_outer(download(dX, nx), s.C, N), download(cdX, nx)),
                    normalised_error(download(dW, nw), download(cdW, nw)),
                    normalised_error(download(db, static_cast<std::size_t>(s.K)), download(cdb, static_cast<std::size_t>(s.K)))});

  // rsi's cuDNN backend (heuristic algorithms on the CNHW tensors): same function again.
  with_backend(kernels::cuda::ConvBackend::Cudnn, [&] {
    const std::int64_t fell_before = kernels::cuda::default_context().conv_counts().fallback;
    ours_forward();
    r.err = std::max(r.err, normalised_error(swap_outer(download(Y, ny), s.K, N), download(cY, ny)));
    ours_backward();
    r.err = std::max({r.err, normalised_error(swap_outer(download(dX, nx), s.C, N), download(cdX, nx)),
                      normalised_error(download(dW, nw), download(cdW, nw))});
    r.rsi_cudnn_fwd = time_us(stream, reps, ours_forward);
    r.rsi_cudnn_bwd = time_us(stream, reps, ours_backward);
    r.rsi_cudnn_fallbacks = kernels::cuda::default_context().conv_counts().fallback - fell_before;
  });
  with_backend(kernels::cuda::ConvBackend::Im2col, [&] {
    r.ours_fwd = time_us(stream, reps, ours_forward);
    r.ours_bwd = time_us(stream, reps, ours_backward);
  });
  r.cudnn_fwd = time_us(stream, reps, cudnn_forward);
  r.cudnn_bwd = time_us(stream, reps, cudnn_backward);
  r.algos = "fwd " + std::to_string(fwd[0].algo) + " data " + std::to_string(bwd_data[0].algo) + " filter " +
            std::to_string(bwd_filter[0].algo);

  for (float* p : {X, W, B, dY, Y, dX, dW, db, col, cX, cW, cB, cdY, cY, cdX, cdW, cdb}) cudaFree(p);
  cudnnDestroyTensorDescriptor(xd);
  cudnnDestroyTensorDescriptor(yd);
  cudnnDestroyTensorDescriptor(bd);
  cudnnDestroyFilterDescriptor(wd);
  cudnnDestroyConvolutionDescriptor(cd);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"our im2col + cuBLAS convolution next to cuDNN on the same GPU (see benchmarks/README.md)"};
  int reps = 50, batch = 128;
  bool tf32 = false;
  app.add_option("--reps", reps, "timed calls per direction and shape (default 50)")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "batch size N (default 128)")->check(CLI::PositiveNumber);
  app.add_flag("--tf32", tf32, "allow TF32 tensor cores on both sides (default: FP32 on both)");
  CLI11_PARSE(app, argc, argv);
  if (tf32) setenv("RSI_CUDA_TF32", "1", 1);  // read when our context is created
  std::string why;
  if (!kernels::cuda_available(&why)) {
    std::fprintf(stderr, "conv_gpu_bench: no CUDA device: %s\n", why.c_str());
    return 3;
  }
  try {
    std::printf("conv_gpu_bench: %s, cuDNN %zu, batch %d, %s, %d reps\n", kernels::cuda_device_description().c_str(),
                cudnnGetVersion(), batch, tf32 ? "TF32 allowed" : "FP32", reps);
    cudnnHandle_t dnn;
    CHECK_CUDNN(cudnnCreate(&dnn));
    const std::size_t ws_bytes = std::size_t{256} << 20;
    void* workspace = nullptr;
    CHECK_CUDA(cudaMalloc(&workspace, ws_bytes));
    std::printf("%-16s %-22s %10s %10s %10s %10s %8s %10s %10s %8s %8s  %s\n", "shape", "C>K HxW k/s", "ours fwd",
                "ours bwd", "cudnn fwd", "cudnn bwd", "ratio", "rsi-dnn f", "rsi-dnn b", "ratio", "err",
                "cudnn algos (find)");
    int ours_faster = 0, im2col_over_rsi_dnn = 0, count = 0, rsi_count = 0;
    double log_sum = 0.0, log_sum_rsi = 0.0, worst_err = 0.0;
    for (const Shape& sh : kShapes) {
      const Row r = measure(sh, batch, reps, tf32, dnn, workspace, ws_bytes);
      // ratio > 1: im2col is faster (the other's time over ours), forward + backward together;
      // first against cuDNN at its best (NCHW, cudnnFind), then against rsi's cuDNN backend.
      const double ratio = (r.cudnn_fwd + r.cudnn_bwd) / (r.ours_fwd + r.ours_bwd);
      const double ratio_rsi = (r.rsi_cudnn_fwd + r.rsi_cudnn_bwd) / (r.ours_fwd + r.ours_bwd);
      char geometry[64];
      std::snprintf(geometry, sizeof geometry, "%d>%d %dx%d k%d/s%d", sh.C, sh.K, sh.H, sh.H, sh.k, sh.stride);
      // A shape rsi's cuDNN backend sent to im2col is not a cuDNN timing: marked, left out of its verdict.
      const bool fell_back = r.rsi_cudnn_fallbacks > 0;
      std::printf("%-16s %-22s %8.1fus %8.1fus %8.1fus %8.1fus %7.2fx %8.1fus %8.1fus %7.2fx %8.1e  %s%s\n", sh.where,
                  geometry, r.ours_fwd, r.ours_bwd, r.cudnn_fwd, r.cudnn_bwd, ratio, r.rsi_cudnn_fwd, r.rsi_cudnn_bwd,
                  ratio_rsi, r.err, r.algos.c_str(), fell_back ? "  (rsi-dnn fell back to im2col)" : "");
      ours_faster += ratio >= 1.0;
      ++count;
      log_sum += std::log(ratio);
      if (!fell_back) {
        im2col_over_rsi_dnn += ratio_rsi >= 1.0;
        ++rsi_count;
        log_sum_rsi += std::log(ratio_rsi);
      }
      worst_err = std::max(worst_err, r.err);
    }
    std::printf("%s", kernels::cuda::default_context().conv_report().c_str());
    cudaFree(workspace);
    cudnnDestroy(dnn);
    std::printf("verdict: im2col + cuBLAS faster than cuDNN (find, NCHW) on %d of %d shapes, geometric mean "
                "cudnn/ours time %.2fx; faster than rsi's cuDNN backend (RSI_CUDA_CONV=cudnn) on %d of %d, "
                "geometric mean %.2fx (ratio > 1: im2col faster); largest disagreement %.1e\n",
                ours_faster, count, std::exp(log_sum / count), im2col_over_rsi_dnn, rsi_count,
                rsi_count > 0 ? std::exp(log_sum_rsi / rsi_count) : 0.0, worst_err);
    if (!(worst_err <= (tf32 ? 1e-2 : 1e-4))) {
      std::fprintf(stderr, "conv_gpu_bench: ours and cuDNN disagree (normalised error %.1e)\n", worst_err);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "conv_gpu_bench: %s\n", e.what());
    return 1;
  }
}
