// rsi::models data — the Fashion-MNIST IDX reader, deterministic splits, and augmentation. Other
// image data sets (IDX, NumPy, HDF5 files): image_files.h.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "rsi/kernels/rng.h"
#include "rsi/models/genome.h"

namespace rsi::models {

// Images as f32 in [0, 1], [count][channels][rows][cols] row-major; labels 0..classes-1.
struct Dataset {
  int channels = 1, rows = 28, cols = 28, classes = 10;
  std::vector<float> images;
  std::vector<std::int32_t> labels;
  std::int64_t size() const { return static_cast<std::int64_t>(labels.size()); }
  int pixels() const { return channels * rows * cols; }  // values per image
  const float* image(std::int64_t i) const { return images.data() + i * pixels(); }
};

struct DataError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Default location of the Debian package dataset-fashion-mnist.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// Reads an IDX image file and its label file (gzip or plain). Errors name the file and the problem
// (missing, bad magic, wrong dimensions, truncated, count mismatch between images and labels).
Dataset read_idx(const std::string& images_path, const std::string& labels_path);

// Training (60k) and official test (10k, the hidden test set) sets from `dir`. A missing directory
// names the Debian package to install.
Dataset load_fashion_mnist_train(const std::string& dir = kFashionMnistDir);
Dataset load_fashion_mnist_test(const std::string& dir = kFashionMnistDir);
// Cheap check that `dir` holds the four files with their IDX headers (throws the DataError that
// loading would): what `rsi run` does on rank 0 before the job starts.
void check_fashion_mnist(const std::string& dir = kFashionMnistDir);

// Sizes of the deterministic split of the training set. labeled + unlabeled + validation must not
// exceed the training set's size.
struct SplitSizes {
  std::int64_t labeled = 50'000;
  std::int64_t unlabeled = 0;
  std::int64_t validation = 10'000;
};

// Indices into the training set: a seeded permutation (counter-based RNG, stream Split) cut into
// labeled / unlabeled / validation, in that order.
struct Split {
  std::vector<std::int64_t> labeled, unlabeled, validation;
};
Split make_split(std::int64_t train_size, const SplitSizes& sizes, std::uint64_t seed);

// A copy of the selected examples.
Dataset subset(const Dataset& data, const std::vector<std::int64_t>& indices);

// SHA-256-free fingerprint of a split (FNV-1a 64 over the index lists), for provenance.
std::uint64_t split_fingerprint(const Split& split);

// Writes `count` augmented images into out[count][pixels]: image indices[i] of `data`, shifted by
// up to ±aug.shift pixels (zero fill; every channel the same way) and flipped left-right with probability 1/2 when aug.flip.
// Draws come from `rng` at index first_draw + i, so the result is a pure function of its arguments
// (a data-parallel shard passes the global batch position of its first row).
void augment_batch(const Dataset& data, const std::int64_t* indices, std::int64_t count, const Augmentation& aug,
                   const kernels::CounterRng& rng, float* out, std::uint64_t first_draw = 0);

}  // namespace rsi::models
