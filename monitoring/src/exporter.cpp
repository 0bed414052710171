// The Prometheus exporter (see exporter.h and ../README.md for the metric names).
#include "rsi/monitoring/exporter.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <thread>
#include <type_traits>

#include "rsi/scheduler/record.h"

// civetweb (Debian's libcivetweb 1.15, the HTTP server under prometheus-cpp's Exposer) starts its
// threads with a fixed 100 KiB stack (its compile-time USE_STACK_SIZE), and glibc carves every
// thread's static TLS out of its stack. The libraries rsi links carry large static TLS blocks
// (NCCL 12 KiB, cudart 4 KiB, OpenBLAS 60 KiB when rsi still linked it; cuBLASLt's 94 KiB is why
// kernels/ dlopen()s cuBLAS),
// which left civetweb's threads a few KiB: they crashed (SIGSEGV, stack exhausted) or did not start
// ("null context when constructing CivetServer"). This definition takes precedence over glibc's in
// the whole process (shared libraries bind to the executable's symbol) and raises any stack size
// request below 1 MiB to 1 MiB; larger requests pass through unchanged. It lives in this file because
// every program that starts an exporter links this object.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, std::size_t size) {
  using Setter = int (*)(pthread_attr_t*, std::size_t);
  static const Setter glibc = reinterpret_cast<Setter>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  constexpr std::size_t kMinimumStack = std::size_t{1} << 20;
  return glibc(attr, size < kMinimumStack ? kMinimumStack : size);
}

namespace rsi::monitoring {

namespace {

using Clock = std::chrono::steady_clock;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string join_host_port(const std::string& host, int port) {
  // IPv6 literals need brackets, both for civetweb and in a Prometheus target.
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

// Why a bind to address:port fails, asked of the OS directly: civetweb only says that it failed.
std::string bind_failure(const std::string& address, int port) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &v4.sin_addr) != 1) return "";
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as civetweb does
  std::string why;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&v4), sizeof v4) != 0) why = std::strerror(errno);
  ::close(fd);
  return why;
}

// Starts civetweb on bind:port, or throws MonitoringError saying which address and what to do.
std::unique_ptr<prometheus::Exposer> start_exposer(const ExporterOptions& o, int& port_out) {
  if (o.port < 0 || o.port > 65535)
    throw MonitoringError("monitoring: port " + std::to_string(o.port) + " is not a TCP port (1..65535, 0 = off)");
  const std::string where = join_host_port(o.bind.empty() ? "0.0.0.0" : o.bind, o.port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(where, 2);
  } catch (const std::exception& e) {
    std::string why = bind_failure(o.bind.empty() ? "0.0.0.0" : o.bind, o.port);
    why = why.empty() ? std::string(e.what()) : why + "; civetweb: " + e.what();
    throw MonitoringError("monitoring: cannot listen on " + where + " (" + why +
                          "); choose a free monitoring.port in the manifest (or 0 to turn the exporter off), "
                          "or a local monitoring.bind address");
  }
  const auto ports = exposer->GetListeningPorts();
  port_out = ports.empty() ? o.port : ports.front();
  return exposer;
}

// Stops civetweb promptly. Its listener thread polls with a fixed 2 s timeout (civetweb 1.15's
// SOCKET_TIMEOUT_QUANTUM) before it sees the stop flag, so every run's end (and every test) waited
// ~1.9 s; a connection wakes the poll, and stopping takes ~0.04 s.
void stop_exposer(std::unique_ptr<prometheus::Exposer>& exposer, const std::string& bind, int port) {
  if (!exposer) return;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const std::string target = bind.empty() || bind == "0.0.0.0" ? "127.0.0.1" : bind;
  if (port <= 0 || inet_pton(AF_INET, target.c_str(), &addr.sin_addr) != 1) {  // IPv6: the slow way
    exposer.reset();
    return;
  }
  std::atomic<bool> stopped{false};
  std::thread waker([&] {
    while (!stopped.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0) continue;
      ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
      ::close(fd);
    }
  });
  exposer.reset();
  stopped.store(true);
  waker.join();
}

