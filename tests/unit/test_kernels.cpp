// test_kernels — the CPU kernels (rsi::kernels) checked four ways:
//   Parity        every op against the plain reference in reference_ops.h on random inputs at many
//                 shapes (odd sizes, strides, paddings), forward and backward, normalised error
//                 max|a-b| / max(1, max|b|) < 1e-5 and no NaN/Inf. Outputs are pre-filled with NaN so
//                 that an op that skips an element, or accumulates where it must overwrite, fails.
//   Jacobian      central finite differences (double, around float evaluations) of a random
//                 projection of each op's output against its backward, for both the kernels and the
//                 reference — so a disagreement in Parity says which side is wrong.
//   Known values  hand-computed Adam/SGD steps, KD loss, batch-norm running statistics.
//   Determinism   bitwise identical results with 1 and 2 threads.
// Plus the Tensor basics (zero fill, 64-byte alignment, views, reshape, resize, clone) and dropout
// statistics.
//   cmake --build build --target test_kernels && build/tests/test_kernels
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "reference_ops.h"
#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"
#include "rsi/kernels/tensor.h"

namespace {

namespace kn = rsi::kernels;
namespace ref = rsi::reference;

constexpr double kParityTol = 1e-5;
constexpr double kGradTol = 1e-2;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

std::size_t sz(std::int64_t n) { return static_cast<std::size_t>(n); }

const ref::InputStream inputs{4242};

std::vector<std::int32_t> random_labels(int N, int K, std::uint64_t seed) {
  const kn::CounterRng rng(seed, kn::rng_stream(kn::RngUse::Split, 4242));
  std::vector<std::int32_t> labels(sz(N));
  for (int n = 0; n < N; ++n) labels[sz(n)] = static_cast<std::int32_t>(rng.below(sz(n), static_cast<std::uint32_t>(K)));
  return labels;
}

std::vector<float> nan_vector(std::size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

// Normalised error max|got − want| / max(1, max|want|) < tol, with every value of `got` finite.
::testing::AssertionResult close(const std::vector<float>& got, const std::vector<float>& want,
                                 double tol = kParityTol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  double max_err = 0.0, max_ref = 0.0;
  std::size_t worst = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i]))
      return ::testing::AssertionFailure() << "non-finite value " << got[i] << " at index " << i << " (expected "
                                           << want[i] << ")";
    if (!std::isfinite(want[i]))
      return ::testing::AssertionFailure() << "reference is non-finite at index " << i;
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (err > max_err) {
      max_err = err;
      worst = i;
    }
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  const double normalised = max_err / std::max(1.0, max_ref);
  if (normalised < tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "normalised error " << normalised << " >= " << tol << "; worst at index "
                                       << worst << ": got " << got[worst] << ", expected " << want[worst] << " (of "
                                       << got.size() << " values)";
}

::testing::AssertionResult close_scalar(double got, double want, double tol = kParityTol) {
  if (!std::isfinite(got)) return ::testing::AssertionFailure() << "non-finite " << got;
  const double normalised = std::fabs(got - want) / std::max(1.0, std::fabs(want));
  if (normalised < tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "got " << got << ", expected " << want << " (normalised error "
                                       << normalised << ")";
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

double project(const std::vector<float>& y, const std::vector<float>& r) {
  double acc = 0.0;
  for (std::size_t i = 0; i < y.size(); ++i) acc += static_cast<double>(y[i]) * r[i];
  return acc;
}

// Central differences of objective() with respect to each element of x (at most ~max_points of them,
// evenly strided), compared with `analytic`: max|analytic − fd| / max|fd| < rtol. The step actually
// taken is the float-rounded one. Also fails when the numerical gradient is identically zero, so that
// a broken objective cannot pass.
::testing::AssertionResult gradient_matches(std::vector<float>& x, const std::vector<float>& analytic,
                                            const std::function<double()>& objective, double eps,
                                            double rtol = kGradTol, std::size_t max_points = 300) {
  if (x.size() != analytic.size())
    return ::testing::AssertionFailure() << "gradient size " << analytic.size() << " != input size " << x.size();
  const std::size_t step = std::max<std::size_t>(1, (x.size() + max_points - 1) / max_points);
  double max_err = 0.0, max_fd = 0.0;
  std::size_t worst = 0;
  double worst_fd = 0.0;
  for (std::size_t i = 0; i < x.size(); i += step) {
    if (!std::isfinite(analytic[i])) return ::testing::AssertionFailure() << "non-finite gradient at " << i;
    const float x0 = x[i];
    const float xp = static_cast<float>(x0 + eps), xm = static_cast<float>(x0 - eps);
    x[i] = xp;
    const double lp = objective();
    x[i] = xm;
    const double lm = objective();
    x[i] = x0;
    const double fd = (lp - lm) / (static_cast<double>(xp) - static_cast<double>(xm));
    const double err = std::fabs(fd - analytic[i]);
    if (err > max_err) {
      max_err = err;
      worst = i;
      worst_fd = fd;
    }
    max_fd = std::max(max_fd, std::fabs(fd));
  }
  if (max_fd < 1e-6) return ::testing::AssertionFailure() << "numerical gradient is zero everywhere";
  if (max_err / max_fd < rtol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "relative gradient error " << max_err / max_fd << " >= " << rtol
                                       << "; worst at index " << worst << ": analytic " << analytic[worst]
                                       << ", finite difference " << worst_fd;
}

// ---------------------------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------------------------

struct ConvCase {
  int N, C, H, W, K, kernel, stride, pad;
};
kn::Conv2dShape conv_shape(const ConvCase& c) {
  kn::Conv2dShape s;
  s.N = c.N, s.C = c.C, s.H = c.H, s.W = c.W, s.K = c.K, s.kernel = c.kernel, s.stride = c.stride, s.pad = c.pad;
  return s;
}
std::string describe(const kn::Conv2dShape& s) {
  std::ostringstream os;
  os << "conv N=" << s.N << " C=" << s.C << " H=" << s.H << " W=" << s.W << " K=" << s.K << " kernel=" << s.kernel
     << " stride=" << s.stride << " pad=" << s.pad;
  return os.str();
}
std::string describe(const kn::Pool2dShape& s) {
  std::ostringstream os;
  os << "pool planes=" << s.planes << " H=" << s.H << " W=" << s.W << " size=" << s.size << " stride=" << s.stride;
  return os.str();
}
std::string describe(const kn::BatchNormShape& s) {
  std::ostringstream os;
  os << "batchnorm outer=" << s.outer << " C=" << s.channels << " inner=" << s.inner;
  return os.str();
}
kn::Pool2dShape pool_shape(std::int64_t planes, int H, int W, int size, int stride) {
  kn::Pool2dShape s;
  s.planes = planes, s.H = H, s.W = W, s.size = size, s.stride = stride;
  return s;
}
kn::BatchNormShape bn_shape(std::int64_t outer, std::int64_t channels, std::int64_t inner) {
  kn::BatchNormShape s;
  s.outer = outer, s.channels = channels, s.inner = inner;
  return s;
}

const ConvCase kConvCases[] = {
    {1, 1, 7, 7, 5, 3, 1, 1},   {3, 2, 7, 7, 5, 5, 2, 2},    {2, 3, 8, 8, 4, 1, 1, 0},   {3, 4, 7, 7, 5, 1, 2, 0},
    {2, 3, 9, 9, 6, 3, 2, 1},   {1, 8, 5, 5, 1, 5, 1, 2},    {3, 2, 6, 9, 5, 3, 1, 1},   {2, 3, 7, 7, 4, 3, 1, 0},
    {1, 1, 1, 1, 1, 1, 1, 0},   {2, 1, 28, 28, 8, 5, 1, 2},  {4, 16, 14, 14, 32, 3, 1, 1}, {3, 5, 7, 7, 5, 3, 2, 1},
    {1, 3, 4, 4, 2, 5, 1, 2},
};

std::size_t conv_col_elems(const kn::Conv2dShape& s) { return std::max<std::size_t>(1, sz(s.col_size())); }

// ---------------------------------------------------------------------------------------------
// Tensor basics
// ---------------------------------------------------------------------------------------------

bool aligned64(const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 64 == 0; }

TEST(Tensor, OwningTensorsAreZeroFilledAndAligned) {
  const kn::Shape shapes[] = {{1}, {3}, {17}, {2, 3, 5}, {1000}, {64, 65}, {7, 1, 3}};
  for (const auto& shape : shapes) {
    {  // dirty the allocator with a same-sized block first
      kn::Tensor dirty(shape);
      dirty.fill(123.0f);
    }
    kn::Tensor t(shape);
    EXPECT_EQ(t.shape(), shape);
    EXPECT_EQ(t.numel(), kn::shape_numel(shape));
    EXPECT_EQ(t.rank(), shape.size());
    EXPECT_TRUE(t.owns());
    EXPECT_FALSE(t.empty());
    EXPECT_EQ(t.device(), kn::Device::CPU);
    ASSERT_NE(t.data(), nullptr);
    EXPECT_TRUE(aligned64(t.data())) << kn::shape_string(shape);
    for (std::int64_t i = 0; i < t.numel(); ++i) ASSERT_EQ(t[i], 0.0f) << "index " << i;
  }
}

TEST(Tensor, ShapeHelpersAndAccessors) {
  EXPECT_EQ(kn::shape_numel({2, 3, 4}), 24);
  EXPECT_EQ(kn::shape_numel({5}), 5);
  EXPECT_EQ(kn::shape_numel({3, 0, 2}), 0);
  const std::string s = kn::shape_string({2, 3, 4});
  EXPECT_NE(s.find('2'), std::string::npos);
  EXPECT_NE(s.find('3'), std::string::npos);
  EXPECT_NE(s.find('4'), std::string::npos);
  EXPECT_NE(std::string(kn::device_name(kn::Device::CPU)), std::string(kn::device_name(kn::Device::CUDA)));

  kn::Tensor t({2, 3});
  EXPECT_EQ(t.dim(0), 2);
  EXPECT_EQ(t.dim(1), 3);
  EXPECT_THROW((void)t.dim(2), std::out_of_range);
  t.fill(2.5f);
  for (float v : t.span()) EXPECT_EQ(v, 2.5f);
  EXPECT_EQ(t.span().size(), 6u);
  t.zero();
  for (float v : t.span()) EXPECT_EQ(v, 0.0f);

  kn::Tensor none;
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.numel(), 0);
  EXPECT_FALSE(none.owns());
}

TEST(Tensor, ViewAliasesItsSource) {
  kn::Tensor base({4, 6});
  kn::Tensor v = kn::Tensor::view(base.data() + 6, {2, 3});
  EXPECT_FALSE(v.owns());
  EXPECT_EQ(v.data(), base.data() + 6);
  EXPECT_EQ(v.numel(), 6);
  v[4] = 7.0f;
  EXPECT_EQ(base[10], 7.0f);
  base[6] = -1.0f;
  EXPECT_EQ(v[0], -1.0f);
  v.fill(3.0f);
  for (std::int64_t i = 0; i < base.numel(); ++i) EXPECT_EQ(base[i], (i >= 6 && i < 12) ? 3.0f : 0.0f) << i;
}

TEST(Tensor, ReshapedSharesDataWithNewShape) {
  kn::Tensor t({2, 6});
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i);
  kn::Tensor r = t.reshaped({3, 4});
  EXPECT_EQ(r.shape(), (kn::Shape{3, 4}));
  EXPECT_EQ(r.numel(), 12);
  EXPECT_EQ(r.data(), t.data());
  EXPECT_EQ(r[5], 5.0f);
  r[11] = 42.0f;
  EXPECT_EQ(t[11], 42.0f);
  EXPECT_EQ(t.shape(), (kn::Shape{2, 6}));
  EXPECT_ANY_THROW((void)t.reshaped({5, 2})) << "reshape to another element count must be refused";
}

TEST(Tensor, ResizeShrinksInPlaceAndGrows) {
  kn::Tensor t({4, 5});
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i + 1);
  float* before = t.data();
  t.resize({2, 5});
  EXPECT_EQ(t.shape(), (kn::Shape{2, 5}));
  EXPECT_EQ(t.numel(), 10);
  EXPECT_EQ(t.data(), before);  // shrinking does not reallocate
  for (std::int64_t i = 0; i < 10; ++i) EXPECT_EQ(t[i], static_cast<float>(i + 1));
  t.resize({64, 33});
  EXPECT_EQ(t.shape(), (kn::Shape{64, 33}));
  EXPECT_EQ(t.numel(), 64 * 33);
  EXPECT_TRUE(t.owns());
  EXPECT_TRUE(aligned64(t.data()));
  t.fill(1.5f);  // the whole grown buffer is writable
  EXPECT_EQ(t[64 * 33 - 1], 1.5f);
}

