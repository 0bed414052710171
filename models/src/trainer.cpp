// Training loop (distillation and fine-tuning phases, data-parallel over a trainer group) and
// evaluation.
#include "rsi/models/trainer.h"
#include "rsi/kernels/report.h"

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
// Neighbouring segments with the same weight decay are updated by one call (one launch on the GPU):
// the update is element-wise, so the bits are those of a per-segment loop, on either device.
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
  // Starts from a state an earlier call returned: the moments, and the step count Adam's bias
  // correction goes on from.
  void load(const OptimizerState& state) {
    const auto n = static_cast<std::size_t>(net_.parameter_count());
    if (state.first.size() != n || state.second.size() != static_cast<std::size_t>(v_.numel()))
      throw std::invalid_argument("train: the optimizer state holds " + std::to_string(state.first.size()) + " + " +
                                  std::to_string(state.second.size()) + " moments; this network and optimizer take " +
                                  std::to_string(n) + " + " + std::to_string(v_.numel()));
    const kernels::Exec& e = net_.exec();
    kernels::copy_floats(m_.data(), m_.device(), state.first.data(), kernels::Device::CPU, m_.numel(), e.ctx);
    if (v_.numel() > 0)
      kernels::copy_floats(v_.data(), v_.device(), state.second.data(), kernels::Device::CPU, v_.numel(), e.ctx);
    steps_before_ = state.steps;
  }
  OptimizerState save(std::int64_t steps) const {
    OptimizerState state;
    state.first.resize(static_cast<std::size_t>(m_.numel()));
    state.second.resize(static_cast<std::size_t>(v_.numel()));
    const kernels::Exec& e = net_.exec();
    kernels::copy_floats(state.first.data(), kernels::Device::CPU, m_.data(), m_.device(), m_.numel(), e.ctx);
    if (v_.numel() > 0)
      kernels::copy_floats(state.second.data(), kernels::Device::CPU, v_.data(), v_.device(), v_.numel(), e.ctx);
    state.steps = steps_before_ + steps;
    return state;
  }

  // `t`: this call's step, from 1 (Adam's bias correction adds the loaded state's steps).
  void step(double lr, std::int64_t t) {
    t += steps_before_;
    float* p = net_.parameters().data();
    const float* g = net_.gradients().data();
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
  }

 private:
  Network& net_;
  const Recipe& recipe_;
  kernels::Tensor m_, v_;
  std::vector<ParamSegment> runs_;
  std::int64_t steps_before_ = 0;
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
      kernels::report_warning(std::string("could not move the network back to the ") +
                              kernels::device_name(original_) + " after training: " + e.what());
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

// The plan of a train() call: its phases and the step budget. Steps are counted on from the ones
// earlier calls took (`first_step`), so `total_steps` is where this call ends; the learning-rate
// schedule spans `schedule_steps`.
struct Plan {
  std::vector<Phase> phases;
  std::int64_t first_step = 0, total_steps = 0, schedule_steps = 0;
  bool distill = false;
};

Plan make_plan(const Recipe& recipe, const Dataset& data, const TrainOptions& options) {
  Plan plan;
  plan.distill = (options.teacher_network || static_cast<bool>(options.teacher)) && recipe.distill_epochs > 0;
  const std::int64_t unlabeled = options.unlabeled ? options.unlabeled->size() : 0;
  if (plan.distill)
    plan.phases.push_back({EpochReport::Phase::Distill, recipe.distill_epochs, true, data.size(), unlabeled});
  const int epochs = options.epochs >= 0 ? options.epochs : recipe.epochs;
  plan.phases.push_back({EpochReport::Phase::FineTune, epochs, false, data.size(), 0});
  std::int64_t steps = planned_steps(recipe, data.size(), unlabeled, plan.distill, epochs);
  if (options.max_steps >= 0) steps = std::min(steps, options.max_steps);
  plan.first_step = std::max<std::int64_t>(options.steps_before, 0);
  plan.total_steps = plan.first_step + steps;
  plan.schedule_steps = options.schedule_steps > 0 ? options.schedule_steps : plan.total_steps;
  return plan;
}

// The objective of one step, as scales on this rank's rows: (1-mix)·mean CE over the global batch's
// labeled rows + mix·mean KD over all its rows (mix = 0 outside distillation). The same on every
// device; the losses land in a step's two slots (CE, KD) and LossWindow books them.
struct Objective {
  bool ce = false, kd = false;
  float ce_scale = 0.0f, kd_scale = 0.0f;
  int global_n = 0;
};

