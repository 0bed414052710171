// test_parity — every op of kernels/dispatch.h on every backend (cpu, and cuda when a GPU is
// usable) against the plain CPU reference of tests/unit/reference_ops.h, forward and backward, in
// the style of ggml's test-backend-ops: random inputs at several shapes (odd sizes, strides,
// paddings), outputs pre-filled with NaN (an op that skips an element fails), a NaN/Inf check, and
// the normalised error max|got − want| / max(1, max|want|) under 1e-5 (cpu) or 1e-4 (cuda: other
// summation orders, FMA contraction; cuBLAS runs in FP32, no TF32). Discrete results (max-pool
// argmax, dropout masks) must match exactly. Then training-step parity: a few steps of the MLP and
// CNN reference genomes and of a network with every block kind, trained on the GPU and on the CPU
// from the same weights and data, losses and weights within tolerance, and evaluation on the GPU.
//
// Without a GPU (or without a CUDA build) every cuda case skips with "no CUDA device: <why>".
// Every check prints one "[parity] backend op shape err=..." line, so a single run's log says which
// op on which shape went wrong and by how much.
//   cmake --build build --target test_parity && build/tests/test_parity
#include <gtest/gtest.h>

#if RSI_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "blocks.h"
#include "reference_ops.h"
#include "rsi/kernels/cuda.h"
#include "rsi/kernels/dispatch.h"
#include "rsi/kernels/rng.h"
#include "rsi/kernels/tensor.h"
#include "rsi/collective/communicator.h"
#include "rsi/models/data.h"
#include "rsi/models/genome.h"
#include "rsi/models/gradient_reducer.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"

namespace {

namespace kn = rsi::kernels;
namespace ref = rsi::reference;
namespace models = rsi::models;
using kn::Device;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::size_t sz(std::int64_t n) { return static_cast<std::size_t>(n); }

const ref::InputStream inputs{777};

std::string cuda_unavailable_reason() {
  std::string why;
  return kn::cuda_available(&why) ? std::string() : why;
}

// Normalised error with NaN/Inf detection; prints one line per check.
::testing::AssertionResult close(const char* backend, const std::string& what, const std::vector<float>& got,
                                 const std::vector<float>& want, double tol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " values, expected " << want.size();
  double max_want = 0.0, max_err = 0.0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      std::printf("[parity] %-4s %-48s NON-FINITE at %zu: got %g want %g\n", backend, what.c_str(), i, got[i], want[i]);
      return ::testing::AssertionFailure() << backend << " " << what << ": non-finite value " << got[i] << " at " << i
                                           << " (expected " << want[i] << ")";
    }
    max_want = std::max(max_want, std::fabs(static_cast<double>(want[i])));
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (err > max_err) max_err = err, worst = i;
  }
  const double norm = max_err / std::max(1.0, max_want);
  std::printf("[parity] %-4s %-48s n=%-8zu err=%.2e %s\n", backend, what.c_str(), want.size(), norm,
              norm <= tol ? "ok" : "FAIL");
  if (norm <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << backend << " " << what << ": normalised error " << norm << " > " << tol
                                       << " (worst at " << worst << ": got " << got[worst] << ", want " << want[worst]
                                       << ")";
}

// cuDNN's convolution on this thread's default context (the one Exec::gpu() and train() use) for
// the life of the object; the im2col default again afterwards. Empty `skip` when it is on.
// conv_counts() tells calls that ran through cuDNN from those that fell back to im2col, so a
// test of the cuDNN path can require that cuDNN really computed it.
struct CudnnConvolution {
  std::string skip;
  kn::cuda::ConvBackend before = kn::cuda::ConvBackend::Im2col;
  kn::cuda::ConvCounts start;
  CudnnConvolution() {
    std::string why;
    if (kn::cuda::cudnn_library_version(&why).empty()) {
      skip = "cuDNN cannot be loaded: " + why;
      return;
    }
    kn::cuda::Context& ctx = kn::cuda::default_context();
    before = ctx.conv_backend();
    ctx.set_conv_backend(kn::cuda::ConvBackend::Cudnn);
    start = ctx.conv_counts();
  }
  // Calls since construction: through cuDNN, and fallen back to im2col.
  kn::cuda::ConvCounts since_start() const {
    const kn::cuda::ConvCounts now = kn::cuda::default_context().conv_counts();
    return {now.cudnn - start.cudnn, now.fallback - start.fallback};
  }
  ~CudnnConvolution() {
    if (!skip.empty()) return;
    const std::string report = kn::cuda::default_context().conv_report();
    std::printf("[parity] cudnn plans:\n%s", report.c_str());
    kn::cuda::default_context().set_conv_backend(before);
  }
};

// One backend under test: buffers live on its device, ops run through dispatch.h. cuda_cudnn is
// cuda with cuDNN's convolution (ConvBackend::Cudnn); every other op is the same as cuda's.
// cuda_wide64 is cuda with every kernel on its 64-bit indexing path (set_wide_indexing), which
// real shapes take only past 2^30 elements.
struct Backend {
  Device device;
  bool cudnn = false;
  bool wide = false;
};

class Parity : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam().device == Device::CUDA) {
      const std::string why = cuda_unavailable_reason();
      if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
      exec_ = kn::Exec::gpu();
      if (GetParam().cudnn) {
        cudnn_ = std::make_unique<CudnnConvolution>();
        if (!cudnn_->skip.empty()) GTEST_SKIP() << cudnn_->skip;
      }
      kn::cuda::set_wide_indexing(GetParam().wide);
    }
  }
  void TearDown() override {
    cudnn_.reset();
    if (GetParam().wide) kn::cuda::set_wide_indexing(false);
  }
  Device dev() const { return GetParam().device; }
  const char* name() const {
    return GetParam().cudnn ? "cudnn" : GetParam().wide ? "wide" : kn::device_name(dev());
  }
  double tol() const { return dev() == Device::CPU ? 1e-5 : 1e-4; }

  kn::Tensor up(const std::vector<float>& host) {
    kn::Tensor t({static_cast<std::int64_t>(host.size())}, dev());
    kn::copy_floats(t.data(), dev(), host.data(), Device::CPU, static_cast<std::int64_t>(host.size()));
    return t;
  }
  kn::Tensor up_int(const std::vector<std::int32_t>& host) {
    kn::Tensor t({static_cast<std::int64_t>(host.size())}, dev());
    kn::copy_floats(t.data(), dev(), reinterpret_cast<const float*>(host.data()), Device::CPU,
                    static_cast<std::int64_t>(host.size()));
    return t;
  }
  kn::Tensor nans(std::int64_t n) { return up(std::vector<float>(sz(n), kNaN)); }
  std::vector<float> down(const kn::Tensor& t) {
    std::vector<float> host(sz(t.numel()));
    kn::copy_floats(host.data(), Device::CPU, t.data(), dev(), t.numel());
    return host;
  }
  std::vector<std::int32_t> down_int(const kn::Tensor& t) {
    std::vector<std::int32_t> host(sz(t.numel()));
    kn::copy_floats(reinterpret_cast<float*>(host.data()), Device::CPU, t.data(), dev(), t.numel());
    return host;
  }
  static std::int32_t* ints(kn::Tensor& t) { return reinterpret_cast<std::int32_t*>(t.data()); }
  ::testing::AssertionResult check(const std::string& what, const kn::Tensor& got, const std::vector<float>& want) {
    return close(name(), what, down(got), want, tol());
  }

  kn::Exec exec_;
  std::unique_ptr<CudnnConvolution> cudnn_;
};

// ---- linear ----

TEST_P(Parity, Linear) {
  struct S { int N, I, O; };
  for (const S s : {S{1, 1, 1}, S{7, 13, 5}, S{33, 65, 10}, S{128, 784, 256}, S{3, 200, 1}}) {
    std::ostringstream tag;
    tag << "[N" << s.N << " I" << s.I << " O" << s.O << "]";
    const auto X = inputs.normal(sz(s.N) * s.I, 1), W = inputs.normal(sz(s.O) * s.I, 2, 0.1f),
               b = inputs.normal(sz(s.O), 3), dY = inputs.normal(sz(s.N) * s.O, 4);
    std::vector<float> Y(sz(s.N) * s.O), dX(sz(s.N) * s.I), dW(sz(s.O) * s.I), db(sz(s.O));
    ref::linear_forward(X.data(), W.data(), b.data(), Y.data(), s.N, s.I, s.O);
    ref::linear_backward(X.data(), W.data(), dY.data(), dX.data(), dW.data(), db.data(), s.N, s.I, s.O);
    auto x = up(X), w = up(W), bb = up(b), dy = up(dY), y = nans(sz(s.N) * s.O), dx = nans(sz(s.N) * s.I),
         dw = nans(sz(s.O) * s.I), dbb = nans(s.O);
    kn::linear_forward(exec_, x.data(), w.data(), bb.data(), y.data(), s.N, s.I, s.O);
    EXPECT_TRUE(check("linear_forward " + tag.str(), y, Y));
    kn::linear_backward(exec_, x.data(), w.data(), dy.data(), dx.data(), dw.data(), dbb.data(), s.N, s.I, s.O);
    EXPECT_TRUE(check("linear_backward dX " + tag.str(), dx, dX));
    EXPECT_TRUE(check("linear_backward dW " + tag.str(), dw, dW));
    EXPECT_TRUE(check("linear_backward db " + tag.str(), dbb, db));
    // No dX (first layer): the parameter gradients alone.
    auto dw2 = nans(sz(s.O) * s.I);
    kn::linear_backward(exec_, x.data(), w.data(), dy.data(), nullptr, dw2.data(), dbb.data(), s.N, s.I, s.O);
    EXPECT_TRUE(check("linear_backward dW (no dX) " + tag.str(), dw2, dW));
  }
}

