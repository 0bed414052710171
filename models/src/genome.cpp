// rsi::models::Genome — canonical YAML text (to_yaml / from_yaml / load_genome) and validation
// (shapes, parameter and FLOP counts, limits). The YAML format is documented in
// experiments/genomes/*.yaml and in genome.h; validate()'s counting conventions are next to it below.
#include "rsi/models/genome.h"

#include "rsi/models/edit_distance.h"
#include "rsi/models/yaml_input.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <string_view>
#include <system_error>
#include <utility>

namespace rsi::models {

const char* block_kind_name(Block::Kind kind) {
  switch (kind) {
    case Block::Kind::Conv: return "conv";
    case Block::Kind::Pool: return "pool";
    case Block::Kind::Residual: return "residual";
    case Block::Kind::Dense: return "dense";
    case Block::Kind::Dropout: return "dropout";
    case Block::Kind::BatchNorm: return "batchnorm";
    case Block::Kind::Activation: return "activation";
  }
  return "unknown";
}

namespace {

// ---------------------------------------------------------------------------------------------
// Names of enumerated values. Kept here rather than borrowed from the kernels so that the YAML
// spelling is owned by the genome format alone.

const char* pool_kind_name(Block::PoolKind kind) {
  switch (kind) {
    case Block::PoolKind::Max: return "max";
    case Block::PoolKind::Avg: return "avg";
  }
  return "unknown";
}

const char* activation_yaml_name(kernels::Activation activation) {
  switch (activation) {
    case kernels::Activation::ReLU: return "relu";
    case kernels::Activation::GELU: return "gelu";
    case kernels::Activation::Tanh: return "tanh";
  }
  return "unknown";
}

const char* optimizer_name(Recipe::Optimizer optimizer) {
  switch (optimizer) {
    case Recipe::Optimizer::Adam: return "adam";
    case Recipe::Optimizer::AdamW: return "adamw";
    case Recipe::Optimizer::Sgd: return "sgd";
  }
  return "unknown";
}

const char* schedule_name(Recipe::Schedule schedule) {
  switch (schedule) {
    case Recipe::Schedule::Constant: return "constant";
    case Recipe::Schedule::Cosine: return "cosine";
    case Recipe::Schedule::Step: return "step";
  }
  return "unknown";
}

constexpr Block::Kind kAllBlockKinds[] = {Block::Kind::Conv,    Block::Kind::Pool,      Block::Kind::Residual,
                                          Block::Kind::Dense,   Block::Kind::Dropout,   Block::Kind::BatchNorm,
                                          Block::Kind::Activation};
constexpr Block::PoolKind kAllPoolKinds[] = {Block::PoolKind::Max, Block::PoolKind::Avg};
constexpr kernels::Activation kAllActivations[] = {kernels::Activation::ReLU, kernels::Activation::GELU,
                                                   kernels::Activation::Tanh};
constexpr Recipe::Optimizer kAllOptimizers[] = {Recipe::Optimizer::Adam, Recipe::Optimizer::AdamW,
                                                Recipe::Optimizer::Sgd};
constexpr Recipe::Schedule kAllSchedules[] = {Recipe::Schedule::Constant, Recipe::Schedule::Cosine,
                                              Recipe::Schedule::Step};

template <typename Enum, std::size_t N>
bool is_known(Enum value, const Enum (&all)[N]) {
  return std::find(std::begin(all), std::end(all), value) != std::end(all);
}

// ---------------------------------------------------------------------------------------------
// Number formatting: shortest text that reads back to the same value, so that to_yaml is stable
// and from_yaml(to_yaml(g)) == g bit for bit.

std::string format_number(float value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

std::string format_number(double value) {
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof buffer, value);
  return std::string(buffer, result.ptr);
}

}  // namespace

std::string architecture_text(const Genome& genome) {
  std::string out;
  for (const Block& b : genome.blocks) {
    if (!out.empty()) out += ' ';
    switch (b.kind) {
      case Block::Kind::Conv:
        out += "conv(" + std::to_string(b.channels) + ",k" + std::to_string(b.kernel) + ",s" + std::to_string(b.stride) + ")";
        break;
      case Block::Kind::Pool:
        out += std::string(pool_kind_name(b.pool_kind)) + "pool(" + std::to_string(b.size) + ",s" + std::to_string(b.stride) + ")";
        break;
      case Block::Kind::Residual: out += "residual(k" + std::to_string(b.kernel) + ")"; break;
      case Block::Kind::Dense: out += "dense(" + std::to_string(b.units) + ")"; break;
      case Block::Kind::Dropout: out += "dropout(" + format_number(b.rate) + ")"; break;
      case Block::Kind::BatchNorm: out += "batchnorm"; break;
      case Block::Kind::Activation: out += activation_yaml_name(b.activation); break;
    }
  }
  return out;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Field domains. Each returns an empty string when the value is acceptable, otherwise
// "expected ..., got ...". Shared by from_yaml (which adds the file position) and validate (which
// adds the block index), so the two can never disagree on what is valid.

std::string expect_kernel(int kernel) {
  if (kernel == 1 || kernel == 3 || kernel == 5) return {};
  return "expected one of 1, 3, 5, got " + std::to_string(kernel);
}

std::string expect_conv_stride(int stride) {
  if (stride == 1 || stride == 2) return {};
  return "expected one of 1, 2, got " + std::to_string(stride);
}

std::string expect_pool_size(int size) {
  if (size == 2 || size == 3) return {};
  return "expected one of 2, 3, got " + std::to_string(size);
}

// A pool's stride defaults to its size (non-overlapping windows), so a size-3 pool has stride 3;
// anything from 1 up to the window size is allowed, larger strides would skip pixels.
std::string expect_pool_stride(int stride, int size) {
  if (stride >= 1 && stride <= std::max(size, 1)) return {};
  return "expected 1 to " + std::to_string(size) + " (the pool size), got " + std::to_string(stride);
}

std::string expect_positive_width(int width) {
  if (width > 0) return {};
  return "expected a positive integer, got " + std::to_string(width);
}

std::string expect_dropout_rate(float rate) {
  if (rate >= 0.0f && rate < 1.0f) return {};
  return "expected a number in [0, 1), got " + format_number(rate);
}

std::string expect_learning_rate(float value) {
  if (std::isfinite(value) && value > 0.0f) return {};
  return "expected a finite number > 0, got " + format_number(value);
}

std::string expect_momentum(float value) {
  if (value >= 0.0f && value < 1.0f) return {};
  return "expected a number in [0, 1), got " + format_number(value);
}

std::string expect_warmup(float value) {
  if (value >= 0.0f && value <= 0.5f) return {};
  return "expected a fraction of the steps in [0, 0.5], got " + format_number(value);
}

std::string expect_weight_average(float value) {
  if (value >= 0.0f && value < 1.0f) return {};
  return "expected an averaging decay per step in [0, 1) (0 = off), got " + format_number(value);
}

std::string expect_batch_size(int value) {
  if (value >= 1 && value <= 65536) return {};
  return "expected an integer in [1, 65536], got " + std::to_string(value);
}

std::string expect_epochs(int value) {
  if (value >= 0) return {};
  return "expected an integer >= 0, got " + std::to_string(value);
}

std::string expect_weight_decay(float value) {
  if (std::isfinite(value) && value >= 0.0f) return {};
  return "expected a finite number >= 0, got " + format_number(value);
}

std::string expect_shift(int value) {
  if (value >= 0 && value <= 8) return {};
  return "expected an integer in [0, 8], got " + std::to_string(value);
}

std::string expect_temperature(float value) {
  if (std::isfinite(value) && value > 0.0f) return {};
  return "expected a finite number > 0, got " + format_number(value);
}

std::string expect_distill_mix(float value) {
  if (value >= 0.0f && value <= 1.0f) return {};
  return "expected a number in [0, 1], got " + format_number(value);
}

// ---------------------------------------------------------------------------------------------
// Did-you-mean.


std::string join(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& word : words) text += (text.empty() ? "" : ", ") + word;
  return text;
}

// "(did you mean 'channels'? valid: channels, kernel, stride)", the suggestion only when one is
// close enough to be a plausible typo.
std::string suggestion(const std::string& given, const std::vector<std::string>& valid) {
  if (valid.empty()) return "(nothing is valid here: write {})";
  std::string best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& candidate : valid) {
    const std::size_t distance = edit_distance(given, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  std::string text = "(";
  if (!best.empty() && best_distance <= std::max<std::size_t>(2, best.size() / 3)) {
    text += "did you mean '" + best + "'? ";
  }
  return text + "valid: " + join(valid) + ")";
}

// ---------------------------------------------------------------------------------------------
// Parsing.

struct MapEntry {
  YAML::Node key;
  YAML::Node value;
};

class GenomeParser {
 public:
  GenomeParser(std::string source, const DesignerGeneRanges* genes) : source_(std::move(source)), genes_(genes) {}

  Genome parse(const YAML::Node& root) {
    if (!root.IsDefined() || root.IsNull()) {
      throw GenomeError(source_ + ": empty genome: expected a map with 'architecture', 'recipe' and 'designer'");
    }
    const auto entries = read_map(root, "", {"architecture", "recipe", "designer"}, "the genome");
    Genome genome;
    const MapEntry* architecture = find(entries, "architecture");
    if (architecture == nullptr) fail(root, "architecture", "missing key (the list of blocks)");
    genome.blocks = parse_architecture(*architecture);
    if (const MapEntry* recipe = find(entries, "recipe")) genome.recipe = parse_recipe(*recipe);
    if (const MapEntry* designer = find(entries, "designer")) genome.designer = parse_designer(*designer);
    return genome;
  }

 private:
  using Entries = std::vector<std::pair<std::string, MapEntry>>;

  std::string position(const YAML::Mark& mark) const { return yaml_position(source_, mark); }

  [[noreturn]] void fail_at(const YAML::Mark& mark, const std::string& path, const std::string& what) const {
    throw GenomeError(position(mark) + ": " + (path.empty() ? "" : path + ": ") + what);
  }
  [[noreturn]] void fail(const YAML::Node& node, const std::string& path, const std::string& what) const {
    fail_at(node.Mark(), path, what);
  }
  void check(const YAML::Node& node, const std::string& path, const std::string& problem) const {
    if (!problem.empty()) fail(node, path, problem);
  }

  // A null value ("key:" with nothing after it) has its mark on the next token, possibly lines
  // later; the key's position is where the reader should look.
  static YAML::Mark value_mark(const MapEntry& entry) {
    return entry.value.IsNull() ? entry.key.Mark() : entry.value.Mark();
  }

  static std::string describe(const YAML::Node& node) {
    if (!node.IsDefined() || node.IsNull()) return "nothing";
    if (node.IsSequence()) return "a list";
    if (node.IsMap()) return "a map";
    // Bounded: a seed path naming a file that is not a genome (a whole /etc/passwd reads as one
    // scalar) must not be printed whole.
    if (node.Tag() == "!") return "\"" + excerpt(node.Scalar()) + "\" (a quoted string)";
    return excerpt(node.Scalar());
  }

  static std::string child(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  static const MapEntry* find(const Entries& entries, const std::string& key) {
    for (const auto& [name, entry] : entries) {
      if (name == key) return &entry;
    }
    return nullptr;
  }

  // The entries of a map node, in order. yaml-cpp keeps duplicate keys silently (lookups return the
  // first), so they are caught here by walking the entries.
  enum class Keys { OnlyValid, Any };
  Entries read_map(const YAML::Node& node, const std::string& path, const std::vector<std::string>& valid,
                   const std::string& what, Keys keys = Keys::OnlyValid) const {
    Entries entries;
    if (node.IsNull()) return entries;  // "recipe:" with nothing: all defaults
    if (!node.IsMap()) fail(node, path, "expected a map (" + what + "), got " + describe(node));
    for (auto it = node.begin(); it != node.end(); ++it) {
      const YAML::Node key = it->first;
      if (!key.IsScalar()) fail(key, path, "expected a key name, got " + describe(key));
      const std::string& name = key.Scalar();
      const std::string key_path = child(path, name);
      if (keys == Keys::OnlyValid && std::find(valid.begin(), valid.end(), name) == valid.end()) {
        fail(key, key_path, "unknown key '" + name + "' " + suggestion(name, valid));
      }
      if (const MapEntry* first = find(entries, name)) {
        const YAML::Mark first_mark = first->key.Mark();
        fail(key, key_path,
             "duplicate key '" + name + "'; first given at " + std::to_string(first_mark.line + 1) + ":" +
                 std::to_string(first_mark.column + 1));
      }
      entries.emplace_back(name, MapEntry{key, it->second});
    }
    return entries;
  }

  // Numbers must be plain scalars: a quoted "4" is a string in YAML, and accepting it would make
  // the canonical text ambiguous.
  const std::string& plain_scalar(const MapEntry& entry, const std::string& path, const std::string& expected) const {
    const YAML::Node& node = entry.value;
    if (!node.IsScalar() || node.Tag() == "!") {
      fail_at(value_mark(entry), path, "expected " + expected + ", got " + describe(node));
    }
    return node.Scalar();
  }

  int parse_int(const MapEntry& entry, const std::string& path) const {
    const std::string& text = plain_scalar(entry, path, "an integer");
    std::string_view digits = text;
    if (digits.size() > 1 && digits[0] == '+' && digits[1] != '-') digits.remove_prefix(1);
    int value = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (error == std::errc::result_out_of_range) fail(entry.value, path, "integer out of range, got " + text);
    if (error != std::errc{} || end != digits.data() + digits.size()) {
      fail(entry.value, path, "expected an integer, got " + text);
    }
    return value;
  }

  template <typename Real>
  Real parse_real(const MapEntry& entry, const std::string& path) const {
    const std::string& text = plain_scalar(entry, path, "a number");
    // YAML spells the special values .inf/.nan; to_chars writes inf/nan. Both read back.
    static const std::pair<std::string_view, Real> kSpecial[] = {
        {".inf", std::numeric_limits<Real>::infinity()},   {".Inf", std::numeric_limits<Real>::infinity()},
        {".INF", std::numeric_limits<Real>::infinity()},   {"+.inf", std::numeric_limits<Real>::infinity()},
        {"-.inf", -std::numeric_limits<Real>::infinity()}, {"-.Inf", -std::numeric_limits<Real>::infinity()},
        {"-.INF", -std::numeric_limits<Real>::infinity()}, {".nan", std::numeric_limits<Real>::quiet_NaN()},
        {".NaN", std::numeric_limits<Real>::quiet_NaN()},  {".NAN", std::numeric_limits<Real>::quiet_NaN()}};
    for (const auto& [spelling, special] : kSpecial) {
      if (text == spelling) return special;
    }
    std::string_view digits = text;
    if (digits.size() > 1 && digits[0] == '+' && digits[1] != '-') digits.remove_prefix(1);
    Real value = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (error == std::errc::result_out_of_range) {
      fail(entry.value, path,
           std::string("number out of range for a ") + (sizeof(Real) == 4 ? "32" : "64") + "-bit float, got " + text);
    }
    if (error != std::errc{} || end != digits.data() + digits.size()) {
      fail(entry.value, path, "expected a number, got " + text);
    }
    return value;
  }

  bool parse_bool(const MapEntry& entry, const std::string& path) const {
    const std::string& text = plain_scalar(entry, path, "true or false");
    if (text == "true" || text == "True" || text == "TRUE") return true;
    if (text == "false" || text == "False" || text == "FALSE") return false;
    fail(entry.value, path, "expected true or false, got " + text);
  }

  // A name out of a closed set (optimizer, schedule, activation, pool kind).
  template <typename Enum, std::size_t N>
  Enum parse_name(const MapEntry& entry, const std::string& path, const Enum (&all)[N],
                  const char* (*name_of)(Enum)) const {
    std::vector<std::string> names;
    for (Enum value : all) names.emplace_back(name_of(value));
    const std::string expected = "one of " + join(names);
    if (!entry.value.IsScalar()) fail_at(value_mark(entry), path, "expected " + expected + ", got " + describe(entry.value));
    const std::string& text = entry.value.Scalar();
    for (Enum value : all) {
      if (text == name_of(value)) return value;
    }
    fail(entry.value, path, "unknown value '" + text + "' " + suggestion(text, names));
  }

  std::vector<Block> parse_architecture(const MapEntry& entry) const {
    const YAML::Node& node = entry.value;
    if (!node.IsSequence()) {
      fail_at(value_mark(entry), "architecture", "expected a list of blocks, got " + describe(node));
    }
    std::vector<Block> blocks;
    for (std::size_t i = 0; i < node.size(); ++i) {
      blocks.push_back(parse_block(node[i], "architecture[" + std::to_string(i) + "]"));
    }
    return blocks;
  }

  Block parse_block(const YAML::Node& item, const std::string& path) const {
    std::vector<std::string> kinds;
    for (Block::Kind kind : kAllBlockKinds) kinds.emplace_back(block_kind_name(kind));
    if (!item.IsMap()) {
      fail(item, path, "expected a block: a map with one key, the kind (" + join(kinds) + "), got " + describe(item));
    }
    const auto entries = read_map(item, path, kinds, "a block");
    if (entries.size() != 1) {
      fail(item, path,
           "expected a block: a map with one key, the kind (" + join(kinds) + "), got " +
               std::to_string(entries.size()) + " keys");
    }
    const auto& [kind_name, body] = entries.front();
    const std::string body_path = child(path, kind_name);
    Block block;
    for (Block::Kind kind : kAllBlockKinds) {
      if (kind_name == block_kind_name(kind)) block.kind = kind;
    }

    if (block.kind == Block::Kind::Activation) {
      block.activation = parse_name(body, body_path, kAllActivations, activation_yaml_name);
      return block;
    }

    // Init-captures: clang before 16 cannot capture structured bindings (tests/fuzz builds with clang 14).
    const auto expect_fields = [&, &body = body, &kind_name = kind_name](const std::vector<std::string>& fields) {
      return read_map(body.value, body_path, fields, std::string("the fields of a ") + kind_name + " block");
    };
    switch (block.kind) {
      case Block::Kind::Conv: {
        const auto fields = expect_fields({"channels", "kernel", "stride"});
        const MapEntry* channels = find(fields, "channels");
        if (channels == nullptr) fail_at(value_mark(body), child(body_path, "channels"), "missing key (output channels)");
        block.channels = read_int(*channels, body_path, "channels", expect_positive_width);
        if (const MapEntry* kernel = find(fields, "kernel")) block.kernel = read_int(*kernel, body_path, "kernel", expect_kernel);
        if (const MapEntry* stride = find(fields, "stride")) {
          block.stride = read_int(*stride, body_path, "stride", expect_conv_stride);
        }
        break;
      }
      case Block::Kind::Pool: {
        const auto fields = expect_fields({"kind", "size", "stride"});
        if (const MapEntry* pool_kind = find(fields, "kind")) {
          block.pool_kind = parse_name(*pool_kind, child(body_path, "kind"), kAllPoolKinds, pool_kind_name);
        }
        if (const MapEntry* size = find(fields, "size")) block.size = read_int(*size, body_path, "size", expect_pool_size);
        block.stride = block.size;
        if (const MapEntry* stride = find(fields, "stride")) {
          block.stride = parse_int(*stride, child(body_path, "stride"));
          check(stride->value, child(body_path, "stride"), expect_pool_stride(block.stride, block.size));
        }
        break;
      }
      case Block::Kind::Residual: {
        const auto fields = expect_fields({"kernel"});
        if (const MapEntry* kernel = find(fields, "kernel")) block.kernel = read_int(*kernel, body_path, "kernel", expect_kernel);
        break;
      }
      case Block::Kind::Dense: {
        const auto fields = expect_fields({"units"});
        const MapEntry* units = find(fields, "units");
        if (units == nullptr) fail_at(value_mark(body), child(body_path, "units"), "missing key (output features)");
        block.units = read_int(*units, body_path, "units", expect_positive_width);
        break;
      }
      case Block::Kind::Dropout: {
        const auto fields = expect_fields({"rate"});
        if (const MapEntry* rate = find(fields, "rate")) {
          block.rate = parse_real<float>(*rate, child(body_path, "rate"));
          check(rate->value, child(body_path, "rate"), expect_dropout_rate(block.rate));
        }
        break;
      }
      case Block::Kind::BatchNorm: expect_fields({}); break;
      case Block::Kind::Activation: break;  // handled above
    }
    return block;
  }

  int read_int(const MapEntry& entry, const std::string& parent, const std::string& key,
               std::string (*domain)(int)) const {
    const std::string path = child(parent, key);
    const int value = parse_int(entry, path);
    check(entry.value, path, domain(value));
    return value;
  }

  float read_float(const MapEntry& entry, const std::string& parent, const std::string& key,
                   std::string (*domain)(float)) const {
    const std::string path = child(parent, key);
    const float value = parse_real<float>(entry, path);
    check(entry.value, path, domain(value));
    return value;
  }

  Recipe parse_recipe(const MapEntry& entry) const {
    const std::string path = "recipe";
    const auto fields = read_map(entry.value, path,
                                 {"optimizer", "learning_rate", "schedule", "warmup", "weight_average", "momentum",
                                  "batch_size", "epochs", "weight_decay", "augmentation", "distillation"},
                                 "the training recipe");
    Recipe recipe;
    for (const auto& [key, field] : fields) {
      const std::string key_path = child(path, key);
      if (key == "optimizer") {
        recipe.optimizer = parse_name(field, key_path, kAllOptimizers, optimizer_name);
      } else if (key == "learning_rate") {
        recipe.learning_rate = read_float(field, path, key, expect_learning_rate);
      } else if (key == "schedule") {
        recipe.schedule = parse_name(field, key_path, kAllSchedules, schedule_name);
      } else if (key == "warmup") {
        recipe.warmup = read_float(field, path, key, expect_warmup);
      } else if (key == "weight_average") {
        recipe.weight_average = read_float(field, path, key, expect_weight_average);
      } else if (key == "momentum") {
        recipe.momentum = read_float(field, path, key, expect_momentum);
      } else if (key == "batch_size") {
        recipe.batch_size = read_int(field, path, key, expect_batch_size);
      } else if (key == "epochs") {
        recipe.epochs = read_int(field, path, key, expect_epochs);
      } else if (key == "weight_decay") {
        recipe.weight_decay = read_float(field, path, key, expect_weight_decay);
      } else if (key == "augmentation") {
        for (const auto& [sub, value] : read_map(field.value, key_path, {"shift", "flip"}, "augmentation")) {
          if (sub == "shift") recipe.augmentation.shift = read_int(value, key_path, sub, expect_shift);
          if (sub == "flip") recipe.augmentation.flip = parse_bool(value, child(key_path, sub));
        }
      } else if (key == "distillation") {
        for (const auto& [sub, value] :
             read_map(field.value, key_path, {"temperature", "mix", "epochs"}, "distillation")) {
          if (sub == "temperature") recipe.distill_temperature = read_float(value, key_path, sub, expect_temperature);
          if (sub == "mix") recipe.distill_mix = read_float(value, key_path, sub, expect_distill_mix);
          if (sub == "epochs") recipe.distill_epochs = read_int(value, key_path, sub, expect_epochs);
        }
      }
    }
    return recipe;
  }

  DesignerGenes parse_designer(const MapEntry& entry) const {
    DesignerGenes genes;
    std::vector<std::string> names;
    if (genes_)
      for (const auto& [name, range] : *genes_) names.push_back(name);
    for (const auto& [name, value] :
         read_map(entry.value, "designer", names, "designer gene name -> number", genes_ ? Keys::OnlyValid : Keys::Any)) {
      const std::string path = child("designer", name);
      const double v = parse_real<double>(value, path);
      if (!std::isfinite(v)) fail(value.value, path, "expected a finite number, got " + value.value.Scalar());
      if (genes_) {
        const auto [low, high] = genes_->at(name);
        if (!(v >= low && v <= high))
          fail(value.value, path,
               "expected a number in [" + format_number(low) + ", " + format_number(high) + "], got " + format_number(v));
      }
      genes[name] = v;
    }
    return genes;
  }

  std::string source_;
  const DesignerGeneRanges* genes_ = nullptr;
};

// A designer gene's name as a YAML key: plain when it is an identifier that YAML will not read as
// something else, double-quoted otherwise.
std::string yaml_key(const std::string& name) {
  static const char* const kReserved[] = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"};
  bool plain = !name.empty() && (std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_');
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '_' || c == '-' || c == '.')) plain = false;
  }
  for (const char* reserved : kReserved) {
    std::string lower = name;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lower == reserved) plain = false;
  }
  if (plain) return name;
  YAML::Emitter emitter;
  emitter << YAML::DoubleQuoted << name;
  return emitter.c_str();
}

