// The lineage store's on-disk layout, shared by the writer (store.cpp) and the readers
// (reader.cpp): file names, canonical serialisations and SHA-256 digests, model groups, root
// attributes, and durable (fsync + rename) commits. FORMAT.md documents the same layout.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/scheduler/record.h"

namespace rsi::checkpoints::detail {

namespace fs = std::filesystem;

inline constexpr const char* kFormatName = "rsi-lineage";
inline constexpr const char* kSidecarFormatName = "rsi-lineage-weights";
inline constexpr const char* kModelFormatName = "rsi-model";
inline constexpr int kFormatVersion = kLineageFormatVersion;  // store.h

std::string generation_file_name(int generation);  // gen-000003.h5
std::string sidecar_file_name(int generation);     // gen-000003.weights.h5
// The generation number of a file named gen-NNNNNN.h5 (nothing for any other name).
std::optional<int> generation_of(const fs::path& file);
// The generation number of a sidecar named gen-NNNNNN.weights.h5.
std::optional<int> sidecar_generation_of(const fs::path& file);

std::string sha256_hex(const void* data, std::size_t size);
std::string sha256_hex(const std::string& text);

// The digests of one model's fields (hex SHA-256; params/state empty when the model had no weights).
struct ModelHashes {
  std::string metadata, genome, metrics, timing, params, state, provenance;
};
// Field digests of `m`; params/state come from m.weights, or from `stored` when m has none loaded.
ModelHashes field_hashes(const scheduler::ModelRecord& m, const ModelHashes* stored = nullptr);
// The provenance hash from field digests, the weights digest and the parents' provenance hashes.
std::string provenance_hash(const scheduler::ModelRecord& m, const ModelHashes& fields,
                            const std::vector<std::string>& parent_hashes);

// Strings as they can be stored (HDF5 strings end at a NUL byte: NULs become "\0").
std::string storable(const std::string& s);
scheduler::ModelRecord storable(const scheduler::ModelRecord& m);

// ---- model groups ----
// Writes group `name` (the model id in /models and /population, "model" in an exported file); its
// tensor table is that of the network on `input` (the run's, RunInfo::input).
void write_model(hid_t parent, const std::string& name, const scheduler::ModelRecord& m,
                 const std::vector<std::string>& parent_hashes, const ModelHashes& hashes, bool with_weights,
                 const models::InputSpec& input);
struct ModelGroup {
  scheduler::ModelRecord record;  // weights not loaded
  std::vector<std::string> parent_hashes;
  ModelHashes stored;        // the digests as stored
  bool has_weights = false;  // params and state datasets are in this group
  std::optional<std::string> tensors;  // the named-tensor table as stored (absent in older files)
  int format_version = kFormatVersion;  // of the file holding it (1: weights_digest from format 1's FNV basis)
};
// The named-tensor table of the network built from a genome's YAML (FORMAT.md, "Named tensors"),
// with its total parameter and state sizes; `error` says why when the genome builds no network
// (only synthetic records in tests: every trained model's genome built its network).
struct TensorTable {
  std::string text, error;
  std::int64_t params = 0, state = 0;
};
TensorTable tensor_table(const std::string& genome_yaml, const models::InputSpec& input);
// Problems of a stored table against the genome's on `input` (and of the weights' sizes against it when `w`).
std::vector<std::string> tensor_table_problems(const ModelGroup& mg, const scheduler::Weights* w,
                                               const models::InputSpec& input);
// Attributes, genome and metrics (throws CheckpointError naming the field).
ModelGroup read_model(hid_t group);
// The params and state datasets (throws CheckpointError "weights/params: ..." etc.).
std::shared_ptr<const scheduler::Weights> read_weights(hid_t group);
// A model of a run found for export: its group in the generation file it was born in (checked
// against every digest), its weights (null when it never had any: failed, refused, surrogate) from
// wherever retention kept them, the run's attributes and that file. Throws CheckpointError naming
// the run and model (not found, weights not kept, a digest mismatch).
struct ExportSource {
  ModelGroup group;
  std::shared_ptr<const scheduler::Weights> weights;
  RunInfo run;
  fs::path file;
};
ExportSource find_export_source(const fs::path& run_dir, std::uint64_t model_id);
// Sidecar groups: the weights and the digests that identify them.
void write_sidecar_model(hid_t parent, const scheduler::ModelRecord& m, const ModelHashes& hashes);

// SHA-256 of a float32 buffer's bytes.
std::string floats_digest(const std::vector<float>& values);

// ---- root attributes of a generation file ----
struct Root {
  int format_version = kFormatVersion;  // 1 or 2 (FORMAT.md, "Format versions"); a lineage keeps its first file's
  int summary_revision = 0;  // which fields added later the summary has (scheduler/record.h); 0: none
  RunInfo run;
  Retention retention;
  scheduler::GenerationRecord summary;  // generation metrics, population ids, next_model_id; no models
  std::string previous_hash, generation_hash, summary_sha256, run_sha256;
  // SHA-256 of the previous generation file's bytes and of this generation's sidecar ("" if none):
  // any changed byte of a file, even where no data lives, is noticed.
  std::string previous_file_sha256, sidecar_sha256;
};
std::string summary_digest(const scheduler::GenerationRecord& g);
// "generation=<16 hex>,kind=...,model_id=...,reason=...,who=..." : a short SHA-256 per field of a
// governance event (stored per event, so verify names the field that changed).
std::string event_field_digests(const scheduler::GovernanceEvent& e);
// Run attributes, retention, timing and the file digests: verified, not chained.
std::string run_digest(const Root& root);
struct IdHash {
  std::uint64_t id;
  std::string hash;
};
std::string generation_hash(int generation, const std::string& previous, const std::vector<IdHash>& children,
                            const std::vector<IdHash>& population, const std::string& summary_sha256);
void write_run(hid_t loc, const RunInfo& run);
RunInfo read_run(hid_t loc);
void write_root(hid_t file, const Root& root);
Root read_root(hid_t file);

// SHA-256 of a whole file's bytes.
std::string file_sha256(const fs::path& file);
// The same from a stream opened earlier (the file may have been renamed since).
std::string stream_sha256(std::ifstream& in, const fs::path& file);

// LATEST: "<generation> <file> <generation hash> <file sha256>\n".
struct Latest {
  int generation = -1;  // -1: unreadable
  std::string file, hash, file_sha256;
};
std::string latest_text(int generation, const std::string& generation_hash, const std::string& file_sha256);
std::optional<Latest> read_latest(const fs::path& dir);  // nothing when there is no LATEST

// ---- durability ----
void fsync_path(const fs::path& path, bool directory);
// fsync `tmp`, rename it to `final`, fsync the directory.
void commit(const fs::path& tmp, const fs::path& final);
// Writes `text` to path + ".tmp" and commits it.
void write_file_durably(const fs::path& path, const std::string& text);

}  // namespace rsi::checkpoints::detail
