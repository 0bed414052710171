// Weight inheritance: a child network starts from its parent's weights where the design operator
// allows. A Morphism says, block by block, where each child block's weights come from; the
// function-preserving cases (Net2Net widen, identity deepen, zero-padded kernel growth, unchanged
// copies) give a child whose outputs equal the parent's before training.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rsi/models/network.h"

namespace rsi::models {

struct BlockOrigin {
  enum class Kind {
    Fresh,     // initialised from scratch (the network's own initialisation is kept)
    Copy,      // same shape as parent_block: weights, biases and norm statistics copied
    Widened,   // parent_block with more units/channels: Net2Net (see Morphism::unit_map)
    Consumer,  // the block right after a widened one: its inputs follow the widening (Net2Net)
    Identity,  // a newly inserted block initialised to compute the identity on its input
    GrownKernel,  // parent_block's conv kernel zero-padded to this block's larger kernel
  };
  Kind kind = Kind::Fresh;
  int parent_block = -1;
  bool operator==(const BlockOrigin&) const = default;
};

struct Morphism {
  std::vector<BlockOrigin> blocks;  // one per child block
  // Widened block: child unit j copies parent unit unit_map[j] (unit_map[j] = j for j < old width).
  std::vector<int> unit_map;
  bool function_preserving = false;  // what the operator promises; inherit_weights checks it can hold
  bool operator==(const Morphism&) const = default;
};

// A morphism that inherits nothing (every block fresh).
Morphism fresh_morphism(const Genome& child);
// A morphism for an unchanged architecture (recipe-only mutations): every block copied.
Morphism copy_morphism(const Genome& genome);

struct InheritReport {
  std::int64_t inherited = 0;  // parameters taken from the parent (copied or transformed)
  std::int64_t fresh = 0;      // parameters left at their fresh initialisation
  bool function_preserving = false;
};

// `child` must already be initialised (fresh weights); inherit_weights overwrites the parameters and
// batch-norm statistics the morphism says come from `parent`. Throws std::invalid_argument naming
// the block when a morphism does not fit the two networks (shape mismatch).
InheritReport inherit_weights(const Network& parent, Network& child, const Morphism& morphism);

}  // namespace rsi::models
