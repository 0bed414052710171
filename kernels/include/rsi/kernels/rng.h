// Counter-based random numbers (Philox4x32-10, Salmon et al., SC'11). A draw is a pure function of
// (key, counter): the same seed, model id, step and index give the same number on every rank and
// every run, whatever the thread schedule — the basis of rsi's determinism contract.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

// The generator is shared with the CUDA kernels (dropout masks on the GPU equal the CPU's).
#if defined(__CUDACC__)
#define RSI_HOST_DEVICE __host__ __device__
#else
#define RSI_HOST_DEVICE
#endif

namespace rsi::kernels {

class Philox {
 public:
  using Block = std::array<std::uint32_t, 4>;

  RSI_HOST_DEVICE static Block generate(std::uint64_t key, Block counter) {
    std::uint32_t k0 = static_cast<std::uint32_t>(key);
    std::uint32_t k1 = static_cast<std::uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
      const std::uint64_t p0 = std::uint64_t{0xD2511F53u} * counter[0];
      const std::uint64_t p1 = std::uint64_t{0xCD9E8D57u} * counter[2];
      counter = {static_cast<std::uint32_t>(p1 >> 32) ^ counter[1] ^ k0, static_cast<std::uint32_t>(p1),
                 static_cast<std::uint32_t>(p0 >> 32) ^ counter[3] ^ k1, static_cast<std::uint32_t>(p0)};
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    return counter;
  }
};

// A stream of draws for one purpose: key = seed, counter = (stream, step, index, word).
// `stream` separates uses (weight init, shuffling, dropout, augmentation, ...) and models.
class CounterRng {
 public:
  RSI_HOST_DEVICE CounterRng(std::uint64_t seed, std::uint64_t stream, std::uint32_t step = 0)
      : seed_(seed), stream_(stream), step_(step) {}

  // Four independent 32-bit words for `index`.
  RSI_HOST_DEVICE Philox::Block block(std::uint64_t index) const {
    return Philox::generate(seed_, {static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32),
                                    step_ ^ static_cast<std::uint32_t>(index >> 32), static_cast<std::uint32_t>(index)});
  }
  RSI_HOST_DEVICE std::uint32_t u32(std::uint64_t index) const { return block(index)[0]; }
  // Uniform in [0, 1) with 24 random bits.
  RSI_HOST_DEVICE float uniform(std::uint64_t index) const { return static_cast<float>(u32(index) >> 8) * (1.0f / 16777216.0f); }
  // Uniform integer in [0, n).
  std::uint32_t below(std::uint64_t index, std::uint32_t n) const {
    return static_cast<std::uint32_t>((std::uint64_t{u32(index)} * n) >> 32);
  }
  // Standard normal (Box-Muller on two words of the block).
  float normal(std::uint64_t index) const {
    const auto b = block(index);
    const double u1 = (static_cast<double>(b[0]) + 1.0) * (1.0 / 4294967297.0);
    const double u2 = static_cast<double>(b[1]) * (1.0 / 4294967296.0);
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint32_t step_;
};

// Stream ids: a use in the high bits, a model id in the low 40.
enum class RngUse : std::uint64_t { Init = 1, Shuffle = 2, Dropout = 3, Augment = 4, Split = 5, Design = 6 };
inline std::uint64_t rng_stream(RngUse use, std::uint64_t model_id) {
  return (static_cast<std::uint64_t>(use) << 40) ^ (model_id & ((std::uint64_t{1} << 40) - 1));
}

}  // namespace rsi::kernels
