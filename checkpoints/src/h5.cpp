// HDF5 helpers of the lineage store (see h5.h).
#include "h5.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>

#include <fcntl.h>
#include <sys/stat.h>

#include "fletcher32.h"
#include "rsi/checkpoints/store.h"

namespace rsi::checkpoints::h5 {

namespace {

// 256 Ki floats = 1 MiB chunks: large enough for sequential bandwidth, small enough that a
// Fletcher32 failure points at a small region.
constexpr hsize_t kChunkFloats = hsize_t{1} << 18;

herr_t collect(unsigned /*n*/, const H5E_error2_t* e, void* out) {
  auto* lines = static_cast<std::vector<std::string>*>(out);
  if (e->desc && *e->desc) {
    std::string line = e->desc;
    if (std::find(lines->begin(), lines->end(), line) == lines->end()) lines->push_back(std::move(line));
  }
  return 0;
}

std::string attr_what(const std::string& name) { return "attribute '" + name + "'"; }

// A damaged dataspace or type can claim any size: refuse more bytes than the whole file holds
// before allocating them.
void check_fits(hid_t obj, std::uint64_t count, std::uint64_t element_size, const std::string& what) {
  Handle file(H5Iget_file_id(obj), H5Fclose);
  hsize_t file_size = 0;
  if (!file.valid() || H5Fget_filesize(file.get(), &file_size) < 0) fail(what + ": file size");
  if (element_size > 0 && count > file_size / element_size)
    throw CheckpointError(what + ": claims " + std::to_string(count) + " values of " + std::to_string(element_size) +
                          " bytes, more than the whole file (" + std::to_string(file_size) +
                          " bytes): the file is damaged");
}

// Strings are stored fixed-length (NUL-padded UTF-8), inline in the object: variable-length
// strings live in HDF5's global heap, and a damaged heap reference crashes HDF5 1.10 when read.
Handle fixed_string_type(std::size_t size) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!t.valid() || H5Tset_size(t.get(), std::max<std::size_t>(size, 1)) < 0 ||
      H5Tset_strpad(t.get(), H5T_STR_NULLPAD) < 0 || H5Tset_cset(t.get(), H5T_CSET_UTF8) < 0)
    fail("fixed-length string type");
  return t;
}

// `values` as one NUL-padded buffer of values.size() x `size` bytes.
std::string pack(const std::vector<std::string>& values, std::size_t size) {
  std::string buf(values.size() * size, '\0');
  for (std::size_t i = 0; i < values.size(); ++i) buf.replace(i * size, values[i].size(), values[i]);
  return buf;
}

std::size_t longest(const std::vector<std::string>& values) {
  std::size_t n = 1;
  for (const auto& v : values) n = std::max(n, v.size());
  return n;
}

// Reads `n` strings of type `file_type` through read(mem_type, buffer): fixed-length (as written
// here) or variable-length (as written by other tools, h5py for one).
template <typename Read>
std::vector<std::string> read_string_values(hid_t obj, hid_t file_type, std::size_t n, const std::string& what,
                                            Read read) {
  if (H5Tget_class(file_type) != H5T_STRING) throw CheckpointError(what + ": not a string");
  check_fits(obj, n, H5Tis_variable_str(file_type) > 0 ? 1 : H5Tget_size(file_type), what);
  std::vector<std::string> out;
  if (H5Tis_variable_str(file_type) > 0) {
    Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
    if (!type.valid() || H5Tset_size(type.get(), H5T_VARIABLE) < 0) fail(what + ": string type");
    std::vector<char*> ptrs(n, nullptr);
    if (n > 0 && read(type.get(), ptrs.data()) < 0) fail("reading " + what);
    for (char* p : ptrs) {
      out.emplace_back(p ? p : "");
      H5free_memory(p);
    }
    return out;
  }
  const std::size_t size = H5Tget_size(file_type);
  Handle type(H5Tcopy(file_type), H5Tclose);
  if (size == 0 || !type.valid()) fail(what + ": string type");
  std::string buf(n * size, '\0');
  if (n > 0 && read(type.get(), buf.data()) < 0) fail("reading " + what);
  for (std::size_t i = 0; i < n; ++i) {
    std::string v = buf.substr(i * size, size);
    v.resize(std::strlen(v.c_str()));
    out.push_back(std::move(v));
  }
  return out;
}

