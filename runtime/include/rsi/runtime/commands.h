// The `rsi` subcommands. Each registers its options on a CLI11 app and returns the process exit
// code when run (see README.md, "Exit codes").
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace rsi::runtime {

// Exit codes shared by every subcommand.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailure = 1,      // the work itself failed (diverged training, ...)
  kExitUsage = 2,        // bad command line
  kExitBadInput = 3,     // a genome, manifest, data or checkpoint file is invalid or missing
  kExitStopped = 4,      // stopped at a safe point (signal, `rsi stop`): run the same command again to resume
};

// The name of the file whose presence in a run directory asks a running `rsi run` to stop at its next
// safe point (`rsi stop RUN` creates it; the run removes it when it honours it).
inline constexpr const char* kStopFileName = "STOP";

// Adds `train` to `app`; `run` is set to the function that executes it once parsed.
void add_train_command(CLI::App& app, std::function<int()>& run);
void add_run_command(CLI::App& app, std::function<int()>& run);
void add_validate_command(CLI::App& app, std::function<int()>& run);
// verify, lineage, show, export, eval
void add_lineage_commands(CLI::App& app, std::function<int()>& run);

// Peak resident set size of this process in MiB (getrusage).
double peak_rss_mib();

}  // namespace rsi::runtime
