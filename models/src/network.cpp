// Network construction from a genome, initialisation, forward and backward passes.
#include "rsi/models/network.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

#include "rsi/kernels/dispatch.h"
#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"

namespace rsi::models {

using kernels::Device;
using kernels::Exec;
using kernels::Tensor;

// Shape of an activation per sample.
struct ActShape {
  bool spatial = true;
  int C = 1, H = 0, W = 0;
  std::int64_t features() const { return static_cast<std::int64_t>(C) * H * W; }
};

// Collects parameter and state segments while layers are built; offsets are fixed before the flat
// buffers exist, and layers turn them into pointers in bind().
struct Registry {
  std::vector<ParamSegment> params;
  std::vector<ParamSegment> states;
  std::int64_t param_size = 0, state_size = 0;
  static std::int64_t numel(const std::vector<std::int64_t>& shape) {
    std::int64_t n = 1;
    for (std::int64_t d : shape) n *= d;
    return n;
  }
  std::int64_t add_param(std::string name, std::vector<std::int64_t> shape, bool decay, std::int64_t fan_in,
                         ParamSegment::Init init = ParamSegment::Init::Uniform) {
    const std::int64_t size = numel(shape);
    params.push_back({std::move(name), param_size, size, decay, fan_in, init, std::move(shape)});
    param_size += size;
    return param_size - size;
  }
  std::int64_t add_state(std::string name, std::vector<std::int64_t> shape) {
    const std::int64_t size = numel(shape);
    states.push_back({std::move(name), state_size, size, false, 0, ParamSegment::Init::Zeros, std::move(shape)});
    state_size += size;
    return state_size - size;
  }
};

// Pointers into the network's flat buffers and where they live; every op a layer runs goes to
// `exec` (kernels/dispatch.h), so one layer implementation serves the CPU and the GPU.
struct Buffers {
  float* params;
  float* grads;
  float* state;
  Exec exec;
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual void bind(const Buffers& b) { exec = b.exec; }
  // Writes the layer's initial non-trainable state into `state` (host memory, the flat state layout).
  virtual void reset_state(float*) const {}
  // Re-creates the layer's scratch tensors (activations, masks, saved statistics) on `device`.
  virtual void set_device(Device device) { out = Tensor(kernels::Shape{0}, device); }
  // GPU fusion: a dense or conv layer whose bias the following activation applies leaves it out of
  // `out` on the GPU and returns it here with its layout (see kernels::bias_activation_forward).
  virtual const float* deferred_bias(int /*N*/, std::int64_t& /*rows*/, std::int64_t& /*cols*/,
                                     bool& /*per_row*/) const {
    return nullptr;
  }
  bool defer_bias = false;  // set by the network when the next layer is a ReLU or tanh
  // CPU fusion: a dense or conv layer followed by ReLU writes ReLU(out) in its GEMM's own pass and
  // the ReLU layer's output is a view of it (same bits as two passes; ReLU's backward reads only
  // its output). Set by the network; used only on the CPU.
  bool relu_in_gemm = false;
  // True when this layer's backward is the identity for this step (the next layer's backward already
  // did its work): the network then hands the gradient straight on.
  virtual bool gradient_passes_through() const { return false; }
  // x holds N samples of in_shape; writes out.
  virtual void forward(const float* x, int N, const Network::Mode& mode) = 0;
  // dy: gradient of out; dx (may be null): gradient of x. Overwrites parameter gradients.
  virtual void backward(const float* x, const float* dy, float* dx, int N) = 0;
  virtual std::string kind() const = 0;

  ActShape in_shape, out_shape;
  std::int64_t param_count = 0;
  Tensor out;
  Exec exec;

