// Design operators (scheduler/design.h): a parent's designer genes pick one mutation of its genome,
// and the mutation says how the child inherits the parent's weights (models/morphism.h).
//
// Architecture operators prefer function-preserving morphisms (Net2Net widening, identity
// insertion, zero-padded kernel growth), so a child starts where its parent ended; the others say
// which blocks keep their parent's weights (same block, same input shape) and which start fresh.
// Every random draw comes from the CounterRng at consecutive indices: a child is a pure function of
// (parent, mate, rng, limits, input).
#include "rsi/scheduler/design.h"

#include "rsi/kernels/fnv1a.h"
#include "rsi/models/edit_distance.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>

namespace rsi::scheduler {

namespace {

using models::Block;
using models::BlockOrigin;
using models::BlockShape;
using models::Genome;
using models::Morphism;
using Origin = BlockOrigin::Kind;
using kernels::Activation;

// Designer gene ranges: probabilities and step sizes stay where a step still means something.
constexpr double kMinWeight = 0.01, kMaxWeight = 10.0;
constexpr double kMinTau = 0.05, kMaxTau = 0.5, kTauRate = 0.1;
constexpr double kMinScreen = 0.05, kMaxScreen = 1.0;
struct StepRange {
  const char* name;
  double low, high, fallback;
};
constexpr StepRange kSteps[] = {
    {"step.widen", 0.1, 1.0, 0.5},
    {"step.lr", 0.05, 1.0, 0.3},
    {"step.recipe", 0.05, 0.5, 0.2},
};
// Recipe bounds the operators keep.
constexpr float kMinLearningRate = 1e-5f, kMaxLearningRate = 0.1f;
constexpr int kMinBatch = 16, kMaxBatch = 512;
constexpr float kMinWeightDecay = 1e-5f, kMaxWeightDecay = 0.1f;
constexpr float kMinTemperature = 1.0f, kMaxTemperature = 10.0f, kMaxDistillMix = 0.9f;
constexpr int kMaxDistillEpochs = 3;
constexpr int kMaxAttempts = 12;
constexpr double kScheduleWeight = 0.7;

// Consecutive draws from one CounterRng.
class Draws {
 public:
  explicit Draws(const kernels::CounterRng& rng) : rng_(rng) {}
  double uniform() { return rng_.uniform(next_++); }
  double normal() { return rng_.normal(next_++); }
  int below(std::size_t n) { return static_cast<int>(rng_.below(next_++, static_cast<std::uint32_t>(n))); }
  template <typename T>
  const T& pick(const std::vector<T>& items) { return items.at(static_cast<std::size_t>(below(items.size()))); }

 private:
  const kernels::CounterRng& rng_;
  std::uint64_t next_ = 0;
};

Block dense_block(int units) {
  Block b;
  b.kind = Block::Kind::Dense;
  b.units = units;
  return b;
}
Block conv_block(int channels, int kernel) {
  Block b;
  b.kind = Block::Kind::Conv;
  b.channels = channels;
  b.kernel = kernel;
  return b;
}
Block activation_block(Activation activation) {
  Block b;
  b.kind = Block::Kind::Activation;
  b.activation = activation;
  return b;
}
Block max_pool_block() {
  Block b;
  b.kind = Block::Kind::Pool;
  b.pool_kind = Block::PoolKind::Max;
  b.size = 2;
  b.stride = 2;
  return b;
}
Block residual_block(int kernel) {
  Block b;
  b.kind = Block::Kind::Residual;
  b.kernel = kernel;
  return b;
}

bool is_relu(const Block& b) { return b.kind == Block::Kind::Activation && b.activation == Activation::ReLU; }
bool has_weights(const Block& b) {
  return b.kind == Block::Kind::Dense || b.kind == Block::Kind::Conv || b.kind == Block::Kind::Residual;
}

// Output shapes of every block, structural checks only (a parent may be a seed above the limits).
std::vector<BlockShape> shapes_of(const Genome& genome, const models::InputSpec& input) {
  models::GenomeLimits unlimited;
  unlimited.max_parameters = std::numeric_limits<std::int64_t>::max();
  unlimited.max_flops = std::numeric_limits<std::int64_t>::max();
  unlimited.max_blocks = std::numeric_limits<int>::max();
  return models::validate(genome, input, unlimited).shapes;
}

BlockShape input_shape(const models::InputSpec& input) {
  BlockShape s;
  s.spatial = true;
  s.channels = input.channels;
  s.height = input.height;
  s.width = input.width;
  s.features = std::int64_t{input.channels} * input.height * input.width;
  return s;
}

bool same_shape(const BlockShape& a, const BlockShape& b) {
  return a.spatial == b.spatial && a.channels == b.channels && a.height == b.height && a.width == b.width &&
         a.features == b.features;
}

// Why a genome breaks the design limits, or nothing when it fits.
std::optional<std::string> limit_violation(const Genome& genome, const DesignLimits& limits,
                                           const models::InputSpec& input) {
  models::GenomeLimits genome_limits;
  genome_limits.max_parameters = limits.max_parameters;
  genome_limits.max_flops = limits.max_flops;
  genome_limits.max_blocks = limits.max_blocks;
  try {
    models::validate(genome, input, genome_limits);
  } catch (const models::GenomeError& error) {
    return std::string(error.what());
  }
  for (std::size_t i = 0; i + 1 < genome.blocks.size(); ++i) {
    const Block& b = genome.blocks[i];
    if (b.kind == Block::Kind::Dense && b.units > limits.max_units)
      return "block " + std::to_string(i) + " has " + std::to_string(b.units) + " units, over " +
             std::to_string(limits.max_units);
    if (b.kind == Block::Kind::Conv && b.channels > limits.max_channels)
      return "block " + std::to_string(i) + " has " + std::to_string(b.channels) + " channels, over " +
             std::to_string(limits.max_channels);
  }
  if (genome.recipe.epochs < 1 || genome.recipe.epochs > limits.max_epochs)
    return "recipe.epochs " + std::to_string(genome.recipe.epochs) + " is outside [1, " +
           std::to_string(limits.max_epochs) + "]";
  return std::nullopt;
}

struct Candidate {
  Genome genome;
  Morphism morphism;
  std::string description;
  bool crossover = false;
};

struct Context {
  const Genome& parent;
  const Genome* mate;
  const models::DesignerGenes& genes;
  const DesignLimits& limits;
  const models::InputSpec& input;
  std::vector<BlockShape> shapes;  // parent's block output shapes
  Draws& draws;
  bool extended_recipe = false;    // the schedule operator applies

