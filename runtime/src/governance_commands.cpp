// Governance commands: `rsi approve` / `rsi reject` (a decision on a generation awaiting approval),
// `rsi stop` (the kill switch) and `rsi audit` (every governance event of a run, in order).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"
#include "rsi/scheduler/governance.h"
#include "audit_events.h"
#include "json_out.h"
#include "lineage_graph.h"  // guarded

namespace rsi::runtime {

namespace {

namespace fs = std::filesystem;

// The newest generation file of a run, read (throws CheckpointError naming the file).
checkpoints::StoredGeneration latest_generation(const std::string& run) {
  const auto files = checkpoints::generation_files(run);
  if (files.empty())
    throw checkpoints::CheckpointError(run + ": no generation files (gen-NNNNNN.h5): is this a run directory?");
  return checkpoints::read_generation(files.back());
}

int decide(const std::string& run, int generation, const std::string& reason, bool approved) {
  checkpoints::StoredGeneration latest;
  try {
    latest = latest_generation(run);
  } catch (const checkpoints::CheckpointError& e) {
    log_error(e.what());
    return kExitBadInput;
  }
  if (latest.generation != generation || latest.record.status != "awaiting_approval") {
    logf(LogLevel::Error,
         "%s: generation %d is not awaiting approval (the latest durable generation is %d, status '%s'); `rsi "
         "audit %s` shows the gates and decisions",
         run.c_str(), generation, latest.generation, latest.record.status.c_str(), run.c_str());
    return kExitUsage;
  }
  scheduler::Decision d;
  d.approved = approved;
  d.who = scheduler::user_at_host();
  d.when = scheduler::utc_now_iso();
  d.reason = reason;
  try {
    scheduler::write_decision(run, generation, d);
  } catch (const std::runtime_error& e) {
    log_error(e.what());
    return kExitUsage;
  }
  try {
    scheduler::append_audit(run, {d.when, d.who, generation, approved ? "approval_written" : "rejection_written",
                                  reason});
  } catch (const std::runtime_error& e) {
    logf(LogLevel::Warning, "%s (the decision itself is written)", e.what());
  }
  std::printf("%s generation %d of %s as %s at %s: %s\n"
              "the waiting run records it in the lineage within governance.gates.poll_seconds (or when it is next "
              "started)\n",
              approved ? "approved" : "rejected", generation, run.c_str(), d.who.c_str(), d.when.c_str(),
              scheduler::decision_path(run, generation).string().c_str());
  return kExitOk;
}

int stop(const std::string& run, const std::string& reason) {
  const std::string who = scheduler::user_at_host(), when = scheduler::utc_now_iso();
  const fs::path file = fs::path(run) / kStopFileName;
  {
    std::ofstream out(file);
    out << who << "\t" << when << "\t" << reason << "\n";
    if (!out) {
      logf(LogLevel::Error, "%s: cannot write the stop file; is the run directory writable?", file.string().c_str());
      return kExitBadInput;
    }
  }
  try {
    scheduler::append_audit(run, {when, who, -1, "stop_requested", reason});
  } catch (const std::runtime_error& e) {
    logf(LogLevel::Warning, "%s (the stop file is written)", e.what());
  }
  std::printf("asked %s to stop (%s): the run stops at its next generation boundary with exit code %d, its last "
              "generation durable; the same `rsi run` command resumes it\n",
              run.c_str(), file.string().c_str(), kExitStopped);
  return kExitOk;
}

std::string clean(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n') c = ' ';
  return s;
}

std::string audit_json(const std::string& run, const AuditTrail& trail) {
  std::vector<std::string> events, problems;
  for (const auto& e : trail.events) {
    JsonObject o;
    o.optional_text("when", e.when.empty() ? std::nullopt : std::optional<std::string>(e.when));
    o.count_or_null("generation", e.generation);
    if (e.model) o.id("model", e.model);
    else o.null("model");
    o.text("kind", e.kind).text("who", e.who).text("reason", e.reason);
    o.optional_text("provenance", e.from_audit_log ? std::nullopt : std::optional<std::string>(e.provenance));
    o.text("source", e.from_audit_log ? "audit.log" : "lineage");
    events.push_back(o.str());
  }
  for (const auto& p : trail.problems) problems.push_back(monitoring::json_string(p));
  JsonObject o;
  o.text("run", run).integer("generation_files", trail.files).count_or_null("latest_generation", trail.latest_generation);
  o.text("latest_status", trail.latest_status).raw("events", json_array(events)).raw("problems", json_array(problems));
  return o.str();
}

int audit(const std::string& run, bool json) {
  const AuditTrail trail = audit_trail(run);
  if (json) {
    std::printf("%s\n", audit_json(run, trail).c_str());
    return trail.problems.empty() ? kExitOk : kExitFailure;
  }
  for (const auto& p : trail.problems)
    logf(LogLevel::Warning, "%s (its events are missing below; run rsi verify)", p.c_str());
  std::printf("when\tgeneration\tmodel\tkind\twho\treason\tprovenance\n");
  for (const auto& l : trail.events)
    std::printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.when.empty() ? "-" : l.when.c_str(),
                l.generation < 0 ? "-" : std::to_string(l.generation).c_str(),
                l.model ? std::to_string(l.model).c_str() : "-", l.kind.c_str(), clean(l.who).c_str(),
                clean(l.reason).c_str(), l.provenance.c_str());
  std::printf("# %zu event(s) in %d generation file(s); the latest, generation %d, is %s\n", trail.events.size(),
              trail.files, trail.latest_generation, trail.latest_status.c_str());
  return trail.problems.empty() ? kExitOk : kExitFailure;
}

}  // namespace

