// `rsi study STUDY.yaml [--out DIR] [--jobs N] [--dry-run]`: every arm x seed of a study as an
// ordinary `rsi run` (a child process of this binary, under mpirun when the study asks for several
// ranks) in OUT/<arm>/seed-<s>/, one after another or N at once. Resumable: a run whose directory
// holds the marker `study-run.done` for the same resolved manifest is skipped; any other is started
// again, and `rsi run` resumes it from its last durable generation. The marker is written only after
// the run's process exited with code 0, so a study killed at any moment never counts an unfinished
// run as finished.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "progress.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"
#include "rsi/runtime/study.h"
#include "rsi/scheduler/governance.h"

extern char** environ;

namespace rsi::runtime {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct PlannedRun {
  std::size_t arm = 0;
  std::uint64_t seed = 0;
  fs::path dir;
  std::string manifest_text, manifest_hash;
  int monitoring_port = 0;
  int job_ranks = 1;  // cluster.nodes x cluster.tasks_per_node: the shape of a submitted job
  std::string label() const { return dir.parent_path().filename().string() + "/" + dir.filename().string(); }
};

std::vector<PlannedRun> plan_runs(const Study& study, const fs::path& out) {
  std::vector<PlannedRun> runs;
  for (std::size_t a = 0; a < study.arms.size(); ++a)
    for (const std::uint64_t seed : study.seeds) {
      PlannedRun r{a, seed, out / study.arms[a].name / ("seed-" + std::to_string(seed)), {}, {}, 0, 1};
      const RunConfig config = study_run_config(study, a, seed, fs::absolute(r.dir).lexically_normal().string());
      r.manifest_text = resolved_yaml(config);
      r.manifest_hash = manifest_hash(r.manifest_text);
      r.monitoring_port = config.monitoring.port;
      r.job_ranks = config.cluster.nodes * config.cluster.tasks_per_node;
      runs.push_back(std::move(r));
    }
  return runs;
}

bool finished_before(const PlannedRun& r) {
  std::ifstream in(r.dir / kStudyDoneFile);
  std::string key, hash;
  return in >> key >> hash && key == "manifest_hash" && hash == r.manifest_hash;
}

void print_plan(const Study& study, const std::vector<PlannedRun>& runs, const fs::path& out) {
  std::printf("study %s: base manifest %s, %zu arm(s) x %zu seed(s) = %zu runs, %d rank(s) each, in %s\n",
              study.name.c_str(), study.manifest_path.c_str(), study.arms.size(), study.seeds.size(), runs.size(),
              study.ranks, out.string().c_str());
  for (std::size_t a = 0; a < study.arms.size(); ++a) {
    const StudyArm& arm = study.arms[a];
    std::printf("  arm %s%s:", arm.name.c_str(), a == study.baseline ? " (baseline)" : "");
    if (arm.overrides.empty()) std::printf(" the base manifest as it is");
    for (const auto& o : arm.overrides) std::printf(" %s=%s", o.key.c_str(), o.value.c_str());
    std::printf("\n");
  }
  for (std::size_t k = 0; k < runs.size(); ++k)
    std::printf("  [%zu/%zu] %s  run.seed=%llu  %s%s\n", k + 1, runs.size(), runs[k].label().c_str(),
                static_cast<unsigned long long>(runs[k].seed), (runs[k].dir / "manifest.yaml").string().c_str(),
                finished_before(runs[k]) ? "  (finished)" : "");
}

// The run's process: `rsi run MANIFEST` of this very binary (under mpirun with several ranks), its
// stdout and stderr appended to RUN/run.log. Returns the pid (-1 with `error` set when it did not start).
pid_t start_run(const PlannedRun& r, int ranks, const std::string& rsi, std::string& error) {
  const fs::path manifest = r.dir / "manifest.yaml";
  const fs::path log = r.dir / "run.log";
  std::ofstream(log, std::ios::app) << "== rsi study: rsi run " << manifest.string() << " started "
                                    << scheduler::utc_now_iso() << "\n";
  std::vector<std::string> args;
  if (ranks > 1) args = {"mpirun", "-n", std::to_string(ranks), "--oversubscribe"};
  args.insert(args.end(), {rsi, "run", manifest.string()});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    error = std::string("cannot start ") + argv[0] + ": " + std::strerror(rc) +
            (ranks > 1 ? " (is Open MPI's mpirun on PATH?)" : "");
    return -1;
  }
  return pid;
}

