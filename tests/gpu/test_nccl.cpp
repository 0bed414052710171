// Tests of the nccl backend of rsi::collective::Communicator. Every expected value is computed
// from the rank and the communicator size, so the same program checks one rank (no mpirun: the
// host communicator is the local one) and several (under mpirun: MPI_COMM_WORLD). Tests on device
// buffers skip with the reason when this rank has no GPU, and when the job has more ranks than the
// node has GPUs (NCCL refuses two ranks of one communicator on one GPU).
//
// Run (after building the test_nccl target):
//   build/tests/test_nccl                                    # one rank, one GPU
//   mpirun -n 2 build/tests/test_nccl                         # two ranks, two GPUs
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"

namespace {

using rsi::collective::CollectiveError;
using rsi::collective::Communicator;
using rsi::collective::ReduceOp;

bool g_mpi = false;  // launched by mpirun

std::unique_ptr<Communicator> make_host() {
  return g_mpi ? rsi::collective::make_mpi_world_communicator() : rsi::collective::make_local_communicator();
}
int world_rank() { return make_host()->rank(); }
int world_size() { return make_host()->size(); }

int local_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

// Empty when this rank may run device tests, else why not (the skip message).
std::string why_no_device_tests() {
  int count = 0;
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device: cudaGetDeviceCount: ") + cudaGetErrorName(rc) + ": " + cudaGetErrorString(rc);
  }
  if (count == 0) return "no CUDA device: cudaGetDeviceCount reports 0";
  if (world_size() > count)
    return std::to_string(world_size()) + " ranks but " + std::to_string(count) +
           " GPU(s): NCCL refuses two ranks of one communicator on one GPU";
  return "";
}

// Every rank must skip together (a collective with a skipped rank would hang): the first rank's
// reason is the others' too, since the skip conditions do not depend on the rank.
#define RSI_REQUIRE_GPUS()                                    \
  do {                                                        \
    const std::string why_ = why_no_device_tests();           \
    if (!why_.empty()) GTEST_SKIP() << why_;                  \
  } while (0)

int my_gpu() {
  int count = 1;
  cudaGetDeviceCount(&count);
  return local_rank() % count;
}

std::unique_ptr<Communicator> make_nccl() { return rsi::collective::make_nccl_communicator(make_host(), my_gpu()); }

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  std::size_t n = 0;
  explicit DeviceBuffer(std::size_t count) : n(count) {
    const cudaError_t rc = cudaMalloc(&ptr, count * sizeof(T));
    if (rc != cudaSuccess) throw std::runtime_error(std::string("cudaMalloc: ") + cudaGetErrorString(rc));
  }
  ~DeviceBuffer() { cudaFree(ptr); }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(cudaMemcpy(ptr, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
};

// Rank r's element i; small integers, so every summation order gives the same float.
template <typename T>
T value(int rank, std::size_t i) {
  return static_cast<T>((rank + 1) * static_cast<int>(i % 13) - 3 * rank);
}
template <typename T>
T expected_sum(int size, std::size_t i) {
  T s = 0;
  for (int r = 0; r < size; ++r) s += value<T>(r, i);
  return s;
}

// --- tests that run on every machine with an NCCL build (no GPU needed) ---

TEST(NcclBackend, IsInThisBuild) { EXPECT_TRUE(rsi::collective::nccl_available_in_build()); }

TEST(NcclBackend, HostBuffersGoToTheHostCommunicator) {
  auto comm = make_nccl();
  EXPECT_STREQ(comm->backend(), "nccl");
  EXPECT_TRUE(comm->supports_device_buffers());
  std::vector<float> data(1000);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = value<float>(comm->rank(), i);
  comm->allreduce(std::span<float>(data), ReduceOp::Sum);
  for (std::size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], expected_sum<float>(comm->size(), i)) << i;
  std::vector<std::byte> bytes(64, std::byte{static_cast<unsigned char>(comm->rank())});
  comm->broadcast(bytes, comm->size() - 1);
  for (std::byte b : bytes) ASSERT_EQ(static_cast<int>(b), comm->size() - 1);
  comm->barrier();
}

