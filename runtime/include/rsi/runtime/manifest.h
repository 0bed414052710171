// Run manifests: the YAML file that defines an experiment, loaded into a validated RunConfig.
// Unknown keys are errors (with a did-you-mean); every message names file:line:column.
// The full schema is documented in experiments/README.md.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

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
  scheduler::LoopConfig loop;
};

RunConfig load_manifest(const std::string& path);
RunConfig parse_manifest(const std::string& text, const std::string& source, const std::string& base_dir);

}  // namespace rsi::runtime
