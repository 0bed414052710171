// Run manifests: the YAML file that defines an experiment, loaded into a validated RunConfig.
// Unknown keys are errors (with a did-you-mean); every message names file:line:column.
// The schema is described once, in runtime/src/manifest_schema.h; experiments/README.md documents it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/scheduler/loop.h"

namespace rsi::runtime {

struct ManifestError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// cluster: keys that shape the job, not the lineage (the determinism contract holds whatever the
// number of ranks). `rsi submit` renders them into sbatch options (runtime/src/submit_command.cpp).
struct ClusterConfig {
  int nodes = 1;
  int gpus_per_node = 0;        // 0: CPU ranks
  int tasks_per_node = 1;       // ranks per node; one per GPU when gpus_per_node > 0
  std::string time_limit = "01:00:00";  // [D-]HH:MM:SS, Slurm's --time
  std::string partition;        // empty: the cluster's default
  std::string account;          // empty: the user's default
  int signal_seconds = 120;     // SIGUSR1 this long before the time limit: stop at a safe point, requeue
  // Where ranks train (runtime/src/device.h): cpu, auto (a GPU when every rank sees one, else the
  // CPU with a warning) or cuda (GPUs required: exit code 3 without). Unlike the keys above it is
  // part of the lineage: GPU kernels do not reproduce the CPU's bits.
  std::string device = "cpu";
  // CPU kernel family (kernels/include/rsi/kernels/cpu_gemm.h): best (what each CPU supports best),
  // avx512, avx2 or generic. Not part of the lineage: every family computes the same bits, so a run
  // may resume on, or spread over, CPUs of other kinds. A rank whose CPU lacks a pinned family stops
  // the run before training (exit code 3).
  std::string cpu_kernels = "best";
  // GPU settings (kernels/README.md), for runs that train on GPUs. The environment variable of
  // each (RSI_CUDA_CONV, RSI_CUDA_TF32, RSI_CUDA_GRAPHS, RSI_CUDA_FUSE) overrides it; what applied
  // is recorded in the lineage (run attribute cuda_settings). conv and tf32 change the bits (part
  // of the lineage); graphs and fuse only the speed (free on resume).
  std::string cuda_conv = "im2col";  // im2col | cudnn
  bool cuda_tf32 = false;            // TF32 tensor cores for FP32 GEMMs and convolutions
  bool cuda_graphs = false;          // replay each full batch's step from a CUDA graph
  bool cuda_fuse = true;             // bias applied in the activation's pass
};

// The GPU settings that apply: each cluster.cuda_* value, unless its environment variable is set
// (then that). Sets the variables the kernels read (before any CUDA context or network exists) and
// returns "conv=im2col tf32=0 graphs=0 fuse=1" for the lineage; `overrides` gets a line per
// variable that overrode the manifest.
std::string apply_cuda_settings(const ClusterConfig& cluster, std::vector<std::string>* overrides = nullptr);

// monitoring: the Prometheus exporter (monitoring/README.md). Not part of the lineage: a resume may
// change it.
struct MonitoringConfig {
  std::string bind = "127.0.0.1";  // address the endpoints listen on; 0.0.0.0 on multi-node jobs
  int port = 0;                    // 0: no exporter
  std::string targets_file;        // Prometheus file_sd JSON; "": <run directory>/prometheus-targets.json (after --out)
  double linger_seconds = 0;       // keep the endpoint up this long after the run, for a last scrape
};

struct RunConfig {
  std::string name = "run";
  std::string manifest_path;
  std::string manifest_text;
  std::string manifest_hash;   // FNV-1a 64 of the text, hex
  std::string output_directory;  // default runs/<name>
  checkpoints::Retention retention;
  scheduler::LoopConfig loop;
  ClusterConfig cluster;
  MonitoringConfig monitoring;
  // rsi reproduce: the original lineage's summary revision (scheduler/record.h), so the reproduction
  // stores the same summary fields; -1 (a run from a manifest): this rsi's newest.
  int summary_revision = -1;
};

// FNV-1a 64 of a manifest's text, hex (kernels/fnv1a.h); with format1_basis, as lineage format 1
// computed it (checkpoints/FORMAT.md), for a run resumed in that format.
std::string manifest_hash(const std::string& text, bool format1_basis = false);

// A Slurm time limit "[D-]HH:MM:SS" in seconds; -1 when the text is not one.
long slurm_time_seconds(const std::string& text);

RunConfig load_manifest(const std::string& path);
// With load_seeds false the seed genomes are not read (rsi reproduce takes them from the stored run)
// and an images task's data is not probed (its input stays the default).
RunConfig parse_manifest(const std::string& text, const std::string& source, const std::string& base_dir,
                         bool load_seeds = true);

// Every key of the schema (runtime/src/manifest_schema.h), dotted ("design.predictor.ridge"), in the
// order resolved_yaml writes them; "seeds" (a list) is one key.
std::vector<std::string> manifest_keys();

// The resolved manifest: every key of the schema with its value (defaults filled in), as YAML.
// Seeds are listed as their canonical genome text.
std::string resolved_yaml(const RunConfig& config);

// Kind images: where the data lies (train, test, layout, classes; absolute paths) as one line of
// YAML, kept in the lineage (checkpoints::RunInfo::data) so that rsi eval and rsi reproduce find the
// data whatever the directory; and read back into a task.
std::string image_task_yaml(const scheduler::TaskSpec& task);
void apply_image_task_yaml(const std::string& text, const std::string& source, scheduler::TaskSpec& task);

// The keys whose values differ between two manifest texts, one "  key: old -> new" line each
// (empty when the manifests agree on every key).
std::string manifest_differences(const std::string& stored, const std::string& current);

}  // namespace rsi::runtime