 protected:
  void prepare_out(int N) { out.resize({static_cast<std::int64_t>(N) * out_shape.features()}); }
};

namespace {

class DenseLayer final : public Layer {
 public:
  DenseLayer(Registry& r, const std::string& name, ActShape in, int units) {
    in_shape = in;
    out_shape = {false, units, 1, 1};
    inputs_ = static_cast<int>(in.features());
    units_ = units;
    w_ = r.add_param(name + ".weight", {units, inputs_}, true, inputs_);
    b_ = r.add_param(name + ".bias", {units}, false, inputs_);
    param_count = static_cast<std::int64_t>(units) * inputs_ + units;
  }
  void bind(const Buffers& b) override {
    Layer::bind(b);
    buf_ = b;
  }
  void forward(const float* x, int N, const Network::Mode&) override {
    prepare_out(N);
    const float* bias = defer_bias && exec.cuda() ? nullptr : buf_.params + b_;
    kernels::linear_forward(exec, x, buf_.params + w_, bias, out.data(), N, inputs_, units_, relu_in_gemm && !exec.cuda());
  }
  const float* deferred_bias(int N, std::int64_t& rows, std::int64_t& cols, bool& per_row) const override {
    if (!defer_bias || !exec.cuda()) return nullptr;
    rows = N, cols = units_, per_row = false;
    return buf_.params + b_;
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    kernels::linear_backward(exec, x, buf_.params + w_, dy, dx, buf_.grads + w_, buf_.grads + b_, N, inputs_, units_);
  }
  std::string kind() const override { return "dense(" + std::to_string(units_) + ")"; }

 private:
  int inputs_ = 0, units_ = 0;
  std::int64_t w_ = 0, b_ = 0;
  Buffers buf_{};
};

class ConvLayer final : public Layer {
 public:
  ConvLayer(Registry& r, const std::string& name, ActShape in, int channels, int kernel, int stride) {
    in_shape = in;
    shape_.C = in.C, shape_.H = in.H, shape_.W = in.W, shape_.K = channels;
    shape_.kernel = kernel, shape_.stride = stride, shape_.pad = kernel / 2;
    out_shape = {true, channels, shape_.OH(), shape_.OW()};
    const std::int64_t fan_in = static_cast<std::int64_t>(in.C) * kernel * kernel;
    w_ = r.add_param(name + ".weight", {channels, in.C, kernel, kernel}, true, fan_in);
    b_ = r.add_param(name + ".bias", {channels}, false, fan_in);
    param_count = channels * fan_in + channels;
  }
  void bind(const Buffers& b) override {
    Layer::bind(b);
    buf_ = b;
  }
  void set_device(Device device) override {
    Layer::set_device(device);
    col_ = Tensor(kernels::Shape{0}, device);
  }
  void forward(const float* x, int N, const Network::Mode&) override {
    shape_.N = N;
    prepare_out(N);
    col_.resize({std::max<std::int64_t>(shape_.col_size(), 1)});
    const float* bias = defer_bias && exec.cuda() ? nullptr : buf_.params + b_;
    kernels::conv2d_forward(exec, shape_, x, buf_.params + w_, bias, out.data(), col_.data(), relu_in_gemm && !exec.cuda());
  }
  const float* deferred_bias(int N, std::int64_t& rows, std::int64_t& cols, bool& per_row) const override {
    if (!defer_bias || !exec.cuda()) return nullptr;
    rows = shape_.K, cols = static_cast<std::int64_t>(N) * shape_.OH() * shape_.OW(), per_row = true;
    return buf_.params + b_;
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    shape_.N = N;
    kernels::conv2d_backward(exec, shape_, x, buf_.params + w_, dy, dx, buf_.grads + w_, buf_.grads + b_, col_.data());
  }
  std::string kind() const override {
    return "conv(" + std::to_string(shape_.K) + ", k" + std::to_string(shape_.kernel) + ", s" +
           std::to_string(shape_.stride) + ")";
  }

