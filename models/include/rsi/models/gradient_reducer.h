// rsi::models::GradientReducer — sums a network's gradients over a data-parallel trainer group in
// fixed buckets, each as soon as the backward pass has finished it (Network::backward's `ready`
// hook), so the all-reduce of the top layers overlaps the backward pass of the lower ones.
#pragma once

#include <cstdint>
#include <memory>

#include "rsi/collective/communicator.h"
#include "rsi/kernels/cuda.h"
#include "rsi/kernels/tensor.h"
#include "rsi/models/network.h"

namespace rsi::models {

// An all-reduce over a tensor in any device's memory through a host-memory collective: a GPU
// tensor is staged through the host. `bucket` floats per call.
void allreduce_tensor(collective::Communicator& group, kernels::Tensor& t, collective::ReduceOp op,
                      std::int64_t bucket);

// Bucket k covers gradients [k·bucket, min((k+1)·bucket, P)): the boundaries depend on the bucket size
// alone (not on the layers), so every rank reduces the same buckets and a lineage does not change
// with the network's layer structure. Buckets are issued top-down, each once per step.
class GradientReducer {
 public:
  enum class Path {
    Host,    // the network is in host memory: a blocking all-reduce per bucket as it becomes final
    Device,  // GPU memory and a device collective (NCCL): each bucket is queued on a side stream
             // that waits (by event) for the backward pass up to that bucket, and the network's
             // stream waits for the side stream before the optimizer step; the host never blocks
    Staged,  // GPU memory and a host-only collective: staged through the host after backward
  };
  GradientReducer(collective::Communicator& group, Network& net, std::int64_t bucket_floats);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  Path path() const { return path_; }
  std::int64_t buckets() const { return buckets_; }

  // One step: begin(), then net.backward(dlogits, hook()), then finish(). With no backward (a rank
  // with no rows this step: its gradients are zeroed) begin() and finish() alone.
  void begin();
  Network::GradientsReady hook();
  // Gradients [from, P) are final: issues every bucket that lies wholly inside and was not issued.
  void ready(std::int64_t from);
  // Issues what is left; after it the gradients hold the group's sums (Device: for work queued on
  // the network's stream from now on).
  void finish();

  // Buckets issued while layers below them still had their backward pass to run (the overlap),
  // and all buckets issued, over all steps so far.
  std::int64_t issued_early() const { return issued_early_; }
  std::int64_t issued() const { return issued_; }

 private:
  void issue(std::int64_t bucket);

  collective::Communicator& group_;
  Network& net_;
  std::int64_t bucket_, size_, buckets_;
  Path path_;
  std::unique_ptr<kernels::cuda::SideStream> side_;
  std::int64_t next_ = 0;  // buckets [next_, buckets_) are issued this step
  std::int64_t issued_early_ = 0, issued_ = 0;
};

}  // namespace rsi::models
