// A gzip or plain file read through zlib (gzopen reads both), shared by the IDX reader (data.cpp) and
// the image-file readers (image_files.cpp). Private to rsi_models.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

#include "rsi/models/data.h"

namespace rsi::models::detail {

// A gzip or plain file opened through zlib, closed on scope exit. Every failure names the file.
class GzFile {
 public:
  explicit GzFile(std::string path) : path_(std::move(path)) {
    std::error_code ec;
    const auto status = std::filesystem::status(path_, ec);
    if (!std::filesystem::exists(status)) throw DataError(path_ + ": file not found");
    if (!std::filesystem::is_regular_file(status)) throw DataError(path_ + ": not a regular file");
    errno = 0;
    file_ = gzopen(path_.c_str(), "rb");
    if (file_ == nullptr) {
      throw DataError(path_ + ": cannot open: " + (errno != 0 ? std::strerror(errno) : "zlib could not allocate"));
    }
    gzbuffer(file_, 1u << 17);  // larger than the 8 KiB default: fewer syscalls on a 26 MB file
  }
  ~GzFile() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  const std::string& path() const { return path_; }

  // Reads exactly `size` bytes of `what`, or throws saying how many bytes came and why not more.
  void read_exact(void* destination, std::uint64_t size, const std::string& what) {
    auto* bytes = static_cast<unsigned char*>(destination);
    std::uint64_t got = 0;
    while (got < size) {
      // gzread takes an unsigned length but returns an int: keep each call below INT_MAX.
      const auto chunk = static_cast<unsigned>(std::min<std::uint64_t>(size - got, 1u << 30));
      const int n = gzread(file_, bytes + got, chunk);
      if (n < 0) throw DataError(path_ + ": cannot read " + what + ": " + zlib_error());
      if (n == 0) break;
      got += static_cast<std::uint64_t>(n);
    }
    if (got < size) {
      std::string message = path_ + ": truncated: expected " + std::to_string(size) + " bytes of " + what +
                            ", got " + std::to_string(got);
      int errnum = Z_OK;
      gzerror(file_, &errnum);
      if (errnum != Z_OK) message += " (" + zlib_error() + ")";
      throw DataError(message);
    }
  }

  std::uint32_t read_u32_big_endian(const std::string& what) {
    std::array<unsigned char, 4> b{};
    read_exact(b.data(), b.size(), what);
    return (std::uint32_t{b[0]} << 24) | (std::uint32_t{b[1]} << 16) | (std::uint32_t{b[2]} << 8) | b[3];
  }

  // After the payload the file must end. Reading one more byte also makes zlib check the gzip
  // trailer (CRC-32 and length), so a corrupt or truncated stream is caught here, not ignored.
  void expect_end(const std::string& what) {
    unsigned char extra = 0;
    const int n = gzread(file_, &extra, 1);
    if (n < 0) throw DataError(path_ + ": corrupt after " + what + ": " + zlib_error());
    if (n > 0) throw DataError(path_ + ": unexpected trailing data after " + what + " (does the header match the file?)");
    int errnum = Z_OK;
    gzerror(file_, &errnum);
    if (errnum != Z_OK) throw DataError(path_ + ": truncated gzip stream after " + what + " (" + zlib_error() + ")");
  }

 private:
  std::string zlib_error() {
    int errnum = Z_OK;
    const char* message = gzerror(file_, &errnum);
    if (errnum == Z_ERRNO) return std::string("read error: ") + std::strerror(errno);
    std::string text = message != nullptr && *message != '\0' ? message : "unknown error";
    // zlib prefixes its message with the path, which ours already starts with.
    if (text.starts_with(path_ + ": ")) text.erase(0, path_.size() + 2);
    return "zlib: " + text;
  }

  std::string path_;
  gzFile file_ = nullptr;
};

}  // namespace rsi::models::detail