// This rank's rows of one global batch: labeled rows first (the CE call takes a prefix), so every
// draw keyed by the global row (dropout, augmentation) is the same whatever the shard layout.
struct Shard {
  const std::int64_t* global = nullptr;  // the global batch's example ids
  int global_n = 0, labeled_in_batch = 0;
  int lo = 0, hi = 0;                    // this rank's range of the global batch
  int n = 0, n_labeled = 0;              // its rows, the labeled ones
};

Objective step_objective(const Recipe& recipe, bool distill, const Shard& s) {
  Objective o;
  o.global_n = s.global_n;
  const float mix = distill ? recipe.distill_mix : 0.0f;
  if (s.n > 0 && s.n_labeled > 0 && mix < 1.0f) {
    o.ce = true;
    o.ce_scale = (1.0f - mix) * static_cast<float>(s.n_labeled) / static_cast<float>(s.labeled_in_batch);
  }
  if (s.n > 0 && distill && mix > 0.0f) {
    o.kd = true;
    o.kd_scale = mix * static_cast<float>(s.n) / static_cast<float>(s.global_n);
  }
  return o;
}

// Step losses are left where the step computed them (two slots per step, on the device) and read
// back every `size` steps, so a GPU queues steps ahead instead of waiting on each; a CPU run reads
// each step's (size 1). Summed over the group, booked into the epoch's report; the first non-finite
// loss ends training there.
class LossWindow {
 public:
  LossWindow(int size, kernels::Device device, collective::Communicator* group)
      : size_(size), device_(device), group_(group), slots_({2 * static_cast<std::int64_t>(size)}, device),
        host_(2 * static_cast<std::size_t>(size)) {}
  float* next_slot() { return slots_.data() + 2 * static_cast<std::int64_t>(pending_.size()); }
  // Books a step queued into next_slot(); true when the window is full.
  bool add(const Objective& o) {
    pending_.push_back(o);
    return static_cast<int>(pending_.size()) == size_;
  }
  void flush(EpochReport& report, double& loss_sum, TrainResult& result) {
    if (pending_.empty()) return;
    const std::int64_t k = static_cast<std::int64_t>(pending_.size());
    kernels::copy_floats(host_.data(), kernels::Device::CPU, slots_.data(), device_, 2 * k);
    std::vector<double> losses(pending_.size(), 0.0);
    for (std::size_t j = 0; j < pending_.size(); ++j) {
      if (pending_[j].ce) losses[j] += pending_[j].ce_scale * host_[2 * j];
      if (pending_[j].kd) losses[j] += pending_[j].kd_scale * host_[2 * j + 1];
    }
    if (group_) group_->allreduce(std::span<double>(losses), collective::ReduceOp::Sum);
    for (std::size_t j = 0; j < pending_.size(); ++j) {
      if (!std::isfinite(losses[j])) {
        result.diverged = true;
        result.final_loss = losses[j];
        break;
      }
      loss_sum += losses[j];
      ++report.steps;
      report.samples += pending_[j].global_n;
    }
    pending_.clear();
  }

 private:
  int size_;
  kernels::Device device_;
  collective::Communicator* group_;
  kernels::Tensor slots_;
  std::vector<float> host_;
  std::vector<Objective> pending_;
};

