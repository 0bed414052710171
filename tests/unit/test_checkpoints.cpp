// Tests of the HDF5 lineage store (checkpoints/store.h) on synthetic GenerationRecords: round trip
// (genome, metrics, weights bitwise, parents, status), hash chain and verify, a changed metric and a
// flipped weight byte named by generation, model and field, a truncated newest file skipped on
// resume, leftover .tmp files, retention of weights (sidecars, population), resume continuity,
// export / read_exported_model, weight chunks bit for bit those of HDF5's Fletcher32 filter, and the
// background file digest + LATEST (a lagging LATEST, a kill in that window, errors at the join),
// the named-tensor table (written, exported, verified against the genome) and the ONNX export.
//   build-dir/tests/test_checkpoints            (about 1 s)
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <type_traits>
#include <optional>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/models/genome.h"
#include "rsi/models/network.h"
#include "rsi/scheduler/record.h"

namespace {

namespace fs = std::filesystem;
using rsi::checkpoints::CheckpointError;
using rsi::checkpoints::LineageStore;
using rsi::checkpoints::ResumePoint;
using rsi::checkpoints::Retention;
using rsi::checkpoints::RunInfo;
using rsi::scheduler::GenerationRecord;
using rsi::scheduler::ModelRecord;
using rsi::scheduler::Weights;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "rsi-ckpt-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

RunInfo run_info(const std::string& host = "node01") {
  RunInfo r;
  r.run_name = "synthetic";
  r.manifest_text = "name: synthetic\nseed: 7\n";
  r.manifest_hash = "abc123";
  r.program_version = "0.1.0";
  r.git_commit = "deadbeef";
  r.ranks = 4;
  r.group_size = 2;
  r.threads_per_rank = 1;
  r.hosts = host;
  r.start_time = "2024-01-01T00:00:00Z";
  r.split_fingerprint = 0x1234567890abcdefULL;
  return r;
}

// Weights whose bytes are unique to the model (so a test can find them in a file).
std::shared_ptr<const Weights> weights_for(std::uint64_t id) {
  auto w = std::make_shared<Weights>();
  const std::size_t n = id == 1 ? 300'000 : 2'000 + 37 * id;  // model 1 spans two chunks
  w->params.resize(n);
  for (std::size_t i = 0; i < n; ++i) w->params[i] = std::sin(static_cast<float>(id * 100'003 + i)) * 0.5f;
  w->state.resize(id % 3 == 0 ? 0 : 64);  // some models have no state
  for (std::size_t i = 0; i < w->state.size(); ++i) w->state[i] = 1.0f + static_cast<float>(id) / (i + 1.0f);
  return w;
}

ModelRecord make_model(std::uint64_t id, int generation, std::vector<std::uint64_t> parents, double parent_val) {
  ModelRecord m;
  m.id = id;
  m.generation = generation;
  m.parents = std::move(parents);
  m.op = m.parents.empty() ? "seed" : (m.parents.size() == 2 ? "crossover" : "widen");
  m.description = m.parents.empty() ? "seed genome" : "widen block 1 dense 64 -> " + std::to_string(64 + id);
  m.genome_yaml = "name: m" + std::to_string(id) + "\nlayers:\n  - dense: " + std::to_string(64 + id) + "\n";
  m.designer_lineage = m.parents.empty() ? id : 1;
  m.inherited = !m.parents.empty();
  m.function_preserving = m.parents.size() == 1;
  m.parent_val_accuracy = parent_val;
  auto& x = m.metrics;
  x.val_accuracy = 0.5 + 0.0371 * static_cast<double>((id * 7) % 11) + 1e-9 * static_cast<double>(id);
  x.val_loss = 1.0 / (1.0 + static_cast<double>(id));
  x.test_accuracy = x.val_accuracy - 0.01;
  x.test_loss = x.val_loss + 0.02;
  for (int c = 0; c < 10; ++c) {
    x.val_per_class.push_back(0.4 + 0.05 * c + 1e-6 * static_cast<double>(id));
    x.test_per_class.push_back(0.41 + 0.05 * c + 1e-6 * static_cast<double>(id));
  }
  x.parameters = static_cast<std::int64_t>(1000 * id);
  x.flops = static_cast<std::int64_t>(2000 * id + 1);
  x.wall_seconds = 1.5 + static_cast<double>(id);
  x.samples = static_cast<std::int64_t>(50'000 + id);
  x.pseudo_label_accuracy = m.parents.empty() ? -1.0 : 0.75;
  m.weights = weights_for(id);
  m.weights_digest = rsi::scheduler::weights_digest(*m.weights);
  return m;
}

// A small run: three children per generation; one child of every generation fails (no weights),
// generation 1 also has a refused child; the population keeps the two best by validation.
std::vector<GenerationRecord> synthetic_run(int generations, double wall_offset = 0.0) {
  std::vector<GenerationRecord> out;
  std::vector<ModelRecord> population;
  std::uint64_t next = 1;
  for (int g = 0; g < generations; ++g) {
    GenerationRecord r;
    r.generation = g;
    for (int k = 0; k < 3; ++k) {
      std::vector<std::uint64_t> parents;
      double parent_val = 0.0;
      if (g > 0) {
        parents = {population[static_cast<std::size_t>(k) % population.size()].id};
        if (k == 1) parents = {population[0].id, population[1].id};
        parent_val = population[static_cast<std::size_t>(k) % population.size()].metrics.val_accuracy;
      }
      ModelRecord m = make_model(next++, g, parents, parent_val);
      m.metrics.wall_seconds += wall_offset;
      if (k == 2) {
        m.status = g == 1 ? ModelRecord::Status::Refused : ModelRecord::Status::Failed;
        m.failure = g == 1 ? "red line: 2.1e9 FLOPs > 1e9" : "diverged: loss is NaN at step 17";
        m.weights.reset();
        m.weights_digest.clear();
        m.metrics = {};
      }
      r.children.push_back(m);
    }
    std::vector<ModelRecord> pool = population;
    for (const auto& c : r.children)
      if (c.trained()) pool.push_back(c);
    std::sort(pool.begin(), pool.end(), [](const ModelRecord& a, const ModelRecord& b) {
      return a.metrics.val_accuracy > b.metrics.val_accuracy;
    });
    pool.resize(2);
    std::sort(pool.begin(), pool.end(), [](const ModelRecord& a, const ModelRecord& b) { return a.id < b.id; });
    population = pool;
    for (const auto& m : population) r.population.push_back(m.id);
    r.population_models = population;
    r.next_model_id = next;
    r.best_val = std::max(population[0].metrics.val_accuracy, population[1].metrics.val_accuracy);
    r.best_id =
        population[0].metrics.val_accuracy > population[1].metrics.val_accuracy ? population[0].id : population[1].id;
    r.median_val = (population[0].metrics.val_accuracy + population[1].metrics.val_accuracy) / 2;
    r.best_test = r.best_val - 0.01;
    r.median_test = r.median_val - 0.01;
    r.best_model_test = r.best_test;
    r.gain = g == 0 ? 0.0 : 0.001 * g;
    r.design_skill = 0.002 * g;
    if (g > 0) r.design_skill_by_lineage = {{1, 0.003}, {2, -0.001}};
    r.diversity = 0.25 + 0.01 * g;
    r.trained = 2;
    r.failed = g == 1 ? 0 : 1;
    r.refused = g == 1 ? 1 : 0;
    r.seconds = 12.5 + g + wall_offset;
    r.models_per_second = 0.24;
    out.push_back(r);
  }
  return out;
}

void write_run(const fs::path& dir, const std::vector<GenerationRecord>& records, Retention retention = {},
               RunInfo info = run_info()) {
  LineageStore store(dir, info, retention);
  for (const auto& r : records) store.on_generation(r);
}

void expect_same_model(const ModelRecord& want, const ModelRecord& got, bool with_weights) {
  SCOPED_TRACE("model " + std::to_string(want.id));
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.generation, want.generation);
  EXPECT_EQ(got.parents, want.parents);
  EXPECT_EQ(got.genome_yaml, want.genome_yaml);
  EXPECT_EQ(got.op, want.op);
  EXPECT_EQ(got.description, want.description);
  EXPECT_EQ(got.designer_lineage, want.designer_lineage);
  EXPECT_EQ(got.status, want.status);
  EXPECT_EQ(got.failure, want.failure);
  EXPECT_EQ(got.inherited, want.inherited);
  EXPECT_EQ(got.function_preserving, want.function_preserving);
  EXPECT_EQ(got.parent_val_accuracy, want.parent_val_accuracy);
  EXPECT_EQ(got.weights_digest, want.weights_digest);
  const auto &a = want.metrics, &b = got.metrics;
  EXPECT_EQ(b.val_accuracy, a.val_accuracy);
  EXPECT_EQ(b.val_loss, a.val_loss);
  EXPECT_EQ(b.test_accuracy, a.test_accuracy);
  EXPECT_EQ(b.test_loss, a.test_loss);
  EXPECT_EQ(b.val_per_class, a.val_per_class);
  EXPECT_EQ(b.test_per_class, a.test_per_class);
  EXPECT_EQ(b.parameters, a.parameters);
  EXPECT_EQ(b.flops, a.flops);
  EXPECT_EQ(b.wall_seconds, a.wall_seconds);
  EXPECT_EQ(b.samples, a.samples);
  EXPECT_EQ(b.pseudo_label_accuracy, a.pseudo_label_accuracy);
  if (!with_weights) return;
  ASSERT_EQ(static_cast<bool>(got.weights), static_cast<bool>(want.weights));
  if (!want.weights) return;
  ASSERT_EQ(got.weights->params.size(), want.weights->params.size());
  ASSERT_EQ(got.weights->state.size(), want.weights->state.size());
  EXPECT_EQ(0, std::memcmp(got.weights->params.data(), want.weights->params.data(), want.weights->params.size() * 4));
  EXPECT_EQ(0, std::memcmp(got.weights->state.data(), want.weights->state.data(), want.weights->state.size() * 4));
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Offset of the only occurrence of `needle` in the file (fails the test otherwise).
std::size_t unique_offset(const std::string& haystack, const void* needle, std::size_t n) {
  const std::string pattern(static_cast<const char*>(needle), n);
  const std::size_t first = haystack.find(pattern);
  EXPECT_NE(first, std::string::npos);
  EXPECT_EQ(haystack.find(pattern, first + 1), std::string::npos) << "the pattern is not unique in the file";
  return first;
}

bool contains(const std::vector<std::string>& lines, const std::string& a, const std::string& b = "") {
  for (const auto& l : lines)
    if (l.find(a) != std::string::npos && l.find(b) != std::string::npos) return true;
  return false;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

// The two runs' generation files carry the same generation hashes, one for one.
void expect_same_generation_hashes(const std::filesystem::path& run, const std::filesystem::path& reference) {
  const auto a = rsi::checkpoints::generation_files(run);
  const auto b = rsi::checkpoints::generation_files(reference);
  ASSERT_EQ(a.size(), b.size());
  for (std::size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(rsi::checkpoints::read_generation(a[i]).generation_hash,
              rsi::checkpoints::read_generation(b[i]).generation_hash)
        << "generation " << i;
}

TEST(Checkpoints, RoundTripThreeGenerations) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  write_run(tmp.path(), records, Retention{0, true});

  const auto files = rsi::checkpoints::generation_files(tmp.path());
  ASSERT_EQ(files.size(), 3u);
  EXPECT_EQ(files[0].filename(), "gen-000000.h5");
  EXPECT_EQ(files[2].filename(), "gen-000002.h5");
  for (const auto& e : fs::directory_iterator(tmp.path()))
    EXPECT_NE(e.path().extension(), ".tmp") << e.path() << " left behind";

  std::string previous;
  for (int g = 0; g < 3; ++g) {
    SCOPED_TRACE("generation " + std::to_string(g));
    const auto& want = records[static_cast<std::size_t>(g)];
    const auto got = rsi::checkpoints::read_generation(files[static_cast<std::size_t>(g)]);
    EXPECT_EQ(got.generation, g);
    EXPECT_EQ(got.run.hosts, "node01");
    EXPECT_EQ(got.run.manifest_text, run_info().manifest_text);
    EXPECT_EQ(got.run.split_fingerprint, run_info().split_fingerprint);
    EXPECT_EQ(got.run.ranks, 4);
    EXPECT_EQ(got.next_model_id, want.next_model_id);
    EXPECT_EQ(got.previous_hash, previous);
    EXPECT_EQ(got.generation_hash.size(), 64u);
    previous = got.generation_hash;
    EXPECT_EQ(got.record.population, want.population);
    EXPECT_EQ(got.record.best_val, want.best_val);
    EXPECT_EQ(got.record.best_id, want.best_id);
    EXPECT_EQ(got.record.design_skill_by_lineage, want.design_skill_by_lineage);
    EXPECT_EQ(got.record.seconds, want.seconds);
    EXPECT_EQ(got.record.refused, want.refused);
    ASSERT_EQ(got.models.size(), want.children.size());
    ASSERT_EQ(got.record.children.size(), want.children.size());
    for (std::size_t i = 0; i < want.children.size(); ++i) {
      expect_same_model(want.children[i], got.models[i].record, true);  // keep_last_generations 0: all weights
      expect_same_model(want.children[i], got.record.children[i], false);
      EXPECT_EQ(got.models[i].provenance_hash.size(), 64u);
    }
    ASSERT_EQ(got.population.size(), want.population_models.size());
    for (std::size_t i = 0; i < want.population_models.size(); ++i)
      expect_same_model(want.population_models[i], got.population[i], true);
  }
  // LATEST: generation, file, generation hash, SHA-256 of the file's bytes.
  const std::string latest = slurp(tmp.path() / "LATEST");
  EXPECT_EQ(latest.rfind("2 gen-000002.h5 " + previous + " ", 0), 0u) << latest;
  EXPECT_EQ(latest.size(), std::string("2 gen-000002.h5 ").size() + 64 + 1 + 64 + 1) << latest;

  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  EXPECT_EQ(report.generations, 3);
  EXPECT_EQ(report.last_good_generation, 2);
}

TEST(Checkpoints, HashesIgnoreHostsAndTimingButNotResults) {
  TempDir a, b, c;
  write_run(a.path(), synthetic_run(2));
  write_run(b.path(), synthetic_run(2, /*wall_offset=*/3.25), {}, run_info("node07,node08"));
  auto changed = synthetic_run(2);
  changed[1].children[0].metrics.val_accuracy += 1e-12;  // a result, not a timing
  write_run(c.path(), changed);
  const auto fa = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(a.path()).back());
  const auto fb = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(b.path()).back());
  const auto fc = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(c.path()).back());
  EXPECT_EQ(fa.generation_hash, fb.generation_hash);
  EXPECT_NE(fa.generation_hash, fc.generation_hash);
  EXPECT_EQ(fa.previous_hash, fc.previous_hash);
}

// A child of generation 1 that was not selected (its values are stored once, in gen-000001.h5).
const ModelRecord& unselected_child(const GenerationRecord& r) {
  for (const auto& c : r.children)
    if (c.trained() && std::find(r.population.begin(), r.population.end(), c.id) == r.population.end()) return c;
  throw std::runtime_error("no unselected child");
}

// An edit through the HDF5 API (as h5py would make it): the file stays a valid HDF5 file, only the
// recorded validation accuracy of model `id` differs.
void edit_val_accuracy(const fs::path& file, std::uint64_t id, double changed) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  const std::string path = "models/" + std::to_string(id) + "/metrics";
  const hid_t metrics = H5Gopen2(f, path.c_str(), H5P_DEFAULT);
  ASSERT_GE(metrics, 0);
  const hid_t a = H5Aopen(metrics, "val_accuracy", H5P_DEFAULT);
  ASSERT_GE(a, 0);
  EXPECT_GE(H5Awrite(a, H5T_NATIVE_DOUBLE, &changed), 0);
  H5Aclose(a);
  H5Gclose(metrics);
  EXPECT_GE(H5Fclose(f), 0);
}

TEST(Checkpoints, VerifyNamesAChangedMetric) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  write_run(tmp.path(), records);
  const ModelRecord& victim = unselected_child(records[1]);
  const fs::path file = tmp.path() / "gen-000001.h5";
  const double changed = victim.metrics.val_accuracy + 0.25;
  edit_val_accuracy(file, victim.id, changed);
  const auto g = rsi::checkpoints::read_generation(file);
  bool seen = false;
  for (const auto& m : g.models)
    if (m.record.id == victim.id) {
      EXPECT_EQ(m.record.metrics.val_accuracy, changed);  // the file really says something else now
      seen = true;
    }
  EXPECT_TRUE(seen);
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  ASSERT_FALSE(report.ok());
  const std::string where = "gen-000001.h5: model " + std::to_string(victim.id) + ": metrics: digest mismatch";
  EXPECT_TRUE(contains(report.problems, where)) << joined(report.problems);
  EXPECT_EQ(report.problems.size(), 1u) << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, 0);
}

