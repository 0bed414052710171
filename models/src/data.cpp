// rsi::models data — Fashion-MNIST IDX reader (gzip or plain, through zlib), deterministic splits of
// the training set, and per-image augmentation driven by the counter-based RNG.
// IDX format: big-endian magic 0x000008NN (unsigned byte data, NN dimensions), then NN big-endian
// u32 dimensions, then the bytes. See http://yann.lecun.com/exdb/mnist/.
#include "rsi/models/data.h"

#include "gz_file.h"
#include "rsi/kernels/augment.h"
#include "rsi/kernels/fnv1a.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <sstream>
#include <utility>

#include "rsi/kernels/rng.h"

namespace rsi::models {
namespace {

using detail::GzFile;

constexpr std::uint32_t kImageMagic = 0x00000803;  // unsigned byte, 3 dimensions: count, rows, cols
constexpr std::uint32_t kLabelMagic = 0x00000801;  // unsigned byte, 1 dimension: count
constexpr int kClasses = 10;
// Bounds that no real image data set crosses; beyond them a header is corrupt, and trusting it
// would mean allocating gigabytes before discovering the file is short.
constexpr std::uint32_t kMaxSide = 4096;
constexpr std::uint64_t kMaxImageBytes = std::uint64_t{1} << 32;
constexpr std::uint32_t kMaxCount = 1u << 28;

std::string hex32(std::uint32_t value) {
  std::ostringstream text;
  text << "0x" << std::hex;
  text.width(8);
  text.fill('0');
  text << value;
  return text.str();
}

void expect_magic(GzFile& file, std::uint32_t expected, const char* kind, std::uint32_t other, const char* other_kind) {
  const std::uint32_t magic = file.read_u32_big_endian("IDX header");
  if (magic == expected) return;
  std::string message = file.path() + ": bad magic number " + hex32(magic) + ", expected " + hex32(expected) +
                        " (IDX " + kind + ")";
  if (magic == other) message += std::string("; this looks like an IDX ") + other_kind + ", are the paths swapped?";
  throw DataError(message);
}

struct Images {
  std::uint32_t count = 0, rows = 0, cols = 0;
  std::vector<float> pixels;
};

Images read_images(const std::string& path) {
  GzFile file(path);
  expect_magic(file, kImageMagic, "image file: unsigned bytes, 3 dimensions", kLabelMagic, "label file");
  Images images;
  images.count = file.read_u32_big_endian("IDX header (image count)");
  images.rows = file.read_u32_big_endian("IDX header (rows)");
  images.cols = file.read_u32_big_endian("IDX header (columns)");
  const std::uint64_t bytes = std::uint64_t{images.count} * images.rows * images.cols;
  if (images.count == 0 || images.count > kMaxCount || images.rows == 0 || images.rows > kMaxSide ||
      images.cols == 0 || images.cols > kMaxSide || bytes > kMaxImageBytes) {
    throw DataError(path + ": implausible dimensions " + std::to_string(images.count) + " images of " +
                    std::to_string(images.rows) + "x" + std::to_string(images.cols) + " (expected 1.." +
                    std::to_string(kMaxCount) + " images, sides 1.." + std::to_string(kMaxSide) +
                    "); the header is corrupt");
  }
  std::vector<unsigned char> raw(bytes);
  file.read_exact(raw.data(), bytes, "pixel data (" + std::to_string(images.count) + " images of " +
                                         std::to_string(images.rows) + "x" + std::to_string(images.cols) + ")");
  file.expect_end("pixel data");
  images.pixels.resize(bytes);
  std::transform(raw.begin(), raw.end(), images.pixels.begin(),
                 [](unsigned char value) { return static_cast<float>(value) / 255.0f; });
  return images;
}

std::vector<std::int32_t> read_labels(const std::string& path) {
  GzFile file(path);
  expect_magic(file, kLabelMagic, "label file: unsigned bytes, 1 dimension", kImageMagic, "image file");
  const std::uint32_t count = file.read_u32_big_endian("IDX header (label count)");
  if (count == 0 || count > kMaxCount) {
    throw DataError(path + ": implausible dimensions " + std::to_string(count) + " labels (expected 1.." +
                    std::to_string(kMaxCount) + "); the header is corrupt");
  }
  std::vector<unsigned char> raw(count);
  file.read_exact(raw.data(), count, "labels (" + std::to_string(count) + " labels)");
  file.expect_end("labels");
  std::vector<std::int32_t> labels(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    if (raw[i] >= kClasses) {
      throw DataError(path + ": label " + std::to_string(raw[i]) + " at index " + std::to_string(i) +
                      " is out of range 0.." + std::to_string(kClasses - 1));
    }
    labels[i] = raw[i];
  }
  return labels;
}

Dataset load_from_dir(const std::string& dir, const std::string& images_name, const std::string& labels_name) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    throw DataError("Fashion-MNIST directory " + dir +
                    " not found: install the Debian package dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist, or run scripts/setup)");
  }
  const std::filesystem::path base(dir);
  try {
    return read_idx((base / images_name).string(), (base / labels_name).string());
  } catch (const DataError& error) {
    throw DataError(std::string(error.what()) +
                    "; reinstall the Debian package dataset-fashion-mnist (apt-get install --reinstall "
                    "dataset-fashion-mnist)");
  }
}

