// The lineage store's on-disk layout (see layout.h and FORMAT.md).
#include "layout.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <type_traits>

#include "h5.h"
#include "rsi/models/network.h"
#include "rsi/scheduler/record.h"

namespace rsi::checkpoints::detail {

static_assert(std::endian::native == std::endian::little,
              "weights are hashed as little-endian float32 bytes, as HDF5 stores them");

using scheduler::FieldGroup;
using scheduler::FieldInfo;
using scheduler::GenerationRecord;
using scheduler::ModelRecord;
using scheduler::Weights;

namespace {

std::string hex(const unsigned char* bytes, std::size_t n) {
  static const char* digits = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

// A canonical text serialisation ("key=value\n" lines after a tag line) for hashing. Strings are
// length-prefixed ("5:hello"), reals are the 16 hex digits of their IEEE-754 bits, so the text is
// unambiguous and identical wherever the same values are.
class Canon {
 public:
  explicit Canon(const char* tag) : text_(std::string(tag) + "\n") {}
  Canon& str(const char* key, const std::string& v) {
    line(key, std::to_string(v.size()) + ":" + v);
    return *this;
  }
  template <typename T>
  Canon& num(const char* key, T v) {
    line(key, std::to_string(v));
    return *this;
  }
  Canon& real(const char* key, double v) {
    line(key, bits(v));
    return *this;
  }
  Canon& reals(const char* key, const std::vector<double>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) s += ',';
      s += bits(v[i]);
    }
    line(key, s);
    return *this;
  }
  Canon& ids(const char* key, const std::vector<std::uint64_t>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(v[i]);
    }
    line(key, s);
    return *this;
  }
  Canon& raw(const char* key, const std::string& v) {
    line(key, v);
    return *this;
  }
  std::string digest() const { return sha256_hex(text_); }

 private:
  static std::string bits(double v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(std::bit_cast<std::uint64_t>(v)));
    return buf;
  }
  void line(const char* key, const std::string& value) {
    text_ += key;
    text_ += '=';
    text_ += value;
    text_ += '\n';
  }
  std::string text_;
};

ModelRecord::Status parse_status(const std::string& s) {
  if (s == "trained") return ModelRecord::Status::Trained;
  if (s == "failed") return ModelRecord::Status::Failed;
  if (s == "refused") return ModelRecord::Status::Refused;
  throw CheckpointError("attribute 'status': '" + s + "' is none of trained, failed, refused");
}

std::string errno_text() { return std::strerror(errno); }

// The generation summary's fields (scheduler/record.h) in the digest, the file and back,
// one overload per member type. A std::optional field that holds nothing is left out of all three.
std::pair<std::vector<std::uint64_t>, std::vector<double>> split_skills(const std::map<std::uint64_t, double>& m) {
  std::pair<std::vector<std::uint64_t>, std::vector<double>> out;
  for (const auto& [lineage, skill] : m) {
    out.first.push_back(lineage);
    out.second.push_back(skill);
  }
  return out;
}

struct DigestFields {  // adds the fields of one group to the summary digest
  Canon& c;
  FieldGroup group;
  template <class T>
  void operator()(const FieldInfo& f, const T& v) const {
    if (f.group == group) add(f.name, v);
  }
  void add(const char* k, int v) const { c.num(k, v); }
  void add(const char* k, std::int64_t v) const { c.num(k, v); }
  void add(const char* k, std::uint64_t v) const { c.num(k, v); }
  void add(const char* k, double v) const { c.real(k, v); }
  void add(const char* k, const std::string& v) const { c.str(k, v); }
  void add(const char* k, const std::vector<std::uint64_t>& v) const { c.ids(k, v); }
  void add(const char* k, const std::vector<double>& v) const { c.reals(k, v); }
  void add(const char*, const std::map<std::uint64_t, double>& m) const {
    const auto [lineages, skills] = split_skills(m);
    c.ids("design_skill_lineages", lineages).reals("design_skill_values", skills);
  }
  template <class T>
  void add(const char* k, const std::optional<T>& v) const {
    if (v) add(k, *v);
  }
};

