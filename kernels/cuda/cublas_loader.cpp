// dlopen loader for the few cuBLAS entry points kernels/cuda uses (see cublas_loader.h for why).
#include "cublas_loader.h"

#include <dlfcn.h>

#include <mutex>
#include <stdexcept>
#include <string>

namespace rsi::kernels::cuda::blas {

namespace {

Api g_api{};
std::string g_error;

std::string library_name() { return "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR); }

template <typename Fn>
void bind(void* library, const char* symbol, Fn& fn) {
  void* p = dlsym(library, symbol);
  if (!p) throw std::runtime_error(std::string("symbol ") + symbol + " not found in " + library_name());
  fn = reinterpret_cast<Fn>(p);
}

void load() {
  const std::string name = library_name();
  void* library = dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!library) {
    const char* why = dlerror();
    throw std::runtime_error("cannot load cuBLAS (" + name + "): " + (why ? why : "unknown dlopen error") +
                             "; install the CUDA " + std::to_string(CUBLAS_VER_MAJOR) +
                             " cuBLAS library or add its directory (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH");
  }
  // Kept loaded for the life of the process (contexts hold handles until thread exit).
  bind(library, "cublasCreate_v2", g_api.create);
  bind(library, "cublasDestroy_v2", g_api.destroy);
  bind(library, "cublasSetStream_v2", g_api.set_stream);
  bind(library, "cublasSetMathMode", g_api.set_math_mode);
  bind(library, "cublasSetWorkspace_v2", g_api.set_workspace);
  bind(library, "cublasSgemm_v2", g_api.sgemm);
}

}  // namespace

const Api& api() {
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      load();
    } catch (const std::exception& e) {
      g_error = e.what();
    }
  });
  if (!g_error.empty()) throw std::runtime_error(g_error);
  return g_api;
}

}  // namespace rsi::kernels::cuda::blas
