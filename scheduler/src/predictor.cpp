// The learned designer's gain predictor (predictor.h).
#include "rsi/scheduler/predictor.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "rsi/scheduler/design.h"

namespace rsi::scheduler {

namespace {

// Shape and recipe of one genome, each about unit size.
void shape_features(const models::Genome& g, const models::InputSpec& input, std::vector<double>& out) {
  using Kind = models::Block::Kind;
  const models::GenomeStats stats = models::validate(g, input, models::GenomeLimits{
      std::numeric_limits<std::int64_t>::max(), std::numeric_limits<std::int64_t>::max(), std::numeric_limits<int>::max()});
  int convs = 0, residuals = 0, pools = 0, denses = 0, norms = 0;
  for (const auto& b : g.blocks) {
    convs += b.kind == Kind::Conv;
    residuals += b.kind == Kind::Residual;
    pools += b.kind == Kind::Pool;
    denses += b.kind == Kind::Dense;
    norms += b.kind == Kind::BatchNorm;
  }
  const auto& r = g.recipe;
  const double log_lr = std::log10(std::max(static_cast<double>(r.learning_rate), 1e-8));
  out.push_back(std::log10(std::max<double>(static_cast<double>(stats.parameters), 1.0)) / 6.0);
  out.push_back(std::log10(std::max<double>(static_cast<double>(stats.flops), 1.0)) / 8.0);
  out.push_back(std::min(convs, 8) / 4.0);
  out.push_back(std::min(residuals, 8) / 4.0);
  out.push_back(std::min(pools, 4) / 2.0);
  out.push_back(std::min(denses, 8) / 4.0);
  out.push_back(std::min(norms, 8) / 4.0);
  out.push_back(std::min(r.epochs, 20) / 5.0);
  out.push_back(std::min(r.distill_epochs, 5) / 2.0);
  out.push_back((log_lr + 3.0) / 2.0);
  out.push_back((log_lr + 3.0) * (log_lr + 3.0) / 4.0);
  out.push_back(r.augmentation.shift / 2.0 + (r.augmentation.flip ? 0.5 : 0.0));
  out.push_back(r.schedule == models::Recipe::Schedule::Cosine ? 1.0 : 0.0);
  out.push_back(r.schedule == models::Recipe::Schedule::Step ? 1.0 : 0.0);
  out.push_back(r.warmup * 10.0);
}

constexpr std::size_t kShapeFeatures = 15;

}  // namespace

std::size_t design_feature_count() { return 1 + design_operators().size() + 1 + 2 * kShapeFeatures; }

std::vector<double> design_features(const models::Genome& parent, double parent_val_accuracy,
                                    const models::Genome& child, const std::string& op,
                                    const models::InputSpec& input) {
  std::vector<double> x;
  x.reserve(design_feature_count());
  x.push_back(1.0);
  for (const std::string& name : design_operators()) x.push_back(name == op ? 1.0 : 0.0);
  // Distance from a perfect score: a gain of a parent at 0.95 is worth more than one at 0.80.
  x.push_back((1.0 - parent_val_accuracy) * 10.0);
  shape_features(child, input, x);
  shape_features(parent, input, x);
  return x;
}

GainPredictor::GainPredictor(double ridge) : ridge_(ridge) {
  const std::size_t d = design_feature_count();
  xtx_.assign(d * d, 0.0);
  xty_.assign(d, 0.0);
  weights_.assign(d, 0.0);
}

void GainPredictor::add(const std::vector<double>& x, double gain) {
  const std::size_t d = xty_.size();
  if (x.size() != d) throw std::invalid_argument("GainPredictor::add: " + std::to_string(x.size()) +
                                                 " features, expected " + std::to_string(d));
  if (!std::isfinite(gain)) return;
  for (std::size_t i = 0; i < d; ++i) {
    xty_[i] += x[i] * gain;
    for (std::size_t j = 0; j < d; ++j) xtx_[i * d + j] += x[i] * x[j];
  }
  ++examples_;
}

void GainPredictor::fit() {
  const std::size_t d = xty_.size();
  std::vector<double> a = xtx_;
  for (std::size_t i = 1; i < d; ++i) a[i * d + i] += ridge_;  // the bias (feature 0) is not penalised
  a[0] += 1e-9;                                                   // keeps an empty system positive definite
  // Cholesky: a = L Lᵀ, in place in the lower triangle.
  for (std::size_t j = 0; j < d; ++j) {
    double diag = a[j * d + j];
    for (std::size_t k = 0; k < j; ++k) diag -= a[j * d + k] * a[j * d + k];
    if (!(diag > 0.0)) throw std::runtime_error("GainPredictor::fit: the normal equations are not positive definite");
    const double l = std::sqrt(diag);
    a[j * d + j] = l;
    for (std::size_t i = j + 1; i < d; ++i) {
      double v = a[i * d + j];
      for (std::size_t k = 0; k < j; ++k) v -= a[i * d + k] * a[j * d + k];
      a[i * d + j] = v / l;
    }
  }
  std::vector<double> y = xty_;
  for (std::size_t i = 0; i < d; ++i) {  // L z = Xᵀy
    for (std::size_t k = 0; k < i; ++k) y[i] -= a[i * d + k] * y[k];
    y[i] /= a[i * d + i];
  }
  for (std::size_t i = d; i-- > 0;) {  // Lᵀ w = z
    for (std::size_t k = i + 1; k < d; ++k) y[i] -= a[k * d + i] * y[k];
    y[i] /= a[i * d + i];
  }
  weights_ = std::move(y);
  fitted_ = true;
}

double GainPredictor::predict(const std::vector<double>& x) const {
  if (x.size() != weights_.size()) throw std::invalid_argument("GainPredictor::predict: wrong feature count");
  double s = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) s += weights_[i] * x[i];
  return s;
}

namespace {
std::vector<double> average_ranks(const std::vector<double>& v) {
  std::vector<std::size_t> order(v.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j + 1 < order.size() && v[order[j + 1]] == v[order[i]]) ++j;
    const double rank = 0.5 * static_cast<double>(i + j);
    for (std::size_t k = i; k <= j; ++k) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}
}  // namespace

double rank_correlation(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size() || a.size() < 3) return std::numeric_limits<double>::quiet_NaN();
  const std::vector<double> ra = average_ranks(a), rb = average_ranks(b);
  const double n = static_cast<double>(a.size());
  const double mean = (n - 1.0) / 2.0;
  double sab = 0.0, saa = 0.0, sbb = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (ra[i] - mean) * (rb[i] - mean);
    saa += (ra[i] - mean) * (ra[i] - mean);
    sbb += (rb[i] - mean) * (rb[i] - mean);
  }
  if (saa == 0.0 || sbb == 0.0) return std::numeric_limits<double>::quiet_NaN();
  return sab / std::sqrt(saa * sbb);
}

}  // namespace rsi::scheduler
