// The one JSON object a command prints with --json (rsi status, show, audit) and the status file
// `rsi run` writes: fields in the order they are added, strings escaped by monitoring::json_string,
// numbers in their shortest exact form (a number that is not finite is null, which JSON has in place
// of NaN and infinities).
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "rsi/monitoring/exporter.h"

namespace rsi::runtime {

// The shortest text that reads back as the same double ("0.8731", "1e-07"); null when not finite.
inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, v).ptr;
  return std::string(buf, end);
}

// "[a, b, c]" of JSON values already written.
inline std::string json_array(const std::vector<std::string>& values) {
  std::string out = "[";
  for (std::size_t i = 0; i < values.size(); ++i) out += (i ? ", " : "") + values[i];
  return out + "]";
}

class JsonObject {
 public:
  JsonObject& raw(const std::string& key, const std::string& json) {
    text_ += (text_.empty() ? "" : ", ") + monitoring::json_string(key) + ": " + json;
    return *this;
  }
  JsonObject& text(const std::string& key, const std::string& value) { return raw(key, monitoring::json_string(value)); }
  JsonObject& number(const std::string& key, double value) { return raw(key, json_number(value)); }
  JsonObject& integer(const std::string& key, long long value) { return raw(key, std::to_string(value)); }
  JsonObject& id(const std::string& key, std::uint64_t value) { return raw(key, std::to_string(value)); }
  JsonObject& boolean(const std::string& key, bool value) { return raw(key, value ? "true" : "false"); }
  JsonObject& null(const std::string& key) { return raw(key, "null"); }
  // An integer that is unknown or does not apply when `value` < 0: null then.
  JsonObject& count_or_null(const std::string& key, long long value) {
    return value < 0 ? null(key) : integer(key, value);
  }
  JsonObject& optional_text(const std::string& key, const std::optional<std::string>& value) {
    return value ? text(key, *value) : null(key);
  }
  std::string str() const { return "{" + text_ + "}"; }

 private:
  std::string text_;
};

}  // namespace rsi::runtime
