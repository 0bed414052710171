// `rsi status RUN [--json] [--watch [SECONDS]]`: where a run stands, from its directory's files alone
// (no Prometheus, no MPI): the status file `rsi run` keeps (run_status.h), the newest durable
// generation file, the audit trail. Says whether the run is running or how it ended — a status file
// that says "running" whose process is gone is a run that died (killed or crashed).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/manifest.h"
#include "rsi/scheduler/governance.h"
#include "audit_events.h"
#include "json_out.h"
#include "lineage_graph.h"
#include "progress.h"
#include "run_status.h"

namespace rsi::runtime {

namespace {

namespace fs = std::filesystem;

struct StatusReport {
  std::string run;
  std::optional<RunStatus> file;  // status.json, when present and readable
  std::string name, manifest, manifest_hash;
  std::string state = "unknown", detail;
  std::optional<bool> alive;      // of the process the status file names (nullopt: another host, or no file)
  int generations = -1;           // planned (population.generations); -1: unknown
  int last_durable = -1;
  std::uint64_t best_id = 0;
  double best_val = 0, best_test = 0;
  std::string latest_status;      // the newest durable generation's record status
  int in_flight = -1, children_done = 0, children_total = 0, awaiting_approval = -1;
  double eta_seconds = -1;        // from now, while running
  double updated_seconds_ago = -1;
  std::optional<AuditEvent> last_event;
  std::vector<std::string> warnings;
};

// The newest generation file that reads (metadata only): the last durable generation and its best model.
void read_lineage_head(StatusReport& r, const std::vector<fs::path>& files) {
  for (auto file = files.rbegin(); file != files.rend(); ++file) {
    try {
      const auto g = checkpoints::read_generation(*file, /*weights=*/false);
      r.last_durable = g.generation;
      r.best_id = g.record.best_id;
      r.best_val = g.record.best_val;
      r.best_test = g.record.best_model_test;
      r.latest_status = g.record.status.empty() ? "completed" : g.record.status;
      r.name = g.run.run_name;
      r.manifest_hash = g.run.manifest_hash;
      try {  // planned generations, for a run without a status file (rsi run --generations is not recorded)
        r.generations = parse_manifest(g.run.manifest_text, file->string() + " (its manifest)", r.run, false).loop.generations;
      } catch (const std::exception&) {
      }
      return;
    } catch (const checkpoints::CheckpointError& e) {
      r.warnings.push_back(std::string(e.what()) + " (rsi verify names what is wrong; the generation before it is used)");
    }
  }
}

// The last governance event: the audit trail's last (the lineage's events and audit.log by time).
void read_last_event(StatusReport& r, bool have_generations) {
  if (have_generations) {
    try {
      const AuditTrail trail = audit_trail(r.run);
      if (!trail.events.empty()) r.last_event = trail.events.back();
    } catch (const checkpoints::CheckpointError& e) {
      r.warnings.push_back(e.what());
    }
    return;
  }
  const auto log = scheduler::read_audit(r.run);
  if (!log.empty()) {
    const auto& e = log.back();
    r.last_event = AuditEvent{e.when, e.generation, 0, e.kind, e.who, e.reason, "", true};
  }
}

std::string seconds_ago(double s) { return s < 0 ? "at an unknown time" : fmt_seconds(s) + " ago"; }

// Running or how it ended, from the status file the run wrote and whether its process lives.
void decide_from_file(StatusReport& r) {
  const RunStatus& f = *r.file;
  const std::string where = "pid " + std::to_string(f.pid) + " on " + f.host;
  const std::string durable =
      r.last_durable >= 0 ? "generation " + std::to_string(r.last_durable) + " is the last durable one" : "no generation is durable yet";
  if (f.state == "running") {
    r.alive = process_alive(f);
    if (r.alive && !*r.alive) {
      r.state = "died";
      r.detail = "the status file says running, but its process (" + where + ") is gone: killed (SIGKILL, a lost node, "
                 "the out-of-memory killer) or crashed; " + durable + "; the same `rsi run` command resumes it";
      return;
    }
    r.state = "running";
    r.detail = where + (r.alive ? "" : " (another host: the process is not checked from here)") + ", status file updated " +
               seconds_ago(r.updated_seconds_ago);
    if (f.awaiting_approval >= 0)
      r.detail += "; generation " + std::to_string(f.awaiting_approval) + " awaits approval: rsi approve " + r.run +
                  " --generation " + std::to_string(f.awaiting_approval) + " --reason TEXT (or rsi reject)";
    return;
  }
  r.state = f.state;
  r.detail = "ended with exit code " + std::to_string(f.exit_code) + (f.reason.empty() ? "" : ": " + f.reason);
  if (f.state == "completed")
    r.detail += "; generations 0.." + std::to_string(f.generations) + " are durable";
  else if (f.state == "stopped")
    r.detail += "; " + durable + "; the same `rsi run` command resumes it";
  else if (f.state == "awaiting_approval")
    r.detail += "; rsi approve " + r.run + " --generation " + std::to_string(f.awaiting_approval) +
                " --reason TEXT (or rsi reject), then the same `rsi run` command resumes it";
  else
    r.detail += "; " + durable;
}

// A run without a status file (written by an rsi before it, or one that never got to open its
// directory): what the lineage alone says.
void decide_from_lineage(StatusReport& r) {
  if (r.latest_status == "awaiting_approval") {
    r.state = "awaiting_approval";
    r.detail = "generation " + std::to_string(r.last_durable) + " awaits approval (no status file: whether a run waits "
               "for it is not known)";
  } else if (r.last_durable >= 0 && r.generations >= 0 && r.last_durable >= r.generations) {
    r.state = "completed";
    r.detail = "completed: generations 0.." + std::to_string(r.generations) + " are durable (no status file)";
  } else {
    r.state = "unknown";
    r.detail = std::string("no ") + kStatusFileName + " (a run of an older rsi): whether a process still runs it is "
               "not known; " + (r.last_durable >= 0 ? "generation " + std::to_string(r.last_durable) + " is the last durable one"
                                                    : "no generation is durable");
  }
}

StatusReport gather(const std::string& run) {
  StatusReport r;
  r.run = run;
  const auto files = checkpoints::generation_files(run);
  try {
    r.file = read_status_file(run);
  } catch (const StatusFileError& e) {
    r.warnings.push_back(e.what());
  }
  if (!r.file && files.empty())
    throw checkpoints::CheckpointError(
        run + ": not a run directory: no readable " + kStatusFileName + " and no generation files (gen-NNNNNN.h5)" +
        (r.warnings.empty() ? "" : " (" + r.warnings.front() + ")") + "; rsi run MANIFEST --out " + run +
        " starts a run there");
  read_lineage_head(r, files);
  read_last_event(r, !files.empty());
  if (r.file) {
    const RunStatus& f = *r.file;
    r.name = f.run_name;
    r.manifest = f.manifest;
    r.manifest_hash = f.manifest_hash;
    r.generations = f.generations;
    if (r.last_durable < 0 && f.last_durable >= 0) {  // the files are gone or unreadable: say what the run said
      r.last_durable = f.last_durable;
      r.best_id = f.best_id, r.best_val = f.best_val, r.best_test = f.best_test;
    }
    if (const auto when = parse_utc_iso(f.updated))
      r.updated_seconds_ago = std::max(0.0, static_cast<double>(std::time(nullptr) - *when));
    decide_from_file(r);
    if (r.state == "running") {
      r.in_flight = f.in_flight, r.children_done = f.children_done, r.children_total = f.children_total;
      r.awaiting_approval = f.awaiting_approval;
      if (f.eta_seconds >= 0) r.eta_seconds = std::max(0.0, f.eta_seconds - std::max(0.0, r.updated_seconds_ago));
    }
  } else {
    if (std::error_code ec; fs::exists(fs::path(run) / "manifest.yaml", ec))  // rsi run writes it at every start
      r.manifest = (fs::path(run) / "manifest.yaml").string();
    decide_from_lineage(r);
  }
  return r;
}

std::string report_json(const StatusReport& r) {
  JsonObject o;
  o.text("run", r.run).text("name", r.name).text("manifest", r.manifest).text("manifest_hash", r.manifest_hash);
  o.text("state", r.state).text("detail", r.detail);
  if (r.alive) o.boolean("alive", *r.alive);
  else o.null("alive");
  if (r.file) o.text("host", r.file->host).integer("pid", r.file->pid).count_or_null("exit_code", r.file->exit_code);
  else o.null("host").null("pid").null("exit_code");
  o.count_or_null("generations", r.generations).count_or_null("last_durable_generation", r.last_durable);
  if (r.best_id) {
    JsonObject best;
    best.id("id", r.best_id).number("validation", r.best_val).number("hidden_test", r.best_test);
    o.raw("best", best.str());
  } else {
    o.null("best");
  }
  if (r.in_flight >= 0) {
    JsonObject flight;
    flight.integer("generation", r.in_flight).integer("children_done", r.children_done);
    o.raw("in_flight", flight.integer("children_total", r.children_total).str());
  } else {
    o.null("in_flight");
  }
  o.count_or_null("awaiting_approval", r.awaiting_approval);
  if (r.eta_seconds >= 0) o.number("eta_seconds", r.eta_seconds);
  else o.null("eta_seconds");
  if (r.updated_seconds_ago >= 0) o.number("updated_seconds_ago", r.updated_seconds_ago);
  else o.null("updated_seconds_ago");
  if (r.last_event) {
    const auto& e = *r.last_event;
    JsonObject ev;
    ev.optional_text("when", e.when.empty() ? std::nullopt : std::optional<std::string>(e.when));
    ev.count_or_null("generation", e.generation).count_or_null("model", e.model ? static_cast<long long>(e.model) : -1);
    ev.text("kind", e.kind).text("who", e.who).text("reason", e.reason);
    o.raw("last_event", ev.text("source", e.from_audit_log ? "audit.log" : "lineage").str());
  } else {
    o.null("last_event");
  }
  std::vector<std::string> warnings;
  for (const auto& w : r.warnings) warnings.push_back(monitoring::json_string(w));
  return o.raw("warnings", json_array(warnings)).str();
}

void print_text(const StatusReport& r) {
  std::printf("run %s (%s)\n", r.name.empty() ? "?" : r.name.c_str(), r.run.c_str());
  if (!r.manifest.empty() || !r.manifest_hash.empty())
    std::printf("  manifest    %s (hash %s)\n", r.manifest.empty() ? "-" : r.manifest.c_str(), r.manifest_hash.c_str());
  std::printf("  state       %s: %s\n", r.state.c_str(), r.detail.c_str());
  std::string planned = r.generations >= 0 ? " of 0.." + std::to_string(r.generations) : "";
  if (r.last_durable >= 0) std::printf("  durable     generation %d%s\n", r.last_durable, planned.c_str());
  else std::printf("  durable     none yet%s\n", planned.empty() ? "" : (" (generations 0.." + std::to_string(r.generations) + " planned)").c_str());
  if (r.in_flight >= 0)
    std::printf("  in flight   generation %d: %d of %d children done\n", r.in_flight, r.children_done, r.children_total);
  if (r.best_id)
    std::printf("  best model  %llu: validation %.4f, hidden test %.4f\n", static_cast<unsigned long long>(r.best_id),
                r.best_val, r.best_test);
  if (r.state == "running") {
    char finish[64] = "";
    if (r.eta_seconds >= 0)
      std::snprintf(finish, sizeof finish, " (about %s)",
                    utc_iso(std::time(nullptr) + static_cast<std::int64_t>(std::llround(r.eta_seconds))).c_str());
    std::printf("  ETA         %s%s\n", fmt_seconds(r.eta_seconds).c_str(), finish);
  }
  if (r.last_event) {
    const auto& e = *r.last_event;
    std::printf("  last event  %s%s %s%s by %s: %s\n", e.when.empty() ? "" : (e.when + " ").c_str(),
                e.generation >= 0 ? ("generation " + std::to_string(e.generation)).c_str() : "",
                e.kind.c_str(), e.model ? (" (model " + std::to_string(e.model) + ")").c_str() : "", e.who.c_str(),
                e.reason.c_str());
  }
  for (const auto& w : r.warnings) std::printf("  warning     %s\n", w.c_str());
}

int status(const std::string& run, bool json, double watch_seconds) {
  const bool redraw = watch_seconds > 0 && !json && isatty(STDOUT_FILENO);
  for (;;) {
    const StatusReport r = gather(run);
    if (redraw) std::printf("\033[H\033[2J");  // home, clear: the new report in place of the last
    if (json) std::printf("%s\n", report_json(r).c_str());
    else print_text(r);
    std::fflush(stdout);
    if (watch_seconds <= 0 || r.state != "running") return kExitOk;
    std::this_thread::sleep_for(std::chrono::duration<double>(watch_seconds));
    if (!json && !redraw) std::printf("\n");
  }
}

}  // namespace

void add_status_command(CLI::App& app, std::function<int()>& run) {
  struct A {
    std::string dir;
    bool json = false;
    double watch = -1;  // seconds between reports; -1: one report
  };
  auto a = std::make_shared<A>();
  CLI::App* cmd = app.add_subcommand(
      "status", "Where a run stands, from its directory alone (no Prometheus, no MPI): its name and manifest, the last\n"
                "durable generation and its best model, the children done of the generation in flight, the last\n"
                "governance event, whether it is running or how it ended (completed, stopped, budget, rejected,\n"
                "awaiting_approval, failed; died: killed or crashed) and an ETA.");
  cmd->add_option("run", a->dir, "Run directory")->required()->check(existing_directory());
  cmd->add_flag("--json", a->json,
                "One JSON object (with --watch, one per line): run, name, manifest, manifest_hash, state, detail,\n"
                "alive, host, pid, exit_code, generations, last_durable_generation, best, in_flight,\n"
                "awaiting_approval, eta_seconds, updated_seconds_ago, last_event, warnings");
  cmd->add_option("--watch", a->watch, "Report again every SECONDS (default 2) until the run is no longer running, or Ctrl-C")
      ->expected(0, 1)
      ->default_str("2")
      ->type_name("[SECONDS]")
      ->check(CLI::Range(0.1, 86400.0));
  cmd->callback([&run, a] { run = [a] { return guarded("status", [&] { return status(a->dir, a->json, a->watch); }); }; });
}

}  // namespace rsi::runtime