// ---- conv2d ----

TEST_P(Parity, Conv2d) {
  struct S { int N, C, H, W, K, k, s; };
  for (const S c : {S{2, 3, 7, 6, 4, 3, 1}, S{2, 3, 9, 8, 5, 5, 2}, S{3, 4, 5, 5, 6, 1, 1}, S{2, 2, 8, 7, 3, 3, 2},
                    S{8, 1, 28, 28, 32, 3, 1}, S{4, 32, 14, 14, 64, 3, 1}, S{1, 2, 4, 4, 3, 1, 2}}) {
    kn::Conv2dShape s;
    s.N = c.N, s.C = c.C, s.H = c.H, s.W = c.W, s.K = c.K, s.kernel = c.k, s.stride = c.s, s.pad = c.k / 2;
    std::ostringstream tag;
    tag << "[N" << c.N << " C" << c.C << " " << c.H << "x" << c.W << " K" << c.K << " k" << c.k << " s" << c.s << "]";
    const std::int64_t in = std::int64_t{c.C} * c.N * c.H * c.W, out = std::int64_t{c.K} * c.N * s.OH() * s.OW(),
                       wn = std::int64_t{c.K} * c.C * c.k * c.k;
    const auto X = inputs.normal(sz(in), 11), Wt = inputs.normal(sz(wn), 12, 0.2f), b = inputs.normal(sz(c.K), 13),
               dY = inputs.normal(sz(out), 14);
    std::vector<float> Y(sz(out)), dX(sz(in)), dW(sz(wn)), db(sz(c.K));
    ref::conv2d_forward(s, X.data(), Wt.data(), b.data(), Y.data(), nullptr);
    ref::conv2d_backward(s, X.data(), Wt.data(), dY.data(), dX.data(), dW.data(), db.data(), nullptr);
    auto x = up(X), w = up(Wt), bb = up(b), dy = up(dY), y = nans(out), dx = nans(in), dw = nans(wn), dbb = nans(c.K);
    kn::Tensor col({std::max<std::int64_t>(s.col_size(), 1)}, dev());
    const kn::cuda::ConvCounts before = cudnn_ ? cudnn_->since_start() : kn::cuda::ConvCounts{};
    kn::conv2d_forward(exec_, s, x.data(), w.data(), bb.data(), y.data(), col.data());
    EXPECT_TRUE(check("conv2d_forward " + tag.str(), y, Y));
    kn::conv2d_backward(exec_, s, x.data(), w.data(), dy.data(), dx.data(), dw.data(), dbb.data(), col.data());
    EXPECT_TRUE(check("conv2d_backward dX " + tag.str(), dx, dX));
    EXPECT_TRUE(check("conv2d_backward dW " + tag.str(), dw, dW));
    EXPECT_TRUE(check("conv2d_backward db " + tag.str(), dbb, db));
    if (cudnn_) {
      // The reference CNN's two convolutions (3×3, stride 1) must really run on cuDNN; other shapes
      // may fall back to im2col (the plans printed at the end say which and why).
      const kn::cuda::ConvCounts after = cudnn_->since_start();
      const std::int64_t ran = after.cudnn - before.cudnn, fell = after.fallback - before.fallback;
      std::printf("[parity] cudnn conv2d %-40s forward+backward through cuDNN: %lld of %lld calls\n",
                  tag.str().c_str(), static_cast<long long>(ran), static_cast<long long>(ran + fell));
      if (c.k == 3 && c.s == 1 && (c.C == 1 || c.C == 32)) {
        EXPECT_EQ(ran, 2) << tag.str() << ": cuDNN did not compute it (" << fell << " call(s) fell back to im2col)";
      }
    }
  }
}

// ---- pooling ----

TEST_P(Parity, Pooling) {
  struct S { std::int64_t planes; int H, W, size, stride; };
  for (const S p : {S{6, 7, 8, 2, 2}, S{5, 9, 9, 3, 2}, S{3, 6, 5, 3, 1}, S{256, 28, 28, 2, 2}, S{4, 4, 4, 4, 4}}) {
    kn::Pool2dShape s;
    s.planes = p.planes, s.H = p.H, s.W = p.W, s.size = p.size, s.stride = p.stride;
    std::ostringstream tag;
    tag << "[planes" << p.planes << " " << p.H << "x" << p.W << " size" << p.size << " s" << p.stride << "]";
    const std::int64_t in = p.planes * p.H * p.W, out = p.planes * s.OH() * s.OW();
    const auto X = inputs.distinct(sz(in), 21, 0.01f), dY = inputs.normal(sz(out), 22);
    std::vector<float> Y(sz(out)), dX(sz(in)), Ya(sz(out)), dXa(sz(in));
    std::vector<std::int32_t> arg(sz(out));
    ref::maxpool2d_forward(s, X.data(), Y.data(), arg.data());
    ref::maxpool2d_backward(s, dY.data(), arg.data(), dX.data());
    ref::avgpool2d_forward(s, X.data(), Ya.data());
    ref::avgpool2d_backward(s, dY.data(), dXa.data());
    auto x = up(X), dy = up(dY), y = nans(out), dx = nans(in), a = nans(out);
    kn::maxpool2d_forward(exec_, s, x.data(), y.data(), ints(a));
    EXPECT_TRUE(check("maxpool2d_forward " + tag.str(), y, Y));
    EXPECT_EQ(down_int(a), arg) << name() << " maxpool2d argmax " << tag.str();
    kn::maxpool2d_backward(exec_, s, dy.data(), ints(a), dx.data());
    EXPECT_TRUE(check("maxpool2d_backward " + tag.str(), dx, dX));
    auto ya = nans(out), dxa = nans(in);
    kn::avgpool2d_forward(exec_, s, x.data(), ya.data());
    EXPECT_TRUE(check("avgpool2d_forward " + tag.str(), ya, Ya));
    kn::avgpool2d_backward(exec_, s, dy.data(), dxa.data());
    EXPECT_TRUE(check("avgpool2d_backward " + tag.str(), dxa, dXa));
  }
}

// ---- element-wise ----

TEST_P(Parity, Activations) {
  for (const kn::Activation act : {kn::Activation::ReLU, kn::Activation::GELU, kn::Activation::Tanh}) {
    for (const std::int64_t n : {std::int64_t{1}, std::int64_t{1000}, std::int64_t{300001}}) {
      const std::string tag = std::string(kn::activation_name(act)) + " [n" + std::to_string(n) + "]";
      const auto X = inputs.normal(sz(n), 31, 2.0f), dY = inputs.normal(sz(n), 32);
      std::vector<float> Y(sz(n)), dX(sz(n));
      ref::activation_forward(act, X.data(), Y.data(), n);
      ref::activation_backward(act, X.data(), Y.data(), dY.data(), dX.data(), n);
      auto x = up(X), dy = up(dY), y = nans(n), dx = nans(n);
      kn::activation_forward(exec_, act, x.data(), y.data(), n);
      EXPECT_TRUE(check("activation_forward " + tag, y, Y));
      kn::activation_backward(exec_, act, x.data(), y.data(), dy.data(), dx.data(), n);
      EXPECT_TRUE(check("activation_backward " + tag, dx, dX));
    }
  }
}

