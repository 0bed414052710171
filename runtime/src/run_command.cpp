// `rsi run MANIFEST`: the distributed RSI loop under mpirun/srun (or alone, as one rank).
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <span>
#include <thread>
#include <type_traits>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/collective/communicator.h"
#include "rsi/kernels/cpu_gemm.h"
#include "rsi/models/data.h"
#include "rsi/monitoring/exporter.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"
#include "rsi/runtime/manifest.h"
#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/loop.h"
#include "device.h"
#include "lineage_files.h"
#include "placement.h"
#include "progress.h"
#include "run_status.h"

#ifndef RSI_VERSION
#define RSI_VERSION "unknown"
#endif
#ifndef RSI_GIT_COMMIT
#define RSI_GIT_COMMIT "unknown"
#endif

namespace rsi::runtime {

namespace {

struct RunArgs {
  std::string manifest;
  std::string out;
  int generations = -1;
  std::string reproduce;  // rsi reproduce: the run directory to re-run and compare with
};

// rsi reproduce: the stored run's manifest, with its seed genomes taken from generation 0.
RunConfig stored_run_config(const std::string& run_dir) {
  const auto files = checkpoints::generation_files(run_dir);
  if (files.empty()) throw checkpoints::CheckpointError(run_dir + ": no generation files (gen-*.h5) to reproduce");
  const auto first = checkpoints::read_generation(files.front());
  RunConfig config = parse_manifest(first.run.manifest_text, run_dir + "/gen-0 manifest", run_dir, false);
  if (!first.run.data.empty()) {  // kind images: the data where the run found it (absolute paths)
    apply_image_task_yaml(first.run.data, run_dir + "/gen-0 data", config.loop.task);
    config.loop.task.input = first.run.input;
  }
  // Reproduced in the original's lineage format (its weight digests' FNV basis; FORMAT.md).
  config.loop.format1_weights_digest = first.format_version == 1;
  config.summary_revision = first.summary_revision;
  for (const auto& m : first.models)
    if (m.record.op == "seed") config.loop.seeds.push_back(models::from_yaml(m.record.genome_yaml, "stored seed"));
  return config;
}

// Compares the generation hashes of two runs; returns the number of differences printed.
int compare_runs(const std::string& a, const std::string& b, int generations) {
  const auto fa = checkpoints::generation_files(a), fb = checkpoints::generation_files(b);
  int compared = 0;
  for (std::size_t i = 0; i < fa.size() && i < fb.size() && static_cast<int>(i) <= generations; ++i) {
    const auto ga = checkpoints::read_generation(fa[i]), gb = checkpoints::read_generation(fb[i]);
    ++compared;
    if (ga.generation_hash == gb.generation_hash) continue;
    std::printf("first divergence at generation %d: hash %s (original) vs %s (reproduction)\n", ga.generation,
                ga.generation_hash.c_str(), gb.generation_hash.c_str());
    for (std::size_t k = 0; k < ga.models.size() && k < gb.models.size(); ++k)
      if (ga.models[k].provenance_hash != gb.models[k].provenance_hash) {
        const auto& x = ga.models[k].record;
        const auto& y = gb.models[k].record;
        std::printf("  model %llu: val %.6f vs %.6f, weights %s vs %s, genome %s\n",
                    static_cast<unsigned long long>(x.id), x.metrics.val_accuracy, y.metrics.val_accuracy,
                    x.weights_digest.c_str(), y.weights_digest.c_str(),
                    x.genome_yaml == y.genome_yaml ? "same" : "differs");
        break;
      }
    return 1;
  }
  std::printf("reproduced: %d generation hash(es) identical\n", compared);
  return 0;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// SIGUSR1 (Slurm's warning before preemption or the time limit) and SIGTERM set this; the
// coordinator ends the run at its next generation boundary, once the last generation is durable.
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal.store(sig); }

void install_stop_handlers() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

// Every rank's host name and pid, gathered to rank 0 (collective; empty on the other ranks).
struct Placement {
  std::vector<std::string> host_of_rank;
  std::vector<int> pid_of_rank;
};
Placement gather_placement(collective::Communicator& world) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const auto all = world.allgather_strings(std::to_string(getpid()) + " " + host);
  Placement out;
  if (world.rank() == 0)
    for (const std::string& entry : all) {
      const std::size_t space = entry.find(' ');
      out.pid_of_rank.push_back(std::stoi(entry.substr(0, space)));
      out.host_of_rank.push_back(entry.substr(space + 1));
    }
  return out;
}

// Pins every rank's CPU kernel family to cluster.cpu_kernels (best: each CPU's own) and gathers
// "host:family" of every rank to rank 0, distinct and comma-separated, for the lineage. Sets `error`
// on every rank when any rank cannot run the family (collective).
struct CpuKernels {
  std::string list;   // rank 0
  std::string error;  // every rank, when any failed: the first failing rank's reason
};
CpuKernels select_cpu_kernels(const std::string& wanted, collective::Communicator& world) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const int rank = world.rank();
  char mine[512] = {};
  try {
    if (wanted != "best") kernels::set_cpu_kernel(kernels::parse_cpu_kernel(wanted));
    std::snprintf(mine, sizeof mine, "%s:%s", host, kernels::cpu_kernel_name(kernels::cpu_kernel()));
  } catch (const std::invalid_argument& e) {
    std::snprintf(mine, sizeof mine, "!%s rank %d: %s", host, rank, e.what());
  }
  const std::vector<std::string> all = world.allgather_strings(mine);
  CpuKernels out;
  for (const std::string& entry : all) {
    if (entry[0] == '!') {
      if (out.error.empty()) out.error = "cluster.cpu_kernels: " + wanted + ": " + entry.substr(1);
    } else if (("," + out.list + ",").find("," + entry + ",") == std::string::npos) {
      out.list += (out.list.empty() ? "" : ",") + entry;
    }
  }
  return out;
}

