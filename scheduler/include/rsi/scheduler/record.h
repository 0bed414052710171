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

// The one description of a model's metrics (the `metrics` group of /models/<id>, its
// `metrics_sha256` and `timing_sha256`, the worker's result on the wire): v(name, part, member&) for
// each, in the order the file stores them. Part: chained (in metrics_sha256); timing (wall time:
// timing_sha256, checked by verify, not chained); measured (chained only when >= 0, "none" being
// -1 — a field added after the format, absent from older files, which read it as -1).
enum class MetricPart : std::uint8_t { Chained, Timing, Measured };
template <class Metrics, class Visitor>  // Metrics: ModelMetrics or const ModelMetrics
void visit_metric_fields(Metrics& m, Visitor&& v) {
  using P = MetricPart;
  v("val_accuracy", P::Chained, m.val_accuracy);
  v("val_loss", P::Chained, m.val_loss);
  v("test_accuracy", P::Chained, m.test_accuracy);
  v("test_loss", P::Chained, m.test_loss);
  v("val_per_class", P::Chained, m.val_per_class);
  v("test_per_class", P::Chained, m.test_per_class);
  v("parameters", P::Chained, m.parameters);
  v("flops", P::Chained, m.flops);
  v("wall_seconds", P::Timing, m.wall_seconds);
  v("samples", P::Chained, m.samples);
  v("pseudo_label_accuracy", P::Chained, m.pseudo_label_accuracy);
  v("pseudo_label_entropy", P::Measured, m.pseudo_label_entropy);
}

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

// The one description of a model's lineage fields (attributes of /models/<id>, its
// `metadata_sha256`): v(name, part, member&) for each, in the digest's order. Part: Always;
// Predicted (present when the learned designer predicted this design: predicted_gain holds a
// value); Rungs (present when the model trained in multi-fidelity rungs: rung_epochs is not empty).
// A file stores and chains a part only where present, so lineages without it keep their digests.
enum class ModelPart : std::uint8_t { Always, Predicted, Rungs };
template <class Model, class Visitor>  // Model: ModelRecord or const ModelRecord
void visit_model_fields(Model& m, Visitor&& v) {
  using P = ModelPart;
  v("id", P::Always, m.id);
  v("generation", P::Always, m.generation);
  v("op", P::Always, m.op);
  v("description", P::Always, m.description);
  v("designer_lineage", P::Always, m.designer_lineage);
  v("status", P::Always, m.status);
  v("failure", P::Always, m.failure);
  v("inherited", P::Always, m.inherited);
  v("function_preserving", P::Always, m.function_preserving);
  v("parent_val_accuracy", P::Always, m.parent_val_accuracy);
  v("parents", P::Always, m.parents);
  v("predicted_gain", P::Predicted, m.predicted_gain);
  v("candidates", P::Predicted, m.candidates);
  v("rung_epochs", P::Rungs, m.rung_epochs);
  v("rung_val_accuracy", P::Rungs, m.rung_val_accuracy);
}
// Whether `m` has the fields of `part`.
inline bool has_part(const ModelRecord& m, ModelPart part) {
  return part == ModelPart::Always || (part == ModelPart::Predicted ? m.predicted_gain.has_value() : !m.rung_epochs.empty());
}
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
  // Metrics added after lineage format 2 (FieldGroup::Later): empty in files written before them.
  std::optional<std::int64_t> best_parameters;  // parameters of the best model by validation
  std::optional<std::int64_t> best_flops;       // its forward FLOPs per sample
};

// ---- The one description of a generation's summary fields ----
// GenerationRecord minus its models and events: name, part of the format, generations.tsv column,
// Prometheus gauge and meaning, described once below. The HDF5 root attributes, `summary_sha256`
// (checkpoints/FORMAT.md "Hashes"), generations.tsv, the exporter's per-generation gauges and
// FORMAT.md's attribute table are all driven from here, so nothing can store a field and forget to
// chain it.
//
// To add a metric: declare it in GenerationRecord above as std::optional<T> (T: double or
// std::int64_t), add its line at the end of visit_generation_fields with FieldGroup::Later and
// `since` one above the last field's, and set it where the record is produced
// (scheduler/src/commit.cpp for most). Then regenerate FORMAT.md's table (RSI_UPDATE_DOCS=1
// build/tests/test_checkpoints --gtest_filter=Format.*). Files written before it lack the
// attribute, read it as empty and keep their digests; files written after chain it. A lineage
// keeps the summary revision it started with (its files' `summary_revision`), so a resume or an
// `rsi reproduce` of an older lineage leaves the newer fields out and ends in its own hashes.

