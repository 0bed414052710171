// The CUDA backend of every op (see cuda_ops.h / dispatch.h). Correctness first: GEMMs go to
// cuBLAS with the same row-major operands as the CPU's cblas calls (gemm_rm below); everything
// else is a plain kernel — grid-stride loops for element-wise work, one thread per output element
// where outputs gather from several inputs (col2im, pooling backward: no atomics, so results are
// run-to-run deterministic), and one block per row or channel for reductions, summed in double
// through a fixed shared-memory tree.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

#include "check.h"
#include "cublas_loader.h"
#include "cuda_ops.h"
#include "cudnn_conv.h"
#include "rsi/kernels/augment.h"

namespace rsi::kernels::cuda {

namespace {

constexpr int kThreads = 256;

cudaStream_t stream_of(Context& ctx) { return static_cast<cudaStream_t>(ctx.stream()); }
cublasHandle_t blas_of(Context& ctx) { return static_cast<cublasHandle_t>(ctx.cublas()); }

unsigned grid_for(std::int64_t n) {
  const std::int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, 1 << 20));
}

// The same with index type I (kernels templated on int / int64: see index_fits_int32).
#define RSI_GRID_STRIDE_T(I, i, n) \
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += static_cast<I>(blockDim.x) * gridDim.x)

// Kernels whose index arithmetic divides run it in int when every index fits in 30 bits (headroom
// for the grid-stride step, at most 2^28): 64-bit integer division is emulated on the GPU and
// several times slower. The float work is the same either way.
// set_wide_indexing(true) (tests) makes every launch take the 64-bit path.
std::atomic<bool> g_wide_indexing{false};
inline bool index_fits_int32(std::int64_t n) {
  return n < (std::int64_t{1} << 30) && !g_wide_indexing.load(std::memory_order_relaxed);
}
// launch(I{}) with I = int when `narrow` (index_fits_int32 of what the kernel indexes), else int64;
// the one place that picks a kernel's index type.
template <typename Launch>
void launch_indexed(bool narrow, Launch launch) {
  if (narrow) launch(int{});
  else launch(std::int64_t{});
  RSI_CUDA_LAUNCHED();
}

#define RSI_GRID_STRIDE(i, n)                                                                                 \
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);           \
       i += static_cast<std::int64_t>(blockDim.x) * gridDim.x)

// Row-major C[M][N] = alpha·op(A)[M][K]·op(B)[K][N] + beta·C, the cblas_sgemm(CblasRowMajor, ...)
// contract. cuBLAS is column-major: a row-major matrix is its transpose there, so this computes
// Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e. swaps the operands and keeps the transpose flags.
void gemm_rm(Context& ctx, bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
             const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  RSI_CUBLAS_CHECK(blas::api().sgemm(blas_of(ctx), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                               N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc));
}

// Sum of v over the block (blockDim.x == kThreads), in a fixed tree order; every thread gets it.
__device__ double block_sum(double v, double* shm) {
  shm[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (static_cast<int>(threadIdx.x) < s) shm[threadIdx.x] += shm[threadIdx.x + s];
    __syncthreads();
  }
  const double total = shm[0];
  __syncthreads();
  return total;
}

// ---- element-wise kernels ----

__global__ void fill_kernel(float* p, std::int64_t n, float value) {
  RSI_GRID_STRIDE(i, n) p[i] = value;
}

__global__ void lerp_kernel(float* avg, const float* x, std::int64_t n, float weight) {
  RSI_GRID_STRIDE(i, n) avg[i] += weight * (x[i] - avg[i]);
}

// Y[r][c] = b[c] for a [rows][cols] matrix (dense bias), or Y[r][:] = b[r] (conv bias, per_row).
template <typename I>
__global__ void broadcast_bias_kernel(float* Y, const float* b, I rows, I cols, bool per_row) {
  RSI_GRID_STRIDE_T(I, i, rows * cols) Y[i] = per_row ? b[i / cols] : b[i % cols];
}
void launch_broadcast_bias(cudaStream_t stream, float* Y, const float* b, std::int64_t rows, std::int64_t cols,
                           bool per_row) {
  launch_indexed(index_fits_int32(rows * cols), [&](auto i) {
    using I = decltype(i);
    broadcast_bias_kernel<I><<<grid_for(rows * cols), kThreads, 0, stream>>>(Y, b, static_cast<I>(rows),
                                                                             static_cast<I>(cols), per_row);
  });
}

// out[c] = Σ_r A[r][c], rows added in order (the CPU's linear bias gradient order).
__global__ void column_sums_kernel(const float* A, float* out, int rows, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= cols) return;
  float acc = 0.0f;
  for (int r = 0; r < rows; ++r) acc += A[static_cast<std::int64_t>(r) * cols + c];
  out[c] = acc;
}

// out[r] = Σ_i A[r][i] in double, one block per row.
__global__ void row_sums_kernel(const float* A, float* out, std::int64_t cols) {
  __shared__ double shm[kThreads];
  const float* row = A + static_cast<std::int64_t>(blockIdx.x) * cols;
  double acc = 0.0;
  for (std::int64_t i = threadIdx.x; i < cols; i += kThreads) acc += row[i];
  const double total = block_sum(acc, shm);
  if (threadIdx.x == 0) out[blockIdx.x] = static_cast<float>(total);
}