// The training loop of train(), one job per method: batches (staged on the host, or gathered on
// the device from the examples uploaded once: "resident"), the step (optionally replayed from a
// CUDA graph), the loss window, the epoch's bookkeeping. One path for every device: on the CPU the
// "device" buffers are host memory and the kernels are the CPU's.
class Trainer {
 public:
  Trainer(Network& net, const Dataset& data, const TrainOptions& options)
      : net_(net), data_(data), o_(options), recipe_(net.genome().recipe), classes_(net.input().classes),
        pixels_(data.pixels()), group_(options.group && options.group->size() > 1 ? options.group : nullptr),
        rank_(group_ ? group_->rank() : 0), ranks_(group_ ? group_->size() : 1),
        batch_(std::max(1, recipe_.batch_size)),
        augment_(recipe_.augmentation.shift > 0 || recipe_.augmentation.flip),
        plan_(make_plan(recipe_, data, options)), teacher_net_(options.teacher_network),
        placement_(net, options.device) {
    if (plan_.distill && teacher_net_) teacher_placement_.emplace(*teacher_net_, options.device);
    device_ = net.device();
    exec_ = &net.exec();
    const bool cuda = device_ == kernels::Device::CUDA;
    resident_batches_ = o_.batches == TrainOptions::Batches::Resident || (o_.batches == TrainOptions::Batches::Auto && cuda);
    const int window = o_.loss_check_every > 0 ? o_.loss_check_every : cuda ? 32 : 1;
    window_.emplace(window, device_, group_);
    optimizer_.emplace(net, recipe_);
    if (o_.start_optimizer) optimizer_->load(*o_.start_optimizer);
    if (recipe_.weight_average > 0.0f) {
      average_params_ = kernels::Tensor({net.parameter_count()}, device_);
      average_state_ = kernels::Tensor({net.state().numel()}, device_);
    }
    if (group_) reducer_ = std::make_unique<GradientReducer>(*group_, net, o_.bucket_floats);
    ready_ = reducer_ ? reducer_->hook() : Network::GradientsReady{};
    capacity_ = (batch_ + ranks_ - 1) / ranks_;
    rows_.resize(static_cast<std::size_t>(capacity_));
    host_teacher_ = plan_.distill && !teacher_net_;
    x_ = kernels::Tensor({capacity_ * pixels_}, device_);
    labels_ = kernels::Tensor({capacity_}, device_);
    soft_ = kernels::Tensor({host_teacher_ ? capacity_ * classes_ : 0}, device_);
    dlogits_ = kernels::Tensor({capacity_ * classes_}, device_);
    if (cuda) {  // host staging buffers, uploaded each step; on the CPU the batch is staged in place
      staged_x_.resize(static_cast<std::size_t>(capacity_ * pixels_));
      staged_labels_.resize(static_cast<std::size_t>(capacity_));
      staged_soft_.resize(static_cast<std::size_t>(host_teacher_ ? capacity_ * classes_ : 0));
    }
    if (resident_batches_) upload_examples();
    if (o_.cuda_graphs && cuda && !group_ && net.step_invariant()) {
      graph_ = std::make_unique<kernels::cuda::StreamGraph>(*exec_->ctx);
      graph_ids_ = kernels::Tensor({capacity_}, device_);
      graph_loss_ = kernels::Tensor({2}, device_);
    }
  }

  TrainResult run() {
    std::uint32_t epoch_counter = o_.epochs_before;
    step_ = plan_.first_step;
    for (const Phase& phase : plan_.phases) {
      const std::int64_t examples = phase.labeled + phase.unlabeled;
      if (examples == 0) continue;
      // Gathered on the device when the soft labels (if any) come from a teacher network there.
      const bool resident = resident_batches_ && (!phase.distill || teacher_net_) && examples_.numel() > 0;
      std::vector<std::int64_t> order(static_cast<std::size_t>(examples));
      for (int epoch = 0; epoch < phase.epochs && step_ < plan_.total_steps && !result_.diverged;
           ++epoch, ++epoch_counter)
        run_epoch(phase, epoch, epoch_counter, order, resident);
    }
    if (reducer_) {
      result_.buckets_reduced = reducer_->issued();
      result_.buckets_overlapped = reducer_->issued_early();
    }
    if (averaged_ > 0 && !result_.diverged) use_average();
    if (o_.keep_optimizer) result_.optimizer = optimizer_->save(step_ - plan_.first_step);
    return std::move(result_);
  }

 private:
  static std::int32_t* as_int32(kernels::Tensor& t) { return reinterpret_cast<std::int32_t*>(t.data()); }

  // The examples go up once: the labeled set, then (when a teacher network labels it on the device)
  // the unlabeled pool, whose labels are -1 (never read: the CE call takes the labeled prefix of a
  // batch). Example id i is row i of this set in both phases.
  void upload_examples() {
    const std::int64_t pool = plan_.distill && teacher_net_ && o_.unlabeled ? o_.unlabeled->size() : 0;
    const std::int64_t rows_up = data_.size() + pool;
    if (rows_up == 0) return;
    examples_ = kernels::Tensor({rows_up * pixels_}, device_);
    kernels::copy_floats(examples_.data(), device_, data_.images.data(), kernels::Device::CPU, data_.size() * pixels_);
    if (pool > 0)
      kernels::copy_floats(examples_.data() + data_.size() * pixels_, device_, o_.unlabeled->images.data(),
                           kernels::Device::CPU, pool * pixels_);
    std::vector<std::int32_t> all_labels(static_cast<std::size_t>(rows_up), -1);
    std::copy(data_.labels.begin(), data_.labels.end(), all_labels.begin());
    example_labels_ = kernels::Tensor({rows_up}, device_);
    copy_int32(as_int32(example_labels_), device_, all_labels.data(), kernels::Device::CPU, rows_up);
  }