TEST(Tensor, CloneIsADeepOwningCopy) {
  kn::Tensor t({3, 7});
  for (std::int64_t i = 0; i < t.numel(); ++i) t[i] = static_cast<float>(i) * 0.5f;
  kn::Tensor c = t.clone();
  EXPECT_EQ(c.shape(), t.shape());
  EXPECT_TRUE(c.owns());
  EXPECT_NE(c.data(), t.data());
  EXPECT_TRUE(aligned64(c.data()));
  for (std::int64_t i = 0; i < t.numel(); ++i) EXPECT_EQ(c[i], t[i]);
  c[0] = 99.0f;
  EXPECT_EQ(t[0], 0.0f);

  kn::Tensor v = kn::Tensor::view(t.data() + 7, {7});
  kn::Tensor vc = v.clone();
  EXPECT_TRUE(vc.owns());
  EXPECT_NE(vc.data(), v.data());
  for (std::int64_t i = 0; i < 7; ++i) EXPECT_EQ(vc[i], t[7 + i]);
}

TEST(Tensor, MoveTransfersOwnership) {
  kn::Tensor t({5});
  t[2] = 4.0f;
  float* p = t.data();
  kn::Tensor moved(std::move(t));
  EXPECT_EQ(moved.data(), p);
  EXPECT_EQ(moved[2], 4.0f);
  EXPECT_TRUE(moved.owns());
}

// ---------------------------------------------------------------------------------------------
// Parity: rsi::kernels against rsi::reference
// ---------------------------------------------------------------------------------------------

TEST(Parity, Linear) {
  const int cases[][3] = {{1, 1, 1}, {1, 7, 5}, {3, 5, 4}, {8, 33, 17}, {64, 128, 10}, {5, 300, 7}, {33, 17, 65}};
  std::uint64_t seed = 1;
  for (const auto& c : cases) {
    const int N = c[0], I = c[1], O = c[2];
    SCOPED_TRACE("linear N=" + std::to_string(N) + " I=" + std::to_string(I) + " O=" + std::to_string(O));
    const auto X = inputs.normal(sz(N * I), seed++);
    const auto W = inputs.normal(sz(O * I), seed++, 1.0f / std::sqrt(static_cast<float>(I)));
    const auto b = inputs.normal(sz(O), seed++);
    const auto dY = inputs.normal(sz(N * O), seed++);
    auto yk = nan_vector(sz(N * O)), yr = nan_vector(sz(N * O));
    kn::linear_forward(X.data(), W.data(), b.data(), yk.data(), N, I, O);
    ref::linear_forward(X.data(), W.data(), b.data(), yr.data(), N, I, O);
    EXPECT_TRUE(close(yk, yr)) << "Y";

    auto dXk = nan_vector(X.size()), dWk = nan_vector(W.size()), dbk = nan_vector(b.size());
    auto dXr = nan_vector(X.size()), dWr = nan_vector(W.size()), dbr = nan_vector(b.size());
    kn::linear_backward(X.data(), W.data(), dY.data(), dXk.data(), dWk.data(), dbk.data(), N, I, O);
    ref::linear_backward(X.data(), W.data(), dY.data(), dXr.data(), dWr.data(), dbr.data(), N, I, O);
    EXPECT_TRUE(close(dXk, dXr)) << "dX";
    EXPECT_TRUE(close(dWk, dWr)) << "dW";
    EXPECT_TRUE(close(dbk, dbr)) << "db";

    // A null dX skips the input gradient; the parameter gradients are unchanged.
    auto dW2 = nan_vector(W.size()), db2 = nan_vector(b.size());
    kn::linear_backward(X.data(), W.data(), dY.data(), nullptr, dW2.data(), db2.data(), N, I, O);
    EXPECT_TRUE(close(dW2, dWr)) << "dW with null dX";
    EXPECT_TRUE(close(db2, dbr)) << "db with null dX";
  }
}

TEST(Parity, Conv2d) {
  std::uint64_t seed = 100;
  for (const auto& cc : kConvCases) {
    const auto s = conv_shape(cc);
    SCOPED_TRACE(describe(s));
    const std::size_t nx = sz(std::int64_t{s.C} * s.N * s.H * s.W);
    const std::size_t nw = sz(std::int64_t{s.K} * s.C * s.kernel * s.kernel);
    const std::size_t ny = sz(std::int64_t{s.K} * s.N * s.OH() * s.OW());
    const auto X = inputs.normal(nx, seed++);
    const auto W = inputs.normal(nw, seed++, 1.0f / std::sqrt(static_cast<float>(s.C * s.kernel * s.kernel)));
    const auto b = inputs.normal(sz(s.K), seed++);
    const auto dY = inputs.normal(ny, seed++);
    std::vector<float> colk(conv_col_elems(s)), colr(conv_col_elems(s));

    auto yk = nan_vector(ny), yr = nan_vector(ny);
    kn::conv2d_forward(s, X.data(), W.data(), b.data(), yk.data(), colk.data());
    ref::conv2d_forward(s, X.data(), W.data(), b.data(), yr.data(), colr.data());
    EXPECT_TRUE(close(yk, yr)) << "Y";

    auto dXk = nan_vector(nx), dWk = nan_vector(nw), dbk = nan_vector(sz(s.K));
    auto dXr = nan_vector(nx), dWr = nan_vector(nw), dbr = nan_vector(sz(s.K));
    kn::conv2d_backward(s, X.data(), W.data(), dY.data(), dXk.data(), dWk.data(), dbk.data(), colk.data());
    ref::conv2d_backward(s, X.data(), W.data(), dY.data(), dXr.data(), dWr.data(), dbr.data(), colr.data());
    EXPECT_TRUE(close(dXk, dXr)) << "dX";
    EXPECT_TRUE(close(dWk, dWr)) << "dW";
    EXPECT_TRUE(close(dbk, dbr)) << "db";

    // Null dX (first layer): forward again to refill col, then the parameter gradients alone.
    auto dW2 = nan_vector(nw), db2 = nan_vector(sz(s.K));
    kn::conv2d_forward(s, X.data(), W.data(), b.data(), yk.data(), colk.data());
    kn::conv2d_backward(s, X.data(), W.data(), dY.data(), nullptr, dW2.data(), db2.data(), colk.data());
    EXPECT_TRUE(close(dW2, dWr)) << "dW with null dX";
    EXPECT_TRUE(close(db2, dbr)) << "db with null dX";
  }
}

