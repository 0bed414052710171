// What the loop produces: one ModelRecord per child (trained, failed or refused) and one
// GenerationRecord per generation, handed to GenerationSinks (HDF5 lineage, Prometheus, progress
// display, in-memory for tests). The scheduler never includes HDF5 or Prometheus headers.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace rsi::scheduler {

// A model's weights: the network's flat parameter buffer and its flat state (norm statistics).
struct Weights {
  std::vector<float> params, state;
};

struct ModelMetrics {
  double val_accuracy = 0.0;    // the ONLY selection signal
  double val_loss = 0.0;
  double test_accuracy = 0.0;   // hidden test set: reported, never selected on
  double test_loss = 0.0;
  std::vector<double> test_per_class;
  std::vector<double> val_per_class;
  std::int64_t parameters = 0;
  std::int64_t flops = 0;        // forward FLOPs per sample
  double wall_seconds = 0.0;     // training + evaluation time of the task
  std::int64_t samples = 0;      // training samples processed (distill + fine-tune)
  double pseudo_label_accuracy = -1.0;  // parent's labels on the unlabeled pool vs truth; < 0 when none
  double pseudo_label_entropy = -1.0;   // entropy (nats) of the parent's label histogram on that pool; < 0 when none
};

struct ModelRecord {
  std::uint64_t id = 0;
  int generation = 0;
  std::vector<std::uint64_t> parents;  // empty for seed models; two for crossover
  std::string genome_yaml;             // canonical text (includes the designer genes)
  std::string op = "seed";             // design operator that made it
  std::string description;             // e.g. "widen block 2 dense 128 -> 192"
  std::uint64_t designer_lineage = 0;  // id of the seed model its designer genes descend from
  enum class Status { Trained, Failed, Refused } status = Status::Trained;
  // Why it is not Trained, as a kind (what monitoring counts) and a reason (what people read).
  enum class FailureKind : std::uint8_t {
    None,           // trained
    Diverged,       // the loss became NaN or Inf
    OutOfMemory,    // training ran out of memory
    Error,          // training threw anything else
    DesignRefused,  // no design of the parent fits the design limits
    RedLine,        // over a red line before training (parameters, FLOPs)
    NotAdmitted,    // trained, but over the slow-down red line: kept out of selection
  } failure_kind = FailureKind::None;
  std::string failure;                 // reason, when not Trained
  bool inherited = false;              // started from the parent's weights
  bool function_preserving = false;    // ... through a function-preserving morphism
  double parent_val_accuracy = 0.0;    // of parents[0], for the design gain
  // The learned designer (predictor.h), when on: the gain it predicted for this design before it
  // was trained, and how many candidate designs its slot weighed (0: the predictor was not used).
  std::optional<double> predicted_gain;
  int candidates = 0;
  // Multi-fidelity rungs, when on: the epochs of fine-tuning reached at each rung and the
  // validation accuracy there (the last entry is the model's final one).
  std::vector<int> rung_epochs;
  std::vector<double> rung_val_accuracy;
  ModelMetrics metrics;
  std::string weights_digest;          // hex digest of params + state (FNV-1a 64)
  std::shared_ptr<const Weights> weights;  // kept while the model may be needed (population, sinks)

  double gain_over_parent() const { return metrics.val_accuracy - parent_val_accuracy; }
  bool trained() const { return status == Status::Trained; }
};
const char* status_name(ModelRecord::Status s);
// "diverged", "out_of_memory", "error", "design_refused", "red_line", "not_admitted" ("" for None).
const char* failure_kind_name(ModelRecord::FailureKind k);

// Something governance did or saw: a gate, an approval or rejection, a refused design, a stop, a
// monitor's alert. Recorded in the lineage (and its hash chain) in the order it happened.
struct GovernanceEvent {
  int generation = 0;
  std::string kind;        // e.g. "gate", "approved", "rejected", "red_line", "stop", "budget", "alert"
  std::uint64_t model_id = 0;  // the model it concerns; 0 when it concerns the generation
  std::string reason;      // human-readable: what triggered it, with the figures
  std::string who;         // user@host for human decisions; "rsi" for the loop's own
  std::string when;        // UTC ISO 8601 (left out of the determinism comparison)
};

