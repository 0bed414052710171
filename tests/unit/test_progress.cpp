// Tests of the progress display of `rsi run` (runtime/src/progress.h): the duration format, the bar,
// the ETA, the per-child status line and the two modes — plain log lines with time and rank when the
// output is not a terminal, an in-place display redrawn with ANSI escapes when it is.
//   build-dir/tests/test_progress            (well under a second)
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "../../runtime/src/progress.h"

namespace {

using rsi::runtime::ChildState;
using rsi::scheduler::GenerationRecord;
using rsi::scheduler::ModelRecord;
using Status = ModelRecord::Status;

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(rsi::runtime::fmt_seconds(0), "0.0s");
  EXPECT_EQ(rsi::runtime::fmt_seconds(12.34), "12.3s");
  EXPECT_EQ(rsi::runtime::fmt_seconds(245), "4m05s");
  EXPECT_EQ(rsi::runtime::fmt_seconds(7620), "2h07m");
  EXPECT_EQ(rsi::runtime::fmt_seconds(-1), "--");  // unknown
  EXPECT_EQ(rsi::runtime::fmt_seconds(2 * 86400 + 7 * 3600 + 5), "2d07h");
  EXPECT_EQ(rsi::runtime::fmt_seconds(1e30), ">9999d");  // not an int's overflow
}

TEST(Progress, BarFillsWithTheFraction) {
  EXPECT_EQ(rsi::runtime::progress_bar(0.0, 10), "[>         ]");
  EXPECT_EQ(rsi::runtime::progress_bar(0.5, 10), "[=====>    ]");
  EXPECT_EQ(rsi::runtime::progress_bar(0.99, 10), "[=========>]");
  EXPECT_EQ(rsi::runtime::progress_bar(1.0, 10), "[==========]");
  // Out of range and NaN never overflow the bar.
  EXPECT_EQ(rsi::runtime::progress_bar(1.7, 4), "[====]");
  EXPECT_EQ(rsi::runtime::progress_bar(-0.3, 4), "[>   ]");
  EXPECT_EQ(rsi::runtime::progress_bar(std::nan(""), 4), "[>   ]");
  for (double f : {0.0, 0.13, 0.5, 0.77, 1.0}) EXPECT_EQ(rsi::runtime::progress_bar(f, 25).size(), 27u);
}

TEST(Progress, EtaAssumesTheSamePace) {
  EXPECT_DOUBLE_EQ(rsi::runtime::eta_seconds(60, 0.25), 180);
  EXPECT_DOUBLE_EQ(rsi::runtime::eta_seconds(100, 0.5), 100);
  EXPECT_DOUBLE_EQ(rsi::runtime::eta_seconds(42, 1.0), 0);
  EXPECT_LT(rsi::runtime::eta_seconds(10, 0.0), 0);  // nothing done yet: unknown, not infinite
  EXPECT_EQ(rsi::runtime::fmt_seconds(rsi::runtime::eta_seconds(10, 0.0)), "--");
}

// The ETA from the work (FLOPs x samples) still to come: growing generations make it longer than
// the mean generation time says.
TEST(Progress, EtaFromTheWorkStillToCome) {
  rsi::runtime::WorkSoFar w;
  w.generations = {100, 200};  // grew 2x
  w.in_flight = true;
  w.in_flight_work = 300;      // 2 of 4 children done: the generation is 600
  w.in_flight_done = 2;
  w.in_flight_total = 4;
  w.later = 3;                 // then 1200, 2400, 4800 (growth 2, clamped to at most 2)
  double next = 0;
  EXPECT_DOUBLE_EQ(rsi::runtime::remaining_work(w, &next), 300 + 1200 + 2400 + 4800);
  EXPECT_DOUBLE_EQ(next, 1200);
  // 600 units done in 60 s: 10 a second.
  EXPECT_DOUBLE_EQ(rsi::runtime::cost_eta_seconds(w, 60), 870);
  // The mean generation time would say far less: 60 s for 2.5 generations, 3.5 to go.
  EXPECT_GT(rsi::runtime::cost_eta_seconds(w, 60), 60.0 / 2.5 * 3.5);
  w.generations = {1000, 100};  // shrank: growth clamped to 1
  w.in_flight = false;
  w.later = 2;
  EXPECT_DOUBLE_EQ(rsi::runtime::remaining_work(w), 200);
  // A long run: growth compounds up to 8 times the generation in flight, not 2^55 times (the ETA
  // of a 60-generation quickstart printed as -2147483648h).
  w.generations = {100, 200};
  w.in_flight = true;
  w.later = 55;
  EXPECT_DOUBLE_EQ(rsi::runtime::remaining_work(w), 300 + 1200 + 2400 + 53 * 4800);
  rsi::runtime::WorkSoFar none;  // a surrogate run trains nothing: unknown, the caller falls back
  none.later = 3;
  EXPECT_LT(rsi::runtime::cost_eta_seconds(none, 10), 0);
}