__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

__global__ void activation_forward_kernel(Activation a, const float* X, float* Y, std::int64_t n) {
  RSI_GRID_STRIDE(i, n) {
    const float x = X[i];
    Y[i] = a == Activation::ReLU ? (x > 0.0f ? x : 0.0f) : a == Activation::GELU ? gelu(x) : tanhf(x);
  }
}

template <typename I>
__global__ void bias_activation_kernel(Activation a, const float* X, const float* bias, float* Y, I rows, I cols,
                                       bool per_row) {
  RSI_GRID_STRIDE_T(I, i, rows * cols) {
    const float x = X[i] + bias[per_row ? i / cols : i % cols];
    Y[i] = a == Activation::ReLU ? (x > 0.0f ? x : 0.0f) : a == Activation::GELU ? gelu(x) : tanhf(x);
  }
}

__global__ void activation_backward_kernel(Activation a, const float* X, const float* Y, const float* dY, float* dX,
                                           std::int64_t n) {
  RSI_GRID_STRIDE(i, n) {
    switch (a) {
      case Activation::ReLU: dX[i] = Y[i] > 0.0f ? dY[i] : 0.0f; break;
      case Activation::GELU: {
        const float x = X[i];
        const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
        dX[i] = dY[i] * (cdf + x * pdf);
        break;
      }
      case Activation::Tanh: dX[i] = dY[i] * (1.0f - Y[i] * Y[i]); break;
    }
  }
}

__global__ void dropout_forward_kernel(const float* X, float* Y, float* mask, std::int64_t n, float rate,
                                       CounterRng rng, std::uint64_t offset) {
  const float keep_scale = 1.0f / (1.0f - rate);
  RSI_GRID_STRIDE(i, n) {
    const float m = rng.uniform(offset + static_cast<std::uint64_t>(i)) < rate ? 0.0f : keep_scale;
    mask[i] = m;
    Y[i] = X[i] * m;
  }
}

__global__ void dropout_forward_cnhw_kernel(const float* X, float* Y, float* mask, int C, int N, std::int64_t HW,
                                            float rate, CounterRng rng, std::uint64_t base, std::int64_t row_offset) {
  const float keep_scale = 1.0f / (1.0f - rate);
  RSI_GRID_STRIDE(j, static_cast<std::int64_t>(C) * N * HW) {
    const std::int64_t i = j % HW, cn = j / HW, n = cn % N, c = cn / N;
    const std::uint64_t index = base + static_cast<std::uint64_t>(((row_offset + n) * C + c) * HW + i);
    const float m = rng.uniform(index) < rate ? 0.0f : keep_scale;
    mask[j] = m;
    Y[j] = X[j] * m;
  }
}

__global__ void multiply_kernel(const float* A, const float* B, float* Y, std::int64_t n) {
  RSI_GRID_STRIDE(i, n) Y[i] = A[i] * B[i];
}
__global__ void add_kernel(const float* A, const float* B, float* Y, std::int64_t n) {
  RSI_GRID_STRIDE(i, n) Y[i] = A[i] + B[i];
}
__global__ void accumulate_kernel(const float* A, float* Y, std::int64_t n) {
  RSI_GRID_STRIDE(i, n) Y[i] += A[i];
}

// to_dense: Y[n][c][i] = X[c][n][i]; otherwise Y[c][n][i] = X[n][c][i]. One thread per output.
__global__ void layout_kernel(const float* X, float* Y, int C, int N, std::int64_t HW, bool to_dense) {
  RSI_GRID_STRIDE(j, static_cast<std::int64_t>(C) * N * HW) {
    const std::int64_t i = j % HW, outer = j / HW;
    if (to_dense) {
      const std::int64_t n = outer / C, c = outer % C;
      Y[j] = X[(c * N + n) * HW + i];
    } else {
      const std::int64_t c = outer / N, n = outer % N;
      Y[j] = X[(n * C + c) * HW + i];
    }
  }
}

template <typename T>
__global__ void gather_rows_kernel(const T* src, const std::int32_t* rows, int n, std::int64_t width, T* dst) {
  RSI_GRID_STRIDE(j, static_cast<std::int64_t>(n) * width) {
    const std::int64_t r = j / width, i = j % width;
    dst[j] = src[static_cast<std::int64_t>(rows[r]) * width + i];
  }
}

// One thread per output pixel; each recomputes its image's draws (one Philox block), which is
// cheaper than a pass to store them.
__global__ void augment_rows_kernel(const float* src, const std::int32_t* ids, int n, int channels, int rows, int cols,
                                    int shift, bool flip, CounterRng rng, std::uint64_t first_draw, float* out) {
  const std::int64_t plane = static_cast<std::int64_t>(rows) * cols, pixels = channels * plane;
  RSI_GRID_STRIDE(j, static_cast<std::int64_t>(n) * pixels) {
    const std::int64_t r = j / pixels, c = (j % pixels) / plane, p = j % plane;
    const ShiftFlip t = draw_shift_flip(rng, first_draw + static_cast<std::uint64_t>(r), shift, flip);
    out[j] = shifted_pixel(src + static_cast<std::int64_t>(ids[r]) * pixels + c * plane, rows, cols, t,
                           static_cast<int>(p / cols), static_cast<int>(p % cols));
  }
}

