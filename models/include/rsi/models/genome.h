// rsi::models::Genome — what a model is: its architecture (ordered blocks), its training recipe and
// its designer genes (how it designs children; filled in by the scheduler). A genome has one
// canonical YAML text (to_yaml) that round-trips exactly through from_yaml.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <map>
#include <utility>
#include <string>
#include <vector>

#include "rsi/kernels/ops.h"

namespace rsi::models {

// One architecture block. Which fields matter depends on the kind:
//   conv      channels, kernel (1|3|5), stride (1|2); "same" padding kernel/2
//   pool      pool_kind (max|avg), size (2|3), stride (defaults to size)
//   residual  kernel (1|3|5): x + bn(conv(relu(bn(conv(x))))) at the input's channel count
//   dense     units
//   dropout   rate in [0, 1)
//   batchnorm (no fields)
//   activation activation (relu|gelu|tanh)
// A flatten is implied before the first dense block that follows a spatial block.
struct Block {
  enum class Kind { Conv, Pool, Residual, Dense, Dropout, BatchNorm, Activation };
  enum class PoolKind { Max, Avg };

  Kind kind = Kind::Dense;
  int channels = 0;
  int kernel = 3;
  int stride = 1;
  int units = 0;
  int size = 2;
  PoolKind pool_kind = PoolKind::Max;
  float rate = 0.0f;
  kernels::Activation activation = kernels::Activation::ReLU;

  bool operator==(const Block&) const = default;
};
const char* block_kind_name(Block::Kind kind);

struct Augmentation {
  int shift = 0;       // random translation by up to ±shift pixels (zero fill)
  bool flip = false;   // random horizontal flip
  bool operator==(const Augmentation&) const = default;
};

struct Recipe {
  enum class Optimizer { Adam, AdamW, Sgd };
  enum class Schedule { Constant, Cosine, Step };

  Optimizer optimizer = Optimizer::Adam;
  float learning_rate = 1e-3f;
  Schedule schedule = Schedule::Constant;
  // Linear learning-rate warm-up over this fraction of the steps, in [0, 0.5] (then the schedule);
  // written in the canonical text only when > 0, so genomes without it keep their text.
  float warmup = 0.0f;
  // Weight averaging: the weights a training returns are the exponential moving average of its
  // iterates (after each optimizer step) with this decay per step, bias-corrected, instead of the
  // last step's; 0 = off, else in (0, 1), e.g. 0.995 (a horizon of about 200 steps). Written in the
  // canonical text only when > 0, so genomes without it keep their text.
  float weight_average = 0.0f;
  float momentum = 0.9f;         // SGD only
  int batch_size = 128;
  int epochs = 5;
  float weight_decay = 0.0f;
  Augmentation augmentation;
  float distill_temperature = 4.0f;  // KD temperature T
  float distill_mix = 0.5f;          // weight of the KD loss against ground truth, in [0, 1]
  int distill_epochs = 1;            // epochs of distillation (labeled + unlabeled pool) before fine-tuning
  bool operator==(const Recipe&) const = default;
};

// Designer genes: named real-valued genes (operator probabilities, step sizes) that the scheduler
// defines and mutates. Empty for a hand-written genome.
using DesignerGenes = std::map<std::string, double>;

struct Genome {
  std::vector<Block> blocks;
  Recipe recipe;
  DesignerGenes designer;
  bool operator==(const Genome&) const = default;
};

// The input every genome is built for (by default Fashion-MNIST's: 1×28×28, 10 classes; a task of
// kind images reads it from its data).
struct InputSpec {
  int channels = 1, height = 28, width = 28, classes = 10;
  bool operator==(const InputSpec&) const = default;
};

// Limits checked by validate(); the manifest's red lines tighten them.
struct GenomeLimits {
  std::int64_t max_parameters = 50'000'000;
  std::int64_t max_flops = 5'000'000'000;  // forward FLOPs per sample
  int max_blocks = 64;
};

// Shape of the activation after each block: spatial (channels×h×w) or flat (features).
struct BlockShape {
  bool spatial = true;
  int channels = 0, height = 0, width = 0;  // when spatial
  std::int64_t features = 0;                // channels*height*width, or units when flat
};

struct GenomeStats {
  std::int64_t parameters = 0;  // trainable parameters
  std::int64_t flops = 0;       // forward FLOPs per sample (multiply-add = 2)
  std::vector<BlockShape> shapes;  // output shape of each block
};

// Throws GenomeError naming the block (index and kind) and what is wrong: shape mismatch (a
// spatial block after a dense one, a pool larger than its input), zero widths, out-of-range fields,
// the last block not a dense layer with `classes` units, parameter/FLOP limits exceeded.
// The architecture in one line, block by block: "conv(8,k3,s1) relu maxpool(2,s2) dense(10)" (the
// models.tsv column `architecture`, the Python package's `arch.blocks`).
std::string architecture_text(const Genome& genome);

GenomeStats validate(const Genome& genome, const InputSpec& input = {}, const GenomeLimits& limits = {});

struct GenomeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The designer genes a reader accepts: name -> [low, high]. The scheduler owns the names
// (scheduler::designer_gene_ranges); models only checks against them.
using DesignerGeneRanges = std::map<std::string, std::pair<double, double>>;

// Canonical YAML text: fixed key order, shortest round-trip number formatting.
std::string to_yaml(const Genome& genome);
// Parses a genome; `source` names the text in errors (a file path). Errors carry line:column,
// the key, and what was expected; unknown keys get a did-you-mean. The text is one YAML document
// without tags (`!!python/object`, `!foo`); designer genes are finite numbers and, with `genes`,
// names out of that table within their range (an unknown name gets a did-you-mean).
Genome from_yaml(const std::string& text, const std::string& source = "<genome>",
                 const DesignerGeneRanges* genes = nullptr);
Genome load_genome(const std::string& path, const DesignerGeneRanges* genes = nullptr);

}  // namespace rsi::models