TEST(Checkpoints, VerifyNamesAFlippedMetricByte) {
  // A byte flipped in the file itself: HDF5's metadata checksum catches it, named all the same.
  TempDir tmp;
  const auto records = synthetic_run(3);
  write_run(tmp.path(), records);
  const ModelRecord& victim = unselected_child(records[1]);
  const fs::path file = tmp.path() / "gen-000001.h5";
  std::string bytes = slurp(file);
  const double value = victim.metrics.val_accuracy;
  const std::size_t at = unique_offset(bytes, &value, sizeof value);
  bytes[at + 3] = static_cast<char>(bytes[at + 3] ^ 0x10);
  spit(file, bytes);
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(contains(report.problems, "gen-000001.h5: model " + std::to_string(victim.id) + ": metrics"))
      << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, 0);
  EXPECT_THROW(rsi::checkpoints::read_generation(file), CheckpointError);
}

TEST(Checkpoints, VerifyNamesAChangedGenome) {
  TempDir tmp;
  const auto records = synthetic_run(2);
  write_run(tmp.path(), records);
  const fs::path file = tmp.path() / "gen-000000.h5";
  std::string bytes = slurp(file);
  const std::string genome = records[0].children[0].genome_yaml;  // "name: m1\n..."
  const std::size_t at = unique_offset(bytes, genome.data(), genome.size());
  bytes[at + 7] = '9';
  spit(file, bytes);
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(contains(report.problems, "gen-000000.h5: model 1: genome: digest mismatch")) << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, -1);
}

