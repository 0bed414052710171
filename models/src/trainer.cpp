// Training loop (distillation and fine-tuning phases, data-parallel over a trainer group) and
// evaluation.
#include "rsi/models/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numbers>
#include <numeric>
#include <span>

#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"

namespace rsi::models {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Seeded permutation of 0..n-1 for one epoch (Fisher-Yates on counter-based draws). `salt`
// separates the phases.
void shuffle_indices(std::vector<std::int64_t>& order, std::uint64_t seed, std::uint64_t model_id,
                     std::uint32_t salt) {
  std::iota(order.begin(), order.end(), 0);
  const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Shuffle, model_id), salt);
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

void allreduce_buckets(collective::Communicator& group, float* data, std::int64_t n, std::int64_t bucket) {
  for (std::int64_t at = 0; at < n; at += bucket)
    group.allreduce(std::span<float>(data + at, static_cast<std::size_t>(std::min(bucket, n - at))),
                    collective::ReduceOp::Sum);
}

// One phase: `epochs` passes over labeled [0, L) followed by unlabeled [L, L+U) example ids.
struct Phase {
  EpochReport::Phase kind;
  int epochs;
  bool distill;
  std::int64_t labeled, unlabeled;
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

Evaluation evaluate(Network& net, const Dataset& data, int batch_size, collective::Communicator* group) {
  const int classes = net.input().classes;
  const int rank = group ? group->rank() : 0, ranks = group ? group->size() : 1;
  // counts: [correct per class][total per class][loss sum]
  std::vector<double> counts(2 * static_cast<std::size_t>(classes) + 1, 0.0);
  const std::int64_t lo = data.size() * rank / ranks, hi = data.size() * (rank + 1) / ranks;
  const Network::Mode mode{};
  for (std::int64_t start = lo; start < hi; start += batch_size) {
    const int n = static_cast<int>(std::min<std::int64_t>(batch_size, hi - start));
    const kernels::Tensor& logits = net.forward(data.image(start), n, mode);
    counts.back() += static_cast<double>(kernels::softmax_cross_entropy(logits.data(), data.labels.data() + start, n,
                                                                         classes, nullptr)) * n;
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + static_cast<std::int64_t>(i) * classes;
      const int predicted = static_cast<int>(std::max_element(row, row + classes) - row);
      const int label = data.labels[start + i];
      counts[classes + label] += 1.0;
      if (predicted == label) counts[label] += 1.0;
    }
  }
  if (group && ranks > 1) group->allreduce(std::span<double>(counts), collective::ReduceOp::Sum);
  Evaluation e;
  e.count = data.size();
  double hits = 0.0;
  e.per_class.resize(classes);
  for (int c = 0; c < classes; ++c) {
    hits += counts[c];
    e.per_class[c] = counts[classes + c] > 0 ? counts[c] / counts[classes + c] : 0.0;
  }
  e.accuracy = e.count ? hits / static_cast<double>(e.count) : 0.0;
  e.mean_loss = e.count ? counts.back() / static_cast<double>(e.count) : 0.0;
  return e;
}

