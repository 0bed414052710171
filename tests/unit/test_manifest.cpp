// Manifest loading: the schema documented in experiments/README.md and the loader agree key for
// key, the shipped manifests validate, and each bad manifest gets the message it must produce
// (file:line:column, the key, what was expected, a did-you-mean for unknown keys).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "rsi/runtime/manifest.h"

using rsi::runtime::ManifestError;
using rsi::runtime::parse_manifest;

namespace {

const std::string kSource = RSI_SOURCE_DIR;

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The first yaml block of a section of experiments/README.md ("## Manifests", "## Your own data").
std::string documented_manifest(const std::string& heading = "## Manifests") {
  const std::string doc = read(kSource + "/experiments/README.md");
  const auto section = doc.find(heading);
  const auto begin = doc.find("```yaml\n", section);
  const auto end = doc.find("```", begin + 8);
  if (section == std::string::npos || begin == std::string::npos || end == std::string::npos) return {};
  return doc.substr(begin + 8, end - begin - 8);
}

// The dotted keys of a YAML text, down to the schema's keys (an images task's `train: {...}` is one
// key) or, without a schema, down to the scalars.
void flatten(const YAML::Node& n, const std::string& prefix, std::set<std::string>& keys,
             const std::set<std::string>& schema = {}) {
  if (n.IsMap() && !schema.count(prefix)) {
    for (const auto& kv : n)
      flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), keys,
              schema);
  } else {
    keys.insert(prefix);
  }
}

std::string error_of(const std::string& text) {
  try {
    parse_manifest(text, "bad.yaml", kSource + "/experiments");
  } catch (const ManifestError& e) {
    return e.what();
  }
  return "(no error)";
}

const std::string kSeeds = "seeds: [genomes/linear.yaml]\n";

}  // namespace

TEST(Manifest, DocumentedKeysAreExactlyTheLoadersKeys) {
  const std::string doc = documented_manifest();
  ASSERT_FALSE(doc.empty()) << "experiments/README.md has no ```yaml block under '## Manifests'";
  const std::string own_data = documented_manifest("## Your own data");
  ASSERT_NE(own_data.find("kind: images"), std::string::npos) << "experiments/README.md: no images task under '## Your own data'";
  const auto config = parse_manifest(doc, "experiments/README.md", kSource + "/experiments");
  // The schema (runtime/src/manifest_schema.h) lists each key once; the README documents exactly
  // those (an images task's own keys under "Your own data"), and the resolved manifest writes them.
  const std::vector<std::string> keys = rsi::runtime::manifest_keys();
  const std::set<std::string> schema(keys.begin(), keys.end());
  EXPECT_EQ(schema.size(), keys.size()) << "a key is listed twice in the schema";
  std::set<std::string> documented, resolved;
  flatten(YAML::Load(doc), "", documented, schema);
  flatten(YAML::Load(own_data), "", documented, schema);
  flatten(YAML::Load(rsi::runtime::resolved_yaml(config)), "", resolved, schema);
  for (const auto& k : documented) EXPECT_TRUE(schema.count(k)) << "documented key '" << k << "' is not in the schema";
  for (const auto& k : schema) EXPECT_TRUE(documented.count(k)) << "schema key '" << k << "' is not documented";
  for (const auto& k : resolved) EXPECT_TRUE(schema.count(k)) << "resolved key '" << k << "' is not in the schema";
  for (const char* images_only : {"task.train", "task.test", "task.layout", "task.classes"}) resolved.insert(images_only);
  EXPECT_EQ(resolved, schema) << "the resolved manifest does not write every key of the schema";
  // The documented values are the defaults: a manifest of seeds alone resolves to the same values
  // except where the document shows an example (name, seed, directory, split sizes).
  const auto defaults = parse_manifest(kSeeds, "defaults.yaml", kSource + "/experiments");
  EXPECT_EQ(defaults.loop.population_size, config.loop.population_size);
  EXPECT_EQ(defaults.loop.limits.max_parameters, config.loop.limits.max_parameters);
  EXPECT_EQ(defaults.retention.keep_last_generations, config.retention.keep_last_generations);
}

