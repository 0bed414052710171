// Element-wise ops, pooling and layout changes on the CPU. Each output element is computed by one
// thread from its own inputs, so the OpenMP partition never changes a result.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "rsi/kernels/ops.h"

namespace rsi::kernels {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t kParallelMin = 1 << 15;
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
}  // namespace

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::Tanh: return "tanh";
  }
  return "?";
}

void activation_forward(Activation a, const float* X, float* Y, std::int64_t n) {
  switch (a) {
    case Activation::ReLU:
#pragma omp parallel for schedule(static) if (n > kParallelMin)
      for (std::int64_t i = 0; i < n; ++i) Y[i] = X[i] > 0.0f ? X[i] : 0.0f;
      break;
    case Activation::GELU:
#pragma omp parallel for schedule(static) if (n > kParallelMin / 8)
      for (std::int64_t i = 0; i < n; ++i) Y[i] = 0.5f * X[i] * (1.0f + std::erf(X[i] * kInvSqrt2));
      break;
    case Activation::Tanh:
#pragma omp parallel for schedule(static) if (n > kParallelMin / 8)
      for (std::int64_t i = 0; i < n; ++i) Y[i] = std::tanh(X[i]);
      break;
  }
}

void activation_backward(Activation a, const float* X, const float* Y, const float* dY, float* dX, std::int64_t n) {
  switch (a) {
    case Activation::ReLU:
#pragma omp parallel for schedule(static) if (n > kParallelMin)
      for (std::int64_t i = 0; i < n; ++i) dX[i] = Y[i] > 0.0f ? dY[i] : 0.0f;
      break;
    case Activation::GELU:
#pragma omp parallel for schedule(static) if (n > kParallelMin / 8)
      for (std::int64_t i = 0; i < n; ++i) {
        const float x = X[i];
        const float cdf = 0.5f * (1.0f + std::erf(x * kInvSqrt2));
        const float pdf = kInvSqrt2Pi * std::exp(-0.5f * x * x);
        dX[i] = dY[i] * (cdf + x * pdf);
      }
      break;
    case Activation::Tanh:
#pragma omp parallel for schedule(static) if (n > kParallelMin)
      for (std::int64_t i = 0; i < n; ++i) dX[i] = dY[i] * (1.0f - Y[i] * Y[i]);
      break;
  }
}

void dropout_forward(const float* X, float* Y, float* mask, std::int64_t n, float rate, const CounterRng& rng,
                     std::uint64_t offset) {
  const float keep_scale = 1.0f / (1.0f - rate);
#pragma omp parallel for schedule(static) if (n > kParallelMin / 8)
  for (std::int64_t i = 0; i < n; ++i) {
    mask[i] = rng.uniform(offset + static_cast<std::uint64_t>(i)) < rate ? 0.0f : keep_scale;
    Y[i] = X[i] * mask[i];
  }
}

void dropout_backward(const float* dY, const float* mask, float* dX, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) dX[i] = dY[i] * mask[i];
}

void add(const float* A, const float* B, float* Y, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) Y[i] = A[i] + B[i];
}

void accumulate(const float* A, float* Y, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) Y[i] += A[i];
}

void cnhw_to_dense(const float* X, float* Y, int C, int N, int HW) {
#pragma omp parallel for schedule(static) if (static_cast<std::int64_t>(C) * N * HW > kParallelMin)
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c)
      std::memcpy(Y + (static_cast<std::int64_t>(n) * C + c) * HW, X + (static_cast<std::int64_t>(c) * N + n) * HW,
                  sizeof(float) * HW);
}

void dense_to_cnhw(const float* X, float* Y, int C, int N, int HW) {
#pragma omp parallel for schedule(static) if (static_cast<std::int64_t>(C) * N * HW > kParallelMin)
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      std::memcpy(Y + (static_cast<std::int64_t>(c) * N + n) * HW, X + (static_cast<std::int64_t>(n) * C + c) * HW,
                  sizeof(float) * HW);
}

// ---- pooling ----