Handle vector_space(hsize_t n) {
  Handle s(H5Screate_simple(1, &n, nullptr), H5Sclose);
  if (!s.valid()) fail("dataspace of " + std::to_string(n) + " values");
  return s;
}

Handle scalar_space() {
  Handle s(H5Screate(H5S_SCALAR), H5Sclose);
  if (!s.valid()) fail("scalar dataspace");
  return s;
}

void write_attr(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, hid_t space, const void* data) {
  if (H5Aexists(loc, name.c_str()) > 0 && H5Adelete(loc, name.c_str()) < 0) fail("replacing " + attr_what(name));
  Handle a(H5Acreate2(loc, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.valid()) fail("creating " + attr_what(name));
  // An empty array has nothing to write (and HDF5 refuses a null buffer).
  if (H5Sget_simple_extent_npoints(space) == 0) return;
  if (H5Awrite(a.get(), mem_type, data) < 0) fail("writing " + attr_what(name));
}

Handle open_attr(hid_t loc, const std::string& name) {
  const htri_t exists = H5Aexists(loc, name.c_str());
  if (exists < 0) fail("looking up " + attr_what(name));
  if (exists == 0) throw CheckpointError(attr_what(name) + ": missing");
  Handle a(H5Aopen(loc, name.c_str(), H5P_DEFAULT), H5Aclose);
  if (!a.valid()) fail("opening " + attr_what(name));
  return a;
}

hssize_t points(hid_t space, const std::string& what) {
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n < 0) fail(what + ": dataspace");
  return n;
}

template <typename T>
T read_scalar(hid_t loc, const std::string& name, hid_t mem_type) {
  Handle a = open_attr(loc, name);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  if (!space.valid()) fail(attr_what(name) + ": dataspace");
  if (points(space.get(), attr_what(name)) != 1)
    throw CheckpointError(attr_what(name) + ": expected one value, found " +
                          std::to_string(points(space.get(), attr_what(name))));
  T value{};
  if (H5Aread(a.get(), mem_type, &value) < 0) fail("reading " + attr_what(name));
  return value;
}

template <typename T>
std::vector<T> read_array(hid_t loc, const std::string& name, hid_t mem_type) {
  Handle a = open_attr(loc, name);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  if (!space.valid()) fail(attr_what(name) + ": dataspace");
  const auto n = static_cast<std::uint64_t>(points(space.get(), attr_what(name)));
  check_fits(loc, n, sizeof(T), attr_what(name));
  std::vector<T> values(static_cast<std::size_t>(n));
  if (!values.empty() && H5Aread(a.get(), mem_type, values.data()) < 0) fail("reading " + attr_what(name));
  return values;
}

template <typename T>
void write_array(hid_t loc, const std::string& name, hid_t file_type, hid_t mem_type, const std::vector<T>& values) {
  Handle space = vector_space(values.size());
  write_attr(loc, name, file_type, mem_type, space.get(), values.data());
}

void write_strings_as(hid_t loc, const std::string& name, const std::vector<std::string>& values, bool array) {
  const std::size_t size = longest(values);
  Handle type = fixed_string_type(size);
  Handle space = array ? vector_space(values.size()) : scalar_space();
  const std::string buf = pack(values, size);
  write_attr(loc, name, type.get(), type.get(), space.get(), buf.data());
}

}  // namespace

void silence() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

std::string take_error_stack() {
  std::vector<std::string> lines;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect, &lines);
  H5Eclear2(H5E_DEFAULT);
  // The innermost reasons say most (e.g. "Fletcher32 checksum failed"); keep the last three.
  std::string out;
  const std::size_t first = lines.size() > 3 ? lines.size() - 3 : 0;
  for (std::size_t i = first; i < lines.size(); ++i) {
    if (!out.empty()) out += "; ";
    out += lines[i];
  }
  return out.empty() ? "HDF5 gave no reason" : out;
}

