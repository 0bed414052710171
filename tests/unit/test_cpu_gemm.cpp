// test_cpu_gemm — the CPU GEMM's contract (kernels/include/rsi/kernels/cpu_gemm.h):
//   Contract     every element of C is one FMA chain over k in order, starting from beta·C or the
//                bias: checked bit for bit against a scalar std::fma loop written here, for every
//                kernel family this CPU runs, 1/2/3 threads, both transposes, edge tiles, K longer
//                than one packed block, beta 0 and 1, row/column bias and ReLU.
//   Dispatch     the family in use is the best this CPU supports (a generic fallback on an AVX2 or
//                AVX-512 CPU fails here, in CI); names parse; an unsupported family is refused.
//   Fusion       linear/conv forward with ReLU in the GEMM pass equal the unfused ops bit for bit;
//                the 2×2 max pool forward and backward (vectorised on AVX-512) equal the reference,
//                ties, odd sizes and -0 gradients included.
//   cmake --build build --target test_cpu_gemm && build/tests/test_cpu_gemm
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "reference_ops.h"
#include "rsi/kernels/cpu_gemm.h"
#include "rsi/kernels/ops.h"

namespace {

namespace kn = rsi::kernels;
namespace ref = rsi::reference;
using kn::Trans;

const ref::InputStream inputs{777};

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The contract, spelled out: acc = init; acc = fma(op(A)[i][k], op(B)[k][j], acc) for k in order.
std::vector<float> chain_reference(Trans ta, Trans tb, int M, int N, int K, const std::vector<float>& A, int lda,
                                   const std::vector<float>& B, int ldb, float beta, std::vector<float> C, int ldc,
                                   const kn::GemmEpilogue& ep) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float acc = ep.row_bias ? ep.row_bias[i] : ep.col_bias ? ep.col_bias[j] : beta == 0.0f ? 0.0f : C[i * ldc + j];
      for (int k = 0; k < K; ++k) {
        const float a = ta == Trans::No ? A[i * lda + k] : A[k * lda + i];
        const float b = tb == Trans::No ? B[k * ldb + j] : B[j * ldb + k];
        acc = std::fma(a, b, acc);
      }
      C[i * ldc + j] = ep.relu && !(acc > 0.0f) ? 0.0f : acc;
    }
  return C;
}

std::vector<kn::CpuKernel> supported_families() {
  std::vector<kn::CpuKernel> out;
  for (auto k : {kn::CpuKernel::Generic, kn::CpuKernel::Avx2, kn::CpuKernel::Avx512})
    if (kn::cpu_kernel_supported(k)) out.push_back(k);
  return out;
}

// Restores the family and thread count a test changed.
class CpuGemm : public ::testing::Test {
 protected:
  void SetUp() override {
    kernel_before_ = kn::cpu_kernel();
    threads_before_ = kn::num_threads();
  }
  void TearDown() override {
    kn::set_cpu_kernel(kernel_before_);
    kn::set_num_threads(threads_before_);
  }

 private:
  kn::CpuKernel kernel_before_{};
  int threads_before_ = 0;
};

struct Case {
  Trans ta, tb;
  int M, N, K;
  float beta;
  int epilogue;  // 0 none, 1 row bias, 2 column bias + relu, 3 relu only
};