  double gene(const std::string& name) const {
    const auto it = genes.find(name);
    return it == genes.end() ? 0.0 : it->second;
  }
  int size() const { return static_cast<int>(parent.blocks.size()); }
  BlockShape input_of(int i) const { return i == 0 ? input_shape(input) : shapes[static_cast<std::size_t>(i - 1)]; }
};

// Morphism of a structural edit: child block i came from parent block parent_of[i] (or is new, -1).
// A block keeps its parent's weights when it is the same block on the same input shape; otherwise
// it starts fresh. Operators then mark their function-preserving blocks.
Morphism align(const Context& ctx, const Genome& child, const std::vector<int>& parent_of) {
  const std::vector<BlockShape> child_shapes = shapes_of(child, ctx.input);
  Morphism m;
  for (std::size_t i = 0; i < child.blocks.size(); ++i) {
    const int p = parent_of[i];
    const BlockShape in = i == 0 ? input_shape(ctx.input) : child_shapes[i - 1];
    if (p >= 0 && child.blocks[i] == ctx.parent.blocks[static_cast<std::size_t>(p)] && same_shape(in, ctx.input_of(p)))
      m.blocks.push_back({Origin::Copy, p});
    else
      m.blocks.push_back({Origin::Fresh, -1});
  }
  return m;
}

// Child genome with `inserted` placed before parent block `at`, and its block origins.
Candidate insert_blocks(const Context& ctx, int at, const std::vector<Block>& inserted) {
  Candidate c;
  c.genome = ctx.parent;
  c.genome.blocks.insert(c.genome.blocks.begin() + at, inserted.begin(), inserted.end());
  std::vector<int> parent_of;
  for (int i = 0; i < static_cast<int>(c.genome.blocks.size()); ++i) {
    const int n = static_cast<int>(inserted.size());
    parent_of.push_back(i < at ? i : (i < at + n ? -1 : i - n));
  }
  c.morphism = align(ctx, c.genome, parent_of);
  return c;
}

void mark_identity(Candidate& c, int from, int count) {
  for (int i = from; i < from + count; ++i) c.morphism.blocks[static_cast<std::size_t>(i)] = {Origin::Identity, -1};
  c.morphism.function_preserving = true;
}

std::string block_text(const Block& b) {
  std::ostringstream s;
  s << models::block_kind_name(b.kind);
  switch (b.kind) {
    case Block::Kind::Conv: s << " " << b.channels << " k" << b.kernel; break;
    case Block::Kind::Dense: s << " " << b.units; break;
    case Block::Kind::Pool: s << (b.pool_kind == Block::PoolKind::Max ? " max " : " avg ") << b.size; break;
    case Block::Kind::Residual: s << " k" << b.kernel; break;
    case Block::Kind::Activation: s << " " << kernels::activation_name(b.activation); break;
    case Block::Kind::Dropout: s << " " << b.rate; break;
    case Block::Kind::BatchNorm: break;
  }
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Sites: where each architecture operator can act on the parent.

std::vector<int> relu_sites(const Context& ctx, bool spatial) {
  std::vector<int> sites;
  for (int i = 0; i + 1 < ctx.size(); ++i) {
    if (is_relu(ctx.parent.blocks[static_cast<std::size_t>(i)]) && ctx.shapes[static_cast<std::size_t>(i)].spatial == spatial)
      sites.push_back(i);
  }
  return sites;
}

bool has_spatial_blocks(const Context& ctx) {
  return std::any_of(ctx.parent.blocks.begin(), ctx.parent.blocks.end(), [](const Block& b) {
    return b.kind == Block::Kind::Conv || b.kind == Block::Kind::Pool || b.kind == Block::Kind::Residual;
  });
}

std::vector<int> removable_sites(const Context& ctx) {
  std::vector<int> sites;
  for (int i = 0; i + 1 < ctx.size(); ++i) {
    const Block::Kind k = ctx.parent.blocks[static_cast<std::size_t>(i)].kind;
    if (k == Block::Kind::Dense || k == Block::Kind::Conv || k == Block::Kind::Residual || k == Block::Kind::Pool)
      sites.push_back(i);
  }
  return sites;
}

// The dense/conv/residual block that takes block i's output (after activation, dropout, batchnorm
// and pool blocks).
int consumer_of(const Context& ctx, int i) {
  for (int j = i + 1; j < ctx.size(); ++j) {
    if (has_weights(ctx.parent.blocks[static_cast<std::size_t>(j)])) return j;
  }
  return -1;
}

int width_of(const Block& b) { return b.kind == Block::Kind::Dense ? b.units : b.channels; }

int widened_width(const Context& ctx, const Block& b) {
  const int limit = b.kind == Block::Kind::Dense ? ctx.limits.max_units : ctx.limits.max_channels;
  const int old = width_of(b);
  const int grown = static_cast<int>(std::lround(old * (1.0 + ctx.gene("step.widen"))));
  return std::min(limit, std::max(old + 1, grown));
}

int narrowed_width(const Context& ctx, const Block& b) {
  return std::max(1, static_cast<int>(std::lround(width_of(b) / (1.0 + ctx.gene("step.widen")))));
}

std::vector<int> widen_sites(const Context& ctx) {
  std::vector<int> sites;
  for (int i = 0; i + 1 < ctx.size(); ++i) {
    const Block& b = ctx.parent.blocks[static_cast<std::size_t>(i)];
    if (b.kind != Block::Kind::Dense && b.kind != Block::Kind::Conv) continue;
    if (widened_width(ctx, b) <= width_of(b)) continue;
    // Net2Net needs a dense or conv consumer; a residual block's skip path cannot take new channels.
    const int consumer = consumer_of(ctx, i);
    if (consumer < 0 || ctx.parent.blocks[static_cast<std::size_t>(consumer)].kind == Block::Kind::Residual) continue;
    sites.push_back(i);
  }
  return sites;
}

std::vector<int> narrow_sites(const Context& ctx) {
  std::vector<int> sites;
  for (int i = 0; i + 1 < ctx.size(); ++i) {
    const Block& b = ctx.parent.blocks[static_cast<std::size_t>(i)];
    if ((b.kind == Block::Kind::Dense || b.kind == Block::Kind::Conv) && narrowed_width(ctx, b) < width_of(b))
      sites.push_back(i);
  }
  return sites;
}

std::vector<int> kind_sites(const Context& ctx, Block::Kind kind) {
  std::vector<int> sites;
  for (int i = 0; i < ctx.size(); ++i) {
    if (ctx.parent.blocks[static_cast<std::size_t>(i)].kind == kind) sites.push_back(i);
  }
  return sites;
}

// After a spatial block whose output is at least 4x4, and not between a block and its own
// normalisation or activation.
std::vector<int> pool_sites(const Context& ctx) {
  std::vector<int> sites;
  for (int i = 0; i + 1 < ctx.size(); ++i) {
    const BlockShape& s = ctx.shapes[static_cast<std::size_t>(i)];
    const Block::Kind next = ctx.parent.blocks[static_cast<std::size_t>(i + 1)].kind;
    if (s.spatial && s.height >= 4 && s.width >= 4 && next != Block::Kind::Activation &&
        next != Block::Kind::BatchNorm && next != Block::Kind::Dropout)
      sites.push_back(i);
  }
  return sites;
}

bool room_for(const Context& ctx, int blocks) { return ctx.size() + blocks <= ctx.limits.max_blocks; }

// ---------------------------------------------------------------------------------------------
// Architecture operators. Each returns nothing when it cannot act on this parent.

std::optional<Candidate> add_dense(Context& ctx) {
  const std::vector<int> sites = relu_sites(ctx, /*spatial=*/false);
  if (!sites.empty()) {
    // dense(F) on F non-negative inputs as W = I, then a ReLU that changes nothing.
    const int at = ctx.draws.pick(sites);
    const int F = static_cast<int>(ctx.shapes[static_cast<std::size_t>(at)].features);
    Candidate c = insert_blocks(ctx, at + 1, {dense_block(F), activation_block(Activation::ReLU)});
    mark_identity(c, at + 1, 2);
    c.description = "add_dense " + std::to_string(F) + " + relu (identity) after block " + std::to_string(at);
    return c;
  }
  // No hidden ReLU to extend: a fresh hidden layer before the classifier.
  static const std::vector<int> kUnits = {32, 64, 128, 256};
  const int units = ctx.draws.pick(kUnits);
  const int at = ctx.size() - 1;
  Candidate c = insert_blocks(ctx, at, {dense_block(units), activation_block(Activation::ReLU)});
  c.description = "add_dense " + std::to_string(units) + " + relu (fresh) before the output block";
  return c;
}

std::optional<Candidate> add_conv(Context& ctx) {
  const std::vector<int> sites = relu_sites(ctx, /*spatial=*/true);
  if (!sites.empty()) {
    const int at = ctx.draws.pick(sites);
    const int C = ctx.shapes[static_cast<std::size_t>(at)].channels;
    Candidate c = insert_blocks(ctx, at + 1, {conv_block(C, 3), activation_block(Activation::ReLU)});
    mark_identity(c, at + 1, 2);
    c.description = "add_conv " + std::to_string(C) + " k3 + relu (identity) after block " + std::to_string(at);
    return c;
  }
  if (has_spatial_blocks(ctx)) return std::nullopt;
  // A linear or MLP model discovers convolutions: a fresh conv stem in front of it.
  static const std::vector<int> kChannels = {8, 16, 32};
  const int channels = ctx.draws.pick(kChannels);
  Candidate c = insert_blocks(ctx, 0, {conv_block(channels, 3), activation_block(Activation::ReLU), max_pool_block()});
  c.description = "add_conv stem conv " + std::to_string(channels) + " k3 + relu + max pool 2 (fresh)";
  return c;
}

std::optional<Candidate> remove(Context& ctx) {
  const std::vector<int> sites = removable_sites(ctx);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  // The block goes with its own normalisation and activation.
  int count = 1;
  if (at + count < ctx.size() - 1 && ctx.parent.blocks[static_cast<std::size_t>(at + count)].kind == Block::Kind::BatchNorm)
    ++count;
  if (at + count < ctx.size() - 1 && ctx.parent.blocks[static_cast<std::size_t>(at + count)].kind == Block::Kind::Activation)
    ++count;
  Candidate c;
  c.genome = ctx.parent;
  c.genome.blocks.erase(c.genome.blocks.begin() + at, c.genome.blocks.begin() + at + count);
  std::vector<int> parent_of;
  for (int i = 0; i < static_cast<int>(c.genome.blocks.size()); ++i) parent_of.push_back(i < at ? i : i + count);
  c.morphism = align(ctx, c.genome, parent_of);
  c.description = "remove block " + std::to_string(at) + " " + block_text(ctx.parent.blocks[static_cast<std::size_t>(at)]) +
                  (count > 1 ? " and the " + std::to_string(count - 1) + " block(s) after it" : "");
  return c;
}

std::vector<int> identity_map(const Genome& genome) {
  std::vector<int> map(genome.blocks.size());
  for (std::size_t i = 0; i < map.size(); ++i) map[i] = static_cast<int>(i);
  return map;
}

void set_width(Block& b, int width) { (b.kind == Block::Kind::Dense ? b.units : b.channels) = width; }

std::optional<Candidate> widen(Context& ctx) {
  const std::vector<int> sites = widen_sites(ctx);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  const Block& old_block = ctx.parent.blocks[static_cast<std::size_t>(at)];
  const int old_width = width_of(old_block), new_width = widened_width(ctx, old_block);
  const int consumer = consumer_of(ctx, at);
  Candidate c;
  c.genome = ctx.parent;
  set_width(c.genome.blocks[static_cast<std::size_t>(at)], new_width);
  c.morphism = align(ctx, c.genome, identity_map(c.genome));
  // Net2Net: new unit j replicates a random old unit; the blocks in between (norms replicate their
  // channels too) are copies, and the consumer splits each replicated unit's outgoing weights.
  c.morphism.blocks[static_cast<std::size_t>(at)] = {Origin::Widened, at};
  for (int i = at + 1; i < consumer; ++i) c.morphism.blocks[static_cast<std::size_t>(i)] = {Origin::Copy, i};
  c.morphism.blocks[static_cast<std::size_t>(consumer)] = {Origin::Consumer, consumer};
  for (int j = 0; j < new_width; ++j)
    c.morphism.unit_map.push_back(j < old_width ? j : ctx.draws.below(static_cast<std::size_t>(old_width)));
  c.morphism.function_preserving = true;
  c.description = "widen block " + std::to_string(at) + " " + models::block_kind_name(old_block.kind) + " " +
                  std::to_string(old_width) + " -> " + std::to_string(new_width);
  return c;
}

std::optional<Candidate> narrow(Context& ctx) {
  const std::vector<int> sites = narrow_sites(ctx);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  const Block& old_block = ctx.parent.blocks[static_cast<std::size_t>(at)];
  const int new_width = narrowed_width(ctx, old_block);
  Candidate c;
  c.genome = ctx.parent;
  set_width(c.genome.blocks[static_cast<std::size_t>(at)], new_width);
  c.morphism = align(ctx, c.genome, identity_map(c.genome));
  c.description = "narrow block " + std::to_string(at) + " " + models::block_kind_name(old_block.kind) + " " +
                  std::to_string(width_of(old_block)) + " -> " + std::to_string(new_width);
  return c;
}

std::optional<Candidate> kernel(Context& ctx) {
  const std::vector<int> sites = kind_sites(ctx, Block::Kind::Conv);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  const int old_kernel = ctx.parent.blocks[static_cast<std::size_t>(at)].kernel;
  std::vector<int> choices;
  for (int k : {1, 3, 5})
    if (k != old_kernel) choices.push_back(k);
  const int new_kernel = ctx.draws.pick(choices);
  Candidate c;
  c.genome = ctx.parent;
  c.genome.blocks[static_cast<std::size_t>(at)].kernel = new_kernel;
  c.morphism = align(ctx, c.genome, identity_map(c.genome));
  if (new_kernel > old_kernel) {
    // Zero-padded, centred: with padding k/2 the output is unchanged.
    c.morphism.blocks[static_cast<std::size_t>(at)] = {Origin::GrownKernel, at};
    c.morphism.function_preserving = true;
  }
  c.description = "kernel block " + std::to_string(at) + " conv " + std::to_string(old_kernel) + " -> " +
                  std::to_string(new_kernel);
  return c;
}

std::optional<Candidate> change_activation(Context& ctx) {
  const std::vector<int> sites = kind_sites(ctx, Block::Kind::Activation);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  const Activation old_kind = ctx.parent.blocks[static_cast<std::size_t>(at)].activation;
  std::vector<Activation> choices;
  for (Activation a : {Activation::ReLU, Activation::GELU, Activation::Tanh})
    if (a != old_kind) choices.push_back(a);
  const Activation new_kind = ctx.draws.pick(choices);
  Candidate c;
  c.genome = ctx.parent;
  c.genome.blocks[static_cast<std::size_t>(at)] = activation_block(new_kind);
  c.morphism = align(ctx, c.genome, identity_map(c.genome));
  c.description = "activation block " + std::to_string(at) + " " + kernels::activation_name(old_kind) + " -> " +
                  kernels::activation_name(new_kind);
  return c;
}

std::optional<Candidate> add_residual(Context& ctx) {
  const std::vector<int> sites = relu_sites(ctx, /*spatial=*/true);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  Candidate c = insert_blocks(ctx, at + 1, {residual_block(3)});
  mark_identity(c, at + 1, 1);  // its second norm's gamma starts at zero
  c.description = "residual k3 (identity) after block " + std::to_string(at);
  return c;
}

std::optional<Candidate> add_pool(Context& ctx) {
  const std::vector<int> sites = pool_sites(ctx);
  if (sites.empty()) return std::nullopt;
  const int at = ctx.draws.pick(sites);
  Candidate c = insert_blocks(ctx, at + 1, {max_pool_block()});
  c.description = "pool max 2 after block " + std::to_string(at);
  return c;
}

// ---------------------------------------------------------------------------------------------
// Recipe operators: the architecture and weights stay, so the child starts as its parent.

Candidate recipe_child(const Context& ctx, std::string description) {
  Candidate c;
  c.genome = ctx.parent;
  c.morphism = models::copy_morphism(c.genome);
  c.description = std::move(description);
  return c;
}

std::string number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

std::optional<Candidate> learning_rate(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  float& lr = c.genome.recipe.learning_rate;
  const float old = lr;
  lr = std::clamp(static_cast<float>(old * std::exp(ctx.gene("step.lr") * ctx.draws.normal())), kMinLearningRate,
                  kMaxLearningRate);
  c.description = "lr " + number(old) + " -> " + number(lr);
  return c;
}

// ±1 (or ×2 / ÷2) within [low, high], the other way when a bound blocks the first.
int step_within(Draws& draws, int value, int low, int high, const std::function<int(int, bool)>& step) {
  const bool up = draws.uniform() < 0.5;
  const int first = std::clamp(step(value, up), low, high);
  return first != value ? first : std::clamp(step(value, !up), low, high);
}

std::optional<Candidate> epochs(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  int& e = c.genome.recipe.epochs;
  const int old = e;
  e = step_within(ctx.draws, old, 1, std::max(1, ctx.limits.max_epochs), [](int v, bool up) { return up ? v + 1 : v - 1; });
  c.description = "epochs " + std::to_string(old) + " -> " + std::to_string(e);
  return c;
}

std::optional<Candidate> batch(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  int& b = c.genome.recipe.batch_size;
  const int old = b;
  b = step_within(ctx.draws, old, kMinBatch, kMaxBatch, [](int v, bool up) { return up ? v * 2 : v / 2; });
  c.description = "batch " + std::to_string(old) + " -> " + std::to_string(b);
  return c;
}

std::optional<Candidate> weight_decay(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  float& wd = c.genome.recipe.weight_decay;
  const float old = wd;
  if (old < kMinWeightDecay) {
    wd = kMinWeightDecay;  // switch decay on at its smallest value
  } else {
    // Decay is searched over decades: a wider step than the other recipe fields; below the
    // smallest value it switches off.
    const double next = old * std::exp(3.0 * ctx.gene("step.recipe") * ctx.draws.normal());
    wd = next < kMinWeightDecay ? 0.0f : std::min(static_cast<float>(next), kMaxWeightDecay);
  }
  c.description = "weight_decay " + number(old) + " -> " + number(wd);
  return c;
}

std::optional<Candidate> augment(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  models::Augmentation& a = c.genome.recipe.augmentation;
  if (ctx.draws.uniform() < 0.5) {
    a.flip = !a.flip;
    c.description = std::string("augment flip ") + (a.flip ? "on" : "off");
  } else {
    const int old = a.shift;
    a.shift = old == 0 ? 1 : (old == 1 ? (ctx.draws.uniform() < 0.5 ? 0 : 2) : 1);
    c.description = "augment shift " + std::to_string(old) + " -> " + std::to_string(a.shift);
  }
  return c;
}

std::optional<Candidate> distill(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  models::Recipe& r = c.genome.recipe;
  const double sigma = ctx.gene("step.recipe");
  r.distill_temperature = std::clamp(static_cast<float>(r.distill_temperature * std::exp(sigma * ctx.draws.normal())),
                                     kMinTemperature, kMaxTemperature);
  r.distill_mix = std::clamp(static_cast<float>(r.distill_mix + sigma * ctx.draws.normal()), 0.0f, kMaxDistillMix);
  r.distill_epochs = step_within(ctx.draws, std::clamp(r.distill_epochs, 0, kMaxDistillEpochs), 0, kMaxDistillEpochs,
                                 [](int v, bool up) { return up ? v + 1 : v - 1; });
  c.description = "distill temperature " + number(r.distill_temperature) + ", mix " + number(r.distill_mix) +
                  ", epochs " + std::to_string(r.distill_epochs);
  return c;
}

// The learning-rate schedule: one of the two others (constant, cosine decay, step decay), or
// another warm-up (none, 5 % or 10 % of the steps), half and half.
std::optional<Candidate> schedule(Context& ctx) {
  Candidate c = recipe_child(ctx, "");
  using S = models::Recipe::Schedule;
  if (ctx.draws.uniform() < 0.5) {
    float& warmup = c.genome.recipe.warmup;
    const float old = warmup;
    const float choices[3] = {0.0f, 0.05f, 0.1f};
    const int at = old <= 0.0f ? 0 : old <= 0.05f ? 1 : 2;
    warmup = choices[(at + 1 + ctx.draws.below(2)) % 3];
    c.description = "warmup " + number(old) + " -> " + number(warmup);
    return c;
  }
  S& sched = c.genome.recipe.schedule;
  const S old = sched;
  const S others[3][2] = {{S::Cosine, S::Step}, {S::Constant, S::Step}, {S::Constant, S::Cosine}};
  sched = others[static_cast<int>(old)][ctx.draws.below(2)];
  auto name = [](S v) { return v == S::Constant ? "constant" : v == S::Cosine ? "cosine" : "step"; };
  c.description = std::string("schedule ") + name(old) + " -> " + name(sched);
  return c;
}

std::optional<Candidate> crossover(Context& ctx) {
  if (!ctx.mate) return std::nullopt;
  Candidate c = recipe_child(ctx, "");
  c.crossover = true;
  models::Recipe& r = c.genome.recipe;
  const models::Recipe& m = ctx.mate->recipe;
  int from_mate = 0;
  const auto pick = [&](auto& field, const auto& mate_field) {
    if (ctx.draws.uniform() < 0.5) {
      field = mate_field;
      ++from_mate;
    }
  };
  pick(r.optimizer, m.optimizer);
  pick(r.learning_rate, m.learning_rate);
  pick(r.schedule, m.schedule);
  pick(r.momentum, m.momentum);
  pick(r.batch_size, m.batch_size);
  pick(r.epochs, m.epochs);
  pick(r.weight_decay, m.weight_decay);
  pick(r.augmentation.shift, m.augmentation.shift);
  pick(r.augmentation.flip, m.augmentation.flip);
  pick(r.distill_temperature, m.distill_temperature);
  pick(r.distill_mix, m.distill_mix);
  pick(r.distill_epochs, m.distill_epochs);
  c.description = "crossover: parent's architecture, " + std::to_string(from_mate) + " of 12 recipe fields from the mate";
  return c;
}

using Operator = std::optional<Candidate> (*)(Context&);
struct OperatorEntry {
  const char* name;
  Operator apply;
  double default_weight;
  // Only in the extended recipe space (DesignMode::extended_recipe): its gene is not among the
  // defaults, so genomes of runs without it keep their text.
  bool extended = false;
};
// Default weights favour growth (add_conv most: a linear or MLP seed finds convolutions) and
// Net2Net widening; crossover only applies with a mate.
const OperatorEntry kOperators[] = {
    {"add_dense", add_dense, 1.0},     {"add_conv", add_conv, 2.0},
    {"remove", remove, 0.5},           {"widen", widen, 1.5},
    {"narrow", narrow, 0.5},           {"kernel", kernel, 0.7},
    {"activation", change_activation, 0.5}, {"residual", add_residual, 1.0},
    {"pool", add_pool, 0.7},           {"lr", learning_rate, 1.0},
    {"epochs", epochs, 0.7},           {"batch", batch, 0.5},
    {"weight_decay", weight_decay, 0.5}, {"augment", augment, 0.7},
    {"distill", distill, 0.7},         {"crossover", crossover, 0.5},
    {"schedule", schedule, kScheduleWeight, true},
};

// Whether an operator can act on this parent (before any draw).
bool applicable(const std::string& op, const Context& ctx) {
  if (op == "add_dense") return room_for(ctx, 2);
  if (op == "add_conv")
    return (!relu_sites(ctx, true).empty() && room_for(ctx, 2)) || (!has_spatial_blocks(ctx) && room_for(ctx, 3));
  if (op == "remove") return !removable_sites(ctx).empty();
  if (op == "widen") return !widen_sites(ctx).empty();
  if (op == "narrow") return !narrow_sites(ctx).empty();
  if (op == "kernel") return !kind_sites(ctx, Block::Kind::Conv).empty();
  if (op == "activation") return !kind_sites(ctx, Block::Kind::Activation).empty();
  if (op == "residual") return !relu_sites(ctx, true).empty() && room_for(ctx, 1);
  if (op == "pool") return !pool_sites(ctx).empty() && room_for(ctx, 1);
  if (op == "crossover") return ctx.mate != nullptr;
  if (op == "schedule") return ctx.extended_recipe;
  return true;  // recipe operators
}

models::DesignerGenes mutate_genes(const models::DesignerGenes& parent, Draws& draws) {
  models::DesignerGenes genes = parent;
  double& tau = genes["tau"];
  tau = std::clamp(tau * std::exp(kTauRate * draws.normal()), kMinTau, kMaxTau);
  const double rate = tau;
  for (auto& [name, value] : genes) {
    if (name.rfind("p.", 0) == 0) {
      value = std::clamp(value * std::exp(rate * draws.normal()), kMinWeight, kMaxWeight);
      continue;
    }
    if (name == kScreenGene) value = std::clamp(value * std::exp(rate * draws.normal()), kMinScreen, kMaxScreen);
    for (const StepRange& step : kSteps) {
      if (name == step.name) value = std::clamp(value * std::exp(rate * draws.normal()), step.low, step.high);
    }
  }
  return genes;
}

// A crossover child's genes: the mean of both parents' (the parent's already mutated).
models::DesignerGenes average_genes(const models::DesignerGenes& a, const models::DesignerGenes& b) {
  models::DesignerGenes genes = a;
  for (const auto& [name, value] : b) {
    const auto it = genes.find(name);
    if (it == genes.end())
      genes.emplace(name, value);
    else
      it->second = 0.5 * (it->second + value);
  }
  return genes;
}

DesignedChild finish(Candidate&& c, const std::string& op, const models::DesignerGenes& genes, const Genome* mate) {
  DesignedChild child;
  child.genome = std::move(c.genome);
  child.genome.designer = c.crossover && mate ? average_genes(genes, complete_designer_genes(mate->designer)) : genes;
  child.morphism = std::move(c.morphism);
  child.op = op;
  child.description = std::move(c.description);
  child.crossover = c.crossover;
  return child;
}

}  // namespace

const std::vector<std::string>& design_operators() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const OperatorEntry& e : kOperators) out.emplace_back(e.name);
    return out;
  }();
  return names;
}

