// rsi::reference — plain, single-threaded, obviously-correct versions of every op in
// rsi/kernels/ops.h, with the same signatures and conventions. They accumulate in double and use no
// BLAS, no im2col and no threads: a direct 7-loop convolution, a triple-loop matrix product, and so on.
// test_kernels.cpp checks rsi::kernels against these (parity) and both against finite differences.
//
// Layouts (see ops.h): dense [N][F]; conv activations CNHW [C][N][H][W]; conv weights [K][C][k][k];
// batch norm views its tensor as [outer][C][inner]. Backward functions overwrite dX/dW/db (null dX
// skips it); losses accumulate scale·grad into their gradient buffer and return the mean loss.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"

namespace rsi::reference {

// Test inputs drawn from a counter-based stream keyed by (seed, `stream`): the same values on every
// machine and backend. Each test file keeps its own stream so its inputs do not change when another
// file's do.
struct InputStream {
  std::uint64_t stream;
  // N(shift, scale²) draws.
  std::vector<float> normal(std::size_t n, std::uint64_t seed, float scale = 1.0f, float shift = 0.0f) const {
    const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Init, stream));
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = shift + scale * rng.normal(i);
    return v;
  }
  // A random permutation of spacing·(i − n/2): distinct values at least `spacing` apart (no max-pool ties).
  std::vector<float> distinct(std::size_t n, std::uint64_t seed, float spacing) const {
    const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Shuffle, stream));
    std::vector<float> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = spacing * (static_cast<float>(i) - static_cast<float>(n) / 2.0f);
    for (std::size_t i = n; i > 1; --i) std::swap(v[i - 1], v[rng.below(i, static_cast<std::uint32_t>(i))]);
    return v;
  }
};

using kernels::Activation;
using kernels::AdamConfig;
using kernels::BatchNormShape;
using kernels::Conv2dShape;
using kernels::CounterRng;
using kernels::Pool2dShape;
using kernels::SgdConfig;

// ---- linear: Y[N][O] = X[N][I] · W[O][I]^T + b[O] ----
inline void linear_forward(const float* X, const float* W, const float* b, float* Y, int N, int I, int O) {
  for (int n = 0; n < N; ++n) {
    for (int o = 0; o < O; ++o) {
      double acc = b ? static_cast<double>(b[o]) : 0.0;
      for (int i = 0; i < I; ++i) acc += static_cast<double>(X[n * I + i]) * W[o * I + i];
      Y[n * O + o] = static_cast<float>(acc);
    }
  }
}

inline void linear_backward(const float* X, const float* W, const float* dY, float* dX, float* dW, float* db, int N,
                            int I, int O) {
  if (dX) {
    for (int n = 0; n < N; ++n) {
      for (int i = 0; i < I; ++i) {
        double acc = 0.0;
        for (int o = 0; o < O; ++o) acc += static_cast<double>(dY[n * O + o]) * W[o * I + i];
        dX[n * I + i] = static_cast<float>(acc);
      }
    }
  }
  for (int o = 0; o < O; ++o) {
    for (int i = 0; i < I; ++i) {
      double acc = 0.0;
      for (int n = 0; n < N; ++n) acc += static_cast<double>(dY[n * O + o]) * X[n * I + i];
      dW[o * I + i] = static_cast<float>(acc);
    }
  }
  if (db) {
    for (int o = 0; o < O; ++o) {
      double acc = 0.0;
      for (int n = 0; n < N; ++n) acc += dY[n * O + o];
      db[o] = static_cast<float>(acc);
    }
  }
}

// ---- conv2d, CNHW: X[C][N][H][W], Wt[K][C][k][k], b[K] -> Y[K][N][OH][OW]. `col` is unused here. ----
inline void conv2d_forward(const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y,
                           float* /*col*/) {
  const int OH = s.OH(), OW = s.OW(), k = s.kernel;
  for (int ko = 0; ko < s.K; ++ko) {
    for (int n = 0; n < s.N; ++n) {
      for (int oh = 0; oh < OH; ++oh) {
        for (int ow = 0; ow < OW; ++ow) {
          double acc = b ? static_cast<double>(b[ko]) : 0.0;
          for (int c = 0; c < s.C; ++c) {
            for (int i = 0; i < k; ++i) {
              const int h = oh * s.stride - s.pad + i;
              if (h < 0 || h >= s.H) continue;
              for (int j = 0; j < k; ++j) {
                const int w = ow * s.stride - s.pad + j;
                if (w < 0 || w >= s.W) continue;
                acc += static_cast<double>(Wt[((static_cast<std::int64_t>(ko) * s.C + c) * k + i) * k + j]) *
                       X[((static_cast<std::int64_t>(c) * s.N + n) * s.H + h) * s.W + w];
              }
            }
          }
          Y[((static_cast<std::int64_t>(ko) * s.N + n) * OH + oh) * OW + ow] = static_cast<float>(acc);
        }
      }
    }
  }
}

