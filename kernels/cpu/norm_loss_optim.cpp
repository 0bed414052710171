// Batch normalisation, losses and optimizers on the CPU. Reductions run in a fixed order (one
// channel or one row per thread, summed sequentially in double) so results never depend on the
// number of threads.
#include <algorithm>
#include <cmath>
#include <vector>

#include "rsi/kernels/ops.h"

namespace rsi::kernels {

namespace {
constexpr std::int64_t kParallelMin = 1 << 15;

inline const float* at(const float* base, const BatchNormShape& s, std::int64_t o, std::int64_t c) {
  return base + (o * s.channels + c) * s.inner;
}
inline float* at(float* base, const BatchNormShape& s, std::int64_t o, std::int64_t c) {
  return base + (o * s.channels + c) * s.inner;
}
}  // namespace

// ---- batch normalisation ----

void batchnorm_forward_train(const BatchNormShape& s, const float* X, const float* gamma, const float* beta, float* Y,
                             float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                             float momentum, float eps) {
  const std::int64_t count = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (count * s.channels > kParallelMin)
  for (std::int64_t c = 0; c < s.channels; ++c) {
    double sum = 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      const float* x = at(X, s, o, c);
      for (std::int64_t i = 0; i < s.inner; ++i) sum += x[i];
    }
    const double mean = sum / static_cast<double>(count);
    double sq = 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      const float* x = at(X, s, o, c);
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const double d = x[i] - mean;
        sq += d * d;
      }
    }
    const double var = sq / static_cast<double>(count);
    const float invstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    save_mean[c] = static_cast<float>(mean);
    save_invstd[c] = invstd;
    const double unbiased = count > 1 ? sq / static_cast<double>(count - 1) : var;
    running_mean[c] = static_cast<float>((1.0 - momentum) * running_mean[c] + momentum * mean);
    running_var[c] = static_cast<float>((1.0 - momentum) * running_var[c] + momentum * unbiased);
    const float scale = gamma[c] * invstd, shift = beta[c] - static_cast<float>(mean) * scale;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      const float* x = at(X, s, o, c);
      float* y = at(Y, s, o, c);
      for (std::int64_t i = 0; i < s.inner; ++i) y[i] = x[i] * scale + shift;
    }
  }
}

void batchnorm_forward_eval(const BatchNormShape& s, const float* X, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, float eps, float* Y) {
#pragma omp parallel for schedule(static) if (s.outer * s.inner * s.channels > kParallelMin)
  for (std::int64_t c = 0; c < s.channels; ++c) {
    const float scale = gamma[c] / std::sqrt(running_var[c] + eps), shift = beta[c] - running_mean[c] * scale;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      const float* x = at(X, s, o, c);
      float* y = at(Y, s, o, c);
      for (std::int64_t i = 0; i < s.inner; ++i) y[i] = x[i] * scale + shift;
    }
  }
}

void batchnorm_backward(const BatchNormShape& s, const float* X, const float* gamma, const float* save_mean,
                        const float* save_invstd, const float* dY, float* dX, float* dgamma, float* dbeta) {
  const std::int64_t count = s.outer * s.inner;
#pragma omp parallel for schedule(static) if (count * s.channels > kParallelMin)
  for (std::int64_t c = 0; c < s.channels; ++c) {
    const float mean = save_mean[c], invstd = save_invstd[c];
    double sum_dy = 0.0, sum_dy_xhat = 0.0;
    for (std::int64_t o = 0; o < s.outer; ++o) {
      const float* x = at(X, s, o, c);
      const float* dy = at(dY, s, o, c);
      for (std::int64_t i = 0; i < s.inner; ++i) {
        sum_dy += dy[i];
        sum_dy_xhat += dy[i] * ((x[i] - mean) * invstd);
      }
    }
    dbeta[c] = static_cast<float>(sum_dy);
    dgamma[c] = static_cast<float>(sum_dy_xhat);
    if (!dX) continue;
    const float k = gamma[c] * invstd / static_cast<float>(count);
    const float mean_dy = static_cast<float>(sum_dy), mean_dyx = static_cast<float>(sum_dy_xhat);
    for (std::int64_t o = 0; o < s.outer; ++o) {
      const float* x = at(X, s, o, c);
      const float* dy = at(dY, s, o, c);
      float* dx = at(dX, s, o, c);
      for (std::int64_t i = 0; i < s.inner; ++i) {
        const float xhat = (x[i] - mean) * invstd;
        dx[i] = k * (static_cast<float>(count) * dy[i] - mean_dy - xhat * mean_dyx);
      }
    }
  }
}

// ---- losses ----

