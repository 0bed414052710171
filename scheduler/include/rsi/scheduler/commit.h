// The commit of one generation, as a pure function: the slow-down red line on trained children,
// survivor selection, and the generation's statistics (best, medians, gain, design skill, diversity,
// monitors' inputs). No MPI, no files, no clock: the coordinator (loop.cpp) merges the workers'
// results into the children, calls this, then governs the record; tests/unit/test_commit.cpp checks
// it directly.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

// False for a child that multi-fidelity stopped at an early rung (its figures are those of fewer
// epochs than its recipe's): design skill and the learned designer count only children trained in full.
bool trained_in_full(const ModelRecord& m);

// Better first: higher validation accuracy, then lower id (older). Selection and "best" use it.
bool ranks_before(const ModelRecord& a, const ModelRecord& b);

struct CommitSettings {
  SelectionKind selection = SelectionKind::Truncation;
  int population_size = 4;
  double max_gain_per_generation = 0.0;  // governance.red_lines (0 = off)
  // Quality-diversity: selection keeps the best model of every niche first (not with aging).
  ImprovementConfig::Niches niches;
  std::int64_t max_parameters = 5'000'000;  // the design limit: the top of the parameter bins
};

// A model's niche: its log-parameter bin over [1e3, max_parameters] and its depth bin (weighted
// blocks: conv, residual, dense; 1-2, 3-4, ... per bin), as parameter_bin * depth_bins + depth_bin.
int niche_of(const models::Genome& genome, std::int64_t parameters, const ImprovementConfig::Niches& niches,
             std::int64_t max_parameters);

struct Commit {
  // Counts, statistics, population ids and models, the children in id order. Not set here:
  // next_model_id, governance (status, events, trends), timings.
  GenerationRecord record;
  std::vector<ModelRecord> population;   // after selection, in id order
  std::vector<GovernanceEvent> events;   // red lines raised by this commit
};

// `children` carry their results (status, failure, metrics, weights); `population` is the one
// before this generation; `genome_of` gives any member's parsed genome (for diversity); `when`
// stamps the events. Throws when nothing survives (every seed failed).
Commit commit_generation(int generation, std::vector<ModelRecord> children, const std::vector<ModelRecord>& population,
                         const std::function<const models::Genome&(std::uint64_t)>& genome_of,
                         const CommitSettings& settings, const std::string& when);

}  // namespace rsi::scheduler
