// Manifest loading: the schema documented in experiments/README.md and the loader agree key for
// key, the shipped manifests validate, and each bad manifest gets the message it must produce
// (file:line:column, the key, what was expected, a did-you-mean for unknown keys).
#include <gtest/gtest.h>

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

// The yaml block of experiments/README.md's "## Manifests" section.
std::string documented_manifest() {
  const std::string doc = read(kSource + "/experiments/README.md");
  const auto section = doc.find("## Manifests");
  const auto begin = doc.find("```yaml\n", section);
  const auto end = doc.find("```", begin + 8);
  if (section == std::string::npos || begin == std::string::npos || end == std::string::npos) return {};
  return doc.substr(begin + 8, end - begin - 8);
}

void flatten(const YAML::Node& n, const std::string& prefix, std::set<std::string>& keys) {
  if (n.IsMap()) {
    for (const auto& kv : n) flatten(kv.second, prefix.empty() ? kv.first.as<std::string>() : prefix + "." + kv.first.as<std::string>(), keys);
  } else if (prefix != "seeds") {
    keys.insert(prefix);
  } else {
    keys.insert("seeds");
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
  const auto config = parse_manifest(doc, "experiments/README.md", kSource + "/experiments");
  std::set<std::string> documented, resolved;
  flatten(YAML::Load(doc), "", documented);
  flatten(YAML::Load(rsi::runtime::resolved_yaml(config)), "", resolved);
  for (const auto& k : documented) EXPECT_TRUE(resolved.count(k)) << "documented key '" << k << "' is not in the schema";
  for (const auto& k : resolved) EXPECT_TRUE(documented.count(k)) << "schema key '" << k << "' is not documented";
  // The documented values are the defaults: a manifest of seeds alone resolves to the same values
  // except where the document shows an example (name, seed, directory, split sizes).
  const auto defaults = parse_manifest(kSeeds, "defaults.yaml", kSource + "/experiments");
  EXPECT_EQ(defaults.loop.population_size, config.loop.population_size);
  EXPECT_EQ(defaults.loop.limits.max_parameters, config.loop.limits.max_parameters);
  EXPECT_EQ(defaults.retention.keep_last_generations, config.retention.keep_last_generations);
}

TEST(Manifest, ShippedManifestsValidate) {
  for (const char* m : {"experiments/quickstart.yaml", "experiments/semi-supervised.yaml",
                        "experiments/surrogate-scale.yaml", "tests/manifests/surrogate-small.yaml",
                        "tests/manifests/determinism-fashion.yaml", "tests/manifests/resume-fashion.yaml"}) {
    EXPECT_NO_THROW(rsi::runtime::load_manifest(kSource + "/" + m)) << m;
  }
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
      {kSeeds + "population: {size: three}\n", "bad.yaml:2:20: population.size: expected a positive integer, got 'three'"},
      {kSeeds + "population: {size: 0}\n", "population.size: expected a positive integer, got '0'"},
      {kSeeds + "task: {labeled: 50000, unlabeled: 10000, validation: 5000}\n",
       "task: labeled + unlabeled + validation exceed the 60000 training images"},
      {kSeeds + "selection: {kind: roulette}\n", "selection.kind: expected one of truncation, tournament, aging, got 'roulette'"},
      {kSeeds + "cluster: {group_size: -2}\n", "cluster.group_size: expected a positive integer"},
      {"run: {name: x}\n", "seeds: expected a list of seed genomes"},
      {"seeds: [genomes/missing.yaml]\n", "seeds[0]"},
      {"seeds: [{architecture: [{dense: {units: 7}}]}]\n", "seeds[0]"},
      {kSeeds + "task: {kind: [1, 2]\n", "bad.yaml:3:1: invalid YAML"},
      {kSeeds + "run: {name: " + std::string(2 << 20, 'x') + "}\n", "bytes; the limit is 1048576"},
      {kSeeds + "run: {name: " + std::string(200, '[') + std::string(200, ']') + "}\n", "brackets nested"},
      {kSeeds + "design: {a: {b: {c: {d: {e: {f: {g: {h: {i: {j: {k: {l: {m: {n: {o: {p: {q: 1}}}}}}}}}}}}}}}}}\n",
       "levels deep; the limit is 16"},
      {kSeeds + "task: {kind: cifar}\n", "task.kind: expected one of fashion_mnist, surrogate, got 'cifar'"},
  };
  for (const auto& c : cases) {
    const std::string message = error_of(c.text);
    EXPECT_NE(message.find(c.expected), std::string::npos) << "manifest:\n" << c.text << "message: " << message
                                                           << "\nexpected to contain: " << c.expected;
  }
}
