// Tests for rsi::models data: the real Fashion-MNIST files, corrupt IDX files written to a temporary
// directory, deterministic splits and augmentation.
//   build-dir/tests/test_data
#include <gtest/gtest.h>
#include <omp.h>
#include <stdlib.h>  // mkdtemp
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "rsi/kernels/rng.h"
#include "rsi/models/data.h"

namespace {

using rsi::models::Augmentation;
using rsi::models::Dataset;
using rsi::models::DataError;
using rsi::models::Split;
using rsi::models::SplitSizes;

// ---- real data -------------------------------------------------------------------------------

const Dataset& real_train() {
  static const Dataset data = rsi::models::load_fashion_mnist_train();
  return data;
}

const Dataset& real_test() {
  static const Dataset data = rsi::models::load_fashion_mnist_test();
  return data;
}

void expect_fashion_mnist(const Dataset& data, std::int64_t count) {
  ASSERT_EQ(data.size(), count);
  EXPECT_EQ(data.rows, 28);
  EXPECT_EQ(data.cols, 28);
  ASSERT_EQ(data.images.size(), static_cast<std::size_t>(count) * 28 * 28);
  std::array<std::int64_t, 10> histogram{};
  for (const auto label : data.labels) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 10);
    ++histogram[static_cast<std::size_t>(label)];
  }
  for (std::size_t c = 0; c < histogram.size(); ++c) EXPECT_EQ(histogram[c], count / 10) << "class " << c;
  const auto [lowest, highest] = std::minmax_element(data.images.begin(), data.images.end());
  EXPECT_EQ(*lowest, 0.0f);
  EXPECT_EQ(*highest, 1.0f);  // 255 occurs in Fashion-MNIST, so the scaling reaches exactly 1
}

TEST(FashionMnist, TrainingSetLoads) {
  ASSERT_TRUE(std::filesystem::is_directory(rsi::models::kFashionMnistDir))
      << "install the Debian package dataset-fashion-mnist (or run scripts/setup)";
  expect_fashion_mnist(real_train(), 60'000);
}

TEST(FashionMnist, TestSetLoads) {
  ASSERT_TRUE(std::filesystem::is_directory(rsi::models::kFashionMnistDir))
      << "install the Debian package dataset-fashion-mnist (or run scripts/setup)";
  expect_fashion_mnist(real_test(), 10'000);
}

TEST(FashionMnist, FirstTrainingImageIsAnAnkleBoot) {
  // The first training example of Fashion-MNIST is labeled 9 (ankle boot), the second 0 (T-shirt).
  const Dataset& data = real_train();
  ASSERT_GE(data.size(), 2);
  EXPECT_EQ(data.labels[0], 9);
  EXPECT_EQ(data.labels[1], 0);
}

// ---- corrupt files -----------------------------------------------------------------------------

std::vector<unsigned char> big_endian(std::uint32_t value) {
  return {static_cast<unsigned char>(value >> 24), static_cast<unsigned char>(value >> 16),
          static_cast<unsigned char>(value >> 8), static_cast<unsigned char>(value)};
}

void append(std::vector<unsigned char>& bytes, const std::vector<unsigned char>& more) {
  bytes.insert(bytes.end(), more.begin(), more.end());
}

// An IDX image file: header + `count` images of rows×cols whose pixel p of image i is (i + p) % 256.
std::vector<unsigned char> image_idx(std::uint32_t count, std::uint32_t rows = 28, std::uint32_t cols = 28,
                                     std::uint32_t magic = 0x00000803) {
  std::vector<unsigned char> bytes;
  append(bytes, big_endian(magic));
  append(bytes, big_endian(count));
  append(bytes, big_endian(rows));
  append(bytes, big_endian(cols));
  for (std::uint32_t i = 0; i < count; ++i) {
    for (std::uint32_t p = 0; p < rows * cols; ++p) bytes.push_back(static_cast<unsigned char>((i + p) % 256));
  }
  return bytes;
}

std::vector<unsigned char> label_idx(std::uint32_t count, unsigned char first_label = 0) {
  std::vector<unsigned char> bytes;
  append(bytes, big_endian(0x00000801));
  append(bytes, big_endian(count));
  for (std::uint32_t i = 0; i < count; ++i) bytes.push_back(i == 0 ? first_label : static_cast<unsigned char>(i % 10));
  return bytes;
}

class CorruptIdx : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::path(::testing::TempDir()) / "rsi_test_data_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << "mkdtemp failed for " << pattern;
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }

  std::string write_plain(const std::string& name, const std::vector<unsigned char>& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream file(path, std::ios::binary);
    file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(file.good()) << "cannot write " << path;
    return path;
  }

  std::string write_gzip(const std::string& name, const std::vector<unsigned char>& bytes) {
    const std::string path = (dir_ / name).string();
    gzFile file = gzopen(path.c_str(), "wb");
    EXPECT_NE(file, nullptr) << "cannot write " << path;
    if (file == nullptr) return path;
    EXPECT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
    EXPECT_EQ(gzclose(file), Z_OK);
    return path;
  }

  static std::vector<unsigned char> read_bytes(const std::string& path) {
    std::ifstream file(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
  }

  // Runs read_idx and returns the DataError's message; fails the test if nothing was thrown.
  static std::string read_error(const std::string& images, const std::string& labels) {
    try {
      rsi::models::read_idx(images, labels);
    } catch (const DataError& error) {
      return error.what();
    }
    ADD_FAILURE() << "read_idx(" << images << ", " << labels << ") did not throw";
    return {};
  }

  std::filesystem::path dir_;
};

// Passes when `text` contains `part`; on failure prints both.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

TEST_F(CorruptIdx, ValidGzipAndPlainFilesLoad) {
  const std::string images = write_gzip("images.gz", image_idx(3, 4, 5));
  const std::string labels = write_plain("labels", label_idx(3, 7));
  const Dataset data = rsi::models::read_idx(images, labels);
  ASSERT_EQ(data.size(), 3);
  EXPECT_EQ(data.rows, 4);
  EXPECT_EQ(data.cols, 5);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{7, 1, 2}));
  ASSERT_EQ(data.images.size(), 60u);
  EXPECT_FLOAT_EQ(data.image(2)[3], 5.0f / 255.0f);  // (i + p) = 2 + 3
}

