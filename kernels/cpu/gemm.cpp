// The CPU GEMM (cpu_gemm.h): BLIS-style packing and register-tile kernels chosen by CPUID features,
// OpenMP over output tiles only. Every C element is one FMA chain over k in order, whatever the
// family, blocking or thread count — see cpu_gemm.h for why that is the contract.
//
//   C[M][N] (row-major) is cut into NC-column blocks, K into KC blocks, M into MC blocks. For each
//   (jc, pc): op(B) block packed into NR-wide panels Bp[kc][NR]; for each ic: op(A) block packed into
//   MR-tall panels Ap[kc][MR]; every MR×NR tile of C then runs the family's kernel: accumulators start
//   from C (or zero on the first K block when beta = 0), take kc FMAs in k order, are stored back.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "rsi/kernels/cpu_gemm.h"
#include "rsi/kernels/ops.h"

namespace rsi::kernels {

namespace {

// Blocking. Results do not depend on it (see the header); it only decides speed.
constexpr int kKC = 384;   // most k per packed panel: an Ap (MR×kc) + Bp (kc×NR) pair stays in L1/L2
constexpr int kMC = 128;   // rows of A packed at once (shared by all threads)
constexpr int kNC = 768;   // columns of B packed at once: kc×NC floats stay in L2
// Below this many multiply-adds a parallel region costs more than it saves.
constexpr std::int64_t kParallelMinFlops = 1 << 18;

using KernelFn = void (*)(int kc, const float* a, const float* b, std::int64_t ldb, float* c, int ldc, bool load);

// ---- kernels: acc[MR][NR] = load ? C : 0; acc += a[k][:] ⊗ b[k][:] for k in order; C = acc ----

template <int MR, int NR>
void kernel_generic(int kc, const float* a, const float* b, std::int64_t ldb, float* c, int ldc, bool load) {
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = load ? c[static_cast<std::int64_t>(i) * ldc + j] : 0.0f;
  for (int k = 0; k < kc; ++k, a += MR, b += ldb)
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] = std::fma(a[i], b[j], acc[i][j]);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) c[static_cast<std::int64_t>(i) * ldc + j] = acc[i][j];
}

__attribute__((target("avx2,fma"))) void kernel_avx2_6x16(int kc, const float* a, const float* b, std::int64_t ldb,
                                                          float* c, int ldc, bool load) {
  constexpr int MR = 6;
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* row = c + static_cast<std::int64_t>(i) * ldc;
    acc[i][0] = load ? _mm256_loadu_ps(row) : _mm256_setzero_ps();
    acc[i][1] = load ? _mm256_loadu_ps(row + 8) : _mm256_setzero_ps();
  }
  for (int k = 0; k < kc; ++k, a += MR, b += ldb) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* row = c + static_cast<std::int64_t>(i) * ldc;
    _mm256_storeu_ps(row, acc[i][0]);
    _mm256_storeu_ps(row + 8, acc[i][1]);
  }
}

__attribute__((target("avx512f"))) void kernel_avx512_8x32(int kc, const float* a, const float* b, std::int64_t ldb,
                                                           float* c, int ldc, bool load) {
  constexpr int MR = 8;
  __m512 acc[MR][2];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = c + static_cast<std::int64_t>(i) * ldc;
    acc[i][0] = load ? _mm512_loadu_ps(row) : _mm512_setzero_ps();
    acc[i][1] = load ? _mm512_loadu_ps(row + 16) : _mm512_setzero_ps();
  }
  for (int k = 0; k < kc; ++k, a += MR, b += ldb) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    float* row = c + static_cast<std::int64_t>(i) * ldc;
    _mm512_storeu_ps(row, acc[i][0]);
    _mm512_storeu_ps(row + 16, acc[i][1]);
  }
}

struct Family {
  CpuKernel id;
  const char* name;
  int mr, nr;
  KernelFn kernel;
};

constexpr Family kFamilies[] = {
    {CpuKernel::Generic, "generic", 4, 8, kernel_generic<4, 8>},
    {CpuKernel::Avx2, "avx2", 6, 16, kernel_avx2_6x16},
    {CpuKernel::Avx512, "avx512", 8, 32, kernel_avx512_8x32},
};

const Family& family(CpuKernel k) { return kFamilies[static_cast<int>(k)]; }

// ---- family selection ----

