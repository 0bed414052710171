// Weight inheritance (models/morphism.h): copies, Net2Net widening (Chen et al., "Net2Net:
// Accelerating Learning via Knowledge Transfer", ICLR 2016), identity deepening and zero-padded
// kernel growth from a parent network into a freshly initialised child.
//
// Layout reminders (see network.cpp): dense weight [out][in], conv weight [K][C][k][k], batch-norm
// state [mean(C), var(C)], spatial activations CNHW so a flattened feature is c*H*W + y*W + x.
// Dense and conv inputs therefore share one shape, [out][units of the widened block][group], with
// group = H*W (dense after a flatten), 1 (dense after dense) or k*k (conv): one rule maps both.
#include "rsi/models/morphism.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace rsi::models {

namespace {

using Kind = BlockOrigin::Kind;

const char* origin_name(Kind kind) {
  switch (kind) {
    case Kind::Fresh: return "fresh";
    case Kind::Copy: return "copy";
    case Kind::Widened: return "widened";
    case Kind::Consumer: return "consumer";
    case Kind::Identity: return "identity";
    case Kind::GrownKernel: return "grown-kernel";
  }
  return "unknown";
}

// The parameter and state segments of one genome block, in build order. `part` strips the
// "block<I>." prefix, so a child block and its parent block compare part by part.
struct BlockSegments {
  std::vector<const ParamSegment*> params, states;
};

std::string part_of(const ParamSegment& segment) {
  return segment.name.substr(segment.name.find('.') + 1);
}

std::size_t block_index_of(const std::string& name) {
  // "block<I>.<kind>.<part>"
  const std::size_t dot = name.find('.');
  if (name.rfind("block", 0) != 0 || dot == std::string::npos || dot <= 5) {
    throw std::logic_error("inherit_weights: unexpected segment name '" + name + "'");
  }
  return static_cast<std::size_t>(std::stoul(name.substr(5, dot - 5)));
}

std::vector<BlockSegments> segments_by_block(const Network& net) {
  std::vector<BlockSegments> blocks(net.genome().blocks.size());
  for (const ParamSegment& s : net.segments()) blocks.at(block_index_of(s.name)).params.push_back(&s);
  for (const ParamSegment& s : net.state_segments()) blocks.at(block_index_of(s.name)).states.push_back(&s);
  return blocks;
}

const ParamSegment* find_part(const std::vector<const ParamSegment*>& segments, const std::string& part) {
  for (const ParamSegment* s : segments) {
    if (part_of(*s) == part) return s;
  }
  return nullptr;
}

std::int64_t count_params(const BlockSegments& segments) {
  std::int64_t n = 0;
  for (const ParamSegment* s : segments.params) n += s->size;
  return n;
}

// The width a Net2Net widening changes: dense units or conv channels.
int width_of(const Block& block) {
  if (block.kind == Block::Kind::Dense) return block.units;
  if (block.kind == Block::Kind::Conv) return block.channels;
  return 0;
}

class Inheritor {
 public:
  Inheritor(const Network& parent, Network& child, const Morphism& morphism)
      : parent_(parent),
        child_(child),
        morphism_(morphism),
        parent_segments_(segments_by_block(parent)),
        child_segments_(segments_by_block(child)) {}

  InheritReport run() {
    const auto& child_blocks = child_.genome().blocks;
    if (morphism_.blocks.size() != child_blocks.size()) {
      throw std::invalid_argument("inherit_weights: the morphism describes " + std::to_string(morphism_.blocks.size()) +
                                  " blocks but the child genome has " + std::to_string(child_blocks.size()));
    }
    InheritReport report;
    report.function_preserving = morphism_.function_preserving;
    for (std::size_t i = 0; i < child_blocks.size(); ++i) {
      const BlockOrigin& origin = morphism_.blocks[i];
      const std::int64_t params = count_params(child_segments_[i]);
      index_ = i;
      if (origin.kind != Kind::Fresh && origin.kind != Kind::Identity) check_parent_block(origin);
      switch (origin.kind) {
        case Kind::Fresh:
          end_widening_at_weights();
          report.function_preserving = false;
          break;
        case Kind::Copy: copy(origin.parent_block); break;
        case Kind::Widened: widen(origin.parent_block); break;
        case Kind::Consumer: consume(origin.parent_block); break;
        case Kind::Identity:
          if (!identity()) report.function_preserving = false;
          break;
        case Kind::GrownKernel: grow_kernel(origin.parent_block); break;
      }
      // Identity blocks compute the identity but take nothing from the parent: they count as fresh.
      (origin.kind == Kind::Fresh || origin.kind == Kind::Identity ? report.fresh : report.inherited) += params;
    }
    if (widened_ >= 0) {
      fail("the widened block " + std::to_string(widened_) +
           " has no Consumer block after it (the next dense or conv block must follow the widening)");
    }
    return report;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    const auto& blocks = child_.genome().blocks;
    const Block& block = blocks.at(index_);
    throw std::invalid_argument("inherit_weights: child block " + std::to_string(index_) + " (" +
                                block_kind_name(block.kind) + ", origin " +
                                origin_name(morphism_.blocks.at(index_).kind) + "): " + what);
  }

