// The RSI loop: coordinator on rank 0, pull-based workers, results committed in model-id order.
#include "rsi/scheduler/loop.h"

#include "rsi/kernels/fnv1a.h"
#include "rsi/scheduler/commit.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <stdexcept>
#include <cmath>
#include <thread>

#include "rsi/kernels/ops.h"
#include "rsi/scheduler/designer.h"
#include "rsi/scheduler/governance_controller.h"
#include "task.h"

namespace rsi::scheduler {

namespace {

using Clock = std::chrono::steady_clock;

enum Tag : int { kRequest = 1, kResult = 2, kTask = 3, kStop = 4 };

// Within a group the leader broadcasts each task's bytes; an empty message means stop.
std::vector<std::byte> group_share(collective::Communicator& group, std::vector<std::byte> bytes) {
  return group.broadcast_bytes(std::move(bytes), 0);
}

class Coordinator {
 public:
  Coordinator(const LoopConfig& config, collective::Communicator& world, collective::Communicator& group,
              const TaskData* data, const std::vector<GenerationSink*>& sinks, const LoopEvents& events)
      : config_(config), world_(world), group_(group), data_(data), sinks_(sinks), events_(events), designer_(config),
        governance_(config) {
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
      std::vector<GenerationRecord> stored;
      for (const GenerationRecord& h : resume->history)
        if (h.generation <= resume->generation) stored.push_back(h);
      designer_.replay(stored);  // what the run had learned about design
      awaiting_ = governance_.restore(stored, resume->generation);
      if (awaiting_) {
        // The stored population is the selection plus the members held for a rollback.
        const std::vector<GenerationRecord>& history = governance_.history();
        const auto& held = history.back().held_for_rollback;
        const std::vector<std::uint64_t> before =
            history.size() > 1 ? history[history.size() - 2].population : std::vector<std::uint64_t>{};
        auto in = [](const std::vector<std::uint64_t>& ids, std::uint64_t id) {
          return std::find(ids.begin(), ids.end(), id) != ids.end();
        };
        std::vector<ModelRecord> selected;
        for (const ModelRecord& m : population_) {
          if (in(before, m.id)) previous_population_.push_back(m);
          if (!in(held, m.id)) selected.push_back(m);
        }
        population_ = std::move(selected);
      }
    }
    // A record that only carries a decision (after the last generation, or when a rejection or the
    // budget ends the run): no children, then the run ends.
    bool decision_only = false;
    std::string end_reason;
    for (int g = first;; ++g) {
      if (config_.stop_requested && config_.stop_requested()) {
        summary.stopped = true;
        break;
      }
      if (awaiting_) {
        const std::optional<Decision> decision = governance_.await_decision(*awaiting_, summary, events_);
        if (!decision) break;  // timed out or stopped: the generation stays durable, awaiting approval
        const bool stop = apply_decision(*awaiting_, *decision);
        awaiting_.reset();
        end_reason = stop ? "rejected" : governance_.budget_spent() ? "budget" : "";
        decision_only = stop || g > config_.generations || governance_.budget_spent();
      } else if (g > config_.generations) {
        break;
      } else if (governance_.budget_spent()) {
        summary.ended_by = "budget";  // resumed after the budget ended the run
        break;
      }
      const auto start = Clock::now();
      duplicates_ = 0;
      std::vector<ModelRecord> children = decision_only ? std::vector<ModelRecord>{}
                                          : g == 0      ? take(designer_.seed(next_id_))
                                                        : take(designer_.design(g, next_id_, population_, genomes_));
      run_generation(children, g);
      GenerationRecord record = commit(std::move(children), g, !decision_only);
      record.seconds = std::chrono::duration<double>(Clock::now() - start).count();
      record.models_per_second = record.seconds > 0 ? static_cast<double>(record.children.size()) / record.seconds : 0;
      for (GenerationSink* sink : sinks_) sink->on_generation(record);
      summary.generations_done = g + 1;
      summary.best_id = record.best_id;
      summary.best_val = record.best_val;
      summary.best_test = record.best_model_test;
      if (record.status == GovernanceController::kAwaitingApproval) {
        awaiting_ = g;
        continue;
      }
      if (decision_only) {
        summary.ended_by = end_reason;
        break;
      }
      if (governance_.budget_spent()) {
        summary.ended_by = "budget";
        break;
      }
    }
    return summary;
  }

  // A rejection rolls the population back to the one before the gated generation; the decision's
  // event goes into the next record. Returns true when the run must end (gates.on_reject: stop).
  bool apply_decision(int generation, const Decision& d) {
    if (!d.approved) {
      if (previous_population_.empty())
        throw std::runtime_error("cannot roll back generation " + std::to_string(generation) +
                                 ": the population before it is not loaded (its generation file lost the weights?)");
      population_ = previous_population_;
      for (const ModelRecord& m : population_)
        if (!genomes_.count(m.id)) genomes_[m.id] = models::from_yaml(m.genome_yaml, "population genome");
    }
    return governance_.record_decision(generation, d);
  }