void fail(const std::string& what) { throw CheckpointError(what + ": " + take_error_stack()); }

void Handle::close(const std::string& what) {
  if (id_ < 0) return;
  const hid_t id = id_;
  id_ = -1;
  if (closer_ && closer_(id) < 0) fail(what);
}

void Handle::reset() noexcept {
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = -1;
}

namespace {
// File access: the 1.10 format, and HDF5's file locks where the file system has them but no failure
// where it has none (NFS and Lustre run directories on clusters often do not).
Handle file_access() {
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid()) fail("file access properties");
  // The HDF5 1.10 file format: checksummed metadata (object headers, B-trees, heaps, chunk
  // indexes), so that a damaged file is an error when read rather than a crash or silent garbage.
  if (H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110) < 0) fail("file format version");
#if H5_VERSION_GE(1, 10, 7)
  if (H5Pset_file_locking(fapl.get(), true, true) < 0) fail("file locking properties");
#endif
  return fapl;
}
}  // namespace

Handle create_file(const std::string& path) {
  silence();
  Handle fapl = file_access();
  Handle f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!f.valid()) fail("cannot create the HDF5 file");
  return f;
}

Handle open_file(const std::string& path, bool writable) {
  silence();
  Handle fapl = file_access();
  Handle f(H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  if (!f.valid()) fail("cannot open as an HDF5 file (truncated, corrupted or not HDF5)");
  return f;
}

std::uint64_t start_writeback(hid_t file, std::uint64_t from) {
#ifdef __linux__
  void* handle = nullptr;
  // The default (sec2) driver's handle is a pointer to its file descriptor.
  if (H5Fget_vfd_handle(file, H5P_DEFAULT, &handle) < 0 || handle == nullptr) {
    H5Eclear2(H5E_DEFAULT);
    return from;
  }
  const int fd = *static_cast<int*>(handle);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) <= from) return from;
  const auto size = static_cast<std::uint64_t>(st.st_size);
  // Failure only loses the overlap: the commit's fsync still makes the file durable.
  (void)::sync_file_range(fd, static_cast<off_t>(from), static_cast<off_t>(size - from), SYNC_FILE_RANGE_WRITE);
  return size;
#else
  (void)file;
  return from;
#endif
}

Handle create_group(hid_t loc, const std::string& name) {
  Handle g(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!g.valid()) fail("creating group '" + name + "'");
  return g;
}

Handle open_group(hid_t loc, const std::string& name) {
  if (!has_link(loc, name)) throw CheckpointError("group '" + name + "': missing");
  Handle g(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) fail("opening group '" + name + "'");
  return g;
}

bool has_link(hid_t loc, const std::string& name) {
  const htri_t r = H5Lexists(loc, name.c_str(), H5P_DEFAULT);
  if (r < 0) fail("looking up '" + name + "'");
  return r > 0;
}

bool has_attr(hid_t loc, const std::string& name) {
  const htri_t r = H5Aexists(loc, name.c_str());
  if (r < 0) fail("looking up " + attr_what(name));
  return r > 0;
}

namespace {
herr_t add_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> member_names(hid_t group) {
  std::vector<std::string> names;
  hsize_t index = 0;
  if (H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, &index, add_name, &names) < 0) fail("listing a group");
  return names;
}

void hard_link(hid_t from_loc, const std::string& from, hid_t to_loc, const std::string& to) {
  if (H5Lcreate_hard(from_loc, from.c_str(), to_loc, to.c_str(), H5P_DEFAULT, H5P_DEFAULT) < 0)
    fail("linking '" + to + "' to '" + from + "'");
}

void write_string(hid_t loc, const std::string& name, const std::string& value) {
  write_strings_as(loc, name, {value}, false);
}

void write_strings(hid_t loc, const std::string& name, const std::vector<std::string>& values) {
  write_strings_as(loc, name, values, true);
}