TEST(Progress, BarLineNamesGenerationPercentAndEta) {
  const std::string line = rsi::runtime::bar_line(3, 10, 0.25, 60, 100);
  EXPECT_EQ(line.rfind("gen 3/10 [", 0), 0u) << line;
  EXPECT_NE(line.find(" 25%"), std::string::npos) << line;
  EXPECT_NE(line.find("elapsed 1m00s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 3m00s"), std::string::npos) << line;
  EXPECT_LE(line.size(), 100u) << line;
}

TEST(Progress, ChildrenLineCountsAndFitsTheWidth) {
  const std::vector<ChildState> done{
      {12, Status::Trained, 0.8312}, {13, Status::Failed, 0}, {14, Status::Trained, 0.8011}};
  const std::string line = rsi::runtime::children_line(done, 6, 200);
  EXPECT_NE(line.find("children 3/6: 2 trained, 1 failed, 3 running or queued"), std::string::npos) << line;
  EXPECT_NE(line.find("12 ok 0.831"), std::string::npos) << line;
  EXPECT_NE(line.find("13 FAILED"), std::string::npos) << line;
  const std::string cut = rsi::runtime::children_line(done, 6, 40);
  EXPECT_EQ(cut.size(), 40u) << cut;
  EXPECT_EQ(cut.substr(37), "...");
}

TEST(Progress, LogPrefixCarriesUtcTimeAndRank) {
  EXPECT_EQ(rsi::runtime::log_prefix(0, 0), "1970-01-01T00:00:00Z [rank 0] ");
  EXPECT_EQ(rsi::runtime::log_prefix(3, 86400 + 3661), "1970-01-02T01:01:01Z [rank 3] ");
}

ModelRecord child(std::uint64_t id, Status status, double val, const std::string& failure = "") {
  ModelRecord m;
  m.id = id;
  m.generation = 1;
  m.status = status;
  m.metrics.val_accuracy = val;
  m.failure = failure;
  return m;
}

GenerationRecord generation(int g) {
  GenerationRecord r;
  r.generation = g;
  r.best_id = 7;
  r.best_val = 0.85;
  r.best_model_test = 0.84;
  r.trained = 1;
  r.failed = 1;
  return r;
}

// Runs a generation through a Progress writing to a temporary file; returns what it wrote.
std::string drive(bool tty) {
  std::FILE* f = std::tmpfile();
  {
    rsi::runtime::Progress p(2, tty, 0, f);
    p.on_generation_start(1, 2);
    p.on_model_done(child(7, Status::Trained, 0.85));
    p.on_model_done(child(8, Status::Failed, 0, "diverged: loss is NaN at step 12"));
    p.on_generation(generation(1));
    p.on_finish();
  }
  std::rewind(f);
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  std::fclose(f);
  return out;
}

TEST(Progress, PlainModeWritesPrefixedLogLines) {
  const std::string out = drive(false);
  EXPECT_EQ(out.find('\033'), std::string::npos) << "no terminal escapes in a log";
  std::istringstream in(out);
  const std::regex prefix(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[rank 0\] .+)");
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) EXPECT_TRUE(std::regex_match(line, prefix)) << line;
  EXPECT_GE(lines, 6);  // start, two children, the generation, the table header and row
  EXPECT_NE(out.find("gen 1/2 started: 2 children"), std::string::npos) << out;
  EXPECT_NE(out.find("child 8 failed"), std::string::npos) << out;
  EXPECT_NE(out.find("reason: diverged: loss is NaN at step 12"), std::string::npos) << out;
  EXPECT_NE(out.find("gen  1/2  best val 0.8500 test 0.8400"), std::string::npos) << out;
  EXPECT_NE(out.find("ETA "), std::string::npos) << out;
}

TEST(Progress, TerminalModeRedrawsInPlace) {
  const std::string out = drive(true);
  EXPECT_NE(out.find("\033[1A\r\033[J"), std::string::npos) << "the two-line display is cleared before a redraw";
  EXPECT_NE(out.find("gen 1/2 ["), std::string::npos) << out;
  EXPECT_NE(out.find("children 2/2: 1 trained, 1 failed, 0 running or queued | 7 ok 0.850 8 FAILED"), std::string::npos)
      << out;
  EXPECT_NE(out.find("gen  1/2  best val 0.8500"), std::string::npos) << out;
  EXPECT_EQ(out.find("[rank 0]"), std::string::npos) << "a terminal gets no log prefixes";
}

}  // namespace