// --- monitoring (monitoring/README.md) ---
// The exporters, started collectively before training: the coordinator's on rank 0 and, on a
// multi-node job, a node endpoint on local rank 0 of every other node (Communicator::split_by_node),
// each listing its node's rank processes. Returns, on rank 0, the endpoints
// for the file_sd targets file, or sets `error` (on rank 0) when any endpoint could not listen.
struct MonitoringStart {
  std::unique_ptr<monitoring::Exporter> exporter;       // rank 0
  std::unique_ptr<monitoring::NodeExporter> node;       // local rank 0 of the other nodes
  std::vector<monitoring::TargetEndpoint> endpoints;    // rank 0: every endpoint, the coordinator first
  std::string error;                                    // rank 0: what failed, where
};

MonitoringStart start_monitoring(const RunConfig& config, const std::unique_ptr<checkpoints::LineageStore>& store,
                                 collective::Communicator& world) {
  const int rank = world.rank(), size = world.size();
  // This node's ranks: world rank and pid of each, in node-rank order.
  const auto node = world.split_by_node();
  const int local_rank = node->rank();
  const std::vector<std::string> node_pids = node->allgather_strings(std::to_string(rank) + " " + std::to_string(getpid()));

  struct Report {
    char host[256];
    char error[768];
    int port;  // 0: this rank runs no endpoint
  } report{};
  static_assert(std::is_trivially_copyable_v<Report>);
  gethostname(report.host, sizeof report.host - 1);
  MonitoringStart out;
  if (local_rank == 0) {
    monitoring::ExporterOptions o;
    o.bind = config.monitoring.bind;
    o.port = config.monitoring.port;
    o.run_id = config.name;
    o.manifest_hash = config.manifest_hash;
    o.version = RSI_VERSION;
    o.host = report.host;
    o.trainer_groups = size / config.loop.group_size;
    for (const std::string& entry : node_pids) {
      const std::size_t space = entry.find(' ');
      o.node_ranks.push_back({std::stoi(entry.substr(0, space)), static_cast<pid_t>(std::stol(entry.substr(space + 1)))});
    }
    // The store writes each generation before the exporter's on_generation reads its figures.
    o.checkpoint_source = [&store] {
      return store ? monitoring::CheckpointWrite{store->last_write_seconds(), store->last_write_bytes()}
                   : monitoring::CheckpointWrite{};
    };
    try {
      if (rank == 0) {
        out.exporter = std::make_unique<monitoring::Exporter>(o);
        report.port = out.exporter->port();
      } else {
        out.node = std::make_unique<monitoring::NodeExporter>(o);
        report.port = out.node->port();
      }
    } catch (const monitoring::MonitoringError& e) {
      std::snprintf(report.error, sizeof report.error, "%s (host %s, rank %d)", e.what(), report.host, rank);
    }
  }
  std::vector<Report> all(static_cast<std::size_t>(size));
  const auto reports = world.allgather_bytes(std::as_bytes(std::span(&report, 1)));
  for (int r = 0; r < size; ++r) std::memcpy(&all[r], reports[r].data(), sizeof(Report));
  if (rank == 0)
    for (int r = 0; r < size; ++r) {
      if (all[r].error[0]) out.error += (out.error.empty() ? "" : "\n") + std::string(all[r].error);
      else if (all[r].port > 0)
        out.endpoints.push_back({monitoring::scrape_address(config.monitoring.bind, all[r].host, all[r].port),
                                 all[r].host, r == 0 ? "coordinator" : "node"});
    }
  return out;
}
// --- end monitoring ---

