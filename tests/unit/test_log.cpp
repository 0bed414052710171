// The logging facility (runtime/include/rsi/runtime/log.h): one shape for every command's messages.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "rsi/kernels/report.h"
#include "rsi/runtime/log.h"

namespace {

using rsi::runtime::LogLevel;
using rsi::runtime::log_line;

TEST(Log, ALineNamesTheCommandAndLevel) {
  EXPECT_EQ(log_line(LogLevel::Error, "no such file", "submit", -1, false, 0), "rsi submit: no such file");
  EXPECT_EQ(log_line(LogLevel::Warning, "slow disk", "submit", -1, true, 0), "rsi submit: warning: slow disk")
      << "a command that is not a rank gets no time prefix, even in plain output";
  EXPECT_EQ(log_line(LogLevel::Note, "kept", "", -1, false, 0), "rsi: note: kept");
}

TEST(Log, ARanksLineSaysItsRankAndInPlainOutputTheTime) {
  EXPECT_EQ(log_line(LogLevel::Warning, "no GPU", "run", 3, false, 0), "rsi run: [rank 3] warning: no GPU");
  EXPECT_EQ(log_line(LogLevel::Note, "removed STOP", "run", 0, true, 86400 + 3661),
            "1970-01-02T01:01:01Z [rank 0] rsi run: note: removed STOP");
  EXPECT_EQ(log_line(LogLevel::Error, "bad manifest", "reproduce", 1, true, 0),
            "1970-01-01T00:00:00Z [rank 1] rsi reproduce: bad manifest");
}

// What log_message writes reaches stderr whole, one line per message.
TEST(Log, MessagesGoToStderrAsWholeLines) {
  char path[] = "/tmp/rsi-log-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::fflush(stderr);
  const int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  rsi::runtime::set_log_source("study");
  rsi::runtime::log_warning("arm x has no run yet");
  rsi::runtime::logf(LogLevel::Error, "%d runs failed", 2);
  // What the libraries below runtime/ report from their destructors takes the same shape.
  rsi::kernels::report_warning("could not move the network back to the cpu after training: x");
  rsi::kernels::report_error("lineage store: disk full");
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::string text(4096, '\0');
  text.resize(static_cast<std::size_t>(pread(fd, text.data(), text.size(), 0)));
  close(fd);
  unlink(path);
  EXPECT_EQ(text,
            "rsi study: warning: arm x has no run yet\nrsi study: 2 runs failed\n"
            "rsi study: warning: could not move the network back to the cpu after training: x\n"
            "rsi study: lineage store: disk full\n");
}

}  // namespace
