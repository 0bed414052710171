// The generation summary's field list (record.h, visit_generation_fields) as data: for the
// exporter's registration, the documentation and tests.
#include <algorithm>
#include <type_traits>

#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

std::vector<FieldInfo> generation_fields() {
  GenerationRecord every;
  every.improvement.emplace();
  std::vector<FieldInfo> out;
  visit_generation_fields(every, [&out](const FieldInfo& f, const auto&) { out.push_back(f); });
  return out;
}

namespace {
// The attribute's HDF5 type (FORMAT.md) from the member's C++ type.
template <class T>
struct StoredType;
template <> struct StoredType<int> { static constexpr const char* name = "int32"; };
template <> struct StoredType<std::int64_t> { static constexpr const char* name = "int64"; };
template <> struct StoredType<std::uint64_t> { static constexpr const char* name = "uint64"; };
template <> struct StoredType<double> { static constexpr const char* name = "float64"; };
template <> struct StoredType<std::string> { static constexpr const char* name = "string"; };
template <> struct StoredType<std::vector<std::uint64_t>> { static constexpr const char* name = "uint64[]"; };
template <> struct StoredType<std::vector<double>> { static constexpr const char* name = "float64[]"; };
template <> struct StoredType<std::map<std::uint64_t, double>> { static constexpr const char* name = "uint64[], float64[]"; };
template <class T> struct StoredType<std::optional<T>> { static constexpr const char* name = StoredType<T>::name; };
// FORMAT.md's words for each FieldGroup, in its order.
constexpr const char* kPart[] = {"every file", "every file; chained with the run (wall time)",
                                 "governance (files with `status`)", "self-improvement runs",
                                 "added later: where present"};
}  // namespace

std::string generation_fields_markdown() {
  std::string out =
      "| attribute | type | part | generations.tsv | Prometheus gauge | meaning |\n"
      "|---|---|---|---|---|---|\n";
  GenerationRecord every;
  every.improvement.emplace();
  visit_generation_fields(every, [&out](const FieldInfo& f, const auto& member) {
    using T = std::decay_t<decltype(member)>;
    const std::string name = f.name == std::string("design_skill_lineages")
                                 ? "`design_skill_lineages`, `design_skill_values`"
                                 : "`" + std::string(f.name) + "`";
    out += "| " + name + " | " + StoredType<T>::name + " | " + kPart[static_cast<int>(f.group)] + " | " +
           (f.tsv ? "yes" : "") + " | " + (f.gauge ? "`" + std::string(f.gauge) + "`" : std::string()) + " | " +
           f.doc + " |\n";
  });
  return out;
}

int current_summary_revision() {
  int newest = 0;
  for (const FieldInfo& f : generation_fields()) newest = std::max(newest, f.since);
  return newest;
}

void drop_fields_after(GenerationRecord& g, int revision) {
  visit_generation_fields(g, [revision](const FieldInfo& f, auto& v) {
    using T = std::decay_t<decltype(v)>;
    if constexpr (std::is_same_v<T, std::optional<double>> || std::is_same_v<T, std::optional<std::int64_t>>)
      if (f.since > revision) v.reset();
  });
}

}  // namespace rsi::scheduler