inline void conv2d_backward(const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX,
                            float* dW, float* db, float* /*col*/) {
  const int OH = s.OH(), OW = s.OW(), k = s.kernel;
  const auto x_at = [&](int c, int n, int h, int w) {
    return ((static_cast<std::int64_t>(c) * s.N + n) * s.H + h) * s.W + w;
  };
  const auto y_at = [&](int ko, int n, int oh, int ow) {
    return ((static_cast<std::int64_t>(ko) * s.N + n) * OH + oh) * OW + ow;
  };
  const auto w_at = [&](int ko, int c, int i, int j) {
    return ((static_cast<std::int64_t>(ko) * s.C + c) * k + i) * k + j;
  };
  // dW[K][C][k][k]
  for (int ko = 0; ko < s.K; ++ko)
    for (int c = 0; c < s.C; ++c)
      for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) {
          double acc = 0.0;
          for (int n = 0; n < s.N; ++n)
            for (int oh = 0; oh < OH; ++oh) {
              const int h = oh * s.stride - s.pad + i;
              if (h < 0 || h >= s.H) continue;
              for (int ow = 0; ow < OW; ++ow) {
                const int w = ow * s.stride - s.pad + j;
                if (w < 0 || w >= s.W) continue;
                acc += static_cast<double>(dY[y_at(ko, n, oh, ow)]) * X[x_at(c, n, h, w)];
              }
            }
          dW[w_at(ko, c, i, j)] = static_cast<float>(acc);
        }
  if (db) {
    for (int ko = 0; ko < s.K; ++ko) {
      double acc = 0.0;
      for (int n = 0; n < s.N; ++n)
        for (int oh = 0; oh < OH; ++oh)
          for (int ow = 0; ow < OW; ++ow) acc += dY[y_at(ko, n, oh, ow)];
      db[ko] = static_cast<float>(acc);
    }
  }
  if (dX) {
    // Gather form: for each input pixel, sum over every (output pixel, tap) that read it.
    for (int c = 0; c < s.C; ++c)
      for (int n = 0; n < s.N; ++n)
        for (int h = 0; h < s.H; ++h)
          for (int w = 0; w < s.W; ++w) {
            double acc = 0.0;
            for (int ko = 0; ko < s.K; ++ko)
              for (int i = 0; i < k; ++i) {
                const int oh_num = h + s.pad - i;
                if (oh_num < 0 || oh_num % s.stride != 0) continue;
                const int oh = oh_num / s.stride;
                if (oh >= OH) continue;
                for (int j = 0; j < k; ++j) {
                  const int ow_num = w + s.pad - j;
                  if (ow_num < 0 || ow_num % s.stride != 0) continue;
                  const int ow = ow_num / s.stride;
                  if (ow >= OW) continue;
                  acc += static_cast<double>(dY[y_at(ko, n, oh, ow)]) * Wt[w_at(ko, c, i, j)];
                }
              }
            dX[x_at(c, n, h, w)] = static_cast<float>(acc);
          }
  }
}

// ---- pooling over independent H×W planes. argmax holds the index of the max inside its plane
//      (h*W + w); the first maximum wins on ties. ----
inline void maxpool2d_forward(const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax) {
  const int OH = s.OH(), OW = s.OW();
  for (std::int64_t p = 0; p < s.planes; ++p) {
    const float* x = X + p * s.H * s.W;
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        int best = (oh * s.stride) * s.W + ow * s.stride;
        for (int i = 0; i < s.size; ++i)
          for (int j = 0; j < s.size; ++j) {
            const int at = (oh * s.stride + i) * s.W + (ow * s.stride + j);
            if (x[at] > x[best]) best = at;
          }
        const std::int64_t o = (p * OH + oh) * OW + ow;
        Y[o] = x[best];
        argmax[o] = best;
      }
  }
}

