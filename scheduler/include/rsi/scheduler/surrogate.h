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
SurrogateOutcome surrogate_evaluate(const models::Genome& genome, std::uint64_t seed, std::uint64_t model_id,
                                    double noise);

}  // namespace rsi::scheduler