std::atomic<int> g_kernel{-1};  // -1: not chosen yet
std::once_flag g_env_once;

void choose_from_environment() {
  std::call_once(g_env_once, [] {
    const char* env = std::getenv("RSI_CPU_KERNEL");
    CpuKernel k = best_cpu_kernel();
    if (env && *env && std::string(env) != "best") {
      try {
        k = parse_cpu_kernel(env);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(std::string("RSI_CPU_KERNEL: ") + e.what());
      }
      if (!cpu_kernel_supported(k))
        throw std::invalid_argument(std::string("RSI_CPU_KERNEL=") + env + ": this CPU (" + cpu_model_name() +
                                    ") lacks the instructions it needs; its best is " +
                                    cpu_kernel_name(best_cpu_kernel()));
    }
    int expected = -1;
    g_kernel.compare_exchange_strong(expected, static_cast<int>(k));
  });
}

// ---- packing (zero-padded to whole panels) ----

struct AlignedBuffer {
  std::unique_ptr<float, decltype(&std::free)> data{nullptr, &std::free};
  std::size_t size = 0;
  float* get(std::size_t n) {
    if (n > size) {
      const std::size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!data) throw std::bad_alloc();
      size = n;
    }
    return data.get();
  }
};

// dst[k][r] = src[r][k] for an 8×8 block (row strides ld_src, ld_dst).
__attribute__((target("avx"))) void transpose8x8(const float* src, std::int64_t ld_src, float* dst,
                                                 std::int64_t ld_dst) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ld_src);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[0..3] hold columns 0,1,2,3 of rows 0-3 (low lane) and columns 4..7 (high lane); likewise r[4..7].
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld_dst, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// dst[k * ld_dst + r] = src[r * ld_src + k] for r < rows, k < kc: the transposing half of packing,
// in 8×8 AVX blocks on every CPU that has AVX.
void transpose_into(const float* src, std::int64_t ld_src, int rows, int kc, float* dst, int ld_dst) {
  static const bool avx = __builtin_cpu_supports("avx");
  int r0 = 0;
  if (avx) {
    for (; r0 + 8 <= rows; r0 += 8) {
      int k0 = 0;
      for (; k0 + 8 <= kc; k0 += 8) transpose8x8(src + r0 * ld_src + k0, ld_src, dst + static_cast<std::int64_t>(k0) * ld_dst + r0, ld_dst);
      for (; k0 < kc; ++k0)
        for (int r = r0; r < r0 + 8; ++r) dst[static_cast<std::int64_t>(k0) * ld_dst + r] = src[r * ld_src + k0];
    }
  }
  for (int r = r0; r < rows; ++r) {
    const float* row = src + r * ld_src;
    for (int k = 0; k < kc; ++k) dst[static_cast<std::int64_t>(k) * ld_dst + r] = row[k];
  }
}

// Ap panel: Ap[k][MR] for rows r0..r0+rows of op(A), k in [k0, k0+kc); rows past `rows` are zero.
void pack_a_panel(Trans ta, const float* A, int lda, int r0, int rows, int k0, int kc, int MR, float* Ap) {
  if (rows < MR) std::fill_n(Ap, static_cast<std::int64_t>(kc) * MR, 0.0f);
  if (ta == Trans::No) {
    transpose_into(A + static_cast<std::int64_t>(r0) * lda + k0, lda, rows, kc, Ap, MR);
  } else {
    for (int k = 0; k < kc; ++k) {
      const float* src = A + static_cast<std::int64_t>(k0 + k) * lda + r0;
      float* dst = Ap + k * MR;
      for (int i = 0; i < rows; ++i) dst[i] = src[i];
    }
  }
}

