// FNV-1a 64 (Fowler-Noll-Vo, the variant that XORs before multiplying): offset basis
// 14695981039346656037 (0xcbf29ce484222325), prime 1099511628211 (0x100000001b3). Small, stable
// across platforms and releases: weight digests, manifest hashes and split fingerprints use it
// (checkpoints/FORMAT.md). One implementation, with the standard's test vectors in
// tests/unit/test_loop.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace rsi::kernels {

inline constexpr std::uint64_t kFnv1aOffset = 0xcbf29ce484222325ull;
inline constexpr std::uint64_t kFnv1aPrime = 0x100000001b3ull;
// Lineage format 1 (checkpoints/FORMAT.md) started from 1469598103934665603, the basis with its
// last digit lost; kept only to read and continue lineages written in that format.
inline constexpr std::uint64_t kFnv1aFormat1Offset = 1469598103934665603ull;

inline std::uint64_t fnv1a64(const void* data, std::size_t size, std::uint64_t hash = kFnv1aOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < size; ++i) hash = (hash ^ p[i]) * kFnv1aPrime;
  return hash;
}

// 16 lowercase hex digits.
inline std::string fnv1a_hex(std::uint64_t hash) {
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(hash));
  return out;
}

}  // namespace rsi::kernels
