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
  kExitAwaitingApproval = 5,  // a gated generation is durable and no decision came in time: decide with
                              // `rsi approve`/`rsi reject`, then run the same command again
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
// report (self-contained HTML; report_command.cpp)
void add_report_command(CLI::App& app, std::function<int()>& run);
// study (arms x seeds of a manifest as runs; study_command.cpp, the file format in study.h) and
// compare (statistics over runs and studies; compare_command.cpp)
void add_study_command(CLI::App& app, std::function<int()>& run);
void add_compare_command(CLI::App& app, std::function<int()>& run);
// submit (Slurm; submit_command.cpp, declarations for its tests in submit.h)
void add_submit_command(CLI::App& app, std::function<int()>& run);

// status (where a run stands, from its directory: status_command.cpp, the status file in run_status.h)
void add_status_command(CLI::App& app, std::function<int()>& run);

// approve, reject, stop, audit (governance_commands.cpp)
void add_governance_commands(CLI::App& app, std::function<int()>& run);

// Checks for path arguments, in place of CLI11's ExistingFile/ExistingDirectory: a missing or
// wrong-kind path makes the command exit with kExitBadInput (3), as every command documents.
const CLI::Validator& existing_file();
const CLI::Validator& existing_directory();
bool missing_input_seen();  // a check above failed during parsing
// Why argv[1] is not one of `app`'s subcommands ("" when it is, or is an option): with a did-you-mean.
std::string unknown_command(const CLI::App& app, int argc, char** argv);

// Peak resident set size of this process in MiB (getrusage).
double peak_rss_mib();

}  // namespace rsi::runtime