// CPU time and resident memory of this node's rank processes, read from /proc at each scrape.
class NodeRanksCollectable final : public prometheus::Collectable {
 public:
  NodeRanksCollectable(std::string host, std::vector<NodeRank> ranks) : host_(std::move(host)), ranks_(std::move(ranks)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily cpu{"rsi_node_rank_cpu_seconds_total",
                                 "CPU time (user + system) of a rank process of this node", prometheus::MetricType::Counter, {}};
    prometheus::MetricFamily rss{"rsi_node_rank_resident_memory_bytes", "Resident memory of a rank process of this node",
                                 prometheus::MetricType::Gauge, {}};
    prometheus::MetricFamily up{"rsi_node_rank_up", "1 while the rank process is alive (read from /proc), else 0",
                                prometheus::MetricType::Gauge, {}};
    static const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    static const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
    for (const NodeRank& r : ranks_) {
      const std::vector<prometheus::ClientMetric::Label> labels = {{"host", host_}, {"rank", std::to_string(r.rank)}};
      prometheus::ClientMetric alive;
      alive.label = labels;
      std::ifstream in("/proc/" + std::to_string(r.pid) + "/stat");
      std::string line;
      std::getline(in, line);
      // Fields after the command name (which may hold spaces) start at field 3 (state).
      const auto close = line.rfind(')');
      if (!in || close == std::string::npos) {
        up.metric.push_back(alive);
        continue;
      }
      std::istringstream fields(line.substr(close + 2));
      std::vector<std::string> f{std::istream_iterator<std::string>(fields), std::istream_iterator<std::string>()};
      if (f.size() < 22) {
        up.metric.push_back(alive);
        continue;
      }
      alive.gauge.value = 1;
      up.metric.push_back(alive);
      prometheus::ClientMetric c;
      c.label = labels;
      c.counter.value = (std::stod(f[11]) + std::stod(f[12])) / ticks;  // utime, stime (fields 14, 15)
      cpu.metric.push_back(c);
      prometheus::ClientMetric m;
      m.label = labels;
      m.gauge.value = std::stod(f[21]) * page;  // rss in pages (field 24)
      rss.metric.push_back(m);
    }
    std::vector<prometheus::MetricFamily> out;
    for (auto* fam : {&cpu, &rss, &up})
      if (!fam->metric.empty()) out.push_back(std::move(*fam));
    return out;
  }

 private:
  std::string host_;
  std::vector<NodeRank> ranks_;
};

void add_run_info(prometheus::Registry& registry, const ExporterOptions& o) {
  prometheus::BuildGauge()
      .Name("rsi_run_info")
      .Help("Constant 1, labelled with the run id, the manifest hash and the program version")
      .Register(registry)
      .Add({{"run_id", o.run_id}, {"manifest_hash", o.manifest_hash}, {"version", o.version}})
      .Set(1);
}

}  // namespace

std::string failure_reason_label(const scheduler::ModelRecord& m) {
  using K = scheduler::ModelRecord::FailureKind;
  switch (m.failure_kind) {
    case K::Diverged: return "diverged";
    case K::OutOfMemory: return "out_of_memory";
    case K::DesignRefused:
    case K::RedLine:
    case K::NotAdmitted: return "refused";
    case K::Error: return "error";
    case K::None: break;
  }
  return m.status == scheduler::ModelRecord::Status::Refused ? "refused" : "error";
}

const std::vector<std::string>& failure_reason_labels() {
  static const std::vector<std::string> labels = {"diverged", "out_of_memory", "refused", "error"};
  return labels;
}

// What the coordinator's and a node's exporter share: a registry that starts with rsi_run_info, the
// node's rank processes, and the HTTP endpoint, which listens last (a scrape never sees a
// half-registered set of metrics) and stops promptly when this goes.
struct Endpoint {
  ExporterOptions options;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<NodeRanksCollectable> node;
  std::unique_ptr<prometheus::Exposer> exposer;
  int port = 0;

  explicit Endpoint(const ExporterOptions& o) : options(o) { add_run_info(*registry, o); }
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  ~Endpoint() { stop_exposer(exposer, options.bind, port); }

  void listen() {
    if (!options.node_ranks.empty()) node = std::make_shared<NodeRanksCollectable>(options.host, options.node_ranks);
    exposer = start_exposer(options, port);
    exposer->RegisterCollectable(registry);
    if (node) exposer->RegisterCollectable(node);
  }
  std::string address() const { return join_host_port(options.bind.empty() ? "0.0.0.0" : options.bind, port); }
};

