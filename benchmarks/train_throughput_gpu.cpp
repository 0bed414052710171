// train_throughput_gpu — training throughput of rsi's GPU path (models::train on Device::CUDA) for
// one reference genome, printed as one `train_summary` line that benchmarks/train_throughput_gpu
// (the runner) sets next to PyTorch's on the same GPU (benchmarks/torch_train_peer.py --device cuda).
//
// Same work as the CPU benchmark: the first 50k Fashion-MNIST training images, the genome's batch
// (128) and optimizer (Adam), cross-entropy, reshuffled every epoch; a warm-up run (cuBLAS handles,
// allocations, first launches) and evaluation are not timed. The data set is uploaded once before
// the timed loop, as the peer's is. Without the data set (a GPU machine that lacks
// /usr/share/datasets/fashion-mnist) it trains on synthetic images of the same shape and says so
// (data=synthetic): the work per step does not depend on pixel values.
//
//   build/benchmarks/train_throughput_gpu --genome experiments/genomes/mlp.yaml [--epochs 3]
//       [--max-steps N] [--data-dir DIR] [--synthetic] [--device cuda|cpu] [--check-every K]
//       [--profile-ops]   (GPU time per op of the timed run, from CUDA events; slows the run down)
//       [--cuda-graphs]   (replay each full batch's step from a CUDA graph)
// Exit status: 0 on success, 1 on an error (the message says what and where), 3 when no GPU is usable.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>

#include "rsi/kernels/cuda.h"
#include "rsi/kernels/rng.h"
#include "rsi/models/data.h"
#include "rsi/models/genome.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"

