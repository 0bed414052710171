// rsi::models image files — readers for the task kind `images` (image_files.h).
// Every source ends in the same two steps: a header (element type, byte order, shape) and the raw
// element bytes, then one conversion to floats in [0, 1] ([N][C][H][W]) or integer labels.
//   IDX:  big-endian magic 0x0000TTNN (TT: 08 u8, 09 i8, 0B i16, 0C i32, 0D f32, 0E f64; NN dims),
//         NN big-endian u32 dimensions, the data (big-endian); gzip or plain (zlib reads both).
//   .npy: "\x93NUMPY", version, header length, a Python dict literal {'descr', 'fortran_order',
//         'shape'}, the data (C order). numpy.lib.format documents it.
//   .npz: a zip archive of .npy members (stored or deflated, zip64 as numpy writes it).
//   HDF5: a dataset of an integer or float type, read through the HDF5 C API (converted by HDF5).
#include "rsi/models/image_files.h"

#include <hdf5.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>

#include "gz_file.h"
#include "rsi/kernels/fnv1a.h"

namespace rsi::models {
namespace {

// More values than any real image data set has; beyond it a header is corrupt (or the data set
// would not fit in memory as floats anyway).
constexpr std::int64_t kMaxElements = std::int64_t{1} << 33;
constexpr std::int64_t kMaxSide = 1 << 16;

struct ArrayHeader {
  char kind = 'u';  // 'u' unsigned integer, 'i' signed integer, 'f' float
  int bytes = 1;    // per element
  bool big_endian = false;
  std::vector<std::int64_t> shape;

  std::int64_t elements() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  std::string type() const {
    return std::string(kind == 'u' ? "uint" : kind == 'i' ? "int" : "float") + std::to_string(8 * bytes);
  }
  std::string shape_text() const {
    std::string s = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + (shape.size() == 1 ? ",)" : ")");
  }
};

// An array read from one source: its header, then (on demand) its raw element bytes.
class ArraySource {
 public:
  virtual ~ArraySource() = default;
  const ArrayHeader& header() const { return header_; }
  const std::string& where() const { return where_; }
  virtual std::vector<unsigned char> payload() = 0;

 protected:
  void check_header() {
    if (header_.shape.empty()) throw DataError(where_ + ": a scalar, not an array");
    std::int64_t n = 1;
    for (auto d : header_.shape) {
      if (d < 0 || d > std::int64_t{1} << 40 || (d > 0 && n > kMaxElements / d))
        throw DataError(where_ + ": implausible shape " + header_.shape_text() + " (the header is corrupt?)");
      n *= d;
    }
    if (n > kMaxElements) throw DataError(where_ + ": " + header_.shape_text() + " is too large");
  }
  ArrayHeader header_;
  std::string where_;
};

// ---- byte streams: a gzip or plain file, or a member of a zip archive ----

class Stream {
 public:
  virtual ~Stream() = default;
  virtual void read_exact(void* destination, std::uint64_t size, const std::string& what) = 0;
};

class FileStream final : public Stream {
 public:
  explicit FileStream(const std::string& path) : file_(path) {}
  void read_exact(void* destination, std::uint64_t size, const std::string& what) override {
    file_.read_exact(destination, size, what);
  }

 private:
  detail::GzFile file_;
};

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_file(const std::string& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) throw DataError(path + ": file not found");
  if (!std::filesystem::is_regular_file(status)) throw DataError(path + ": not a regular file");
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) throw DataError(path + ": cannot open: " + std::strerror(errno));
  return f;
}