// Bp panel: Bp[k][NR] for columns c0..c0+cols of op(B); columns past `cols` are zero.
void pack_b_panel(Trans tb, const float* B, int ldb, int c0, int cols, int k0, int kc, int NR, float* Bp) {
  if (cols < NR) std::fill_n(Bp, static_cast<std::int64_t>(kc) * NR, 0.0f);
  if (tb == Trans::No) {
    const float* src = B + static_cast<std::int64_t>(k0) * ldb + c0;
    if (cols == NR && NR == 32) {  // constant sizes: the copies become vector moves
      for (int k = 0; k < kc; ++k) std::memcpy(Bp + k * 32, src + static_cast<std::int64_t>(k) * ldb, sizeof(float) * 32);
    } else if (cols == NR && NR == 16) {
      for (int k = 0; k < kc; ++k) std::memcpy(Bp + k * 16, src + static_cast<std::int64_t>(k) * ldb, sizeof(float) * 16);
    } else {
      for (int k = 0; k < kc; ++k) std::memcpy(Bp + k * NR, src + static_cast<std::int64_t>(k) * ldb, sizeof(float) * cols);
    }
  } else {
    transpose_into(B + static_cast<std::int64_t>(c0) * ldb + k0, ldb, cols, kc, Bp, NR);
  }
}

// One tile; edge tiles go through a full-size scratch tile so the kernel is always MR×NR. `load`:
// the chain continues from C; else it starts from the bias when one is given (rb/cb point at the
// tile's first row/column), else from zero. `relu` is applied after the last K block.
void run_tile(const Family& f, int kc, const float* Ap, const float* Bp, std::int64_t ldb, float* C, int ldc, int rows,
              int cols, bool load, const float* rb, const float* cb, bool relu) {
  const bool biased = !load && (rb || cb);
  auto init = [&](int i, int j) { return rb ? rb[i] : cb[j]; };
  if (rows == f.mr && cols == f.nr) {
    if (biased)
      for (int i = 0; i < rows; ++i)
        for (int j = 0; j < cols; ++j) C[static_cast<std::int64_t>(i) * ldc + j] = init(i, j);
    f.kernel(kc, Ap, Bp, ldb, C, ldc, load || biased);
    if (relu)
      for (int i = 0; i < rows; ++i) {
        float* row = C + static_cast<std::int64_t>(i) * ldc;
        for (int j = 0; j < cols; ++j) row[j] = row[j] > 0.0f ? row[j] : 0.0f;
      }
    return;
  }
  alignas(64) float tile[8 * 32];  // the largest MR×NR
  for (int i = 0; i < f.mr; ++i)
    for (int j = 0; j < f.nr; ++j) {
      const bool inside = i < rows && j < cols;
      tile[i * f.nr + j] = !inside ? 0.0f : load ? C[static_cast<std::int64_t>(i) * ldc + j] : biased ? init(i, j) : 0.0f;
    }
  f.kernel(kc, Ap, Bp, ldb, tile, f.nr, true);
  for (int i = 0; i < rows; ++i) {
    float* row = C + static_cast<std::int64_t>(i) * ldc;
    const float* t = tile + i * f.nr;
    for (int j = 0; j < cols; ++j) row[j] = relu && !(t[j] > 0.0f) ? 0.0f : t[j];
  }
}

}  // namespace

const char* cpu_kernel_name(CpuKernel kernel) { return family(kernel).name; }

bool cpu_kernel_supported(CpuKernel kernel) {
  __builtin_cpu_init();
  switch (kernel) {
    case CpuKernel::Generic: return true;
    case CpuKernel::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case CpuKernel::Avx512: return __builtin_cpu_supports("avx512f");
  }
  return false;
}

CpuKernel best_cpu_kernel() {
  for (CpuKernel k : {CpuKernel::Avx512, CpuKernel::Avx2})
    if (cpu_kernel_supported(k)) return k;
  return CpuKernel::Generic;
}

CpuKernel parse_cpu_kernel(const std::string& name) {
  for (const Family& f : kFamilies)
    if (name == f.name) return f.id;
  throw std::invalid_argument("unknown CPU kernel family '" + name + "'; valid: avx512, avx2, generic (or best)");
}

CpuKernel cpu_kernel() {
  choose_from_environment();
  return static_cast<CpuKernel>(g_kernel.load());
}

void set_cpu_kernel(CpuKernel kernel) {
  if (!cpu_kernel_supported(kernel))
    throw std::invalid_argument(std::string("CPU kernel family '") + cpu_kernel_name(kernel) + "' needs instructions " +
                                cpu_model_name() + " lacks; its best is " + cpu_kernel_name(best_cpu_kernel()));
  choose_from_environment();
  g_kernel.store(static_cast<int>(kernel));
}

std::string cpu_model_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos) break;
    std::string name = line.substr(colon + 1);
    name.erase(0, name.find_first_not_of(" \t"));
    return name;
  }
  return "unknown CPU";
}

