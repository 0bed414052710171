// The design step of a generation (designer.h).
#include "rsi/scheduler/designer.h"

#include <algorithm>
#include <stdexcept>

#include "rsi/kernels/rng.h"
#include "rsi/scheduler/commit.h"
#include "rsi/scheduler/governance.h"

namespace rsi::scheduler {

namespace {

// Counter steps of a child's design stream (step 1 is the tournament's): the first design uses
// step 0, as it always has, so a run without the improvement switches designs as before.
constexpr std::uint32_t kRedrawStep = 0x100, kScreenStep = 0x2000;
constexpr double kDefaultScreen = 0.5;
constexpr double kDefaultScheduleWeight = 0.7;

}  // namespace

Designer::Designer(const LoopConfig& config) : config_(config), predictor_(config.improvement.predictor.ridge) {
  mode_.freeze_genes = config.improvement.freeze_genes;
  mode_.uniform = config.improvement.strategy == ImprovementConfig::Strategy::Random;
  mode_.extended_recipe = config.improvement.extended_recipe;
}

DesignedGeneration Designer::seed(std::uint64_t& next_id) {
  DesignedGeneration out;
  for (const models::Genome& seed : config_.seeds) {
    ModelRecord m;
    m.id = next_id++;
    m.generation = 0;
    models::Genome g = seed;
    g.designer = complete_designer_genes(g.designer);
    if (config_.improvement.predictor.enabled) g.designer.emplace(kScreenGene, kDefaultScreen);
    if (config_.improvement.extended_recipe) g.designer.emplace(kScheduleGene, kDefaultScheduleWeight);
    m.genome_yaml = models::to_yaml(g);
    out.genomes[m.id] = std::move(g);
    m.op = "seed";
    m.description = "seed genome";
    m.designer_lineage = m.id;
    out.children.push_back(std::move(m));
  }
  return out;
}

std::pair<const ModelRecord*, const ModelRecord*> Designer::choose_parents(const std::vector<ModelRecord>& population,
                                                                           std::size_t slot,
                                                                           std::uint64_t child_id) const {
  std::vector<const ModelRecord*> ranked;
  for (const auto& m : population) ranked.push_back(&m);
  std::sort(ranked.begin(), ranked.end(), [](auto* a, auto* b) { return ranks_before(*a, *b); });
  if (config_.selection == SelectionKind::Truncation) {
    const ModelRecord* mate = ranked.size() > 1 ? ranked[(slot + 1) % ranked.size()] : nullptr;
    return {ranked[slot % ranked.size()], mate};
  }
  // Tournament (and aging evolution's parent choice): best of k drawn uniformly.
  const kernels::CounterRng rng(config_.seed, kernels::rng_stream(kernels::RngUse::Design, child_id), 1);
  auto tournament = [&](std::uint64_t at) {
    const ModelRecord* best = nullptr;
    for (int k = 0; k < config_.tournament_size; ++k) {
      const ModelRecord* c = ranked[rng.below(at + static_cast<std::uint64_t>(k), static_cast<std::uint32_t>(ranked.size()))];
      if (!best || ranks_before(*c, *best)) best = c;
    }
    return best;
  };
  const ModelRecord* parent = tournament(0);
  const ModelRecord* mate = ranked.size() > 1 ? tournament(1u << 20) : nullptr;  // a disjoint range of draws
  if (mate == parent) mate = nullptr;
  return {parent, mate};
}

DesignedGeneration Designer::design(int generation, std::uint64_t& next_id, const std::vector<ModelRecord>& population,
                                    const std::map<std::uint64_t, models::Genome>& genome_of) {
  DesignedGeneration out;
  std::set<std::uint64_t> taken;  // designs of this generation so far
  predictor_examples_at_design_ = static_cast<int>(predictor_.examples());
  for (int i = 0; i < config_.children_per_generation; ++i) {
    ModelRecord m;
    m.id = next_id++;
    m.generation = generation;
    const auto [parent, mate] = choose_parents(population, static_cast<std::size_t>(i), m.id);
    m.parents = {parent->id};
    m.designer_lineage = parent->designer_lineage;
    m.parent_val_accuracy = parent->metrics.val_accuracy;
    m.genome_yaml = parent->genome_yaml;  // until a design replaces it
    const models::Genome* mate_genome = mate ? &genome_of.at(mate->id) : nullptr;
    if (design_slot(generation, m, genome_of.at(parent->id), mate_genome, out, taken) && mate)
      m.parents.push_back(mate->id);
    out.children.push_back(std::move(m));
  }
  return out;
}

// One child slot: up to `candidates` new designs (duplicates redrawn), the predictor's pick among
// them when the parent's screen gene says so, then the red lines. True when the mate contributed.
bool Designer::design_slot(int generation, ModelRecord& m, const models::Genome& parent, const models::Genome* mate,
                           DesignedGeneration& out, std::set<std::uint64_t>& taken) {
  const ImprovementConfig& imp = config_.improvement;
  const bool screening = imp.predictor.enabled && predictor_.fitted() &&
                         predictor_.examples() >= static_cast<std::size_t>(std::max(imp.predictor.min_examples, 1)) &&
                         predictor_earned_screening();
  const int wanted = screening ? std::max(imp.predictor.candidates, 1) : 1;
  const int draws = wanted + (imp.deduplicate ? std::max(imp.redesign_attempts, 0) : 0);
  const std::uint64_t stream = kernels::rng_stream(kernels::RngUse::Design, m.id);
  std::vector<DesignedChild> candidates;
  std::vector<std::uint64_t> hashes;
  for (int attempt = 0; attempt < draws && static_cast<int>(candidates.size()) < wanted; ++attempt) {
    const kernels::CounterRng rng(config_.seed, stream, attempt == 0 ? 0 : kRedrawStep + static_cast<std::uint32_t>(attempt));
    DesignedChild child;
    try {
      child = design_child(parent, mate, rng, config_.limits, config_.task.input, mode_);
    } catch (const std::invalid_argument& e) {
      // A parent no design can bring within the limits: the child is refused, the run goes on.
      m.op = "none";
      m.description = "design refused";
      m.status = ModelRecord::Status::Refused;
      m.failure_kind = ModelRecord::FailureKind::DesignRefused;
      m.failure = std::string("design refused: ") + e.what();
      return false;
    }
    const std::uint64_t hash = design_hash(child.genome);
    const bool duplicate = std::find(hashes.begin(), hashes.end(), hash) != hashes.end() || seen_.count(hash) ||
                           taken.count(hash);
    if (imp.deduplicate && duplicate) {
      ++out.duplicates;
      continue;
    }
    hashes.push_back(hash);
    candidates.push_back(std::move(child));
  }
  if (candidates.empty()) {
    m.op = "none";
    m.description = "design refused";
    m.status = ModelRecord::Status::Refused;
    m.failure_kind = ModelRecord::FailureKind::DesignRefused;
    m.failure = "design refused: every one of " + std::to_string(draws) +
                " draws repeated a design already made (design.deduplicate); the parent's neighbourhood is exhausted";
    return false;
  }
  std::size_t chosen = 0;
  if (imp.predictor.enabled && predictor_.fitted() && predictor_.examples() > 0) {
    std::vector<double> predicted;
    for (const DesignedChild& c : candidates)
      predicted.push_back(predictor_.predict(design_features(parent, m.parent_val_accuracy, c.genome, c.op, config_.task.input)));
    const auto gene = parent.designer.find(kScreenGene);
    const double screen = gene == parent.designer.end() ? kDefaultScreen : gene->second;
    if (screening && kernels::CounterRng(config_.seed, stream, kScreenStep).uniform(0) < screen)
      chosen = static_cast<std::size_t>(std::max_element(predicted.begin(), predicted.end()) - predicted.begin());
    m.predicted_gain = predicted[chosen];
    m.candidates = static_cast<int>(candidates.size());
  }
  DesignedChild& child = candidates[chosen];
  taken.insert(hashes[chosen]);
  m.genome_yaml = models::to_yaml(child.genome);
  m.op = child.op;
  m.description = child.description;
  const RedLines& lines = config_.governance.red_lines;
  if (lines.max_parameters > 0 || lines.max_flops_per_sample > 0) {
    // Refused before training: the design stays on record with its reason.
    const std::string violation = red_line_violation(lines, models::validate(child.genome, config_.task.input));
    if (!violation.empty()) {
      m.status = ModelRecord::Status::Refused;
      m.failure_kind = ModelRecord::FailureKind::RedLine;
      m.failure = violation;
      out.events.push_back(GovernanceEvent{generation, "red_line", m.id, violation, "rsi", utc_now_iso()});
      return child.crossover;
    }
  }
  const bool crossover = child.crossover;
  out.genomes[m.id] = std::move(child.genome);
  out.morphisms[m.id] = std::move(child.morphism);
  return crossover;
}

bool Designer::predictor_earned_screening() const {
  const double floor = config_.improvement.predictor.min_correlation;
  if (floor <= -1.0) return true;
  if (correlations_.empty()) return false;
  double sum = 0.0;
  for (const double c : correlations_) sum += c;
  return sum / static_cast<double>(correlations_.size()) >= floor;
}

void Designer::remember(const ModelRecord& m) {
  genome_yaml_[m.id] = m.genome_yaml;
  if (config_.improvement.deduplicate) seen_.insert(design_hash(models::from_yaml(m.genome_yaml, "stored genome")));
}

void Designer::learn(GenerationRecord& record, int duplicates) {
  const ImprovementConfig& imp = config_.improvement;
  for (const ModelRecord& m : record.children) remember(m);
  double correlation = std::numeric_limits<double>::quiet_NaN();
  if (imp.predictor.enabled) {
    std::vector<double> predicted, achieved;
    for (const ModelRecord& m : record.children) {
      if (!m.trained() || !m.predicted_gain || !trained_in_full(m)) continue;
      predicted.push_back(*m.predicted_gain);
      achieved.push_back(m.gain_over_parent());
    }
    correlation = rank_correlation(predicted, achieved);
    if (std::isfinite(correlation)) {
      correlations_.push_back(correlation);
      if (correlations_.size() > 3) correlations_.pop_front();
    }
    // Validation gains only: the hidden test set never reaches the predictor.
    for (const ModelRecord& m : record.children) {
      if (!m.trained() || m.parents.empty() || !trained_in_full(m)) continue;
      const auto parent = genome_yaml_.find(m.parents[0]);
      if (parent == genome_yaml_.end()) continue;  // a parent from before the stored history
      predictor_.add(design_features(models::from_yaml(parent->second, "parent genome"), m.parent_val_accuracy,
                                     models::from_yaml(m.genome_yaml, "child genome"), m.op, config_.task.input),
                     m.gain_over_parent());
    }
    predictor_.fit();
  }
  if (!imp.any()) return;
  GenerationRecord::Improvement& stats = record.improvement ? *record.improvement : record.improvement.emplace();
  stats.duplicates = duplicates;
  if (imp.predictor.enabled) {
    stats.predictor_examples = predictor_examples_at_design_;
    stats.predictor_rank_correlation = correlation;
    stats.predictor_weights = predictor_.weights();
  }
  stats.promoted = 0;
  for (const ModelRecord& m : record.children) stats.promoted += m.rung_epochs.size() > 1;
}

void Designer::replay(const std::vector<GenerationRecord>& history) {
  for (const GenerationRecord& h : history) {
    GenerationRecord copy;
    copy.children = h.children;
    predictor_examples_at_design_ = static_cast<int>(predictor_.examples());
    learn(copy, 0);
  }
}

}  // namespace rsi::scheduler
