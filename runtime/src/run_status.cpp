#include "run_status.h"

#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include "rsi/runtime/log.h"
#include "json_out.h"
#include "progress.h"

namespace rsi::runtime {

namespace fs = std::filesystem;

std::string status_json(const RunStatus& s) {
  JsonObject o;
  o.integer("format", s.format).text("state", s.state).text("reason", s.reason).count_or_null("exit_code", s.exit_code);
  o.text("run", s.run_name).text("manifest", s.manifest).text("manifest_hash", s.manifest_hash);
  o.text("host", s.host).integer("pid", s.pid).id("pid_start", s.pid_start).integer("ranks", s.ranks);
  o.text("started", s.started).text("updated", s.updated).integer("generations", s.generations);
  o.count_or_null("last_durable_generation", s.last_durable).count_or_null("generation_in_flight", s.in_flight);
  o.integer("children_done", s.children_done).integer("children_total", s.children_total);
  o.count_or_null("awaiting_approval", s.awaiting_approval);
  if (s.best_id) o.id("best_id", s.best_id).number("best_val", s.best_val).number("best_test", s.best_test);
  else o.null("best_id").null("best_val").null("best_test");
  o.number("elapsed_seconds", s.elapsed_seconds);
  if (s.eta_seconds >= 0) o.number("eta_seconds", s.eta_seconds);
  else o.null("eta_seconds");
  return o.str() + "\n";
}

namespace {

// One field of the status object; `null_value` stands for JSON null. A missing field or a value of
// another type is an error naming the file and the field.
template <typename T>
T field(const YAML::Node& root, const char* key, const std::string& source, const T& null_value) {
  const YAML::Node node = root[key];
  if (!node) throw StatusFileError(source + ": the field '" + key + "' is missing (a status file of another rsi?)");
  if (node.IsNull()) return null_value;
  try {
    return node.as<T>();
  } catch (const YAML::BadConversion&) {
    throw StatusFileError(source + ": the field '" + key + "' has a value of the wrong type: " + YAML::Dump(node));
  }
}

}  // namespace

RunStatus parse_status(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);  // JSON is YAML (flow style)
  } catch (const YAML::Exception& e) {
    throw StatusFileError(source + ": not a JSON object (" + e.what() + "); a torn write? rsi run rewrites it");
  }
  if (!root.IsMap()) throw StatusFileError(source + ": not a JSON object");
  RunStatus s;
  s.format = field<int>(root, "format", source, 0);
  if (s.format != kStatusFormat)
    throw StatusFileError(source + ": status format " + std::to_string(s.format) + ", this rsi reads " +
                          std::to_string(kStatusFormat));
  const std::string none;
  s.state = field(root, "state", source, none);
  s.reason = field(root, "reason", source, none);
  s.exit_code = field(root, "exit_code", source, -1);
  s.run_name = field(root, "run", source, none);
  s.manifest = field(root, "manifest", source, none);
  s.manifest_hash = field(root, "manifest_hash", source, none);
  s.host = field(root, "host", source, none);
  s.pid = field<long long>(root, "pid", source, 0);
  s.pid_start = field<std::uint64_t>(root, "pid_start", source, 0);
  s.ranks = field(root, "ranks", source, 1);
  s.started = field(root, "started", source, none);
  s.updated = field(root, "updated", source, none);
  s.generations = field(root, "generations", source, 0);
  s.last_durable = field(root, "last_durable_generation", source, -1);
  s.in_flight = field(root, "generation_in_flight", source, -1);
  s.children_done = field(root, "children_done", source, 0);
  s.children_total = field(root, "children_total", source, 0);
  s.awaiting_approval = field(root, "awaiting_approval", source, -1);
  s.best_id = field<std::uint64_t>(root, "best_id", source, 0);
  s.best_val = field(root, "best_val", source, 0.0);
  s.best_test = field(root, "best_test", source, 0.0);
  s.elapsed_seconds = field(root, "elapsed_seconds", source, 0.0);
  s.eta_seconds = field(root, "eta_seconds", source, -1.0);
  return s;
}