TrainResult train(Network& net, const Dataset& data, const TrainOptions& options) {
  const Recipe& recipe = net.genome().recipe;
  const int classes = net.input().classes;
  const int pixels = data.pixels();
  collective::Communicator* group = options.group && options.group->size() > 1 ? options.group : nullptr;
  const int rank = group ? group->rank() : 0, ranks = group ? group->size() : 1;
  const int batch = std::max(1, recipe.batch_size);
  const bool augment = recipe.augmentation.shift > 0 || recipe.augmentation.flip;

  std::vector<Phase> phases;
  const bool distill = static_cast<bool>(options.teacher) && recipe.distill_epochs > 0;
  const std::int64_t unlabeled = options.unlabeled ? options.unlabeled->size() : 0;
  if (distill) phases.push_back({EpochReport::Phase::Distill, recipe.distill_epochs, true, data.size(), unlabeled});
  phases.push_back({EpochReport::Phase::FineTune, options.epochs >= 0 ? options.epochs : recipe.epochs, false,
                    data.size(), 0});
  std::int64_t total_steps = 0;
  for (const Phase& p : phases) total_steps += p.epochs * ((p.labeled + p.unlabeled + batch - 1) / batch);
  if (options.max_steps >= 0) total_steps = std::min(total_steps, options.max_steps);

  Optimizer optimizer(net, recipe);
  const std::int64_t local_capacity = (batch + ranks - 1) / ranks;
  std::vector<float> inputs(static_cast<std::size_t>(local_capacity) * pixels);
  std::vector<std::int32_t> labels(local_capacity);
  std::vector<std::int64_t> rows(local_capacity);
  kernels::Tensor dlogits({local_capacity * classes});
  kernels::Tensor teacher_logits({distill ? local_capacity * classes : 0});

  TrainResult result;
  std::int64_t step = 0;
  std::uint32_t epoch_counter = 0;
  for (const Phase& phase : phases) {
    const std::int64_t examples = phase.labeled + phase.unlabeled;
    if (examples == 0) continue;
    const std::int64_t steps_per_epoch = (examples + batch - 1) / batch;
    std::vector<std::int64_t> order(static_cast<std::size_t>(examples));
    for (int epoch = 0; epoch < phase.epochs && step < total_steps && !result.diverged; ++epoch, ++epoch_counter) {
      shuffle_indices(order, options.seed, options.model_id, epoch_counter);
      const auto epoch_start = Clock::now();
      EpochReport report;
      report.phase = phase.kind;
      report.epoch = epoch + 1;
      report.epochs = phase.epochs;
      double loss_sum = 0.0;
      for (std::int64_t b = 0; b < steps_per_epoch && step < total_steps; ++b, ++step) {
        const std::int64_t start = b * batch;
        const int global_n = static_cast<int>(std::min<std::int64_t>(batch, examples - start));
        // Labeled rows first in the global batch, so every draw keyed by the global row (dropout,
        // augmentation) is the same whatever the shard layout.
        if (phase.unlabeled > 0)
          std::stable_partition(order.begin() + start, order.begin() + start + global_n,
                                [&](std::int64_t id) { return id < phase.labeled; });
        const std::int64_t* global = order.data() + start;
        int labeled_in_batch = 0;
        for (int i = 0; i < global_n; ++i) labeled_in_batch += global[i] < phase.labeled;
        // This rank's rows of the global batch, labeled ones first (the CE call takes a prefix).
        const int lo = static_cast<int>(static_cast<std::int64_t>(global_n) * rank / ranks);
        const int hi = static_cast<int>(static_cast<std::int64_t>(global_n) * (rank + 1) / ranks);
        int n = 0, n_labeled = 0;
        for (int i = lo; i < hi; ++i)
          if (global[i] < phase.labeled) rows[n++] = i;
        n_labeled = n;
        for (int i = lo; i < hi; ++i)
          if (global[i] >= phase.labeled) rows[n++] = i;
        const kernels::CounterRng augment_rng(options.seed, kernels::rng_stream(kernels::RngUse::Augment, options.model_id),
                                              static_cast<std::uint32_t>(step));
        for (int r = 0; r < n; ++r) {
          const std::int64_t id = global[rows[r]];
          const bool is_labeled = id < phase.labeled;
          const Dataset& source = is_labeled ? data : *options.unlabeled;
          const std::int64_t index = is_labeled ? id : id - phase.labeled;
          float* out = inputs.data() + static_cast<std::int64_t>(r) * pixels;
          if (augment)
            augment_batch(source, &index, 1, recipe.augmentation, augment_rng, out, static_cast<std::uint64_t>(rows[r]));
          else
            std::copy_n(source.image(index), pixels, out);
          labels[r] = is_labeled ? source.labels[index] : -1;
        }
        if (phase.distill && n > 0) options.teacher(inputs.data(), n, teacher_logits.data());

        const Network::Mode mode{true, options.seed, options.model_id, static_cast<std::uint32_t>(step), lo};
        std::fill_n(dlogits.data(), static_cast<std::int64_t>(n) * classes, 0.0f);
        double loss = 0.0;
        if (n > 0) {
          const kernels::Tensor& logits = net.forward(inputs.data(), n, mode);
          const float mix = phase.distill ? recipe.distill_mix : 0.0f;
          // Global objective: (1-mix)·mean CE over the batch's labeled rows + mix·mean KD over all rows.
          if (n_labeled > 0 && mix < 1.0f) {
            const float scale = (1.0f - mix) * static_cast<float>(n_labeled) / static_cast<float>(labeled_in_batch);
            loss += scale * kernels::softmax_cross_entropy(logits.data(), labels.data(), n_labeled, classes,
                                                           dlogits.data(), scale);
          }
          if (phase.distill && mix > 0.0f) {
            const float scale = mix * static_cast<float>(n) / static_cast<float>(global_n);
            loss += scale * kernels::kd_loss(logits.data(), teacher_logits.data(), n, classes,
                                             recipe.distill_temperature, dlogits.data(), scale);
          }
          net.backward(dlogits.data());
        } else {
          net.gradients().zero();
        }
        if (group) {
          allreduce_buckets(*group, net.gradients().data(), net.parameter_count(), options.bucket_floats);
          group->allreduce(std::span<double>(&loss, 1), collective::ReduceOp::Sum);
        }
        if (!std::isfinite(loss)) {
          result.diverged = true;
          result.final_loss = loss;
          break;
        }
        optimizer.step(scheduled_learning_rate(recipe, step, total_steps), step + 1);
        loss_sum += loss;
        ++report.steps;
        report.samples += global_n;
        if (options.on_step && options.progress_every > 0 && (b + 1) % options.progress_every == 0)
          options.on_step(b + 1, steps_per_epoch);
      }
      if (group && net.state().numel() > 0)
        group->allreduce(net.state().span(), collective::ReduceOp::Average);
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
        report.validation = evaluate(net, *options.validation, 256, group);
      }
      if (options.on_epoch) options.on_epoch(report);
      result.epochs.push_back(std::move(report));
    }
  }
  return result;
}

}  // namespace rsi::models
