// Network construction from a genome, initialisation, forward and backward passes.
#include "rsi/models/network.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>

#include "rsi/kernels/ops.h"
#include "rsi/kernels/rng.h"

namespace rsi::models {

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
  std::int64_t add_param(std::string name, std::int64_t size, bool decay, std::int64_t fan_in,
                         ParamSegment::Init init = ParamSegment::Init::Uniform) {
    params.push_back({std::move(name), param_size, size, decay, fan_in, init});
    param_size += size;
    return param_size - size;
  }
  std::int64_t add_state(std::string name, std::int64_t size) {
    states.push_back({std::move(name), state_size, size, false, 0, ParamSegment::Init::Zeros});
    state_size += size;
    return state_size - size;
  }
};

struct Buffers {
  float* params;
  float* grads;
  float* state;
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual void bind(const Buffers&) {}
  // x holds N samples of in_shape; writes out.
  virtual void forward(const float* x, int N, const Network::Mode& mode) = 0;
  // dy: gradient of out; dx (may be null): gradient of x. Overwrites parameter gradients.
  virtual void backward(const float* x, const float* dy, float* dx, int N) = 0;
  virtual std::string kind() const = 0;

  ActShape in_shape, out_shape;
  std::int64_t param_count = 0;
  Tensor out;

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
    w_ = r.add_param(name + ".weight", static_cast<std::int64_t>(units) * inputs_, true, inputs_);
    b_ = r.add_param(name + ".bias", units, false, inputs_);
    param_count = static_cast<std::int64_t>(units) * inputs_ + units;
  }
  void bind(const Buffers& b) override { buf_ = b; }
  void forward(const float* x, int N, const Network::Mode&) override {
    prepare_out(N);
    kernels::linear_forward(x, buf_.params + w_, buf_.params + b_, out.data(), N, inputs_, units_);
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    kernels::linear_backward(x, buf_.params + w_, dy, dx, buf_.grads + w_, buf_.grads + b_, N, inputs_, units_);
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
    w_ = r.add_param(name + ".weight", channels * fan_in, true, fan_in);
    b_ = r.add_param(name + ".bias", channels, false, fan_in);
    param_count = channels * fan_in + channels;
  }
  void bind(const Buffers& b) override { buf_ = b; }
  void forward(const float* x, int N, const Network::Mode&) override {
    shape_.N = N;
    prepare_out(N);
    col_.resize({std::max<std::int64_t>(shape_.col_size(), 1)});
    kernels::conv2d_forward(shape_, x, buf_.params + w_, buf_.params + b_, out.data(), col_.data());
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    shape_.N = N;
    kernels::conv2d_backward(shape_, x, buf_.params + w_, dy, dx, buf_.grads + w_, buf_.grads + b_, col_.data());
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
      argmax_.resize(static_cast<std::size_t>(out.numel()));
      kernels::maxpool2d_forward(shape_, x, out.data(), argmax_.data());
    } else {
      kernels::avgpool2d_forward(shape_, x, out.data());
    }
  }
  void backward(const float*, const float* dy, float* dx, int N) override {
    if (!dx) return;
    shape_.planes = static_cast<std::int64_t>(in_shape.C) * N;
    if (max_)
      kernels::maxpool2d_backward(shape_, dy, argmax_.data(), dx);
    else
      kernels::avgpool2d_backward(shape_, dy, dx);
  }
  std::string kind() const override { return std::string(max_ ? "maxpool(" : "avgpool(") + std::to_string(shape_.size) + ")"; }

 private:
  bool max_;
  kernels::Pool2dShape shape_;
  std::vector<std::int32_t> argmax_;
};