  void run_epoch(const Phase& phase, int epoch, std::uint32_t epoch_counter, std::vector<std::int64_t>& order,
                 bool resident) {
    const std::int64_t examples = phase.labeled + phase.unlabeled;
    const std::int64_t steps_per_epoch = (examples + batch_ - 1) / batch_;
    shuffle_indices(order, o_.seed, o_.model_id, epoch_counter);
    if (phase.unlabeled > 0)  // labeled rows first within each global batch (Shard)
      for (std::int64_t from = 0; from < examples; from += batch_)
        std::stable_partition(order.begin() + from, order.begin() + std::min(from + batch_, examples),
                              [&](std::int64_t id) { return id < phase.labeled; });
    const auto epoch_start = Clock::now();
    // Re-captured every epoch: evaluation in between may move the network's scratch buffers.
    if (graph_) graph_->reset(), graph_warm_ = false;
    if (resident) {
      const std::vector<std::int32_t> order32(order.begin(), order.end());
      order_ = kernels::Tensor({examples}, device_);
      copy_int32(as_int32(order_), device_, order32.data(), kernels::Device::CPU, examples);
    }
    EpochReport report;
    report.phase = phase.kind;
    report.epoch = epoch + 1;
    report.epochs = phase.epochs;
    double loss_sum = 0.0;
    for (std::int64_t b = 0; b < steps_per_epoch && step_ < plan_.total_steps; ++b, ++step_) {
      const Shard shard = make_shard(phase, order, b * batch_, examples);
      const std::int32_t* ids = resident ? as_int32(order_) + b * batch_ + shard.lo : nullptr;
      if (!resident) stage_on_host(phase, shard);
      const Objective objective = step_objective(recipe_, phase.distill, shard);
      run_step(phase, shard, objective, ids);
      const bool last = b + 1 == steps_per_epoch || step_ + 1 == plan_.total_steps;
      if (window_->add(objective) || last) {
        window_->flush(report, loss_sum, result_);
        if (result_.diverged) break;
      }
      optimizer_->step(scheduled_learning_rate(recipe_, step_, plan_.schedule_steps), step_ - plan_.first_step + 1);
      average_weights();
      if (o_.on_step && o_.progress_every > 0 && (b + 1) % o_.progress_every == 0) o_.on_step(b + 1, steps_per_epoch);
    }
    average_state();
    finish_epoch(report, loss_sum, epoch_start);
  }

  Shard make_shard(const Phase& phase, const std::vector<std::int64_t>& order, std::int64_t start,
                   std::int64_t examples) {
    Shard s;
    s.global_n = static_cast<int>(std::min<std::int64_t>(batch_, examples - start));
    s.global = order.data() + start;
    for (int i = 0; i < s.global_n; ++i) s.labeled_in_batch += s.global[i] < phase.labeled;
    s.lo = static_cast<int>(static_cast<std::int64_t>(s.global_n) * rank_ / ranks_);
    s.hi = static_cast<int>(static_cast<std::int64_t>(s.global_n) * (rank_ + 1) / ranks_);
    for (int i = s.lo; i < s.hi; ++i)
      if (s.global[i] < phase.labeled) rows_[static_cast<std::size_t>(s.n++)] = i;
    s.n_labeled = s.n;
    for (int i = s.lo; i < s.hi; ++i)
      if (s.global[i] >= phase.labeled) rows_[static_cast<std::size_t>(s.n++)] = i;
    return s;
  }

