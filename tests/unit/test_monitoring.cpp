// The Prometheus exporter, scraped over HTTP on loopback as Prometheus would: values after a
// GenerationRecord and the live hooks, failure reasons and governance events as counters, a port in
// use as a clear error, the file_sd targets file, and `promtool check metrics` on the scrape when
// promtool is installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "rsi/kernels/cuda.h"

#include "rsi/monitoring/exporter.h"

namespace {

using rsi::monitoring::Exporter;
using rsi::monitoring::ExporterOptions;
using rsi::scheduler::GenerationRecord;
using rsi::scheduler::ModelRecord;

// GET http://127.0.0.1:port/path with a plain socket; returns the body (empty on failure).
std::string http_get(int port, const std::string& path = "/metrics") {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buf[8192];
      for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) response.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of one exposed series (its full name with labels, as exposed), or NaN when absent.
double series(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
  return std::nan("");
}

ModelRecord child(std::uint64_t id, ModelRecord::Status status, double seconds, std::int64_t samples,
                  const std::string& failure = "") {
  ModelRecord m;
  m.id = id;
  m.generation = 1;
  m.status = status;
  m.failure = failure;
  m.metrics.wall_seconds = seconds;
  m.metrics.samples = samples;
  return m;
}

ExporterOptions options() {
  ExporterOptions o;
  o.bind = "127.0.0.1";
  o.port = 0;
  o.run_id = "unit";
  o.manifest_hash = "0123456789abcdef";
  o.version = "0.1.0";
  o.host = "localhost";
  o.trainer_groups = 2;
  return o;
}

TEST(Monitoring, ScrapeShowsTheGenerationAndLiveFigures) {
  ExporterOptions o = options();
  o.checkpoint_source = [] { return rsi::monitoring::CheckpointWrite{0.25, 4096}; };
  Exporter exporter(o);
  ASSERT_GT(exporter.port(), 0);
  const std::string before = http_get(exporter.port());
  ASSERT_FALSE(before.empty()) << "no answer from " << exporter.endpoint();
  EXPECT_EQ(series(before, R"(rsi_run_info{manifest_hash="0123456789abcdef",run_id="unit",version="0.1.0"})"), 1.0)
      << before;
  EXPECT_EQ(series(before, "rsi_run_active"), 1.0);
  EXPECT_EQ(series(before, R"(rsi_models_failed_total{reason="diverged"})"), 0.0) << "reasons exist before a failure";
  EXPECT_TRUE(std::isnan(series(before, "rsi_pseudo_label_accuracy_ratio")));

  exporter.on_generation_start(1, 4);
  GenerationRecord g;
  g.generation = 1;
  g.children = {child(5, ModelRecord::Status::Trained, 2.0, 1000), child(6, ModelRecord::Status::Trained, 3.0, 2000),
                child(7, ModelRecord::Status::Failed, 1.0, 0, "diverged: loss became nan after 12 steps"),
                child(8, ModelRecord::Status::Refused, 0.0, 0, "design refused: 6000000 parameters > 5000000")};
  g.children[2].failure_kind = ModelRecord::FailureKind::Diverged;
  g.children[3].failure_kind = ModelRecord::FailureKind::DesignRefused;
  for (const auto& m : g.children) exporter.on_model_done(m);
  g.best_val = 0.87;
  g.best_test = 0.86;
  g.median_val = 0.80;
  g.median_test = 0.79;
  g.best_model_test = 0.85;
  g.gain = 0.02;
  g.design_skill = -0.01;
  g.diversity = 3.5;
  g.trained = 2;
  g.failed = 1;
  g.refused = 1;
  g.goodhart_gap = 0.02;
  g.worst_class_accuracy = 0.61;
  g.class_disparity = 0.35;
  g.pseudo_label_accuracy = 0.9;
  g.seconds = 4.0;
  g.events = {{1, "red_line", 8, "parameters", "rsi", ""}, {1, "gate", 0, "gain", "rsi", ""}};
  exporter.on_generation(g);
  exporter.set_approval_pending(1);

  const std::string text = http_get(exporter.port());
  EXPECT_EQ(series(text, "rsi_generation"), 1.0) << text;
  EXPECT_EQ(series(text, "rsi_generation_started"), 1.0);
  EXPECT_EQ(series(text, "rsi_generation_tasks"), 4.0);
  EXPECT_DOUBLE_EQ(series(text, R"(rsi_best_accuracy_ratio{set="validation"})"), 0.87);
  EXPECT_DOUBLE_EQ(series(text, R"(rsi_best_accuracy_ratio{set="hidden_test"})"), 0.86);
  EXPECT_DOUBLE_EQ(series(text, R"(rsi_median_accuracy_ratio{set="validation"})"), 0.80);
  EXPECT_DOUBLE_EQ(series(text, R"(rsi_median_accuracy_ratio{set="hidden_test"})"), 0.79);
  EXPECT_DOUBLE_EQ(series(text, "rsi_best_model_hidden_test_accuracy_ratio"), 0.85);
  EXPECT_DOUBLE_EQ(series(text, "rsi_capability_gain_ratio"), 0.02);
  EXPECT_DOUBLE_EQ(series(text, "rsi_design_skill_ratio"), -0.01);
  EXPECT_DOUBLE_EQ(series(text, "rsi_goodhart_gap_ratio"), 0.02);
  EXPECT_DOUBLE_EQ(series(text, "rsi_worst_class_accuracy_ratio"), 0.61);
  EXPECT_DOUBLE_EQ(series(text, "rsi_class_disparity_ratio"), 0.35);
  EXPECT_DOUBLE_EQ(series(text, "rsi_pseudo_label_accuracy_ratio"), 0.9);
  EXPECT_DOUBLE_EQ(series(text, "rsi_population_diversity"), 3.5);
  EXPECT_EQ(series(text, "rsi_models_trained_total"), 2.0);
  EXPECT_EQ(series(text, R"(rsi_models_failed_total{reason="diverged"})"), 1.0);
  EXPECT_EQ(series(text, R"(rsi_models_failed_total{reason="refused"})"), 1.0);
  EXPECT_EQ(series(text, R"(rsi_models_failed_total{reason="out_of_memory"})"), 0.0);
  EXPECT_EQ(series(text, "rsi_training_samples_total"), 3000.0);
  // 3000 samples over 6 task seconds (the refused child never ran).
  EXPECT_DOUBLE_EQ(series(text, "rsi_training_samples_per_second"), 500.0);
  // 6 task seconds over 4 s of wall time on 2 groups.
  EXPECT_DOUBLE_EQ(series(text, "rsi_group_busy_ratio"), 0.75);
  EXPECT_EQ(series(text, "rsi_task_duration_seconds_count"), 3.0);
  EXPECT_DOUBLE_EQ(series(text, "rsi_task_duration_seconds_sum"), 6.0);
  EXPECT_EQ(series(text, R"(rsi_task_duration_seconds_bucket{le="1"})"), 1.0);
  EXPECT_EQ(series(text, R"(rsi_task_duration_seconds_bucket{le="2.5"})"), 2.0);
  EXPECT_EQ(series(text, "rsi_red_line_events_total"), 1.0);
  EXPECT_EQ(series(text, R"(rsi_governance_events_total{kind="gate"})"), 1.0);
  EXPECT_EQ(series(text, "rsi_approval_pending"), 1.0);
  EXPECT_DOUBLE_EQ(series(text, "rsi_checkpoint_write_seconds"), 0.25);
  EXPECT_EQ(series(text, "rsi_checkpoint_write_bytes"), 4096.0);
  EXPECT_EQ(series(text, "rsi_checkpoint_written_bytes_total"), 4096.0);

  // A second generation without failures: the counters add up, the NaN comes back when no child distilled.
  GenerationRecord g2 = g;
  g2.generation = 2;
  g2.children = {child(9, ModelRecord::Status::Trained, 1.0, 500)};
  g2.events.clear();
  g2.pseudo_label_accuracy = -1;
  exporter.on_generation_start(2, 1);
  exporter.on_model_done(g2.children[0]);
  exporter.on_generation(g2);
  exporter.on_finish();
  const std::string after = http_get(exporter.port());
  EXPECT_EQ(series(after, "rsi_models_trained_total"), 3.0);
  EXPECT_EQ(series(after, R"(rsi_models_failed_total{reason="diverged"})"), 1.0);
  EXPECT_EQ(series(after, "rsi_checkpoint_written_bytes_total"), 8192.0);
  EXPECT_EQ(series(after, "rsi_task_duration_seconds_count"), 4.0);
  EXPECT_TRUE(std::isnan(series(after, "rsi_pseudo_label_accuracy_ratio")));
  EXPECT_EQ(series(after, "rsi_run_active"), 0.0);

  if (std::filesystem::exists("/usr/bin/promtool")) {
    const auto file = std::filesystem::temp_directory_path() / ("rsi-metrics-" + std::to_string(getpid()) + ".txt");
    std::ofstream(file) << after;
    const std::string command = "/usr/bin/promtool check metrics < " + file.string() + " 2>&1";
    FILE* pipe = ::popen(command.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    std::string output;
    char buf[512];
    while (std::fgets(buf, sizeof buf, pipe)) output += buf;
    const int status = ::pclose(pipe);
    std::filesystem::remove(file);
    EXPECT_EQ(status, 0) << "promtool check metrics:\n" << output;
    EXPECT_EQ(output, "") << "promtool check metrics has remarks:\n" << output;
  } else {
    std::printf("promtool not installed: exposition format not checked by promtool\n");
  }
}

TEST(Monitoring, WithoutLiveHooksTheRecordGivesTheTaskFigures) {
  Exporter exporter(options());
  GenerationRecord g;
  g.generation = 0;
  g.children = {child(1, ModelRecord::Status::Trained, 1.0, 100), child(2, ModelRecord::Status::Trained, 1.0, 300)};
  g.seconds = 2.0;
  exporter.on_generation(g);
  const std::string text = http_get(exporter.port());
  EXPECT_EQ(series(text, "rsi_task_duration_seconds_count"), 2.0) << text;
  EXPECT_DOUBLE_EQ(series(text, "rsi_training_samples_per_second"), 200.0);
  EXPECT_DOUBLE_EQ(series(text, "rsi_group_busy_ratio"), 0.5);
}

TEST(Monitoring, APortInUseIsAClearError) {
  Exporter first(options());
  ExporterOptions o = options();
  o.port = first.port();
  try {
    Exporter second(o);
    FAIL() << "a second exporter started on " << first.endpoint();
  } catch (const rsi::monitoring::MonitoringError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("127.0.0.1:" + std::to_string(first.port())), std::string::npos) << what;
    EXPECT_NE(what.find("monitoring.port"), std::string::npos) << what;
  }
  o.port = 70000;
  EXPECT_THROW(Exporter{o}, rsi::monitoring::MonitoringError);
}

TEST(Monitoring, NodeExporterShowsItsRankProcesses) {
  ExporterOptions o = options();
  o.node_ranks = {{3, getpid()}, {4, 999999999}};  // this process, and one that cannot exist
  rsi::monitoring::NodeExporter node(o);
  const std::string text = http_get(node.port());
  EXPECT_EQ(series(text, R"(rsi_node_rank_up{host="localhost",rank="3"})"), 1.0) << text;
  EXPECT_EQ(series(text, R"(rsi_node_rank_up{host="localhost",rank="4"})"), 0.0) << text;
  EXPECT_GT(series(text, R"(rsi_node_rank_resident_memory_bytes{host="localhost",rank="3"})"), 1e6);
  EXPECT_GE(series(text, R"(rsi_node_rank_cpu_seconds_total{host="localhost",rank="3"})"), 0.0);
  EXPECT_EQ(series(text, R"(rsi_run_info{manifest_hash="0123456789abcdef",run_id="unit",version="0.1.0"})"), 1.0);
}

TEST(Monitoring, TargetsFileListsEveryEndpoint) {
  EXPECT_EQ(rsi::monitoring::scrape_address("127.0.0.1", "node7", 9400), "127.0.0.1:9400");
  EXPECT_EQ(rsi::monitoring::scrape_address("0.0.0.0", "node7", 9400), "node7:9400");
  EXPECT_EQ(rsi::monitoring::scrape_address("::1", "node7", 9400), "[::1]:9400");
  const auto dir = std::filesystem::temp_directory_path() / ("rsi-file-sd-" + std::to_string(getpid()));
  const std::string path = (dir / "targets.json").string();
  rsi::monitoring::write_file_sd(path, "run \"x\"",
                                 {{"node1:9400", "node1", "coordinator"}, {"node2:9400", "node2", "node"}});
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(),
            "[\n"
            "  {\"targets\": [\"node1:9400\"], \"labels\": {\"job\": \"rsi\", \"run\": \"run \\\"x\\\"\", \"node\": "
            "\"node1\", \"role\": \"coordinator\"}},\n"
            "  {\"targets\": [\"node2:9400\"], \"labels\": {\"job\": \"rsi\", \"run\": \"run \\\"x\\\"\", \"node\": "
            "\"node2\", \"role\": \"node\"}}\n"
            "]\n");
  std::filesystem::remove_all(dir);
}

