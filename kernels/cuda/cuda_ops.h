// The CUDA implementation of every op of dispatch.h (private to kernels/: callers go through
// dispatch.h). Same contracts as ops.h; all pointers are device memory; work is queued on the
// context's stream and nothing synchronises.
#pragma once

#include <cstdint>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/ops.h"

namespace rsi::kernels::cuda {

// Brackets one op with CUDA events on the context's stream when RSI_PROFILE_OPS=1 (see cuda.h).
class OpTimer {
 public:
  OpTimer(Context& ctx, const char* name);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  Context* ctx_;
  long slot_ = -1;
};

void linear_forward(Context& ctx, const float* X, const float* W, const float* b, float* Y, int N, int I, int O);
void linear_backward(Context& ctx, const float* X, const float* W, const float* dY, float* dX, float* dW, float* db,
                     int N, int I, int O);
void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y,
                    float* col);
void conv2d_backward(Context& ctx, const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX,
                     float* dW, float* db, float* col);
void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax);
void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX);
void avgpool2d_forward(Context& ctx, const Pool2dShape& s, const float* X, float* Y);
void avgpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dY, float* dX);
void activation_forward(Context& ctx, Activation a, const float* X, float* Y, std::int64_t n);
void bias_activation_forward(Context& ctx, Activation a, const float* X, const float* bias, float* Y,
                             std::int64_t rows, std::int64_t cols, bool per_row);
void activation_backward(Context& ctx, Activation a, const float* X, const float* Y, const float* dY, float* dX,
                         std::int64_t n);
void dropout_forward(Context& ctx, const float* X, float* Y, float* mask, std::int64_t n, float rate,
                     const CounterRng& rng, std::uint64_t offset);
// Dropout over a CNHW tensor [C][N][HW] whose element (c, n, i) draws at index
// base + ((row_offset + n)·C + c)·HW + i — the index the same element has in dense [N][C·HW]
// layout, so a data-parallel shard draws what one rank draws for the whole batch.
void dropout_forward_cnhw(Context& ctx, const float* X, float* Y, float* mask, int C, int N, std::int64_t HW,
                          float rate, const CounterRng& rng, std::uint64_t base, std::int64_t row_offset);
void dropout_backward(Context& ctx, const float* dY, const float* mask, float* dX, std::int64_t n);
void add(Context& ctx, const float* A, const float* B, float* Y, std::int64_t n);
void accumulate(Context& ctx, const float* A, float* Y, std::int64_t n);
void cnhw_to_dense(Context& ctx, const float* X, float* Y, int C, int N, int HW);
void dense_to_cnhw(Context& ctx, const float* X, float* Y, int C, int N, int HW);
void batchnorm_forward_train(Context& ctx, const BatchNormShape& s, const float* X, const float* gamma,
                             const float* beta, float* Y, float* save_mean, float* save_invstd, float* running_mean,
                             float* running_var, float momentum, float eps);
void batchnorm_forward_eval(Context& ctx, const BatchNormShape& s, const float* X, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var, float eps, float* Y);
void batchnorm_backward(Context& ctx, const BatchNormShape& s, const float* X, const float* gamma,
                        const float* save_mean, const float* save_invstd, const float* dY, float* dX, float* dgamma,
                        float* dbeta);
// Mean loss -> *loss_out (overwritten); scale·gradient accumulated into dlogits (may be null).
void softmax_cross_entropy(Context& ctx, const float* logits, const std::int32_t* labels, int N, int K,
                           float* dlogits, float scale, float* loss_out);
void kd_loss(Context& ctx, const float* student, const float* teacher, int N, int K, float temperature,
             float* dstudent, float scale, float* loss_out);
void softmax(Context& ctx, const float* logits, float* probs, int N, int K, float temperature = 1.0f);
void adam_step(Context& ctx, float* param, const float* grad, float* m, float* v, std::int64_t n,
               const AdamConfig& c, std::int64_t step);
void sgd_step(Context& ctx, float* param, const float* grad, float* velocity, std::int64_t n, const SgdConfig& c);
void fill(Context& ctx, float* p, std::int64_t n, float value);
void lerp(Context& ctx, float* avg, const float* x, std::int64_t n, float weight);
void copy(Context& ctx, float* dst, const float* src, std::int64_t n);
// dst[r][:] = src[rows[r]][:] for r < n (rows in the Exec's memory): a batch gathered from a data
// set that lives on the device.
void gather_rows(Context& ctx, const float* src, const std::int32_t* rows, int n, std::int64_t width, float* dst);
void gather_rows(Context& ctx, const std::int32_t* src, const std::int32_t* rows, int n, std::int64_t width,
                 std::int32_t* dst);
void augment_rows(Context& ctx, const float* src, const std::int32_t* ids, int n, int channels, int rows, int cols,
                  int shift, bool flip, const CounterRng& rng, std::uint64_t first_draw, float* out);

}  // namespace rsi::kernels::cuda
