// Manifest loading: yaml-cpp nodes checked key by key against the schema.
#include "rsi/runtime/manifest.h"

#include "rsi/kernels/fnv1a.h"
#include "rsi/models/edit_distance.h"
#include "rsi/models/yaml_input.h"
#include "manifest_schema.h"
#include "yaml_schema.h"
#include "rsi/scheduler/design.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <limits>
#include <type_traits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <vector>

namespace rsi::runtime {

using schema::Section;
using schema::where;


namespace {
constexpr std::size_t kMaxManifestBytes = 1 << 20;
constexpr int kMaxManifestDepth = 16;

// Aliases (*name) make the nodes a graph: a DAG whose walk grows exponentially ("billion laughs":
// ten aliases to a list of ten aliases to ...) or a cycle ("a: &x [*x]") that never ends. So the
// walk stops one level past the limit, and gives up after more visits than an alias-free text of
// this length can hold (found by tests/fuzz/manifest_fuzzer).
int depth_of(const YAML::Node& node, std::size_t& visits_left, const std::string& source, const std::string& what,
             int depth = 0) {
  if (visits_left == 0)
    throw ManifestError(source + ": the " + what + "'s aliases (*name) expand to too many values; write it without "
                                 "aliases inside repeated aliases");
  --visits_left;
  int deepest = depth;
  if (depth > kMaxManifestDepth) return deepest;
  if (node.IsMap())
    for (const auto& kv : node)
      deepest = std::max({deepest, depth_of(kv.first, visits_left, source, what, depth + 1),
                          depth_of(kv.second, visits_left, source, what, depth + 1)});
  else if (node.IsSequence())
    for (const auto& item : node) deepest = std::max(deepest, depth_of(item, visits_left, source, what, depth + 1));
  return deepest;
}

// Offset of the first byte that is not valid UTF-8, or npos. YAML text is Unicode; yaml-cpp takes
// any bytes, but its emitter rewrites invalid ones, so a seed's designer-gene name would not
// survive resolved_yaml (found by tests/fuzz/manifest_fuzzer).
std::size_t invalid_utf8_at(const std::string& text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (c < 0x80) len = 1;
    else if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return i;
    if (i + len > n) return i;
    for (std::size_t k = 1; k < len; ++k)
      if (s[i + k] < (k == 1 ? lo : 0x80) || s[i + k] > (k == 1 ? hi : 0xBF)) return i;
    i += len;
  }
  return std::string::npos;
}
}  // namespace

