// `rsi run MANIFEST`: the distributed RSI loop under mpirun/srun (or alone, as one rank).
#include <mpi.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/collective/communicator.h"
#include "rsi/kernels/cpu_gemm.h"
#include "rsi/models/data.h"
#include "rsi/monitoring/exporter.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/manifest.h"
#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/loop.h"
#include "device.h"
#include "placement.h"
#include "progress.h"

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
  // Reproduced in the original's lineage format (its weight digests' FNV basis; FORMAT.md).
  config.loop.format1_weights_digest = first.format_version == 1;
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

// Writes the lineage as tab-separated text: models.tsv (one row per model, deterministic fields
// only, so two runs of the same manifest compare byte for byte) and generations.tsv (one row per
// generation, with timings).
class LineageFiles final : public scheduler::GenerationSink {
 public:
  explicit LineageFiles(const std::filesystem::path& dir)
      : models_(dir / "models.tsv"), generations_(dir / "generations.tsv") {
    if (!models_ || !generations_) throw std::runtime_error("cannot write the lineage files in " + dir.string());
    models_ << "generation\tid\tparents\top\tstatus\tval_acc\ttest_acc\tparams\tflops\tinherited\tpreserving\t"
               "weights\tdescription\tfailure\n";
    generations_ << "generation\tbest_id\tbest_val\tbest_model_test\tmedian_val\tmedian_test\tgain\tdesign_skill\t"
                    "diversity\ttrained\tfailed\trefused\tseconds\tcheckpoint_seconds\tcheckpoint_bytes\n";
  }
  void set_store(const checkpoints::LineageStore* store) { store_ = store; }
  void on_generation(const scheduler::GenerationRecord& g) override {
    for (const auto& m : g.children) {
      std::string parents;
      for (auto p : m.parents) {
        if (!parents.empty()) parents += ',';
        parents += std::to_string(p);
      }
      char line[512];
      std::snprintf(line, sizeof line, "%d\t%llu\t%s\t%s\t%s\t%.17g\t%.17g\t%lld\t%lld\t%d\t%d\t%s\t", m.generation,
                    static_cast<unsigned long long>(m.id), parents.empty() ? "-" : parents.c_str(), m.op.c_str(),
                    scheduler::status_name(m.status), m.metrics.val_accuracy, m.metrics.test_accuracy,
                    static_cast<long long>(m.metrics.parameters), static_cast<long long>(m.metrics.flops),
                    m.inherited, m.function_preserving, m.weights_digest.empty() ? "-" : m.weights_digest.c_str());
      models_ << line << m.description << "\t" << (m.failure.empty() ? "-" : m.failure) << "\n";
    }
    char line[512];
    // The store is the first sink: its figures are those of this generation's write.
    std::snprintf(line, sizeof line,
                  "%d\t%llu\t%.6f\t%.6f\t%.6f\t%.6f\t%+.6f\t%+.6f\t%.4f\t%d\t%d\t%d\t%.2f\t%.4f\t%llu\n",
                  g.generation, static_cast<unsigned long long>(g.best_id), g.best_val, g.best_model_test, g.median_val,
                  g.median_test, g.gain, g.design_skill, g.diversity, g.trained, g.failed, g.refused, g.seconds,
                  store_ ? store_->last_write_seconds() : 0.0,
                  static_cast<unsigned long long>(store_ ? store_->last_write_bytes() : 0));
    generations_ << line;
    models_.flush();
    generations_.flush();
  }

