// rsi submit: the sbatch script rendered from slurm/rsi.sbatch.in (options from the manifest's
// cluster: section, values quoted or refused, optional lines left out), the cluster keys' checks,
// and the script's signal handling run for real against a fake mpirun and scontrol: SIGUSR1 stops
// the run and requeues the job, SIGTERM stops it without a requeue, exit codes pass through.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "rsi/runtime/manifest.h"
#include "rsi/runtime/submit.h"

using rsi::runtime::ManifestError;
using rsi::runtime::parse_manifest;
using rsi::runtime::render_sbatch;
using rsi::runtime::RunConfig;
using rsi::runtime::SubmitError;
using rsi::runtime::SubmitJob;

namespace {

const std::string kSource = RSI_SOURCE_DIR;
const std::string kSeeds = "seeds: [{architecture: [{dense: {units: 10}}]}]\n";

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

RunConfig manifest(const std::string& cluster) { return parse_manifest(kSeeds + cluster, "test.yaml", "/nonexistent"); }

SubmitJob job() {
  SubmitJob j;
  j.manifest = "/home/u/exp/m.yaml";
  j.rsi = "/opt/rsi/bin/rsi";
  j.workdir = "/home/u/exp";
  j.run_dir = "/home/u/exp/runs/r";
  return j;
}

bool has_line(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (l == line) return true;
  return false;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST(Submit, EmbeddedTemplateIsTheSourceFile) {
  EXPECT_EQ(rsi::runtime::sbatch_template(), read(kSource + "/slurm/rsi.sbatch.in"))
      << "the build embeds slurm/rsi.sbatch.in at configure time: re-run cmake";
}

TEST(Submit, DefaultsRenderEveryRequiredOption) {
  const std::string s = render_sbatch(manifest("run: {name: my.run-1}\n"), job());
  for (const char* line :
       {"#!/bin/bash", "#SBATCH --job-name=my.run-1", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=1", "#SBATCH --time=01:00:00", "#SBATCH --signal=B:USR1@120", "#SBATCH --requeue",
        "#SBATCH --open-mode=append", "#SBATCH --chdir=/home/u/exp", "#SBATCH --output=/home/u/exp/runs/r/slurm-%j.out",
        "#SBATCH --error=/home/u/exp/runs/r/slurm-%j.err", "rsi='/opt/rsi/bin/rsi'", "manifest='/home/u/exp/m.yaml'",
        "mpirun -n \"${SLURM_NTASKS:-1}\" --bind-to none \"$rsi\" run \"$manifest\" &"})
    EXPECT_TRUE(has_line(s, line)) << "missing line: " << line << "\n" << s;
  // Empty values leave their line out rather than pass sbatch an empty option.
  for (const char* absent : {"--partition", "--account", "--gpus-per-node"})
    EXPECT_EQ(s.find(absent), std::string::npos) << absent;
  EXPECT_FALSE(std::regex_search(s, std::regex("@[A-Z_]+@"))) << "a placeholder was left:\n" << s;
  // Every #SBATCH line comes before the first command, or sbatch ignores it.
  const auto first_command = s.find("\nset -u");
  EXPECT_GT(first_command, s.rfind("#SBATCH"));
  // A trap that fires inside a command substitution can derail bash's parser.
  std::istringstream lines(s);
  for (std::string l; std::getline(lines, l);)
    EXPECT_TRUE(l.rfind('#', 0) == 0 || !std::regex_search(l, std::regex(R"(\$\([^(])"))) << l;
}

TEST(Submit, ClusterSectionBecomesOptions) {
  const RunConfig c = manifest(
      "cluster: {nodes: 2, gpus_per_node: 4, threads_per_rank: 8, time_limit: 1-12:00:00, partition: gpu, "
      "account: proj42, signal_seconds: 300}\n");
  EXPECT_EQ(c.cluster.tasks_per_node, 4);  // one rank per GPU by default
  SubmitJob j = job();
  j.sbatch_args = {"--qos=high", "--mem=0"};
  j.out = "/scratch/it's here";
  const std::string s = render_sbatch(c, j);
  for (const char* line :
       {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4", "#SBATCH --cpus-per-task=8",
        "#SBATCH --time=1-12:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=proj42",
        "#SBATCH --signal=B:USR1@300", "#SBATCH --qos=high", "#SBATCH --mem=0"})
    EXPECT_TRUE(has_line(s, line)) << "missing line: " << line << "\n" << s;
  // --out reaches `rsi run`, single-quoted for the shell.
  EXPECT_NE(s.find(R"("$rsi" run "$manifest" --out '/scratch/it'\''s here' &)"), std::string::npos) << s;
}

TEST(Submit, NoSignalLineWhenSignalSecondsIsZero) {
  const std::string s = render_sbatch(manifest("cluster: {signal_seconds: 0}\n"), job());
  EXPECT_EQ(s.find("#SBATCH --signal"), std::string::npos);
  EXPECT_TRUE(has_line(s, "#SBATCH --requeue"));
}

TEST(Submit, RefusesWhatSbatchCannotTake) {
  SubmitJob j = job();
  j.run_dir = "/home/u/my runs/r";
  EXPECT_NE(error_of([&] { render_sbatch(manifest(""), j); }).find("'/home/u/my runs/r' (@RUN_DIR@) cannot go into"),
            std::string::npos);
  j = job();
  j.run_dir = "/home/u/100%/r";  // sbatch would expand %/ in the output path
  EXPECT_THROW(render_sbatch(manifest(""), j), SubmitError);
  j = job();
  j.sbatch_args = {"qos=high"};
  EXPECT_NE(error_of([&] { render_sbatch(manifest(""), j); }).find("expected one sbatch option"), std::string::npos);
  // A path with a line break stays inside its quotes and its comment.
  j = job();
  j.manifest = "/tmp/a\nrm -rf /\n.yaml";
  const std::string s = render_sbatch(manifest(""), j);
  EXPECT_NE(s.find("manifest='/tmp/a\nrm -rf /\n.yaml'\n"), std::string::npos) << s;
  EXPECT_TRUE(has_line(s, "# Manifest: /tmp/a?rm -rf /?.yaml")) << s;
}

TEST(Submit, TemplateErrors) {
  EXPECT_NE(error_of([&] { render_sbatch(manifest(""), job(), "#!/bin/bash\n#SBATCH --x=@NOPE@\n"); })
                .find("template line 2: unknown placeholder @NOPE@; known: @ACCOUNT@"),
            std::string::npos);
  EXPECT_THROW(render_sbatch(manifest(""), job(), "x @EXTRA_SBATCH@\n"), SubmitError);
  // '@' that is not a placeholder is text: Slurm's USR1@120, bash's ${a[@]}, an e-mail address.
  EXPECT_EQ(render_sbatch(manifest(""), job(), "#SBATCH --signal=B:USR1@@SIGNAL_SECONDS@\necho ${a[@]} me@HOST\n"),
            "#SBATCH --signal=B:USR1@120\necho ${a[@]} me@HOST\n");
}

TEST(Submit, ClusterKeysAreChecked) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"cluster: {time_limit: 90}\n", "cluster.time_limit: expected a time limit [D-]HH:MM:SS"},
      {"cluster: {time_limit: \"01:60:00\"}\n", "cluster.time_limit: expected a time limit"},
      {"cluster: {time_limit: \"-1:00:00\"}\n", "cluster.time_limit: expected a time limit"},
      {"cluster: {partition: \"gpu big\"}\n", "cluster.partition: expected a partition name (one word)"},
      {"cluster: {account: \"a;$(x)\"}\n", "cluster.account: expected an account name (one word)"},
      {"cluster: {gpus_per_node: 4, tasks_per_node: 2}\n", "a rank drives one GPU, so they must be equal"},
      {"cluster: {nodes: 0}\n", "cluster.nodes: expected an integer in [1, 100000], got '0'"},
      {"cluster: {time_limit: \"00:01:00\", signal_seconds: 120}\n",
       "cluster.signal_seconds 120 is not shorter than time_limit 00:01:00"},
      {"cluster: {time_limt: \"00:01:00\"}\n", "unknown key 'time_limt' (did you mean 'time_limit'?)"},
  };
  for (const auto& [text, expected] : cases)
    EXPECT_NE(error_of([&] { manifest(text); }).find(expected), std::string::npos)
        << text << "gave: " << error_of([&] { manifest(text); });
  EXPECT_EQ(rsi::runtime::slurm_time_seconds("1-02:03:04"), ((24 + 2) * 60 + 3) * 60 + 4);
  EXPECT_EQ(rsi::runtime::slurm_time_seconds("100:00:00"), 360000);
  EXPECT_EQ(rsi::runtime::slurm_time_seconds("01:00"), -1);
  EXPECT_NO_THROW(rsi::runtime::load_manifest(kSource + "/tests/manifests/slurm-surrogate.yaml"));
}