struct Exporter::State {
  explicit State(const ExporterOptions& o) : ep(o) {}
  Endpoint ep;

  prometheus::Gauge *run_active, *generation, *generation_started, *generation_tasks, *generation_completed_at,
      *best_val, *best_test, *median_val, *median_test, *pseudo_label, *samples_per_second, *busy, *groups,
      *checkpoint_seconds, *checkpoint_bytes, *approval_pending;
  // One gauge per summary field that scheduler/record_fields.h names a gauge for, by field name.
  std::map<std::string, prometheus::Gauge*, std::less<>> field_gauges;
  prometheus::Counter *trained, *samples, *red_lines, *checkpoint_seconds_total, *checkpoint_bytes_total;
  prometheus::Family<prometheus::Counter>* failed_family;
  prometheus::Family<prometheus::Counter>* events_family;
  prometheus::Histogram* task_seconds;

  // Live figures of the generation in flight, updated by the hooks on the coordinator's thread.
  Clock::time_point generation_start = Clock::now();
  double task_seconds_sum = 0.0;
  double samples_sum = 0.0;
  bool started_by_hook = false;
};

Exporter::Exporter(const ExporterOptions& options) : state_(std::make_unique<State>(options)) {
  State& s = *state_;
  prometheus::Registry& r = *s.ep.registry;
  const auto gauge = [&r](const char* name, const char* help) -> prometheus::Gauge& {
    return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
  };
  const auto counter = [&r](const char* name, const char* help) -> prometheus::Counter& {
    return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
  };
  s.run_active = &gauge("rsi_run_active", "1 while the loop runs, 0 once it has ended (the endpoint may linger)");
  prometheus::BuildGauge()
      .Name("rsi_run_start_timestamp_seconds")
      .Help("Unix time the exporter started")
      .Register(r)
      .Add({})
      .Set(unix_now());
  s.generation = &gauge("rsi_generation", "Last generation that is complete (selected and recorded); -1 before the first");
  s.generation_started = &gauge("rsi_generation_started", "Generation whose tasks are dispatched or running");
  s.generation_tasks = &gauge("rsi_generation_tasks", "Tasks (children) of the generation in flight");
  s.generation_completed_at =
      &gauge("rsi_generation_completed_timestamp_seconds", "Unix time the last generation completed (the exporter's start before the first)");
  auto& best = prometheus::BuildGauge()
                   .Name("rsi_best_accuracy_ratio")
                   .Help("Best accuracy over the population after selection, by set (validation selects; "
                         "hidden_test is only reported)")
                   .Register(r);
  s.best_val = &best.Add({{"set", "validation"}});
  s.best_test = &best.Add({{"set", "hidden_test"}});
  auto& median = prometheus::BuildGauge()
                     .Name("rsi_median_accuracy_ratio")
                     .Help("Median accuracy over the population after selection, by set")
                     .Register(r);
  s.median_val = &median.Add({{"set", "validation"}});
  s.median_test = &median.Add({{"set", "hidden_test"}});
  // Every summary field with a gauge in scheduler/record_fields.h, its meaning as help; NaN until
  // the first generation that has it.
  for (const scheduler::FieldInfo& f : scheduler::generation_fields())
    if (f.gauge) {
      s.field_gauges[f.name] = &gauge(f.gauge, f.doc);
      s.field_gauges[f.name]->Set(std::numeric_limits<double>::quiet_NaN());
    }
  s.pseudo_label = &gauge("rsi_pseudo_label_accuracy_ratio",
                          "Mean accuracy of the parents' labels on the unlabeled pool (NaN when no child distilled on it)");
  s.pseudo_label->Set(std::numeric_limits<double>::quiet_NaN());
  s.samples_per_second = &gauge("rsi_training_samples_per_second",
                                "Training samples per second of task time, over the tasks of the generation in flight");
  s.busy = &gauge("rsi_group_busy_ratio",
                  "Task seconds over trainer-group seconds since the generation in flight started");
  s.groups = &gauge("rsi_trainer_groups", "Trainer groups of the job");
  s.groups->Set(options.trainer_groups);
  s.checkpoint_seconds = &gauge("rsi_checkpoint_write_seconds", "Time the last generation's checkpoint took to write");
  s.checkpoint_bytes = &gauge("rsi_checkpoint_write_bytes", "Size of the last generation's checkpoint file");
  s.checkpoint_seconds_total = &counter("rsi_checkpoint_write_seconds_total", "Time spent writing checkpoints");
  s.checkpoint_bytes_total = &counter("rsi_checkpoint_written_bytes_total", "Bytes of checkpoint files written");
  s.approval_pending = &gauge("rsi_approval_pending", "Approval gates waiting for a human decision");
  s.trained = &counter("rsi_models_trained_total", "Models trained");
  s.samples = &counter("rsi_training_samples_total", "Training samples processed (distill + fine-tune)");
  s.red_lines = &counter("rsi_red_line_events_total", "Governance red-line events (designs refused by a red line)");
  s.failed_family = &prometheus::BuildCounter()
                         .Name("rsi_models_failed_total")
                         .Help("Models that failed or were refused, by reason")
                         .Register(r);
  for (const auto& reason : failure_reason_labels()) s.failed_family->Add({{"reason", reason}});
  s.events_family = &prometheus::BuildCounter()
                         .Name("rsi_governance_events_total")
                         .Help("Governance events recorded in the lineage, by kind")
                         .Register(r);
  for (const char* kind : {"gate", "approved", "rejected", "red_line", "stop", "budget", "alert"})
    s.events_family->Add({{"kind", kind}});
  s.task_seconds = &prometheus::BuildHistogram()
                        .Name("rsi_task_duration_seconds")
                        .Help("Wall time of a task (training + evaluation of one child)")
                        .Register(r)
                        .Add({}, prometheus::Histogram::BucketBoundaries{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                                                         5, 10, 30, 60, 120, 300, 600, 1800, 3600});
  s.run_active->Set(1);
  s.generation->Set(-1);
  s.generation_started->Set(-1);
  // The stall alert measures from here until the first generation completes.
  s.generation_completed_at->Set(unix_now());
  s.ep.listen();
}

