// The surrogate task: the scheduler's own code path, but a child's "training" is an analytic
// capability landscape over its genome plus a configurable cost per evaluation. It runs thousands
// of models cheaply for scale tests and studies of the loop's dynamics.
#pragma once

#include <cstdint>

#include "rsi/models/genome.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

struct SurrogateOutcome {
  ModelMetrics metrics;
  bool diverged = false;  // learning rates far above the landscape's edge "diverge"
};

// Capability rises with log-parameters and convolutional depth (with diminishing returns), peaks at
// a learning rate near 1e-3 and with 3-6 epochs; the hidden-test score trails validation by a gap
// that grows with epochs per parameter (overfitting). Noise is keyed by (seed, model id), so the
// outcome is a pure function of its arguments.
//
// With `drift` (amplitude > 0; off by default, so existing surrogate lineages are unchanged) the
// landscape also pays for design choices that change over generations: each of eight genome
// features (convolutions, dense blocks, pools, residual blocks, batch norms, flips, shifts,
// distillation) adds amplitude x sin(2 pi generation / period + phase_k) x its level (in [0, 1]) / 8,
// phases drawn from the seed. Which operators pay then drifts, so a designer that learns which ones
// pay now (genes under selection, the predictor) can beat one that does not: the landscape for
// studies of the recursion (experiments/studies/).
struct SurrogateDrift {
  double amplitude = 0.0;
  int period = 10;      // generations per cycle of every feature's payoff
  int generation = 0;   // of the model being scored
};
SurrogateOutcome surrogate_evaluate(const models::Genome& genome, std::uint64_t seed, std::uint64_t model_id,
                                    double noise, const SurrogateDrift& drift = {});
// The drift term alone (0 when off), for tests and the landscape's README.
double surrogate_drift_payoff(const models::Genome& genome, std::uint64_t seed, const SurrogateDrift& drift);

}  // namespace rsi::scheduler