// The run's directory and resolved manifest (identical text on a resume: `rsi run` then continues).
void prepare_run(const PlannedRun& r) {
  fs::create_directories(r.dir);
  std::ofstream out(r.dir / "manifest.yaml", std::ios::binary | std::ios::trunc);
  out << r.manifest_text;
  if (!out.flush()) throw std::runtime_error("cannot write " + (r.dir / "manifest.yaml").string());
}

struct Tally {
  int finished = 0, failed = 0, skipped = 0;
  std::vector<std::string> failures;
};

class StudyRunner {
 public:
  StudyRunner(const Study& study, std::vector<PlannedRun> runs, int jobs)
      : study_(study), runs_(std::move(runs)), jobs_(jobs), start_(Clock::now()) {
    rsi_ = fs::read_symlink("/proc/self/exe").string();
  }

  Tally run() {
    std::size_t next = 0;
    while (next < runs_.size() || !running_.empty()) {
      while (next < runs_.size() && static_cast<int>(running_.size()) < jobs_) launch(next++);
      if (running_.empty()) continue;
      int status = 0;
      const pid_t pid = waitpid(-1, &status, 0);
      if (pid < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
      }
      const auto it = running_.find(pid);
      if (it == running_.end()) continue;
      const auto [k, started] = it->second;
      running_.erase(it);
      finish(k, status, started);
    }
    return tally_;
  }

 private:
  std::string counter(std::size_t k) const {
    return "[" + std::to_string(k + 1) + "/" + std::to_string(runs_.size()) + "]";
  }
  std::string elapsed() const {
    return fmt_seconds(std::chrono::duration<double>(Clock::now() - start_).count());
  }

  void launch(std::size_t k) {
    const PlannedRun& r = runs_[k];
    if (finished_before(r)) {
      ++tally_.skipped;
      std::printf("%s %s: finished before (%s), skipped\n", counter(k).c_str(), r.label().c_str(), kStudyDoneFile);
      std::fflush(stdout);
      return;
    }
    prepare_run(r);
    std::string error;
    const pid_t pid = start_run(r, study_.ranks, rsi_, error);
    if (pid < 0) {
      ++tally_.failed;
      tally_.failures.push_back(r.label() + ": " + error);
      std::printf("%s %s: FAILED to start: %s\n", counter(k).c_str(), r.label().c_str(), error.c_str());
      return;
    }
    running_[pid] = {k, Clock::now()};
    std::printf("%s %s: started (log %s; study elapsed %s)\n", counter(k).c_str(), r.label().c_str(),
                (r.dir / "run.log").string().c_str(), elapsed().c_str());
    std::fflush(stdout);
  }

  void finish(std::size_t k, int status, Clock::time_point started) {
    const PlannedRun& r = runs_[k];
    const std::string took = fmt_seconds(std::chrono::duration<double>(Clock::now() - started).count());
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code == 0) {
      std::ofstream(r.dir / kStudyDoneFile) << "manifest_hash " << r.manifest_hash << "\nfinished "
                                            << scheduler::utc_now_iso() << "\n";
      ++tally_.finished;
      std::printf("%s %s: finished in %s (study elapsed %s)\n", counter(k).c_str(), r.label().c_str(), took.c_str(),
                  elapsed().c_str());
    } else {
      ++tally_.failed;
      const std::string what = (WIFEXITED(status) ? "exit code " + std::to_string(code)
                                                  : "killed by signal " + std::to_string(WTERMSIG(status))) +
                               "; log " + (r.dir / "run.log").string();
      tally_.failures.push_back(r.label() + ": " + what);
      std::printf("%s %s: FAILED after %s, %s (study elapsed %s)\n", counter(k).c_str(), r.label().c_str(),
                  took.c_str(), what.c_str(), elapsed().c_str());
    }
    std::fflush(stdout);
  }

  const Study& study_;
  std::vector<PlannedRun> runs_;
  int jobs_;
  Clock::time_point start_;
  std::string rsi_;
  std::map<pid_t, std::pair<std::size_t, Clock::time_point>> running_;
  Tally tally_;
};