// The first device operation creates the NCCL communicator on this rank's GPU; a GPU that does not
// exist must give an error that names the host, the rank and the failing call (not a hang).
TEST(NcclBackend, AMissingGpuIsAClearError) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    count = 0;
  }
  auto comm = rsi::collective::make_nccl_communicator(make_host(), count + 3);  // never a valid index
  float* fake = reinterpret_cast<float*>(std::uintptr_t{0x1000});
  try {
    comm->allreduce_async(fake, 16, ReduceOp::Sum, nullptr);
    FAIL() << "allreduce_async on GPU " << count + 3 << " did not throw";
  } catch (const CollectiveError& e) {
    const std::string msg = e.what();
    std::printf("  the error, as a user sees it: %s\n", msg.c_str());
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    EXPECT_NE(msg.find("cudaSetDevice"), std::string::npos) << msg;
    EXPECT_NE(msg.find(host), std::string::npos) << msg;
    EXPECT_NE(msg.find("rank " + std::to_string(comm->rank())), std::string::npos) << msg;
    EXPECT_NE(msg.find("GPU " + std::to_string(count + 3)), std::string::npos) << msg;
  }
  EXPECT_THROW(rsi::collective::make_nccl_communicator(make_host(), -1), CollectiveError);
}

TEST(NcclBackend, OtherBackendsRefuseDeviceBuffersUnlessOneRank) {
  auto host = make_host();
  EXPECT_EQ(host->supports_device_buffers(), host->size() == 1);
  float* fake = reinterpret_cast<float*>(std::uintptr_t{0x1000});
  if (host->size() == 1) {
    EXPECT_NO_THROW(host->allreduce_async(fake, 4, ReduceOp::Sum, nullptr));  // identity: never touched
  } else {
    EXPECT_THROW(host->allreduce_async(fake, 4, ReduceOp::Sum, nullptr), CollectiveError);
  }
}

// --- tests on device buffers (a GPU per rank) ---

TEST(NcclDevice, AllreduceSumAndAverageOfFloatsAndDoubles) {
  RSI_REQUIRE_GPUS();
  auto comm = make_nccl();
  const int rank = comm->rank(), size = comm->size();
  for (const std::size_t n : {std::size_t{1}, std::size_t{1000}, std::size_t{1} << 20}) {
    std::vector<float> host(n);
    for (std::size_t i = 0; i < n; ++i) host[i] = value<float>(rank, i);
    DeviceBuffer<float> dev(n);
    dev.upload(host);
    comm->allreduce(std::span<float>(dev.ptr, n), ReduceOp::Sum);  // a device span: NCCL, synchronous
    auto out = dev.download();
    for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(out[i], expected_sum<float>(size, i)) << "n " << n << " i " << i;
    dev.upload(host);
    comm->allreduce(std::span<float>(dev.ptr, n), ReduceOp::Average);
    out = dev.download();
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_NEAR(out[i], expected_sum<float>(size, i) / size, 1e-5f * (1 + std::fabs(out[i]))) << i;
  }
  std::vector<double> hd(777);
  for (std::size_t i = 0; i < hd.size(); ++i) hd[i] = value<double>(rank, i) + 0.25;
  DeviceBuffer<double> dd(hd.size());
  dd.upload(hd);
  comm->allreduce(std::span<double>(dd.ptr, hd.size()), ReduceOp::Sum);
  const auto od = dd.download();
  for (std::size_t i = 0; i < od.size(); ++i) ASSERT_EQ(od[i], expected_sum<double>(size, i) + 0.25 * size) << i;
}

TEST(NcclDevice, BroadcastFromEveryRoot) {
  RSI_REQUIRE_GPUS();
  auto comm = make_nccl();
  const std::size_t bytes = 4099;  // odd: not a multiple of any vector width
  DeviceBuffer<unsigned char> dev(bytes);
  for (int root = 0; root < comm->size(); ++root) {
    std::vector<unsigned char> host(bytes);
    for (std::size_t i = 0; i < bytes; ++i) host[i] = static_cast<unsigned char>((i * 7 + comm->rank() * 31) & 0xff);
    dev.upload(host);
    comm->broadcast(std::span<std::byte>(reinterpret_cast<std::byte*>(dev.ptr), bytes), root);
    const auto out = dev.download();
    for (std::size_t i = 0; i < bytes; ++i)
      ASSERT_EQ(out[i], static_cast<unsigned char>((i * 7 + root * 31) & 0xff)) << "root " << root << " i " << i;
  }
  EXPECT_THROW(comm->broadcast_async(dev.ptr, bytes, comm->size(), nullptr), CollectiveError);
}