TEST_F(CorruptIdx, BadMagic) {
  const std::string images = write_gzip("images.gz", image_idx(3, 28, 28, 0x12345678));
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "bad magic"));
  EXPECT_TRUE(Contains(message, "0x12345678"));
  EXPECT_TRUE(Contains(message, "0x00000803"));
}

TEST_F(CorruptIdx, SwappedPathsAreNamed) {
  const std::string images = write_plain("images", image_idx(3));
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string message = read_error(labels, images);
  EXPECT_TRUE(Contains(message, labels));
  EXPECT_TRUE(Contains(message, "bad magic"));
  EXPECT_TRUE(Contains(message, "swapped"));
}

TEST_F(CorruptIdx, ImplausibleDimensions) {
  const std::string labels = write_plain("labels", label_idx(3));
  std::vector<unsigned char> huge;  // a header claiming 100000×100000 pixels per image
  append(huge, big_endian(0x00000803));
  append(huge, big_endian(3));
  append(huge, big_endian(100'000));
  append(huge, big_endian(100'000));
  const std::string images = write_plain("images", huge);
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "implausible dimensions"));
  EXPECT_TRUE(Contains(message, "100000x100000"));

  const std::string empty = write_plain("empty_images", image_idx(0));
  EXPECT_TRUE(Contains(read_error(empty, labels), "implausible dimensions"));
}

TEST_F(CorruptIdx, TruncatedGzip) {
  const std::string whole = write_gzip("whole.gz", image_idx(10));
  std::vector<unsigned char> compressed = read_bytes(whole);
  ASSERT_GT(compressed.size(), 100u);
  compressed.resize(compressed.size() / 2);
  const std::string images = write_plain("truncated.gz", compressed);
  const std::string labels = write_plain("labels", label_idx(10));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "truncated"));
  EXPECT_TRUE(Contains(message, "expected 7840 bytes"));
  EXPECT_TRUE(Contains(message, "zlib"));
}

TEST_F(CorruptIdx, GzipMissingItsTrailer) {
  // All pixel bytes are present but the CRC/length trailer is cut off.
  const std::string whole = write_gzip("whole.gz", image_idx(10));
  std::vector<unsigned char> compressed = read_bytes(whole);
  compressed.resize(compressed.size() - 4);
  const std::string images = write_plain("no_trailer.gz", compressed);
  const std::string labels = write_plain("labels", label_idx(10));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "truncated"));
}

