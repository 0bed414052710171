// Element-wise ops, pooling and layout changes on the CPU. Each output element is computed by one
// thread from its own inputs, so the OpenMP partition never changes a result.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "rsi/kernels/cpu_gemm.h"
#include "rsi/kernels/ops.h"

namespace rsi::kernels {

namespace {
// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t kParallelMin = 1 << 15;
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
}  // namespace

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
// Masks for a step of n ≤ 16 outputs of a 2×2 pool row: the outputs, and the 2n inputs of a row
// as two 16-float halves.
struct PoolRowMasks {
  __mmask16 out, in_lo, in_hi;
  explicit PoolRowMasks(int n)
      : out(static_cast<__mmask16>((1u << n) - 1)),
        in_lo(static_cast<__mmask16>((1u << std::min(16, 2 * n)) - 1)),
        in_hi(static_cast<__mmask16>(2 * n > 16 ? (1u << (2 * n - 16)) - 1 : 0)) {}
};

// One output row of the 2×2, stride-2 max pool with AVX-512: 16 outputs per step, the window's
// even and odd columns split by permutes, compares as the scalar loop makes them (strictly greater
// replaces, in row-major window order), so values and argmax are the same.
__attribute__((target("avx512f"))) void maxpool2x2_row_avx512(const float* row0, const float* row1, float* o,
                                                              std::int32_t* at, int OW, std::int32_t r0, int W) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int ox = 0; ox < OW; ox += 16) {
    const PoolRowMasks masks(std::min(16, OW - ox));
    const __mmask16 out_mask = masks.out, lo_mask = masks.in_lo, hi_mask = masks.in_hi;
    const __m512 t0 = _mm512_maskz_loadu_ps(lo_mask, row0 + 2 * ox), t1 = _mm512_maskz_loadu_ps(hi_mask, row0 + 2 * ox + 16);
    const __m512 u0 = _mm512_maskz_loadu_ps(lo_mask, row1 + 2 * ox), u1 = _mm512_maskz_loadu_ps(hi_mask, row1 + 2 * ox + 16);
    const __m512 a = _mm512_permutex2var_ps(t0, even, t1), b = _mm512_permutex2var_ps(t0, odd, t1);
    const __m512 c = _mm512_permutex2var_ps(u0, even, u1), d = _mm512_permutex2var_ps(u0, odd, u1);
    __m512 best = a;
    __m512i off = _mm512_setzero_si512();
    __mmask16 m = _mm512_cmp_ps_mask(b, best, _CMP_GT_OQ);
    best = _mm512_mask_blend_ps(m, best, b), off = _mm512_mask_blend_epi32(m, off, _mm512_set1_epi32(1));
    m = _mm512_cmp_ps_mask(c, best, _CMP_GT_OQ);
    best = _mm512_mask_blend_ps(m, best, c), off = _mm512_mask_blend_epi32(m, off, _mm512_set1_epi32(W));
    m = _mm512_cmp_ps_mask(d, best, _CMP_GT_OQ);
    best = _mm512_mask_blend_ps(m, best, d), off = _mm512_mask_blend_epi32(m, off, _mm512_set1_epi32(W + 1));
    const __m512i index = _mm512_add_epi32(_mm512_set1_epi32(r0 + 2 * ox),
                                           _mm512_add_epi32(_mm512_slli_epi32(lane, 1), off));
    _mm512_mask_storeu_ps(o + ox, out_mask, best);
    _mm512_mask_storeu_epi32(at + ox, out_mask, index);
  }
}

// The backward of one output row of the 2×2, stride-2 max pool with AVX-512: each window's four
// input gradients (g where the argmax is, +0 elsewhere) interleaved back into the two input rows.
__attribute__((target("avx512f"))) void maxpool2x2_backward_row_avx512(const float* g, const std::int32_t* at,
                                                                       const float* y, float* row0, float* row1,
                                                                       int OW, std::int32_t r0, int W) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int ox = 0; ox < OW; ox += 16) {
    const PoolRowMasks masks(std::min(16, OW - ox));
    const __mmask16 in_mask = masks.out, lo_mask = masks.in_lo, hi_mask = masks.in_hi;
    // 0 + g as in the scatter form (-0 becomes +0).
    __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(in_mask, g + ox), _mm512_setzero_ps());
    if (y) v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(in_mask, y + ox), _mm512_setzero_ps(), _CMP_GT_OQ), v);
    const __m512i off = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(in_mask, at + ox),
                                         _mm512_add_epi32(_mm512_set1_epi32(r0 + 2 * ox), _mm512_slli_epi32(lane, 1)));
    const __m512 a = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(off, _mm512_setzero_si512()), v);
    const __m512 b = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(off, _mm512_set1_epi32(1)), v);
    const __m512 c = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(off, _mm512_set1_epi32(W)), v);
    const __m512 d = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(off, _mm512_set1_epi32(W + 1)), v);
    _mm512_mask_storeu_ps(row0 + 2 * ox, lo_mask, _mm512_permutex2var_ps(a, lo, b));
    _mm512_mask_storeu_ps(row0 + 2 * ox + 16, hi_mask, _mm512_permutex2var_ps(a, hi, b));
    _mm512_mask_storeu_ps(row1 + 2 * ox, lo_mask, _mm512_permutex2var_ps(c, lo, d));
    _mm512_mask_storeu_ps(row1 + 2 * ox + 16, hi_mask, _mm512_permutex2var_ps(c, hi, d));
  }
}

