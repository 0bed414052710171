// models/image_files.h: the task kind images' readers (IDX, .npy, HDF5; .npz is covered end to end
// by tests/integration/own_data.sh with files numpy wrote) and their errors.
#include "rsi/models/image_files.h"

#include <gtest/gtest.h>
#include <hdf5.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "rsi/kernels/rng.h"
#include "rsi/runtime/manifest.h"

namespace {

namespace fs = std::filesystem;
using rsi::models::DataError;
using rsi::models::ImageFiles;
using rsi::models::ImageLayout;

class ImageFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("rsi-image-files-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // A .npy file (format 1.0) with the given descr, shape and raw element bytes.
  std::string npy(const std::string& name, const std::string& descr, const std::vector<long>& shape, const void* data,
                  std::size_t bytes, bool fortran = false) {
    std::string dims;
    for (long d : shape) dims += std::to_string(d) + ", ";
    if (shape.size() > 1) dims.resize(dims.size() - 2);
    std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                         ", 'shape': (" + dims + "), }";
    header.append(64 - (10 + header.size() + 1) % 64, ' ');
    header += '\n';
    std::ofstream out(path(name), std::ios::binary);
    out.write("\x93NUMPY\x01\x00", 8);
    out.put(static_cast<char>(header.size() & 0xff)).put(static_cast<char>(header.size() >> 8));
    out << header;
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
    return path(name);
  }

  // A gzip IDX file of unsigned bytes.
  std::string idx(const std::string& name, const std::vector<std::uint32_t>& dims, const std::vector<unsigned char>& data) {
    gzFile f = gzopen(path(name).c_str(), "wb");
    const unsigned char magic[4] = {0, 0, 0x08, static_cast<unsigned char>(dims.size())};
    gzwrite(f, magic, 4);
    for (std::uint32_t d : dims) {
      const unsigned char b[4] = {static_cast<unsigned char>(d >> 24), static_cast<unsigned char>(d >> 16),
                                  static_cast<unsigned char>(d >> 8), static_cast<unsigned char>(d)};
      gzwrite(f, b, 4);
    }
    gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
    gzclose(f);
    return path(name);
  }

  fs::path dir_;
};

std::vector<std::int64_t> labels_of(int n, int classes) {
  std::vector<std::int64_t> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i % classes;
  return v;
}

std::string error_of(const ImageFiles& files, ImageLayout layout = ImageLayout::Auto, int classes = 10) {
  try {
    rsi::models::load_images(files, layout, classes);
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

TEST_F(ImageFilesTest, NpyUint8ChannelsLastBecomesChannelsFirstScaledToOne) {
  // 2 images of 2x3 pixels, 3 channels, (N, H, W, C): value = 100*n + 10*c + (y*3 + x)
  std::vector<unsigned char> pixels;
  for (int n = 0; n < 2; ++n)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x)
        for (int c = 0; c < 3; ++c) pixels.push_back(static_cast<unsigned char>(100 * n + 10 * c + y * 3 + x));
  const std::vector<std::int64_t> labels = {3, 1};
  const ImageFiles files{"", npy("x.npy", "|u1", {2, 2, 3, 3}, pixels.data(), pixels.size()),
                         npy("y.npy", "<i8", {2}, labels.data(), labels.size() * 8)};
  const auto info = rsi::models::probe_images(files, ImageLayout::Auto);
  EXPECT_EQ(info.count, 2);
  EXPECT_EQ(info.channels, 3);
  EXPECT_EQ(info.height, 2);
  EXPECT_EQ(info.width, 3);
  EXPECT_EQ(info.max_label, 3);
  const auto data = rsi::models::load_images(files, ImageLayout::Auto, 4);
  ASSERT_EQ(data.pixels(), 18);
  EXPECT_EQ(data.classes, 4);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{3, 1}));
  for (int n = 0; n < 2; ++n)
    for (int c = 0; c < 3; ++c)
      for (int p = 0; p < 6; ++p)
        EXPECT_FLOAT_EQ(data.image(n)[c * 6 + p], static_cast<float>(100 * n + 10 * c + p) / 255.0f) << n << c << p;
}

