// rsi::models::Network — a trainable network built from a Genome. All trainable parameters live in
// one flat buffer (and their gradients in another of the same layout), so a trainer group
// all-reduces one buffer and a checkpoint writes one dataset. Non-trainable state (batch-norm
// running statistics) lives in a second flat buffer.
//
// Activations: dense blocks are [N][F]; spatial blocks use the CNHW layout of kernels/ops.h. The
// input is [N][H*W] (one channel), which is the same memory as CNHW with C = 1.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "rsi/kernels/dispatch.h"
#include "rsi/kernels/tensor.h"
#include "rsi/models/genome.h"

namespace rsi::models {

// One named parameter inside the flat buffer.
// Names are "block<I>.<kind>.<part>" with I the genome block index, e.g. "block3.dense.weight",
// "block0.conv.bias", "block2.batchnorm.gamma", "block4.residual.conv1.weight". Weights are laid
// out [out][in] (dense) and [K][C][k][k] (conv).
struct ParamSegment {
  std::string name;
  std::int64_t offset = 0;
  std::int64_t size = 0;
  bool decay = true;      // weight decay applies (weights yes; biases and norm parameters no)
  std::int64_t fan_in = 0;  // for initialisation
  enum class Init { Uniform, Ones, Zeros } init = Init::Uniform;
  std::vector<std::int64_t> shape;  // row-major; its product is size
};

// One tensor of a network's flat buffers, as the lineage files list them (checkpoints/FORMAT.md,
// "Named tensors"): the parameter segments in order, then each batch norm's running mean and
// running variance (the halves of its "running_mean_var" state segment) as two tensors.
struct NamedTensor {
  std::string name;        // "block3.conv.weight", "block2.batchnorm.running_var"
  bool in_state = false;   // in Network::state() (norm statistics), else in parameters()
  std::int64_t offset = 0; // into that buffer, in floats
  std::vector<std::int64_t> shape;
  bool operator==(const NamedTensor&) const = default;
};
// The tensors of the network built from `genome`, without allocating its buffers (throws
// GenomeError as Network does for a genome that does not build).
std::vector<NamedTensor> named_tensors(const Genome& genome, const InputSpec& input = {});
// The table as text, one line per tensor: "<name> <params|state> <offset> <d0>,<d1>,...\n".
std::string tensor_table_text(const std::vector<NamedTensor>& tensors);

class Layer;

class Network {
 public:
  explicit Network(const Genome& genome, const InputSpec& input = {});
  ~Network();
  Network(Network&&) noexcept;
  Network& operator=(Network&&) noexcept;

  const Genome& genome() const { return genome_; }

  // Where the buffers live and the ops run. A network is built on the CPU; to() moves parameters,
  // gradients, state and scratch to another device (Device::CUDA needs a usable GPU: see
  // kernels::cuda_available). forward/backward then take and return memory on that device, and
  // parameters()/state() are device tensors: move back to the CPU before reading them on the host.
  kernels::Device device() const { return exec_.device; }
  const kernels::Exec& exec() const { return exec_; }
  void to(kernels::Device device);

  const InputSpec& input() const { return input_; }
  std::int64_t parameter_count() const { return params_.numel(); }
  kernels::Tensor& parameters() { return params_; }
  const kernels::Tensor& parameters() const { return params_; }
  kernels::Tensor& gradients() { return grads_; }
  kernels::Tensor& state() { return state_; }
  const kernels::Tensor& state() const { return state_; }
  const std::vector<ParamSegment>& segments() const { return segments_; }
  // Segments of state(): "blockI.batchnorm.running_mean_var" holds [mean(C), var(C)].
  const std::vector<ParamSegment>& state_segments() const { return state_segments_; }

  // PyTorch's default initialisation (uniform ±1/sqrt(fan_in) for weights and biases, batch-norm
  // gamma 1 and beta 0), drawn from CounterRng(seed, stream(Init, model_id)) at each parameter's
  // index in the flat buffer: a pure function of (genome, seed, model id).
  void initialize(std::uint64_t seed, std::uint64_t model_id);

  // Forward pass of N inputs x[N][H*W] (in the network's device memory); returns the logits [N][classes]. In training mode batch
  // norm uses batch statistics and dropout draws masks from (seed, model_id, step).
  struct Mode {
    bool train = false;
    std::uint64_t seed = 0, model_id = 0;
    std::uint32_t step = 0;
    std::int64_t row_offset = 0;  // global batch row of x's first row (data-parallel shards)
  };
  const kernels::Tensor& forward(const float* x, int N, const Mode& mode);
  // Backward pass from dlogits [N][classes] of the last forward (which must have been in training
  // mode); overwrites gradients(). Layers run last to first and own contiguous, ascending parameter
  // ranges, so the final gradients fill gradients() from the top down: after each layer that has
  // parameters, `ready(from)` is told that gradients [from, parameter_count()) are final (on the
  // GPU: queued on exec()'s stream). The last call has from = 0. A data-parallel trainer starts
  // all-reducing the top buckets while the lower layers are still computing.
  using GradientsReady = std::function<void(std::int64_t from)>;
  void backward(const float* dlogits, const GradientsReady& ready = {});

  // True when a training-mode forward + backward queues the same work for every step of the same
  // batch size (no dropout: its masks are drawn per step), so it can be captured once and replayed.
  bool step_invariant() const;

  std::string summary() const;  // one line per layer: kind, output shape, parameters

 private:
  void bind_layers();
  kernels::Exec exec_;
  Genome genome_;
  InputSpec input_;
  kernels::Tensor params_, grads_, state_;
  kernels::Tensor grad_ping_, grad_pong_;
  std::vector<ParamSegment> segments_, state_segments_;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<std::int64_t> layer_param_begin_;  // offset of each layer's first parameter
  int batch_ = 0;
  const float* input_data_ = nullptr;
};

}  // namespace rsi::models