models::DesignerGenes default_designer_genes() {
  models::DesignerGenes genes;
  for (const OperatorEntry& e : kOperators)
    if (!e.extended) genes[std::string("p.") + e.name] = e.default_weight;
  for (const StepRange& step : kSteps) genes[step.name] = step.fallback;
  genes["tau"] = 0.2;
  return genes;
}

models::DesignerGenes complete_designer_genes(const models::DesignerGenes& genes) {
  models::DesignerGenes out = genes;
  for (const auto& [name, value] : default_designer_genes()) out.emplace(name, value);  // keeps existing
  return out;
}

const models::DesignerGeneRanges& designer_gene_ranges() {
  static const models::DesignerGeneRanges ranges = [] {
    models::DesignerGeneRanges out;
    for (const OperatorEntry& e : kOperators) out[std::string("p.") + e.name] = {kMinWeight, kMaxWeight};
    for (const StepRange& step : kSteps) out[step.name] = {step.low, step.high};
    out["tau"] = {kMinTau, kMaxTau};
    out[kScreenGene] = {kMinScreen, kMaxScreen};
    return out;
  }();
  return ranges;
}

std::string seed_violation(const models::Genome& seed, const DesignLimits& limits, const models::InputSpec& input) {
  if (const auto why = limit_violation(seed, limits, input))
    return *why + " (the manifest's design limits; raise them in design: or use a smaller seed)";
  const auto outside = [](const std::string& field, const std::string& value, const std::string& range) {
    return "recipe." + field + " " + value + " is outside " + range +
           ", the range the design operators keep (a child could never return to it)";
  };
  const float lr = seed.recipe.learning_rate;
  if (!(lr >= kMinLearningRate && lr <= kMaxLearningRate))
    return outside("learning_rate", number(lr), "[" + number(kMinLearningRate) + ", " + number(kMaxLearningRate) + "]");
  if (seed.recipe.batch_size < kMinBatch || seed.recipe.batch_size > kMaxBatch)
    return outside("batch_size", std::to_string(seed.recipe.batch_size),
                   "[" + std::to_string(kMinBatch) + ", " + std::to_string(kMaxBatch) + "]");
  const float wd = seed.recipe.weight_decay;
  if (wd != 0.0f && !(wd >= kMinWeightDecay && wd <= kMaxWeightDecay))
    return outside("weight_decay", number(wd),
                   "0 or [" + number(kMinWeightDecay) + ", " + number(kMaxWeightDecay) + "]");
  if (seed.recipe.distill_epochs > limits.max_epochs)
    return "recipe.distillation.epochs " + std::to_string(seed.recipe.distill_epochs) + " is over design.max_epochs " +
           std::to_string(limits.max_epochs);
  return "";
}