TEST_F(CorruptIdx, CorruptGzipDataDoesNotCrash) {
  const std::string whole = write_gzip("whole.gz", image_idx(10));
  std::vector<unsigned char> compressed = read_bytes(whole);
  for (std::size_t i = 20; i + 8 < compressed.size(); i += 7) compressed[i] ^= 0x5a;
  const std::string images = write_plain("corrupt.gz", compressed);
  const std::string labels = write_plain("labels", label_idx(10));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
}

TEST_F(CorruptIdx, TruncatedPlainFile) {
  std::vector<unsigned char> bytes = image_idx(3);
  bytes.resize(bytes.size() - 784 - 100);  // two whole images and 684 bytes of the third
  const std::string images = write_plain("images", bytes);
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "truncated"));
  EXPECT_TRUE(Contains(message, "expected 2352 bytes"));
  EXPECT_TRUE(Contains(message, "got 1468"));
}

TEST_F(CorruptIdx, TruncatedHeader) {
  const std::string images = write_plain("images", {0x00, 0x00, 0x08, 0x03, 0x00});
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "truncated"));
  EXPECT_TRUE(Contains(message, "header"));
}

TEST_F(CorruptIdx, TrailingData) {
  std::vector<unsigned char> bytes = image_idx(3);
  bytes.push_back(42);
  const std::string images = write_plain("images", bytes);
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "trailing data"));
}

TEST_F(CorruptIdx, CountMismatch) {
  const std::string images = write_gzip("images.gz", image_idx(3));
  const std::string labels = write_gzip("labels.gz", label_idx(4));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, "count mismatch"));
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, labels));
  EXPECT_TRUE(Contains(message, "3 images"));
  EXPECT_TRUE(Contains(message, "4 labels"));
}

TEST_F(CorruptIdx, LabelOutOfRange) {
  const std::string images = write_plain("images", image_idx(3));
  const std::string labels = write_plain("labels", label_idx(3, 12));
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, labels));
  EXPECT_TRUE(Contains(message, "label 12"));
  EXPECT_TRUE(Contains(message, "out of range 0..9"));
}

TEST_F(CorruptIdx, MissingFile) {
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string images = (dir_ / "no-such-images.gz").string();
  const std::string message = read_error(images, labels);
  EXPECT_TRUE(Contains(message, images));
  EXPECT_TRUE(Contains(message, "not found"));
}

TEST_F(CorruptIdx, DirectoryInsteadOfFile) {
  const std::string labels = write_plain("labels", label_idx(3));
  const std::string message = read_error(dir_.string(), labels);
  EXPECT_TRUE(Contains(message, dir_.string()));
  EXPECT_TRUE(Contains(message, "not a regular file"));
}

TEST_F(CorruptIdx, MissingFileInDatasetDirectory) {
  // The directory exists but holds only the labels.
  write_gzip("train-labels-idx1-ubyte.gz", label_idx(3));
  try {
    rsi::models::load_fashion_mnist_train(dir_.string());
    FAIL() << "load_fashion_mnist_train did not throw";
  } catch (const DataError& error) {
    const std::string message = error.what();
    EXPECT_TRUE(Contains(message, (dir_ / "train-images-idx3-ubyte.gz").string()));
    EXPECT_TRUE(Contains(message, "not found"));
    EXPECT_TRUE(Contains(message, "dataset-fashion-mnist"));
  }
}

TEST_F(CorruptIdx, MissingDatasetDirectoryNamesThePackage) {
  const std::string missing = (dir_ / "no-such-dir").string();
  for (const bool train : {true, false}) {
    try {
      if (train) {
        rsi::models::load_fashion_mnist_train(missing);
      } else {
        rsi::models::load_fashion_mnist_test(missing);
      }
      FAIL() << "loading from " << missing << " did not throw";
    } catch (const DataError& error) {
      const std::string message = error.what();
      EXPECT_TRUE(Contains(message, missing));
      EXPECT_TRUE(Contains(message, "not found"));
      EXPECT_TRUE(Contains(message, "apt-get install dataset-fashion-mnist"));
    }
  }
}

TEST_F(CorruptIdx, DatasetDirectoryWithSmallFilesLoads) {
  write_gzip("t10k-images-idx3-ubyte.gz", image_idx(5));
  write_gzip("t10k-labels-idx1-ubyte.gz", label_idx(5));
  const Dataset data = rsi::models::load_fashion_mnist_test(dir_.string());
  EXPECT_EQ(data.size(), 5);
}

// ---- splits ------------------------------------------------------------------------------------