// FNV-1a 64 (kernels/fnv1a.h): good enough to tell splits apart.
void fnv1a_u64(std::uint64_t& hash, std::uint64_t value) {
  unsigned char bytes[8];
  for (int byte = 0; byte < 8; ++byte) bytes[byte] = (value >> (8 * byte)) & 0xffu;  // little-endian, whatever the host
  hash = kernels::fnv1a64(bytes, sizeof bytes, hash);
}

}  // namespace

Dataset read_idx(const std::string& images_path, const std::string& labels_path) {
  Images images = read_images(images_path);
  std::vector<std::int32_t> labels = read_labels(labels_path);
  if (labels.size() != images.count) {
    throw DataError("count mismatch: " + images_path + " has " + std::to_string(images.count) + " images but " +
                    labels_path + " has " + std::to_string(labels.size()) + " labels");
  }
  Dataset data;
  data.rows = static_cast<int>(images.rows);
  data.cols = static_cast<int>(images.cols);
  data.images = std::move(images.pixels);
  data.labels = std::move(labels);
  return data;
}

namespace {
constexpr const char* kTrainFiles[2] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"};
constexpr const char* kTestFiles[2] = {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
}  // namespace

Dataset load_fashion_mnist_train(const std::string& dir) { return load_from_dir(dir, kTrainFiles[0], kTrainFiles[1]); }

Dataset load_fashion_mnist_test(const std::string& dir) { return load_from_dir(dir, kTestFiles[0], kTestFiles[1]); }

void check_fashion_mnist(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) load_from_dir(dir, "", "");  // throws its message
  const std::filesystem::path base(dir);
  try {
    for (const auto* files : {kTrainFiles, kTestFiles}) {
      GzFile images((base / files[0]).string());
      expect_magic(images, kImageMagic, "image file: unsigned bytes, 3 dimensions", kLabelMagic, "label file");
      GzFile labels((base / files[1]).string());
      expect_magic(labels, kLabelMagic, "label file: unsigned bytes, 1 dimension", kImageMagic, "image file");
    }
  } catch (const DataError& error) {
    throw DataError(std::string(error.what()) +
                    "; reinstall the Debian package dataset-fashion-mnist (apt-get install --reinstall "
                    "dataset-fashion-mnist)");
  }
}

Split make_split(std::int64_t train_size, const SplitSizes& sizes, std::uint64_t seed) {
  const auto describe = [&] {
    return "(labeled " + std::to_string(sizes.labeled) + ", unlabeled " + std::to_string(sizes.unlabeled) +
           ", validation " + std::to_string(sizes.validation) + ", training set " + std::to_string(train_size) + ")";
  };
  if (train_size < 0 || train_size > std::int64_t{UINT32_MAX}) {
    throw DataError("split: training set size " + std::to_string(train_size) + " is out of range 0.." +
                    std::to_string(UINT32_MAX));
  }
  if (sizes.labeled < 0 || sizes.unlabeled < 0 || sizes.validation < 0) {
    throw DataError("split: sizes must not be negative " + describe());
  }
  // Each size is compared on its own first, so the sum below cannot overflow.
  if (sizes.labeled > train_size || sizes.unlabeled > train_size || sizes.validation > train_size ||
      sizes.labeled + sizes.unlabeled + sizes.validation > train_size) {
    throw DataError("split: labeled + unlabeled + validation exceeds the training set " + describe());
  }
  const std::int64_t used = sizes.labeled + sizes.unlabeled + sizes.validation;
  std::vector<std::int64_t> order(static_cast<std::size_t>(train_size));
  std::iota(order.begin(), order.end(), std::int64_t{0});
  // Forward Fisher-Yates: after step i, order[0..i] is final, so stopping after `used` steps gives
  // the same prefix as a full shuffle at a fraction of the draws.
  const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Split, 0));
  for (std::int64_t i = 0; i < used && i + 1 < train_size; ++i) {
    const auto remaining = static_cast<std::uint32_t>(train_size - i);
    const std::int64_t pick = i + rng.below(static_cast<std::uint64_t>(i), remaining);
    std::swap(order[static_cast<std::size_t>(i)], order[static_cast<std::size_t>(pick)]);
  }
  Split split;
  auto cursor = order.begin();
  split.labeled.assign(cursor, cursor + sizes.labeled);
  cursor += sizes.labeled;
  split.unlabeled.assign(cursor, cursor + sizes.unlabeled);
  cursor += sizes.unlabeled;
  split.validation.assign(cursor, cursor + sizes.validation);
  return split;
}

