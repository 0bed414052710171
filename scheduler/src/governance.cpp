// Governance: red lines, approval gates, monitors and the run directory's decision and audit files
// (see governance.h).
#include "rsi/scheduler/governance.h"

#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <numeric>
#include <sstream>
#include <stdexcept>

namespace rsi::scheduler {

namespace fs = std::filesystem;

namespace {

std::string fmt(const char* format, double a, double b) {
  char buf[160];
  std::snprintf(buf, sizeof buf, format, a, b);
  return buf;
}

// One line per field: backslashes, newlines and tabs escaped so any reason text round-trips.
std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      const char n = s[++i];
      out += n == 'n' ? '\n' : n == 't' ? '\t' : n;
    } else {
      out += s[i];
    }
  }
  return out;
}

void write_all(int fd, const std::string& text, const fs::path& path) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(path.string() + ": write failed: " + std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

// on_reject_name is in names.cpp (the manifest loader links it without the scheduler).

std::string red_line_violation(const RedLines& lines, const models::GenomeStats& stats) {
  if (lines.max_parameters > 0 && stats.parameters > lines.max_parameters)
    return "red line: " + std::to_string(stats.parameters) + " parameters exceed governance.red_lines.max_parameters " +
           std::to_string(lines.max_parameters);
  if (lines.max_flops_per_sample > 0 && stats.flops > lines.max_flops_per_sample)
    return "red line: " + std::to_string(stats.flops) +
           " forward FLOPs per sample exceed governance.red_lines.max_flops_per_sample " +
           std::to_string(lines.max_flops_per_sample);
  return "";
}

double estimated_model_seconds(const ModelRecord& child, bool surrogate, double surrogate_cost_seconds) {
  if (child.status == ModelRecord::Status::Refused && child.metrics.samples == 0) return 0.0;  // never dispatched
  if (surrogate) {
    if (child.rung_epochs.empty()) return surrogate_cost_seconds;
    // Multi-fidelity: a child stopped at a rung cost that rung's share of its epochs.
    const int epochs = models::from_yaml(child.genome_yaml, "child genome").recipe.epochs;
    return surrogate_cost_seconds * std::min(1.0, static_cast<double>(child.rung_epochs.back()) / std::max(epochs, 1));
  }
  return 3.0 * static_cast<double>(child.metrics.flops) * static_cast<double>(child.metrics.samples) / 1e9;
}

std::vector<std::string> gate_triggers(const GateConfig& gates, const GenerationRecord& r) {
  std::vector<std::string> out;
  if (r.generation == 0) return out;  // the seeds are the people's own choice
  if (gates.max_gain > 0 && r.gain > gates.max_gain)
    out.push_back(fmt("gain %.6f exceeds governance.gates.max_gain %.6f", r.gain, gates.max_gain));
  for (const ModelRecord& m : r.children) {
    if (!m.trained()) continue;
    if (gates.max_parameters > 0 && m.metrics.parameters > gates.max_parameters)
      out.push_back("model " + std::to_string(m.id) + " has " + std::to_string(m.metrics.parameters) +
                    " parameters, over governance.gates.max_parameters " + std::to_string(gates.max_parameters));
    if (gates.max_flops > 0 && m.metrics.flops > gates.max_flops)
      out.push_back("model " + std::to_string(m.id) + " needs " + std::to_string(m.metrics.flops) +
                    " FLOPs per sample, over governance.gates.max_flops " + std::to_string(gates.max_flops));
  }
  if (gates.max_goodhart_gap > 0 && r.goodhart_gap > gates.max_goodhart_gap)
    out.push_back(fmt("Goodhart gap %.6f (validation - hidden test) exceeds governance.gates.max_goodhart_gap %.6f",
                      r.goodhart_gap, gates.max_goodhart_gap));
  if (gates.every_n_generations > 0 && r.generation % gates.every_n_generations == 0)
    out.push_back("every " + std::to_string(gates.every_n_generations) + " generations (governance.gates.every_n_generations)");
  return out;
}

double slope(const std::vector<double>& v) {
  const std::size_t n = v.size();
  if (n < 2) return 0.0;
  const double mean_x = (static_cast<double>(n) - 1.0) / 2.0;
  const double mean_y = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(n);
  double sxy = 0.0, sxx = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double dx = static_cast<double>(i) - mean_x;
    sxy += dx * (v[i] - mean_y);
    sxx += dx * dx;
  }
  return sxy / sxx;
}

std::string takeoff_estimate(const std::vector<double>& gains) {
  if (gains.size() < 2) return "";
  const double mean = std::accumulate(gains.begin(), gains.end(), 0.0) / static_cast<double>(gains.size());
  const double s = slope(gains);
  if (mean < 1e-3) return "saturating";
  if (s > 0.25 * mean) return "accelerating";
  if (s < -0.25 * mean) return "saturating";
  return "steady";
}

double label_entropy(const std::vector<double>& counts) {
  const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  if (total <= 0) return 0.0;
  double h = 0.0;
  for (double c : counts)
    if (c > 0) h -= (c / total) * std::log(c / total);
  return h;
}

