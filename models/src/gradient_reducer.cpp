// Bucketed gradient all-reduce for data-parallel training, overlapping the backward pass.
#include "rsi/models/gradient_reducer.h"

#include <algorithm>
#include <span>
#include <stdexcept>
#include <vector>

namespace rsi::models {

namespace {
void allreduce_buckets(collective::Communicator& group, float* data, std::int64_t n, std::int64_t bucket,
                       collective::ReduceOp op) {
  for (std::int64_t at = 0; at < n; at += bucket)
    group.allreduce(std::span<float>(data + at, static_cast<std::size_t>(std::min(bucket, n - at))), op);
}
}  // namespace

void allreduce_tensor(collective::Communicator& group, kernels::Tensor& t, collective::ReduceOp op,
                      std::int64_t bucket) {
  if (t.device() == kernels::Device::CPU) {
    allreduce_buckets(group, t.data(), t.numel(), bucket, op);
    return;
  }
  std::vector<float> host(static_cast<std::size_t>(t.numel()));
  kernels::copy_floats(host.data(), kernels::Device::CPU, t.data(), t.device(), t.numel());
  allreduce_buckets(group, host.data(), t.numel(), bucket, op);
  kernels::copy_floats(t.data(), t.device(), host.data(), kernels::Device::CPU, t.numel());
}

GradientReducer::GradientReducer(collective::Communicator& group, Network& net, std::int64_t bucket_floats)
    : group_(group), net_(net), bucket_(bucket_floats), size_(net.parameter_count()) {
  if (bucket_ <= 0) throw std::invalid_argument("GradientReducer: the bucket size must be positive");
  buckets_ = (size_ + bucket_ - 1) / bucket_;
  next_ = buckets_;
  if (net.device() == kernels::Device::CPU) {
    path_ = Path::Host;
  } else if (group.supports_device_buffers()) {
    path_ = Path::Device;
    side_ = std::make_unique<kernels::cuda::SideStream>(*net.exec().ctx);
  } else {
    path_ = Path::Staged;
  }
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::begin() { next_ = buckets_; }

Network::GradientsReady GradientReducer::hook() {
  if (path_ == Path::Staged) return {};
  return [this](std::int64_t from) { ready(from); };
}

void GradientReducer::ready(std::int64_t from) {
  if (path_ == Path::Staged) return;
  // Bucket k is final once k·bucket >= from; the side stream must first catch up with the backward
  // pass queued so far (one event for all the buckets this call issues).
  if (next_ == 0 || (next_ - 1) * bucket_ < from) return;
  if (side_) side_->follow_main();
  while (next_ > 0 && (next_ - 1) * bucket_ >= from) {
    issue(--next_);
    if (from > 0) ++issued_early_;  // lower layers' backward still to come: this one overlaps it
  }
}

void GradientReducer::issue(std::int64_t k) {
  float* at = net_.gradients().data() + k * bucket_;
  const std::size_t count = static_cast<std::size_t>(std::min(bucket_, size_ - k * bucket_));
  if (side_)
    group_.allreduce_async(at, count, collective::ReduceOp::Sum, side_->stream());
  else
    group_.allreduce(std::span<float>(at, count), collective::ReduceOp::Sum);
  ++issued_;
}

void GradientReducer::finish() {
  if (path_ == Path::Staged) {
    allreduce_tensor(group_, net_.gradients(), collective::ReduceOp::Sum, bucket_);
    issued_ += buckets_;
    return;
  }
  ready(0);
  if (side_) side_->join_main();
}

}  // namespace rsi::models
