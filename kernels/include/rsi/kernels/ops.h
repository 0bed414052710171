// rsi::kernels ops — forward and backward of every layer rsi networks are made of, plus losses and
// optimizers. The CPU implementation lives in kernels/cpu/ (our GEMM, cpu_gemm.h, + OpenMP); a plain
// reference of each op is kept in tests/unit/reference_ops.h and the tests check one against the other.
//
// Layouts. Dense activations are row-major [N][F]. Convolutional activations are channel-major
// "CNHW" ([C][N][H][W]): a whole batch's convolution is then one GEMM (Y[K][N*OH*OW] =
// W[K][C*k*k] · col[C*k*k][N*OH*OW]), batch norm and bias work on contiguous channels, and the
// reductions of the backward pass (dW, db, dgamma) are done in a fixed order whatever the number
// of threads — results are bitwise reproducible.
//
// Conventions: backward functions *overwrite* their parameter gradients (dW, db, ...) and their
// input gradient dX; a null dX skips that work (the first layer needs none). Losses *accumulate*
// scale × gradient into dlogits so that several losses can be mixed.
#pragma once

#include <cstdint>

#include "rsi/kernels/rng.h"

namespace rsi::kernels {

// Threads used by OpenMP regions and the GEMM. 0 = all cores. Results do not depend on it.
void set_num_threads(int threads);
int num_threads();

// ---- linear: Y[N][O] = X[N][I] · W[O][I]^T + b[O] ----
// b may be null (no bias). The _relu variant writes ReLU(Y) in the GEMM's own pass: the same bits
// as linear_forward followed by activation_forward(ReLU), one pass over Y less.
void linear_forward(const float* X, const float* W, const float* b, float* Y, int N, int I, int O);
void linear_forward_relu(const float* X, const float* W, const float* b, float* Y, int N, int I, int O);
void linear_backward(const float* X, const float* W, const float* dY, float* dX, float* dW, float* db,
                     int N, int I, int O);

// ---- conv2d, CNHW, square kernels ----
struct Conv2dShape {
  int N = 0, C = 0, H = 0, W = 0;  // input
  int K = 0;                       // output channels
  int kernel = 3, stride = 1, pad = 1;
  RSI_HOST_DEVICE int OH() const { return (H + 2 * pad - kernel) / stride + 1; }
  RSI_HOST_DEVICE int OW() const { return (W + 2 * pad - kernel) / stride + 1; }
  // Elements of the im2col workspace: [C*k*k][N*OH*OW]; zero when the conv is a plain GEMM (1×1, stride 1).
  std::int64_t col_size() const;
};
// X[C][N][H][W], Wt[K][C][k][k], b[K] -> Y[K][N][OH][OW]. `col` (col_size() floats) is scratch for
// the im2col matrix: the CPU makes it a few images at a time, in cache, in the forward and again in
// the backward; the GPU keeps the whole batch's from the forward for the backward.
// b may be null; the _relu variant as for linear_forward_relu.
void conv2d_forward(const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y, float* col);
void conv2d_forward_relu(const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y, float* col);
// `col`: on the GPU it must hold what conv2d_forward left there; it is overwritten (used as dcol).
void conv2d_backward(const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX, float* dW,
                     float* db, float* col);

// ---- pooling over `planes` independent H×W planes (C*N in CNHW) ----
struct Pool2dShape {
  std::int64_t planes = 0;
  int H = 0, W = 0, size = 2, stride = 2;
  RSI_HOST_DEVICE int OH() const { return (H - size) / stride + 1; }
  RSI_HOST_DEVICE int OW() const { return (W - size) / stride + 1; }
};
void maxpool2d_forward(const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax);
void maxpool2d_backward(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX);
// The pool's input X is a ReLU's output: dX of the ReLU's *input*, i.e. maxpool2d_backward then the
// ReLU's backward, in one pass (Y: the pool's output). The same bits as the two passes.
void maxpool2d_backward_relu(const Pool2dShape& s, const float* dY, const std::int32_t* argmax, const float* Y,
                             float* dX);
void avgpool2d_forward(const Pool2dShape& s, const float* X, float* Y);
void avgpool2d_backward(const Pool2dShape& s, const float* dY, float* dX);

// ---- element-wise ----
enum class Activation { ReLU, GELU, Tanh };
const char* activation_name(Activation a);
void activation_forward(Activation a, const float* X, float* Y, std::int64_t n);
// Y is the forward output (ReLU and tanh use it), X the input (GELU uses it).
void activation_backward(Activation a, const float* X, const float* Y, const float* dY, float* dX, std::int64_t n);

// Inverted dropout: mask[i] = 0 or 1/(1-rate), drawn from rng at index offset+i.
void dropout_forward(const float* X, float* Y, float* mask, std::int64_t n, float rate, const CounterRng& rng,
                     std::uint64_t offset);
void dropout_backward(const float* dY, const float* mask, float* dX, std::int64_t n);

// Y = A + B (residual). Backward is the identity on both inputs.
void add(const float* A, const float* B, float* Y, std::int64_t n);
// Y += A
void accumulate(const float* A, float* Y, std::int64_t n);

// CNHW [C][N][HW] <-> dense [N][C*HW] (flatten before the first dense layer).
void cnhw_to_dense(const float* X, float* Y, int C, int N, int HW);
void dense_to_cnhw(const float* X, float* Y, int C, int N, int HW);

// ---- batch normalisation over a tensor viewed as [outer][C][inner]:
//      dense [N][F] is outer=N, C=F, inner=1; CNHW is outer=1, C, inner=N*H*W ----
struct BatchNormShape {
  std::int64_t outer = 1, channels = 0, inner = 1;
};
// Training mode: batch statistics; saves mean and inverse std for backward and updates the running
// statistics with `momentum` (PyTorch convention: running = (1-m)·running + m·batch, unbiased var).
void batchnorm_forward_train(const BatchNormShape& s, const float* X, const float* gamma, const float* beta, float* Y,
                             float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                             float momentum, float eps);
void batchnorm_forward_eval(const BatchNormShape& s, const float* X, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, float eps, float* Y);
void batchnorm_backward(const BatchNormShape& s, const float* X, const float* gamma, const float* save_mean,
                        const float* save_invstd, const float* dY, float* dX, float* dgamma, float* dbeta);

// ---- losses over logits [N][K]; return the mean loss and add scale·d(mean loss)/dlogits ----
float softmax_cross_entropy(const float* logits, const std::int32_t* labels, int N, int K, float* dlogits,
                            float scale = 1.0f);
// Knowledge distillation: T² · KL(softmax(teacher/T) ‖ softmax(student/T)), mean over N.
float kd_loss(const float* student, const float* teacher, int N, int K, float temperature, float* dstudent,
              float scale = 1.0f);
// Row-wise softmax(logits/T) -> probs.
void softmax(const float* logits, float* probs, int N, int K, float temperature = 1.0f);

// ---- optimizers, over one contiguous segment of parameters ----
struct AdamConfig {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  bool decoupled = false;  // false: Adam with L2 added to the gradient; true: AdamW
};
// `step` counts from 1 (bias correction).
void adam_step(float* param, const float* grad, float* m, float* v, std::int64_t n, const AdamConfig& c,
               std::int64_t step);

struct SgdConfig {
  float lr = 0.01f, momentum = 0.9f, weight_decay = 0.0f;
  bool nesterov = false;
};
void sgd_step(float* param, const float* grad, float* velocity, std::int64_t n, const SgdConfig& c);

}  // namespace rsi::kernels
