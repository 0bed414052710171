// The statistics of `rsi compare`: bootstrap confidence intervals that are the same on every
// machine (a fixed-seed mt19937_64, whose sequence the C++ standard fixes, and indices taken from
// its raw output rather than from a distribution, whose algorithm the standard leaves open), paired
// differences by seed, a least-squares slope and a normalised area under a curve.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "rsi/runtime/study.h"

namespace rsi::runtime {

namespace {

// The q-quantile of sorted values, linear between order statistics (R's type 7).
double quantile(const std::vector<double>& sorted, double q) {
  const double at = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(at));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  return sorted[below] + (at - static_cast<double>(below)) * (sorted[above] - sorted[below]);
}

}  // namespace

Estimate bootstrap_mean(const std::vector<double>& values, double confidence, int resamples, std::uint64_t seed) {
  Estimate e;
  e.n = static_cast<int>(values.size());
  if (values.empty()) {
    e.mean = e.low = e.high = std::numeric_limits<double>::quiet_NaN();
    return e;
  }
  double sum = 0;
  for (double v : values) sum += v;
  e.mean = sum / static_cast<double>(values.size());
  std::mt19937_64 rng(seed);
  std::vector<double> means(static_cast<std::size_t>(std::max(resamples, 1)));
  const std::uint64_t n = values.size();
  for (double& m : means) {
    double s = 0;
    // A value in [0, n) from the raw 64-bit output: the bias of the modulo is below n / 2^64.
    for (std::uint64_t i = 0; i < n; ++i) s += values[static_cast<std::size_t>(rng() % n)];
    m = s / static_cast<double>(n);
  }
  std::sort(means.begin(), means.end());
  e.low = quantile(means, (1 - confidence) / 2);
  e.high = quantile(means, 1 - (1 - confidence) / 2);
  return e;
}

PairedComparison paired_comparison(const std::vector<std::optional<double>>& arm,
                                   const std::vector<std::optional<double>>& baseline, bool higher_is_better,
                                   double confidence) {
  PairedComparison p;
  std::vector<double> differences;
  for (std::size_t i = 0; i < std::min(arm.size(), baseline.size()); ++i) {
    if (!arm[i] || !baseline[i]) continue;
    const double d = *arm[i] - *baseline[i];
    differences.push_back(d);
    if (d == 0) ++p.ties;
    else if ((d > 0) == higher_is_better) ++p.wins;
    else ++p.losses;
  }
  p.difference = bootstrap_mean(differences, confidence);
  return p;
}

double least_squares_slope(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = std::min(x.size(), y.size());
  if (n < 2) return 0;
  double mx = 0, my = 0;
  for (std::size_t i = 0; i < n; ++i) mx += x[i], my += y[i];
  mx /= static_cast<double>(n), my /= static_cast<double>(n);
  double sxy = 0, sxx = 0;
  for (std::size_t i = 0; i < n; ++i) sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx);
  return sxx > 0 ? sxy / sxx : 0;
}

double normalised_area(const std::vector<double>& x, const std::vector<double>& y) {
  const std::size_t n = std::min(x.size(), y.size());
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  if (n == 1 || x[n - 1] <= x[0]) return y[0];
  double area = 0;
  for (std::size_t i = 1; i < n; ++i) area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2;
  return area / (x[n - 1] - x[0]);
}

}  // namespace rsi::runtime
