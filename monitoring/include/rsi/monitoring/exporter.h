// The Prometheus exporter: an HTTP /metrics endpoint (prometheus-cpp, civetweb) that a GenerationSink
// and the loop's live hooks feed. The coordinator runs an `Exporter`; on multi-node jobs local rank 0
// of every other node runs a `NodeExporter` with its node's rank processes. Metric names and their
// meaning: monitoring/README.md. The scheduler never includes this header: runtime wires it in.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/scheduler/record.h"

namespace rsi::monitoring {

// The exporter could not start (address in use, not a local address, ...); the message names
// address:port and what to do.
struct MonitoringError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One checkpoint write: what the lineage store reports after a generation is durable.
struct CheckpointWrite {
  double seconds = 0.0;
  std::uint64_t bytes = 0;
};

// A rank process on this node, whose CPU time and memory the endpoint reads from /proc per scrape.
struct NodeRank {
  int rank = 0;
  pid_t pid = 0;
};

struct ExporterOptions {
  std::string bind = "127.0.0.1";
  int port = 0;  // 0 here asks the OS for a free port (tests); the manifest's 0 means no exporter at all
  std::string run_id;         // the run's name
  std::string manifest_hash;
  std::string version;
  std::string host;            // this node's host name (label of the node metrics)
  int trainer_groups = 1;      // for the busy ratio
  std::vector<NodeRank> node_ranks;  // this node's rank processes (empty: none exported)
  // Called in on_generation: the store is the first sink, so this is the generation's own write.
  std::function<CheckpointWrite()> checkpoint_source;
};

// A failure reason reduced to a bounded label value: diverged, out_of_memory, refused, error.
std::string failure_reason_label(const scheduler::ModelRecord& model);

// The failure reason labels that always exist (at 0), so a query sees them before the first failure.
const std::vector<std::string>& failure_reason_labels();

class Exporter final : public scheduler::GenerationSink {
 public:
  // Starts listening; throws MonitoringError naming bind:port when it cannot.
  explicit Exporter(const ExporterOptions& options);
  ~Exporter() override;
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  int port() const;              // the port it listens on (the OS's pick when options.port was 0)
  std::string endpoint() const;  // address:port

  // GenerationSink: every per-generation figure, counters from the children and the events.
  void on_generation(const scheduler::GenerationRecord& record) override;
  void on_finish() override;  // rsi_run_active drops to 0; the endpoint stays up until destruction

  // Live hooks (LoopEvents): a generation's tasks are dispatched; a task finished.
  void on_generation_start(int generation, int tasks);
  void on_model_done(const scheduler::ModelRecord& model);

  // Governance: approvals waiting for a human decision (the gate sets it, a decision clears it).
  void set_approval_pending(int pending);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// A node's endpoint on a multi-node job: rsi_run_info and its rank processes' CPU and memory.
class NodeExporter {
 public:
  explicit NodeExporter(const ExporterOptions& options);  // throws MonitoringError like Exporter
  ~NodeExporter();
  NodeExporter(const NodeExporter&) = delete;
  NodeExporter& operator=(const NodeExporter&) = delete;
  int port() const;
  std::string endpoint() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

// Prometheus file_sd JSON listing `endpoints` (address:port each) with their labels: one group per
// endpoint, labelled job="rsi", run, node (its host) and role ("coordinator" for the first).
struct TargetEndpoint {
  std::string address;  // host:port as Prometheus will reach it
  std::string host;
  std::string role;
};
std::string file_sd_json(const std::string& run_id, const std::vector<TargetEndpoint>& endpoints);
// A JSON string literal of `s`: quotes, backslashes and control characters escaped (the commands'
// --json output uses it too).
std::string json_string(const std::string& s);
// Writes it atomically (temporary file, then rename) so Prometheus never reads half a file.
void write_file_sd(const std::string& path, const std::string& run_id, const std::vector<TargetEndpoint>& endpoints);

// The address Prometheus should scrape for an endpoint bound to `bind` on `host`: the host name
// when bound to every interface, else the bind address itself.
std::string scrape_address(const std::string& bind, const std::string& host, int port);

}  // namespace rsi::monitoring