namespace {

using namespace rsi;

constexpr std::int64_t kTrainSamples = 50000;
constexpr std::int64_t kWarmupSteps = 5;

models::Dataset synthetic(std::int64_t count, std::uint64_t seed) {
  models::Dataset d;
  d.images.resize(static_cast<std::size_t>(count) * 784);
  d.labels.resize(static_cast<std::size_t>(count));
  const kernels::CounterRng rng(seed, 4711);
  for (std::int64_t i = 0; i < count; ++i) {
    d.labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(i), 10));
    for (int p = 0; p < 784; ++p)
      d.images[static_cast<std::size_t>(i) * 784 + p] =
          rng.uniform((static_cast<std::uint64_t>(i) << 12) + static_cast<std::uint64_t>(p));
  }
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"rsi GPU training throughput for one genome (see benchmarks/README.md)"};
  std::string genome_path, data_dir = models::kFashionMnistDir, device_name = "cuda";
  int epochs = 3, check_every = 32;
  std::int64_t max_steps = -1;
  bool force_synthetic = false;
  app.add_option("--genome", genome_path, "genome YAML (experiments/genomes/mlp.yaml or cnn.yaml)")->required();
  app.add_option("--epochs", epochs, "timed epochs over the 50k images (default 3)")->check(CLI::PositiveNumber);
  app.add_option("--max-steps", max_steps, "cap on timed optimizer steps");
  app.add_option("--data-dir", data_dir, "Fashion-MNIST IDX directory");
  app.add_flag("--synthetic", force_synthetic, "train on synthetic images even if the data set is there");
  app.add_option("--device", device_name, "cuda (default) or cpu")->check(CLI::IsMember({"cuda", "cpu"}));
  app.add_option("--check-every", check_every, "steps between loss read-backs on the GPU (default 32)");
  bool profile_ops = false, cuda_graphs = false;
  app.add_flag("--cuda-graphs", cuda_graphs, "replay each full batch's step from a CUDA graph (TrainOptions::cuda_graphs)");
  app.add_flag("--profile-ops", profile_ops, "time every GPU op of the timed run with CUDA events (slower; prints a table)");
  std::string conv;
  app.add_option("--conv", conv, "GPU convolution: im2col (im2col + cuBLAS) or cudnn (default: RSI_CUDA_CONV, else im2col)")
      ->check(CLI::IsMember({"im2col", "cudnn"}));
  CLI11_PARSE(app, argc, argv);
  if (profile_ops) setenv("RSI_PROFILE_OPS", "1", 1);  // read once, at the first CUDA op

  try {
    const kernels::Device device = device_name == "cuda" ? kernels::Device::CUDA : kernels::Device::CPU;
    if (device == kernels::Device::CUDA) {
      std::string why;
      if (!kernels::cuda_available(&why)) {
        std::fprintf(stderr, "train_throughput_gpu: no CUDA device: %s\n", why.c_str());
        return 3;
      }
      std::fprintf(stderr, "train_throughput_gpu: %s\n", kernels::cuda_device_description().c_str());
      if (!conv.empty()) kernels::cuda::default_context().set_conv_backend(kernels::cuda::parse_conv_backend(conv));
      conv = kernels::cuda::conv_backend_name(kernels::cuda::default_context().conv_backend());
    } else {
      conv = "cpu";
    }
    const models::Genome genome = models::load_genome(genome_path);
    const std::string model = std::filesystem::path(genome_path).stem().string();

    models::Dataset train, test;
    std::string data_kind = "fashion-mnist";
    if (!force_synthetic && std::filesystem::exists(std::filesystem::path(data_dir) / "train-images-idx3-ubyte.gz")) {
      models::Dataset all = models::load_fashion_mnist_train(data_dir);
      std::vector<std::int64_t> first(static_cast<std::size_t>(kTrainSamples));
      for (std::int64_t i = 0; i < kTrainSamples; ++i) first[static_cast<std::size_t>(i)] = i;
      train = models::subset(all, first);
      test = models::load_fashion_mnist_test(data_dir);
    } else {
      data_kind = "synthetic";
      std::fprintf(stderr, "train_throughput_gpu: %s has no Fashion-MNIST (or --synthetic): synthetic data of the same shape\n",
                   data_dir.c_str());
      train = synthetic(kTrainSamples, 1);
      test = synthetic(10000, 2);
    }

    models::TrainOptions options;
    options.seed = 1;
    options.device = device;
    options.loss_check_every = check_every;
    options.cuda_graphs = cuda_graphs;
    {
      // Warm-up on a separate network: first launches, cuBLAS handle and workspace, allocations.
      models::Network warm(genome);
      warm.initialize(2, 0);
      models::TrainOptions w = options;
      w.epochs = 1;
      w.max_steps = kWarmupSteps;
      models::train(warm, train, w);
      // And the epoch's short last batch once (its shapes: cuDNN plans, workspace growth).
      const std::int64_t batch = genome.recipe.batch_size, rest = train.size() % batch;
      if (rest > 0) {
        std::vector<std::int64_t> last(static_cast<std::size_t>(rest));
        for (std::int64_t i = 0; i < rest; ++i) last[static_cast<std::size_t>(i)] = i;
        w.max_steps = 1;
        models::train(warm, models::subset(train, last), w);
      }
    }
    if (profile_ops) (void)kernels::cuda_op_profile_report();  // drop the warm-up's records
    const kernels::cuda::ConvCounts warm_counts =
        device == kernels::Device::CUDA ? kernels::cuda::default_context().conv_counts() : kernels::cuda::ConvCounts{};
    models::Network net(genome);
    net.initialize(1, 0);
    options.epochs = epochs;
    options.max_steps = max_steps;
    const models::TrainResult result = models::train(net, train, options);
    if (result.diverged) {
      std::fprintf(stderr, "train_throughput_gpu: training diverged (loss %g)\n", result.final_loss);
      return 1;
    }
    if (profile_ops) std::fprintf(stderr, "%s", kernels::cuda_op_profile_report().c_str());
    if (device == kernels::Device::CUDA) net.to(device);
    const models::Evaluation eval = models::evaluate(net, test, 1000);
    const double sps = result.seconds > 0 ? static_cast<double>(result.samples) / result.seconds : 0.0;
    if (cuda_graphs && !result.cuda_graph_fallback.empty())
      std::fprintf(stderr, "train_throughput_gpu: no CUDA graph, steps queued one by one: %s\n",
                   result.cuda_graph_fallback.c_str());
    if (device == kernels::Device::CUDA) {
      kernels::cuda::Context& ctx = kernels::cuda::default_context();
      std::fprintf(stderr, "%s", ctx.conv_report().c_str());
      // cudnn that fell back to im2col for some calls of the timed run (host calls: a replayed graph
      // repeats what its capture did) says so on the summary line itself.
      const kernels::cuda::ConvCounts all = ctx.conv_counts();
      const std::int64_t fell = all.fallback - warm_counts.fallback, calls = fell + all.cudnn - warm_counts.cudnn;
      if (ctx.conv_backend() == kernels::cuda::ConvBackend::Cudnn && fell > 0)
        conv += "(fallback:" + std::to_string(fell) + "/" + std::to_string(calls) + ")";
    }
    std::printf("train_summary model=%s device=%s conv=%s samples_per_s=%.1f train_seconds=%.3f samples=%lld steps=%lld "
                "graph_steps=%lld final_loss=%.4f test_acc=%.4f data=%s\n",
                model.c_str(), device_name.c_str(), conv.c_str(), sps, result.seconds, static_cast<long long>(result.samples),
                static_cast<long long>(result.steps), static_cast<long long>(result.cuda_graph_steps),
                result.final_loss, eval.accuracy, data_kind.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_throughput_gpu: %s\n", e.what());
    return 1;
  }
}
