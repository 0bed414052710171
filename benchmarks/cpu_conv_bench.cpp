// cpu_conv_bench — the CPU GEMM and convolution next to OpenBLAS's sgemm, in one run.
//
// What it measures (GFLOP/s, median of repeats, all threads of --threads):
//   1. the machine's single-precision GEMM peak, measured: square sgemm (--size, default 1536) by
//      our kernels (cpu_gemm.h, the family in use) and by OpenBLAS's cblas_sgemm (the OpenMP build,
//      at the same thread count, with whatever core OpenBLAS picked — set OPENBLAS_CORETYPE to give
//      it the right one where it does not know the CPU; the core it ran is printed). The peak is the
//      better of the two.
//   2. the reference CNN's convolutions (experiments/genomes/cnn.yaml) at batch --batch (128):
//      forward (im2col + GEMM + bias) and backward (dW, db, dX) of conv 1→32 on 28×28 and 32→64 on
//      14×14, as rsi's training step runs them, and their sum, each as a fraction of the peak.
//      Goal (issue 14): the convolutions together, forward and backward, >= 0.5 of the peak.
//
// Run from the repository root after building:
//   build/benchmarks/cpu_conv_bench [--threads T] [--batch N] [--size S] [--repeats R]
// Exit status 0 (a measurement, goal met or not); 1 if our GEMM disagrees with OpenBLAS beyond
// float tolerance (checked before timing); 2 on bad usage.
#include <cblas.h>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "rsi/kernels/cpu_gemm.h"
#include "rsi/kernels/ops.h"

extern "C" char* openblas_get_corename(void);
extern "C" void openblas_set_num_threads(int);

namespace kn = rsi::kernels;