TEST_F(CpuGemm, EveryFamilyAndThreadCountComputesTheFmaChainBitForBit) {
  const Case cases[] = {
      {Trans::No, Trans::No, 1, 1, 1, 0.0f, 0},       {Trans::No, Trans::No, 7, 13, 5, 0.0f, 0},
      {Trans::No, Trans::Yes, 33, 70, 300, 1.0f, 0},  {Trans::Yes, Trans::No, 64, 97, 17, 0.0f, 1},
      {Trans::Yes, Trans::Yes, 20, 40, 801, 1.0f, 0}, {Trans::No, Trans::No, 130, 260, 9, 0.0f, 1},
      {Trans::No, Trans::Yes, 128, 10, 784, 0.0f, 2}, {Trans::No, Trans::Yes, 9, 32, 2000, 0.0f, 0},
      {Trans::No, Trans::No, 64, 3100, 288, 0.0f, 3}, {Trans::Yes, Trans::No, 288, 300, 64, 0.0f, 0},
  };
  std::uint64_t seed = 1;
  for (const Case& c : cases) {
    const int lda = c.ta == Trans::No ? c.K : c.M, ldb = c.tb == Trans::No ? c.N : c.K, ldc = c.N + 3;
    const auto A = inputs.normal(static_cast<std::size_t>(c.M) * c.K, seed++);
    const auto B = inputs.normal(static_cast<std::size_t>(c.K) * c.N, seed++);
    const auto C0 = inputs.normal(static_cast<std::size_t>(c.M) * ldc, seed++);
    const auto rb = inputs.normal(c.M, seed++), cb = inputs.normal(c.N, seed++);
    kn::GemmEpilogue ep;
    if (c.epilogue == 1) ep.row_bias = rb.data();
    if (c.epilogue == 2) ep.col_bias = cb.data(), ep.relu = true;
    if (c.epilogue == 3) ep.relu = true;
    const auto want = chain_reference(c.ta, c.tb, c.M, c.N, c.K, A, lda, B, ldb, c.beta, C0, ldc, ep);
    for (kn::CpuKernel family : supported_families()) {
      kn::set_cpu_kernel(family);
      for (int threads : {1, 2, 3}) {
        kn::set_num_threads(threads);
        auto C = C0;
        kn::sgemm(c.ta, c.tb, c.M, c.N, c.K, A.data(), lda, B.data(), ldb, c.beta, C.data(), ldc, ep);
        EXPECT_TRUE(bitwise_equal(C, want))
            << kn::cpu_kernel_name(family) << ", " << threads << " threads: M=" << c.M << " N=" << c.N << " K=" << c.K
            << " ta=" << int(c.ta) << " tb=" << int(c.tb) << " beta=" << c.beta << " epilogue=" << c.epilogue;
      }
    }
  }
}

TEST_F(CpuGemm, UsesTheBestFamilyThisCpuSupports) {
  // A generic (scalar) fallback on a CPU with AVX2 + FMA or AVX-512 is a defect: it is several
  // times slower and nothing else would say so.
  const char* pinned = std::getenv("RSI_CPU_KERNEL");
  if (pinned && *pinned && std::string(pinned) != "best")
    GTEST_SKIP() << "RSI_CPU_KERNEL=" << pinned << " pins the family on purpose";
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const kn::CpuKernel best = kn::best_cpu_kernel();
  if (avx512) {
    EXPECT_EQ(best, kn::CpuKernel::Avx512) << kn::cpu_kernel_summary();
  } else if (avx2) {
    EXPECT_EQ(best, kn::CpuKernel::Avx2) << kn::cpu_kernel_summary();
  }
  EXPECT_EQ(kn::cpu_kernel(), best) << kn::cpu_kernel_summary();
  EXPECT_EQ(kn::cpu_kernel_warning(), "");
  const std::string summary = kn::cpu_kernel_summary();
  EXPECT_NE(summary.find(kn::cpu_kernel_name(best)), std::string::npos) << summary;
  EXPECT_NE(summary.find(kn::cpu_model_name()), std::string::npos) << summary;
  std::printf("[cpu_gemm] %s\n", summary.c_str());
}

TEST_F(CpuGemm, NamesParseAndAnUnsupportedFamilyIsRefused) {
  EXPECT_EQ(kn::parse_cpu_kernel("avx512"), kn::CpuKernel::Avx512);
  EXPECT_EQ(kn::parse_cpu_kernel("avx2"), kn::CpuKernel::Avx2);
  EXPECT_EQ(kn::parse_cpu_kernel("generic"), kn::CpuKernel::Generic);
  try {
    kn::parse_cpu_kernel("sse3");
    ADD_FAILURE() << "an unknown family name was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("avx512, avx2, generic"), std::string::npos) << e.what();
  }
  for (auto k : {kn::CpuKernel::Avx2, kn::CpuKernel::Avx512}) {
    if (!kn::cpu_kernel_supported(k)) {
      EXPECT_THROW(kn::set_cpu_kernel(k), std::invalid_argument);
    }
  }
  kn::set_cpu_kernel(kn::CpuKernel::Generic);  // every CPU
  if (kn::best_cpu_kernel() != kn::CpuKernel::Generic) {
    EXPECT_NE(kn::cpu_kernel_warning(), "");
  }
}