TEST_F(ImageFilesTest, NpyFloatChannelsFirstAndBigEndianLabels) {
  std::vector<float> pixels(2 * 1 * 4 * 4);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(i) / 64.0f;
  const unsigned char labels[8] = {0, 0, 0, 7, 0, 0, 0, 2};  // '>i4': 7, 2
  const ImageFiles files{"", npy("x.npy", "<f4", {2, 1, 4, 4}, pixels.data(), pixels.size() * 4),
                         npy("y.npy", ">i4", {2}, labels, sizeof labels)};
  const auto data = rsi::models::load_images(files, ImageLayout::Auto, 8);
  EXPECT_EQ(data.channels, 1);
  EXPECT_EQ(data.rows, 4);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{7, 2}));
  EXPECT_EQ(data.images, pixels);
}

TEST_F(ImageFilesTest, GzipIdxAsFashionMnistWritesIt) {
  std::vector<unsigned char> pixels(3 * 5 * 4);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<unsigned char>(i * 4);
  const ImageFiles files{"", idx("images.idx3-ubyte.gz", {3, 5, 4}, pixels), idx("labels.idx1-ubyte.gz", {3}, {1, 0, 1})};
  const auto data = rsi::models::load_images(files, ImageLayout::Auto, 2);
  EXPECT_EQ(data.size(), 3);
  EXPECT_EQ(data.rows, 5);
  EXPECT_EQ(data.cols, 4);
  EXPECT_FLOAT_EQ(data.images[7], 28.0f / 255.0f);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{1, 0, 1}));
}

