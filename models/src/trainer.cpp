// Training loop (distillation and fine-tuning phases, data-parallel over a trainer group) and
// evaluation.
#include "rsi/models/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numbers>
#include <numeric>
#include <optional>
#include <span>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/dispatch.h"
#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"
#include "rsi/models/gradient_reducer.h"

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
// On the GPU, neighbouring segments with the same weight decay are updated by one launch (the
// update is element-wise, so the result is the same); the CPU keeps its per-segment loop.
class Optimizer {
 public:
  Optimizer(Network& net, const Recipe& recipe) : net_(net), recipe_(recipe) {
    const std::int64_t n = net.parameter_count();
    m_ = kernels::Tensor({n}, net.device());
    if (recipe.optimizer != Recipe::Optimizer::Sgd) v_ = kernels::Tensor({n}, net.device());
    // Segments only differ in their weight decay: with none in the recipe, one run covers them all.
    auto decay_of = [&](const ParamSegment& s) { return s.decay ? recipe.weight_decay : 0.0f; };
    for (const ParamSegment& s : net.segments()) {
      if (!runs_.empty() && decay_of(runs_.back()) == decay_of(s) && runs_.back().offset + runs_.back().size == s.offset)
        runs_.back().size += s.size;
      else
        runs_.push_back(s);
    }
  }
  void step(double lr, std::int64_t t) {
    float* p = net_.parameters().data();
    const float* g = net_.gradients().data();
    if (net_.device() == kernels::Device::CUDA) {
      const kernels::Exec& e = net_.exec();
      for (const ParamSegment& s : runs_) {
        const float wd = s.decay ? recipe_.weight_decay : 0.0f;
        if (recipe_.optimizer == Recipe::Optimizer::Sgd) {
          kernels::SgdConfig c{static_cast<float>(lr), recipe_.momentum, wd, false};
          kernels::sgd_step(e, p + s.offset, g + s.offset, m_.data() + s.offset, s.size, c);
        } else {
          kernels::AdamConfig c;
          c.lr = static_cast<float>(lr);
          c.weight_decay = wd;
          c.decoupled = recipe_.optimizer == Recipe::Optimizer::AdamW;
          kernels::adam_step(e, p + s.offset, g + s.offset, m_.data() + s.offset, v_.data() + s.offset, s.size, c, t);
        }
      }
      return;
    }
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
  std::vector<ParamSegment> runs_;
};

// Moves a network to the training device for the scope of train() and back where it was after,
// also when training throws.
class DevicePlacement {
 public:
  DevicePlacement(Network& net, kernels::Device device) : net_(net), original_(net.device()) { net.to(device); }
  ~DevicePlacement() {
    try {
      net_.to(original_);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rsi: could not move the network back to the %s after training: %s\n",
                   kernels::device_name(original_), e.what());
    }
  }
  DevicePlacement(const DevicePlacement&) = delete;
  DevicePlacement& operator=(const DevicePlacement&) = delete;

 private:
  Network& net_;
  kernels::Device original_;
};

// Copies n int32 values between devices (labels and row ids share the float copy path: 4 bytes each).
void copy_int32(std::int32_t* dst, kernels::Device dst_device, const std::int32_t* src, kernels::Device src_device,
                std::int64_t n, kernels::cuda::Context* ctx = nullptr) {
  kernels::copy_floats(reinterpret_cast<float*>(dst), dst_device, reinterpret_cast<const float*>(src), src_device, n,
                       ctx);
}

// One phase: `epochs` passes over labeled [0, L) followed by unlabeled [L, L+U) example ids.
struct Phase {
  EpochReport::Phase kind;
  int epochs;
  bool distill;
  std::int64_t labeled, unlabeled;
};

}  // namespace