TEST(Checkpoints, FlippedWeightByteIsCaughtAndResumeFallsBack) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  write_run(tmp.path(), records);
  // A member of generation 2's population, carried over from generation 1: the newest file holds a
  // copy of its weights (a resume needs only that file).
  const ModelRecord* victim = &records[2].population_models.back();
  ASSERT_LT(victim->generation, 2);
  const fs::path file = tmp.path() / "gen-000002.h5";
  std::string bytes = slurp(file);
  const std::size_t at = unique_offset(bytes, victim->weights->params.data() + 100, 32);
  bytes[at + 1] = static_cast<char>(bytes[at + 1] ^ 0x01);
  spit(file, bytes);

  const auto report = rsi::checkpoints::verify_run(tmp.path());
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(
      contains(report.problems, "gen-000002.h5: population model " + std::to_string(victim->id) + ": weights/params"))
      << joined(report.problems);
  EXPECT_TRUE(contains(report.problems, "Fletcher32")) << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, 1);
  EXPECT_THROW(rsi::checkpoints::read_generation(file), CheckpointError);

  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 1);
  EXPECT_EQ(point.next_model_id, records[1].next_model_id);
  EXPECT_TRUE(contains(warnings, "gen-000002.h5", "skipped")) << joined(warnings);
  EXPECT_TRUE(contains(warnings, "gen-000002.h5", "moved aside")) << joined(warnings);
  EXPECT_TRUE(fs::exists(tmp.path() / "gen-000002.h5.corrupt"));
  ASSERT_EQ(point.population.size(), records[1].population_models.size());
  for (std::size_t i = 0; i < point.population.size(); ++i)
    expect_same_model(records[1].population_models[i], point.population[i], true);
  EXPECT_TRUE(slurp(tmp.path() / "LATEST").rfind("1 gen-000001.h5 " + point.generation_hash, 0) == 0);
}

TEST(Checkpoints, EveryFlippedByteIsNoticed) {
  // Flips bytes all over a generation file (metadata, attributes, free space, data): verify names
  // the file every time (HDF5 checksums, the data digests, or the file digest recorded in the next
  // file), and never crashes. Small models keep the file small.
  TempDir tmp;
  auto records = synthetic_run(3);
  for (auto& r : records)
    for (auto* models : {&r.children, &r.population_models})
      for (auto& m : *models)
        if (m.weights) {
          auto w = std::make_shared<Weights>(*m.weights);
          w->params.resize(16);
          m.weights = w;
          m.weights_digest = rsi::scheduler::weights_digest(*w);
        }
  write_run(tmp.path(), records);
  for (const char* name : {"gen-000001.h5", "gen-000002.h5"}) {
    const fs::path file = tmp.path() / name;
    const std::string original = slurp(file);
    int by_file_digest = 0, flips = 0;
    for (std::size_t at = 0; at < original.size(); at += 211, ++flips) {
      std::string bytes = original;
      bytes[at] = static_cast<char>(bytes[at] ^ 0x04);
      spit(file, bytes);
      const auto report = rsi::checkpoints::verify_run(tmp.path());
      ASSERT_TRUE(contains(report.problems, name))
          << "a flipped byte at offset " << at << " of " << name << " went unnoticed";
      by_file_digest += contains(report.problems, name, "file digest mismatch");
    }
    spit(file, original);
    EXPECT_GT(by_file_digest, 0) << name;  // some bytes are read by no data check at all
    EXPECT_LT(by_file_digest, flips) << name;
  }
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
}

// ---- weights chunks written directly (H5Dwrite_chunk) with the store's own Fletcher32 ----

// The raw bytes of every stored chunk of a dataset (data, then its 4-byte Fletcher32).
std::vector<std::string> raw_chunks(hid_t file, const std::string& dataset) {
  const hid_t d = H5Dopen2(file, dataset.c_str(), H5P_DEFAULT);
  EXPECT_GE(d, 0) << dataset;
  const hid_t space = H5Dget_space(d);
  hsize_t chunks = 0;
  EXPECT_GE(H5Dget_num_chunks(d, space, &chunks), 0);
  std::vector<std::string> out;
  for (hsize_t i = 0; i < chunks; ++i) {
    hsize_t offset = 0, size = 0;
    haddr_t address = 0;
    unsigned mask = 0;
    EXPECT_GE(H5Dget_chunk_info(d, space, i, &offset, &mask, &address, &size), 0);
    EXPECT_EQ(mask, 0u) << "a chunk of " << dataset << " skipped a filter";
    std::string bytes(size, '\0');
    std::uint32_t filters = 0;
    EXPECT_GE(H5Dread_chunk(d, H5P_DEFAULT, &offset, &filters, bytes.data()), 0);
    out.push_back(bytes);
  }
  H5Sclose(space);
  H5Dclose(d);
  return out;
}