struct WriteFields {  // writes each field as an attribute of `f` (the root, a model, its metrics)
  hid_t f;
  template <class T>
  void operator()(const FieldInfo& info, const T& v) const { put(info.name, v); }
  void put(const char* k, int v) const { h5::write_int(f, k, v); }
  void put(const char* k, bool v) const { h5::write_bool(f, k, v); }
  void put(const char* k, ModelRecord::Status v) const { h5::write_string(f, k, scheduler::status_name(v)); }
  void put(const char* k, const std::vector<int>& v) const {
    h5::write_u64s(f, k, std::vector<std::uint64_t>(v.begin(), v.end()));
  }
  void put(const char* k, std::int64_t v) const { h5::write_i64(f, k, v); }
  void put(const char* k, std::uint64_t v) const { h5::write_u64(f, k, v); }
  void put(const char* k, double v) const { h5::write_f64(f, k, v); }
  void put(const char* k, const std::string& v) const { h5::write_string(f, k, storable(v)); }
  void put(const char* k, const std::vector<std::uint64_t>& v) const { h5::write_u64s(f, k, v); }
  void put(const char* k, const std::vector<double>& v) const { h5::write_f64s(f, k, v); }
  void put(const char*, const std::map<std::uint64_t, double>& m) const {
    const auto [lineages, skills] = split_skills(m);
    h5::write_u64s(f, "design_skill_lineages", lineages);
    h5::write_f64s(f, "design_skill_values", skills);
  }
  template <class T>
  void put(const char* k, const std::optional<T>& v) const {
    if (v) put(k, *v);
  }
};

struct ReadFields {  // reads them back (of the root: the groups the file has)
  hid_t f;
  bool governance;  // the file has `status` (written by an rsi with governance)
  template <class T>
  void operator()(const FieldInfo& info, T& v) const {
    if (info.group == FieldGroup::Governance && !governance) return;  // left at "none"
    get(info.name, v);
  }
  void get(const char* k, int& v) const { v = h5::read_int(f, k); }
  void get(const char* k, bool& v) const { v = h5::read_bool(f, k); }
  void get(const char* k, ModelRecord::Status& v) const { v = parse_status(h5::read_string(f, k)); }
  void get(const char* k, std::vector<int>& v) const {
    v.clear();
    for (std::uint64_t e : h5::read_u64s(f, k)) v.push_back(static_cast<int>(e));
  }
  void get(const char* k, std::int64_t& v) const { v = h5::read_i64(f, k); }
  void get(const char* k, std::uint64_t& v) const { v = h5::read_u64(f, k); }
  void get(const char* k, double& v) const { v = h5::read_f64(f, k); }
  void get(const char* k, std::string& v) const { v = h5::read_string(f, k); }
  void get(const char* k, std::vector<std::uint64_t>& v) const { v = h5::read_u64s(f, k); }
  void get(const char* k, std::vector<double>& v) const { v = h5::read_f64s(f, k); }
  void get(const char*, std::map<std::uint64_t, double>& m) const {
    const auto lineages = h5::read_u64s(f, "design_skill_lineages");
    const auto skills = h5::read_f64s(f, "design_skill_values");
    if (lineages.size() != skills.size())
      throw CheckpointError("attributes 'design_skill_lineages' and 'design_skill_values' differ in length");
    for (std::size_t i = 0; i < lineages.size(); ++i) m[lineages[i]] = skills[i];
  }
  template <class T>
  void get(const char* k, std::optional<T>& v) const {
    if (!h5::has_attr(f, k)) return;  // written before the field existed
    get(k, v.emplace());
  }
};

}  // namespace

std::string generation_file_name(int generation) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "gen-%06d.h5", generation);
  return buf;
}

std::string sidecar_file_name(int generation) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "gen-%06d.weights.h5", generation);
  return buf;
}

std::optional<int> generation_of(const fs::path& file) {
  static const std::regex pattern("gen-([0-9]{6,9})\\.h5");
  std::smatch m;
  const std::string name = file.filename().string();
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::stoi(m[1].str());
}

std::optional<int> sidecar_generation_of(const fs::path& file) {
  static const std::regex pattern("gen-([0-9]{6,9})\\.weights\\.h5");
  std::smatch m;
  const std::string name = file.filename().string();
  if (!std::regex_match(name, m, pattern)) return std::nullopt;
  return std::stoi(m[1].str());
}

std::string sha256_hex(const void* data, std::size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data, size, md, &len, EVP_sha256(), nullptr) != 1)
    throw CheckpointError("SHA-256 (OpenSSL EVP_Digest) failed");
  return hex(md, len);
}

