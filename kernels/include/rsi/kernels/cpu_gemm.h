// rsi::kernels CPU GEMM — the one matrix multiply every CPU op goes through (linear, conv2d).
//
//   C[M][N] = beta·C + op(A)[M][K] · op(B)[K][N]      row-major; op(X) = X or Xᵀ; beta 0 or 1
//
// Why our own and not OpenBLAS/oneDNN: the DESIGN's determinism contract. Every element of C is
// defined as ONE fused multiply-add chain over k in increasing order,
//
//   acc = beta·C[i][j];  for k = 0..K-1:  acc = fma(op(A)[i][k], op(B)[k][j], acc);  C[i][j] = acc
//
// and every kernel family computes exactly that (register blocking only decides which elements are
// computed together; K is blocked by carrying the accumulator through C, never by adding partial
// sums). So results are bitwise the same for any thread count, any blocking and any kernel family
// — AVX-512 on one node, AVX2 on the next, the scalar fallback (std::fma) on a third. Libraries
// partition the reduction or choose kernels by a table of CPU models (Debian's OpenBLAS 0.3.21 runs
// its SSE3 "Prescott" kernels on CPUs it does not know); we choose by CPUID features instead.
//
// Kernel families (best available is the default; RSI_CPU_KERNEL=avx512|avx2|generic or
// set_cpu_kernel() pins one, e.g. to compare them):
//   avx512   8×32 register tile (zmm), needs AVX-512F
//   avx2     6×16 register tile (ymm), needs AVX2 + FMA
//   generic  4×8 scalar std::fma, any x86-64 (slow where the CPU lacks FMA: fma is then emulated)
#pragma once

#include <string>

namespace rsi::kernels {

enum class Trans : bool { No = false, Yes = true };

// What a layer adds around its GEMM, done while a tile of C is in cache instead of in extra passes:
// the chain starts from a bias (row_bias[i] or col_bias[j], instead of beta·C; beta must then be 0)
// and ReLU is applied to the final value. Same bits as a separate fill and ReLU pass.
struct GemmEpilogue {
  const float* row_bias = nullptr;  // [M]
  const float* col_bias = nullptr;  // [N]
  bool relu = false;
};

// See the header comment. lda/ldb/ldc are row strides of A, B, C as stored (before op).
void sgemm(Trans trans_a, Trans trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, const GemmEpilogue& epilogue = {});

enum class CpuKernel { Generic, Avx2, Avx512 };

// "generic", "avx2", "avx512".
const char* cpu_kernel_name(CpuKernel kernel);
// The best family this CPU supports (CPUID), and whether it supports a given one.
CpuKernel best_cpu_kernel();
bool cpu_kernel_supported(CpuKernel kernel);
// The family sgemm uses now: RSI_CPU_KERNEL if set (read once; an unknown or unsupported value
// throws std::invalid_argument naming it and the valid ones), else the best one.
CpuKernel cpu_kernel();
// Pins a family (throws std::invalid_argument if this CPU lacks it).
void set_cpu_kernel(CpuKernel kernel);
// Parses "avx512" / "avx2" / "generic" (throws std::invalid_argument listing the valid names).
CpuKernel parse_cpu_kernel(const std::string& name);
// One line for device lines and run attributes, e.g.
// "cpu kernels avx512 (8x32 fma tile; cpu: Intel(R) Xeon(R) Processor, avx512f avx2 fma)".
std::string cpu_kernel_summary();
// Empty, or a warning when the family in use is slower than what the CPU supports.
std::string cpu_kernel_warning();
// The CPU's model name (from /proc/cpuinfo; "unknown CPU" if unreadable).
std::string cpu_model_name();

}  // namespace rsi::kernels
