// Governance: people stay in control of the loop and see what it optimises.
//   - approval gates: after a generation is committed, a trigger (gain, size, Goodhart gap, every N
//     generations) makes it durable as "awaiting_approval" and the coordinator waits for a person's
//     decision (`rsi approve` / `rsi reject`, a file in the run directory);
//   - red lines: designs that break a hard limit are refused before training; the compute budget
//     ends the run; a child that gains too much at once is not admitted ("slow down");
//   - monitors: Goodhart gap, model collapse, bias amplification and takeoff, with alerts.
// Everything here is deterministic except the wall-clock `when` of events, which the lineage keeps
// outside its hash chain. The scheduler's only file access is the decision files and the audit log
// of a run directory (below); the loop itself gets decisions through LoopConfig::poll_decision.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

// Every threshold is off at 0 (the default), so a manifest without `governance:` runs as before.
struct GateConfig {
  double max_gain = 0.0;                 // gate when a generation's gain exceeds this
  std::int64_t max_parameters = 0;       // ... when a trained child has more parameters
  std::int64_t max_flops = 0;            // ... when a trained child has more forward FLOPs per sample
  double max_goodhart_gap = 0.0;         // ... when the best model's validation - hidden test exceeds this
  int every_n_generations = 0;           // ... every N generations (N, 2N, ...)
  double approval_timeout_seconds = 3600.0;  // then the run exits (kExitAwaitingApproval) to be resumed
  double poll_seconds = 2.0;
  enum class OnReject { Rollback, Stop } on_reject = OnReject::Rollback;
  bool any() const {
    return max_gain > 0 || max_parameters > 0 || max_flops > 0 || max_goodhart_gap > 0 || every_n_generations > 0;
  }
};
const char* on_reject_name(GateConfig::OnReject r);

struct RedLines {
  std::int64_t max_parameters = 0;          // a designed child with more is refused before training
  std::int64_t max_flops_per_sample = 0;    // same, forward FLOPs per sample
  double compute_budget_model_seconds = 0;  // the run ends once its estimated compute reaches this
  double max_gain_per_generation = 0;       // a child gaining more over the population's best is not admitted
};

struct MonitorConfig {
  double goodhart_gap_alert = 0.0;          // alert when the best model's gap exceeds this
  double pseudo_label_accuracy_floor = 0.0; // collapse: alert when the parents' labels get less accurate
  double label_entropy_floor = 0.0;         // collapse: alert when the pseudo-label histogram's entropy (nats) falls below
  double diversity_floor = 0.0;             // collapse: alert when population diversity falls below
  double disparity_growth_alert = 0.0;      // bias: alert when the class-disparity trend (per generation) exceeds
  bool takeoff_alert = false;               // alert when the takeoff estimate reads "accelerating"
  int trend_window = 3;                     // generations in a trend (and in the takeoff estimate)
};

struct GovernanceConfig {
  GateConfig gates;
  RedLines red_lines;
  MonitorConfig monitors;
};

// A person's decision on a generation awaiting approval.
struct Decision {
  bool approved = false;
  std::string who;     // user@host
  std::string when;    // UTC ISO 8601
  std::string reason;
};

// ---- pure functions the loop uses (unit-tested on their own too) ----

// Why a designed child breaks a red line before training ("" when it breaks none).
std::string red_line_violation(const RedLines& lines, const models::GenomeStats& stats);

// Estimated compute of one child in model-seconds: the surrogate's configured cost per evaluation,
// or 3 x forward FLOPs x training samples at a nominal 1 GFLOP/s. An estimate, not wall time, so a
// budgeted run reproduces bit for bit.
double estimated_model_seconds(const ModelRecord& child, bool surrogate, double surrogate_cost_seconds);

// The reasons a committed generation triggers its approval gates (empty: no gate fires).
std::vector<std::string> gate_triggers(const GateConfig& gates, const GenerationRecord& record);

// Least-squares slope of `values` against their index (0 for fewer than two values).
double slope(const std::vector<double>& values);

// "accelerating", "steady" or "saturating" from the gains per loop of the last generations (oldest
// first); "" for fewer than two. Saturating: the mean gain is below 1e-3 or the gains fall by more
// than a quarter of their mean per generation; accelerating: they rise by more than that; else steady.
std::string takeoff_estimate(const std::vector<double>& gains);

// Entropy (nats) of a label histogram (counts per class).
double label_entropy(const std::vector<double>& counts);

// Alerts for a committed generation, given its monitors (trends and takeoff already filled in).
std::vector<std::string> monitor_alerts(const MonitorConfig& monitors, const GenerationRecord& record,
                                        int population_size);

// ---- the run directory's governance files ----

// user@host of this process (USER / LOGNAME / the passwd entry; gethostname).
std::string user_at_host();
std::string utc_now_iso();

// approvals/gen-NNNNNN.decision: written once, atomically (a hard link of a complete temporary
// file, which fails if a decision exists), read by the waiting coordinator and kept as a record.
std::filesystem::path decision_path(const std::filesystem::path& run_dir, int generation);
// Throws std::runtime_error when a decision for the generation exists already or cannot be written.
void write_decision(const std::filesystem::path& run_dir, int generation, const Decision& decision);
// Nothing when there is no decision yet; throws std::runtime_error on an unreadable one.
std::optional<Decision> read_decision(const std::filesystem::path& run_dir, int generation);

// audit.log: events that happen outside the loop's generations (a stop asked for and honoured, a
// decision written), one tab-separated line each, appended with O_APPEND. Not in the hash chain:
// the lineage of a stopped and resumed run stays identical to an uninterrupted one.
struct AuditEntry {
  std::string when, who;
  int generation = -1;
  std::string kind, reason;
};
inline constexpr const char* kAuditLogName = "audit.log";
void append_audit(const std::filesystem::path& run_dir, const AuditEntry& entry);
std::vector<AuditEntry> read_audit(const std::filesystem::path& run_dir);

}  // namespace rsi::scheduler
