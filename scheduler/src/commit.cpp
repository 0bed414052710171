// commit_generation: selection and statistics of one generation (commit.h).
#include "rsi/scheduler/commit.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <cstdio>
#include <map>
#include <numeric>
#include <stdexcept>

#include "rsi/scheduler/design.h"

namespace rsi::scheduler {

namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

const ModelRecord* best_of(const std::vector<ModelRecord>& models) {
  return &*std::min_element(models.begin(), models.end(), ranks_before);
}

// Counts the children, applies the slow-down red line and collects the design gains.
void count_children(Commit& c, std::vector<ModelRecord>& children, int generation, double best_before,
                    const CommitSettings& s, const std::string& when, std::vector<double>& gains,
                    std::map<std::uint64_t, std::vector<double>>& gains_by_lineage) {
  GenerationRecord& record = c.record;
  for (ModelRecord& m : children) {
    if (const double limit = s.max_gain_per_generation;
        limit > 0 && m.trained() && generation > 0 && m.metrics.val_accuracy - best_before > limit) {
      // "Slow down": the only red line that needs the trained result. The child stays on record
      // with its metrics but does not enter the population.
      char why[256];
      std::snprintf(why, sizeof why,
                    "red line: validation gain %.6f over the population's best %.6f exceeds "
                    "governance.red_lines.max_gain_per_generation %.6f (slow down): not admitted",
                    m.metrics.val_accuracy - best_before, best_before, limit);
      m.status = ModelRecord::Status::Refused;
      m.failure_kind = ModelRecord::FailureKind::NotAdmitted;
      m.failure = why;
      c.events.push_back(GovernanceEvent{generation, "red_line", m.id, why, "rsi", when});
    }
    if (m.trained()) {
      ++record.trained;
      if (!m.parents.empty() && trained_in_full(m)) {
        gains.push_back(m.gain_over_parent());
        gains_by_lineage[m.designer_lineage].push_back(m.gain_over_parent());
      }
    } else {
      ++(m.status == ModelRecord::Status::Refused ? record.refused : record.failed);
    }
  }
}

// Survivors: the best (or, for aging after generation 0, the newest) of the population and the
// trained children, kept in id order.
std::vector<ModelRecord> select(const std::vector<ModelRecord>& population, const std::vector<ModelRecord>& children,
                                int generation, const CommitSettings& s,
                                const std::function<const models::Genome&(std::uint64_t)>& genome_of) {
  std::vector<ModelRecord> pool = population;
  // A child multi-fidelity stopped early is on record, but its figures are of fewer epochs than
  // its recipe's: compared with models trained in full it would favour short recipes. It does not
  // enter the population.
  for (const ModelRecord& m : children)
    if (m.trained() && trained_in_full(m)) pool.push_back(m);
  if (pool.empty())
    throw std::runtime_error("every seed model failed (first reason: " +
                             (children.empty() ? std::string("no seeds") : children.front().failure) +
                             "); check the seed genomes and the task settings");
  const std::size_t keep = std::min<std::size_t>(pool.size(), static_cast<std::size_t>(s.population_size));
  if (s.selection == SelectionKind::Aging && generation > 0)
    std::sort(pool.begin(), pool.end(), [](auto& a, auto& b) { return a.id > b.id; });  // newest first
  else
    std::sort(pool.begin(), pool.end(), ranks_before);
  if (s.niches.enabled && !(s.selection == SelectionKind::Aging && generation > 0)) {
    // The best of each niche first (in rank order), then the rest by rank.
    std::set<int> covered;
    std::stable_partition(pool.begin(), pool.end(), [&](const ModelRecord& m) {
      return covered.insert(niche_of(genome_of(m.id), m.metrics.parameters, s.niches, s.max_parameters)).second;
    });
  }
  pool.resize(keep);
  std::sort(pool.begin(), pool.end(), [](auto& a, auto& b) { return a.id < b.id; });
  return pool;
}

// Statistics of the population after selection and of the children.
void summarise(GenerationRecord& record, const std::vector<ModelRecord>& population,
               const std::vector<ModelRecord>& children, int generation, double best_before,
               const std::vector<double>& gains, const std::map<std::uint64_t, std::vector<double>>& gains_by_lineage,
               const std::function<const models::Genome&(std::uint64_t)>& genome_of) {
  std::vector<double> vals, tests;
  std::vector<models::Genome> genomes;
  for (const auto& m : population) {
    vals.push_back(m.metrics.val_accuracy);
    tests.push_back(m.metrics.test_accuracy);
    record.population.push_back(m.id);
    genomes.push_back(genome_of(m.id));
  }
  const ModelRecord* best = best_of(population);
  record.best_id = best->id;
  record.best_val = best->metrics.val_accuracy;
  record.best_model_test = best->metrics.test_accuracy;
  record.best_parameters = best->metrics.parameters;
  record.best_flops = best->metrics.flops;
  record.best_test = *std::max_element(tests.begin(), tests.end());
  record.median_val = median(vals);
  record.median_test = median(tests);
  record.gain = generation == 0 ? 0.0 : record.best_val - best_before;
  record.design_skill = gains.empty() ? 0.0 : std::accumulate(gains.begin(), gains.end(), 0.0) / gains.size();
  for (auto& [lineage, g] : gains_by_lineage)
    record.design_skill_by_lineage[lineage] = std::accumulate(g.begin(), g.end(), 0.0) / g.size();
  record.diversity = population_diversity(genomes);
  record.goodhart_gap = best->metrics.val_accuracy - best->metrics.test_accuracy;
  if (!best->metrics.test_per_class.empty()) {
    const auto [lo, hi] = std::minmax_element(best->metrics.test_per_class.begin(), best->metrics.test_per_class.end());
    record.worst_class_accuracy = *lo;
    record.class_disparity = *hi - *lo;
  }
  // Mean of a pseudo-label measure over the trained children that have one (< 0: none did).
  const auto children_mean = [&children](double ModelMetrics::*measure) {
    double sum = 0.0;
    int n = 0;
    for (const ModelRecord& m : children)
      if (m.trained() && m.metrics.*measure >= 0) sum += m.metrics.*measure, ++n;
    return n ? sum / n : -1.0;
  };
  record.pseudo_label_accuracy = children_mean(&ModelMetrics::pseudo_label_accuracy);
  record.pseudo_label_entropy = children_mean(&ModelMetrics::pseudo_label_entropy);
  record.population_models = population;
}

}  // namespace