class ActivationLayer final : public Layer {
 public:
  ActivationLayer(ActShape in, kernels::Activation a) : act_(a) { in_shape = out_shape = in; }
  void forward(const float* x, int N, const Network::Mode&) override {
    prepare_out(N);
    kernels::activation_forward(act_, x, out.data(), out.numel());
  }
  void backward(const float* x, const float* dy, float* dx, int) override {
    if (dx) kernels::activation_backward(act_, x, out.data(), dy, dx, out.numel());
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
      std::copy_n(x, out.numel(), out.data());
      return;
    }
    mask_.resize({out.numel()});
    // Each element's draw is indexed by (layer, global row, feature), so a data-parallel shard
    // draws the same mask for its rows as one rank does for the whole batch.
    const kernels::CounterRng rng(mode.seed, kernels::rng_stream(kernels::RngUse::Dropout, mode.model_id), mode.step);
    const std::uint64_t base = index_ << 40;
    const std::int64_t features = in_shape.features();
    if (!in_shape.spatial) {
      kernels::dropout_forward(x, out.data(), mask_.data(), out.numel(), rate_, rng,
                               base + static_cast<std::uint64_t>(mode.row_offset * features));
      return;
    }
    const std::int64_t C = in_shape.C, HW = static_cast<std::int64_t>(in_shape.H) * in_shape.W;
    for (std::int64_t c = 0; c < C; ++c)
      for (std::int64_t n = 0; n < N; ++n) {
        const std::int64_t at = (c * N + n) * HW;
        kernels::dropout_forward(x + at, out.data() + at, mask_.data() + at, HW, rate_, rng,
                                 base + static_cast<std::uint64_t>(((mode.row_offset + n) * C + c) * HW));
      }
  }
  void backward(const float*, const float* dy, float* dx, int) override {
    if (!dx) return;
    if (train_)
      kernels::dropout_backward(dy, mask_.data(), dx, out.numel());
    else
      std::copy_n(dy, out.numel(), dx);
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
    gamma_ = r.add_param(name + ".gamma", channels_, false, 0,
                         zero_gamma ? ParamSegment::Init::Zeros : ParamSegment::Init::Ones);
    beta_ = r.add_param(name + ".beta", channels_, false, 0, ParamSegment::Init::Zeros);
    running_ = r.add_state(name + ".running_mean_var", 2 * channels_);
    param_count = 2 * channels_;
    save_.resize({2 * channels_});
  }
  void bind(const Buffers& b) override {
    buf_ = b;
    std::fill_n(buf_.state + running_ + channels_, channels_, 1.0f);  // running variance starts at 1
  }
  kernels::BatchNormShape shape(int N) const {
    if (in_shape.spatial) return {1, channels_, static_cast<std::int64_t>(N) * in_shape.H * in_shape.W};
    return {N, channels_, 1};
  }
  void forward(const float* x, int N, const Network::Mode& mode) override {
    prepare_out(N);
    float* running = buf_.state + running_;
    if (mode.train)
      kernels::batchnorm_forward_train(shape(N), x, buf_.params + gamma_, buf_.params + beta_, out.data(), save_.data(),
                                       save_.data() + channels_, running, running + channels_, kMomentum, kEps);
    else
      kernels::batchnorm_forward_eval(shape(N), x, buf_.params + gamma_, buf_.params + beta_, running,
                                      running + channels_, kEps, out.data());
  }
  void backward(const float* x, const float* dy, float* dx, int N) override {
    kernels::batchnorm_backward(shape(N), x, buf_.params + gamma_, save_.data(), save_.data() + channels_, dy, dx,
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
    kernels::cnhw_to_dense(x, out.data(), in_shape.C, N, in_shape.H * in_shape.W);
  }
  void backward(const float*, const float* dy, float* dx, int N) override {
    if (dx) kernels::dense_to_cnhw(dy, dx, in_shape.C, N, in_shape.H * in_shape.W);
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
    for (auto& p : parts_) p->bind(b);
  }
  void forward(const float* x, int N, const Network::Mode& mode) override {
    const float* h = x;
    for (auto& p : parts_) {
      p->forward(h, N, mode);
      h = p->out.data();
    }
    prepare_out(N);
    kernels::add(x, h, out.data(), out.numel());
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
    if (dx) kernels::add(dy, g, dx, n);
  }
  std::string kind() const override { return "residual(k" + std::to_string(kernel_) + ")"; }

 private:
  int kernel_;
  std::vector<std::unique_ptr<Layer>> parts_;
  Tensor grad_a_, grad_b_;
};

}  // namespace

Network::Network(const Genome& genome, const InputSpec& input) : genome_(genome), input_(input) {
  validate(genome_, input_);
  Registry registry;
  ActShape shape{true, input.channels, input.height, input.width};
  for (std::size_t i = 0; i < genome_.blocks.size(); ++i) {
    const Block& b = genome_.blocks[i];
    const std::string name = "block" + std::to_string(i);
    if (b.kind == Block::Kind::Dense && shape.spatial) {
      if (i == 0) {
        shape = {false, static_cast<int>(shape.features()), 1, 1};  // [N][H*W] input is already flat
      } else {
        layers_.push_back(std::make_unique<FlattenLayer>(shape));
        shape = layers_.back()->out_shape;
      }
    }
    switch (b.kind) {
      case Block::Kind::Dense: layers_.push_back(std::make_unique<DenseLayer>(registry, name + ".dense", shape, b.units)); break;
      case Block::Kind::Conv:
        layers_.push_back(std::make_unique<ConvLayer>(registry, name + ".conv", shape, b.channels, b.kernel, b.stride));
        break;
      case Block::Kind::Pool: layers_.push_back(std::make_unique<PoolLayer>(shape, b.pool_kind, b.size, b.stride)); break;
      case Block::Kind::Residual: layers_.push_back(std::make_unique<ResidualLayer>(registry, name + ".residual", shape, b.kernel)); break;
      case Block::Kind::Dropout: layers_.push_back(std::make_unique<DropoutLayer>(shape, b.rate, i)); break;
      case Block::Kind::BatchNorm: layers_.push_back(std::make_unique<BatchNormLayer>(registry, name + ".batchnorm", shape)); break;
      case Block::Kind::Activation: layers_.push_back(std::make_unique<ActivationLayer>(shape, b.activation)); break;
    }
    shape = layers_.back()->out_shape;
  }
  segments_ = std::move(registry.params);
  state_segments_ = std::move(registry.states);
  params_ = Tensor({registry.param_size});
  grads_ = Tensor({registry.param_size});
  state_ = Tensor({registry.state_size});
  const Buffers buffers{params_.data(), grads_.data(), state_.data()};
  for (auto& layer : layers_) layer->bind(buffers);
}

Network::~Network() = default;
Network::Network(Network&&) noexcept = default;
Network& Network::operator=(Network&&) noexcept = default;

void Network::initialize(std::uint64_t seed, std::uint64_t model_id) {
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
  const Buffers buffers{params_.data(), grads_.data(), state_.data()};
  state_.zero();
  for (auto& layer : layers_) layer->bind(buffers);
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

void Network::backward(const float* dlogits) {
  if (!input_data_) throw std::logic_error("Network::backward called before forward");
  const float* g = dlogits;
  for (std::size_t i = layers_.size(); i-- > 0;) {
    Layer& layer = *layers_[i];
    const float* in = i == 0 ? input_data_ : layers_[i - 1]->out.data();
    float* gin = nullptr;
    if (i > 0) {
      Tensor& buf = (i % 2 == 0) ? grad_ping_ : grad_pong_;  // gradient between layers
      buf.resize({static_cast<std::int64_t>(batch_) * layer.in_shape.features()});
      gin = buf.data();
    }
    layer.backward(in, g, gin, batch_);
    g = gin;
  }
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