namespace {

// task.train / task.test of kind images: two files, or two arrays of one file. Paths are relative
// to the manifest and kept absolute.
models::ImageFiles read_image_files(const std::string& source, const Section& task, const std::string& key,
                                    const std::string& base_dir) {
  const YAML::Node node = task.get(key);
  const Section s(source, node, "task." + key, {"file", "images", "labels"});
  const auto absolute = [&base_dir](const std::string& p) {
    return std::filesystem::absolute(std::filesystem::path(base_dir) / p).lexically_normal().string();
  };
  const auto named = [](const std::string& v) { return !v.empty(); };
  models::ImageFiles files;
  files.file = s.value<std::string>("file", "", named, "a file path (a NumPy .npz or an HDF5 file)");
  for (const char* part : {"images", "labels"})
    if (!s.has(part))
      throw ManifestError(where(source, node) + ": task." + key + "." + part + ": missing (" +
                          (files.file.empty() ? "a file: IDX, gzip or plain, or NumPy .npy" : "the array's name in file") + ")");
  files.images = s.value<std::string>("images", "", named, "a file path or an array name");
  files.labels = s.value<std::string>("labels", "", named, "a file path or an array name");
  if (files.file.empty()) {
    files.images = absolute(files.images);
    files.labels = absolute(files.labels);
  } else {
    files.file = absolute(files.file);
  }
  return files;
}

// Kind images: the input (channels, size, classes) from the data's headers and labels, and the split
// checked against the training part's size. Errors name the manifest's key, the file and the problem.
void probe_images_of(const std::string& source, const Section& s, scheduler::TaskSpec& task) {
  models::ImageSetInfo train, test;
  try {
    train = models::probe_images(task.train_files, task.layout);
  } catch (const models::DataError& e) {
    throw ManifestError(where(source, s.get("train")) + ": task.train: " + e.what());
  }
  try {
    test = models::probe_images(task.test_files, task.layout);
  } catch (const models::DataError& e) {
    throw ManifestError(where(source, s.get("test")) + ": task.test: " + e.what());
  }
  const auto shape = [](const models::ImageSetInfo& i) {
    return std::to_string(i.channels) + "x" + std::to_string(i.height) + "x" + std::to_string(i.width);
  };
  if (shape(train) != shape(test))
    throw ManifestError(where(source, s.get("test")) + ": task.test: images are " + shape(test) +
                        " (channels x height x width), the training images " + shape(train));
  const int max_label = std::max(train.max_label, test.max_label);
  int classes = max_label + 1;
  if (!task.class_names.empty()) {
    classes = static_cast<int>(task.class_names.size());
    if (max_label >= classes)
      throw ManifestError(where(source, s.get("classes")) + ": task.classes: " + std::to_string(classes) +
                          " names, but the labels go up to " + std::to_string(max_label));
  }
  if (classes < 2)
    throw ManifestError(where(source, s.get("train")) + ": task.train: every label is " + std::to_string(max_label) +
                        ": a classification task needs at least 2 classes");
  task.input = models::InputSpec{train.channels, train.height, train.width, classes};
  models::SplitSizes& split = task.split;
  // Sizes not given: a tenth for validation, no unlabeled pool, the rest labeled.
  if (!s.has("validation")) split.validation = std::max<std::int64_t>(1, train.count / 10);
  if (!s.has("unlabeled")) split.unlabeled = 0;
  if (!s.has("labeled")) split.labeled = std::max<std::int64_t>(1, train.count - split.validation - split.unlabeled);
  if (split.labeled + split.unlabeled + split.validation > train.count)
    throw ManifestError(where(source, s.get("train")) + ": task: labeled + unlabeled + validation (" +
                        std::to_string(split.labeled + split.unlabeled + split.validation) + ") exceed the " +
                        std::to_string(train.count) + " training images of " +
                        (task.train_files.file.empty() ? task.train_files.images : task.train_files.file));
}

// seeds: genome files (relative to the manifest) or inline genomes, checked against the designer
// genes' table and the design limits.
void read_seeds(const std::string& source, const YAML::Node& root, const std::string& base_dir, bool load_seeds,
                RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const YAML::Node seeds = root["seeds"];
  if (!seeds || !seeds.IsSequence() || seeds.size() == 0)
    throw ManifestError(where(source, seeds ? seeds : root) +
                        ": seeds: expected a list of seed genomes (file paths relative to the manifest, or inline maps)");
  // Seeds are read with the designer genes' table (an unknown gene is a typo; values are kept in
  // range) and must satisfy this manifest's own design limits: a seed outside them would be refused
  // as a model, and so would every child of it, and the run would end having done nothing.
  const models::DesignerGeneRanges& genes = scheduler::designer_gene_ranges();
  for (std::size_t i = 0; load_seeds && i < seeds.size(); ++i) {
    const YAML::Node seed = seeds[i];
    std::string label = "seeds[" + std::to_string(i) + "]";
    try {
      if (seed.IsScalar()) {
        const std::filesystem::path p = std::filesystem::path(base_dir) / seed.as<std::string>();
        // A device or a FIFO ("/dev/zero", "/dev/stdin") would be read without end (found by
        // tests/fuzz/manifest_fuzzer), and so would a /proc file that reports size 0: a genome is a
        // small regular file, read here with a bound.
        std::error_code ec;
        const auto status = std::filesystem::status(p, ec);
        std::ifstream in;
        if (std::filesystem::is_regular_file(status)) in.open(p, std::ios::binary);
        if (in.is_open()) {
          std::string genome_text(kMaxManifestBytes + 1, '\0');
          in.read(genome_text.data(), static_cast<std::streamsize>(genome_text.size()));
          genome_text.resize(static_cast<std::size_t>(in.gcount()));
          if (genome_text.size() > kMaxManifestBytes)
            throw ManifestError(where(source, seed) + ": " + label + ": '" + p.string() + "' is over " +
                                std::to_string(kMaxManifestBytes) + " bytes; a genome file is smaller (is this the right file?)");
          if (const std::size_t bad = invalid_utf8_at(genome_text); bad != std::string::npos)
            throw ManifestError(where(source, seed) + ": " + label + ": '" + p.string() + "' is not valid UTF-8 (byte " + std::to_string(bad) +
                                "); save it as UTF-8 text");
          loop.seeds.push_back(models::from_yaml(genome_text, p.string(), &genes));
        } else if (std::filesystem::exists(status) && !std::filesystem::is_directory(status) &&
                   !std::filesystem::is_regular_file(status)) {
          throw ManifestError(where(source, seed) + ": " + label + ": '" + p.string() +
                              "' is not a regular file; a seed is a genome YAML file or an inline map");
        } else {
          loop.seeds.push_back(models::load_genome(p.string(), &genes));  // missing, a directory, unreadable
        }
      } else {
        // Read in place: positions are the manifest's, and quoting means what it means in a file.
        try {
          loop.seeds.push_back(models::genome_from_node(seed, source, &genes));
        } catch (const models::GenomeError& e) {
          throw ManifestError(std::string(e.what()) + " (in " + label + ")");
        }
      }
      models::validate(loop.seeds.back(), loop.task.input);
      if (const std::string why = scheduler::seed_violation(loop.seeds.back(), loop.limits, loop.task.input); !why.empty())
        throw ManifestError(where(source, seed) + ": " + label +
                            (seed.IsScalar() ? " (" + seed.as<std::string>() + ")" : std::string()) + ": " + why);
    } catch (const models::GenomeError& e) {
      throw ManifestError(where(source, seed) + ": " + label + ": " + e.what());
    }
  }
}

}  // namespace