int niche_of(const models::Genome& genome, std::int64_t parameters, const ImprovementConfig::Niches& niches,
             std::int64_t max_parameters) {
  using Kind = models::Block::Kind;
  int depth = 0;
  for (const auto& b : genome.blocks) depth += b.kind == Kind::Conv || b.kind == Kind::Residual || b.kind == Kind::Dense;
  const int depth_bin = std::clamp((depth - 1) / 2, 0, niches.depth_bins - 1);
  const double top = std::log10(static_cast<double>(std::max<std::int64_t>(max_parameters, 10'000)));
  const double at = std::log10(static_cast<double>(std::max<std::int64_t>(parameters, 1)));
  const int parameter_bin =
      std::clamp(static_cast<int>(std::floor(niches.parameter_bins * (at - 3.0) / (top - 3.0))), 0, niches.parameter_bins - 1);
  return parameter_bin * niches.depth_bins + depth_bin;
}

bool trained_in_full(const ModelRecord& m) {
  if (m.rung_epochs.empty()) return true;
  return m.rung_epochs.back() >= models::from_yaml(m.genome_yaml, "child genome").recipe.epochs;
}

bool ranks_before(const ModelRecord& a, const ModelRecord& b) {
  if (a.metrics.val_accuracy != b.metrics.val_accuracy) return a.metrics.val_accuracy > b.metrics.val_accuracy;
  return a.id < b.id;
}

Commit commit_generation(int generation, std::vector<ModelRecord> children, const std::vector<ModelRecord>& population,
                         const std::function<const models::Genome&(std::uint64_t)>& genome_of,
                         const CommitSettings& settings, const std::string& when) {
  Commit c;
  c.record.generation = generation;
  const double best_before = population.empty() ? 0.0 : best_of(population)->metrics.val_accuracy;
  std::sort(children.begin(), children.end(), [](auto& a, auto& b) { return a.id < b.id; });
  std::vector<double> gains;
  std::map<std::uint64_t, std::vector<double>> gains_by_lineage;
  count_children(c, children, generation, best_before, settings, when, gains, gains_by_lineage);
  c.population = select(population, children, generation, settings, genome_of);
  summarise(c.record, c.population, children, generation, best_before, gains, gains_by_lineage, genome_of);
  if (settings.niches.enabled) {
    std::set<int> covered;
    for (const ModelRecord& m : c.population)
      covered.insert(niche_of(genome_of(m.id), m.metrics.parameters, settings.niches, settings.max_parameters));
    c.record.improvement.emplace().niches = static_cast<int>(covered.size());
  }
  c.record.children = std::move(children);
  return c;
}

}  // namespace rsi::scheduler