std::string cpu_kernel_summary() {
  const Family& f = family(cpu_kernel());
  std::string isa;
  const auto add = [&isa](bool has, const char* name) {
    if (!has) return;
    if (!isa.empty()) isa += ' ';
    isa += name;
  };
  __builtin_cpu_init();
  add(__builtin_cpu_supports("avx512f"), "avx512f");
  add(__builtin_cpu_supports("avx2"), "avx2");
  add(__builtin_cpu_supports("fma"), "fma");
  return std::string("cpu kernels ") + f.name + " (" + std::to_string(f.mr) + "x" + std::to_string(f.nr) +
         " fma tile; cpu: " + cpu_model_name() + ", " + (isa.empty() ? "no avx2/fma" : isa) + ")";
}

std::string cpu_kernel_warning() {
  const CpuKernel used = cpu_kernel(), best = best_cpu_kernel();
  if (used == best) return {};
  return std::string("CPU kernels '") + cpu_kernel_name(used) + "' run although this CPU supports '" +
         cpu_kernel_name(best) + "' (RSI_CPU_KERNEL or set_cpu_kernel pinned it): same results, slower";
}

namespace {

struct Operands {
  Trans ta, tb;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  float* C;
  int ldc;
  bool accumulate;  // beta = 1 (else C starts from zero or the bias)
  GemmEpilogue epilogue;
};

// C rows [m0, m1) × columns [n0, n1), all of K, on the calling thread with its own packing buffers.
void gemm_block(const Family& f, const Operands& o, int m0, int m1, int n0, int n1, int K) {
  const int MR = f.mr, NR = f.nr;
  const int MC = kMC / MR * MR, NC = kNC / NR * NR;  // whole panels
  const int M = m1 - m0, N = n1 - n0;
  // K in equal blocks of at most kKC (288 = one block, not 256 + 32: a short block costs a whole
  // extra load and store of C).
  const int kc_max = (K + (K + kKC - 1) / kKC - 1) / ((K + kKC - 1) / kKC);
  thread_local AlignedBuffer a_buffer, b_buffer;  // reused across calls, grown when needed
  float* Ap = a_buffer.get(static_cast<std::size_t>((std::min(MC, M) + MR - 1) / MR * MR) * kc_max);
  float* Bp = b_buffer.get(static_cast<std::size_t>((std::min(NC, N) + NR - 1) / NR * NR) * kc_max);
  for (int jc = n0; jc < n1; jc += NC) {
    const int nc = std::min(NC, n1 - jc), n_panels = (nc + NR - 1) / NR;
    for (int pc = 0; pc < K; pc += kc_max) {
      const int kc = std::min(kc_max, K - pc);
      const bool load = pc > 0 || o.accumulate, last = pc + kc == K;
      // B is always packed: read in place (row stride ldb) it was slower for every shape timed,
      // although packing copies it once more.
      for (int p = 0; p < n_panels; ++p)
        pack_b_panel(o.tb, o.B, o.ldb, jc + p * NR, std::min(NR, nc - p * NR), pc, kc, NR,
                     Bp + static_cast<std::int64_t>(p) * kc * NR);
      for (int ic = m0; ic < m1; ic += MC) {
        const int mc = std::min(MC, m1 - ic), m_panels = (mc + MR - 1) / MR;
        for (int p = 0; p < m_panels; ++p)
          pack_a_panel(o.ta, o.A, o.lda, ic + p * MR, std::min(MR, mc - p * MR), pc, kc, MR,
                       Ap + static_cast<std::int64_t>(p) * kc * MR);
        // The A panel (MR broadcasts per k) stays in L1 while the B panels (NR floats per k) stream
        // from L2 — BLIS's order, with the roles of its operands (the broadcast one is held).
        for (int ip = 0; ip < m_panels; ++ip)
          for (int jp = 0; jp < n_panels; ++jp) {
            const int i0 = ic + ip * MR, j0 = jc + jp * NR;
            run_tile(f, kc, Ap + static_cast<std::int64_t>(ip) * kc * MR, Bp + static_cast<std::int64_t>(jp) * kc * NR, NR,
                     o.C + static_cast<std::int64_t>(i0) * o.ldc + j0, o.ldc, std::min(MR, mc - ip * MR),
                     std::min(NR, nc - jp * NR), load, o.epilogue.row_bias ? o.epilogue.row_bias + i0 : nullptr,
                     o.epilogue.col_bias ? o.epilogue.col_bias + j0 : nullptr, o.epilogue.relu && last);
          }
      }
    }
  }
}

// Splits `panels` panels into `parts` contiguous ranges; range `i` in panels.
void split(int panels, int parts, int i, int& lo, int& hi) {
  lo = static_cast<int>(static_cast<std::int64_t>(panels) * i / parts);
  hi = static_cast<int>(static_cast<std::int64_t>(panels) * (i + 1) / parts);
}

}  // namespace