 private:
  std::ofstream models_, generations_;
  const checkpoints::LineageStore* store_ = nullptr;
};

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
Placement gather_placement() {
  struct Mine {
    char host[256];
    int pid;
  } mine{};
  gethostname(mine.host, sizeof mine.host - 1);
  mine.pid = static_cast<int>(getpid());
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<Mine> all(rank == 0 ? static_cast<std::size_t>(size) : 1);
  MPI_Gather(&mine, sizeof mine, MPI_BYTE, all.data(), sizeof mine, MPI_BYTE, 0, MPI_COMM_WORLD);
  Placement out;
  if (rank == 0)
    for (const auto& m : all) {
      out.host_of_rank.emplace_back(m.host);
      out.pid_of_rank.push_back(m.pid);
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
CpuKernels select_cpu_kernels(const std::string& wanted) {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  char mine[512] = {};
  try {
    if (wanted != "best") kernels::set_cpu_kernel(kernels::parse_cpu_kernel(wanted));
    std::snprintf(mine, sizeof mine, "%s:%s", host, kernels::cpu_kernel_name(kernels::cpu_kernel()));
  } catch (const std::invalid_argument& e) {
    std::snprintf(mine, sizeof mine, "!%s rank %d: %s", host, rank, e.what());
  }
  std::vector<char> all(static_cast<std::size_t>(size) * sizeof mine);
  MPI_Allgather(mine, sizeof mine, MPI_CHAR, all.data(), sizeof mine, MPI_CHAR, MPI_COMM_WORLD);
  CpuKernels out;
  for (int r = 0; r < size; ++r) {
    const std::string entry(all.data() + static_cast<std::size_t>(r) * sizeof mine);
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
// multi-node job, a node endpoint on local rank 0 of every other node (ranks split by node with
// MPI_COMM_TYPE_SHARED), each listing its node's rank processes. Returns, on rank 0, the endpoints
// for the file_sd targets file, or sets `error` (on rank 0) when any endpoint could not listen.
struct MonitoringStart {
  std::unique_ptr<monitoring::Exporter> exporter;       // rank 0
  std::unique_ptr<monitoring::NodeExporter> node;       // local rank 0 of the other nodes
  std::vector<monitoring::TargetEndpoint> endpoints;    // rank 0: every endpoint, the coordinator first
  std::string error;                                    // rank 0: what failed, where
};

MonitoringStart start_monitoring(const RunConfig& config, const std::unique_ptr<checkpoints::LineageStore>& store) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm node_comm;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node_comm);
  int local_rank = 0, local_size = 1;
  MPI_Comm_rank(node_comm, &local_rank);
  MPI_Comm_size(node_comm, &local_size);
  const int mine[2] = {rank, static_cast<int>(getpid())};
  std::vector<int> node_pids(2 * static_cast<std::size_t>(local_size));
  MPI_Gather(mine, 2, MPI_INT, node_pids.data(), 2, MPI_INT, 0, node_comm);
  MPI_Comm_free(&node_comm);

  struct Report {
    char host[256];
    char error[768];
    int port;  // 0: this rank runs no endpoint
  } report{};
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
    for (int i = 0; i < local_size; ++i) o.node_ranks.push_back({node_pids[2 * i], static_cast<pid_t>(node_pids[2 * i + 1])});
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
  std::vector<Report> all(rank == 0 ? static_cast<std::size_t>(size) : 1);
  MPI_Gather(&report, sizeof report, MPI_BYTE, all.data(), sizeof report, MPI_BYTE, 0, MPI_COMM_WORLD);
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

int run_loop_command(const RunArgs& args) {
  // Before MPI start-up (about a second): mpirun forwards a SIGUSR1 as soon as a rank exists, and
  // the default action would end the rank instead of stopping the run.
  install_stop_handlers();
  int provided = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int rc = kExitOk;
  const std::string manifest_name = args.reproduce.empty() ? args.manifest : args.reproduce + " (embedded manifest)";
  try {
    RunConfig config;
    try {
      if (args.reproduce.empty()) {
        config = load_manifest(args.manifest);
      } else {
        config = stored_run_config(args.reproduce);
        config.monitoring.port = 0;  // a check, not a run to watch; the original's port may still be in use
        config.output_directory = args.out.empty() ? args.reproduce + "-reproduce" : args.out;
        if (rank == 0 && !checkpoints::generation_files(config.output_directory).empty())
          throw ManifestError(config.output_directory + " already holds a run; choose an empty --out directory");
      }
    } catch (const checkpoints::CheckpointError& e) {
      if (rank == 0) std::fprintf(stderr, "rsi: %s %s\n", rank_tag(rank).c_str(), e.what());
      MPI_Finalize();
      return kExitBadInput;
    } catch (const ManifestError& e) {
      if (rank == 0) std::fprintf(stderr, "rsi run: %s %s\n", rank_tag(rank).c_str(), e.what());
      MPI_Finalize();
      return kExitBadInput;
    }
    if (args.generations >= 0) config.loop.generations = args.generations;
    if (!args.out.empty() && args.reproduce.empty()) config.output_directory = args.out;
    // Inputs every rank reads are checked on rank 0 before the job starts: a missing data directory
    // is exit code 3 naming it, not an error on whichever rank reads first.
    int bad_data = 0;
    if (rank == 0 && config.loop.task.kind == scheduler::TaskSpec::Kind::FashionMnist) {
      try {
        models::check_fashion_mnist(config.loop.task.data_dir);
      } catch (const models::DataError& e) {
        std::fprintf(stderr, "rsi run: %s %s: task.data_dir: %s\n", rank_tag(rank).c_str(), manifest_name.c_str(), e.what());
        bad_data = 1;
      }
    }
    MPI_Bcast(&bad_data, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (bad_data) {
      MPI_Finalize();
      return kExitBadInput;
    }
    if (size % config.loop.group_size != 0) {
      if (rank == 0)
        std::fprintf(stderr, "rsi run: %s %s: cluster.group_size %d does not divide the %d ranks of this job\n",
                     rank_tag(rank).c_str(), manifest_name.c_str(), config.loop.group_size, size);
      MPI_Finalize();
      return kExitUsage;
    }
    // --- device selection (device.h): GPU by local rank, agreed by every rank, before training ---
    DevicePolicy device_policy = DevicePolicy::Cpu;
    parse_device_policy(config.cluster.device, &device_policy);  // the manifest loader validated it
    const RunDevice device = select_run_device(device_policy, config.cluster.gpus_per_node, MPI_COMM_WORLD);
    if (!device.error.empty()) std::fprintf(stderr, "rsi run: %s %s: %s\n", rank_tag(rank).c_str(), manifest_name.c_str(), device.error.c_str());
    if (device.failed) {
      MPI_Finalize();
      return kExitBadInput;
    }
    if (!device.warning.empty()) std::fprintf(stderr, "rsi run: %s warning: %s\n", rank_tag(rank).c_str(), device.warning.c_str());
    if (rank == 0 && device_policy != DevicePolicy::Cpu) std::printf("rsi run: %s\n", device.summary.c_str());
    // CPU kernels: every rank runs them (the coordinator's work, and training on a CPU device).
    const CpuKernels cpu_kernels = select_cpu_kernels(config.cluster.cpu_kernels);  // collective
    if (!cpu_kernels.error.empty()) {
      if (rank == 0) std::fprintf(stderr, "rsi run: %s %s: %s\n", rank_tag(rank).c_str(), manifest_name.c_str(), cpu_kernels.error.c_str());
      MPI_Finalize();
      return kExitBadInput;
    }
    if (rank == 0)
      std::printf("rsi run: %s; every rank: %s\n", kernels::cpu_kernel_summary().c_str(), cpu_kernels.list.c_str());
    if (const std::string w = kernels::cpu_kernel_warning(); !w.empty())
      std::fprintf(stderr, "rsi run: %s warning: %s\n", rank_tag(rank).c_str(), w.c_str());
    // Device buffers all-reduce over NCCL; host buffers and the scheduler's messages stay on MPI.
    auto world = device.choice.cuda && collective::nccl_available_in_build()
                     ? collective::make_nccl_communicator(collective::make_mpi_world_communicator(), device.choice.gpu)
                     : collective::make_mpi_world_communicator();
    // --- end device selection ---
    std::vector<scheduler::GenerationSink*> sinks;
    std::unique_ptr<LineageFiles> lineage;
    std::unique_ptr<Progress> progress;
    std::unique_ptr<checkpoints::LineageStore> store;
    scheduler::LoopEvents events;
    scheduler::ResumeState resume;
    int refuse = 0;  // rank 0's verdict on the run directory, shared with every rank
    const Placement placement = gather_placement();  // collective: every rank takes part
    const std::string hosts = distinct_hosts(placement.host_of_rank);
    // --- monitoring: listen before anything is written or trained; a port in use ends the run here ---
    MonitoringStart monitor;
    if (config.monitoring.port > 0) {
      monitor = start_monitoring(config, store);  // collective
      int failed = monitor.error.empty() ? 0 : 1;
      MPI_Bcast(&failed, 1, MPI_INT, 0, MPI_COMM_WORLD);
      if (failed) {
        if (rank == 0) std::fprintf(stderr, "rsi run: %s %s: %s\n", rank_tag(rank).c_str(), manifest_name.c_str(), monitor.error.c_str());
        monitor = {};
        MPI_Finalize();
        return kExitBadInput;
      }
    }
    if (rank == 0) {
      const std::filesystem::path dir(config.output_directory);
      std::filesystem::create_directories(dir);
      // A STOP file from before this run started (an `rsi stop` of a run that had already ended) would
      // stop this one at once: it is not meant for it.
      if (std::error_code ec; std::filesystem::remove(dir / kStopFileName, ec))
        std::fprintf(stderr, "rsi run: [rank 0] note: removed %s, left from before this run started\n",
                     (dir / kStopFileName).string().c_str());
      checkpoints::ResumePoint point;
      if (config.loop.format1_weights_digest) point.format_version = 1;  // rsi reproduce of a format-1 lineage
      std::vector<scheduler::GenerationRecord> durable;  // the history a resume continues, read before anything is written
      if (const auto files = checkpoints::generation_files(dir); !files.empty()) {
        // The manifest first, from the oldest file's run attributes: a run of another manifest is
        // refused before anything in the directory changes (find_resume_point moves files aside).
        try {
          const auto stored = checkpoints::read_generation(files.front(), /*weights=*/false);
          const std::string differences = manifest_differences(stored.run.manifest_text, config.manifest_text);
          if (!differences.empty()) {
            std::fprintf(stderr,
                         "rsi run: %s %s holds a run of a different manifest; refusing to resume it with %s.\n"
                         "  differing keys:\n%s  use another --out directory, or the original manifest\n",
                         rank_tag(rank).c_str(), dir.string().c_str(), manifest_name.c_str(), differences.c_str());
            refuse = 1;
          }
        } catch (const checkpoints::CheckpointError&) {
          // Unreadable: find_resume_point says what is wrong with it.
        }
        if (!refuse) {
          std::vector<std::string> warnings;
          try {
            point = checkpoints::find_resume_point(dir, &warnings);
          } catch (const checkpoints::CheckpointError& e) {  // DamagedHistory, or the population's weights gone
            std::fprintf(stderr, "rsi run: %s %s: %s\n", rank_tag(rank).c_str(), dir.string().c_str(), e.what());
            refuse = 1;
          }
          for (const auto& w : warnings)
            std::fprintf(stderr, "rsi run: %s warning: %s\n", rank_tag(rank).c_str(), w.c_str());
          // The text lineage is rebuilt from the durable generations' metadata (their weights are not
          // needed: a damaged weights dataset of an old generation is for rsi verify to name).
          for (const auto& file : checkpoints::generation_files(dir)) {
            if (refuse || point.generation < 0) break;
            auto g = checkpoints::read_generation(file, /*weights=*/false);
            if (g.generation > point.generation) break;
            durable.push_back(std::move(g.record));
          }
        }
      }
      if (!refuse) {
        std::ofstream(dir / "manifest.yaml") << config.manifest_text;
        // Where this start's ranks run: the batch script names a lost node's ranks from it.
        std::ofstream(dir / "ranks.tsv") << rank_table(placement.host_of_rank, placement.pid_of_rank);
        lineage = std::make_unique<LineageFiles>(dir);
        if (point.generation >= 0) {
          for (const auto& record : durable) {
            lineage->on_generation(record);
            resume.history.push_back(record);  // governance: trends, budget, a pending approval
          }
          resume.generation = point.generation;
          // A lineage goes on in the format it started in (only the coordinator computes digests).
          config.loop.format1_weights_digest = point.format_version == 1;
          resume.next_model_id = point.next_model_id;
          resume.population = point.population;
        }
        checkpoints::RunInfo info;
        info.run_name = config.name;
        info.manifest_text = config.manifest_text;
        info.manifest_hash = manifest_hash(config.manifest_text, config.loop.format1_weights_digest);
        info.program_version = RSI_VERSION;
        info.git_commit = RSI_GIT_COMMIT;
        info.ranks = size;
        info.group_size = config.loop.group_size;
        info.threads_per_rank = config.loop.threads_per_rank;
        info.hosts = hosts;
        info.cpu_kernels = cpu_kernels.list;
        info.start_time = utc_now();
        if (config.loop.task.kind == scheduler::TaskSpec::Kind::FashionMnist)  // the 60k training images
          info.split_fingerprint =
              models::split_fingerprint(models::make_split(60'000, config.loop.task.split, config.loop.seed));
        store = std::make_unique<checkpoints::LineageStore>(dir, info, config.retention, point);
        lineage->set_store(store.get());
        progress = std::make_unique<Progress>(config.loop.generations, interactive_output(STDOUT_FILENO));
        sinks = {store.get(), lineage.get(), progress.get()};
        events.on_model_done = [p = progress.get()](const scheduler::ModelRecord& m) { p->on_model_done(m); };
        events.on_generation_start = [p = progress.get()](int g, int n) { p->on_generation_start(g, n); };
        std::printf("rsi run: %s  (%s, %d ranks in %d groups of %d, %d thread(s) per rank, seed %llu)\n",
                    config.name.c_str(), manifest_name.c_str(), size, size / config.loop.group_size,
                    config.loop.group_size, config.loop.threads_per_rank,
                    static_cast<unsigned long long>(config.loop.seed));
        if (hosts.find(',') != std::string::npos)  // several hosts
          std::printf("  ranks by node: %s\n", ranks_by_host(placement.host_of_rank).c_str());
        std::printf("  population %d, %d children per generation, %d generations, selection %s; lineage in %s\n",
                    config.loop.population_size, config.loop.children_per_generation, config.loop.generations,
                    scheduler::selection_name(config.loop.selection), dir.string().c_str());
        if (resume.generation >= 0)
          std::printf("  resuming after generation %d (the last durable one)\n", resume.generation);
        std::fflush(stdout);
      }
    }
    MPI_Bcast(&refuse, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (refuse) {
      MPI_Finalize();
      return kExitBadInput;
    }
    if (monitor.exporter) {  // --- monitoring: the coordinator's sink and live hooks, the targets file ---
      monitoring::Exporter* e = monitor.exporter.get();
      sinks.push_back(e);
      events.on_model_done = [prev = events.on_model_done, e](const scheduler::ModelRecord& m) {
        if (prev) prev(m);
        e->on_model_done(m);
      };
      events.on_generation_start = [prev = events.on_generation_start, e](int g, int n) {
        if (prev) prev(g, n);
        e->on_generation_start(g, n);
      };
      const std::string targets = config.monitoring.targets_file.empty()
                                      ? (std::filesystem::path(config.output_directory) / "prometheus-targets.json").string()
                                      : config.monitoring.targets_file;
      monitoring::write_file_sd(targets, config.name, monitor.endpoints);
      std::printf("  metrics on http://%s/metrics (%zu endpoint(s) in %s)\n", e->endpoint().c_str(),
                  monitor.endpoints.size(), targets.c_str());
      std::fflush(stdout);
    }
    const std::filesystem::path stop_file = std::filesystem::path(config.output_directory) / kStopFileName;
    std::string stop_reason;
    config.loop.stop_requested = [&] {
      if (const int sig = g_stop_signal.load()) {
        stop_reason = std::string("signal ") + (sig == SIGUSR1 ? "SIGUSR1" : sig == SIGTERM ? "SIGTERM" : std::to_string(sig));
      } else if (std::error_code ec; std::filesystem::exists(stop_file, ec)) {
        stop_reason = "stop requested (" + stop_file.string() + ")";
        std::filesystem::remove(stop_file, ec);
      }
      return !stop_reason.empty();
    };
    // --- governance: decisions come from `rsi approve`/`rsi reject` as files in the run directory ---
    const std::filesystem::path run_dir(config.output_directory);
    config.loop.poll_decision = [run_dir](int g) { return scheduler::read_decision(run_dir, g); };
    events.on_approval_pending = [prev = events.on_approval_pending, run_dir, &config,
                                  exporter = monitor.exporter.get()](int g, bool pending) {
      if (prev) prev(g, pending);
      if (exporter) exporter->set_approval_pending(pending ? 1 : 0);  // rsi_approval_pending
      if (!pending) return;
      std::printf("rsi run: generation %d awaits approval (see `rsi audit %s`); waiting up to %.0f s for\n"
                  "  rsi approve %s --generation %d --reason TEXT   (or rsi reject ...)\n",
                  g, run_dir.string().c_str(), config.loop.governance.gates.approval_timeout_seconds,
                  run_dir.string().c_str(), g);
      std::fflush(stdout);
    };
    // --- end governance ---
    const scheduler::LoopSummary summary =
        scheduler::run_loop(config.loop, *world, sinks, events, rank == 0 && resume.generation >= 0 ? &resume : nullptr);
    // The last generation's file digest and LATEST are finished in the background; an error there
    // (reported only on stderr by the sink's on_finish) must fail the run, not pass unnoticed.
    if (store) store->flush();
    int stopped = summary.stopped ? 1 : 0;
    MPI_Bcast(&stopped, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (stopped) {
      if (rank == 0) {
        if (summary.generations_done > 0)
          std::printf("rsi run: %s: stopped after generation %d, which is durable; run the same command again to resume\n",
                      stop_reason.c_str(), summary.generations_done - 1);
        else
          std::printf("rsi run: %s: stopped before the first generation; run the same command again to start\n",
                      stop_reason.c_str());
        // The stop is kept out of the lineage (a stopped and resumed run equals an uninterrupted one).
        try {
          scheduler::append_audit(run_dir, {scheduler::utc_now_iso(), scheduler::user_at_host(),
                                            summary.generations_done - 1, "stopped", stop_reason});
        } catch (const std::exception& e) {
          std::fprintf(stderr, "rsi run: %s warning: %s\n", rank_tag(rank).c_str(), e.what());
        }
      }
      rc = kExitStopped;
    }
    int awaiting = summary.awaiting_approval ? 1 : 0;  // --- governance ---
    MPI_Bcast(&awaiting, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (awaiting) {
      if (rank == 0)
        std::printf("rsi run: generation %d awaits approval and no decision came within %.0f s; it is durable.\n"
                    "  decide with `rsi approve %s --generation %d --reason TEXT` (or rsi reject), then run the same\n"
                    "  command again (exit code %d)\n",
                    summary.awaiting_generation, config.loop.governance.gates.approval_timeout_seconds,
                    run_dir.string().c_str(), summary.awaiting_generation, kExitAwaitingApproval);
      rc = kExitAwaitingApproval;
    }
    if (rank == 0 && summary.ended_by == "budget")
      std::printf("rsi run: the compute budget (governance.red_lines.compute_budget_model_seconds) is spent: the run "
                  "ended after generation %d\n", summary.generations_done - 1);
    if (rank == 0 && summary.ended_by == "rejected")
      std::printf("rsi run: a rejection ended the run (governance.gates.on_reject: stop); see `rsi audit %s`\n",
                  run_dir.string().c_str());  // --- end governance ---
    if (rank == 0)
      std::printf("best model %llu: validation %.4f, hidden test %.4f\n",
                  static_cast<unsigned long long>(summary.best_id), summary.best_val, summary.best_test);
    if ((monitor.exporter || monitor.node) && config.monitoring.linger_seconds > 0) {  // --- monitoring ---
      if (rank == 0) {
        std::printf("rsi run: metrics stay up %.0f s for a last scrape (monitoring.linger_seconds)\n",
                    config.monitoring.linger_seconds);
        std::fflush(stdout);
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(config.monitoring.linger_seconds));
    }
    if (rank == 0 && !args.reproduce.empty())
      rc = compare_runs(args.reproduce, config.output_directory, config.loop.generations) ? kExitFailure : kExitOk;
  } catch (const std::exception& e) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    std::fprintf(stderr, "rsi run: error on %s rank %d: %s\n", host, rank, e.what());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, kExitFailure);
    rc = kExitFailure;
  }
  MPI_Finalize();
  return rc;
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
  cmd->add_option("manifest", args->manifest, "Manifest YAML (see experiments/README.md)")->required()->check(CLI::ExistingFile);
  cmd->add_option("--out", args->out, "Run directory (default: the manifest's output.directory, else runs/<name>)");
  cmd->add_option("--generations", args->generations, "Override population.generations");
  cmd->callback([&run, args] { run = [args] { return run_loop_command(*args); }; });

  auto rargs = std::make_shared<RunArgs>();
  CLI::App* rep = app.add_subcommand(
      "reproduce",
      "Re-run a run from the manifest and seed genomes embedded in its lineage, into a new directory, and\n"
      "compare the generation hashes; prints the first divergence (exit code 1) if any.");
  rep->add_option("run", rargs->reproduce, "Run directory to reproduce")->required()->check(CLI::ExistingDirectory);
  rep->add_option("--generations", rargs->generations, "Re-run only generations 0..K");
  rep->add_option("--out", rargs->out, "Directory of the reproduction (default RUN-reproduce)");
  rep->callback([&run, rargs] { run = [rargs] { return run_loop_command(*rargs); }; });
}

}  // namespace rsi::runtime