  // The designer's children, their genomes and morphisms taken over for training.
  std::vector<ModelRecord> take(DesignedGeneration d) {
    genomes_.merge(d.genomes);
    morphisms_.merge(d.morphisms);
    governance_.add_events(d.events);
    duplicates_ = d.duplicates;
    return std::move(d.children);
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
    t.distilled = distils(m);
    t.estimated_cost = estimate_cost(genome, config_.task, t.distilled);
    return t;
  }

  // Whether a child's training (its first rung) starts with distillation from its parent
  // (ImprovementConfig::distill).
  bool distils(const ModelRecord& m) const {
    if (m.parents.empty()) return false;
    return config_.improvement.distill == ImprovementConfig::Distill::Always ||
           !morphisms_.at(m.id).function_preserving;
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
    m.failure_kind = r.failure_kind;
    m.failure = r.failure;
    m.metrics = r.metrics;
    return m;
  }

  void run_generation(const std::vector<ModelRecord>& children, int generation) {
    results_.clear();
    rungs_.clear();
    const ImprovementConfig::Rungs& rungs = config_.improvement.rungs;
    std::vector<Task> tasks;
    for (const auto& m : children) {
      if (m.status == ModelRecord::Status::Refused) continue;
      tasks.push_back(make_task(m));
      if (rungs.enabled) {
        tasks.back().train_epochs = std::min(genomes_.at(m.id).recipe.epochs, rungs.first_epochs);
        tasks.back().continue_schedule = rungs.continue_schedule;
        tasks.back().keep_optimizer = rungs.keep_optimizer && genomes_.at(m.id).recipe.epochs > rungs.first_epochs;
      }
    }
    if (events_.on_generation_start) events_.on_generation_start(generation, static_cast<int>(children.size()));
    dispatch(std::move(tasks));
    if (rungs.enabled) promote(children);
  }

  // Multi-fidelity: every child has trained its first rung; of those with epochs left, the best
  // fraction by validation (ties by id, as selection ranks) trains the rest from its own weights.
  void promote(const std::vector<ModelRecord>& children) {
    const ImprovementConfig::Rungs& rungs = config_.improvement.rungs;
    std::vector<ModelRecord> ranked;  // id and first-rung validation of the trained children
    std::map<std::uint64_t, const ModelRecord*> child_of;
    for (const auto& m : children) {
      const auto r = results_.find(m.id);
      if (r == results_.end() || r->second.status != ModelRecord::Status::Trained) continue;
      child_of[m.id] = &m;
      const int epochs = genomes_.at(m.id).recipe.epochs;
      rungs_[m.id] = {{std::min(epochs, rungs.first_epochs)}, {r->second.metrics.val_accuracy}};
      // Only children with epochs left compete for promotion: one that finished in its first rung
      // would take a place it does not need.
      if (epochs <= rungs.first_epochs) continue;
      ModelRecord entry;
      entry.id = m.id;
      entry.metrics.val_accuracy = r->second.metrics.val_accuracy;
      ranked.push_back(entry);
    }
    std::sort(ranked.begin(), ranked.end(), ranks_before);
    const auto promoted = static_cast<std::size_t>(std::ceil(rungs.promote * static_cast<double>(ranked.size()) - 1e-9));
    std::vector<Task> tasks;
    std::map<std::uint64_t, TaskResult> first_rung;
    for (std::size_t i = 0; i < std::min(promoted, ranked.size()); ++i) {
      const std::uint64_t id = ranked[i].id;
      const int epochs = genomes_.at(id).recipe.epochs, first = rungs_[id].first.front();
      Task t;
      t.id = id;
      t.generation = child_of.at(id)->generation;
      t.genome_yaml = child_of.at(id)->genome_yaml;
      t.train_epochs = epochs - first;
      t.done_epochs = first;
      t.start_weights = results_.at(id).weights;
      t.estimated_cost = estimate_cost(genomes_.at(id), config_.task, false) * t.train_epochs / epochs;
      t.continue_schedule = rungs.continue_schedule;
      t.distilled = distils(*child_of.at(id));  // its first rung distilled from its parent
      t.start_optimizer = results_.at(id).optimizer;
      first_rung[id] = results_.at(id);
      tasks.push_back(std::move(t));
    }
    dispatch(std::move(tasks));
    for (auto& [id, before] : first_rung) {
      TaskResult& after = results_.at(id);
      if (after.status == ModelRecord::Status::Trained) {
        rungs_[id].first.push_back(genomes_.at(id).recipe.epochs);
        rungs_[id].second.push_back(after.metrics.val_accuracy);
      }
      // The model's cost and its inheritance are those of both rungs.
      after.metrics.samples += before.metrics.samples;
      after.metrics.wall_seconds += before.metrics.wall_seconds;
      after.metrics.pseudo_label_accuracy = before.metrics.pseudo_label_accuracy;
      after.metrics.pseudo_label_entropy = before.metrics.pseudo_label_entropy;
      after.inherited = before.inherited;
      after.function_preserving = before.function_preserving;
    }
  }