TEST(Parity, ConvColSize) {
  // im2col workspace [C*k*k][N*OH*OW], zero for a plain 1×1 stride-1 GEMM.
  for (const auto& cc : kConvCases) {
    const auto s = conv_shape(cc);
    SCOPED_TRACE(describe(s));
    const std::int64_t full = std::int64_t{s.C} * s.kernel * s.kernel * s.N * s.OH() * s.OW();
    if (s.kernel == 1 && s.stride == 1 && s.pad == 0)
      EXPECT_EQ(s.col_size(), 0);
    else
      EXPECT_EQ(s.col_size(), full);
  }
}

const kn::Pool2dShape kPoolCases[] = {
    pool_shape(1, 2, 2, 2, 2), pool_shape(6, 7, 7, 2, 2), pool_shape(6, 7, 7, 3, 2), pool_shape(5, 8, 8, 2, 2),
    pool_shape(3, 9, 6, 3, 2), pool_shape(4, 5, 5, 2, 1), pool_shape(96, 28, 28, 2, 2), pool_shape(2, 3, 3, 3, 3),
    pool_shape(7, 14, 14, 3, 2),
};

TEST(Parity, MaxPool) {
  std::uint64_t seed = 200;
  for (const auto& s : kPoolCases) {
    SCOPED_TRACE(describe(s));
    const std::size_t nx = sz(s.planes * s.H * s.W), ny = sz(s.planes * s.OH() * s.OW());
    const auto X = inputs.normal(nx, seed++);
    const auto dY = inputs.normal(ny, seed++);
    auto yk = nan_vector(ny), yr = nan_vector(ny);
    std::vector<std::int32_t> ak(ny, -1), ar(ny, -1);
    kn::maxpool2d_forward(s, X.data(), yk.data(), ak.data());
    ref::maxpool2d_forward(s, X.data(), yr.data(), ar.data());
    EXPECT_TRUE(close(yk, yr, 1e-12)) << "Y";
    // argmax's encoding is the kernel's business; each backward is fed its own forward's argmax.
    auto dXk = nan_vector(nx), dXr = nan_vector(nx);
    kn::maxpool2d_backward(s, dY.data(), ak.data(), dXk.data());
    ref::maxpool2d_backward(s, dY.data(), ar.data(), dXr.data());
    EXPECT_TRUE(close(dXk, dXr)) << "dX";
  }
}

TEST(Parity, MaxPoolWithTiesRoutesGradientToAMaximum) {
  // After a ReLU most inputs are 0: windows are full of ties. Any maximum may take the gradient, but
  // each window's gradient must land on exactly one element equal to its maximum.
  const auto s = pool_shape(6, 7, 7, 3, 2);
  const std::size_t nx = sz(s.planes * s.H * s.W), ny = sz(s.planes * s.OH() * s.OW());
  auto X = inputs.normal(nx, 250, 1.0f, -1.2f);
  for (auto& x : X) x = std::max(x, 0.0f);
  auto Y = nan_vector(ny), yr = nan_vector(ny);
  std::vector<std::int32_t> argmax(ny), ar(ny);
  kn::maxpool2d_forward(s, X.data(), Y.data(), argmax.data());
  ref::maxpool2d_forward(s, X.data(), yr.data(), ar.data());
  EXPECT_TRUE(close(Y, yr, 1e-12));
  const int OH = s.OH(), OW = s.OW();
  for (std::int64_t p = 0; p < s.planes; ++p)
    for (int oh = 0; oh < OH; ++oh)
      for (int ow = 0; ow < OW; ++ow) {
        std::vector<float> dY(ny, 0.0f), dX = nan_vector(nx);
        const std::size_t o = sz((p * OH + oh) * OW + ow);
        dY[o] = 1.0f;
        kn::maxpool2d_backward(s, dY.data(), argmax.data(), dX.data());
        int hits = 0;
        for (std::size_t i = 0; i < nx; ++i) {
          ASSERT_TRUE(dX[i] == 0.0f || dX[i] == 1.0f) << "dX[" << i << "] = " << dX[i];
          if (dX[i] == 0.0f) continue;
          ++hits;
          const std::int64_t plane = static_cast<std::int64_t>(i) / (s.H * s.W);
          const int h = static_cast<int>(static_cast<std::int64_t>(i) % (s.H * s.W)) / s.W;
          const int w = static_cast<int>(static_cast<std::int64_t>(i) % s.W);
          EXPECT_EQ(plane, p);
          EXPECT_TRUE(h >= oh * s.stride && h < oh * s.stride + s.size && w >= ow * s.stride &&
                      w < ow * s.stride + s.size)
              << "gradient left its window";
          EXPECT_EQ(X[i], Y[o]) << "gradient went to a non-maximum";
        }
        ASSERT_EQ(hits, 1) << "window " << o;
      }
}

TEST(Parity, AvgPool) {
  std::uint64_t seed = 300;
  for (const auto& s : kPoolCases) {
    SCOPED_TRACE(describe(s));
    const std::size_t nx = sz(s.planes * s.H * s.W), ny = sz(s.planes * s.OH() * s.OW());
    const auto X = inputs.normal(nx, seed++);
    const auto dY = inputs.normal(ny, seed++);
    auto yk = nan_vector(ny), yr = nan_vector(ny);
    kn::avgpool2d_forward(s, X.data(), yk.data());
    ref::avgpool2d_forward(s, X.data(), yr.data());
    EXPECT_TRUE(close(yk, yr)) << "Y";
    auto dXk = nan_vector(nx), dXr = nan_vector(nx);
    kn::avgpool2d_backward(s, dY.data(), dXk.data());
    ref::avgpool2d_backward(s, dY.data(), dXr.data());
    EXPECT_TRUE(close(dXk, dXr)) << "dX";
  }
}

const kn::Activation kActivations[] = {kn::Activation::ReLU, kn::Activation::GELU, kn::Activation::Tanh};

TEST(Parity, Activations) {
  std::uint64_t seed = 400;
  for (const auto a : kActivations) {
    for (const std::int64_t n : {1, 7, 1000, 4097}) {
      SCOPED_TRACE(std::string(ref::activation_name(a)) + " n=" + std::to_string(n));
      const auto X = inputs.normal(sz(n), seed++, 3.0f);
      const auto dY = inputs.normal(sz(n), seed++);
      auto yk = nan_vector(sz(n)), yr = nan_vector(sz(n));
      kn::activation_forward(a, X.data(), yk.data(), n);
      ref::activation_forward(a, X.data(), yr.data(), n);
      EXPECT_TRUE(close(yk, yr)) << "Y";
      // Both backwards get the same (reference) Y so that only the derivative is compared.
      auto dXk = nan_vector(sz(n)), dXr = nan_vector(sz(n));
      kn::activation_backward(a, X.data(), yr.data(), dY.data(), dXk.data(), n);
      ref::activation_backward(a, X.data(), yr.data(), dY.data(), dXr.data(), n);
      EXPECT_TRUE(close(dXk, dXr)) << "dX";
    }
  }
  // Saturation: large |x| stays finite.
  const std::vector<float> extreme = {-100.0f, -30.0f, 30.0f, 100.0f, 0.0f};
  for (const auto a : kActivations) {
    auto yk = nan_vector(extreme.size()), yr = nan_vector(extreme.size());
    kn::activation_forward(a, extreme.data(), yk.data(), 5);
    ref::activation_forward(a, extreme.data(), yr.data(), 5);
    EXPECT_TRUE(close(yk, yr)) << ref::activation_name(a) << " at extremes";
  }
}

TEST(Parity, ActivationNames) {
  const std::string relu = kn::activation_name(kn::Activation::ReLU), gelu = kn::activation_name(kn::Activation::GELU),
                    tanh_name = kn::activation_name(kn::Activation::Tanh);
  EXPECT_FALSE(relu.empty());
  EXPECT_FALSE(gelu.empty());
  EXPECT_FALSE(tanh_name.empty());
  EXPECT_NE(relu, gelu);
  EXPECT_NE(relu, tanh_name);
  EXPECT_NE(gelu, tanh_name);
}

TEST(Parity, Dropout) {
  std::uint64_t seed = 500;
  for (const float rate : {0.0f, 0.1f, 0.5f, 0.9f}) {
    for (const std::uint64_t offset : {std::uint64_t{0}, std::uint64_t{12345}, (std::uint64_t{1} << 33) + 7}) {
      SCOPED_TRACE("rate=" + std::to_string(rate) + " offset=" + std::to_string(offset));
      const std::int64_t n = 1001;
      const kn::CounterRng rng(7, kn::rng_stream(kn::RngUse::Dropout, 3), 11);
      const auto X = inputs.normal(sz(n), seed++);
      const auto dY = inputs.normal(sz(n), seed++);
      auto yk = nan_vector(sz(n)), yr = nan_vector(sz(n)), mk = nan_vector(sz(n)), mr = nan_vector(sz(n));
      kn::dropout_forward(X.data(), yk.data(), mk.data(), n, rate, rng, offset);
      ref::dropout_forward(X.data(), yr.data(), mr.data(), n, rate, rng, offset);
      EXPECT_TRUE(close(mk, mr)) << "mask";
      EXPECT_TRUE(close(yk, yr)) << "Y";
      auto dXk = nan_vector(sz(n)), dXr = nan_vector(sz(n));
      kn::dropout_backward(dY.data(), mr.data(), dXk.data(), n);
      ref::dropout_backward(dY.data(), mr.data(), dXr.data(), n);
      EXPECT_TRUE(close(dXk, dXr)) << "dX";
    }
  }
}