std::uint64_t little(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// One member of a zip archive (stored or deflated), read as a stream; its CRC-32 is checked when
// the whole member has been read.
class ZipMember final : public Stream {
 public:
  ZipMember(const std::string& path, const std::string& name) : path_(path), where_(path + ":" + name) {
    file_ = open_file(path);
    locate(name);
  }
  ~ZipMember() override {
    if (inflating_) inflateEnd(&z_);
  }
  ZipMember(const ZipMember&) = delete;
  ZipMember& operator=(const ZipMember&) = delete;

  void read_exact(void* destination, std::uint64_t size, const std::string& what) override {
    auto* out = static_cast<unsigned char*>(destination);
    std::uint64_t got = 0;
    while (got < size) {
      const std::uint64_t n = read_some(out + got, size - got);
      if (n == 0) break;
      got += n;
    }
    if (got < size)
      throw DataError(where_ + ": truncated: expected " + std::to_string(size) + " bytes of " + what + ", got " +
                      std::to_string(got));
    if (produced_ == size_ && crc_ != expected_crc_)
      throw DataError(where_ + ": CRC-32 mismatch: the archive is corrupt");
  }

 private:
  [[noreturn]] void corrupt(const std::string& why) const { throw DataError(path_ + ": not a readable zip (.npz) archive: " + why); }

  void read_at(std::uint64_t offset, void* out, std::size_t size, const char* what) {
    if (fseeko(file_.get(), static_cast<off_t>(offset), SEEK_SET) != 0 || std::fread(out, 1, size, file_.get()) != size)
      corrupt(std::string("cannot read the ") + what);
  }

  // The central directory gives each member's sizes and offset (zip64 extra fields where numpy
  // writes them); the local header then says where the data starts.
  void locate(const std::string& name) {
    fseeko(file_.get(), 0, SEEK_END);
    const auto file_size = static_cast<std::uint64_t>(ftello(file_.get()));
    const std::uint64_t tail = std::min<std::uint64_t>(file_size, 65535 + 22);
    std::vector<unsigned char> end(tail);
    read_at(file_size - tail, end.data(), end.size(), "end of the archive");
    std::int64_t eocd = -1;
    for (std::int64_t i = static_cast<std::int64_t>(tail) - 22; i >= 0; --i)
      if (little(&end[static_cast<std::size_t>(i)], 4) == 0x06054b50) {
        eocd = i;
        break;
      }
    if (eocd < 0) corrupt("no end-of-central-directory record");
    const unsigned char* e = &end[static_cast<std::size_t>(eocd)];
    std::uint64_t entries = little(e + 10, 2), dir_size = little(e + 12, 4), dir_offset = little(e + 16, 4);
    if ((entries == 0xffff || dir_size == 0xffffffff || dir_offset == 0xffffffff) && eocd >= 20 &&
        little(e - 20, 4) == 0x07064b50) {  // zip64 end-of-central-directory locator
      unsigned char z[56];
      read_at(little(e - 20 + 8, 8), z, sizeof z, "zip64 end of central directory");
      if (little(z, 4) != 0x06064b50) corrupt("bad zip64 end-of-central-directory record");
      entries = little(z + 32, 8), dir_size = little(z + 40, 8), dir_offset = little(z + 48, 8);
    }
    if (dir_offset + dir_size > file_size || dir_size > (std::uint64_t{1} << 30)) corrupt("central directory out of range");
    std::vector<unsigned char> dir(dir_size);
    read_at(dir_offset, dir.data(), dir.size(), "central directory");
    std::vector<std::string> names;
    std::size_t p = 0;
    for (std::uint64_t k = 0; k < entries; ++k) {
      if (p + 46 > dir.size() || little(&dir[p], 4) != 0x02014b50) corrupt("bad central directory entry");
      const unsigned char* c = &dir[p];
      const std::size_t name_len = little(c + 28, 2), extra_len = little(c + 30, 2), comment_len = little(c + 32, 2);
      if (p + 46 + name_len + extra_len + comment_len > dir.size()) corrupt("bad central directory entry");
      const std::string member(reinterpret_cast<const char*>(c + 46), name_len);
      names.push_back(member);
      if (member == name + ".npy" || member == name) {
        method_ = static_cast<int>(little(c + 10, 2));
        expected_crc_ = static_cast<std::uint32_t>(little(c + 16, 4));
        std::uint64_t compressed = little(c + 20, 4), size = little(c + 24, 4), offset = little(c + 42, 4);
        for (std::size_t x = 0; x + 4 <= extra_len;) {  // zip64: the fields that are 0xffffffff, in this order
          const unsigned char* f = c + 46 + name_len + x;
          const std::size_t id = little(f, 2), len = little(f + 2, 2);
          if (x + 4 + len > extra_len) corrupt("bad extra field in the entry of " + member);
          if (id == 0x0001) {
            std::size_t at = 4;
            for (std::uint64_t* v : {&size, &compressed, &offset})
              if (*v == 0xffffffff && at + 8 <= 4 + len) *v = little(f + at, 8), at += 8;
          }
          x += 4 + len;
        }
        if (method_ != 0 && method_ != 8)
          corrupt("member " + member + " uses compression method " + std::to_string(method_) +
                  " (numpy.savez and savez_compressed write 0 and 8)");
        unsigned char local[30];
        read_at(offset, local, sizeof local, "local header");
        if (little(local, 4) != 0x04034b50) corrupt("bad local header of " + member);
        data_offset_ = offset + 30 + little(local + 26, 2) + little(local + 28, 2);
        remaining_ = compressed;
        size_ = size;
        if (data_offset_ + compressed > file_size) corrupt("member " + member + " runs past the end of the file");
        if (fseeko(file_.get(), static_cast<off_t>(data_offset_), SEEK_SET) != 0) corrupt("cannot seek");
        if (method_ == 8) {
          if (inflateInit2(&z_, -MAX_WBITS) != Z_OK) throw DataError(where_ + ": zlib could not start");
          inflating_ = true;
        }
        return;
      }
      p += 46 + name_len + extra_len + comment_len;
    }
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "" : ", ") + (n.ends_with(".npy") ? n.substr(0, n.size() - 4) : n);
    throw DataError(path_ + ": no array '" + name + "' in the archive (it has: " + (list.empty() ? "nothing" : list) + ")");
  }

  std::uint64_t read_some(unsigned char* out, std::uint64_t want) {
    want = std::min<std::uint64_t>(want, size_ - produced_);
    if (want == 0) return 0;
    std::uint64_t n = 0;
    if (method_ == 0) {
      n = std::fread(out, 1, static_cast<std::size_t>(std::min<std::uint64_t>(want, remaining_)), file_.get());
      remaining_ -= n;
    } else {
      z_.next_out = out;
      z_.avail_out = static_cast<uInt>(std::min<std::uint64_t>(want, 1u << 30));
      while (z_.avail_out > 0) {
        if (z_.avail_in == 0 && remaining_ > 0) {
          const std::size_t chunk = std::fread(in_.data(), 1, std::min<std::uint64_t>(in_.size(), remaining_), file_.get());
          if (chunk == 0) break;
          remaining_ -= chunk;
          z_.next_in = in_.data();
          z_.avail_in = static_cast<uInt>(chunk);
        }
        const uInt before = z_.avail_out;
        const int rc = inflate(&z_, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) break;
        if (rc != Z_OK && !(rc == Z_BUF_ERROR && before != z_.avail_out))
          throw DataError(where_ + ": corrupt deflate data (zlib: " + (z_.msg ? z_.msg : "error") + ")");
        if (rc == Z_BUF_ERROR) break;
      }
      n = (std::min<std::uint64_t>(want, 1u << 30)) - z_.avail_out;
    }
    crc_ = static_cast<std::uint32_t>(crc32(crc_, out, static_cast<uInt>(n)));
    produced_ += n;
    return n;
  }

  std::string path_, where_;
  File file_;
  int method_ = 0;
  std::uint32_t expected_crc_ = 0, crc_ = 0;
  std::uint64_t data_offset_ = 0, remaining_ = 0, size_ = 0, produced_ = 0;
  z_stream z_{};
  bool inflating_ = false;
  std::vector<unsigned char> in_ = std::vector<unsigned char>(1 << 16);
};