// ---- convolution (CNHW, see ops.h) ----

// Index arithmetic of the two conv kernels runs in I (index_fits_int32 for every index of the call).
inline bool conv_fits_int32(const Conv2dShape& s) {
  return index_fits_int32(s.col_size()) && index_fits_int32(static_cast<std::int64_t>(s.C) * s.N * s.H * s.W);
}

// col[r][j], r = (c, ky, kx), j = (n, oy, ox): the input pixel under tap (ky, kx), 0 in the padding.
template <typename I>
__global__ void im2col_kernel(Conv2dShape s, const float* X, float* col) {
  const I OH = s.OH(), OW = s.OW(), k = s.kernel;
  const I cols = static_cast<I>(s.N) * OH * OW, total = cols * s.C * k * k;
  for (I idx = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<I>(blockDim.x) * gridDim.x) {
    const I r = idx / cols, j = idx - r * cols;
    const I c = r / (k * k), ky = (r / k) % k, kx = r % k;
    const I ox = j % OW, oy = (j / OW) % OH, n = j / (OW * OH);
    const I iy = oy * s.stride - s.pad + ky, ix = ox * s.stride - s.pad + kx;
    col[idx] = (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) ? X[((c * s.N + n) * s.H + iy) * s.W + ix] : 0.0f;
  }
}

// dX[c][n][iy][ix] = Σ over taps (ky, kx) in order of dcol[(c, ky, kx)][(n, oy, ox)] where the tap of
// output (oy, ox) lands on (iy, ix). One thread per input pixel: no write conflicts.
template <typename I>
__global__ void col2im_kernel(Conv2dShape s, const float* dcol, float* dX) {
  const I OH = s.OH(), OW = s.OW(), k = s.kernel, H = s.H, W = s.W, N = s.N;
  const I cols = N * OH * OW, total = static_cast<I>(s.C) * N * H * W;
  for (I idx = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<I>(blockDim.x) * gridDim.x) {
    const I ix = idx % W, iy = (idx / W) % H, n = (idx / (W * H)) % N, c = idx / (W * H * N);
    float acc = 0.0f;
    for (I ky = 0; ky < k; ++ky) {
      const I ty = iy + s.pad - ky;
      if (ty < 0 || ty % s.stride != 0) continue;
      const I oy = ty / s.stride;
      if (oy >= OH) continue;
      for (I kx = 0; kx < k; ++kx) {
        const I tx = ix + s.pad - kx;
        if (tx < 0 || tx % s.stride != 0) continue;
        const I ox = tx / s.stride;
        if (ox >= OW) continue;
        const I r = (c * k + ky) * k + kx;
        acc += dcol[r * cols + (n * OH + oy) * OW + ox];
      }
    }
    dX[idx] = acc;
  }
}

void launch_im2col(Context& ctx, const Conv2dShape& s, const float* X, float* col) {
  launch_indexed(conv_fits_int32(s), [&](auto i) {
    im2col_kernel<decltype(i)><<<grid_for(s.col_size()), kThreads, 0, stream_of(ctx)>>>(s, X, col);
  });
}

void launch_col2im(Context& ctx, const Conv2dShape& s, const float* dcol, float* dX) {
  const std::int64_t inputs = static_cast<std::int64_t>(s.C) * s.N * s.H * s.W;
  launch_indexed(conv_fits_int32(s), [&](auto i) {
    col2im_kernel<decltype(i)><<<grid_for(inputs), kThreads, 0, stream_of(ctx)>>>(s, dcol, dX);
  });
}

// ---- pooling ----

template <typename I>
__global__ void maxpool_forward_kernel(Pool2dShape s, const float* X, float* Y, std::int32_t* argmax) {
  const I OH = s.OH(), OW = s.OW();
  RSI_GRID_STRIDE_T(I, idx, static_cast<I>(s.planes) * OH * OW) {
    const int ox = static_cast<int>(idx % OW), oy = static_cast<int>((idx / OW) % OH);
    const I p = idx / (OW * OH);
    const float* in = X + static_cast<std::int64_t>(p) * s.H * s.W;
    // The first maximum in row-major window order wins, as on the CPU.
    std::int32_t best_at = (oy * s.stride) * s.W + ox * s.stride;
    float best = in[best_at];
    for (int dy = 0; dy < s.size; ++dy)
      for (int dx = 0; dx < s.size; ++dx) {
        const std::int32_t at = (oy * s.stride + dy) * s.W + ox * s.stride + dx;
        if (in[at] > best) best = in[at], best_at = at;
      }
    Y[idx] = best;
    argmax[idx] = best_at;
  }
}

// Range of outputs o (along one axis) whose window [o·stride, o·stride + size) contains input i.
__device__ __forceinline__ void covering(int i, int size, int stride, int out, int& lo, int& hi) {
  lo = i - size + 1 <= 0 ? 0 : (i - size + stride) / stride;
  hi = min(out - 1, i / stride);
}