namespace {
// The common 2×2, stride-2 window: two input rows per output row, no inner window loops.
void maxpool2x2_forward(const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax) {
  const int OH = s.OH(), OW = s.OW();
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W, out_plane = static_cast<std::int64_t>(OH) * OW;
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    const float* in = X + p * in_plane;
    float* out = Y + p * out_plane;
    std::int32_t* arg = argmax + p * out_plane;
    for (int oy = 0; oy < OH; ++oy) {
      const std::int32_t r0 = 2 * oy * s.W, r1 = r0 + s.W;
      for (int ox = 0; ox < OW; ++ox) {
        const std::int32_t a = r0 + 2 * ox, b = a + 1, c = r1 + 2 * ox, d = c + 1;
        // Same tie-breaking as the general loop: the first maximum in row-major window order wins.
        std::int32_t best = a;
        if (in[b] > in[best]) best = b;
        if (in[c] > in[best]) best = c;
        if (in[d] > in[best]) best = d;
        out[oy * OW + ox] = in[best];
        arg[oy * OW + ox] = best;
      }
    }
  }
}
}  // namespace

void maxpool2d_forward(const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax) {
  if (s.size == 2 && s.stride == 2) return maxpool2x2_forward(s, X, Y, argmax);
  const int OH = s.OH(), OW = s.OW();
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W, out_plane = static_cast<std::int64_t>(OH) * OW;
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    const float* in = X + p * in_plane;
    float* out = Y + p * out_plane;
    std::int32_t* arg = argmax + p * out_plane;
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        float best = -std::numeric_limits<float>::infinity();
        std::int32_t best_at = (oy * s.stride) * s.W + ox * s.stride;
        for (int dy = 0; dy < s.size; ++dy)
          for (int dx = 0; dx < s.size; ++dx) {
            const std::int32_t at = (oy * s.stride + dy) * s.W + ox * s.stride + dx;
            if (in[at] > best) best = in[at], best_at = at;
          }
        out[oy * OW + ox] = best;
        arg[oy * OW + ox] = best_at;
      }
  }
}

void maxpool2d_backward(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX) {
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W,
                     out_plane = static_cast<std::int64_t>(s.OH()) * s.OW();
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    float* out = dX + p * in_plane;
    std::fill_n(out, in_plane, 0.0f);
    for (std::int64_t i = 0; i < out_plane; ++i) out[argmax[p * out_plane + i]] += dY[p * out_plane + i];
  }
}

void avgpool2d_forward(const Pool2dShape& s, const float* X, float* Y) {
  const int OH = s.OH(), OW = s.OW();
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W, out_plane = static_cast<std::int64_t>(OH) * OW;
  const float inv = 1.0f / static_cast<float>(s.size * s.size);
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    const float* in = X + p * in_plane;
    float* out = Y + p * out_plane;
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        float acc = 0.0f;
        for (int dy = 0; dy < s.size; ++dy)
          for (int dx = 0; dx < s.size; ++dx) acc += in[(oy * s.stride + dy) * s.W + ox * s.stride + dx];
        out[oy * OW + ox] = acc * inv;
      }
  }
}

void avgpool2d_backward(const Pool2dShape& s, const float* dY, float* dX) {
  const int OH = s.OH(), OW = s.OW();
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W, out_plane = static_cast<std::int64_t>(OH) * OW;
  const float inv = 1.0f / static_cast<float>(s.size * s.size);
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    float* out = dX + p * in_plane;
    const float* in = dY + p * out_plane;
    std::fill_n(out, in_plane, 0.0f);
    for (int oy = 0; oy < OH; ++oy)
      for (int ox = 0; ox < OW; ++ox) {
        const float g = in[oy * OW + ox] * inv;
        for (int dy = 0; dy < s.size; ++dy)
          for (int dx = 0; dx < s.size; ++dx) out[(oy * s.stride + dy) * s.W + ox * s.stride + dx] += g;
      }
  }
}

}  // namespace rsi::kernels