  // The host batch source: each row copied (or augmented) from the labeled set or the pool, a host
  // teacher's soft labels, then one upload (on the CPU the rows are written in place).
  void stage_on_host(const Phase& phase, const Shard& s) {
    const bool cuda = device_ == kernels::Device::CUDA;
    float* x = cuda ? staged_x_.data() : x_.data();
    std::int32_t* labels = cuda ? staged_labels_.data() : as_int32(labels_);
    float* soft = cuda ? staged_soft_.data() : soft_.data();
    const kernels::CounterRng augment_rng(o_.seed, kernels::rng_stream(kernels::RngUse::Augment, o_.model_id),
                                          static_cast<std::uint32_t>(step_));
    for (int r = 0; r < s.n; ++r) {
      const std::int64_t id = s.global[rows_[static_cast<std::size_t>(r)]];
      const bool is_labeled = id < phase.labeled;
      const Dataset& source = is_labeled ? data_ : *o_.unlabeled;
      const std::int64_t index = is_labeled ? id : id - phase.labeled;
      float* out = x + static_cast<std::int64_t>(r) * pixels_;
      if (augment_)
        augment_batch(source, &index, 1, recipe_.augmentation, augment_rng, out,
                      static_cast<std::uint64_t>(rows_[static_cast<std::size_t>(r)]));
      else
        std::copy_n(source.image(index), pixels_, out);
      labels[r] = is_labeled ? source.labels[index] : -1;
    }
    const bool host_teacher = phase.distill && s.n > 0 && !teacher_net_;
    if (host_teacher) o_.teacher(x, s.n, soft);
    if (!cuda) return;
    kernels::copy_floats(x_.data(), device_, x, kernels::Device::CPU, static_cast<std::int64_t>(s.n) * pixels_,
                         exec_->ctx);
    copy_int32(as_int32(labels_), device_, labels, kernels::Device::CPU, s.n, exec_->ctx);
    if (host_teacher)
      kernels::copy_floats(soft_.data(), device_, soft, kernels::Device::CPU, static_cast<std::int64_t>(s.n) * classes_,
                           exec_->ctx);
  }

  // Everything from the batch to the gradients, queued on the network's stream. For a full
  // resident batch its pointers and scalars are the same every time, so it can be captured once.
  void queue_step(const Phase& phase, const Shard& s, const Objective& o, const std::int32_t* ids, float* loss_slot) {
    const kernels::Exec& e = *exec_;
    if (ids && augment_) {
      // The draws of global row lo + r, as augment_batch on the host path.
      const kernels::CounterRng augment_rng(o_.seed, kernels::rng_stream(kernels::RngUse::Augment, o_.model_id),
                                            static_cast<std::uint32_t>(step_));
      kernels::augment_rows(e, examples_.data(), ids, s.n, data_.channels, data_.rows, data_.cols, recipe_.augmentation.shift,
                            recipe_.augmentation.flip, augment_rng, static_cast<std::uint64_t>(s.lo), x_.data());
      kernels::gather_rows(e, as_int32(example_labels_), ids, s.n, 1, as_int32(labels_));
    } else if (ids) {
      kernels::gather_rows(e, examples_.data(), ids, s.n, pixels_, x_.data());
      kernels::gather_rows(e, as_int32(example_labels_), ids, s.n, 1, as_int32(labels_));
    }
    // The batch's soft labels: what the host teacher wrote, or the teacher network's logits.
    const float* soft = o.kd && !teacher_net_ ? soft_.data() : nullptr;
    if (phase.distill && s.n > 0 && teacher_net_) soft = teacher_net_->forward(x_.data(), s.n, {}).data();
    kernels::fill(e, dlogits_.data(), static_cast<std::int64_t>(s.n) * classes_, 0.0f);
    const Network::Mode mode{true, o_.seed, o_.model_id, static_cast<std::uint32_t>(step_), s.lo};
    const kernels::Tensor& logits = net_.forward(x_.data(), s.n, mode);
    if (o.ce)
      kernels::softmax_cross_entropy(e, logits.data(), as_int32(labels_), s.n_labeled, classes_, dlogits_.data(),
                                     o.ce_scale, loss_slot);
    if (o.kd)
      kernels::kd_loss(e, logits.data(), soft, s.n, classes_, recipe_.distill_temperature, dlogits_.data(), o.kd_scale,
                       loss_slot + 1);
    net_.backward(dlogits_.data(), ready_);
  }