// The GPU network's fusion of a layer's bias into the activation after it, and the bias-less
// linear/conv forward it pairs with: together they must equal linear/conv + bias + activation.
TEST_P(Parity, BiasActivationFusion) {
  for (const kn::Activation act : {kn::Activation::ReLU, kn::Activation::GELU, kn::Activation::Tanh}) {
    for (const bool per_row : {false, true}) {
      const std::int64_t rows = 37, cols = 129;
      const std::string tag = std::string(kn::activation_name(act)) + (per_row ? " per-row" : " per-column");
      const auto X = inputs.normal(sz(rows * cols), 33, 2.0f), bias = inputs.normal(sz(per_row ? rows : cols), 34);
      std::vector<float> sum(sz(rows * cols)), Y(sz(rows * cols));
      for (std::int64_t i = 0; i < rows * cols; ++i) sum[sz(i)] = X[sz(i)] + bias[sz(per_row ? i / cols : i % cols)];
      ref::activation_forward(act, sum.data(), Y.data(), rows * cols);
      auto x = up(X), b = up(bias), y = nans(rows * cols);
      kn::bias_activation_forward(exec_, act, x.data(), b.data(), y.data(), rows, cols, per_row);
      EXPECT_TRUE(check("bias_activation_forward " + tag, y, Y));
    }
  }
  // Bias-less forward passes.
  const int N = 9, I = 31, O = 7;
  const auto X = inputs.normal(sz(N * I), 35), W = inputs.normal(sz(O * I), 36, 0.2f);
  std::vector<float> Y(sz(N * O));
  ref::linear_forward(X.data(), W.data(), nullptr, Y.data(), N, I, O);
  auto x = up(X), w = up(W), y = nans(N * O);
  kn::linear_forward(exec_, x.data(), w.data(), nullptr, y.data(), N, I, O);
  EXPECT_TRUE(check("linear_forward (no bias)", y, Y));
  kn::Conv2dShape s;
  s.N = 3, s.C = 2, s.H = 6, s.W = 5, s.K = 4, s.kernel = 3, s.stride = 1, s.pad = 1;
  const std::int64_t in = 2 * 3 * 6 * 5, out = std::int64_t{4} * 3 * s.OH() * s.OW();
  const auto Xc = inputs.normal(sz(in), 37), Wc = inputs.normal(sz(4 * 2 * 9), 38, 0.3f);
  std::vector<float> Yc(sz(out)), zero(4, 0.0f);
  ref::conv2d_forward(s, Xc.data(), Wc.data(), zero.data(), Yc.data(), nullptr);
  auto xc = up(Xc), wc = up(Wc), yc = nans(out);
  kn::Tensor col({s.col_size()}, dev());
  kn::conv2d_forward(exec_, s, xc.data(), wc.data(), nullptr, yc.data(), col.data());
  EXPECT_TRUE(check("conv2d_forward (no bias)", yc, Yc));
}

TEST_P(Parity, Dropout) {
  const kn::CounterRng rng(99, kn::rng_stream(kn::RngUse::Dropout, 5), 17);
  for (const float rate : {0.1f, 0.5f}) {
    const std::int64_t n = 100003;
    const std::uint64_t offset = (std::uint64_t{3} << 40) + 12345;
    const auto X = inputs.normal(sz(n), 41), dY = inputs.normal(sz(n), 42);
    std::vector<float> Y(sz(n)), mask(sz(n)), dX(sz(n));
    ref::dropout_forward(X.data(), Y.data(), mask.data(), n, rate, rng, offset);
    ref::dropout_backward(dY.data(), mask.data(), dX.data(), n);
    auto x = up(X), dy = up(dY), y = nans(n), m = nans(n), dx = nans(n);
    kn::dropout_forward(exec_, x.data(), y.data(), m.data(), n, rate, rng, offset);
    EXPECT_EQ(down(m), mask) << name() << " dropout mask (rate " << rate << ") must equal the CPU's bit for bit";
    EXPECT_TRUE(check("dropout_forward rate " + std::to_string(rate), y, Y));
    kn::dropout_backward(exec_, dy.data(), m.data(), dx.data(), n);
    EXPECT_TRUE(check("dropout_backward rate " + std::to_string(rate), dx, dX));

    // CNHW: element (c, n, i) draws at base + ((row_offset + n)·C + c)·HW + i.
    const int C = 3, N = 5, HW = 49;
    const std::int64_t row_offset = 7, total = std::int64_t{C} * N * HW;
    const std::uint64_t base = std::uint64_t{2} << 40;
    const auto Xc = inputs.normal(sz(total), 43);
    std::vector<float> Yc(sz(total)), maskc(sz(total));
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < N; ++i) {
        const std::int64_t at = (std::int64_t{c} * N + i) * HW;
        ref::dropout_forward(Xc.data() + at, Yc.data() + at, maskc.data() + at, HW, rate, rng,
                             base + static_cast<std::uint64_t>(((row_offset + i) * C + c) * HW));
      }
    auto xc = up(Xc), yc = nans(total), mc = nans(total);
    kn::dropout_forward_cnhw(exec_, xc.data(), yc.data(), mc.data(), C, N, HW, rate, rng, base, row_offset);
    EXPECT_EQ(down(mc), maskc) << name() << " CNHW dropout mask (rate " << rate << ")";
    EXPECT_TRUE(check("dropout_forward_cnhw rate " + std::to_string(rate), yc, Yc));
  }
}

// Shift-and-flip augmentation gathered from a data set on the device: the pixels
// models::augment_batch gives on the host, bit for bit (they are copies, no arithmetic).
TEST_P(Parity, AugmentRows) {
  models::Dataset d;
  d.images = inputs.normal(50 * 784, 61);
  d.labels.assign(50, 0);
  std::vector<std::int32_t> ids;
  std::vector<std::int64_t> ids64;
  for (int r = 0; r < 37; ++r) {
    ids.push_back((r * 17 + 3) % 50);  // some ids twice
    ids64.push_back(ids.back());
  }
  const int n = static_cast<int>(ids.size());
  const kn::CounterRng rng(7, kn::rng_stream(kn::RngUse::Augment, 9), 123);
  auto src = up(d.images), id = up_int(ids);
  for (const models::Augmentation aug : {models::Augmentation{2, true}, models::Augmentation{3, false},
                                         models::Augmentation{0, true}, models::Augmentation{0, false}}) {
    const std::uint64_t first_draw = 11;
    std::vector<float> want(sz(n) * 784);
    models::augment_batch(d, ids64.data(), n, aug, rng, want.data(), first_draw);
    auto out = nans(n * 784LL);
    kn::augment_rows(exec_, src.data(), ints(id), n, 1, 28, 28, aug.shift, aug.flip, rng, first_draw, out.data());
    const std::vector<float> got = down(out);
    std::int64_t differing = 0;
    for (std::size_t i = 0; i < got.size(); ++i) differing += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
    std::printf("[parity] %-4s augment_rows shift %d flip %d n=%d: %lld pixels differ\n", name(), aug.shift,
                aug.flip ? 1 : 0, n, static_cast<long long>(differing));
    EXPECT_EQ(differing, 0) << name() << " augment_rows (shift " << aug.shift << ", flip " << aug.flip << ")";
  }
}

TEST_P(Parity, AddAccumulateLayoutFillGather) {
  const std::int64_t n = 70001;
  const auto A = inputs.normal(sz(n), 51), B = inputs.normal(sz(n), 52);
  std::vector<float> sum(sz(n)), acc = B;
  ref::add(A.data(), B.data(), sum.data(), n);
  ref::accumulate(A.data(), acc.data(), n);
  auto a = up(A), b = up(B), y = nans(n);
  kn::add(exec_, a.data(), b.data(), y.data(), n);
  EXPECT_TRUE(check("add", y, sum));
  kn::accumulate(exec_, a.data(), b.data(), n);
  EXPECT_TRUE(check("accumulate", b, acc));

  const int C = 5, N = 7, HW = 36;
  const std::int64_t total = std::int64_t{C} * N * HW;
  const auto X = inputs.normal(sz(total), 53);
  std::vector<float> dense(sz(total)), back(sz(total));
  ref::cnhw_to_dense(X.data(), dense.data(), C, N, HW);
  ref::dense_to_cnhw(dense.data(), back.data(), C, N, HW);
  auto x = up(X), d = nans(total), c = nans(total);
  kn::cnhw_to_dense(exec_, x.data(), d.data(), C, N, HW);
  EXPECT_TRUE(check("cnhw_to_dense", d, dense));
  kn::dense_to_cnhw(exec_, d.data(), c.data(), C, N, HW);
  EXPECT_TRUE(check("dense_to_cnhw", c, back));

  auto f = nans(1000);
  kn::fill(exec_, f.data(), 1000, 2.5f);
  EXPECT_TRUE(check("fill", f, std::vector<float>(1000, 2.5f)));
  auto cp = nans(n);
  kn::copy(exec_, cp.data(), a.data(), n);
  EXPECT_TRUE(check("copy", cp, A));

  const std::int64_t width = 784;
  const auto src = inputs.normal(sz(50 * width), 54);
  const std::vector<std::int32_t> rows = {49, 0, 17, 17, 3, 48};
  const std::vector<std::int32_t> labels_src = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5,
                                                4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0};
  std::vector<float> want(rows.size() * sz(width));
  std::vector<std::int32_t> want_labels;
  for (std::size_t r = 0; r < rows.size(); ++r) {
    std::copy_n(src.begin() + rows[r] * width, width, want.begin() + static_cast<std::int64_t>(r) * width);
    want_labels.push_back(labels_src[sz(rows[r])]);
  }
  auto s = up(src), rr = up_int(rows), g = nans(static_cast<std::int64_t>(want.size())), ls = up_int(labels_src),
       gl = up_int(std::vector<std::int32_t>(rows.size(), -1));
  kn::gather_rows(exec_, s.data(), ints(rr), static_cast<int>(rows.size()), width, g.data());
  EXPECT_TRUE(check("gather_rows", g, want));
  kn::gather_rows(exec_, ints(ls), ints(rr), static_cast<int>(rows.size()), 1, ints(gl));
  EXPECT_EQ(down_int(gl), want_labels) << name() << " gather_rows int32";
}

