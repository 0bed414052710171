// `rsi run MANIFEST`: the distributed RSI loop under mpirun/srun (or alone, as one rank).
#include <mpi.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "rsi/checkpoints/store.h"
#include "rsi/collective/communicator.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/manifest.h"
#include "rsi/scheduler/loop.h"

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

std::string fmt_seconds(double s) {
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else if (s >= 60) std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
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

// One progress line per generation (and per finished child on a terminal), then a summary table.
class Progress final : public scheduler::GenerationSink {
 public:
  Progress(int generations, bool tty) : generations_(generations), tty_(tty), start_(std::chrono::steady_clock::now()) {}
  void on_generation(const scheduler::GenerationRecord& g) override {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double eta = g.generation < generations_ ? elapsed / (g.generation + 1) * (generations_ - g.generation) : 0.0;
    std::printf("%sgen %2d/%d  best val %.4f test %.4f  gain %+.4f  skill %+.4f  diversity %.2f  "
                "trained %d failed %d  %.2f models/s  %s  ETA %s\n",
                tty_ ? "\r\033[K" : "", g.generation, generations_, g.best_val, g.best_model_test, g.gain,
                g.design_skill, g.diversity, g.trained, g.failed, g.models_per_second, fmt_seconds(g.seconds).c_str(),
                fmt_seconds(eta).c_str());
    std::fflush(stdout);
    rows_.push_back(g);
    for (auto& c : rows_.back().children) c.weights.reset();
  }
  void on_model_done(const scheduler::ModelRecord& m) {
    ++done_;
    if (!tty_) return;
    std::printf("\r\033[K  model %llu %s  val %.4f  (%d/%d of this generation)",
                static_cast<unsigned long long>(m.id), scheduler::status_name(m.status), m.metrics.val_accuracy, done_,
                total_);
    std::fflush(stdout);
  }
  void on_generation_start(int, int total) {
    done_ = 0;
    total_ = total;
  }
  void on_finish() override {
    std::printf("\n%-4s %-6s %-9s %-9s %-9s %-9s %-8s %-8s\n", "gen", "best", "best_val", "its_test", "med_val",
                "gain", "skill", "seconds");
    for (const auto& g : rows_)
      std::printf("%-4d %-6llu %-9.4f %-9.4f %-9.4f %+-9.4f %+-8.4f %-8.1f\n", g.generation,
                  static_cast<unsigned long long>(g.best_id), g.best_val, g.best_model_test, g.median_val, g.gain,
                  g.design_skill, g.seconds);
    std::fflush(stdout);
  }

 private:
  int generations_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::vector<scheduler::GenerationRecord> rows_;
  int done_ = 0, total_ = 0;
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Every rank's host name, gathered to rank 0, distinct and comma-separated.
std::string host_list() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  std::vector<char> all(static_cast<std::size_t>(size) * 256);
  MPI_Gather(host, 256, MPI_CHAR, all.data(), 256, MPI_CHAR, 0, MPI_COMM_WORLD);
  std::string out;
  for (int r = 0; r < size; ++r) {
    const std::string h(all.data() + static_cast<std::size_t>(r) * 256);
    if (out.find(h) == std::string::npos) out += (out.empty() ? "" : ",") + h;
  }
  return out;
}

int run_loop_command(const RunArgs& args) {
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
        config.output_directory = args.out.empty() ? args.reproduce + "-reproduce" : args.out;
        if (rank == 0 && !checkpoints::generation_files(config.output_directory).empty())
          throw ManifestError(config.output_directory + " already holds a run; choose an empty --out directory");
      }
    } catch (const checkpoints::CheckpointError& e) {
      if (rank == 0) std::fprintf(stderr, "rsi: %s\n", e.what());
      MPI_Finalize();
      return kExitBadInput;
    } catch (const ManifestError& e) {
      if (rank == 0) std::fprintf(stderr, "rsi run: %s\n", e.what());
      MPI_Finalize();
      return kExitBadInput;
    }
    if (args.generations >= 0) config.loop.generations = args.generations;
    if (!args.out.empty() && args.reproduce.empty()) config.output_directory = args.out;
    if (size % config.loop.group_size != 0) {
      if (rank == 0)
        std::fprintf(stderr, "rsi run: %s: cluster.group_size %d does not divide the %d ranks of this job\n",
                     manifest_name.c_str(), config.loop.group_size, size);
      MPI_Finalize();
      return kExitUsage;
    }
    auto world = collective::make_mpi_world_communicator();
    std::vector<scheduler::GenerationSink*> sinks;
    std::unique_ptr<LineageFiles> lineage;
    std::unique_ptr<Progress> progress;
    std::unique_ptr<checkpoints::LineageStore> store;
    scheduler::LoopEvents events;
    scheduler::ResumeState resume;
    int refuse = 0;  // rank 0's verdict on the run directory, shared with every rank
    const std::string hosts = host_list();  // collective: every rank takes part
    if (rank == 0) {
      const std::filesystem::path dir(config.output_directory);
      std::filesystem::create_directories(dir);
      checkpoints::ResumePoint point;
      if (!checkpoints::generation_files(dir).empty()) {
        std::vector<std::string> warnings;
        point = checkpoints::find_resume_point(dir, &warnings);
        for (const auto& w : warnings) std::fprintf(stderr, "rsi run: warning: %s\n", w.c_str());
        if (point.generation >= 0) {
          const auto stored = checkpoints::read_generation(checkpoints::generation_files(dir).front());
          const std::string differences = manifest_differences(stored.run.manifest_text, config.manifest_text);
          if (!differences.empty()) {
            std::fprintf(stderr,
                         "rsi run: %s holds a run of a different manifest; refusing to resume it with %s.\n"
                         "  differing keys:\n%s  use another --out directory, or the original manifest\n",
                         dir.string().c_str(), manifest_name.c_str(), differences.c_str());
            refuse = 1;
          }
        }
      }
      if (!refuse) {
        std::ofstream(dir / "manifest.yaml") << config.manifest_text;
        lineage = std::make_unique<LineageFiles>(dir);
        if (point.generation >= 0) {
          // The text lineage is rebuilt from the durable generations, then continues.
          for (const auto& file : checkpoints::generation_files(dir)) {
            const auto g = checkpoints::read_generation(file);
            if (g.generation > point.generation) break;
            lineage->on_generation(g.record);
          }
          resume.generation = point.generation;
          resume.next_model_id = point.next_model_id;
          resume.population = point.population;
        }
        checkpoints::RunInfo info;
        info.run_name = config.name;
        info.manifest_text = config.manifest_text;
        info.manifest_hash = config.manifest_hash;
        info.program_version = RSI_VERSION;
        info.git_commit = RSI_GIT_COMMIT;
        info.ranks = size;
        info.group_size = config.loop.group_size;
        info.threads_per_rank = config.loop.threads_per_rank;
        info.hosts = hosts;
        info.start_time = utc_now();
        if (config.loop.task.kind == scheduler::TaskSpec::Kind::FashionMnist)  // the 60k training images
          info.split_fingerprint =
              models::split_fingerprint(models::make_split(60'000, config.loop.task.split, config.loop.seed));
        store = std::make_unique<checkpoints::LineageStore>(dir, info, config.retention, point);
        lineage->set_store(store.get());
        progress = std::make_unique<Progress>(config.loop.generations, isatty(STDOUT_FILENO));
        sinks = {store.get(), lineage.get(), progress.get()};
        events.on_model_done = [p = progress.get()](const scheduler::ModelRecord& m) { p->on_model_done(m); };
        events.on_generation_start = [p = progress.get()](int g, int n) { p->on_generation_start(g, n); };
        std::printf("rsi run: %s  (%s, %d ranks in %d groups of %d, %d thread(s) per rank, seed %llu)\n",
                    config.name.c_str(), manifest_name.c_str(), size, size / config.loop.group_size,
                    config.loop.group_size, config.loop.threads_per_rank,
                    static_cast<unsigned long long>(config.loop.seed));
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
    const scheduler::LoopSummary summary =
        scheduler::run_loop(config.loop, *world, sinks, events, rank == 0 && resume.generation >= 0 ? &resume : nullptr);
    if (rank == 0)
      std::printf("best model %llu: validation %.4f, hidden test %.4f\n",
                  static_cast<unsigned long long>(summary.best_id), summary.best_val, summary.best_test);
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