// One `rsi run` (or `rsi reproduce`) on every rank, as steps: the run's configuration, inputs
// checked before the job starts, devices and CPU kernels, monitoring, the run directory (resume,
// history, sinks; rank 0), hooks (stop, governance), the loop, and what the run's end means. A step
// that ends the command returns its exit code, agreed by every rank.
class RunSession {
 public:
  // `mpi`: the MPI world, for the session's own collectives (agreeing on exit codes, start-up
  // exchanges); the loop gets its own world communicator (NCCL over it on GPUs).
  RunSession(const RunArgs& args, collective::Communicator& mpi)
      : args_(args), mpi_(mpi), rank_(mpi.rank()), size_(mpi.size()),
        manifest_name_(args.reproduce.empty() ? args.manifest : args.reproduce + " (embedded manifest)") {}

  int run() {
    for (auto step : {&RunSession::load_config, &RunSession::check_inputs, &RunSession::select_devices,
                      &RunSession::start_exporters, &RunSession::open_run_directory})
      if (const std::optional<int> rc = (this->*step)()) return *rc;
    wire_monitoring();
    install_hooks();
    try {
      const scheduler::LoopSummary summary = scheduler::run_loop(
          config_.loop, *world_, sinks_, events_, rank_ == 0 && resume_.generation >= 0 ? &resume_ : nullptr);
      // The last generation's file digest and LATEST are finished in the background; an error there
      // (reported only on stderr by the sink's on_finish) must fail the run, not pass unnoticed.
      if (store_) store_->flush();
      return finish(summary);
    } catch (const std::exception& e) {
      if (status_) status_->ended("failed", e.what(), kExitFailure);  // the caller reports it and aborts
      throw;
    }
  }

 private:
  void error(const std::string& what) const {
    if (rank_ == 0) logf(LogLevel::Error, "%s: %s", manifest_name_.c_str(), what.c_str());
  }

  std::optional<int> load_config() {
    try {
      if (args_.reproduce.empty()) {
        config_ = load_manifest(args_.manifest);
      } else {
        config_ = stored_run_config(args_.reproduce);
        config_.monitoring.port = 0;  // a check, not a run to watch; the original's port may still be in use
        config_.output_directory = args_.out.empty() ? args_.reproduce + "-reproduce" : args_.out;
        if (rank_ == 0 && !checkpoints::generation_files(config_.output_directory).empty())
          throw ManifestError(config_.output_directory + " already holds a run; choose an empty --out directory");
      }
    } catch (const checkpoints::CheckpointError& e) {
      if (rank_ == 0) log_error(e.what());
      return kExitBadInput;
    } catch (const ManifestError& e) {
      if (rank_ == 0) log_error(e.what());
      return kExitBadInput;
    }
    if (args_.generations >= 0) config_.loop.generations = args_.generations;
    if (!args_.out.empty() && args_.reproduce.empty()) config_.output_directory = args_.out;
    run_dir_ = config_.output_directory;
    return std::nullopt;
  }

  // Inputs every rank reads are checked on rank 0 before the job starts: a missing data directory
  // is exit code 3 naming it, not an error on whichever rank reads first.
  std::optional<int> check_inputs() {
    int bad_data = 0;
    if (rank_ == 0 && config_.loop.task.kind == scheduler::TaskSpec::Kind::FashionMnist) {
      try {
        models::check_fashion_mnist(config_.loop.task.data_dir);
      } catch (const models::DataError& e) {
        error(std::string("task.data_dir: ") + e.what());
        bad_data = 1;
      }
    }
    if (rank_ == 0 && config_.loop.task.kind == scheduler::TaskSpec::Kind::Images) {
      // Read in full once (the manifest loader read the headers and labels): a corrupt file is named
      // here, and the fingerprints say in the lineage which pixels the run learned from and was tested on.
      const scheduler::TaskSpec& task = config_.loop.task;
      const char* part = "task.train";
      try {
        const models::Dataset train = models::load_images(task.train_files, task.layout, task.input.classes);
        part = "task.test";
        const models::Dataset test = models::load_images(task.test_files, task.layout, task.input.classes);
        char text[64];
        std::snprintf(text, sizeof text, "train=%016llx test=%016llx",
                      static_cast<unsigned long long>(models::data_fingerprint(train)),
                      static_cast<unsigned long long>(models::data_fingerprint(test)));
        data_fingerprint_ = text;
        images_split_fingerprint_ =
            models::split_fingerprint(models::make_split(train.size(), task.split, config_.loop.seed));
      } catch (const models::DataError& e) {
        error(std::string(part) + ": " + e.what());
        bad_data = 1;
      }
    }
    if (mpi_.agree(bad_data)) return kExitBadInput;
    if (size_ % config_.loop.group_size != 0) {
      error("cluster.group_size " + std::to_string(config_.loop.group_size) + " does not divide the " +
            std::to_string(size_) + " ranks of this job");
      return kExitUsage;
    }
    return std::nullopt;
  }

