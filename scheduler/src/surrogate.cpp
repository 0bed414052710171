// The surrogate capability landscape (see surrogate.h).
#include "rsi/scheduler/surrogate.h"

#include <algorithm>
#include <cmath>

#include "rsi/kernels/rng.h"

namespace rsi::scheduler {

SurrogateOutcome surrogate_evaluate(const models::Genome& genome, std::uint64_t seed, std::uint64_t model_id,
                                    double noise) {
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
  val += noise * rng.normal(0);
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
