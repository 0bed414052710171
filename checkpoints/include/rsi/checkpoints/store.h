// rsi::checkpoints — the HDF5 lineage store. One file per generation (gen-N.h5) in the run
// directory, written by the coordinator alone: run attributes, and one group per model with its
// genome, weights (chunked, Fletcher32), metrics, parents, design operator and designer genes, data
// split fingerprint, failure reason and provenance hash. A SHA-256 hash chain links models to their
// parents and generations to the previous generation. Files are written as gen-N.h5.tmp, fsynced,
// renamed into place and the directory fsynced; LATEST names the newest durable generation.
// A generation is durable once on_generation returns; the SHA-256 of its file's bytes (recorded in
// LATEST and in the next generation's file) and the LATEST update finish on a background thread,
// joined before the next generation is written, in flush() / on_finish() and in the destructor.
// The layout is documented in checkpoints/FORMAT.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <future>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/scheduler/record.h"

namespace rsi::checkpoints {

struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The generations before the resume point do not verify (a changed digest, a broken chain, a
// missing file): a resume refuses to build on them (rsi run: exit code 3). Nothing was changed.
struct DamagedHistory : CheckpointError {
  using CheckpointError::CheckpointError;
};

// Run-wide attributes written into every generation file.
struct RunInfo {
  std::string run_name;
  std::string manifest_text;
  std::string manifest_hash;
  std::string program_version;
  std::string git_commit;
  int ranks = 1, group_size = 1, threads_per_rank = 1;
  std::string hosts;          // comma-separated
  std::string cpu_kernels;    // "host:family" per host, comma-separated (kernels/cpu_gemm.h); "" in older files
  std::string cuda_settings;  // "conv=im2col tf32=0 graphs=0 fuse=1" on a GPU run; "" on the CPU and in older files
  std::string start_time;     // ISO 8601 UTC
  std::uint64_t split_fingerprint = 0;
  // The networks' input (attribute "input" = [channels, height, width, classes], written when it is
  // not Fashion-MNIST's 1x28x28, 10 classes); and, for a task of kind images, where its data lies
  // (runtime::image_task_yaml) and the data's fingerprints ("train=<fnv1a64 hex> test=<...>").
  models::InputSpec input;
  std::string data;
  std::string data_fingerprint;
};

// Which models keep their weights in a generation file. Lineage metadata is never dropped.
struct Retention {
  int keep_last_generations = 2;  // weights of every model of the last K generations (0 = all)
  bool keep_population = true;    // weights of every member of the population after selection
};

// The state the loop needs to continue after generation `generation`.
// The lineage format this rsi writes (FORMAT.md, "Format versions"). It reads 1 and 2; a lineage
// keeps the version it started with, so that a resumed run goes on exactly as it began.
inline constexpr int kLineageFormatVersion = 2;

struct ResumePoint {
  int generation = -1;                     // last durable generation (-1: none)
  int format_version = kLineageFormatVersion;  // of that generation's file; a new lineage is written in it
  // The summary revision (scheduler/record.h) a new lineage is written in; -1: this rsi's newest. A
  // resumed lineage keeps its own (read from the file), whatever this says.
  int summary_revision = -1;
  std::uint64_t next_model_id = 1;
  std::vector<scheduler::ModelRecord> population;  // with weights
  std::string generation_hash;             // hex SHA-256 of that generation (the chain's head)
};

class LineageStore final : public scheduler::GenerationSink {
 public:
  // Opens (creating) the run directory. Existing generation files are left as they are; writing
  // continues after the chain head `resume.generation_hash`.
  LineageStore(std::filesystem::path dir, RunInfo info, Retention retention, const ResumePoint& resume = {});
  // Joins the background work; an error in it that nobody has seen yet goes to stderr.
  ~LineageStore() override;
  LineageStore(const LineageStore&) = delete;
  LineageStore& operator=(const LineageStore&) = delete;
  // Returns once the generation's file is durable (renamed into place, directory fsynced).
  void on_generation(const scheduler::GenerationRecord& record) override;
  // Waits for the last generation's background work (its file's SHA-256, LATEST); rethrows its
  // error as a CheckpointError (every call, once it failed). After it, LATEST names the newest
  // generation.
  void flush();
  // flush(), but an error goes to stderr instead: the loop calls on_finish while it stops the
  // workers, and a throw there would stop them twice. flush() still rethrows it afterwards.
  void on_finish() override;
  // Seconds until the last generation was durable, and the bytes written (monitoring, benchmarks).
  double last_write_seconds() const { return last_seconds_; }
  std::uint64_t last_write_bytes() const { return last_bytes_; }

 private:
  std::filesystem::path dir_;
  RunInfo info_;
  Retention retention_;
  std::string chain_head_;
  std::vector<std::uint64_t> population_;
  // Provenance of the population after the last generation written: children name these hashes.
  struct Provenance {
    std::string hash;
    std::vector<std::string> parent_hashes;
  };
  std::map<std::uint64_t, Provenance> provenance_;
  // Digests of the weights of population members, by id, with the weights object they were taken
  // from: a member carried over unchanged is not hashed again.
  struct WeightDigests {
    const scheduler::Weights* weights = nullptr;
    std::string params, state;
  };
  std::map<std::uint64_t, WeightDigests> weight_digests_;
  int last_generation_ = -1;
  int format_version_ = kLineageFormatVersion;  // of the files written: the resume point's
  int summary_revision_ = 0;  // of the files written: the resume point's, or this rsi's newest
  std::string last_file_sha256_;  // of the newest generation file's bytes (valid after join_background)
  // The newest file's SHA-256, computed with LATEST's update on a background thread.
  std::future<std::string> background_;
  std::string background_error_;  // once the background work failed, the store refuses to go on
  bool background_error_printed_ = false;
  void join_background();
  // on_generation's steps (store.cpp), over one generation's Write.
  struct Write;
  void prepare_children(Write& w) const;
  void prepare_population(Write& w) const;
  bool weights_in_main(const Write& w, const scheduler::ModelRecord& m) const;
  void start_hashing(Write& w);
  void check_carried(Write& w);
  void write_sidecar(Write& w);
  void write_generation_file(Write& w);
  void write_children(Write& w, std::int64_t file);
  void write_population(Write& w, std::int64_t file) const;
  void start_background(const Write& w);
  void expire_sidecars(int generation) const;
  void advance(Write& w);
  double last_seconds_ = 0.0;
  std::uint64_t last_bytes_ = 0;
};

// ---- reading ----

struct StoredModel {
  scheduler::ModelRecord record;  // weights set when the file kept them
  std::string provenance_hash;    // hex SHA-256 as stored
};

struct StoredGeneration {
  int generation = 0;
  int format_version = kLineageFormatVersion;
  int summary_revision = 0;  // which summary fields added later the file has (scheduler/record.h)
  RunInfo run;
  scheduler::GenerationRecord record;  // children (without weights) and generation metrics
  std::vector<StoredModel> models;     // children of this generation, in id order
  std::vector<scheduler::ModelRecord> population;  // after selection, with weights
  std::uint64_t next_model_id = 1;
  std::string previous_hash, generation_hash;
};

// Reads one generation file (throws CheckpointError naming the file and what is wrong). With
// weights false, no weights are read (models carry none, the sidecar is not opened): what a resume
// needs of the history, which a damaged weights dataset or sidecar of an old generation must not block.
StoredGeneration read_generation(const std::filesystem::path& file, bool weights = true);

// A float64 attribute of a generation file's root, when the file has one (nullopt otherwise): for
// generation fields that newer lineages carry and older ones lack (rsi compare reads
// predictor_rank_correlation so). Throws CheckpointError when the file does not open.
std::optional<double> read_generation_real(const std::filesystem::path& file, const std::string& name);

// Generation files present in a run directory, in order.
std::vector<std::filesystem::path> generation_files(const std::filesystem::path& dir);

// Recomputes every hash from the stored bytes. Each problem names generation, model and field.
// LATEST must name the newest generation file (missing, or naming an older one, is a problem:
// a crash between a file's rename and LATEST's update leaves it so until the next resume).
struct VerifyReport {
  int generations = 0;
  int last_good_generation = -1;  // the longest verified prefix of the chain
  std::string latest;             // what LATEST says, and whether it agrees with the files
  std::vector<std::string> problems;
  bool ok() const { return problems.empty(); }
};
VerifyReport verify_run(const std::filesystem::path& dir);

// The newest generation whose file and chain verify; falls back past a truncated or corrupted
// newest file (reporting it in `warnings`, moving it aside to gen-N.h5.corrupt). Every generation
// before it must be there and verify in its metadata (digests of attributes, genomes and metrics,
// provenance and generation hashes, the chain); otherwise DamagedHistory is thrown, naming file and
// field, before anything in the directory is changed. Weights and file bytes of older generations
// are not read (rsi verify does): a resume needs the newest file's population only.
ResumePoint find_resume_point(const std::filesystem::path& dir, std::vector<std::string>* warnings = nullptr);

// Standalone model file (rsi export) and reading it back (rsi eval).
void export_model(const std::filesystem::path& run_dir, std::uint64_t model_id, const std::filesystem::path& out);
// The same model as an ONNX file (rsi export --format onnx; FORMAT.md, "ONNX export"): opset 13,
// standard operators, input "image" [N, C, H, W] (the run's input, RunInfo::input: [N, 1, 28, 28]
// for Fashion-MNIST; float pixels in [0, 1]), output "logits" [N, classes], the genome and the run in metadata_props; checked with ONNX's checker before it is
// written (.tmp, fsync, rename). Throws CheckpointError for a model without weights, and when this
// rsi was built without ONNX (libonnx-dev) saying how to get it.
void export_onnx(const std::filesystem::path& run_dir, std::uint64_t model_id, const std::filesystem::path& out);
// Whether this rsi was built with the ONNX exporter.
bool onnx_export_available();
scheduler::ModelRecord read_exported_model(const std::filesystem::path& file);
// The run an exported model came from (its input shape and data, for rsi eval).
RunInfo read_exported_run(const std::filesystem::path& file);

}  // namespace rsi::checkpoints