// Where a field sits in the lineage format. The order of the groups is the order of the summary
// digest: Core, Governance (then one line per governance event), Improvement, Later.
enum class FieldGroup : std::uint8_t {
  Core,         // every file; chained
  Timing,       // every file; wall time, chained with the run attributes instead (run_sha256)
  Governance,   // files with a `status` (every rsi since governance); chained
  Improvement,  // runs with a self-improvement switch on (GenerationRecord::improvement); chained
  Later,        // added after format 2: std::optional, stored and chained only where present
};

struct FieldInfo {
  const char* name;   // HDF5 root attribute, digest key, generations.tsv column, Python column
  FieldGroup group;
  const char* tsv;    // printf format of its generations.tsv column; nullptr: not a column
  const char* gauge;  // Prometheus gauge (monitoring/README.md); nullptr: not exported as one
  const char* doc;    // its meaning, as FORMAT.md's table shows it
  int since = 0;      // FieldGroup::Later: the summary revision that added it (1, 2, ...); 0 otherwise
};

// Calls v(FieldInfo, member&) for each field of `g`, in the order the file stores them. Record is
// GenerationRecord or const GenerationRecord. The Improvement fields are visited only when
// g.improvement holds a value (a reader emplaces it first when the file has them).
// design_skill_by_lineage is one member stored as two attributes (design_skill_lineages and
// design_skill_values, parallel arrays); every other member is one attribute.
template <class Record, class Visitor>
void visit_generation_fields(Record& g, Visitor&& v) {
  using G = FieldGroup;
  v(FieldInfo{"generation", G::Core, "%d", nullptr, "N (the file name says the same)"}, g.generation);
  v(FieldInfo{"population", G::Core, nullptr, nullptr, "ids of the population after selection"}, g.population);
  v(FieldInfo{"next_model_id", G::Core, nullptr, nullptr, "the id the next designed child gets"}, g.next_model_id);
  v(FieldInfo{"best_val", G::Core, "%.6f", nullptr, "best validation accuracy over the population"}, g.best_val);
  v(FieldInfo{"median_val", G::Core, "%.6f", nullptr, "median validation accuracy over the population"},
    g.median_val);
  v(FieldInfo{"best_test", G::Core, "%.6f", nullptr, "best hidden-test accuracy over the population"},
    g.best_test);
  v(FieldInfo{"median_test", G::Core, "%.6f", nullptr, "median hidden-test accuracy over the population"},
    g.median_test);
  v(FieldInfo{"best_model_test", G::Core, "%.6f", "rsi_best_model_hidden_test_accuracy_ratio",
              "hidden-test accuracy of the best model by validation"},
    g.best_model_test);
  v(FieldInfo{"best_id", G::Core, "%llu", nullptr, "best model by validation accuracy"}, g.best_id);
  v(FieldInfo{"gain", G::Core, "%+.6f", "rsi_capability_gain_ratio",
              "capability gain of the loop: best validation accuracy now minus one generation before"},
    g.gain);
  v(FieldInfo{"design_skill", G::Core, "%+.6f", "rsi_design_skill_ratio",
              "mean validation gain of this generation's trained children over their parent"},
    g.design_skill);
  v(FieldInfo{"design_skill_lineages", G::Core, nullptr, nullptr,
              "design skill by designer lineage: `design_skill_lineages` (uint64[], seed ids) and "
              "`design_skill_values` (float64[]), parallel arrays"},
    g.design_skill_by_lineage);
  v(FieldInfo{"diversity", G::Core, "%.4f", "rsi_population_diversity",
              "mean pairwise genome distance of the population"},
    g.diversity);
  v(FieldInfo{"trained", G::Core, "%d", nullptr, "children of this generation that trained"}, g.trained);
  v(FieldInfo{"failed", G::Core, "%d", nullptr, "children that failed (a kind and a reason each)"}, g.failed);
  v(FieldInfo{"refused", G::Core, "%d", nullptr, "children refused before training (design limits, red lines)"},
    g.refused);
  v(FieldInfo{"seconds", G::Timing, "%.2f", "rsi_generation_duration_seconds", "wall time of the generation"},
    g.seconds);
  v(FieldInfo{"models_per_second", G::Timing, nullptr, "rsi_models_per_second",
              "models finished per second of the generation's wall time"},
    g.models_per_second);
  v(FieldInfo{"status", G::Governance, nullptr, nullptr,
              "`completed`, or `awaiting_approval` when an approval gate fired on this generation"},
    g.status);
  v(FieldInfo{"goodhart_gap", G::Governance, "%.6f", "rsi_goodhart_gap_ratio",
              "best model by validation: validation minus hidden-test accuracy"},
    g.goodhart_gap);
  v(FieldInfo{"worst_class_accuracy", G::Governance, "%.6f", "rsi_worst_class_accuracy_ratio",
              "the best model's lowest per-class hidden-test accuracy"},
    g.worst_class_accuracy);
  v(FieldInfo{"class_disparity", G::Governance, "%.6f", "rsi_class_disparity_ratio",
              "the best model's max minus min per-class hidden-test accuracy"},
    g.class_disparity);
  v(FieldInfo{"pseudo_label_accuracy", G::Governance, "%.6f", nullptr,
              "collapse monitor: mean accuracy of the parents' labels on the unlabeled pool over the "
              "children that distilled on it (`< 0`: none)"},
    g.pseudo_label_accuracy);
  v(FieldInfo{"pseudo_label_entropy", G::Governance, "%.6f", nullptr,
              "collapse monitor: mean entropy (nats) of those labels' histogram (`< 0`: none)"},
    g.pseudo_label_entropy);
  v(FieldInfo{"goodhart_trend", G::Governance, "%+.6f", nullptr,
              "least-squares slope per generation of the Goodhart gap over the last "
              "`monitors.trend_window` generations"},
    g.goodhart_trend);
  v(FieldInfo{"disparity_trend", G::Governance, "%+.6f", nullptr,
              "the same slope of the class disparity"},
    g.disparity_trend);
  v(FieldInfo{"takeoff", G::Governance, nullptr, nullptr, "`\"\"`, `accelerating`, `steady` or `saturating`"},
    g.takeoff);
  v(FieldInfo{"model_seconds", G::Governance, "%.1f", nullptr,
              "estimated compute the run has spent, this generation included (the budget's accounting)"},
    g.model_seconds);
  v(FieldInfo{"held_for_rollback", G::Governance, nullptr, nullptr,
              "while awaiting approval: members of the previous population that selection dropped, kept in "
              "`population` so a rejection can return to them"},
    g.held_for_rollback);
  if (g.improvement) {
    auto& i = *g.improvement;
    v(FieldInfo{"predictor_examples", G::Improvement, "%d", nullptr,
                "trained children the learned designer had learned from when it ranked this generation's designs "
                "(0 with the predictor off)"},
      i.predictor_examples);
    v(FieldInfo{"predictor_rank_correlation", G::Improvement, "%.6f", "rsi_predictor_rank_correlation",
                "Spearman correlation of predicted and achieved validation gain over this generation's trained "
                "children, predicted before any of them trained; NaN when fewer than 3 had a prediction"},
      i.predictor_rank_correlation);
    v(FieldInfo{"predictor_weights", G::Improvement, nullptr, nullptr,
                "its ridge-regression coefficients after learning from this generation (empty with the predictor "
                "off); `scheduler/predictor.h` lists the features in order"},
      i.predictor_weights);
    v(FieldInfo{"duplicates", G::Improvement, "%d", nullptr,
                "designs redrawn because the same architecture and recipe had been designed before"},
      i.duplicates);
    v(FieldInfo{"promoted", G::Improvement, "%d", nullptr, "children promoted past the first multi-fidelity rung"},
      i.promoted);
    v(FieldInfo{"niches", G::Improvement, "%d", nullptr,
                "niches (log-parameter bin x depth bin) the population covers (0 with niches off)"},
      i.niches);
  }
  v(FieldInfo{"best_parameters", G::Later, "%lld", "rsi_best_model_parameters",
              "parameters of the best model by validation (capability against size, generation by generation)", 1},
    g.best_parameters);
  v(FieldInfo{"best_flops", G::Later, "%lld", "rsi_best_model_flops",
              "forward FLOPs per sample of the best model by validation (capability against inference cost)", 2},
    g.best_flops);
}

// FieldInfo of every field, a record with every group present being visited (documentation, tests,
// the exporter's registration).
std::vector<FieldInfo> generation_fields();
// checkpoints/FORMAT.md's table of these fields (Markdown), generated from the list above.
std::string generation_fields_markdown();
// The newest summary revision: the highest `since` of the fields (0 while there are no Later ones).
int current_summary_revision();
// Empties the Later fields of `g` that revision `revision` does not have.
void drop_fields_after(GenerationRecord& g, int revision);

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