TEST(Split, SameSeedSameSplit) {
  const SplitSizes sizes{500, 300, 200};
  const Split a = rsi::models::make_split(1200, sizes, 42);
  const Split b = rsi::models::make_split(1200, sizes, 42);
  EXPECT_EQ(a.labeled, b.labeled);
  EXPECT_EQ(a.unlabeled, b.unlabeled);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_EQ(rsi::models::split_fingerprint(a), rsi::models::split_fingerprint(b));
}

TEST(Split, DifferentSeedDifferentSplit) {
  const SplitSizes sizes{500, 300, 200};
  const Split a = rsi::models::make_split(1200, sizes, 42);
  const Split b = rsi::models::make_split(1200, sizes, 43);
  EXPECT_NE(a.labeled, b.labeled);
  EXPECT_NE(a.validation, b.validation);
  EXPECT_NE(rsi::models::split_fingerprint(a), rsi::models::split_fingerprint(b));
}

TEST(Split, SizesHonoredDisjointAndInRange) {
  const SplitSizes sizes{500, 300, 200};
  const Split split = rsi::models::make_split(1200, sizes, 7);
  EXPECT_EQ(split.labeled.size(), 500u);
  EXPECT_EQ(split.unlabeled.size(), 300u);
  EXPECT_EQ(split.validation.size(), 200u);
  std::set<std::int64_t> seen;
  for (const auto* list : {&split.labeled, &split.unlabeled, &split.validation}) {
    for (const std::int64_t index : *list) {
      EXPECT_GE(index, 0);
      EXPECT_LT(index, 1200);
      EXPECT_TRUE(seen.insert(index).second) << "index " << index << " appears twice";
    }
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(Split, IsShuffled) {
  // A seeded permutation, not the identity: the labeled part is not simply 0..n-1.
  const Split split = rsi::models::make_split(1000, {100, 0, 100}, 1);
  std::vector<std::int64_t> identity(100);
  for (std::size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<std::int64_t>(i);
  EXPECT_NE(split.labeled, identity);
  EXPECT_FALSE(std::is_sorted(split.labeled.begin(), split.labeled.end()));
}

TEST(Split, WholeSetIsAPermutation) {
  const Split split = rsi::models::make_split(257, {100, 57, 100}, 9);
  std::vector<std::int64_t> all = split.labeled;
  all.insert(all.end(), split.unlabeled.begin(), split.unlabeled.end());
  all.insert(all.end(), split.validation.begin(), split.validation.end());
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), 257u);
  for (std::size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<std::int64_t>(i));
}

TEST(Split, DefaultSizesOnTheTrainingSet) {
  const Split split = rsi::models::make_split(60'000, SplitSizes{}, 2024);
  EXPECT_EQ(split.labeled.size(), 50'000u);
  EXPECT_TRUE(split.unlabeled.empty());
  EXPECT_EQ(split.validation.size(), 10'000u);
}

TEST(Split, TooBigOrNegativeThrows) {
  try {
    rsi::models::make_split(1000, {600, 300, 200}, 1);
    FAIL() << "make_split accepted 1100 examples out of 1000";
  } catch (const DataError& error) {
    EXPECT_TRUE(Contains(std::string(error.what()), "exceeds"));
    EXPECT_TRUE(Contains(std::string(error.what()), "labeled 600, unlabeled 300, validation 200, training set 1000"));
  }
  EXPECT_THROW(rsi::models::make_split(1000, {-1, 0, 0}, 1), DataError);
  EXPECT_THROW(rsi::models::make_split(1000, {INT64_MAX, INT64_MAX, 1}, 1), DataError);
  EXPECT_THROW(rsi::models::make_split(-5, {0, 0, 0}, 1), DataError);
  EXPECT_NO_THROW(rsi::models::make_split(1000, {600, 200, 200}, 1));
}

TEST(Split, FingerprintSeparatesLists) {
  const Split a{{1, 2, 3}, {4}, {5}};
  const Split b{{1, 2}, {3, 4}, {5}};
  const Split c{{1, 2, 3}, {4}, {5}};
  EXPECT_NE(rsi::models::split_fingerprint(a), rsi::models::split_fingerprint(b));
  EXPECT_EQ(rsi::models::split_fingerprint(a), rsi::models::split_fingerprint(c));
}

TEST(Split, SubsetCopiesTheSelectedExamples) {
  Dataset data;
  data.rows = 2;
  data.cols = 2;
  data.images = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23};
  data.labels = {0, 1, 2};
  const Dataset picked = rsi::models::subset(data, {2, 0});
  ASSERT_EQ(picked.size(), 2);
  EXPECT_EQ(picked.rows, 2);
  EXPECT_EQ(picked.labels, (std::vector<std::int32_t>{2, 0}));
  EXPECT_EQ(picked.images, (std::vector<float>{20, 21, 22, 23, 0, 1, 2, 3}));
  EXPECT_THROW(rsi::models::subset(data, {3}), DataError);
  EXPECT_THROW(rsi::models::subset(data, {-1}), DataError);
}

// ---- augmentation ------------------------------------------------------------------------------

// Image i of the synthetic set: every pixel distinct and nonzero, so a shift or flip can be read
// back from the output.
Dataset synthetic(int count, int rows = 9, int cols = 11) {
  Dataset data;
  data.rows = rows;
  data.cols = cols;
  for (int i = 0; i < count; ++i) {
    for (int p = 0; p < rows * cols; ++p) data.images.push_back(static_cast<float>(1 + p + 1000 * i));
    data.labels.push_back(i % 10);
  }
  return data;
}

std::vector<float> augment(const Dataset& data, const std::vector<std::int64_t>& indices, const Augmentation& aug,
                           const rsi::kernels::CounterRng& rng) {
  std::vector<float> out(indices.size() * static_cast<std::size_t>(data.pixels()), -1.0f);
  rsi::models::augment_batch(data, indices.data(), static_cast<std::int64_t>(indices.size()), aug, rng, out.data());
  return out;
}

const rsi::kernels::CounterRng kAugmentRng(123, rsi::kernels::rng_stream(rsi::kernels::RngUse::Augment, 5), 17);

std::vector<std::int64_t> iota_indices(std::int64_t count, std::int64_t modulo) {
  std::vector<std::int64_t> indices(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) indices[static_cast<std::size_t>(i)] = i % modulo;
  return indices;
}

TEST(Augment, NoAugmentationCopiesUnchanged) {
  const Dataset data = synthetic(4);
  const std::vector<std::int64_t> indices{3, 1, 1, 0};
  const std::vector<float> out = augment(data, indices, Augmentation{0, false}, kAugmentRng);
  const Dataset expected = rsi::models::subset(data, indices);
  EXPECT_EQ(out, expected.images);
}

TEST(Augment, Deterministic) {
  const Dataset data = synthetic(8);
  const auto indices = iota_indices(64, 8);
  const Augmentation aug{2, true};
  const std::vector<float> a = augment(data, indices, aug, kAugmentRng);
  const std::vector<float> b = augment(data, indices, aug, kAugmentRng);
  EXPECT_EQ(a, b);
  const rsi::kernels::CounterRng other(124, rsi::kernels::rng_stream(rsi::kernels::RngUse::Augment, 5), 17);
  EXPECT_NE(a, augment(data, indices, aug, other));
  const rsi::kernels::CounterRng other_step(123, rsi::kernels::rng_stream(rsi::kernels::RngUse::Augment, 5), 18);
  EXPECT_NE(a, augment(data, indices, aug, other_step));
}

TEST(Augment, IndependentOfThreadCountAndBatch) {
  const Dataset data = synthetic(8);
  const auto indices = iota_indices(64, 8);
  const Augmentation aug{3, true};
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> serial = augment(data, indices, aug, kAugmentRng);
  omp_set_num_threads(4);
  const std::vector<float> parallel = augment(data, indices, aug, kAugmentRng);
  omp_set_num_threads(threads);
  EXPECT_EQ(serial, parallel);
  // The first images of a shorter batch are augmented exactly as in the longer one.
  const std::vector<std::int64_t> prefix(indices.begin(), indices.begin() + 5);
  const std::vector<float> short_batch = augment(data, prefix, aug, kAugmentRng);
  EXPECT_TRUE(std::equal(short_batch.begin(), short_batch.end(), serial.begin()));
}

// Finds (dx, dy) such that out(y, x) = source(y - dy, x - dx) with zero fill, or fails.
bool matches_shift(const float* source, const float* out, int rows, int cols, int dx, int dy, bool flip) {
  for (int y = 0; y < rows; ++y) {
    for (int x = 0; x < cols; ++x) {
      const int sy = y - dy, sx = x - dx;
      const bool inside = sy >= 0 && sy < rows && sx >= 0 && sx < cols;
      const float expected = inside ? source[sy * cols + (flip ? cols - 1 - sx : sx)] : 0.0f;
      if (out[y * cols + x] != expected) return false;
    }
  }
  return true;
}

TEST(Augment, ShiftMovesPixelsWithZeroFill) {
  const int shift = 2;
  const Dataset data = synthetic(3);
  const auto indices = iota_indices(200, 3);
  const std::vector<float> out = augment(data, indices, Augmentation{shift, false}, kAugmentRng);
  std::set<std::pair<int, int>> shifts_seen;
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const float* image = out.data() + i * static_cast<std::size_t>(data.pixels());
    int found = 0;
    for (int dy = -shift; dy <= shift; ++dy) {
      for (int dx = -shift; dx <= shift; ++dx) {
        if (matches_shift(data.image(indices[i]), image, data.rows, data.cols, dx, dy, false)) {
          ++found;
          shifts_seen.insert({dx, dy});
        }
      }
    }
    EXPECT_EQ(found, 1) << "image " << i << " is not a shift of its source by at most " << shift;
  }
  // 200 draws over 25 shifts: every shift should appear.
  EXPECT_EQ(shifts_seen.size(), 25u);
}

TEST(Augment, ShiftOfAKnownPixel) {
  // One lit pixel in the middle: after the shift exactly one lit pixel remains, at most 1 away.
  Dataset data;
  data.rows = 5;
  data.cols = 5;
  data.images.assign(25, 0.0f);
  data.images[2 * 5 + 2] = 1.0f;
  data.labels = {0};
  const auto indices = iota_indices(50, 1);
  const std::vector<float> out = augment(data, indices, Augmentation{1, false}, kAugmentRng);
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const float* image = out.data() + i * 25;
    int lit = 0, lit_at = -1;
    for (int p = 0; p < 25; ++p) {
      if (image[p] != 0.0f) {
        ++lit;
        lit_at = p;
      }
    }
    ASSERT_EQ(lit, 1) << "image " << i;
    EXPECT_LE(std::abs(lit_at / 5 - 2), 1) << "image " << i;
    EXPECT_LE(std::abs(lit_at % 5 - 2), 1) << "image " << i;
    EXPECT_EQ(image[lit_at], 1.0f);
  }
}

TEST(Augment, FlipMirrorsAboutHalfTheImages) {
  const Dataset data = synthetic(2);
  const auto indices = iota_indices(400, 2);
  const std::vector<float> out = augment(data, indices, Augmentation{0, true}, kAugmentRng);
  int flipped = 0;
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const float* image = out.data() + i * static_cast<std::size_t>(data.pixels());
    const float* source = data.image(indices[i]);
    const bool same = matches_shift(source, image, data.rows, data.cols, 0, 0, false);
    const bool mirrored = matches_shift(source, image, data.rows, data.cols, 0, 0, true);
    EXPECT_NE(same, mirrored) << "image " << i << " is neither the source nor its mirror";
    if (mirrored) ++flipped;
  }
  EXPECT_GT(flipped, 150);  // binomial(400, 1/2): 150..250 holds with overwhelming probability
  EXPECT_LT(flipped, 250);
}

