// LineageStore: writes one generation file per GenerationRecord (see FORMAT.md). The generation
// file holds the lineage metadata of every child, the population after selection with its weights,
// and the hash chain; the weights of the other children go to a sidecar gen-N.weights.h5 that is
// deleted once it leaves the last-K window. Files are written under a .tmp name, fsynced, renamed
// into place and the directory fsynced: a generation is durable once its file has its final name.
#include "rsi/checkpoints/store.h"

#include <algorithm>
#include <exception>
#include <fstream>
#include <future>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "h5.h"
#include "layout.h"

namespace rsi::checkpoints {

namespace fs = std::filesystem;
using scheduler::GenerationRecord;
using scheduler::ModelRecord;

namespace {

// A model ready to be written: its storable record, its parents' hashes and its digests.
struct Prepared {
  ModelRecord record;
  std::vector<std::string> parent_hashes;
  detail::ModelHashes hashes;
};

// The loop sets weights_digest with the weights; a record without one gets it here. (A wrong digest
// is not recomputed here, a full pass over the weights: verify_run reports it from the stored bytes.)
void fill_weights_digest(ModelRecord& m) {
  if (m.weights && m.weights_digest.empty()) m.weights_digest = scheduler::weights_digest(*m.weights);
}

GenerationRecord summary_of(const GenerationRecord& r) {
  GenerationRecord s;
  s.generation = r.generation;
  s.population = r.population;
  s.next_model_id = r.next_model_id;
  s.best_val = r.best_val;
  s.median_val = r.median_val;
  s.best_test = r.best_test;
  s.median_test = r.median_test;
  s.best_model_test = r.best_model_test;
  s.best_id = r.best_id;
  s.gain = r.gain;
  s.design_skill = r.design_skill;
  s.design_skill_by_lineage = r.design_skill_by_lineage;
  s.diversity = r.diversity;
  s.trained = r.trained;
  s.failed = r.failed;
  s.refused = r.refused;
  s.seconds = r.seconds;
  s.models_per_second = r.models_per_second;
  return s;
}

std::uint64_t size_of(const fs::path& p) {
  std::error_code ec;
  const auto n = fs::file_size(p, ec);
  return ec ? 0 : static_cast<std::uint64_t>(n);
}

void remove_quietly(const fs::path& p) {
  std::error_code ec;
  fs::remove(p, ec);
}

// Fault injection for tests/integration/kill_resume.sh: RSI_FAULT_KILL_DURING_CHECKPOINT=N kills
// this process with SIGKILL once gen-N.h5.tmp is written and closed, before it is renamed: a crash
// in the middle of a checkpoint.
void fault_kill_during_checkpoint(int generation) {
  const char* v = std::getenv("RSI_FAULT_KILL_DURING_CHECKPOINT");
  if (v && *v && std::atoi(v) == generation) std::raise(SIGKILL);
}

}  // namespace

LineageStore::LineageStore(fs::path dir, RunInfo info, Retention retention, const ResumePoint& resume)
    : dir_(std::move(dir)), info_(std::move(info)), retention_(retention) {
  h5::silence();
  if (retention_.keep_last_generations < 0)
    throw CheckpointError("checkpoints.keep_last_generations is " + std::to_string(retention_.keep_last_generations) +
                          ": it must be 0 (keep every generation's weights) or a positive number of generations");
  for (std::string* s : {&info_.run_name, &info_.manifest_text, &info_.manifest_hash, &info_.program_version,
                         &info_.git_commit, &info_.hosts, &info_.start_time})
    *s = detail::storable(*s);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw CheckpointError(dir_.string() + ": cannot create the run directory: " + ec.message());

  // Leftovers of an interrupted write were never durable: remove them. Sidecars past the resume
  // point belong to generations that will be written again.
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const bool tmp = name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0 &&
                     (name.rfind("gen-", 0) == 0 || name == "LATEST.tmp");
    const auto sidecar = detail::sidecar_generation_of(entry.path());
    if (tmp || (sidecar && *sidecar > resume.generation)) stale.push_back(entry.path());
  }
  for (const auto& p : stale) remove_quietly(p);