// Every manifest we ship or test with, found by listing the folders (a new one cannot be forgotten).
TEST(Manifest, ShippedManifestsValidate) {
  int checked = 0;
  for (const char* folder : {"experiments", "tests/manifests"})
    for (const auto& entry : std::filesystem::directory_iterator(kSource + "/" + folder)) {
      if (entry.path().extension() != ".yaml") continue;
      EXPECT_NO_THROW(rsi::runtime::load_manifest(entry.path().string())) << entry.path();
      ++checked;
    }
  EXPECT_GE(checked, 12) << "fewer manifests than shipped: is RSI_SOURCE_DIR right?";
}

TEST(Manifest, ResolvedManifestRoundTrips) {
  const auto a = rsi::runtime::load_manifest(kSource + "/experiments/quickstart.yaml");
  const std::string resolved = rsi::runtime::resolved_yaml(a);
  // Seeds resolve to inline genomes, so the resolved text loads on its own.
  const auto b = parse_manifest(resolved, "resolved.yaml", "/nonexistent");
  EXPECT_EQ(rsi::runtime::resolved_yaml(b), resolved);
  EXPECT_EQ(b.loop.seeds, a.loop.seeds);
}

TEST(Manifest, BadManifestsGetTheirMessages) {
  struct Case {
    std::string text, expected;
  };
  const std::vector<Case> cases = {
      {kSeeds + "populaton: {size: 3}\n", "bad.yaml:2:1: manifest: unknown key 'populaton' (did you mean 'population'?)"},
      {kSeeds + "population: {size: 3, sise: 4}\n", "population: unknown key 'sise' (did you mean 'size'?)"},
      {kSeeds + "population: {size: 3, size: 4}\n", "bad.yaml:2:23: population.size: duplicate key"},
      {kSeeds + "population: {size: three}\n", "bad.yaml:2:20: population.size: expected an integer in [1, 10000], got 'three'"},
      {kSeeds + "population: {size: 0}\n", "population.size: expected an integer in [1, 10000], got '0'"},
      {kSeeds + "task: {labeled: 50000, unlabeled: 10000, validation: 5000}\n",
       "task: labeled + unlabeled + validation exceed the 60000 training images"},
      {kSeeds + "selection: {kind: roulette}\n", "selection.kind: expected one of truncation, tournament, aging, got 'roulette'"},
      {kSeeds + "cluster: {group_size: -2}\n", "cluster.group_size: expected an integer in [1, 65536] (it must divide the job's ranks), got '-2'"},
      {kSeeds + "cluster: {device: gpu}\n", "cluster.device: expected one of cpu, auto, cuda, got 'gpu'"},
      {"run: {name: x}\n", "seeds: expected a list of seed genomes"},
      {"seeds: [genomes/missing.yaml]\n", "seeds[0]"},
      {"seeds: [{architecture: [{dense: {units: 7}}]}]\n", "seeds[0]"},
      {kSeeds + "task: {kind: [1, 2]\n", "bad.yaml:3:1: invalid YAML"},
      {kSeeds + "run: {name: " + std::string(2 << 20, 'x') + "}\n", "bytes; the limit is 1048576"},
      {kSeeds + "run: {name: " + std::string(200, '[') + std::string(200, ']') + "}\n", "brackets nested"},
      {kSeeds + "design: {a: {b: {c: {d: {e: {f: {g: {h: {i: {j: {k: {l: {m: {n: {o: {p: {q: 1}}}}}}}}}}}}}}}}}\n",
       "levels deep; the limit is 16"},
      {kSeeds + "task: {kind: cifar}\n", "task.kind: expected one of fashion_mnist, images, surrogate, got 'cifar'"},
      // --- found by tests/fuzz/manifest_fuzzer (each crashed, hung or threw a non-ManifestError) ---
      {kSeeds + "cluster:\n? group_size: 1\n  threads_per_rank: 1\n", "bad.yaml:3:3: manifest: expected a key name, got a map as a key"},
      {kSeeds + "design: &x {a: *x}\n", "levels deep; the limit is 16"},
      {kSeeds + "design:\n  a: &a [1,1,1,1,1,1,1,1,1,1]\n  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                "  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                "  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                "  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\n",
       "bad.yaml: the manifest's aliases (*name) expand to too many values"},
      {"seeds: [/dev/zero]\n", "bad.yaml:1:9: seeds[0]: '/dev/zero' is not a regular file"},
      {"seeds:\n" + [] { std::string s; for (int i = 0; i < 3000; ++i) s += "- "; return s; }() + "x\n",
       "invalid YAML: nested too deeply for the YAML parser"},
      {kSeeds + "run: {name: {a: 1}}\n", "bad.yaml:2:13: run.name: expected a name of letters, digits"},
      {kSeeds + "run: {name: ../elsewhere}\n", "run.name: expected a name of letters, digits"},
      {kSeeds + "run: {name: }\n", "run.name: expected a name of letters, digits, '-', '_' and '.' (up to 128, "
                                   "not starting with '.'; it names runs/<name>), got an empty value"},
      {kSeeds + "task: {data_dir: }\n", "bad.yaml:2:18: task.data_dir: expected a single value, got an empty value"},
      {kSeeds + "population: {size: [3]}\n", "population.size: expected an integer in [1, 10000], got a list"},
      {"seeds: [{architecture: [{dense: {units: 10}}], designer: {\"\xff~\": 2}}]\n",
       "bad.yaml:1:60: the manifest is not valid UTF-8 (byte 59)"},
      // --- end of fuzzer findings ---
      // --- issue 19: accepted although wrong, each a class of its own ---
      // A quoted number in an inline seed, as in a seed file; the position is the manifest's.
      {"run: {name: x}\nseeds:\n  - architecture: [{dense: {units: 10}}]\n    recipe: {batch_size: \"128\"}\n",
       "bad.yaml:4:26: recipe.batch_size: expected an integer, got \"128\" (a quoted string) (in seeds[0])"},
      {"seeds:\n  - architecture:\n      - dense: {units: 10}\n    recipe:\n      epochs: two\n",
       "bad.yaml:5:15: recipe.epochs: expected an integer, got two (in seeds[0])"},
      {kSeeds + "population: {size: \"4\"}\n", "population.size: expected an integer in [1, 10000], got \"4\" (a quoted string)"},
      {kSeeds + "task: {labeled: 0}\n", "task.labeled: expected an integer in [1, 60000] (0 would train on nothing)"},
      {kSeeds + "task: {validation: 0}\n", "task.validation: expected an integer in [1, 60000] (0 would make every"},
      {"seeds: [{architecture: [{dense: {units: 10}}], designer: {tau: .nan}}]\n",
       "bad.yaml:1:64: designer.tau: expected a finite number, got .nan"},
      {"seeds: [{architecture: [{dense: {units: 10}}], designer: {tua: 0.2}}]\n",
       "designer.tua: unknown key 'tua' (did you mean 'tau'?"},
      {"seeds: [{architecture: [{dense: {units: 10}}], designer: {tau: 5}}]\n",
       "designer.tau: expected a number in [0.05, 0.5], got 5"},
      {kSeeds + "governance: {monitors: {pseudo_label_accuracy_floor: 85}}\n",
       "governance.monitors.pseudo_label_accuracy_floor: expected a fraction in [0, 1] (0 = off; accuracies are "
       "fractions: 0.85, not 85), got '85'"},
      {kSeeds + "governance: {gates: {max_gain: 2}}\n", "governance.gates.max_gain: expected a fraction in [0, 1]"},
      {kSeeds + "governance: {monitors: {label_entropy_floor: 3}}\n", "label_entropy_floor: expected nats in [0, 2.302585]"},
      {kSeeds + "governance: {gates: {approval_timeout_seconds: .inf}}\n",
       "approval_timeout_seconds: expected seconds in [0, 31622400], got '.inf' (not a finite number)"},
      {kSeeds + "task: {kind: surrogate, surrogate_noise: .nan}\n", "task.surrogate_noise: expected a number in [0, 1), got '.nan'"},
      {kSeeds + "design: {max_parameters: 100}\n",
       "bad.yaml:1:9: seeds[0] (genomes/linear.yaml): genome has 7850 parameters, over the limit of 100 (the manifest's "
       "design limits"},
      {"seeds: [genomes/mlp.yaml]\ndesign: {max_epochs: 4}\n",
       "seeds[0] (genomes/mlp.yaml): recipe.epochs 5 is outside [1, 4] (the manifest's design limits"},
      {"seeds: [{architecture: [{dense: {units: 10}}], recipe: {learning_rate: 1e3}}]\n",
       "seeds[0]: recipe.learning_rate 1000 is outside [1e-05, 0.1], the range the design operators keep"},
      {"seeds: [{architecture: [{dense: {units: 10}}], recipe: {epochs: 100000}}]\n",
       "seeds[0]: recipe.epochs 100000 is outside [1, 10] (the manifest's design limits"},
      {kSeeds + "population: {size: 4}\n---\npopulation: {size: 8}\n",
       "bad.yaml:4:1: a second YAML document ('---' then more)"},
      {kSeeds + "run: !!python/object:os.system {name: x}\n", "bad.yaml:2:6: YAML tag 'tag:yaml.org,2002:python/object:os.system' is not accepted"},
      {kSeeds + "run: {name: !foo x}\n", "YAML tag '!foo' is not accepted"},
      {kSeeds + "run: {seed: -1}\n", "run.seed: expected a non-negative integer, got '-1'"},
      {kSeeds + "selection: {kind: tournament, tournament_size: 2147483647}\n",
       "selection.tournament_size: expected an integer in [1, 10000], got '2147483647'"},
      {kSeeds + "population: {children: 2000000000}\n", "population.children: expected an integer in [1, 10000]"},
      {kSeeds + "population: {generations: 2147483647}\n", "population.generations: expected an integer in [0, 1000000]"},
      {kSeeds + "design: {max_parameters: 9223372036854775807}\n", "design.max_parameters: expected an integer in [1, 1000000000]"},
      {kSeeds + "cluster: {threads_per_rank: 100000}\n", "cluster.threads_per_rank: expected an integer in [1, 1024]"},
      // --- end of issue 19 ---
  };
  for (const auto& c : cases) {
    const std::string message = error_of(c.text);
    EXPECT_NE(message.find(c.expected), std::string::npos) << "manifest:\n" << c.text << "message: " << message
                                                           << "\nexpected to contain: " << c.expected;
  }
}