// ---- .npy and IDX headers over a stream ----

constexpr unsigned char kNpyMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

// The value of `key` in a .npy header's dict literal, as its source text.
std::string npy_field(const std::string& header, const std::string& key, const std::string& where) {
  const std::size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw DataError(where + ": .npy header without '" + key + "': " + header);
  std::size_t v = header.find(':', at);
  if (v == std::string::npos) throw DataError(where + ": bad .npy header: " + header);
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  if (v >= header.size()) throw DataError(where + ": bad .npy header: " + header);
  std::size_t end = v;
  if (header[v] == '(') end = header.find(')', v) + 1;
  else if (header[v] == '\'') end = header.find('\'', v + 1) + 1;
  else end = header.find_first_of(",}", v);
  if (end == std::string::npos || end == 0 || end > header.size()) throw DataError(where + ": bad .npy header: " + header);
  return header.substr(v, end - v);
}

class StreamArray final : public ArraySource {
 public:
  // A whole file (IDX or .npy) or a .npz member (.npy).
  StreamArray(std::unique_ptr<Stream> stream, std::string where, bool npy_only) : stream_(std::move(stream)) {
    where_ = std::move(where);
    unsigned char magic[6];
    stream_->read_exact(magic, 4, "header");
    if (std::memcmp(magic, kNpyMagic, 4) == 0) {
      stream_->read_exact(magic + 4, 2, "header");
      if (std::memcmp(magic, kNpyMagic, 6) != 0) throw DataError(where_ + ": bad .npy magic");
      read_npy_header();
    } else if (!npy_only && magic[0] == 0 && magic[1] == 0 && magic[3] >= 1 && magic[3] <= 4) {
      read_idx_header(magic[2], magic[3]);
    } else {
      throw DataError(where_ + (npy_only ? ": not a NumPy array (.npy) member"
                                          : ": neither an IDX file (magic 0x000008NN, gzip or plain) nor a NumPy .npy file"));
    }
    check_header();
  }

