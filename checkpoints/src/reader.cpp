// Reading a run's lineage: generation files, verification of the hash chain from the stored bytes,
// the resume point, and standalone model files (export / eval). See FORMAT.md.
#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "h5.h"
#include "layout.h"
#include "rsi/checkpoints/store.h"

namespace rsi::checkpoints {

namespace fs = std::filesystem;
using scheduler::ModelRecord;
using scheduler::Weights;

namespace {

std::optional<std::uint64_t> parse_id(const std::string& s) {
  if (s.empty() || s.size() > 20 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  try {
    return std::stoull(s);
  } catch (...) {
    return std::nullopt;
  }
}

std::vector<std::uint64_t> member_ids(hid_t group) {
  std::vector<std::uint64_t> ids;
  for (const auto& name : h5::member_names(group))
    if (auto id = parse_id(name)) ids.push_back(*id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

// "<file>: file digest mismatch (recorded in <where> X, computed Y)": bytes changed since written.
std::string file_mismatch(const std::string& where, const std::string& recorded, const std::string& computed) {
  return "file digest mismatch (recorded in " + where + " " + (recorded.empty() ? "none" : recorded) + ", computed " +
         computed + ")";
}

std::string mismatch(const std::string& field, const std::string& stored, const std::string& computed) {
  return field + ": digest mismatch (stored " + (stored.empty() ? "none" : stored) + ", computed " +
         (computed.empty() ? "none" : computed) + ")";
}

// Problems with the digests of one model group's fields (weights `w` when they were read), and with
// its named-tensor table when `table`: rebuilding it from the genome costs ~0.5 ms, so the metadata
// checks of a resume (which never reads the table) leave it to verify, export and eval.
std::vector<std::string> field_problems(const detail::ModelGroup& mg, const std::shared_ptr<const Weights>& w,
                                        const models::InputSpec& input, bool table = true) {
  std::vector<std::string> out;
  ModelRecord m = mg.record;
  m.weights = w;
  const detail::ModelHashes c = detail::field_hashes(m, &mg.stored);
  if (c.metadata != mg.stored.metadata) out.push_back(mismatch("attributes", mg.stored.metadata, c.metadata));
  if (c.genome != mg.stored.genome) out.push_back(mismatch("genome", mg.stored.genome, c.genome));
  if (c.metrics != mg.stored.metrics) out.push_back(mismatch("metrics", mg.stored.metrics, c.metrics));
  if (c.timing != mg.stored.timing) out.push_back(mismatch("metrics/wall_seconds", mg.stored.timing, c.timing));
  if (w) {
    if (c.params != mg.stored.params) out.push_back(mismatch("weights/params", mg.stored.params, c.params));
    if (c.state != mg.stored.state) out.push_back(mismatch("weights/state", mg.stored.state, c.state));
    const std::string fnv = scheduler::weights_digest(*w, mg.format_version == 1);
    if (c.params == mg.stored.params && c.state == mg.stored.state && fnv != mg.record.weights_digest)
      out.push_back(mismatch("weights", mg.record.weights_digest, fnv));
  }
  if (table)
    for (std::string& p : detail::tensor_table_problems(mg, w.get(), input)) out.push_back(std::move(p));
  try {
    const std::string p = detail::provenance_hash(mg.record, mg.stored, mg.parent_hashes);
    if (p != mg.stored.provenance)
      out.push_back("provenance: hash mismatch (stored " + mg.stored.provenance + ", computed " + p + ")");
  } catch (const CheckpointError& e) {
    out.push_back(std::string("parents: ") + e.what());
  }
  return out;
}

// What the next file's checks need from a generation file: its hashes and population.
struct FileCheck {
  std::string name;
  bool opened = false;  // the root attributes were read
  int generation = -1;
  int format_version = detail::kFormatVersion;
  std::uint64_t next_model_id = 1;
  std::string generation_hash, previous_hash;
  std::string file_sha256;                          // computed from the file's bytes
  std::string previous_file_sha256;                 // as recorded for the previous file
  std::map<std::uint64_t, std::string> population;  // id -> provenance hash as stored
  std::vector<std::string> problems;                // of the generation file (each starts with its name)
  std::vector<std::string> sidecar_problems;        // of its weights sidecar
};

// Root attributes and the population's hashes only (the predecessor of a file being resumed from).
FileCheck summarize(const fs::path& file) {
  FileCheck c;
  c.name = file.filename().string();
  try {
    h5::Handle f = h5::open_file(file.string());
    const detail::Root root = detail::read_root(f.get());
    h5::Handle pop = h5::open_group(f.get(), "population");
    for (std::uint64_t id : root.summary.population) {
      h5::Handle g = h5::open_group(pop.get(), std::to_string(id));
      c.population[id] = h5::read_string(g.get(), "provenance_hash");
    }
    c.generation = root.summary.generation;
    c.generation_hash = root.generation_hash;
    c.previous_hash = root.previous_hash;
    c.next_model_id = root.summary.next_model_id;
    c.opened = true;
  } catch (const CheckpointError& e) {
    c.problems.push_back(c.name + ": " + e.what());
  }
  return c;
}

// Recomputes every digest of one generation file (and its sidecar) from the stored bytes, and its
// links to `previous` (the file of the generation before, when there is one to check against).
// Metadata only: no weights, no sidecar, no digest of the file's bytes (what a resume checks of the
// history).
enum class Depth { Everything, Metadata };

class FileChecker {
 public:
  FileChecker(const fs::path& file, const FileCheck* previous, Depth depth)
      : file_(file), previous_(previous), everything_(depth == Depth::Everything) {
    c_.name = file.filename().string();
  }

  FileCheck run() {
    if (!open()) return std::move(c_);
    check_summary();
    if (everything_) open_sidecar();
    try {
      check_models();
      check_population();
    } catch (const CheckpointError& e) {
      problem(e.what());
      return std::move(c_);
    }
    check_chain();
    return std::move(c_);
  }

 private:
  void problem(const std::string& what) { c_.problems.push_back(c_.name + ": " + what); }

  bool open() {
    try {
      if (everything_) c_.file_sha256 = detail::file_sha256(file_);
      f_ = h5::open_file(file_.string());
      root_ = detail::read_root(f_.get());
    } catch (const CheckpointError& e) {
      problem(e.what());
      return false;
    }
    c_.opened = true;
    c_.format_version = root_.format_version;
    gen_ = root_.summary.generation;
    c_.generation = gen_;
    c_.generation_hash = root_.generation_hash;
    c_.previous_hash = root_.previous_hash;
    c_.next_model_id = root_.summary.next_model_id;
    c_.previous_file_sha256 = root_.previous_file_sha256;
    return true;
  }

  // The root's own digests: generation metrics, governance events (a digest per field, so a
  // change names its field), run attributes.
  void check_summary() {
    if (const auto named = detail::generation_of(file_); named && *named != gen_)
      problem("attribute 'generation' is " + std::to_string(gen_) + " but the file name says " + std::to_string(*named));
    const std::string summary = detail::summary_digest(root_.summary);
    if (summary != root_.summary_sha256) problem(mismatch("generation metrics", root_.summary_sha256, summary));
    try {
      const auto& events = root_.summary.events;
      const std::vector<std::string> stored = h5::has_attr(f_.get(), "event_sha256")
                                                  ? h5::read_strings(f_.get(), "event_sha256")
                                                  : std::vector<std::string>{};
      if (stored.size() != events.size()) {
        problem("governance events: " + std::to_string(events.size()) + " event(s) but " +
                std::to_string(stored.size()) + " stored digest(s) (attribute 'event_sha256')");
      } else {
        for (std::size_t i = 0; i < events.size(); ++i) {
          const std::string computed = detail::event_field_digests(events[i]);
          if (computed == stored[i]) continue;
          std::string fields;
          std::stringstream a(stored[i]), b(computed);
          for (std::string x, y; std::getline(a, x, ',') && std::getline(b, y, ',');)
            if (x != y) fields += (fields.empty() ? "'" : ", '") + y.substr(0, y.find('=')) + "'";
          problem("governance event " + std::to_string(i) + " (kind '" + events[i].kind + "', generation " +
                  std::to_string(events[i].generation) + "): field " + (fields.empty() ? "digest" : fields) +
                  " does not match its stored digest (attribute 'event_sha256')");
        }
      }
    } catch (const CheckpointError& e) {
      problem(std::string("governance events: ") + e.what());
    }
    const std::string run = detail::run_digest(root_);
    if (run != root_.run_sha256) problem(mismatch("run attributes", root_.run_sha256, run));
  }

  // The sidecar, when retention kept it.
  void open_sidecar() {
    sidecar_name_ = detail::sidecar_file_name(gen_);
    const fs::path sidecar_path = file_.parent_path() / sidecar_name_;
    if (!fs::exists(sidecar_path)) return;
    try {
      const std::string digest = detail::file_sha256(sidecar_path);
      if (root_.sidecar_sha256.empty())
        c_.sidecar_problems.push_back(sidecar_name_ + ": " + c_.name + " records no sidecar: it belongs to another run");
      else if (digest != root_.sidecar_sha256)
        c_.sidecar_problems.push_back(sidecar_name_ + ": " + file_mismatch(c_.name, root_.sidecar_sha256, digest));
      sidecar_ = h5::open_file(sidecar_path.string());
      if (h5::read_string(sidecar_.get(), "format") != detail::kSidecarFormatName ||
          h5::read_int(sidecar_.get(), "generation") != gen_)
        throw CheckpointError("not the weights sidecar of generation " + std::to_string(gen_));
      sidecar_models_ = h5::open_group(sidecar_.get(), "models");
    } catch (const CheckpointError& e) {
      c_.sidecar_problems.push_back(sidecar_name_ + ": " + e.what());
    }
  }

  // The weights of child `id` in the sidecar, checked against the model's digests.
  void check_sidecar_weights(std::uint64_t id, const detail::ModelGroup& mg) {
    const std::string side_label = sidecar_name_ + ": model " + std::to_string(id) + ": ";
    try {
      h5::Handle sg = h5::open_group(sidecar_models_.get(), std::to_string(id));
      const std::string owner = h5::read_string(sg.get(), "provenance_hash");
      if (owner != mg.stored.provenance)
        c_.sidecar_problems.push_back(side_label + "belongs to another model (provenance " + owner +
                                      ", the model's " + mg.stored.provenance + ")");
      const auto sw = detail::read_weights(sg.get());
      for (const auto& p : field_problems(mg, sw, root_.run.input))
        if (p.rfind("weights", 0) == 0) c_.sidecar_problems.push_back(side_label + p);
    } catch (const CheckpointError& e) {
      c_.sidecar_problems.push_back(side_label + e.what());
    }
  }

  // Verifies the group `label` at loc/id; returns its stored provenance hash when it could be read.
  std::optional<std::string> check_model(hid_t loc, std::uint64_t id, const std::string& label, bool child) {
    detail::ModelGroup mg;
    h5::Handle g;
    try {
      g = h5::open_group(loc, std::to_string(id));
      mg = detail::read_model(g.get());
    } catch (const CheckpointError& e) {
      problem(label + ": " + e.what());
      // Its stored hash, where still readable, keeps the checks of the chain from repeating this.
      try {
        return h5::read_string(g.get(), "provenance_hash");
      } catch (const CheckpointError&) {
        return std::nullopt;
      }
    }
    if (mg.record.id != id) problem(label + ": attribute 'id' is " + std::to_string(mg.record.id));
    if (child && mg.record.generation != gen_)
      problem(label + ": attribute 'generation' is " + std::to_string(mg.record.generation));
    std::shared_ptr<const Weights> w;
    if (everything_ && mg.has_weights) {
      try {
        w = detail::read_weights(g.get());
      } catch (const CheckpointError& e) {
        problem(label + ": " + e.what());  // e.g. "weights/params: ... Fletcher32 checksum failed"
      }
    }
    for (const auto& p : field_problems(mg, w, root_.run.input, everything_)) problem(label + ": " + p);
    if (child && !mg.has_weights && sidecar_models_.valid() && h5::has_link(sidecar_models_.get(), std::to_string(id)))
      check_sidecar_weights(id, mg);
    if (child && previous_) check_parents(label, mg);
    if (child && gen_ == 0 && !mg.record.parents.empty()) problem(label + ": parents: a model of generation 0 has parents");
    return mg.stored.provenance;
  }

  // Each parent is in the previous file's population, with the hash the child recorded.
  void check_parents(const std::string& label, const detail::ModelGroup& mg) {
    for (std::size_t i = 0; i < mg.record.parents.size() && i < mg.parent_hashes.size(); ++i) {
      const std::uint64_t p = mg.record.parents[i];
      const auto it = previous_->population.find(p);
      if (it == previous_->population.end())
        problem(label + ": parents: parent " + std::to_string(p) + " is not in the population of " + previous_->name);
      else if (it->second != mg.parent_hashes[i])
        problem(label + ": parents: the hash of parent " + std::to_string(p) + " is " + mg.parent_hashes[i] + " but " +
                previous_->name + " has " + it->second);
    }
  }

  void check_models() {
    h5::Handle models = h5::open_group(f_.get(), "models");
    for (const auto& member : h5::member_names(models.get()))
      if (!parse_id(member)) problem("models: unexpected member '" + member + "'");
    for (std::uint64_t id : member_ids(models.get())) {
      if (auto h = check_model(models.get(), id, "model " + std::to_string(id), true)) {
        children_.push_back({id, *h});
        child_hash_[id] = *h;
      }
    }
  }

  void check_population() {
    h5::Handle pop = h5::open_group(f_.get(), "population");
    const std::set<std::uint64_t> listed(root_.summary.population.begin(), root_.summary.population.end());
    for (const auto& member : h5::member_names(pop.get())) {
      const auto id = parse_id(member);
      if (!id || !listed.count(*id)) problem("population: member '" + member + "' is not in attribute 'population'");
    }
    for (std::uint64_t id : listed) {
      const std::string label = "population model " + std::to_string(id);
      if (!h5::has_link(pop.get(), std::to_string(id))) {
        problem(label + ": group missing");
        continue;
      }
      std::optional<std::string> h;
      if (const auto child = child_hash_.find(id); child != child_hash_.end()) {
        // A new child: /population/<id> is a hard link to /models/<id>, verified above.
        try {
          h5::Handle g = h5::open_group(pop.get(), std::to_string(id));
          h = h5::read_string(g.get(), "provenance_hash");
          if (*h != child->second) problem(label + ": provenance: differs from /models/" + std::to_string(id));
        } catch (const CheckpointError& e) {
          problem(label + ": " + e.what());
        }
      } else {
        h = check_model(pop.get(), id, label, false);
        if (h && previous_) {
          const auto it = previous_->population.find(id);
          if (it == previous_->population.end())
            problem(label + ": neither a child of this generation nor in the population of " + previous_->name);
          else if (it->second != *h)
            problem(label + ": provenance: " + *h + " but " + previous_->name + " has " + it->second);
        }
      }
      if (h) {
        population_.push_back({id, *h});
        c_.population[id] = *h;
      }
    }
  }

  void check_chain() {
    const std::string computed =
        detail::generation_hash(gen_, root_.previous_hash, children_, population_, root_.summary_sha256);
    if (computed != root_.generation_hash)
      problem("generation hash mismatch (stored " + root_.generation_hash + ", computed " + computed + ")");
    if (gen_ == 0 && !root_.previous_hash.empty()) problem("previous_hash: generation 0 names a previous generation");
    if (previous_ && previous_->opened && root_.previous_hash != previous_->generation_hash)
      problem("previous_hash: " + root_.previous_hash + " is not the generation hash of " + previous_->name + " (" +
              previous_->generation_hash + "): the chain is broken");
  }

  const fs::path& file_;
  const FileCheck* previous_;
  const bool everything_;
  FileCheck c_;
  h5::Handle f_, sidecar_, sidecar_models_;
  detail::Root root_;
  int gen_ = -1;
  std::string sidecar_name_;
  std::vector<detail::IdHash> children_, population_;
  std::map<std::uint64_t, std::string> child_hash_;
};

FileCheck check_file(const fs::path& file, const FileCheck* previous, Depth depth = Depth::Everything) {
  return FileChecker(file, previous, depth).run();
}

// check_file, with any other failure (a damaged file can make allocations fail) as a problem.
FileCheck guarded_check(const fs::path& file, const FileCheck* previous, Depth depth = Depth::Everything) {
  try {
    return check_file(file, previous, depth);
  } catch (const std::exception& e) {
    FileCheck c;
    c.name = file.filename().string();
    c.problems.push_back(c.name + ": cannot be read: " + e.what());
    return c;
  }
}

// Weights of model `id` born in generation `born`: its group there, or its sidecar.
std::shared_ptr<const Weights> find_birth_weights(const fs::path& dir, std::uint64_t id, int born) {
  const std::string key = std::to_string(id);
  for (const fs::path& file : {dir / detail::generation_file_name(born), dir / detail::sidecar_file_name(born)}) {
    if (!fs::exists(file)) continue;
    try {
      h5::Handle f = h5::open_file(file.string());
      h5::Handle models = h5::open_group(f.get(), "models");
      if (!h5::has_link(models.get(), key)) continue;
      h5::Handle g = h5::open_group(models.get(), key);
      if (h5::has_link(g.get(), "params")) return detail::read_weights(g.get());
    } catch (const CheckpointError&) {
      continue;
    }
  }
  return nullptr;
}

// A model group read and checked against its digests (throws naming the first problem).
std::pair<detail::ModelGroup, std::shared_ptr<const Weights>> read_checked(hid_t group, bool with_weights,
                                                                           const models::InputSpec& input) {
  detail::ModelGroup mg = detail::read_model(group);
  std::shared_ptr<const Weights> w;
  if (with_weights && mg.has_weights) w = detail::read_weights(group);
  const auto problems = field_problems(mg, w, input, with_weights);
  if (!problems.empty()) throw CheckpointError(problems.front());
  return {std::move(mg), std::move(w)};
}

}  // namespace

std::optional<double> read_generation_real(const fs::path& file, const std::string& name) {
  h5::silence();
  h5::Handle f = h5::open_file(file.string());
  if (!h5::has_attr(f.get(), name)) return std::nullopt;
  try {
    return h5::read_f64(f.get(), name);
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.filename().string() + ": " + e.what());
  }
}

StoredGeneration read_generation(const fs::path& file, bool weights) {
  h5::silence();
  try {
    h5::Handle f = h5::open_file(file.string());
    const detail::Root root = detail::read_root(f.get());
    StoredGeneration out;
    out.generation = root.summary.generation;
    out.format_version = root.format_version;
    out.summary_revision = root.summary_revision;
    out.run = root.run;
    out.record = root.summary;
    out.next_model_id = root.summary.next_model_id;
    out.previous_hash = root.previous_hash;
    out.generation_hash = root.generation_hash;

    h5::Handle sidecar, sidecar_models;
    const fs::path sidecar_path = file.parent_path() / detail::sidecar_file_name(out.generation);
    if (weights && fs::exists(sidecar_path)) {
      try {
        sidecar = h5::open_file(sidecar_path.string());
        sidecar_models = h5::open_group(sidecar.get(), "models");
      } catch (const CheckpointError& e) {
        throw CheckpointError(sidecar_path.filename().string() + ": " + e.what() +
                              " (the weights sidecar is damaged: delete it to keep the lineage without those weights)");
      }
    }
    std::map<std::uint64_t, std::shared_ptr<const Weights>> loaded;
    {
      h5::Handle models = h5::open_group(f.get(), "models");
      for (std::uint64_t id : member_ids(models.get())) {
        const std::string key = std::to_string(id);
        try {
          h5::Handle g = h5::open_group(models.get(), key);
          detail::ModelGroup mg = detail::read_model(g.get());
          if (!weights) {
          } else if (mg.has_weights) {
            mg.record.weights = detail::read_weights(g.get());
            loaded[id] = mg.record.weights;
          } else if (sidecar_models.valid() && h5::has_link(sidecar_models.get(), key)) {
            h5::Handle sg = h5::open_group(sidecar_models.get(), key);
            try {
              mg.record.weights = detail::read_weights(sg.get());
            } catch (const CheckpointError& e) {
              throw CheckpointError(
                  sidecar_path.filename().string() + ": " + e.what() +
                  " (the weights sidecar is damaged: delete it to keep the lineage without those weights)");
            }
          }
          ModelRecord without = mg.record;
          without.weights.reset();
          out.record.children.push_back(std::move(without));
          out.models.push_back({std::move(mg.record), mg.stored.provenance});
        } catch (const CheckpointError& e) {
          throw CheckpointError("model " + key + ": " + e.what());
        }
      }
    }
    h5::Handle pop = h5::open_group(f.get(), "population");
    for (std::uint64_t id : root.summary.population) {
      const std::string key = std::to_string(id);
      try {
        h5::Handle g = h5::open_group(pop.get(), key);
        detail::ModelGroup mg = detail::read_model(g.get());
        // A child of this generation is the same HDF5 object as /models/<id>: reuse its weights.
        if (const auto it = loaded.find(id); it != loaded.end())
          mg.record.weights = it->second;
        else if (weights && mg.has_weights)
          mg.record.weights = detail::read_weights(g.get());
        out.population.push_back(std::move(mg.record));
      } catch (const CheckpointError& e) {
        throw CheckpointError("population model " + key + ": " + e.what());
      }
    }
    out.record.population_models = out.population;
    return out;
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.string() + ": " + e.what());
  } catch (const std::exception& e) {
    throw CheckpointError(file.string() + ": cannot be read (" + e.what() + "): the file is damaged");
  }
}

std::vector<fs::path> generation_files(const fs::path& dir) {
  std::vector<std::pair<int, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return {};
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const auto g = detail::generation_of(entry.path());
    if (g && entry.is_regular_file(ec)) found.emplace_back(*g, entry.path());
  }
  std::sort(found.begin(), found.end());
  std::vector<fs::path> out;
  for (auto& [g, p] : found) out.push_back(std::move(p));
  return out;
}

VerifyReport verify_run(const fs::path& dir) {
  h5::silence();
  VerifyReport report;
  const auto files = generation_files(dir);
  if (files.empty()) {
    report.problems.push_back(dir.string() + ": no generation files (gen-NNNNNN.h5): is this a run directory?");
    return report;
  }
  struct Entry {
    FileCheck check;
    bool in_sequence = true;
    std::string missing;  // the problem of a gap before this file
  };
  std::vector<Entry> entries;
  entries.reserve(files.size());  // `prev` points into it
  std::optional<std::size_t> prev_index;
  const char* unreached = ": a byte changed where no data check reaches (HDF5 metadata or free space)";
  int expected = 0;
  for (const auto& file : files) {
    const int named = *detail::generation_of(file);
    Entry e;
    e.in_sequence = named == expected;
    if (!e.in_sequence) {
      e.missing = detail::generation_file_name(expected) +
                  (named - 1 > expected ? " .. " + detail::generation_file_name(named - 1) : "") +
                  ": missing (the next file is " + file.filename().string() + "): the chain is broken";
      prev_index.reset();
    }
    expected = named + 1;
    FileCheck* prev = nullptr;
    if (prev_index && entries[*prev_index].check.opened && entries[*prev_index].check.generation == named - 1)
      prev = &entries[*prev_index].check;
    e.check = guarded_check(file, prev);
    // The previous file's bytes must be those this file recorded (reported when nothing else is).
    if (prev && e.check.opened && prev->problems.empty() && e.check.previous_file_sha256 != prev->file_sha256)
      prev->problems.push_back(
          prev->name + ": " + file_mismatch(e.check.name, e.check.previous_file_sha256, prev->file_sha256) + unreached);
    entries.push_back(std::move(e));
    prev_index = entries.size() - 1;
  }
  std::vector<std::string> latest_problems;
  const int newest = *detail::generation_of(files.back());
  const std::string newest_name = files.back().filename().string();
  const std::string repair = " (a crash between a generation file's rename and LATEST's update leaves it so; "
                             "`rsi run` with the run's manifest on this directory resumes and rewrites it)";
  const auto latest = detail::read_latest(dir);
  if (!latest) {
    report.latest = "missing";
    latest_problems.push_back("LATEST: missing, although the newest generation file is " + newest_name + repair);
  } else if (latest->generation >= 0) {
    report.latest = "generation " + std::to_string(latest->generation) + " (" + latest->file + ")";
    if (latest->generation < newest)
      latest_problems.push_back("LATEST: names generation " + std::to_string(latest->generation) +
                                " but the newest generation file is " + newest_name + repair);
  } else {
    report.latest = "unreadable";
  }
  if (latest) {
    Entry* named = nullptr;
    for (auto& e : entries)
      if (e.check.opened && e.check.generation == latest->generation) named = &e;
    if (latest->generation < 0) {
      latest_problems.push_back(
          "LATEST: unreadable (expected \"<generation> <file> <generation hash> <file sha256>\")");
    } else if (!named) {
      latest_problems.push_back("LATEST: names generation " + std::to_string(latest->generation) +
                                " but its file is missing or unreadable");
    } else if (named->check.generation_hash != latest->hash) {
      latest_problems.push_back("LATEST: names generation " + std::to_string(latest->generation) + " with hash " +
                                latest->hash + " but " + latest->file + " has " + named->check.generation_hash);
    } else if (named->check.problems.empty() && latest->file_sha256 != named->check.file_sha256) {
      named->check.problems.push_back(named->check.name + ": " +
                                      file_mismatch("LATEST", latest->file_sha256, named->check.file_sha256) +
                                      unreached);
    }
  }
  bool prefix_good = true;
  for (const auto& e : entries) {
    const FileCheck& c = e.check;
    if (!e.missing.empty()) report.problems.push_back(e.missing);
    report.problems.insert(report.problems.end(), c.problems.begin(), c.problems.end());
    report.problems.insert(report.problems.end(), c.sidecar_problems.begin(), c.sidecar_problems.end());
    ++report.generations;
    prefix_good = prefix_good && e.in_sequence && c.problems.empty() && c.sidecar_problems.empty();
    if (prefix_good) report.last_good_generation = c.generation;
  }
  if (latest && latest->generation >= 0)
    report.latest += latest_problems.empty() ? ", the newest generation: agrees with the files" : ": disagrees (see below)";
  report.problems.insert(report.problems.end(), latest_problems.begin(), latest_problems.end());
  return report;
}

// The history a resumed run builds on: every generation before the resume point (files[chosen]),
// present from generation 0 and verifying in its metadata, chained to the one before. Throws
// DamagedHistory naming what is wrong; changes nothing.
static void check_history(const fs::path& dir, const std::vector<fs::path>& files, std::size_t chosen, int generation) {
  std::vector<std::string> damage;
  std::optional<FileCheck> prev;
  for (std::size_t i = 0; i < chosen && damage.size() < 8; ++i) {
    const int named = *detail::generation_of(files[i]);
    if (named != static_cast<int>(i)) {
      damage.push_back(detail::generation_file_name(static_cast<int>(i)) + ": missing (the next file is " +
                       files[i].filename().string() + ")");
      break;
    }
    FileCheck c = guarded_check(files[i], prev ? &*prev : nullptr, Depth::Metadata);
    damage.insert(damage.end(), c.problems.begin(), c.problems.end());
    if (!c.opened) break;
    prev = std::move(c);
  }
  if (damage.empty()) return;
  std::string text = "the history before generation " + std::to_string(generation) +
                     " is damaged; a resume will not build on it:";
  for (const auto& d : damage) text += "\n  " + d;
  throw DamagedHistory(text + "\n  `rsi verify " + dir.string() +
                       "` names every problem. Restore the damaged file(s) from a copy, or start a new run "
                       "(another --out directory); nothing in this directory was changed.");
}

ResumePoint find_resume_point(const fs::path& dir, std::vector<std::string>* warnings) {
  h5::silence();
  auto warn = [warnings](const std::string& w) {
    if (warnings) warnings->push_back(w);
  };
  ResumePoint point;
  const auto files = generation_files(dir);
  std::size_t chosen = files.size();
  std::string chosen_file_sha256;
  for (std::size_t i = files.size(); i-- > 0;) {
    const std::string name = files[i].filename().string();
    const int gen = *detail::generation_of(files[i]);
    std::optional<FileCheck> prev;
    if (gen > 0) {
      if (i == 0 || *detail::generation_of(files[i - 1]) != gen - 1) {
        warn(name + ": skipped: " + detail::generation_file_name(gen - 1) +
             " is missing, so its chain cannot be checked");
        continue;
      }
      prev = summarize(files[i - 1]);
      if (!prev->opened) {
        warn(name + ": skipped: its chain cannot be checked because its predecessor cannot be read (" +
             prev->problems.front() + ")");
        continue;
      }
    }
    const FileCheck c = guarded_check(files[i], prev ? &*prev : nullptr);
    if (!c.problems.empty()) {
      std::string w = c.problems.front();  // starts with the file's name
      if (c.problems.size() > 1) w += " (and " + std::to_string(c.problems.size() - 1) + " more problem(s))";
      warn(w + "; skipped: it cannot be resumed from");
      continue;
    }
    if (const auto l = detail::read_latest(dir);
        l && l->generation == c.generation && l->file_sha256 != c.file_sha256) {
      warn(name + ": " + file_mismatch("LATEST", l->file_sha256, c.file_sha256) +
           ": a byte changed where no data check reaches; skipped: it cannot be resumed from");
      continue;
    }
    // A damaged sidecar costs only those children's weights, never the resume.
    for (const auto& p : c.sidecar_problems) warn(p + " (the weights sidecar is damaged; resuming anyway)");
    chosen_file_sha256 = c.file_sha256;
    point.format_version = c.format_version;
    point.generation = c.generation;
    point.generation_hash = c.generation_hash;
    point.next_model_id = c.next_model_id;
    chosen = i;
    break;
  }

  if (point.generation >= 0) check_history(dir, files, chosen, point.generation);

  if (point.generation >= 0) {
    const fs::path& file = files[chosen];
    try {
      h5::Handle f = h5::open_file(file.string());
      const detail::Root root = detail::read_root(f.get());
      h5::Handle pop = h5::open_group(f.get(), "population");
      for (std::uint64_t id : root.summary.population) {
        h5::Handle g = h5::open_group(pop.get(), std::to_string(id));
        auto [mg, w] = read_checked(g.get(), true, root.run.input);
        // A model that never had weights (a surrogate task's, say) has empty params/state digests.
        const bool had_weights = !mg.stored.params.empty();
        if (!w && had_weights) w = find_birth_weights(dir, id, mg.record.generation);
        if (!w && had_weights)
          throw CheckpointError("population model " + std::to_string(id) +
                                ": no stored weights (checkpoints.keep_population was false and the weights of its "
                                "generation are gone); a resume needs them: start a new run directory");
        mg.record.weights = std::move(w);
        point.population.push_back(std::move(mg.record));
      }
    } catch (const CheckpointError& e) {
      throw CheckpointError(file.string() + ": cannot resume from it: " + e.what());
    }
  }

  // Files past the resume point would be overwritten: move them aside, nothing is deleted.
  const std::size_t first_bad = point.generation >= 0 ? chosen + 1 : 0;
  for (std::size_t i = first_bad; i < files.size(); ++i) {
    fs::path aside = files[i].string() + ".corrupt";
    for (int k = 1; fs::exists(aside); ++k) aside = files[i].string() + ".corrupt." + std::to_string(k);
    std::error_code ec;
    fs::rename(files[i], aside, ec);
    if (ec)
      warn(files[i].filename().string() + ": could not be moved aside (" + ec.message() + ")");
    else
      warn(files[i].filename().string() + ": moved aside to " + aside.filename().string() +
           (point.generation >= 0 ? "; the run continues after generation " + std::to_string(point.generation)
                                  : "; no generation is usable, the run starts again"));
  }
  if (first_bad < files.size() || (point.generation >= 0 && [&] {
        const auto l = detail::read_latest(dir);
        return !l || l->generation != point.generation || l->hash != point.generation_hash ||
               l->file_sha256 != chosen_file_sha256;
      }())) {
    if (point.generation >= 0) {
      detail::write_file_durably(dir / "LATEST",
                                 detail::latest_text(point.generation, point.generation_hash, chosen_file_sha256));
    } else {
      std::error_code ec;
      fs::remove(dir / "LATEST", ec);
    }
  }
  return point;
}

namespace detail {

ExportSource find_export_source(const fs::path& run_dir, std::uint64_t model_id) {
  h5::silence();
  const auto files = generation_files(run_dir);
  if (files.empty())
    throw CheckpointError(run_dir.string() + ": no generation files (gen-NNNNNN.h5): is this a run directory?");
  const std::string key = std::to_string(model_id);
  const std::string label = run_dir.string() + ": model " + key;
  std::optional<std::size_t> birth;
  std::vector<std::string> unreadable;
  for (std::size_t i = 0; i < files.size() && !birth; ++i) {
    try {
      h5::Handle f = h5::open_file(files[i].string());
      h5::Handle models = h5::open_group(f.get(), "models");
      if (h5::has_link(models.get(), key)) birth = i;
    } catch (const CheckpointError&) {
      unreadable.push_back(files[i].filename().string());
    }
  }
  if (!birth) {
    std::string msg =
        label + ": not found in " + files.front().filename().string() + " .. " + files.back().filename().string();
    if (!unreadable.empty())
      msg += " (unreadable: " + unreadable.front() + (unreadable.size() > 1 ? " and others" : "") + ")";
    throw CheckpointError(msg);
  }
  const fs::path& file = files[*birth];
  detail::ModelGroup mg;
  std::shared_ptr<const Weights> weights;
  RunInfo run;
  try {
    h5::Handle f = h5::open_file(file.string());
    run = detail::read_run(f.get());
    h5::Handle models = h5::open_group(f.get(), "models");
    h5::Handle g = h5::open_group(models.get(), key);
    std::tie(mg, weights) = read_checked(g.get(), true, run.input);
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.string() + ": model " + key + ": " + e.what());
  }
  // A model that never had weights (failed, refused, a surrogate task's) is exported without.
  const bool had_weights = !mg.stored.params.empty();
  if (!weights && had_weights) weights = find_birth_weights(run_dir, model_id, mg.record.generation);
  // A population member keeps its weights in every later generation file.
  for (std::size_t i = files.size(); had_weights && !weights && i-- > *birth;) {
    try {
      h5::Handle f = h5::open_file(files[i].string());
      h5::Handle pop = h5::open_group(f.get(), "population");
      if (!h5::has_link(pop.get(), key)) continue;
      h5::Handle g = h5::open_group(pop.get(), key);
      weights = read_checked(g.get(), true, run.input).second;
    } catch (const CheckpointError&) {
      continue;
    }
  }
  if (!weights && had_weights)
    throw CheckpointError(label + " (generation " + std::to_string(mg.record.generation) +
                          "): its weights were not kept (retention keeps the children of the last K generations and "
                          "the population); only its lineage metadata remains");
  const auto problems = field_problems(mg, weights, run.input);
  if (!problems.empty()) throw CheckpointError(label + ": " + problems.front());
  return {std::move(mg), std::move(weights), std::move(run), file};
}

}  // namespace detail