void write_u64(hid_t loc, const std::string& name, std::uint64_t value) {
  Handle space = scalar_space();
  write_attr(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, space.get(), &value);
}
void write_i64(hid_t loc, const std::string& name, std::int64_t value) {
  Handle space = scalar_space();
  write_attr(loc, name, H5T_STD_I64LE, H5T_NATIVE_INT64, space.get(), &value);
}
void write_int(hid_t loc, const std::string& name, int value) {
  Handle space = scalar_space();
  write_attr(loc, name, H5T_STD_I32LE, H5T_NATIVE_INT, space.get(), &value);
}
void write_bool(hid_t loc, const std::string& name, bool value) {
  Handle space = scalar_space();
  const std::uint8_t v = value ? 1 : 0;
  write_attr(loc, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, space.get(), &v);
}
void write_f64(hid_t loc, const std::string& name, double value) {
  Handle space = scalar_space();
  write_attr(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, space.get(), &value);
}
void write_u64s(hid_t loc, const std::string& name, const std::vector<std::uint64_t>& values) {
  write_array(loc, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, values);
}
void write_f64s(hid_t loc, const std::string& name, const std::vector<double>& values) {
  write_array(loc, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, values);
}

std::vector<std::string> read_strings(hid_t loc, const std::string& name) {
  Handle a = open_attr(loc, name);
  Handle file_type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  if (!file_type.valid() || !space.valid()) fail(attr_what(name));
  const auto n = static_cast<std::size_t>(points(space.get(), attr_what(name)));
  return read_string_values(loc, file_type.get(), n, attr_what(name),
                            [&a](hid_t mem, void* buf) { return H5Aread(a.get(), mem, buf); });
}

std::string read_string(hid_t loc, const std::string& name) {
  std::vector<std::string> v = read_strings(loc, name);
  if (v.size() != 1)
    throw CheckpointError(attr_what(name) + ": expected one string, found " + std::to_string(v.size()));
  return std::move(v.front());
}

std::uint64_t read_u64(hid_t loc, const std::string& name) {
  return read_scalar<std::uint64_t>(loc, name, H5T_NATIVE_UINT64);
}
std::int64_t read_i64(hid_t loc, const std::string& name) {
  return read_scalar<std::int64_t>(loc, name, H5T_NATIVE_INT64);
}
int read_int(hid_t loc, const std::string& name) { return read_scalar<int>(loc, name, H5T_NATIVE_INT); }
bool read_bool(hid_t loc, const std::string& name) {
  return read_scalar<std::uint8_t>(loc, name, H5T_NATIVE_UINT8) != 0;
}
double read_f64(hid_t loc, const std::string& name) { return read_scalar<double>(loc, name, H5T_NATIVE_DOUBLE); }
std::vector<std::uint64_t> read_u64s(hid_t loc, const std::string& name) {
  return read_array<std::uint64_t>(loc, name, H5T_NATIVE_UINT64);
}
std::vector<double> read_f64s(hid_t loc, const std::string& name) {
  return read_array<double>(loc, name, H5T_NATIVE_DOUBLE);
}

