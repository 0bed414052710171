// Manifest loading: yaml-cpp nodes checked key by key against the schema.
#include "rsi/runtime/manifest.h"

#include "rsi/models/edit_distance.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <vector>

namespace rsi::runtime {

namespace {

std::string where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}


class Section {
 public:
  Section(const std::string& source, const YAML::Node& node, std::string path, std::vector<std::string> keys)
      : source_(source), node_(node), path_(std::move(path)), keys_(std::move(keys)) {
    if (!node_.IsMap()) throw ManifestError(where(source_, node_) + ": " + path_ + ": expected a map");
    std::set<std::string> seen;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
      if (!seen.insert(key).second)
        throw ManifestError(where(source_, kv.first) + ": " + path_ + "." + key + ": duplicate key");
      if (std::find(keys_.begin(), keys_.end(), key) == keys_.end()) {
        std::string best;
        std::size_t best_d = 99;
        for (const auto& k : keys_)
          if (const auto d = models::edit_distance(key, k); d < best_d) best_d = d, best = k;
        std::string msg = where(source_, kv.first) + ": " + path_ + ": unknown key '" + key + "'";
        if (best_d <= 3) msg += " (did you mean '" + best + "'?)";
        std::string valid;
        for (const auto& k : keys_) valid += (valid.empty() ? "" : ", ") + k;
        throw ManifestError(msg + "; valid keys: " + valid);
      }
    }
  }
  bool has(const std::string& key) const { return static_cast<bool>(node_[key]); }
  YAML::Node get(const std::string& key) const { return node_[key]; }
  template <typename T>
  T value(const std::string& key, T fallback, const std::function<bool(const T&)>& ok = {},
          const std::string& expected = "") const {
    const YAML::Node n = node_[key];
    if (!n) return fallback;
    T v;
    try {
      v = n.as<T>();
    } catch (const YAML::Exception&) {
      throw ManifestError(where(source_, n) + ": " + path_ + "." + key + ": expected " +
                          (expected.empty() ? "a value of the right type" : expected) + ", got '" + n.Scalar() + "'");
    }
    if (ok && !ok(v))
      throw ManifestError(where(source_, n) + ": " + path_ + "." + key + ": expected " + expected + ", got '" +
                          n.Scalar() + "'");
    return v;
  }
  const std::string& source() const { return source_; }
  const std::string& path() const { return path_; }

 private:
  const std::string& source_;
  YAML::Node node_;
  std::string path_;
  std::vector<std::string> keys_;
};

std::string fnv_hex(const std::string& text) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

}  // namespace

namespace {
constexpr std::size_t kMaxManifestBytes = 1 << 20;
constexpr int kMaxManifestDepth = 16;

int depth_of(const YAML::Node& node, int depth = 0) {
  int deepest = depth;
  if (node.IsMap())
    for (const auto& kv : node) deepest = std::max(deepest, depth_of(kv.second, depth + 1));
  else if (node.IsSequence())
    for (const auto& item : node) deepest = std::max(deepest, depth_of(item, depth + 1));
  return deepest;
}
}  // namespace