struct GenerationRecord {
  int generation = 0;
  std::vector<ModelRecord> children;        // in model-id order
  std::vector<std::uint64_t> population;    // ids of the population after selection
  std::vector<ModelRecord> population_models;  // the same models, with weights (a resume needs them)
  std::uint64_t next_model_id = 1;          // the id the next designed child will get
  double best_val = 0.0, median_val = 0.0;  // over the population after selection
  double best_test = 0.0, median_test = 0.0;
  double best_model_test = 0.0;             // hidden-test accuracy of the best-by-validation model
  std::uint64_t best_id = 0;
  double gain = 0.0;                        // capability gain per loop: best_val now - best_val before
  double design_skill = 0.0;                // mean gain of this generation's trained children over their parent
  std::map<std::uint64_t, double> design_skill_by_lineage;  // same, grouped by designer lineage
  double diversity = 0.0;                   // population diversity (genome distance)
  int trained = 0, failed = 0, refused = 0;
  // Monitors (see DESIGN.md step 5), all on the hidden test set, never fed back into selection:
  double goodhart_gap = 0.0;           // best-by-validation model: validation minus hidden-test accuracy
  double worst_class_accuracy = 0.0;   // its lowest per-class hidden-test accuracy
  double class_disparity = 0.0;        // its max minus min per-class hidden-test accuracy
  double pseudo_label_accuracy = -1.0; // mean over trained children that distilled on the unlabeled pool; < 0 when none
  // Governance (scheduler/governance.h). Trends are least-squares slopes per generation over the
  // last monitors.trend_window generations; takeoff is "", "accelerating", "steady" or "saturating".
  double pseudo_label_entropy = -1.0;  // mean over the same children; < 0 when none
  double goodhart_trend = 0.0;
  double disparity_trend = 0.0;
  std::string takeoff;
  double model_seconds = 0.0;          // compute spent by the run so far (estimated, deterministic)
  std::string status = "completed";    // "completed" or "awaiting_approval" (a gate fired)
  // While awaiting approval the population also holds the members of the population before that
  // selection dropped (so a rejection can roll back to them); their ids, in id order.
  std::vector<std::uint64_t> held_for_rollback;
  std::vector<GovernanceEvent> events;
  double seconds = 0.0;                     // wall time of the generation
  double models_per_second = 0.0;
  // Self-improvement (LoopConfig::improvement), present when any part of it is on; stored and
  // chained only then, so lineages without it keep their files and digests.
  struct Improvement {
    int predictor_examples = 0;          // trained children the predictor had learned from at design time
    // Rank correlation (Spearman) of predicted and achieved validation gain over this generation's
    // trained children, predicted before any of them trained; NaN when under 3 were predicted.
    double predictor_rank_correlation = std::numeric_limits<double>::quiet_NaN();
    std::vector<double> predictor_weights;  // its coefficients after learning from this generation
    int duplicates = 0;                  // designs redrawn because they had been designed before
    int promoted = 0;                    // children promoted past the first rung
    int niches = 0;                      // niches the population covers
  };
  std::optional<Improvement> improvement;
};

class GenerationSink {
 public:
  virtual ~GenerationSink() = default;
  // Called once per generation on the coordinator, after selection, in generation order.
  virtual void on_generation(const GenerationRecord& record) = 0;
  // Called once when the run ends (normally or not), after the last generation.
  virtual void on_finish() {}
};

// Keeps every record (tests, summaries).
class MemorySink final : public GenerationSink {
 public:
  void on_generation(const GenerationRecord& record) override { records.push_back(record); }
  std::vector<GenerationRecord> records;
};

// FNV-1a 64 over the bytes of params then state, as 16 hex digits (kernels/fnv1a.h). With
// format1_basis, from the wrong offset basis lineage format 1 used (checkpoints/FORMAT.md): only to
// verify and continue lineages written in that format.
std::string weights_digest(const Weights& w, bool format1_basis = false);

}  // namespace rsi::scheduler
