// models.tsv and generations.tsv (lineage_files.h).
#include "lineage_files.h"

#include <charconv>
#include <cstdio>
#include <map>
#include <optional>
#include <stdexcept>
#include <type_traits>

#include "rsi/models/genome.h"
#include "rsi/scheduler/record.h"

namespace rsi::runtime {

namespace {

// The genome's columns: architecture (models::architecture_text), optimizer, learning rate,
// schedule, warm-up, batch size, epochs, weight decay, augmentation shift and flip, distillation
// epochs; "-" in each for a genome that does not parse (never for a designed child).
std::string genome_columns(const std::string& yaml) {
  try {
    const models::Genome g = models::from_yaml(yaml, "genome");
    const models::Recipe& r = g.recipe;
    char text[256];
    using R = models::Recipe;
    const char* optimizer = r.optimizer == R::Optimizer::Adam ? "adam" : r.optimizer == R::Optimizer::AdamW ? "adamw" : "sgd";
    const char* schedule = r.schedule == R::Schedule::Constant ? "constant" : r.schedule == R::Schedule::Cosine ? "cosine" : "step";
    const auto shortest = [](float v) {  // as the genome's YAML writes it: 0.001, not 0.00100000005
      char b[32];
      return std::string(b, std::to_chars(b, b + sizeof b, v).ptr);
    };
    std::snprintf(text, sizeof text, "\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d", optimizer,
                  shortest(r.learning_rate).c_str(), schedule, shortest(r.warmup).c_str(), r.batch_size, r.epochs,
                  shortest(r.weight_decay).c_str(), r.augmentation.shift, r.augmentation.flip ? 1 : 0,
                  r.distill_epochs);
    return models::architecture_text(g) + text;
  } catch (const std::exception&) {
    return "-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-";
  }
}

// One generations.tsv cell: the value in the field's format; "-" for an empty optional.
template <class T>
std::string cell(const char* format, const T& v) {
  if constexpr (std::is_same_v<T, std::optional<double>> || std::is_same_v<T, std::optional<std::int64_t>>) {
    return v ? cell(format, *v) : std::string("-");
  } else if constexpr (std::is_arithmetic_v<T>) {
    char text[64];
    if constexpr (std::is_floating_point_v<T>) std::snprintf(text, sizeof text, format, static_cast<double>(v));
    else if constexpr (std::is_signed_v<T> && sizeof(T) <= sizeof(int)) std::snprintf(text, sizeof text, format, static_cast<int>(v));  // %d
    else if constexpr (std::is_signed_v<T>) std::snprintf(text, sizeof text, format, static_cast<long long>(v));  // %lld
    else std::snprintf(text, sizeof text, format, static_cast<unsigned long long>(v));  // %llu
    return text;
  } else {
    throw std::logic_error(std::string("record_fields.h: a TSV format on a field that is not a number: ") + format);
  }
}

}  // namespace

std::vector<std::string> LineageFiles::generation_columns(bool improvement) {
  std::vector<std::string> columns;
  for (const scheduler::FieldInfo& f : scheduler::generation_fields())
    if (f.tsv && (improvement || f.group != scheduler::FieldGroup::Improvement)) columns.emplace_back(f.name);
  columns.emplace_back("checkpoint_seconds");
  columns.emplace_back("checkpoint_bytes");
  return columns;
}

LineageFiles::LineageFiles(const std::filesystem::path& dir, bool improvement)
    : improvement_(improvement),
      generation_columns_(generation_columns(improvement)),
      models_(dir / "models.tsv"),
      generations_(dir / "generations.tsv") {
  if (!models_ || !generations_) throw std::runtime_error("cannot write the lineage files in " + dir.string());
  models_ << "generation\tid\tparents\top\tstatus\tval_acc\ttest_acc\tparams\tflops\tinherited\tpreserving\t"
             "weights\tdescription\tfailure"
          << (improvement_ ? "\tpredicted_gain\trungs" : "")
          << "\tarchitecture\toptimizer\tlearning_rate\tschedule\twarmup\tbatch_size\tepochs\tweight_decay\t"
             "shift\tflip\tdistill_epochs\n";
  for (std::size_t i = 0; i < generation_columns_.size(); ++i)
    generations_ << (i ? "\t" : "") << generation_columns_[i];
  generations_ << "\n";
}

void LineageFiles::on_generation(const scheduler::GenerationRecord& g) {
  for (const auto& m : g.children) {
    std::string parents;
    for (auto p : m.parents) {
      if (!parents.empty()) parents += ',';
      parents += std::to_string(p);
    }
    char line[512];
    std::snprintf(line, sizeof line, "%d\t%llu\t%s\t%s\t%s\t%.17g\t%.17g\t%lld\t%lld\t%d\t%d\t%s\t", m.generation,
                  static_cast<unsigned long long>(m.id), parents.empty() ? "-" : parents.c_str(), m.op.c_str(),
                  scheduler::status_name(m.status), m.metrics.val_accuracy, m.metrics.test_accuracy,
                  static_cast<long long>(m.metrics.parameters), static_cast<long long>(m.metrics.flops),
                  m.inherited, m.function_preserving, m.weights_digest.empty() ? "-" : m.weights_digest.c_str());
    // Self-improvement columns ("-" where the switch is off): the predicted gain, and the rungs as
    // epochs:validation pairs.
    std::string rungs;
    for (std::size_t r = 0; r < m.rung_epochs.size(); ++r) {
      char pair[64];
      std::snprintf(pair, sizeof pair, "%s%d:%.6f", r ? "," : "", m.rung_epochs[r], m.rung_val_accuracy[r]);
      rungs += pair;
    }
    char predicted[32] = "-";
    if (m.predicted_gain) std::snprintf(predicted, sizeof predicted, "%+.6f", *m.predicted_gain);
    models_ << line << m.description << "\t" << (m.failure.empty() ? "-" : m.failure);
    if (rungs.empty()) rungs.push_back('-');  // (not = "-": GCC 12 warns -Wrestrict falsely)
    if (improvement_) models_ << "\t" << predicted << "\t" << rungs;
    models_ << "\t" << genome_columns(m.genome_yaml) << "\n";
  }

  // Every field with a TSV format; "-" for one the record does not have (a group or an optional
  // field it lacks). The store is the first sink: its figures are those of this generation's write.
  std::map<std::string, std::string> cells;
  scheduler::visit_generation_fields(g, [&](const scheduler::FieldInfo& f, const auto& v) {
    if (f.tsv && (f.group != scheduler::FieldGroup::Governance || !g.status.empty())) cells[f.name] = cell(f.tsv, v);
  });
  char figure[64];
  std::snprintf(figure, sizeof figure, "%.4f", store_ ? store_->last_write_seconds() : 0.0);
  cells["checkpoint_seconds"] = figure;
  std::snprintf(figure, sizeof figure, "%llu", static_cast<unsigned long long>(store_ ? store_->last_write_bytes() : 0));
  cells["checkpoint_bytes"] = figure;
  for (std::size_t i = 0; i < generation_columns_.size(); ++i) {
    const auto it = cells.find(generation_columns_[i]);
    generations_ << (i ? "\t" : "") << (it == cells.end() ? "-" : it->second);
  }
  generations_ << "\n";
  models_.flush();
  generations_.flush();
}

}  // namespace rsi::runtime
