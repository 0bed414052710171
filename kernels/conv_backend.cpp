// The names of the GPU convolution backends (kernels/cuda.h): shared by every build, so a manifest,
// a benchmark flag or RSI_CUDA_CONV is checked the same way with or without CUDA.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "rsi/kernels/cuda.h"

namespace rsi::kernels::cuda {

const char* conv_backend_name(ConvBackend b) { return b == ConvBackend::Cudnn ? "cudnn" : "im2col"; }

ConvBackend parse_conv_backend(const std::string& name) {
  if (name == "im2col") return ConvBackend::Im2col;
  if (name == "cudnn") return ConvBackend::Cudnn;
  throw std::invalid_argument("unknown GPU convolution backend '" + name +
                              "': use im2col (im2col + cuBLAS SGEMM, the default) or cudnn (cuDNN's convolution)");
}

ConvBackend conv_backend_from_env() {
  const char* v = std::getenv("RSI_CUDA_CONV");
  if (!v || !*v) return ConvBackend::Im2col;
  try {
    return parse_conv_backend(v);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("RSI_CUDA_CONV: ") + e.what());
  }
}

}  // namespace rsi::kernels::cuda