// The same floats written the ordinary way (H5Dwrite through HDF5's own Fletcher32 filter), with
// the store's chunking: the chunks the store must reproduce bit for bit.
std::vector<std::string> chunks_by_hdf5_filter(const fs::path& file, const std::vector<float>& values) {
  const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t n = values.size(), chunk = std::min<hsize_t>(n, hsize_t{1} << 18);
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_chunk(dcpl, 1, &chunk);
  H5Pset_fletcher32(dcpl);
  const hid_t d = H5Dcreate2(f, "x", H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  EXPECT_GE(H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(d);
  H5Pclose(dcpl);
  H5Sclose(space);
  H5Fclose(f);
  const hid_t again = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  auto chunks = raw_chunks(again, "x");
  H5Fclose(again);
  return chunks;
}

TEST(Checkpoints, WeightChunksAreTheChunksOfHdf5sFletcher32Filter) {
  // Sizes around the 1 MiB chunk (2^18 floats): one word, odd counts, exact and partial last chunks.
  // Patterns that stress the checksum's reductions: random bits, all zero (checksum 0), all ones
  // (every sum a multiple of 65535) and mostly zero.
  TempDir tmp;
  const std::vector<std::size_t> sizes = {1, 3, 4096, 4099, 262'143, 262'144, 262'145, 2 * 262'144 + 4'103};
  GenerationRecord r;
  r.generation = 0;
  std::uint64_t id = 1;
  std::uint32_t bits = 12345;
  for (std::size_t n : sizes)
    for (int pattern = 0; pattern < 4; ++pattern) {
      auto w = std::make_shared<Weights>();
      w->params.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        bits = bits * 1664525u + 1013904223u;
        const std::uint32_t v = pattern == 0 ? bits : pattern == 1 ? 0u : pattern == 2 ? 0xffffffffu
                                                                   : (bits % 97 == 0 ? bits : 0u);
        std::memcpy(&w->params[i], &v, 4);
      }
      w->state.assign(5, 0.25f);
      ModelRecord m = make_model(id++, 0, {}, 0.0);
      m.weights = w;
      m.weights_digest = rsi::scheduler::weights_digest(*w);
      r.population.push_back(m.id);
      r.population_models.push_back(m);
      r.children.push_back(m);
    }
  r.next_model_id = id;
  write_run(tmp.path(), {r});

  const fs::path file = tmp.path() / "gen-000000.h5";
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  for (const ModelRecord& m : r.children) {
    SCOPED_TRACE("model " + std::to_string(m.id) + " of " + std::to_string(m.weights->params.size()) + " floats");
    const auto ours = raw_chunks(f, "models/" + std::to_string(m.id) + "/params");
    const auto theirs = chunks_by_hdf5_filter(tmp.path() / "reference.h5", m.weights->params);
    ASSERT_EQ(ours.size(), theirs.size());
    for (std::size_t c = 0; c < ours.size(); ++c) EXPECT_TRUE(ours[c] == theirs[c]) << "chunk " << c << " differs";
  }
  H5Fclose(f);
  // And read back through the filter, every value bitwise.
  const auto stored = rsi::checkpoints::read_generation(file);
  ASSERT_EQ(stored.population.size(), r.population_models.size());
  for (std::size_t i = 0; i < stored.population.size(); ++i)
    expect_same_model(r.population_models[i], stored.population[i], true);
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
}

TEST(Checkpoints, AByteFlippedInAnyPartOfADirectlyWrittenChunkIsAFletcher32Error) {
  // The first, a middle and the last data byte of a chunk, and a byte of the stored checksum: HDF5's
  // filter rejects each on read (h5dump and h5py use the same filter).
  TempDir tmp;
  GenerationRecord r;
  r.generation = 0;
  ModelRecord m = make_model(1, 0, {}, 0.0);  // 300 000 floats: a full chunk and a partial one
  r.children = {m};
  r.population = {m.id};
  r.population_models = {m};
  r.next_model_id = 2;
  write_run(tmp.path(), {r});
  const fs::path file = tmp.path() / "gen-000000.h5";
  const std::string original = slurp(file);
  const std::size_t first = unique_offset(original, m.weights->params.data(), 64);
  const std::size_t chunk_bytes = std::size_t{1} << 20;
  for (std::size_t at : {first, first + chunk_bytes / 2 + 1, first + chunk_bytes - 1, first + chunk_bytes + 2}) {
    SCOPED_TRACE("byte " + std::to_string(at - first) + " of the first chunk");
    std::string bytes = original;
    bytes[at] = static_cast<char>(bytes[at] ^ 0x10);
    spit(file, bytes);
    const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    const hid_t d = H5Dopen2(f, "models/1/params", H5P_DEFAULT);
    std::vector<float> values(m.weights->params.size());
    H5E_BEGIN_TRY { EXPECT_LT(H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0); }
    H5E_END_TRY;
    H5Dclose(d);
    H5Fclose(f);
    const auto report = rsi::checkpoints::verify_run(tmp.path());
    EXPECT_TRUE(contains(report.problems, "model 1: weights/params", "Fletcher32")) << joined(report.problems);
  }
  spit(file, original);
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
}

TEST(Checkpoints, TruncatedNewestFileFallsBackAndResumeContinuesTheSameChain) {
  TempDir tmp, reference;
  const auto records = synthetic_run(4);
  write_run(reference.path(), records);
  write_run(tmp.path(), std::vector<GenerationRecord>(records.begin(), records.begin() + 3));
  const fs::path newest = tmp.path() / "gen-000002.h5";
  fs::resize_file(newest, fs::file_size(newest) / 2);

  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 1);
  EXPECT_TRUE(contains(warnings, "gen-000002.h5", "skipped")) << joined(warnings);
  EXPECT_EQ(rsi::checkpoints::generation_files(tmp.path()).size(), 2u);
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());

  // Resume with the resume point's population (read back from the file) and write on.
  {
    LineageStore store(tmp.path(), run_info("other-host"), Retention{}, point);
    auto r2 = records[2];
    r2.population_models = records[2].population_models;
    // Carried-over members come from the resume point, as the loop would pass them on.
    for (auto& m : r2.population_models)
      for (const auto& p : point.population)
        if (p.id == m.id) m = p;
    store.on_generation(r2);
    store.on_generation(records[3]);
    EXPECT_GT(store.last_write_bytes(), 0u);
    EXPECT_GE(store.last_write_seconds(), 0.0);
  }
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, 3);
  expect_same_generation_hashes(tmp.path(), reference.path());
}

// --- the whole-file SHA-256 and LATEST finish in the background (store.cpp, FORMAT.md "LATEST") ---

// A kill after gen-2.h5 is renamed into place but before the background work updates LATEST: LATEST
// still names generation 1. The newer file is complete and checks out, so the run resumes after it.
TEST(Checkpoints, LatestOneGenerationBehindResumesFromTheNewerCompleteFile) {
  TempDir tmp, reference;
  const auto records = synthetic_run(4);
  write_run(reference.path(), records);
  std::string latest_after_1;
  {
    LineageStore store(tmp.path(), run_info(), Retention{});
    store.on_generation(records[0]);
    store.on_generation(records[1]);
    store.flush();
    latest_after_1 = slurp(tmp.path() / "LATEST");
    store.on_generation(records[2]);
  }
  ASSERT_EQ(latest_after_1.rfind("1 gen-000001.h5 ", 0), 0u) << latest_after_1;
  const std::string latest_after_2 = slurp(tmp.path() / "LATEST");
  ASSERT_EQ(latest_after_2.rfind("2 gen-000002.h5 ", 0), 0u) << latest_after_2;
  spit(tmp.path() / "LATEST", latest_after_1);

  // Every file verifies, but LATEST disagrees with them: verify names it (a resume repairs it).
  auto report = rsi::checkpoints::verify_run(tmp.path());
  ASSERT_EQ(report.problems.size(), 1u) << joined(report.problems);
  EXPECT_TRUE(contains(report.problems, "LATEST: names generation 1 but the newest generation file is gen-000002.h5"))
      << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, 2);

  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 2);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  EXPECT_EQ(rsi::checkpoints::generation_files(tmp.path()).size(), 3u);
  EXPECT_EQ(slurp(tmp.path() / "LATEST"), latest_after_2);  // brought up to date, the same text

  // The chain continues from generation 2 exactly as in an uninterrupted run.
  {
    LineageStore store(tmp.path(), run_info(), Retention{}, point);
    auto r3 = records[3];
    for (auto& m : r3.population_models)
      for (const auto& p : point.population)
        if (p.id == m.id) m = p;
    store.on_generation(r3);
  }
  report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  EXPECT_EQ(report.last_good_generation, 3);
  expect_same_generation_hashes(tmp.path(), reference.path());
  EXPECT_EQ(slurp(tmp.path() / "LATEST").rfind("3 gen-000003.h5 ", 0), 0u);
}

// The same, with a real kill in that window (RSI_FAULT_KILL_BEFORE_LATEST, in a forked child).
TEST(Checkpoints, KillBeforeTheBackgroundLatestUpdateResumesFromTheDurableFile) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setenv("RSI_FAULT_KILL_BEFORE_LATEST", "2", 1);
    try {
      write_run(tmp.path(), records);
    } catch (...) {
    }
    ::_exit(3);  // not killed: the hook did not fire
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "status " << status;
  EXPECT_TRUE(fs::exists(tmp.path() / "gen-000002.h5"));
  EXPECT_EQ(slurp(tmp.path() / "LATEST").rfind("1 gen-000001.h5 ", 0), 0u) << slurp(tmp.path() / "LATEST");
  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 2);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  EXPECT_EQ(slurp(tmp.path() / "LATEST").rfind("2 gen-000002.h5 " + point.generation_hash + " ", 0), 0u);
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(report.ok()) << joined(report.problems);
}

// flush() and on_finish() leave LATEST naming the newest generation, with that file's SHA-256 (which
// verify_run recomputes), after every generation.
TEST(Checkpoints, FlushCompletesLatestAfterEveryGeneration) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  LineageStore store(tmp.path(), run_info(), Retention{});
  for (const auto& r : records) {
    store.on_generation(r);
    const std::string name = "gen-00000" + std::to_string(r.generation) + ".h5";
    EXPECT_TRUE(fs::exists(tmp.path() / name)) << "on_generation returned before " << name << " was in place";
    EXPECT_FALSE(fs::exists(tmp.path() / (name + ".tmp")));
    if (r.generation == 2)
      store.on_finish();
    else
      store.flush();
    const std::string latest = slurp(tmp.path() / "LATEST");
    EXPECT_EQ(latest.rfind(std::to_string(r.generation) + " " + name + " ", 0), 0u) << latest;
    const auto report = rsi::checkpoints::verify_run(tmp.path());  // checks LATEST's file SHA-256
    EXPECT_TRUE(report.ok()) << joined(report.problems);
  }
}

// An error in the background work is not lost: flush() rethrows it, naming LATEST, and the store
// refuses the next generation rather than record a wrong previous-file digest. The generation file
// itself was durable.
TEST(Checkpoints, BackgroundLatestErrorIsRethrownAtTheJoin) {
  TempDir tmp;
  const auto records = synthetic_run(2);
  {
    LineageStore store(tmp.path(), run_info(), Retention{});
    // A non-empty directory where LATEST's temporary file goes: writing LATEST fails.
    fs::create_directories(tmp.path() / "LATEST.tmp" / "blocker");
    store.on_generation(records[0]);
    EXPECT_TRUE(fs::exists(tmp.path() / "gen-000000.h5"));
    try {
      store.flush();
      FAIL() << "the failed LATEST update was not reported";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("LATEST"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("generation 0"), std::string::npos) << e.what();
    }
    EXPECT_THROW(store.flush(), CheckpointError);  // every join, not only the first
    EXPECT_THROW(store.on_generation(records[1]), CheckpointError);
    EXPECT_FALSE(fs::exists(tmp.path() / "gen-000001.h5"));
    store.on_finish();  // reports on stderr, never throws (the loop calls it while stopping workers)
  }
  fs::remove_all(tmp.path() / "LATEST.tmp");
  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 0);
  EXPECT_EQ(slurp(tmp.path() / "LATEST").rfind("0 gen-000000.h5 ", 0), 0u);
}