TEST(Parity, AddAndAccumulate) {
  for (const std::int64_t n : {1, 5, 1000, 4099}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    const auto A = inputs.normal(sz(n), 600 + sz(n));
    const auto B = inputs.normal(sz(n), 700 + sz(n));
    auto yk = nan_vector(sz(n)), yr = nan_vector(sz(n));
    kn::add(A.data(), B.data(), yk.data(), n);
    ref::add(A.data(), B.data(), yr.data(), n);
    EXPECT_TRUE(close(yk, yr, 1e-12));
    auto ak = B, ar = B;
    kn::accumulate(A.data(), ak.data(), n);
    ref::accumulate(A.data(), ar.data(), n);
    EXPECT_TRUE(close(ak, ar, 1e-12));
    // In-place residual: Y aliases A.
    auto inplace = A;
    kn::add(inplace.data(), B.data(), inplace.data(), n);
    EXPECT_TRUE(close(inplace, yr, 1e-12));
  }
}

TEST(Parity, LayoutPermutations) {
  const int cases[][3] = {{1, 1, 1}, {3, 2, 49}, {1, 4, 9}, {16, 3, 7}, {5, 1, 1}};
  std::uint64_t seed = 800;
  for (const auto& c : cases) {
    const int C = c[0], N = c[1], HW = c[2];
    SCOPED_TRACE("C=" + std::to_string(C) + " N=" + std::to_string(N) + " HW=" + std::to_string(HW));
    const std::size_t n = sz(std::int64_t{C} * N * HW);
    const auto X = inputs.distinct(n, seed++, 1.0f);  // distinct values: a permutation is visible
    auto dk = nan_vector(n), dr = nan_vector(n);
    kn::cnhw_to_dense(X.data(), dk.data(), C, N, HW);
    ref::cnhw_to_dense(X.data(), dr.data(), C, N, HW);
    EXPECT_TRUE(close(dk, dr, 1e-12)) << "cnhw_to_dense";
    auto ck = nan_vector(n), cr = nan_vector(n);
    kn::dense_to_cnhw(X.data(), ck.data(), C, N, HW);
    ref::dense_to_cnhw(X.data(), cr.data(), C, N, HW);
    EXPECT_TRUE(close(ck, cr, 1e-12)) << "dense_to_cnhw";

    // Inverses of each other, both ways, and true permutations (same multiset of values).
    auto back = nan_vector(n);
    kn::dense_to_cnhw(dk.data(), back.data(), C, N, HW);
    EXPECT_TRUE(bitwise_equal(back, X)) << "dense_to_cnhw(cnhw_to_dense(X)) != X";
    kn::cnhw_to_dense(ck.data(), back.data(), C, N, HW);
    EXPECT_TRUE(bitwise_equal(back, X)) << "cnhw_to_dense(dense_to_cnhw(X)) != X";
    auto sorted_in = X, sorted_out = dk;
    std::sort(sorted_in.begin(), sorted_in.end());
    std::sort(sorted_out.begin(), sorted_out.end());
    EXPECT_TRUE(bitwise_equal(sorted_in, sorted_out)) << "not a permutation";
  }
  // The documented meaning: X[c][n][i] lands at Y[n][c*HW + i].
  const int C = 2, N = 3, HW = 4;
  std::vector<float> X(24);
  std::iota(X.begin(), X.end(), 0.0f);
  auto Y = nan_vector(24);
  kn::cnhw_to_dense(X.data(), Y.data(), C, N, HW);
  EXPECT_EQ(Y[sz((2 * C + 1) * HW + 3)], X[sz((1 * N + 2) * HW + 3)]);  // c=1, n=2, i=3
  EXPECT_EQ(Y[sz((0 * C + 1) * HW + 0)], X[sz((1 * N + 0) * HW + 0)]);  // c=1, n=0, i=0
}

const kn::BatchNormShape kBatchNormCases[] = {
    bn_shape(3, 5, 1),  bn_shape(2, 1, 1),  bn_shape(64, 10, 1),  bn_shape(1, 3, 2 * 7 * 7),
    bn_shape(1, 1, 3 * 5 * 5), bn_shape(2, 3, 4), bn_shape(1, 16, 8 * 14 * 14), bn_shape(5, 7, 3),
};

TEST(Parity, BatchNorm) {
  std::uint64_t seed = 900;
  for (const auto& s : kBatchNormCases) {
    SCOPED_TRACE(describe(s));
    const std::size_t n = sz(s.outer * s.channels * s.inner), C = sz(s.channels);
    const auto X = inputs.normal(n, seed++, 2.0f, 0.7f);
    const auto gamma = inputs.normal(C, seed++, 0.3f, 1.0f);
    const auto beta = inputs.normal(C, seed++);
    const auto dY = inputs.normal(n, seed++);
    const auto rm0 = inputs.normal(C, seed++), rv0 = inputs.normal(C, seed++, 0.1f, 1.0f);
    const float momentum = 0.1f, eps = 1e-5f;

    auto yk = nan_vector(n), yr = nan_vector(n);
    auto mk = nan_vector(C), mr = nan_vector(C), ik = nan_vector(C), ir = nan_vector(C);
    auto rmk = rm0, rmr = rm0, rvk = rv0, rvr = rv0;
    kn::batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), yk.data(), mk.data(), ik.data(), rmk.data(),
                                rvk.data(), momentum, eps);
    ref::batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), yr.data(), mr.data(), ir.data(), rmr.data(),
                                 rvr.data(), momentum, eps);
    EXPECT_TRUE(close(yk, yr)) << "Y (train)";
    EXPECT_TRUE(close(mk, mr)) << "save_mean";
    EXPECT_TRUE(close(ik, ir)) << "save_invstd";
    EXPECT_TRUE(close(rmk, rmr)) << "running_mean";
    EXPECT_TRUE(close(rvk, rvr)) << "running_var";

    auto dXk = nan_vector(n), dXr = nan_vector(n), dgk = nan_vector(C), dgr = nan_vector(C), dbk = nan_vector(C),
         dbr = nan_vector(C);
    kn::batchnorm_backward(s, X.data(), gamma.data(), mr.data(), ir.data(), dY.data(), dXk.data(), dgk.data(),
                           dbk.data());
    ref::batchnorm_backward(s, X.data(), gamma.data(), mr.data(), ir.data(), dY.data(), dXr.data(), dgr.data(),
                            dbr.data());
    EXPECT_TRUE(close(dXk, dXr)) << "dX";
    EXPECT_TRUE(close(dgk, dgr)) << "dgamma";
    EXPECT_TRUE(close(dbk, dbr)) << "dbeta";

    auto ek = nan_vector(n), er = nan_vector(n);
    kn::batchnorm_forward_eval(s, X.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(), eps, ek.data());
    ref::batchnorm_forward_eval(s, X.data(), gamma.data(), beta.data(), rm0.data(), rv0.data(), eps, er.data());
    EXPECT_TRUE(close(ek, er)) << "Y (eval)";
  }
}

TEST(Parity, Losses) {
  const int cases[][2] = {{1, 2}, {3, 10}, {17, 7}, {64, 10}, {1, 1}};
  std::uint64_t seed = 1000;
  for (const auto& c : cases) {
    const int N = c[0], K = c[1];
    for (const float logit_scale : {1.0f, 40.0f}) {  // 40: far from 0, checks a stable log-sum-exp
      SCOPED_TRACE("N=" + std::to_string(N) + " K=" + std::to_string(K) + " logit scale " + std::to_string(logit_scale));
      const std::size_t n = sz(N * K);
      const auto logits = inputs.normal(n, seed++, logit_scale);
      const auto teacher = inputs.normal(n, seed++, logit_scale);
      const auto labels = random_labels(N, K, seed++);
      const auto prefill = inputs.normal(n, seed++);  // losses accumulate into what is there

      for (const float scale : {1.0f, 0.3f}) {
        auto gk = prefill, gr = prefill;
        const float lk = kn::softmax_cross_entropy(logits.data(), labels.data(), N, K, gk.data(), scale);
        const float lr = ref::softmax_cross_entropy(logits.data(), labels.data(), N, K, gr.data(), scale);
        EXPECT_TRUE(close_scalar(lk, lr)) << "cross-entropy loss, scale " << scale;
        EXPECT_TRUE(close(gk, gr)) << "cross-entropy dlogits, scale " << scale;

        for (const float T : {1.0f, 2.0f, 4.0f}) {
          auto sk = prefill, sr = prefill;
          const float kk = kn::kd_loss(logits.data(), teacher.data(), N, K, T, sk.data(), scale);
          const float kr = ref::kd_loss(logits.data(), teacher.data(), N, K, T, sr.data(), scale);
          EXPECT_TRUE(close_scalar(kk, kr)) << "kd loss, T=" << T << " scale " << scale;
          EXPECT_TRUE(close(sk, sr)) << "kd dstudent, T=" << T << " scale " << scale;
        }
      }
      for (const float T : {1.0f, 0.5f, 3.0f}) {
        auto pk = nan_vector(n), pr = nan_vector(n);
        kn::softmax(logits.data(), pk.data(), N, K, T);
        ref::softmax(logits.data(), pr.data(), N, K, T);
        EXPECT_TRUE(close(pk, pr)) << "softmax T=" << T;
        for (int r = 0; r < N; ++r) {
          double sum = 0.0;
          for (int k = 0; k < K; ++k) sum += pk[sz(r * K + k)];
          EXPECT_NEAR(sum, 1.0, 1e-5) << "row " << r;
        }
      }
    }
  }
}