void write_text(hid_t loc, const std::string& name, const std::string& text) {
  Handle type = fixed_string_type(text.size());
  Handle space = scalar_space();
  Handle d(H5Dcreate2(loc, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (!d.valid()) fail("creating dataset '" + name + "'");
  const std::string buf = pack({text}, std::max<std::size_t>(text.size(), 1));
  if (H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
    fail("writing dataset '" + name + "'");
}

std::string read_text(hid_t loc, const std::string& name) {
  const std::string what = "dataset '" + name + "'";
  if (!has_link(loc, name)) throw CheckpointError(what + ": missing");
  Handle d(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) fail("opening " + what);
  Handle file_type(H5Dget_type(d.get()), H5Tclose);
  Handle space(H5Dget_space(d.get()), H5Sclose);
  if (!file_type.valid() || !space.valid()) fail(what);
  if (points(space.get(), what) != 1) throw CheckpointError(what + ": expected one string");
  return read_string_values(
             loc, file_type.get(), 1, what,
             [&d](hid_t mem, void* buf) { return H5Dread(d.get(), mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf); })
      .front();
}

void write_floats(hid_t loc, const std::string& name, const std::vector<float>& values) {
  const hsize_t n = values.size();
  // A fixed-size dimension may not be smaller than its chunk; an empty one is declared extendible.
  const hsize_t max_dims = n == 0 ? H5S_UNLIMITED : n;
  Handle space(H5Screate_simple(1, &n, &max_dims), H5Sclose);
  if (!space.valid()) fail("dataspace of dataset '" + name + "'");
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  const hsize_t chunk = n == 0 ? 1024 : std::min(n, kChunkFloats);
  // Every chunk is written whole right away: no fill values to write first.
  if (!dcpl.valid() || H5Pset_chunk(dcpl.get(), 1, &chunk) < 0 || H5Pset_fletcher32(dcpl.get()) < 0 ||
      H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER) < 0)
    fail("chunking and Fletcher32 for dataset '" + name + "'");
  Handle d(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) fail("creating dataset '" + name + "'");
  if (n == 0) return;
  if constexpr (std::endian::native != std::endian::little) {
    // The chunks below are the memory bytes; a big-endian host goes through HDF5's conversion.
    if (H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
      fail("writing dataset '" + name + "'");
    return;
  }
  // Direct chunk writes: each chunk is the float bytes followed by their Fletcher32 (4 bytes, little
  // endian), exactly what HDF5's filter would store, so readers check it with the standard filter.
  // H5Dwrite would copy every chunk twice and sum it one 16-bit word at a time (about 1 GB/s; the
  // lane-wise sum runs at about 10 GB/s). The last chunk is zero-padded to the chunk size, as HDF5
  // pads it.
  const std::size_t chunk_bytes = static_cast<std::size_t>(chunk) * sizeof(float);
  thread_local std::vector<unsigned char> buffer;  // reused: no page faults per dataset
  buffer.resize(std::max(buffer.size(), chunk_bytes + 4));
  for (hsize_t first = 0; first < n; first += chunk) {
    const std::size_t bytes = static_cast<std::size_t>(std::min(chunk, n - first)) * sizeof(float);
    std::uint32_t sum = 0;
    if (bytes == chunk_bytes) {
      sum = detail::copy_fletcher32(buffer.data(), values.data() + first, bytes);
    } else {
      std::memcpy(buffer.data(), values.data() + first, bytes);
      std::memset(buffer.data() + bytes, 0, chunk_bytes - bytes);
      sum = detail::fletcher32(buffer.data(), chunk_bytes);
    }
    for (std::size_t i = 0; i < 4; ++i) buffer[chunk_bytes + i] = static_cast<unsigned char>(sum >> (8 * i));
    if (H5Dwrite_chunk(d.get(), H5P_DEFAULT, 0, &first, chunk_bytes + 4, buffer.data()) < 0)
      fail("writing chunk at " + std::to_string(first) + " of dataset '" + name + "'");
  }
}

std::vector<float> read_floats(hid_t loc, const std::string& name) {
  if (!has_link(loc, name)) throw CheckpointError("dataset '" + name + "': missing");
  Handle d(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) fail("opening dataset '" + name + "'");
  Handle file_type(H5Dget_type(d.get()), H5Tclose);
  if (!file_type.valid() || H5Tget_class(file_type.get()) != H5T_FLOAT)
    throw CheckpointError("dataset '" + name + "': not floating point");
  Handle space(H5Dget_space(d.get()), H5Sclose);
  if (!space.valid() || H5Sget_simple_extent_ndims(space.get()) != 1)
    throw CheckpointError("dataset '" + name + "': not one-dimensional");
  const auto n = static_cast<std::uint64_t>(points(space.get(), "dataset '" + name + "'"));
  check_fits(loc, n, sizeof(float), "dataset '" + name + "'");
  std::vector<float> values(static_cast<std::size_t>(n));
  if (!values.empty() && H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
    fail("reading dataset '" + name + "'");
  return values;
}

}  // namespace rsi::checkpoints::h5