std::string sha256_hex(const std::string& text) { return sha256_hex(text.data(), text.size()); }

std::string floats_digest(const std::vector<float>& v) { return sha256_hex(v.data(), v.size() * sizeof(float)); }

ModelHashes field_hashes(const ModelRecord& m, const ModelHashes* stored) {
  ModelHashes h;
  // Self-improvement fields only where the run had them on: other files keep their digests.
  Canon metadata("rsi-model-metadata/1");
  scheduler::visit_model_fields(m, [&](const char* key, scheduler::ModelPart part, const auto& v) {
    using T = std::decay_t<decltype(v)>;
    if (!scheduler::has_part(m, part)) return;
    if constexpr (std::is_same_v<T, std::string>) metadata.str(key, v);
    else if constexpr (std::is_same_v<T, ModelRecord::Status>) metadata.str(key, scheduler::status_name(v));
    else if constexpr (std::is_same_v<T, bool>) metadata.num(key, int{v});
    else if constexpr (std::is_same_v<T, double>) metadata.real(key, v);
    else if constexpr (std::is_same_v<T, std::optional<double>>) metadata.real(key, *v);
    else if constexpr (std::is_same_v<T, std::vector<std::uint64_t>>) metadata.ids(key, v);
    else if constexpr (std::is_same_v<T, std::vector<int>>) metadata.ids(key, std::vector<std::uint64_t>(v.begin(), v.end()));
    else if constexpr (std::is_same_v<T, std::vector<double>>) metadata.reals(key, v);
    else metadata.num(key, v);
  });
  h.metadata = metadata.digest();
  h.genome = sha256_hex(m.genome_yaml);
  // Wall time differs from run to run: it has its own digest, outside the provenance hash. A
  // measured field only when measured: files written before it existed keep their digests; a stored
  // value changed to or from "none" (-1) still changes the digest.
  Canon metrics("rsi-model-metrics/1"), timing("rsi-model-timing/1");
  scheduler::visit_metric_fields(m.metrics, [&](const char* name, scheduler::MetricPart part, const auto& v) {
    using T = std::decay_t<decltype(v)>;
    Canon& c = part == scheduler::MetricPart::Timing ? timing : metrics;
    if constexpr (std::is_same_v<T, double>) {
      if (part != scheduler::MetricPart::Measured || v >= 0) c.real(name, v);
    } else if constexpr (std::is_same_v<T, std::vector<double>>) {
      c.reals(name, v);
    } else {
      c.num(name, v);
    }
  });
  h.metrics = metrics.digest();
  h.timing = timing.digest();
  if (m.weights) {
    h.params = floats_digest(m.weights->params);
    h.state = floats_digest(m.weights->state);
  } else if (stored) {
    h.params = stored->params;
    h.state = stored->state;
  }
  return h;
}

std::string provenance_hash(const ModelRecord& m, const ModelHashes& f, const std::vector<std::string>& parent_hashes) {
  if (parent_hashes.size() != m.parents.size())
    throw CheckpointError("model " + std::to_string(m.id) + ": " + std::to_string(m.parents.size()) + " parents but " +
                          std::to_string(parent_hashes.size()) + " parent hashes");
  Canon c("rsi-model/1");
  c.raw("metadata", f.metadata)
      .raw("genome", f.genome)
      .raw("metrics", f.metrics)
      .raw("params", f.params)
      .raw("state", f.state)
      .str("weights_digest", m.weights_digest);
  for (std::size_t i = 0; i < m.parents.size(); ++i)
    c.raw("parent", std::to_string(m.parents[i]) + ":" + parent_hashes[i]);
  return c.digest();
}

std::string storable(const std::string& s) {
  if (s.find('\0') == std::string::npos) return s;
  std::string out;
  for (char c : s) out += c == '\0' ? std::string("\\0") : std::string(1, c);
  return out;
}

ModelRecord storable(const ModelRecord& m) {
  ModelRecord out = m;
  out.genome_yaml = storable(m.genome_yaml);
  out.op = storable(m.op);
  out.description = storable(m.description);
  out.failure = storable(m.failure);
  out.weights_digest = storable(m.weights_digest);
  return out;
}