DesignedChild design_child(const models::Genome& parent, const models::Genome* mate, const kernels::CounterRng& rng,
                           const DesignLimits& limits, const models::InputSpec& input, const DesignMode& mode) {
  std::vector<BlockShape> shapes;
  try {
    shapes = shapes_of(parent, input);
  } catch (const models::GenomeError& error) {
    throw std::invalid_argument(std::string("design_child: the parent genome is invalid: ") + error.what());
  }
  Draws draws(rng);
  const models::DesignerGenes inherited = complete_designer_genes(parent.designer);
  const models::DesignerGenes genes =
      mode.freeze_genes || mode.uniform ? inherited : mutate_genes(inherited, draws);
  // Random design draws with equal weights and default steps; the child still carries `genes`.
  const models::DesignerGenes uniform_genes = [&mode] {
    models::DesignerGenes g = default_designer_genes();
    for (const OperatorEntry& e : kOperators)
      if (!e.extended || mode.extended_recipe) g[std::string("p.") + e.name] = 1.0;
    return g;
  }();
  Context ctx{parent, mate, mode.uniform ? uniform_genes : genes, limits, input, std::move(shapes), draws,
              mode.extended_recipe};

  std::vector<const OperatorEntry*> open;
  for (const OperatorEntry& e : kOperators) {
    if (applicable(e.name, ctx)) open.push_back(&e);
  }
  for (int attempt = 0; attempt < kMaxAttempts && !open.empty(); ++attempt) {
    double total = 0.0;
    for (const OperatorEntry* e : open) total += std::max(ctx.gene(std::string("p.") + e->name), 0.0);
    double target = draws.uniform() * total;
    std::size_t chosen = open.size() - 1;
    for (std::size_t i = 0; i < open.size(); ++i) {
      target -= std::max(ctx.gene(std::string("p.") + open[i]->name), 0.0);
      if (target < 0.0) {
        chosen = i;
        break;
      }
    }
    const OperatorEntry& op = *open[chosen];
    std::optional<Candidate> candidate;
    try {
      candidate = op.apply(ctx);
    } catch (const models::GenomeError&) {
      candidate.reset();  // a structurally impossible edit (e.g. a kernel larger than its input)
    }
    if (candidate) {
      // A seed may train longer than the limits allow: every child comes back within them.
      int& epochs_of_child = candidate->genome.recipe.epochs;
      epochs_of_child = std::clamp(epochs_of_child, 1, std::max(1, limits.max_epochs));
      if (!limit_violation(candidate->genome, limits, input))
        return finish(std::move(*candidate), op.name, genes, mode.freeze_genes || mode.uniform ? nullptr : mate);
    }
    open.erase(open.begin() + static_cast<std::ptrdiff_t>(chosen));
  }
  // The learning-rate step always applies; it fails only when the parent itself breaks the limits.
  Candidate fallback = *learning_rate(ctx);
  fallback.genome.recipe.epochs = std::clamp(fallback.genome.recipe.epochs, 1, std::max(1, limits.max_epochs));
  if (const auto why = limit_violation(fallback.genome, limits, input)) {
    throw std::invalid_argument("design_child: no operator gives a child within the design limits, because the parent "
                                "breaks them: " + *why + "; loosen the limits or start from a smaller genome");
  }
  return finish(std::move(fallback), "lr", genes, mode.freeze_genes || mode.uniform ? nullptr : mate);
}