 private:
  kernels::Conv2dShape shape_;
  std::int64_t w_ = 0, b_ = 0;
  Tensor col_;
  Buffers buf_{};
};

class PoolLayer final : public Layer {
 public:
  PoolLayer(ActShape in, Block::PoolKind pool_kind, int size, int stride) : max_(pool_kind == Block::PoolKind::Max) {
    in_shape = in;
    shape_.H = in.H, shape_.W = in.W, shape_.size = size, shape_.stride = stride;
    out_shape = {true, in.C, shape_.OH(), shape_.OW()};
  }
  void forward(const float* x, int N, const Network::Mode&) override {
    shape_.planes = static_cast<std::int64_t>(in_shape.C) * N;
    prepare_out(N);
    if (max_) {
      argmax_.resize({out.numel()});
      kernels::maxpool2d_forward(exec, shape_, x, out.data(), argmax());
    } else {
      kernels::avgpool2d_forward(exec, shape_, x, out.data());
    }
  }
  void set_device(Device device) override {
    Layer::set_device(device);
    argmax_ = Tensor(kernels::Shape{0}, device);
  }
  // Set by the network when the layer before is a ReLU: on the CPU this backward applies the ReLU's
  // mask too and the ReLU's own backward is skipped (gradient_passes_through).
  bool masks_relu = false;
  void backward(const float*, const float* dy, float* dx, int N) override {
    if (!dx) return;
    shape_.planes = static_cast<std::int64_t>(in_shape.C) * N;
    if (max_ && masks_relu && !exec.cuda())
      kernels::maxpool2d_backward_relu(shape_, dy, argmax(), out.data(), dx);
    else if (max_)
      kernels::maxpool2d_backward(exec, shape_, dy, argmax(), dx);
    else
      kernels::avgpool2d_backward(exec, shape_, dy, dx);
  }
  bool is_max() const { return max_; }
  std::string kind() const override { return std::string(max_ ? "maxpool(" : "avgpool(") + std::to_string(shape_.size) + ")"; }

 private:
  // Window argmax indices: int32 stored in a float tensor's memory (same size), so they live on
  // the layer's device like everything else.
  std::int32_t* argmax() { return reinterpret_cast<std::int32_t*>(argmax_.data()); }
  bool max_;
  kernels::Pool2dShape shape_;
  Tensor argmax_;
};

class ActivationLayer final : public Layer {
 public:
  ActivationLayer(ActShape in, kernels::Activation a) : act_(a) { in_shape = out_shape = in; }
  // ReLU and tanh backward read only the output, so the layer before may leave its bias to us;
  // GELU's backward reads its input, which must then include the bias.
  bool is_relu() const { return act_ == kernels::Activation::ReLU; }
  bool can_take_bias() const { return act_ == kernels::Activation::ReLU || act_ == kernels::Activation::Tanh; }
  const Layer* bias_source = nullptr;
  Layer* relu_source = nullptr;  // the CPU layer that already applied this ReLU (relu_in_gemm)
  bool masked_by_next = false;   // the max pool after this ReLU applies its mask in its backward (CPU)
  bool gradient_passes_through() const override { return masked_by_next && !exec.cuda(); }
  void forward(const float* x, int N, const Network::Mode&) override {
    if (relu_source && !exec.cuda()) {
      out = Tensor::view(relu_source->out.data(), relu_source->out.shape(), relu_source->out.device());
      return;
    }
    prepare_out(N);
    std::int64_t rows = 0, cols = 0;
    bool per_row = false;
    if (const float* bias = bias_source ? bias_source->deferred_bias(N, rows, cols, per_row) : nullptr) {
      kernels::bias_activation_forward(exec, act_, x, bias, out.data(), rows, cols, per_row);
      return;
    }
    kernels::activation_forward(exec, act_, x, out.data(), out.numel());
  }
  void backward(const float* x, const float* dy, float* dx, int) override {
    if (dx) kernels::activation_backward(exec, act_, x, out.data(), dy, dx, out.numel());
  }
  std::string kind() const override { return kernels::activation_name(act_); }