// ---- batch norm ----

TEST_P(Parity, BatchNorm) {
  struct S { std::int64_t outer, channels, inner; const char* what; };
  for (const S b : {S{64, 20, 1, "dense [64][20]"}, S{1, 8, 5 * 36, "CNHW C8 N5 6x6"}, S{1, 32, 128 * 196, "CNHW C32 N128 14x14"},
                    S{3, 4, 7, "[3][4][7]"}}) {
    const kn::BatchNormShape s{b.outer, b.channels, b.inner};
    const std::string tag = std::string("[") + b.what + "]";
    const std::int64_t n = b.outer * b.channels * b.inner, C = b.channels;
    const auto X = inputs.normal(sz(n), 61, 1.5f, 0.7f), gamma = inputs.normal(sz(C), 62, 0.5f, 1.0f),
               beta = inputs.normal(sz(C), 63), dY = inputs.normal(sz(n), 64);
    std::vector<float> Y(sz(n)), mean(sz(C)), invstd(sz(C)), rmean(sz(C), 0.1f), rvar(sz(C), 0.9f), dX(sz(n)),
        dgamma(sz(C)), dbeta(sz(C)), Ye(sz(n));
    auto rm = up(rmean), rv = up(rvar);
    ref::batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), Y.data(), mean.data(), invstd.data(),
                                 rmean.data(), rvar.data(), 0.1f, 1e-5f);
    ref::batchnorm_backward(s, X.data(), gamma.data(), mean.data(), invstd.data(), dY.data(), dX.data(), dgamma.data(),
                            dbeta.data());
    ref::batchnorm_forward_eval(s, X.data(), gamma.data(), beta.data(), rmean.data(), rvar.data(), 1e-5f, Ye.data());
    auto x = up(X), g = up(gamma), bt = up(beta), dy = up(dY), y = nans(n), sm = nans(C), si = nans(C), dx = nans(n),
         dg = nans(C), db = nans(C), ye = nans(n);
    kn::batchnorm_forward_train(exec_, s, x.data(), g.data(), bt.data(), y.data(), sm.data(), si.data(), rm.data(),
                                rv.data(), 0.1f, 1e-5f);
    EXPECT_TRUE(check("batchnorm_forward_train Y " + tag, y, Y));
    EXPECT_TRUE(check("batchnorm_forward_train mean " + tag, sm, mean));
    EXPECT_TRUE(check("batchnorm_forward_train invstd " + tag, si, invstd));
    EXPECT_TRUE(check("batchnorm running_mean " + tag, rm, rmean));
    EXPECT_TRUE(check("batchnorm running_var " + tag, rv, rvar));
    kn::batchnorm_backward(exec_, s, x.data(), g.data(), sm.data(), si.data(), dy.data(), dx.data(), dg.data(),
                           db.data());
    EXPECT_TRUE(check("batchnorm_backward dX " + tag, dx, dX));
    EXPECT_TRUE(check("batchnorm_backward dgamma " + tag, dg, dgamma));
    EXPECT_TRUE(check("batchnorm_backward dbeta " + tag, db, dbeta));
    auto dg2 = nans(C);
    kn::batchnorm_backward(exec_, s, x.data(), g.data(), sm.data(), si.data(), dy.data(), nullptr, dg2.data(),
                           db.data());
    EXPECT_TRUE(check("batchnorm_backward dgamma (no dX) " + tag, dg2, dgamma));
    kn::batchnorm_forward_eval(exec_, s, x.data(), g.data(), bt.data(), rm.data(), rv.data(), 1e-5f, ye.data());
    EXPECT_TRUE(check("batchnorm_forward_eval " + tag, ye, Ye));
  }
}

// ---- losses ----

TEST_P(Parity, Losses) {
  struct S { int N, K; };
  for (const S l : {S{1, 10}, S{128, 10}, S{300, 10}, S{17, 100}}) {
    const std::string tag = "[N" + std::to_string(l.N) + " K" + std::to_string(l.K) + "]";
    const std::int64_t n = std::int64_t{l.N} * l.K;
    const auto logits = inputs.normal(sz(n), 71, 3.0f), teacher = inputs.normal(sz(n), 72, 3.0f),
               prior = inputs.normal(sz(n), 73, 0.1f);
    std::vector<std::int32_t> labels(sz(l.N));
    for (int i = 0; i < l.N; ++i) labels[sz(i)] = (i * 7 + 3) % l.K;
    std::vector<float> d_ce = prior, d_kd = prior, probs(sz(n));
    const float ce = ref::softmax_cross_entropy(logits.data(), labels.data(), l.N, l.K, d_ce.data(), 0.7f);
    const float kd = ref::kd_loss(logits.data(), teacher.data(), l.N, l.K, 4.0f, d_kd.data(), 0.3f);
    ref::softmax(logits.data(), probs.data(), l.N, l.K, 2.0f);
    auto z = up(logits), t = up(teacher), lab = up_int(labels), dce = up(prior), dkd = up(prior), p = nans(n),
         loss = nans(2);
    kn::softmax_cross_entropy(exec_, z.data(), ints(lab), l.N, l.K, dce.data(), 0.7f, loss.data());
    kn::kd_loss(exec_, z.data(), t.data(), l.N, l.K, 4.0f, dkd.data(), 0.3f, loss.data() + 1);
    EXPECT_TRUE(check("softmax_cross_entropy loss,kd_loss loss " + tag, loss, {ce, kd}));
    EXPECT_TRUE(check("softmax_cross_entropy dlogits " + tag, dce, d_ce));
    EXPECT_TRUE(check("kd_loss dstudent " + tag, dkd, d_kd));
    kn::softmax(exec_, z.data(), p.data(), l.N, l.K, 2.0f);
    EXPECT_TRUE(check("softmax T=2 " + tag, p, probs));
    // Loss only (evaluation): no gradient buffer.
    auto loss2 = nans(1);
    kn::softmax_cross_entropy(exec_, z.data(), ints(lab), l.N, l.K, nullptr, 1.0f, loss2.data());
    EXPECT_TRUE(check("softmax_cross_entropy loss (no grad) " + tag, loss2,
                      {ref::softmax_cross_entropy(logits.data(), labels.data(), l.N, l.K, nullptr)}));
  }
}

// ---- optimizers ----

TEST_P(Parity, Optimizers) {
  const std::int64_t n = 50021;
  for (const bool decoupled : {false, true}) {
    kn::AdamConfig c;
    c.lr = 3e-3f, c.weight_decay = 0.01f, c.decoupled = decoupled;
    auto P = inputs.normal(sz(n), 81), M = std::vector<float>(sz(n)), V = std::vector<float>(sz(n));
    auto p = up(P), m = up(M), v = up(V);
    for (int step = 1; step <= 3; ++step) {
      const auto G = inputs.normal(sz(n), 82 + static_cast<std::uint64_t>(step), 0.1f);
      ref::adam_step(P.data(), G.data(), M.data(), V.data(), n, c, step);
      auto g = up(G);
      kn::adam_step(exec_, p.data(), g.data(), m.data(), v.data(), n, c, step);
    }
    const std::string tag = decoupled ? "adamw (3 steps)" : "adam+l2 (3 steps)";
    EXPECT_TRUE(check(tag + " param", p, P));
    EXPECT_TRUE(check(tag + " m", m, M));
    EXPECT_TRUE(check(tag + " v", v, V));
  }
  for (const bool nesterov : {false, true}) {
    const kn::SgdConfig c{0.05f, 0.9f, 1e-3f, nesterov};
    auto P = inputs.normal(sz(n), 91), Vel = std::vector<float>(sz(n));
    auto p = up(P), vel = up(Vel);
    for (int step = 1; step <= 3; ++step) {
      const auto G = inputs.normal(sz(n), 92 + static_cast<std::uint64_t>(step), 0.1f);
      ref::sgd_step(P.data(), G.data(), Vel.data(), n, c);
      auto g = up(G);
      kn::sgd_step(exec_, p.data(), g.data(), vel.data(), n, c);
    }
    const std::string tag = nesterov ? "sgd nesterov (3 steps)" : "sgd momentum (3 steps)";
    EXPECT_TRUE(check(tag + " param", p, P));
    EXPECT_TRUE(check(tag + " velocity", vel, Vel));
  }
}

