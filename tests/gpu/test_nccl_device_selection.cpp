// Device selection for NCCL ranks (runtime/src/device.h): which GPU a rank takes by local rank,
// what `cluster.device` does without a GPU, and that `rsi run` with `device: cuda` stops before
// training with exit code 3 and a message naming the host, the rank and what to do. The decision
// is a pure function, so everything but the last test runs on machines without GPUs.
//
//   build/tests/test_nccl_device_selection
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "device.h"
#include "rsi/kernels/cuda.h"

namespace {

using rsi::runtime::choose_device;
using rsi::runtime::DeviceError;
using rsi::runtime::DevicePolicy;
using rsi::runtime::GpuInventory;
using rsi::runtime::LocalRank;

LocalRank local(int rank, int size) { return LocalRank{rank, size, "test"}; }
GpuInventory gpus(int count) { return GpuInventory{count, count ? "" : "cudaGetDeviceCount: no CUDA-capable device"}; }

TEST(DeviceSelection, LocalRankModuloTheGpusItSees) {
  for (int r = 0; r < 8; ++r) {
    const auto c = choose_device(DevicePolicy::Cuda, 8, local(r, 8), gpus(8), "node1", 8 + r);
    EXPECT_TRUE(c.cuda);
    EXPECT_EQ(c.gpu, r);
    EXPECT_TRUE(c.warning.empty()) << c.warning;
  }
  // More local ranks than GPUs: they wrap around, with a warning that NCCL will refuse a group of them.
  const auto c = choose_device(DevicePolicy::Auto, 0, local(5, 6), gpus(4), "node1", 5);
  EXPECT_EQ(c.gpu, 1);
  EXPECT_NE(c.warning.find("6 ranks on 4 GPU(s)"), std::string::npos) << c.warning;
  // Fewer GPUs than the manifest expects.
  const auto few = choose_device(DevicePolicy::Cuda, 8, local(0, 2), gpus(2), "node1", 0);
  EXPECT_NE(few.warning.find("gpus_per_node is 8 but node1 shows 2"), std::string::npos) << few.warning;
  EXPECT_EQ(choose_device(DevicePolicy::Cuda, 1, local(0, 1), gpus(1), "h", 0).describe(), "cuda:0");
}

TEST(DeviceSelection, CpuNeverTakesAGpu) {
  const auto c = choose_device(DevicePolicy::Cpu, 0, local(0, 1), gpus(8), "h", 0);
  EXPECT_FALSE(c.cuda);
  EXPECT_EQ(c.describe(), "cpu");
  EXPECT_TRUE(c.warning.empty());
  EXPECT_NE(choose_device(DevicePolicy::Cpu, 4, local(0, 1), gpus(4), "h", 0).warning.find("stay unused"),
            std::string::npos);
}

TEST(DeviceSelection, AutoFallsBackToTheCpuWithAWarning) {
  const auto c = choose_device(DevicePolicy::Auto, 4, local(2, 4), gpus(0), "node7", 6);
  EXPECT_FALSE(c.cuda);
  EXPECT_NE(c.warning.find("node7 rank 6 (local rank 2 from test) sees no GPU"), std::string::npos) << c.warning;
  EXPECT_NE(c.warning.find("training on the CPU"), std::string::npos) << c.warning;
}

TEST(DeviceSelection, CudaWithoutAGpuIsAClearError) {
  try {
    choose_device(DevicePolicy::Cuda, 1, local(0, 1), gpus(0), "node7", 3);
    FAIL() << "no error";
  } catch (const DeviceError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cluster.device is cuda, but node7 rank 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("no CUDA-capable device"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cluster.device: auto"), std::string::npos) << msg;  // what to do
  }
}

TEST(DeviceSelection, LocalRankComesFromSlurmThenOpenMpi) {
  const char* saved_slurm = std::getenv("SLURM_LOCALID");
  const char* saved_ompi = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
  const std::string slurm = saved_slurm ? saved_slurm : "", ompi = saved_ompi ? saved_ompi : "";
  setenv("SLURM_LOCALID", "3", 1);
  setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1", 1);
  EXPECT_EQ(rsi::runtime::local_rank_from_environment().rank, 3);
  EXPECT_EQ(rsi::runtime::local_rank_from_environment().source, "SLURM_LOCALID");
  unsetenv("SLURM_LOCALID");
  EXPECT_EQ(rsi::runtime::local_rank_from_environment().rank, 1);
  EXPECT_EQ(rsi::runtime::local_rank_from_environment().source, "OMPI_COMM_WORLD_LOCAL_RANK");
  unsetenv("OMPI_COMM_WORLD_LOCAL_RANK");
  EXPECT_EQ(rsi::runtime::local_rank_from_environment().source, "");
  setenv("SLURM_LOCALID", "x", 1);  // not a number: ignored
  EXPECT_EQ(rsi::runtime::local_rank_from_environment().source, "");
  unsetenv("SLURM_LOCALID");
  if (saved_slurm) setenv("SLURM_LOCALID", slurm.c_str(), 1);
  if (saved_ompi) setenv("OMPI_COMM_WORLD_LOCAL_RANK", ompi.c_str(), 1);
}

// The whole path: `rsi run` of a manifest that demands GPUs, on a machine without one.
TEST(DeviceSelection, RsiRunDemandingGpusExitsWith3BeforeTraining) {
  if (rsi::kernels::cuda_available()) GTEST_SKIP() << "this machine has a GPU: the run would train";
  const auto dir = std::filesystem::temp_directory_path() / ("rsi-device-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "m.yaml") << "run: {name: needs-gpu}\n"
                                   "task: {kind: surrogate}\n"
                                   "seeds: [{architecture: [{dense: {units: 10}}]}]\n"
                                   "cluster: {device: cuda}\n"
                                   "output: {directory: " << (dir / "run").string() << "}\n";
  const std::string cmd = std::string("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ") + RSI_BINARY +
                          " run " + (dir / "m.yaml").string() + " > " + (dir / "out.txt").string() + " 2>&1";
  const int status = std::system(cmd.c_str());
  std::ifstream in(dir / "out.txt");
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 3) << out;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  EXPECT_NE(out.find(std::string("cluster.device is cuda, but ") + host + " rank 0"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir / "run" / "models.tsv")) << "it trained";
  std::filesystem::remove_all(dir);
}

}  // namespace
