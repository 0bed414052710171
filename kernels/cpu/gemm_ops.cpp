// Linear and conv2d on the CPU: every multiply goes through our sgemm (cpu_gemm.h: one FMA chain
// per output element, so the bits do not depend on threads or CPU). Convolution uses the CNHW
// layout so a whole batch is one GEMM (see ops.h); im2col/col2im are parallel over rows and
// channels, so each output element is written by one thread in a fixed order.
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "rsi/kernels/cpu_gemm.h"
#include "rsi/kernels/ops.h"

namespace rsi::kernels {

namespace {
int g_threads = 0;
// Below this many elements a parallel region costs more than it saves.
constexpr std::int64_t kParallelMin = 1 << 15;
}

void set_num_threads(int threads) {
  if (threads <= 0) threads = omp_get_num_procs();
  g_threads = threads;
  omp_set_num_threads(threads);
}

int num_threads() { return g_threads > 0 ? g_threads : omp_get_max_threads(); }

void linear_forward(const float* X, const float* W, const float* b, float* Y, int N, int I, int O) {
  sgemm(Trans::No, Trans::Yes, N, O, I, X, I, W, I, 0.0f, Y, O, {nullptr, b, false});
}

void linear_forward_relu(const float* X, const float* W, const float* b, float* Y, int N, int I, int O) {
  sgemm(Trans::No, Trans::Yes, N, O, I, X, I, W, I, 0.0f, Y, O, {nullptr, b, true});
}

void linear_backward(const float* X, const float* W, const float* dY, float* dX, float* dW, float* db, int N, int I,
                     int O) {
  sgemm(Trans::Yes, Trans::No, O, I, N, dY, O, X, I, 0.0f, dW, I);
  if (dX) sgemm(Trans::No, Trans::No, N, I, O, dY, O, W, I, 0.0f, dX, I);
  // Bias gradient: column sums of dY, rows added in order.
  std::fill_n(db, O, 0.0f);
  for (int n = 0; n < N; ++n) {
    const float* row = dY + static_cast<std::int64_t>(n) * O;
    for (int o = 0; o < O; ++o) db[o] += row[o];
  }
}

std::int64_t Conv2dShape::col_size() const {
  if (kernel == 1 && stride == 1 && pad == 0) return 0;
  return static_cast<std::int64_t>(C) * kernel * kernel * N * OH() * OW();
}

namespace {

bool direct_gemm(const Conv2dShape& s) { return s.col_size() == 0; }

// Convolutions run a few images at a time, so that a chunk's im2col matrix (and in the backward
// pass its gradient) stays in the core's cache between being made and being used instead of
// streaming the whole batch's — 29 MB for the reference CNN's second layer at batch 128 — through
// memory two or three times. Results do not depend on it (cpu_gemm.h; dW below).
// A chunk's column count is made a multiple of 32 (the widest register tile) where a count of
// images within the budget allows it, so no partial tile is left at each chunk's end.
constexpr std::int64_t kChunkBytes = 3 << 19;
int images_per_chunk(const Conv2dShape& s) {
  const std::int64_t P = static_cast<std::int64_t>(s.OH()) * s.OW();
  const std::int64_t per_image = static_cast<std::int64_t>(s.C) * s.kernel * s.kernel * P * 4;
  const int most = static_cast<int>(std::clamp<std::int64_t>(kChunkBytes / per_image, 1, s.N));
  if (most == s.N) return most;
  for (int count = most; count > most / 2; --count)
    if (count * P % 32 == 0) return count;
  return most;
}

// Range of output columns ox whose input column ox*stride - pad + kx lies inside [0, W).
void valid_range(int out, int in, int stride, int pad, int k, int& lo, int& hi) {
  lo = 0;
  while (lo < out && lo * stride - pad + k < 0) ++lo;
  hi = out;
  while (hi > lo && (hi - 1) * stride - pad + k >= in) --hi;
}

// The im2col matrix of images n0..n0+count of the batch: col[C·k·k][count·OH·OW].
void im2col(const Conv2dShape& s, const float* X, float* col, int n0, int count) {
  const int OH = s.OH(), OW = s.OW(), k = s.kernel;
  const std::int64_t plane = static_cast<std::int64_t>(s.H) * s.W, P = static_cast<std::int64_t>(OH) * OW;
  const int rows = s.C * k * k;
#pragma omp parallel for schedule(static) if (rows * count * P > kParallelMin)
  for (int r = 0; r < rows; ++r) {
    const int c = r / (k * k), ky = (r / k) % k, kx = r % k;
    int ox_lo, ox_hi;
    valid_range(OW, s.W, s.stride, s.pad, kx, ox_lo, ox_hi);
    float* out = col + static_cast<std::int64_t>(r) * count * P;
    if (s.stride == 1 && OH == s.H && OW == s.W) {
      // "Same" padding, stride 1: the tap's plane is the image shifted by (dy, dx) — one copy of the
      // rows that stay inside, then the dx columns that wrapped to the neighbouring row are zeroed.
      const int dy = ky - s.pad, dx = kx - s.pad, W = s.W;
      // Output rows whose input row oy + dy is inside the image; empty when |dy| >= H (tiny planes).
      const int oy_lo = std::clamp(-dy, 0, OH), oy_hi = std::clamp(s.H - dy, oy_lo, OH);
      for (int n = n0; n < n0 + count; ++n, out += P) {
        const float* img = X + (static_cast<std::int64_t>(c) * s.N + n) * plane;
        std::fill_n(out, oy_lo * W, 0.0f);
        std::fill(out + static_cast<std::int64_t>(oy_hi) * W, out + P, 0.0f);
        if (oy_hi <= oy_lo) continue;
        // out[i] = img[i + dy·W + dx] for i in the kept rows, reading only inside this image.
        std::int64_t lo = static_cast<std::int64_t>(oy_lo) * W, hi = static_cast<std::int64_t>(oy_hi) * W;
        const std::int64_t shift = static_cast<std::int64_t>(dy) * W + dx;
        while (lo < hi && lo + shift < 0) out[lo++] = 0.0f;  // dx < 0 at the first image row: left columns
        while (hi > lo && hi + shift > plane) out[--hi] = 0.0f;  // dx > 0 at the last image row: right columns
        const float* src = img + shift;
        for (std::int64_t i = lo; i < hi; ++i) out[i] = src[i];
        for (int oy = oy_lo; oy < oy_hi; ++oy) {
          float* row = out + static_cast<std::int64_t>(oy) * W;
          for (int x = 0; x < std::min(-dx, W); ++x) row[x] = 0.0f;  // |dx| may exceed a tiny plane's width
          for (int x = std::max(W - dx, 0); x < W; ++x) row[x] = 0.0f;
        }
      }
      continue;
    }
    for (int n = n0; n < n0 + count; ++n) {
      const float* img = X + (static_cast<std::int64_t>(c) * s.N + n) * plane;
      for (int oy = 0; oy < OH; ++oy, out += OW) {
        const int iy = oy * s.stride - s.pad + ky;
        if (iy < 0 || iy >= s.H) {
          std::fill_n(out, OW, 0.0f);
          continue;
        }
        const float* in_row = img + static_cast<std::int64_t>(iy) * s.W;
        std::fill_n(out, ox_lo, 0.0f);
        if (s.stride == 1) {
          const float* src = in_row - s.pad + kx;
          for (int ox = ox_lo; ox < ox_hi; ++ox) out[ox] = src[ox];  // short rows: a loop beats memcpy calls
        } else {
          for (int ox = ox_lo; ox < ox_hi; ++ox) out[ox] = in_row[ox * s.stride - s.pad + kx];
        }
        std::fill(out + ox_hi, out + OW, 0.0f);
      }
    }
  }
}

// dX = Σ over kernel taps of the scattered dcol rows. Parallel over input channels: channel c is
// written only by rows of channel c, in tap order.
// Images n0..n0+count of dX from their dcol[C·k·k][count·OH·OW].
void col2im(const Conv2dShape& s, const float* dcol, float* dX, int n0, int count) {
  const int OH = s.OH(), OW = s.OW(), k = s.kernel;
  const std::int64_t plane = static_cast<std::int64_t>(s.H) * s.W, P = static_cast<std::int64_t>(OH) * OW;
#pragma omp parallel for schedule(static) if (s.C * k * k * count * P > kParallelMin)
  for (int c = 0; c < s.C; ++c) {
    float* chan = dX + (static_cast<std::int64_t>(c) * s.N + n0) * plane;
    std::fill_n(chan, count * plane, 0.0f);
    for (int ky = 0; ky < k; ++ky) {
      for (int kx = 0; kx < k; ++kx) {
        const int r = (c * k + ky) * k + kx;
        int ox_lo, ox_hi;
        valid_range(OW, s.W, s.stride, s.pad, kx, ox_lo, ox_hi);
        const float* in = dcol + static_cast<std::int64_t>(r) * count * P;
        for (int n = 0; n < count; ++n) {
          float* img = chan + n * plane;
          for (int oy = 0; oy < OH; ++oy, in += OW) {
            const int iy = oy * s.stride - s.pad + ky;
            if (iy < 0 || iy >= s.H) continue;
            float* out_row = img + static_cast<std::int64_t>(iy) * s.W;
            if (s.stride == 1) {  // contiguous: vectorises
              float* out = out_row - s.pad + kx;
              for (int ox = ox_lo; ox < ox_hi; ++ox) out[ox] += in[ox];
            } else {
              for (int ox = ox_lo; ox < ox_hi; ++ox) out_row[ox * s.stride - s.pad + kx] += in[ox];
            }
          }
        }
      }
    }
  }
}

// Row sums of a [rows][cols] matrix in double, one row per thread at a time. Eight partial sums
// (element i goes to i mod 8), added in a fixed order at the end: a fixed order that vectorises.
void row_sums(const float* A, float* out, int rows, std::int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMin)
  for (int r = 0; r < rows; ++r) {
    const float* row = A + r * cols;
    double acc[8] = {};
    std::int64_t i = 0;
    for (; i + 8 <= cols; i += 8)
      for (int l = 0; l < 8; ++l) acc[l] += row[i + l];
    for (int l = 0; i < cols; ++i, ++l) acc[l] += row[i];
    out[r] = static_cast<float>(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
  }
}

}  // namespace

namespace {
void conv2d_forward_impl(const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y, float* col,
                         bool relu) {
  const std::int64_t NP = static_cast<std::int64_t>(s.N) * s.OH() * s.OW();
  const int CKK = s.C * s.kernel * s.kernel;
  if (direct_gemm(s)) {
    sgemm(Trans::No, Trans::No, s.K, static_cast<int>(NP), CKK, Wt, CKK, X, static_cast<int>(NP), 0.0f, Y,
          static_cast<int>(NP), {b, nullptr, relu});
    return;
  }
  const int P = s.OH() * s.OW(), chunk = images_per_chunk(s);
  for (int n0 = 0; n0 < s.N; n0 += chunk) {
    const int count = std::min(chunk, s.N - n0), cols = count * P;
    im2col(s, X, col, n0, count);
    sgemm(Trans::No, Trans::No, s.K, cols, CKK, Wt, CKK, col, cols, 0.0f, Y + static_cast<std::int64_t>(n0) * P,
          static_cast<int>(NP), {b, nullptr, relu});
  }
}
}  // namespace

void conv2d_forward(const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y, float* col) {
  conv2d_forward_impl(s, X, Wt, b, Y, col, false);
}

void conv2d_forward_relu(const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y, float* col) {
  conv2d_forward_impl(s, X, Wt, b, Y, col, true);
}

void conv2d_backward(const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX, float* dW,
                     float* db, float* col) {
  const std::int64_t NP = static_cast<std::int64_t>(s.N) * s.OH() * s.OW();
  const int CKK = s.C * s.kernel * s.kernel;
  const int ld = static_cast<int>(NP);
  row_sums(dY, db, s.K, NP);
  if (direct_gemm(s)) {
    sgemm(Trans::No, Trans::Yes, s.K, CKK, ld, dY, ld, X, ld, 0.0f, dW, CKK);
    if (dX) sgemm(Trans::Yes, Trans::No, CKK, ld, s.K, Wt, CKK, dY, ld, 0.0f, dX, ld);
    return;
  }
  // Chunk by chunk, as the forward: the chunk's im2col matrix is made again (in cache) rather than
  // kept from the forward in memory. dW's chain over n·p continues through dW from chunk to chunk
  // (beta 1 after the first), so it is the same chain, in the same order, as one whole GEMM.
  const int P = s.OH() * s.OW(), chunk = images_per_chunk(s);
  for (int n0 = 0; n0 < s.N; n0 += chunk) {
    const int count = std::min(chunk, s.N - n0), cols = count * P;
    const float* dY_chunk = dY + static_cast<std::int64_t>(n0) * P;
    im2col(s, X, col, n0, count);
    sgemm(Trans::No, Trans::Yes, s.K, CKK, cols, dY_chunk, ld, col, cols, n0 == 0 ? 0.0f : 1.0f, dW, CKK);
    if (!dX) continue;
    sgemm(Trans::Yes, Trans::No, CKK, cols, s.K, Wt, CKK, dY_chunk, ld, 0.0f, col, cols);
    col2im(s, col, dX, n0, count);
  }
}

}  // namespace rsi::kernels