inline void maxpool2d_backward(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX) {
  const int OH = s.OH(), OW = s.OW();
  std::vector<double> acc(static_cast<std::size_t>(s.H) * s.W);
  for (std::int64_t p = 0; p < s.planes; ++p) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int o = 0; o < OH * OW; ++o) acc[argmax[p * OH * OW + o]] += dY[p * OH * OW + o];
    for (int i = 0; i < s.H * s.W; ++i) dX[p * s.H * s.W + i] = static_cast<float>(acc[i]);
  }
}

inline void avgpool2d_forward(const Pool2dShape& s, const float* X, float* Y) {
  const int OH = s.OH(), OW = s.OW();
  for (std::int64_t p = 0; p < s.planes; ++p)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        double acc = 0.0;
        for (int i = 0; i < s.size; ++i)
          for (int j = 0; j < s.size; ++j) acc += X[(p * s.H + oh * s.stride + i) * s.W + ow * s.stride + j];
        Y[(p * OH + oh) * OW + ow] = static_cast<float>(acc / (s.size * s.size));
      }
}

inline void avgpool2d_backward(const Pool2dShape& s, const float* dY, float* dX) {
  const int OH = s.OH(), OW = s.OW();
  std::vector<double> acc(static_cast<std::size_t>(s.H) * s.W);
  for (std::int64_t p = 0; p < s.planes; ++p) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        const double g = static_cast<double>(dY[(p * OH + oh) * OW + ow]) / (s.size * s.size);
        for (int i = 0; i < s.size; ++i)
          for (int j = 0; j < s.size; ++j) acc[(oh * s.stride + i) * s.W + ow * s.stride + j] += g;
      }
    for (int i = 0; i < s.H * s.W; ++i) dX[p * s.H * s.W + i] = static_cast<float>(acc[i]);
  }
}

// ---- element-wise ----
inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::ReLU: return "relu";
    case Activation::GELU: return "gelu";
    case Activation::Tanh: return "tanh";
  }
  return "unknown";
}

inline void activation_forward(Activation a, const float* X, float* Y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const double x = X[i];
    double y = 0.0;
    switch (a) {
      case Activation::ReLU: y = x > 0.0 ? x : 0.0; break;
      case Activation::GELU: y = 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); break;
      case Activation::Tanh: y = std::tanh(x); break;
    }
    Y[i] = static_cast<float>(y);
  }
}

inline void activation_backward(Activation a, const float* X, const float* Y, const float* dY, float* dX,
                                std::int64_t n) {
  const double inv_sqrt_2pi = 0.3989422804014327;
  for (std::int64_t i = 0; i < n; ++i) {
    double d = 0.0;
    switch (a) {
      case Activation::ReLU: d = Y[i] > 0.0f ? 1.0 : 0.0; break;
      case Activation::GELU: {
        const double x = X[i];
        d = 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) + x * inv_sqrt_2pi * std::exp(-0.5 * x * x);
        break;
      }
      case Activation::Tanh: d = 1.0 - static_cast<double>(Y[i]) * Y[i]; break;
    }
    dX[i] = static_cast<float>(d * dY[i]);
  }
}

// Inverted dropout: element i is dropped when rng.uniform(offset + i) < rate.
inline void dropout_forward(const float* X, float* Y, float* mask, std::int64_t n, float rate, const CounterRng& rng,
                            std::uint64_t offset) {
  const float keep_scale = 1.0f / (1.0f - rate);
  for (std::int64_t i = 0; i < n; ++i) {
    const bool dropped = rng.uniform(offset + static_cast<std::uint64_t>(i)) < rate;
    mask[i] = dropped ? 0.0f : keep_scale;
    Y[i] = X[i] * mask[i];
  }
}

inline void dropout_backward(const float* dY, const float* mask, float* dX, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dX[i] = dY[i] * mask[i];
}

inline void add(const float* A, const float* B, float* Y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) Y[i] = A[i] + B[i];
}

inline void accumulate(const float* A, float* Y, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) Y[i] += A[i];
}

// CNHW [C][N][HW] <-> dense [N][C*HW]
inline void cnhw_to_dense(const float* X, float* Y, int C, int N, int HW) {
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < HW; ++i)
        Y[(static_cast<std::int64_t>(n) * C + c) * HW + i] = X[(static_cast<std::int64_t>(c) * N + n) * HW + i];
}