// The label comes from the failure's kind, never from its text (which it once guessed by substring).
TEST(Monitoring, FailureReasonsAreBoundedAndComeFromTheKind) {
  using K = ModelRecord::FailureKind;
  const auto label = [](ModelRecord::Status status, K kind, const std::string& text) {
    ModelRecord m = child(1, status, 0, 0, text);
    m.failure_kind = kind;
    return rsi::monitoring::failure_reason_label(m);
  };
  EXPECT_EQ(label(ModelRecord::Status::Failed, K::Diverged, "loss is NaN"), "diverged");
  EXPECT_EQ(label(ModelRecord::Status::Failed, K::OutOfMemory, "training threw: cudaMalloc failed"), "out_of_memory");
  EXPECT_EQ(label(ModelRecord::Status::Failed, K::Error, "diverged: a message that says so is still an error"), "error");
  for (const K k : {K::DesignRefused, K::RedLine, K::NotAdmitted})
    EXPECT_EQ(label(ModelRecord::Status::Refused, k, "whatever"), "refused");
  EXPECT_EQ(label(ModelRecord::Status::Refused, K::None, "read from a lineage"), "refused");
  EXPECT_EQ(label(ModelRecord::Status::Failed, K::None, "read from a lineage"), "error");
  for (const K k : {K::Diverged, K::OutOfMemory, K::Error, K::DesignRefused, K::RedLine, K::NotAdmitted})
    EXPECT_NE(std::string(rsi::scheduler::failure_kind_name(k)), "");
}

}  // namespace