AuditTrail audit_trail(const fs::path& run) {
  const auto files = checkpoints::generation_files(run);
  if (files.empty())
    throw checkpoints::CheckpointError(run.string() + ": no generation files (gen-NNNNNN.h5): is this a run directory?");
  AuditTrail trail;
  trail.files = static_cast<int>(files.size());
  std::vector<AuditEvent> lines;
  for (const auto& file : files) {
    checkpoints::StoredGeneration g;
    try {
      g = checkpoints::read_generation(file, /*weights=*/false);
    } catch (const checkpoints::CheckpointError& e) {
      trail.problems.push_back(e.what());
      continue;
    }
    trail.latest_generation = g.generation;
    trail.latest_status = g.record.status.empty() ? "completed" : g.record.status;
    std::map<std::uint64_t, std::string> provenance;
    for (const auto& m : g.models) provenance[m.record.id] = m.provenance_hash;
    std::map<std::uint64_t, bool> has_event;
    for (const auto& e : g.record.events) {
      AuditEvent l{e.when, e.generation, e.model_id, e.kind, e.who, e.reason, "", false};
      l.provenance = e.model_id && provenance.count(e.model_id) ? provenance[e.model_id] : g.generation_hash;
      if (e.model_id) has_event[e.model_id] = true;
      lines.push_back(std::move(l));
    }
    // Designs the design limits refused (no red line involved) are governance data too.
    for (const auto& m : g.models)
      if (m.record.status == scheduler::ModelRecord::Status::Refused && !has_event[m.record.id])
        lines.push_back({"", g.generation, m.record.id, "refused", "rsi", m.record.failure, m.provenance_hash, false});
  }
  // Events outside the lineage (stops, decisions as written) go in by time, after lineage events of the
  // same second.
  const auto log = scheduler::read_audit(run);
  const auto from_log = [](const scheduler::AuditEntry& e) {
    return AuditEvent{e.when, e.generation, 0, e.kind, e.who, e.reason, "(audit.log, not in the hash chain)", true};
  };
  std::size_t next = 0;
  for (auto& l : lines) {
    while (next < log.size() && !l.when.empty() && log[next].when < l.when) trail.events.push_back(from_log(log[next++]));
    trail.events.push_back(std::move(l));
  }
  for (; next < log.size(); ++next) trail.events.push_back(from_log(log[next]));
  return trail;
}

void add_governance_commands(CLI::App& app, std::function<int()>& run) {
  for (const bool approved : {true, false}) {
    struct A {
      std::string dir, reason;
      int generation = -1;
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand(
        approved ? "approve" : "reject",
        approved ? "Approve a generation that awaits approval (a governance gate fired): the waiting run goes on.\n"
                   "Records who (user@host), when and why in the lineage's hash chain."
                 : "Reject a generation that awaits approval: the population rolls back to the one before it, and\n"
                   "the run goes on or ends (governance.gates.on_reject). Records who, when and why in the lineage.");
    cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
    cmd->add_option("--generation", a->generation, "The generation awaiting approval")->required();
    cmd->add_option("--reason", a->reason, "Why (recorded in the lineage)")->required();
    cmd->callback([&run, a, approved] {
      run = [a, approved] {
        return guarded(approved ? "approve" : "reject",
                       [&] { return decide(a->dir, a->generation, a->reason, approved); });
      };
    });
  }
  {
    struct A {
      std::string dir, reason = "stop requested";
    };
    auto a = std::make_shared<A>();
    CLI::App* cmd = app.add_subcommand(
        "stop", "The kill switch: ask a running `rsi run` to stop at its next generation boundary (exit code 4), its\n"
                "last generation durable; the same command resumes it. Works while it waits for an approval too.");
    cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
    cmd->add_option("--reason", a->reason, "Why (recorded in the run's audit.log)")->capture_default_str();
    cmd->callback([&run, a] { run = [a] { return stop(a->dir, a->reason); }; });
  }
  {
    auto dir = std::make_shared<std::string>();
    auto json = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand(
        "audit", "Every governance event of a run, in order: gates, approvals, rejections, refused designs (red lines\n"
                 "and design limits), the budget, monitor alerts, stops; with who, when, why and provenance (tab-separated).");
    cmd->add_option("run", *dir, "Run directory")->required()->check(existing_directory());
    cmd->add_flag("--json", *json,
                  "One JSON object: run, generation_files, latest_generation, latest_status, events (in order; each\n"
                  "when, generation, model, kind, who, reason, provenance, source: lineage or audit.log), problems");
    cmd->callback([&run, dir, json] { run = [dir, json] { return guarded("audit", [&] { return audit(*dir, *json); }); }; });
  }
}

}  // namespace rsi::runtime