TEST_P(Parity, TensorBasics) {
  kn::Tensor t({3, 5}, dev());
  EXPECT_EQ(t.device(), dev());
  EXPECT_EQ(down(t), std::vector<float>(15, 0.0f)) << name() << ": a new tensor is zero-filled";
  t.fill(2.5f);
  EXPECT_EQ(down(t), std::vector<float>(15, 2.5f));
  const kn::Tensor c = t.clone();
  EXPECT_EQ(c.device(), dev());
  EXPECT_EQ(down(c), std::vector<float>(15, 2.5f));
  t.resize({40});  // grows: new storage on the same device
  t.fill(-1.0f);
  EXPECT_EQ(down(t), std::vector<float>(40, -1.0f));
  const std::vector<float> host = inputs.normal(40, 5);
  kn::Tensor h({40});
  std::copy(host.begin(), host.end(), h.data());
  kn::Tensor moved = kn::to_device(h, dev());
  kn::Tensor back = kn::to_device(moved, Device::CPU);
  EXPECT_EQ(std::vector<float>(back.span().begin(), back.span().end()), host) << name() << ": round trip";
  kn::Tensor wrong({39}, dev());
  EXPECT_THROW(kn::copy_tensor(h, wrong), std::invalid_argument);
}

// A whole network's forward and backward on this backend against the same network on the CPU:
// every block kind, training mode (batch norm statistics, dropout) and evaluation mode.
TEST_P(Parity, NetworkForwardBackward) {
  using namespace rsi::test_blocks;
  const models::Genome g = genome_of({conv(6), batchnorm(), act(kn::Activation::GELU), residual(3),
                                      pool(Block::PoolKind::Max), dropout(0.25f), conv(8, 5, 2), relu(),
                                      pool(Block::PoolKind::Avg), dense(16), batchnorm(), act(kn::Activation::Tanh),
                                      dropout(0.1f), dense(10)});
  const int N = 12;
  const auto x = inputs.normal(sz(N) * 784, 201, 0.5f, 0.5f), dlogits = inputs.normal(sz(N) * 10, 202, 0.1f);
  models::Network cpu = random_network(g, {}, 9), other = random_network(g, {}, 9);
  other.to(dev());
  for (const bool train : {true, false}) {
    const models::Network::Mode mode{train, 4, 2, 3, 5};
    const std::string tag = train ? "train mode" : "eval mode";
    const kn::Tensor& want = cpu.forward(x.data(), N, mode);
    auto xd = up(x);
    const kn::Tensor& got = other.forward(xd.data(), N, mode);
    EXPECT_TRUE(check("network forward logits (" + tag + ")", got, std::vector<float>(want.span().begin(), want.span().end())));
    if (!train) continue;
    cpu.backward(dlogits.data());
    auto dd = up(dlogits);
    other.backward(dd.data());
    EXPECT_TRUE(check("network backward gradients", other.gradients(),
                      std::vector<float>(cpu.gradients().span().begin(), cpu.gradients().span().end())));
    EXPECT_TRUE(check("network batch-norm running statistics", other.state(),
                      std::vector<float>(cpu.state().span().begin(), cpu.state().span().end())));
  }
  other.to(Device::CPU);
  EXPECT_EQ(other.device(), Device::CPU);
}

std::string backend_name(const ::testing::TestParamInfo<Backend>& param) {
  return std::string(kn::device_name(param.param.device)) + (param.param.cudnn ? "_cudnn" : "") +
         (param.param.wide ? "_wide64" : "");
}
INSTANTIATE_TEST_SUITE_P(Backends, Parity,
                         ::testing::Values(Backend{Device::CPU}, Backend{Device::CUDA}, Backend{Device::CUDA, true},
                                           Backend{Device::CUDA, false, true}),
                         backend_name);

// ---- runtime and errors (no GPU needed) ----

// The convolution backend's names and RSI_CUDA_CONV are checked the same in every build; cuDNN's
// library loads (or says why not) without a GPU.
TEST(CudaRuntime, ConvBackendsAreNamedAndCudnnSaysWhetherItLoads) {
  using kn::cuda::ConvBackend;
  for (const ConvBackend b : {ConvBackend::Im2col, ConvBackend::Cudnn})
    EXPECT_EQ(kn::cuda::parse_conv_backend(kn::cuda::conv_backend_name(b)), b);
  try {
    kn::cuda::parse_conv_backend("winograd");
    ADD_FAILURE() << "an unknown backend must be refused";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'winograd'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("im2col"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cudnn"), std::string::npos) << e.what();
  }
  const char* before = std::getenv("RSI_CUDA_CONV");
  const std::string saved = before ? before : "";
  unsetenv("RSI_CUDA_CONV");
  EXPECT_EQ(kn::cuda::conv_backend_from_env(), ConvBackend::Im2col);
  setenv("RSI_CUDA_CONV", "cudnn", 1);
  EXPECT_EQ(kn::cuda::conv_backend_from_env(), ConvBackend::Cudnn);
  setenv("RSI_CUDA_CONV", "CUDNN", 1);
  try {
    kn::cuda::conv_backend_from_env();
    ADD_FAILURE() << "names are exact";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("RSI_CUDA_CONV"), std::string::npos) << e.what();
  }
  if (before) setenv("RSI_CUDA_CONV", saved.c_str(), 1);
  else unsetenv("RSI_CUDA_CONV");

  std::string why;
  const std::string version = kn::cuda::cudnn_library_version(&why);
  std::printf("[parity] cudnn library: %s\n", version.empty() ? why.c_str() : version.c_str());
  if (version.empty()) {
    EXPECT_NE(why.find("cuDNN"), std::string::npos) << why;
  } else {
    EXPECT_EQ(version.rfind("cuDNN ", 0), 0u) << version;
    EXPECT_NE(version.find("libcudnn.so."), std::string::npos) << version;
  }
}

TEST(CudaRuntime, AvailabilityIsReportedWithAReason) {
  std::string why;
  const bool available = kn::cuda_available(&why);
  std::printf("[parity] cuda_built=%d cuda_available=%d devices=%d: %s\n", kn::cuda_built() ? 1 : 0, available ? 1 : 0,
              kn::cuda_device_count(), available ? kn::cuda_device_description().c_str() : why.c_str());
  if (available) {
    EXPECT_GT(kn::cuda_device_count(), 0);
    return;
  }
  EXPECT_FALSE(why.empty());
  EXPECT_EQ(kn::cuda_device_count(), 0);
  // Asking for the GPU anyway is a clear error that carries the reason.
  try {
    (void)kn::Exec::gpu();
    ADD_FAILURE() << "Exec::gpu() should throw without a usable GPU";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
  }
  try {
    kn::Tensor t({4}, Device::CUDA);
    ADD_FAILURE() << "a CUDA tensor should not be allocated without a GPU";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA tensor"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, MixedDevicesAreAClearError) {
  const kn::Tensor host({3});
  kn::Exec cuda_exec;
  cuda_exec.device = Device::CUDA;
  try {
    kn::require_device(cuda_exec, host, "the input batch");
    ADD_FAILURE() << "require_device should throw for a CPU tensor and a CUDA exec";
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("the input batch is on cpu but the op runs on cuda"), std::string::npos) << what;
  }
  EXPECT_NO_THROW(kn::require_device(kn::Exec::cpu(), host, "x"));
}

// ---- training-step parity ----

struct Synthetic {
  models::Dataset labeled, unlabeled, validation;
};

// Images whose label is a function of their pixels (learnable), 28×28 in [0, 1].
models::Dataset synthetic_set(std::int64_t count, std::uint64_t seed) {
  models::Dataset d;
  d.images.resize(sz(count) * 784);
  d.labels.resize(sz(count));
  const kn::CounterRng rng(seed, 31337);
  for (std::int64_t i = 0; i < count; ++i) {
    const std::int32_t label = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(i), 10));
    d.labels[sz(i)] = label;
    for (int p = 0; p < 784; ++p) {
      const float noise = rng.uniform(static_cast<std::uint64_t>(i) * 1000 + 100 + static_cast<std::uint64_t>(p));
      const bool stripe = (p / 28) % 10 == label || (p % 28) % 10 == label;
      d.images[sz(i) * 784 + sz(p)] = 0.6f * noise + (stripe ? 0.4f : 0.0f);
    }
  }
  return d;
}