template <typename I>
__global__ void pool_backward_kernel(Pool2dShape s, const float* dY, const std::int32_t* argmax, float* dX,
                                     bool max_pool) {
  const int OH = s.OH(), OW = s.OW();
  const I H = s.H, W = s.W;
  const float inv = 1.0f / static_cast<float>(s.size * s.size);
  RSI_GRID_STRIDE_T(I, idx, static_cast<I>(s.planes) * H * W) {
    const int ix = static_cast<int>(idx % W), iy = static_cast<int>((idx / W) % H);
    const std::int64_t p = idx / (W * H);
    const std::int32_t self = iy * s.W + ix;
    int oy_lo, oy_hi, ox_lo, ox_hi;
    covering(iy, s.size, s.stride, OH, oy_lo, oy_hi);
    covering(ix, s.size, s.stride, OW, ox_lo, ox_hi);
    float acc = 0.0f;
    for (int oy = oy_lo; oy <= oy_hi; ++oy)
      for (int ox = ox_lo; ox <= ox_hi; ++ox) {
        const std::int64_t o = p * OH * OW + static_cast<std::int64_t>(oy) * OW + ox;
        if (max_pool) {
          if (argmax[o] == self) acc += dY[o];
        } else {
          acc += dY[o] * inv;
        }
      }
    dX[idx] = acc;
  }
}

template <typename I>
__global__ void avgpool_forward_kernel(Pool2dShape s, const float* X, float* Y) {
  const I OH = s.OH(), OW = s.OW();
  const float inv = 1.0f / static_cast<float>(s.size * s.size);
  RSI_GRID_STRIDE_T(I, idx, static_cast<I>(s.planes) * OH * OW) {
    const int ox = static_cast<int>(idx % OW), oy = static_cast<int>((idx / OW) % OH);
    const float* in = X + static_cast<std::int64_t>(idx / (OW * OH)) * s.H * s.W;
    float acc = 0.0f;
    for (int dy = 0; dy < s.size; ++dy)
      for (int dx = 0; dx < s.size; ++dx) acc += in[(oy * s.stride + dy) * s.W + ox * s.stride + dx];
    Y[idx] = acc * inv;
  }
}

// ---- batch norm over [outer][C][inner]: one block per channel ----

__device__ __forceinline__ std::int64_t bn_at(const BatchNormShape& s, std::int64_t c, std::int64_t j) {
  const std::int64_t o = j / s.inner, i = j % s.inner;
  return (o * s.channels + c) * s.inner + i;
}

__global__ void batchnorm_train_kernel(BatchNormShape s, const float* X, const float* gamma, const float* beta,
                                       float* Y, float* save_mean, float* save_invstd, float* running_mean,
                                       float* running_var, float momentum, float eps) {
  __shared__ double shm[kThreads];
  const std::int64_t c = blockIdx.x, count = s.outer * s.inner;
  double sum = 0.0;
  for (std::int64_t j = threadIdx.x; j < count; j += kThreads) sum += X[bn_at(s, c, j)];
  const double mean = block_sum(sum, shm) / static_cast<double>(count);
  double sq = 0.0;
  for (std::int64_t j = threadIdx.x; j < count; j += kThreads) {
    const double d = X[bn_at(s, c, j)] - mean;
    sq += d * d;
  }
  const double sq_total = block_sum(sq, shm);
  const double var = sq_total / static_cast<double>(count);
  const float invstd = static_cast<float>(1.0 / sqrt(var + eps));
  if (threadIdx.x == 0) {
    save_mean[c] = static_cast<float>(mean);
    save_invstd[c] = invstd;
    const double unbiased = count > 1 ? sq_total / static_cast<double>(count - 1) : var;
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean);
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
  }
  const float scale = gamma[c] * invstd, shift = beta[c] - static_cast<float>(mean) * scale;
  for (std::int64_t j = threadIdx.x; j < count; j += kThreads) {
    const std::int64_t at = bn_at(s, c, j);
    Y[at] = X[at] * scale + shift;
  }
}

__global__ void batchnorm_eval_kernel(BatchNormShape s, const float* X, const float* gamma, const float* beta,
                                      const float* running_mean, const float* running_var, float eps, float* Y) {
  RSI_GRID_STRIDE(idx, s.outer * s.channels * s.inner) {
    const std::int64_t c = (idx / s.inner) % s.channels;
    const float scale = gamma[c] / sqrtf(running_var[c] + eps), shift = beta[c] - running_mean[c] * scale;
    Y[idx] = X[idx] * scale + shift;
  }
}

