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
# OpenBLAS (the OpenMP build, sharing our thread pool) is only the peer of benchmarks/cpu_conv_bench:
# rsi's own GEMM is kernels/cpu/gemm.cpp. Without it that benchmark is not built.
find_library(RSI_OPENBLAS_OPENMP openblas PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib64/openblas-openmp
             NO_DEFAULT_PATH)
find_path(RSI_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas x86_64-linux-gnu/openblas-pthread)
if(RSI_OPENBLAS_OPENMP AND RSI_CBLAS_INCLUDE_DIR)
  set(BLAS_LIBRARIES ${RSI_OPENBLAS_OPENMP})
else()
  set(BLAS_LIBRARIES "")
  message(STATUS "OpenBLAS (libopenblas-openmp-dev, libopenblas-dev) not found: benchmarks/cpu_conv_bench is not built")
endif()

# CUDA is optional: looked for under /usr/local/cuda. RSI_CUDA=AUTO builds the CUDA backend
# whenever nvcc is found (a machine without a GPU or driver still compiles and links it; the GPU
# tests then skip), ON requires it, OFF leaves it out. (CUDA language and toolkit: owned by kernels/.)
set(RSI_CUDA AUTO CACHE STRING "CUDA backend: AUTO (when nvcc is found), ON (required) or OFF")
set_property(CACHE RSI_CUDA PROPERTY STRINGS AUTO ON OFF)
set(RSI_HAVE_CUDA OFF)
if(NOT RSI_CUDA STREQUAL "OFF")
  if(NOT DEFINED CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
    set(CUDAToolkit_ROOT /usr/local/cuda)
  endif()
  if(NOT CMAKE_CUDA_COMPILER AND DEFINED CUDAToolkit_ROOT AND EXISTS ${CUDAToolkit_ROOT}/bin/nvcc)
    set(CMAKE_CUDA_COMPILER ${CUDAToolkit_ROOT}/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    # sm_90 (H100/H200) machine code plus compute_90 PTX, which the driver JIT-compiles for newer GPUs.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    # C++20 in device code too; CMake 3.25 does not know nvcc's flag for it, so say it here (after
    # enable_language: its compiler checks must not ask for a dialect they cannot test).
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA_STANDARD 20)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    find_package(CUDAToolkit REQUIRED)
    set(RSI_HAVE_CUDA ON)
  elseif(RSI_CUDA STREQUAL "ON")
    message(FATAL_ERROR "RSI_CUDA=ON but nvcc was not found: install the CUDA toolkit under /usr/local/cuda "
                        "or pass -DCMAKE_CUDA_COMPILER=/path/to/nvcc (or configure with -DRSI_CUDA=AUTO)")
  endif()
endif()
if(RSI_HAVE_CUDA)
  set(RSI_CUDA_SUMMARY "CUDA ${CUDAToolkit_VERSION} backend built (nvcc ${CMAKE_CUDA_COMPILER}, architectures ${CMAKE_CUDA_ARCHITECTURES}; cuBLAS)")
elseif(RSI_CUDA STREQUAL "OFF")
  set(RSI_CUDA_SUMMARY "off (RSI_CUDA=OFF); CPU backend only")
else()
  set(RSI_CUDA_SUMMARY "nvcc not found; CPU backend only")
endif()

# --- NCCL (collective/'s nccl backend; owned by collective/) ---------------------------------
# Looked for next to the CUDA toolkit. With CUDA built and NCCL found, rsi_collective gets the
# nccl backend (RSI_HAVE_NCCL); a build without a GPU or driver still compiles and links it.
set(RSI_HAVE_NCCL OFF)
if(RSI_HAVE_CUDA)
  find_path(RSI_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_ROOT}/include ENV NCCL_HOME
            PATH_SUFFIXES include)
  find_library(RSI_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_ROOT}/lib64 ENV NCCL_HOME
               PATH_SUFFIXES lib lib64)
  if(RSI_NCCL_INCLUDE_DIR AND RSI_NCCL_LIBRARY)
    file(STRINGS ${RSI_NCCL_INCLUDE_DIR}/nccl.h nccl_version_lines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
    string(REGEX REPLACE ".*NCCL_MAJOR ([0-9]+).*NCCL_MINOR ([0-9]+).*NCCL_PATCH ([0-9]+).*" "\\1.\\2.\\3"
           RSI_NCCL_VERSION "${nccl_version_lines}")
    add_library(RSI::nccl SHARED IMPORTED)
    set_target_properties(RSI::nccl PROPERTIES IMPORTED_LOCATION ${RSI_NCCL_LIBRARY}
                                               INTERFACE_INCLUDE_DIRECTORIES ${RSI_NCCL_INCLUDE_DIR})
    set(RSI_HAVE_NCCL ON)
    set(RSI_NCCL_SUMMARY "NCCL ${RSI_NCCL_VERSION} backend built (${RSI_NCCL_LIBRARY})")
  else()
    set(RSI_NCCL_SUMMARY "CUDA found but not NCCL (nccl.h / libnccl under ${CUDAToolkit_ROOT} or NCCL_HOME); MPI backend only")
  endif()
else()
  set(RSI_NCCL_SUMMARY "no CUDA backend; MPI backend only")
endif()