// A network behind the host-memory Teacher callback (inference mode, as train()'s teacher_network).
models::Teacher host_teacher(models::Network& teacher) {
  return [&teacher](const float* x, int n, float* logits) {
    const auto& out = teacher.forward(x, n, {});
    std::copy_n(out.data(), out.numel(), logits);
  };
}

struct TrainCase {
  std::string name;
  models::Genome genome;
  bool distill = false;
};

class TrainingParity : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override {
    const std::string why = cuda_unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
  }
};

// experiments/genomes/ of the source tree: $RSI_SOURCE_DIR, else the tree this was built from, else
// the working directory (a bundle copied to a GPU machine runs from its own root).
std::string genome_dir() {
  for (const char* root : {static_cast<const char*>(std::getenv("RSI_SOURCE_DIR")), RSI_SOURCE_DIR, "."}) {
    if (!root) continue;
    const std::string dir = std::string(root) + "/experiments/genomes/";
    if (std::filesystem::exists(dir + "mlp.yaml")) return dir;
  }
  return std::string(RSI_SOURCE_DIR) + "/experiments/genomes/";  // load_genome then names the missing file
}

TrainCase training_case(int index) {
  using namespace rsi::test_blocks;
  const std::string genomes = genome_dir();
  switch (index) {
    case 0: return {"mlp (adam, as shipped)", models::load_genome(genomes + "mlp.yaml")};
    case 1: return {"cnn (adam, as shipped)", models::load_genome(genomes + "cnn.yaml")};
    case 2: {
      models::Genome g = models::load_genome(genomes + "cnn.yaml");
      g.recipe.optimizer = models::Recipe::Optimizer::Sgd;
      g.recipe.learning_rate = 0.05f;
      return {"cnn (sgd)", g};
    }
    default: {
      // Every block kind, augmentation and distillation: the host-prepared (staged) batch path.
      models::Genome g = genome_of({conv(8), batchnorm(), act(rsi::kernels::Activation::GELU), residual(3),
                                    pool(Block::PoolKind::Max), dropout(0.2f), conv(12, 5, 2),
                                    act(rsi::kernels::Activation::Tanh), pool(Block::PoolKind::Avg), dense(32),
                                    batchnorm(), relu(), dropout(0.3f), dense(10)});
      g.recipe.optimizer = models::Recipe::Optimizer::Sgd;
      g.recipe.learning_rate = 0.02f;
      g.recipe.batch_size = 48;
      g.recipe.augmentation.shift = 2;
      g.recipe.augmentation.flip = true;
      g.recipe.distill_epochs = 1;
      return {"every block + augmentation + distillation (sgd)", g, true};
    }
  }
}

// The training cases themselves (genomes, data, teacher) are valid: checked on the CPU everywhere,
// so a GPU run can only fail on what differs between the devices.
TEST(TrainingCases, TrainOnTheCpu) {
  const models::Dataset labeled = synthetic_set(100, 1), unlabeled = synthetic_set(40, 2);
  models::Network teacher(training_case(0).genome);
  teacher.initialize(5, 1);
  for (int i = 0; i < 4; ++i) {
    const TrainCase c = training_case(i);
    models::Network net(c.genome);
    net.initialize(7, 3);
    models::TrainOptions o;
    o.max_steps = 2;
    if (c.distill) {
      o.teacher = host_teacher(teacher);
      o.unlabeled = &unlabeled;
    }
    const models::TrainResult r = models::train(net, labeled, o);
    EXPECT_EQ(r.steps, 2) << c.name;
    EXPECT_FALSE(r.diverged) << c.name;
    EXPECT_TRUE(std::isfinite(r.final_loss)) << c.name;
  }
}

// train() is one loop for both devices; what the GPU uses of it (batches gathered from the examples
// uploaded once, losses read back in windows) runs on the CPU too and must give the bits of host
// batches with every step's loss read at once (the CPU's defaults).
TEST(TrainingCases, GpuCodePathOnTheCpuIsBitwiseTheCpuPath) {
  const models::Dataset labeled = synthetic_set(100, 1), unlabeled = synthetic_set(30, 2);
  models::Network teacher(training_case(0).genome);
  teacher.initialize(5, 1);
  for (int i = 0; i < 4; ++i) {
    TrainCase c = training_case(i);
    c.genome.recipe.batch_size = 32;
    std::vector<models::TrainResult> results;
    std::vector<std::vector<float>> weights;
    using Batches = models::TrainOptions::Batches;
    const std::pair<Batches, int> variants[] = {{Batches::Host, 1}, {Batches::Host, 3}, {Batches::Resident, 3}};
    for (const auto& [batches, window] : variants) {
      models::Network net(c.genome);
      net.initialize(7, 3);
      models::TrainOptions o;
      o.seed = 3;
      o.epochs = 2;
      o.max_steps = 6;  // ends inside the second epoch
      o.loss_check_every = window;
      o.batches = batches;
      if (c.distill) {
        o.teacher = host_teacher(teacher);
        o.unlabeled = &unlabeled;
      }
      results.push_back(models::train(net, labeled, o));
      weights.emplace_back(net.parameters().span().begin(), net.parameters().span().end());
    }
    for (std::size_t k = 1; k < results.size(); ++k) {
      const std::string where = c.name + ", variant " + std::to_string(k);
      EXPECT_EQ(results[0].steps, results[k].steps) << where;
      EXPECT_EQ(results[0].samples, results[k].samples) << where;
      EXPECT_EQ(results[0].final_loss, results[k].final_loss) << where;
      ASSERT_EQ(results[0].epochs.size(), results[k].epochs.size()) << where;
      for (std::size_t e = 0; e < results[0].epochs.size(); ++e) {
        EXPECT_EQ(results[0].epochs[e].mean_loss, results[k].epochs[e].mean_loss) << where << " epoch " << e;
        EXPECT_EQ(results[0].epochs[e].steps, results[k].epochs[e].steps) << where << " epoch " << e;
      }
      EXPECT_TRUE(weights[0] == weights[k]) << where << ": weights differ from host batches read step by step";
    }
  }
}

// A teacher given as a network (run by train() on the training device) labels exactly as the same
// network behind a host callback: bitwise, on the CPU path and on the GPU code path with CPU ops.
// Without augmentation that GPU path gathers the distillation batches (labeled and unlabeled) from
// the examples uploaded once (the resident path), with augmentation it prepares them on the host.
TEST(TrainingCases, TeacherNetworkGivesTheHostTeachersBits) {
  const models::Dataset labeled = synthetic_set(100, 1), unlabeled = synthetic_set(30, 2);
  models::Network teacher(training_case(0).genome);
  teacher.initialize(5, 1);
  for (const bool augmented : {true, false})
  for (const bool gpu_path : {false, true}) {
    TrainCase c = training_case(3);
    c.genome.recipe.batch_size = 32;
    if (!augmented) c.genome.recipe.augmentation = {};
    const std::string where = std::string(gpu_path ? "gpu path" : "cpu path") + (augmented ? ", augmented" : "");
    std::vector<std::vector<float>> weights;
    std::vector<double> losses;
    for (const bool as_network : {false, true}) {
      models::Network net(c.genome);
      net.initialize(7, 3);
      models::TrainOptions o;
      o.seed = 3;
      o.epochs = 1;
      o.max_steps = 5;  // the distillation phase: (100 + 30) / 32 -> 5 steps
      o.batches = gpu_path ? models::TrainOptions::Batches::Resident : models::TrainOptions::Batches::Host;
      o.unlabeled = &unlabeled;
      if (as_network) {
        o.teacher_network = &teacher;
      } else {
        o.teacher = host_teacher(teacher);
      }
      const models::TrainResult r = models::train(net, labeled, o);
      ASSERT_EQ(r.epochs.size(), 1u);
      EXPECT_EQ(r.epochs[0].phase, models::EpochReport::Phase::Distill);
      losses.push_back(r.final_loss);
      weights.emplace_back(net.parameters().span().begin(), net.parameters().span().end());
    }
    EXPECT_EQ(losses[0], losses[1]) << where;
    EXPECT_TRUE(weights[0] == weights[1]) << where;
  }
}

