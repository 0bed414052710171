// Task execution on a trainer group, and the task/result wire format.
#include "task.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <span>
#include <thread>
#include <type_traits>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/ops.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"
#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/surrogate.h"
#include "wire.h"

namespace rsi::scheduler {

namespace {

void put_morphism(wire::Writer& w, const models::Morphism& m) {
  w.put<std::uint64_t>(m.blocks.size());
  for (const auto& b : m.blocks) {
    w.put<std::int32_t>(static_cast<std::int32_t>(b.kind));
    w.put<std::int32_t>(b.parent_block);
  }
  w.put(m.unit_map);
  w.put<std::uint8_t>(m.function_preserving);
}

void put_optimizer(wire::Writer& w, const std::shared_ptr<const models::OptimizerState>& state) {
  w.put<std::uint8_t>(state != nullptr);
  if (!state) return;
  w.put(state->first);
  w.put(state->second);
  w.put(state->steps);
}

std::shared_ptr<const models::OptimizerState> get_optimizer(wire::Reader& r) {
  if (r.get<std::uint8_t>() == 0) return nullptr;
  auto state = std::make_shared<models::OptimizerState>();
  state->first = r.get_vector<float>();
  state->second = r.get_vector<float>();
  state->steps = r.get<std::int64_t>();
  return state;
}

models::Morphism get_morphism(wire::Reader& r) {
  models::Morphism m;
  m.blocks.resize(r.get<std::uint64_t>());
  for (auto& b : m.blocks) {
    b.kind = static_cast<models::BlockOrigin::Kind>(r.get<std::int32_t>());
    b.parent_block = r.get<std::int32_t>();
  }
  m.unit_map = r.get_vector<int>();
  m.function_preserving = r.get<std::uint8_t>() != 0;
  return m;
}

void put_weights(wire::Writer& w, const std::shared_ptr<const Weights>& weights) {
  w.put<std::uint8_t>(weights != nullptr);
  if (!weights) return;
  w.put(weights->params);
  w.put(weights->state);
}

std::shared_ptr<const Weights> get_weights(wire::Reader& r) {
  if (r.get<std::uint8_t>() == 0) return nullptr;
  auto w = std::make_shared<Weights>();
  w->params = r.get_vector<float>();
  w->state = r.get_vector<float>();
  return w;
}

void load_weights(models::Network& net, const Weights& w) {
  if (static_cast<std::int64_t>(w.params.size()) != net.parameter_count() ||
      static_cast<std::int64_t>(w.state.size()) != net.state().numel())
    throw std::invalid_argument("parent weights do not fit the parent genome (" + std::to_string(w.params.size()) +
                                " parameters for a network of " + std::to_string(net.parameter_count()) + ")");
  std::copy(w.params.begin(), w.params.end(), net.parameters().data());
  std::copy(w.state.begin(), w.state.end(), net.state().data());
}

std::shared_ptr<const Weights> save_weights(const models::Network& net) {
  auto w = std::make_shared<Weights>();
  w->params.assign(net.parameters().data(), net.parameters().data() + net.parameter_count());
  w->state.assign(net.state().data(), net.state().data() + net.state().numel());
  return w;
}

TaskResult failed(const Task& task, ModelRecord::FailureKind kind, std::string reason) {
  TaskResult r;
  r.id = task.id;
  r.status = ModelRecord::Status::Failed;
  r.failure_kind = kind;
  r.failure = std::move(reason);
  return r;
}

// The parent's labels on the unlabeled pool: their accuracy against the true labels (which the loop
// never sees) and the entropy of their histogram, the model-collapse monitor's two figures. Counts
// as models::evaluate does (each rank its share, summed), so the accuracy is the same number.
struct PseudoLabels {
  double accuracy = 0.0, entropy = 0.0;
};
PseudoLabels pseudo_labels(models::Network& parent, const models::Dataset& pool, collective::Communicator& group) {
  const int classes = parent.input().classes;
  const int rank = group.rank(), ranks = group.size();
  // [predicted per class][correct]
  std::vector<double> counts(static_cast<std::size_t>(classes) + 1, 0.0);
  const std::int64_t lo = pool.size() * rank / ranks, hi = pool.size() * (rank + 1) / ranks;
  constexpr int kBatch = 256;
  for (std::int64_t start = lo; start < hi; start += kBatch) {
    const int n = static_cast<int>(std::min<std::int64_t>(kBatch, hi - start));
    const kernels::Tensor& logits = parent.forward(pool.image(start), n, models::Network::Mode{});
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + static_cast<std::int64_t>(i) * classes;
      const int predicted = static_cast<int>(std::max_element(row, row + classes) - row);
      counts[static_cast<std::size_t>(predicted)] += 1.0;
      if (predicted == pool.labels[start + i]) counts.back() += 1.0;
    }
  }
  if (ranks > 1) group.allreduce(std::span<double>(counts), collective::ReduceOp::Sum);
  PseudoLabels out;
  out.accuracy = pool.size() ? counts.back() / static_cast<double>(pool.size()) : 0.0;
  counts.pop_back();
  out.entropy = label_entropy(counts);
  return out;
}

// Surrogate stand-ins for the pseudo-label figures: a parent that labels a balanced pool with its
// per-class accuracies p_c, spreading its misses evenly, predicts class c with mass
// (p_c + sum_{k != c} (1 - p_k) / 9) / 10.
PseudoLabels surrogate_pseudo_labels(const ModelMetrics& parent) {
  const std::vector<double>& p = parent.test_per_class;
  const double k = static_cast<double>(p.size());
  std::vector<double> mass(p.size(), 0.0);
  double misses = 0.0;
  for (double x : p) misses += 1.0 - x;
  for (std::size_t c = 0; c < p.size(); ++c) mass[c] = (p[c] + (misses - (1.0 - p[c])) / (k - 1.0)) / k;
  return {parent.test_accuracy, label_entropy(mass)};
}

void skew_classes(ModelMetrics& m, double skew) {
  // Symmetric around the mean, so the overall accuracy stays what the landscape says.
  const double n = static_cast<double>(m.test_per_class.size());
  const double spread = skew * std::max(0.0, m.val_accuracy - 0.8) / 0.1;
  for (std::size_t c = 0; c < m.test_per_class.size(); ++c) {
    const double offset = (static_cast<double>(c) - (n - 1.0) / 2.0) / ((n - 1.0) / 2.0);
    m.test_per_class[c] = std::clamp(m.test_accuracy + spread * offset, 0.0, 1.0);
  }
}

TaskResult execute_surrogate(const Task& task, const LoopConfig& config, const std::function<void()>& poll) {
  models::Genome genome = models::from_yaml(task.genome_yaml, "task genome");
  const auto start = std::chrono::steady_clock::now();
  // A rung costs its share of the recipe's epochs and is scored at the epochs reached.
  const double share = task.train_epochs > 0 ? static_cast<double>(task.train_epochs) / std::max(genome.recipe.epochs, 1) : 1.0;
  if (task.train_epochs > 0) genome.recipe.epochs = task.done_epochs + task.train_epochs;
  const auto cost = std::chrono::duration<double>(config.task.surrogate_cost_seconds * share);
  // The cost is spent waiting, in slices, so the coordinator keeps serving its workers.
  for (;;) {
    const std::chrono::duration<double> left = cost - (std::chrono::steady_clock::now() - start);
    if (left <= std::chrono::duration<double>::zero()) break;
    if (poll) poll();
    std::this_thread::sleep_for(poll ? std::min(std::chrono::duration<double>(0.0005), left) : left);
  }
  const SurrogateDrift drift{config.task.surrogate_drift, config.task.surrogate_drift_period, task.generation};
  const SurrogateOutcome outcome = surrogate_evaluate(genome, config.seed, task.id, config.task.surrogate_noise, drift);
  if (outcome.diverged)
    return failed(task, ModelRecord::FailureKind::Diverged, "diverged: the surrogate landscape's learning rate edge was crossed");
  TaskResult r;
  r.id = task.id;
  r.metrics = outcome.metrics;
  if (config.task.surrogate_class_skew > 0) skew_classes(r.metrics, config.task.surrogate_class_skew);
  if (config.task.surrogate_pseudo_labels && !task.parent_yaml.empty()) {
    SurrogateOutcome parent =
        surrogate_evaluate(models::from_yaml(task.parent_yaml, "parent genome"), config.seed, task.id, 0.0);
    if (config.task.surrogate_class_skew > 0) skew_classes(parent.metrics, config.task.surrogate_class_skew);
    const PseudoLabels labels = surrogate_pseudo_labels(parent.metrics);
    r.metrics.pseudo_label_accuracy = labels.accuracy;
    r.metrics.pseudo_label_entropy = labels.entropy;
  }
  r.metrics.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.inherited = !task.parent_yaml.empty();
  r.function_preserving = task.morphism.function_preserving;
  return r;
}

TaskResult execute_images(const Task& task, const LoopConfig& config, const TaskData& data,
                           collective::Communicator& group, const std::function<void()>& poll) {
  const auto start = std::chrono::steady_clock::now();
  const models::Genome genome = models::from_yaml(task.genome_yaml, "task genome");
  const models::GenomeStats stats = models::validate(genome, config.task.input);
  models::Network child(genome, config.task.input);
  child.initialize(config.seed, task.id);
  if (task.start_weights) load_weights(child, *task.start_weights);  // a promoted child's next rung

  TaskResult r;
  r.id = task.id;
  std::unique_ptr<models::Network> parent;
  models::TrainOptions opt;
  opt.seed = config.seed;
  opt.model_id = task.id;
  opt.group = &group;
  opt.on_step = [&poll](std::int64_t, std::int64_t) {
    if (poll) poll();
  };
  opt.progress_every = 1;
  if (task.train_epochs > 0) opt.epochs = task.train_epochs;
  if (!task.parent_yaml.empty() && task.parent_weights) {
    parent = std::make_unique<models::Network>(models::from_yaml(task.parent_yaml, "parent genome"), config.task.input);
    load_weights(*parent, *task.parent_weights);
    const models::InheritReport inherit = models::inherit_weights(*parent, child, task.morphism);
    r.inherited = inherit.inherited > 0;
    r.function_preserving = inherit.function_preserving;
  }
  if (parent && task.distilled) {  // the coordinator's choice (design.distill)
    if (data.unlabeled.size() > 0) {
      const PseudoLabels labels = pseudo_labels(*parent, data.unlabeled, group);
      r.metrics.pseudo_label_accuracy = labels.accuracy;
      r.metrics.pseudo_label_entropy = labels.entropy;
    }
    opt.teacher_network = parent.get();  // on the training device: soft labels stay on the GPU
    opt.unlabeled = &data.unlabeled;
  }
  if (task.continue_schedule) {  // rungs: one schedule over the child's whole training
    const models::Recipe& recipe = genome.recipe;
    const std::int64_t labeled = data.labeled.size(), unlabeled = data.unlabeled.size();
    const bool distilled = task.start_weights ? task.distilled : opt.teacher_network != nullptr;
    opt.schedule_steps = models::planned_steps(recipe, labeled, unlabeled, distilled, recipe.epochs);
    if (task.start_weights) {
      opt.steps_before = models::planned_steps(recipe, labeled, unlabeled, distilled, task.done_epochs);
      opt.epochs_before = static_cast<std::uint32_t>((distilled ? recipe.distill_epochs : 0) + task.done_epochs);
    }
  }
  opt.start_optimizer = task.start_optimizer.get();
  opt.keep_optimizer = task.keep_optimizer;
  models::TrainResult trained = models::train(child, data.labeled, opt);
  if (trained.diverged)
    return failed(task, ModelRecord::FailureKind::Diverged, "diverged: loss became " + std::to_string(trained.final_loss) + " after " +
                            std::to_string(trained.steps) + " steps");
  const models::Evaluation val = models::evaluate(child, data.validation, 256, &group);
  const models::Evaluation test = models::evaluate(child, data.test, 256, &group);
  r.metrics.val_accuracy = val.accuracy;
  r.metrics.val_loss = val.mean_loss;
  r.metrics.val_per_class = val.per_class;
  r.metrics.test_accuracy = test.accuracy;
  r.metrics.test_loss = test.mean_loss;
  r.metrics.test_per_class = test.per_class;
  r.metrics.parameters = stats.parameters;
  r.metrics.flops = stats.flops;
  r.metrics.samples = trained.samples;
  r.metrics.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.weights = save_weights(child);
  if (trained.optimizer) r.optimizer = std::make_shared<const models::OptimizerState>(std::move(*trained.optimizer));
  return r;
}

}  // namespace