__global__ void batchnorm_backward_kernel(BatchNormShape s, const float* X, const float* gamma, const float* save_mean,
                                          const float* save_invstd, const float* dY, float* dX, float* dgamma,
                                          float* dbeta) {
  __shared__ double shm[kThreads];
  const std::int64_t c = blockIdx.x, count = s.outer * s.inner;
  const float mean = save_mean[c], invstd = save_invstd[c];
  double sum_dy = 0.0, sum_dy_xhat = 0.0;
  for (std::int64_t j = threadIdx.x; j < count; j += kThreads) {
    const std::int64_t at = bn_at(s, c, j);
    sum_dy += dY[at];
    sum_dy_xhat += dY[at] * ((X[at] - mean) * invstd);
  }
  const double total_dy = block_sum(sum_dy, shm);
  const double total_dy_xhat = block_sum(sum_dy_xhat, shm);
  if (threadIdx.x == 0) {
    dbeta[c] = static_cast<float>(total_dy);
    dgamma[c] = static_cast<float>(total_dy_xhat);
  }
  if (!dX) return;
  const float k = gamma[c] * invstd / static_cast<float>(count);
  const float mean_dy = static_cast<float>(total_dy), mean_dyx = static_cast<float>(total_dy_xhat);
  for (std::int64_t j = threadIdx.x; j < count; j += kThreads) {
    const std::int64_t at = bn_at(s, c, j);
    const float xhat = (X[at] - mean) * invstd;
    dX[at] = k * (static_cast<float>(count) * dY[at] - mean_dy - xhat * mean_dyx);
  }
}

// ---- losses: one block, one thread per row (rows strided), row losses summed in a fixed tree ----

__global__ void softmax_ce_kernel(const float* logits, const std::int32_t* labels, int N, int K, float* dlogits,
                                  float scale, float* loss_out) {
  __shared__ double shm[kThreads];
  const float g = scale / static_cast<float>(N);
  double total = 0.0;
  for (int n = threadIdx.x; n < N; n += kThreads) {
    const float* z = logits + static_cast<std::int64_t>(n) * K;
    const int label = labels[n];
    if (label < 0 || label >= K) {
      total += nan("");  // an invalid label poisons the loss (the trainer stops on non-finite losses)
      continue;
    }
    float mx = z[0];
    for (int k = 1; k < K; ++k) mx = fmaxf(mx, z[k]);
    double sum = 0.0;
    for (int k = 0; k < K; ++k) sum += exp(static_cast<double>(z[k] - mx));
    const double lse = log(sum) + mx;
    total += lse - z[label];
    if (!dlogits) continue;
    float* d = dlogits + static_cast<std::int64_t>(n) * K;
    for (int k = 0; k < K; ++k) d[k] += g * static_cast<float>(exp(z[k] - lse));
    d[label] -= g;
  }
  const double sum = block_sum(total, shm);
  if (threadIdx.x == 0) *loss_out = static_cast<float>(sum / N);
}

__global__ void kd_loss_kernel(const float* student, const float* teacher, int N, int K, float temperature,
                               float* dstudent, float scale, float* loss_out) {
  __shared__ double shm[kThreads];
  const double T = temperature;
  const float g = scale * temperature / static_cast<float>(N);
  double total = 0.0;
  for (int n = threadIdx.x; n < N; n += kThreads) {
    const float* s = student + static_cast<std::int64_t>(n) * K;
    const float* t = teacher + static_cast<std::int64_t>(n) * K;
    double mt = t[0] / T, ms = s[0] / T;
    for (int k = 1; k < K; ++k) mt = fmax(mt, t[k] / T), ms = fmax(ms, s[k] / T);
    double st = 0.0, ss = 0.0;
    for (int k = 0; k < K; ++k) st += exp(t[k] / T - mt), ss += exp(s[k] / T - ms);
    const double lt = log(st) + mt, ls = log(ss) + ms;
    double kl = 0.0;
    for (int k = 0; k < K; ++k) {
      const double log_pt = t[k] / T - lt;
      kl += exp(log_pt) * (log_pt - (s[k] / T - ls));
    }
    total += T * T * kl;
    if (!dstudent) continue;
    float* d = dstudent + static_cast<std::int64_t>(n) * K;
    for (int k = 0; k < K; ++k) d[k] += g * static_cast<float>(exp(s[k] / T - ls) - exp(t[k] / T - lt));
  }
  const double sum = block_sum(total, shm);
  if (threadIdx.x == 0) *loss_out = static_cast<float>(sum / N);
}

__global__ void softmax_kernel(const float* logits, float* probs, int N, int K, float inv_t) {
  RSI_GRID_STRIDE(n, N) {
    const float* z = logits + n * K;
    float* p = probs + n * K;
    float mx = z[0] * inv_t;
    for (int k = 1; k < K; ++k) mx = fmaxf(mx, z[k] * inv_t);
    double sum = 0.0;
    for (int k = 0; k < K; ++k) sum += (p[k] = expf(z[k] * inv_t - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int k = 0; k < K; ++k) p[k] *= inv;
  }
}

// ---- optimizers (host computes the per-step scalars exactly as the CPU does) ----

__global__ void adam_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ m,
                            float* __restrict__ v, std::int64_t n, float step_size, float inv_sqrt_bias2, float l2,
                            float shrink, float b1, float b2, float one_b1, float one_b2, float eps) {
  RSI_GRID_STRIDE(i, n) {
    const float g = grad[i] + l2 * param[i];
    const float mi = m[i] = b1 * m[i] + one_b1 * g;
    const float vi = v[i] = b2 * v[i] + one_b2 * g * g;
    const float denom = sqrtf(vi) * inv_sqrt_bias2 + eps;
    param[i] = param[i] * shrink - step_size * mi / denom;
  }
}