  void check_parent_block(const BlockOrigin& origin) const {
    const auto& parent_blocks = parent_.genome().blocks;
    if (origin.parent_block < 0 || origin.parent_block >= static_cast<int>(parent_blocks.size())) {
      fail("parent_block " + std::to_string(origin.parent_block) + " is not a block of the parent (it has " +
           std::to_string(parent_blocks.size()) + ")");
    }
    const Block& mine = child_.genome().blocks[index_];
    const Block& theirs = parent_blocks[static_cast<std::size_t>(origin.parent_block)];
    if (mine.kind != theirs.kind) {
      fail(std::string("its parent block ") + std::to_string(origin.parent_block) + " is a " +
           block_kind_name(theirs.kind) + " block");
    }
  }

  const float* parent_data(const ParamSegment& s) const { return parent_.parameters().data() + s.offset; }
  float* child_data(const ParamSegment& s) { return child_.parameters().data() + s.offset; }
  const float* parent_state(const ParamSegment& s) const { return parent_.state().data() + s.offset; }
  float* child_state(const ParamSegment& s) { return child_.state().data() + s.offset; }

  // A dense, conv or residual block after a widening that is not its Consumer cannot take the
  // widened input: that is a morphism error, unless the block is fresh (then nothing is inherited).
  void end_widening_at_weights() {
    const Block::Kind kind = child_.genome().blocks[index_].kind;
    if (kind == Block::Kind::Dense || kind == Block::Kind::Conv || kind == Block::Kind::Residual) widened_ = -1;
  }

  void copy(int parent_block) {
    const BlockSegments& from = parent_segments_[static_cast<std::size_t>(parent_block)];
    BlockSegments& to = child_segments_[index_];
    const Block& mine = child_.genome().blocks[index_];
    if (mine != parent_.genome().blocks[static_cast<std::size_t>(parent_block)]) {
      fail("a copied block must equal its parent block " + std::to_string(parent_block) + " field by field");
    }
    const Block::Kind kind = mine.kind;
    if (widened_ >= 0 && kind == Block::Kind::BatchNorm) {
      replicate_norm(from, to);
      return;
    }
    if (widened_ >= 0 && (kind == Block::Kind::Dense || kind == Block::Kind::Conv || kind == Block::Kind::Residual)) {
      fail("it follows the widened block " + std::to_string(widened_) +
           " and takes its widened input, so it must be the Consumer (a residual block cannot consume a widening)");
    }
    copy_segments(from.params, to.params, false, parent_block);
    copy_segments(from.states, to.states, true, parent_block);
  }

  void copy_segments(const std::vector<const ParamSegment*>& from, const std::vector<const ParamSegment*>& to,
                     bool state, int parent_block) {
    if (from.size() != to.size()) {
      fail("parent block " + std::to_string(parent_block) + " has " + std::to_string(from.size()) +
           (state ? " state" : " parameter") + " segments, the child block " + std::to_string(to.size()));
    }
    for (std::size_t s = 0; s < from.size(); ++s) {
      if (part_of(*from[s]) != part_of(*to[s]) || from[s]->size != to[s]->size) {
        fail("shape mismatch with parent block " + std::to_string(parent_block) + ": " + part_of(*to[s]) + " has " +
             std::to_string(to[s]->size) + " values, the parent's " + part_of(*from[s]) + " " +
             std::to_string(from[s]->size));
      }
      if (state)
        std::copy_n(parent_state(*from[s]), from[s]->size, child_state(*to[s]));
      else
        std::copy_n(parent_data(*from[s]), from[s]->size, child_data(*to[s]));
    }
  }

