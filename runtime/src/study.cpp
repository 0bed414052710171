// Study files (rsi study): the study's own keys checked like a manifest's (yaml_schema.h), and each
// arm's overrides applied to the base manifest's YAML tree and checked by the manifest loader itself.
#include "rsi/runtime/study.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "yaml_schema.h"

namespace rsi::runtime {

namespace {

using schema::Section;
using schema::where;

constexpr int kMaxSeeds = 10'000;
constexpr int kMaxArms = 1'000;
constexpr int kMaxRanks = 4096;
constexpr std::size_t kMaxNameLength = 40;
// The manifest loader's source name for a manifest with overrides: its positions are in text the
// user never wrote, so they are replaced by the override's own position in the study file.
const std::string kOverriddenSource = "(base manifest with overrides)";

bool valid_name(const std::string& v) {
  return !v.empty() && v.size() <= kMaxNameLength && v.front() != '.' &&
         std::all_of(v.begin(), v.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; });
}
const char* const kNameRule = "a name of letters, digits, '-', '_' and '.' (up to 40, not starting with '.')";

// Emits a node as the user wrote it, quoting included: yaml-cpp's emitter drops the "!" tag of a
// quoted scalar, and "8" would come back as the number 8, which the manifest loader must refuse
// where a number is expected (as it does in a manifest).
void emit(YAML::Emitter& out, const YAML::Node& node) {
  if (node.IsMap()) {
    out << YAML::BeginMap;
    for (const auto& kv : node) {
      out << YAML::Key;
      emit(out, kv.first);
      out << YAML::Value;
      emit(out, kv.second);
    }
    out << YAML::EndMap;
  } else if (node.IsSequence()) {
    out << YAML::BeginSeq;
    for (const auto& item : node) emit(out, item);
    out << YAML::EndSeq;
  } else if (node.IsScalar()) {
    if (node.Tag() == "!") out << YAML::DoubleQuoted;
    out << node.Scalar();
  } else {
    out << YAML::Null;
  }
}

std::string flow_text(const YAML::Node& node) {
  YAML::Emitter out;
  out << YAML::Flow;
  emit(out, node);
  return out.c_str();
}

// Sets `key` (dotted) to `value` in the manifest tree, creating the sections on the way.
void set_key(YAML::Node root, const std::string& key, const YAML::Node& value) {
  YAML::Node node;
  node.reset(root);
  std::size_t start = 0;
  for (std::size_t dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) {
    const std::string part = key.substr(start, dot - start);
    if (node[part] && !node[part].IsMap())
      throw ManifestError(key.substr(0, dot) + " is not a section (a map of keys) in the base manifest");
    if (!node[part]) node[part] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = node[part];
    node.reset(next);
  }
  node[key.substr(start)] = value;
}

// The manifest message without the loader's source prefix ("(base...):3:7: ").
std::string without_source(const std::string& message) {
  if (message.rfind(kOverriddenSource, 0) != 0) return message;
  std::size_t at = kOverriddenSource.size();
  while (at < message.size() && (message[at] == ':' || std::isdigit(static_cast<unsigned char>(message[at])))) ++at;
  if (message.compare(at, 1, " ") == 0) ++at;
  return message.substr(at);
}

std::vector<std::uint64_t> read_seed_list(const std::string& source, const YAML::Node& node) {
  if (node.IsSequence()) {
    std::vector<std::uint64_t> seeds;
    std::set<std::uint64_t> seen;
    for (const auto& item : node) {
      const bool plain = item.IsScalar() && item.Tag() != "!" && item.Scalar().find('-') == std::string::npos;
      std::uint64_t seed = 0;
      if (!plain || !YAML::convert<std::uint64_t>::decode(item, seed))
        throw StudyError(where(source, item) + ": study.seeds: expected a non-negative integer, got '" +
                         (item.IsScalar() ? models::excerpt(item.Scalar()) : std::string("a list or map")) + "'");
      if (!seen.insert(seed).second)
        throw StudyError(where(source, item) + ": study.seeds: seed " + item.Scalar() + " is listed twice");
      seeds.push_back(seed);
    }
    if (seeds.empty() || seeds.size() > kMaxSeeds)
      throw StudyError(where(source, node) + ": study.seeds: expected 1 to " + std::to_string(kMaxSeeds) + " seeds");
    return seeds;
  }
  if (!node.IsMap())
    throw StudyError(where(source, node) + ": study.seeds: expected a list of integers, or {count: N, first: S}");
  const Section s(source, node, "study.seeds", {"count", "first"});
  if (!s.has("count")) throw StudyError(where(source, node) + ": study.seeds: 'count' is required with this form");
  const int count = s.value<int>("count", 0, [](const int& v) { return v >= 1 && v <= kMaxSeeds; },
                                 "an integer in [1, " + std::to_string(kMaxSeeds) + "]");
  const auto first = s.value<std::uint64_t>("first", 0, {}, "a non-negative integer");
  if (first > UINT64_MAX - static_cast<std::uint64_t>(count))
    throw StudyError(where(source, node) + ": study.seeds: first + count exceeds the largest seed");
  std::vector<std::uint64_t> seeds;
  for (int i = 0; i < count; ++i) seeds.push_back(first + static_cast<std::uint64_t>(i));
  return seeds;
}

StudyArm read_arm(const std::string& source, const YAML::Node& node, std::size_t index) {
  const std::string path = "study.arms[" + std::to_string(index) + "]";
  const Section s(source, node, path, {"name", "overrides"});
  if (!s.has("name")) throw StudyError(where(source, node) + ": " + path + ": every arm needs a 'name'");
  StudyArm arm;
  arm.position = where(source, node);
  arm.name = s.value<std::string>("name", "", valid_name, kNameRule);
  if (!s.has("overrides")) return arm;
  const YAML::Node overrides = s.get("overrides");
  if (overrides.IsNull()) return arm;  // "overrides:" with nothing under it: none
  if (!overrides.IsMap())
    throw StudyError(where(source, overrides) + ": " + path + ".overrides: expected a map of dotted manifest keys "
                     "to values, e.g. {selection.kind: tournament}");
  static const std::set<std::string> set_by_study = {"run.seed", "run.name", "output.directory"};
  for (const auto& kv : overrides) {
    const std::string at = where(source, kv.first);
    const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "";
    if (key.empty() || key.front() == '.' || key.back() == '.' || key.find("..") != std::string::npos)
      throw StudyError(at + ": arm '" + arm.name + "': expected a dotted manifest key such as population.children");
    if (set_by_study.count(key))
      throw StudyError(at + ": arm '" + arm.name + "', override '" + key +
                       "': the study sets it for every run (seeds: the study's 'seeds'; the run directory: --out)");
    for (const auto& o : arm.overrides)
      if (o.key == key) throw StudyError(at + ": arm '" + arm.name + "': override '" + key + "' is given twice");
    arm.overrides.push_back({key, flow_text(kv.second), at});
  }
  return arm;
}

// The base manifest with `overrides` applied and the study's per-run keys set, as YAML text.
std::string manifest_text_with(const Study& study, const std::vector<StudyOverride>& overrides,
                               const std::string& run_name, std::uint64_t seed, const std::string& run_dir) {
  YAML::Node root = YAML::Load(study.manifest_text);  // validated by parse_study already
  for (const auto& o : overrides) set_key(root, o.key, YAML::Load(o.value));
  set_key(root, "run.name", YAML::Node(run_name));
  set_key(root, "run.seed", YAML::Node(seed));
  set_key(root, "output.directory", YAML::Node(run_dir));
  YAML::Emitter out;
  emit(out, root);
  return std::string(out.c_str()) + "\n";
}

std::string manifest_dir(const Study& study) {
  return std::filesystem::path(study.manifest_path).parent_path().string();
}

// Every arm with the first seed through the manifest loader. A failure is put on the override that
// causes it: each is tried alone on the base manifest (a failure of the combination only names the arm).
void check_arms(const Study& study) {
  for (std::size_t a = 0; a < study.arms.size(); ++a) {
    const StudyArm& arm = study.arms[a];
    try {
      study_run_config(study, a, study.seeds.front(), "runs/check");
      continue;
    } catch (const ManifestError& combined) {
      for (const auto& o : arm.overrides) {
        try {
          const std::string text = manifest_text_with(study, {o}, "check", study.seeds.front(), "runs/check");
          parse_manifest(text, kOverriddenSource, manifest_dir(study));
        } catch (const ManifestError& alone) {
          throw StudyError(o.position + ": arm '" + arm.name + "', override '" + o.key + "': " +
                           without_source(alone.what()));
        }
      }
      throw StudyError(arm.position + ": arm '" + arm.name + "': its overrides together make an invalid manifest: " +
                       without_source(combined.what()));
    }
  }
}

}  // namespace