void write_model(hid_t parent, const std::string& name, const ModelRecord& m,
                 const std::vector<std::string>& parent_hashes, const ModelHashes& h, bool with_weights,
                 const models::InputSpec& input) {
  h5::Handle g = h5::create_group(parent, name);
  const hid_t id = g.get();
  const WriteFields write{id};
  scheduler::visit_model_fields(m, [&](const char* key, scheduler::ModelPart part, const auto& v) {
    if (scheduler::has_part(m, part)) write.put(key, v);
  });
  h5::write_strings(id, "parent_hashes", parent_hashes);
  h5::write_string(id, "weights_digest", m.weights_digest);
  h5::write_string(id, "metadata_sha256", h.metadata);
  h5::write_string(id, "genome_sha256", h.genome);
  h5::write_string(id, "metrics_sha256", h.metrics);
  h5::write_string(id, "timing_sha256", h.timing);
  h5::write_string(id, "params_sha256", h.params);
  h5::write_string(id, "state_sha256", h.state);
  h5::write_string(id, "provenance_hash", h.provenance);
  h5::write_text(id, "genome", m.genome_yaml);
  // Derived from the genome, so outside the hash chain: verify recomputes it (FORMAT.md).
  if (!h.params.empty())
    if (const TensorTable table = tensor_table(m.genome_yaml, input); table.error.empty())
      h5::write_text(id, "tensors", table.text);
  {
    h5::Handle mg = h5::create_group(id, "metrics");
    const WriteFields write_metrics{mg.get()};
    scheduler::visit_metric_fields(m.metrics, [&write_metrics](const char* key, scheduler::MetricPart, const auto& v) {
      write_metrics.put(key, v);
    });
  }
  if (with_weights && m.weights) {
    h5::write_floats(id, "params", m.weights->params);
    h5::write_floats(id, "state", m.weights->state);
  }
}

ModelGroup read_model(hid_t group) {
  ModelGroup out;
  {  // The file's format says which FNV basis its weight digests start from.
    const h5::Handle file(H5Iget_file_id(group), H5Fclose);
    if (file.valid() && h5::has_attr(file.get(), "format_version"))
      out.format_version = h5::read_int(file.get(), "format_version");
  }
  ModelRecord& m = out.record;
  // A part is in the file when its first attribute is (predicted_gain, rung_epochs).
  const bool predicted = h5::has_attr(group, "predicted_gain"), rungs = h5::has_attr(group, "rung_epochs");
  const ReadFields read{group, true};
  scheduler::visit_model_fields(m, [&](const char* key, scheduler::ModelPart part, auto& v) {
    if ((part == scheduler::ModelPart::Predicted && !predicted) || (part == scheduler::ModelPart::Rungs && !rungs)) return;
    read.get(key, v);
  });
  if (m.rung_val_accuracy.size() != m.rung_epochs.size())
    throw CheckpointError("attributes 'rung_epochs' and 'rung_val_accuracy' differ in length");
  out.parent_hashes = h5::read_strings(group, "parent_hashes");
  m.weights_digest = h5::read_string(group, "weights_digest");
  out.stored.metadata = h5::read_string(group, "metadata_sha256");
  out.stored.genome = h5::read_string(group, "genome_sha256");
  out.stored.metrics = h5::read_string(group, "metrics_sha256");
  out.stored.timing = h5::read_string(group, "timing_sha256");
  out.stored.params = h5::read_string(group, "params_sha256");
  out.stored.state = h5::read_string(group, "state_sha256");
  out.stored.provenance = h5::read_string(group, "provenance_hash");
  try {
    m.genome_yaml = h5::read_text(group, "genome");
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string("genome: ") + e.what());
  }
  try {
    h5::Handle mg = h5::open_group(group, "metrics");
    const ReadFields read_metrics{mg.get(), true};
    scheduler::visit_metric_fields(m.metrics, [&read_metrics](const char* key, scheduler::MetricPart part, auto& v) {
      if constexpr (std::is_same_v<std::decay_t<decltype(v)>, double>)
        if (part == scheduler::MetricPart::Measured && !h5::has_attr(read_metrics.f, key)) {
          v = -1.0;  // written before the field existed: "none"
          return;
        }
      read_metrics.get(key, v);
    });
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string("metrics: ") + e.what());
  }
  out.has_weights = h5::has_link(group, "params") || h5::has_link(group, "state");
  if (h5::has_link(group, "tensors")) {
    try {
      out.tensors = h5::read_text(group, "tensors");
    } catch (const CheckpointError& e) {
      throw CheckpointError(std::string("tensors: ") + e.what());
    }
  }
  return out;
}