  std::vector<unsigned char> payload() override {
    const auto size = static_cast<std::uint64_t>(header_.elements()) * static_cast<std::uint64_t>(header_.bytes);
    std::vector<unsigned char> raw(size);
    stream_->read_exact(raw.data(), size, "data " + header_.shape_text() + " " + header_.type());
    return raw;
  }

 private:
  void read_npy_header() {
    unsigned char version[2];
    stream_->read_exact(version, 2, ".npy version");
    if (version[0] < 1 || version[0] > 3)
      throw DataError(where_ + ": .npy format version " + std::to_string(version[0]) + " is not supported (1 to 3 are)");
    unsigned char length[4] = {0, 0, 0, 0};
    stream_->read_exact(length, version[0] == 1 ? 2 : 4, ".npy header length");
    const std::uint64_t n = little(length, version[0] == 1 ? 2 : 4);
    if (n > (1u << 20)) throw DataError(where_ + ": implausible .npy header length " + std::to_string(n));
    std::string header(n, '\0');
    stream_->read_exact(header.data(), n, ".npy header");
    const std::string descr = npy_field(header, "descr", where_);
    if (npy_field(header, "fortran_order", where_) != "False")
      throw DataError(where_ + ": a Fortran-ordered array: save it with numpy.ascontiguousarray(a)");
    // descr: '<f4', '|u1', ...: byte order, kind, size
    if (descr.size() < 4 || descr.front() != '\'' || descr.back() != '\'')
      throw DataError(where_ + ": element type " + descr + " is not supported (a structured array?)");
    const char order = descr[1], kind = descr[2];
    const std::string size = descr.substr(3, descr.size() - 4);
    if ((kind != 'u' && kind != 'i' && kind != 'f') || (size != "1" && size != "2" && size != "4" && size != "8") ||
        (kind == 'f' && (size == "1" || size == "2")))
      throw DataError(where_ + ": element type " + descr +
                      " is not supported (integers of 1 to 8 bytes, or float32/float64)");
    header_.kind = kind;
    header_.bytes = std::stoi(size);
    header_.big_endian = order == '>';
    const std::string shape = npy_field(header, "shape", where_);
    std::string number;
    for (char ch : shape.substr(1)) {
      if (std::isdigit(static_cast<unsigned char>(ch))) {
        number += ch;
      } else if (!number.empty()) {
        header_.shape.push_back(std::stoll(number.substr(0, 15)));
        number.clear();
      }
    }
  }

  void read_idx_header(unsigned char type, unsigned char dims) {
    switch (type) {
      case 0x08: header_.kind = 'u', header_.bytes = 1; break;
      case 0x09: header_.kind = 'i', header_.bytes = 1; break;
      case 0x0B: header_.kind = 'i', header_.bytes = 2; break;
      case 0x0C: header_.kind = 'i', header_.bytes = 4; break;
      case 0x0D: header_.kind = 'f', header_.bytes = 4; break;
      case 0x0E: header_.kind = 'f', header_.bytes = 8; break;
      default: {
        char code[8];
        std::snprintf(code, sizeof code, "0x%02X", static_cast<unsigned>(type));
        throw DataError(where_ + ": IDX element type " + code +
                        " is not one of IDX's (0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)");
      }
    }
    header_.big_endian = true;
    for (int d = 0; d < dims; ++d) {
      unsigned char b[4];
      stream_->read_exact(b, 4, "IDX header (dimension " + std::to_string(d) + ")");
      header_.shape.push_back((std::int64_t{b[0]} << 24) | (std::int64_t{b[1]} << 16) | (std::int64_t{b[2]} << 8) | b[3]);
    }
  }

  std::unique_ptr<Stream> stream_;
};