TEST(Checkpoints, StoreRefusesGapsAndUnknownParents) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  LineageStore store(tmp.path(), run_info(), Retention{});
  EXPECT_THROW(store.on_generation(records[1]), CheckpointError);  // generation 1 before 0
  store.on_generation(records[0]);
  auto bad = records[1];
  bad.children[0].parents = {999};
  try {
    store.on_generation(bad);
    FAIL() << "an unknown parent was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("parent 999"), std::string::npos) << e.what();
  }
}

TEST(Checkpoints, LeftoverTmpFilesAreIgnored) {
  TempDir tmp;
  const auto records = synthetic_run(3);
  write_run(tmp.path(), records);
  spit(tmp.path() / "gen-000003.h5.tmp", "half a file");
  spit(tmp.path() / "LATEST.tmp", "3 gen-000003.h5 0000");
  EXPECT_EQ(rsi::checkpoints::generation_files(tmp.path()).size(), 3u);
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 2);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  LineageStore store(tmp.path(), run_info(), Retention{}, point);  // the writer clears them
  EXPECT_FALSE(fs::exists(tmp.path() / "gen-000003.h5.tmp"));
  EXPECT_FALSE(fs::exists(tmp.path() / "LATEST.tmp"));
}

TEST(Checkpoints, RetentionKeepsTheLastGenerationsAndThePopulation) {
  TempDir tmp;
  const auto records = synthetic_run(5);
  LineageStore store(tmp.path(), run_info(), Retention{2, true});
  for (const auto& r : records) {
    store.on_generation(r);
    const int g = r.generation;
    for (int k = 0; k <= g; ++k) {
      // Generation k has a sidecar when a trained child of it was not selected.
      bool unselected = false;
      for (const auto& c : records[static_cast<std::size_t>(k)].children)
        unselected |= c.trained() && std::find(records[static_cast<std::size_t>(k)].population.begin(),
                                               records[static_cast<std::size_t>(k)].population.end(),
                                               c.id) == records[static_cast<std::size_t>(k)].population.end();
      EXPECT_EQ(fs::exists(tmp.path() / ("gen-00000" + std::to_string(k) + ".weights.h5")), unselected && k > g - 2)
          << "sidecar of generation " << k << " after generation " << g;
    }
  }
  for (const auto& file : rsi::checkpoints::generation_files(tmp.path())) {
    const auto got = rsi::checkpoints::read_generation(file);
    for (const auto& p : got.population) EXPECT_TRUE(p.weights) << file << ": population model " << p.id;
    for (const auto& m : got.models) {
      const bool selected = std::find(got.record.population.begin(), got.record.population.end(), m.record.id) !=
                            got.record.population.end();
      const bool recent = got.generation >= 3;
      EXPECT_EQ(static_cast<bool>(m.record.weights), m.record.trained() && (selected || recent))
          << file << ": model " << m.record.id;
    }
  }
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
}

// Every model with weights gets a real genome (conv, batch norm, pool, dense on 28x28) and weights
// of its network's size, the same for a model wherever it appears.
void give_real_genomes(std::vector<GenerationRecord>& records) {
  using rsi::models::Block;
  rsi::models::Genome genome;
  Block conv, norm, pool, dense;
  conv.kind = Block::Kind::Conv, conv.channels = 2;
  norm.kind = Block::Kind::BatchNorm;
  pool.kind = Block::Kind::Pool, pool.size = 2, pool.stride = 2;
  dense.kind = Block::Kind::Dense, dense.units = 10;
  genome.blocks = {conv, norm, pool, dense};
  const rsi::models::Network net(genome);
  auto fix = [&](ModelRecord& m) {
    if (!m.weights) return;
    auto w = std::make_shared<Weights>();
    w->params.resize(static_cast<std::size_t>(net.parameter_count()));
    w->state.resize(static_cast<std::size_t>(net.state().numel()));
    for (std::size_t i = 0; i < w->params.size(); ++i) w->params[i] = std::cos(static_cast<float>(m.id * 977 + i));
    for (std::size_t i = 0; i < w->state.size(); ++i) w->state[i] = 1.0f + static_cast<float>(i % 5);
    m.genome_yaml = rsi::models::to_yaml(genome);
    m.weights = w;
    m.weights_digest = rsi::scheduler::weights_digest(*w);
  };
  for (auto& r : records) {
    for (auto& m : r.children) fix(m);
    for (auto& m : r.population_models) fix(m);
  }
}

// Overwrites the bytes of a fixed-length string dataset (same length), as an h5py user could.
void rewrite_text(const fs::path& file, const std::string& path, const std::string& text) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  const hid_t d = H5Dopen2(f, path.c_str(), H5P_DEFAULT);
  ASSERT_GE(d, 0);
  const hid_t type = H5Dget_type(d);
  std::string buffer = text;
  buffer.resize(H5Tget_size(type), '\0');
  EXPECT_GE(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data()), 0);
  H5Tclose(type);
  H5Dclose(d);
  EXPECT_GE(H5Fclose(f), 0);
}

std::string read_text(const fs::path& file, const std::string& path) {
  const hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  const hid_t d = H5Dopen2(f, path.c_str(), H5P_DEFAULT);
  if (d < 0) {
    H5Fclose(f);
    return "<absent>";
  }
  const hid_t type = H5Dget_type(d);
  std::string buffer(H5Tget_size(type), '\0');
  H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buffer.data());
  H5Tclose(type);
  H5Dclose(d);
  H5Fclose(f);
  return buffer.substr(0, buffer.find('\0'));
}

// FORMAT.md, "Named tensors": every model with weights lists its tensors (derived from the genome,
// outside the hash chain), in the lineage files and in an exported file; verify checks the table
// against the genome and names a changed line.
TEST(Checkpoints, NamedTensorTableIsWrittenExportedAndVerifiedAgainstTheGenome) {
  TempDir tmp;
  auto records = synthetic_run(2);
  give_real_genomes(records);
  write_run(tmp.path(), records);
  ASSERT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok()) << joined(rsi::checkpoints::verify_run(tmp.path()).problems);
  const ModelRecord& child = records[1].children[0];
  const fs::path file = tmp.path() / "gen-000001.h5";
  const std::string path = "models/" + std::to_string(child.id) + "/tensors";
  const std::string table = read_text(file, path);
  EXPECT_EQ(table, rsi::models::tensor_table_text(rsi::models::named_tensors(rsi::models::from_yaml(child.genome_yaml))));
  EXPECT_EQ(table.substr(0, table.find('\n')), "block0.conv.weight params 0 2,1,3,3");
  EXPECT_NE(table.find("block1.batchnorm.running_var state 2 2\n"), std::string::npos) << table;
  EXPECT_NE(table.find("block3.dense.weight params 24 10,392\n"), std::string::npos) << table;
  // A failed child (no weights) has none.
  EXPECT_EQ(read_text(tmp.path() / "gen-000000.h5", "models/3/tensors"), "<absent>");
  const fs::path out = tmp.path() / "exported.h5";
  rsi::checkpoints::export_model(tmp.path(), child.id, out);
  EXPECT_EQ(read_text(out, "model/tensors"), table);

  // A resume checks the metadata of the generations before the newest, never their tables (verify does).
  const fs::path first = tmp.path() / "gen-000000.h5";
  const std::string old = read_text(first, "models/1/tensors");
  rewrite_text(first, "models/1/tensors", std::string(old.size(), 'x'));
  EXPECT_EQ(rsi::checkpoints::find_resume_point(tmp.path()).generation, 1);
  EXPECT_TRUE(contains(rsi::checkpoints::verify_run(tmp.path()).problems, "gen-000000.h5: model 1: tensors: line 1"))
      << joined(rsi::checkpoints::verify_run(tmp.path()).problems);
  rewrite_text(first, "models/1/tensors", old);

  std::string changed = table;
  changed.replace(changed.find("10,392"), 6, "392,10");
  rewrite_text(file, path, changed);
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(contains(report.problems, "gen-000001.h5: model " + std::to_string(child.id) + ": tensors: line ",
                       "392,10"))
      << joined(report.problems);
  rewrite_text(out, "model/tensors", changed);
  EXPECT_THROW(rsi::checkpoints::read_exported_model(out), CheckpointError);
}

