// rsi::kernels dispatch — every op of ops.h behind one entry point that runs it on the device of an
// `Exec` (the CPU implementation of ops.h, or the CUDA one of cuda_ops.h on the Exec's stream).
// All pointers must be in the Exec's device memory; networks and trainers keep their buffers on
// one device and say which with the Exec. Losses write their mean into `loss_out` (one float in
// the Exec's memory) instead of returning it, so a GPU step never waits for a read-back.
#pragma once

#include <cstdint>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/ops.h"
#include "rsi/kernels/tensor.h"

namespace rsi::kernels {

struct Exec {
  Device device = Device::CPU;
  cuda::Context* ctx = nullptr;  // required for Device::CUDA
  bool cuda() const { return device == Device::CUDA; }
  static Exec cpu() { return {}; }
  // The calling thread's default context; throws a clear error when no GPU is usable.
  static Exec gpu();
};

// Throws std::invalid_argument naming `what` when `t` is not on exec's device (mixed devices).
void require_device(const Exec& exec, const Tensor& t, const char* what);

// b (and conv2d_forward's b) may be null: no bias, Y = X·Wᵀ. A network on the GPU leaves the bias
// out when the next layer is an activation and applies it there (bias_activation_forward): one
// pass and one launch less per layer. relu: Y = ReLU(X·Wᵀ + b) — on the CPU in the GEMM's own pass
// (a network on the CPU asks for it when the next layer is a ReLU), on the GPU as a second op.
void linear_forward(const Exec& e, const float* X, const float* W, const float* b, float* Y, int N, int I, int O,
                    bool relu = false);
void linear_backward(const Exec& e, const float* X, const float* W, const float* dY, float* dX, float* dW, float* db,
                     int N, int I, int O);
void conv2d_forward(const Exec& e, const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y,
                    float* col, bool relu = false);
void conv2d_backward(const Exec& e, const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX,
                     float* dW, float* db, float* col);
void maxpool2d_forward(const Exec& e, const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax);
void maxpool2d_backward(const Exec& e, const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX);
void avgpool2d_forward(const Exec& e, const Pool2dShape& s, const float* X, float* Y);
void avgpool2d_backward(const Exec& e, const Pool2dShape& s, const float* dY, float* dX);
void activation_forward(const Exec& e, Activation a, const float* X, float* Y, std::int64_t n);
// Y[r][c] = act(X[r][c] + bias[per_row ? r : c]) over a [rows][cols] matrix: a dense layer's bias
// (per column of [N][O]) or a CNHW conv's (per row of [K][N·OH·OW]) fused with its activation.
void bias_activation_forward(const Exec& e, Activation a, const float* X, const float* bias, float* Y,
                             std::int64_t rows, std::int64_t cols, bool per_row);
void activation_backward(const Exec& e, Activation a, const float* X, const float* Y, const float* dY, float* dX,
                         std::int64_t n);
void dropout_forward(const Exec& e, const float* X, float* Y, float* mask, std::int64_t n, float rate,
                     const CounterRng& rng, std::uint64_t offset);
// Dropout over a CNHW tensor [C][N][HW] whose element (c, n, i) draws at index
// base + ((row_offset + n)·C + c)·HW + i — the index the same element has in dense [N][C·HW]
// layout, so a data-parallel shard draws what one rank draws for the whole batch.
void dropout_forward_cnhw(const Exec& e, const float* X, float* Y, float* mask, int C, int N, std::int64_t HW,
                          float rate, const CounterRng& rng, std::uint64_t base, std::int64_t row_offset);
void dropout_backward(const Exec& e, const float* dY, const float* mask, float* dX, std::int64_t n);
void add(const Exec& e, const float* A, const float* B, float* Y, std::int64_t n);
void accumulate(const Exec& e, const float* A, float* Y, std::int64_t n);
void cnhw_to_dense(const Exec& e, const float* X, float* Y, int C, int N, int HW);
void dense_to_cnhw(const Exec& e, const float* X, float* Y, int C, int N, int HW);
void batchnorm_forward_train(const Exec& e, const BatchNormShape& s, const float* X, const float* gamma,
                             const float* beta, float* Y, float* save_mean, float* save_invstd, float* running_mean,
                             float* running_var, float momentum, float eps);
void batchnorm_forward_eval(const Exec& e, const BatchNormShape& s, const float* X, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var, float eps, float* Y);
void batchnorm_backward(const Exec& e, const BatchNormShape& s, const float* X, const float* gamma,
                        const float* save_mean, const float* save_invstd, const float* dY, float* dX, float* dgamma,
                        float* dbeta);
// Mean loss -> *loss_out (overwritten); scale·gradient accumulated into dlogits (may be null).
void softmax_cross_entropy(const Exec& e, const float* logits, const std::int32_t* labels, int N, int K,
                           float* dlogits, float scale, float* loss_out);
void kd_loss(const Exec& e, const float* student, const float* teacher, int N, int K, float temperature,
             float* dstudent, float scale, float* loss_out);
void softmax(const Exec& e, const float* logits, float* probs, int N, int K, float temperature = 1.0f);
void adam_step(const Exec& e, float* param, const float* grad, float* m, float* v, std::int64_t n,
               const AdamConfig& c, std::int64_t step);
void sgd_step(const Exec& e, float* param, const float* grad, float* velocity, std::int64_t n, const SgdConfig& c);
void fill(const Exec& e, float* p, std::int64_t n, float value);
// avg[i] += weight · (x[i] − avg[i]) for i < n: one step of a running (exponential) average.
void lerp(const Exec& e, float* avg, const float* x, std::int64_t n, float weight);
void copy(const Exec& e, float* dst, const float* src, std::int64_t n);
// dst[r][:] = src[rows[r]][:] for r < n (rows in the Exec's memory): a batch gathered from a data
// set that lives on the device.
void gather_rows(const Exec& e, const float* src, const std::int32_t* rows, int n, std::int64_t width, float* dst);
void gather_rows(const Exec& e, const std::int32_t* src, const std::int32_t* rows, int n, std::int64_t width,
                 std::int32_t* dst);
// out[r] = image src[ids[r]] (channels × rows × cols) shifted and flipped by the draws at
// first_draw + r, every channel alike (kernels/augment.h; the pixels models::augment_batch gives),
// r < n: an augmented batch gathered from a data set on the device.
void augment_rows(const Exec& e, const float* src, const std::int32_t* ids, int n, int channels, int rows, int cols,
                  int shift, bool flip, const CounterRng& rng, std::uint64_t first_draw, float* out);

}  // namespace rsi::kernels