TensorTable tensor_table(const std::string& genome_yaml, const models::InputSpec& input) {
  TensorTable table;
  try {
    const auto tensors = models::named_tensors(models::from_yaml(genome_yaml), input);
    table.text = models::tensor_table_text(tensors);
    for (const auto& t : tensors) {
      std::int64_t n = 1;
      for (std::int64_t d : t.shape) n *= d;
      (t.in_state ? table.state : table.params) += n;
    }
  } catch (const std::exception& e) {
    table.error = e.what();
  }
  return table;
}

std::vector<std::string> tensor_table_problems(const ModelGroup& mg, const Weights* w, const models::InputSpec& input) {
  if (!mg.tensors) return {};
  const TensorTable derived = tensor_table(mg.record.genome_yaml, input);
  if (!derived.error.empty())
    return {"tensors: the file has a table, but its genome builds no network to check it against: " + derived.error};
  std::vector<std::string> out;
  if (*mg.tensors != derived.text) {
    std::istringstream stored(*mg.tensors), expected(derived.text);
    std::string a, b;
    int line = 0;
    while (true) {
      const bool more_a = static_cast<bool>(std::getline(stored, a)), more_b = static_cast<bool>(std::getline(expected, b));
      ++line;
      if (!more_a && !more_b) break;
      if (more_a && more_b && a == b) continue;
      out.push_back("tensors: line " + std::to_string(line) + " is '" + (more_a ? a : "<end>") +
                    "', the genome's network has '" + (more_b ? b : "<end>") +
                    "' (the table is derived from the genome: rewrite it with the genome's, or restore the file)");
      break;
    }
    if (out.empty()) out.push_back("tensors: differs from the table derived from the genome (trailing bytes)");
  }
  if (w && (static_cast<std::int64_t>(w->params.size()) != derived.params ||
            static_cast<std::int64_t>(w->state.size()) != derived.state))
    out.push_back("weights: " + std::to_string(w->params.size()) + " params and " + std::to_string(w->state.size()) +
                  " state values, but the genome's network has " + std::to_string(derived.params) + " and " +
                  std::to_string(derived.state));
  return out;
}

std::shared_ptr<const Weights> read_weights(hid_t group) {
  auto w = std::make_shared<Weights>();
  try {
    w->params = h5::read_floats(group, "params");
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string("weights/params: ") + e.what());
  }
  try {
    w->state = h5::read_floats(group, "state");
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string("weights/state: ") + e.what());
  }
  return w;
}

void write_sidecar_model(hid_t parent, const ModelRecord& m, const ModelHashes& h) {
  h5::Handle g = h5::create_group(parent, std::to_string(m.id));
  h5::write_u64(g.get(), "id", m.id);
  h5::write_string(g.get(), "weights_digest", m.weights_digest);
  h5::write_string(g.get(), "params_sha256", h.params);
  h5::write_string(g.get(), "state_sha256", h.state);
  h5::write_string(g.get(), "provenance_hash", h.provenance);
  h5::write_floats(g.get(), "params", m.weights->params);
  h5::write_floats(g.get(), "state", m.weights->state);
}

std::string summary_digest(const GenerationRecord& g) {
  // FORMAT.md "Hashes": the groups in this order. Files from before governance have no status and
  // keep their digests; the self-improvement fields only in runs that have it on.
  Canon c("rsi-generation-summary/1");
  scheduler::visit_generation_fields(g, DigestFields{c, FieldGroup::Core});
  if (!g.status.empty()) {
    scheduler::visit_generation_fields(g, DigestFields{c, FieldGroup::Governance});
    for (const auto& e : g.events) c.raw("event", sha256_hex(event_field_digests(e)));
  }
  scheduler::visit_generation_fields(g, DigestFields{c, FieldGroup::Improvement});
  scheduler::visit_generation_fields(g, DigestFields{c, FieldGroup::Later});
  return c.digest();
}

std::string event_field_digests(const scheduler::GovernanceEvent& e) {
  // A short digest per field, so `rsi verify` can name the field that changed. `when` is wall
  // time: it is verified with the run attributes, outside the chain (like a model's wall_seconds).
  auto d = [](const std::string& v) { return sha256_hex(v).substr(0, 16); };
  return "generation=" + d(std::to_string(e.generation)) + ",kind=" + d(e.kind) +
         ",model_id=" + d(std::to_string(e.model_id)) + ",reason=" + d(e.reason) + ",who=" + d(e.who);
}

