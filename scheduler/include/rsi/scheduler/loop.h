// The RSI loop. Every rank of the job calls run_loop(); the world is split into trainer groups of
// `group_size` ranks. Rank 0 coordinates (and trains with its own group between messages); the
// leaders of the other groups pull tasks. See ../../../../shared/DESIGN.md for the data flow.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"
#include "rsi/models/data.h"
#include "rsi/models/genome.h"
#include "rsi/models/image_files.h"
#include "rsi/scheduler/design.h"
#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

struct TaskSpec {
  enum class Kind { FashionMnist, Surrogate, Images } kind = Kind::FashionMnist;
  // fashion_mnist
  std::string data_dir = models::kFashionMnistDir;
  // images: any image-classification data set in files (models/image_files.h). The split cuts the
  // training part; the test part is the hidden test set.
  models::ImageFiles train_files, test_files;
  models::ImageLayout layout = models::ImageLayout::Auto;
  std::vector<std::string> class_names;  // optional; their number sets the classes when given
  // The networks' input: Fashion-MNIST's (1x28x28, 10 classes) unless the task is `images`, whose
  // manifest loader reads it from the data (channels, size; classes from the labels or the names).
  models::InputSpec input;
  models::SplitSizes split{20'000, 10'000, 5'000};
  // surrogate: an analytic capability landscape over the genome (see surrogate.h)
  double surrogate_cost_seconds = 0.05;
  double surrogate_noise = 0.005;
  // Surrogate only, off by default (so existing surrogate lineages are unchanged), for governance
  // studies and tests: per-class hidden-test accuracies spread by this much times the model's
  // capability above 0.8 (bias that grows as models improve), and children of a parent report the
  // parent's noise-free pseudo-label accuracy and label entropy.
  double surrogate_class_skew = 0.0;
  bool surrogate_pseudo_labels = false;
  // Surrogate only, off by default: design payoffs that drift over generations (surrogate.h).
  double surrogate_drift = 0.0;
  int surrogate_drift_period = 10;
};

enum class SelectionKind { Truncation, Tournament, Aging };
const char* selection_name(SelectionKind k);

// How the loop improves itself (manifest `design:`), and the switches that take each part away
// for ablation studies. Everything is off by default, so a manifest without these keys (and every
// lineage written before them) designs exactly as before; experiments/quickstart.yaml turns them on.
struct ImprovementConfig {
  enum class Strategy { Evolved, Random } strategy = Strategy::Evolved;  // random: uniform operators, no genes
  bool freeze_genes = false;   // designer genes stay at their seed values
  bool deduplicate = false;    // no design trained twice: a duplicate is redesigned (and counted)
  bool extended_recipe = false;  // the learning-rate schedule operator joins the design operators
  // Which children distil from their parent before fine-tuning. Always (as lineages before this key
  // did): every child with a parent. FunctionChanged: only a child whose design changed its parent's
  // function (a fresh block, a removed or narrowed one, a smaller kernel, crossover); a
  // function-preserving child starts as its parent, so its parent's soft labels would teach it what
  // it already computes.
  enum class Distill { Always, FunctionChanged } distill = Distill::Always;
  int redesign_attempts = 8;   // draws per child slot before a duplicate is refused
  struct Predictor {
    bool enabled = false;      // the learned designer (predictor.h) screens candidate designs
    int candidates = 4;        // designs proposed per child slot and ranked by the predictor
    int min_examples = 8;      // trained children it must have seen before it ranks anything
    double ridge = 1.0;
    // Screening only while the predictor has earned it: the mean of its last 3 per-generation rank
    // correlations (each measured before it learned from that generation) is at least this. It keeps
    // predicting (and being measured) while it may not screen. -1 (the default): no such test.
    double min_correlation = -1.0;
  } predictor;
  struct Rungs {
    bool enabled = false;      // multi-fidelity: every child first trains `first_epochs` epochs
    int first_epochs = 1;
    double promote = 0.5;      // the best fraction of that rung (by validation) trains the rest
    // One learning-rate schedule over a child's whole training, the second rung going on where the
    // first stopped (steps, shuffles, augmentation); off: each rung runs its own schedule from the
    // top (as lineages before this key did).
    bool continue_schedule = false;
    // The second rung starts from the optimizer state the first ended with (Adam's moments and step
    // count, SGD's momentum), kept in memory within the generation; off: fresh moments, as before.
    bool keep_optimizer = false;
  } rungs;
  struct Niches {
    bool enabled = false;      // selection keeps the best model of every niche first (quality-diversity)
    int parameter_bins = 4;    // niches: log-parameter bins over [1e3, max_parameters] x depth bins
    int depth_bins = 3;        // depth (weighted blocks) 1-2, 3-4, 5+
  } niches;
  bool any() const {
    return strategy != Strategy::Evolved || freeze_genes || deduplicate || extended_recipe || predictor.enabled ||
           rungs.enabled || niches.enabled;
  }
};
const char* strategy_name(ImprovementConfig::Strategy s);

struct LoopConfig {
  std::uint64_t seed = 0;
  int generations = 5;              // generations after the seed generation (generation 0)
  int population_size = 4;
  int children_per_generation = 4;
  SelectionKind selection = SelectionKind::Truncation;
  int tournament_size = 3;
  DesignLimits limits;
  std::vector<models::Genome> seeds;  // generation 0
  TaskSpec task;
  ImprovementConfig improvement;
  int group_size = 1;
  int threads_per_rank = 1;
  // Weight digests from lineage format 1's FNV offset basis: set when resuming a lineage written in
  // that format, so that it goes on as it started (checkpoints/FORMAT.md, "Format versions").
  bool format1_weights_digest = false;
  // Polled on the coordinator at every generation boundary (after the last generation is durable in
  // the sinks): true ends the run there, cleanly (kill switch, preemption). Workers follow the
  // coordinator's stop, so all ranks agree on where the run ended.
  std::function<bool()> stop_requested;
  GovernanceConfig governance;  // gates, red lines and monitors: all off by default
  // Polled on the coordinator while a generation awaits approval (every gates.poll_seconds, up to
  // gates.approval_timeout_seconds): a decision, or nothing yet. runtime reads the run directory's
  // decision files (governance.h); tests answer directly.
  std::function<std::optional<Decision>(int generation)> poll_decision;
};

// Called on rank 0 when a task is dispatched or finishes (progress display).
struct LoopEvents {
  std::function<void(int generation, int total_tasks)> on_generation_start;
  std::function<void(const ModelRecord&)> on_model_done;
  // True once a gated generation is durable and the coordinator starts waiting for a decision;
  // false when a decision arrived or the wait ended (timeout, stop).
  std::function<void(int generation, bool pending)> on_approval_pending;
};

struct LoopSummary {
  int generations_done = 0;
  bool stopped = false;  // ended early by stop_requested (a resume continues from there)
  // The last durable generation awaits approval and no decision came within the timeout: exit with
  // kExitAwaitingApproval; the same command resumes and waits again.
  bool awaiting_approval = false;
  int awaiting_generation = -1;
  // Why governance ended the run before its last generation: "budget" (compute budget spent) or
  // "rejected" (gates.on_reject: stop); "" otherwise. Such an end is clean and final.
  std::string ended_by;
  std::uint64_t best_id = 0;
  double best_val = 0.0, best_test = 0.0;
};

// Where a resumed run continues: the state after its last durable generation.
struct ResumeState {
  int generation = -1;                     // last durable generation
  std::uint64_t next_model_id = 1;
  std::vector<ModelRecord> population;     // with weights
  // Governance state: the summaries of the durable generations up to `generation` (oldest first;
  // models are not needed): trends, budget, and a pending approval with its rollback population.
  std::vector<GenerationRecord> history;
};

// Runs seeds + `generations` generations (or, with `resume`, the generations after
// resume->generation). Collective over `world`. Sinks and events are used on
// rank 0 only; other ranks return an empty summary. Throws on coordinator invariants only; a
// child's failure becomes a failed ModelRecord.
LoopSummary run_loop(const LoopConfig& config, collective::Communicator& world,
                     const std::vector<GenerationSink*>& sinks, const LoopEvents& events = {},
                     const ResumeState* resume = nullptr);

}  // namespace rsi::scheduler