namespace {

double seconds_of(const std::function<void()>& f, int repeats) {
  f();  // warm-up: buffers grown, caches filled
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  return rsi::bench::median(t);
}

std::vector<float> random_vector(std::size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_num_procs(), batch = 128, size = 1536, repeats = 7;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--threads") threads = static_cast<int>(rsi::bench::option_value(argc, argv, i));
      else if (a == "--batch") batch = static_cast<int>(rsi::bench::option_value(argc, argv, i));
      else if (a == "--size") size = static_cast<int>(rsi::bench::option_value(argc, argv, i));
      else if (a == "--repeats") repeats = static_cast<int>(rsi::bench::option_value(argc, argv, i));
      else if (a == "-h" || a == "--help") {
        std::printf("usage: cpu_conv_bench [--threads T] [--batch N] [--size S] [--repeats R]\n");
        return 0;
      } else throw std::runtime_error("unknown option " + a + " (try --help)");
    }
    if (threads < 1 || batch < 1 || size < 64 || repeats < 1) throw std::runtime_error("values must be positive");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpu_conv_bench: %s\n", e.what());
    return 2;
  }
  kn::set_num_threads(threads);
  openblas_set_num_threads(threads);
  std::printf("cpu: %s; threads %d\nours: %s\nopenblas: core %s (OpenMP build)\n\n", kn::cpu_model_name().c_str(),
              threads, kn::cpu_kernel_summary().c_str(), openblas_get_corename());

  // ---- 1. sgemm peak ----
  const int S = size;
  const auto A = random_vector(static_cast<std::size_t>(S) * S, 1), B = random_vector(static_cast<std::size_t>(S) * S, 2);
  std::vector<float> C1(static_cast<std::size_t>(S) * S), C2(C1.size());
  kn::sgemm(kn::Trans::No, kn::Trans::No, S, S, S, A.data(), S, B.data(), S, 0.0f, C1.data(), S);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, S, 1.0f, A.data(), S, B.data(), S, 0.0f, C2.data(), S);
  double worst = 0.0;
  for (std::size_t i = 0; i < C1.size(); ++i) worst = std::max(worst, std::fabs(double(C1[i]) - C2[i]) / std::sqrt(double(S)));
  if (worst > 1e-3) {
    std::fprintf(stderr, "cpu_conv_bench: our sgemm differs from OpenBLAS by %.3g (normalised): not timed\n", worst);
    return 1;
  }
  const double gemm_flops = 2.0 * S * S * S;
  const double ours_gemm = gemm_flops / seconds_of([&] {
    kn::sgemm(kn::Trans::No, kn::Trans::No, S, S, S, A.data(), S, B.data(), S, 0.0f, C1.data(), S);
  }, repeats) / 1e9;
  const double blas_gemm = gemm_flops / seconds_of([&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, S, S, S, 1.0f, A.data(), S, B.data(), S, 0.0f, C2.data(), S);
  }, repeats) / 1e9;
  const double peak = std::max(ours_gemm, blas_gemm);
  std::printf("sgemm %dx%dx%d   ours %7.1f GFLOP/s   openblas %7.1f GFLOP/s   ours/openblas %.2fx   peak %.1f\n\n", S, S,
              S, ours_gemm, blas_gemm, ours_gemm / blas_gemm, peak);

  // ---- 2. the reference CNN's convolutions ----
  struct Layer {
    const char* name;
    kn::Conv2dShape s;
    bool input_gradient;
  };
  const Layer layers[] = {
      {"conv1 1->32 28x28", {batch, 1, 28, 28, 32, 3, 1, 1}, false},
      {"conv2 32->64 14x14", {batch, 32, 14, 14, 64, 3, 1, 1}, true},
  };
  std::printf("%-20s %10s %10s %10s %10s %12s\n", "layer (batch)", "fwd GF/s", "bwd GF/s", "fwd ms", "bwd ms",
              "fwd+bwd/peak");
  double total_flops = 0.0, total_seconds = 0.0;
  for (const Layer& l : layers) {
    const auto& s = l.s;
    const std::int64_t NP = static_cast<std::int64_t>(s.N) * s.OH() * s.OW(), CKK = s.C * s.kernel * s.kernel;
    const auto X = random_vector(static_cast<std::size_t>(s.C) * s.N * s.H * s.W, 3);
    const auto W = random_vector(static_cast<std::size_t>(s.K * CKK), 4), b = random_vector(s.K, 5);
    const auto dY = random_vector(static_cast<std::size_t>(s.K * NP), 6);
    std::vector<float> Y(static_cast<std::size_t>(s.K * NP)), col(static_cast<std::size_t>(std::max<std::int64_t>(s.col_size(), 1)));
    std::vector<float> dX(X.size()), dW(W.size()), db(b.size());
    const double fwd_flops = 2.0 * s.K * CKK * NP, bwd_flops = fwd_flops * (l.input_gradient ? 2 : 1);
    const double tf = seconds_of([&] { kn::conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data()); }, repeats);
    const double tb = seconds_of([&] {
      kn::conv2d_forward(s, X.data(), W.data(), b.data(), Y.data(), col.data());  // backward overwrites col
      kn::conv2d_backward(s, X.data(), W.data(), dY.data(), l.input_gradient ? dX.data() : nullptr, dW.data(), db.data(),
                          col.data());
    }, repeats) - tf;
    total_flops += fwd_flops + bwd_flops;
    total_seconds += tf + tb;
    std::printf("%-14s (%3d) %10.1f %10.1f %10.2f %10.2f %11.2fx\n", l.name, batch, fwd_flops / tf / 1e9,
                bwd_flops / tb / 1e9, tf * 1e3, tb * 1e3, (fwd_flops + bwd_flops) / (tf + tb) / 1e9 / peak);
  }
  const double conv_rate = total_flops / total_seconds / 1e9;
  std::printf("\nconvolutions together: %.1f GFLOP/s = %.2f of the sgemm peak (goal >= 0.50: %s)\n", conv_rate,
              conv_rate / peak, conv_rate / peak >= 0.5 ? "met" : "MISSED");
  return 0;
}