namespace schema {
namespace {
// "design.predictor.ridge" -> {"design.predictor", "ridge"}; "seeds" -> {"", "seeds"}.
std::pair<std::string, std::string> split_path(const std::string& path) {
  const auto dot = path.rfind('.');
  if (dot == std::string::npos) return {"", path};
  return {path.substr(0, dot), path.substr(dot + 1)};
}

template <typename E>
const char* choice_name(const E& value, std::initializer_list<std::pair<const char*, E>> names) {
  for (const auto& [name, e] : names)
    if (e == value) return name;
  return names.begin()->first;
}

// The schema's keys in order, with their options: a visit of a default RunConfig.
class KeyList {
 public:
  template <typename T>
  void value(const std::string& path, const T&, std::type_identity_t<std::function<bool(const T&)>>, const std::string&,
             KeyOptions options = {}) {
    keys_.emplace_back(path, options);
  }
  template <typename E>
  void choice(const std::string& path, const E&, std::initializer_list<std::pair<const char*, std::type_identity_t<E>>>,
              const std::string&, KeyOptions options = {}) {
    keys_.emplace_back(path, options);
  }
  template <typename Read, typename Write>
  void custom(const std::string& path, Read&&, Write&&) {
    keys_.emplace_back(path, KeyOptions{});
  }
  template <typename Fn>
  void check(const std::string&, Fn&&) {}