RunConfig parse_manifest(const std::string& text, const std::string& source, const std::string& base_dir,
                         bool load_seeds) {
  if (text.size() > kMaxManifestBytes)
    throw ManifestError(source + ": the manifest is " + std::to_string(text.size()) + " bytes; the limit is " +
                        std::to_string(kMaxManifestBytes) + " (is this the right file?)");
  // yaml-cpp parses recursively: refuse absurd flow nesting before it does.
  int open = 0, deepest_flow = 0;
  for (char c : text) {
    if (c == '[' || c == '{') deepest_flow = std::max(deepest_flow, ++open);
    if (c == ']' || c == '}') --open;
  }
  if (deepest_flow > 4 * kMaxManifestDepth)
    throw ManifestError(source + ": brackets nested " + std::to_string(deepest_flow) + " deep; the limit is " +
                        std::to_string(4 * kMaxManifestDepth));
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    throw ManifestError(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                        ": invalid YAML: " + e.msg);
  }
  if (!root || !root.IsMap()) throw ManifestError(source + ": a manifest is a YAML map (see experiments/README.md)");
  if (const int depth = depth_of(root); depth > kMaxManifestDepth)
    throw ManifestError(source + ": the manifest nests " + std::to_string(depth) + " levels deep; the limit is " +
                        std::to_string(kMaxManifestDepth));
  const Section top(source, root, "manifest",
                    {"run", "task", "population", "selection", "design", "seeds", "cluster", "output", "checkpoints"});
  RunConfig rc;
  rc.manifest_path = source;
  rc.manifest_text = text;
  rc.manifest_hash = fnv_hex(text);
  scheduler::LoopConfig& loop = rc.loop;
  const auto positive = [](const int& v) { return v > 0; };

  if (top.has("run")) {
    const Section s(source, top.get("run"), "run", {"name", "seed"});
    rc.name = s.value<std::string>("name", rc.name);
    loop.seed = s.value<std::uint64_t>("seed", 0, {}, "a non-negative integer");
  }
  if (top.has("task")) {
    const Section s(source, top.get("task"), "task",
                    {"kind", "data_dir", "labeled", "unlabeled", "validation", "surrogate_cost_seconds",
                     "surrogate_noise"});
    const std::string kind = s.value<std::string>(
        "kind", "fashion_mnist", [](const std::string& k) { return k == "fashion_mnist" || k == "surrogate"; },
        "one of fashion_mnist, surrogate");
    loop.task.kind = kind == "surrogate" ? scheduler::TaskSpec::Kind::Surrogate : scheduler::TaskSpec::Kind::FashionMnist;
    loop.task.data_dir = s.value<std::string>("data_dir", loop.task.data_dir);
    const auto count = [](const std::int64_t& v) { return v >= 0 && v <= 60000; };
    loop.task.split.labeled = s.value<std::int64_t>("labeled", loop.task.split.labeled, count, "an integer in [0, 60000]");
    loop.task.split.unlabeled =
        s.value<std::int64_t>("unlabeled", loop.task.split.unlabeled, count, "an integer in [0, 60000]");
    loop.task.split.validation =
        s.value<std::int64_t>("validation", loop.task.split.validation, count, "an integer in [0, 60000]");
    if (loop.task.split.labeled + loop.task.split.unlabeled + loop.task.split.validation > 60000)
      throw ManifestError(where(source, top.get("task")) +
                          ": task: labeled + unlabeled + validation exceed the 60000 training images");
    loop.task.surrogate_cost_seconds = s.value<double>(
        "surrogate_cost_seconds", loop.task.surrogate_cost_seconds, [](const double& v) { return v >= 0 && v < 3600; },
        "seconds in [0, 3600)");
    loop.task.surrogate_noise =
        s.value<double>("surrogate_noise", loop.task.surrogate_noise, [](const double& v) { return v >= 0 && v < 1; },
                        "a number in [0, 1)");
  }
  if (top.has("population")) {
    const Section s(source, top.get("population"), "population", {"size", "children", "generations"});
    loop.population_size = s.value<int>("size", loop.population_size, positive, "a positive integer");
    loop.children_per_generation = s.value<int>("children", loop.children_per_generation, positive, "a positive integer");
    loop.generations =
        s.value<int>("generations", loop.generations, [](const int& v) { return v >= 0; }, "an integer >= 0");
  }
  if (top.has("selection")) {
    const Section s(source, top.get("selection"), "selection", {"kind", "tournament_size"});
    const std::string kind = s.value<std::string>(
        "kind", "truncation",
        [](const std::string& k) { return k == "truncation" || k == "tournament" || k == "aging"; },
        "one of truncation, tournament, aging");
    loop.selection = kind == "tournament" ? scheduler::SelectionKind::Tournament
                     : kind == "aging"    ? scheduler::SelectionKind::Aging
                                          : scheduler::SelectionKind::Truncation;
    loop.tournament_size = s.value<int>("tournament_size", loop.tournament_size, positive, "a positive integer");
  }
  if (top.has("design")) {
    const Section s(source, top.get("design"), "design",
                    {"max_parameters", "max_flops", "max_blocks", "max_epochs", "max_units", "max_channels"});
    auto& l = loop.limits;
    l.max_parameters = s.value<std::int64_t>("max_parameters", l.max_parameters,
                                             [](const std::int64_t& v) { return v > 0; }, "a positive integer");
    l.max_flops = s.value<std::int64_t>("max_flops", l.max_flops, [](const std::int64_t& v) { return v > 0; },
                                        "a positive integer");
    l.max_blocks = s.value<int>("max_blocks", l.max_blocks, positive, "a positive integer");
    l.max_epochs = s.value<int>("max_epochs", l.max_epochs, positive, "a positive integer");
    l.max_units = s.value<int>("max_units", l.max_units, positive, "a positive integer");
    l.max_channels = s.value<int>("max_channels", l.max_channels, positive, "a positive integer");
  }
  if (top.has("cluster")) {
    const Section s(source, top.get("cluster"), "cluster", {"group_size", "threads_per_rank"});
    loop.group_size = s.value<int>("group_size", loop.group_size, positive, "a positive integer");
    loop.threads_per_rank = s.value<int>("threads_per_rank", loop.threads_per_rank, positive, "a positive integer");
  }
  if (top.has("output")) {
    const Section s(source, top.get("output"), "output", {"directory"});
    rc.output_directory = s.value<std::string>("directory", "");
  }
  if (rc.output_directory.empty()) rc.output_directory = "runs/" + rc.name;
  if (top.has("checkpoints")) {
    const Section s(source, top.get("checkpoints"), "checkpoints", {"keep_last_generations", "keep_population"});
    rc.retention.keep_last_generations = s.value<int>("keep_last_generations", rc.retention.keep_last_generations,
                                                      [](const int& v) { return v >= 0; }, "an integer >= 0 (0 = all)");
    rc.retention.keep_population = s.value<bool>("keep_population", rc.retention.keep_population, {}, "true or false");
  }

  const YAML::Node seeds = root["seeds"];
  if (!seeds || !seeds.IsSequence() || seeds.size() == 0)
    throw ManifestError(where(source, seeds ? seeds : root) +
                        ": seeds: expected a list of seed genomes (file paths relative to the manifest, or inline maps)");
  for (std::size_t i = 0; load_seeds && i < seeds.size(); ++i) {
    const YAML::Node seed = seeds[i];
    const std::string label = "seeds[" + std::to_string(i) + "]";
    try {
      if (seed.IsScalar()) {
        const std::filesystem::path p = std::filesystem::path(base_dir) / seed.as<std::string>();
        loop.seeds.push_back(models::load_genome(p.string()));
      } else {
        YAML::Emitter out;
        out << seed;
        loop.seeds.push_back(models::from_yaml(out.c_str(), where(source, seed) + " " + label));
      }
      models::validate(loop.seeds.back());
    } catch (const models::GenomeError& e) {
      throw ManifestError(where(source, seed) + ": " + label + ": " + e.what());
    }
  }
  return rc;
}