bool cuda_graphs_from_environment() {
  const char* v = std::getenv("RSI_CUDA_GRAPHS");
  return v && std::string(v) == "1";
}

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
  // A network on the GPU gets each batch uploaded and its logits read back; the counting below is
  // the same host code for both devices.
  const bool gpu = net.device() == kernels::Device::CUDA;
  kernels::Tensor x_device;
  std::vector<float> host_logits;
  if (gpu) x_device = kernels::Tensor({static_cast<std::int64_t>(batch_size) * data.pixels()}, net.device());
  for (std::int64_t start = lo; start < hi; start += batch_size) {
    const int n = static_cast<int>(std::min<std::int64_t>(batch_size, hi - start));
    const float* logits = nullptr;
    if (gpu) {
      kernels::copy_floats(x_device.data(), net.device(), data.image(start), kernels::Device::CPU,
                           static_cast<std::int64_t>(n) * data.pixels());
      const kernels::Tensor& out = net.forward(x_device.data(), n, mode);
      host_logits.resize(static_cast<std::size_t>(n) * classes);
      kernels::copy_floats(host_logits.data(), kernels::Device::CPU, out.data(), net.device(),
                           static_cast<std::int64_t>(n) * classes);
      logits = host_logits.data();
    } else {
      logits = net.forward(data.image(start), n, mode).data();
    }
    counts.back() += static_cast<double>(kernels::softmax_cross_entropy(logits, data.labels.data() + start, n,
                                                                         classes, nullptr)) * n;
    for (int i = 0; i < n; ++i) {
      const float* row = logits + static_cast<std::int64_t>(i) * classes;
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
  Network* const teacher_net = options.teacher_network;
  const bool distill = (teacher_net || static_cast<bool>(options.teacher)) && recipe.distill_epochs > 0;
  const std::int64_t unlabeled = options.unlabeled ? options.unlabeled->size() : 0;
  if (distill) phases.push_back({EpochReport::Phase::Distill, recipe.distill_epochs, true, data.size(), unlabeled});
  phases.push_back({EpochReport::Phase::FineTune, options.epochs >= 0 ? options.epochs : recipe.epochs, false,
                    data.size(), 0});
  std::int64_t total_steps = 0;
  for (const Phase& p : phases) total_steps += p.epochs * ((p.labeled + p.unlabeled + batch - 1) / batch);
  if (options.max_steps >= 0) total_steps = std::min(total_steps, options.max_steps);

  const DevicePlacement placement(net, options.device);
  std::optional<DevicePlacement> teacher_placement;
  if (distill && teacher_net) teacher_placement.emplace(*teacher_net, options.device);
  const bool gpu = net.device() == kernels::Device::CUDA || options.gpu_path_on_cpu;
  const kernels::Device device = net.device();
  const kernels::Exec& exec = net.exec();

  Optimizer optimizer(net, recipe);
  // Gradient all-reduce over the group, bucket by bucket as backward finishes them.
  std::unique_ptr<GradientReducer> reducer;
  if (group) reducer = std::make_unique<GradientReducer>(*group, net, options.bucket_floats);
  const Network::GradientsReady ready = reducer ? reducer->hook() : Network::GradientsReady{};
  const std::int64_t local_capacity = (batch + ranks - 1) / ranks;
  std::vector<float> inputs(static_cast<std::size_t>(local_capacity) * pixels);
  std::vector<std::int32_t> labels(local_capacity);
  std::vector<std::int64_t> rows(local_capacity);
  kernels::Tensor dlogits({local_capacity * classes}, device);
  kernels::Tensor teacher_logits({distill && !teacher_net ? local_capacity * classes : 0});

  // GPU state. Batches of a phase without augmentation or distillation are gathered on the device
  // from the data set uploaded once (the epoch's order goes up once per epoch); other batches are
  // prepared on the host as on the CPU and uploaded. Losses go to a device array read back every
  // loss_check_every steps, so the host queues steps ahead of the GPU instead of waiting on each.
  struct PendingStep {
    bool ce = false, kd = false;
    float ce_scale = 0.0f, kd_scale = 0.0f;
    int global_n = 0;
  };
  const int loss_window = gpu ? std::max(1, options.loss_check_every) : 1;
  kernels::Tensor x_device, teacher_device, data_device, order_device, losses_device;
  kernels::Tensor labels_device, data_labels_device;  // int32 in float storage
  std::vector<PendingStep> pending;
  std::vector<float> host_losses;
  if (gpu) {
    x_device = kernels::Tensor({local_capacity * pixels}, device);
    labels_device = kernels::Tensor({local_capacity}, device);
    teacher_device = kernels::Tensor({distill && !teacher_net ? local_capacity * classes : 0}, device);
    losses_device = kernels::Tensor({2 * static_cast<std::int64_t>(loss_window)}, device);
    host_losses.resize(2 * static_cast<std::size_t>(loss_window));
    // The examples go up once: the labeled set, then (when a teacher network labels it on the device)
    // the unlabeled pool, whose labels are -1 (never read: the CE call takes the labeled prefix of a
    // batch). Example id i is row i of this set in both phases; batches are gathered (and augmented)
    // from it on the device.
    const std::int64_t pool = distill && teacher_net ? unlabeled : 0;
    const std::int64_t rows_up = data.size() + pool;
    if (rows_up > 0) {
      data_device = kernels::Tensor({rows_up * pixels}, device);
      kernels::copy_floats(data_device.data(), device, data.images.data(), kernels::Device::CPU, data.size() * pixels);
      if (pool > 0)
        kernels::copy_floats(data_device.data() + data.size() * pixels, device, options.unlabeled->images.data(),
                             kernels::Device::CPU, pool * pixels);
      std::vector<std::int32_t> all_labels(static_cast<std::size_t>(rows_up), -1);
      std::copy(data.labels.begin(), data.labels.end(), all_labels.begin());
      data_labels_device = kernels::Tensor({rows_up}, device);
      copy_int32(reinterpret_cast<std::int32_t*>(data_labels_device.data()), device, all_labels.data(),
                 kernels::Device::CPU, rows_up);
    }
  }
  auto as_int32 = [](kernels::Tensor& t) { return reinterpret_cast<std::int32_t*>(t.data()); };

  // CUDA graph of the step (TrainOptions::cuda_graphs): full batches of the resident path on one
  // rank of a network whose step queues the same work every time (no dropout draws keyed by the
  // step). Re-captured every epoch: evaluation in between may move the network's scratch buffers.
  std::unique_ptr<kernels::cuda::StreamGraph> step_graph;
  kernels::Tensor graph_ids, graph_loss;  // the captured step's fixed inputs: batch ids, 2 loss slots
  bool graph_failed = false, graph_warm = false;
  if (options.cuda_graphs && device == kernels::Device::CUDA && !group && net.step_invariant()) {
    step_graph = std::make_unique<kernels::cuda::StreamGraph>(*exec.ctx);
    graph_ids = kernels::Tensor({local_capacity}, device);
    graph_loss = kernels::Tensor({2}, device);
  }

  TrainResult result;
  std::int64_t step = 0;
  std::uint32_t epoch_counter = 0;
  for (const Phase& phase : phases) {
    const std::int64_t examples = phase.labeled + phase.unlabeled;
    if (examples == 0) continue;
    const std::int64_t steps_per_epoch = (examples + batch - 1) / batch;
    // Batches gathered (and augmented) on the device from the uploaded examples when the soft labels
    // (if any) come from a teacher network on the device; others are prepared on the host and uploaded.
    const bool resident = gpu && (!phase.distill || teacher_net) && data_device.numel() > 0;
    std::vector<std::int64_t> order(static_cast<std::size_t>(examples));
    for (int epoch = 0; epoch < phase.epochs && step < total_steps && !result.diverged; ++epoch, ++epoch_counter) {
      shuffle_indices(order, options.seed, options.model_id, epoch_counter);
      // Labeled rows first within each global batch, so every draw keyed by the global row (dropout,
      // augmentation) is the same whatever the shard layout, and a shard's labeled rows are its prefix.
      if (phase.unlabeled > 0)
        for (std::int64_t from = 0; from < examples; from += batch)
          std::stable_partition(order.begin() + from, order.begin() + std::min(from + batch, examples),
                                [&](std::int64_t id) { return id < phase.labeled; });
      const auto epoch_start = Clock::now();
      if (step_graph) step_graph->reset(), graph_warm = false;
      if (resident) {
        const std::vector<std::int32_t> order32(order.begin(), order.end());
        order_device = kernels::Tensor({examples}, device);
        copy_int32(as_int32(order_device), device, order32.data(), kernels::Device::CPU, examples);
      }
      EpochReport report;
      report.phase = phase.kind;
      report.epoch = epoch + 1;
      report.epochs = phase.epochs;
      double loss_sum = 0.0;
      // Reads back the pending steps' losses (GPU), sums them over the group and books them; stops
      // at the first non-finite one.
      auto flush_losses = [&] {
        if (pending.empty()) return;
        const std::int64_t k = static_cast<std::int64_t>(pending.size());
        kernels::copy_floats(host_losses.data(), kernels::Device::CPU, losses_device.data(), device, 2 * k);
        std::vector<double> losses(pending.size(), 0.0);
        for (std::size_t j = 0; j < pending.size(); ++j) {
          if (pending[j].ce) losses[j] += pending[j].ce_scale * host_losses[2 * j];
          if (pending[j].kd) losses[j] += pending[j].kd_scale * host_losses[2 * j + 1];
        }
        if (group) group->allreduce(std::span<double>(losses), collective::ReduceOp::Sum);
        for (std::size_t j = 0; j < pending.size(); ++j) {
          if (!std::isfinite(losses[j])) {
            result.diverged = true;
            result.final_loss = losses[j];
            break;
          }
          loss_sum += losses[j];
          ++report.steps;
          report.samples += pending[j].global_n;
        }
        pending.clear();
      };
      for (std::int64_t b = 0; b < steps_per_epoch && step < total_steps; ++b, ++step) {
        const std::int64_t start = b * batch;
        const int global_n = static_cast<int>(std::min<std::int64_t>(batch, examples - start));
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
        // Resident batches are gathered on the device from this rank's ids, order[start + lo, start + hi)
        // (labeled ones first, as `rows`). A full fine-tuning one may replay the captured step: its ids
        // go to the graph's fixed buffer first.
        const std::int32_t* resident_ids = resident ? as_int32(order_device) + start + lo : nullptr;
        const bool use_graph = resident && !phase.distill && !augment && step_graph && !graph_failed && n == batch;
        if (use_graph) {
          copy_int32(as_int32(graph_ids), device, resident_ids, device, n, exec.ctx);
          resident_ids = as_int32(graph_ids);
        }
        if (!resident) {
          const kernels::CounterRng augment_rng(options.seed,
                                                kernels::rng_stream(kernels::RngUse::Augment, options.model_id),
                                                static_cast<std::uint32_t>(step));
          for (int r = 0; r < n; ++r) {
            const std::int64_t id = global[rows[r]];
            const bool is_labeled = id < phase.labeled;
            const Dataset& source = is_labeled ? data : *options.unlabeled;
            const std::int64_t index = is_labeled ? id : id - phase.labeled;
            float* out = inputs.data() + static_cast<std::int64_t>(r) * pixels;
            if (augment)
              augment_batch(source, &index, 1, recipe.augmentation, augment_rng, out,
                            static_cast<std::uint64_t>(rows[r]));
            else
              std::copy_n(source.image(index), pixels, out);
            labels[r] = is_labeled ? source.labels[index] : -1;
          }
          const bool host_teacher = phase.distill && n > 0 && !teacher_net;
          if (host_teacher) options.teacher(inputs.data(), n, teacher_logits.data());
          if (gpu) {
            kernels::copy_floats(x_device.data(), device, inputs.data(), kernels::Device::CPU,
                                 static_cast<std::int64_t>(n) * pixels, exec.ctx);
            copy_int32(as_int32(labels_device), device, labels.data(), kernels::Device::CPU, n, exec.ctx);
            if (host_teacher)
              kernels::copy_floats(teacher_device.data(), device, teacher_logits.data(), kernels::Device::CPU,
                                   static_cast<std::int64_t>(n) * classes, exec.ctx);
          }
        }

        const Network::Mode mode{true, options.seed, options.model_id, static_cast<std::uint32_t>(step), lo};
        // The batch's soft labels: what the host teacher wrote (uploaded above on the GPU), or the
        // teacher network's logits, computed once the batch is in place (in queue_step on the GPU).
        const float* soft_labels = nullptr;
        const bool network_teacher = phase.distill && n > 0 && teacher_net;
        if (phase.distill && n > 0 && !teacher_net) soft_labels = gpu ? teacher_device.data() : teacher_logits.data();
        if (network_teacher && !gpu) soft_labels = teacher_net->forward(inputs.data(), n, {}).data();
        if (gpu) {
          // The same objective as the CPU branch below, with the losses left on the device.
          PendingStep p;
          p.global_n = global_n;
          const float mix = phase.distill ? recipe.distill_mix : 0.0f;
          if (n > 0 && n_labeled > 0 && mix < 1.0f) {
            p.ce = true;
            p.ce_scale = (1.0f - mix) * static_cast<float>(n_labeled) / static_cast<float>(labeled_in_batch);
          }
          if (n > 0 && phase.distill && mix > 0.0f) {
            p.kd = true;
            p.kd_scale = mix * static_cast<float>(n) / static_cast<float>(global_n);
          }
          float* slot = losses_device.data() + 2 * static_cast<std::int64_t>(pending.size());
          // Everything from the batch to the gradients, queued on the network's stream. Its pointers
          // and scalars are the same for every full resident batch, so it can be captured once.
          auto queue_step = [&](float* loss_slot) {
            if (resident_ids && augment) {
              // The draws of global row lo + r, as augment_batch on the host path.
              const kernels::CounterRng augment_rng(
                  options.seed, kernels::rng_stream(kernels::RngUse::Augment, options.model_id),
                  static_cast<std::uint32_t>(step));
              kernels::augment_rows(exec, data_device.data(), resident_ids, n, data.rows, data.cols,
                                    recipe.augmentation.shift, recipe.augmentation.flip, augment_rng,
                                    static_cast<std::uint64_t>(lo), x_device.data());
              kernels::gather_rows(exec, as_int32(data_labels_device), resident_ids, n, 1, as_int32(labels_device));
            } else if (resident_ids) {
              kernels::gather_rows(exec, data_device.data(), resident_ids, n, pixels, x_device.data());
              kernels::gather_rows(exec, as_int32(data_labels_device), resident_ids, n, 1, as_int32(labels_device));
            }
            if (network_teacher) soft_labels = teacher_net->forward(x_device.data(), n, {}).data();
            kernels::fill(exec, dlogits.data(), static_cast<std::int64_t>(n) * classes, 0.0f);
            const kernels::Tensor& logits = net.forward(x_device.data(), n, mode);
            if (p.ce)
              kernels::softmax_cross_entropy(exec, logits.data(), as_int32(labels_device), n_labeled, classes,
                                             dlogits.data(), p.ce_scale, loss_slot);
            if (p.kd)
              kernels::kd_loss(exec, logits.data(), soft_labels, n, classes, recipe.distill_temperature,
                               dlogits.data(), p.kd_scale, loss_slot + 1);
            net.backward(dlogits.data(), ready);
          };
          if (reducer) reducer->begin();
          if (use_graph) {
            // The epoch's first full batch runs as usual (scratch buffers reach their size), the
            // second is captured, the others replay it; the losses go to this step's slot after.
            if (graph_warm && !step_graph->captured() &&
                !step_graph->capture([&] { queue_step(graph_loss.data()); }, &result.cuda_graph_fallback))
              graph_failed = true;
            if (step_graph->captured()) {
              step_graph->launch();
              ++result.cuda_graph_steps;
            } else {
              queue_step(graph_loss.data());
            }
            graph_warm = true;
            kernels::copy_floats(slot, device, graph_loss.data(), device, 2, exec.ctx);
          } else if (n > 0) {
            queue_step(slot);
          } else {
            net.gradients().zero();
          }
          if (reducer) reducer->finish();
          optimizer.step(scheduled_learning_rate(recipe, step, total_steps), step + 1);
          pending.push_back(p);
          if (static_cast<int>(pending.size()) == loss_window || b + 1 == steps_per_epoch || step + 1 == total_steps) {
            flush_losses();
            if (result.diverged) break;
          }
          if (options.on_step && options.progress_every > 0 && (b + 1) % options.progress_every == 0)
            options.on_step(b + 1, steps_per_epoch);
          continue;
        }
        std::fill_n(dlogits.data(), static_cast<std::int64_t>(n) * classes, 0.0f);
        if (reducer) reducer->begin();
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
            loss += scale * kernels::kd_loss(logits.data(), soft_labels, n, classes,
                                             recipe.distill_temperature, dlogits.data(), scale);
          }
          net.backward(dlogits.data(), ready);
        } else {
          net.gradients().zero();
        }
        if (group) {
          reducer->finish();
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
      flush_losses();
      if (group && net.state().numel() > 0) {
        if (gpu && group->supports_device_buffers())
          group->allreduce_async(net.state().data(), static_cast<std::size_t>(net.state().numel()),
                                 collective::ReduceOp::Average, exec.ctx->stream());
        else if (gpu)
          allreduce_tensor(*group, net.state(), collective::ReduceOp::Average, net.state().numel());
        else
          group->allreduce(net.state().span(), collective::ReduceOp::Average);
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
        report.validation = evaluate(net, *options.validation, 256, group);
      }
      if (options.on_epoch) options.on_epoch(report);
      result.epochs.push_back(std::move(report));
    }
  }
  if (reducer) {
    result.buckets_reduced = reducer->issued();
    result.buckets_overlapped = reducer->issued_early();
  }
  return result;
}

}  // namespace rsi::models
