// Network and trainer tests: whole-network gradients against finite differences, flat parameter
// layout, determinism of initialisation and training, and that training learns.
#include <gtest/gtest.h>

#include "blocks.h"

#include <cmath>
#include <cstring>
#include <map>

#include "rsi/kernels/ops.h"
#include "rsi/models/network.h"
#include "rsi/models/trainer.h"

using namespace rsi;
using models::Block;

using namespace rsi::test_blocks;

namespace {

const models::InputSpec kSmall{1, 8, 8, 3};

// Mean cross-entropy of a training-mode forward pass (dropout-free genomes only).
double loss_of(models::Network& net, const std::vector<float>& x, const std::vector<std::int32_t>& y, int N) {
  const auto& logits = net.forward(x.data(), N, {true, 1, 0, 0});
  return kernels::softmax_cross_entropy(logits.data(), y.data(), N, net.input().classes, nullptr);
}

std::vector<float> random_inputs(int N, int pixels, std::uint64_t seed) {
  const kernels::CounterRng rng(seed, 77);
  std::vector<float> x(static_cast<std::size_t>(N) * pixels);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = rng.uniform(i);
  return x;
}

}  // namespace

TEST(Network, GradientsMatchFiniteDifferencesThroughEveryBlockKind) {
  models::Network net(every_block_genome(), kSmall);
  net.initialize(3, 1);
  // Give the zero-initialised residual gamma a value so its branch contributes.
  for (auto& s : net.segments())
    if (s.name.find("bn2.gamma") != std::string::npos)
      for (std::int64_t i = 0; i < s.size; ++i) net.parameters()[s.offset + i] = 0.5f;
  const int N = 5;
  const auto x = random_inputs(N, 64, 9);
  const std::vector<std::int32_t> y = {0, 2, 1, 1, 0};

  const auto& logits = net.forward(x.data(), N, {true, 1, 0, 0});
  std::vector<float> dlogits(static_cast<std::size_t>(N) * 3, 0.0f);
  kernels::softmax_cross_entropy(logits.data(), y.data(), N, 3, dlogits.data());
  net.backward(dlogits.data());
  const std::vector<float> grads(net.gradients().data(), net.gradients().data() + net.parameter_count());

  int checked = 0, skipped = 0;
  for (const auto& seg : net.segments()) {
    for (std::int64_t j = 0; j < std::min<std::int64_t>(seg.size, 4); ++j) {
      const std::int64_t i = seg.offset + (j * 7919) % seg.size;
      float& p = net.parameters()[i];
      const float saved = p, h = 1e-3f;  // small: ReLU and max-pool kinks are close after batch norm
      const double centre = loss_of(net, x, y, N);
      p = saved + h;
      const double up = loss_of(net, x, y, N);
      p = saved - h;
      const double down = loss_of(net, x, y, N);
      p = saved;
      // ReLU and max-pool kinks sit close to the batch-norm output: where the one-sided slopes
      // disagree the loss is not differentiable inside ±h, and the point is skipped.
      const double right = (up - centre) / h, left = (centre - down) / h;
      if (std::abs(right - left) > 1e-3 + 0.01 * (std::abs(right) + std::abs(left))) {
        ++skipped;
        continue;
      }
      const double numeric = (up - down) / (2.0 * h);
      EXPECT_NEAR(grads[i], numeric, 2e-3 + 3e-2 * std::abs(numeric)) << seg.name << " element " << i - seg.offset;
      ++checked;
    }
  }
  EXPECT_GT(checked, 40);
  EXPECT_LT(skipped, checked / 4);
}

TEST(Network, FlatBufferHoldsEveryParameterOnce) {
  models::Network net(every_block_genome(), kSmall);
  std::int64_t expected = 0;
  for (const auto& s : net.segments()) {
    EXPECT_EQ(s.offset, expected) << s.name;
    expected += s.size;
  }
  EXPECT_EQ(expected, net.parameter_count());
  EXPECT_EQ(net.parameter_count(), models::validate(every_block_genome(), kSmall).parameters);
  EXPECT_EQ(net.gradients().numel(), net.parameter_count());
  EXPECT_GT(net.state().numel(), 0);  // batch-norm running statistics
}

TEST(Network, StepInvariantUnlessDropoutDrawsPerStep) {
  EXPECT_TRUE(models::Network(every_block_genome(), kSmall).step_invariant());
  models::Genome g = every_block_genome();
  g.blocks.insert(g.blocks.end() - 1, dropout(0.3f));
  EXPECT_FALSE(models::Network(g, kSmall).step_invariant()) << "dropout masks are drawn per step";
  g.blocks[g.blocks.size() - 2].rate = 0.0f;
  EXPECT_TRUE(models::Network(g, kSmall).step_invariant()) << "a dropout of rate 0 draws nothing";
}