inline void dense_to_cnhw(const float* X, float* Y, int C, int N, int HW) {
  for (int c = 0; c < C; ++c)
    for (int n = 0; n < N; ++n)
      for (int i = 0; i < HW; ++i)
        Y[(static_cast<std::int64_t>(c) * N + n) * HW + i] = X[(static_cast<std::int64_t>(n) * C + c) * HW + i];
}

// ---- batch normalisation over [outer][C][inner] ----
inline void batchnorm_forward_train(const BatchNormShape& s, const float* X, const float* gamma, const float* beta,
                                    float* Y, float* save_mean, float* save_invstd, float* running_mean,
                                    float* running_var, float momentum, float eps) {
  const std::int64_t count = s.outer * s.inner;
  const auto at = [&](std::int64_t o, std::int64_t c, std::int64_t i) { return (o * s.channels + c) * s.inner + i; };
  for (std::int64_t c = 0; c < s.channels; ++c) {
    double sum = 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o)
      for (std::int64_t i = 0; i < s.inner; ++i) sum += X[at(o, c, i)];
    const double mean = sum / static_cast<double>(count);
    double sq = 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o)
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const double d = X[at(o, c, i)] - mean;
        sq += d * d;
      }
    const double var = sq / static_cast<double>(count);  // biased: used to normalise
    const double invstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    const double g = gamma ? gamma[c] : 1.0, bt = beta ? beta[c] : 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o)
      for (std::int64_t i = 0; i < s.inner; ++i)
        Y[at(o, c, i)] = static_cast<float>(g * (X[at(o, c, i)] - mean) * invstd + bt);
    if (save_mean) save_mean[c] = static_cast<float>(mean);
    if (save_invstd) save_invstd[c] = static_cast<float>(invstd);
    const double unbiased = count > 1 ? sq / static_cast<double>(count - 1) : var;
    if (running_mean)
      running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + static_cast<double>(momentum) * mean);
    if (running_var)
      running_var[c] =
          static_cast<float>((1.0 - momentum) * running_var[c] + static_cast<double>(momentum) * unbiased);
  }
}

inline void batchnorm_forward_eval(const BatchNormShape& s, const float* X, const float* gamma, const float* beta,
                                   const float* running_mean, const float* running_var, float eps, float* Y) {
  for (std::int64_t o = 0; o < s.outer; ++o)
    for (std::int64_t c = 0; c < s.channels; ++c) {
      const double invstd = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
      const double g = gamma ? gamma[c] : 1.0, bt = beta ? beta[c] : 0.0;
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const std::int64_t at = (o * s.channels + c) * s.inner + i;
        Y[at] = static_cast<float>(g * (X[at] - static_cast<double>(running_mean[c])) * invstd + bt);
      }
    }
}

inline void batchnorm_backward(const BatchNormShape& s, const float* X, const float* gamma, const float* save_mean,
                               const float* save_invstd, const float* dY, float* dX, float* dgamma, float* dbeta) {
  const std::int64_t count = s.outer * s.inner;
  const auto at = [&](std::int64_t o, std::int64_t c, std::int64_t i) { return (o * s.channels + c) * s.inner + i; };
  for (std::int64_t c = 0; c < s.channels; ++c) {
    const double mean = save_mean[c], invstd = save_invstd[c];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o)
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const double xhat = (X[at(o, c, i)] - mean) * invstd;
        sum_dy += dY[at(o, c, i)];
        sum_dy_xhat += dY[at(o, c, i)] * xhat;
      }
    if (dgamma) dgamma[c] = static_cast<float>(sum_dy_xhat);
    if (dbeta) dbeta[c] = static_cast<float>(sum_dy);
    if (dX) {
      const double g = gamma ? gamma[c] : 1.0;
      const double m = static_cast<double>(count);
      for (std::int64_t o = 0; o < s.outer; ++o)
        for (std::int64_t i = 0; i < s.inner; ++i) {
          const double xhat = (X[at(o, c, i)] - mean) * invstd;
          dX[at(o, c, i)] = static_cast<float>(g * invstd / m * (m * dY[at(o, c, i)] - sum_dy - xhat * sum_dy_xhat));
        }
    }
  }
}

