// `rsi submit`: the sbatch script of a manifest, rendered from slurm/rsi.sbatch.in (compiled into
// the binary) and submitted with sbatch. See slurm/README.md.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/runtime/manifest.h"

namespace rsi::runtime {

// What the job runs and where; every path absolute, since the job starts elsewhere and later.
struct SubmitJob {
  std::string manifest;    // the manifest file
  std::string rsi;         // the rsi executable the job runs
  std::string workdir;     // the job's working directory (relative output paths resolve here)
  std::string run_dir;     // the run directory: Slurm's output files go here
  std::string out;         // --out passed to `rsi run` ("" = the manifest's output.directory)
  std::vector<std::string> sbatch_args;  // extra sbatch options, one #SBATCH line each (e.g. --qos=high)
};

// A template or value that cannot be rendered (an unknown placeholder, a path sbatch cannot take).
struct SubmitError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// slurm/rsi.sbatch.in as it was when this binary was built.
const std::string& sbatch_template();

// Fills the @NAME@ placeholders of `templ`. In #SBATCH lines a value is inserted as it is (it must be
// one word without shell metacharacters) and a line whose value is empty is left out; elsewhere a
// value is single-quoted for the shell. Throws SubmitError.
std::string render_sbatch(const RunConfig& config, const SubmitJob& job, const std::string& templ = sbatch_template());

}  // namespace rsi::runtime