// The rendered script, run by bash with a fake mpirun (which stops with exit code 4 on SIGUSR1, as
// `rsi run` does) and a fake scontrol (which records its arguments).
class SubmitScript : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("rsi-test-submit-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_ / "bin");
    write(dir_ / "bin/mpirun", R"(#!/bin/bash
trap 'echo USR1 > "$FAKE_DIR/mpirun.signal"; exit "${FAKE_USR1_RC:-4}"' USR1
trap 'echo TERM > "$FAKE_DIR/mpirun.signal"; exit 143' TERM
printf '%s\n' "$*" > "$FAKE_DIR/mpirun.args"
if [[ -n $FAKE_LOST ]]; then  # what rsi run and Open MPI leave when node2 is lost mid-run
  printf 'rank\thost\tpid\n0\tnode1\t11\n1\tnode1\t12\n2\tnode2\t13\n3\tnode2\t14\n' > "$FAKE_DIR/run/ranks.tsv"
  echo '2 gen-000002.h5 abc def' > "$FAKE_DIR/run/LATEST"
  printf 'rsi job 123, start 2 on node[1-2]\nORTE has lost communication with a remote daemon.\n\n  HNP daemon   : [[1,0],0] on node node1\n  Remote daemon: [[1,0],1] on node node2\n' >> "$FAKE_DIR/run/slurm-123.err"
  exit 205
fi
i=0
[[ -n $FAKE_SIGNAL ]] && while ((i++ < 100)); do sleep 0.05; done
exit "${FAKE_RC:-0}"
)");
    write(dir_ / "bin/scontrol", "#!/bin/bash\necho \"$@\" >> \"$FAKE_DIR/scontrol.args\"\n");
    SubmitJob j = job();
    j.rsi = "/fake/rsi";
    j.out = "/fake/out";
    j.run_dir = (dir_ / "run").string();
    std::filesystem::create_directories(dir_ / "run");
    write(dir_ / "job.sbatch", render_sbatch(manifest(""), j));
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static void write(const std::filesystem::path& p, const std::string& text) {
    std::ofstream(p) << text;
    std::filesystem::permissions(p, std::filesystem::perms::owner_all, std::filesystem::perm_options::add);
  }
  // Runs the script; sends `signal` (if any) once the fake mpirun has started. Returns its exit code.
  int run(const std::string& signal, int fake_rc = 0, int usr1_rc = 4, bool lost_node = false) {
    const std::string driver = "cd '" + dir_.string() + "' && export FAKE_LOST=" + (lost_node ? "1" : "") + " FAKE_DIR=\"$PWD\" FAKE_RC=" +
                               std::to_string(fake_rc) + " FAKE_USR1_RC=" + std::to_string(usr1_rc) + " FAKE_SIGNAL=" + signal + " PATH=\"$PWD/bin:$PATH\" SLURM_JOB_ID=123 SLURM_NTASKS=2 && " +
                               "rm -f mpirun.* scontrol.args && { bash job.sbatch > job.log 2>&1 & pid=$!; } && " +
                               (signal.empty() ? "" : "until [ -f mpirun.args ]; do sleep 0.02; done; kill -" + signal + " $pid; ") +
                               "wait $pid";
    const int status = std::system(("bash -c '" + std::regex_replace(driver, std::regex("'"), "'\\''") + "'").c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::string file(const std::string& name) { return read((dir_ / name).string()); }

  std::filesystem::path dir_;
};

TEST_F(SubmitScript, Usr1StopsTheRunAndRequeuesTheJob) {
  EXPECT_EQ(run("USR1"), 0) << file("job.log");
  EXPECT_EQ(file("mpirun.args"), "-n 2 --bind-to none /fake/rsi run /home/u/exp/m.yaml --out /fake/out\n");
  EXPECT_EQ(file("mpirun.signal"), "USR1\n");
  EXPECT_EQ(file("scontrol.args"), "requeue 123\n") << file("job.log");
}

TEST_F(SubmitScript, Usr1ThatEndsALoadingRankStillRequeues) {
  // mpirun exits 138 when a rank died of SIGUSR1: it came before `rsi run` set its handler.
  EXPECT_EQ(run("USR1", 0, 138), 0) << file("job.log");
  EXPECT_EQ(file("scontrol.args"), "requeue 123\n") << file("job.log");
  EXPECT_EQ(run("USR1", 0, 1), 1) << file("job.log");  // a failure is not requeued
  EXPECT_EQ(file("scontrol.args"), "");
}

TEST_F(SubmitScript, TermStopsTheRunWithoutRequeue) {
  // mpirun would kill its ranks on SIGTERM: the script passes SIGUSR1 instead. scancel sends SIGTERM,
  // and a cancelled job must not come back.
  EXPECT_EQ(run("TERM"), 4) << file("job.log");
  EXPECT_EQ(file("mpirun.signal"), "USR1\n");
  EXPECT_EQ(file("scontrol.args"), "");
}

TEST_F(SubmitScript, ExitCodesPassThrough) {
  EXPECT_EQ(run("", 0), 0) << file("job.log");
  EXPECT_EQ(run("", 4), 4) << file("job.log");  // `rsi stop`: a stop without a signal ends the job
  EXPECT_EQ(run("", 3), 3) << file("job.log");
  EXPECT_EQ(file("scontrol.args"), "");
}

TEST_F(SubmitScript, NamesALostNodeItsRanksAndWhatIsDurable) {
  // An earlier start of the job lost another node: only this start's report counts.
  std::ofstream(dir_ / "run/slurm-123.err") << "rsi job 123, start 1 on node[1-2]\n  Remote daemon: [[9,0],1] on node node7\n";
  EXPECT_EQ(run("", 0, 4, true), 205) << file("job.log");
  const std::string log = file("job.log");
  EXPECT_NE(log.find("rsi job: lost node node2 (ranks 2-3 of this run, 4 ranks in all): Open MPI lost its daemon there"),
            std::string::npos) << log;
  EXPECT_EQ(log.find("node7"), std::string::npos) << log;
  EXPECT_NE(log.find("rsi job: generation 2 (gen-000002.h5) and the ones before it are durable"), std::string::npos) << log;
  EXPECT_NE(log.find("rsi job: resubmit to resume on nodes that answer: /fake/rsi submit /home/u/exp/m.yaml --out /fake/out"),
            std::string::npos) << log;
  EXPECT_EQ(file("scontrol.args"), "");
  // A failure that names no node says nothing of nodes.
  std::filesystem::remove(dir_ / "run/slurm-123.err");
  EXPECT_EQ(run("", 1), 1);
  EXPECT_EQ(file("job.log").find("lost node"), std::string::npos) << file("job.log");
}
