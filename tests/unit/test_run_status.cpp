// Tests of the status file of `rsi run` (runtime/src/run_status.h) and the JSON pieces of the
// commands' --json output (runtime/src/json_out.h): the file reads back what was written, a damaged
// one is named with its field, a live process is told from a dead or reused pid, and the writer
// follows a run through its events. tests/integration/status.sh checks `rsi status` on real runs.
//   build-dir/tests/test_run_status            (well under a second)
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>

#include "../../runtime/src/json_out.h"
#include "../../runtime/src/progress.h"
#include "../../runtime/src/run_status.h"

namespace {

namespace fs = std::filesystem;
using rsi::runtime::RunStatus;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("rsi-test-run-status-" + name + "-" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

RunStatus example() {
  RunStatus s;
  s.state = "stopped";
  s.reason = "stop requested (\"runs/x/STOP\")\twith a tab\nand a newline";
  s.exit_code = 4;
  s.run_name = "quick";
  s.manifest = "/tmp/a b/quick.yaml";
  s.manifest_hash = "0123456789abcdef";
  s.host = "node-7";
  s.pid = 4242;
  s.pid_start = 123456789012ULL;
  s.ranks = 4;
  s.started = "2026-12-06T06:00:00Z";
  s.updated = "2026-12-06T06:01:02Z";
  s.generations = 10;
  s.last_durable = 3;
  s.in_flight = 4;
  s.children_done = 2;
  s.children_total = 6;
  s.awaiting_approval = -1;
  s.best_id = 17;
  s.best_val = 0.8731;
  s.best_test = 0.1 + 0.2;  // not a short decimal: must come back bit for bit
  s.elapsed_seconds = 61.25;
  s.eta_seconds = 12.5;
  return s;
}

TEST(RunStatus, RoundTripsEveryField) {
  const RunStatus s = example();
  const RunStatus r = rsi::runtime::parse_status(rsi::runtime::status_json(s), "test");
  EXPECT_EQ(r.state, s.state);
  EXPECT_EQ(r.reason, s.reason);
  EXPECT_EQ(r.exit_code, 4);
  EXPECT_EQ(r.run_name, s.run_name);
  EXPECT_EQ(r.manifest, s.manifest);
  EXPECT_EQ(r.manifest_hash, s.manifest_hash);
  EXPECT_EQ(r.host, s.host);
  EXPECT_EQ(r.pid, 4242);
  EXPECT_EQ(r.pid_start, s.pid_start);
  EXPECT_EQ(r.ranks, 4);
  EXPECT_EQ(r.started, s.started);
  EXPECT_EQ(r.updated, s.updated);
  EXPECT_EQ(r.generations, 10);
  EXPECT_EQ(r.last_durable, 3);
  EXPECT_EQ(r.in_flight, 4);
  EXPECT_EQ(r.children_done, 2);
  EXPECT_EQ(r.children_total, 6);
  EXPECT_EQ(r.awaiting_approval, -1);
  EXPECT_EQ(r.best_id, 17u);
  EXPECT_EQ(r.best_val, s.best_val);
  EXPECT_EQ(r.best_test, s.best_test);
  EXPECT_EQ(r.elapsed_seconds, 61.25);
  EXPECT_EQ(r.eta_seconds, 12.5);
}

TEST(RunStatus, UnknownsAreNullAndReadBack) {
  RunStatus s;  // a run that has just started: nothing durable, no ETA, no exit code
  const std::string text = rsi::runtime::status_json(s);
  EXPECT_NE(text.find("\"exit_code\": null"), std::string::npos) << text;
  EXPECT_NE(text.find("\"eta_seconds\": null"), std::string::npos) << text;
  EXPECT_NE(text.find("\"best_id\": null"), std::string::npos) << text;
  EXPECT_NE(text.find("\"last_durable_generation\": null"), std::string::npos) << text;
  const RunStatus r = rsi::runtime::parse_status(text, "test");
  EXPECT_EQ(r.exit_code, -1);
  EXPECT_EQ(r.eta_seconds, -1);
  EXPECT_EQ(r.best_id, 0u);
  EXPECT_EQ(r.last_durable, -1);
  EXPECT_EQ(r.state, "running");
}

TEST(RunStatus, DamagedFilesAreNamedWithTheField) {
  std::string text = rsi::runtime::status_json(example());
  const auto error_of = [](const std::string& t) {
    try {
      rsi::runtime::parse_status(t, "runs/x/status.json");
    } catch (const rsi::runtime::StatusFileError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error_of(text.substr(0, text.size() / 2)).find("runs/x/status.json: not a JSON object"), std::string::npos);
  std::string no_pid = text;
  no_pid.replace(no_pid.find("\"pid\""), 5, "\"pod\"");
  EXPECT_NE(error_of(no_pid).find("the field 'pid' is missing"), std::string::npos) << error_of(no_pid);
  std::string bad_generations = text;
  bad_generations.replace(bad_generations.find("\"generations\": 10"), 17, "\"generations\": \"ten\"");
  EXPECT_NE(error_of(bad_generations).find("'generations' has a value of the wrong type"), std::string::npos)
      << error_of(bad_generations);
  std::string other_format = text;
  other_format.replace(other_format.find("\"format\": 1"), 11, "\"format\": 9");
  EXPECT_NE(error_of(other_format).find("status format 9"), std::string::npos);
}

TEST(RunStatus, FileIsWrittenAtomicallyAndAbsentIsNullopt) {
  const fs::path dir = fresh_dir("file");
  EXPECT_FALSE(rsi::runtime::read_status_file(dir).has_value());
  rsi::runtime::write_status_file(dir, example());
  EXPECT_FALSE(fs::exists(dir / "status.json.tmp"));
  const auto r = rsi::runtime::read_status_file(dir);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->reason, example().reason);
  fs::remove_all(dir);
}

TEST(RunStatus, LiveDeadAndReusedProcesses) {
  RunStatus s;
  s.host = rsi::runtime::this_host();
  s.pid = getpid();
  s.pid_start = rsi::runtime::process_start_ticks(s.pid).value_or(0);
  ASSERT_GT(s.pid_start, 0u) << "no /proc/self/stat start time";
  EXPECT_EQ(rsi::runtime::process_alive(s), std::optional<bool>(true));
  RunStatus reused = s;  // the same pid, started at another time: another process
  reused.pid_start = s.pid_start + 1;
  EXPECT_EQ(rsi::runtime::process_alive(reused), std::optional<bool>(false));
  const pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  int wstatus = 0;
  waitpid(child, &wstatus, 0);  // reaped: the pid names no process now
  RunStatus dead = s;
  dead.pid = child;
  dead.pid_start = 0;
  EXPECT_EQ(rsi::runtime::process_alive(dead), std::optional<bool>(false));
  RunStatus elsewhere = s;
  elsewhere.host = s.host + "-elsewhere";
  EXPECT_FALSE(rsi::runtime::process_alive(elsewhere).has_value());  // not asked across hosts
}

TEST(RunStatus, UtcTimesRoundTrip) {
  const std::int64_t now = std::time(nullptr);
  EXPECT_EQ(rsi::runtime::parse_utc_iso(rsi::runtime::utc_iso(now)), std::optional<std::int64_t>(now));
  EXPECT_EQ(rsi::runtime::parse_utc_iso("2026-12-06T06:01:02Z"), std::optional<std::int64_t>(1796536862));
  EXPECT_FALSE(rsi::runtime::parse_utc_iso("2026-12-06 06:01:02").has_value());
}

TEST(RunStatus, WriterFollowsTheRun) {
  const fs::path dir = fresh_dir("writer");
  std::FILE* sink = std::fopen("/dev/null", "w");
  rsi::runtime::Progress progress(2, false, 0, sink);
  RunStatus start;
  start.run_name = "w";
  start.generations = 2;
  rsi::runtime::StatusWriter writer(dir, start, progress);
  auto now = [&] { return *rsi::runtime::read_status_file(dir); };
  EXPECT_EQ(now().state, "running");
  EXPECT_EQ(now().pid, getpid());
  EXPECT_EQ(now().host, rsi::runtime::this_host());
  progress.on_generation_start(0, 3);
  writer.on_generation_start(0, 3);
  EXPECT_EQ(now().in_flight, 0);
  EXPECT_EQ(now().children_total, 3);
  rsi::scheduler::ModelRecord m;
  m.id = 1;
  m.metrics.flops = 1000;
  m.metrics.samples = 100;
  progress.on_model_done(m);
  writer.on_model_done(m);
  EXPECT_EQ(now().children_done, 1);
  rsi::scheduler::GenerationRecord g;
  g.generation = 0;
  g.best_id = 1;
  g.best_val = 0.5;
  g.best_model_test = 0.25;
  g.children.push_back(m);
  progress.on_generation(g);
  writer.on_generation(g);
  EXPECT_EQ(now().last_durable, 0);
  EXPECT_EQ(now().in_flight, -1);
  EXPECT_EQ(now().best_id, 1u);
  EXPECT_EQ(now().best_test, 0.25);
  EXPECT_GE(now().eta_seconds, 0);  // work known: 2 more generations at the pace so far
  writer.on_approval_pending(0, true);
  EXPECT_EQ(now().awaiting_approval, 0);
  writer.on_approval_pending(0, false);
  writer.ended("stopped", "signal SIGTERM", 4);
  EXPECT_EQ(now().state, "stopped");
  EXPECT_EQ(now().exit_code, 4);
  EXPECT_EQ(now().reason, "signal SIGTERM");
  EXPECT_EQ(now().eta_seconds, -1);  // an ended run has no ETA
  std::fclose(sink);
  fs::remove_all(dir);
}

TEST(JsonOut, NumbersAreShortestExactOrNull) {
  EXPECT_EQ(rsi::runtime::json_number(0.8731), "0.8731");
  EXPECT_EQ(std::stod(rsi::runtime::json_number(0.1 + 0.2)), 0.1 + 0.2);
  EXPECT_EQ(rsi::runtime::json_number(std::nan("")), "null");
  EXPECT_EQ(rsi::runtime::json_number(std::numeric_limits<double>::infinity()), "null");
  rsi::runtime::JsonObject o;
  o.text("a\"b", "x\ny").integer("n", -3).null("z").count_or_null("c", -1).boolean("t", true);
  EXPECT_EQ(o.str(), "{\"a\\\"b\": \"x\\u000ay\", \"n\": -3, \"z\": null, \"c\": null, \"t\": true}");
  EXPECT_EQ(rsi::runtime::json_array({"1", "\"x\""}), "[1, \"x\"]");
}

}  // namespace
