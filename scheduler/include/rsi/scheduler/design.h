// Design: a parent proposes a child genome with its designer genes. The genes are per-operator
// probabilities and step sizes; a child inherits its parent's genes with self-adaptive (log-normal
// / logit-normal) mutation, so the way parents design is itself under selection — the recursive
// part of recursive self-improvement.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rsi/kernels/rng.h"
#include "rsi/models/genome.h"
#include "rsi/models/morphism.h"

namespace rsi::scheduler {

// Names of the designer genes (keys of models::DesignerGenes).
//   "p.<operator>"  relative weight of each operator (normalised over those applicable)
//   "step.widen"    widen factor minus one (0.5 = +50% units), also the narrow factor
//   "step.lr"       sigma of the log-normal learning-rate step
//   "step.recipe"   sigma of the other recipe steps (weight decay, temperature, mix)
//   "tau"           self-adaptation rate of the genes themselves
// Operators: add_dense, add_conv, remove, widen, narrow, kernel, activation, residual, pool,
//            lr, epochs, batch, weight_decay, augment, distill, crossover; and, in the extended
//            recipe space only (DesignMode::extended_recipe), schedule.
const std::vector<std::string>& design_operators();
models::DesignerGenes default_designer_genes();
// Fills missing genes with defaults (seed genomes usually have none).
models::DesignerGenes complete_designer_genes(const models::DesignerGenes& genes);
// Every designer gene's name and the range mutation keeps it in (a seed's genes are checked
// against it: an unknown name is a typo, a value outside would be clamped at the first child).
const models::DesignerGeneRanges& designer_gene_ranges();

struct DesignLimits {
  std::int64_t max_parameters = 5'000'000;
  std::int64_t max_flops = 200'000'000;
  int max_blocks = 24;
  int max_epochs = 10;
  int max_units = 1024;
  int max_channels = 256;
};

// Why a seed genome cannot start a run under `limits`, or "" when it can: the limits every child
// must meet (parameters, FLOPs, blocks, units, channels, epochs) and the recipe ranges the design
// operators keep (learning rate, batch size). A seed outside them would be refused as a model, and
// every child of it too.
std::string seed_violation(const models::Genome& seed, const DesignLimits& limits, const models::InputSpec& input = {});

struct DesignedChild {
  models::Genome genome;         // validated; designer genes already mutated
  models::Morphism morphism;     // how it inherits the first parent's weights
  std::string op;                // operator name, e.g. "widen"
  std::string description;       // e.g. "widen block 2 dense 128 -> 192"
  bool crossover = false;        // true when `mate` contributed (recipe taken from it)
};

// How a parent designs (the ablation switches of the manifest's `design:` section).
struct DesignMode {
  // The child keeps its parent's designer genes exactly (no self-adaptive mutation): the way parents
  // design is no longer under selection.
  bool freeze_genes = false;
  // Random design: every applicable operator equally likely and the default step sizes, whatever
  // the genes say (the genes are kept, unmutated). The baseline the recursion must beat.
  bool uniform = false;
  // The extended recipe space: the learning-rate schedule operator (constant, cosine, step) joins
  // the others, with its gene "p.schedule" (added to the seeds by the designer).
  bool extended_recipe = false;
};
inline constexpr const char* kScheduleGene = "p.schedule";

// Proposes one child of `parent` (and of `mate` when the crossover operator is drawn and a mate is
// given). Every random draw comes from `rng` at consecutive indices from 0, so the child is a pure
// function of its arguments. The result always validates under `limits` and the input spec; an
// operator that cannot apply (e.g. remove on a one-layer model) is skipped and another drawn.
DesignedChild design_child(const models::Genome& parent, const models::Genome* mate, const kernels::CounterRng& rng,
                           const DesignLimits& limits = {}, const models::InputSpec& input = {},
                           const DesignMode& mode = {});

// The gene that weighs the learned predictor (predictor.h): the probability that a child slot takes
// the candidate the predictor ranks first rather than the parent's first design. Present only in
// runs with the predictor on (seeded at 0.5), so lineages without it keep their genomes.
inline constexpr const char* kScreenGene = "screen";

// A design's identity for deduplication: FNV-1a 64 of the canonical YAML of its architecture and
// recipe (designer genes left out: the same network trained the same way is the same design).
std::uint64_t design_hash(const models::Genome& genome);

// Mean pairwise distance between genomes (architecture edit distance + recipe distance), for the
// population-diversity monitor. 0 for fewer than two genomes.
double population_diversity(const std::vector<models::Genome>& genomes);

}  // namespace rsi::scheduler