std::string run_digest(const Root& root) {
  const RunInfo& run = root.run;
  const Retention& retention = root.retention;
  const GenerationRecord& g = root.summary;
  Canon c("rsi-run/1");
  c.str("run_name", run.run_name)
      .str("manifest_text", run.manifest_text)
      .str("manifest_hash", run.manifest_hash)
      .str("program_version", run.program_version)
      .str("git_commit", run.git_commit)
      .num("ranks", run.ranks)
      .num("group_size", run.group_size)
      .num("threads_per_rank", run.threads_per_rank)
      .str("hosts", run.hosts)
      .str("start_time", run.start_time)
      .num("split_fingerprint", run.split_fingerprint)
      .num("keep_last_generations", retention.keep_last_generations)
      .num("keep_population", int{retention.keep_population})
      .real("seconds", g.seconds)
      .real("models_per_second", g.models_per_second)
      .raw("previous_file_sha256", root.previous_file_sha256)
      .raw("sidecar_sha256", root.sidecar_sha256);
  if (root.summary_revision > 0) c.num("summary_revision", root.summary_revision);  // absent from older files
  if (!run.cpu_kernels.empty()) c.str("cpu_kernels", run.cpu_kernels);  // absent from older files
  if (!run.cuda_settings.empty()) c.str("cuda_settings", run.cuda_settings);  // GPU runs
  if (run.input != models::InputSpec{})  // task kind images
    c.raw("input", std::to_string(run.input.channels) + "x" + std::to_string(run.input.height) + "x" +
                       std::to_string(run.input.width) + ":" + std::to_string(run.input.classes));
  if (!run.data.empty()) c.str("data", run.data);
  if (!run.data_fingerprint.empty()) c.str("data_fingerprint", run.data_fingerprint);
  if (!g.events.empty()) {
    std::string when;
    for (const auto& e : g.events) when += std::to_string(e.when.size()) + ":" + e.when;
    c.raw("events_when", when);
  }
  return c.digest();
}

std::string generation_hash(int generation, const std::string& previous, const std::vector<IdHash>& children,
                            const std::vector<IdHash>& population, const std::string& summary_sha256) {
  Canon c("rsi-generation/1");
  c.num("generation", generation).raw("previous", previous);
  for (const auto& m : children) c.raw("model", std::to_string(m.id) + ":" + m.hash);
  for (const auto& m : population) c.raw("population", std::to_string(m.id) + ":" + m.hash);
  c.raw("summary", summary_sha256);
  return c.digest();
}

void write_run(hid_t loc, const RunInfo& run) {
  h5::write_string(loc, "run_name", storable(run.run_name));
  h5::write_string(loc, "manifest_text", storable(run.manifest_text));
  h5::write_string(loc, "manifest_hash", storable(run.manifest_hash));
  h5::write_string(loc, "program_version", storable(run.program_version));
  h5::write_string(loc, "git_commit", storable(run.git_commit));
  h5::write_int(loc, "ranks", run.ranks);
  h5::write_int(loc, "group_size", run.group_size);
  h5::write_int(loc, "threads_per_rank", run.threads_per_rank);
  h5::write_string(loc, "hosts", storable(run.hosts));
  h5::write_string(loc, "start_time", storable(run.start_time));
  h5::write_u64(loc, "split_fingerprint", run.split_fingerprint);
  if (!run.cpu_kernels.empty()) h5::write_string(loc, "cpu_kernels", storable(run.cpu_kernels));
  if (!run.cuda_settings.empty()) h5::write_string(loc, "cuda_settings", storable(run.cuda_settings));
  if (run.input != models::InputSpec{})
    h5::write_u64s(loc, "input", {static_cast<std::uint64_t>(run.input.channels), static_cast<std::uint64_t>(run.input.height),
                                  static_cast<std::uint64_t>(run.input.width), static_cast<std::uint64_t>(run.input.classes)});
  if (!run.data.empty()) h5::write_string(loc, "data", storable(run.data));
  if (!run.data_fingerprint.empty()) h5::write_string(loc, "data_fingerprint", storable(run.data_fingerprint));
}