TEST(TrainingCases, GpuCodePathDetectsDivergence) {
  TrainCase c = training_case(0);
  c.genome.recipe.learning_rate = 1e30f;  // blows up within a few steps
  c.genome.recipe.optimizer = models::Recipe::Optimizer::Sgd;
  const models::Dataset labeled = synthetic_set(200, 1);
  for (const bool gpu_path : {false, true}) {
    models::Network net(c.genome);
    net.initialize(7, 3);
    models::TrainOptions o;
    o.epochs = 3;
    o.loss_check_every = 4;
    o.batches = gpu_path ? models::TrainOptions::Batches::Resident : models::TrainOptions::Batches::Host;
    const models::TrainResult r = models::train(net, labeled, o);
    EXPECT_TRUE(r.diverged) << (gpu_path ? "gpu path" : "cpu path");
    EXPECT_FALSE(std::isfinite(r.final_loss));
  }
}

// Case 4 is case 3 with the teacher as a network (TrainOptions::teacher_network): on the GPU run its
// forward pass runs on the device and the soft labels never reach the host.
// Case 5 also drops the augmentation: distillation batches are then gathered on the device from the
// uploaded labeled set and unlabeled pool (the resident path) and labeled there by the teacher.
TEST_P(TrainingParity, StepsOnGpuMatchTheCpu) {
  const bool teacher_on_device = GetParam() == 4 || GetParam() == 5;
  const bool with_cudnn = GetParam() == 6;
  TrainCase c = training_case(with_cudnn ? 1 : std::min(GetParam(), 3));
  if (teacher_on_device) c.name += ", teacher network on the device";
  if (GetParam() == 5) {
    c.genome.recipe.augmentation = {};
    c.name += ", resident";
  }
  if (GetParam() == 7) {  // the averaged weights and norm statistics (kernels::lerp on the device)
    c.genome.recipe.weight_average = 0.9f;
    c.name += ", weight average";
  }
  std::unique_ptr<CudnnConvolution> cudnn;
  if (with_cudnn) {
    c.name += ", cuDNN convolution";
    cudnn = std::make_unique<CudnnConvolution>();
    if (!cudnn->skip.empty()) GTEST_SKIP() << cudnn->skip;
  }
  const models::Dataset labeled = synthetic_set(300, 1), unlabeled = synthetic_set(100, 2),
                        validation = synthetic_set(200, 3);
  const bool adam = c.genome.recipe.optimizer != models::Recipe::Optimizer::Sgd;
  const std::int64_t steps = 6;

  models::Network teacher(training_case(0).genome);
  teacher.initialize(5, 1);
  auto make_options = [&](Device device) {
    models::TrainOptions o;
    o.seed = 11;
    o.model_id = 3;
    o.epochs = 2;
    o.max_steps = steps;
    o.device = device;
    o.loss_check_every = 4;  // several read-back windows in 6 steps
    if (c.distill && teacher_on_device && device == Device::CUDA) {
      o.teacher_network = &teacher;
      o.unlabeled = &unlabeled;
    } else if (c.distill) {
      o.teacher = host_teacher(teacher);
      o.unlabeled = &unlabeled;
    }
    return o;
  };
  models::Network cpu(c.genome), gpu(c.genome);
  cpu.initialize(7, 3);
  gpu.initialize(7, 3);
  const models::TrainResult rc = models::train(cpu, labeled, make_options(Device::CPU));
  const models::TrainResult rg = models::train(gpu, labeled, make_options(Device::CUDA));
  if (cudnn) {
    const kn::cuda::ConvCounts n = cudnn->since_start();
    EXPECT_GT(n.cudnn, 0) << "no convolution ran through cuDNN";
    EXPECT_EQ(n.fallback, 0) << n.fallback << " convolution call(s) fell back to im2col";
  }
  ASSERT_EQ(gpu.device(), Device::CPU) << "train() must hand the network back on the device it got it on";
  ASSERT_EQ(teacher.device(), Device::CPU) << "train() must hand the teacher back on the device it got it on";
  ASSERT_EQ(rc.steps, rg.steps);
  ASSERT_EQ(rc.samples, rg.samples);
  ASSERT_FALSE(rg.diverged);
  ASSERT_EQ(rc.epochs.size(), rg.epochs.size());
  for (std::size_t e = 0; e < rc.epochs.size(); ++e) {
    const double a = rc.epochs[e].mean_loss, b = rg.epochs[e].mean_loss;
    std::printf("[parity] cuda train %-44s epoch %zu loss cpu %.6f gpu %.6f rel %.2e\n", c.name.c_str(), e, a, b,
                std::fabs(a - b) / std::max(1e-12, std::fabs(a)));
    EXPECT_NEAR(b, a, (adam ? 2e-3 : 2e-4) * std::max(1.0, std::fabs(a))) << c.name << " epoch " << e;
  }
  const std::vector<float> wc(cpu.parameters().span().begin(), cpu.parameters().span().end());
  const std::vector<float> wg(gpu.parameters().span().begin(), gpu.parameters().span().end());
  // SGD is linear in the gradient: weights agree to float tolerance. Adam divides by √v, so a
  // gradient that is ~0 can flip the sign of a step of size ≤ lr: bound the difference by that.
  const double weight_tol = adam ? 2.0 * c.genome.recipe.learning_rate * static_cast<double>(steps) : 1e-4;
  EXPECT_TRUE(close("cuda", "train " + c.name + " weights", wg, wc, weight_tol));
  const std::vector<float> sc(cpu.state().span().begin(), cpu.state().span().end());
  const std::vector<float> sg(gpu.state().span().begin(), gpu.state().span().end());
  EXPECT_TRUE(close("cuda", "train " + c.name + " batch-norm state", sg, sc, 1e-3));

  // Evaluation of the same weights on both devices.
  const models::Evaluation ec = models::evaluate(cpu, validation, 64);
  gpu.to(Device::CUDA);
  const models::Evaluation eg = models::evaluate(gpu, validation, 64);
  gpu.to(Device::CPU);
  const models::Evaluation ec_same = models::evaluate(gpu, validation, 64);
  std::printf("[parity] cuda evaluate %-41s acc cpu %.4f gpu %.4f loss cpu %.6f gpu %.6f\n", c.name.c_str(),
              ec_same.accuracy, eg.accuracy, ec_same.mean_loss, eg.mean_loss);
  EXPECT_NEAR(eg.mean_loss, ec_same.mean_loss, 1e-4 * std::max(1.0, ec_same.mean_loss));
  EXPECT_NEAR(eg.accuracy, ec_same.accuracy, 2.0 / static_cast<double>(validation.size()));
  (void)ec;
}

std::string case_name(const ::testing::TestParamInfo<int>& param) {
  static const char* const names[] = {"mlp_adam",
                                      "cnn_adam",
                                      "cnn_sgd",
                                      "every_block_staged",
                                      "every_block_teacher_on_device",
                                      "every_block_resident_distillation",
                                      "cnn_adam_cudnn",
                                      "every_block_weight_average"};
  return names[param.param];
}
INSTANTIATE_TEST_SUITE_P(Genomes, TrainingParity, ::testing::Values(0, 1, 2, 3, 4, 5, 6, 7), case_name);