// rsi export --format onnx (python/tests/test_onnx.py runs the graphs in onnxruntime): a protobuf
// ModelProto (field 1, ir_version 8, first) with the documented interface and the table's names;
// a model without weights is refused by name.
TEST(Checkpoints, OnnxExportWritesTheGraphAndRefusesAModelWithoutWeights) {
  if (!rsi::checkpoints::onnx_export_available()) GTEST_SKIP() << "this build has no ONNX export (CMake found no libonnx-dev / libprotobuf-dev): run scripts/setup, which installs them, and rebuild";
  TempDir tmp;
  auto records = synthetic_run(1);
  give_real_genomes(records);
  write_run(tmp.path(), records);
  const fs::path out = tmp.path() / "m1.onnx";
  rsi::checkpoints::export_onnx(tmp.path(), 1, out);
  EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
  const std::string bytes = slurp(out);
  ASSERT_GE(bytes.size(), 2u);
  EXPECT_EQ(bytes.substr(0, 2), std::string("\x08\x08"));
  for (const char* name : {"image", "logits", "block0.conv.weight", "block1.batchnorm.running_var", "Gemm",
                           "BatchNormalization", "MaxPool", "genome", "synthetic"})
    EXPECT_NE(bytes.find(name), std::string::npos) << name;
  try {
    rsi::checkpoints::export_onnx(tmp.path(), 3, tmp.path() / "m3.onnx");  // the failed child
    FAIL() << "exported a model without weights";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("model 3: has no weights (status failed)"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "m3.onnx"));
}

TEST(Checkpoints, ExportAndReadBack) {
  TempDir tmp;
  const auto records = synthetic_run(4);
  write_run(tmp.path(), records, Retention{1, true});
  // A population member of the last generation and a child whose weights only its sidecar holds.
  const ModelRecord& member = records[3].population_models.front();
  const ModelRecord* recent = nullptr;
  for (const auto& c : records[3].children)
    if (c.trained() &&
        std::find(records[3].population.begin(), records[3].population.end(), c.id) == records[3].population.end())
      recent = &c;
  ASSERT_NE(recent, nullptr);
  for (const ModelRecord* want : {&member, recent}) {
    const fs::path out = tmp.path() / ("model-" + std::to_string(want->id) + ".h5");
    rsi::checkpoints::export_model(tmp.path(), want->id, out);
    EXPECT_FALSE(fs::exists(out.string() + ".tmp"));
    const ModelRecord got = rsi::checkpoints::read_exported_model(out);
    expect_same_model(*want, got, true);
  }
  // A child of generation 1 that was not selected: retention dropped its weights.
  const ModelRecord* dropped = nullptr;
  for (const auto& c : records[1].children)
    if (c.trained() &&
        std::find(records[1].population.begin(), records[1].population.end(), c.id) == records[1].population.end())
      dropped = &c;
  ASSERT_NE(dropped, nullptr);
  try {
    rsi::checkpoints::export_model(tmp.path(), dropped->id, tmp.path() / "dropped.h5");
    FAIL() << "exported a model without weights";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("not kept"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rsi::checkpoints::export_model(tmp.path(), 4242, tmp.path() / "none.h5"), CheckpointError);

  // A changed byte in an exported file is refused with the field named.
  const fs::path out = tmp.path() / ("model-" + std::to_string(member.id) + ".h5");
  std::string bytes = slurp(out);
  const std::size_t at = unique_offset(bytes, member.genome_yaml.data(), member.genome_yaml.size());
  bytes[at] = 'N';
  spit(out, bytes);
  try {
    rsi::checkpoints::read_exported_model(out);
    FAIL() << "a changed genome was accepted";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("genome: digest mismatch"), std::string::npos) << e.what();
  }
}

