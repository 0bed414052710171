// The RSI loop: coordinator on rank 0, pull-based workers, results committed in model-id order.
#include "rsi/scheduler/loop.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "rsi/kernels/ops.h"
#include "task.h"

namespace rsi::scheduler {

namespace {

using Clock = std::chrono::steady_clock;

enum Tag : int { kRequest = 1, kResult = 2, kTask = 3, kStop = 4 };

// Within a group the leader broadcasts each task's bytes; an empty message means stop.
std::vector<std::byte> group_share(collective::Communicator& group, std::vector<std::byte> bytes) {
  return group.broadcast_bytes(std::move(bytes), 0);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Better first: higher validation accuracy, then lower id (older).
bool ranks_before(const ModelRecord& a, const ModelRecord& b) {
  if (a.metrics.val_accuracy != b.metrics.val_accuracy) return a.metrics.val_accuracy > b.metrics.val_accuracy;
  return a.id < b.id;
}

class Coordinator {
 public:
  Coordinator(const LoopConfig& config, collective::Communicator& world, collective::Communicator& group,
              const TaskData* data, const std::vector<GenerationSink*>& sinks, const LoopEvents& events)
      : config_(config), world_(world), group_(group), data_(data), sinks_(sinks), events_(events) {
    for (int r = config.group_size; r < world.size(); r += config.group_size) leaders_.push_back(r);
  }

  // Workers are stopped and sinks finished however the run ends; a coordinator error is rethrown.
  LoopSummary run(const ResumeState* resume) {
    try {
      LoopSummary summary = run_generations(resume);
      stop_workers();
      for (GenerationSink* sink : sinks_) sink->on_finish();
      return summary;
    } catch (const collective::CollectiveError&) {
      for (GenerationSink* sink : sinks_) sink->on_finish();
      throw;  // the world is broken: stopping the workers would hang
    } catch (...) {
      stop_workers();
      for (GenerationSink* sink : sinks_) sink->on_finish();
      throw;
    }
  }

 private:
  LoopSummary run_generations(const ResumeState* resume) {
    if (config_.seeds.empty()) throw std::invalid_argument("the loop needs at least one seed genome");
    LoopSummary summary;
    int first = 0;
    if (resume && resume->generation >= 0) {
      if (resume->population.empty())
        throw std::invalid_argument("cannot resume after generation " + std::to_string(resume->generation) +
                                    ": the stored population is empty");
      population_ = resume->population;
      for (const ModelRecord& m : population_) genomes_[m.id] = models::from_yaml(m.genome_yaml, "population genome");
      next_id_ = resume->next_model_id;
      first = resume->generation + 1;
      const ModelRecord* best = best_of(population_);
      summary.generations_done = first;
      summary.best_id = best->id;
      summary.best_val = best->metrics.val_accuracy;
      summary.best_test = best->metrics.test_accuracy;
    }
    for (int g = first; g <= config_.generations; ++g) {
      if (config_.stop_requested && config_.stop_requested()) {
        summary.stopped = true;
        break;
      }
      const auto start = Clock::now();
      std::vector<ModelRecord> children = g == 0 ? seed_children() : design_children(g);
      run_generation(children, g);
      GenerationRecord record = commit(std::move(children), g);
      record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      record.models_per_second = record.seconds > 0 ? static_cast<double>(record.children.size()) / record.seconds : 0;
      for (GenerationSink* sink : sinks_) sink->on_generation(record);
      summary.generations_done = g + 1;
      summary.best_id = record.best_id;
      summary.best_val = record.best_val;
      summary.best_test = record.best_model_test;
    }
    return summary;
  }

  std::vector<ModelRecord> seed_children() {
    std::vector<ModelRecord> out;
    for (const models::Genome& seed : config_.seeds) {
      ModelRecord m;
      m.id = next_id_++;
      m.generation = 0;
      models::Genome g = seed;
      g.designer = complete_designer_genes(g.designer);
      m.genome_yaml = models::to_yaml(g);
      genomes_[m.id] = g;
      m.op = "seed";
      m.description = "seed genome";
      m.designer_lineage = m.id;
      out.push_back(std::move(m));
    }
    return out;
  }

  // Parents for child i, by the configured selection.
  std::pair<const ModelRecord*, const ModelRecord*> choose_parents(std::size_t i, std::uint64_t child_id) {
    std::vector<const ModelRecord*> ranked;
    for (const auto& m : population_) ranked.push_back(&m);
    std::sort(ranked.begin(), ranked.end(), [](auto* a, auto* b) { return ranks_before(*a, *b); });
    if (config_.selection == SelectionKind::Truncation) {
      const ModelRecord* mate = ranked.size() > 1 ? ranked[(i + 1) % ranked.size()] : nullptr;
      return {ranked[i % ranked.size()], mate};
    }
    // Tournament (and aging evolution's parent choice): best of k drawn uniformly.
    const kernels::CounterRng rng(config_.seed, kernels::rng_stream(kernels::RngUse::Design, child_id), 1);
    auto tournament = [&](std::uint64_t at) {
      const ModelRecord* best = nullptr;
      for (int k = 0; k < config_.tournament_size; ++k) {
        const ModelRecord* c = ranked[rng.below(at + static_cast<std::uint64_t>(k), static_cast<std::uint32_t>(ranked.size()))];
        if (!best || ranks_before(*c, *best)) best = c;
      }
      return best;
    };
    const ModelRecord* parent = tournament(0);
    const ModelRecord* mate = ranked.size() > 1 ? tournament(1u << 20) : nullptr;  // a disjoint range of draws
    if (mate == parent) mate = nullptr;
    return {parent, mate};
  }

  std::vector<ModelRecord> design_children(int generation) {
    std::vector<ModelRecord> out;
    for (int i = 0; i < config_.children_per_generation; ++i) {
      ModelRecord m;
      m.id = next_id_++;
      m.generation = generation;
      const auto [parent, mate] = choose_parents(static_cast<std::size_t>(i), m.id);
      const models::Genome& parent_genome = genomes_.at(parent->id);
      const models::Genome* mate_genome = mate ? &genomes_.at(mate->id) : nullptr;
      const kernels::CounterRng rng(config_.seed, kernels::rng_stream(kernels::RngUse::Design, m.id));
      m.parents = {parent->id};
      m.designer_lineage = parent->designer_lineage;
      m.parent_val_accuracy = parent->metrics.val_accuracy;
      DesignedChild child;
      try {
        child = design_child(parent_genome, mate_genome, rng, config_.limits);
      } catch (const std::invalid_argument& e) {
        // A parent no design can bring within the limits: the child is refused, the run goes on.
        m.genome_yaml = parent->genome_yaml;
        m.op = "none";
        m.description = "design refused";
        m.status = ModelRecord::Status::Refused;
        m.failure = std::string("design refused: ") + e.what();
        out.push_back(std::move(m));
        continue;
      }
      m.genome_yaml = models::to_yaml(child.genome);
      genomes_[m.id] = child.genome;
      m.op = child.op;
      m.description = child.description;
      if (child.crossover && mate) m.parents.push_back(mate->id);
      morphisms_[m.id] = std::move(child.morphism);
      out.push_back(std::move(m));
    }
    return out;
  }

  Task make_task(const ModelRecord& m) {
    Task t;
    t.id = m.id;
    t.generation = m.generation;
    t.genome_yaml = m.genome_yaml;
    const models::Genome& genome = genomes_.at(m.id);
    if (!m.parents.empty()) {
      const ModelRecord& parent = *find_population(m.parents[0]);
      t.parent_yaml = parent.genome_yaml;
      t.parent_weights = parent.weights;
      t.morphism = morphisms_.at(m.id);
    }
    t.estimated_cost = estimate_cost(genome, config_.task, !m.parents.empty());
    return t;
  }

  const ModelRecord* find_population(std::uint64_t id) const {
    for (const auto& m : population_)
      if (m.id == id) return &m;
    throw std::logic_error("coordinator: parent " + std::to_string(id) + " is not in the population");
  }

  // Serves the workers: takes results and requests, hands out pending tasks to idle leaders.
  void serve() {
    while (auto message = world_.try_receive()) {
      if (message->tag == kResult) {
        TaskResult r = decode_result(message->data);
        const std::uint64_t id = r.id;
        results_[id] = std::move(r);
        if (events_.on_model_done) events_.on_model_done(preview(results_[id]));
        idle_.push_back(message->source);
      } else if (message->tag == kRequest) {
        idle_.push_back(message->source);
      } else {
        throw std::logic_error("coordinator: unexpected message tag " + std::to_string(message->tag) + " from rank " +
                               std::to_string(message->source));
      }
    }
    while (!idle_.empty() && !pending_.empty()) {
      const int leader = idle_.front();
      idle_.pop_front();
      const auto bytes = encode(pending_.front());
      pending_.pop_front();
      world_.send(bytes, leader, kTask);
    }
  }

  ModelRecord preview(const TaskResult& r) const {
    ModelRecord m;
    m.id = r.id;
    m.status = r.status;
    m.failure = r.failure;
    m.metrics = r.metrics;
    return m;
  }

  void run_generation(const std::vector<ModelRecord>& children, int generation) {
    pending_.clear();
    results_.clear();
    std::size_t expected = 0;
    for (const auto& m : children)
      if (m.status != ModelRecord::Status::Refused) pending_.push_back(make_task(m)), ++expected;
    std::stable_sort(pending_.begin(), pending_.end(), [](const Task& a, const Task& b) {
      return a.estimated_cost != b.estimated_cost ? a.estimated_cost > b.estimated_cost : a.id < b.id;
    });
    if (events_.on_generation_start) events_.on_generation_start(generation, static_cast<int>(children.size()));
    auto wait = std::chrono::microseconds(2);
    while (results_.size() < expected) {
      serve();
      if (!pending_.empty()) {
        Task task = std::move(pending_.front());
        pending_.pop_front();
        group_share(group_, encode(task));
        TaskResult r = execute_task(task, config_, data_, group_, [this] { serve(); });
        results_[r.id] = std::move(r);
        if (events_.on_model_done) events_.on_model_done(preview(results_[task.id]));
        wait = std::chrono::microseconds(2);
        continue;
      }
      if (results_.size() < expected) {
        std::this_thread::sleep_for(wait);
        wait = std::min(wait * 2, std::chrono::microseconds(500));
      }
    }
  }

  GenerationRecord commit(std::vector<ModelRecord> children, int generation) {
    GenerationRecord record;
    record.generation = generation;
    const double best_before = population_.empty() ? 0.0 : best_of(population_)->metrics.val_accuracy;
    std::sort(children.begin(), children.end(), [](auto& a, auto& b) { return a.id < b.id; });
    std::vector<double> gains;
    std::map<std::uint64_t, std::vector<double>> gains_by_lineage;
    for (ModelRecord& m : children) {
      if (m.status == ModelRecord::Status::Refused) {
        ++record.refused;
        continue;
      }
      TaskResult& r = results_.at(m.id);
      m.status = r.status;
      m.failure = r.failure;
      m.metrics = r.metrics;
      m.inherited = r.inherited;
      m.function_preserving = r.function_preserving;
      m.weights = r.weights;
      if (m.weights) m.weights_digest = weights_digest(*m.weights);
      if (m.trained()) {
        ++record.trained;
        if (!m.parents.empty()) {
          gains.push_back(m.gain_over_parent());
          gains_by_lineage[m.designer_lineage].push_back(m.gain_over_parent());
        }
      } else {
        ++(m.status == ModelRecord::Status::Refused ? record.refused : record.failed);
      }
    }
    // Survivor selection.
    std::vector<ModelRecord> pool = population_;
    for (const ModelRecord& m : children)
      if (m.trained()) pool.push_back(m);
    if (pool.empty())
      throw std::runtime_error("every seed model failed (first reason: " +
                               (children.empty() ? std::string("no seeds") : children.front().failure) +
                               "); check the seed genomes and the task settings");
    const std::size_t keep = std::min<std::size_t>(pool.size(), static_cast<std::size_t>(config_.population_size));
    if (config_.selection == SelectionKind::Aging && generation > 0) {
      std::sort(pool.begin(), pool.end(), [](auto& a, auto& b) { return a.id > b.id; });  // newest first
    } else {
      std::sort(pool.begin(), pool.end(), ranks_before);
    }
    pool.resize(keep);
    std::sort(pool.begin(), pool.end(), [](auto& a, auto& b) { return a.id < b.id; });
    population_ = std::move(pool);

    std::vector<double> vals, tests;
    std::vector<models::Genome> genomes;
    for (const auto& m : population_) {
      vals.push_back(m.metrics.val_accuracy);
      tests.push_back(m.metrics.test_accuracy);
      record.population.push_back(m.id);
      genomes.push_back(genomes_.at(m.id));
    }
    const ModelRecord* best = best_of(population_);
    record.best_id = best->id;
    record.best_val = best->metrics.val_accuracy;
    record.best_model_test = best->metrics.test_accuracy;
    record.best_test = *std::max_element(tests.begin(), tests.end());
    record.median_val = median(vals);
    record.median_test = median(tests);
    record.gain = generation == 0 ? 0.0 : record.best_val - best_before;
    record.design_skill = gains.empty() ? 0.0 : std::accumulate(gains.begin(), gains.end(), 0.0) / gains.size();
    for (auto& [lineage, g] : gains_by_lineage)
      record.design_skill_by_lineage[lineage] = std::accumulate(g.begin(), g.end(), 0.0) / g.size();
    record.diversity = population_diversity(genomes);
    record.goodhart_gap = best->metrics.val_accuracy - best->metrics.test_accuracy;
    if (!best->metrics.test_per_class.empty()) {
      const auto [lo, hi] = std::minmax_element(best->metrics.test_per_class.begin(), best->metrics.test_per_class.end());
      record.worst_class_accuracy = *lo;
      record.class_disparity = *hi - *lo;
    }
    std::vector<double> pseudo;
    for (const ModelRecord& m : children)
      if (m.trained() && m.metrics.pseudo_label_accuracy >= 0) pseudo.push_back(m.metrics.pseudo_label_accuracy);
    if (!pseudo.empty()) record.pseudo_label_accuracy = std::accumulate(pseudo.begin(), pseudo.end(), 0.0) / pseudo.size();
    record.population_models = population_;
    record.next_model_id = next_id_;
    for (auto& m : children) morphisms_.erase(m.id);
    // Keep parsed genomes of the population only.
    for (auto it = genomes_.begin(); it != genomes_.end();) {
      const bool member = std::any_of(population_.begin(), population_.end(), [&](auto& p) { return p.id == it->first; });
      it = member ? std::next(it) : genomes_.erase(it);
    }
    record.children = std::move(children);
    return record;
  }

  static const ModelRecord* best_of(const std::vector<ModelRecord>& models) {
    return &*std::min_element(models.begin(), models.end(), ranks_before);
  }

  void stop_workers() {
    // Every leader ends up idle (its last result or first request arrives); each gets one stop.
    std::size_t stopped = 0;
    std::vector<bool> done(static_cast<std::size_t>(world_.size()), false);
    while (stopped < leaders_.size()) {
      serve();
      while (!idle_.empty()) {
        const int leader = idle_.front();
        idle_.pop_front();
        if (done[leader]) continue;
        world_.send({}, leader, kStop);
        done[leader] = true;
        ++stopped;
      }
      if (stopped < leaders_.size()) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    group_share(group_, {});
  }

  const LoopConfig& config_;
  collective::Communicator& world_;
  collective::Communicator& group_;
  const TaskData* data_;
  const std::vector<GenerationSink*>& sinks_;
  const LoopEvents& events_;
  std::vector<int> leaders_;
  std::uint64_t next_id_ = 1;
  std::vector<ModelRecord> population_;
  std::map<std::uint64_t, models::Morphism> morphisms_;
  std::map<std::uint64_t, models::Genome> genomes_;  // parsed genomes of the population and the children in flight
  std::deque<Task> pending_;
  std::deque<int> idle_;
  std::map<std::uint64_t, TaskResult> results_;
};

// A group member that is not the coordinator's: leaders pull tasks from rank 0 and share them with
// their group; other members follow their leader.
void work(const LoopConfig& config, collective::Communicator& world, collective::Communicator& group,
          const TaskData* data) {
  const bool leader = group.rank() == 0;
  const bool coordinator_group = world.rank() < config.group_size;
  if (leader && !coordinator_group) world.send({}, 0, kRequest);
  for (;;) {
    std::vector<std::byte> bytes;
    if (leader && !coordinator_group) {
      collective::Message m = world.receive(0, -1);
      if (m.tag == kStop) {
        group_share(group, {});
        return;
      }
      bytes = group_share(group, std::move(m.data));
    } else {
      bytes = group_share(group, {});
      if (bytes.empty()) return;
    }
    const Task task = decode_task(bytes);
    TaskResult r = execute_task(task, config, data, group, {});
    if (leader && !coordinator_group) world.send(encode(r), 0, kResult);
  }
}

}  // namespace

const char* status_name(ModelRecord::Status s) {
  switch (s) {
    case ModelRecord::Status::Trained: return "trained";
    case ModelRecord::Status::Failed: return "failed";
    case ModelRecord::Status::Refused: return "refused";
  }
  return "?";
}

std::string weights_digest(const Weights& w) {
  std::uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const std::vector<float>& v) {
    const auto* p = reinterpret_cast<const unsigned char*>(v.data());
    for (std::size_t i = 0; i < v.size() * sizeof(float); ++i) h = (h ^ p[i]) * 1099511628211ull;
  };
  mix(w.params);
  mix(w.state);
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

LoopSummary run_loop(const LoopConfig& config, collective::Communicator& world,
                     const std::vector<GenerationSink*>& sinks, const LoopEvents& events,
                     const ResumeState* resume) {
  if (config.group_size < 1 || world.size() % config.group_size != 0)
    throw std::invalid_argument("group_size " + std::to_string(config.group_size) + " does not divide the " +
                                std::to_string(world.size()) + " ranks of the job; choose a divisor of the rank count");
  kernels::set_num_threads(config.threads_per_rank);
  const int color = world.rank() / config.group_size;
  std::unique_ptr<collective::Communicator> group = world.split(color, world.rank());
  const std::unique_ptr<TaskData> data = load_task_data(config.task, config.seed);
  if (world.rank() == 0) {
    Coordinator coordinator(config, world, *group, data.get(), sinks, events);
    return coordinator.run(resume);
  }
  work(config, world, *group, data.get());
  return {};
}

}  // namespace rsi::scheduler
