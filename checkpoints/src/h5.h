// Thin RAII and error handling over the HDF5 1.10 C API, for the lineage store only. Every failure
// throws CheckpointError with what was being done and HDF5's own reason (its error stack, which is
// never printed to stderr: silence() turns the automatic printing off).
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace rsi::checkpoints::h5 {

// Turns HDF5's automatic error printing off (idempotent; call at every public entry point).
void silence();

// HDF5's error stack as one line ("the innermost reasons"), cleared afterwards.
std::string take_error_stack();

// Throws CheckpointError("<what>: <HDF5's reason>").
[[noreturn]] void fail(const std::string& what);

class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = other.id_;
      closer_ = other.closer_;
      other.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and throws when that fails (closing a file flushes it, so its errors matter).
  void close(const std::string& what);
  // Closes, ignoring errors (destructors, error paths).
  void reset() noexcept;

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

// ---- files and groups ----
Handle create_file(const std::string& path);
Handle open_file(const std::string& path, bool writable = false);
// Asks the kernel to start writing the file's dirty pages to disk now, without waiting (Linux
// sync_file_range), so that the disk works while the caller keeps computing and writing: the fsync
// at the end then waits only for the tail. Starts at byte `from` (what an earlier call covered:
// pages already queued are not walked again) and returns the file's size, the next call's `from`.
// A no-op where the call or the file descriptor is missing.
std::uint64_t start_writeback(hid_t file, std::uint64_t from = 0);
Handle create_group(hid_t loc, const std::string& name);
Handle open_group(hid_t loc, const std::string& name);
bool has_link(hid_t loc, const std::string& name);  // a direct member of loc
bool has_attr(hid_t loc, const std::string& name);
std::vector<std::string> member_names(hid_t group);  // in HDF5's name order
void hard_link(hid_t from_loc, const std::string& from, hid_t to_loc, const std::string& to);

// ---- attributes (scalars and 1-D arrays; strings are variable-length UTF-8) ----
void write_string(hid_t loc, const std::string& name, const std::string& value);
void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& values);
void write_u64(hid_t loc, const std::string& name, std::uint64_t value);
void write_i64(hid_t loc, const std::string& name, std::int64_t value);
void write_int(hid_t loc, const std::string& name, int value);
void write_bool(hid_t loc, const std::string& name, bool value);
void write_f64(hid_t loc, const std::string& name, double value);
void write_u64s(hid_t loc, const std::string& name, const std::vector<std::uint64_t>& values);
void write_f64s(hid_t loc, const std::string& name, const std::vector<double>& values);

std::string read_string(hid_t loc, const std::string& name);
std::vector<std::string> read_strings(hid_t loc, const std::string& name);
std::uint64_t read_u64(hid_t loc, const std::string& name);
std::int64_t read_i64(hid_t loc, const std::string& name);
int read_int(hid_t loc, const std::string& name);
bool read_bool(hid_t loc, const std::string& name);
double read_f64(hid_t loc, const std::string& name);
std::vector<std::uint64_t> read_u64s(hid_t loc, const std::string& name);
std::vector<double> read_f64s(hid_t loc, const std::string& name);

// ---- datasets ----
// A scalar variable-length UTF-8 string.
void write_text(hid_t loc, const std::string& name, const std::string& text);
std::string read_text(hid_t loc, const std::string& name);
// A 1-D little-endian float32 dataset, chunked, with the Fletcher32 checksum filter (the chunks are
// written directly, with a Fletcher32 computed as HDF5's filter does: see fletcher32.h).
void write_floats(hid_t loc, const std::string& name, const std::vector<float>& values);
std::vector<float> read_floats(hid_t loc, const std::string& name);

}  // namespace rsi::checkpoints::h5
