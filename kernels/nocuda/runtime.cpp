// The CUDA entry points of kernels/ in a build without nvcc: cuda_available() says why not, and
// anything that needs a GPU throws with that reason and what to do.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/dispatch.h"

namespace rsi::kernels {

namespace {
const char* kNotBuilt =
    "this build of rsi has no CUDA backend (nvcc was not found when it was configured): install the CUDA "
    "toolkit under /usr/local/cuda and reconfigure with -DRSI_CUDA=ON, or run on the CPU";
[[noreturn]] void not_built(const std::string& what) { throw std::runtime_error(what + ": " + kNotBuilt); }
}  // namespace

bool cuda_built() { return false; }
bool cuda_available(std::string* reason) {
  if (reason) *reason = kNotBuilt;
  return false;
}
int cuda_device_count() { return 0; }
void cuda_set_device(int device) { not_built("cannot select CUDA device " + std::to_string(device)); }
int cuda_current_device() { not_built("no current CUDA device"); }
std::string cuda_device_description() { return std::string("no CUDA device (") + kNotBuilt + ")"; }

namespace cuda {
struct Context::Impl {};
Context::Context() { not_built("cannot create a CUDA context"); }
Context::~Context() = default;
void* Context::stream() const { return nullptr; }
void* Context::cublas() const { return nullptr; }
float* Context::host_scalars() const { return nullptr; }
void Context::synchronize() const {}
ConvBackend Context::conv_backend() const { return ConvBackend::Im2col; }
void Context::set_conv_backend(ConvBackend) {}
std::string Context::conv_report() const { return ""; }
ConvCounts Context::conv_counts() const { return {}; }
CudnnConvolutions& Context::cudnn_convolutions() { not_built("cannot run cuDNN"); }
std::string cudnn_library_version(std::string* why) {
  if (why) *why = kNotBuilt;
  return "";
}
Context& default_context() { not_built("cannot create a CUDA context"); }
void set_wide_indexing(bool) {}
struct StreamGraph::Impl {};
StreamGraph::StreamGraph(Context&) { not_built("cannot capture a CUDA graph"); }
StreamGraph::~StreamGraph() = default;
bool StreamGraph::capture(const std::function<void()>&, std::string* why) {
  if (why) *why = kNotBuilt;
  return false;
}
bool StreamGraph::captured() const { return false; }
void StreamGraph::reset() {}
void StreamGraph::launch() { not_built("cannot launch a CUDA graph"); }
struct SideStream::Impl {};
SideStream::SideStream(Context&) { not_built("cannot create a CUDA stream"); }
SideStream::~SideStream() = default;
void* SideStream::stream() const { return nullptr; }
void SideStream::follow_main() {}
void SideStream::join_main() {}
}  // namespace cuda

std::string cuda_op_profile_report() { return std::string("op profile: no CUDA (") + kNotBuilt + ")"; }

Exec Exec::gpu() { not_built("cannot run on the GPU"); }

void copy_floats(float* dst, Device dst_device, const float* src, Device src_device, std::int64_t n, cuda::Context*) {
  if (dst_device != Device::CPU || src_device != Device::CPU) not_built("cannot copy to or from GPU memory");
  if (n > 0) std::copy_n(src, n, dst);
}

namespace detail {
float* cuda_alloc_floats(std::int64_t) { not_built("cannot allocate a CUDA tensor"); }
void cuda_free(void*) noexcept {}
void cuda_fill(float*, std::int64_t, float) { not_built("cannot fill a CUDA tensor"); }
}  // namespace detail

}  // namespace rsi::kernels
