// rsi::models training and evaluation: supervised fine-tuning with an optional soft-label teacher
// (knowledge distillation), and accuracy / per-class accuracy / loss on a data set.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"
#include "rsi/kernels/cuda.h"
#include "rsi/models/data.h"
#include "rsi/models/network.h"

namespace rsi::models {

struct Evaluation {
  std::int64_t count = 0;
  double accuracy = 0.0;
  double mean_loss = 0.0;
  std::vector<double> per_class;  // accuracy of each class (NaN-free: a class with no examples reads 0)
};
// Evaluation-mode forward over `data` in batches. With a group, each rank evaluates its share of
// the examples and the counts are summed: every rank returns the same Evaluation.
Evaluation evaluate(Network& net, const Dataset& data, int batch_size = 256,
                    collective::Communicator* group = nullptr);

struct EpochReport {
  enum class Phase { Distill, FineTune } phase = Phase::FineTune;
  int epoch = 0, epochs = 0;
  std::int64_t steps = 0, samples = 0;  // this epoch
  double mean_loss = 0.0;
  double seconds = 0.0;                 // training time of this epoch (evaluation excluded)
  double samples_per_second = 0.0;
  double learning_rate = 0.0;
  bool has_validation = false;
  Evaluation validation;
};

// A teacher for distillation: writes logits [N][classes] for inputs x[N][pixels] (host memory,
// also when training runs on the GPU: TrainOptions::teacher_network keeps the labels there).
using Teacher = std::function<void(const float* x, int N, float* logits)>;

// Training runs in up to two phases. With a teacher and recipe.distill_epochs > 0, a distillation
// phase first visits the labeled set and the unlabeled pool (augmented): labeled examples learn
// from (1-mix)·CE + mix·KD(T), unlabeled ones from the teacher alone (mix·KD). Then recipe.epochs
// of fine-tuning with cross-entropy on the labeled set.
//
// Data parallel: with a group of R ranks, every rank draws the same global batch and takes rows
// [r·B/R, (r+1)·B/R); gradients are summed over the group in buckets and every rank applies the
// same optimizer step. Batch norm uses each shard's statistics (as PyTorch DDP without SyncBN);
// the running statistics are averaged over the group at the end of each epoch.
// RSI_CUDA_GRAPHS=1 in the environment (TrainOptions::cuda_graphs' default).
bool cuda_graphs_from_environment();

// An optimizer's state between train() calls: SGD's momentum or Adam's first moments, Adam's second
// moments (empty for SGD), and the steps taken with it (Adam's bias correction counts on from them).
struct OptimizerState {
  std::vector<float> first, second;
  std::int64_t steps = 0;
};

struct TrainOptions {
  std::uint64_t seed = 0;
  std::uint64_t model_id = 0;
  int epochs = -1;               // < 0: the recipe's (fine-tune phase)
  std::int64_t max_steps = -1;   // < 0: no cap (a cap ends training early, for benchmarks and tests)
  const Dataset* validation = nullptr;
  Teacher teacher;               // enables the distillation phase
  // A network as the teacher (instead of `teacher`): train() runs its forward pass (inference mode)
  // on the training device — moved there for the call and back after — so on the GPU a batch's soft
  // labels are computed and used there, without a round trip through the host.
  Network* teacher_network = nullptr;
  const Dataset* unlabeled = nullptr;  // the pool the teacher labels in the distillation phase
  collective::Communicator* group = nullptr;  // data-parallel trainer group (nullptr: this rank alone)
  // Gradient all-reduce bucket (floats; 1 MiB as PyTorch DDP's first bucket): smaller buckets let the
  // all-reduce start earlier in the backward pass, at one collective call each.
  std::int64_t bucket_floats = 1 << 18;
  std::function<void(const EpochReport&)> on_epoch;
  // Called every `progress_every` steps within an epoch with (step, steps in epoch).
  std::function<void(std::int64_t, std::int64_t)> on_step;
  std::int64_t progress_every = 20;
  // Where to train (default: kernels::default_device(), which the runtime sets for a GPU run).
  // Device::CUDA moves the network to the current GPU for the call (back to where it
  // was at the end) and keeps weights, activations and batches there: the examples (and, with a
  // teacher_network, the unlabeled pool) are uploaded once and batches are gathered and augmented on
  // the device (a host Teacher callback makes distillation batches go through the host). GPU results match the CPU
  // to a float tolerance, not bitwise (tests/gpu/test_parity.cpp), and divergence is detected up to
  // `loss_check_every` steps late (the losses are read back in groups, so the GPU never waits).
  kernels::Device device = kernels::default_device();
  // Steps whose losses are read back together (0: 32 on a GPU, 1 on the CPU). Only when a
  // divergence is noticed depends on it; the weights of a run that does not diverge do not.
  int loss_check_every = 0;
  // Where batches are assembled: Auto (on the GPU from the examples uploaded once, when training
  // there; on the host otherwise), Host (copied or augmented on the host, then uploaded) or Resident
  // (gathered and augmented by the device kernels from the uploaded examples, also on the CPU). Every
  // choice computes the same bits on one device: tests/gpu/test_parity.cpp checks the resident path
  // against the host path on the CPU, in CI, through the one training loop both devices run.
  enum class Batches { Auto, Host, Resident };
  Batches batches = Batches::Auto;
  // GPU: replay each full batch's step (batch gather, forward, losses, backward; not the optimizer)
  // from a CUDA graph captured once per epoch, instead of ~10 launches per layer. Applies to the
  // data-set-resident path (no augmentation, no distillation) on one rank for networks without
  // dropout; elsewhere, or when the capture fails, steps are queued as usual. The replayed work is
  // the same kernels on the same buffers: results equal those without (tests/gpu/test_parity.cpp).
  // Default: RSI_CUDA_GRAPHS=1 in the environment turns it on.
  bool cuda_graphs = cuda_graphs_from_environment();
  // A training continued over several calls (multi-fidelity rungs): `steps_before` steps and
  // `epochs_before` epochs were trained by earlier calls, and the learning-rate schedule spans
  // `schedule_steps` steps in all (0: this call's own). Steps and epochs, and the draws keyed by them
  // (shuffles, augmentation, dropout), go on from there. planned_steps gives the counts. The
  // optimizer starts afresh (Adam's bias correction from this call's first step) unless
  // `start_optimizer` gives the state an earlier call returned (`keep_optimizer`).
  std::int64_t steps_before = 0;
  std::int64_t schedule_steps = 0;
  std::uint32_t epochs_before = 0;
  const OptimizerState* start_optimizer = nullptr;  // must fit the network and the recipe's optimizer
  bool keep_optimizer = false;                       // return the final state in TrainResult::optimizer
};

struct TrainResult {
  std::int64_t steps = 0, samples = 0;
  double seconds = 0.0;  // training time, evaluation excluded
  double final_loss = 0.0;
  bool diverged = false;  // the loss became NaN or Inf; training stopped there
  // Gradient all-reduce buckets over the group (0 without one), and how many of them were issued
  // while the backward pass of lower layers was still to run (GradientReducer).
  std::int64_t buckets_reduced = 0, buckets_overlapped = 0;
  // Steps replayed from a CUDA graph, and why a capture failed if one did (no capture is tried after
  // that; steps replayed before it still count).
  std::int64_t cuda_graph_steps = 0;
  std::string cuda_graph_fallback;
  std::vector<EpochReport> epochs;
  std::optional<OptimizerState> optimizer;  // with TrainOptions::keep_optimizer
};

// Trains `net` (already initialised) on `train` with its genome's recipe. Each epoch visits the
// examples in an order drawn from (seed, model id, epoch); augmentation draws from (seed, model id,
// step). The same inputs give bitwise identical weights.
TrainResult train(Network& net, const Dataset& train, const TrainOptions& options);

// The steps train() takes for a recipe over `labeled` examples: its distillation phase over
// labeled + `unlabeled` (when `distill`: a teacher and distill_epochs > 0), then `epochs` fine-tune
// epochs. For TrainOptions::steps_before and schedule_steps.
std::int64_t planned_steps(const Recipe& recipe, std::int64_t labeled, std::int64_t unlabeled, bool distill, int epochs);

// Learning rate at `step` of `total_steps` for a recipe (constant, cosine to zero, or step decay
// ×0.1 at 50% and 75%).
double scheduled_learning_rate(const Recipe& recipe, std::int64_t step, std::int64_t total_steps);

}  // namespace rsi::models