Exporter::~Exporter() = default;

int Exporter::port() const { return state_->ep.port; }
std::string Exporter::endpoint() const { return state_->ep.address(); }

void Exporter::on_generation_start(int generation, int tasks) {
  State& s = *state_;
  s.generation_start = Clock::now();
  s.task_seconds_sum = 0.0;
  s.samples_sum = 0.0;
  s.started_by_hook = true;
  s.generation_started->Set(generation);
  s.generation_tasks->Set(tasks);
}

void Exporter::on_model_done(const scheduler::ModelRecord& m) {
  State& s = *state_;
  if (m.status == scheduler::ModelRecord::Status::Refused) return;  // never dispatched: no task time
  s.task_seconds->Observe(m.metrics.wall_seconds);
  s.task_seconds_sum += m.metrics.wall_seconds;
  s.samples_sum += static_cast<double>(m.metrics.samples);
  s.samples->Increment(static_cast<double>(m.metrics.samples));
  if (s.task_seconds_sum > 0) s.samples_per_second->Set(s.samples_sum / s.task_seconds_sum);
  const double elapsed = std::chrono::duration<double>(Clock::now() - s.generation_start).count();
  if (elapsed > 0 && s.ep.options.trainer_groups > 0)
    s.busy->Set(std::min(1.0, s.task_seconds_sum / (elapsed * s.ep.options.trainer_groups)));
}