TEST(Network, InitialisationIsAPureFunctionOfSeedAndModelId) {
  models::Network a(every_block_genome(), kSmall), b(every_block_genome(), kSmall), c(every_block_genome(), kSmall);
  a.initialize(5, 2);
  b.initialize(5, 2);
  c.initialize(5, 3);
  const auto bytes = static_cast<std::size_t>(a.parameter_count()) * sizeof(float);
  EXPECT_EQ(0, std::memcmp(a.parameters().data(), b.parameters().data(), bytes));
  EXPECT_NE(0, std::memcmp(a.parameters().data(), c.parameters().data(), bytes));
}

TEST(Network, ResidualBlockStartsAsTheIdentity) {
  models::Genome with, without;
  without.blocks = {conv(4), act(kernels::Activation::ReLU), dense(3)};
  with.blocks = {conv(4), act(kernels::Activation::ReLU), residual(3), dense(3)};
  models::Network a(without, kSmall), b(with, kSmall);
  a.initialize(1, 1);
  b.initialize(1, 1);
  // Copy the shared conv and dense weights into the residual network.
  auto find = [](const models::Network& n, const std::string& name) {
    for (const auto& s : n.segments())
      if (s.name == name) return s;
    throw std::runtime_error("no segment " + name);
  };
  auto copy = [&](const std::string& from, const std::string& to) {
    const auto s = find(a, from), d = find(b, to);
    ASSERT_EQ(s.size, d.size);
    std::copy_n(a.parameters().data() + s.offset, s.size, b.parameters().data() + d.offset);
  };
  copy("block0.conv.weight", "block0.conv.weight");
  copy("block0.conv.bias", "block0.conv.bias");
  copy("block2.dense.weight", "block3.dense.weight");
  copy("block2.dense.bias", "block3.dense.bias");
  const auto x = random_inputs(4, 64, 2);
  std::vector<float> out_a(12);
  const auto& la = a.forward(x.data(), 4, {});
  std::copy_n(la.data(), 12, out_a.data());
  const auto& lb = b.forward(x.data(), 4, {});
  for (int i = 0; i < 12; ++i) EXPECT_FLOAT_EQ(out_a[i], lb[i]);
}

namespace {
// A small separable problem: class = which third of the image is brightest.
models::Dataset stripes(int count, std::uint64_t seed) {
  models::Dataset d;
  d.rows = 8, d.cols = 8;
  const kernels::CounterRng rng(seed, 5);
  for (int i = 0; i < count; ++i) {
    const int label = static_cast<int>(rng.below(static_cast<std::uint64_t>(i) * 100, 3));
    d.labels.push_back(label);
    for (int p = 0; p < 64; ++p) {
      const int third = std::min(2, (p % 8) * 3 / 8);
      d.images.push_back(0.3f * rng.uniform(static_cast<std::uint64_t>(i) * 100 + 1 + p) + (third == label ? 0.7f : 0.0f));
    }
  }
  return d;
}
}  // namespace

TEST(Trainer, LearnsASeparableProblem) {
  models::Genome g;
  g.blocks = {conv(4), act(kernels::Activation::ReLU), pool(Block::PoolKind::Max), dense(16),
              act(kernels::Activation::ReLU), dense(3)};
  g.recipe.batch_size = 32;
  g.recipe.epochs = 4;
  g.recipe.learning_rate = 3e-3f;
  const auto train_set = stripes(512, 1), test_set = stripes(256, 2);
  models::Network net(g, kSmall);
  net.initialize(0, 0);
  const double before = models::evaluate(net, test_set).accuracy;
  models::TrainOptions opt;
  const auto result = models::train(net, train_set, opt);
  const auto after = models::evaluate(net, test_set);
  EXPECT_FALSE(result.diverged);
  EXPECT_EQ(result.samples, 4 * 512);
  EXPECT_GT(after.accuracy, 0.95) << "before training: " << before;
  ASSERT_EQ(after.per_class.size(), 3u);
  for (double c : after.per_class) EXPECT_GT(c, 0.9);
}

