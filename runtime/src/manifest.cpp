// Manifest loading: yaml-cpp nodes checked key by key against the schema.
#include "rsi/runtime/manifest.h"

#include "rsi/kernels/fnv1a.h"
#include "rsi/models/edit_distance.h"
#include "rsi/models/yaml_input.h"
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
// Upper bounds of the integer keys (experiments/README.md lists them): values the loop can serve.
constexpr int kMaxPopulation = 10'000;
constexpr int kMaxGenerations = 1'000'000;
constexpr std::int64_t kMaxParameters = 1'000'000'000;
constexpr std::int64_t kMaxFlops = 1'000'000'000'000;
constexpr int kMaxEpochs = 1000;
constexpr int kMaxWidth = 65536;
constexpr int kMaxNodes = 100'000;
constexpr int kMaxRanksPerNode = 1024;

std::function<bool(const int&)> in_range(int low, int high) {
  return [low, high](const int& v) { return v >= low && v <= high; };
}
std::function<bool(const std::int64_t&)> in_range64(std::int64_t low, std::int64_t high) {
  return [low, high](const std::int64_t& v) { return v >= low && v <= high; };
}
std::string range_text(std::int64_t low, std::int64_t high) {
  return "an integer in [" + std::to_string(low) + ", " + std::to_string(high) + "]";
}

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