// ---- losses over logits [N][K] ----
namespace detail {
// log softmax(row / T) in double.
inline void log_softmax_row(const float* row, int K, double temperature, double* out) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int k = 0; k < K; ++k) mx = std::max(mx, row[k] / temperature);
  double sum = 0.0;
  for (int k = 0; k < K; ++k) sum += std::exp(row[k] / temperature - mx);
  const double lse = mx + std::log(sum);
  for (int k = 0; k < K; ++k) out[k] = row[k] / temperature - lse;
}
}  // namespace detail

inline float softmax_cross_entropy(const float* logits, const std::int32_t* labels, int N, int K, float* dlogits,
                                   float scale = 1.0f) {
  std::vector<double> logp(static_cast<std::size_t>(K));
  double total = 0.0;
  for (int n = 0; n < N; ++n) {
    detail::log_softmax_row(logits + static_cast<std::int64_t>(n) * K, K, 1.0, logp.data());
    total -= logp[static_cast<std::size_t>(labels[n])];
    if (dlogits) {
      for (int k = 0; k < K; ++k) {
        const double g = std::exp(logp[static_cast<std::size_t>(k)]) - (k == labels[n] ? 1.0 : 0.0);
        float& d = dlogits[static_cast<std::int64_t>(n) * K + k];
        d = static_cast<float>(d + static_cast<double>(scale) * g / N);
      }
    }
  }
  return static_cast<float>(total / N);
}

inline float kd_loss(const float* student, const float* teacher, int N, int K, float temperature, float* dstudent,
                     float scale = 1.0f) {
  const double T = temperature;
  std::vector<double> logs(static_cast<std::size_t>(K)), logt(static_cast<std::size_t>(K));
  double total = 0.0;
  for (int n = 0; n < N; ++n) {
    detail::log_softmax_row(student + static_cast<std::int64_t>(n) * K, K, T, logs.data());
    detail::log_softmax_row(teacher + static_cast<std::int64_t>(n) * K, K, T, logt.data());
    for (int k = 0; k < K; ++k) {
      const std::size_t kk = static_cast<std::size_t>(k);
      total += std::exp(logt[kk]) * (logt[kk] - logs[kk]);
      if (dstudent) {
        // d/ds [T² · KL] = T · (p_s − p_t)
        float& d = dstudent[static_cast<std::int64_t>(n) * K + k];
        d = static_cast<float>(d + static_cast<double>(scale) * T * (std::exp(logs[kk]) - std::exp(logt[kk])) / N);
      }
    }
  }
  return static_cast<float>(T * T * total / N);
}

inline void softmax(const float* logits, float* probs, int N, int K, float temperature = 1.0f) {
  std::vector<double> logp(static_cast<std::size_t>(K));
  for (int n = 0; n < N; ++n) {
    detail::log_softmax_row(logits + static_cast<std::int64_t>(n) * K, K, temperature, logp.data());
    for (int k = 0; k < K; ++k)
      probs[static_cast<std::int64_t>(n) * K + k] = static_cast<float>(std::exp(logp[static_cast<std::size_t>(k)]));
  }
}

// ---- optimizers (PyTorch semantics) ----
inline void adam_step(float* param, const float* grad, float* m, float* v, std::int64_t n, const AdamConfig& c,
                      std::int64_t step) {
  const double b1 = c.beta1, b2 = c.beta2, lr = c.lr, wd = c.weight_decay;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step));
  for (std::int64_t i = 0; i < n; ++i) {
    double p = param[i], g = grad[i];
    if (c.decoupled)
      p *= 1.0 - lr * wd;  // AdamW
    else
      g += wd * p;  // Adam with L2
    const double mi = b1 * m[i] + (1.0 - b1) * g;
    const double vi = b2 * v[i] + (1.0 - b2) * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    p -= lr * (mi / bc1) / (std::sqrt(vi / bc2) + c.eps);
    param[i] = static_cast<float>(p);
  }
}

inline void sgd_step(float* param, const float* grad, float* velocity, std::int64_t n, const SgdConfig& c) {
  for (std::int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(grad[i]) + static_cast<double>(c.weight_decay) * param[i];
    const double vel = static_cast<double>(c.momentum) * velocity[i] + g;
    velocity[i] = static_cast<float>(vel);
    const double update = c.nesterov ? g + static_cast<double>(c.momentum) * vel : vel;
    param[i] = static_cast<float>(param[i] - static_cast<double>(c.lr) * update);
  }
}

}  // namespace rsi::reference
