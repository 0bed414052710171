// The loop's governance between commits, out of the coordinator: the compute budget's accounting,
// trends, takeoff, alerts and approval gates of each committed record, the events waiting for the
// next record (decisions, refused designs), and the wait for a human decision. No MPI, files or
// workers: tests/unit/test_governance.cpp drives it directly. The rules themselves are the pure
// functions of governance.h.
#pragma once

#include <optional>
#include <vector>

#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

class GovernanceController {
 public:
  explicit GovernanceController(const LoopConfig& config) : config_(config) {}

  // A resumed run: the summaries of the stored generations up to the resume point, in order. Returns
  // the resume point's generation when it awaits approval (the loop waits for its decision first).
  std::optional<int> restore(const std::vector<GenerationRecord>& stored, int resume_generation);

  // Events for the next record (a commit's refused designs, the designer's red lines).
  void add_events(const std::vector<GovernanceEvent>& events);

  // Budget accounting, trends, takeoff and — with `govern` (not on a record that only carries a
  // decision) — alerts, the budget event and the gates of a committed record, before any sink sees
  // it. A gated record gets status awaiting_approval and keeps the members of `previous` (the
  // population before this commit) that `current` (after it) dropped, held for a rollback.
  void govern(GenerationRecord& record, bool govern, const std::vector<ModelRecord>& previous,
              const std::vector<ModelRecord>& current);

  // Polls LoopConfig::poll_decision for `generation` until a decision comes, the approval timeout
  // passes (summary.awaiting_approval) or a stop is asked for (summary.stopped).
  std::optional<Decision> await_decision(int generation, LoopSummary& summary, const LoopEvents& events) const;

  // Queues the decision's event for the next record (a rejection's says the population was rolled
  // back: the caller does that). Returns true when the run must end (a rejection with
  // gates.on_reject: stop).
  bool record_decision(int generation, const Decision& d);

  // The compute budget (red_lines.compute_budget_model_seconds) is spent.
  bool budget_spent() const;
  double model_seconds() const { return model_seconds_; }
  // Summaries (no models) of the committed generations, resumed ones included.
  const std::vector<GenerationRecord>& history() const { return history_; }

  static constexpr const char* kAwaitingApproval = "awaiting_approval";

 private:
  const LoopConfig& config_;
  std::vector<GenerationRecord> history_;
  std::vector<GovernanceEvent> pending_events_;
  double model_seconds_ = 0.0;  // estimated compute spent so far
};

}  // namespace rsi::scheduler