void sgemm(Trans trans_a, Trans trans_b, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
           float beta, float* C, int ldc, const GemmEpilogue& epilogue) {
  if (M <= 0 || N <= 0) return;
  if ((epilogue.row_bias || epilogue.col_bias) && (beta != 0.0f || (epilogue.row_bias && epilogue.col_bias)))
    throw std::invalid_argument("sgemm: a bias replaces beta·C (beta must be 0), and only one of row/column bias");
  if (K <= 0 && (epilogue.row_bias || epilogue.col_bias || epilogue.relu)) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) {
        const float v = epilogue.row_bias ? epilogue.row_bias[i] : epilogue.col_bias ? epilogue.col_bias[j] : 0.0f;
        C[static_cast<std::int64_t>(i) * ldc + j] = epilogue.relu && !(v > 0.0f) ? 0.0f : v;
      }
    return;
  }
  if (beta != 0.0f && beta != 1.0f) {
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) C[static_cast<std::int64_t>(i) * ldc + j] *= beta;
  }
  if (K <= 0) {
    if (beta == 0.0f)
      for (int i = 0; i < M; ++i) std::fill_n(C + static_cast<std::int64_t>(i) * ldc, N, 0.0f);
    return;
  }
  const Family& f = family(cpu_kernel());
  const Operands o{trans_a, trans_b, A, lda, B, ldb, C, ldc, beta != 0.0f, epilogue};
  // Threads get disjoint blocks of C on a tm × tn grid of panels and run a whole GEMM each, packing
  // what they need themselves: no barrier inside, and the only repeated work is packing the operand
  // a grid row or column shares. The grid minimises the largest block (in tiles), then prefers
  // splitting the longer side.
  const int m_panels = (M + f.mr - 1) / f.mr, n_panels = (N + f.nr - 1) / f.nr;
  const std::int64_t flops = static_cast<std::int64_t>(M) * N * K;
  const int threads = flops >= kParallelMinFlops ? std::min(num_threads(), m_panels * n_panels) : 1;
  if (threads <= 1) {
    gemm_block(f, o, 0, M, 0, N, K);
    return;
  }
  int tm = 1, tn = threads;
  std::int64_t best = -1;
  for (int a = 1; a <= threads; ++a) {
    if (threads % a != 0 || a > m_panels || threads / a > n_panels) continue;
    const std::int64_t block = static_cast<std::int64_t>((m_panels + a - 1) / a) * ((n_panels + threads / a - 1) / (threads / a));
    const std::int64_t shared = static_cast<std::int64_t>(a) * N + static_cast<std::int64_t>(threads / a) * M;
    if (best < 0 || block < best || (block == best && shared < static_cast<std::int64_t>(tm) * N + static_cast<std::int64_t>(tn) * M)) {
      best = block;
      tm = a;
      tn = threads / a;
    }
  }
  if (best < 0) {  // no exact grid fits (e.g. 3 threads, 2×2 panels): use fewer threads along N
    tm = 1;
    tn = std::min(threads, n_panels);
    if (tn == 1) {
      tm = std::min(threads, m_panels);
    }
  }
#pragma omp parallel for schedule(static) num_threads(tm * tn)
  for (int t = 0; t < tm * tn; ++t) {
    int ip0, ip1, jp0, jp1;
    split(m_panels, tm, t / tn, ip0, ip1);
    split(n_panels, tn, t % tn, jp0, jp1);
    const int m0 = ip0 * f.mr, m1 = std::min(M, ip1 * f.mr), n0 = jp0 * f.nr, n1 = std::min(N, jp1 * f.nr);
    if (m0 < m1 && n0 < n1) gemm_block(f, o, m0, m1, n0, n1, K);
  }
}

}  // namespace rsi::kernels
