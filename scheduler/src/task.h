// A unit of work for a trainer group: one child to build, inherit, distill, fine-tune and
// evaluate — or, on the surrogate task, to score analytically — and its result.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"
#include "rsi/models/data.h"
#include "rsi/models/morphism.h"
#include "rsi/models/trainer.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

struct Task {
  std::uint64_t id = 0;
  int generation = 0;
  std::string genome_yaml;
  std::string parent_yaml;               // empty: no parent (seed models)
  std::shared_ptr<const Weights> parent_weights;
  models::Morphism morphism;             // how the child inherits from the parent
  double estimated_cost = 0.0;
  // Multi-fidelity rungs (ImprovementConfig::rungs): fine-tune `train_epochs` epochs (0: the
  // recipe's), after `done_epochs` already trained in an earlier rung; a promoted child continues
  // from its own `start_weights` (no parent, no distillation: it had both in its first rung).
  int train_epochs = 0;
  int done_epochs = 0;
  std::shared_ptr<const Weights> start_weights;
  // design.rungs.continue_schedule: the learning-rate schedule spans the child's whole training
  // (its distillation and all its epochs) across its rungs, and a later rung goes on where the
  // first stopped.
  bool continue_schedule = false;
  // The child's first rung distils from its parent (the coordinator decides: design.distill); in a
  // later rung, it did.
  bool distilled = false;
  // design.rungs.keep_optimizer: a first rung returns its optimizer's state, and the child's next
  // rung starts from it (`start_optimizer`) instead of fresh moments.
  bool keep_optimizer = false;
  std::shared_ptr<const models::OptimizerState> start_optimizer;
};

struct TaskResult {
  std::uint64_t id = 0;
  ModelRecord::Status status = ModelRecord::Status::Trained;
  ModelRecord::FailureKind failure_kind = ModelRecord::FailureKind::None;
  std::string failure;
  ModelMetrics metrics;
  bool inherited = false, function_preserving = false;
  std::shared_ptr<const Weights> weights;
  std::shared_ptr<const models::OptimizerState> optimizer;  // with Task::keep_optimizer
};

std::vector<std::byte> encode(const Task& t);
Task decode_task(const std::vector<std::byte>& bytes);
std::vector<std::byte> encode(const TaskResult& r);
TaskResult decode_result(const std::vector<std::byte>& bytes);

// The data every rank of a Fashion-MNIST run holds (loaded once per rank).
struct TaskData {
  models::Dataset labeled, unlabeled, validation, test;
};
std::unique_ptr<TaskData> load_task_data(const TaskSpec& spec, std::uint64_t seed);

// Runs a task on this rank's group (every rank of the group calls it with the same task). `poll`
// is called between training steps (the coordinator serves its workers there). Never throws for
// a child's own failure: that becomes a Failed result with its reason.
TaskResult execute_task(const Task& task, const LoopConfig& config, const TaskData* data,
                        collective::Communicator& group, const std::function<void()>& poll);

// Relative cost, for dispatching the largest tasks first; `distils`: with a distillation phase.
double estimate_cost(const models::Genome& genome, const TaskSpec& spec, bool distils);

}  // namespace rsi::scheduler