 private:
  kernels::Activation act_;
};

class DropoutLayer final : public Layer {
 public:
  DropoutLayer(ActShape in, float rate, std::uint64_t index) : rate_(rate), index_(index) { in_shape = out_shape = in; }
  void forward(const float* x, int N, const Network::Mode& mode) override {
    prepare_out(N);
    train_ = mode.train && rate_ > 0.0f;
    if (!train_) {
      kernels::copy(exec, out.data(), x, out.numel());
      return;
    }
    mask_.resize({out.numel()});
    // Each element's draw is indexed by (layer, global row, feature), so a data-parallel shard
    // draws the same mask for its rows as one rank does for the whole batch.
    const kernels::CounterRng rng(mode.seed, kernels::rng_stream(kernels::RngUse::Dropout, mode.model_id), mode.step);
    const std::uint64_t base = index_ << 40;
    const std::int64_t features = in_shape.features();
    if (!in_shape.spatial) {
      kernels::dropout_forward(exec, x, out.data(), mask_.data(), out.numel(), rate_, rng,
                               base + static_cast<std::uint64_t>(mode.row_offset * features));
      return;
    }
    kernels::dropout_forward_cnhw(exec, x, out.data(), mask_.data(), in_shape.C, N,
                                  static_cast<std::int64_t>(in_shape.H) * in_shape.W, rate_, rng, base,
                                  mode.row_offset);
  }
  void set_device(Device device) override {
    Layer::set_device(device);
    mask_ = Tensor(kernels::Shape{0}, device);
  }
  void backward(const float*, const float* dy, float* dx, int) override {
    if (!dx) return;
    if (train_)
      kernels::dropout_backward(exec, dy, mask_.data(), dx, out.numel());
    else
      kernels::copy(exec, dx, dy, out.numel());
  }
  std::string kind() const override {
    std::ostringstream s;
    s << "dropout(" << rate_ << ")";
    return s.str();
  }

 private:
  float rate_;
  std::uint64_t index_;
  bool train_ = false;
  Tensor mask_;
};

class BatchNormLayer final : public Layer {
 public:
  static constexpr float kMomentum = 0.1f, kEps = 1e-5f;
  BatchNormLayer(Registry& r, const std::string& name, ActShape in, bool zero_gamma = false) {
    in_shape = out_shape = in;
    channels_ = in.spatial ? in.C : in.features();
    gamma_ = r.add_param(name + ".gamma", {channels_}, false, 0,
                         zero_gamma ? ParamSegment::Init::Zeros : ParamSegment::Init::Ones);
    beta_ = r.add_param(name + ".beta", {channels_}, false, 0, ParamSegment::Init::Zeros);
    running_ = r.add_state(name + ".running_mean_var", {2, channels_});
    param_count = 2 * channels_;
    save_.resize({2 * channels_});
  }
  void bind(const Buffers& b) override {
    Layer::bind(b);
    buf_ = b;
  }
  void reset_state(float* state) const override {
    std::fill_n(state + running_ + channels_, channels_, 1.0f);  // running variance starts at 1
  }
  void set_device(Device device) override {
    Layer::set_device(device);
    save_ = Tensor({2 * channels_}, device);
  }
  kernels::BatchNormShape shape(int N) const {
    if (in_shape.spatial) return {1, channels_, static_cast<std::int64_t>(N) * in_shape.H * in_shape.W};
    return {N, channels_, 1};
  }
  void forward(const float* x, int N, const Network::Mode& mode) override {
    prepare_out(N);
    float* running = buf_.state + running_;
    if (mode.train)
      kernels::batchnorm_forward_train(exec, shape(N), x, buf_.params + gamma_, buf_.params + beta_, out.data(), save_.data(),
                                       save_.data() + channels_, running, running + channels_, kMomentum, kEps);
    else
      kernels::batchnorm_forward_eval(exec, shape(N), x, buf_.params + gamma_, buf_.params + beta_, running,
                                      running + channels_, kEps, out.data());
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    kernels::batchnorm_backward(exec, shape(N), x, buf_.params + gamma_, save_.data(), save_.data() + channels_, dy, dx,
                                buf_.grads + gamma_, buf_.grads + beta_);
  }
  std::string kind() const override { return "batchnorm"; }

