// The loop's governance between commits (governance_controller.h).
#include "rsi/scheduler/governance_controller.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace rsi::scheduler {

namespace {

using Clock = std::chrono::steady_clock;

GenerationRecord summary_only(const GenerationRecord& r) {
  GenerationRecord out = r;
  out.children.clear();
  out.population_models.clear();
  return out;
}

}  // namespace

std::optional<int> GovernanceController::restore(const std::vector<GenerationRecord>& stored, int resume_generation) {
  for (const GenerationRecord& h : stored) history_.push_back(summary_only(h));
  if (history_.empty() || history_.back().generation != resume_generation) return std::nullopt;
  model_seconds_ = history_.back().model_seconds;
  if (history_.back().status == kAwaitingApproval) return resume_generation;
  return std::nullopt;
}

void GovernanceController::add_events(const std::vector<GovernanceEvent>& events) {
  pending_events_.insert(pending_events_.end(), events.begin(), events.end());
}

bool GovernanceController::budget_spent() const {
  const double budget = config_.governance.red_lines.compute_budget_model_seconds;
  return budget > 0 && model_seconds_ >= budget;
}

void GovernanceController::govern(GenerationRecord& record, bool govern, const std::vector<ModelRecord>& previous,
                                  const std::vector<ModelRecord>& current) {
  const GovernanceConfig& gov = config_.governance;
  const double spent_before = model_seconds_;
  for (const ModelRecord& m : record.children)
    model_seconds_ += estimated_model_seconds(m, config_.task.kind == TaskSpec::Kind::Surrogate,
                                              config_.task.surrogate_cost_seconds);
  record.model_seconds = model_seconds_;
  const std::size_t window = static_cast<std::size_t>(std::max(gov.monitors.trend_window, 2));
  std::vector<double> gaps, disparities, gains;
  for (const GenerationRecord& h : history_) {
    gaps.push_back(h.goodhart_gap);
    disparities.push_back(h.class_disparity);
    if (h.generation > 0) gains.push_back(h.gain);
  }
  gaps.push_back(record.goodhart_gap);
  disparities.push_back(record.class_disparity);
  if (record.generation > 0) gains.push_back(record.gain);
  auto last = [window](std::vector<double> v) {
    if (v.size() > window) v.erase(v.begin(), v.end() - static_cast<std::ptrdiff_t>(window));
    return v;
  };
  record.goodhart_trend = slope(last(gaps));
  record.disparity_trend = slope(last(disparities));
  record.takeoff = takeoff_estimate(last(gains));
  record.events = std::move(pending_events_);
  pending_events_.clear();
  const std::string now = utc_now_iso();
  if (govern) {
    for (std::string& alert : monitor_alerts(gov.monitors, record, config_.population_size))
      record.events.push_back(GovernanceEvent{record.generation, "alert", 0, std::move(alert), "rsi", now});
    const double budget = gov.red_lines.compute_budget_model_seconds;
    if (budget > 0 && model_seconds_ >= budget && spent_before < budget) {
      char why[200];
      std::snprintf(why, sizeof why,
                    "compute budget spent: %.3f of governance.red_lines.compute_budget_model_seconds %.3f "
                    "(estimated model-seconds); the run ends after this generation",
                    model_seconds_, budget);
      record.events.push_back(GovernanceEvent{record.generation, "budget", 0, why, "rsi", now});
    }
    const std::vector<std::string> triggers = gate_triggers(gov.gates, record);
    if (!triggers.empty()) {
      std::string why;
      for (const auto& t : triggers) why += (why.empty() ? "" : "; ") + t;
      record.events.push_back(GovernanceEvent{record.generation, "gate", 0,
                                              why + "; awaiting approval (rsi approve/reject RUN --generation " +
                                                  std::to_string(record.generation) + ")",
                                              "rsi", now});
      record.status = kAwaitingApproval;
      // The store links each population to the one before, so the members a rejection may bring
      // back stay in this population ("held") until the decision.
      for (const ModelRecord& m : previous)
        if (std::none_of(current.begin(), current.end(), [&](const ModelRecord& p) { return p.id == m.id; })) {
          record.held_for_rollback.push_back(m.id);
          record.population_models.push_back(m);
        }
      std::sort(record.population_models.begin(), record.population_models.end(),
                [](const ModelRecord& a, const ModelRecord& b) { return a.id < b.id; });
      std::sort(record.held_for_rollback.begin(), record.held_for_rollback.end());
      record.population.clear();
      for (const ModelRecord& m : record.population_models) record.population.push_back(m.id);
    }
  }
  history_.push_back(summary_only(record));
}

std::optional<Decision> GovernanceController::await_decision(int generation, LoopSummary& summary,
                                                             const LoopEvents& events) const {
  const GateConfig& gates = config_.governance.gates;
  if (events.on_approval_pending) events.on_approval_pending(generation, true);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(gates.approval_timeout_seconds));
  const auto poll = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::max(gates.poll_seconds, 0.001)));
  std::optional<Decision> decision;
  for (;;) {
    if (config_.poll_decision) decision = config_.poll_decision(generation);
    if (decision) break;
    if (config_.stop_requested && config_.stop_requested()) {
      summary.stopped = true;
      break;
    }
    const auto now = Clock::now();
    if (now >= deadline) {
      summary.awaiting_approval = true;
      summary.awaiting_generation = generation;
      break;
    }
    std::this_thread::sleep_for(std::min(poll, deadline - now));
  }
  if (events.on_approval_pending) events.on_approval_pending(generation, false);
  return decision;
}

bool GovernanceController::record_decision(int generation, const Decision& d) {
  GovernanceEvent e;
  e.generation = generation;
  e.kind = d.approved ? "approved" : "rejected";
  e.reason = d.reason;
  e.who = d.who;
  e.when = d.when;
  const bool stop = !d.approved && config_.governance.gates.on_reject == GateConfig::OnReject::Stop;
  if (!d.approved)
    e.reason += std::string(e.reason.empty() ? "" : "; ") + "population rolled back to the one before generation " +
                std::to_string(generation) + (stop ? "; the run ends (governance.gates.on_reject: stop)" : "");
  pending_events_.push_back(std::move(e));
  return stop;
}

}  // namespace rsi::scheduler
