// Training loop and evaluation.
#include "rsi/models/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>
#include <numeric>

#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"

namespace rsi::models {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Seeded permutation of 0..n-1 for one epoch (Fisher-Yates on counter-based draws).
void shuffle_indices(std::vector<std::int64_t>& order, std::uint64_t seed, std::uint64_t model_id, int epoch) {
  std::iota(order.begin(), order.end(), 0);
  const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Shuffle, model_id),
                                static_cast<std::uint32_t>(epoch));
  for (std::size_t i = order.size(); i-- > 1;) {
    const std::size_t j = rng.below(i, static_cast<std::uint32_t>(i + 1));
    std::swap(order[i], order[j]);
  }
}

// Applies one optimizer step to every parameter segment (weight decay only where it applies).
class Optimizer {
 public:
  Optimizer(Network& net, const Recipe& recipe) : net_(net), recipe_(recipe) {
    const std::int64_t n = net.parameter_count();
    m_ = kernels::Tensor({n});
    if (recipe.optimizer != Recipe::Optimizer::Sgd) v_ = kernels::Tensor({n});
  }
  void step(double lr, std::int64_t t) {
    float* p = net_.parameters().data();
    const float* g = net_.gradients().data();
    for (const ParamSegment& s : net_.segments()) {
      const float wd = s.decay ? recipe_.weight_decay : 0.0f;
      if (recipe_.optimizer == Recipe::Optimizer::Sgd) {
        kernels::SgdConfig c{static_cast<float>(lr), recipe_.momentum, wd, false};
        kernels::sgd_step(p + s.offset, g + s.offset, m_.data() + s.offset, s.size, c);
      } else {
        kernels::AdamConfig c;
        c.lr = static_cast<float>(lr);
        c.weight_decay = wd;
        c.decoupled = recipe_.optimizer == Recipe::Optimizer::AdamW;
        kernels::adam_step(p + s.offset, g + s.offset, m_.data() + s.offset, v_.data() + s.offset, s.size, c, t);
      }
    }
  }

 private:
  Network& net_;
  const Recipe& recipe_;
  kernels::Tensor m_, v_;
};
}  // namespace

double scheduled_learning_rate(const Recipe& recipe, std::int64_t step, std::int64_t total_steps) {
  const double base = recipe.learning_rate;
  if (total_steps <= 0) return base;
  const double progress = std::clamp(static_cast<double>(step) / static_cast<double>(total_steps), 0.0, 1.0);
  switch (recipe.schedule) {
    case Recipe::Schedule::Constant: return base;
    case Recipe::Schedule::Cosine: return base * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    case Recipe::Schedule::Step: return base * (progress < 0.5 ? 1.0 : progress < 0.75 ? 0.1 : 0.01);
  }
  return base;
}

Evaluation evaluate(Network& net, const Dataset& data, int batch_size) {
  const int classes = net.input().classes;
  Evaluation e;
  e.count = data.size();
  std::vector<std::int64_t> correct(classes, 0), total(classes, 0);
  double loss_sum = 0.0;
  std::int64_t hits = 0;
  const Network::Mode mode{};
  for (std::int64_t start = 0; start < data.size(); start += batch_size) {
    const int n = static_cast<int>(std::min<std::int64_t>(batch_size, data.size() - start));
    const kernels::Tensor& logits = net.forward(data.image(start), n, mode);
    loss_sum += static_cast<double>(kernels::softmax_cross_entropy(logits.data(), data.labels.data() + start, n,
                                                                   classes, nullptr)) * n;
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + static_cast<std::int64_t>(i) * classes;
      const int predicted = static_cast<int>(std::max_element(row, row + classes) - row);
      const int label = data.labels[start + i];
      ++total[label];
      if (predicted == label) ++correct[label], ++hits;
    }
  }
  e.accuracy = e.count ? static_cast<double>(hits) / static_cast<double>(e.count) : 0.0;
  e.mean_loss = e.count ? loss_sum / static_cast<double>(e.count) : 0.0;
  e.per_class.resize(classes);
  for (int c = 0; c < classes; ++c) e.per_class[c] = total[c] ? static_cast<double>(correct[c]) / total[c] : 0.0;
  return e;
}