__global__ void sgd_kernel(float* __restrict__ param, const float* __restrict__ grad, float* __restrict__ velocity,
                           std::int64_t n, float lr, float momentum, float weight_decay, bool nesterov) {
  RSI_GRID_STRIDE(i, n) {
    const float g = grad[i] + weight_decay * param[i];
    const float vi = velocity[i] = momentum * velocity[i] + g;
    param[i] -= lr * (nesterov ? g + momentum * vi : vi);
  }
}

}  // namespace

void set_wide_indexing(bool on) { g_wide_indexing.store(on); }

void launch_fill(float* p, std::int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, n, value);
  RSI_CUDA_LAUNCHED();
}

void fill(Context& ctx, float* p, std::int64_t n, float value) { launch_fill(p, n, value, stream_of(ctx)); }

void lerp(Context& ctx, float* avg, const float* x, std::int64_t n, float weight) {
  if (n <= 0) return;
  lerp_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(avg, x, n, weight);
  RSI_CUDA_LAUNCHED();
}

void copy(Context& ctx, float* dst, const float* src, std::int64_t n) {
  if (n <= 0) return;
  RSI_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(float), cudaMemcpyDeviceToDevice,
                                 stream_of(ctx)));
}

void gather_rows(Context& ctx, const float* src, const std::int32_t* rows, int n, std::int64_t width, float* dst) {
  if (n <= 0 || width <= 0) return;
  gather_rows_kernel<<<grid_for(n * width), kThreads, 0, stream_of(ctx)>>>(src, rows, n, width, dst);
  RSI_CUDA_LAUNCHED();
}
void gather_rows(Context& ctx, const std::int32_t* src, const std::int32_t* rows, int n, std::int64_t width,
                 std::int32_t* dst) {
  if (n <= 0 || width <= 0) return;
  gather_rows_kernel<<<grid_for(n * width), kThreads, 0, stream_of(ctx)>>>(src, rows, n, width, dst);
  RSI_CUDA_LAUNCHED();
}

void augment_rows(Context& ctx, const float* src, const std::int32_t* ids, int n, int channels, int rows, int cols,
                  int shift, bool flip, const CounterRng& rng, std::uint64_t first_draw, float* out) {
  const std::int64_t total = static_cast<std::int64_t>(n) * channels * rows * cols;
  if (total <= 0) return;
  augment_rows_kernel<<<grid_for(total), kThreads, 0, stream_of(ctx)>>>(src, ids, n, channels, rows, cols, shift, flip,
                                                                          rng, first_draw, out);
  RSI_CUDA_LAUNCHED();
}

void linear_forward(Context& ctx, const float* X, const float* W, const float* b, float* Y, int N, int I, int O) {
  const std::int64_t n = static_cast<std::int64_t>(N) * O;
  if (n == 0) return;
  if (b) {
    launch_broadcast_bias(stream_of(ctx), Y, b, N, O, false);
  }
  gemm_rm(ctx, false, true, N, O, I, 1.0f, X, I, W, I, b ? 1.0f : 0.0f, Y, O);
}

void bias_activation_forward(Context& ctx, Activation a, const float* X, const float* bias, float* Y,
                             std::int64_t rows, std::int64_t cols, bool per_row) {
  if (rows * cols <= 0) return;
  launch_indexed(index_fits_int32(rows * cols), [&](auto i) {
    using I = decltype(i);
    bias_activation_kernel<I><<<grid_for(rows * cols), kThreads, 0, stream_of(ctx)>>>(
        a, X, bias, Y, static_cast<I>(rows), static_cast<I>(cols), per_row);
  });
}

void linear_backward(Context& ctx, const float* X, const float* W, const float* dY, float* dX, float* dW, float* db,
                     int N, int I, int O) {
  gemm_rm(ctx, true, false, O, I, N, 1.0f, dY, O, X, I, 0.0f, dW, I);
  if (dX) gemm_rm(ctx, false, false, N, I, O, 1.0f, dY, O, W, I, 0.0f, dX, I);
  if (O > 0) {
    column_sums_kernel<<<(O + kThreads - 1) / kThreads, kThreads, 0, stream_of(ctx)>>>(dY, db, N, O);
    RSI_CUDA_LAUNCHED();
  }
}

void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y,
                    float* col) {
  const std::int64_t NP = static_cast<std::int64_t>(s.N) * s.OH() * s.OW();
  const int CKK = s.C * s.kernel * s.kernel;
  if (NP == 0) return;
  if (b) {
    launch_broadcast_bias(stream_of(ctx), Y, b, s.K, NP, true);
  }
  if (ctx.conv_backend() == ConvBackend::Cudnn && ctx.cudnn_convolutions().forward(s, X, Wt, Y, b ? 1.0f : 0.0f))
    return;
  const float* B = X;
  if (s.col_size() != 0) {
    launch_im2col(ctx, s, X, col);
    B = col;
  }
  gemm_rm(ctx, false, false, s.K, static_cast<int>(NP), CKK, 1.0f, Wt, CKK, B, static_cast<int>(NP), b ? 1.0f : 0.0f,
          Y, static_cast<int>(NP));
}