TEST(Augment, ShiftAndFlipTogether) {
  const Dataset data = synthetic(2);
  const auto indices = iota_indices(100, 2);
  const std::vector<float> out = augment(data, indices, Augmentation{1, true}, kAugmentRng);
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const float* image = out.data() + i * static_cast<std::size_t>(data.pixels());
    int found = 0;
    for (const bool flip : {false, true}) {
      for (int dy = -1; dy <= 1; ++dy) {
        for (int dx = -1; dx <= 1; ++dx) {
          found += matches_shift(data.image(indices[i]), image, data.rows, data.cols, dx, dy, flip) ? 1 : 0;
        }
      }
    }
    EXPECT_EQ(found, 1) << "image " << i;
  }
}

TEST(Augment, BadArgumentsThrow) {
  const Dataset data = synthetic(2);
  std::vector<float> out(static_cast<std::size_t>(data.pixels()));
  const std::int64_t bad_index = 2;
  EXPECT_THROW(rsi::models::augment_batch(data, &bad_index, 1, Augmentation{1, false}, kAugmentRng, out.data()),
               DataError);
  const std::int64_t good_index = 1;
  EXPECT_THROW(rsi::models::augment_batch(data, &good_index, 1, Augmentation{-1, false}, kAugmentRng, out.data()),
               DataError);
}

}  // namespace