  // One step up to the gradients (all-reduced over the group). A full fine-tuning batch of the
  // resident path may replay the captured step: its ids go to the graph's fixed buffer first; the
  // epoch's first full batch runs as usual (scratch buffers reach their size), the second is
  // captured, the others replay it, and the losses go to this step's slot after.
  void run_step(const Phase& phase, const Shard& s, const Objective& o, const std::int32_t* ids) {
    float* slot = window_->next_slot();
    const bool use_graph = ids && !phase.distill && !augment_ && graph_ && !graph_failed_ && s.n == batch_;
    if (reducer_) reducer_->begin();
    if (use_graph) {
      copy_int32(as_int32(graph_ids_), device_, ids, device_, s.n, exec_->ctx);
      const std::int32_t* fixed = as_int32(graph_ids_);
      if (graph_warm_ && !graph_->captured() &&
          !graph_->capture([&] { queue_step(phase, s, o, fixed, graph_loss_.data()); }, &result_.cuda_graph_fallback))
        graph_failed_ = true;
      if (graph_->captured()) {
        graph_->launch();
        ++result_.cuda_graph_steps;
      } else {
        queue_step(phase, s, o, fixed, graph_loss_.data());
      }
      graph_warm_ = true;
      kernels::copy_floats(slot, device_, graph_loss_.data(), device_, 2, exec_->ctx);
    } else if (s.n > 0) {
      queue_step(phase, s, o, ids, slot);
    } else {
      net_.gradients().zero();
    }
    if (reducer_) reducer_->finish();
  }

  // Weight averaging (Recipe::weight_average, decay d): after the t-th optimizer step of this call,
  // average += (1 - d) / (1 - d^t) · (weights - average). That is the bias-corrected exponential
  // moving average of this call's iterates: the first step's weights enter with weight 1, so neither
  // zeros nor the starting weights are mixed in. Norm statistics are averaged alike.
  void average_weights() {
    if (recipe_.weight_average <= 0.0f) return;
    ++averaged_;
    const double d = recipe_.weight_average;
    if (averaged_ == 1) {  // weight 1: a copy (the buffers start uninitialised)
      kernels::copy(*exec_, average_params_.data(), net_.parameters().data(), net_.parameter_count());
      kernels::copy(*exec_, average_state_.data(), net_.state().data(), net_.state().numel());
      return;
    }
    const float weight = static_cast<float>((1.0 - d) / (1.0 - std::pow(d, static_cast<double>(averaged_))));
    kernels::lerp(*exec_, average_params_.data(), net_.parameters().data(), net_.parameter_count(), weight);
    kernels::lerp(*exec_, average_state_.data(), net_.state().data(), net_.state().numel(), weight);
  }

  // The average becomes the weights the call returns (what is evaluated, stored and inherited). The
  // group's ranks then agree on the norm statistics again (each averaged its own between epochs).
  void use_average() {
    kernels::copy(*exec_, net_.parameters().data(), average_params_.data(), net_.parameter_count());
    kernels::copy(*exec_, net_.state().data(), average_state_.data(), net_.state().numel());
    average_state();
  }

  // Norm statistics are averaged over the group at the end of each epoch.
  void average_state() {
    if (!group_ || net_.state().numel() == 0) return;
    const bool cuda = device_ == kernels::Device::CUDA;
    if (cuda && group_->supports_device_buffers())
      group_->allreduce_async(net_.state().data(), static_cast<std::size_t>(net_.state().numel()),
                              collective::ReduceOp::Average, exec_->ctx->stream());
    else if (cuda)
      allreduce_tensor(*group_, net_.state(), collective::ReduceOp::Average, net_.state().numel());
    else
      group_->allreduce(net_.state().span(), collective::ReduceOp::Average);
  }

  void finish_epoch(EpochReport& report, double loss_sum, Clock::time_point epoch_start) {
    report.seconds = seconds_since(epoch_start);
    report.mean_loss = report.steps ? loss_sum / static_cast<double>(report.steps) : 0.0;
    report.samples_per_second = report.seconds > 0 ? static_cast<double>(report.samples) / report.seconds : 0.0;
    report.learning_rate = scheduled_learning_rate(recipe_, step_, plan_.schedule_steps);
    result_.steps += report.steps;
    result_.samples += report.samples;
    result_.seconds += report.seconds;
    if (!result_.diverged) result_.final_loss = report.mean_loss;
    if (o_.validation) {
      report.has_validation = true;
      report.validation = evaluate(net_, *o_.validation, 256, group_);
    }
    if (o_.on_epoch) o_.on_epoch(report);
    result_.epochs.push_back(std::move(report));
  }