// OUT/study-index.tsv (arm, seed, directory; the baseline marked) for rsi compare, and the study
// file's text as it was for this invocation.
void write_study_files(const Study& study, const std::vector<PlannedRun>& runs, const fs::path& out) {
  fs::create_directories(out);
  std::ostringstream index;
  index << "arm\tseed\tdirectory\tbaseline\n";
  for (const auto& r : runs)
    index << study.arms[r.arm].name << "\t" << r.seed << "\t" << fs::relative(r.dir, out).string() << "\t"
          << (r.arm == study.baseline ? 1 : 0) << "\n";
  std::ofstream(out / kStudyIndexFile, std::ios::trunc) << index.str();
  std::ofstream(out / kStudySourceFile, std::ios::trunc) << study.text;
}

struct StudyArgs {
  std::string file, out;
  int jobs = 1;
  bool dry_run = false, submit = false;
  std::vector<std::string> sbatch_args;
};

// A process of `args` with this process's stdin, stdout and stderr; its exit code (-1: not started).
int run_attached(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// --submit: one Slurm job per unfinished run, each rendered and submitted by `rsi submit` of this
// binary from the run's manifest (the same script, preemption and requeue as any run; not a job
// array). The job's shape is the manifest's cluster: keys, so it must match the study's ranks.
int submit_runs(const Study& study, const std::vector<PlannedRun>& runs, const StudyArgs& a) {
  for (const auto& r : runs)
    if (r.job_ranks != study.ranks) {
      logf(LogLevel::Error,
           "--submit: run %s would be a job of %d rank(s) (its manifest's cluster.nodes x cluster.tasks_per_node) "
           "but the study asks for ranks: %d; make them agree",
           r.label().c_str(), r.job_ranks, study.ranks);
      return kExitUsage;
    }
  const std::string rsi = fs::read_symlink("/proc/self/exe").string();
  int failed = 0;
  for (std::size_t k = 0; k < runs.size(); ++k) {
    const PlannedRun& r = runs[k];
    const std::string counter = "[" + std::to_string(k + 1) + "/" + std::to_string(runs.size()) + "] ";
    if (finished_before(r)) {
      std::printf("%s%s: finished before (%s), not submitted\n", counter.c_str(), r.label().c_str(), kStudyDoneFile);
      continue;
    }
    prepare_run(r);
    std::vector<std::string> args = {rsi, "submit", (r.dir / "manifest.yaml").string()};
    if (a.dry_run) args.emplace_back("--dry-run");
    for (const auto& s : a.sbatch_args) args.push_back("--sbatch-arg=" + s);
    std::printf("%s%s: rsi submit %s%s\n", counter.c_str(), r.label().c_str(), args[2].c_str(),
                a.dry_run ? " --dry-run" : "");
    std::fflush(stdout);
    if (const int rc = run_attached(args); rc != 0) {
      logf(LogLevel::Error, "%s: rsi submit failed (exit code %d)", r.label().c_str(), rc);
      ++failed;
    }
  }
  return failed > 0 ? kExitFailure : kExitOk;
}

int study_main(const StudyArgs& a) {
  Study study;
  std::vector<PlannedRun> runs;
  try {
    study = load_study(a.file);
    const fs::path dir = a.out.empty() ? fs::path("runs") / study.name : fs::path(a.out);
    runs = plan_runs(study, dir);
    const auto serving = std::find_if(runs.begin(), runs.end(), [](const PlannedRun& r) { return r.monitoring_port; });
    if (a.jobs > 1 && serving != runs.end()) {
      logf(LogLevel::Error,
           "%s: run %s serves metrics on monitoring.port %d, which runs side by side (--jobs %d) would share; use "
           "--jobs 1, or override monitoring.port: 0 in the arms",
           a.file.c_str(), serving->label().c_str(), serving->monitoring_port, a.jobs);
      return kExitUsage;
    }
    if (a.dry_run && !a.submit) {
      print_plan(study, runs, dir);
      return kExitOk;
    }
    write_study_files(study, runs, dir);
    if (a.submit) return submit_runs(study, runs, a);
    std::printf("rsi study %s: %zu arm(s) x %zu seed(s) = %zu runs in %s, %d at once, %d rank(s) each\n",
                study.name.c_str(), study.arms.size(), study.seeds.size(), runs.size(), dir.string().c_str(),
                a.jobs, study.ranks);
    std::fflush(stdout);
  } catch (const ManifestError& e) {
    log_error(e.what());
    return kExitBadInput;
  }
  const auto start = Clock::now();
  const Tally t = StudyRunner(study, std::move(runs), a.jobs).run();
  std::printf("rsi study %s: %d finished, %d skipped (finished before), %d failed in %s\n", study.name.c_str(),
              t.finished, t.skipped, t.failed,
              fmt_seconds(std::chrono::duration<double>(Clock::now() - start).count()).c_str());
  for (const auto& f : t.failures) logf(LogLevel::Error, "failed: %s", f.c_str());
  if (t.failed > 0)
    log_error("run the same command again to retry the failed runs (finished ones are skipped; unfinished ones resume)");
  return t.failed > 0 ? kExitFailure : kExitOk;
}

}  // namespace