// The step replayed from a CUDA graph (TrainOptions::cuda_graphs) is the same kernels on the same
// buffers as the step queued launch by launch: bitwise the same weights and losses, over two epochs
// (the graph is re-captured each epoch) with a short last batch that is never replayed.
TEST(CudaGraphs, ReplayedStepsGiveTheQueuedStepsBits) {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
  const models::Dataset labeled = synthetic_set(800, 1);  // 6 full batches of 128 + one of 32 per epoch
  const models::Dataset validation = synthetic_set(300, 3);
  using namespace rsi::test_blocks;
  for (int i = 0; i < 5; ++i) {
    // The reference MLP and CNN, then a network with batch norm (running statistics updated inside
    // the graph) that is evaluated between epochs (evaluation at batch 256 grows scratch buffers:
    // the graph must be captured again), then the CNN with cuDNN's convolution in the graph.
    TrainCase c = i < 3 ? training_case(i)
                  : i == 3 ? TrainCase{"batch norm, evaluated each epoch",
                                       genome_of({conv(8), batchnorm(), relu(), pool(Block::PoolKind::Max), dense(32),
                                                  batchnorm(), relu(), dense(10)})}
                           : training_case(1);
    if (i == 3) c.genome.recipe.batch_size = 128;
    std::unique_ptr<CudnnConvolution> cudnn;
    if (i == 4) {
      c.name = "cnn, cuDNN convolution";
      cudnn = std::make_unique<CudnnConvolution>();
      if (!cudnn->skip.empty()) {
        std::printf("[parity] cuda graphs %-30s skipped: %s\n", c.name.c_str(), cudnn->skip.c_str());
        continue;
      }
    }
    ASSERT_EQ(c.genome.recipe.batch_size, 128) << c.name;
    std::vector<models::TrainResult> results;
    std::vector<std::vector<float>> weights;
    for (const bool graphs : {false, true}) {
      models::Network net(c.genome);
      net.initialize(7, 3);
      models::TrainOptions o;
      o.seed = 5;
      o.epochs = 2;
      o.device = Device::CUDA;
      o.cuda_graphs = graphs;
      if (i == 3) o.validation = &validation;
      results.push_back(models::train(net, labeled, o));
      weights.emplace_back(net.parameters().span().begin(), net.parameters().span().end());
    }
    if (cudnn) {
      const kn::cuda::ConvCounts n = cudnn->since_start();
      EXPECT_GT(n.cudnn, 0) << c.name << ": no convolution ran through cuDNN";
      EXPECT_EQ(n.fallback, 0) << c.name << ": " << n.fallback << " convolution call(s) fell back to im2col";
    }
    const models::TrainResult &plain = results[0], &replayed = results[1];
    std::printf("[parity] cuda graphs %-30s replayed %lld of %lld steps, loss %.9g vs %.9g%s%s\n", c.name.c_str(),
                static_cast<long long>(replayed.cuda_graph_steps), static_cast<long long>(replayed.steps),
                plain.final_loss, replayed.final_loss, replayed.cuda_graph_fallback.empty() ? "" : ", fallback: ",
                replayed.cuda_graph_fallback.c_str());
    EXPECT_EQ(plain.cuda_graph_steps, 0) << c.name;
    EXPECT_TRUE(replayed.cuda_graph_fallback.empty()) << c.name << ": " << replayed.cuda_graph_fallback;
    // Per epoch: the first full batch warms up, the second is captured and replayed, four more replay.
    EXPECT_EQ(replayed.cuda_graph_steps, 2 * 5) << c.name;
    EXPECT_EQ(plain.steps, replayed.steps) << c.name;
    ASSERT_EQ(plain.epochs.size(), replayed.epochs.size()) << c.name;
    for (std::size_t e = 0; e < plain.epochs.size(); ++e)
      EXPECT_EQ(plain.epochs[e].mean_loss, replayed.epochs[e].mean_loss) << c.name << " epoch " << e;
    EXPECT_TRUE(weights[0] == weights[1]) << c.name << ": weights differ with the step replayed from a graph";
  }
}

// Where a graph does not apply (dropout draws per step, a staged batch path) training runs as usual
// and says nothing was replayed.
TEST(CudaGraphs, NetworksWithDropoutAreNotCaptured) {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
  TrainCase c = training_case(0);
  c.genome.blocks.insert(c.genome.blocks.end() - 1, rsi::test_blocks::dropout(0.2f));
  models::Network net(c.genome);
  net.initialize(7, 3);
  EXPECT_FALSE(net.step_invariant());
  models::TrainOptions o;
  o.device = Device::CUDA;
  o.cuda_graphs = true;
  o.epochs = 1;
  const models::TrainResult r = models::train(net, synthetic_set(400, 1), o);
  EXPECT_EQ(r.cuda_graph_steps, 0);
  EXPECT_FALSE(r.diverged);
}

#if RSI_HAVE_CUDA
// A group of two identical ranks, seen from rank 0, for device buffers: each bucket's "all-reduce",
// queued on the stream it is given, first copies what it was given to `seen` and then writes the
// expected sums (`sums`) into the gradients. Only the events of GradientReducer's side stream order
// those copies after the backward pass and before later work on the network's stream.
class DeviceRecordingGroup final : public rsi::collective::Communicator {
 public:
  DeviceRecordingGroup(const float* grads, const float* sums, float* seen) : grads_(grads), sums_(sums), seen_(seen) {}
  int calls = 0;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const char* backend() const override { return "device-recording"; }
  bool supports_device_buffers() const override { return true; }
  void allreduce_async(float* data, std::size_t count, rsi::collective::ReduceOp, void* stream) override {
    const std::ptrdiff_t at = data - grads_;
    const auto s = static_cast<cudaStream_t>(stream);
    ASSERT_EQ(cudaMemcpyAsync(seen_ + at, data, count * sizeof(float), cudaMemcpyDeviceToDevice, s), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(data, sums_ + at, count * sizeof(float), cudaMemcpyDeviceToDevice, s), cudaSuccess);
    ++calls;
  }
  void allreduce(std::span<float>, rsi::collective::ReduceOp) override { FAIL() << "host all-reduce on the device path"; }
  void allreduce(std::span<double>, rsi::collective::ReduceOp) override {}
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return nullptr; }
  std::unique_ptr<Communicator> split_by_node() override { return nullptr; }
  [[noreturn]] void abort(int) override { std::abort(); }
  void send(std::span<const std::byte>, int, int) override {}
  std::optional<rsi::collective::Message> try_receive() override { return std::nullopt; }
  rsi::collective::Message receive(int, int) override { return {}; }

 private:
  const float* grads_;
  const float* sums_;
  float* seen_;
};

// The bucketed all-reduce on the GPU path: queued on a side stream that waits for the backward pass
// by event (each bucket is given its final gradients, not the NaN placed there before), and the
// network's stream waits for it (a read queued there afterwards sees the sums).
TEST(GradientReducerOnGpu, SideStreamWaitsForBackwardAndTheStepWaitsForIt) {
  const std::string why = cuda_unavailable_reason();
  if (!why.empty()) GTEST_SKIP() << "no CUDA device: " << why;
  const TrainCase c = training_case(1);  // the CNN reference genome, 421k parameters
  const models::Dataset data = synthetic_set(128, 4);
  models::Network net(c.genome);
  net.initialize(7, 3);
  net.to(Device::CUDA);
  const kn::Exec& exec = net.exec();
  const int N = 128;
  const std::int64_t P = net.parameter_count(), bucket = 8192;
  kn::Tensor x = kn::to_device(kn::Tensor({N * 784LL}), Device::CUDA);
  kn::copy_floats(x.data(), Device::CUDA, data.images.data(), Device::CPU, N * 784LL);
  std::vector<float> dlogits_host = inputs.normal(N * 10LL, 4242, 0.01f);
  kn::Tensor dlogits({N * 10LL}, Device::CUDA);
  kn::copy_floats(dlogits.data(), Device::CUDA, dlogits_host.data(), Device::CPU, N * 10LL);
  const models::Network::Mode mode{true, 1, 2, 3, 0};

  // The final gradients, from a backward pass without a reducer.
  net.forward(x.data(), N, mode);
  net.backward(dlogits.data());
  std::vector<float> final_grads(sz(P));
  kn::copy_floats(final_grads.data(), Device::CPU, net.gradients().data(), Device::CUDA, P);
  std::vector<float> sums_host(final_grads);
  for (float& v : sums_host) v *= 2.0f;
  kn::Tensor sums({P}, Device::CUDA), seen({P}, Device::CUDA);
  kn::copy_floats(sums.data(), Device::CUDA, sums_host.data(), Device::CPU, P);

  DeviceRecordingGroup group(net.gradients().data(), sums.data(), seen.data());
  models::GradientReducer reducer(group, net, bucket);
  ASSERT_EQ(reducer.path(), models::GradientReducer::Path::Device);
  // Busy work queued on the network's stream before each backward: without the events the side
  // stream would run its copies while the backward pass is still waiting behind it.
  kn::Tensor busy({std::int64_t{1} << 26}, Device::CUDA);
  for (int step = 0; step < 3; ++step) {
    kn::fill(exec, net.gradients().data(), P, kNaN);
    kn::fill(exec, seen.data(), P, kNaN);
    for (int k = 0; k < 8; ++k) kn::fill(exec, busy.data(), busy.numel(), static_cast<float>(k));
    net.forward(x.data(), N, mode);
    reducer.begin();
    net.backward(dlogits.data(), reducer.hook());
    reducer.finish();
    // Queued on the network's stream after finish(): must see the sums.
    std::vector<float> after(sz(P)), given(sz(P));
    kn::copy_floats(after.data(), Device::CPU, net.gradients().data(), Device::CUDA, P, exec.ctx);
    exec.ctx->synchronize();
    kn::copy_floats(given.data(), Device::CPU, seen.data(), Device::CUDA, P);
    EXPECT_TRUE(given == final_grads) << "step " << step << ": a bucket was reduced before backward had finished it";
    EXPECT_TRUE(after == sums_host) << "step " << step << ": work after finish() ran before the all-reduce ended";
  }
  EXPECT_EQ(group.calls, 3 * reducer.buckets());
  EXPECT_GT(reducer.issued_early(), 0);
  std::printf("[parity] cuda gradient reducer: %lld buckets of %lld floats per step, %lld of %lld issued during backward\n",
              static_cast<long long>(reducer.buckets()), static_cast<long long>(bucket),
              static_cast<long long>(reducer.issued_early()), static_cast<long long>(reducer.issued()));
}
#endif

}  // namespace