TEST(Parity, Adam) {
  kn::AdamConfig configs[5];
  configs[1].lr = 1e-2f, configs[1].weight_decay = 0.01f, configs[1].decoupled = false;
  configs[2].lr = 1e-2f, configs[2].weight_decay = 0.1f, configs[2].decoupled = true;
  configs[3].beta1 = 0.5f, configs[3].beta2 = 0.9f, configs[3].eps = 1e-6f;
  configs[4].lr = 3e-3f, configs[4].weight_decay = 0.05f, configs[4].decoupled = true, configs[4].beta2 = 0.99f;
  std::uint64_t seed = 1100;
  for (const auto& cfg : configs) {
    SCOPED_TRACE("adam lr=" + std::to_string(cfg.lr) + " wd=" + std::to_string(cfg.weight_decay) +
                 (cfg.decoupled ? " decoupled" : " L2"));
    const std::int64_t n = 1001;
    auto pk = inputs.normal(sz(n), seed++), pr = pk;
    std::vector<float> mk(sz(n), 0.0f), mr(sz(n), 0.0f), vk(sz(n), 0.0f), vr(sz(n), 0.0f);
    for (std::int64_t step = 1; step <= 6; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      const auto g = inputs.normal(sz(n), seed++);
      kn::adam_step(pk.data(), g.data(), mk.data(), vk.data(), n, cfg, step);
      ref::adam_step(pr.data(), g.data(), mr.data(), vr.data(), n, cfg, step);
      EXPECT_TRUE(close(pk, pr)) << "param";
      EXPECT_TRUE(close(mk, mr)) << "m";
      EXPECT_TRUE(close(vk, vr)) << "v";
    }
  }
}

TEST(Parity, Sgd) {
  kn::SgdConfig configs[6];
  configs[1].lr = 0.1f, configs[1].momentum = 0.9f, configs[1].weight_decay = 1e-2f, configs[1].nesterov = true;
  configs[2].lr = 0.05f, configs[2].momentum = 0.0f;
  configs[3].lr = 0.1f, configs[3].momentum = 0.5f, configs[3].weight_decay = 0.05f;
  configs[4].lr = 0.02f, configs[4].momentum = 0.9f, configs[4].nesterov = true;
  configs[5].lr = 0.05f, configs[5].momentum = 0.0f, configs[5].weight_decay = 0.1f;
  std::uint64_t seed = 1200;
  for (const auto& cfg : configs) {
    SCOPED_TRACE("sgd lr=" + std::to_string(cfg.lr) + " momentum=" + std::to_string(cfg.momentum) +
                 " wd=" + std::to_string(cfg.weight_decay) + (cfg.nesterov ? " nesterov" : ""));
    const std::int64_t n = 1001;
    auto pk = inputs.normal(sz(n), seed++), pr = pk;
    std::vector<float> velk(sz(n), 0.0f), velr(sz(n), 0.0f);
    for (int step = 1; step <= 6; ++step) {
      SCOPED_TRACE("step " + std::to_string(step));
      const auto g = inputs.normal(sz(n), seed++);
      kn::sgd_step(pk.data(), g.data(), velk.data(), n, cfg);
      ref::sgd_step(pr.data(), g.data(), velr.data(), n, cfg);
      EXPECT_TRUE(close(pk, pr)) << "param";
      EXPECT_TRUE(close(velk, velr)) << "velocity";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Finite-difference Jacobian checks, run on both implementations
// ---------------------------------------------------------------------------------------------

struct OpTable {
  const char* name;
  decltype(&kn::linear_forward) linear_forward;
  decltype(&kn::linear_backward) linear_backward;
  decltype(&kn::conv2d_forward) conv2d_forward;
  decltype(&kn::conv2d_backward) conv2d_backward;
  decltype(&kn::maxpool2d_forward) maxpool2d_forward;
  decltype(&kn::maxpool2d_backward) maxpool2d_backward;
  decltype(&kn::avgpool2d_forward) avgpool2d_forward;
  decltype(&kn::avgpool2d_backward) avgpool2d_backward;
  decltype(&kn::activation_forward) activation_forward;
  decltype(&kn::activation_backward) activation_backward;
  decltype(&kn::dropout_forward) dropout_forward;
  decltype(&kn::dropout_backward) dropout_backward;
  decltype(&kn::add) add;
  decltype(&kn::batchnorm_forward_train) batchnorm_forward_train;
  decltype(&kn::batchnorm_backward) batchnorm_backward;
  decltype(&kn::softmax_cross_entropy) softmax_cross_entropy;
  decltype(&kn::kd_loss) kd_loss;
};

#define RSI_OP_TABLE(label, ns)                                                                                      \
  OpTable {                                                                                                          \
    label, &ns::linear_forward, &ns::linear_backward, &ns::conv2d_forward, &ns::conv2d_backward,                    \
        &ns::maxpool2d_forward, &ns::maxpool2d_backward, &ns::avgpool2d_forward, &ns::avgpool2d_backward,           \
        &ns::activation_forward, &ns::activation_backward, &ns::dropout_forward, &ns::dropout_backward, &ns::add,   \
        &ns::batchnorm_forward_train, &ns::batchnorm_backward, &ns::softmax_cross_entropy, &ns::kd_loss             \
  }
const OpTable kKernelOps = RSI_OP_TABLE("Kernels", rsi::kernels);
const OpTable kReferenceOps = RSI_OP_TABLE("Reference", rsi::reference);
#undef RSI_OP_TABLE

// Thousands of tiny evaluations: run them on one thread, since OpenMP start-up dominates such
// sizes and crawls on a loaded machine. Results do not depend on the thread count (Determinism checks it).
class Jacobian : public ::testing::TestWithParam<const OpTable*> {
 protected:
  void SetUp() override {
    threads_before_ = kn::num_threads();
    kn::set_num_threads(1);
  }
  void TearDown() override { kn::set_num_threads(threads_before_); }
  const OpTable& ops() const { return *GetParam(); }

 private:
  int threads_before_ = 0;
};

TEST_P(Jacobian, Linear) {
  const int N = 3, I = 5, O = 4;
  auto X = inputs.normal(sz(N * I), 1);
  auto W = inputs.normal(sz(O * I), 2);
  auto b = inputs.normal(sz(O), 3);
  const auto r = inputs.normal(sz(N * O), 4);
  std::vector<float> Y(sz(N * O)), dX(X.size()), dW(W.size()), db(b.size());
  ops().linear_backward(X.data(), W.data(), r.data(), dX.data(), dW.data(), db.data(), N, I, O);
  const auto objective = [&] {
    ops().linear_forward(X.data(), W.data(), b.data(), Y.data(), N, I, O);
    return project(Y, r);
  };
  EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
  EXPECT_TRUE(gradient_matches(W, dW, objective, 1e-2)) << "dW";
  EXPECT_TRUE(gradient_matches(b, db, objective, 1e-2)) << "db";
}

TEST_P(Jacobian, Conv2d) {
  const ConvCase cases[] = {{2, 2, 5, 5, 3, 3, 1, 1}, {2, 2, 7, 7, 3, 5, 2, 2}, {1, 3, 6, 7, 2, 3, 2, 1},
                            {2, 3, 5, 5, 4, 1, 1, 0}, {3, 2, 7, 7, 2, 1, 2, 0}, {1, 1, 7, 7, 5, 3, 1, 0}};
  std::uint64_t seed = 10;
  for (const auto& cc : cases) {
    const auto s = conv_shape(cc);
    SCOPED_TRACE(describe(s));
    auto X = inputs.normal(sz(std::int64_t{s.C} * s.N * s.H * s.W), seed++);
    auto W = inputs.normal(sz(std::int64_t{s.K} * s.C * s.kernel * s.kernel), seed++, 0.5f);
    auto b = inputs.normal(sz(s.K), seed++);
    const auto r = inputs.normal(sz(std::int64_t{s.K} * s.N * s.OH() * s.OW()), seed++);
    std::vector<float> Y(r.size()), col(conv_col_elems(s)), dX(X.size()), dW(W.size()), db(b.size());
    ops().conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());
    ops().conv2d_backward(s, X.data(), W.data(), r.data(), dX.data(), dW.data(), db.data(), col.data());
    const auto objective = [&] {
      ops().conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());
      return project(Y, r);
    };
    EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
    EXPECT_TRUE(gradient_matches(W, dW, objective, 1e-2)) << "dW";
    EXPECT_TRUE(gradient_matches(b, db, objective, 1e-2)) << "db";
  }
}

TEST_P(Jacobian, MaxPool) {
  for (const auto& s : {pool_shape(3, 7, 7, 2, 2), pool_shape(2, 7, 7, 3, 2), pool_shape(2, 6, 5, 2, 1)}) {
    SCOPED_TRACE(describe(s));
    // Values 0.05 apart and steps of 0.01: no perturbation changes which element is the maximum.
    auto X = inputs.distinct(sz(s.planes * s.H * s.W), 20, 0.05f);
    const auto r = inputs.normal(sz(s.planes * s.OH() * s.OW()), 21);
    std::vector<float> Y(r.size()), dX(X.size());
    std::vector<std::int32_t> argmax(r.size());
    ops().maxpool2d_forward(s, X.data(), Y.data(), argmax.data());
    ops().maxpool2d_backward(s, r.data(), argmax.data(), dX.data());
    const auto objective = [&] {
      ops().maxpool2d_forward(s, X.data(), Y.data(), argmax.data());
      return project(Y, r);
    };
    EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
  }
}

TEST_P(Jacobian, AvgPool) {
  for (const auto& s : {pool_shape(3, 7, 7, 2, 2), pool_shape(2, 7, 7, 3, 2), pool_shape(2, 6, 5, 2, 1)}) {
    SCOPED_TRACE(describe(s));
    auto X = inputs.normal(sz(s.planes * s.H * s.W), 30);
    const auto r = inputs.normal(sz(s.planes * s.OH() * s.OW()), 31);
    std::vector<float> Y(r.size()), dX(X.size());
    ops().avgpool2d_backward(s, r.data(), dX.data());
    const auto objective = [&] {
      ops().avgpool2d_forward(s, X.data(), Y.data());
      return project(Y, r);
    };
    EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
  }
}

TEST_P(Jacobian, Activations) {
  const std::int64_t n = 200;
  for (const auto a : kActivations) {
    SCOPED_TRACE(ref::activation_name(a));
    auto X = inputs.normal(sz(n), 40, 1.5f);
    if (a == kn::Activation::ReLU)  // keep clear of the kink at 0
      for (auto& x : X) x = x >= 0.0f ? 0.1f + x : -0.1f + x;
    const auto r = inputs.normal(sz(n), 41);
    std::vector<float> Y(sz(n)), dX(sz(n));
    ops().activation_forward(a, X.data(), Y.data(), n);
    ops().activation_backward(a, X.data(), Y.data(), r.data(), dX.data(), n);
    const auto objective = [&] {
      ops().activation_forward(a, X.data(), Y.data(), n);
      return project(Y, r);
    };
    EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
  }
}

TEST_P(Jacobian, BatchNormTrain) {
  // Dense [N][F] (outer=N, inner=1), CNHW (outer=1, inner=N*H*W), and the general case.
  for (const auto& s : {bn_shape(5, 3, 1), bn_shape(1, 3, 2 * 3 * 3), bn_shape(3, 2, 4)}) {
    SCOPED_TRACE(describe(s));
    const std::size_t n = sz(s.outer * s.channels * s.inner), C = sz(s.channels);
    auto X = inputs.normal(n, 50, 1.5f, 0.3f);
    auto gamma = inputs.normal(C, 51, 0.3f, 1.0f);
    auto beta = inputs.normal(C, 52);
    const auto r = inputs.normal(n, 53);
    std::vector<float> Y(n), mean(C), invstd(C), rm(C, 0.0f), rv(C, 1.0f), dX(n), dgamma(C), dbeta(C);
    const float eps = 1e-5f;
    ops().batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), Y.data(), mean.data(), invstd.data(),
                                  rm.data(), rv.data(), 0.1f, eps);
    ops().batchnorm_backward(s, X.data(), gamma.data(), mean.data(), invstd.data(), r.data(), dX.data(), dgamma.data(),
                             dbeta.data());
    std::vector<float> m2(C), i2(C), rm2(C), rv2(C);
    const auto objective = [&] {
      ops().batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), Y.data(), m2.data(), i2.data(), rm2.data(),
                                    rv2.data(), 0.1f, eps);
      return project(Y, r);
    };
    EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
    EXPECT_TRUE(gradient_matches(gamma, dgamma, objective, 1e-2)) << "dgamma";
    EXPECT_TRUE(gradient_matches(beta, dbeta, objective, 1e-2)) << "dbeta";
  }
}