TEST(Checkpoints, VerifyNamesAMissingGeneration) {
  TempDir tmp;
  write_run(tmp.path(), synthetic_run(4));
  fs::remove(tmp.path() / "gen-000001.h5");
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_EQ(report.generations, 3);
  EXPECT_EQ(report.last_good_generation, 0);
  ASSERT_EQ(report.problems.size(), 1u) << joined(report.problems);
  EXPECT_TRUE(contains(report.problems, "gen-000001.h5: missing")) << joined(report.problems);
  // The newest file and its predecessor are intact, but a resume never builds on a history with a
  // hole: it refuses, naming the file, and changes nothing.
  const std::string latest = slurp(tmp.path() / "LATEST");
  try {
    rsi::checkpoints::find_resume_point(tmp.path());
    ADD_FAILURE() << "resumed on a history without generation 1";
  } catch (const rsi::checkpoints::DamagedHistory& e) {
    EXPECT_NE(std::string(e.what()).find("gen-000001.h5: missing (the next file is gen-000002.h5)"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(rsi::checkpoints::generation_files(tmp.path()).size(), 3u);
  EXPECT_EQ(slurp(tmp.path() / "LATEST"), latest);
}

// Issue 19: a resume never builds on a history whose metadata does not verify. An edited metric in
// the first or a middle generation refuses (naming file, model and field) and changes nothing; in
// the newest generation it is damage a crash could leave, and the resume falls back past it.
TEST(Checkpoints, EditedHistoryRefusesTheResumeAndAnEditedNewestFileFallsBack) {
  for (const int edited : {0, 2, 4}) {
    SCOPED_TRACE("edited generation " + std::to_string(edited));
    TempDir tmp;
    const auto records = synthetic_run(5);
    write_run(tmp.path(), records);
    const ModelRecord& victim = records[static_cast<std::size_t>(edited)].children.front();  // trained
    const fs::path file = tmp.path() / ("gen-00000" + std::to_string(edited) + ".h5");
    edit_val_accuracy(file, victim.id, victim.metrics.val_accuracy + 0.25);
    const std::string where =
        file.filename().string() + ": model " + std::to_string(victim.id) + ": metrics: digest mismatch";
    const auto report = rsi::checkpoints::verify_run(tmp.path());
    EXPECT_TRUE(contains(report.problems, where)) << joined(report.problems);
    const std::string latest = slurp(tmp.path() / "LATEST");
    std::vector<std::string> warnings;
    if (edited < 4) {
      try {
        rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
        ADD_FAILURE() << "resumed on an edited history";
      } catch (const rsi::checkpoints::DamagedHistory& e) {
        EXPECT_NE(std::string(e.what()).find(where), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("rsi verify"), std::string::npos) << e.what();
      }
      EXPECT_EQ(rsi::checkpoints::generation_files(tmp.path()).size(), 5u);
      EXPECT_EQ(slurp(tmp.path() / "LATEST"), latest);
    } else {
      const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
      EXPECT_EQ(point.generation, 3);
      EXPECT_TRUE(contains(warnings, where)) << joined(warnings);
      EXPECT_TRUE(fs::exists(tmp.path() / "gen-000004.h5.corrupt"));
    }
  }
}

// The other direction: weights of an old generation and its sidecar are not what a resume needs
// (FORMAT.md): damage there is for rsi verify to name, and the resume goes on.
TEST(Checkpoints, DamagedOldWeightsAndSidecarsDoNotBlockTheResume) {
  TempDir tmp;
  const auto records = synthetic_run(5);
  write_run(tmp.path(), records, Retention{0, true});  // every sidecar kept
  // A selected child keeps its weights in its generation file; one that was not selected has them
  // in the generation's sidecar. Damage one of each, in generations before the newest two.
  const ModelRecord* unselected = nullptr;
  const ModelRecord* kept = nullptr;
  int unselected_gen = -1, kept_gen = -1;
  for (int g = 0; g < 3; ++g) {
    const auto& r = records[static_cast<std::size_t>(g)];
    for (const auto& c : r.children) {
      if (!c.trained()) continue;
      const bool selected = std::find(r.population.begin(), r.population.end(), c.id) != r.population.end();
      if (selected && !kept) kept = &c, kept_gen = g;
      if (!selected && !unselected) unselected = &c, unselected_gen = g;
    }
  }
  ASSERT_TRUE(kept && unselected);
  const fs::path sidecar = tmp.path() / ("gen-00000" + std::to_string(unselected_gen) + ".weights.h5");
  ASSERT_TRUE(fs::exists(sidecar));
  std::string bytes = slurp(sidecar);
  std::size_t at = unique_offset(bytes, unselected->weights->params.data() + 10, 32);
  bytes[at + 2] = static_cast<char>(bytes[at + 2] ^ 0x04);
  spit(sidecar, bytes);
  const fs::path file = tmp.path() / ("gen-00000" + std::to_string(kept_gen) + ".h5");
  bytes = slurp(file);
  at = unique_offset(bytes, kept->weights->params.data() + 10, 32);
  bytes[at + 2] = static_cast<char>(bytes[at + 2] ^ 0x04);
  spit(file, bytes);

  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(contains(report.problems, sidecar.filename().string())) << joined(report.problems);
  EXPECT_TRUE(contains(report.problems,
                       file.filename().string() + ": model " + std::to_string(kept->id) + ": weights/params"))
      << joined(report.problems);
  std::vector<std::string> warnings;
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path(), &warnings);
  EXPECT_EQ(point.generation, 4);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  for (const auto& f : rsi::checkpoints::generation_files(tmp.path()))
    EXPECT_NO_THROW(rsi::checkpoints::read_generation(f, /*weights=*/false)) << f;
}

TEST(Checkpoints, VerifySaysWhatLatestIs) {
  TempDir tmp;
  write_run(tmp.path(), synthetic_run(3));
  auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_TRUE(report.ok()) << joined(report.problems);
  EXPECT_EQ(report.latest, "generation 2 (gen-000002.h5), the newest generation: agrees with the files");
  fs::remove(tmp.path() / "LATEST");
  report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_EQ(report.latest, "missing");
  EXPECT_TRUE(contains(report.problems, "LATEST: missing, although the newest generation file is gen-000002.h5"))
      << joined(report.problems);
  // A resume rewrites it.
  EXPECT_EQ(rsi::checkpoints::find_resume_point(tmp.path()).generation, 2);
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
}

TEST(Checkpoints, ModelsWithoutWeightsResumeAndExport) {
  // The surrogate task trains no networks: its models never have weights.
  TempDir tmp;
  auto records = synthetic_run(3);
  auto strip = [](ModelRecord& m) {
    m.weights.reset();
    m.weights_digest.clear();
  };
  for (auto& r : records) {
    for (auto& m : r.children) strip(m);
    for (auto& m : r.population_models) strip(m);
  }
  write_run(tmp.path(), records);
  EXPECT_TRUE(rsi::checkpoints::verify_run(tmp.path()).ok());
  const ResumePoint point = rsi::checkpoints::find_resume_point(tmp.path());
  EXPECT_EQ(point.generation, 2);
  ASSERT_EQ(point.population.size(), 2u);
  EXPECT_FALSE(point.population[0].weights);
  const fs::path out = tmp.path() / "m.h5";
  rsi::checkpoints::export_model(tmp.path(), records[2].children[0].id, out);
  const ModelRecord got = rsi::checkpoints::read_exported_model(out);
  expect_same_model(records[2].children[0], got, true);
}

TEST(Checkpoints, ClearErrorsForBadFiles) {
  TempDir tmp;
  spit(tmp.path() / "gen-000000.h5", "this is not an HDF5 file");
  try {
    rsi::checkpoints::read_generation(tmp.path() / "gen-000000.h5");
    FAIL() << "read a non-HDF5 file";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("gen-000000.h5"), std::string::npos) << e.what();
  }
  const auto report = rsi::checkpoints::verify_run(tmp.path());
  EXPECT_FALSE(report.ok());
  EXPECT_EQ(report.last_good_generation, -1);
  std::vector<std::string> warnings;
  EXPECT_EQ(rsi::checkpoints::find_resume_point(tmp.path(), &warnings).generation, -1);
  EXPECT_FALSE(warnings.empty());
  EXPECT_TRUE(rsi::checkpoints::generation_files(tmp.path() / "missing").empty());
  EXPECT_FALSE(rsi::checkpoints::verify_run(tmp.path() / "missing").ok());
}

// --- the generation summary's one description (scheduler/record.h) ---

// A record member's value as text (reals in hex, so NaN compares equal to itself), whatever its
// type: the field tests below compare records through it.
template <class T>
std::string value_text(const T& v) {
  std::ostringstream text;
  text << std::hexfloat;
  if constexpr (std::is_same_v<T, std::map<std::uint64_t, double>>) {
    for (const auto& [k, x] : v) text << k << ':' << x << ',';
  } else if constexpr (std::is_same_v<T, std::vector<std::uint64_t>> || std::is_same_v<T, std::vector<double>> ||
                       std::is_same_v<T, std::vector<int>>) {
    for (const auto& x : v) text << x << ',';
  } else if constexpr (std::is_same_v<T, std::optional<double>> || std::is_same_v<T, std::optional<std::int64_t>>) {
    if (v) text << *v; else text << "none";
  } else if constexpr (std::is_same_v<T, ModelRecord::Status>) {
    text << rsi::scheduler::status_name(v);
  } else {
    text << v;
  }
  return text.str();
}

// Every field's value as text, by name.
std::map<std::string, std::string> field_texts(const GenerationRecord& g) {
  std::map<std::string, std::string> out;
  rsi::scheduler::visit_generation_fields(
      g, [&out](const rsi::scheduler::FieldInfo& f, const auto& v) { out[f.name] = value_text(v); });
  return out;
}

// Changes the field `name` of `g` to another value of its type.
void perturb_field(GenerationRecord& g, const std::string& name) {
  rsi::scheduler::visit_generation_fields(g, [&name](const rsi::scheduler::FieldInfo& f, auto& v) {
    if (f.name != name) return;
    using T = std::decay_t<decltype(v)>;
    if constexpr (std::is_same_v<T, std::map<std::uint64_t, double>>) v[99] = 0.5;
    else if constexpr (std::is_same_v<T, std::vector<std::uint64_t>>) v.push_back(1);
    else if constexpr (std::is_same_v<T, std::vector<double>>) v.push_back(0.125);
    else if constexpr (std::is_same_v<T, std::string>) v += "x";
    else if constexpr (std::is_same_v<T, std::optional<double>> || std::is_same_v<T, std::optional<std::int64_t>>)
      v = v ? *v + 1 : 1;
    else v = static_cast<T>(v + 1);
  });
}

// A synthetic run whose records set every summary field, every group present.
std::vector<GenerationRecord> every_field_run(int generations = 2) {
  auto records = synthetic_run(generations);
  for (auto& r : records) {
    r.goodhart_gap = 0.0125;
    r.worst_class_accuracy = 0.61;
    r.class_disparity = 0.33;
    r.pseudo_label_accuracy = 0.8;
    r.pseudo_label_entropy = 2.1;
    r.goodhart_trend = -0.002;
    r.disparity_trend = 0.004;
    r.takeoff = "steady";
    r.model_seconds = 321.5;
    auto& imp = r.improvement.emplace();
    imp.predictor_examples = 7;
    imp.predictor_rank_correlation = 0.42;
    imp.predictor_weights = {0.5, -0.25};
    imp.duplicates = 2;
    imp.promoted = 3;
    imp.niches = 4;
  }
  return records;
}

TEST(Format, DocumentsEveryGenerationField) {
  const fs::path doc = fs::path(RSI_SOURCE_DIR) / "checkpoints" / "FORMAT.md";
  const std::string text = slurp(doc);
  const std::string begin = "<!-- generated from record.h: begin -->\n";
  const std::string end = "<!-- generated from record.h: end -->\n";
  const auto b = text.find(begin), e = text.find(end);
  ASSERT_NE(b, std::string::npos) << doc << " has no '" << begin << "'";
  ASSERT_NE(e, std::string::npos) << doc << " has no '" << end << "'";
  const std::string want = rsi::scheduler::generation_fields_markdown();
  const std::string have = text.substr(b + begin.size(), e - b - begin.size());
  if (have != want && std::getenv("RSI_UPDATE_DOCS")) {
    spit(doc, text.substr(0, b + begin.size()) + want + text.substr(e));
    std::printf("rewrote the generated table in %s\n", doc.c_str());
    return;  // the file now holds the table: nothing left to compare
  }
  EXPECT_EQ(have, want) << doc << ": the table of generation fields differs from scheduler/record.h; "
                        << "rerun this test with RSI_UPDATE_DOCS=1 to regenerate it";
}

TEST(Format, GenerationFieldNamesAreUniqueAndGaugesAreNumbers) {
  std::set<std::string> names;
  for (const auto& f : rsi::scheduler::generation_fields()) {
    EXPECT_TRUE(names.insert(f.name).second) << f.name << " twice";
    EXPECT_FALSE(std::string(f.doc).empty()) << f.name;
  }
  EXPECT_FALSE(names.count("design_skill_values")) << "stored with design_skill_lineages";
  names.clear();
  GenerationRecord every;
  every.improvement.emplace();
  rsi::scheduler::visit_generation_fields(every, [](const rsi::scheduler::FieldInfo& f, const auto& v) {
    using T = std::decay_t<decltype(v)>;
    constexpr bool number = std::is_arithmetic_v<T> || std::is_same_v<T, std::optional<double>> ||
                            std::is_same_v<T, std::optional<std::int64_t>>;
    if (f.gauge || f.tsv) {
      EXPECT_TRUE(number) << f.name << ": a gauge or a TSV column needs a number";
    }
    if (f.group == rsi::scheduler::FieldGroup::Later) {
      EXPECT_FALSE(std::is_arithmetic_v<T>) << f.name << ": fields added later are std::optional";
    }
  });
}

// Each field goes into the file and comes back; each one outside the timing group changes the
// generation hash when it changes (a new field cannot be stored and left out of the chain), the
// timing ones do not; verify accepts every such lineage.
TEST(Checkpoints, EveryGenerationFieldRoundTripsAndIsChained) {
  const auto records = every_field_run();
  TempDir base;
  write_run(base.path(), records);
  const auto last = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(base.path()).back());
  EXPECT_EQ(field_texts(last.record), field_texts(records.back()));
  ASSERT_TRUE(rsi::checkpoints::verify_run(base.path()).ok()) << joined(rsi::checkpoints::verify_run(base.path()).problems);

  for (const auto& f : rsi::scheduler::generation_fields()) {
    // The store checks these two against the file name and the stored models; both are also chained
    // on their own in the generation hash (FORMAT.md "Hashes").
    if (std::string(f.name) == "generation" || std::string(f.name) == "population") continue;
    SCOPED_TRACE(f.name);
    auto changed = records;
    perturb_field(changed.back(), f.name);
    ASSERT_NE(field_texts(changed.back()).at(f.name), field_texts(records.back()).at(f.name));
    TempDir dir;
    write_run(dir.path(), changed);
    const auto got = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(dir.path()).back());
    EXPECT_EQ(field_texts(got.record).at(f.name), field_texts(changed.back()).at(f.name));
    if (f.group == rsi::scheduler::FieldGroup::Timing) {
      EXPECT_EQ(got.generation_hash, last.generation_hash);
    } else {
      EXPECT_NE(got.generation_hash, last.generation_hash) << "not chained";
    }
    const auto report = rsi::checkpoints::verify_run(dir.path());
    EXPECT_TRUE(report.ok()) << joined(report.problems);
  }
}

