// Shift-and-flip augmentation of one image, shared by the host (models::augment_batch, the CPU
// side of kernels::augment_rows) and the GPU kernel, so both produce the same pixels bit for bit.
// An image's draws come from one Philox block at its draw index: dx and dy uniform in
// [-shift, shift], a flip with probability 1/2 when enabled.
#pragma once

#include <cstdint>

#include "rsi/kernels/rng.h"

namespace rsi::kernels {

struct ShiftFlip {
  int dx = 0, dy = 0;
  bool flip = false;
};

RSI_HOST_DEVICE inline ShiftFlip draw_shift_flip(const CounterRng& rng, std::uint64_t draw, int shift, bool flip) {
  const auto words = rng.block(draw);
  const auto span = static_cast<std::uint64_t>(2 * std::int64_t{shift} + 1);
  ShiftFlip t;
  t.dx = static_cast<int>((std::uint64_t{words[0]} * span) >> 32) - shift;
  t.dy = static_cast<int>((std::uint64_t{words[1]} * span) >> 32) - shift;
  t.flip = flip && (words[2] >> 31) != 0;
  return t;
}

// target(y, x) = flipped source(y - dy, x - dx): the flip happens first, then the content moves dx to
// the right and dy down; pixels shifted in from outside are zero.
RSI_HOST_DEVICE inline float shifted_pixel(const float* source, int rows, int cols, const ShiftFlip& t, int y, int x) {
  const int source_y = y - t.dy, unflipped_x = x - t.dx;
  if (source_y < 0 || source_y >= rows || unflipped_x < 0 || unflipped_x >= cols) return 0.0f;
  return source[static_cast<std::int64_t>(source_y) * cols + (t.flip ? cols - 1 - unflipped_x : unflipped_x)];
}

}  // namespace rsi::kernels