RunInfo read_run(hid_t loc) {
  RunInfo run;
  run.run_name = h5::read_string(loc, "run_name");
  run.manifest_text = h5::read_string(loc, "manifest_text");
  run.manifest_hash = h5::read_string(loc, "manifest_hash");
  run.program_version = h5::read_string(loc, "program_version");
  run.git_commit = h5::read_string(loc, "git_commit");
  run.ranks = h5::read_int(loc, "ranks");
  run.group_size = h5::read_int(loc, "group_size");
  run.threads_per_rank = h5::read_int(loc, "threads_per_rank");
  run.hosts = h5::read_string(loc, "hosts");
  run.start_time = h5::read_string(loc, "start_time");
  run.split_fingerprint = h5::read_u64(loc, "split_fingerprint");
  if (h5::has_attr(loc, "cpu_kernels")) run.cpu_kernels = h5::read_string(loc, "cpu_kernels");
  if (h5::has_attr(loc, "cuda_settings")) run.cuda_settings = h5::read_string(loc, "cuda_settings");
  if (h5::has_attr(loc, "input")) {
    const std::vector<std::uint64_t> v = h5::read_u64s(loc, "input");
    if (v.size() != 4 || std::any_of(v.begin(), v.end(), [](std::uint64_t x) { return x < 1 || x > 1'000'000; }))
      throw CheckpointError("attribute 'input': expected [channels, height, width, classes]");
    run.input = models::InputSpec{static_cast<int>(v[0]), static_cast<int>(v[1]), static_cast<int>(v[2]), static_cast<int>(v[3])};
  }
  if (h5::has_attr(loc, "data")) run.data = h5::read_string(loc, "data");
  if (h5::has_attr(loc, "data_fingerprint")) run.data_fingerprint = h5::read_string(loc, "data_fingerprint");
  return run;
}

void write_root(hid_t f, const Root& root) {
  const GenerationRecord& g = root.summary;
  h5::write_string(f, "format", kFormatName);
  h5::write_int(f, "format_version", root.format_version);
  if (root.summary_revision > 0) h5::write_int(f, "summary_revision", root.summary_revision);
  write_run(f, root.run);
  h5::write_int(f, "keep_last_generations", root.retention.keep_last_generations);
  h5::write_bool(f, "keep_population", root.retention.keep_population);
  scheduler::visit_generation_fields(g, WriteFields{f});
  if (!g.events.empty()) {  // parallel arrays, one entry per event, in the order they happened
    std::vector<std::uint64_t> generations, model_ids;
    std::vector<std::string> kinds, reasons, who, when, digests;
    for (const auto& e : g.events) {
      generations.push_back(static_cast<std::uint64_t>(e.generation));
      model_ids.push_back(e.model_id);
      kinds.push_back(storable(e.kind));
      reasons.push_back(storable(e.reason));
      who.push_back(storable(e.who));
      when.push_back(storable(e.when));
      digests.push_back(event_field_digests(e));
    }
    h5::write_u64s(f, "event_generation", generations);
    h5::write_strings(f, "event_kind", kinds);
    h5::write_u64s(f, "event_model_id", model_ids);
    h5::write_strings(f, "event_reason", reasons);
    h5::write_strings(f, "event_who", who);
    h5::write_strings(f, "event_when", when);
    h5::write_strings(f, "event_sha256", digests);
  }
  h5::write_string(f, "summary_sha256", root.summary_sha256);
  h5::write_string(f, "run_sha256", root.run_sha256);
  h5::write_string(f, "previous_file_sha256", root.previous_file_sha256);
  h5::write_string(f, "sidecar_sha256", root.sidecar_sha256);
  h5::write_string(f, "previous_hash", root.previous_hash);
  h5::write_string(f, "generation_hash", root.generation_hash);
}