// A lineage keeps the summary revision it started with: one begun at revision 0 (an older rsi) is
// continued without the fields added later, with its own digests; a new one stores them all.
TEST(Checkpoints, ALineageKeepsTheSummaryFieldsItStartedWith) {
  auto records = every_field_run(3);
  for (auto& r : records) r.best_parameters = 1234 + r.generation;
  const int newest = rsi::scheduler::current_summary_revision();
  ASSERT_GE(newest, 1) << "this test needs a field added later";

  TempDir old_lineage;
  {
    rsi::checkpoints::ResumePoint start;
    start.summary_revision = 0;  // as an older rsi began it
    LineageStore store(old_lineage.path(), run_info(), {}, start);
    for (int g = 0; g < 2; ++g) store.on_generation(records[g]);
  }
  {  // resumed by this rsi
    const auto point = rsi::checkpoints::find_resume_point(old_lineage.path());
    ASSERT_EQ(point.generation, 1);
    LineageStore store(old_lineage.path(), run_info(), {}, point);
    store.on_generation(records[2]);
  }
  for (const auto& file : rsi::checkpoints::generation_files(old_lineage.path())) {
    const auto g = rsi::checkpoints::read_generation(file);
    EXPECT_EQ(g.summary_revision, 0) << file;
    EXPECT_FALSE(g.record.best_parameters.has_value()) << file << ": a field the lineage did not start with";
  }
  EXPECT_TRUE(rsi::checkpoints::verify_run(old_lineage.path()).ok());

  TempDir new_lineage;
  write_run(new_lineage.path(), records);
  for (const auto& file : rsi::checkpoints::generation_files(new_lineage.path())) {
    const auto g = rsi::checkpoints::read_generation(file);
    EXPECT_EQ(g.summary_revision, newest) << file;
    EXPECT_EQ(g.record.best_parameters, 1234 + g.generation) << file;
  }
  EXPECT_TRUE(rsi::checkpoints::verify_run(new_lineage.path()).ok());
  // The two lineages differ only in the field: their first generation's models hash alike.
  const auto a = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(old_lineage.path())[0]);
  const auto b = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(new_lineage.path())[0]);
  EXPECT_NE(a.generation_hash, b.generation_hash);
  ASSERT_EQ(a.models.size(), b.models.size());
  for (std::size_t i = 0; i < a.models.size(); ++i) EXPECT_EQ(a.models[i].provenance_hash, b.models[i].provenance_hash);
}

// The same for a model's metrics (scheduler/record.h, visit_metric_fields): each one is stored and
// read back, and changes the generation hash unless it is wall time.
TEST(Checkpoints, EveryModelMetricRoundTripsAndIsChained) {
  const auto records = synthetic_run(2);
  TempDir base;
  write_run(base.path(), records);
  const auto last = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(base.path()).back());
  std::vector<std::string> names;
  rsi::scheduler::ModelMetrics any;
  rsi::scheduler::visit_metric_fields(any, [&names](const char* name, rsi::scheduler::MetricPart, const auto&) {
    names.emplace_back(name);
  });
  EXPECT_EQ(names.size(), 12u);
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    auto changed = records;
    rsi::scheduler::MetricPart part{};
    rsi::scheduler::visit_metric_fields(changed.back().children[0].metrics,
                                        [&](const char* n, rsi::scheduler::MetricPart p, auto& v) {
                                          if (name != n) return;
                                          part = p;
                                          using T = std::decay_t<decltype(v)>;
                                          if constexpr (std::is_same_v<T, std::vector<double>>) v.push_back(0.25);
                                          else if constexpr (std::is_same_v<T, double>) v = v < 0 ? 0.5 : v + 0.125;
                                          else v += 7;
                                        });
    TempDir dir;
    write_run(dir.path(), changed);
    const auto got = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(dir.path()).back());
    ASSERT_FALSE(got.models.empty());
    const auto& want = changed.back().children[0].metrics;
    const auto& have = got.models[0].record.metrics;
    std::vector<std::string> a, b;
    const auto texts = [](std::vector<std::string>& out) {
      return [&out](const char*, rsi::scheduler::MetricPart, const auto& v) { out.push_back(value_text(v)); };
    };
    rsi::scheduler::visit_metric_fields(want, texts(a));
    rsi::scheduler::visit_metric_fields(have, texts(b));
    EXPECT_EQ(a, b) << "does not round-trip";
    if (part == rsi::scheduler::MetricPart::Timing) {
      EXPECT_EQ(got.generation_hash, last.generation_hash);
    } else {
      EXPECT_NE(got.generation_hash, last.generation_hash) << "not chained";
    }
    const auto report = rsi::checkpoints::verify_run(dir.path());
    EXPECT_TRUE(report.ok()) << joined(report.problems);
  }
}

// And a model's lineage fields (visit_model_fields): each round-trips and is chained through its
// metadata digest; the two optional parts only where present.
TEST(Checkpoints, EveryModelFieldRoundTripsAndIsChained) {
  auto records = synthetic_run(2);
  ModelRecord& child = records.back().children[0];
  child.predicted_gain = 0.0125;
  child.candidates = 4;
  child.rung_epochs = {1, 3};
  child.rung_val_accuracy = {0.5, child.metrics.val_accuracy};
  TempDir base;
  write_run(base.path(), records);
  const auto last = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(base.path()).back());
  const auto texts = [](const ModelRecord& m) {
    std::vector<std::string> out;
    rsi::scheduler::visit_model_fields(
        m, [&out](const char*, rsi::scheduler::ModelPart, const auto& v) { out.push_back(value_text(v)); });
    return out;
  };
  ASSERT_EQ(last.models[0].record.id, child.id);
  EXPECT_EQ(texts(last.models[0].record), texts(child));
  std::vector<std::string> names;
  rsi::scheduler::visit_model_fields(child, [&names](const char* name, rsi::scheduler::ModelPart, const auto&) {
    names.emplace_back(name);
  });
  for (const std::string& name : names) {
    // The store checks these against the generation and the population (and links parents by hash).
    if (name == "id" || name == "generation" || name == "parents" || name == "status") continue;
    SCOPED_TRACE(name);
    auto changed = records;
    rsi::scheduler::visit_model_fields(changed.back().children[0], [&](const char* n, rsi::scheduler::ModelPart, auto& v) {
      if (name != n) return;
      using T = std::decay_t<decltype(v)>;
      if constexpr (std::is_same_v<T, std::string>) v += "x";
      else if constexpr (std::is_same_v<T, bool>) v = !v;
      else if constexpr (std::is_same_v<T, std::optional<double>>) v = *v + 0.25;
      else if constexpr (std::is_same_v<T, std::vector<int>>) v.back() += 1;
      else if constexpr (std::is_same_v<T, std::vector<double>>) v.front() += 0.125;
      else if constexpr (std::is_same_v<T, double>) v += 0.125;
      else if constexpr (std::is_arithmetic_v<T>) v += 1;
    });
    TempDir dir;
    write_run(dir.path(), changed);
    const auto got = rsi::checkpoints::read_generation(rsi::checkpoints::generation_files(dir.path()).back());
    EXPECT_EQ(texts(got.models[0].record), texts(changed.back().children[0])) << "does not round-trip";
    EXPECT_NE(got.generation_hash, last.generation_hash) << "not chained";
    const auto report = rsi::checkpoints::verify_run(dir.path());
    EXPECT_TRUE(report.ok()) << joined(report.problems);
  }
}

}  // namespace