TEST_P(Jacobian, DropoutWithItsFixedMask) {
  const std::int64_t n = 300;
  const kn::CounterRng rng(5, kn::rng_stream(kn::RngUse::Dropout, 1), 2);
  auto X = inputs.normal(sz(n), 60);
  const auto r = inputs.normal(sz(n), 61);
  std::vector<float> Y(sz(n)), mask(sz(n)), dX(sz(n));
  ops().dropout_forward(X.data(), Y.data(), mask.data(), n, 0.4f, rng, 17);
  ops().dropout_backward(r.data(), mask.data(), dX.data(), n);
  const auto objective = [&] {
    ops().dropout_forward(X.data(), Y.data(), mask.data(), n, 0.4f, rng, 17);
    return project(Y, r);
  };
  EXPECT_TRUE(gradient_matches(X, dX, objective, 1e-2)) << "dX";
}

TEST_P(Jacobian, AddIsTheIdentityOnBothInputs) {
  const std::int64_t n = 100;
  auto A = inputs.normal(sz(n), 70), B = inputs.normal(sz(n), 71);
  const auto r = inputs.normal(sz(n), 72);
  std::vector<float> Y(sz(n));
  const auto objective = [&] {
    ops().add(A.data(), B.data(), Y.data(), n);
    return project(Y, r);
  };
  EXPECT_TRUE(gradient_matches(A, r, objective, 1e-2)) << "dA";
  EXPECT_TRUE(gradient_matches(B, r, objective, 1e-2)) << "dB";
}

TEST_P(Jacobian, SoftmaxCrossEntropy) {
  const int N = 4, K = 6;
  auto logits = inputs.normal(sz(N * K), 80, 2.0f);
  const auto labels = random_labels(N, K, 81);
  std::vector<float> grad(sz(N * K), 0.0f), scratch(sz(N * K));
  ops().softmax_cross_entropy(logits.data(), labels.data(), N, K, grad.data(), 1.0f);
  const auto objective = [&] {
    return static_cast<double>(ops().softmax_cross_entropy(logits.data(), labels.data(), N, K, scratch.data(), 1.0f));
  };
  EXPECT_TRUE(gradient_matches(logits, grad, objective, 1e-2)) << "dlogits";
}

TEST_P(Jacobian, KdLoss) {
  const int N = 3, K = 5;
  for (const float T : {1.0f, 2.0f, 4.0f}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    auto student = inputs.normal(sz(N * K), 90, 2.0f);
    const auto teacher = inputs.normal(sz(N * K), 91, 2.0f);
    std::vector<float> grad(sz(N * K), 0.0f), scratch(sz(N * K));
    ops().kd_loss(student.data(), teacher.data(), N, K, T, grad.data(), 1.0f);
    const auto objective = [&] {
      return static_cast<double>(ops().kd_loss(student.data(), teacher.data(), N, K, T, scratch.data(), 1.0f));
    };
    EXPECT_TRUE(gradient_matches(student, grad, objective, 1e-2)) << "dstudent";
  }
}

INSTANTIATE_TEST_SUITE_P(Impl, Jacobian, ::testing::Values(&kKernelOps, &kReferenceOps),
                         [](const ::testing::TestParamInfo<const OpTable*>& param_info) {
                           return std::string(param_info.param->name);
                         });

// ---------------------------------------------------------------------------------------------
// Known values
// ---------------------------------------------------------------------------------------------

TEST(KnownValues, KdLossIsZeroForIdenticalLogits) {
  const int N = 4, K = 7;
  const auto logits = inputs.normal(sz(N * K), 95, 3.0f);
  for (const float T : {1.0f, 2.0f, 5.0f}) {
    std::vector<float> grad(sz(N * K), 0.0f);
    const float loss = kn::kd_loss(logits.data(), logits.data(), N, K, T, grad.data());
    EXPECT_NEAR(loss, 0.0, 1e-5) << "T=" << T;
    for (float g : grad) EXPECT_NEAR(g, 0.0, 1e-6);
  }
}

TEST(KnownValues, KdLossMatchesTSquaredKl) {
  // student (1,2,3), teacher (3,1,0), T=2: p = softmax(x/T), T²·Σ p_t·log(p_t/p_s), by hand.
  const std::vector<float> student = {1.0f, 2.0f, 3.0f}, teacher = {3.0f, 1.0f, 0.0f};
  const double T = 2.0;
  double zs = 0.0, zt = 0.0;
  for (int k = 0; k < 3; ++k) zs += std::exp(student[sz(k)] / T), zt += std::exp(teacher[sz(k)] / T);
  double kl = 0.0;
  for (int k = 0; k < 3; ++k) {
    const double ps = std::exp(student[sz(k)] / T) / zs, pt = std::exp(teacher[sz(k)] / T) / zt;
    kl += pt * std::log(pt / ps);
  }
  EXPECT_NEAR(T * T * kl, 2.0738163287413798, 1e-12);  // the hand computation itself
  std::vector<float> grad(3, 0.0f);
  const float loss = kn::kd_loss(student.data(), teacher.data(), 1, 3, 2.0f, grad.data());
  EXPECT_NEAR(loss, 2.0738163287413798, 1e-5);
  // d/ds = T·(p_s − p_t)
  EXPECT_NEAR(grad[0], -0.8844159919718297, 1e-5);
  EXPECT_NEAR(grad[1], 0.15194397619269867, 1e-5);
  EXPECT_NEAR(grad[2], 0.7324720157791311, 1e-5);
  // Mean over N: two copies of the row give the same loss and half the per-row gradient.
  const std::vector<float> s2 = {1, 2, 3, 1, 2, 3}, t2 = {3, 1, 0, 3, 1, 0};
  std::vector<float> g2(6, 0.0f);
  EXPECT_NEAR(kn::kd_loss(s2.data(), t2.data(), 2, 3, 2.0f, g2.data()), 2.0738163287413798, 1e-5);
  EXPECT_NEAR(g2[0], -0.8844159919718297 / 2, 1e-5);
  EXPECT_NEAR(g2[5], 0.7324720157791311 / 2, 1e-5);
}