// ---- HDF5 ----

struct H5Id {
  hid_t id = -1;
  herr_t (*close)(hid_t) = nullptr;
  ~H5Id() {
    if (id >= 0 && close) close(id);
  }
};

class Hdf5Array final : public ArraySource {
 public:
  Hdf5Array(const std::string& path, const std::string& name) {
    where_ = path + ":" + name;
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    file_.id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    file_.close = H5Fclose;
    if (file_.id < 0) throw DataError(path + ": cannot open as an HDF5 file");
    if (H5Lexists(file_.id, name.c_str(), H5P_DEFAULT) <= 0)
      throw DataError(path + ": no dataset '" + name + "' in the file");
    set_.id = H5Dopen2(file_.id, name.c_str(), H5P_DEFAULT);
    set_.close = H5Dclose;
    if (set_.id < 0) throw DataError(where_ + ": not a dataset");
    H5Id type{H5Dget_type(set_.id), H5Tclose};
    const H5T_class_t cls = H5Tget_class(type.id);
    const auto size = static_cast<int>(H5Tget_size(type.id));
    if (cls == H5T_INTEGER && (size == 1 || size == 2 || size == 4 || size == 8)) {
      header_.kind = H5Tget_sign(type.id) == H5T_SGN_NONE ? 'u' : 'i';
    } else if (cls == H5T_FLOAT && (size == 4 || size == 8)) {
      header_.kind = 'f';
    } else {
      throw DataError(where_ + ": element type is not supported (integers of 1 to 8 bytes, or float32/float64)");
    }
    header_.bytes = size;
    H5Id space{H5Dget_space(set_.id), H5Sclose};
    const int rank = H5Sget_simple_extent_ndims(space.id);
    if (rank < 0 || rank > 8) throw DataError(where_ + ": not a simple array");
    std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
    H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
    for (auto d : dims) header_.shape.push_back(static_cast<std::int64_t>(d));
    check_header();
  }

  std::vector<unsigned char> payload() override {
    std::vector<unsigned char> raw(static_cast<std::size_t>(header_.elements()) * static_cast<std::size_t>(header_.bytes));
    hid_t memory = header_.kind == 'f' ? (header_.bytes == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE)
                   : header_.kind == 'u' ? (header_.bytes == 1 ? H5T_NATIVE_UINT8 : header_.bytes == 2 ? H5T_NATIVE_UINT16
                                            : header_.bytes == 4 ? H5T_NATIVE_UINT32 : H5T_NATIVE_UINT64)
                                         : (header_.bytes == 1 ? H5T_NATIVE_INT8 : header_.bytes == 2 ? H5T_NATIVE_INT16
                                            : header_.bytes == 4 ? H5T_NATIVE_INT32 : H5T_NATIVE_INT64);
    if (!raw.empty() && H5Dread(set_.id, memory, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()) < 0)
      throw DataError(where_ + ": cannot read the data (HDF5 reports an error: a corrupt file?)");
    header_.big_endian = false;  // HDF5 converted it to the host's order
    return raw;
  }

 private:
  H5Id file_, set_;
};

// The array `name` of `files.file`, or the file `name` itself.
std::unique_ptr<ArraySource> open_array(const std::string& container, const std::string& name) {
  if (container.empty()) return std::make_unique<StreamArray>(std::make_unique<FileStream>(name), name, false);
  unsigned char magic[4] = {0, 0, 0, 0};
  {
    File f = open_file(container);
    if (std::fread(magic, 1, 4, f.get()) != 4) throw DataError(container + ": too short to be an .npz or HDF5 file");
  }
  if (magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4)
    return std::make_unique<StreamArray>(std::make_unique<ZipMember>(container, name), container + ":" + name, true);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (H5Fis_hdf5(container.c_str()) > 0) return std::make_unique<Hdf5Array>(container, name);
  throw DataError(container + ": neither a NumPy .npz (zip) archive nor an HDF5 file (with `file:`, images and labels "
                              "name arrays inside it; for .npy or IDX files leave `file:` out)");
}

// ---- conversion ----

template <class T>
T element(const unsigned char* raw, std::int64_t i, bool swap) {
  std::array<unsigned char, sizeof(T)> b;
  std::memcpy(b.data(), raw + i * static_cast<std::int64_t>(sizeof(T)), sizeof(T));
  if (swap) std::reverse(b.begin(), b.end());
  return std::bit_cast<T>(b);
}