std::vector<std::byte> encode(const Task& t) {
  wire::Writer w;
  w.put(t.id);
  w.put(t.generation);
  w.put(t.genome_yaml);
  w.put(t.parent_yaml);
  put_weights(w, t.parent_weights);
  put_morphism(w, t.morphism);
  w.put(t.estimated_cost);
  w.put<std::int32_t>(t.train_epochs);
  w.put<std::int32_t>(t.done_epochs);
  put_weights(w, t.start_weights);
  w.put<std::uint8_t>(
      static_cast<std::uint8_t>((t.continue_schedule ? 1 : 0) | (t.distilled ? 2 : 0) | (t.keep_optimizer ? 4 : 0)));
  put_optimizer(w, t.start_optimizer);
  return w.take();
}

Task decode_task(const std::vector<std::byte>& bytes) {
  wire::Reader r(bytes);
  Task t;
  t.id = r.get<std::uint64_t>();
  t.generation = r.get<int>();
  t.genome_yaml = r.get_string();
  t.parent_yaml = r.get_string();
  t.parent_weights = get_weights(r);
  t.morphism = get_morphism(r);
  t.estimated_cost = r.get<double>();
  t.train_epochs = r.get<std::int32_t>();
  t.done_epochs = r.get<std::int32_t>();
  t.start_weights = get_weights(r);
  const auto flags = r.get<std::uint8_t>();
  t.continue_schedule = (flags & 1) != 0;
  t.distilled = (flags & 2) != 0;
  t.keep_optimizer = (flags & 4) != 0;
  t.start_optimizer = get_optimizer(r);
  return t;
}

