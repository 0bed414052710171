// Test helpers shared by the unit tests: genome block builders and a network with non-trivial
// weights, norm parameters and running statistics.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "rsi/kernels/rng.h"
#include "rsi/models/genome.h"
#include "rsi/models/network.h"

namespace rsi::test_blocks {

using models::Block;

inline Block conv(int c, int k = 3, int s = 1) {
  Block b;
  b.kind = Block::Kind::Conv, b.channels = c, b.kernel = k, b.stride = s;
  return b;
}
inline Block dense(int u) {
  Block b;
  b.kind = Block::Kind::Dense, b.units = u;
  return b;
}
inline Block act(kernels::Activation a = kernels::Activation::ReLU) {
  Block b;
  b.kind = Block::Kind::Activation, b.activation = a;
  return b;
}
inline Block relu() { return act(kernels::Activation::ReLU); }
inline Block pool(Block::PoolKind kind = Block::PoolKind::Max) {
  Block b;
  b.kind = Block::Kind::Pool, b.pool_kind = kind, b.size = 2, b.stride = 2;
  return b;
}
inline Block residual(int k = 3) {
  Block b;
  b.kind = Block::Kind::Residual, b.kernel = k;
  return b;
}
inline Block batchnorm() {
  Block b;
  b.kind = Block::Kind::BatchNorm;
  return b;
}
inline Block dropout(float rate) {
  Block b;
  b.kind = Block::Kind::Dropout, b.rate = rate;
  return b;
}
inline models::Genome genome_of(std::vector<Block> blocks) {
  models::Genome g;
  g.blocks = std::move(blocks);
  return g;
}

// Every block kind on an 8×8 input with 3 classes (models::InputSpec{1, 8, 8, 3}).
inline models::Genome every_block_genome() {
  return genome_of({conv(4), batchnorm(), act(kernels::Activation::GELU), residual(3), pool(Block::PoolKind::Max),
                    conv(5, 1), act(kernels::Activation::Tanh), pool(Block::PoolKind::Avg), dense(7), batchnorm(),
                    act(kernels::Activation::ReLU), dense(3)});
}

// Fresh weights, then non-trivial norm parameters (residual bn2.gamma too, so residual branches
// contribute) and running statistics, so copies and replications are really exercised.
inline models::Network random_network(const models::Genome& genome, const models::InputSpec& input,
                                      std::uint64_t seed) {
  models::Network net(genome, input);
  net.initialize(seed, 7);
  const kernels::CounterRng rng(seed, 99);
  std::uint64_t i = 0;
  for (const auto& s : net.segments()) {
    const bool gamma = s.name.ends_with(".gamma"), beta = s.name.ends_with(".beta");
    if (!gamma && !beta) continue;
    for (std::int64_t j = 0; j < s.size; ++j)
      net.parameters()[s.offset + j] = gamma ? 0.5f + rng.uniform(i++) : rng.uniform(i++) - 0.5f;
  }
  for (const auto& s : net.state_segments()) {
    const std::int64_t C = s.size / 2;
    for (std::int64_t c = 0; c < C; ++c) {
      net.state()[s.offset + c] = 0.4f * (rng.uniform(i++) - 0.5f);
      net.state()[s.offset + C + c] = 0.5f + rng.uniform(i++);
    }
  }
  return net;
}

}  // namespace rsi::test_blocks