void softmax(const float* logits, float* probs, int N, int K, float temperature) {
  const float inv_t = 1.0f / temperature;
  for (int n = 0; n < N; ++n) {
    const float* z = logits + static_cast<std::int64_t>(n) * K;
    float* p = probs + static_cast<std::int64_t>(n) * K;
    float mx = z[0] * inv_t;
    for (int k = 1; k < K; ++k) mx = std::max(mx, z[k] * inv_t);
    double sum = 0.0;
    for (int k = 0; k < K; ++k) sum += (p[k] = std::exp(z[k] * inv_t - mx));
    const float inv = static_cast<float>(1.0 / sum);
    for (int k = 0; k < K; ++k) p[k] *= inv;
  }
}

float softmax_cross_entropy(const float* logits, const std::int32_t* labels, int N, int K, float* dlogits,
                            float scale) {
  double total = 0.0;
  const float g = scale / static_cast<float>(N);
  for (int n = 0; n < N; ++n) {
    const float* z = logits + static_cast<std::int64_t>(n) * K;
    float mx = z[0];
    for (int k = 1; k < K; ++k) mx = std::max(mx, z[k]);
    double sum = 0.0;
    for (int k = 0; k < K; ++k) sum += std::exp(static_cast<double>(z[k] - mx));
    const double lse = std::log(sum) + mx;
    total += lse - z[labels[n]];
    if (!dlogits) continue;
    float* d = dlogits + static_cast<std::int64_t>(n) * K;
    for (int k = 0; k < K; ++k) d[k] += g * static_cast<float>(std::exp(z[k] - lse));
    d[labels[n]] -= g;
  }
  return static_cast<float>(total / N);
}

float kd_loss(const float* student, const float* teacher, int N, int K, float temperature, float* dstudent,
              float scale) {
  const double T = temperature;
  double total = 0.0;
  const float g = scale * temperature / static_cast<float>(N);
  std::vector<double> pt(K), log_qs(K);
  for (int n = 0; n < N; ++n) {
    const float* s = student + static_cast<std::int64_t>(n) * K;
    const float* t = teacher + static_cast<std::int64_t>(n) * K;
    double mt = t[0] / T, ms = s[0] / T;
    for (int k = 1; k < K; ++k) mt = std::max(mt, t[k] / T), ms = std::max(ms, s[k] / T);
    double st = 0.0, ss = 0.0;
    for (int k = 0; k < K; ++k) st += std::exp(t[k] / T - mt), ss += std::exp(s[k] / T - ms);
    const double lt = std::log(st) + mt, ls = std::log(ss) + ms;
    double kl = 0.0;
    for (int k = 0; k < K; ++k) {
      const double log_pt = t[k] / T - lt;
      pt[k] = std::exp(log_pt);
      log_qs[k] = s[k] / T - ls;
      kl += pt[k] * (log_pt - log_qs[k]);
    }
    total += T * T * kl;
    if (!dstudent) continue;
    float* d = dstudent + static_cast<std::int64_t>(n) * K;
    for (int k = 0; k < K; ++k) d[k] += g * static_cast<float>(std::exp(log_qs[k]) - pt[k]);
  }
  return static_cast<float>(total / N);
}

// ---- optimizers ----

void adam_step(float* __restrict param, const float* __restrict grad, float* __restrict m, float* __restrict v,
               std::int64_t n, const AdamConfig& c, std::int64_t step) {
  const double bias1 = 1.0 - std::pow(static_cast<double>(c.beta1), static_cast<double>(step));
  const double bias2 = 1.0 - std::pow(static_cast<double>(c.beta2), static_cast<double>(step));
  const float step_size = static_cast<float>(c.lr / bias1);
  const float inv_sqrt_bias2 = static_cast<float>(1.0 / std::sqrt(bias2));
  const float l2 = c.decoupled ? 0.0f : c.weight_decay;
  const float shrink = c.decoupled ? 1.0f - c.lr * c.weight_decay : 1.0f;
  const float b1 = c.beta1, b2 = c.beta2, one_b1 = 1.0f - c.beta1, one_b2 = 1.0f - c.beta2;
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + l2 * param[i];
    const float mi = m[i] = b1 * m[i] + one_b1 * g;
    const float vi = v[i] = b2 * v[i] + one_b2 * g * g;
    const float denom = std::sqrt(vi) * inv_sqrt_bias2 + c.eps;
    param[i] = param[i] * shrink - step_size * mi / denom;
  }
}

void sgd_step(float* __restrict param, const float* __restrict grad, float* __restrict velocity, std::int64_t n,
              const SgdConfig& c) {
#pragma omp parallel for schedule(static) if (n > kParallelMin)
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = grad[i] + c.weight_decay * param[i];
    const float v = velocity[i] = c.momentum * velocity[i] + g;
    param[i] -= c.lr * (c.nesterov ? g + c.momentum * v : v);
  }
}

}  // namespace rsi::kernels