  const std::vector<std::pair<std::string, KeyOptions>>& keys() const { return keys_; }
  // The names one level below a section ("" the manifest): its valid keys, in order.
  std::vector<std::string> children(const std::string& section) const {
    std::vector<std::string> names;
    const std::string prefix = section.empty() ? "" : section + ".";
    for (const auto& [path, options] : keys_) {
      if (path.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string rest = path.substr(prefix.size());
      const std::string name = rest.substr(0, rest.find('.'));
      if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
    }
    return names;
  }

 private:
  std::vector<std::pair<std::string, KeyOptions>> keys_;
};

const KeyList& key_list() {
  static const KeyList list = [] {
    const RunConfig defaults;
    KeyList l;
    visit_manifest_keys(defaults, l);
    return l;
  }();
  return list;
}

// resolved_yaml's side: every key with its value, sections opened and closed as the paths go.
class ManifestWriter {
 public:
  ManifestWriter(YAML::Emitter& out, const RunConfig& rc) : out_(out), rc_(rc) {}
  template <typename T>
  void value(const std::string& path, const T& member, std::type_identity_t<std::function<bool(const T&)>>,
             const std::string&, KeyOptions options = {}) {
    key(path);
    if (options.quoted) out_ << YAML::DoubleQuoted;
    out_ << member;
  }
  template <typename E>
  void choice(const std::string& path, const E& member,
              std::initializer_list<std::pair<const char*, std::type_identity_t<E>>> names, const std::string&,
              KeyOptions = {}) {
    key(path);
    out_ << choice_name<E>(member, names);
  }
  template <typename Read, typename Write>
  void custom(const std::string& path, Read&&, Write&& write) {
    enter(split_path(path).first);
    write(out_, rc_);
  }
  template <typename Fn>
  void check(const std::string&, Fn&&) {}
  void close() { enter(""); }

 private:
  void key(const std::string& path) {
    const auto [section, name] = split_path(path);
    enter(section);
    out_ << YAML::Key << name << YAML::Value;
  }
  // Closes the open maps that are not above `section`, and opens the ones down to it.
  void enter(const std::string& section) {
    std::vector<std::string> parts;
    for (std::size_t at = 0; !section.empty() && at <= section.size();) {
      const auto dot = std::min(section.find('.', at), section.size());
      parts.push_back(section.substr(at, dot - at));
      at = dot + 1;
    }
    std::size_t common = 0;
    while (common < parts.size() && common < open_.size() && parts[common] == open_[common]) ++common;
    for (; open_.size() > common; open_.pop_back()) out_ << YAML::EndMap;
    for (std::size_t i = common; i < parts.size(); ++i) {
      out_ << YAML::Key << parts[i] << YAML::Value << YAML::BeginMap;
      open_.push_back(parts[i]);
    }
  }
  YAML::Emitter& out_;
  const RunConfig& rc_;
  std::vector<std::string> open_;
};
}  // namespace

// parse_manifest's side: each key read where the manifest has it, each section checked against its
// keys (unknown keys, did-you-mean) when a key in it is first read. With `only` ("task"), the keys
// outside that section are left as they are.
class ManifestReader {
 public:
  ManifestReader(const std::string& source, const YAML::Node& root, const std::string& base_dir, bool load_data,
                 RunConfig& rc, std::string only = "")
      : source_(source), root_(root), base_dir_(base_dir), load_data_(load_data), rc_(rc), only_(std::move(only)) {}
  const std::string& source() const { return source_; }
  const std::string& base_dir() const { return base_dir_; }
  bool load_data() const { return load_data_; }
  // The node at a dotted path ("" the manifest), or an undefined node where the manifest has none.
  YAML::Node node(const std::string& path) {
    if (path.empty()) return root_;
    const auto [parent, key] = split_path(path);
    const Section* s = section(parent);
    return s && s->has(key) ? s->get(key) : YAML::Node();
  }
  // The section at a dotted path, checked against the schema's keys; nullptr when the manifest has none.
  const Section* section(const std::string& path) {
    if (const auto it = sections_.find(path); it != sections_.end()) return it->second.get();
    // (No YAML::Node is assigned to here: yaml-cpp's assignment writes into the node, not rebinds it.)
    const auto [parent, key] = split_path(path);
    const Section* above = path.empty() ? nullptr : section(parent);
    if (!path.empty() && (!above || !above->has(key))) return sections_.emplace(path, nullptr).first->second.get();
    auto s = std::make_unique<Section>(source_, path.empty() ? root_ : above->get(key), path.empty() ? "manifest" : path,
                                       key_list().children(path));
    return sections_.emplace(path, std::move(s)).first->second.get();
  }

