// The backward pass's "gradients are final from here up" hook and the bucketed gradient all-reduce
// that rides on it (rsi::models::GradientReducer): buckets are issued top-down, each once per step,
// only once final, most of them while lower layers still compute; training through a group gives
// the same weights whatever the bucket size.
#include <gtest/gtest.h>

#include "blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "rsi/collective/communicator.h"
#include "rsi/kernels/ops.h"
#include "rsi/models/gradient_reducer.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"

using namespace rsi;
using namespace rsi::test_blocks;
using models::Block;

namespace {

const models::InputSpec kSmall{1, 8, 8, 3};

std::vector<float> inputs(int N, std::uint64_t seed) {
  const kernels::CounterRng rng(seed, 5);
  std::vector<float> x(static_cast<std::size_t>(N) * 64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(i);
  return x;
}

// dlogits of the mean cross-entropy for a forward pass of N random inputs (labels i % 3).
std::vector<float> forward_for_backward(models::Network& net, int N) {
  static std::vector<float> x;
  x = inputs(N, 3);
  const auto& logits = net.forward(x.data(), N, {true, 1, 2, 0});
  std::vector<std::int32_t> y(static_cast<std::size_t>(N));
  for (int i = 0; i < N; ++i) y[static_cast<std::size_t>(i)] = i % 3;
  std::vector<float> d(static_cast<std::size_t>(N) * 3, 0.0f);
  kernels::softmax_cross_entropy(logits.data(), y.data(), N, 3, d.data());
  return d;
}

// The gradients of one plain backward pass (no hook): what every hooked pass must end with.
std::vector<float> final_gradients(models::Network& net, int N) {
  const std::vector<float> d = forward_for_backward(net, N);
  net.backward(d.data());
  return {net.gradients().data(), net.gradients().data() + net.parameter_count()};
}

// A group of two identical ranks, seen from rank 0: a float all-reduce doubles its data (exact in
// binary floating point) and is recorded with a copy of what it was given.
class RecordingGroup final : public collective::Communicator {
 public:
  explicit RecordingGroup(const float* base) : base_(base) {}
  struct Call {
    std::int64_t offset, count;
    std::vector<float> given;
  };
  std::vector<Call> calls;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const char* backend() const override { return "recording"; }
  void allreduce(std::span<float> data, collective::ReduceOp op) override {
    calls.push_back({data.data() - base_, static_cast<std::int64_t>(data.size()), {data.begin(), data.end()}});
    for (float& v : data) v = op == collective::ReduceOp::Sum ? 2.0f * v : v;
  }
  void allreduce(std::span<double> data, collective::ReduceOp op) override {
    for (double& v : data) v = op == collective::ReduceOp::Sum ? 2.0 * v : v;
  }
  void broadcast(std::span<std::byte>, int) override {}
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { throw std::logic_error("not used"); }
  std::unique_ptr<Communicator> split_by_node() override { throw std::logic_error("not used"); }
  [[noreturn]] void abort(int) override { throw std::logic_error("not used"); }
  void send(std::span<const std::byte>, int, int) override { throw std::logic_error("not used"); }
  std::optional<collective::Message> try_receive() override { return std::nullopt; }
  collective::Message receive(int, int) override { throw std::logic_error("not used"); }
  bool supports_device_buffers() const override { return false; }

 private:
  const float* base_;
};

}  // namespace

TEST(BackwardHook, ReportsFinalGradientsFromTheTopDown) {
  models::Network net(every_block_genome(), kSmall);
  net.initialize(7, 1);
  const int N = 6;
  const std::vector<float> final_grads = final_gradients(net, N);

  // Again with the hook (the same forward first): each call's range must already hold the final
  // values, calls must move down, and the last must cover everything.
  const std::vector<float> d = forward_for_backward(net, N);
  std::fill_n(net.gradients().data(), net.parameter_count(), std::nanf(""));  // stale values must not pass
  std::vector<std::int64_t> froms;
  bool all_final = true;
  net.backward(d.data(), [&](std::int64_t from) {
    froms.push_back(from);
    for (std::int64_t i = from; i < net.parameter_count(); ++i)
      all_final = all_final && net.gradients().data()[i] == final_grads[static_cast<std::size_t>(i)];
  });
  ASSERT_FALSE(froms.empty());
  EXPECT_TRUE(all_final) << "a range was reported before its gradients were final";
  EXPECT_TRUE(std::is_sorted(froms.rbegin(), froms.rend())) << "the ready offset must only move down";
  EXPECT_EQ(froms.back(), 0);
  EXPECT_LT(froms.front(), net.parameter_count());
  // Every layer with parameters reports its first one: the offsets are segment starts.
  for (std::int64_t f : froms)
    EXPECT_TRUE(std::any_of(net.segments().begin(), net.segments().end(),
                            [&](const models::ParamSegment& s) { return s.offset == f; }))
        << f << " is not the start of a parameter segment";
  EXPECT_GE(froms.size(), 6u) << "one call per layer with parameters";
}

TEST(GradientReducer, IssuesEachBucketOnceTopDownAsSoonAsItIsFinal) {
  models::Network net(every_block_genome(), kSmall);
  net.initialize(7, 1);
  const int N = 6;
  const std::vector<float> final_grads = final_gradients(net, N);

  const std::int64_t P = net.parameter_count(), bucket = 37;
  RecordingGroup group(net.gradients().data());
  models::GradientReducer reducer(group, net, bucket);
  EXPECT_EQ(reducer.path(), models::GradientReducer::Path::Host);
  EXPECT_EQ(reducer.buckets(), (P + bucket - 1) / bucket);
  for (int step = 0; step < 2; ++step) {
    group.calls.clear();
    const std::vector<float> d = forward_for_backward(net, N);
    reducer.begin();
    net.backward(d.data(), reducer.hook());
    reducer.finish();
    ASSERT_EQ(static_cast<std::int64_t>(group.calls.size()), reducer.buckets());
    for (std::size_t c = 0; c < group.calls.size(); ++c) {
      const std::int64_t k = reducer.buckets() - 1 - static_cast<std::int64_t>(c);  // top-down
      EXPECT_EQ(group.calls[c].offset, k * bucket);
      EXPECT_EQ(group.calls[c].count, std::min(bucket, P - k * bucket));
      // What the collective was given is the final gradient of its bucket.
      EXPECT_TRUE(std::equal(group.calls[c].given.begin(), group.calls[c].given.end(),
                             final_grads.begin() + k * bucket))
          << "bucket " << k << " was reduced before the backward pass had finished it";
    }
    // The sums are in place.
    for (std::int64_t i = 0; i < P; ++i)
      ASSERT_EQ(net.gradients().data()[i], 2.0f * final_grads[static_cast<std::size_t>(i)]) << i;
  }
  EXPECT_EQ(reducer.issued(), 2 * reducer.buckets());
  // The first layer (a 4-channel conv) holds 40 of the parameters: every bucket above it was issued
  // while lower layers were still to run.
  EXPECT_GT(reducer.issued_early(), reducer.issued() / 2);
}

TEST(GradientReducer, ARankWithNoRowsIssuesTheSameBucketsInTheSameOrder) {
  models::Network net(every_block_genome(), kSmall);
  net.initialize(7, 1);
  RecordingGroup group(net.gradients().data());
  models::GradientReducer reducer(group, net, 50);
  reducer.begin();
  net.gradients().zero();  // what train() does for an empty shard: no backward
  reducer.finish();
  ASSERT_EQ(static_cast<std::int64_t>(group.calls.size()), reducer.buckets());
  for (std::size_t c = 1; c < group.calls.size(); ++c) EXPECT_LT(group.calls[c].offset, group.calls[c - 1].offset);
  EXPECT_EQ(reducer.issued_early(), 0);
}

TEST(GradientReducer, RejectsABucketSizeOfZero) {
  models::Network net(every_block_genome(), kSmall);
  RecordingGroup group(net.gradients().data());
  EXPECT_THROW(models::GradientReducer(group, net, 0), std::invalid_argument);
}

TEST(Trainer, ReportsBucketsReducedAndOverlappedThroughAGroup) {
  models::Genome g = every_block_genome();
  g.recipe.batch_size = 10;
  g.recipe.epochs = 1;
  models::Dataset data;
  data.rows = data.cols = 8;
  data.images = inputs(30, 9);
  for (int i = 0; i < 30; ++i) data.labels.push_back(i % 3);
  models::Network net(g, kSmall);
  net.initialize(3, 1);
  RecordingGroup group(net.gradients().data());
  models::TrainOptions o;
  o.group = &group;
  o.bucket_floats = 64;
  const models::TrainResult r = models::train(net, data, o);
  const std::int64_t buckets = (net.parameter_count() + 63) / 64;
  EXPECT_EQ(r.steps, 3);
  EXPECT_EQ(r.buckets_reduced, 3 * buckets);
  EXPECT_GT(r.buckets_overlapped, 0);
  EXPECT_LT(r.buckets_overlapped, r.buckets_reduced);
}
