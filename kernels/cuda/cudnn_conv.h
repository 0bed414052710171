// cuDNN convolutions of one context (ConvBackend::Cudnn, kernels/cuda.h): private to kernels/cuda.
// cuDNN is dlopen'ed (libcudnn.so.<major>) on first use, like cuBLAS (cublas_loader.h), so nothing
// links it and a machine without it runs the im2col backend.
#pragma once

#include <memory>
#include <string>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/ops.h"

namespace rsi::kernels::cuda {

// True when RSI_CUDA_TF32=1: cuBLAS and cuDNN may then use TF32 tensor cores (default: strict FP32).
bool tf32_allowed();

class CudnnConvolutions {
 public:
  // Loads cuDNN and creates a handle bound to ctx's stream; throws with the reason when it cannot.
  explicit CudnnConvolutions(Context& ctx);
  ~CudnnConvolutions();
  CudnnConvolutions(const CudnnConvolutions&) = delete;
  CudnnConvolutions& operator=(const CudnnConvolutions&) = delete;

  // Y = conv(X, Wt) + beta·Y, X [C][N][H][W] and Y [K][N][OH][OW] (CNHW) as conv2d_forward.
  // Returns false, having queued nothing, when cuDNN has no deterministic FP32 algorithm that takes
  // these tensors: the caller computes it with im2col instead. Plans are made (heuristics queried,
  // candidates tried) on the first call of a shape, call kind and pointer alignment; that first call
  // must not be inside a CUDA graph capture (it throws there, and the capture falls back).
  bool forward(const Conv2dShape& s, const float* X, const float* Wt, float* Y, float beta);
  // What a backward computed: dW (filter) and dX (data; false when dX was null).
  struct Parts {
    bool filter = false, data = false;
  };
  // dW = ∂/∂Wt and, when dX is not null, dX = ∂/∂X (both overwritten) for the gradient dY, each
  // with cuDNN where it can; the caller computes the parts not done with im2col. A call counts as
  // cuDNN's (counts()) when it did every part asked for.
  Parts backward(const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX, float* dW);
  // One line per plan: the algorithm used, or why it fell back to im2col; then the call counts.
  std::string report() const;
  // Calls the host made (a graph replay is not a call), see ConvCounts.
  ConvCounts counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rsi::kernels::cuda