  template <typename T>
  void value(const std::string& path, T& member, std::type_identity_t<std::function<bool(const T&)>> ok,
             const std::string& expected, KeyOptions = {}) {
    if (!wanted(path)) return;
    const auto [parent, key] = split_path(path);
    if (const Section* s = section(parent)) member = s->value<T>(key, member, ok, expected);
  }
  template <typename E>
  void choice(const std::string& path, E& member, std::initializer_list<std::pair<const char*, std::type_identity_t<E>>> names,
              const std::string& expected, KeyOptions = {}) {
    if (!wanted(path)) return;
    const auto [parent, key] = split_path(path);
    const Section* s = section(parent);
    if (!s) return;
    const auto known = [names](const std::string& v) {
      return std::any_of(names.begin(), names.end(), [&v](const auto& n) { return v == n.first; });
    };
    const std::string name = s->value<std::string>(key, choice_name<E>(member, names), known, expected);
    for (const auto& [n, e] : names)
      if (name == n) member = e;
  }
  template <typename Read, typename Write>
  void custom(const std::string& path, Read&& read, Write&&) {
    if (wanted(path)) read(*this, rc_);
  }
  template <typename Fn>
  void check(const std::string& section, Fn&& fn) {
    if (wanted(section + ".")) fn(*this, rc_);
  }

 private:
  bool wanted(const std::string& path) const { return only_.empty() || path.rfind(only_ + ".", 0) == 0; }
  const std::string& source_;
  YAML::Node root_;
  std::string base_dir_;
  bool load_data_;
  RunConfig& rc_;
  std::string only_;
  std::map<std::string, std::unique_ptr<Section>> sections_;
};

void read_image_key(ManifestReader& r, RunConfig& rc, const std::string& key) {
  scheduler::TaskSpec& task = rc.loop.task;
  const Section* s = r.section("task");
  const bool has = s && s->has(key);
  if (task.kind != scheduler::TaskSpec::Kind::Images) {
    if (has) throw ManifestError(where(r.source(), s->get(key)) + ": task." + key + ": only with task.kind: images");
    return;
  }
  if (key == "train" || key == "test") {
    if (!has)
      throw ManifestError(where(r.source(), r.node("task")) + ": task." + key + ": missing; task.kind images reads its " +
                          (key == "train" ? "training" : "hidden test") +
                          " set from {images: FILE, labels: FILE} or {file: FILE, images: ARRAY, labels: ARRAY}");
    (key == "train" ? task.train_files : task.test_files) = read_image_files(r.source(), *s, key, r.base_dir());
  } else if (key == "layout") {
    const std::string layout = s->value<std::string>(
        "layout", "auto", [](const std::string& v) { return v == "auto" || v == "nhwc" || v == "nchw"; },
        "one of auto, nhwc (N, height, width, channels), nchw (N, channels, height, width)");
    task.layout = layout == "nhwc"   ? models::ImageLayout::Nhwc
                  : layout == "nchw" ? models::ImageLayout::Nchw
                                     : models::ImageLayout::Auto;
  } else if (has) {  // classes
    const YAML::Node names = s->get("classes");
    if (!names.IsSequence() || names.size() < 2 || names.size() > 100000)
      throw ManifestError(where(r.source(), names) + ": task.classes: expected a list of at least 2 class names");
    for (const auto& n : names) {
      if (!n.IsScalar() || n.Scalar().empty()) throw ManifestError(where(r.source(), n) + ": task.classes: expected a name");
      task.class_names.push_back(n.Scalar());
    }
  }
}

void write_image_key(YAML::Emitter& out, const scheduler::TaskSpec& task, const std::string& key) {
  if (key == "train" || key == "test") {
    const models::ImageFiles& f = key == "train" ? task.train_files : task.test_files;
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (!f.file.empty()) out << YAML::Key << "file" << YAML::Value << f.file;
    out << YAML::Key << "images" << YAML::Value << f.images << YAML::Key << "labels" << YAML::Value << f.labels
        << YAML::EndMap;
  } else if (key == "layout") {
    if (task.layout != models::ImageLayout::Auto)
      out << YAML::Key << "layout" << YAML::Value << models::layout_name(task.layout);
  } else if (!task.class_names.empty()) {
    out << YAML::Key << "classes" << YAML::Value << YAML::Flow << task.class_names;
  }
}

void read_seed_list(ManifestReader& r, RunConfig& rc) {
  read_seeds(r.source(), r.node(""), r.base_dir(), r.load_data(), rc);
}

void write_seed_list(YAML::Emitter& out, const RunConfig& rc) {
  out << YAML::Key << "seeds" << YAML::Value << YAML::BeginSeq;
  for (const auto& g : rc.loop.seeds) out << YAML::Load(models::to_yaml(g));  // inline: loads without the files
  out << YAML::EndSeq;
}

void probe_image_task(ManifestReader& r, RunConfig& rc) { probe_images_of(r.source(), *r.section("task"), rc.loop.task); }
}  // namespace schema

std::vector<std::string> manifest_keys() {
  std::vector<std::string> keys;
  for (const auto& [path, options] : schema::key_list().keys()) keys.push_back(path);
  return keys;
}

std::string manifest_hash(const std::string& text, bool format1_basis) {
  return kernels::fnv1a_hex(kernels::fnv1a64(text.data(), text.size(),
                                             format1_basis ? kernels::kFnv1aFormat1Offset : kernels::kFnv1aOffset));
}

namespace schema {
YAML::Node load_checked_yaml(const std::string& text, const std::string& source, const std::string& what) {
  if (text.size() > kMaxManifestBytes)
    throw ManifestError(source + ": the " + what + " is " + std::to_string(text.size()) + " bytes; the limit is " +
                        std::to_string(kMaxManifestBytes) + " (is this the right file?)");
  if (const std::size_t bad = invalid_utf8_at(text); bad != std::string::npos) {
    const std::size_t line_start = text.rfind('\n', bad == 0 ? 0 : bad - 1);
    const std::size_t line = std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(bad), '\n') + 1;
    const std::size_t column = line == 1 ? bad + 1 : bad - line_start;
    throw ManifestError(source + ":" + std::to_string(line) + ":" + std::to_string(column) +
                        ": the " + what + " is not valid UTF-8 (byte " + std::to_string(bad) +
                        "); save it as UTF-8 text");
  }
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
    models::YamlDocument doc = models::load_yaml_document(text, source);
    if (doc.problem) throw ManifestError(*doc.problem);
    root = doc.root;
  } catch (const YAML::ParserException& e) {
    // yaml-cpp's recursion guard (block lists or "? " keys nested ~2000 deep) reports "bad file";
    // its DeepRecursion type is not exported, so the message is what tells it apart.
    const bool too_deep = e.msg == YAML::ErrorMsg::BAD_FILE;
    throw ManifestError(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                        ": invalid YAML: " +
                        (too_deep ? "nested too deeply for the YAML parser (lists or keys inside each other)" : e.msg));
  }
  if (!root || !root.IsMap())
    throw ManifestError(source + ": a " + what + " is a YAML map (see " +
                        (what == "manifest" ? "experiments/README.md" : "runtime/README.md") + ")");
  std::size_t visits_left = 2 * text.size() + 64;
  if (depth_of(root, visits_left, source, what) > kMaxManifestDepth)
    throw ManifestError(source + ": the " + what + " nests more than " + std::to_string(kMaxManifestDepth) +
                        " levels deep; the limit is " + std::to_string(kMaxManifestDepth) +
                        " (maps and lists inside each other, or an alias inside its own anchor)");
  return root;
}
}  // namespace schema

