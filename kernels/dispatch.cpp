// Runs each op on the Exec's device: the CPU implementation of ops.h (unchanged, so CPU results
// stay bitwise what they were) or the CUDA one (kernels/cuda/).
#include "rsi/kernels/dispatch.h"

#include "rsi/kernels/augment.h"

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <vector>

#if RSI_HAVE_CUDA
#include "cuda/cuda_ops.h"
#endif

namespace rsi::kernels {

namespace {
#if RSI_HAVE_CUDA
cuda::Context& context_of(const Exec& e) {
  if (!e.ctx) throw std::invalid_argument("a CUDA op was called with an Exec that has no CUDA context (use Exec::gpu())");
  return *e.ctx;
}
#define RSI_DISPATCH(cpu_call, cuda_call) \
  do {                                    \
    if (!e.cuda()) {                      \
      cpu_call;                           \
    } else {                              \
      cuda::Context& ctx = context_of(e); \
      const cuda::OpTimer timer(ctx, __func__); \
      cuda_call;                          \
    }                                     \
  } while (0)
#else
[[noreturn]] void no_cuda() {
  std::string why;
  cuda_available(&why);
  throw std::runtime_error("a CUDA op was requested: " + why);
}
#define RSI_DISPATCH(cpu_call, cuda_call) \
  do {                                    \
    if (!e.cuda()) {                      \
      cpu_call;                           \
    } else {                              \
      no_cuda();                          \
    }                                     \
  } while (0)
#endif
}  // namespace

namespace {
std::atomic<Device> g_default_device{Device::CPU};
}

void set_default_device(Device device) {
  std::string why;
  if (device == Device::CUDA && !cuda_available(&why))
    throw std::runtime_error("cannot make CUDA the default device: " + why);
  g_default_device.store(device);
}

Device default_device() { return g_default_device.load(); }

void require_device(const Exec& exec, const Tensor& t, const char* what) {
  if (t.device() != exec.device)
    throw std::invalid_argument(std::string(what) + " is on " + device_name(t.device()) + " but the op runs on " +
                                device_name(exec.device) + ": move it with to_device() first (mixed devices)");
}

void copy_tensor(const Tensor& src, Tensor& dst) {
  if (src.numel() != dst.numel())
    throw std::invalid_argument("copy_tensor: source " + shape_string(src.shape()) + " and destination " +
                                shape_string(dst.shape()) + " differ in element count");
  copy_floats(dst.data(), dst.device(), src.data(), src.device(), src.numel());
}

Tensor to_device(const Tensor& src, Device device) {
  Tensor out(src.shape(), device);
  copy_tensor(src, out);
  return out;
}

namespace {
float activate(Activation a, float v) {
  float y = 0.0f;
  kernels::activation_forward(a, &v, &y, 1);
  return y;
}
}  // namespace

void linear_forward(const Exec& e, const float* X, const float* W, const float* b, float* Y, int N, int I, int O,
                    bool relu) {
  RSI_DISPATCH(relu ? kernels::linear_forward_relu(X, W, b, Y, N, I, O) : kernels::linear_forward(X, W, b, Y, N, I, O),
               cuda::linear_forward(ctx, X, W, b, Y, N, I, O));
  if (relu && e.cuda()) activation_forward(e, Activation::ReLU, Y, Y, static_cast<std::int64_t>(N) * O);
}
void bias_activation_forward(const Exec& e, Activation a, const float* X, const float* bias, float* Y,
                             std::int64_t rows, std::int64_t cols, bool per_row) {
  RSI_DISPATCH(for (std::int64_t i = 0; i < rows * cols; ++i) Y[i] =
                   activate(a, X[i] + bias[per_row ? i / cols : i % cols]),
               cuda::bias_activation_forward(ctx, a, X, bias, Y, rows, cols, per_row));
}
void linear_backward(const Exec& e, const float* X, const float* W, const float* dY, float* dX, float* dW, float* db,
                     int N, int I, int O) {
  RSI_DISPATCH(kernels::linear_backward(X, W, dY, dX, dW, db, N, I, O),
               cuda::linear_backward(ctx, X, W, dY, dX, dW, db, N, I, O));
}
void conv2d_forward(const Exec& e, const Conv2dShape& s, const float* X, const float* Wt, const float* b, float* Y,
                    float* col, bool relu) {
  RSI_DISPATCH(relu ? kernels::conv2d_forward_relu(s, X, Wt, b, Y, col) : kernels::conv2d_forward(s, X, Wt, b, Y, col),
               cuda::conv2d_forward(ctx, s, X, Wt, b, Y, col));
  if (relu && e.cuda())
    activation_forward(e, Activation::ReLU, Y, Y, static_cast<std::int64_t>(s.K) * s.N * s.OH() * s.OW());
}
void conv2d_backward(const Exec& e, const Conv2dShape& s, const float* X, const float* Wt, const float* dY, float* dX,
                     float* dW, float* db, float* col) {
  RSI_DISPATCH(kernels::conv2d_backward(s, X, Wt, dY, dX, dW, db, col),
               cuda::conv2d_backward(ctx, s, X, Wt, dY, dX, dW, db, col));
}
void maxpool2d_forward(const Exec& e, const Pool2dShape& s, const float* X, float* Y, std::int32_t* argmax) {
  RSI_DISPATCH(kernels::maxpool2d_forward(s, X, Y, argmax), cuda::maxpool2d_forward(ctx, s, X, Y, argmax));
}
void maxpool2d_backward(const Exec& e, const Pool2dShape& s, const float* dY, const std::int32_t* argmax, float* dX) {
  RSI_DISPATCH(kernels::maxpool2d_backward(s, dY, argmax, dX), cuda::maxpool2d_backward(ctx, s, dY, argmax, dX));
}
void avgpool2d_forward(const Exec& e, const Pool2dShape& s, const float* X, float* Y) {
  RSI_DISPATCH(kernels::avgpool2d_forward(s, X, Y), cuda::avgpool2d_forward(ctx, s, X, Y));
}
void avgpool2d_backward(const Exec& e, const Pool2dShape& s, const float* dY, float* dX) {
  RSI_DISPATCH(kernels::avgpool2d_backward(s, dY, dX), cuda::avgpool2d_backward(ctx, s, dY, dX));
}
void activation_forward(const Exec& e, Activation a, const float* X, float* Y, std::int64_t n) {
  RSI_DISPATCH(kernels::activation_forward(a, X, Y, n), cuda::activation_forward(ctx, a, X, Y, n));
}
void activation_backward(const Exec& e, Activation a, const float* X, const float* Y, const float* dY, float* dX,
                         std::int64_t n) {
  RSI_DISPATCH(kernels::activation_backward(a, X, Y, dY, dX, n), cuda::activation_backward(ctx, a, X, Y, dY, dX, n));
}
void dropout_forward(const Exec& e, const float* X, float* Y, float* mask, std::int64_t n, float rate,
                     const CounterRng& rng, std::uint64_t offset) {
  RSI_DISPATCH(kernels::dropout_forward(X, Y, mask, n, rate, rng, offset),
               cuda::dropout_forward(ctx, X, Y, mask, n, rate, rng, offset));
}
namespace {
void dropout_forward_cnhw_cpu(const float* X, float* Y, float* mask, int C, int N, std::int64_t HW, float rate,
                              const CounterRng& rng, std::uint64_t base, std::int64_t row_offset) {
  for (std::int64_t c = 0; c < C; ++c)
    for (std::int64_t n = 0; n < N; ++n) {
      const std::int64_t at = (c * N + n) * HW;
      kernels::dropout_forward(X + at, Y + at, mask + at, HW, rate, rng,
                               base + static_cast<std::uint64_t>(((row_offset + n) * C + c) * HW));
    }
}
}  // namespace
void dropout_forward_cnhw(const Exec& e, const float* X, float* Y, float* mask, int C, int N, std::int64_t HW,
                          float rate, const CounterRng& rng, std::uint64_t base, std::int64_t row_offset) {
  RSI_DISPATCH(dropout_forward_cnhw_cpu(X, Y, mask, C, N, HW, rate, rng, base, row_offset),
               cuda::dropout_forward_cnhw(ctx, X, Y, mask, C, N, HW, rate, rng, base, row_offset));
}
void dropout_backward(const Exec& e, const float* dY, const float* mask, float* dX, std::int64_t n) {
  RSI_DISPATCH(kernels::dropout_backward(dY, mask, dX, n), cuda::dropout_backward(ctx, dY, mask, dX, n));
}
void add(const Exec& e, const float* A, const float* B, float* Y, std::int64_t n) {
  RSI_DISPATCH(kernels::add(A, B, Y, n), cuda::add(ctx, A, B, Y, n));
}
void accumulate(const Exec& e, const float* A, float* Y, std::int64_t n) {
  RSI_DISPATCH(kernels::accumulate(A, Y, n), cuda::accumulate(ctx, A, Y, n));
}
void cnhw_to_dense(const Exec& e, const float* X, float* Y, int C, int N, int HW) {
  RSI_DISPATCH(kernels::cnhw_to_dense(X, Y, C, N, HW), cuda::cnhw_to_dense(ctx, X, Y, C, N, HW));
}
void dense_to_cnhw(const Exec& e, const float* X, float* Y, int C, int N, int HW) {
  RSI_DISPATCH(kernels::dense_to_cnhw(X, Y, C, N, HW), cuda::dense_to_cnhw(ctx, X, Y, C, N, HW));
}
void batchnorm_forward_train(const Exec& e, const BatchNormShape& s, const float* X, const float* gamma,
                             const float* beta, float* Y, float* save_mean, float* save_invstd, float* running_mean,
                             float* running_var, float momentum, float eps) {
  RSI_DISPATCH(kernels::batchnorm_forward_train(s, X, gamma, beta, Y, save_mean, save_invstd, running_mean,
                                                running_var, momentum, eps),
               cuda::batchnorm_forward_train(ctx, s, X, gamma, beta, Y, save_mean, save_invstd, running_mean,
                                             running_var, momentum, eps));
}
void batchnorm_forward_eval(const Exec& e, const BatchNormShape& s, const float* X, const float* gamma,
                            const float* beta, const float* running_mean, const float* running_var, float eps,
                            float* Y) {
  RSI_DISPATCH(kernels::batchnorm_forward_eval(s, X, gamma, beta, running_mean, running_var, eps, Y),
               cuda::batchnorm_forward_eval(ctx, s, X, gamma, beta, running_mean, running_var, eps, Y));
}
void batchnorm_backward(const Exec& e, const BatchNormShape& s, const float* X, const float* gamma,
                        const float* save_mean, const float* save_invstd, const float* dY, float* dX, float* dgamma,
                        float* dbeta) {
  RSI_DISPATCH(kernels::batchnorm_backward(s, X, gamma, save_mean, save_invstd, dY, dX, dgamma, dbeta),
               cuda::batchnorm_backward(ctx, s, X, gamma, save_mean, save_invstd, dY, dX, dgamma, dbeta));
}
void softmax_cross_entropy(const Exec& e, const float* logits, const std::int32_t* labels, int N, int K,
                           float* dlogits, float scale, float* loss_out) {
  RSI_DISPATCH(*loss_out = kernels::softmax_cross_entropy(logits, labels, N, K, dlogits, scale),
               cuda::softmax_cross_entropy(ctx, logits, labels, N, K, dlogits, scale, loss_out));
}
void kd_loss(const Exec& e, const float* student, const float* teacher, int N, int K, float temperature,
             float* dstudent, float scale, float* loss_out) {
  RSI_DISPATCH(*loss_out = kernels::kd_loss(student, teacher, N, K, temperature, dstudent, scale),
               cuda::kd_loss(ctx, student, teacher, N, K, temperature, dstudent, scale, loss_out));
}
void softmax(const Exec& e, const float* logits, float* probs, int N, int K, float temperature) {
  RSI_DISPATCH(kernels::softmax(logits, probs, N, K, temperature),
               cuda::softmax(ctx, logits, probs, N, K, temperature));
}
void adam_step(const Exec& e, float* param, const float* grad, float* m, float* v, std::int64_t n,
               const AdamConfig& c, std::int64_t step) {
  RSI_DISPATCH(kernels::adam_step(param, grad, m, v, n, c, step), cuda::adam_step(ctx, param, grad, m, v, n, c, step));
}
void sgd_step(const Exec& e, float* param, const float* grad, float* velocity, std::int64_t n, const SgdConfig& c) {
  RSI_DISPATCH(kernels::sgd_step(param, grad, velocity, n, c), cuda::sgd_step(ctx, param, grad, velocity, n, c));
}
void fill(const Exec& e, float* p, std::int64_t n, float value) {
  RSI_DISPATCH(std::fill_n(p, n, value), cuda::fill(ctx, p, n, value));
}
void lerp(const Exec& e, float* avg, const float* x, std::int64_t n, float weight) {
  RSI_DISPATCH(for (std::int64_t i = 0; i < n; ++i) avg[i] += weight * (x[i] - avg[i]),
               cuda::lerp(ctx, avg, x, n, weight));
}
void copy(const Exec& e, float* dst, const float* src, std::int64_t n) {
  RSI_DISPATCH(std::copy_n(src, n, dst), cuda::copy(ctx, dst, src, n));
}
void gather_rows(const Exec& e, const float* src, const std::int32_t* rows, int n, std::int64_t width, float* dst) {
  RSI_DISPATCH(for (int r = 0; r < n; ++r) std::copy_n(src + rows[r] * width, width, dst + r * width),
               cuda::gather_rows(ctx, src, rows, n, width, dst));
}
void gather_rows(const Exec& e, const std::int32_t* src, const std::int32_t* rows, int n, std::int64_t width,
                 std::int32_t* dst) {
  RSI_DISPATCH(for (int r = 0; r < n; ++r) std::copy_n(src + rows[r] * width, width, dst + r * width),
               cuda::gather_rows(ctx, src, rows, n, width, dst));
}

void augment_rows(const Exec& e, const float* src, const std::int32_t* ids, int n, int channels, int rows, int cols,
                  int shift, bool flip, const CounterRng& rng, std::uint64_t first_draw, float* out) {
  const std::int64_t plane = std::int64_t{rows} * cols, pixels = channels * plane;
  RSI_DISPATCH(
      for (int r = 0; r < n; ++r) {
        const ShiftFlip t = draw_shift_flip(rng, first_draw + static_cast<std::uint64_t>(r), shift, flip);
        for (int c = 0; c < channels; ++c) {
          const float* image = src + static_cast<std::int64_t>(ids[r]) * pixels + c * plane;
          float* target = out + r * pixels + c * plane;
          for (int y = 0; y < rows; ++y)
            for (int x = 0; x < cols; ++x) target[std::int64_t{y} * cols + x] = shifted_pixel(image, rows, cols, t, y, x);
        }
      },
      cuda::augment_rows(ctx, src, ids, n, channels, rows, cols, shift, flip, rng, first_draw, out));
}

}  // namespace rsi::kernels
