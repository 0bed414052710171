// The logging facility (log.h).
#include "rsi/runtime/log.h"

#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <vector>

#include "progress.h"
#include "rsi/kernels/report.h"

namespace rsi::runtime {

namespace {
struct Source {
  std::mutex mutex;
  std::string command;
  int rank = -1;
  int plain = -1;  // -1: not decided yet (decided on the first message)
};
Source& source() {
  static Source s;
  return s;
}
}  // namespace

void set_log_source(const std::string& command, int rank) {
  Source& s = source();
  const std::lock_guard lock(s.mutex);
  s.command = command;
  s.rank = rank;
  // What the libraries below report from destructors (rsi/kernels/report.h) comes here too.
  kernels::set_report_handler([](kernels::ReportLevel level, const std::string& text) {
    log_message(level == kernels::ReportLevel::Error ? LogLevel::Error : LogLevel::Warning, text);
  });
}

std::string log_line(LogLevel level, const std::string& text, const std::string& command, int rank, bool plain,
                     long long when) {
  std::string line;
  const std::string who = command.empty() ? "rsi: " : "rsi " + command + ": ";
  if (rank >= 0 && plain) line = log_prefix(rank, static_cast<std::time_t>(when)) + who;
  else if (rank >= 0) line = who + rank_tag(rank) + " ";
  else line = who;
  if (level == LogLevel::Warning) line += "warning: ";
  if (level == LogLevel::Note) line += "note: ";
  return line + text;
}

void log_message(LogLevel level, const std::string& text) {
  Source& s = source();
  const std::lock_guard lock(s.mutex);
  if (s.plain < 0) s.plain = s.rank >= 0 && !interactive_output(STDERR_FILENO) ? 1 : 0;
  std::string line = log_line(level, text, s.command, s.rank, s.plain == 1, static_cast<long long>(std::time(nullptr)));
  if (line.empty() || line.back() != '\n') line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

void logf(LogLevel level, const char* format, ...) {
  va_list args;
  va_start(args, format);
  va_list copy;
  va_copy(copy, args);
  const int n = std::vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::vector<char> text(static_cast<std::size_t>(n > 0 ? n : 0) + 1);
  std::vsnprintf(text.data(), text.size(), format, args);
  va_end(args);
  log_message(level, text.data());
}

}  // namespace rsi::runtime