TEST(KnownValues, CrossEntropyOfUniformLogitsIsLogK) {
  const int N = 2, K = 4;
  const std::vector<float> logits(8, 0.5f);
  const std::vector<std::int32_t> labels = {1, 3};
  std::vector<float> grad(8, 1.0f);
  const float loss = kn::softmax_cross_entropy(logits.data(), labels.data(), N, K, grad.data(), 2.0f);
  EXPECT_NEAR(loss, std::log(4.0), 1e-6);
  // grad = 1 (already there) + 2 · (p − onehot) / N, p = 1/4
  EXPECT_NEAR(grad[0], 1.0 + 2.0 * 0.25 / 2, 1e-6);
  EXPECT_NEAR(grad[1], 1.0 + 2.0 * (0.25 - 1.0) / 2, 1e-6);
  EXPECT_NEAR(grad[7], 1.0 + 2.0 * (0.25 - 1.0) / 2, 1e-6);
  EXPECT_NEAR(grad[4], 1.0 + 2.0 * 0.25 / 2, 1e-6);
}

TEST(KnownValues, AdamTwoSteps) {
  // p=1, g=0.5 then −1, lr=0.1, betas (0.9, 0.999), eps 1e-8 (values from PyTorch's formulas by hand).
  struct Case {
    float weight_decay;
    bool decoupled;
    double p1, p2;
  };
  const Case cases[] = {{0.0f, false, 0.900000002, 0.9366103542405654},
                        {0.1f, false, 0.9000000016666666, 0.9252635194456061},
                        {0.1f, true, 0.890000002, 0.9177103542205653}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string("wd=") + std::to_string(c.weight_decay) + (c.decoupled ? " AdamW" : " Adam"));
    kn::AdamConfig cfg;
    cfg.lr = 0.1f, cfg.weight_decay = c.weight_decay, cfg.decoupled = c.decoupled;
    float p = 1.0f, m = 0.0f, v = 0.0f;
    const float g1 = 0.5f, g2 = -1.0f;
    kn::adam_step(&p, &g1, &m, &v, 1, cfg, 1);
    EXPECT_NEAR(p, c.p1, 2e-7);
    kn::adam_step(&p, &g2, &m, &v, 1, cfg, 2);
    EXPECT_NEAR(p, c.p2, 5e-7);
  }
}

TEST(KnownValues, SgdMomentumAndNesterov) {
  kn::SgdConfig cfg;
  cfg.lr = 0.1f, cfg.momentum = 0.9f;
  float p = 1.0f, vel = 0.0f;
  const float g = 0.5f;
  kn::sgd_step(&p, &g, &vel, 1, cfg);  // v = 0.5, p = 0.95
  EXPECT_NEAR(vel, 0.5, 1e-7);
  EXPECT_NEAR(p, 0.95, 1e-7);
  kn::sgd_step(&p, &g, &vel, 1, cfg);  // v = 0.95, p = 0.855
  EXPECT_NEAR(vel, 0.95, 1e-7);
  EXPECT_NEAR(p, 0.855, 1e-7);

  cfg.nesterov = true;
  p = 1.0f, vel = 0.0f;
  kn::sgd_step(&p, &g, &vel, 1, cfg);  // v = 0.5, p -= 0.1·(0.5 + 0.45)
  EXPECT_NEAR(p, 0.905, 1e-7);

  cfg.nesterov = false, cfg.weight_decay = 0.1f;
  p = 2.0f, vel = 0.0f;
  kn::sgd_step(&p, &g, &vel, 1, cfg);  // g' = 0.5 + 0.2 = 0.7, p = 2 − 0.07
  EXPECT_NEAR(vel, 0.7, 1e-7);
  EXPECT_NEAR(p, 1.93, 1e-6);
}

TEST(KnownValues, BatchNormRunningStatsFollowPyTorch) {
  // Channel 0: {1,2,3,4} (mean 2.5, biased var 1.25, unbiased 5/3); channel 1: {10,10,10,14} (mean 11,
  // biased var 3, unbiased 4). Running stats start at mean {0,1}, var {1,2}; momentum 0.1.
  const float eps = 1e-5f;
  const std::vector<float> dense = {1, 10, 2, 10, 3, 10, 4, 14};  // [N=4][F=2]
  const std::vector<float> cnhw = {1, 2, 3, 4, 10, 10, 10, 14};   // [C=2][N*H*W=4]
  const std::vector<float> gamma = {1, 1}, beta = {0, 0};
  for (const auto& [s, X] : {std::pair{bn_shape(4, 2, 1), dense}, std::pair{bn_shape(1, 2, 4), cnhw}}) {
    SCOPED_TRACE(describe(s));
    std::vector<float> Y(8), mean(2), invstd(2), rm = {0.0f, 1.0f}, rv = {1.0f, 2.0f};
    kn::batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), Y.data(), mean.data(), invstd.data(),
                                rm.data(), rv.data(), 0.1f, eps);
    EXPECT_NEAR(mean[0], 2.5, 1e-6);
    EXPECT_NEAR(mean[1], 11.0, 1e-5);
    EXPECT_NEAR(invstd[0], 1.0 / std::sqrt(1.25 + 1e-5), 1e-6);
    EXPECT_NEAR(invstd[1], 1.0 / std::sqrt(3.0 + 1e-5), 1e-6);
    EXPECT_NEAR(rm[0], 0.25, 1e-6);
    EXPECT_NEAR(rm[1], 0.9 * 1.0 + 0.1 * 11.0, 1e-6);
    EXPECT_NEAR(rv[0], 0.9 * 1.0 + 0.1 * (5.0 / 3.0), 1e-6);  // unbiased batch variance
    EXPECT_NEAR(rv[1], 0.9 * 2.0 + 0.1 * 4.0, 1e-6);
    // Normalised with the biased variance.
    const std::size_t x3 = s.inner == 1 ? 6 : 3;  // channel 0's value 4 (its value 1 is at index 0 in both)
    EXPECT_NEAR(Y[0], (1.0 - 2.5) / std::sqrt(1.25 + 1e-5), 1e-5);
    EXPECT_NEAR(Y[x3], (4.0 - 2.5) / std::sqrt(1.25 + 1e-5), 1e-5);
  }
}

TEST(KnownValues, BatchNormEvalUsesRunningStats) {
  const float eps = 1e-5f;
  const auto s = bn_shape(3, 2, 1);
  const std::vector<float> X = {2.5f, 0.0f, -1.0f, 1.0f, 0.5f, -2.0f};  // [N=3][F=2]
  const std::vector<float> gamma = {2.0f, 1.0f}, beta = {0.1f, -0.3f}, rm = {0.5f, -1.0f}, rv = {4.0f, 0.25f};
  std::vector<float> Y = nan_vector(6);
  kn::batchnorm_forward_eval(s, X.data(), gamma.data(), beta.data(), rm.data(), rv.data(), eps, Y.data());
  for (std::size_t n = 0; n < 3; ++n)
    for (std::size_t c = 0; c < 2; ++c) {
      const double want = gamma[c] * (X[n * 2 + c] - rm[c]) / std::sqrt(rv[c] + 1e-5) + beta[c];
      EXPECT_NEAR(Y[n * 2 + c], want, 1e-5) << "n=" << n << " c=" << c;
    }
  // Per-sample: evaluating one row alone gives that row's result.
  std::vector<float> y1(2);
  kn::batchnorm_forward_eval(bn_shape(1, 2, 1), X.data() + 2, gamma.data(), beta.data(), rm.data(), rv.data(), eps,
                             y1.data());
  EXPECT_EQ(y1[0], Y[2]);
  EXPECT_EQ(y1[1], Y[3]);
  // And it does not touch the running statistics it reads (const) nor equal the train-mode output.
  std::vector<float> yt(6), m(2), is(2), rm2 = rm, rv2 = rv;
  kn::batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), yt.data(), m.data(), is.data(), rm2.data(),
                              rv2.data(), 0.1f, eps);
  EXPECT_GT(std::fabs(yt[0] - Y[0]), 1e-3);
}

// ---------------------------------------------------------------------------------------------
// Dropout statistics and determinism
// ---------------------------------------------------------------------------------------------

