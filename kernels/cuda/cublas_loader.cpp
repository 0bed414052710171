// dlopen loader for the few cuBLAS entry points kernels/cuda uses (see cublas_loader.h for why).
#include "cublas_loader.h"
#include "dl_library.h"

#include <mutex>
#include <stdexcept>
#include <string>

namespace rsi::kernels::cuda::blas {

namespace {

Api g_api{};
std::string g_error;

std::string library_name() { return "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR); }

void load() {
  const std::string name = library_name();
  void* library = open_library(name, "cuBLAS",
                               "install the CUDA " + std::to_string(CUBLAS_VER_MAJOR) +
                                   " cuBLAS library or add its directory (e.g. /usr/local/cuda/lib64) to LD_LIBRARY_PATH");
  auto bind = [&](const char* symbol, auto& fn) { bind_symbol(library, name, symbol, fn); };
  // Kept loaded for the life of the process (contexts hold handles until thread exit).
  bind("cublasCreate_v2", g_api.create);
  bind("cublasDestroy_v2", g_api.destroy);
  bind("cublasSetStream_v2", g_api.set_stream);
  bind("cublasSetMathMode", g_api.set_math_mode);
  bind("cublasSetWorkspace_v2", g_api.set_workspace);
  bind("cublasSgemm_v2", g_api.sgemm);
}

}  // namespace

const Api& api() {
  static std::once_flag once;
  load_once(once, g_error, load);
  return g_api;
}

}  // namespace rsi::kernels::cuda::blas