  Network& net_;
  const Dataset& data_;
  const TrainOptions& o_;
  const Recipe& recipe_;
  const int classes_, pixels_;
  collective::Communicator* const group_;
  const int rank_, ranks_, batch_;
  const bool augment_;
  const Plan plan_;
  Network* const teacher_net_;
  const DevicePlacement placement_;
  std::optional<DevicePlacement> teacher_placement_;
  kernels::Device device_ = kernels::Device::CPU;
  const kernels::Exec* exec_ = nullptr;
  bool resident_batches_ = false, host_teacher_ = false;
  std::optional<LossWindow> window_;
  std::optional<Optimizer> optimizer_;
  kernels::Tensor average_params_, average_state_;  // Recipe::weight_average's running average
  std::int64_t averaged_ = 0;                       // steps averaged so far in this call
  std::unique_ptr<GradientReducer> reducer_;
  Network::GradientsReady ready_;
  std::int64_t capacity_ = 0;            // this rank's rows of a batch, at most
  std::vector<std::int64_t> rows_;       // this rank's rows (indices into the global batch), labeled first
  kernels::Tensor x_, labels_, soft_, dlogits_;  // on the device (labels: int32 in float storage)
  std::vector<float> staged_x_, staged_soft_;    // host staging before the upload (GPU only)
  std::vector<std::int32_t> staged_labels_;
  kernels::Tensor examples_, example_labels_, order_;  // the resident path's examples and epoch order
  std::unique_ptr<kernels::cuda::StreamGraph> graph_;
  kernels::Tensor graph_ids_, graph_loss_;  // the captured step's fixed inputs: batch ids, 2 loss slots
  bool graph_failed_ = false, graph_warm_ = false;
  std::int64_t step_ = 0;
  TrainResult result_;
};

}  // namespace

bool cuda_graphs_from_environment() {
  const char* v = std::getenv("RSI_CUDA_GRAPHS");
  return v && std::string(v) == "1";
}

namespace {
double scheduled_after_warmup(const Recipe& recipe, double base, double progress);
}  // namespace

std::int64_t planned_steps(const Recipe& recipe, std::int64_t labeled, std::int64_t unlabeled, bool distill, int epochs) {
  const std::int64_t batch = std::max(1, recipe.batch_size);
  const std::int64_t distill_steps = distill && recipe.distill_epochs > 0
                                         ? recipe.distill_epochs * ((labeled + unlabeled + batch - 1) / batch)
                                         : 0;
  return distill_steps + static_cast<std::int64_t>(std::max(epochs, 0)) * ((labeled + batch - 1) / batch);
}

double scheduled_learning_rate(const Recipe& recipe, std::int64_t step, std::int64_t total_steps) {
  const double base = recipe.learning_rate;
  if (total_steps <= 0) return base;
  const double progress = std::clamp(static_cast<double>(step) / static_cast<double>(total_steps), 0.0, 1.0);
  // Linear warm-up from base/steps to base over the first `warmup` of the steps.
  const double warm_steps = static_cast<double>(recipe.warmup) * static_cast<double>(total_steps);
  const double ramp = recipe.warmup > 0.0f && static_cast<double>(step) < warm_steps
                          ? (static_cast<double>(step) + 1.0) / (warm_steps + 1.0)
                          : 1.0;
  return ramp * scheduled_after_warmup(recipe, base, progress);
}

namespace {
double scheduled_after_warmup(const Recipe& recipe, double base, double progress) {
  switch (recipe.schedule) {
    case Recipe::Schedule::Constant: return base;
    case Recipe::Schedule::Cosine: return base * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    case Recipe::Schedule::Step: return base * (progress < 0.5 ? 1.0 : progress < 0.75 ? 0.1 : 0.01);
  }
  return base;
}

// Images of another shape than the network's input would be read out of bounds.
void check_fits(const Network& net, const Dataset& data) {
  const InputSpec& in = net.input();
  if (data.channels != in.channels || data.rows != in.height || data.cols != in.width)
    throw std::invalid_argument("the data set's images (" + std::to_string(data.channels) + "x" +
                                std::to_string(data.rows) + "x" + std::to_string(data.cols) +
                                ") do not fit the network's input (" + std::to_string(in.channels) + "x" +
                                std::to_string(in.height) + "x" + std::to_string(in.width) + ")");
}
}  // namespace

Evaluation evaluate(Network& net, const Dataset& data, int batch_size, collective::Communicator* group) {
  check_fits(net, data);
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
  check_fits(net, data);
  if (options.unlabeled) check_fits(net, *options.unlabeled);
  return Trainer(net, data, options).run();
}

}  // namespace rsi::models