namespace {

struct Signature {
  Block::Kind kind;
  int width;
  bool operator==(const Signature&) const = default;
};

Signature signature_of(const Block& b) {
  switch (b.kind) {
    case Block::Kind::Conv: return {b.kind, b.channels};
    case Block::Kind::Dense: return {b.kind, b.units};
    case Block::Kind::Pool: return {b.kind, b.size};
    case Block::Kind::Residual: return {b.kind, b.kernel};
    case Block::Kind::Activation: return {b.kind, static_cast<int>(b.activation)};
    case Block::Kind::Dropout:
    case Block::Kind::BatchNorm: return {b.kind, 0};
  }
  return {b.kind, 0};
}


}  // namespace

std::uint64_t design_hash(const models::Genome& genome) {
  models::Genome design = genome;
  design.designer.clear();
  const std::string text = models::to_yaml(design);
  return kernels::fnv1a64(text.data(), text.size(), kernels::kFnv1aOffset);
}

double population_diversity(const std::vector<models::Genome>& genomes) {
  if (genomes.size() < 2) return 0.0;
  std::vector<std::vector<Signature>> signatures;
  for (const Genome& g : genomes) {
    std::vector<Signature> s;
    for (const Block& b : g.blocks) s.push_back(signature_of(b));
    signatures.push_back(std::move(s));
  }
  double sum = 0.0;
  std::size_t pairs = 0;
  for (std::size_t i = 0; i < genomes.size(); ++i) {
    for (std::size_t j = i + 1; j < genomes.size(); ++j) {
      const models::Recipe& a = genomes[i].recipe;
      const models::Recipe& b = genomes[j].recipe;
      sum += static_cast<double>(models::edit_distance(signatures[i], signatures[j])) +
             std::abs(std::log10(static_cast<double>(a.learning_rate) / static_cast<double>(b.learning_rate))) +
             std::abs(a.epochs - b.epochs) / 5.0;
      ++pairs;
    }
  }
  return sum / static_cast<double>(pairs);
}

}  // namespace rsi::scheduler
