// Fletcher32 exactly as HDF5's Fletcher32 filter (H5Z_FILTER_FLETCHER32) computes it, so that chunks
// written directly (H5Dwrite_chunk) are checked by the standard filter on read: h5dump, h5py and
// reader.cpp see ordinary Fletcher32 chunks. HDF5's own loop sums one 16-bit word at a time; this one
// sums 16 lanes at once and folds the lanes together per block, about 10x faster.
#pragma once

#include <cstddef>
#include <cstdint>

namespace rsi::checkpoints::detail {

// HDF5's H5_checksum_fletcher32: big-endian 16-bit words (an odd last byte is the high byte of a
// word), both sums reduced modulo 65535 but kept in 1..65535 once any word was non-zero.
std::uint32_t fletcher32(const void* data, std::size_t size);

// The plain one-word-at-a-time loop of HDF5 1.10 (H5checksum.c), the reference the fast one is
// tested against.
std::uint32_t fletcher32_reference(const void* data, std::size_t size);

// Copies `size` bytes from `src` to `dst` and returns fletcher32(src, size), in one pass over
// cache-sized blocks.
std::uint32_t copy_fletcher32(void* dst, const void* src, std::size_t size);

}  // namespace rsi::checkpoints::detail