TEST_F(CpuGemm, ReluInTheGemmPassEqualsASeparatePass) {
  kn::set_num_threads(2);
  const int N = 37, I = 150, O = 70;
  const auto X = inputs.normal(static_cast<std::size_t>(N) * I, 50), W = inputs.normal(static_cast<std::size_t>(O) * I, 51);
  const auto b = inputs.normal(O, 52);
  std::vector<float> fused(static_cast<std::size_t>(N) * O), plain(fused.size());
  kn::linear_forward_relu(X.data(), W.data(), b.data(), fused.data(), N, I, O);
  kn::linear_forward(X.data(), W.data(), b.data(), plain.data(), N, I, O);
  kn::activation_forward(kn::Activation::ReLU, plain.data(), plain.data(), static_cast<std::int64_t>(plain.size()));
  EXPECT_TRUE(bitwise_equal(fused, plain)) << "linear";

  kn::Conv2dShape s;
  s.N = 5, s.C = 3, s.H = 11, s.W = 9, s.K = 19, s.kernel = 3, s.stride = 1, s.pad = 1;
  const auto Xc = inputs.normal(static_cast<std::size_t>(s.C) * s.N * s.H * s.W, 53);
  const auto Wc = inputs.normal(static_cast<std::size_t>(s.K) * s.C * 9, 54), bc = inputs.normal(s.K, 55);
  const std::size_t out = static_cast<std::size_t>(s.K) * s.N * s.OH() * s.OW();
  std::vector<float> col(static_cast<std::size_t>(s.col_size())), yf(out), yp(out);
  kn::conv2d_forward_relu(s, Xc.data(), Wc.data(), bc.data(), yf.data(), col.data());
  kn::conv2d_forward(s, Xc.data(), Wc.data(), bc.data(), yp.data(), col.data());
  kn::activation_forward(kn::Activation::ReLU, yp.data(), yp.data(), static_cast<std::int64_t>(out));
  EXPECT_TRUE(bitwise_equal(yf, yp)) << "conv2d";
}

double normalised_error(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0.0, scale = 1.0;
  for (std::size_t i = 0; i < b.size(); ++i) scale = std::max(scale, std::fabs(double(b[i])));
  for (std::size_t i = 0; i < b.size(); ++i) worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst / scale;
}

TEST_F(CpuGemm, ConvolutionInImageChunksMatchesTheReference) {
  // 64 channels of 14×14: ~450 KB of im2col matrix per image, so the CPU convolution runs a few
  // images at a time (gemm_ops.cpp, images_per_chunk): chunks 3 + 3 + 1 here, dW chained across them.
  kn::set_num_threads(2);
  for (int kernel : {3, 5}) {
    kn::Conv2dShape s;
    s.N = 7, s.C = 64, s.H = 14, s.W = 14, s.K = 8, s.kernel = kernel, s.stride = 1, s.pad = kernel / 2;
    const auto X = inputs.normal(static_cast<std::size_t>(s.C) * s.N * s.H * s.W, 70 + kernel);
    const auto W = inputs.normal(static_cast<std::size_t>(s.K) * s.C * kernel * kernel, 71 + kernel, 0.1f);
    const auto b = inputs.normal(s.K, 72 + kernel);
    const std::size_t out = static_cast<std::size_t>(s.K) * s.N * s.OH() * s.OW();
    const auto dY = inputs.normal(out, 73 + kernel);
    std::vector<float> col(static_cast<std::size_t>(s.col_size())), Y(out), Yr(out), dX(X.size()), dXr(X.size()),
        dW(W.size()), dWr(W.size()), db(b.size()), dbr(b.size());
    kn::conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());
    kn::conv2d_backward(s, X.data(), W.data(), dY.data(), dX.data(), dW.data(), db.data(), col.data());
    ref::conv2d_forward(s, X.data(), W.data(), b.data(), Yr.data(), nullptr);
    ref::conv2d_backward(s, X.data(), W.data(), dY.data(), dXr.data(), dWr.data(), dbr.data(), nullptr);
    EXPECT_LT(normalised_error(Y, Yr), 1e-5) << "Y, kernel " << kernel;
    EXPECT_LT(normalised_error(dX, dXr), 1e-5) << "dX, kernel " << kernel;
    EXPECT_LT(normalised_error(dW, dWr), 1e-5) << "dW, kernel " << kernel;
    EXPECT_LT(normalised_error(db, dbr), 1e-5) << "db, kernel " << kernel;
  }
}