  chain_head_ = resume.generation_hash;
  if (resume.generation < 0) return;
  const fs::path file = dir_ / detail::generation_file_name(resume.generation);
  try {
    h5::Handle f = h5::open_file(file.string());
    const detail::Root root = detail::read_root(f.get());
    if (!resume.generation_hash.empty() && root.generation_hash != resume.generation_hash)
      throw CheckpointError("its generation hash " + root.generation_hash + " is not the resume point's " +
                            resume.generation_hash + "; call find_resume_point again");
    h5::Handle pop = h5::open_group(f.get(), "population");
    for (std::uint64_t id : root.summary.population) {
      h5::Handle g = h5::open_group(pop.get(), std::to_string(id));
      provenance_[id] = {h5::read_string(g.get(), "provenance_hash"), h5::read_strings(g.get(), "parent_hashes")};
    }
    chain_head_ = root.generation_hash;
    population_ = root.summary.population;
    last_generation_ = resume.generation;
    last_file_sha256_ = detail::file_sha256(file);
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.string() + ": cannot resume after this generation: " + e.what());
  }
}

void LineageStore::on_generation(const GenerationRecord& record) {
  const auto start = std::chrono::steady_clock::now();
  h5::silence();
  const int g = record.generation;
  const std::string name = detail::generation_file_name(g);
  const fs::path final_path = dir_ / name;
  const std::string where = (dir_ / name).string();
  if (g != last_generation_ + 1)
    throw CheckpointError(where + ": generation " + std::to_string(g) +
                          " handed to the lineage store after generation " + std::to_string(last_generation_) +
                          "; generations must be written in order without gaps");

  // Children, in id order, with their parents' hashes from the previous population.
  std::vector<Prepared> children;
  for (const ModelRecord& c : record.children) children.push_back({detail::storable(c), {}, {}});
  std::sort(children.begin(), children.end(),
            [](const Prepared& a, const Prepared& b) { return a.record.id < b.record.id; });
  std::map<std::uint64_t, const Prepared*> child_by_id;
  for (Prepared& c : children) {
    ModelRecord& m = c.record;
    if (child_by_id.count(m.id))
      throw CheckpointError(where + ": model " + std::to_string(m.id) + " appears twice among the children");
    fill_weights_digest(m);
    for (std::uint64_t p : m.parents) {
      const auto it = provenance_.find(p);
      if (it == provenance_.end())
        throw CheckpointError(where + ": model " + std::to_string(m.id) + ": parent " + std::to_string(p) +
                              " is not in the population of generation " + std::to_string(g - 1) +
                              "; the lineage cannot link it");
      c.parent_hashes.push_back(it->second.hash);
    }
    child_by_id[m.id] = &c;
  }
  // The weights' SHA-256 is the bulk of the work: the children are hashed in parallel.
  std::vector<std::exception_ptr> errors(children.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (std::size_t i = 0; i < children.size(); ++i) {
    try {
      children[i].hashes = detail::field_hashes(children[i].record);
    } catch (...) {
      errors[i] = std::current_exception();
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
  for (Prepared& c : children) c.hashes.provenance = detail::provenance_hash(c.record, c.hashes, c.parent_hashes);

  // The population after selection: new children (linked) and members carried over.
  std::map<std::uint64_t, const ModelRecord*> population_records;
  for (const ModelRecord& m : record.population_models) population_records[m.id] = &m;
  std::vector<Prepared> carried;
  std::map<std::uint64_t, Provenance> next_provenance;
  std::set<std::uint64_t> in_population;
  for (std::uint64_t id : record.population) {
    if (!in_population.insert(id).second)
      throw CheckpointError(where + ": model " + std::to_string(id) + " appears twice in the population");
    if (const auto child = child_by_id.find(id); child != child_by_id.end()) {
      next_provenance[id] = {child->second->hashes.provenance, child->second->parent_hashes};
      continue;
    }
    const auto known = provenance_.find(id);
    const auto rec = population_records.find(id);
    if (known == provenance_.end())
      throw CheckpointError(where + ": population member " + std::to_string(id) + " is neither a child of generation " +
                            std::to_string(g) + " nor in the population of generation " + std::to_string(g - 1));
    if (rec == population_records.end())
      throw CheckpointError(where + ": population member " + std::to_string(id) +
                            " has no record in population_models (the loop must hand over the population's records)");
    Prepared p{detail::storable(*rec->second), known->second.parent_hashes, {}};
    fill_weights_digest(p.record);
    // A member carried over unchanged (the same weights object) is not hashed again: the weight
    // digests it had are reused through `stored`.
    const auto cached = weight_digests_.find(id);
    if (cached != weight_digests_.end() && p.record.weights && cached->second.weights == p.record.weights.get()) {
      detail::ModelHashes known_digests;
      known_digests.params = cached->second.params;
      known_digests.state = cached->second.state;
      const auto weights = std::move(p.record.weights);
      p.hashes = detail::field_hashes(p.record, &known_digests);
      p.record.weights = weights;
    } else {
      p.hashes = detail::field_hashes(p.record);
    }
    p.hashes.provenance = detail::provenance_hash(p.record, p.hashes, p.parent_hashes);
    if (p.hashes.provenance != known->second.hash)
      throw CheckpointError(where + ": population member " + std::to_string(id) +
                            " differs from the model written earlier " + "(provenance " + p.hashes.provenance +
                            ", recorded " + known->second.hash + "); the loop changed a model after it was recorded");
    next_provenance[id] = known->second;
    carried.push_back(std::move(p));
  }
  // Children that are in the population keep their weights in the generation file.
  auto weights_in_main = [&](const ModelRecord& m) {
    return retention_.keep_population && m.weights && in_population.count(m.id) > 0;
  };

  std::uint64_t bytes = 0;
  std::string sidecar_sha256;
  // 1. The sidecar (before the generation file, so that a durable generation has its sidecar).
  std::vector<const Prepared*> sidecar_models;
  for (const Prepared& c : children)
    if (c.record.weights && !weights_in_main(c.record)) sidecar_models.push_back(&c);
  if (!sidecar_models.empty()) {
    const fs::path side = dir_ / detail::sidecar_file_name(g);
    const fs::path tmp = side.string() + ".tmp";
    try {
      h5::Handle f = h5::create_file(tmp.string());
      h5::write_string(f.get(), "format", detail::kSidecarFormatName);
      h5::write_int(f.get(), "format_version", detail::kFormatVersion);
      h5::write_int(f.get(), "generation", g);
      h5::write_string(f.get(), "generation_file", name);
      h5::Handle models = h5::create_group(f.get(), "models");
      for (const Prepared* c : sidecar_models) {
        try {
          detail::write_sidecar_model(models.get(), c->record, c->hashes);
        } catch (const CheckpointError& e) {
          throw CheckpointError("model " + std::to_string(c->record.id) + ": " + e.what());
        }
      }
      models.reset();
      f.close("closing the file");
      sidecar_sha256 = detail::file_sha256(tmp);
      detail::commit(tmp, side);
    } catch (const CheckpointError& e) {
      remove_quietly(tmp);
      throw CheckpointError(tmp.string() + ": " + e.what());
    }
    bytes += size_of(side);
  }

  // 2. The generation file.
  detail::Root root;
  root.run = info_;
  root.retention = retention_;
  root.summary = summary_of(record);
  root.summary_sha256 = detail::summary_digest(root.summary);
  root.previous_file_sha256 = last_file_sha256_;
  root.sidecar_sha256 = sidecar_sha256;
  root.run_sha256 = detail::run_digest(root);
  root.previous_hash = chain_head_;
  std::vector<detail::IdHash> child_hashes, population_hashes;
  for (const Prepared& c : children) child_hashes.push_back({c.record.id, c.hashes.provenance});
  for (const auto& [id, p] : next_provenance) population_hashes.push_back({id, p.hash});
  root.generation_hash = detail::generation_hash(g, chain_head_, child_hashes, population_hashes, root.summary_sha256);
  const fs::path tmp = final_path.string() + ".tmp";
  std::string file_sha256;
  try {
    h5::Handle f = h5::create_file(tmp.string());
    detail::write_root(f.get(), root);
    {
      h5::Handle models = h5::create_group(f.get(), "models");
      for (const Prepared& c : children) {
        try {
          detail::write_model(models.get(), std::to_string(c.record.id), c.record, c.parent_hashes, c.hashes,
                              weights_in_main(c.record));
        } catch (const CheckpointError& e) {
          throw CheckpointError("model " + std::to_string(c.record.id) + ": " + e.what());
        }
      }
    }
    {
      h5::Handle population = h5::create_group(f.get(), "population");
      for (std::uint64_t id : record.population)
        if (child_by_id.count(id))
          h5::hard_link(f.get(), "models/" + std::to_string(id), population.get(), std::to_string(id));
      for (const Prepared& p : carried) {
        try {
          detail::write_model(population.get(), std::to_string(p.record.id), p.record, p.parent_hashes, p.hashes,
                              retention_.keep_population);
        } catch (const CheckpointError& e) {
          throw CheckpointError("population model " + std::to_string(p.record.id) + ": " + e.what());
        }
      }
    }
    f.close("closing the file");
    // The digest of every byte, recorded in LATEST and in the next generation file: read back from
    // the page cache on a second thread while this one waits for fsync. The stream is opened
    // before the rename, so it reads the same inode whatever its name.
    std::ifstream in(tmp, std::ios::binary);
    if (!in) throw CheckpointError("cannot open to hash");
    auto digest = std::async(std::launch::async, [&in, &tmp] { return detail::stream_sha256(in, tmp); });
    fault_kill_during_checkpoint(g);
    try {
      detail::commit(tmp, final_path);
    } catch (...) {
      digest.wait();
      throw;
    }
    file_sha256 = digest.get();
  } catch (const CheckpointError& e) {
    remove_quietly(tmp);
    throw CheckpointError(tmp.string() + ": " + e.what());
  }
  bytes += size_of(final_path);

  // 3. LATEST names the newest durable generation.
  detail::write_file_durably(dir_ / "LATEST", detail::latest_text(g, root.generation_hash, file_sha256));

  // 4. Retention: sidecars that left the last-K window.
  if (retention_.keep_last_generations > 0) {
    std::error_code ec;
    std::vector<fs::path> expired;
    for (const auto& entry : fs::directory_iterator(dir_, ec)) {
      const auto side = detail::sidecar_generation_of(entry.path());
      if (side && *side <= g - retention_.keep_last_generations) expired.push_back(entry.path());
    }
    for (const auto& p : expired) remove_quietly(p);
  }

  chain_head_ = root.generation_hash;
  last_file_sha256_ = file_sha256;
  provenance_ = std::move(next_provenance);
  std::map<std::uint64_t, WeightDigests> digests;
  for (const Prepared& c : children)
    if (provenance_.count(c.record.id) && c.record.weights)
      digests[c.record.id] = {c.record.weights.get(), c.hashes.params, c.hashes.state};
  for (const Prepared& p : carried)
    if (p.record.weights) digests[p.record.id] = {p.record.weights.get(), p.hashes.params, p.hashes.state};
  weight_digests_ = std::move(digests);
  population_ = record.population;
  last_generation_ = g;
  last_bytes_ = bytes;
  last_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace rsi::checkpoints