Study parse_study(const std::string& text, const std::string& source, const std::string& base_dir) {
  const YAML::Node root = schema::load_checked_yaml(text, source, "study file");
  const Section top(source, root, "study", {"name", "manifest", "arms", "baseline", "seeds", "ranks"});
  Study study;
  study.path = source;
  study.text = text;
  study.name = top.value<std::string>("name", std::filesystem::path(source).stem().string(), valid_name, kNameRule);
  if (!valid_name(study.name))
    throw StudyError(source + ": the study's name '" + study.name + "' (from the file name) is not " + kNameRule +
                     "; set 'name:'");
  for (const char* required : {"manifest", "arms", "seeds"})
    if (!top.has(required))
      throw StudyError(source + ": study: missing '" + required + "' (see runtime/README.md, \"Study files\")");
  const auto manifest = top.value<std::string>("manifest", "", [](const std::string& v) { return !v.empty(); },
                                               "the path of the base manifest (relative to the study file)");
  study.manifest_path = (std::filesystem::path(base_dir) / manifest).lexically_normal().string();
  study.ranks = top.value<int>("ranks", 1, [](const int& v) { return v >= 1 && v <= kMaxRanks; },
                               "an integer in [1, " + std::to_string(kMaxRanks) + "]");
  study.seeds = read_seed_list(source, top.get("seeds"));
  const YAML::Node arms = top.get("arms");
  if (!arms.IsSequence() || arms.size() == 0 || arms.size() > kMaxArms)
    throw StudyError(where(source, arms) + ": study.arms: expected a list of 1 to " + std::to_string(kMaxArms) +
                     " arms, each {name: NAME, overrides: {dotted.key: value, ...}}");
  for (std::size_t i = 0; i < arms.size(); ++i) {
    study.arms.push_back(read_arm(source, arms[i], i));
    for (std::size_t j = 0; j + 1 < study.arms.size(); ++j)
      if (study.arms[j].name == study.arms.back().name)
        throw StudyError(study.arms.back().position + ": study.arms: two arms are named '" +
                         study.arms.back().name + "'; arm names name their run directories, so they must differ");
  }
  if (top.has("baseline")) {
    const auto name = top.value<std::string>("baseline", "");
    const auto it =
        std::find_if(study.arms.begin(), study.arms.end(), [&](const StudyArm& a) { return a.name == name; });
    if (it == study.arms.end()) {
      std::string names;
      for (const auto& a : study.arms) names += (names.empty() ? "" : ", ") + a.name;
      throw StudyError(where(source, top.get("baseline")) + ": study.baseline: no arm is named '" + name +
                       "'; the arms are " + names);
    }
    study.baseline = static_cast<std::size_t>(it - study.arms.begin());
  }
  // The base manifest must be valid on its own: its errors name its own file and line.
  const RunConfig base = load_manifest(study.manifest_path);
  study.manifest_text = base.manifest_text;
  check_arms(study);
  return study;
}

Study load_study(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw StudyError(path + ": cannot open the study file (does it exist?)");
  std::stringstream text;
  text << in.rdbuf();
  return parse_study(text.str(), path, std::filesystem::path(path).parent_path().string());
}

RunConfig study_run_config(const Study& study, std::size_t arm, std::uint64_t seed, const std::string& run_dir) {
  const std::string name = study.name + "." + study.arms.at(arm).name + ".seed-" + std::to_string(seed);
  const std::string text = manifest_text_with(study, study.arms[arm].overrides, name, seed, run_dir);
  return parse_manifest(text, kOverriddenSource, manifest_dir(study));
}

}  // namespace rsi::runtime