Dataset subset(const Dataset& data, const std::vector<std::int64_t>& indices) {
  Dataset out;
  out.channels = data.channels;
  out.rows = data.rows;
  out.cols = data.cols;
  out.classes = data.classes;
  const auto pixels = static_cast<std::size_t>(data.pixels());
  out.images.resize(indices.size() * pixels);
  out.labels.resize(indices.size());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    const std::int64_t index = indices[i];
    if (index < 0 || index >= data.size()) {
      throw DataError("subset: index " + std::to_string(index) + " at position " + std::to_string(i) +
                      " is out of range 0.." + std::to_string(data.size() - 1));
    }
    std::copy_n(data.image(index), pixels, out.images.begin() + static_cast<std::ptrdiff_t>(i * pixels));
    out.labels[i] = data.labels[static_cast<std::size_t>(index)];
  }
  return out;
}

std::uint64_t split_fingerprint(const Split& split) {
  std::uint64_t hash = kernels::kFnv1aOffset;
  // Each list is preceded by a tag and its length, so moving an index from one list to the next
  // changes the fingerprint.
  const std::array<const std::vector<std::int64_t>*, 3> lists{&split.labeled, &split.unlabeled, &split.validation};
  for (std::size_t list = 0; list < lists.size(); ++list) {
    fnv1a_u64(hash, 0x5350'4c49'5400'0000ull + list);  // "SPLIT" + list number
    fnv1a_u64(hash, lists[list]->size());
    for (const std::int64_t index : *lists[list]) fnv1a_u64(hash, static_cast<std::uint64_t>(index));
  }
  return hash;
}

void augment_batch(const Dataset& data, const std::int64_t* indices, std::int64_t count, const Augmentation& aug,
                   const kernels::CounterRng& rng, float* out, std::uint64_t first_draw) {
  if (count < 0) throw DataError("augment_batch: negative count " + std::to_string(count));
  if (aug.shift < 0) throw DataError("augment_batch: augmentation shift " + std::to_string(aug.shift) + " is negative");
  for (std::int64_t i = 0; i < count; ++i) {  // checked up front: nothing may throw inside the parallel loop
    if (indices[i] < 0 || indices[i] >= data.size()) {
      throw DataError("augment_batch: index " + std::to_string(indices[i]) + " at position " + std::to_string(i) +
                      " is out of range 0.." + std::to_string(data.size() - 1));
    }
  }
  const int rows = data.rows, cols = data.cols, channels = data.channels;
  const std::int64_t pixels = data.pixels(), plane = std::int64_t{rows} * cols;
  if (aug.shift == 0 && !aug.flip) {
    for (std::int64_t i = 0; i < count; ++i) std::copy_n(data.image(indices[i]), pixels, out + i * pixels);
    return;
  }
  // Each image's draws depend only on its position i in the batch, so the result is the same for
  // any thread count or schedule (kernels/augment.h: the same pixels as the GPU's augment_rows).
#pragma omp parallel for schedule(static) if (count > 16)
  for (std::int64_t i = 0; i < count; ++i) {
    const kernels::ShiftFlip t =
        kernels::draw_shift_flip(rng, first_draw + static_cast<std::uint64_t>(i), aug.shift, aug.flip);
    for (int c = 0; c < channels; ++c) {
      const float* source = data.image(indices[i]) + c * plane;
      float* target = out + i * pixels + c * plane;
      for (int y = 0; y < rows; ++y)
        for (int x = 0; x < cols; ++x)
          target[static_cast<std::int64_t>(y) * cols + x] = kernels::shifted_pixel(source, rows, cols, t, y, x);
    }
  }
}

}  // namespace rsi::models
