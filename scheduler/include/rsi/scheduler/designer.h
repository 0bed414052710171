// The design step of a generation, out of the coordinator: parents chosen by the selection kind,
// children proposed by their genes (design.h) under the run's improvement switches, duplicates
// redrawn, candidates screened by the learned predictor (predictor.h), red lines applied before
// training. Holds what the loop has learned about design (every design seen, the predictor), and
// rebuilds it from a resumed run's stored children, so a resume designs what an uninterrupted run would.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "rsi/models/genome.h"
#include "rsi/models/morphism.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/predictor.h"
#include "rsi/scheduler/record.h"

namespace rsi::scheduler {

struct DesignedGeneration {
  std::vector<ModelRecord> children;                 // in id order; refused ones already final
  std::map<std::uint64_t, models::Genome> genomes;    // of the children to train
  std::map<std::uint64_t, models::Morphism> morphisms;
  std::vector<GovernanceEvent> events;               // red lines crossed at design
  int duplicates = 0;                                // designs redrawn as seen before
};

class Designer {
 public:
  explicit Designer(const LoopConfig& config);
  // The seed generation: the manifest's seeds with their designer genes completed.
  DesignedGeneration seed(std::uint64_t& next_id);
  // Children of `population` (with their parsed genomes in `genome_of`), ids from `next_id` on.
  DesignedGeneration design(int generation, std::uint64_t& next_id, const std::vector<ModelRecord>& population,
                            const std::map<std::uint64_t, models::Genome>& genome_of);
  // After a generation is committed: its designs become known, its trained children teach the
  // predictor, and the record gets the improvement statistics (when any switch is on).
  void learn(GenerationRecord& record, int duplicates);
  // A resume: learn from the stored generations (oldest first, with their children), as the
  // uninterrupted run did after each.
  void replay(const std::vector<GenerationRecord>& history);

 private:
  std::pair<const ModelRecord*, const ModelRecord*> choose_parents(const std::vector<ModelRecord>& population,
                                                                   std::size_t slot, std::uint64_t child_id) const;
  bool design_slot(int generation, ModelRecord& m, const models::Genome& parent, const models::Genome* mate,
                   DesignedGeneration& out, std::set<std::uint64_t>& taken);
  void remember(const ModelRecord& m);
  // design.predictor.min_correlation: whether the predictor's recent rank correlation lets it screen.
  bool predictor_earned_screening() const;

  const LoopConfig& config_;
  DesignMode mode_;
  std::set<std::uint64_t> seen_;                      // design_hash of every design made so far
  std::map<std::uint64_t, std::string> genome_yaml_;  // every model's genome, by id (the predictor's parents)
  GainPredictor predictor_;
  int predictor_examples_at_design_ = 0;
  std::deque<double> correlations_;  // the predictor's rank correlation in the last (up to 3) generations
};

}  // namespace rsi::scheduler