void conv2d_backward(Context& ctx, const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX,
                     float* dW, float* db, float* col) {
  const std::int64_t NP = static_cast<std::int64_t>(s.N) * s.OH() * s.OW();
  const int CKK = s.C * s.kernel * s.kernel;
  const int ld = static_cast<int>(NP);
  const bool direct = s.col_size() == 0;
  const float* B = direct ? X : col;
  row_sums_kernel<<<s.K, kThreads, 0, stream_of(ctx)>>>(dY, db, NP);
  RSI_CUDA_LAUNCHED();
  if (NP == 0) {  // no outputs: zero gradients (a GEMM with k = 0 is refused by cuBLAS)
    launch_fill(dW, static_cast<std::int64_t>(s.K) * CKK, 0.0f, stream_of(ctx));
    if (dX) launch_fill(dX, static_cast<std::int64_t>(s.C) * s.N * s.H * s.W, 0.0f, stream_of(ctx));
    return;
  }
  // cuDNN computes what it can (cudnn backend); im2col the rest.
  CudnnConvolutions::Parts done;
  if (ctx.conv_backend() == ConvBackend::Cudnn) done = ctx.cudnn_convolutions().backward(s, X, Wt, dY, dX, dW);
  if (!done.filter) {
    // After a cuDNN forward `col` does not hold im2col(X): make it.
    if (ctx.conv_backend() == ConvBackend::Cudnn && !direct) {
      launch_im2col(ctx, s, X, col);
    }
    gemm_rm(ctx, false, true, s.K, CKK, ld, 1.0f, dY, ld, B, ld, 0.0f, dW, CKK);
  }
  if (!dX || done.data) return;
  if (direct) {
    gemm_rm(ctx, true, false, CKK, ld, s.K, 1.0f, Wt, CKK, dY, ld, 0.0f, dX, ld);
    return;
  }
  gemm_rm(ctx, true, false, CKK, ld, s.K, 1.0f, Wt, CKK, dY, ld, 0.0f, col, ld);  // dcol (col is scratch now)
  launch_col2im(ctx, s, col, dX);
}

void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax) {
  const std::int64_t n = s.planes * s.OH() * s.OW();
  if (n == 0) return;
  // Outputs are the only indices formed in I (the input offset is widened first).
  launch_indexed(index_fits_int32(n), [&](auto i) {
    maxpool_forward_kernel<decltype(i)><<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(s, X, Y, argmax);
  });
}
void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX) {
  const std::int64_t n = s.planes * s.H * s.W;
  if (n == 0) return;
  launch_indexed(index_fits_int32(n), [&](auto i) {
    pool_backward_kernel<decltype(i)><<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(s, dY, argmax, dX, true);
  });
}
void avgpool2d_forward(Context& ctx, const Pool2dShape& s, const float* X, float* Y) {
  const std::int64_t n = s.planes * s.OH() * s.OW();
  if (n == 0) return;
  launch_indexed(index_fits_int32(n), [&](auto i) {
    avgpool_forward_kernel<decltype(i)><<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(s, X, Y);
  });
}
void avgpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dY, float* dX) {
  const std::int64_t n = s.planes * s.H * s.W;
  if (n == 0) return;
  launch_indexed(index_fits_int32(n), [&](auto i) {
    pool_backward_kernel<decltype(i)><<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(s, dY, nullptr, dX, false);
  });
}

void activation_forward(Context& ctx, Activation a, const float* X, float* Y, std::int64_t n) {
  if (n <= 0) return;
  activation_forward_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(a, X, Y, n);
  RSI_CUDA_LAUNCHED();
}
void activation_backward(Context& ctx, Activation a, const float* X, const float* Y, const float* dY, float* dX,
                         std::int64_t n) {
  if (n <= 0) return;
  activation_backward_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(a, X, Y, dY, dX, n);
  RSI_CUDA_LAUNCHED();
}

void dropout_forward(Context& ctx, const float* X, float* Y, float* mask, std::int64_t n, float rate,
                     const CounterRng& rng, std::uint64_t offset) {
  if (n <= 0) return;
  dropout_forward_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(X, Y, mask, n, rate, rng, offset);
  RSI_CUDA_LAUNCHED();
}
void dropout_forward_cnhw(Context& ctx, const float* X, float* Y, float* mask, int C, int N, std::int64_t HW,
                          float rate, const CounterRng& rng, std::uint64_t base, std::int64_t row_offset) {
  const std::int64_t n = static_cast<std::int64_t>(C) * N * HW;
  if (n <= 0) return;
  dropout_forward_cnhw_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(X, Y, mask, C, N, HW, rate, rng, base,
                                                                            row_offset);
  RSI_CUDA_LAUNCHED();
}
void dropout_backward(Context& ctx, const float* dY, const float* mask, float* dX, std::int64_t n) {
  if (n <= 0) return;
  multiply_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(dY, mask, dX, n);
  RSI_CUDA_LAUNCHED();
}