void Exporter::on_generation(const scheduler::GenerationRecord& g) {
  State& s = *state_;
  if (!s.started_by_hook) {
    // Wired without live hooks (or a generation rebuilt on resume): the task figures come from the record.
    s.generation_start = Clock::now() - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(g.seconds));
    s.task_seconds_sum = s.samples_sum = 0.0;
    for (const auto& m : g.children) on_model_done(m);
  }
  s.started_by_hook = false;
  s.generation->Set(g.generation);
  s.generation_completed_at->Set(unix_now());
  s.best_val->Set(g.best_val);
  s.best_test->Set(g.best_test);
  s.median_val->Set(g.median_val);
  s.median_test->Set(g.median_test);
  s.pseudo_label->Set(g.pseudo_label_accuracy >= 0 ? g.pseudo_label_accuracy : std::numeric_limits<double>::quiet_NaN());
  scheduler::visit_generation_fields(g, [&s](const scheduler::FieldInfo& f, const auto& v) {
    using T = std::decay_t<decltype(v)>;
    if (!f.gauge) return;
    prometheus::Gauge& gauge = *s.field_gauges.find(f.name)->second;
    if constexpr (std::is_arithmetic_v<T>) gauge.Set(static_cast<double>(v));
    if constexpr (std::is_same_v<T, std::optional<double>> || std::is_same_v<T, std::optional<std::int64_t>>)
      gauge.Set(v ? static_cast<double>(*v) : std::numeric_limits<double>::quiet_NaN());
  });
  // The busy ratio of the whole generation, now that its wall time is known.
  if (g.seconds > 0 && s.ep.options.trainer_groups > 0)
    s.busy->Set(std::min(1.0, s.task_seconds_sum / (g.seconds * s.ep.options.trainer_groups)));
  for (const auto& m : g.children) {
    if (m.trained()) s.trained->Increment();
    else s.failed_family->Add({{"reason", failure_reason_label(m)}}).Increment();
  }
  for (const auto& e : g.events) {
    s.events_family->Add({{"kind", e.kind}}).Increment();
    if (e.kind == "red_line") s.red_lines->Increment();
  }
  if (s.ep.options.checkpoint_source) {
    const CheckpointWrite w = s.ep.options.checkpoint_source();
    s.checkpoint_seconds->Set(w.seconds);
    s.checkpoint_bytes->Set(static_cast<double>(w.bytes));
    s.checkpoint_seconds_total->Increment(w.seconds);
    s.checkpoint_bytes_total->Increment(static_cast<double>(w.bytes));
  }
}

void Exporter::on_finish() { state_->run_active->Set(0); }

void Exporter::set_approval_pending(int pending) { state_->approval_pending->Set(pending); }

struct NodeExporter::State : Endpoint {
  using Endpoint::Endpoint;
};

NodeExporter::NodeExporter(const ExporterOptions& options) : state_(std::make_unique<State>(options)) {
  state_->listen();
}

NodeExporter::~NodeExporter() = default;
int NodeExporter::port() const { return state_->port; }
std::string NodeExporter::endpoint() const { return state_->address(); }

std::string scrape_address(const std::string& bind, const std::string& host, int port) {
  const bool every_interface = bind.empty() || bind == "0.0.0.0" || bind == "::" || bind == "[::]";
  return join_host_port(every_interface ? host : bind, port);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else out += c;
  }
  return out + "\"";
}

std::string file_sd_json(const std::string& run_id, const std::vector<TargetEndpoint>& endpoints) {
  std::ostringstream out;
  out << "[\n";
  for (std::size_t i = 0; i < endpoints.size(); ++i) {
    const auto& e = endpoints[i];
    out << "  {\"targets\": [" << json_string(e.address) << "], \"labels\": {\"job\": \"rsi\", \"run\": "
        << json_string(run_id) << ", \"node\": " << json_string(e.host) << ", \"role\": " << json_string(e.role)
        << "}}" << (i + 1 < endpoints.size() ? "," : "") << "\n";
  }
  out << "]\n";
  return out.str();
}

void write_file_sd(const std::string& path, const std::string& run_id, const std::vector<TargetEndpoint>& endpoints) {
  const std::filesystem::path target(path);
  std::error_code ec;
  if (target.has_parent_path()) std::filesystem::create_directories(target.parent_path(), ec);
  const std::filesystem::path tmp = target.string() + ".tmp";
  {
    std::ofstream out(tmp);
    out << file_sd_json(run_id, endpoints);
    if (!out.flush())
      throw MonitoringError("monitoring: cannot write the Prometheus targets file " + tmp.string() +
                            " (check monitoring.targets_file and that its directory is writable)");
  }
  std::filesystem::rename(tmp, target, ec);
  if (ec)
    throw MonitoringError("monitoring: cannot move " + tmp.string() + " to " + target.string() + ": " + ec.message());
}

}  // namespace rsi::monitoring
