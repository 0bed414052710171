#include "progress.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <fstream>
#include <filesystem>
#include <cstring>
#include <cstdlib>

namespace rsi::runtime {

std::string fmt_seconds(double s) {
  if (s < 0 || !std::isfinite(s)) return "--";
  char buf[32];
  if (s >= 9999 * 86400.0) return ">9999d";
  if (s >= 2 * 86400)
    std::snprintf(buf, sizeof buf, "%dd%02dh", static_cast<int>(s / 86400), static_cast<int>(s / 3600) % 24);
  else if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%dh%02dm", static_cast<int>(s / 3600), static_cast<int>(s / 60) % 60);
  else if (s >= 60)
    std::snprintf(buf, sizeof buf, "%dm%02ds", static_cast<int>(s / 60), static_cast<int>(s) % 60);
  else
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  return buf;
}

std::string progress_bar(double fraction, int width) {
  if (!std::isfinite(fraction)) fraction = 0;
  fraction = std::clamp(fraction, 0.0, 1.0);
  width = std::max(width, 1);
  const int full = static_cast<int>(std::floor(fraction * width + 1e-9));
  std::string bar = "[";
  bar.append(static_cast<std::size_t>(full), '=');
  if (full < width) {
    bar.push_back('>');
    bar.append(static_cast<std::size_t>(width - full - 1), ' ');
  }
  bar.push_back(']');
  return bar;
}

double eta_seconds(double elapsed, double fraction) {
  if (!(fraction > 0) || !std::isfinite(elapsed)) return -1;
  if (fraction >= 1) return 0;
  return elapsed / fraction * (1 - fraction);
}

double model_work(const scheduler::ModelRecord& m) {
  return m.trained() ? static_cast<double>(m.metrics.flops) * static_cast<double>(m.metrics.samples) : 0.0;
}

double generation_work(const scheduler::GenerationRecord& g) {
  double work = 0;
  for (const auto& m : g.children) work += model_work(m);
  return work;
}

double remaining_work(const WorkSoFar& w, double* next) {
  const double last = w.generations.empty() ? 0.0 : w.generations.back();
  const double before = w.generations.size() >= 2 ? w.generations[w.generations.size() - 2] : 0.0;
  const double growth = last > 0 && before > 0 ? std::clamp(last / before, 1.0, 2.0) : 1.0;
  double remaining = 0, base = last;
  if (w.in_flight) {
    const double expected = w.in_flight_done > 0 ? w.in_flight_work / w.in_flight_done * w.in_flight_total : last * growth;
    remaining += std::max(0.0, expected - w.in_flight_work);
    base = expected;
  }
  // Growth cannot compound for ever: the design limits bound a child's size, so a later generation
  // is taken as at most 8 times the current one (a 60-generation run would otherwise be 2^60 of it).
  double later = base;
  for (int k = 0; k < w.later; ++k) {
    later = std::min(later * growth, 8 * base);
    if (k == 0 && next) *next = later;
    remaining += later;
  }
  if (w.later == 0 && next) *next = 0;
  return remaining;
}

double cost_eta_seconds(const WorkSoFar& w, double elapsed) {
  double done = w.in_flight_work;
  for (double g : w.generations) done += g;
  if (!(done > 0) || !(elapsed > 0)) return -1;
  return remaining_work(w) / (done / elapsed);
}

std::string rank_tag(int rank) { return "[rank " + std::to_string(rank) + "]"; }

std::string log_prefix(int rank, std::time_t when) {
  char buf[32];
  std::tm tm{};
  gmtime_r(&when, &tm);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf) + " " + rank_tag(rank) + " ";
}

std::string children_line(const std::vector<ChildState>& done, int total, int width) {
  int trained = 0, failed = 0;
  for (const auto& c : done) (c.status == scheduler::ModelRecord::Status::Trained ? trained : failed)++;
  const int pending = std::max(total - static_cast<int>(done.size()), 0);
  char head[160];
  std::snprintf(head, sizeof head, "  children %d/%d: %d trained, %d failed, %d running or queued |",
                static_cast<int>(done.size()), total, trained, failed, pending);
  std::string line = head;
  for (const auto& c : done) {
    char item[64];
    if (c.status == scheduler::ModelRecord::Status::Trained)
      std::snprintf(item, sizeof item, " %llu ok %.3f", static_cast<unsigned long long>(c.id), c.val_accuracy);
    else
      std::snprintf(item, sizeof item, " %llu %s", static_cast<unsigned long long>(c.id),
                    c.status == scheduler::ModelRecord::Status::Failed ? "FAILED" : "REFUSED");
    line += item;
  }
  if (width > 3 && static_cast<int>(line.size()) > width)
    line = line.substr(0, static_cast<std::size_t>(width - 3)) + "...";
  return line;
}

