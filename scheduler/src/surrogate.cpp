// The surrogate capability landscape (see surrogate.h).
#include "rsi/scheduler/surrogate.h"

#include <algorithm>
#include <cmath>

#include "rsi/kernels/rng.h"

namespace rsi::scheduler {

double surrogate_drift_payoff(const models::Genome& genome, std::uint64_t seed, const SurrogateDrift& drift) {
  if (drift.amplitude <= 0) return 0.0;
  using Kind = models::Block::Kind;
  double level[8] = {};
  for (const auto& b : genome.blocks) {
    level[0] += b.kind == Kind::Conv ? 0.25 : 0.0;
    level[1] += b.kind == Kind::Dense ? 0.25 : 0.0;
    level[2] += b.kind == Kind::Pool ? 0.5 : 0.0;
    level[3] += b.kind == Kind::Residual ? 0.25 : 0.0;
    level[4] += b.kind == Kind::BatchNorm ? 0.25 : 0.0;
  }
  const auto& r = genome.recipe;
  level[5] = r.augmentation.flip ? 1.0 : 0.0;
  level[6] = r.augmentation.shift / 2.0;
  level[7] = r.distill_epochs / 2.0;
  const kernels::CounterRng phases(seed, kernels::rng_stream(kernels::RngUse::Design, 0) ^ 0xd71f7u);
  const double cycle = 2.0 * 3.141592653589793 * drift.generation / std::max(drift.period, 1);
  double payoff = 0.0;
  for (int k = 0; k < 8; ++k)
    payoff += std::sin(cycle + 2.0 * 3.141592653589793 * phases.uniform(static_cast<std::uint64_t>(k))) *
              std::min(level[k], 1.0);
  return drift.amplitude * payoff / 8.0;
}

SurrogateOutcome surrogate_evaluate(const models::Genome& genome, std::uint64_t seed, std::uint64_t model_id,
                                    double noise, const SurrogateDrift& drift) {
  using Kind = models::Block::Kind;
  const models::GenomeStats stats = models::validate(genome);
  int convs = 0, residuals = 0, denses = 0, pools = 0, norms = 0;
  for (const auto& b : genome.blocks) {
    convs += b.kind == Kind::Conv;
    residuals += b.kind == Kind::Residual;
    denses += b.kind == Kind::Dense;
    pools += b.kind == Kind::Pool;
    norms += b.kind == Kind::BatchNorm;
  }
  const auto& r = genome.recipe;
  // Capacity: a linear model sits near 0.84, an MLP near 0.89, conv nets approach 0.94.
  const double log_params = std::log10(static_cast<double>(std::max<std::int64_t>(stats.parameters, 10)));
  double capacity = 0.80 + 0.012 * std::min(log_params, 7.0) + 0.02 * std::min(denses - 1, 2);
  capacity += 0.035 * (1.0 - std::exp(-0.8 * (convs + 0.5 * residuals))) + 0.005 * std::min(pools, 2) +
              0.004 * std::min(norms, 2);
  // Recipe: best near lr 1e-3, 3-6 epochs; distillation helps a little.
  const double lr_miss = std::log10(r.learning_rate) + 3.0;
  const double fit = 1.0 - std::exp(-static_cast<double>(r.epochs) / 2.0);
  double val = capacity * fit - 0.02 * lr_miss * lr_miss + 0.003 * std::min(r.distill_epochs, 2) +
               (r.augmentation.flip ? 0.002 : 0.0);
  const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Design, model_id) ^ 0x5u);
  val += noise * rng.normal(0) + surrogate_drift_payoff(genome, seed, drift);
  // Goodhart: the hidden test trails validation by more when many epochs meet many parameters.
  const double overfit = 0.004 * std::max(0, r.epochs - 4) * std::max(0.0, log_params - 5.0);
  const double test = val - 0.004 - overfit + 0.5 * noise * rng.normal(1);

  SurrogateOutcome out;
  out.diverged = r.learning_rate > 0.05;
  out.metrics.val_accuracy = std::clamp(val, 0.0, 1.0);
  out.metrics.test_accuracy = std::clamp(test, 0.0, 1.0);
  out.metrics.val_loss = 1.0 - out.metrics.val_accuracy;
  out.metrics.test_loss = 1.0 - out.metrics.test_accuracy;
  out.metrics.parameters = stats.parameters;
  out.metrics.flops = stats.flops;
  out.metrics.samples = static_cast<std::int64_t>(r.epochs) * r.batch_size * 100;
  out.metrics.test_per_class.assign(10, out.metrics.test_accuracy);
  out.metrics.val_per_class.assign(10, out.metrics.val_accuracy);
  return out;
}

}  // namespace rsi::scheduler
