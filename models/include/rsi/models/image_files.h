// rsi::models image files — any image-classification data set in common files (the manifest's
// task kind `images`): IDX (as Fashion-MNIST, gzip or plain), NumPy .npy / .npz, or HDF5 datasets.
// Channels, size and classes come from the data; every error names the file and what is wrong.
#pragma once

#include <cstdint>
#include <string>

#include "rsi/models/data.h"

namespace rsi::models {

// Where one part (training or test set) of a data set lies: either two files, `images` and `labels`
// (each IDX, gzip or plain, or NumPy .npy), or two arrays of one container `file` (a NumPy .npz:
// `images`/`labels` name its members, without ".npy"; an HDF5 file: they are dataset paths).
struct ImageFiles {
  std::string file;            // empty: `images` and `labels` are file paths
  std::string images, labels;
  bool operator==(const ImageFiles&) const = default;
};

// How a 4-D image array is laid out: (N, H, W, C) or (N, C, H, W). Auto tells them apart when only one
// of the two candidate axes has 1, 3 or 4 entries, or when one of them equals the middle axis (square
// images); else the manifest must say. A 3-D array is (N, H, W).
enum class ImageLayout { Auto, Nhwc, Nchw };
const char* layout_name(ImageLayout layout);

// What a part's files say, with the pixels left unread (the labels are read: they give the classes).
struct ImageSetInfo {
  std::int64_t count = 0;
  int channels = 0, height = 0, width = 0;
  int max_label = -1;  // the largest label (labels are >= 0)
};
ImageSetInfo probe_images(const ImageFiles& files, ImageLayout layout);

// Loads a part: pixels as floats in [0, 1], [count][channels][height][width]. Images stored as uint8
// are divided by 255; float images must already lie in [0, 1]; labels are integers in [0, classes).
// Throws DataError naming the file (and the array) and what is wrong.
Dataset load_images(const ImageFiles& files, ImageLayout layout, int classes);

// FNV-1a 64 over a data set's shape, pixels (their float bits) and labels: which data a run used.
std::uint64_t data_fingerprint(const Dataset& data);

}  // namespace rsi::models
