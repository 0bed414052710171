// `rsi train`: trains one network from a genome file on Fashion-MNIST and reports validation and
// hidden-test accuracy.
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "rsi/kernels/ops.h"
#include "rsi/kernels/cpu_gemm.h"
#include "rsi/models/data.h"
#include "rsi/models/trainer.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"

namespace rsi::runtime {

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

namespace {

struct TrainArgs {
  std::string genome_path;
  std::string data_dir = models::kFashionMnistDir;
  int epochs = -1;
  std::uint64_t seed = 0;
  int threads = 0;
  std::int64_t max_steps = -1;
  std::int64_t labeled = 50'000;
  std::int64_t validation = 10'000;
  std::string cpu_kernels = "best";
};

int run_train(const TrainArgs& a) {
  models::Genome genome;
  models::GenomeStats stats;
  try {
    genome = models::load_genome(a.genome_path);
    stats = models::validate(genome);
  } catch (const models::GenomeError& e) {
    log_error(e.what());
    return kExitBadInput;
  }
  kernels::set_num_threads(a.threads);
  try {  // RSI_CPU_KERNEL, then --cpu-kernels
    if (a.cpu_kernels != "best") kernels::set_cpu_kernel(kernels::parse_cpu_kernel(a.cpu_kernels));
    (void)kernels::cpu_kernel();
  } catch (const std::invalid_argument& e) {
    log_error(e.what());
    return kExitUsage;
  }
  if (const std::string w = kernels::cpu_kernel_warning(); !w.empty()) log_warning(w);
  models::Dataset train_set, test_set;
  try {
    train_set = models::load_fashion_mnist_train(a.data_dir);
    test_set = models::load_fashion_mnist_test(a.data_dir);
  } catch (const models::DataError& e) {
    log_error(e.what());
    return kExitBadInput;
  }
  models::Split split;
  try {
    split = models::make_split(train_set.size(), {a.labeled, 0, a.validation}, a.seed);
  } catch (const models::DataError& e) {
    log_error(e.what());
    return kExitUsage;
  }
  const models::Dataset labeled = models::subset(train_set, split.labeled);
  const models::Dataset validation = models::subset(train_set, split.validation);
  train_set = models::Dataset{};  // the subsets are copies: free the 60k images

  models::Network net(genome);
  net.initialize(a.seed, 0);
  const int epochs = a.epochs >= 0 ? a.epochs : genome.recipe.epochs;
  std::printf("rsi train: %s  (%lld parameters, %.2f MFLOP/sample, %d threads)\n", a.genome_path.c_str(),
              static_cast<long long>(stats.parameters), static_cast<double>(stats.flops) / 1e6, kernels::num_threads());
  std::printf("  data: %lld labeled, %lld validation, %lld hidden test; batch %d, %d epochs, seed %llu\n",
              static_cast<long long>(labeled.size()), static_cast<long long>(validation.size()),
              static_cast<long long>(test_set.size()), genome.recipe.batch_size, epochs,
              static_cast<unsigned long long>(a.seed));
  std::printf("  device: cpu, %s\n", kernels::cpu_kernel_summary().c_str());
  std::fflush(stdout);

  const bool tty = isatty(STDOUT_FILENO);
  models::TrainOptions opt;
  opt.seed = a.seed;
  opt.epochs = epochs;
  opt.max_steps = a.max_steps;
  opt.validation = validation.size() > 0 ? &validation : nullptr;
  if (tty) {
    opt.on_step = [&](std::int64_t step, std::int64_t steps) {
      std::printf("\r  training %3lld%% ", static_cast<long long>(100 * step / steps));
      std::fflush(stdout);
    };
  }
  opt.on_epoch = [&](const models::EpochReport& r) {
    std::printf("%s  epoch %d/%d  loss %.4f  val_acc %.4f  %.0f samples/s  %.1f s\n", tty ? "\r" : "", r.epoch,
                r.epochs, r.mean_loss, r.has_validation ? r.validation.accuracy : 0.0, r.samples_per_second,
                r.seconds);
    std::fflush(stdout);
  };
  const models::TrainResult result = models::train(net, labeled, opt);
  if (result.diverged) {
    logf(LogLevel::Error,
         "training diverged (loss %g) after %lld steps; lower the learning rate",
         result.final_loss, static_cast<long long>(result.steps));
    return kExitFailure;
  }
  const models::Evaluation val = opt.validation ? models::evaluate(net, validation) : models::Evaluation{};
  const models::Evaluation test = models::evaluate(net, test_set);
  std::printf("final: validation accuracy %.4f, hidden test accuracy %.4f\n", val.accuracy, test.accuracy);
  std::printf("  per-class test accuracy:");
  for (double c : test.per_class) std::printf(" %.3f", c);
  std::printf("\n");
  const double sps = result.seconds > 0 ? static_cast<double>(result.samples) / result.seconds : 0.0;
  std::printf("train_summary samples_per_s=%.1f train_seconds=%.3f samples=%lld peak_rss_mib=%.1f val_acc=%.4f "
              "test_acc=%.4f threads=%d\n",
              sps, result.seconds, static_cast<long long>(result.samples), peak_rss_mib(), val.accuracy,
              test.accuracy, kernels::num_threads());
  return kExitOk;
}

}  // namespace

void add_train_command(CLI::App& app, std::function<int()>& run) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train one network from a genome file on Fashion-MNIST.\n"
      "Prints per-epoch loss, validation accuracy and samples/s, then the final validation and hidden-test\n"
      "accuracy and a machine-readable 'train_summary' line. The hidden test set (the official 10k) is only\n"
      "measured at the end; it never steers training.");
  cmd->add_option("--genome", args->genome_path, "Genome YAML file (see experiments/genomes/)")
      ->required()
      ->check(existing_file());
  cmd->add_option("--epochs", args->epochs, "Epochs to train (default: the genome recipe's)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", args->seed, "Seed for the split, initialisation, shuffling and augmentation")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "CPU threads (0 = all cores)")->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("--cpu-kernels", args->cpu_kernels,
                  "CPU kernel family: best (what this CPU supports best), avx512, avx2 or generic. Every family "
                  "computes the same bits; they differ in speed (RSI_CPU_KERNEL sets the same)")
      ->capture_default_str()
      ->check(CLI::IsMember({"best", "avx512", "avx2", "generic"}));
  cmd->add_option("--max-steps", args->max_steps, "Stop after this many optimizer steps (benchmarks, smoke tests)");
  cmd->add_option("--labeled", args->labeled, "Labeled training examples taken from the 60k training set")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--validation", args->validation, "Validation examples taken from the 60k training set")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--data-dir", args->data_dir, "Directory with the Fashion-MNIST IDX files")->capture_default_str();
  cmd->callback([&run, args] { run = [args] { return run_train(*args); }; });
}

}  // namespace rsi::runtime
