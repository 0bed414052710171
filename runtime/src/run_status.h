// The status file of a run directory, `status.json`: what `rsi run` (rank 0) is doing, rewritten
// atomically (status.json.tmp, then rename) when the run starts, at every generation start, every
// child done, every generation made durable, an approval wait, and when the run ends — with how it
// ended. `rsi status` reads it with the lineage; people and scripts may read it too (one JSON object,
// fields in runtime/README.md, "The status file"). Not part of the lineage or its hash chain.
//
// A run that is killed (SIGKILL, a lost node, the out-of-memory killer) cannot say so: its file still
// says "running". The file names the coordinator's host, pid and the pid's start time, so a reader on
// the same host can tell a live run from a dead one (process_alive).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include "rsi/scheduler/record.h"

namespace rsi::runtime {

class Progress;

inline constexpr const char* kStatusFileName = "status.json";
inline constexpr int kStatusFormat = 1;

struct RunStatus {
  int format = kStatusFormat;
  // running, or how the run ended: completed, stopped (exit 4), budget (the compute budget spent),
  // rejected (a rejection ended it), awaiting_approval (exit 5), failed (an error, exit 1).
  std::string state = "running";
  std::string reason;  // why it stopped or failed ("" otherwise)
  int exit_code = -1;  // once ended
  std::string run_name, manifest, manifest_hash;
  std::string host;
  long long pid = 0;
  std::uint64_t pid_start = 0;  // the pid's start time in clock ticks after boot (0: unknown)
  int ranks = 1;
  std::string started, updated;  // UTC ISO 8601: this start of the run, the file's last write
  int generations = 0;           // population.generations: generations 0..generations are run
  int last_durable = -1;         // the newest durable generation (-1: none yet)
  int in_flight = -1;            // the generation being trained (-1: none)
  int children_done = 0, children_total = 0;  // of the generation in flight
  int awaiting_approval = -1;    // a generation the live run waits on a decision for (-1: none)
  std::uint64_t best_id = 0;     // best model after the last durable generation (0: none yet)
  double best_val = 0, best_test = 0;
  double elapsed_seconds = 0;    // since this start
  double eta_seconds = -1;       // to the run's end as estimated at `updated` (-1: unknown)
};

struct StatusFileError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string status_json(const RunStatus& s);
// Reads status.json's text; throws StatusFileError naming `source` and the field that is wrong.
RunStatus parse_status(const std::string& text, const std::string& source);
// nullopt when the directory has no status file; throws StatusFileError when it does not read.
std::optional<RunStatus> read_status_file(const std::filesystem::path& run_dir);
// Atomic: a reader sees the old file or the new one, never a part. Throws StatusFileError.
void write_status_file(const std::filesystem::path& run_dir, const RunStatus& s);

// A process's start time in clock ticks after boot (/proc/PID/stat); nullopt when there is no such
// process, it is a zombie, or /proc does not say.
std::optional<std::uint64_t> process_start_ticks(long long pid);
// Whether the process the status names is alive, asked on this host: nullopt when the status names
// another host (it cannot be asked from here). A pid reused by another process is not alive.
std::optional<bool> process_alive(const RunStatus& s);
std::string this_host();
std::string utc_iso(std::int64_t unix_seconds);
// Seconds since the epoch of an ISO 8601 UTC time "YYYY-MM-DDTHH:MM:SSZ"; nullopt when it is not one.
std::optional<std::int64_t> parse_utc_iso(const std::string& text);

// `rsi run`'s writer (rank 0): a sink after the progress display, whose ETA it records. Errors in
// writing warn once on stderr and do not stop the run (the lineage is what must not fail).
class StatusWriter final : public scheduler::GenerationSink {
 public:
  StatusWriter(std::filesystem::path run_dir, RunStatus start, const Progress& progress);
  void on_generation_start(int generation, int total);
  void on_model_done(const scheduler::ModelRecord& m);
  void on_generation(const scheduler::GenerationRecord& g) override;
  void on_approval_pending(int generation, bool pending);
  // The run's end: state as in RunStatus, the reason, the exit code.
  void ended(const std::string& state, const std::string& reason, int exit_code);

 private:
  void write();
  std::filesystem::path dir_;
  RunStatus status_;
  const Progress& progress_;
  bool warned_ = false;
};

}  // namespace rsi::runtime
