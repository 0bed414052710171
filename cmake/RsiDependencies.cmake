# Finds every dependency named in DESIGN.md. Missing ones stop the configure with the Debian
# package to install (scripts/setup installs them all).
macro(rsi_require pkg debian)
  find_package(${pkg} ${ARGN})
  if(NOT ${pkg}_FOUND)
    message(FATAL_ERROR "rsi needs ${pkg}: install the Debian package '${debian}' (or run scripts/setup)")
  endif()
endmacro()

rsi_require(MPI libopenmpi-dev COMPONENTS CXX)
rsi_require(HDF5 libhdf5-dev COMPONENTS C)
rsi_require(yaml-cpp libyaml-cpp-dev)
rsi_require(prometheus-cpp prometheus-cpp-dev CONFIG)
rsi_require(GTest libgtest-dev)
rsi_require(OpenSSL libssl-dev)
rsi_require(OpenMP "libgomp1 (gcc)" COMPONENTS CXX)
rsi_require(ZLIB zlib1g-dev)
rsi_require(CLI11 libcli11-dev CONFIG)
rsi_require(spdlog libspdlog-dev)
# OpenBLAS built for OpenMP: it shares our OpenMP thread pool. The pthread build spins its own
# threads against ours and was 5x slower at 2 threads on a 2-core machine.
find_library(RSI_OPENBLAS_OPENMP openblas PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib64/openblas-openmp
             NO_DEFAULT_PATH)
if(RSI_OPENBLAS_OPENMP)
  set(BLAS_LIBRARIES ${RSI_OPENBLAS_OPENMP})
else()
  message(FATAL_ERROR "rsi needs OpenBLAS built for OpenMP: install the Debian package 'libopenblas-openmp-dev'")
endif()
find_path(RSI_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread)
if(NOT RSI_CBLAS_INCLUDE_DIR)
  message(FATAL_ERROR "rsi needs cblas.h: install the Debian package 'libopenblas-dev'")
endif()

# CUDA is optional: looked for under /usr/local/cuda.
if(NOT DEFINED CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  set(RSI_CUDA_SUMMARY "found ${CUDAToolkit_VERSION} at ${CUDAToolkit_BIN_DIR}; the CUDA backend is not part of this build yet (CPU backend only)")
else()
  set(RSI_CUDA_SUMMARY "not found; CPU backend only")
endif()