void export_model(const fs::path& run_dir, std::uint64_t model_id, const fs::path& out) {
  auto [mg, weights, run, file] = detail::find_export_source(run_dir, model_id);

  const fs::path tmp = out.string() + ".tmp";
  try {
    h5::Handle f = h5::create_file(tmp.string());
    h5::write_string(f.get(), "format", detail::kModelFormatName);
    h5::write_int(f.get(), "format_version", mg.format_version);  // its weights_digest's basis
    detail::write_run(f.get(), run);
    h5::write_string(f.get(), "source_file", file.filename().string());
    h5::write_int(f.get(), "generation", mg.record.generation);
    ModelRecord m = mg.record;
    m.weights = weights;
    detail::write_model(f.get(), "model", m, mg.parent_hashes, mg.stored, true, run.input);
    f.close("closing the file");
    detail::commit(tmp, out);
  } catch (const CheckpointError& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw CheckpointError(tmp.string() + ": " + e.what());
  }
}

RunInfo read_exported_run(const fs::path& file) {
  h5::silence();
  try {
    h5::Handle f = h5::open_file(file.string());
    return detail::read_run(f.get());
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.string() + ": " + e.what());
  }
}

ModelRecord read_exported_model(const fs::path& file) {
  h5::silence();
  try {
    h5::Handle f = h5::open_file(file.string());
    const std::string format = h5::read_string(f.get(), "format");
    if (format != detail::kModelFormatName)
      throw CheckpointError("attribute 'format' is '" + format + "', not '" + detail::kModelFormatName +
                            "': not a model exported by 'rsi export'");
    if (h5::read_int(f.get(), "format_version") > detail::kFormatVersion)
      throw CheckpointError("written by a newer rsi (format version " +
                            std::to_string(h5::read_int(f.get(), "format_version")) + "): use a newer rsi");
    h5::Handle g = h5::open_group(f.get(), "model");
    try {
      auto [mg, w] = read_checked(g.get(), true, detail::read_run(f.get()).input);
      mg.record.weights = std::move(w);
      return std::move(mg.record);
    } catch (const CheckpointError& e) {
      std::string id = "?";
      if (h5::has_attr(g.get(), "id")) id = std::to_string(h5::read_u64(g.get(), "id"));
      throw CheckpointError("model " + id + ": " + e.what());
    }
  } catch (const CheckpointError& e) {
    throw CheckpointError(file.string() + ": " + e.what());
  }
}

}  // namespace rsi::checkpoints