RunConfig parse_manifest(const std::string& text, const std::string& source, const std::string& base_dir,
                         bool load_seeds) {
  const YAML::Node root = schema::load_checked_yaml(text, source, "manifest");
  RunConfig rc;
  rc.manifest_path = source;
  rc.manifest_text = text;
  rc.manifest_hash = manifest_hash(text);
  // The keys in the schema's order: later ones check against earlier ones (a seed against the
  // design limits), and unknown top-level keys are found first.
  schema::ManifestReader reader(source, root, base_dir, load_seeds, rc);
  reader.section("");
  schema::visit_manifest_keys(rc, reader);
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

std::string image_task_yaml(const scheduler::TaskSpec& task) {
  YAML::Emitter out;
  out << YAML::Flow << YAML::BeginMap;
  for (const char* key : {"train", "test", "layout", "classes"}) schema::write_image_key(out, task, key);
  out << YAML::EndMap;
  return out.c_str();
}

void apply_image_task_yaml(const std::string& text, const std::string& source, scheduler::TaskSpec& task) {
  YAML::Node node = schema::load_checked_yaml(text, source, "data description");
  node["kind"] = "images";
  YAML::Node root;
  root["task"] = node;
  RunConfig rc;
  schema::ManifestReader reader(source, root, "/", false, rc, "task");
  schema::visit_manifest_keys(rc, reader);
  task.kind = scheduler::TaskSpec::Kind::Images;
  task.train_files = rc.loop.task.train_files;
  task.test_files = rc.loop.task.test_files;
  task.layout = rc.loop.task.layout;
  task.class_names = rc.loop.task.class_names;
}

std::string resolved_yaml(const RunConfig& rc) {
  YAML::Emitter out;
  out.SetDoublePrecision(10);
  out << YAML::BeginMap;
  schema::ManifestWriter writer(out, rc);
  schema::visit_manifest_keys(rc, writer);
  writer.close();
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
  // Keys that do not shape the lineage may change between a run and its resume (the schema's free
  // keys: the exporter, how long a run waits for a decision, the Slurm job's queue, account and time,
  // the CPU kernel family); keys added after a lineage was written count as their default there
  // (the self-improvement switches are all off by default).
  static const std::map<std::string, std::string> defaults = [] {
    std::map<std::string, std::string> flat;
    flatten(YAML::Load(resolved_yaml(RunConfig{})), "", flat);
    return flat;
  }();
  for (const auto& [key, options] : schema::key_list().keys()) {
    if (options.free) a.erase(key), b.erase(key);
    if (!options.later) continue;
    const std::string& value = defaults.at(key);
    if (!a.count(key) && b.count(key) && b[key] == value) b.erase(key);
    if (!b.count(key) && a.count(key) && a[key] == value) a.erase(key);
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

std::string apply_cuda_settings(const ClusterConfig& c, std::vector<std::string>* overrides) {
  struct Setting {
    const char* name;     // the short name in the lineage's record
    const char* env;      // the environment variable the kernels read
    const char* key;      // the manifest key
    std::string value;    // the manifest's value, as the variable spells it
  };
  const Setting settings[] = {{"conv", "RSI_CUDA_CONV", "cluster.cuda_conv", c.cuda_conv},
                              {"tf32", "RSI_CUDA_TF32", "cluster.cuda_tf32", c.cuda_tf32 ? "1" : "0"},
                              {"graphs", "RSI_CUDA_GRAPHS", "cluster.cuda_graphs", c.cuda_graphs ? "1" : "0"},
                              {"fuse", "RSI_CUDA_FUSE", "cluster.cuda_fuse", c.cuda_fuse ? "1" : "0"}};
  std::string applied;
  for (const Setting& s : settings) {
    std::string value = s.value;
    if (const char* env = std::getenv(s.env); env && *env) {
      if (value != env && overrides)
        overrides->push_back(std::string(s.env) + "=" + env + " overrides " + s.key + " (" + s.value + ")");
      value = env;
    } else {
      ::setenv(s.env, value.c_str(), 1);
    }
    if (!applied.empty()) applied += ' ';
    applied.append(s.name).append("=").append(value);
  }
  return applied;
}

long slurm_time_seconds(const std::string& text) {
  if (text.empty() || text.find_first_not_of("0123456789:-") != std::string::npos) return -1;
  long days = 0, h = 0, m = 0, sec = 0;
  int used = 0;
  const bool with_days = text.find('-') != std::string::npos;
  const int fields = with_days ? std::sscanf(text.c_str(), "%ld-%ld:%ld:%ld%n", &days, &h, &m, &sec, &used)
                               : std::sscanf(text.c_str(), "%ld:%ld:%ld%n", &h, &m, &sec, &used);
  if (fields != (with_days ? 4 : 3) || used != static_cast<int>(text.size()) || !std::isdigit(static_cast<unsigned char>(text[0])))
    return -1;
  if (days < 0 || h < 0 || m < 0 || m > 59 || sec < 0 || sec > 59 || (with_days && h > 23) || days > 365) return -1;
  return ((days * 24 + h) * 60 + m) * 60 + sec;
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