void add(Context& ctx, const float* A, const float* B, float* Y, std::int64_t n) {
  if (n <= 0) return;
  add_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(A, B, Y, n);
  RSI_CUDA_LAUNCHED();
}
void accumulate(Context& ctx, const float* A, float* Y, std::int64_t n) {
  if (n <= 0) return;
  accumulate_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(A, Y, n);
  RSI_CUDA_LAUNCHED();
}

void cnhw_to_dense(Context& ctx, const float* X, float* Y, int C, int N, int HW) {
  const std::int64_t n = static_cast<std::int64_t>(C) * N * HW;
  if (n <= 0) return;
  layout_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(X, Y, C, N, HW, true);
  RSI_CUDA_LAUNCHED();
}
void dense_to_cnhw(Context& ctx, const float* X, float* Y, int C, int N, int HW) {
  const std::int64_t n = static_cast<std::int64_t>(C) * N * HW;
  if (n <= 0) return;
  layout_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(X, Y, C, N, HW, false);
  RSI_CUDA_LAUNCHED();
}

void batchnorm_forward_train(Context& ctx, const BatchNormShape& s, const float* X, const float* gamma,
                             const float* beta, float* Y, float* save_mean, float* save_invstd, float* running_mean,
                             float* running_var, float momentum, float eps) {
  if (s.channels <= 0) return;
  batchnorm_train_kernel<<<static_cast<unsigned>(s.channels), kThreads, 0, stream_of(ctx)>>>(
      s, X, gamma, beta, Y, save_mean, save_invstd, running_mean, running_var, momentum, eps);
  RSI_CUDA_LAUNCHED();
}
void batchnorm_forward_eval(Context& ctx, const BatchNormShape& s, const float* X, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var, float eps,
                            float* Y) {
  const std::int64_t n = s.outer * s.channels * s.inner;
  if (n <= 0) return;
  batchnorm_eval_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(s, X, gamma, beta, running_mean, running_var,
                                                                      eps, Y);
  RSI_CUDA_LAUNCHED();
}
void batchnorm_backward(Context& ctx, const BatchNormShape& s, const float* X, const float* gamma,
                        const float* save_mean, const float* save_invstd, const float* dY, float* dX, float* dgamma,
                        float* dbeta) {
  if (s.channels <= 0) return;
  batchnorm_backward_kernel<<<static_cast<unsigned>(s.channels), kThreads, 0, stream_of(ctx)>>>(
      s, X, gamma, save_mean, save_invstd, dY, dX, dgamma, dbeta);
  RSI_CUDA_LAUNCHED();
}

void softmax_cross_entropy(Context& ctx, const float* logits, const std::int32_t* labels, int N, int K,
                           float* dlogits, float scale, float* loss_out) {
  if (N <= 0) {
    launch_fill(loss_out, 1, 0.0f, stream_of(ctx));
    return;
  }
  softmax_ce_kernel<<<1, kThreads, 0, stream_of(ctx)>>>(logits, labels, N, K, dlogits, scale, loss_out);
  RSI_CUDA_LAUNCHED();
}
void kd_loss(Context& ctx, const float* student, const float* teacher, int N, int K, float temperature,
             float* dstudent, float scale, float* loss_out) {
  if (N <= 0) {
    launch_fill(loss_out, 1, 0.0f, stream_of(ctx));
    return;
  }
  kd_loss_kernel<<<1, kThreads, 0, stream_of(ctx)>>>(student, teacher, N, K, temperature, dstudent, scale, loss_out);
  RSI_CUDA_LAUNCHED();
}
void softmax(Context& ctx, const float* logits, float* probs, int N, int K, float temperature) {
  if (N <= 0) return;
  softmax_kernel<<<grid_for(N), kThreads, 0, stream_of(ctx)>>>(logits, probs, N, K, 1.0f / temperature);
  RSI_CUDA_LAUNCHED();
}

void adam_step(Context& ctx, float* param, const float* grad, float* m, float* v, std::int64_t n, const AdamConfig& c,
               std::int64_t step) {
  if (n <= 0) return;
  const double bias1 = 1.0 - std::pow(static_cast<double>(c.beta1), static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(static_cast<double>(c.beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(c.lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float l2 = c.decoupled ? 0.0f : c.weight_decay;
  const float shrink = c.decoupled ? 1.0f - c.lr * c.weight_decay : 1.0f;
  adam_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(param, grad, m, v, n, step_size, inv_sqrt_bias2, l2,
                                                            shrink, c.beta1, c.beta2, 1.0f - c.beta1,
                                                            1.0f - c.beta2, c.eps);
  RSI_CUDA_LAUNCHED();
}

void sgd_step(Context& ctx, float* param, const float* grad, float* velocity, std::int64_t n, const SgdConfig& c) {
  if (n <= 0) return;
  sgd_kernel<<<grid_for(n), kThreads, 0, stream_of(ctx)>>>(param, grad, velocity, n, c.lr, c.momentum,
                                                           c.weight_decay, c.nesterov);
  RSI_CUDA_LAUNCHED();
}

}  // namespace rsi::kernels::cuda