std::string bar_line(int generation, int last_generation, double fraction, double elapsed, int width, double eta) {
  char tail[128];
  std::snprintf(tail, sizeof tail, " %3d%%  elapsed %s  ETA %s",
                static_cast<int>(std::floor(std::clamp(fraction, 0.0, 1.0) * 100)), fmt_seconds(elapsed).c_str(),
                fmt_seconds(eta < -1 ? eta_seconds(elapsed, fraction) : eta).c_str());
  char head[64];
  std::snprintf(head, sizeof head, "gen %d/%d ", generation, last_generation);
  // The bar takes what the text leaves of the line, between 10 and 40 cells.
  const int cells =
      std::clamp(width - static_cast<int>(std::string(head).size() + std::string(tail).size()) - 2, 10, 40);
  return head + progress_bar(fraction, cells) + tail;
}

std::string launcher_terminal() {
  pid_t pid = getppid();
  for (int depth = 0; depth < 8 && pid > 1; ++depth) {
    const std::string proc = "/proc/" + std::to_string(pid);
    std::string name;
    std::getline(std::ifstream(proc + "/comm"), name);
    if (name == "mpirun" || name == "mpiexec" || name == "orterun" || name == "prterun" || name == "mpiexec.hydra") {
      std::error_code ec;
      const std::string out = std::filesystem::read_symlink(proc + "/fd/1", ec).string();
      if (ec) return "";
      return out.rfind("/dev/pts/", 0) == 0 || out.rfind("/dev/tty", 0) == 0 ? out : "";
    }
    // The parent's parent: /proc/PID/stat is "pid (comm) state ppid ...", comm may hold spaces.
    std::string stat;
    std::getline(std::ifstream(proc + "/stat"), stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos) break;
    std::istringstream rest(stat.substr(close + 1));
    char state = 0;
    long parent = 0;
    if (!(rest >> state >> parent)) break;
    pid = static_cast<pid_t>(parent);
  }
  return "";
}

bool interactive_output(int fd) {
  if (const char* forced = std::getenv("RSI_PROGRESS")) {
    if (std::string(forced) == "tty") return true;
    if (std::string(forced) == "plain") return false;
  }
  // Under mpirun a rank's own output is a pipe (or a pseudo-terminal either way): what counts is
  // the launcher's output, when the launcher is this rank's ancestor on this host.
  for (const char* launcher : {"OMPI_COMM_WORLD_SIZE", "PMI_RANK"})  // not PMIX_RANK: a singleton sets it
    if (std::getenv(launcher)) return !launcher_terminal().empty();
  if (std::getenv("SLURM_STEP_ID")) return false;  // srun runs elsewhere: its output is a file or another host's
  return isatty(fd) == 1;
}