// f(i, value) for every element, value as double (exact for every integer a label can be).
template <class F>
void for_each_value(const ArrayHeader& h, const std::vector<unsigned char>& raw, F&& f) {
  const bool swap = h.big_endian;  // the hosts rsi runs on are little-endian (x86-64)
  const std::int64_t n = h.elements();
  const unsigned char* r = raw.data();
  const auto run = [&](auto zero) {
    using T = decltype(zero);
    for (std::int64_t i = 0; i < n; ++i) f(i, static_cast<double>(element<T>(r, i, swap)));
  };
  if (h.kind == 'f') h.bytes == 4 ? run(float{}) : run(double{});
  else if (h.kind == 'u')
    h.bytes == 1 ? run(std::uint8_t{}) : h.bytes == 2 ? run(std::uint16_t{}) : h.bytes == 4 ? run(std::uint32_t{}) : run(std::uint64_t{});
  else
    h.bytes == 1 ? run(std::int8_t{}) : h.bytes == 2 ? run(std::int16_t{}) : h.bytes == 4 ? run(std::int32_t{}) : run(std::int64_t{});
}

struct Geometry {
  int channels = 1, height = 0, width = 0;
  bool channels_last = false;
};

Geometry geometry_of(const ArraySource& images, ImageLayout layout) {
  const auto& s = images.header().shape;
  const std::string shape = images.header().shape_text();
  Geometry g;
  if (s.size() == 3) {
    if (layout == ImageLayout::Nchw || layout == ImageLayout::Nhwc) {
      throw DataError(images.where() + ": images " + shape + " have no channel axis: leave task.layout out");
    }
    g.height = static_cast<int>(std::min(s[1], kMaxSide + 1)), g.width = static_cast<int>(std::min(s[2], kMaxSide + 1));
  } else if (s.size() == 4) {
    const auto channel_like = [](std::int64_t d) { return d == 1 || d == 3 || d == 4; };
    bool last = layout == ImageLayout::Nhwc;
    if (layout == ImageLayout::Auto) {
      if (channel_like(s[3]) && !channel_like(s[1])) last = true;
      else if (channel_like(s[1]) && !channel_like(s[3])) last = false;
      else if (s[1] == 1 && s[3] == 1) last = false;
      else if (s[3] == s[2] && s[1] != s[2]) last = false;  // (N, C, S, S): square images, channels first
      else if (s[1] == s[2] && s[3] != s[2]) last = true;   // (N, S, S, C)
      else
        throw DataError(images.where() + ": cannot tell the channel axis of images " + shape +
                        ": set task.layout to nhwc (N, height, width, channels) or nchw (N, channels, height, width)");
    }
    g.channels_last = last;
    const std::int64_t c = last ? s[3] : s[1], h = last ? s[1] : s[2], w = last ? s[2] : s[3];
    if (c < 1 || c > 64)
      throw DataError(images.where() + ": " + std::to_string(c) + " channels in images " + shape + " (layout " +
                      (last ? "nhwc" : "nchw") + "): expected 1 to 64; is task.layout right?");
    g.channels = static_cast<int>(c), g.height = static_cast<int>(std::min(h, kMaxSide + 1)),
    g.width = static_cast<int>(std::min(w, kMaxSide + 1));
  } else {
    throw DataError(images.where() + ": images " + shape +
                    ": expected 3 dimensions (N, height, width) or 4 (N, height, width, channels or N, channels, "
                    "height, width)");
  }
  if (g.height < 1 || g.width < 1 || g.height > kMaxSide || g.width > kMaxSide)
    throw DataError(images.where() + ": images " + shape + ": each side must be 1 to " + std::to_string(kMaxSide));
  return g;
}