std::optional<RunStatus> read_status_file(const fs::path& run_dir) {
  const fs::path file = run_dir / kStatusFileName;
  std::ifstream in(file);
  if (!in) {
    std::error_code ec;
    if (!fs::exists(file, ec)) return std::nullopt;
    throw StatusFileError(file.string() + ": cannot be read (permissions?)");
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_status(text.str(), file.string());
}

void write_status_file(const fs::path& run_dir, const RunStatus& s) {
  const fs::path file = run_dir / kStatusFileName, tmp = run_dir / (std::string(kStatusFileName) + ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << status_json(s);
    if (!out.flush()) throw StatusFileError(tmp.string() + ": cannot write the status file (disk full? permissions?)");
  }
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) throw StatusFileError(file.string() + ": cannot rename the status file into place: " + ec.message());
}

std::optional<std::uint64_t> process_start_ticks(long long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  // "pid (comm) state ppid ...": comm may hold blanks and parentheses; the fields after the last ')'
  // are state (field 3) ... starttime (field 22).
  const std::size_t close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 1));
  std::vector<std::string> f;
  for (std::string w; rest >> w;) f.push_back(w);
  if (f.size() < 20 || f[0] == "Z" || f[0] == "X") return std::nullopt;  // a zombie is dead
  try {
    return std::stoull(f[19]);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string this_host() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  return host;
}

std::optional<bool> process_alive(const RunStatus& s) {
  if (s.host != this_host()) return std::nullopt;
  if (s.pid <= 0) return false;
  std::error_code ec;
  if (fs::exists("/proc/self/stat", ec)) {
    const auto ticks = process_start_ticks(s.pid);
    return ticks && (s.pid_start == 0 || *ticks == s.pid_start);
  }
  return ::kill(static_cast<pid_t>(s.pid), 0) == 0 || errno == EPERM;
}

std::string utc_iso(std::int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<std::int64_t> parse_utc_iso(const std::string& text) {
  std::tm tm{};
  char zone = 0;
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &zone) != 7 || zone != 'Z')
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<std::int64_t>(timegm(&tm));
}

StatusWriter::StatusWriter(fs::path run_dir, RunStatus start, const Progress& progress)
    : dir_(std::move(run_dir)), status_(std::move(start)), progress_(progress) {
  status_.state = "running";
  status_.host = this_host();
  status_.pid = static_cast<long long>(getpid());
  status_.pid_start = process_start_ticks(status_.pid).value_or(0);
  status_.started = utc_iso(std::time(nullptr));
  write();
}

void StatusWriter::on_generation_start(int generation, int total) {
  status_.in_flight = generation;
  status_.children_done = 0;
  status_.children_total = total;
  write();
}

void StatusWriter::on_model_done(const scheduler::ModelRecord&) {
  ++status_.children_done;
  write();
}

void StatusWriter::on_generation(const scheduler::GenerationRecord& g) {
  status_.last_durable = g.generation;
  status_.in_flight = -1;
  status_.children_done = status_.children_total = 0;
  status_.best_id = g.best_id;
  status_.best_val = g.best_val;
  status_.best_test = g.best_model_test;
  write();
}

void StatusWriter::on_approval_pending(int generation, bool pending) {
  status_.awaiting_approval = pending ? generation : -1;
  write();
}

void StatusWriter::ended(const std::string& state, const std::string& reason, int exit_code) {
  status_.state = state;
  status_.reason = reason;
  status_.exit_code = exit_code;
  status_.in_flight = -1;
  status_.awaiting_approval = state == "awaiting_approval" ? status_.last_durable : -1;
  write();
}

void StatusWriter::write() {
  status_.updated = utc_iso(std::time(nullptr));
  status_.elapsed_seconds = progress_.elapsed();
  status_.eta_seconds = status_.state == "running" ? progress_.eta() : -1;
  try {
    write_status_file(dir_, status_);
  } catch (const StatusFileError& e) {
    if (!warned_) logf(LogLevel::Warning, "%s (rsi status will be out of date)", e.what());
    warned_ = true;
  }
}

}  // namespace rsi::runtime
