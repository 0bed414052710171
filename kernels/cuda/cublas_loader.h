// cuBLAS, loaded with dlopen on first use instead of linked. libcublasLt (a dependency of
// libcublas) has a ~94 KB static TLS block: linked into a process it is carved out of every
// thread's stack, and libraries that start threads with small fixed stacks (civetweb in the
// Prometheus exporter) then fail to create them. A dlopen'ed library's TLS is allocated
// dynamically, so loading cuBLAS only when a GPU op first needs it keeps every other thread intact
// (and keeps cuBLAS out of `ldd rsi`).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

namespace rsi::kernels::cuda::blas {

struct Api {
  cublasStatus_t (*create)(cublasHandle_t*);
  cublasStatus_t (*destroy)(cublasHandle_t);
  cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
  cublasStatus_t (*set_math_mode)(cublasHandle_t, cublasMath_t);
  cublasStatus_t (*set_workspace)(cublasHandle_t, void*, size_t);
  cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const float*,
                          const float*, int, const float*, int, const float*, float*, int);
};

// Loads libcublas.so.<major> (RTLD_NOW | RTLD_LOCAL) on the first call; throws std::runtime_error
// naming the library, dlerror() and what to do when it cannot be loaded or lacks a symbol.
const Api& api();

}  // namespace rsi::kernels::cuda::blas