TrainResult train(Network& net, const Dataset& data, const TrainOptions& options) {
  const Recipe& recipe = net.genome().recipe;
  const int classes = net.input().classes;
  const int epochs = options.epochs >= 0 ? options.epochs : recipe.epochs;
  const int batch = std::max(1, std::min<int>(recipe.batch_size, static_cast<int>(std::max<std::int64_t>(data.size(), 1))));
  const std::int64_t steps_per_epoch = (data.size() + batch - 1) / batch;
  std::int64_t total_steps = steps_per_epoch * epochs;
  if (options.max_steps >= 0) total_steps = std::min(total_steps, options.max_steps);
  const bool augment = recipe.augmentation.shift > 0 || recipe.augmentation.flip;
  const bool distill = static_cast<bool>(options.teacher) && recipe.distill_mix > 0.0f;

  Optimizer optimizer(net, recipe);
  std::vector<std::int64_t> order(static_cast<std::size_t>(data.size()));
  std::vector<float> inputs(static_cast<std::size_t>(batch) * data.pixels());
  std::vector<std::int32_t> labels(batch);
  kernels::Tensor dlogits({static_cast<std::int64_t>(batch) * classes});
  kernels::Tensor teacher_logits(distill ? kernels::Shape{static_cast<std::int64_t>(batch) * classes} : kernels::Shape{0});

  TrainResult result;
  std::int64_t step = 0;
  for (int epoch = 0; epoch < epochs && step < total_steps && !result.diverged; ++epoch) {
    shuffle_indices(order, options.seed, options.model_id, epoch);
    const auto epoch_start = Clock::now();
    EpochReport report;
    report.epoch = epoch + 1;
    report.epochs = epochs;
    double loss_sum = 0.0;
    for (std::int64_t b = 0; b < steps_per_epoch && step < total_steps; ++b, ++step) {
      const std::int64_t start = b * batch;
      const int n = static_cast<int>(std::min<std::int64_t>(batch, data.size() - start));
      const std::int64_t* idx = order.data() + start;
      if (augment) {
        const kernels::CounterRng rng(options.seed, kernels::rng_stream(kernels::RngUse::Augment, options.model_id),
                                      static_cast<std::uint32_t>(step));
        augment_batch(data, idx, n, recipe.augmentation, rng, inputs.data());
      } else {
        for (int i = 0; i < n; ++i) std::copy_n(data.image(idx[i]), data.pixels(), inputs.data() + static_cast<std::int64_t>(i) * data.pixels());
      }
      for (int i = 0; i < n; ++i) labels[i] = data.labels[idx[i]];
      if (distill) options.teacher(inputs.data(), n, teacher_logits.data());

      const Network::Mode mode{true, options.seed, options.model_id, static_cast<std::uint32_t>(step)};
      const kernels::Tensor& logits = net.forward(inputs.data(), n, mode);
      std::fill_n(dlogits.data(), static_cast<std::int64_t>(n) * classes, 0.0f);
      const float mix = distill ? recipe.distill_mix : 0.0f;
      float loss = (1.0f - mix) * kernels::softmax_cross_entropy(logits.data(), labels.data(), n, classes,
                                                                 dlogits.data(), 1.0f - mix);
      if (distill)
        loss += mix * kernels::kd_loss(logits.data(), teacher_logits.data(), n, classes, recipe.distill_temperature,
                                       dlogits.data(), mix);
      if (!std::isfinite(loss)) {
        result.diverged = true;
        result.final_loss = loss;
        break;
      }
      net.backward(dlogits.data());
      optimizer.step(scheduled_learning_rate(recipe, step, total_steps), step + 1);
      loss_sum += loss;
      ++report.steps;
      report.samples += n;
      if (options.on_step && options.progress_every > 0 && (b + 1) % options.progress_every == 0)
        options.on_step(b + 1, steps_per_epoch);
    }
    report.seconds = seconds_since(epoch_start);
    report.mean_loss = report.steps ? loss_sum / static_cast<double>(report.steps) : 0.0;
    report.samples_per_second = report.seconds > 0 ? static_cast<double>(report.samples) / report.seconds : 0.0;
    report.learning_rate = scheduled_learning_rate(recipe, step, total_steps);
    result.steps += report.steps;
    result.samples += report.samples;
    result.seconds += report.seconds;
    if (!result.diverged) result.final_loss = report.mean_loss;
    if (options.validation) {
      report.has_validation = true;
      report.validation = evaluate(net, *options.validation);
    }
    if (options.on_epoch) options.on_epoch(report);
    result.epochs.push_back(std::move(report));
  }
  return result;
}

}  // namespace rsi::models