TEST_F(CpuGemm, SamePaddingOnPlanesSmallerThanTheKernelMatchesTheReference) {
  // An evolved network can put a 5×5 convolution on a 2×2 or 1×1 plane (after several pools): the
  // shifted-copy im2col must zero the taps that fall outside without writing past a row.
  for (int size : {1, 2, 3}) {
    for (int kernel : {3, 5}) {
      kn::Conv2dShape s;
      s.N = 3, s.C = 2, s.H = size, s.W = size, s.K = 4, s.kernel = kernel, s.stride = 1, s.pad = kernel / 2;
      const auto X = inputs.normal(static_cast<std::size_t>(s.C) * s.N * s.H * s.W, 80 + size);
      const auto W = inputs.normal(static_cast<std::size_t>(s.K) * s.C * kernel * kernel, 81 + size);
      const auto b = inputs.normal(s.K, 82 + size);
      const std::size_t out = static_cast<std::size_t>(s.K) * s.N * s.OH() * s.OW();
      const auto dY = inputs.normal(out, 83 + size);
      // Guard elements around the scratch buffer catch a write past its end.
      std::vector<float> col(static_cast<std::size_t>(s.col_size()) + 64, 7.0f), Y(out), Yr(out), dX(X.size()),
          dXr(X.size()), dW(W.size()), dWr(W.size()), db(b.size()), dbr(b.size());
      kn::conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());
      for (std::size_t i = static_cast<std::size_t>(s.col_size()); i < col.size(); ++i) ASSERT_EQ(col[i], 7.0f);
      kn::conv2d_backward(s, X.data(), W.data(), dY.data(), dX.data(), dW.data(), db.data(), col.data());
      ref::conv2d_forward(s, X.data(), W.data(), b.data(), Yr.data(), nullptr);
      ref::conv2d_backward(s, X.data(), W.data(), dY.data(), dXr.data(), dWr.data(), dbr.data(), nullptr);
      EXPECT_LT(normalised_error(Y, Yr), 1e-5) << size << "x" << size << " kernel " << kernel;
      EXPECT_LT(normalised_error(dX, dXr), 1e-5) << size << "x" << size << " kernel " << kernel;
      EXPECT_LT(normalised_error(dW, dWr), 1e-5) << size << "x" << size << " kernel " << kernel;
    }
  }
}

TEST_F(CpuGemm, MaxPool2x2MatchesTheReferenceWithTies) {
  // ReLU outputs: many exact zeros, so windows tie and the first maximum must win as in the reference.
  // The AVX-512 path runs with the avx512 family, the scalar one with the others: both are checked.
  for (const auto& [family, W] : [] {
         std::vector<std::pair<kn::CpuKernel, int>> cases;
         for (kn::CpuKernel f : supported_families())
           for (int w : {28, 14, 7, 40, 9}) cases.emplace_back(f, w);
         return cases;
       }()) {
    kn::set_cpu_kernel(family);
    SCOPED_TRACE(kn::cpu_kernel_name(family));
    kn::Pool2dShape s;
    s.planes = 6, s.H = W, s.W = W, s.size = 2, s.stride = 2;
    auto X = inputs.normal(static_cast<std::size_t>(s.planes) * W * W, 60 + W);
    for (std::size_t i = 0; i < X.size(); ++i)
      if (X[i] < 0.3f) X[i] = (i % 3 == 0) ? 1.0f : 0.0f;
    const std::size_t out = static_cast<std::size_t>(s.planes) * s.OH() * s.OW();
    std::vector<float> y(out), y_ref(out);
    std::vector<std::int32_t> arg(out), arg_ref(out);
    kn::maxpool2d_forward(s, X.data(), y.data(), arg.data());
    ref::maxpool2d_forward(s, X.data(), y_ref.data(), arg_ref.data());
    EXPECT_TRUE(bitwise_equal(y, y_ref)) << "W=" << W;
    EXPECT_EQ(arg, arg_ref) << "W=" << W;
    // Backward: one write per input element (AVX-512 where available) against the reference scatter.
    auto dy = inputs.normal(out, 90 + W);
    dy[0] = -0.0f;  // the scatter adds it to +0
    std::vector<float> dx(X.size(), std::nanf("")), dx_ref(X.size());
    kn::maxpool2d_backward(s, dy.data(), arg.data(), dx.data());
    ref::maxpool2d_backward(s, dy.data(), arg_ref.data(), dx_ref.data());
    EXPECT_TRUE(bitwise_equal(dx, dx_ref)) << "backward, W=" << W;
  }
}

}  // namespace