  // GPU by local rank, agreed by every rank, before training; every rank's CPU kernel family.
  std::optional<int> select_devices() {
    DevicePolicy policy = DevicePolicy::Cpu;
    parse_device_policy(config_.cluster.device, &policy);  // the manifest loader validated it
    // The GPU settings the kernels read, from the manifest unless the environment overrides them:
    // set on every rank before any CUDA context or network exists.
    std::vector<std::string> overrides;
    cuda_settings_ = apply_cuda_settings(config_.cluster, &overrides);
    if (rank_ == 0 && policy != DevicePolicy::Cpu)
      for (const auto& o : overrides) log_note(o);
    const RunDevice device = select_run_device(policy, config_.cluster.gpus_per_node, mpi_);
    if (!device.error.empty())
      logf(LogLevel::Error, "%s: %s", manifest_name_.c_str(), device.error.c_str());
    if (device.failed) return kExitBadInput;
    if (!device.warning.empty())
      log_warning(device.warning);
    if (rank_ == 0 && policy != DevicePolicy::Cpu) std::printf("rsi run: %s\n", device.summary.c_str());
    cpu_kernels_ = select_cpu_kernels(config_.cluster.cpu_kernels, mpi_);  // collective
    if (!cpu_kernels_.error.empty()) {
      error(cpu_kernels_.error);
      return kExitBadInput;
    }
    if (rank_ == 0)
      std::printf("rsi run: %s; every rank: %s\n", kernels::cpu_kernel_summary().c_str(), cpu_kernels_.list.c_str());
    if (const std::string w = kernels::cpu_kernel_warning(); !w.empty())
      log_warning(w);
    // Device buffers all-reduce over NCCL; host buffers and the scheduler's messages stay on MPI.
    if (!device.choice.cuda) cuda_settings_.clear();  // recorded only where they apply
    world_ = device.choice.cuda && collective::nccl_available_in_build()
                 ? collective::make_nccl_communicator(collective::make_mpi_world_communicator(), device.choice.gpu)
                 : collective::make_mpi_world_communicator();
    placement_ = gather_placement(mpi_);  // collective: every rank takes part
    hosts_ = distinct_hosts(placement_.host_of_rank);
    return std::nullopt;
  }

  // Listen before anything is written or trained: a port in use ends the run here.
  std::optional<int> start_exporters() {
    if (config_.monitoring.port <= 0) return std::nullopt;
    monitor_ = start_monitoring(config_, store_, mpi_);  // collective
    if (mpi_.agree(monitor_.error.empty() ? 0 : 1)) {
      error(monitor_.error);
      monitor_ = {};
      return kExitBadInput;
    }
    return std::nullopt;
  }

  // Rank 0: the run directory. A resume point and the history it builds on are read before
  // anything is written; a directory of another manifest, or damaged history, refuses (exit 3).
  std::optional<int> open_run_directory() {
    int refuse = 0;
    if (rank_ == 0) {
      std::filesystem::create_directories(run_dir_);
      // A STOP file from before this run started (an `rsi stop` of a run that had already ended)
      // would stop this one at once: it is not meant for it.
      if (std::error_code ec; std::filesystem::remove(run_dir_ / kStopFileName, ec))
        log_note("removed " + (run_dir_ / kStopFileName).string() + ", left from before this run started");
      checkpoints::ResumePoint point;
      if (config_.loop.format1_weights_digest) point.format_version = 1;  // rsi reproduce of a format-1 lineage
      point.summary_revision = config_.summary_revision;
      std::vector<scheduler::GenerationRecord> durable;
      refuse = find_resume(point, durable);
      if (!refuse) open_sinks(point, durable);
    }
    if (mpi_.agree(refuse)) return kExitBadInput;
    return std::nullopt;
  }