// The labels, checked: integers, one per image, >= 0 (and < classes when classes > 0).
std::vector<std::int32_t> read_labels(ArraySource& labels, std::int64_t count, int classes) {
  const ArrayHeader& h = labels.header();
  if (h.kind == 'f')
    throw DataError(labels.where() + ": labels of type " + h.type() + ": expected integers (class indices 0, 1, ...)");
  if (!(h.shape.size() == 1 || (h.shape.size() == 2 && h.shape[1] == 1)))
    throw DataError(labels.where() + ": labels " + h.shape_text() + ": expected one dimension (N,), one label per image");
  if (h.shape[0] != count)
    throw DataError(labels.where() + ": " + std::to_string(h.shape[0]) + " labels for " + std::to_string(count) +
                    " images");
  std::vector<std::int32_t> out(static_cast<std::size_t>(count));
  const std::vector<unsigned char> raw = labels.payload();
  std::optional<std::pair<std::int64_t, double>> bad;
  for_each_value(h, raw, [&](std::int64_t i, double v) {
    if (v < 0 || v > 1e6 || (classes > 0 && v >= classes)) {
      if (!bad) bad.emplace(i, v);
      return;
    }
    out[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
  });
  if (bad) {
    std::ostringstream v;
    v << bad->second;
    throw DataError(labels.where() + ": label " + v.str() + " at index " + std::to_string(bad->first) +
                    (classes > 0 ? " is out of range 0.." + std::to_string(classes - 1) + " (task.classes names " +
                                       std::to_string(classes) + " classes)"
                                 : " is negative or implausibly large"));
  }
  return out;
}

}  // namespace

const char* layout_name(ImageLayout layout) {
  switch (layout) {
    case ImageLayout::Nhwc: return "nhwc";
    case ImageLayout::Nchw: return "nchw";
    default: return "auto";
  }
}

ImageSetInfo probe_images(const ImageFiles& files, ImageLayout layout) {
  const auto images = open_array(files.file, files.images);
  const Geometry g = geometry_of(*images, layout);
  const auto labels = open_array(files.file, files.labels);
  ImageSetInfo info;
  info.count = images->header().shape[0];
  if (info.count < 1) throw DataError(images->where() + ": no images");
  info.channels = g.channels, info.height = g.height, info.width = g.width;
  for (const std::int32_t label : read_labels(*labels, info.count, 0)) info.max_label = std::max<int>(info.max_label, label);
  return info;
}

Dataset load_images(const ImageFiles& files, ImageLayout layout, int classes) {
  const auto images = open_array(files.file, files.images);
  const Geometry g = geometry_of(*images, layout);
  const ArrayHeader& h = images->header();
  const std::int64_t count = h.shape[0];
  if (count < 1) throw DataError(images->where() + ": no images");
  const auto labels = open_array(files.file, files.labels);
  Dataset data;
  data.channels = g.channels, data.rows = g.height, data.cols = g.width, data.classes = classes;
  data.labels = read_labels(*labels, count, classes);
  if (h.kind != 'f' && !(h.kind == 'u' && h.bytes == 1))
    throw DataError(images->where() + ": images of type " + h.type() +
                    ": store them as uint8 (0 to 255) or as float32/float64 scaled to [0, 1]");
  const std::vector<unsigned char> raw = images->payload();
  data.images.resize(static_cast<std::size_t>(h.elements()));
  const std::int64_t plane = std::int64_t{g.height} * g.width, pixels = plane * g.channels;
  const double scale = h.kind == 'u' ? 1.0 / 255.0 : 1.0;
  std::optional<std::pair<std::int64_t, double>> bad;
  float* out = data.images.data();
  for_each_value(h, raw, [&](std::int64_t i, double v) {
    v *= scale;
    if (!(v >= 0.0 && v <= 1.0) && !bad) bad.emplace(i, v);
    std::int64_t at = i;
    if (g.channels_last) {  // (n, y, x, c) -> (n, c, y, x)
      const std::int64_t n = i / pixels, r = i % pixels, c = r % g.channels, yx = r / g.channels;
      at = n * pixels + c * plane + yx;
    }
    out[at] = static_cast<float>(v);
  });
  if (bad) {
    std::ostringstream v;
    v << bad->second;
    throw DataError(images->where() + ": value " + v.str() + " at element " + std::to_string(bad->first) +
                    ": float images must be scaled to [0, 1] (divide by 255, or by the data's maximum)");
  }
  return data;
}

std::uint64_t data_fingerprint(const Dataset& data) {
  std::uint64_t hash = kernels::kFnv1aOffset;
  const std::int64_t shape[5] = {data.size(), data.channels, data.rows, data.cols, data.classes};
  hash = kernels::fnv1a64(shape, sizeof shape, hash);
  hash = kernels::fnv1a64(data.images.data(), data.images.size() * sizeof(float), hash);
  return kernels::fnv1a64(data.labels.data(), data.labels.size() * sizeof(std::int32_t), hash);
}

}  // namespace rsi::models