namespace {

int terminal_width(std::FILE* out) {
  winsize ws{};
  if (ioctl(fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col - 1;
  // Under mpirun the output is a pipe: the width is that of the launcher's terminal.
  if (const std::string tty = launcher_terminal(); !tty.empty()) {
    const int fd = open(tty.c_str(), O_RDONLY | O_NOCTTY | O_CLOEXEC);
    const bool known = fd >= 0 && ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20;
    if (fd >= 0) close(fd);
    if (known) return ws.ws_col - 1;
  }
  return 100;
}

}  // namespace

Progress::Progress(int generations, bool tty, int rank, std::FILE* out)
    : generations_(generations), tty_(tty), rank_(rank), out_(out), start_(std::chrono::steady_clock::now()) {}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double Progress::fraction() const {
  const int first = first_generation_ < 0 ? 0 : first_generation_;
  const int count = generations_ - first + 1;
  if (count <= 0 || current_ < 0) return 0;
  const double in_flight = total_ > 0 ? static_cast<double>(done_) / total_ : 0.0;
  return std::clamp((current_ - first + in_flight) / count, 0.0, 1.0);
}

WorkSoFar Progress::work() const {
  WorkSoFar w;
  w.generations = work_;
  w.in_flight = current_ >= 0 && total_ > 0;
  w.in_flight_work = in_flight_work_;
  w.in_flight_done = done_;
  w.in_flight_total = total_;
  const int last = w.in_flight ? current_ : (first_generation_ < 0 ? -1 : first_generation_ + static_cast<int>(work_.size()) - 1);
  w.later = std::max(0, generations_ - last);
  return w;
}

double Progress::eta() const {
  const double by_work = cost_eta_seconds(work(), elapsed());
  return by_work >= 0 ? by_work : eta_seconds(elapsed(), fraction());
}

void Progress::log(const std::string& line) {
  std::fprintf(out_, "%s%s\n", log_prefix(rank_, std::time(nullptr)).c_str(), line.c_str());
  std::fflush(out_);
}

void Progress::clear_live() {
  if (!tty_ || live_lines_ == 0) return;
  // Up to the first line of the display, then clear to the end of the screen.
  if (live_lines_ > 1) std::fprintf(out_, "\033[%dA", live_lines_ - 1);
  std::fprintf(out_, "\r\033[J");
  live_lines_ = 0;
}

void Progress::draw_live() {
  if (!tty_ || current_ < 0) return;
  clear_live();
  const int width = terminal_width(out_);
  std::fprintf(out_, "%s\n%s", bar_line(current_, generations_, fraction(), elapsed(), width, eta()).c_str(),
               children_line(children_, total_, width).c_str());
  live_lines_ = 2;
  std::fflush(out_);
}

void Progress::on_generation_start(int generation, int total) {
  if (first_generation_ < 0) first_generation_ = generation;
  current_ = generation;
  done_ = 0;
  total_ = total;
  children_.clear();
  if (tty_)
    draw_live();
  else
    log("gen " + std::to_string(generation) + "/" + std::to_string(generations_) +
        " started: " + std::to_string(total) + " children");
}

void Progress::on_model_done(const scheduler::ModelRecord& m) {
  ++done_;
  in_flight_work_ += model_work(m);
  children_.push_back({m.id, m.status, m.metrics.val_accuracy});
  if (tty_) {
    draw_live();
    return;
  }
  char line[256];
  // The loop's preview of a finished child does not carry its generation: the one in flight does.
  std::snprintf(line, sizeof line, "gen %d child %llu %s  val %.4f  (%d/%d)", current_,
                static_cast<unsigned long long>(m.id), scheduler::status_name(m.status), m.metrics.val_accuracy, done_,
                total_);
  log(line + (m.failure.empty() ? std::string() : "  reason: " + m.failure));
}

void Progress::on_generation(const scheduler::GenerationRecord& g) {
  if (current_ != g.generation) {  // a generation without a start event (e.g. a decision-only record)
    if (first_generation_ < 0) first_generation_ = g.generation;
    current_ = g.generation;
  }
  done_ = total_;  // the generation is complete, whatever was refused
  work_.push_back(generation_work(g));
  in_flight_work_ = 0;
  // How the last prediction fared, and the next one (the ETA is checked against what happened).
  std::string took = fmt_seconds(g.seconds);
  if (predicted_seconds_ >= 0) took += " (predicted " + fmt_seconds(predicted_seconds_) + ")";
  const int saved_total = total_;
  total_ = 0;  // nothing in flight between generations
  const WorkSoFar w = work();
  total_ = saved_total;
  double next_work = 0, done_work = 0;
  remaining_work(w, &next_work);
  for (double x : work_) done_work += x;
  predicted_seconds_ = done_work > 0 && elapsed() > 0 && next_work > 0 ? next_work / (done_work / elapsed()) : -1;
  const double eta = g.generation >= generations_ ? 0.0 : [&] {
    const double by_work = cost_eta_seconds(w, elapsed());
    return by_work >= 0 ? by_work : eta_seconds(elapsed(), fraction());
  }();
  char line[512];
  std::snprintf(line, sizeof line,
                "gen %2d/%d  best val %.4f test %.4f  gain %+.4f  skill %+.4f  diversity %.2f  "
                "trained %d failed %d refused %d  %.2f models/s  %s  ETA %s",
                g.generation, generations_, g.best_val, g.best_model_test, g.gain, g.design_skill, g.diversity,
                g.trained, g.failed, g.refused, g.models_per_second, took.c_str(), fmt_seconds(eta).c_str());
  if (g.improvement) {  // what the self-improvement switches did (experiments/README.md)
    const auto& imp = *g.improvement;
    char rho[16] = "n/a";
    if (!std::isnan(imp.predictor_rank_correlation)) std::snprintf(rho, sizeof rho, "%+.2f", imp.predictor_rank_correlation);
    const std::size_t used = std::strlen(line);
    std::snprintf(line + used, sizeof line - used, "  predictor rho %s (%d examples)  duplicates %d  promoted %d  niches %d",
                  rho, imp.predictor_examples, imp.duplicates, imp.promoted, imp.niches);
  }
  if (tty_) {
    clear_live();
    std::fprintf(out_, "%s\n", line);
    std::fflush(out_);
  } else {
    log(line);
  }
  children_.clear();
  total_ = 0;
  current_ = -1;
  rows_.push_back(g);
  for (auto& c : rows_.back().children) c.weights.reset();
  rows_.back().population_models.clear();
}

void Progress::on_finish() {
  clear_live();
  std::vector<std::string> lines;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-4s %-6s %-9s %-9s %-9s %-9s %-8s %-8s", "gen", "best", "best_val", "its_test",
                "med_val", "gain", "skill", "seconds");
  lines.push_back(buf);
  for (const auto& g : rows_) {
    std::snprintf(buf, sizeof buf, "%-4d %-6llu %-9.4f %-9.4f %-9.4f %+-9.4f %+-8.4f %-8.1f", g.generation,
                  static_cast<unsigned long long>(g.best_id), g.best_val, g.best_model_test, g.median_val, g.gain,
                  g.design_skill, g.seconds);
    lines.push_back(buf);
  }
  if (tty_) {
    std::fprintf(out_, "\n");
    for (const auto& l : lines) std::fprintf(out_, "%s\n", l.c_str());
    std::fflush(out_);
  } else {
    for (const auto& l : lines) log(l);
  }
}

}  // namespace rsi::runtime