  const ParamSegment& need(const std::vector<const ParamSegment*>& segments, const std::string& part,
                           const char* whose) const {
    const ParamSegment* s = find_part(segments, part);
    if (!s) fail(std::string(whose) + " block has no segment '" + part + "'");
    return *s;
  }

  // Child unit j takes row unit_map[j] of a parent tensor laid out [width][row].
  void replicate_rows(const ParamSegment& from, const ParamSegment& to, std::int64_t parent_width,
                      const float* source, float* target) const {
    const auto& map = morphism_.unit_map;
    const auto child_width = static_cast<std::int64_t>(map.size());
    if (from.size % parent_width != 0 || to.size % child_width != 0 ||
        from.size / parent_width != to.size / child_width) {
      fail(part_of(to) + ": " + std::to_string(to.size) + " values for " + std::to_string(child_width) +
           " units do not replicate the parent's " + std::to_string(from.size) + " values for " +
           std::to_string(parent_width) + " units");
    }
    const std::int64_t row = from.size / parent_width;
    for (std::int64_t j = 0; j < child_width; ++j) {
      std::copy_n(source + map[static_cast<std::size_t>(j)] * row, row, target + j * row);
    }
  }

  void widen(int parent_block) {
    if (widened_ >= 0 || widenings_ > 0) fail("a morphism can widen only one block (it has one unit_map)");
    const Block& mine = child_.genome().blocks[index_];
    const Block& theirs = parent_.genome().blocks[static_cast<std::size_t>(parent_block)];
    const int parent_width = width_of(theirs), child_width = width_of(mine);
    if (parent_width <= 0) fail("only dense and conv blocks can be widened");
    if (mine.kernel != theirs.kernel || mine.stride != theirs.stride) {
      fail("a widened conv keeps its parent's kernel and stride");
    }
    const auto& map = morphism_.unit_map;
    if (static_cast<int>(map.size()) != child_width || child_width < parent_width) {
      fail("unit_map has " + std::to_string(map.size()) + " entries; widening " + std::to_string(parent_width) +
           " to " + std::to_string(child_width) + " units needs one per child unit");
    }
    counts_.assign(static_cast<std::size_t>(parent_width), 0);
    for (int m : map) {
      if (m < 0 || m >= parent_width) {
        fail("unit_map entry " + std::to_string(m) + " is not a unit of the parent block (0.." +
             std::to_string(parent_width - 1) + ")");
      }
      ++counts_[static_cast<std::size_t>(m)];
    }
    for (int m = 0; m < parent_width; ++m) {
      if (counts_[static_cast<std::size_t>(m)] == 0) fail("unit_map drops parent unit " + std::to_string(m));
    }
    const BlockSegments& from = parent_segments_[static_cast<std::size_t>(parent_block)];
    const BlockSegments& to = child_segments_[index_];
    for (const ParamSegment* target : to.params) {
      const ParamSegment& source = need(from.params, part_of(*target), "the parent");
      replicate_rows(source, *target, parent_width, parent_data(source), child_data(*target));
    }
    widened_ = static_cast<int>(index_);
    widened_width_ = parent_width;
    ++widenings_;
  }

  // A batch norm between the widened block and its consumer: its per-channel parameters and running
  // statistics follow the unit map, so a replicated channel is normalised exactly like its source.
  void replicate_norm(const BlockSegments& from, const BlockSegments& to) {
    for (const ParamSegment* target : to.params) {
      const ParamSegment& source = need(from.params, part_of(*target), "the parent");
      replicate_rows(source, *target, widened_width_, parent_data(source), child_data(*target));
    }
    for (const ParamSegment* target : to.states) {
      const ParamSegment& source = need(from.states, part_of(*target), "the parent");
      // [mean(C), var(C)]: two halves, each replicated.
      const std::int64_t half_from = source.size / 2, half_to = target->size / 2;
      ParamSegment half_source = source, half_target = *target;
      half_source.size = half_from;
      half_target.size = half_to;
      for (int h = 0; h < 2; ++h) {
        replicate_rows(half_source, half_target, widened_width_, parent_state(source) + h * half_from,
                       child_state(*target) + h * half_to);
      }
    }
  }

