// Run manifests: the YAML file that defines an experiment, loaded into a validated RunConfig.
// Unknown keys are errors (with a did-you-mean); every message names file:line:column.
// The full schema is documented in experiments/README.md.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "rsi/checkpoints/store.h"
#include "rsi/scheduler/loop.h"

namespace rsi::runtime {

struct ManifestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RunConfig {
  std::string name = "run";
  std::string manifest_path;
  std::string manifest_text;
  std::string manifest_hash;   // FNV-1a 64 of the text, hex
  std::string output_directory;  // default runs/<name>
  checkpoints::Retention retention;
  scheduler::LoopConfig loop;
};

RunConfig load_manifest(const std::string& path);
// With load_seeds false the seed genomes are not read (rsi reproduce takes them from the stored run).
RunConfig parse_manifest(const std::string& text, const std::string& source, const std::string& base_dir,
                         bool load_seeds = true);

// The resolved manifest: every key of the schema with its value (defaults filled in), as YAML.
// Seeds are listed as their canonical genome text.
std::string resolved_yaml(const RunConfig& config);

// The keys whose values differ between two manifest texts, one "  key: old -> new" line each
// (empty when the manifests agree on every key).
std::string manifest_differences(const std::string& stored, const std::string& current);

}  // namespace rsi::runtime