 private:
  std::int64_t channels_ = 0, gamma_ = 0, beta_ = 0, running_ = 0;
  Tensor save_;
  Buffers buf_{};
};

class FlattenLayer final : public Layer {
 public:
  explicit FlattenLayer(ActShape in) {
    in_shape = in;
    out_shape = {false, static_cast<int>(in.features()), 1, 1};
  }
  void forward(const float* x, int N, const Network::Mode&) override {
    prepare_out(N);
    kernels::cnhw_to_dense(exec, x, out.data(), in_shape.C, N, in_shape.H * in_shape.W);
  }
  void backward(const float*, const float* dy, float* dx, int N) override {
    if (dx) kernels::dense_to_cnhw(exec, dy, dx, in_shape.C, N, in_shape.H * in_shape.W);
  }
  std::string kind() const override { return "flatten"; }
};

// x + bn2(conv2(relu(bn1(conv1(x))))) at the input's channels, stride 1. The second norm's gamma
// starts at zero, so a freshly inserted block is the identity (a function-preserving deepen).
class ResidualLayer final : public Layer {
 public:
  ResidualLayer(Registry& r, const std::string& name, ActShape in, int kernel) : kernel_(kernel) {
    in_shape = out_shape = in;
    parts_.push_back(std::make_unique<ConvLayer>(r, name + ".conv1", in, in.C, kernel, 1));
    parts_.push_back(std::make_unique<BatchNormLayer>(r, name + ".bn1", in));
    parts_.push_back(std::make_unique<ActivationLayer>(in, kernels::Activation::ReLU));
    parts_.push_back(std::make_unique<ConvLayer>(r, name + ".conv2", in, in.C, kernel, 1));
    parts_.push_back(std::make_unique<BatchNormLayer>(r, name + ".bn2", in, /*zero_gamma=*/true));
    for (auto& p : parts_) param_count += p->param_count;
  }
  void bind(const Buffers& b) override {
    Layer::bind(b);
    for (auto& p : parts_) p->bind(b);
  }
  void reset_state(float* state) const override {
    for (const auto& p : parts_) p->reset_state(state);
  }
  void set_device(Device device) override {
    Layer::set_device(device);
    for (auto& p : parts_) p->set_device(device);
    grad_a_ = Tensor(kernels::Shape{0}, device);
    grad_b_ = Tensor(kernels::Shape{0}, device);
  }
  void forward(const float* x, int N, const Network::Mode& mode) override {
    const float* h = x;
    for (auto& p : parts_) {
      p->forward(h, N, mode);
      h = p->out.data();
    }
    prepare_out(N);
    kernels::add(exec, x, h, out.data(), out.numel());
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    const std::int64_t n = out.numel();
    grad_a_.resize({n});
    grad_b_.resize({n});
    const float* g = dy;
    for (std::size_t i = parts_.size(); i-- > 0;) {
      const float* in = i == 0 ? x : parts_[i - 1]->out.data();
      float* gin = (i % 2 == 0) ? grad_a_.data() : grad_b_.data();
      parts_[i]->backward(in, g, gin, N);
      g = gin;
    }
    if (dx) kernels::add(exec, dy, g, dx, n);
  }
  std::string kind() const override { return "residual(k" + std::to_string(kernel_) + ")"; }

