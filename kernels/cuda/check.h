// Check macros for CUDA runtime and cuBLAS calls: a failure throws std::runtime_error naming the
// statement, file:line, the device and the library's own error string. The _NOTHROW variants are
// for destructors (they report through rsi/kernels/report.h and carry on).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "rsi/kernels/report.h"

#include <cstdio>
#include <stdexcept>
#include <string>

namespace rsi::kernels::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* stmt, const char* file, int line) {
  int device = -1;
  cudaGetDevice(&device);
  throw std::runtime_error(std::string("CUDA error ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                           ") in `" + stmt + "` at " + file + ":" + std::to_string(line) + " on device " +
                           std::to_string(device));
}

inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED (no usable GPU or driver?)";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED (out of memory on the GPU)";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE (bad GEMM size or leading dimension)";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
  }
}

}  // namespace rsi::kernels::cuda

#define RSI_CUDA_CHECK(stmt)                                                                 \
  do {                                                                                       \
    const cudaError_t rsi_cuda_err_ = (stmt);                                                \
    if (rsi_cuda_err_ != cudaSuccess)                                                        \
      ::rsi::kernels::cuda::throw_cuda_error(rsi_cuda_err_, #stmt, __FILE__, __LINE__);      \
  } while (0)

#define RSI_CUDA_CHECK_NOTHROW(stmt)                                                                          \
  do {                                                                                                        \
    const cudaError_t rsi_cuda_err_ = (stmt);                                                                 \
    /* at process exit the runtime may already be unloaded: nothing is left to free then */                 \
    if (rsi_cuda_err_ != cudaSuccess && rsi_cuda_err_ != cudaErrorCudartUnloading)                            \
      ::rsi::kernels::report_warning(std::string("CUDA error ") + cudaGetErrorString(rsi_cuda_err_) +        \
                                     " in `" #stmt "` at " __FILE__ ":" + std::to_string(__LINE__) +       \
                                     " (ignored in a destructor)");                                         \
  } while (0)

#define RSI_CUBLAS_CHECK(stmt)                                                                           \
  do {                                                                                                   \
    const cublasStatus_t rsi_cublas_st_ = (stmt);                                                        \
    if (rsi_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                                         \
      throw std::runtime_error(std::string("cuBLAS error ") +                                            \
                               ::rsi::kernels::cuda::cublas_status_name(rsi_cublas_st_) + " in `" #stmt \
                               "` at " __FILE__ ":" + std::to_string(__LINE__));                         \
  } while (0)

// After a kernel launch: catches bad launch configurations at the op that made them.
#define RSI_CUDA_LAUNCHED() RSI_CUDA_CHECK(cudaGetLastError())