  void consume(int parent_block) {
    if (widened_ < 0) fail("a Consumer must follow a Widened block (with only activation, dropout, batchnorm or pool blocks between)");
    const Block& mine = child_.genome().blocks[index_];
    const Block& theirs = parent_.genome().blocks[static_cast<std::size_t>(parent_block)];
    if (width_of(mine) <= 0) fail("only a dense or conv block can consume a widening");
    if (mine != theirs) fail("a Consumer keeps its parent block's fields; only its inputs change");
    const BlockSegments& from = parent_segments_[static_cast<std::size_t>(parent_block)];
    const BlockSegments& to = child_segments_[index_];
    const char* kind = mine.kind == Block::Kind::Dense ? "dense" : "conv";
    const ParamSegment& w_from = need(from.params, std::string(kind) + ".weight", "the parent");
    const ParamSegment& w_to = need(to.params, std::string(kind) + ".weight", "the child");
    const ParamSegment& b_from = need(from.params, std::string(kind) + ".bias", "the parent");
    const ParamSegment& b_to = need(to.params, std::string(kind) + ".bias", "the child");

    // Weights [out][W][group] → [out][W'][group].
    const auto& map = morphism_.unit_map;
    const std::int64_t outputs = width_of(mine), W = widened_width_, W2 = static_cast<std::int64_t>(map.size());
    const std::int64_t in_from = w_from.size / outputs, in_to = w_to.size / outputs;
    if (in_from % W != 0 || in_to != in_from / W * W2) {
      fail("its parent takes " + std::to_string(in_from) + " inputs per output from " + std::to_string(W) +
           " widened units, but it takes " + std::to_string(in_to) + " from " + std::to_string(W2));
    }
    const std::int64_t group = in_from / W;
    const float* source = parent_data(w_from);
    float* target = child_data(w_to);
    for (std::int64_t o = 0; o < outputs; ++o) {
      for (std::int64_t j = 0; j < W2; ++j) {
        const int m = map[static_cast<std::size_t>(j)];
        const float share = 1.0f / static_cast<float>(counts_[static_cast<std::size_t>(m)]);
        const float* src = source + o * in_from + m * group;
        float* dst = target + o * in_to + j * group;
        for (std::int64_t g = 0; g < group; ++g) dst[g] = src[g] * share;
      }
    }
    if (b_from.size != b_to.size) fail("bias size differs from the parent's");
    std::copy_n(parent_data(b_from), b_from.size, child_data(b_to));
    widened_ = -1;
  }

  // Returns whether the block really is the identity on its input.
  bool identity() {
    const Block& block = child_.genome().blocks[index_];
    const BlockSegments& segments = child_segments_[index_];
    end_widening_at_weights();
    switch (block.kind) {
      case Block::Kind::Dense: {
        const ParamSegment& w = need(segments.params, "dense.weight", "the child");
        const ParamSegment& b = need(segments.params, "dense.bias", "the child");
        const std::int64_t units = block.units;
        if (w.size != units * units) {
          fail("an identity dense block needs as many inputs as units (" + std::to_string(units) + "), it has " +
               std::to_string(w.size / units));
        }
        float* W = child_data(w);
        std::fill_n(W, w.size, 0.0f);
        for (std::int64_t u = 0; u < units; ++u) W[u * units + u] = 1.0f;
        std::fill_n(child_data(b), b.size, 0.0f);
        return true;
      }
      case Block::Kind::Conv: {
        const ParamSegment& w = need(segments.params, "conv.weight", "the child");
        const ParamSegment& b = need(segments.params, "conv.bias", "the child");
        const std::int64_t K = block.channels, k = block.kernel;
        if (w.size != K * K * k * k || block.stride != 1) {
          fail("an identity conv block needs stride 1 and as many input channels as output channels (" +
               std::to_string(K) + ")");
        }
        float* W = child_data(w);
        std::fill_n(W, w.size, 0.0f);
        for (std::int64_t c = 0; c < K; ++c) W[((c * K + c) * k + k / 2) * k + k / 2] = 1.0f;
        std::fill_n(child_data(b), b.size, 0.0f);
        return true;
      }
      case Block::Kind::Residual: {
        // Fresh init has bn2.gamma = 0 (and beta = 0): the branch adds zero.
        const ParamSegment& gamma = need(segments.params, "residual.bn2.gamma", "the child");
        const ParamSegment& beta = need(segments.params, "residual.bn2.beta", "the child");
        const float* g = child_data(gamma);
        const float* be = child_data(beta);
        return std::all_of(g, g + gamma.size, [](float v) { return v == 0.0f; }) &&
               std::all_of(be, be + beta.size, [](float v) { return v == 0.0f; });
      }
      case Block::Kind::Dropout: return true;  // the identity in evaluation mode
      case Block::Kind::Activation:
        // Only ReLU on non-negative inputs (after another ReLU) is the identity; the design
        // operator promises the placement, here only the kind can be checked.
        return block.activation == kernels::Activation::ReLU;
      case Block::Kind::BatchNorm:  // batch statistics in training mode: never exactly the identity
      case Block::Kind::Pool: return false;
    }
    return false;
  }

