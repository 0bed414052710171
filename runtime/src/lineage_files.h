// models.tsv and generations.tsv: the lineage as tab-separated text beside the generation files.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/scheduler/record.h"

namespace rsi::runtime {

// models.tsv: one row per model, deterministic fields only (two runs of the same manifest compare
// byte for byte), the genome's architecture and recipe in the last columns. generations.tsv: one
// row per generation, a column for every summary field with a TSV format in
// scheduler/record.h (in its order), then the checkpoint write's time and size.
class LineageFiles final : public scheduler::GenerationSink {
 public:
  // `improvement`: the run has self-improvement switches on, and the files get their columns (a run
  // without them writes no such columns).
  LineageFiles(const std::filesystem::path& dir, bool improvement);
  // The store whose last write's time and size generations.tsv reports (the store is the first sink).
  void set_store(const checkpoints::LineageStore* store) { store_ = store; }
  void on_generation(const scheduler::GenerationRecord& g) override;

  // generations.tsv's columns, in order.
  static std::vector<std::string> generation_columns(bool improvement);

 private:
  bool improvement_;
  std::vector<std::string> generation_columns_;
  std::ofstream models_, generations_;
  const checkpoints::LineageStore* store_ = nullptr;
};

}  // namespace rsi::runtime