// Saturating arithmetic for the counts: absurd widths must give "over the limit", not overflow.
std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
  std::int64_t result = 0;
  if (__builtin_mul_overflow(a, b, &result)) return std::numeric_limits<std::int64_t>::max();
  return result;
}
std::int64_t saturating_mul(std::initializer_list<std::int64_t> factors) {
  std::int64_t product = 1;
  for (std::int64_t factor : factors) product = saturating_mul(product, factor);
  return product;
}
std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  std::int64_t result = 0;
  if (__builtin_add_overflow(a, b, &result)) return std::numeric_limits<std::int64_t>::max();
  return result;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// to_yaml

std::string to_yaml(const Genome& genome) {
  std::ostringstream out;
  out << "architecture:";
  if (genome.blocks.empty()) out << " []";
  out << "\n";
  for (const Block& block : genome.blocks) {
    out << "  - " << block_kind_name(block.kind) << ": ";
    switch (block.kind) {
      case Block::Kind::Conv:
        out << "{channels: " << block.channels << ", kernel: " << block.kernel << ", stride: " << block.stride << "}";
        break;
      case Block::Kind::Pool:
        out << "{kind: " << pool_kind_name(block.pool_kind) << ", size: " << block.size << ", stride: " << block.stride
            << "}";
        break;
      case Block::Kind::Residual: out << "{kernel: " << block.kernel << "}"; break;
      case Block::Kind::Dense: out << "{units: " << block.units << "}"; break;
      case Block::Kind::Dropout: out << "{rate: " << format_number(block.rate) << "}"; break;
      case Block::Kind::BatchNorm: out << "{}"; break;
      case Block::Kind::Activation: out << activation_yaml_name(block.activation); break;
    }
    out << "\n";
  }
  const Recipe& recipe = genome.recipe;
  out << "recipe:\n"
      << "  optimizer: " << optimizer_name(recipe.optimizer) << "\n"
      << "  learning_rate: " << format_number(recipe.learning_rate) << "\n"
      << "  schedule: " << schedule_name(recipe.schedule) << "\n";
  if (recipe.warmup > 0.0f) out << "  warmup: " << format_number(recipe.warmup) << "\n";
  if (recipe.weight_average > 0.0f) out << "  weight_average: " << format_number(recipe.weight_average) << "\n";
  out << "  momentum: " << format_number(recipe.momentum) << "\n"
      << "  batch_size: " << recipe.batch_size << "\n"
      << "  epochs: " << recipe.epochs << "\n"
      << "  weight_decay: " << format_number(recipe.weight_decay) << "\n"
      << "  augmentation: {shift: " << recipe.augmentation.shift
      << ", flip: " << (recipe.augmentation.flip ? "true" : "false") << "}\n"
      << "  distillation: {temperature: " << format_number(recipe.distill_temperature)
      << ", mix: " << format_number(recipe.distill_mix) << ", epochs: " << recipe.distill_epochs << "}\n";
  out << "designer:";
  if (genome.designer.empty()) out << " {}";
  out << "\n";
  for (const auto& [name, value] : genome.designer) {
    out << "  " << yaml_key(name) << ": " << format_number(value) << "\n";
  }
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// from_yaml / load_genome

std::string yaml_position(const std::string& source, const YAML::Mark& mark) {
  if (mark.is_null() || mark.line < 0) return source;
  return source + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

std::string excerpt(const std::string& text, std::size_t max) {
  const std::string line = text.substr(0, text.find('\n'));
  std::string out = line.size() > max ? line.substr(0, max) + "..." : line;
  if (line.size() < text.size() && out.size() == line.size()) out += " ...";
  return out;
}

namespace {
// The first node with a tag, at most `visits` nodes in and 64 levels down (aliases make the nodes a
// graph: an exponential walk, or a cycle; readers refuse deeper nesting on their own).
std::optional<YAML::Node> first_tagged(const YAML::Node& node, std::size_t& visits, int depth = 0) {
  if (visits == 0 || depth > 64) return std::nullopt;
  --visits;
  const std::string& tag = node.Tag();
  if (!tag.empty() && tag != "?" && tag != "!") return node;
  if (node.IsMap()) {
    for (const auto& kv : node) {
      if (auto t = first_tagged(kv.first, visits, depth + 1)) return t;
      if (auto t = first_tagged(kv.second, visits, depth + 1)) return t;
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node)
      if (auto t = first_tagged(item, visits, depth + 1)) return t;
  }
  return std::nullopt;
}
}  // namespace

// The line (0-based) where a second document with content starts, if one does. Found in the text:
// yaml-cpp's LoadAll never returns on some damaged inputs (found by tests/fuzz/manifest_fuzzer), and
// YAML forbids a document marker ("---" or "..." at column 0, then a space or the line's end) inside
// any scalar, so the text says where documents start and end.
static std::optional<std::size_t> second_document_line(const std::string& text) {
  bool content = false, ended = false;
  std::size_t line = 0;
  for (std::size_t pos = 0; pos < text.size(); ++line) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view l(text.data() + pos, end - pos);
    pos = end + 1;
    const auto is_marker = [&](std::string_view m) {
      return l.substr(0, 3) == m && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    };
    const auto has_content = [](std::string_view rest) {
      const std::size_t first = rest.find_first_not_of(" \t\r");
      return first != std::string_view::npos && rest[first] != '#';
    };
    if (is_marker("---")) {
      if (content) ended = true;
      if (ended && has_content(l.substr(3))) return line;
      content = content || has_content(l.substr(3));
    } else if (is_marker("...")) {
      if (content) ended = true;
    } else if (has_content(l) && l[0] != '%') {
      if (ended) return line;
      content = true;
    }
  }
  return std::nullopt;
}

YamlDocument load_yaml_document(const std::string& text, const std::string& source) {
  YamlDocument doc;
  doc.root = YAML::Load(text);
  if (const auto line = second_document_line(text))
    doc.problem = source + ":" + std::to_string(*line + 1) + ":1: a second YAML document ('---' then more): a " +
                  "manifest or genome is one document; remove the '---' line or put this in its own file";
  std::size_t visits = 2 * text.size() + 64;
  if (!doc.problem)
    if (const auto tagged = first_tagged(doc.root, visits))
      doc.problem = yaml_position(source, tagged->Mark()) + ": YAML tag '" + tagged->Tag() +
                    "' is not accepted: values here are plain numbers, words, lists and maps (remove the tag)";
  return doc;
}

Genome genome_from_node(const YAML::Node& node, const std::string& source, const DesignerGeneRanges* genes) {
  return GenomeParser(source, genes).parse(node);
}

Genome from_yaml(const std::string& text, const std::string& source, const DesignerGeneRanges* genes) {
  YamlDocument doc;
  try {
    doc = load_yaml_document(text, source);
  } catch (const YAML::Exception& error) {
    throw GenomeError(yaml_position(source, error.mark) + ": invalid YAML: " + error.msg);
  }
  if (doc.problem) throw GenomeError(*doc.problem);
  return GenomeParser(source, genes).parse(doc.root);
}

Genome load_genome(const std::string& path, const DesignerGeneRanges* genes) {
  std::error_code error;
  if (std::filesystem::is_directory(path, error)) {
    throw GenomeError("cannot read genome file '" + path + "': it is a directory");
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw GenomeError("cannot read genome file '" + path + "': " + std::strerror(errno));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) throw GenomeError("cannot read genome file '" + path + "': read error");
  return from_yaml(text.str(), path, genes);
}

// ---------------------------------------------------------------------------------------------
// validate
//
// Counting conventions (they must match the Network built from the genome):
//   parameters  conv      K*C*k*k + K              (weights + bias)
//               dense     in*out + out             (weights + bias; in = C*H*W after an implied flatten)
//               batchnorm 2*channels, or 2*features on a flat input (gamma, beta)
//               residual  two convs C->C (C*C*k*k + C each) + two batchnorms (2*C each)
//               pool, activation, dropout: 0
//   FLOPs, forward, per sample; a multiply-add counts 2:
//               conv      2*K*C*k*k*OH*OW  + K*OH*OW   (bias adds)
//               dense     2*in*out + out               (bias adds)
//               residual  its two convs as above, + 1 per element for each of its two batchnorms,
//                         its ReLU and the skip addition (4*C*H*W)
//               activation, batchnorm, pool: 1 per output element
//               dropout   0 (the identity at evaluation)
//   These are coarse on purpose: they rank genomes against budgets, they do not time kernels.

namespace {

[[noreturn]] void fail_block(std::size_t index, const Block& block, const std::string& what) {
  throw GenomeError("block " + std::to_string(index) + " (" + block_kind_name(block.kind) + "): " + what);
}

void check_block(std::size_t index, const Block& block, const std::string& field, const std::string& problem) {
  if (!problem.empty()) fail_block(index, block, field + ": " + problem);
}

struct BlockCost {
  std::int64_t parameters = 0, flops = 0;
};

// Checks block `index`'s fields against the shape it gets, counts its parameters and FLOPs (the
// conventions above), and moves `shape` to its output. `flattened_by` is the dense block that made
// the network flat.
BlockCost account_block(std::size_t index, const Block& block, BlockShape& shape,
                        std::optional<std::size_t>& flattened_by) {
  if (!is_known(block.kind, kAllBlockKinds))
    throw GenomeError("block " + std::to_string(index) + ": unknown kind " + std::to_string(static_cast<int>(block.kind)));
  const bool is_spatial_block =
      block.kind == Block::Kind::Conv || block.kind == Block::Kind::Pool || block.kind == Block::Kind::Residual;
  if (is_spatial_block && !shape.spatial) {
    fail_block(index, block,
               "needs a spatial (channels x height x width) input, but the network is flat after dense block " +
                   std::to_string(*flattened_by) + "; put spatial blocks before the first dense block");
  }
  const std::int64_t elements_in = shape.features;
  std::int64_t parameters = 0;
  std::int64_t flops = 0;
  switch (block.kind) {
    case Block::Kind::Conv: {
      check_block(index, block, "channels", expect_positive_width(block.channels));
      check_block(index, block, "kernel", expect_kernel(block.kernel));
      check_block(index, block, "stride", expect_conv_stride(block.stride));
      const int pad = block.kernel / 2;
      const int out_h = (shape.height + 2 * pad - block.kernel) / block.stride + 1;
      const int out_w = (shape.width + 2 * pad - block.kernel) / block.stride + 1;
      if (shape.height + 2 * pad < block.kernel || shape.width + 2 * pad < block.kernel || out_h < 1 || out_w < 1) {
        fail_block(index, block,
                   "kernel " + std::to_string(block.kernel) + " does not fit its " + std::to_string(shape.height) +
                       "x" + std::to_string(shape.width) + " input (empty output)");
      }
      const std::int64_t K = block.channels, C = shape.channels, k = block.kernel;
      const std::int64_t outputs = saturating_mul({K, out_h, out_w});
      parameters = saturating_add(saturating_mul({K, C, k, k}), K);
      flops = saturating_add(saturating_mul({2, K, C, k, k, out_h, out_w}), outputs);
      shape.channels = block.channels;
      shape.height = out_h;
      shape.width = out_w;
      shape.features = outputs;
      break;
    }
    case Block::Kind::Pool: {
      if (!is_known(block.pool_kind, kAllPoolKinds)) fail_block(index, block, "kind: expected one of max, avg");
      check_block(index, block, "size", expect_pool_size(block.size));
      check_block(index, block, "stride", expect_pool_stride(block.stride, block.size));
      if (shape.height < block.size || shape.width < block.size) {
        fail_block(index, block,
                   "pool window " + std::to_string(block.size) + "x" + std::to_string(block.size) +
                       " is larger than its " + std::to_string(shape.height) + "x" + std::to_string(shape.width) +
                       " input (empty output)");
      }
      shape.height = (shape.height - block.size) / block.stride + 1;
      shape.width = (shape.width - block.size) / block.stride + 1;
      shape.features = saturating_mul({shape.channels, shape.height, shape.width});
      flops = shape.features;
      break;
    }
    case Block::Kind::Residual: {
      check_block(index, block, "kernel", expect_kernel(block.kernel));
      const std::int64_t C = shape.channels, k = block.kernel;
      const std::int64_t elements = shape.features;
      const std::int64_t conv_parameters = saturating_add(saturating_mul({C, C, k, k}), C);
      parameters = saturating_add(saturating_mul(2, conv_parameters), saturating_mul(4, C));
      const std::int64_t conv_flops =
          saturating_add(saturating_mul({2, C, C, k, k, shape.height, shape.width}), elements);
      flops = saturating_add(saturating_mul(2, conv_flops), saturating_mul(4, elements));
      break;
    }
    case Block::Kind::Dense: {
      check_block(index, block, "units", expect_positive_width(block.units));
      const std::int64_t in = shape.features, out = block.units;
      parameters = saturating_add(saturating_mul(in, out), out);
      flops = saturating_add(saturating_mul({2, in, out}), out);
      if (shape.spatial) flattened_by = index;
      shape = BlockShape{};
      shape.spatial = false;
      shape.features = out;
      break;
    }
    case Block::Kind::Dropout:
      check_block(index, block, "rate", expect_dropout_rate(block.rate));
      break;
    case Block::Kind::BatchNorm:
      parameters = saturating_mul(2, shape.spatial ? std::int64_t{shape.channels} : shape.features);
      flops = elements_in;
      break;
    case Block::Kind::Activation:
      if (!is_known(block.activation, kAllActivations)) {
        fail_block(index, block, "expected one of relu, gelu, tanh, got " +
                                     std::to_string(static_cast<int>(block.activation)));
      }
      flops = elements_in;
      break;
  }
  return {parameters, flops};
}

void check_recipe_fields(const Recipe& recipe) {
  const auto check_recipe = [](const std::string& field, const std::string& problem) {
    if (!problem.empty()) throw GenomeError("recipe." + field + ": " + problem);
  };
  if (!is_known(recipe.optimizer, kAllOptimizers)) check_recipe("optimizer", "expected one of adam, adamw, sgd");
  if (!is_known(recipe.schedule, kAllSchedules)) check_recipe("schedule", "expected one of constant, cosine, step");
  check_recipe("learning_rate", expect_learning_rate(recipe.learning_rate));
  check_recipe("warmup", expect_warmup(recipe.warmup));
  check_recipe("weight_average", expect_weight_average(recipe.weight_average));
  check_recipe("momentum", expect_momentum(recipe.momentum));
  check_recipe("batch_size", expect_batch_size(recipe.batch_size));
  check_recipe("epochs", expect_epochs(recipe.epochs));
  check_recipe("weight_decay", expect_weight_decay(recipe.weight_decay));
  check_recipe("augmentation.shift", expect_shift(recipe.augmentation.shift));
  check_recipe("distillation.temperature", expect_temperature(recipe.distill_temperature));
  check_recipe("distillation.mix", expect_distill_mix(recipe.distill_mix));
  check_recipe("distillation.epochs", expect_epochs(recipe.distill_epochs));

}

}  // namespace

GenomeStats validate(const Genome& genome, const InputSpec& input, const GenomeLimits& limits) {
  if (input.channels <= 0 || input.height <= 0 || input.width <= 0 || input.classes <= 0) {
    throw GenomeError("input spec: channels, height, width and classes must be positive, got " +
                      std::to_string(input.channels) + "x" + std::to_string(input.height) + "x" +
                      std::to_string(input.width) + " with " + std::to_string(input.classes) + " classes");
  }
  if (genome.blocks.empty()) {
    throw GenomeError("genome has no blocks: it needs at least a final dense block with " +
                      std::to_string(input.classes) + " units (the classes)");
  }
  if (genome.blocks.size() > static_cast<std::size_t>(limits.max_blocks)) {
    throw GenomeError("genome has " + std::to_string(genome.blocks.size()) + " blocks, over the limit of " +
                      std::to_string(limits.max_blocks));
  }

  GenomeStats stats;
  BlockShape shape;
  shape.spatial = true;
  shape.channels = input.channels;
  shape.height = input.height;
  shape.width = input.width;
  shape.features = std::int64_t{input.channels} * input.height * input.width;
  std::optional<std::size_t> flattened_by;  // index of the dense block that made the network flat
  for (std::size_t index = 0; index < genome.blocks.size(); ++index) {
    const BlockCost cost = account_block(index, genome.blocks[index], shape, flattened_by);
    stats.parameters = saturating_add(stats.parameters, cost.parameters);
    stats.flops = saturating_add(stats.flops, cost.flops);
    stats.shapes.push_back(shape);
  }

  const std::size_t last_index = genome.blocks.size() - 1;
  const Block& last = genome.blocks.back();
  if (last.kind != Block::Kind::Dense || last.units != input.classes) {
    fail_block(last_index, last,
               "the last block must be a dense block with " + std::to_string(input.classes) +
                   " units (one per class), got " +
                   (last.kind == Block::Kind::Dense ? "dense with " + std::to_string(last.units) + " units"
                                                    : std::string("a ") + block_kind_name(last.kind) + " block"));
  }

  check_recipe_fields(genome.recipe);

  if (stats.parameters > limits.max_parameters) {
    throw GenomeError("genome has " + std::to_string(stats.parameters) + " parameters, over the limit of " +
                      std::to_string(limits.max_parameters));
  }
  if (stats.flops > limits.max_flops) {
    throw GenomeError("genome needs " + std::to_string(stats.flops) + " forward FLOPs per sample, over the limit of " +
                      std::to_string(limits.max_flops));
  }
  return stats;
}

}  // namespace rsi::models
