// Fletcher32 as HDF5's filter computes it (see fletcher32.h).
//
// HDF5 adds words w_1..w_n into sum1 and each running sum1 into sum2, folding both modulo 65535
// ((x & 0xffff) + (x >> 16)) every 360 words. A fold keeps x's residue modulo 65535 and never turns
// a non-zero x into zero, so the result is fixed by the exact sums S1 = sum w_i and
// S2 = sum (n - i + 1) w_i: 0 when all words are zero, otherwise the residue with 0 written as
// 0xffff. That lets the fast version sum in any grouping: 16 lanes of 32-bit sums, folded per block.
#include "fletcher32.h"

#include <bit>
#include <cstring>

namespace rsi::checkpoints::detail {

namespace {

constexpr std::uint64_t kMod = 65535;
// A block is kGroups groups of kLanes words. Per lane, `a` grows by at most 65535 per group and `b`
// by `a`, so b <= 65535 * G (G + 1) / 2, which fits 32 bits for G <= 361.
constexpr std::size_t kLanes = 16;
constexpr std::size_t kGroups = 256;
constexpr std::size_t kBlockWords = kLanes * kGroups;
constexpr std::size_t kBlockBytes = 2 * kBlockWords;  // 8 KiB: stays in L1 between copy and sum

std::uint32_t residue16(std::uint64_t x) {
  const auto r = static_cast<std::uint32_t>(x % kMod);
  return r == 0 ? 0xffffu : r;
}

// GCC/Clang vector types: the compiler maps them to SSE2, AVX2 or AVX-512 as the target allows.
using Lanes16 = std::uint16_t __attribute__((vector_size(2 * kLanes)));
using Lanes32 = std::uint32_t __attribute__((vector_size(4 * kLanes)));

struct Sums {
  std::uint64_t s1 = 0, s2 = 0;  // modulo 65535
  bool nonzero = false;

  // One whole block: lane j of group k is word k*kLanes + j.
  void block(const unsigned char* p) {
    Lanes32 a = {}, b = {};
    for (std::size_t k = 0; k < kGroups; ++k) {
      Lanes16 w;
      std::memcpy(&w, p + 2 * kLanes * k, sizeof w);
      if constexpr (std::endian::native == std::endian::little) w = (w << 8) | (w >> 8);
      a += __builtin_convertvector(w, Lanes32);
      b += a;
    }
    // Word (k, j) counts kBlockWords - (k*kLanes + j) times in the block's S2: kLanes * b_j - j * a_j.
    std::uint64_t sum_a = 0, weighted = 0;
    for (std::size_t j = 0; j < kLanes; ++j) {
      sum_a += a[j];
      weighted += kLanes * std::uint64_t{b[j]} - j * std::uint64_t{a[j]};
    }
    s2 = (s2 + kBlockWords * s1 + weighted) % kMod;
    s1 = (s1 + sum_a) % kMod;
    nonzero = nonzero || sum_a != 0;
  }

  void word(std::uint32_t w) {
    s1 = (s1 + w) % kMod;
    s2 = (s2 + s1) % kMod;
    nonzero = nonzero || w != 0;
  }

  void tail(const unsigned char* p, std::size_t size) {
    for (std::size_t i = 0; i + 1 < size; i += 2) word((static_cast<std::uint32_t>(p[i]) << 8) | p[i + 1]);
    if (size % 2) word(static_cast<std::uint32_t>(p[size - 1]) << 8);
  }

  std::uint32_t result() const { return nonzero ? (residue16(s2) << 16) | residue16(s1) : 0; }
};

}  // namespace

std::uint32_t fletcher32(const void* data, std::size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  Sums sums;
  std::size_t done = 0;
  for (; done + kBlockBytes <= size; done += kBlockBytes) sums.block(p + done);
  sums.tail(p + done, size - done);
  return sums.result();
}

std::uint32_t copy_fletcher32(void* dst, const void* src, std::size_t size) {
  auto* out = static_cast<unsigned char*>(dst);
  const auto* in = static_cast<const unsigned char*>(src);
  Sums sums;
  std::size_t done = 0;
  for (; done + kBlockBytes <= size; done += kBlockBytes) {
    std::memcpy(out + done, in + done, kBlockBytes);
    sums.block(out + done);
  }
  std::memcpy(out + done, in + done, size - done);
  sums.tail(out + done, size - done);
  return sums.result();
}

std::uint32_t fletcher32_reference(const void* data, std::size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::size_t len = size / 2;
  std::uint32_t sum1 = 0, sum2 = 0;
  // 360 words is the most that cannot overflow sum2 (HDF5's comment).
  while (len) {
    std::size_t tlen = len > 360 ? 360 : len;
    len -= tlen;
    do {
      sum1 += (static_cast<std::uint32_t>(p[0]) << 8) | p[1];
      p += 2;
      sum2 += sum1;
    } while (--tlen);
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  if (size % 2) {
    sum1 += static_cast<std::uint32_t>(*p) << 8;
    sum2 += sum1;
    sum1 = (sum1 & 0xffff) + (sum1 >> 16);
    sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  }
  sum1 = (sum1 & 0xffff) + (sum1 >> 16);
  sum2 = (sum2 & 0xffff) + (sum2 >> 16);
  return (sum2 << 16) | sum1;
}

}  // namespace rsi::checkpoints::detail