std::vector<std::byte> encode(const TaskResult& x) {
  wire::Writer w;
  w.put(x.id);
  w.put<std::int32_t>(static_cast<std::int32_t>(x.status));
  w.put<std::uint8_t>(static_cast<std::uint8_t>(x.failure_kind));
  w.put(x.failure);
  visit_metric_fields(x.metrics, [&w](const char*, MetricPart, const auto& v) { w.put(v); });
  w.put<std::uint8_t>(x.inherited);
  w.put<std::uint8_t>(x.function_preserving);
  put_weights(w, x.weights);
  put_optimizer(w, x.optimizer);
  return w.take();
}

TaskResult decode_result(const std::vector<std::byte>& bytes) {
  wire::Reader r(bytes);
  TaskResult x;
  x.id = r.get<std::uint64_t>();
  x.status = static_cast<ModelRecord::Status>(r.get<std::int32_t>());
  x.failure_kind = static_cast<ModelRecord::FailureKind>(r.get<std::uint8_t>());
  x.failure = r.get_string();
  visit_metric_fields(x.metrics, [&r](const char*, MetricPart, auto& v) {
    using V = std::decay_t<decltype(v)>;
    if constexpr (std::is_same_v<V, std::vector<double>>) v = r.get_vector<double>();
    else v = r.get<V>();
  });
  x.inherited = r.get<std::uint8_t>() != 0;
  x.function_preserving = r.get<std::uint8_t>() != 0;
  x.weights = get_weights(r);
  x.optimizer = get_optimizer(r);
  return x;
}