TEST(Dropout, DropsAboutRateAndScalesTheRest) {
  const std::int64_t n = 200000;
  const auto X = inputs.normal(sz(n), 1300, 1.0f, 3.0f);
  for (const float rate : {0.1f, 0.3f, 0.5f, 0.8f}) {
    SCOPED_TRACE("rate=" + std::to_string(rate));
    const kn::CounterRng rng(99, kn::rng_stream(kn::RngUse::Dropout, 5), 3);
    std::vector<float> Y = nan_vector(sz(n)), mask = nan_vector(sz(n));
    kn::dropout_forward(X.data(), Y.data(), mask.data(), n, rate, rng, 0);
    const float keep = 1.0f / (1.0f - rate);
    std::int64_t zeros = 0;
    for (std::size_t i = 0; i < sz(n); ++i) {
      if (mask[i] == 0.0f) {
        ++zeros;
        ASSERT_EQ(Y[i], 0.0f) << "index " << i;
      } else {
        ASSERT_NEAR(mask[i], keep, 1e-6 * keep) << "index " << i;
        ASSERT_NEAR(Y[i], X[i] * keep, 1e-6 * std::fabs(X[i] * keep)) << "index " << i;
      }
    }
    const double fraction = static_cast<double>(zeros) / static_cast<double>(n);
    // sd of the fraction ≤ sqrt(0.25 / 2e5) ≈ 0.0011: 6 sd.
    EXPECT_NEAR(fraction, rate, 0.0067);
  }
}

TEST(Dropout, RateZeroIsTheIdentity) {
  const std::int64_t n = 999;
  const auto X = inputs.normal(sz(n), 1310);
  const kn::CounterRng rng(1, kn::rng_stream(kn::RngUse::Dropout, 1));
  std::vector<float> Y = nan_vector(sz(n)), mask = nan_vector(sz(n));
  kn::dropout_forward(X.data(), Y.data(), mask.data(), n, 0.0f, rng, 0);
  EXPECT_TRUE(bitwise_equal(Y, X));
  for (float m : mask) EXPECT_EQ(m, 1.0f);
}

TEST(Dropout, DeterministicPerRngAndOffset) {
  const std::int64_t n = 5000, offset = 777;
  const auto X = inputs.normal(sz(n + offset), 1320);
  const kn::CounterRng rng(42, kn::rng_stream(kn::RngUse::Dropout, 9), 4);
  std::vector<float> y1(sz(n)), m1(sz(n)), y2(sz(n)), m2(sz(n));
  kn::dropout_forward(X.data() + offset, y1.data(), m1.data(), n, 0.5f, rng, offset);
  kn::dropout_forward(X.data() + offset, y2.data(), m2.data(), n, 0.5f, rng, offset);
  EXPECT_TRUE(bitwise_equal(m1, m2)) << "same rng and offset must give the same mask";
  EXPECT_TRUE(bitwise_equal(y1, y2));

  // Element i is drawn at index offset+i: a call over [0, n+offset) contains the same mask at its tail.
  std::vector<float> yall(sz(n + offset)), mall(sz(n + offset));
  kn::dropout_forward(X.data(), yall.data(), mall.data(), n + offset, 0.5f, rng, 0);
  EXPECT_TRUE(std::equal(m1.begin(), m1.end(), mall.begin() + offset)) << "mask depends on more than offset+i";

  // Another offset, step or seed gives another mask.
  std::vector<float> y3(sz(n)), m3(sz(n));
  kn::dropout_forward(X.data(), y3.data(), m3.data(), n, 0.5f, rng, offset + 1);
  EXPECT_FALSE(bitwise_equal(m1, m3)) << "offset ignored";
  const kn::CounterRng other_step(42, kn::rng_stream(kn::RngUse::Dropout, 9), 5);
  kn::dropout_forward(X.data(), y3.data(), m3.data(), n, 0.5f, other_step, offset);
  EXPECT_FALSE(bitwise_equal(m1, m3)) << "rng step ignored";
  const kn::CounterRng other_seed(43, kn::rng_stream(kn::RngUse::Dropout, 9), 4);
  kn::dropout_forward(X.data(), y3.data(), m3.data(), n, 0.5f, other_seed, offset);
  EXPECT_FALSE(bitwise_equal(m1, m3)) << "rng seed ignored";

  // Backward applies the same mask.
  const auto dY = inputs.normal(sz(n), 1321);
  std::vector<float> dX = nan_vector(sz(n));
  kn::dropout_backward(dY.data(), m1.data(), dX.data(), n);
  for (std::size_t i = 0; i < sz(n); ++i) ASSERT_EQ(dX[i], dY[i] * m1[i]) << "index " << i;
}

// ---------------------------------------------------------------------------------------------
// Determinism across thread counts
// ---------------------------------------------------------------------------------------------

// Runs conv2d, batch norm and linear forward+backward and returns every output, concatenated.
std::vector<std::vector<float>> run_layers() {
  std::vector<std::vector<float>> out;
  {
    kn::Conv2dShape s;
    s.N = 8, s.C = 16, s.H = 14, s.W = 14, s.K = 32, s.kernel = 3, s.stride = 1, s.pad = 1;
    const auto X = inputs.normal(sz(std::int64_t{s.C} * s.N * s.H * s.W), 1400);
    const auto W = inputs.normal(sz(std::int64_t{s.K} * s.C * 9), 1401, 0.1f);
    const auto b = inputs.normal(sz(s.K), 1402);
    const auto dY = inputs.normal(sz(std::int64_t{s.K} * s.N * s.OH() * s.OW()), 1403);
    std::vector<float> Y(dY.size()), col(conv_col_elems(s)), dX(X.size()), dW(W.size()), db(b.size());
    kn::conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());
    kn::conv2d_backward(s, X.data(), W.data(), dY.data(), dX.data(), dW.data(), db.data(), col.data());
    out.insert(out.end(), {Y, dX, dW, db});
  }
  {
    kn::Conv2dShape s;
    s.N = 5, s.C = 8, s.H = 15, s.W = 15, s.K = 12, s.kernel = 5, s.stride = 2, s.pad = 2;
    const auto X = inputs.normal(sz(std::int64_t{s.C} * s.N * s.H * s.W), 1410);
    const auto W = inputs.normal(sz(std::int64_t{s.K} * s.C * 25), 1411, 0.1f);
    const auto b = inputs.normal(sz(s.K), 1412);
    const auto dY = inputs.normal(sz(std::int64_t{s.K} * s.N * s.OH() * s.OW()), 1413);
    std::vector<float> Y(dY.size()), col(conv_col_elems(s)), dX(X.size()), dW(W.size()), db(b.size());
    kn::conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());
    kn::conv2d_backward(s, X.data(), W.data(), dY.data(), dX.data(), dW.data(), db.data(), col.data());
    out.insert(out.end(), {Y, dX, dW, db});
  }
  for (const auto& s : {bn_shape(1, 32, 8 * 14 * 14), bn_shape(256, 64, 1)}) {
    const std::size_t n = sz(s.outer * s.channels * s.inner), C = sz(s.channels);
    const auto X = inputs.normal(n, 1420, 2.0f, 1.0f);
    const auto gamma = inputs.normal(C, 1421, 0.2f, 1.0f), beta = inputs.normal(C, 1422);
    const auto dY = inputs.normal(n, 1423);
    std::vector<float> Y(n), mean(C), invstd(C), rm(C, 0.0f), rv(C, 1.0f), dX(n), dg(C), dbt(C), ye(n);
    kn::batchnorm_forward_train(s, X.data(), gamma.data(), beta.data(), Y.data(), mean.data(), invstd.data(),
                                rm.data(), rv.data(), 0.1f, 1e-5f);
    kn::batchnorm_backward(s, X.data(), gamma.data(), mean.data(), invstd.data(), dY.data(), dX.data(), dg.data(),
                           dbt.data());
    kn::batchnorm_forward_eval(s, X.data(), gamma.data(), beta.data(), rm.data(), rv.data(), 1e-5f, ye.data());
    out.insert(out.end(), {Y, mean, invstd, rm, rv, dX, dg, dbt, ye});
  }
  {
    const int N = 128, I = 300, O = 100;
    const auto X = inputs.normal(sz(N * I), 1430), W = inputs.normal(sz(O * I), 1431, 0.05f);
    const auto b = inputs.normal(sz(O), 1432), dY = inputs.normal(sz(N * O), 1433);
    std::vector<float> Y(sz(N * O)), dX(X.size()), dW(W.size()), db(b.size());
    kn::linear_forward(X.data(), W.data(), b.data(), Y.data(), N, I, O);
    kn::linear_backward(X.data(), W.data(), dY.data(), dX.data(), dW.data(), db.data(), N, I, O);
    out.insert(out.end(), {Y, dX, dW, db});
  }
  {
    const int N = 256, K = 10;
    const auto logits = inputs.normal(sz(N * K), 1440, 3.0f), teacher = inputs.normal(sz(N * K), 1441, 3.0f);
    const auto labels = random_labels(N, K, 1442);
    std::vector<float> g(sz(N * K), 0.0f);
    const float ce = kn::softmax_cross_entropy(logits.data(), labels.data(), N, K, g.data());
    const float kd = kn::kd_loss(logits.data(), teacher.data(), N, K, 2.0f, g.data(), 0.5f);
    out.push_back(g);
    out.push_back({ce, kd});
  }
  return out;
}

TEST(Determinism, BitwiseIdenticalWithOneAndTwoThreads) {
  const int before = kn::num_threads();
  kn::set_num_threads(1);
  EXPECT_EQ(kn::num_threads(), 1);
  const auto one = run_layers();
  kn::set_num_threads(2);
  EXPECT_EQ(kn::num_threads(), 2);
  const auto two = run_layers();
  const auto two_again = run_layers();
  kn::set_num_threads(before);
  ASSERT_EQ(one.size(), two.size());
  for (std::size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(bitwise_equal(one[i], two[i])) << "output " << i << " differs between 1 and 2 threads";
    EXPECT_TRUE(bitwise_equal(two[i], two_again[i])) << "output " << i << " differs between two runs";
  }
}

}  // namespace