// Buckets enqueued on the caller's stream behind a copy, as a trainer overlapping its backward pass
// does: the stream orders copy -> allreduce -> copy back without any host synchronisation between.
TEST(NcclDevice, AsyncBucketsAreStreamOrdered) {
  RSI_REQUIRE_GPUS();
  auto comm = make_nccl();
  const int rank = comm->rank(), size = comm->size();
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  const std::size_t n = 3 * 100'003;  // three buckets of an odd size
  std::vector<float> host(n), back(n, -1.0f);
  for (std::size_t i = 0; i < n; ++i) host[i] = value<float>(rank, i);
  float* pinned_in = nullptr;
  float* pinned_out = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned_in, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMallocHost(&pinned_out, n * sizeof(float)), cudaSuccess);
  std::memcpy(pinned_in, host.data(), n * sizeof(float));
  DeviceBuffer<float> dev(n);
  const std::size_t bucket = n / 3;
  for (int b = 0; b < 3; ++b) {
    float* part = dev.ptr + b * bucket;
    ASSERT_EQ(cudaMemcpyAsync(part, pinned_in + b * bucket, bucket * sizeof(float), cudaMemcpyHostToDevice, stream),
              cudaSuccess);
    comm->allreduce_async(part, bucket, b == 1 ? ReduceOp::Average : ReduceOp::Sum, stream);
  }
  ASSERT_EQ(cudaMemcpyAsync(pinned_out, dev.ptr, n * sizeof(float), cudaMemcpyDeviceToHost, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  for (std::size_t i = 0; i < n; ++i) {
    const float want = expected_sum<float>(size, i) / (i / bucket == 1 ? size : 1);
    ASSERT_NEAR(pinned_out[i], want, 1e-5f * (1 + std::fabs(want))) << i;
  }
  cudaFreeHost(pinned_in);
  cudaFreeHost(pinned_out);
  cudaStreamDestroy(stream);
}

// Groups from split() get NCCL communicators of their own (created on first use).
TEST(NcclDevice, SplitGroupsReduceWithinThemselves) {
  RSI_REQUIRE_GPUS();
  auto world = make_nccl();
  const int color = world->rank() % 2;
  auto group = world->split(color, world->rank());
  EXPECT_STREQ(group->backend(), "nccl");
  std::vector<float> host(4096);
  for (std::size_t i = 0; i < host.size(); ++i) host[i] = value<float>(world->rank(), i);
  DeviceBuffer<float> dev(host.size());
  dev.upload(host);
  group->allreduce(std::span<float>(dev.ptr, host.size()), ReduceOp::Sum);
  const auto out = dev.download();
  for (std::size_t i = 0; i < out.size(); ++i) {
    float want = 0;
    for (int r = color; r < world->size(); r += 2) want += value<float>(r, i);
    ASSERT_EQ(out[i], want) << i;
  }
  // The world's own NCCL communicator, used after the group's, still works.
  dev.upload(host);
  world->allreduce(std::span<float>(dev.ptr, host.size()), ReduceOp::Sum);
  const auto all = dev.download();
  for (std::size_t i = 0; i < all.size(); ++i) ASSERT_EQ(all[i], expected_sum<float>(world->size(), i)) << i;
  world->barrier();
}

}  // namespace

int main(int argc, char** argv) {
  // Under mpirun the world is MPI's; started alone it is one local rank (the GPU machine may have no MPI).
  g_mpi = std::getenv("OMPI_COMM_WORLD_SIZE") || std::getenv("PMI_RANK") || std::getenv("PMIX_RANK");
  if (g_mpi) {
    int provided = 0;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  }
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  if (rank == 0) {
    const std::string why = why_no_device_tests();
    std::printf("test_nccl: %d rank(s)%s; device tests: %s\n", world_size(), g_mpi ? " under mpirun" : " (no mpirun)",
                why.empty() ? "run" : ("skipped: " + why).c_str());
  }
  int failed = RUN_ALL_TESTS() != 0;
  if (g_mpi) {
    int any = 0;
    MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    failed = any;
    MPI_Finalize();
  }
  return failed;
}