  // The resume point and the durable history's records (metadata only); 1 to refuse.
  int find_resume(checkpoints::ResumePoint& point, std::vector<scheduler::GenerationRecord>& durable) {
    const auto files = checkpoints::generation_files(run_dir_);
    if (files.empty()) return 0;
    // The manifest first, from the oldest file's run attributes: a run of another manifest is
    // refused before anything in the directory changes (find_resume_point moves files aside).
    try {
      const auto stored = checkpoints::read_generation(files.front(), /*weights=*/false);
      const std::string differences = manifest_differences(stored.run.manifest_text, config_.manifest_text);
      if (!differences.empty()) {
        logf(LogLevel::Error,
             "%s holds a run of a different manifest; refusing to resume it with %s.\n  differing keys:\n%s  use "
             "another --out directory, or the original manifest",
             run_dir_.string().c_str(), manifest_name_.c_str(), differences.c_str());
        return 1;
      }
      // Your own data (task kind images): the files the manifest names must still hold the pixels
      // and labels the run began with.
      if (!stored.run.data_fingerprint.empty() && stored.run.data_fingerprint != data_fingerprint_) {
        logf(LogLevel::Error,
             "%s began on other data: its fingerprint was %s, the files now give %s; refusing to resume it (restore "
             "the data, or use another --out directory)",
             run_dir_.string().c_str(), stored.run.data_fingerprint.c_str(),
                     data_fingerprint_.c_str());
        return 1;
      }
    } catch (const checkpoints::CheckpointError&) {
      // Unreadable: find_resume_point says what is wrong with it.
    }
    std::vector<std::string> warnings;
    int refuse = 0;
    try {
      point = checkpoints::find_resume_point(run_dir_, &warnings);
    } catch (const checkpoints::CheckpointError& e) {  // DamagedHistory, or the population's weights gone
      logf(LogLevel::Error, "%s: %s", run_dir_.string().c_str(), e.what());
      refuse = 1;
    }
    for (const auto& w : warnings) log_warning(w);
    // The text lineage is rebuilt from the durable generations' metadata (their weights are not
    // needed: a damaged weights dataset of an old generation is for rsi verify to name).
    for (const auto& file : checkpoints::generation_files(run_dir_)) {
      if (refuse || point.generation < 0) break;
      auto g = checkpoints::read_generation(file, /*weights=*/false);
      if (g.generation > point.generation) break;
      durable.push_back(std::move(g.record));
    }
    return refuse;
  }

  // The lineage files, the store, progress and the run's first lines (rank 0).
  void open_sinks(const checkpoints::ResumePoint& point, const std::vector<scheduler::GenerationRecord>& durable) {
    std::ofstream(run_dir_ / "manifest.yaml") << config_.manifest_text;
    // Where this start's ranks run: the batch script names a lost node's ranks from it.
    std::ofstream(run_dir_ / "ranks.tsv") << rank_table(placement_.host_of_rank, placement_.pid_of_rank);
    lineage_ = std::make_unique<LineageFiles>(run_dir_, config_.loop.improvement.any());
    if (point.generation >= 0) {
      for (const auto& record : durable) {
        lineage_->on_generation(record);
        resume_.history.push_back(record);  // governance: trends, budget, a pending approval
      }
      resume_.generation = point.generation;
      // A lineage goes on in the format it started in (only the coordinator computes digests).
      config_.loop.format1_weights_digest = point.format_version == 1;
      resume_.next_model_id = point.next_model_id;
      resume_.population = point.population;
    }
    store_ = std::make_unique<checkpoints::LineageStore>(run_dir_, run_info(), config_.retention, point);
    lineage_->set_store(store_.get());
    progress_ = std::make_unique<Progress>(config_.loop.generations, interactive_output(STDOUT_FILENO));
    status_ = std::make_unique<StatusWriter>(run_dir_, start_status(durable), *progress_);
    // The status file after the progress display: it records the display's ETA.
    sinks_ = {store_.get(), lineage_.get(), progress_.get(), status_.get()};
    events_.on_model_done = [p = progress_.get(), s = status_.get()](const scheduler::ModelRecord& m) {
      p->on_model_done(m);
      s->on_model_done(m);
    };
    events_.on_generation_start = [p = progress_.get(), s = status_.get()](int g, int n) {
      p->on_generation_start(g, n);
      s->on_generation_start(g, n);
    };
    events_.on_approval_pending = [s = status_.get()](int g, bool pending) { s->on_approval_pending(g, pending); };
    const scheduler::LoopConfig& l = config_.loop;
    std::printf("rsi run: %s  (%s, %d ranks in %d groups of %d, %d thread(s) per rank, seed %llu)\n",
                config_.name.c_str(), manifest_name_.c_str(), size_, size_ / l.group_size, l.group_size,
                l.threads_per_rank, static_cast<unsigned long long>(l.seed));
    if (hosts_.find(',') != std::string::npos)  // several hosts
      std::printf("  ranks by node: %s\n", ranks_by_host(placement_.host_of_rank).c_str());
    std::printf("  population %d, %d children per generation, %d generations, selection %s; lineage in %s\n",
                l.population_size, l.children_per_generation, l.generations, scheduler::selection_name(l.selection),
                run_dir_.string().c_str());
    if (resume_.generation >= 0) std::printf("  resuming after generation %d (the last durable one)\n", resume_.generation);
    std::fflush(stdout);
  }