  // Hands the tasks out (largest first) and trains on the coordinator's own group between
  // messages, until every result is in results_.
  void dispatch(std::vector<Task> tasks) {
    for (const Task& t : tasks) results_.erase(t.id);  // a next rung replaces the result before it
    const std::size_t expected = results_.size() + tasks.size();
    pending_.assign(std::make_move_iterator(tasks.begin()), std::make_move_iterator(tasks.end()));
    std::stable_sort(pending_.begin(), pending_.end(), [](const Task& a, const Task& b) {
      return a.estimated_cost != b.estimated_cost ? a.estimated_cost > b.estimated_cost : a.id < b.id;
    });
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

  // The workers' results merged into the children (in model-id order, never arrival order), then
  // the pure commit (commit.h), then the coordinator's own state and governance.
  GenerationRecord commit(std::vector<ModelRecord> children, int generation, bool govern = true) {
    for (ModelRecord& m : children) {
      if (m.status == ModelRecord::Status::Refused) continue;  // refused at design: never trained
      TaskResult& r = results_.at(m.id);
      m.status = r.status;
      m.failure_kind = r.failure_kind;
      m.failure = r.failure;
      m.metrics = r.metrics;
      m.inherited = r.inherited;
      m.function_preserving = r.function_preserving;
      m.weights = r.weights;
      if (m.weights) m.weights_digest = weights_digest(*m.weights, config_.format1_weights_digest);
      if (const auto rung = rungs_.find(m.id); rung != rungs_.end()) {
        m.rung_epochs = rung->second.first;
        m.rung_val_accuracy = rung->second.second;
      }
    }
    CommitSettings settings;
    settings.selection = config_.selection;
    settings.population_size = config_.population_size;
    settings.max_gain_per_generation = config_.governance.red_lines.max_gain_per_generation;
    settings.niches = config_.improvement.niches;
    settings.max_parameters = config_.limits.max_parameters;
    Commit c = commit_generation(
        generation, std::move(children), population_,
        [this](std::uint64_t id) -> const models::Genome& { return genomes_.at(id); }, settings, utc_now_iso());
    governance_.add_events(c.events);
    previous_population_ = std::move(population_);
    population_ = std::move(c.population);
    GenerationRecord record = std::move(c.record);
    record.next_model_id = next_id_;
    designer_.learn(record, duplicates_);
    for (auto& m : record.children) morphisms_.erase(m.id);
    // Keep parsed genomes of the population only.
    for (auto it = genomes_.begin(); it != genomes_.end();) {
      const bool member = std::any_of(population_.begin(), population_.end(), [&](auto& p) { return p.id == it->first; });
      it = member ? std::next(it) : genomes_.erase(it);
    }
    governance_.govern(record, govern, previous_population_, population_);
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
  Designer designer_;
  int duplicates_ = 0;  // designs redrawn in the generation in flight
  std::vector<int> leaders_;
  std::uint64_t next_id_ = 1;
  std::vector<ModelRecord> population_;
  std::map<std::uint64_t, models::Morphism> morphisms_;
  std::map<std::uint64_t, models::Genome> genomes_;  // parsed genomes of the population and the children in flight
  std::deque<Task> pending_;
  std::deque<int> idle_;
  std::map<std::uint64_t, TaskResult> results_;
  // Multi-fidelity: per child of the generation in flight, epochs reached and validation per rung.
  std::map<std::uint64_t, std::pair<std::vector<int>, std::vector<double>>> rungs_;
  // Governance: the controller, the generation waiting for a decision, what a rejection restores.
  GovernanceController governance_;
  std::optional<int> awaiting_;
  std::vector<ModelRecord> previous_population_;  // before the last commit
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

const char* failure_kind_name(ModelRecord::FailureKind k) {
  using K = ModelRecord::FailureKind;
  switch (k) {
    case K::None: return "";
    case K::Diverged: return "diverged";
    case K::OutOfMemory: return "out_of_memory";
    case K::Error: return "error";
    case K::DesignRefused: return "design_refused";
    case K::RedLine: return "red_line";
    case K::NotAdmitted: return "not_admitted";
  }
  return "error";
}

const char* status_name(ModelRecord::Status s) {
  switch (s) {
    case ModelRecord::Status::Trained: return "trained";
    case ModelRecord::Status::Failed: return "failed";
    case ModelRecord::Status::Refused: return "refused";
  }
  return "?";
}

std::string weights_digest(const Weights& w, bool format1_basis) {
  std::uint64_t h = format1_basis ? kernels::kFnv1aFormat1Offset : kernels::kFnv1aOffset;
  h = kernels::fnv1a64(w.params.data(), w.params.size() * sizeof(float), h);
  h = kernels::fnv1a64(w.state.data(), w.state.size() * sizeof(float), h);
  return kernels::fnv1a_hex(h);
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