std::unique_ptr<TaskData> load_task_data(const TaskSpec& spec, std::uint64_t seed) {
  if (spec.kind == TaskSpec::Kind::Surrogate) return nullptr;
  auto data = std::make_unique<TaskData>();
  if (spec.kind == TaskSpec::Kind::Images) {
    const auto load = [&spec](const models::ImageFiles& files, const char* part) {
      models::Dataset d = models::load_images(files, spec.layout, spec.input.classes);
      if (d.channels != spec.input.channels || d.rows != spec.input.height || d.cols != spec.input.width)
        throw models::DataError(std::string("the ") + part + " images are " + std::to_string(d.channels) + "x" +
                                std::to_string(d.rows) + "x" + std::to_string(d.cols) + ", the run's input is " +
                                std::to_string(spec.input.channels) + "x" + std::to_string(spec.input.height) + "x" +
                                std::to_string(spec.input.width) + " (did the files change since the run began?)");
      return d;
    };
    const models::Dataset train = load(spec.train_files, "training");
    const models::Split split = models::make_split(train.size(), spec.split, seed);
    data->labeled = models::subset(train, split.labeled);
    data->unlabeled = models::subset(train, split.unlabeled);
    data->validation = models::subset(train, split.validation);
    data->test = load(spec.test_files, "test");
    return data;
  }
  {
    const models::Dataset train = models::load_fashion_mnist_train(spec.data_dir);
    const models::Split split = models::make_split(train.size(), spec.split, seed);
    data->labeled = models::subset(train, split.labeled);
    data->unlabeled = models::subset(train, split.unlabeled);
    data->validation = models::subset(train, split.validation);
  }
  data->test = models::load_fashion_mnist_test(spec.data_dir);
  return data;
}

double estimate_cost(const models::Genome& genome, const TaskSpec& spec, bool distils) {
  const models::GenomeStats stats = models::validate(genome, spec.input);
  if (spec.kind == TaskSpec::Kind::Surrogate) return static_cast<double>(stats.flops);
  const double labeled = static_cast<double>(spec.split.labeled);
  double samples = labeled * genome.recipe.epochs;
  if (distils) samples += (labeled + static_cast<double>(spec.split.unlabeled)) * genome.recipe.distill_epochs;
  return static_cast<double>(stats.flops) * samples;
}

TaskResult execute_task(const Task& task, const LoopConfig& config, const TaskData* data,
                        collective::Communicator& group, const std::function<void()>& poll) {
  try {
    if (config.task.kind == TaskSpec::Kind::Surrogate) return execute_surrogate(task, config, poll);
    return execute_images(task, config, *data, group, poll);
  } catch (const collective::CollectiveError&) {
    throw;  // a broken group is not the child's failure
  } catch (const std::bad_alloc&) {
    return failed(task, ModelRecord::FailureKind::OutOfMemory, "out of memory while training");
  } catch (const kernels::OutOfDeviceMemory& e) {
    return failed(task, ModelRecord::FailureKind::OutOfMemory, std::string("training threw: ") + e.what());
  } catch (const std::exception& e) {
    return failed(task, ModelRecord::FailureKind::Error, std::string("training threw: ") + e.what());
  }
}

}  // namespace rsi::scheduler