// Found by tests/fuzz/: seed files are read with a bound, and only when they are regular files
// (a device or a FIFO was read without end) of valid UTF-8 (invalid bytes did not round-trip).
TEST(Manifest, SeedFilesAreReadWithABound) {
  const std::string dir = ::testing::TempDir();
  const std::string genome = read(kSource + "/experiments/genomes/linear.yaml");
  ASSERT_NE(genome.find("designer: {}"), std::string::npos);
  std::ofstream(dir + "/rsi-fuzz-bad-utf8.yaml")
      << genome.substr(0, genome.find("designer: {}")) << "designer: {\"g\xff\": 1}\n";
  std::ofstream(dir + "/rsi-fuzz-huge.yaml") << "# " << std::string(2 << 20, 'x') << "\n";
  const auto error_in = [&](const std::string& text) {
    try {
      parse_manifest(text, "seeds.yaml", dir);
    } catch (const ManifestError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  EXPECT_NE(error_in("seeds: [rsi-fuzz-bad-utf8.yaml]\n").find("rsi-fuzz-bad-utf8.yaml' is not valid UTF-8 (byte "),
            std::string::npos);
  EXPECT_NE(error_in("seeds: [rsi-fuzz-huge.yaml]\n").find("rsi-fuzz-huge.yaml' is over 1048576 bytes"),
            std::string::npos);
  EXPECT_NE(error_in("seeds: [/dev/null]\n").find("seeds.yaml:1:9: seeds[0]: '/dev/null' is not a regular file"),
            std::string::npos);
  // A seed path naming a file that is not a genome quotes an excerpt, not the file (it was printed
  // whole, up to 1 MiB).
  std::ofstream(dir + "/rsi-not-a-genome.txt") << std::string(5000, 'y') << "\n" << std::string(5000, 'z') << "\n";
  const std::string not_genome = error_in("seeds: [rsi-not-a-genome.txt]\n");
  EXPECT_NE(not_genome.find("expected a map (the genome), got yyyy"), std::string::npos) << not_genome;
  EXPECT_LT(not_genome.size(), 400u) << not_genome;
  std::remove((dir + "/rsi-not-a-genome.txt").c_str());
  std::remove((dir + "/rsi-fuzz-bad-utf8.yaml").c_str());
  std::remove((dir + "/rsi-fuzz-huge.yaml").c_str());
}

// GPU settings are manifest keys; the RSI_CUDA_* variables only override them, and what applied is
// what the lineage records (issue 15).
TEST(Manifest, CudaSettingsComeFromTheManifestAndTheEnvironmentOverrides) {
  for (const char* v : {"RSI_CUDA_CONV", "RSI_CUDA_TF32", "RSI_CUDA_GRAPHS", "RSI_CUDA_FUSE"}) ::unsetenv(v);
  const auto config = parse_manifest(kSeeds + "cluster: {cuda_conv: cudnn, cuda_tf32: true}\n", "m.yaml", kSource + "/experiments");
  EXPECT_EQ(config.cluster.cuda_conv, "cudnn");
  EXPECT_TRUE(config.cluster.cuda_tf32);
  EXPECT_FALSE(config.cluster.cuda_graphs);
  EXPECT_TRUE(config.cluster.cuda_fuse);
  std::vector<std::string> overrides;
  EXPECT_EQ(rsi::runtime::apply_cuda_settings(config.cluster, &overrides), "conv=cudnn tf32=1 graphs=0 fuse=1");
  EXPECT_TRUE(overrides.empty());
  EXPECT_STREQ(std::getenv("RSI_CUDA_TF32"), "1");  // what the kernels read
  ::setenv("RSI_CUDA_TF32", "0", 1);                 // a user's override
  EXPECT_EQ(rsi::runtime::apply_cuda_settings(config.cluster, &overrides), "conv=cudnn tf32=0 graphs=0 fuse=1");
  ASSERT_EQ(overrides.size(), 1u);
  EXPECT_EQ(overrides[0], "RSI_CUDA_TF32=0 overrides cluster.cuda_tf32 (1)");
  for (const char* v : {"RSI_CUDA_CONV", "RSI_CUDA_TF32", "RSI_CUDA_GRAPHS", "RSI_CUDA_FUSE"}) ::unsetenv(v);
  EXPECT_NE(error_of(kSeeds + "cluster: {cuda_conv: winograd}\n").find("cluster.cuda_conv: expected one of im2col, cudnn"),
            std::string::npos);
  // TF32 changes the bits: part of the lineage. Graphs only the speed: free on resume.
  EXPECT_NE(rsi::runtime::manifest_differences(kSeeds, kSeeds + "cluster: {cuda_tf32: true}\n"), "");
  EXPECT_EQ(rsi::runtime::manifest_differences(kSeeds + "cluster: {cuda_graphs: false}\n",
                                               kSeeds + "cluster: {cuda_graphs: true}\n"),
            "");
}

// A lineage written before the self-improvement keys existed resumes under a manifest that leaves
// them at their defaults (absent there = default here), and not under one that turns one on.
TEST(Manifest, KeysAddedLaterMatchTheirDefaultsInOlderLineages) {
  const std::string path = kSource + "/tests/manifests/resume-fashion.yaml";
  const std::string current = rsi::runtime::resolved_yaml(rsi::runtime::load_manifest(path));
  YAML::Node older = YAML::Load(current);
  for (const char* key : {"strategy", "freeze_genes", "deduplicate", "redesign_attempts", "extended_recipe", "predictor", "rungs",
                          "niches"})
    older["design"].remove(key);
  for (const char* key : {"surrogate_drift", "surrogate_drift_period"}) older["task"].remove(key);
  std::stringstream older_text;
  older_text << older;
  EXPECT_EQ(rsi::runtime::manifest_differences(older_text.str(), current), "");
  YAML::Node on = YAML::Load(current);
  on["design"]["predictor"]["enabled"] = true;
  std::stringstream on_text;
  on_text << on;
  EXPECT_NE(rsi::runtime::manifest_differences(older_text.str(), on_text.str()).find("design.predictor.enabled"),
            std::string::npos);
}