Root read_root(hid_t f) {
  Root root;
  const std::string format = h5::read_string(f, "format");
  const int version = h5::read_int(f, "format_version");
  if (format != kFormatName)
    throw CheckpointError("attribute 'format' is '" + format + "', not '" + kFormatName +
                          "': not an rsi generation file");
  if (version > kFormatVersion)
    throw CheckpointError("format version " + std::to_string(version) + " is newer than this rsi reads (" +
                          std::to_string(kFormatVersion) + "): use a newer rsi");
  if (version < 1) throw CheckpointError("attribute 'format_version' is " + std::to_string(version) + ", not 1 or 2");
  root.format_version = version;
  if (h5::has_attr(f, "summary_revision")) root.summary_revision = h5::read_int(f, "summary_revision");
  root.run = read_run(f);
  root.retention.keep_last_generations = h5::read_int(f, "keep_last_generations");
  root.retention.keep_population = h5::read_bool(f, "keep_population");
  GenerationRecord& g = root.summary;
  const bool governance = h5::has_attr(f, "status");
  if (!governance) g.status = "";  // written before governance: no status, no monitors, no events
  if (h5::has_attr(f, "duplicates")) g.improvement.emplace();  // a run with self-improvement on
  scheduler::visit_generation_fields(g, ReadFields{f, governance});
  if (h5::has_attr(f, "event_kind")) {
    const auto generations = h5::read_u64s(f, "event_generation");
    const auto kinds = h5::read_strings(f, "event_kind");
    const auto model_ids = h5::read_u64s(f, "event_model_id");
    const auto reasons = h5::read_strings(f, "event_reason");
    const auto who = h5::read_strings(f, "event_who");
    const auto when = h5::read_strings(f, "event_when");
    const std::size_t n = kinds.size();
    if (generations.size() != n || model_ids.size() != n || reasons.size() != n || who.size() != n || when.size() != n)
      throw CheckpointError("attributes 'event_*' differ in length: the governance events are damaged");
    for (std::size_t i = 0; i < n; ++i)
      g.events.push_back(scheduler::GovernanceEvent{static_cast<int>(generations[i]), kinds[i], model_ids[i],
                                                    reasons[i], who[i], when[i]});
  }
  root.summary_sha256 = h5::read_string(f, "summary_sha256");
  root.run_sha256 = h5::read_string(f, "run_sha256");
  root.previous_file_sha256 = h5::read_string(f, "previous_file_sha256");
  root.sidecar_sha256 = h5::read_string(f, "sidecar_sha256");
  root.previous_hash = h5::read_string(f, "previous_hash");
  root.generation_hash = h5::read_string(f, "generation_hash");
  return root;
}

std::string file_sha256(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw CheckpointError(file.string() + ": cannot open to hash: " + errno_text());
  return stream_sha256(in, file);
}

std::string stream_sha256(std::ifstream& in, const fs::path& file) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw CheckpointError("SHA-256 (OpenSSL) failed");
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0 && EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<std::size_t>(in.gcount())) != 1)
      throw CheckpointError("SHA-256 (OpenSSL) failed");
  }
  if (in.bad()) throw CheckpointError(file.string() + ": read failed while hashing");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), md, &len) != 1) throw CheckpointError("SHA-256 (OpenSSL) failed");
  return hex(md, len);
}

std::string latest_text(int generation, const std::string& generation_hash, const std::string& file_sha256) {
  return std::to_string(generation) + " " + generation_file_name(generation) + " " + generation_hash + " " +
         file_sha256 + "\n";
}

std::optional<Latest> read_latest(const fs::path& dir) {
  std::ifstream in(dir / "LATEST");
  if (!in) return std::nullopt;
  Latest l;
  if (!(in >> l.generation >> l.file >> l.hash >> l.file_sha256)) return Latest{};
  return l;
}

void fsync_path(const fs::path& path, bool directory) {
  const fs::path p = path.empty() ? fs::path(".") : path;
  const int fd = ::open(p.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) throw CheckpointError(p.string() + ": cannot open to fsync: " + errno_text());
  if (::fsync(fd) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw CheckpointError(p.string() + ": fsync failed: " + why + " (is the disk full or failing?)");
  }
  ::close(fd);
}

void commit(const fs::path& tmp, const fs::path& final) {
  fsync_path(tmp, false);
  std::error_code ec;
  fs::rename(tmp, final, ec);
  if (ec) throw CheckpointError(tmp.string() + ": cannot rename to " + final.filename().string() + ": " + ec.message());
  fsync_path(final.parent_path(), true);
}

void write_file_durably(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) throw CheckpointError(tmp.string() + ": cannot create: " + errno_text());
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string why = errno_text();
      ::close(fd);
      throw CheckpointError(tmp.string() + ": write failed: " + why);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw CheckpointError(tmp.string() + ": fsync failed: " + why);
  }
  ::close(fd);
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw CheckpointError(tmp.string() + ": cannot rename to " + path.filename().string() + ": " + ec.message());
  fsync_path(path.parent_path(), true);
}

}  // namespace rsi::checkpoints::detail
