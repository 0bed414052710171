// The schema checks shared by the YAML files people write for `rsi` (manifests, study files): a
// map section whose keys must be among the schema's (unknown ones get a did-you-mean and the list
// of valid keys), scalar values read with their type, range and file:line:column, and the text's
// preflight (size, UTF-8, nesting, aliases, one document, no tags). Internal to runtime/.
#pragma once

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "rsi/models/edit_distance.h"
#include "rsi/models/yaml_input.h"
#include "rsi/runtime/manifest.h"

namespace rsi::runtime::schema {

inline std::string where(const std::string& source, const YAML::Node& node) {
  const YAML::Mark m = node.Mark();
  if (m.line < 0) return source;
  return source + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1);
}


class Section {
 public:
  Section(const std::string& source, const YAML::Node& node, std::string path, std::vector<std::string> keys)
      : source_(source), node_(node), path_(std::move(path)), keys_(std::move(keys)) {
    if (!node_.IsMap()) throw ManifestError(where(source_, node_) + ": " + path_ + ": expected a map");
    std::set<std::string> seen;
    for (const auto& kv : node_) {
      // YAML allows a list or a map as a key ("? [a, b]: 1"); the schema's keys are names.
      if (kv.first.IsMap() || kv.first.IsSequence())
        throw ManifestError(where(source_, kv.first) + ": " + path_ + ": expected a key name, got a " +
                            (kv.first.IsMap() ? "map" : "list") + " as a key");
      const std::string key = kv.first.as<std::string>();
      if (!seen.insert(key).second)
        throw ManifestError(where(source_, kv.first) + ": " + path_ + "." + key + ": duplicate key");
      if (std::find(keys_.begin(), keys_.end(), key) == keys_.end()) {
        std::string best;
        std::size_t best_d = 99;
        for (const auto& k : keys_)
          if (const auto d = models::edit_distance(key, k); d < best_d) best_d = d, best = k;
        std::string msg = where(source_, kv.first) + ": " + path_ + ": unknown key '" + key + "'";
        if (best_d <= 3) msg += " (did you mean '" + best + "'?)";
        std::string valid;
        for (const auto& k : keys_) valid += (valid.empty() ? "" : ", ") + k;
        throw ManifestError(msg + "; valid keys: " + valid);
      }
    }
  }
  bool has(const std::string& key) const { return static_cast<bool>(node_[key]); }
  YAML::Node get(const std::string& key) const { return node_[key]; }
  template <typename T>
  T value(const std::string& key, T fallback, const std::function<bool(const T&)>& ok = {},
          const std::string& expected = "") const {
    const YAML::Node n = node_[key];
    if (!n) return fallback;
    // Every value of the schema is a scalar: a map or list would print as '' below, and yaml-cpp
    // reads an empty value ("name:" or "~") as the string "null" (found by tests/fuzz/).
    if (!n.IsScalar())
      throw ManifestError(where(source_, n) + ": " + path_ + "." + key + ": expected " +
                          (expected.empty() ? "a single value" : expected) + ", got " +
                          (n.IsNull() ? "an empty value" : n.IsMap() ? "a map" : "a list"));
    const auto refuse = [&](const std::string& got) {
      throw ManifestError(where(source_, n) + ": " + path_ + "." + key + ": expected " +
                          (expected.empty() ? "a value of the right type" : expected) + ", got " + got);
    };
    // A number or a switch is written plain: "128" in quotes is a string (as in a genome file).
    if constexpr (!std::is_same_v<T, std::string>)
      if (n.Tag() == "!") refuse("\"" + models::excerpt(n.Scalar()) + "\" (a quoted string)");
    // yaml-cpp reads "-1" into an unsigned type as 2^64-1.
    if constexpr (std::is_unsigned_v<T>)
      if (n.Scalar().find('-') != std::string::npos) refuse("'" + n.Scalar() + "'");
    T v;
    try {
      v = n.as<T>();
    } catch (const YAML::Exception&) {
      refuse("'" + models::excerpt(n.Scalar()) + "'");
    }
    if constexpr (std::is_floating_point_v<T>)
      if (!std::isfinite(v)) refuse("'" + n.Scalar() + "' (not a finite number)");
    if (ok && !ok(v))
      throw ManifestError(where(source_, n) + ": " + path_ + "." + key + ": expected " + expected + ", got '" +
                          n.Scalar() + "'");
    return v;
  }
  const std::string& source() const { return source_; }
  const std::string& path() const { return path_; }

 private:
  const std::string& source_;
  YAML::Node node_;
  std::string path_;
  std::vector<std::string> keys_;
};

// The root node of a YAML text that a person wrote, checked before and after parsing: at most 1 MiB,
// valid UTF-8, brackets and maps nested within limits, aliases that do not explode, one document
// without tags. `what` names the kind of file in messages ("manifest", "study file"). Throws
// ManifestError with file:line:column where there is one.
YAML::Node load_checked_yaml(const std::string& text, const std::string& source, const std::string& what);

}  // namespace rsi::runtime::schema