 private:
  int kernel_;
  std::vector<std::unique_ptr<Layer>> parts_;
  Tensor grad_a_, grad_b_;
};

// The layers of `genome` in order, their parameters and state registered in `registry` (offsets
// only: no buffer exists yet). A flatten goes before the first dense block after a spatial one.
std::vector<std::unique_ptr<Layer>> build_layers(const Genome& genome, const InputSpec& input, Registry& registry) {
  std::vector<std::unique_ptr<Layer>> layers;
  ActShape shape{true, input.channels, input.height, input.width};
  for (std::size_t i = 0; i < genome.blocks.size(); ++i) {
    const Block& b = genome.blocks[i];
    const std::string name = "block" + std::to_string(i);
    if (b.kind == Block::Kind::Dense && shape.spatial) {
      if (i == 0) {
        shape = {false, static_cast<int>(shape.features()), 1, 1};  // [N][H*W] input is already flat
      } else {
        layers.push_back(std::make_unique<FlattenLayer>(shape));
        shape = layers.back()->out_shape;
      }
    }
    switch (b.kind) {
      case Block::Kind::Dense: layers.push_back(std::make_unique<DenseLayer>(registry, name + ".dense", shape, b.units)); break;
      case Block::Kind::Conv:
        layers.push_back(std::make_unique<ConvLayer>(registry, name + ".conv", shape, b.channels, b.kernel, b.stride));
        break;
      case Block::Kind::Pool: layers.push_back(std::make_unique<PoolLayer>(shape, b.pool_kind, b.size, b.stride)); break;
      case Block::Kind::Residual: layers.push_back(std::make_unique<ResidualLayer>(registry, name + ".residual", shape, b.kernel)); break;
      case Block::Kind::Dropout: layers.push_back(std::make_unique<DropoutLayer>(shape, b.rate, i)); break;
      case Block::Kind::BatchNorm: layers.push_back(std::make_unique<BatchNormLayer>(registry, name + ".batchnorm", shape)); break;
      case Block::Kind::Activation: layers.push_back(std::make_unique<ActivationLayer>(shape, b.activation)); break;
    }
    shape = layers.back()->out_shape;
  }
  return layers;
}

}  // namespace

std::vector<NamedTensor> named_tensors(const Genome& genome, const InputSpec& input) {
  validate(genome, input);
  Registry registry;
  build_layers(genome, input, registry);
  std::vector<NamedTensor> out;
  for (const ParamSegment& s : registry.params) out.push_back({s.name, false, s.offset, s.shape});
  const std::string suffix = ".running_mean_var";
  for (const ParamSegment& s : registry.states) {
    if (!s.name.ends_with(suffix) || s.shape.size() != 2 || s.shape[0] != 2)
      throw std::logic_error("named_tensors: unexpected state segment '" + s.name + "'");
    const std::string norm = s.name.substr(0, s.name.size() - suffix.size());
    out.push_back({norm + ".running_mean", true, s.offset, {s.shape[1]}});
    out.push_back({norm + ".running_var", true, s.offset + s.shape[1], {s.shape[1]}});
  }
  return out;
}

std::string tensor_table_text(const std::vector<NamedTensor>& tensors) {
  std::string text;
  for (const NamedTensor& t : tensors) {
    text += t.name + (t.in_state ? " state " : " params ") + std::to_string(t.offset) + " ";
    for (std::size_t d = 0; d < t.shape.size(); ++d) {
      if (d > 0) text += ',';
      text += std::to_string(t.shape[d]);
    }
    text += "\n";
  }
  return text;
}

Network::Network(const Genome& genome, const InputSpec& input) : genome_(genome), input_(input) {
  validate(genome_, input_);
  Registry registry;
  layers_ = build_layers(genome_, input_, registry);
  // Dense/conv followed by ReLU or tanh: on the GPU the activation applies the bias (one pass less;
  // RSI_CUDA_FUSE=0 turns that off for A/B timing). On the CPU a following ReLU is applied in the
  // GEMM's pass (relu_in_gemm): the same bits either way, so it is always on.
  const char* fuse_env = std::getenv("RSI_CUDA_FUSE");
  const bool fuse = !(fuse_env && std::string(fuse_env) == "0");
  for (std::size_t i = 0; i + 1 < layers_.size(); ++i) {
    auto* act = dynamic_cast<ActivationLayer*>(layers_[i + 1].get());
    const bool biased = dynamic_cast<DenseLayer*>(layers_[i].get()) || dynamic_cast<ConvLayer*>(layers_[i].get());
    if (!act || !biased) continue;
    if (act->is_relu()) {
      layers_[i]->relu_in_gemm = true;
      act->relu_source = layers_[i].get();
    }
    if (auto* pool = i + 2 < layers_.size() ? dynamic_cast<PoolLayer*>(layers_[i + 2].get()) : nullptr;
        pool && act->is_relu()) {
      pool->masks_relu = true;  // ReLU's backward done by the max pool's (CPU; an avg pool ignores it)
      act->masked_by_next = pool->is_max();
    }
    if (!fuse || !act->can_take_bias()) continue;
    layers_[i]->defer_bias = true;
    act->bias_source = layers_[i].get();
  }
  // Layers register their parameters in layer order, each layer's as one run.
  std::int64_t begin = 0;
  for (const auto& layer : layers_) {
    layer_param_begin_.push_back(begin);
    begin += layer->param_count;
  }
  if (begin != registry.param_size)
    throw std::logic_error("Network: layers own " + std::to_string(begin) + " parameters, the registry " +
                           std::to_string(registry.param_size));
  segments_ = std::move(registry.params);
  state_segments_ = std::move(registry.states);
  params_ = Tensor({registry.param_size});
  grads_ = Tensor({registry.param_size});
  state_ = Tensor({registry.state_size});
  bind_layers();
  for (auto& layer : layers_) layer->reset_state(state_.data());
}

void Network::bind_layers() {
  const Buffers buffers{params_.data(), grads_.data(), state_.data(), exec_};
  for (auto& layer : layers_) layer->bind(buffers);
}

void Network::to(Device device) {
  if (device == exec_.device) return;
  const Exec exec = device == Device::CUDA ? Exec::gpu() : Exec::cpu();
  params_ = kernels::to_device(params_, device);
  grads_ = kernels::to_device(grads_, device);
  state_ = kernels::to_device(state_, device);
  exec_ = exec;
  for (auto& layer : layers_) layer->set_device(device);
  grad_ping_ = Tensor(kernels::Shape{0}, device);
  grad_pong_ = Tensor(kernels::Shape{0}, device);
  input_data_ = nullptr;
  bind_layers();
}

Network::~Network() = default;
Network::Network(Network&&) noexcept = default;
Network& Network::operator=(Network&&) noexcept = default;

void Network::initialize(std::uint64_t seed, std::uint64_t model_id) {
  if (exec_.cuda()) {
    // Drawn on the host (the same numbers as a CPU network), then copied to the device.
    to(Device::CPU);
    initialize(seed, model_id);
    to(Device::CUDA);
    return;
  }
  const kernels::CounterRng rng(seed, kernels::rng_stream(kernels::RngUse::Init, model_id));
  for (const ParamSegment& s : segments_) {
    float* p = params_.data() + s.offset;
    switch (s.init) {
      case ParamSegment::Init::Ones: std::fill_n(p, s.size, 1.0f); break;
      case ParamSegment::Init::Zeros: std::fill_n(p, s.size, 0.0f); break;
      case ParamSegment::Init::Uniform: {
        const float bound = 1.0f / std::sqrt(static_cast<float>(std::max<std::int64_t>(s.fan_in, 1)));
        for (std::int64_t i = 0; i < s.size; ++i)
          p[i] = (2.0f * rng.uniform(static_cast<std::uint64_t>(s.offset + i)) - 1.0f) * bound;
        break;
      }
    }
  }
  // Running statistics back to mean 0, variance 1.
  state_.zero();
  for (auto& layer : layers_) layer->reset_state(state_.data());
}

const Tensor& Network::forward(const float* x, int N, const Mode& mode) {
  batch_ = N;
  input_data_ = x;
  const float* h = x;
  for (auto& layer : layers_) {
    layer->forward(h, N, mode);
    h = layer->out.data();
  }
  return layers_.back()->out;
}

void Network::backward(const float* dlogits, const GradientsReady& ready) {
  if (!input_data_) throw std::logic_error("Network::backward called before forward");
  const float* g = dlogits;
  bool ping = false;  // the buffer the next gradient goes to: never the one g is read from
  for (std::size_t i = layers_.size(); i-- > 0;) {
    Layer& layer = *layers_[i];
    if (i > 0 && layer.gradient_passes_through()) continue;  // g is already this layer's input gradient
    const float* in = i == 0 ? input_data_ : layers_[i - 1]->out.data();
    float* gin = nullptr;
    if (i > 0) {
      Tensor& buf = ping ? grad_ping_ : grad_pong_;  // gradient between layers
      ping = !ping;
      buf.resize({static_cast<std::int64_t>(batch_) * layer.in_shape.features()});
      gin = buf.data();
    }
    layer.backward(in, g, gin, batch_);
    g = gin;
    if (ready && (layer.param_count > 0 || i == 0)) ready(layer_param_begin_[i]);
  }
}

bool Network::step_invariant() const {
  return std::none_of(genome_.blocks.begin(), genome_.blocks.end(),
                      [](const Block& b) { return b.kind == Block::Kind::Dropout && b.rate > 0.0f; });
}

std::string Network::summary() const {
  std::ostringstream out;
  for (const auto& layer : layers_) {
    const ActShape& s = layer->out_shape;
    out << "  " << layer->kind() << " -> ";
    if (s.spatial)
      out << s.C << "x" << s.H << "x" << s.W;
    else
      out << s.C;
    out << "  params " << layer->param_count << "\n";
  }
  out << "  total parameters " << params_.numel();
  return out.str();
}

}  // namespace rsi::models