std::vector<std::string> monitor_alerts(const MonitorConfig& m, const GenerationRecord& r, int population_size) {
  std::vector<std::string> out;
  if (m.goodhart_gap_alert > 0 && r.goodhart_gap > m.goodhart_gap_alert)
    out.push_back(fmt("goodhart: gap %.6f exceeds governance.monitors.goodhart_gap_alert %.6f", r.goodhart_gap,
                      m.goodhart_gap_alert));
  if (m.pseudo_label_accuracy_floor > 0 && r.pseudo_label_accuracy >= 0 &&
      r.pseudo_label_accuracy < m.pseudo_label_accuracy_floor)
    out.push_back(fmt("collapse: pseudo-label accuracy %.6f below governance.monitors.pseudo_label_accuracy_floor %.6f",
                      r.pseudo_label_accuracy, m.pseudo_label_accuracy_floor));
  if (m.label_entropy_floor > 0 && r.pseudo_label_entropy >= 0 && r.pseudo_label_entropy < m.label_entropy_floor)
    out.push_back(fmt("collapse: pseudo-label entropy %.6f nats below governance.monitors.label_entropy_floor %.6f",
                      r.pseudo_label_entropy, m.label_entropy_floor));
  // Diversity needs two genomes to mean anything.
  if (m.diversity_floor > 0 && population_size > 1 && r.population.size() > 1 && r.diversity < m.diversity_floor)
    out.push_back(fmt("collapse: population diversity %.6f below governance.monitors.diversity_floor %.6f",
                      r.diversity, m.diversity_floor));
  if (m.disparity_growth_alert > 0 && r.disparity_trend > m.disparity_growth_alert)
    out.push_back(fmt("bias: class disparity grows %.6f per generation, over governance.monitors.disparity_growth_alert %.6f",
                      r.disparity_trend, m.disparity_growth_alert));
  if (m.takeoff_alert && r.takeoff == "accelerating")
    out.push_back(fmt("takeoff: improvement is accelerating (gain %.6f this generation, design skill %.6f)", r.gain,
                      r.design_skill));
  return out;
}

std::string user_at_host() {
  std::string user;
  if (const char* u = std::getenv("USER"); u && *u) user = u;
  else if (const char* l = std::getenv("LOGNAME"); l && *l) user = l;
  else if (const passwd* pw = getpwuid(getuid())) user = pw->pw_name;
  else user = "uid" + std::to_string(getuid());
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return user + "@" + host;
}

std::string utc_now_iso() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

fs::path decision_path(const fs::path& run_dir, int generation) {
  char name[40];
  std::snprintf(name, sizeof name, "gen-%06d.decision", generation);
  return run_dir / "approvals" / name;
}

void write_decision(const fs::path& run_dir, int generation, const Decision& d) {
  const fs::path path = decision_path(run_dir, generation);
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  if (ec) throw std::runtime_error(path.parent_path().string() + ": cannot create: " + ec.message());
  const std::string text = std::string("decision\t") + (d.approved ? "approved" : "rejected") + "\n" +
                           "generation\t" + std::to_string(generation) + "\n" + "who\t" + escape(d.who) + "\n" +
                           "when\t" + escape(d.when) + "\n" + "reason\t" + escape(d.reason) + "\n";
  const fs::path tmp = path.string() + "." + std::to_string(getpid()) + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw std::runtime_error(tmp.string() + ": cannot create: " + std::strerror(errno));
  try {
    write_all(fd, text, tmp);
  } catch (...) {
    ::close(fd);
    fs::remove(tmp, ec);
    throw;
  }
  ::fsync(fd);
  ::close(fd);
  // link() fails when the decision exists: two people deciding at once cannot both win.
  const int linked = ::link(tmp.c_str(), path.c_str());
  const int link_errno = errno;
  fs::remove(tmp, ec);
  if (linked != 0) {
    if (link_errno == EEXIST)
      throw std::runtime_error(path.string() + ": generation " + std::to_string(generation) +
                               " already has a decision; see `rsi audit` (a decision is final)");
    throw std::runtime_error(path.string() + ": cannot write the decision: " + std::strerror(link_errno));
  }
  if (const int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY); dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

std::optional<Decision> read_decision(const fs::path& run_dir, int generation) {
  const fs::path path = decision_path(run_dir, generation);
  std::ifstream in(path);
  if (!in) return std::nullopt;
  Decision d;
  std::string line, verdict;
  int stated_generation = -1;
  while (std::getline(in, line)) {
    const auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    const std::string key = line.substr(0, tab), value = unescape(line.substr(tab + 1));
    if (key == "decision") verdict = value;
    else if (key == "generation") stated_generation = std::atoi(value.c_str());
    else if (key == "who") d.who = value;
    else if (key == "when") d.when = value;
    else if (key == "reason") d.reason = value;
  }
  if ((verdict != "approved" && verdict != "rejected") || stated_generation != generation)
    throw std::runtime_error(path.string() + ": not a decision for generation " + std::to_string(generation) +
                             " (expected lines 'decision\\tapproved|rejected' and 'generation\\t" +
                             std::to_string(generation) + "'); remove it and decide again with rsi approve/reject");
  d.approved = verdict == "approved";
  return d;
}

void append_audit(const fs::path& run_dir, const AuditEntry& e) {
  const fs::path path = run_dir / kAuditLogName;
  const std::string line = escape(e.when) + "\t" + escape(e.who) + "\t" + std::to_string(e.generation) + "\t" +
                           escape(e.kind) + "\t" + escape(e.reason) + "\n";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) throw std::runtime_error(path.string() + ": cannot open to append: " + std::strerror(errno));
  try {
    write_all(fd, line, path);  // one write: concurrent appenders do not interleave within a line
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::fsync(fd);
  ::close(fd);
}

std::vector<AuditEntry> read_audit(const fs::path& run_dir) {
  std::vector<AuditEntry> out;
  std::ifstream in(run_dir / kAuditLogName);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::size_t start = 0;
    for (std::size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
      f.push_back(line.substr(start, tab - start));
    f.push_back(line.substr(start));
    if (f.size() != 5) continue;  // a torn last line after a crash
    AuditEntry e;
    e.when = unescape(f[0]);
    e.who = unescape(f[1]);
    e.generation = std::atoi(f[2].c_str());
    e.kind = unescape(f[3]);
    e.reason = unescape(f[4]);
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace rsi::scheduler