  // What the status file says when this start of the run begins (run_status.h).
  RunStatus start_status(const std::vector<scheduler::GenerationRecord>& durable) const {
    RunStatus s;
    s.run_name = config_.name;
    s.manifest = manifest_name_;
    s.manifest_hash = config_.manifest_hash;
    s.ranks = size_;
    s.generations = config_.loop.generations;
    if (!durable.empty()) {
      s.last_durable = durable.back().generation;
      s.best_id = durable.back().best_id;
      s.best_val = durable.back().best_val;
      s.best_test = durable.back().best_model_test;
    }
    return s;
  }

  checkpoints::RunInfo run_info() const {
    checkpoints::RunInfo info;
    info.run_name = config_.name;
    info.manifest_text = config_.manifest_text;
    info.manifest_hash = manifest_hash(config_.manifest_text, config_.loop.format1_weights_digest);
    info.program_version = RSI_VERSION;
    info.git_commit = RSI_GIT_COMMIT;
    info.ranks = size_;
    info.group_size = config_.loop.group_size;
    info.threads_per_rank = config_.loop.threads_per_rank;
    info.hosts = hosts_;
    info.cpu_kernels = cpu_kernels_.list;
    info.cuda_settings = cuda_settings_;
    info.start_time = utc_now();
    if (config_.loop.task.kind == scheduler::TaskSpec::Kind::FashionMnist)  // the 60k training images
      info.split_fingerprint =
          models::split_fingerprint(models::make_split(60'000, config_.loop.task.split, config_.loop.seed));
    if (config_.loop.task.kind == scheduler::TaskSpec::Kind::Images) {
      info.input = config_.loop.task.input;
      info.data = image_task_yaml(config_.loop.task);
      info.data_fingerprint = data_fingerprint_;
      info.split_fingerprint = images_split_fingerprint_;
    }
    return info;
  }

  // The coordinator's exporter as a sink and live hooks, and the targets file.
  void wire_monitoring() {
    if (!monitor_.exporter) return;
    monitoring::Exporter* e = monitor_.exporter.get();
    sinks_.push_back(e);
    events_.on_model_done = [prev = events_.on_model_done, e](const scheduler::ModelRecord& m) {
      if (prev) prev(m);
      e->on_model_done(m);
    };
    events_.on_generation_start = [prev = events_.on_generation_start, e](int g, int n) {
      if (prev) prev(g, n);
      e->on_generation_start(g, n);
    };
    const std::string targets = config_.monitoring.targets_file.empty()
                                    ? (run_dir_ / "prometheus-targets.json").string()
                                    : config_.monitoring.targets_file;
    monitoring::write_file_sd(targets, config_.name, monitor_.endpoints);
    targets_file_ = targets;
    std::printf("  metrics on http://%s/metrics (%zu endpoint(s) in %s)\n", e->endpoint().c_str(),
                monitor_.endpoints.size(), targets.c_str());
    std::fflush(stdout);
  }

  // Stop requests (signals, the STOP file) and governance decisions (files from rsi approve/reject).
  void install_hooks() {
    const std::filesystem::path stop_file = run_dir_ / kStopFileName;
    config_.loop.stop_requested = [this, stop_file] {
      if (const int sig = g_stop_signal.load()) {
        stop_reason_ =
            std::string("signal ") + (sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : std::to_string(sig));
      } else if (std::error_code ec; std::filesystem::exists(stop_file, ec)) {
        stop_reason_ = "stop requested (" + stop_file.string() + ")";
        std::filesystem::remove(stop_file, ec);
      }
      return !stop_reason_.empty();
    };
    config_.loop.poll_decision = [run_dir = run_dir_](int g) { return scheduler::read_decision(run_dir, g); };
    events_.on_approval_pending = [prev = events_.on_approval_pending, run_dir = run_dir_,
                                   timeout = config_.loop.governance.gates.approval_timeout_seconds,
                                   exporter = monitor_.exporter.get()](int g, bool pending) {
      if (prev) prev(g, pending);
      if (exporter) exporter->set_approval_pending(pending ? 1 : 0);  // rsi_approval_pending
      if (!pending) return;
      std::printf("rsi run: generation %d awaits approval (see `rsi audit %s`); waiting up to %.0f s for\n"
                  "  rsi approve %s --generation %d --reason TEXT   (or rsi reject ...)\n",
                  g, run_dir.string().c_str(), timeout, run_dir.string().c_str(), g);
      std::fflush(stdout);
    };
  }

  // What the run's end means, on every rank: stopped (exit 4), awaiting approval (5), the budget
  // spent, a rejection; the best model; a linger for a last scrape; a reproduction's comparison.
  int finish(const scheduler::LoopSummary& summary) {
    int rc = kExitOk;
    if (mpi_.agree(summary.stopped ? 1 : 0)) {
      if (rank_ == 0) report_stop(summary);
      rc = kExitStopped;
    }
    if (mpi_.agree(summary.awaiting_approval ? 1 : 0)) {
      if (rank_ == 0)
        std::printf("rsi run: generation %d awaits approval and no decision came within %.0f s; it is durable.\n"
                    "  decide with `rsi approve %s --generation %d --reason TEXT` (or rsi reject), then run the same\n"
                    "  command again (exit code %d)\n",
                    summary.awaiting_generation, config_.loop.governance.gates.approval_timeout_seconds,
                    run_dir_.string().c_str(), summary.awaiting_generation, kExitAwaitingApproval);
      rc = kExitAwaitingApproval;
    }
    if (rank_ == 0 && summary.ended_by == "budget")
      std::printf("rsi run: the compute budget (governance.red_lines.compute_budget_model_seconds) is spent: the run "
                  "ended after generation %d\n", summary.generations_done - 1);
    if (rank_ == 0 && summary.ended_by == "rejected")
      std::printf("rsi run: a rejection ended the run (governance.gates.on_reject: stop); see `rsi audit %s`\n",
                  run_dir_.string().c_str());
    if (rank_ == 0)
      std::printf("best model %llu: validation %.4f, hidden test %.4f\n"
                  "next: rsi report %s (one HTML page), rsi show %s %llu (the best model), rsi lineage %s, rsi verify %s\n",
                  static_cast<unsigned long long>(summary.best_id), summary.best_val, summary.best_test,
                  run_dir_.c_str(), run_dir_.c_str(), static_cast<unsigned long long>(summary.best_id),
                  run_dir_.c_str(), run_dir_.c_str());
    if (rank_ == 0 && !args_.reproduce.empty())  // (a reproduction serves no metrics: no linger below)
      rc = compare_runs(args_.reproduce, config_.output_directory, config_.loop.generations) ? kExitFailure : kExitOk;
    if (status_) record_end(summary, rc);  // before a linger: the run's work is over
    if ((monitor_.exporter || monitor_.node) && config_.monitoring.linger_seconds > 0) {
      if (rank_ == 0) {
        std::printf("rsi run: metrics stay up %.0f s for a last scrape (monitoring.linger_seconds)\n",
                    config_.monitoring.linger_seconds);
        std::fflush(stdout);
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(config_.monitoring.linger_seconds));
    }
    // The run's endpoints are gone: its targets go too, or Prometheus would see them down
    // (RsiEndpointDown) after every run that ended as it should. A crashed run keeps them: down is
    // then the truth.
    if (rank_ == 0 && !targets_file_.empty()) monitoring::write_file_sd(targets_file_, config_.name, {});
    return rc;
  }

  // The status file's last word (rank 0): how the run ended.
  void record_end(const scheduler::LoopSummary& summary, int rc) const {
    if (summary.awaiting_approval)  // the exit code says so even when a stop came too
      status_->ended("awaiting_approval",
                     "generation " + std::to_string(summary.awaiting_generation) +
                         " awaits approval and no decision came in time",
                     rc);
    else if (summary.stopped)
      status_->ended("stopped", stop_reason_, rc);
    else if (summary.ended_by == "budget")
      status_->ended("budget", "the compute budget (governance.red_lines.compute_budget_model_seconds) is spent", rc);
    else if (summary.ended_by == "rejected")
      status_->ended("rejected", "a rejection ended the run (governance.gates.on_reject: stop)", rc);
    else if (rc != kExitOk)
      status_->ended("failed", "the reproduction differs from the original run", rc);
    else
      status_->ended("completed", "", rc);
  }

  void report_stop(const scheduler::LoopSummary& summary) const {
    if (summary.generations_done > 0)
      std::printf("rsi run: %s: stopped after generation %d, which is durable; run the same command again to resume\n",
                  stop_reason_.c_str(), summary.generations_done - 1);
    else
      std::printf("rsi run: %s: stopped before the first generation; run the same command again to start\n",
                  stop_reason_.c_str());
    // The stop is kept out of the lineage (a stopped and resumed run equals an uninterrupted one).
    try {
      scheduler::append_audit(run_dir_, {scheduler::utc_now_iso(), scheduler::user_at_host(),
                                         summary.generations_done - 1, "stopped", stop_reason_});
    } catch (const std::exception& e) {
      log_warning(e.what());
    }
  }

  const RunArgs& args_;
  collective::Communicator& mpi_;
  const int rank_, size_;
  const std::string manifest_name_;
  RunConfig config_;
  std::filesystem::path run_dir_;
  CpuKernels cpu_kernels_;
  std::string cuda_settings_;  // what applied on a GPU run ("" on the CPU)
  std::unique_ptr<collective::Communicator> world_;
  Placement placement_;
  std::string hosts_;
  std::string data_fingerprint_;                  // kind images, rank 0 (check_inputs)
  std::uint64_t images_split_fingerprint_ = 0;
  // Declared before the exporter: its checkpoint source reads the store through this pointer.
  std::unique_ptr<checkpoints::LineageStore> store_;
  MonitoringStart monitor_;
  std::unique_ptr<LineageFiles> lineage_;
  std::unique_ptr<Progress> progress_;
  std::unique_ptr<StatusWriter> status_;  // rank 0
  std::vector<scheduler::GenerationSink*> sinks_;
  scheduler::LoopEvents events_;
  scheduler::ResumeState resume_;
  std::string stop_reason_;
  std::string targets_file_;  // the file_sd targets this run wrote (rank 0), emptied when it ends
};

int run_loop_command(const RunArgs& args) {
  // Before MPI start-up (about a second): mpirun forwards a SIGUSR1 as soon as a rank exists, and
  // the default action would end the rank instead of stopping the run.
  install_stop_handlers();
  const collective::MpiSession session;
  const std::unique_ptr<collective::Communicator> mpi = session.world();
  set_log_source(args.reproduce.empty() ? "run" : "reproduce", mpi->rank());  // every line says its rank
  if (!session.thread_level_ok()) {
    if (mpi->rank() == 0)
      logf(LogLevel::Error,
           "the MPI library provides thread level %d, below MPI_THREAD_FUNNELED (%d) that rsi needs (only the main "
           "thread calls MPI, other threads run): use an MPI built with thread support",
           session.provided(), session.required());
    return kExitFailure;
  }
  try {
    RunSession run(args, *mpi);
    return run.run();
  } catch (const std::exception& e) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    logf(LogLevel::Error, "error on %s: %s", host, e.what());
    std::fflush(stderr);
    mpi->abort(kExitFailure);
  }
  return kExitFailure;  // not reached: abort ends every rank
}

}  // namespace