  void grow_kernel(int parent_block) {
    end_widening_at_weights();
    const Block& mine = child_.genome().blocks[index_];
    const Block& theirs = parent_.genome().blocks[static_cast<std::size_t>(parent_block)];
    if (mine.kind != Block::Kind::Conv) fail("only a conv kernel can grow");
    if (mine.channels != theirs.channels || mine.stride != theirs.stride || mine.kernel < theirs.kernel) {
      fail("a grown kernel keeps its parent's channels and stride and does not shrink (parent kernel " +
           std::to_string(theirs.kernel) + ")");
    }
    const BlockSegments& from = parent_segments_[static_cast<std::size_t>(parent_block)];
    const BlockSegments& to = child_segments_[index_];
    const ParamSegment& w_from = need(from.params, "conv.weight", "the parent");
    const ParamSegment& w_to = need(to.params, "conv.weight", "the child");
    const ParamSegment& b_from = need(from.params, "conv.bias", "the parent");
    const ParamSegment& b_to = need(to.params, "conv.bias", "the child");
    const std::int64_t k = theirs.kernel, k2 = mine.kernel, K = mine.channels;
    const std::int64_t C = w_from.size / (K * k * k);
    if (w_to.size != K * C * k2 * k2) fail("input channels differ from the parent's");
    const std::int64_t offset = (k2 - k) / 2;
    const float* source = parent_data(w_from);
    float* target = child_data(w_to);
    std::fill_n(target, w_to.size, 0.0f);
    for (std::int64_t plane = 0; plane < K * C; ++plane) {
      for (std::int64_t y = 0; y < k; ++y) {
        std::copy_n(source + (plane * k + y) * k, k, target + (plane * k2 + y + offset) * k2 + offset);
      }
    }
    if (b_from.size != b_to.size) fail("bias size differs from the parent's");
    std::copy_n(parent_data(b_from), b_from.size, child_data(b_to));
  }

  const Network& parent_;
  Network& child_;
  const Morphism& morphism_;
  std::vector<BlockSegments> parent_segments_, child_segments_;
  std::size_t index_ = 0;
  int widened_ = -1;        // child index of the widening not yet consumed
  int widened_width_ = 0;   // its parent width
  int widenings_ = 0;
  std::vector<int> counts_;  // replication count of each parent unit
};

}  // namespace

Morphism fresh_morphism(const Genome& child) {
  Morphism m;
  m.blocks.assign(child.blocks.size(), BlockOrigin{});
  m.function_preserving = false;
  return m;
}

Morphism copy_morphism(const Genome& genome) {
  Morphism m;
  for (std::size_t i = 0; i < genome.blocks.size(); ++i) m.blocks.push_back({Kind::Copy, static_cast<int>(i)});
  m.function_preserving = true;
  return m;
}

InheritReport inherit_weights(const Network& parent, Network& child, const Morphism& morphism) {
  if (parent.input().channels != child.input().channels || parent.input().height != child.input().height ||
      parent.input().width != child.input().width || parent.input().classes != child.input().classes) {
    throw std::invalid_argument("inherit_weights: parent and child are built for different inputs");
  }
  return Inheritor(parent, child, morphism).run();
}

}  // namespace rsi::models