TEST(Trainer, SameSeedGivesBitwiseIdenticalWeights) {
  models::Genome g = every_block_genome();
  Block drop;
  drop.kind = Block::Kind::Dropout, drop.rate = 0.3f;
  g.blocks.insert(g.blocks.end() - 1, drop);
  g.recipe.batch_size = 16;
  g.recipe.epochs = 2;
  g.recipe.augmentation = {1, true};
  const auto data = stripes(100, 3);
  auto run = [&](std::uint64_t seed, int threads) {
    kernels::set_num_threads(threads);
    models::Network net(g, kSmall);
    net.initialize(seed, 4);
    models::TrainOptions opt;
    opt.seed = seed;
    opt.model_id = 4;
    models::train(net, data, opt);
    kernels::set_num_threads(0);
    return std::vector<float>(net.parameters().data(), net.parameters().data() + net.parameter_count());
  };
  const auto a = run(11, 1), b = run(11, 1), c = run(12, 1), d = run(11, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(a, d) << "training must not depend on the thread count";
}

// Multi-fidelity rungs with design.rungs.continue_schedule: a training split over two calls, the
// second going on from the first's steps and epochs under one schedule, is the training one call
// does (bit for bit with an optimizer that keeps no state; with one, see the next test).
TEST(Trainer, ATrainingContinuedInASecondCallIsTheOneCallTraining) {
  models::Genome g = every_block_genome();
  Block drop;
  drop.kind = Block::Kind::Dropout, drop.rate = 0.3f;
  g.blocks.insert(g.blocks.end() - 1, drop);
  g.recipe.optimizer = models::Recipe::Optimizer::Sgd;
  g.recipe.momentum = 0.0f;
  g.recipe.learning_rate = 0.05f;
  g.recipe.schedule = models::Recipe::Schedule::Cosine;
  g.recipe.warmup = 0.1f;
  g.recipe.batch_size = 16;
  g.recipe.epochs = 3;
  g.recipe.distill_epochs = 1;
  g.recipe.augmentation = {1, true};
  const auto data = stripes(100, 3), pool = stripes(40, 9);
  const auto teacher = [](const float* x, int N, float* logits) {
    for (int i = 0; i < N * 3; ++i) logits[i] = x[i % 64];
  };
  const auto options = [&](bool with_teacher) {
    models::TrainOptions opt;
    opt.seed = 5;
    opt.model_id = 7;
    if (with_teacher) opt.teacher = teacher, opt.unlabeled = &pool;
    return opt;
  };
  const auto weights = [](const models::Network& n) {
    return std::vector<float>(n.parameters().data(), n.parameters().data() + n.parameter_count());
  };
  models::Network whole(g, kSmall);
  whole.initialize(5, 7);
  const auto one_call = models::train(whole, data, options(true));

  const std::int64_t all = models::planned_steps(g.recipe, data.size(), pool.size(), true, 3);
  ASSERT_EQ(all, one_call.steps);
  models::Network split(g, kSmall);
  split.initialize(5, 7);
  models::TrainOptions first = options(true);
  first.epochs = 1;
  first.schedule_steps = all;
  const auto rung1 = models::train(split, data, first);
  EXPECT_EQ(rung1.steps, models::planned_steps(g.recipe, data.size(), pool.size(), true, 1));
  EXPECT_NE(weights(split), weights(whole));
  models::TrainOptions second = options(false);  // no teacher: it distilled in its first rung
  second.epochs = 2;
  second.steps_before = rung1.steps;
  second.epochs_before = 2;  // the distillation epoch and the first fine-tune epoch
  second.schedule_steps = all;
  const auto rung2 = models::train(split, data, second);
  EXPECT_EQ(rung1.steps + rung2.steps, all);
  EXPECT_EQ(weights(split), weights(whole));
  EXPECT_DOUBLE_EQ(rung2.epochs.front().learning_rate, one_call.epochs[2].learning_rate);
}

// design.rungs.keep_optimizer: with the optimizer state carried from the first call to the second,
// a split training is the one-call training bit for bit also with Adam (moments and bias correction
// go on) and with SGD momentum; a state that does not fit the network is a clear error.
TEST(Trainer, AnOptimizerStateCarriedToASecondCallContinuesTheOneCallTraining) {
  for (const auto optimizer : {models::Recipe::Optimizer::Adam, models::Recipe::Optimizer::Sgd}) {
    SCOPED_TRACE(optimizer == models::Recipe::Optimizer::Adam ? "adam" : "sgd with momentum");
    models::Genome g = every_block_genome();
    g.recipe.optimizer = optimizer;
    g.recipe.momentum = 0.9f;
    g.recipe.learning_rate = optimizer == models::Recipe::Optimizer::Adam ? 0.003f : 0.05f;
    g.recipe.schedule = models::Recipe::Schedule::Cosine;
    g.recipe.batch_size = 16;
    g.recipe.epochs = 3;
    g.recipe.augmentation = {1, true};
    const auto data = stripes(100, 3);
    const auto weights = [](const models::Network& n) {
      return std::vector<float>(n.parameters().data(), n.parameters().data() + n.parameter_count());
    };
    models::TrainOptions base;
    base.seed = 5;
    base.model_id = 7;
    models::Network whole(g, kSmall);
    whole.initialize(5, 7);
    const auto one_call = models::train(whole, data, base);

    const std::int64_t all = models::planned_steps(g.recipe, data.size(), 0, false, 3);
    const auto split_training = [&](bool carry) {
      models::Network split(g, kSmall);
      split.initialize(5, 7);
      models::TrainOptions first = base;
      first.epochs = 1;
      first.schedule_steps = all;
      first.keep_optimizer = carry;
      const auto rung1 = models::train(split, data, first);
      EXPECT_EQ(rung1.optimizer.has_value(), carry);
      if (carry) {
        EXPECT_EQ(rung1.optimizer->steps, rung1.steps);
        EXPECT_EQ(rung1.optimizer->second.empty(), optimizer == models::Recipe::Optimizer::Sgd);
      }
      models::TrainOptions second = base;
      second.epochs = 2;
      second.steps_before = rung1.steps;
      second.epochs_before = 1;
      second.schedule_steps = all;
      if (carry) second.start_optimizer = &*rung1.optimizer;
      models::train(split, data, second);
      return weights(split);
    };
    EXPECT_EQ(split_training(true), weights(whole));
    EXPECT_NE(split_training(false), weights(whole)) << "fresh moments in the second call change the training";
  }
  models::Genome g = every_block_genome();
  models::Network net(g, kSmall);
  net.initialize(0, 0);
  models::OptimizerState wrong;
  wrong.first.assign(3, 0.0f);
  wrong.steps = 1;
  models::TrainOptions opt;
  opt.start_optimizer = &wrong;
  EXPECT_THROW(
      {
        try {
          models::train(net, stripes(32, 3), opt);
        } catch (const std::invalid_argument& e) {
          EXPECT_NE(std::string(e.what()).find("optimizer state holds 3"), std::string::npos) << e.what();
          throw;
        }
      },
      std::invalid_argument);
}

// Recipe::weight_average: the weights a training returns are the bias-corrected exponential moving
// average of its iterates (norm statistics included), which the test follows step by step (on_step
// after every optimizer step) and averages itself in double precision. Without it, the last iterate.
TEST(Trainer, WeightAverageReturnsTheBiasCorrectedMovingAverageOfTheIterates) {
  models::Genome g = every_block_genome();
  g.recipe.learning_rate = 0.003f;
  g.recipe.batch_size = 16;
  g.recipe.epochs = 2;
  g.recipe.augmentation = {1, true};
  const auto data = stripes(100, 3);
  for (const float decay : {0.0f, 0.9f}) {
    SCOPED_TRACE(decay);
    g.recipe.weight_average = decay;
    models::Network net(g, kSmall);
    net.initialize(5, 7);
    ASSERT_GT(net.state().numel(), 0) << "the genome has a batch norm: its statistics are averaged too";
    const auto values = [](const kernels::Tensor& t) { return std::vector<float>(t.data(), t.data() + t.numel()); };
    std::vector<double> params(static_cast<std::size_t>(net.parameter_count())), state(net.state().numel());
    std::vector<float> last_params;
    std::int64_t t = 0;
    models::TrainOptions o;
    o.seed = 5;
    o.model_id = 7;
    o.progress_every = 1;
    o.on_step = [&](std::int64_t, std::int64_t) {
      ++t;
      const double d = decay;
      const double w = (1.0 - d) / (1.0 - std::pow(d, static_cast<double>(t)));  // 1 at t = 1, and for d = 0
      const auto now_p = values(net.parameters()), now_s = values(net.state());
      for (std::size_t i = 0; i < params.size(); ++i) params[i] += w * (now_p[i] - params[i]);
      for (std::size_t i = 0; i < state.size(); ++i) state[i] += w * (now_s[i] - state[i]);
      last_params = now_p;
    };
    const auto result = models::train(net, data, o);
    ASSERT_FALSE(result.diverged);
    EXPECT_EQ(t, result.steps);
    const auto got_p = values(net.parameters()), got_s = values(net.state());
    if (decay == 0.0f) {
      EXPECT_EQ(got_p, last_params) << "no averaging: the last iterate";
      continue;
    }
    EXPECT_NE(got_p, last_params) << "the average is not the last iterate";
    for (std::size_t i = 0; i < params.size(); ++i)
      ASSERT_NEAR(got_p[i], params[i], 1e-5 * (1.0 + std::abs(params[i]))) << "parameter " << i;
    for (std::size_t i = 0; i < state.size(); ++i)
      ASSERT_NEAR(got_s[i], state[i], 1e-5 * (1.0 + std::abs(state[i]))) << "norm statistic " << i;
  }
}

TEST(Trainer, DivergenceIsReportedNotThrown) {
  models::Genome g;
  g.blocks = {dense(8), act(kernels::Activation::ReLU), dense(3)};
  g.recipe.learning_rate = 1e30f;
  g.recipe.batch_size = 8;
  g.recipe.epochs = 3;
  models::Network net(g, kSmall);
  net.initialize(0, 0);
  const auto result = models::train(net, stripes(64, 4), {});
  EXPECT_TRUE(result.diverged);
}

TEST(Trainer, DistillationPullsTheStudentTowardsTheTeacher) {
  models::Genome g;
  g.blocks = {dense(16), act(kernels::Activation::ReLU), dense(3)};
  g.recipe.batch_size = 32;
  g.recipe.epochs = 0;          // no fine-tuning phase after the distillation
  g.recipe.distill_epochs = 3;
  g.recipe.distill_mix = 1.0f;  // pure distillation: labels are ignored
  g.recipe.distill_temperature = 2.0f;
  const auto data = stripes(256, 6);
  // A teacher that always answers "class 2".
  models::TrainOptions opt;
  opt.teacher = [](const float*, int N, float* logits) {
    for (int i = 0; i < N; ++i) logits[i * 3] = 0.0f, logits[i * 3 + 1] = 0.0f, logits[i * 3 + 2] = 8.0f;
  };
  models::Network net(g, kSmall);
  net.initialize(0, 0);
  models::train(net, data, opt);
  const auto e = models::evaluate(net, data);
  EXPECT_GT(e.per_class[2], 0.99);
  EXPECT_LT(e.per_class[0], 0.05);
}

// The named-tensor table (checkpoints/FORMAT.md, "Named tensors") tiles both flat buffers exactly,
// in order, with the shapes a reader rebuilds the network from.
TEST(Network, NamedTensorsTileTheFlatBuffersWithTheirShapes) {
  const models::Genome genome = every_block_genome();
  const models::Network net(genome, kSmall);
  const auto tensors = models::named_tensors(genome, kSmall);
  std::int64_t params = 0, state = 0;
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& t : tensors) {
    std::int64_t n = 1;
    for (std::int64_t d : t.shape) n *= d;
    std::int64_t& next = t.in_state ? state : params;
    EXPECT_EQ(t.offset, next) << t.name;
    next += n;
    shapes[t.name] = t.shape;
  }
  EXPECT_EQ(params, net.parameter_count());
  EXPECT_EQ(state, net.state().numel());
  using S = std::vector<std::int64_t>;
  EXPECT_EQ(shapes.at("block0.conv.weight"), (S{4, 1, 3, 3}));  // OIHW
  EXPECT_EQ(shapes.at("block0.conv.bias"), (S{4}));
  EXPECT_EQ(shapes.at("block1.batchnorm.gamma"), (S{4}));
  EXPECT_EQ(shapes.at("block1.batchnorm.running_var"), (S{4}));
  EXPECT_EQ(shapes.at("block3.residual.conv2.weight"), (S{4, 4, 3, 3}));
  EXPECT_EQ(shapes.at("block3.residual.bn2.running_mean"), (S{4}));
  EXPECT_EQ(shapes.at("block5.conv.weight"), (S{5, 4, 1, 1}));
  EXPECT_EQ(shapes.at("block8.dense.weight"), (S{7, 5 * 2 * 2}));  // [out][in], in = C*H*W of the flatten
  EXPECT_EQ(shapes.at("block9.batchnorm.beta"), (S{7}));
  EXPECT_EQ(shapes.at("block11.dense.bias"), (S{3}));
  const std::string text = models::tensor_table_text(tensors);
  EXPECT_EQ(text.substr(0, text.find('\n')), "block0.conv.weight params 0 4,1,3,3");
  EXPECT_NE(text.find("\nblock1.batchnorm.running_var state 4 4\n"), std::string::npos) << text;
}