void add_run_command(CLI::App& app, std::function<int()>& run) {
  auto args = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand(
      "run",
      "Run an RSI experiment from a manifest (under mpirun/srun for several ranks).\n"
      "Rank 0 coordinates and trains; the world is split into trainer groups of cluster.group_size ranks.\n"
      "Writes <output.directory>/models.tsv and generations.tsv. Example:\n"
      "  mpirun -n 2 rsi run experiments/quickstart.yaml");
  cmd->add_option("manifest", args->manifest, "Manifest YAML (see experiments/README.md)")->required()->check(existing_file());
  cmd->add_option("--out", args->out, "Run directory (default: the manifest's output.directory, else runs/<name>)");
  cmd->add_option("--generations", args->generations, "Override population.generations");
  cmd->callback([&run, args] { run = [args] { return run_loop_command(*args); }; });

  auto rargs = std::make_shared<RunArgs>();
  CLI::App* rep = app.add_subcommand(
      "reproduce",
      "Re-run a run from the manifest and seed genomes embedded in its lineage, into a new directory, and\n"
      "compare the generation hashes; prints the first divergence (exit code 1) if any.");
  rep->add_option("run", rargs->reproduce, "Run directory to reproduce")->required()->check(existing_directory());
  rep->add_option("--generations", rargs->generations, "Re-run only generations 0..K");
  rep->add_option("--out", rargs->out, "Directory of the reproduction (default RUN-reproduce)");
  rep->callback([&run, rargs] { run = [rargs] { return run_loop_command(*rargs); }; });
}

}  // namespace rsi::runtime