namespace {
void flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>& out) {
  if (node.IsMap()) {
    for (const auto& kv : node) flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), out);
  } else if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i) flatten(node[i], prefix + "[" + std::to_string(i) + "]", out);
  } else if (node.IsScalar()) {
    out[prefix] = node.Scalar();
  } else {
    out[prefix] = "~";
  }
}
}  // namespace

std::string resolved_yaml(const RunConfig& rc) {
  const scheduler::LoopConfig& l = rc.loop;
  YAML::Emitter out;
  out.SetDoublePrecision(10);
  out << YAML::BeginMap;
  out << YAML::Key << "run" << YAML::Value << YAML::BeginMap << YAML::Key << "name" << YAML::Value << rc.name
      << YAML::Key << "seed" << YAML::Value << l.seed << YAML::EndMap;
  out << YAML::Key << "task" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value
      << (l.task.kind == scheduler::TaskSpec::Kind::Surrogate ? "surrogate" : "fashion_mnist");
  out << YAML::Key << "data_dir" << YAML::Value << l.task.data_dir;
  out << YAML::Key << "labeled" << YAML::Value << l.task.split.labeled;
  out << YAML::Key << "unlabeled" << YAML::Value << l.task.split.unlabeled;
  out << YAML::Key << "validation" << YAML::Value << l.task.split.validation;
  out << YAML::Key << "surrogate_cost_seconds" << YAML::Value << l.task.surrogate_cost_seconds;
  out << YAML::Key << "surrogate_noise" << YAML::Value << l.task.surrogate_noise << YAML::EndMap;
  out << YAML::Key << "population" << YAML::Value << YAML::BeginMap << YAML::Key << "size" << YAML::Value
      << l.population_size << YAML::Key << "children" << YAML::Value << l.children_per_generation << YAML::Key
      << "generations" << YAML::Value << l.generations << YAML::EndMap;
  out << YAML::Key << "selection" << YAML::Value << YAML::BeginMap << YAML::Key << "kind" << YAML::Value
      << scheduler::selection_name(l.selection) << YAML::Key << "tournament_size" << YAML::Value << l.tournament_size
      << YAML::EndMap;
  out << YAML::Key << "design" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_parameters" << YAML::Value << l.limits.max_parameters;
  out << YAML::Key << "max_flops" << YAML::Value << l.limits.max_flops;
  out << YAML::Key << "max_blocks" << YAML::Value << l.limits.max_blocks;
  out << YAML::Key << "max_epochs" << YAML::Value << l.limits.max_epochs;
  out << YAML::Key << "max_units" << YAML::Value << l.limits.max_units;
  out << YAML::Key << "max_channels" << YAML::Value << l.limits.max_channels << YAML::EndMap;
  out << YAML::Key << "seeds" << YAML::Value << YAML::BeginSeq;
  for (const auto& g : l.seeds) out << YAML::Load(models::to_yaml(g));  // inline: loads without the files
  out << YAML::EndSeq;
  out << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap << YAML::Key << "group_size" << YAML::Value
      << l.group_size << YAML::Key << "threads_per_rank" << YAML::Value << l.threads_per_rank << YAML::EndMap;
  out << YAML::Key << "output" << YAML::Value << YAML::BeginMap << YAML::Key << "directory" << YAML::Value
      << rc.output_directory << YAML::EndMap;
  out << YAML::Key << "checkpoints" << YAML::Value << YAML::BeginMap << YAML::Key << "keep_last_generations"
      << YAML::Value << rc.retention.keep_last_generations << YAML::Key << "keep_population" << YAML::Value
      << rc.retention.keep_population << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string manifest_differences(const std::string& stored, const std::string& current) {
  std::map<std::string, std::string> a, b;
  try {
    flatten(YAML::Load(stored), "", a);
    flatten(YAML::Load(current), "", b);
  } catch (const YAML::Exception& e) {
    return std::string("  (a manifest does not parse: ") + e.what() + ")\n";
  }
  std::string out;
  for (const auto& [key, value] : a) {
    const auto it = b.find(key);
    if (it == b.end()) out += "  " + key + ": " + value + " -> (absent)\n";
    else if (it->second != value) out += "  " + key + ": " + value + " -> " + it->second + "\n";
  }
  for (const auto& [key, value] : b)
    if (!a.count(key)) out += "  " + key + ": (absent) -> " + value + "\n";
  return out;
}

RunConfig load_manifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ManifestError(path + ": cannot open the manifest (does the file exist?)");
  std::error_code ec;
  if (const auto size = std::filesystem::file_size(path, ec); !ec && size > kMaxManifestBytes)
    throw ManifestError(path + ": the manifest is " + std::to_string(size) + " bytes; the limit is " +
                        std::to_string(kMaxManifestBytes) + " (is this the right file?)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_manifest(text.str(), path, std::filesystem::path(path).parent_path().string());
}

}  // namespace rsi::runtime
