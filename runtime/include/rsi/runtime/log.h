// How every rsi command tells people something on stderr: one facility, one shape.
//
//   rsi submit: warning: cannot read runs/x/LATEST (...); the job will check the run directory
//   rsi run: [rank 0] note: removed runs/x/STOP, left from before this run started
//   2026-12-06T11:40:02Z [rank 1] rsi run: warning: 1 of 2 ranks see no GPU, ...   (plain output)
//
// A command names itself once (set_log_source); a command that runs as MPI ranks also gives its
// rank, and every line then carries "[rank N]" (several ranks share one Slurm log). Where stderr
// is not a terminal (a log file, srun; interactive_output in progress.h decides, RSI_PROGRESS
// overrides), those lines start with the UTC time and the rank, as the progress display's plain
// lines do. Errors carry no label (the text says what failed); warnings and notes do. Command
// output (tables, reports, JSON) stays on stdout and is not logging.
#pragma once

#include <string>

namespace rsi::runtime {

enum class LogLevel { Error, Warning, Note };

// The command's name as users type it ("run", "submit", "study"; "" for rsi itself) and, for a
// command that runs as MPI ranks, this process's rank (-1: not such a command).
void set_log_source(const std::string& command, int rank = -1);

// One message; a multi-line text keeps its lines. Thread-safe (one write per message).
void log_message(LogLevel level, const std::string& text);
inline void log_error(const std::string& text) { log_message(LogLevel::Error, text); }
inline void log_warning(const std::string& text) { log_message(LogLevel::Warning, text); }
inline void log_note(const std::string& text) { log_message(LogLevel::Note, text); }
// printf-style.
[[gnu::format(printf, 2, 3)]] void logf(LogLevel level, const char* format, ...);

// The line log_message writes (without its newline), for tests: `plain` adds the time prefix to a
// rank's lines, `when` is that time.
std::string log_line(LogLevel level, const std::string& text, const std::string& command, int rank, bool plain,
                     long long when);

}  // namespace rsi::runtime