// The common 2×2, stride-2 window: two input rows per output row, no inner window loops.
void maxpool2x2_forward(const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax) {
  const bool avx512 = cpu_kernel() == CpuKernel::Avx512;  // the family in use (RSI_CPU_KERNEL=avx2 tests the rest)
  const int OH = s.OH(), OW = s.OW();
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W, out_plane = static_cast<std::int64_t>(OH) * OW;
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    const float* in = X + p * in_plane;
    float* out = Y + p * out_plane;
    std::int32_t* arg = argmax + p * out_plane;
    for (int oy = 0; oy < OH; ++oy) {
      const std::int32_t r0 = 2 * oy * s.W, W = s.W;
      const float* row0 = in + r0;
      const float* row1 = row0 + W;
      float* o = out + oy * OW;
      std::int32_t* at = arg + oy * OW;
      if (avx512) {
        maxpool2x2_row_avx512(row0, row1, o, at, OW, r0, W);
        continue;
      }
      // Same tie-breaking as the general loop: the first maximum in row-major window order wins.
      for (int ox = 0; ox < OW; ++ox) {
        const float a = row0[2 * ox], b = row0[2 * ox + 1], c = row1[2 * ox], d = row1[2 * ox + 1];
        float best = a;
        std::int32_t off = 0;
        const bool mb = b > best;
        best = mb ? b : best, off = mb ? 1 : off;
        const bool mc = c > best;
        best = mc ? c : best, off = mc ? W : off;
        const bool md = d > best;
        best = md ? d : best, off = md ? W + 1 : off;
        o[ox] = best;
        at[ox] = r0 + 2 * ox + off;
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

namespace {
// Y non-null: the pool's input is a ReLU's output and its gradient is masked here as the ReLU's
// backward would (Y, the pool's output, is the input value at each argmax).
void maxpool_backward(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, const float* Y, float* dX) {
  const std::int64_t in_plane = static_cast<std::int64_t>(s.H) * s.W,
                     out_plane = static_cast<std::int64_t>(s.OH()) * s.OW();
  if (s.size == 2 && s.stride == 2) {
    // Disjoint 2×2 windows: each input element is written once — the window's gradient where its
    // argmax is, zero elsewhere — instead of zero-filling the plane and scattering into it.
    const bool avx512 = cpu_kernel() == CpuKernel::Avx512;  // the family in use (RSI_CPU_KERNEL=avx2 tests the rest)
    const int OH = s.OH(), OW = s.OW();
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
    for (std::int64_t p = 0; p < s.planes; ++p) {
      float* out = dX + p * in_plane;
      const float* g = dY + p * out_plane;
      const std::int32_t* at = argmax + p * out_plane;
      for (int oy = 0; oy < OH; ++oy) {
        float* row0 = out + static_cast<std::int64_t>(2 * oy) * s.W;
        float* row1 = row0 + s.W;
        const std::int32_t r0 = 2 * oy * s.W;
        if (avx512) {
          maxpool2x2_backward_row_avx512(g + oy * OW, at + oy * OW, Y ? Y + p * out_plane + oy * OW : nullptr, row0,
                                         row1, OW, r0, s.W);
        } else {
          for (int ox = 0; ox < OW; ++ox) {
          const std::int32_t a = at[oy * OW + ox] - r0 - 2 * ox;  // 0, 1, W, W + 1
          float v = g[oy * OW + ox] + 0.0f;  // as 0 + v in the scatter: -0 becomes +0
          if (Y && !(Y[p * out_plane + oy * OW + ox] > 0.0f)) v = 0.0f;
          row0[2 * ox] = a == 0 ? v : 0.0f;
          row0[2 * ox + 1] = a == 1 ? v : 0.0f;
          row1[2 * ox] = a == s.W ? v : 0.0f;
          row1[2 * ox + 1] = a == s.W + 1 ? v : 0.0f;
          }
        }
        if (s.W % 2) row0[s.W - 1] = row1[s.W - 1] = 0.0f;  // the column no window covers
      }
      if (s.H % 2) std::fill_n(out + static_cast<std::int64_t>(s.H - 1) * s.W, s.W, 0.0f);
    }
    return;
  }
#pragma omp parallel for schedule(static) if (s.planes * s.H * s.W > kParallelMin)
  for (std::int64_t p = 0; p < s.planes; ++p) {
    float* out = dX + p * in_plane;
    std::fill_n(out, in_plane, 0.0f);
    for (std::int64_t i = 0; i < out_plane; ++i)
      out[argmax[p * out_plane + i]] += Y && !(Y[p * out_plane + i] > 0.0f) ? 0.0f : dY[p * out_plane + i];
  }
}
}  // namespace

void maxpool2d_backward(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX) {
  maxpool_backward(s, dY, argmax, nullptr, dX);
}

void maxpool2d_backward_relu(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, const float* Y,
                             float* dX) {
  maxpool_backward(s, dY, argmax, Y, dX);
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
