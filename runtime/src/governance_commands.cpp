// Governance commands: `rsi approve` / `rsi reject` (a decision on a generation awaiting approval),
// `rsi stop` (the kill switch) and `rsi audit` (every governance event of a run, in order).
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/runtime/commands.h"
#include "rsi/scheduler/governance.h"

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
  const char* verb = approved ? "approve" : "reject";
  checkpoints::StoredGeneration latest;
  try {
    latest = latest_generation(run);
  } catch (const checkpoints::CheckpointError& e) {
    std::fprintf(stderr, "rsi %s: %s\n", verb, e.what());
    return kExitBadInput;
  }
  if (latest.generation != generation || latest.record.status != "awaiting_approval") {
    std::fprintf(stderr,
                 "rsi %s: %s: generation %d is not awaiting approval (the latest durable generation is %d, status "
                 "'%s'); `rsi audit %s` shows the gates and decisions\n",
                 verb, run.c_str(), generation, latest.generation, latest.record.status.c_str(), run.c_str());
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
    std::fprintf(stderr, "rsi %s: %s\n", verb, e.what());
    return kExitUsage;
  }
  try {
    scheduler::append_audit(run, {d.when, d.who, generation, approved ? "approval_written" : "rejection_written",
                                  reason});
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "rsi %s: warning: %s (the decision itself is written)\n", verb, e.what());
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
      std::fprintf(stderr, "rsi stop: %s: cannot write the stop file; is the run directory writable?\n",
                   file.string().c_str());
      return kExitBadInput;
    }
  }
  try {
    scheduler::append_audit(run, {when, who, -1, "stop_requested", reason});
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "rsi stop: warning: %s (the stop file is written)\n", e.what());
  }
  std::printf("asked %s to stop (%s): the run stops at its next generation boundary with exit code %d, its last "
              "generation durable; the same `rsi run` command resumes it\n",
              run.c_str(), file.string().c_str(), kExitStopped);
  return kExitOk;
}

struct AuditLine {
  std::string when;
  int generation = -1;
  std::uint64_t model = 0;
  std::string kind, who, reason, provenance;
};

std::string clean(std::string s) {
  for (char& c : s)
    if (c == '\t' || c == '\n') c = ' ';
  return s;
}

int audit(const std::string& run) {
  const auto files = checkpoints::generation_files(run);
  if (files.empty()) {
    std::fprintf(stderr, "rsi audit: %s: no generation files (gen-NNNNNN.h5): is this a run directory?\n", run.c_str());
    return kExitBadInput;
  }
  std::vector<AuditLine> lines;
  int problems = 0;
  for (const auto& file : files) {
    checkpoints::StoredGeneration g;
    try {
      g = checkpoints::read_generation(file);
    } catch (const checkpoints::CheckpointError& e) {
      std::fprintf(stderr, "rsi audit: warning: %s (its events are missing below; run rsi verify)\n", e.what());
      ++problems;
      continue;
    }
    std::map<std::uint64_t, std::string> provenance;
    for (const auto& m : g.models) provenance[m.record.id] = m.provenance_hash;
    std::map<std::uint64_t, bool> has_event;
    for (const auto& e : g.record.events) {
      AuditLine l{e.when, e.generation, e.model_id, e.kind, e.who, e.reason, ""};
      l.provenance = e.model_id && provenance.count(e.model_id) ? provenance[e.model_id] : g.generation_hash;
      if (e.model_id) has_event[e.model_id] = true;
      lines.push_back(std::move(l));
    }
    // Designs the design limits refused (no red line involved) are governance data too.
    for (const auto& m : g.models)
      if (m.record.status == scheduler::ModelRecord::Status::Refused && !has_event[m.record.id])
        lines.push_back({"", g.generation, m.record.id, "refused", "rsi", m.record.failure, m.provenance_hash});
  }
  // Events outside the lineage (stops, decisions as written) go in by time, after lineage events of the
  // same second.
  std::vector<AuditLine> merged;
  const auto log = scheduler::read_audit(run);
  std::size_t next = 0;
  for (const auto& l : lines) {
    while (next < log.size() && !l.when.empty() && log[next].when < l.when) {
      const auto& e = log[next++];
      merged.push_back({e.when, e.generation, 0, e.kind, e.who, e.reason, "(audit.log, not in the hash chain)"});
    }
    merged.push_back(l);
  }
  for (; next < log.size(); ++next) {
    const auto& e = log[next];
    merged.push_back({e.when, e.generation, 0, e.kind, e.who, e.reason, "(audit.log, not in the hash chain)"});
  }
  const auto head = checkpoints::read_generation(files.back());
  std::printf("when\tgeneration\tmodel\tkind\twho\treason\tprovenance\n");
  for (const auto& l : merged)
    std::printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.when.empty() ? "-" : l.when.c_str(),
                l.generation < 0 ? "-" : std::to_string(l.generation).c_str(),
                l.model ? std::to_string(l.model).c_str() : "-", l.kind.c_str(), clean(l.who).c_str(),
                clean(l.reason).c_str(), l.provenance.c_str());
  std::printf("# %zu event(s) in %zu generation file(s); the latest, generation %d, is %s\n", merged.size(),
              files.size(), head.generation, head.record.status.empty() ? "completed" : head.record.status.c_str());
  return problems ? kExitFailure : kExitOk;
}

template <typename F>
int guarded(const char* name, F&& body) {
  try {
    return body();
  } catch (const checkpoints::CheckpointError& e) {
    std::fprintf(stderr, "rsi %s: %s\n", name, e.what());
    return kExitBadInput;
  }
}

}  // namespace

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
    CLI::App* cmd = app.add_subcommand(
        "audit", "Every governance event of a run, in order: gates, approvals, rejections, refused designs (red lines\n"
                 "and design limits), the budget, monitor alerts, stops; with who, when, why and provenance (tab-separated).");
    cmd->add_option("run", *dir, "Run directory")->required()->check(existing_directory());
    cmd->callback([&run, dir] { run = [dir] { return guarded("audit", [&] { return audit(*dir); }); }; });
  }
}

}  // namespace rsi::runtime