// run: name and seed.
void read_run(const std::string& source, const Section& top, RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section s(source, top.get("run"), "run", {"name", "seed"});
  // The name becomes the directory runs/<name> and the Slurm job name: "" would be runs/ itself and
  // "../x" or "a/b" a directory elsewhere (found by tests/fuzz/).
  rc.name = s.value<std::string>(
      "name", rc.name,
      [](const std::string& v) {
        return !v.empty() && v.size() <= 128 && v.front() != '.' &&
               std::all_of(v.begin(), v.end(), [](unsigned char c) {
                 return std::isalnum(c) || c == '-' || c == '_' || c == '.';
               });
      },
      "a name of letters, digits, '-', '_' and '.' (up to 128, not starting with '.'; it names runs/<name>)");
  loop.seed = s.value<std::uint64_t>("seed", 0, {}, "a non-negative integer");
}

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
void probe_image_task(const std::string& source, const Section& s, scheduler::TaskSpec& task) {
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

// task: kind, data and split, surrogate settings.
void read_task(const std::string& source, const Section& top, const std::string& base_dir, bool probe_data,
               RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section s(source, top.get("task"), "task",
                  {"kind", "data_dir", "train", "test", "layout", "classes", "labeled", "unlabeled", "validation",
                   "surrogate_cost_seconds", "surrogate_noise", "surrogate_class_skew", "surrogate_pseudo_labels",
                   "surrogate_drift", "surrogate_drift_period"});
  const std::string kind = s.value<std::string>(
      "kind", "fashion_mnist",
      [](const std::string& k) { return k == "fashion_mnist" || k == "surrogate" || k == "images"; },
      "one of fashion_mnist, images, surrogate");
  using Kind = scheduler::TaskSpec::Kind;
  loop.task.kind = kind == "surrogate" ? Kind::Surrogate : kind == "images" ? Kind::Images : Kind::FashionMnist;
  const bool images = loop.task.kind == Kind::Images;
  for (const char* key : {"train", "test", "layout", "classes"})
    if (!images && s.has(key))
      throw ManifestError(where(source, s.get(key)) + ": task." + key + ": only with task.kind: images");
  if (images) {
    for (const char* key : {"train", "test"})
      if (!s.has(key))
        throw ManifestError(where(source, top.get("task")) + ": task." + key + ": missing; task.kind images reads its " +
                            (std::string(key) == "train" ? "training" : "hidden test") +
                            " set from {images: FILE, labels: FILE} or {file: FILE, images: ARRAY, labels: ARRAY}");
    loop.task.train_files = read_image_files(source, s, "train", base_dir);
    loop.task.test_files = read_image_files(source, s, "test", base_dir);
    const std::string layout = s.value<std::string>(
        "layout", "auto", [](const std::string& v) { return v == "auto" || v == "nhwc" || v == "nchw"; },
        "one of auto, nhwc (N, height, width, channels), nchw (N, channels, height, width)");
    loop.task.layout = layout == "nhwc" ? models::ImageLayout::Nhwc
                       : layout == "nchw" ? models::ImageLayout::Nchw
                                          : models::ImageLayout::Auto;
    if (s.has("classes")) {
      const YAML::Node names = s.get("classes");
      if (!names.IsSequence() || names.size() < 2 || names.size() > 100000)
        throw ManifestError(where(source, names) + ": task.classes: expected a list of at least 2 class names");
      for (const auto& n : names) {
        if (!n.IsScalar() || n.Scalar().empty())
          throw ManifestError(where(source, n) + ": task.classes: expected a name");
        loop.task.class_names.push_back(n.Scalar());
      }
    }
  }
  loop.task.data_dir = s.value<std::string>("data_dir", loop.task.data_dir);
  // Fashion-MNIST has 60000 training images; an images task's bound is its data's (probe_image_task).
  const std::int64_t most = images ? std::int64_t{1} << 31 : 60000;
  const auto count = [most](const std::int64_t& v) { return v >= 0 && v <= most; };
  const auto some = [most](const std::int64_t& v) { return v >= 1 && v <= most; };
  const std::string range = "[1, " + std::to_string(most) + "]";
  if (images) loop.task.split.unlabeled = 0;  // no pool unless asked for
  loop.task.split.labeled = s.value<std::int64_t>("labeled", loop.task.split.labeled, some,
                                                  "an integer in " + range + " (0 would train on nothing)");
  loop.task.split.unlabeled = s.value<std::int64_t>("unlabeled", loop.task.split.unlabeled, count,
                                                    "an integer in [0, " + std::to_string(most) + "]");
  loop.task.split.validation = s.value<std::int64_t>(
      "validation", loop.task.split.validation, some,
      "an integer in " + range + " (0 would make every validation accuracy 0: selection would be blind)");
  if (!images && loop.task.split.labeled + loop.task.split.unlabeled + loop.task.split.validation > 60000)
    throw ManifestError(where(source, top.get("task")) +
                        ": task: labeled + unlabeled + validation exceed the 60000 training images");
  if (images && probe_data)
    probe_image_task(source, s, loop.task);
  loop.task.surrogate_cost_seconds = s.value<double>(
      "surrogate_cost_seconds", loop.task.surrogate_cost_seconds, [](const double& v) { return v >= 0 && v < 3600; },
      "seconds in [0, 3600)");
  loop.task.surrogate_noise =
      s.value<double>("surrogate_noise", loop.task.surrogate_noise, [](const double& v) { return v >= 0 && v < 1; },
                      "a number in [0, 1)");
  loop.task.surrogate_class_skew = s.value<double>("surrogate_class_skew", loop.task.surrogate_class_skew,
                                                   [](const double& v) { return v >= 0 && v <= 1; },
                                                   "a number in [0, 1]");
  loop.task.surrogate_pseudo_labels =
      s.value<bool>("surrogate_pseudo_labels", loop.task.surrogate_pseudo_labels, {}, "true or false");
  loop.task.surrogate_drift = s.value<double>("surrogate_drift", loop.task.surrogate_drift,
                                              [](const double& v) { return v >= 0 && v <= 0.5; },
                                              "an accuracy amplitude in [0, 0.5] (0 = off)");
  loop.task.surrogate_drift_period =
      s.value<int>("surrogate_drift_period", loop.task.surrogate_drift_period, in_range(1, kMaxGenerations),
                   range_text(1, kMaxGenerations));
}

// population: sizes (bounded: the coordinator designs a generation before training it).
void read_population(const std::string& source, const Section& top, RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section s(source, top.get("population"), "population", {"size", "children", "generations"});
  // Bounded so that every accepted value is one the loop can serve: the coordinator designs a whole
  // generation before training it, so children costs memory before any result.
  loop.population_size = s.value<int>("size", loop.population_size, in_range(1, kMaxPopulation),
                                      range_text(1, kMaxPopulation));
  loop.children_per_generation = s.value<int>("children", loop.children_per_generation,
                                              in_range(1, kMaxPopulation), range_text(1, kMaxPopulation));
  loop.generations = s.value<int>("generations", loop.generations, in_range(0, kMaxGenerations),
                                  range_text(0, kMaxGenerations));
}

// selection: kind and tournament size.
void read_selection(const std::string& source, const Section& top, RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section s(source, top.get("selection"), "selection", {"kind", "tournament_size"});
  const std::string kind = s.value<std::string>(
      "kind", "truncation",
      [](const std::string& k) { return k == "truncation" || k == "tournament" || k == "aging"; },
      "one of truncation, tournament, aging");
  loop.selection = kind == "tournament" ? scheduler::SelectionKind::Tournament
                   : kind == "aging"    ? scheduler::SelectionKind::Aging
                                        : scheduler::SelectionKind::Truncation;
  // Each tournament draws this many members (with replacement): bounded like the population.
  loop.tournament_size = s.value<int>("tournament_size", loop.tournament_size, in_range(1, kMaxPopulation),
                                      range_text(1, kMaxPopulation));
}

// design: how the loop improves itself, and the ablation switches (scheduler::ImprovementConfig).
void read_improvement(const std::string& source, const Section& s, scheduler::LoopConfig& loop) {
  using Strategy = scheduler::ImprovementConfig::Strategy;
  auto& imp = loop.improvement;
  const std::string strategy = s.value<std::string>(
      "strategy", "evolved", [](const std::string& v) { return v == "evolved" || v == "random"; },
      "one of evolved (parents design with their evolving genes), random (uniform over the same operators)");
  imp.strategy = strategy == "random" ? Strategy::Random : Strategy::Evolved;
  imp.freeze_genes = s.value<bool>("freeze_genes", imp.freeze_genes, {}, "true or false");
  imp.deduplicate = s.value<bool>("deduplicate", imp.deduplicate, {}, "true or false");
  imp.extended_recipe = s.value<bool>("extended_recipe", imp.extended_recipe, {}, "true or false");
  imp.redesign_attempts =
      s.value<int>("redesign_attempts", imp.redesign_attempts, in_range(0, 1000), range_text(0, 1000));
  if (s.has("predictor")) {
    const Section p(source, s.get("predictor"), "design.predictor", {"enabled", "candidates", "min_examples", "ridge", "min_correlation"});
    auto& x = imp.predictor;
    x.enabled = p.value<bool>("enabled", x.enabled, {}, "true or false");
    x.candidates = p.value<int>("candidates", x.candidates, in_range(1, 64), range_text(1, 64));
    x.min_examples = p.value<int>("min_examples", x.min_examples, in_range(1, 100000), range_text(1, 100000));
    x.ridge = p.value<double>("ridge", x.ridge, [](const double& v) { return v > 0 && v <= 1e6; },
                              "a number in (0, 1e6]");
    x.min_correlation = p.value<double>("min_correlation", x.min_correlation,
                                        [](const double& v) { return v >= -1 && v <= 1; },
                                        "a rank correlation in [-1, 1] (-1 = screen whatever it is)");
  }
  if (s.has("rungs")) {
    const Section r(source, s.get("rungs"), "design.rungs", {"enabled", "first_epochs", "promote"});
    auto& x = imp.rungs;
    x.enabled = r.value<bool>("enabled", x.enabled, {}, "true or false");
    x.first_epochs = r.value<int>("first_epochs", x.first_epochs, in_range(1, kMaxEpochs), range_text(1, kMaxEpochs));
    x.promote = r.value<double>("promote", x.promote, [](const double& v) { return v > 0 && v <= 1; },
                                "a fraction in (0, 1] of each generation's children");
  }
  if (s.has("niches")) {
    const Section n(source, s.get("niches"), "design.niches", {"enabled", "parameter_bins", "depth_bins"});
    auto& x = imp.niches;
    x.enabled = n.value<bool>("enabled", x.enabled, {}, "true or false");
    x.parameter_bins = n.value<int>("parameter_bins", x.parameter_bins, in_range(1, 64), range_text(1, 64));
    x.depth_bins = n.value<int>("depth_bins", x.depth_bins, in_range(1, 64), range_text(1, 64));
  }
}

// design: the limits every designed child (and seed) meets.
void read_design(const std::string& source, const Section& top, RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section s(source, top.get("design"), "design",
                  {"max_parameters", "max_flops", "max_blocks", "max_epochs", "max_units", "max_channels", "strategy",
                   "freeze_genes", "deduplicate", "redesign_attempts", "extended_recipe", "predictor", "rungs",
                   "niches"});
  auto& l = loop.limits;
  // Upper bounds: what one rank can hold and train (a child's weights, gradients and optimizer
  // state are ~16 bytes a parameter), and the genome format's own block limit.
  l.max_parameters = s.value<std::int64_t>("max_parameters", l.max_parameters, in_range64(1, kMaxParameters),
                                           range_text(1, kMaxParameters));
  l.max_flops = s.value<std::int64_t>("max_flops", l.max_flops, in_range64(1, kMaxFlops), range_text(1, kMaxFlops));
  l.max_blocks = s.value<int>("max_blocks", l.max_blocks, in_range(1, models::GenomeLimits{}.max_blocks),
                              range_text(1, models::GenomeLimits{}.max_blocks));
  l.max_epochs = s.value<int>("max_epochs", l.max_epochs, in_range(1, kMaxEpochs), range_text(1, kMaxEpochs));
  l.max_units = s.value<int>("max_units", l.max_units, in_range(1, kMaxWidth), range_text(1, kMaxWidth));
  l.max_channels = s.value<int>("max_channels", l.max_channels, in_range(1, kMaxWidth), range_text(1, kMaxWidth));
  read_improvement(source, s, loop);
}

// cluster: trainer groups, threads, the job's shape, device and CPU kernels.
void read_cluster(const std::string& source, const Section& top, RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section s(source, top.get("cluster"), "cluster",
                  {"group_size", "threads_per_rank", "nodes", "gpus_per_node", "tasks_per_node", "time_limit",
                   "partition", "account", "signal_seconds", "device", "cpu_kernels", "cuda_conv", "cuda_tf32",
                   "cuda_graphs", "cuda_fuse"});
  loop.group_size = s.value<int>("group_size", loop.group_size, in_range(1, kMaxRanksPerNode * 64),
                                 range_text(1, kMaxRanksPerNode * 64) + " (it must divide the job's ranks)");
  loop.threads_per_rank = s.value<int>("threads_per_rank", loop.threads_per_rank, in_range(1, kMaxRanksPerNode),
                                       range_text(1, kMaxRanksPerNode));
  // --- job shape and Slurm submission (rsi submit) ---
  ClusterConfig& c = rc.cluster;
  c.nodes = s.value<int>("nodes", c.nodes, in_range(1, kMaxNodes), range_text(1, kMaxNodes));
  c.gpus_per_node = s.value<int>("gpus_per_node", c.gpus_per_node, in_range(0, 64), range_text(0, 64) + " (0 = CPU)");
  // One rank per GPU, so the GPU count is the natural default.
  c.tasks_per_node = s.value<int>("tasks_per_node", c.gpus_per_node > 0 ? c.gpus_per_node : c.tasks_per_node,
                                  in_range(1, kMaxRanksPerNode), range_text(1, kMaxRanksPerNode));
  if (c.gpus_per_node > 0 && c.tasks_per_node != c.gpus_per_node)
    throw ManifestError(where(source, s.get("tasks_per_node")) + ": cluster.tasks_per_node: " +
                        std::to_string(c.tasks_per_node) + " ranks per node with gpus_per_node " +
                        std::to_string(c.gpus_per_node) + "; a rank drives one GPU, so they must be equal");
  // Values that become #SBATCH lines: one word each, or sbatch would read the rest as another option.
  const auto slurm_word = [](const std::string& v) {
    return v.find_first_of(" \t\r\n#'\"\\$`") == std::string::npos;
  };
  c.time_limit = s.value<std::string>(
      "time_limit", c.time_limit, [](const std::string& v) { return slurm_time_seconds(v) > 0; },
      "a time limit [D-]HH:MM:SS (e.g. 02:00:00 or 1-12:00:00)");
  c.partition = s.value<std::string>("partition", c.partition, slurm_word, "a partition name (one word)");
  c.account = s.value<std::string>("account", c.account, slurm_word, "an account name (one word)");
  c.signal_seconds = s.value<int>("signal_seconds", c.signal_seconds, [](const int& v) { return v >= 0 && v <= 65535; },
                                  "seconds in [0, 65535] (0 = no warning signal)");
  if (c.signal_seconds >= slurm_time_seconds(c.time_limit))
    throw ManifestError(where(source, top.get("cluster")) + ": cluster.signal_seconds " +
                        std::to_string(c.signal_seconds) + " is not shorter than time_limit " + c.time_limit +
                        ": the warning signal would come before the run starts");
  // --- end job shape ---
  c.device = s.value<std::string>(
      "device", c.device, [](const std::string& v) { return v == "cpu" || v == "auto" || v == "cuda"; },
      "one of cpu, auto, cuda");
  c.cuda_conv = s.value<std::string>(
      "cuda_conv", c.cuda_conv, [](const std::string& v) { return v == "im2col" || v == "cudnn"; },
      "one of im2col, cudnn");
  c.cuda_tf32 = s.value<bool>("cuda_tf32", c.cuda_tf32, {}, "true or false");
  c.cuda_graphs = s.value<bool>("cuda_graphs", c.cuda_graphs, {}, "true or false");
  c.cuda_fuse = s.value<bool>("cuda_fuse", c.cuda_fuse, {}, "true or false");
  c.cpu_kernels = s.value<std::string>(
      "cpu_kernels", c.cpu_kernels,
      [](const std::string& v) { return v == "best" || v == "avx512" || v == "avx2" || v == "generic"; },
      "one of best, avx512, avx2, generic");
}

// output: the run directory.
void read_output(const std::string& source, const Section& top, RunConfig& rc) {
  const Section s(source, top.get("output"), "output", {"directory"});
  rc.output_directory = s.value<std::string>("directory", "");
}

// checkpoints: retention.
void read_checkpoints(const std::string& source, const Section& top, RunConfig& rc) {
  const Section s(source, top.get("checkpoints"), "checkpoints", {"keep_last_generations", "keep_population"});
  rc.retention.keep_last_generations = s.value<int>("keep_last_generations", rc.retention.keep_last_generations,
                                                    [](const int& v) { return v >= 0; }, "an integer >= 0 (0 = all)");
  rc.retention.keep_population = s.value<bool>("keep_population", rc.retention.keep_population, {}, "true or false");
}

// monitoring: the Prometheus exporter (monitoring/README.md).
void read_monitoring(const std::string& source, const Section& top, RunConfig& rc) {
  const Section s(source, top.get("monitoring"), "monitoring", {"bind", "port", "targets_file", "linger_seconds"});
  MonitoringConfig& m = rc.monitoring;
  m.bind = s.value<std::string>(
      "bind", m.bind, [](const std::string& v) { return !v.empty() && v.find_first_of(" \t/") == std::string::npos; },
      "an IP address to listen on (e.g. 127.0.0.1, or 0.0.0.0 for every interface)");
  m.port = s.value<int>("port", m.port, [](const int& v) { return v >= 0 && v <= 65535; },
                        "a TCP port in [1, 65535], or 0 for no exporter");
  m.targets_file = s.value<std::string>("targets_file", m.targets_file);
  m.linger_seconds = s.value<double>("linger_seconds", m.linger_seconds,
                                     [](const double& v) { return v >= 0 && v <= 3600; }, "seconds in [0, 3600]");
}

// governance: gates, red lines, monitors (scheduler/governance.h; experiments/README.md, "Governance").
void read_governance(const std::string& source, const Section& top, RunConfig& rc) {
  scheduler::LoopConfig& loop = rc.loop;
  const Section gov(source, top.get("governance"), "governance", {"gates", "red_lines", "monitors"});
  scheduler::GovernanceConfig& g = loop.governance;
  const auto non_negative = [](const double& v) { return v >= 0; };
  const auto non_negative_int = [](const std::int64_t& v) { return v >= 0; };
  const std::string off = "a number >= 0 (0 = off)";
  // Accuracies, gains and gaps are fractions: 0.85, not 85.
  const auto fraction = [](const double& v) { return v >= 0 && v <= 1; };
  const std::string fraction_off = "a fraction in [0, 1] (0 = off; accuracies are fractions: 0.85, not 85)";
  if (gov.has("gates")) {
    const Section s(source, gov.get("gates"), "governance.gates",
                    {"max_gain", "max_parameters", "max_flops", "max_goodhart_gap", "every_n_generations",
                     "approval_timeout_seconds", "poll_seconds", "on_reject"});
    auto& x = g.gates;
    x.max_gain = s.value<double>("max_gain", x.max_gain, fraction, fraction_off);
    x.max_parameters = s.value<std::int64_t>("max_parameters", x.max_parameters, non_negative_int, off);
    x.max_flops = s.value<std::int64_t>("max_flops", x.max_flops, non_negative_int, off);
    x.max_goodhart_gap = s.value<double>("max_goodhart_gap", x.max_goodhart_gap, fraction, fraction_off);
    x.every_n_generations = s.value<int>("every_n_generations", x.every_n_generations,
                                         in_range(0, kMaxGenerations), range_text(0, kMaxGenerations) + " (0 = off)");
    x.approval_timeout_seconds =
        s.value<double>("approval_timeout_seconds", x.approval_timeout_seconds,
                        [](const double& v) { return v >= 0 && v <= 366 * 86400.0; }, "seconds in [0, 31622400]");
    x.poll_seconds = s.value<double>("poll_seconds", x.poll_seconds,
                                     [](const double& v) { return v >= 0.01 && v <= 3600; },
                                     "seconds in [0.01, 3600]");
    const std::string on_reject = s.value<std::string>(
        "on_reject", "rollback", [](const std::string& v) { return v == "rollback" || v == "stop"; },
        "one of rollback, stop");
    x.on_reject = on_reject == "stop" ? scheduler::GateConfig::OnReject::Stop : scheduler::GateConfig::OnReject::Rollback;
  }
  if (gov.has("red_lines")) {
    const Section s(source, gov.get("red_lines"), "governance.red_lines",
                    {"max_parameters", "max_flops_per_sample", "compute_budget_model_seconds",
                     "max_gain_per_generation"});
    auto& x = g.red_lines;
    x.max_parameters = s.value<std::int64_t>("max_parameters", x.max_parameters, non_negative_int, off);
    x.max_flops_per_sample = s.value<std::int64_t>("max_flops_per_sample", x.max_flops_per_sample, non_negative_int, off);
    x.compute_budget_model_seconds =
        s.value<double>("compute_budget_model_seconds", x.compute_budget_model_seconds, non_negative, off);
    x.max_gain_per_generation =
        s.value<double>("max_gain_per_generation", x.max_gain_per_generation, fraction, fraction_off);
  }
  if (gov.has("monitors")) {
    const Section s(source, gov.get("monitors"), "governance.monitors",
                    {"goodhart_gap_alert", "pseudo_label_accuracy_floor", "label_entropy_floor", "diversity_floor",
                     "disparity_growth_alert", "takeoff_alert", "trend_window"});
    auto& x = g.monitors;
    x.goodhart_gap_alert = s.value<double>("goodhart_gap_alert", x.goodhart_gap_alert, fraction, fraction_off);
    x.pseudo_label_accuracy_floor =
        s.value<double>("pseudo_label_accuracy_floor", x.pseudo_label_accuracy_floor, fraction, fraction_off);
    const double ln10 = std::log(10.0);  // the entropy of a uniform histogram over the 10 classes
    x.label_entropy_floor =
        s.value<double>("label_entropy_floor", x.label_entropy_floor, [ln10](const double& v) { return v >= 0 && v <= ln10; },
                        "nats in [0, 2.302585] (0 = off; ln 10 = 2.302585 is a uniform histogram)");
    x.diversity_floor = s.value<double>("diversity_floor", x.diversity_floor, non_negative, off);
    x.disparity_growth_alert =
        s.value<double>("disparity_growth_alert", x.disparity_growth_alert, fraction, fraction_off);
    x.takeoff_alert = s.value<bool>("takeoff_alert", x.takeoff_alert, {}, "true or false");
    x.trend_window = s.value<int>("trend_window", x.trend_window, [](const int& v) { return v >= 2 && v <= 1000; },
                                  "an integer in [2, 1000]");
  }
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
  const Section top(source, root, "manifest",
                    {"run", "task", "population", "selection", "design", "seeds", "cluster", "output", "checkpoints",
                     "monitoring", "governance"});
  RunConfig rc;
  rc.manifest_path = source;
  rc.manifest_text = text;
  rc.manifest_hash = manifest_hash(text);
  // Sections in this order: later ones check against earlier ones (a seed against design limits).
  if (top.has("run")) read_run(source, top, rc);
  if (top.has("task")) read_task(source, top, base_dir, load_seeds, rc);
  if (top.has("population")) read_population(source, top, rc);
  if (top.has("selection")) read_selection(source, top, rc);
  if (top.has("design")) read_design(source, top, rc);
  if (top.has("cluster")) read_cluster(source, top, rc);
  if (top.has("output")) read_output(source, top, rc);
  if (rc.output_directory.empty()) rc.output_directory = "runs/" + rc.name;
  if (top.has("checkpoints")) read_checkpoints(source, top, rc);
  if (top.has("monitoring")) read_monitoring(source, top, rc);
  if (top.has("governance")) read_governance(source, top, rc);
  read_seeds(source, root, base_dir, load_seeds, rc);
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

namespace {
const char* task_kind_name(scheduler::TaskSpec::Kind kind) {
  switch (kind) {
    case scheduler::TaskSpec::Kind::Surrogate: return "surrogate";
    case scheduler::TaskSpec::Kind::Images: return "images";
    default: return "fashion_mnist";
  }
}

void emit_image_task(YAML::Emitter& out, const scheduler::TaskSpec& task) {
  const auto files = [&out](const char* key, const models::ImageFiles& f) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (!f.file.empty()) out << YAML::Key << "file" << YAML::Value << f.file;
    out << YAML::Key << "images" << YAML::Value << f.images << YAML::Key << "labels" << YAML::Value << f.labels
        << YAML::EndMap;
  };
  files("train", task.train_files);
  files("test", task.test_files);
  if (task.layout != models::ImageLayout::Auto)
    out << YAML::Key << "layout" << YAML::Value << models::layout_name(task.layout);
  if (!task.class_names.empty()) out << YAML::Key << "classes" << YAML::Value << YAML::Flow << task.class_names;
}
}  // namespace

std::string image_task_yaml(const scheduler::TaskSpec& task) {
  YAML::Emitter out;
  out << YAML::Flow << YAML::BeginMap;
  emit_image_task(out, task);
  out << YAML::EndMap;
  return out.c_str();
}

void apply_image_task_yaml(const std::string& text, const std::string& source, scheduler::TaskSpec& task) {
  YAML::Node node = schema::load_checked_yaml(text, source, "data description");
  node["kind"] = "images";
  YAML::Node root;
  root["task"] = node;
  RunConfig rc;
  read_task(source, Section(source, root, "data", {"task"}), "/", false, rc);
  task.kind = scheduler::TaskSpec::Kind::Images;
  task.train_files = rc.loop.task.train_files;
  task.test_files = rc.loop.task.test_files;
  task.layout = rc.loop.task.layout;
  task.class_names = rc.loop.task.class_names;
}

std::string resolved_yaml(const RunConfig& rc) {
  const scheduler::LoopConfig& l = rc.loop;
  YAML::Emitter out;
  out.SetDoublePrecision(10);
  out << YAML::BeginMap;
  out << YAML::Key << "run" << YAML::Value << YAML::BeginMap << YAML::Key << "name" << YAML::Value << rc.name
      << YAML::Key << "seed" << YAML::Value << l.seed << YAML::EndMap;
  out << YAML::Key << "task" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value << task_kind_name(l.task.kind);
  out << YAML::Key << "data_dir" << YAML::Value << l.task.data_dir;
  if (l.task.kind == scheduler::TaskSpec::Kind::Images) emit_image_task(out, l.task);
  out << YAML::Key << "labeled" << YAML::Value << l.task.split.labeled;
  out << YAML::Key << "unlabeled" << YAML::Value << l.task.split.unlabeled;
  out << YAML::Key << "validation" << YAML::Value << l.task.split.validation;
  out << YAML::Key << "surrogate_cost_seconds" << YAML::Value << l.task.surrogate_cost_seconds;
  out << YAML::Key << "surrogate_noise" << YAML::Value << l.task.surrogate_noise;
  out << YAML::Key << "surrogate_class_skew" << YAML::Value << l.task.surrogate_class_skew;
  out << YAML::Key << "surrogate_pseudo_labels" << YAML::Value << l.task.surrogate_pseudo_labels;
  out << YAML::Key << "surrogate_drift" << YAML::Value << l.task.surrogate_drift;
  out << YAML::Key << "surrogate_drift_period" << YAML::Value << l.task.surrogate_drift_period << YAML::EndMap;
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
  out << YAML::Key << "max_channels" << YAML::Value << l.limits.max_channels;
  const scheduler::ImprovementConfig& imp = l.improvement;
  out << YAML::Key << "strategy" << YAML::Value << scheduler::strategy_name(imp.strategy);
  out << YAML::Key << "freeze_genes" << YAML::Value << imp.freeze_genes;
  out << YAML::Key << "deduplicate" << YAML::Value << imp.deduplicate;
  out << YAML::Key << "redesign_attempts" << YAML::Value << imp.redesign_attempts;
  out << YAML::Key << "extended_recipe" << YAML::Value << imp.extended_recipe;
  out << YAML::Key << "predictor" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
      << imp.predictor.enabled << YAML::Key << "candidates" << YAML::Value << imp.predictor.candidates << YAML::Key
      << "min_examples" << YAML::Value << imp.predictor.min_examples << YAML::Key << "ridge" << YAML::Value
      << imp.predictor.ridge << YAML::Key << "min_correlation" << YAML::Value << imp.predictor.min_correlation
      << YAML::EndMap;
  out << YAML::Key << "rungs" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
      << imp.rungs.enabled << YAML::Key << "first_epochs" << YAML::Value << imp.rungs.first_epochs << YAML::Key
      << "promote" << YAML::Value << imp.rungs.promote << YAML::EndMap;
  out << YAML::Key << "niches" << YAML::Value << YAML::BeginMap << YAML::Key << "enabled" << YAML::Value
      << imp.niches.enabled << YAML::Key << "parameter_bins" << YAML::Value << imp.niches.parameter_bins << YAML::Key
      << "depth_bins" << YAML::Value << imp.niches.depth_bins << YAML::EndMap;
  out << YAML::EndMap;
  out << YAML::Key << "seeds" << YAML::Value << YAML::BeginSeq;
  for (const auto& g : l.seeds) out << YAML::Load(models::to_yaml(g));  // inline: loads without the files
  out << YAML::EndSeq;
  out << YAML::Key << "cluster" << YAML::Value << YAML::BeginMap << YAML::Key << "group_size" << YAML::Value
      << l.group_size << YAML::Key << "threads_per_rank" << YAML::Value << l.threads_per_rank;
  // --- job shape and Slurm submission (rsi submit) ---
  out << YAML::Key << "nodes" << YAML::Value << rc.cluster.nodes;
  out << YAML::Key << "gpus_per_node" << YAML::Value << rc.cluster.gpus_per_node;
  out << YAML::Key << "tasks_per_node" << YAML::Value << rc.cluster.tasks_per_node;
  out << YAML::Key << "time_limit" << YAML::Value << YAML::DoubleQuoted << rc.cluster.time_limit;
  out << YAML::Key << "partition" << YAML::Value << YAML::DoubleQuoted << rc.cluster.partition;
  out << YAML::Key << "account" << YAML::Value << YAML::DoubleQuoted << rc.cluster.account;
  out << YAML::Key << "signal_seconds" << YAML::Value << rc.cluster.signal_seconds;
  out << YAML::Key << "device" << YAML::Value << rc.cluster.device;
  out << YAML::Key << "cpu_kernels" << YAML::Value << rc.cluster.cpu_kernels;
  out << YAML::Key << "cuda_conv" << YAML::Value << rc.cluster.cuda_conv;
  out << YAML::Key << "cuda_tf32" << YAML::Value << rc.cluster.cuda_tf32;
  out << YAML::Key << "cuda_graphs" << YAML::Value << rc.cluster.cuda_graphs;
  out << YAML::Key << "cuda_fuse" << YAML::Value << rc.cluster.cuda_fuse;
  // --- end job shape ---
  out << YAML::EndMap;
  out << YAML::Key << "output" << YAML::Value << YAML::BeginMap << YAML::Key << "directory" << YAML::Value
      << rc.output_directory << YAML::EndMap;
  out << YAML::Key << "checkpoints" << YAML::Value << YAML::BeginMap << YAML::Key << "keep_last_generations"
      << YAML::Value << rc.retention.keep_last_generations << YAML::Key << "keep_population" << YAML::Value
      << rc.retention.keep_population << YAML::EndMap;
  out << YAML::Key << "monitoring" << YAML::Value << YAML::BeginMap << YAML::Key << "bind" << YAML::Value
      << rc.monitoring.bind << YAML::Key << "port" << YAML::Value << rc.monitoring.port << YAML::Key << "targets_file"
      << YAML::Value << rc.monitoring.targets_file << YAML::Key << "linger_seconds" << YAML::Value
      << rc.monitoring.linger_seconds << YAML::EndMap;
  {  // --- governance ---
    const scheduler::GovernanceConfig& g = l.governance;
    out << YAML::Key << "governance" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "gates" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "max_gain" << YAML::Value << g.gates.max_gain;
    out << YAML::Key << "max_parameters" << YAML::Value << g.gates.max_parameters;
    out << YAML::Key << "max_flops" << YAML::Value << g.gates.max_flops;
    out << YAML::Key << "max_goodhart_gap" << YAML::Value << g.gates.max_goodhart_gap;
    out << YAML::Key << "every_n_generations" << YAML::Value << g.gates.every_n_generations;
    out << YAML::Key << "approval_timeout_seconds" << YAML::Value << g.gates.approval_timeout_seconds;
    out << YAML::Key << "poll_seconds" << YAML::Value << g.gates.poll_seconds;
    out << YAML::Key << "on_reject" << YAML::Value << scheduler::on_reject_name(g.gates.on_reject) << YAML::EndMap;
    out << YAML::Key << "red_lines" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "max_parameters" << YAML::Value << g.red_lines.max_parameters;
    out << YAML::Key << "max_flops_per_sample" << YAML::Value << g.red_lines.max_flops_per_sample;
    out << YAML::Key << "compute_budget_model_seconds" << YAML::Value << g.red_lines.compute_budget_model_seconds;
    out << YAML::Key << "max_gain_per_generation" << YAML::Value << g.red_lines.max_gain_per_generation << YAML::EndMap;
    out << YAML::Key << "monitors" << YAML::Value << YAML::BeginMap;
    out << YAML::Key << "goodhart_gap_alert" << YAML::Value << g.monitors.goodhart_gap_alert;
    out << YAML::Key << "pseudo_label_accuracy_floor" << YAML::Value << g.monitors.pseudo_label_accuracy_floor;
    out << YAML::Key << "label_entropy_floor" << YAML::Value << g.monitors.label_entropy_floor;
    out << YAML::Key << "diversity_floor" << YAML::Value << g.monitors.diversity_floor;
    out << YAML::Key << "disparity_growth_alert" << YAML::Value << g.monitors.disparity_growth_alert;
    out << YAML::Key << "takeoff_alert" << YAML::Value << g.monitors.takeoff_alert;
    out << YAML::Key << "trend_window" << YAML::Value << g.monitors.trend_window << YAML::EndMap;
    out << YAML::EndMap;
  }  // --- end governance ---
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
  // Keys that do not shape the lineage may change between a run and its resume: the exporter's
  // address, how long a run waits for a decision, the Slurm job's queue, account and time (a
  // resubmission with a longer time limit is the usual way to finish a run) and the CPU kernel
  // family (all families compute the same bits).
  static const std::set<std::string> free_keys = {
      "governance.gates.approval_timeout_seconds", "governance.gates.poll_seconds", "cluster.time_limit",
      "cluster.partition", "cluster.account", "cluster.signal_seconds", "cluster.cpu_kernels", "cluster.cuda_graphs",
      "cluster.cuda_fuse"};
  for (auto* keys : {&a, &b})
    std::erase_if(*keys, [](const auto& kv) { return kv.first.rfind("monitoring.", 0) == 0 || free_keys.count(kv.first); });
  // Keys added after a lineage was written: absent there means their default, which is what that
  // run did (the self-improvement switches are all off by default).
  static const std::map<std::string, std::string> later_keys = {
      {"design.strategy", "evolved"},         {"design.freeze_genes", "false"},
      {"design.deduplicate", "false"},        {"design.redesign_attempts", "8"},
      {"design.extended_recipe", "false"},
      {"design.predictor.enabled", "false"},  {"design.predictor.candidates", "4"},
      {"design.predictor.min_examples", "8"}, {"design.predictor.ridge", "1"},
      {"design.predictor.min_correlation", "-1"},
      {"design.rungs.enabled", "false"},      {"design.rungs.first_epochs", "1"},
      {"design.rungs.promote", "0.5"},        {"design.niches.enabled", "false"},
      {"design.niches.parameter_bins", "4"},  {"design.niches.depth_bins", "3"},
      {"task.surrogate_drift", "0"},          {"task.surrogate_drift_period", "10"}};
  for (const auto& [key, value] : later_keys) {
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
    applied += (applied.empty() ? "" : " ") + std::string(s.name) + "=" + value;
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