TEST_F(ImageFilesTest, Hdf5DatasetsInGroups) {
  const std::string file = path("data.h5");
  const hid_t f = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  const hid_t g = H5Gcreate2(f, "test", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  std::vector<unsigned char> pixels(4 * 6 * 6, 255);
  const hsize_t image_dims[3] = {4, 6, 6}, label_dims[1] = {4};
  const hid_t is = H5Screate_simple(3, image_dims, nullptr), ls = H5Screate_simple(1, label_dims, nullptr);
  const hid_t id = H5Dcreate2(g, "images", H5T_STD_U8LE, is, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(id, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, pixels.data());
  const std::vector<std::int64_t> labels = {0, 1, 2, 1};
  const hid_t ld = H5Dcreate2(g, "labels", H5T_STD_I64BE, ls, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(ld, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels.data());
  for (hid_t h : {id, ld}) H5Dclose(h);
  for (hid_t h : {is, ls}) H5Sclose(h);
  H5Gclose(g);
  H5Fclose(f);
  const auto data = rsi::models::load_images({file, "test/images", "test/labels"}, ImageLayout::Auto, 3);
  EXPECT_EQ(data.size(), 4);
  EXPECT_EQ(data.rows, 6);
  EXPECT_FLOAT_EQ(data.images.back(), 1.0f);
  EXPECT_EQ(data.labels, (std::vector<std::int32_t>{0, 1, 2, 1}));
  EXPECT_NE(error_of({file, "test/pixels", "test/labels"}).find("data.h5: no dataset 'test/pixels'"), std::string::npos);
}

TEST_F(ImageFilesTest, ErrorsNameTheFileAndTheProblem) {
  const std::vector<float> big = {0.5f, 2.0f, 0.0f, 0.0f};  // 1 image 2x2 with a value > 1
  const auto labels = labels_of(1, 10);
  const std::string y = npy("y.npy", "<i8", {1}, labels.data(), 8);
  EXPECT_NE(error_of({"", npy("big.npy", "<f4", {1, 2, 2}, big.data(), 16), y}).find("big.npy: value 2 at element 1: float images must be scaled to [0, 1]"),
            std::string::npos);
  EXPECT_NE(error_of({"", path("missing.npy"), y}).find("missing.npy: file not found"), std::string::npos);
  const auto five = labels_of(5, 10);
  EXPECT_NE(error_of({"", npy("one.npy", "<f4", {1, 2, 2}, big.data(), 16), npy("y5.npy", "<i8", {5}, five.data(), 40)})
                .find("y5.npy: 5 labels for 1 images"),
            std::string::npos);
  const std::vector<std::int64_t> eleven = {11};
  EXPECT_NE(error_of({"", npy("ok.npy", "<f4", {1, 2, 2}, std::vector<float>(4, 0.f).data(), 16),
                      npy("y11.npy", "<i8", {1}, eleven.data(), 8)})
                .find("y11.npy: label 11 at index 0 is out of range 0..9"),
            std::string::npos);
  const std::vector<double> float_labels = {1.0};
  EXPECT_NE(error_of({"", path("ok.npy"), npy("yf.npy", "<f8", {1}, float_labels.data(), 8)}).find("yf.npy: labels of type float64"),
            std::string::npos);
  EXPECT_NE(error_of({"", npy("f.npy", "<f4", {1, 2, 2}, big.data(), 16, true), y}).find("f.npy: a Fortran-ordered array"),
            std::string::npos);
  const std::vector<std::int16_t> wide(4, 1);
  EXPECT_NE(error_of({"", npy("i16.npy", "<i2", {1, 2, 2}, wide.data(), 8), y}).find("images of type int16: store them as uint8"),
            std::string::npos);
  // (N, 3, 4, 3): either axis could hold the channels.
  const std::vector<unsigned char> ambiguous(36, 0);
  EXPECT_NE(error_of({"", npy("amb.npy", "|u1", {1, 3, 4, 3}, ambiguous.data(), 36), y}).find("set task.layout to nhwc"),
            std::string::npos);
  EXPECT_EQ(error_of({"", path("amb.npy"), y}, ImageLayout::Nhwc), "");
  {
    std::ofstream(path("text.npz")) << "PK\x03\x04 not really a zip";
  }
  EXPECT_NE(error_of({path("text.npz"), "images", "labels"}).find("text.npz: not a readable zip (.npz) archive"),
            std::string::npos);
  {
    std::ofstream(path("plain.bin")) << "hello, world";
  }
  EXPECT_NE(error_of({path("plain.bin"), "images", "labels"}).find("neither a NumPy .npz (zip) archive nor an HDF5 file"),
            std::string::npos);
  EXPECT_NE(error_of({"", path("plain.bin"), y}).find("neither an IDX file"), std::string::npos);
}

TEST_F(ImageFilesTest, FingerprintChangesWithOnePixel) {
  std::vector<unsigned char> pixels(2 * 3 * 3, 7);
  const auto labels = labels_of(2, 2);
  const ImageFiles files{"", npy("x.npy", "|u1", {2, 3, 3}, pixels.data(), pixels.size()),
                         npy("y.npy", "<i8", {2}, labels.data(), 16)};
  const auto a = rsi::models::data_fingerprint(rsi::models::load_images(files, ImageLayout::Auto, 2));
  EXPECT_EQ(a, rsi::models::data_fingerprint(rsi::models::load_images(files, ImageLayout::Auto, 2)));
  pixels[5] = 8;
  npy("x.npy", "|u1", {2, 3, 3}, pixels.data(), pixels.size());
  EXPECT_NE(a, rsi::models::data_fingerprint(rsi::models::load_images(files, ImageLayout::Auto, 2)));
}

// The manifest's task kind images: the input read from the data, defaults of the split, and errors
// that name the manifest's line, the key and the file.
TEST_F(ImageFilesTest, ManifestReadsTheInputFromTheData) {
  std::vector<unsigned char> pixels(20 * 6 * 6 * 3, 9);  // (20, 6, 6, 3)
  const auto labels = labels_of(20, 4);
  npy("x.npy", "|u1", {20, 6, 6, 3}, pixels.data(), pixels.size());
  npy("y.npy", "<i8", {20}, labels.data(), 160);
  const std::string seed = "seeds:\n  - architecture: [{dense: {units: 4}}]\n";
  const auto parse = [&](const std::string& task) {
    return rsi::runtime::parse_manifest("task:\n" + task + seed, "m.yaml", dir_.string());
  };
  const std::string both = "  kind: images\n  train: {images: x.npy, labels: y.npy}\n  test: {images: x.npy, labels: y.npy}\n";
  const auto rc = parse(both);
  EXPECT_EQ(rc.loop.task.input, (rsi::models::InputSpec{3, 6, 6, 4}));
  EXPECT_EQ(rc.loop.task.split.validation, 2);  // a tenth
  EXPECT_EQ(rc.loop.task.split.unlabeled, 0);
  EXPECT_EQ(rc.loop.task.split.labeled, 18);
  EXPECT_EQ(rc.loop.task.train_files.images, path("x.npy"));  // absolute, relative to the manifest
  EXPECT_NE(rsi::runtime::resolved_yaml(rc).find("train: {images: " + path("x.npy")), std::string::npos);
  const auto error = [&](const std::string& task) {
    try {
      parse(task);
    } catch (const rsi::runtime::ManifestError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error(both + "  classes: [a, b, c]\n").find("task.classes: 3 names, but the labels go up to 3"), std::string::npos);
  EXPECT_NE(error(both + "  labeled: 19\n").find("exceed the 20 training images of " + path("x.npy")), std::string::npos);
  EXPECT_NE(error("  kind: images\n  train: {images: x.npy, labels: y.npy}\n").find("task.test: missing"), std::string::npos);
  EXPECT_NE(error("  kind: fashion_mnist\n  train: {images: x.npy, labels: y.npy}\n").find("m.yaml:3:10: task.train: only with task.kind: images"),
            std::string::npos);
  EXPECT_NE(error("  kind: images\n  train: {images: x.npy, labels: nope.npy}\n  test: {images: x.npy, labels: y.npy}\n")
                .find("m.yaml:3:10: task.train: " + path("nope.npy") + ": file not found"),
            std::string::npos);
  // A seed that does not end in one unit per class is refused against the data's classes.
  try {
    rsi::runtime::parse_manifest("task:\n" + both + "seeds:\n  - architecture: [{dense: {units: 10}}]\n", "m.yaml", dir_.string());
    ADD_FAILURE() << "a 10-class seed passed on 4 classes";
  } catch (const rsi::runtime::ManifestError& e) {
    EXPECT_NE(std::string(e.what()).find("4"), std::string::npos) << e.what();
  }
}

TEST(AugmentChannels, EveryChannelMovesAlike) {
  rsi::models::Dataset d;
  d.channels = 2, d.rows = 5, d.cols = 5;
  d.labels = {0, 1, 0};
  d.images.resize(3 * 50);
  for (std::size_t i = 0; i < d.images.size(); ++i) d.images[i] = static_cast<float>((i % 25) + 1) / 32.0f;  // planes equal
  const std::int64_t ids[3] = {0, 1, 2};
  rsi::models::Augmentation aug;
  aug.shift = 2;
  aug.flip = true;
  const rsi::kernels::CounterRng rng(3, 4);
  std::vector<float> out(150);
  rsi::models::augment_batch(d, ids, 3, aug, rng, out.data());
  bool moved = false;
  for (int n = 0; n < 3; ++n) {
    for (int p = 0; p < 25; ++p) EXPECT_EQ(out[n * 50 + p], out[n * 50 + 25 + p]) << n << " " << p;
    moved |= !std::equal(out.begin() + n * 50, out.begin() + n * 50 + 25, d.images.begin() + n * 50);
  }
  EXPECT_TRUE(moved);
}

}  // namespace