void add_study_command(CLI::App& app, std::function<int()>& run) {
  auto a = std::make_shared<StudyArgs>();
  CLI::App* cmd = app.add_subcommand(
      "study",
      "Run a study: every arm x seed of a study file as an ordinary `rsi run` of the base manifest with the\n"
      "arm's overrides, in OUT/<arm>/seed-<s>/ (the resolved manifest.yaml and run.log are kept there).\n"
      "The study file (runtime/README.md, \"Study files\"):\n"
      "  manifest: ../surrogate-scale.yaml   # the base manifest, relative to the study file\n"
      "  arms:                               # each: a name and overrides (dotted manifest keys)\n"
      "    - {name: truncation}\n"
      "    - {name: tournament, overrides: {selection.kind: tournament, selection.tournament_size: 3}}\n"
      "  seeds: {count: 3, first: 0}         # or a list: [0, 1, 2]; sets run.seed of each run\n"
      "  baseline: truncation                # optional (default: the first arm); rsi compare's reference\n"
      "  ranks: 1                            # optional: MPI ranks per run (mpirun -n R --oversubscribe)\n"
      "  name: selection                     # optional (default: the file's stem); OUT = runs/<name>\n"
      "Every override is checked as the manifest loader checks the key; errors name the study file's\n"
      "line:column, the arm and the key. Resumable: run the same command again after a kill or a failure:\n"
      "runs marked finished (RUN/study-run.done, written after `rsi run` exited 0, for the same resolved\n"
      "manifest) are skipped and the others resume from their last durable generation. Exit code 0 when\n"
      "every run finished, 1 when a run failed (each is named with its exit code and log), 3 for an\n"
      "invalid study file or manifest. Then: `rsi compare OUT`.");
  cmd->add_option("study", a->file, "Study file (YAML)")->required()->check(existing_file());
  cmd->add_option("--out", a->out, "Study directory (default runs/<study name>)");
  cmd->add_option("--jobs", a->jobs, "Runs at once on this machine (default 1); each uses its manifest's threads")
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--dry-run", a->dry_run,
                "Validate the study and print its runs (arm, seed, directory, overrides; finished ones marked)\n"
                "without running or writing anything; with --submit, print each job's script instead of submitting");
  cmd->add_flag("--submit", a->submit,
                "Submit each unfinished run as a Slurm job of its own (`rsi submit RUN/manifest.yaml`: the\n"
                "manifest's cluster: keys, preemption and requeue as for any run) instead of running it here.\n"
                "When the jobs have ended, `rsi study` without --submit marks them finished (each `rsi run`\n"
                "resumes at its end and exits 0) or reruns what did not finish");
  cmd->add_option("--sbatch-arg", a->sbatch_args, "With --submit: an extra sbatch option for every job; repeatable,\n"
                  "the = form: --sbatch-arg=--qos=high");
  cmd->callback([&run, a] {
    run = [a] { return study_main(*a); };
  });
}

}  // namespace rsi::runtime
