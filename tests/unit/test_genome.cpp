// Unit tests of rsi::models::Genome: canonical YAML round trips, the shipped genomes in
// experiments/genomes/, parameter and FLOP counts, and every error from_yaml and validate give.
//   cmake --build build --target test_genome && build/tests/test_genome
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <regex>
#include <sstream>
#include <string>

#include "rsi/models/genome.h"
#include "rsi/models/trainer.h"

namespace rsi::models {
namespace {

const std::string kGenomeDir = std::string(RSI_SOURCE_DIR) + "/experiments/genomes/";

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::ostringstream text;
  text << file.rdbuf();
  return text.str();
}

// The message of the GenomeError `action` throws; a test failure (and "") when it throws nothing.
std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const GenomeError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a GenomeError, none was thrown";
  return "";
}

std::string parse_error(const std::string& text) {
  return error_of([&] { from_yaml(text, "t.yaml"); });
}

std::string validate_error(const Genome& genome, const InputSpec& input = {}, const GenomeLimits& limits = {}) {
  return error_of([&] { validate(genome, input, limits); });
}

Block conv(int channels, int kernel = 3, int stride = 1) {
  Block block;
  block.kind = Block::Kind::Conv;
  block.channels = channels;
  block.kernel = kernel;
  block.stride = stride;
  return block;
}
Block pool(int size, int stride, Block::PoolKind kind = Block::PoolKind::Max) {
  Block block;
  block.kind = Block::Kind::Pool;
  block.size = size;
  block.stride = stride;
  block.pool_kind = kind;
  return block;
}
Block residual(int kernel) {
  Block block;
  block.kind = Block::Kind::Residual;
  block.kernel = kernel;
  return block;
}
Block dense(int units) {
  Block block;
  block.kind = Block::Kind::Dense;
  block.units = units;
  return block;
}
Block dropout(float rate) {
  Block block;
  block.kind = Block::Kind::Dropout;
  block.rate = rate;
  return block;
}
Block batchnorm() {
  Block block;
  block.kind = Block::Kind::BatchNorm;
  return block;
}
Block activation(kernels::Activation function) {
  Block block;
  block.kind = Block::Kind::Activation;
  block.activation = function;
  return block;
}

Genome mlp_genome() {
  Genome genome;
  genome.blocks = {dense(256), activation(kernels::Activation::ReLU), dense(128), activation(kernels::Activation::ReLU),
                   dense(10)};
  genome.recipe.learning_rate = 0.003f;  // the shipped MLP trains with lr 0.003 and a cosine schedule
  genome.recipe.schedule = Recipe::Schedule::Cosine;
  return genome;
}

// Every block kind, every enum away from its default, floats with no short decimal form.
Genome every_kind_genome() {
  Genome genome;
  genome.blocks = {conv(8, 5, 2),
                   batchnorm(),
                   activation(kernels::Activation::GELU),
                   residual(1),
                   pool(3, 3, Block::PoolKind::Avg),
                   dropout(0.1f),
                   dense(32),
                   activation(kernels::Activation::Tanh),
                   batchnorm(),
                   dropout(1.0f / 3),
                   dense(10)};
  Recipe& recipe = genome.recipe;
  recipe.optimizer = Recipe::Optimizer::Sgd;
  recipe.learning_rate = 3e-4f;
  recipe.schedule = Recipe::Schedule::Cosine;
  recipe.momentum = 1.0f / 3;
  recipe.batch_size = 96;
  recipe.epochs = 0;
  recipe.weight_decay = 0.1f;
  recipe.augmentation = {2, true};
  recipe.distill_temperature = 2.5f;
  recipe.distill_mix = 0.7f;
  genome.designer = {{"mutation_rate", 0.1},
                     {"step_size", 1.0 / 3},
                     {"tiny", 1e-300},
                     {"negative", -2.5e10},
                     {"weird key: with colon", 7.0},
                     {"true", 1.0},
                     {"", 0.25}};
  return genome;
}

// ---------------------------------------------------------------------------------------------
// Shipped genomes

TEST(GenomeShipped, MlpLoadsAndCountsParameters) {
  const Genome genome = load_genome(kGenomeDir + "mlp.yaml");
  EXPECT_EQ(genome, mlp_genome());
  EXPECT_EQ(genome.recipe.optimizer, Recipe::Optimizer::Adam);
  EXPECT_EQ(genome.recipe.learning_rate, 0.003f);
  EXPECT_EQ(genome.recipe.batch_size, 128);
  EXPECT_EQ(genome.recipe.epochs, 5);

  const GenomeStats stats = validate(genome);
  EXPECT_EQ(stats.parameters, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
  EXPECT_EQ(stats.parameters, 235146);
  const std::int64_t expected_flops = (2 * 784 * 256 + 256) + 256    // dense 256 + bias, relu
                                      + (2 * 256 * 128 + 128) + 128  // dense 128 + bias, relu
                                      + (2 * 128 * 10 + 10);         // dense 10 + bias
  EXPECT_EQ(stats.flops, expected_flops);
  ASSERT_EQ(stats.shapes.size(), 5u);
  EXPECT_FALSE(stats.shapes[0].spatial);
  EXPECT_EQ(stats.shapes[0].features, 256);
  EXPECT_EQ(stats.shapes[2].features, 128);
  EXPECT_EQ(stats.shapes[4].features, 10);
}

TEST(GenomeShipped, CnnLoadsAndCountsParameters) {
  const Genome genome = load_genome(kGenomeDir + "cnn.yaml");
  ASSERT_EQ(genome.blocks.size(), 9u);
  EXPECT_EQ(genome.blocks[0], conv(32, 3, 1));
  EXPECT_EQ(genome.blocks[2], pool(2, 2));
  EXPECT_EQ(genome.blocks[3], conv(64, 3, 1));
  EXPECT_EQ(genome.blocks[6], dense(128));
  EXPECT_EQ(genome.blocks[8], dense(10));

  const GenomeStats stats = validate(genome);
  const std::int64_t conv1 = 32 * 1 * 9 + 32;            // 320
  const std::int64_t conv2 = 64 * 32 * 9 + 64;           // 18496
  const std::int64_t dense1 = 64 * 7 * 7 * 128 + 128;    // 401536
  const std::int64_t dense2 = 128 * 10 + 10;             // 1290
  EXPECT_EQ(conv1 + conv2 + dense1 + dense2, 421642);
  EXPECT_EQ(stats.parameters, 421642);

  const std::int64_t expected_flops = (2LL * 32 * 1 * 9 * 28 * 28 + 32 * 28 * 28)  // conv1 + bias
                                      + 32 * 28 * 28                                // relu
                                      + 32 * 14 * 14                                // pool
                                      + (2LL * 64 * 32 * 9 * 14 * 14 + 64 * 14 * 14)
                                      + 64 * 14 * 14 + 64 * 7 * 7 + (2LL * 3136 * 128 + 128) + 128
                                      + (2 * 128 * 10 + 10);
  EXPECT_EQ(stats.flops, expected_flops);

  ASSERT_EQ(stats.shapes.size(), 9u);
  EXPECT_TRUE(stats.shapes[0].spatial);
  EXPECT_EQ(stats.shapes[0].channels, 32);
  EXPECT_EQ(stats.shapes[0].height, 28);
  EXPECT_EQ(stats.shapes[2].height, 14);
  EXPECT_EQ(stats.shapes[5].channels, 64);
  EXPECT_EQ(stats.shapes[5].height, 7);
  EXPECT_EQ(stats.shapes[5].width, 7);
  EXPECT_EQ(stats.shapes[5].features, 64 * 7 * 7);
  EXPECT_FALSE(stats.shapes[6].spatial);
  EXPECT_EQ(stats.shapes[6].features, 128);
}

TEST(GenomeShipped, FilesAreCanonicalAndRoundTrip) {
  for (const char* name : {"mlp.yaml", "cnn.yaml"}) {
    SCOPED_TRACE(name);
    const std::string text = read_text(kGenomeDir + name);
    const Genome genome = from_yaml(text, name);
    const std::string canonical = to_yaml(genome);
    EXPECT_EQ(from_yaml(canonical), genome);
    EXPECT_EQ(to_yaml(from_yaml(canonical)), canonical);
    // The shipped file is the canonical text below its comment header.
    ASSERT_EQ(text.rfind("# ", 0), 0u);
    EXPECT_EQ(text.substr(text.find('\n') + 1), canonical);
  }
}

// ---------------------------------------------------------------------------------------------
// Round trips and the canonical form

TEST(GenomeYaml, EveryBlockKindRoundTripsExactly) {
  const Genome genome = every_kind_genome();
  const std::string text = to_yaml(genome);
  const Genome parsed = from_yaml(text);
  EXPECT_EQ(parsed, genome) << text;
  EXPECT_EQ(to_yaml(parsed), text);
  EXPECT_EQ(parsed.recipe.learning_rate, 3e-4f);
  EXPECT_EQ(parsed.recipe.momentum, 1.0f / 3);
  EXPECT_EQ(parsed.blocks[9].rate, 1.0f / 3);
  EXPECT_EQ(parsed.designer.at("step_size"), 1.0 / 3);
  EXPECT_EQ(parsed.designer.at("tiny"), 1e-300);
  EXPECT_EQ(parsed.designer.at("weird key: with colon"), 7.0);
  EXPECT_EQ(parsed.designer.at(""), 0.25);
  // Shortest round-trip formatting (std::to_chars), not printf's %g: 3e-04 is shorter than 0.0003.
  EXPECT_NE(text.find("learning_rate: 3e-04\n"), std::string::npos) << text;
  EXPECT_NE(text.find("weight_decay: 0.1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("momentum: 0.33333334\n"), std::string::npos) << text;
  EXPECT_NE(text.find("mutation_rate: 0.1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("step_size: 0.3333333333333333\n"), std::string::npos) << text;
}

TEST(GenomeYaml, ExtremeFloatsRoundTrip) {
  Genome genome = mlp_genome();
  for (float value : {std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::max(), 1e-7f, 123456.79f,
                      0.3f, 2.0f / 3}) {
    genome.recipe.weight_decay = value;
    genome.recipe.learning_rate = value;
    genome.designer["gene"] = static_cast<double>(value) / 7;
    const std::string text = to_yaml(genome);
    EXPECT_EQ(from_yaml(text), genome) << text;
    EXPECT_EQ(to_yaml(from_yaml(text)), text);
  }
}

TEST(GenomeYaml, CanonicalTextHasFixedLayout) {
  Genome genome;
  genome.blocks = {conv(16), pool(2, 2), residual(3), batchnorm(), dropout(0.25f), dense(10)};
  genome.designer = {{"b", 2}, {"a", 0.5}};
  const std::string expected =
      "architecture:\n"
      "  - conv: {channels: 16, kernel: 3, stride: 1}\n"
      "  - pool: {kind: max, size: 2, stride: 2}\n"
      "  - residual: {kernel: 3}\n"
      "  - batchnorm: {}\n"
      "  - dropout: {rate: 0.25}\n"
      "  - dense: {units: 10}\n"
      "recipe:\n"
      "  optimizer: adam\n"
      "  learning_rate: 0.001\n"
      "  schedule: constant\n"
      "  momentum: 0.9\n"
      "  batch_size: 128\n"
      "  epochs: 5\n"
      "  weight_decay: 0\n"
      "  augmentation: {shift: 0, flip: false}\n"
      "  distillation: {temperature: 4, mix: 0.5, epochs: 1}\n"
      "designer:\n"
      "  a: 0.5\n"
      "  b: 2\n";
  EXPECT_EQ(to_yaml(genome), expected);
  EXPECT_EQ(from_yaml(expected), genome);
}

TEST(GenomeYaml, OptionalFieldsTakeDefaults) {
  const Genome genome = from_yaml(
      "architecture:\n"
      "  - conv: {channels: 4}\n"
      "  - pool: {size: 3}\n"
      "  - pool: {}\n"
      "  - residual: {}\n"
      "  - dropout: {}\n"
      "  - batchnorm:\n"
      "  - dense: {units: 10}\n"
      "recipe:\n"
      "  epochs: 2\n"
      "  augmentation: {flip: true}\n");
  ASSERT_EQ(genome.blocks.size(), 7u);
  EXPECT_EQ(genome.blocks[0], conv(4, 3, 1));
  EXPECT_EQ(genome.blocks[1], pool(3, 3));  // stride defaults to the size
  EXPECT_EQ(genome.blocks[2], pool(2, 2));
  EXPECT_EQ(genome.blocks[3], residual(3));
  EXPECT_EQ(genome.blocks[4], dropout(0.0f));
  EXPECT_EQ(genome.blocks[5], batchnorm());
  Recipe expected_recipe;
  expected_recipe.epochs = 2;
  expected_recipe.augmentation.flip = true;
  EXPECT_EQ(genome.recipe, expected_recipe);
  EXPECT_TRUE(genome.designer.empty());
  EXPECT_NO_THROW(validate(genome));
}

TEST(GenomeYaml, AcceptsCommentsAndEquivalentSpellings) {
  const Genome genome = from_yaml(
      "# a comment\n"
      "architecture:\n"
      "  - dense:\n"
      "      units: 10   # block style works too\n"
      "recipe: {learning_rate: 1e-3, weight_decay: +0.5}\n"
      "designer: {g: +2.5e-1}\n");
  EXPECT_EQ(genome.blocks, std::vector<Block>{dense(10)});
  EXPECT_EQ(genome.recipe.learning_rate, 0.001f);
  EXPECT_EQ(genome.recipe.weight_decay, 0.5f);
  EXPECT_EQ(genome.designer.at("g"), 0.25);
}

TEST(GenomeYaml, BlockKindNames) {
  EXPECT_STREQ(block_kind_name(Block::Kind::Conv), "conv");
  EXPECT_STREQ(block_kind_name(Block::Kind::Pool), "pool");
  EXPECT_STREQ(block_kind_name(Block::Kind::Residual), "residual");
  EXPECT_STREQ(block_kind_name(Block::Kind::Dense), "dense");
  EXPECT_STREQ(block_kind_name(Block::Kind::Dropout), "dropout");
  EXPECT_STREQ(block_kind_name(Block::Kind::BatchNorm), "batchnorm");
  EXPECT_STREQ(block_kind_name(Block::Kind::Activation), "activation");
}

// ---------------------------------------------------------------------------------------------
// from_yaml errors

TEST(GenomeYamlErrors, OutOfDomainValueNamesPositionKeyAndExpectation) {
  const std::string message = parse_error(
      "architecture:\n"
      "  - conv: {channels: 32, kernel: 3}\n"
      "  - conv: {channels: 32, kernel: 4}\n"
      "  - dense: {units: 10}\n");
  EXPECT_EQ(message, "t.yaml:3:34: architecture[1].conv.kernel: expected one of 1, 3, 5, got 4");
}

TEST(GenomeYamlErrors, UnknownKeysSuggestTheClosestValidKey) {
  std::string message = parse_error("architecture:\n  - conv: {chanels: 32}\n  - dense: {units: 10}\n");
  EXPECT_NE(message.find("t.yaml:2:12: architecture[0].conv.chanels: unknown key 'chanels'"), std::string::npos)
      << message;
  EXPECT_NE(message.find("did you mean 'channels'?"), std::string::npos) << message;
  EXPECT_NE(message.find("channels, kernel, stride"), std::string::npos) << message;

  message = parse_error("architecture:\n  - dense: {units: 10}\nrecipie: {}\n");
  EXPECT_NE(message.find("t.yaml:3:1: recipie: unknown key"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'recipe'?"), std::string::npos) << message;

  message = parse_error("architecture:\n  - dense: {units: 10}\nrecipe:\n  learning_rte: 0.1\n");
  EXPECT_NE(message.find("t.yaml:4:3: recipe.learning_rte"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'learning_rate'?"), std::string::npos) << message;

  message = parse_error("architecture:\n  - dens: {units: 10}\n");
  EXPECT_NE(message.find("architecture[0].dens: unknown key 'dens'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'dense'?"), std::string::npos) << message;

  message = parse_error("architecture:\n  - dense: {units: 10}\nrecipe: {augmentation: {shfit: 1}}\n");
  EXPECT_NE(message.find("recipe.augmentation.shfit"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'shift'?"), std::string::npos) << message;

  message = parse_error("architecture:\n  - batchnorm: {channels: 3}\n  - dense: {units: 10}\n");
  EXPECT_NE(message.find("architecture[0].batchnorm.channels: unknown key"), std::string::npos) << message;

  // No suggestion when nothing is close.
  message = parse_error("architecture:\n  - dense: {units: 10}\nzzzzzzzzzzzz: 1\n");
  EXPECT_EQ(message.find("did you mean"), std::string::npos) << message;
  EXPECT_NE(message.find("valid: architecture, recipe, designer"), std::string::npos) << message;
}

TEST(GenomeYamlErrors, UnknownNamedValuesSuggestTheClosest) {
  std::string message = parse_error("architecture:\n  - dense: {units: 10}\nrecipe: {optimizer: adm}\n");
  EXPECT_NE(message.find("t.yaml:3:21: recipe.optimizer: unknown value 'adm'"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'adam'?"), std::string::npos) << message;

  message = parse_error("architecture:\n  - activation: rleu\n  - dense: {units: 10}\n");
  EXPECT_NE(message.find("architecture[0].activation"), std::string::npos) << message;
  EXPECT_NE(message.find("did you mean 'relu'?"), std::string::npos) << message;

  message = parse_error("architecture:\n  - pool: {kind: mean}\n  - dense: {units: 10}\n");
  EXPECT_NE(message.find("architecture[0].pool.kind"), std::string::npos) << message;
  EXPECT_NE(message.find("max, avg"), std::string::npos) << message;
}

TEST(GenomeYamlErrors, DuplicateKeysReportBothPositions) {
  std::string message = parse_error(
      "architecture:\n"
      "  - dense: {units: 10}\n"
      "recipe:\n"
      "  epochs: 3\n"
      "  batch_size: 64\n"
      "  epochs: 4\n");
  EXPECT_EQ(message, "t.yaml:6:3: recipe.epochs: duplicate key 'epochs'; first given at 4:3");

  message = parse_error("architecture:\n  - dense: {units: 10, units: 20}\n");
  EXPECT_EQ(message, "t.yaml:2:24: architecture[0].dense.units: duplicate key 'units'; first given at 2:13");

  message = parse_error("architecture:\n  - dense: {units: 10}\narchitecture:\n  - dense: {units: 10}\n");
  EXPECT_NE(message.find("t.yaml:3:1: architecture: duplicate key 'architecture'; first given at 1:1"),
            std::string::npos)
      << message;

  message = parse_error("architecture:\n  - dense: {units: 10}\ndesigner: {a: 1, b: 2, a: 3}\n");
  EXPECT_NE(message.find("designer.a: duplicate key 'a'"), std::string::npos) << message;
}

TEST(GenomeYamlErrors, InvalidSyntaxGivesLineAndColumn) {
  const std::string message = parse_error(
      "architecture:\n"
      "  - dense: {units: 10\n"
      "recipe: {}\n");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(message, match, std::regex(R"(^t\.yaml:(\d+):(\d+): invalid YAML: .+)"))) << message;
  EXPECT_GE(std::stoi(match[1]), 2) << message;
  EXPECT_LE(std::stoi(match[1]), 3) << message;

  const std::string tab_message = parse_error("architecture:\n  - dense: {units: 10}\n\t- bad\n");
  EXPECT_NE(tab_message.find("t.yaml:3:"), std::string::npos) << tab_message;
}

TEST(GenomeYamlErrors, WrongTypesSayWhatWasExpected) {
  const auto expect_message = [](const std::string& text, const std::string& fragment) {
    const std::string message = parse_error(text);
    EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nwanted: " << fragment;
  };
  expect_message("architecture:\n  - dense: {units: ten}\n",
                 "t.yaml:2:20: architecture[0].dense.units: expected an integer, got ten");
  expect_message("architecture:\n  - dense: {units: 10.5}\n", "expected an integer, got 10.5");
  expect_message("architecture:\n  - dense: {units: \"10\"}\n", "expected an integer, got \"10\" (a quoted string)");
  expect_message("architecture:\n  - dense: {units: [10]}\n", "expected an integer, got a list");
  expect_message("architecture:\n  - dense: {units: 99999999999}\n", "integer out of range");
  expect_message("architecture: 5\n", "t.yaml:1:15: architecture: expected a list of blocks, got 5");
  expect_message("architecture:\n", "t.yaml:1:1: architecture: expected a list of blocks, got nothing");
  expect_message("architecture:\n  - dense\n", "architecture[0]: expected a block: a map with one key");
  expect_message("architecture:\n  - {dense: {units: 10}, conv: {channels: 3}}\n", "got 2 keys");
  expect_message("architecture:\n  - dense: 10\n", "architecture[0].dense: expected a map");
  expect_message("architecture:\n  - activation: {kind: relu}\n",
                 "architecture[0].activation: expected one of relu, gelu, tanh, got a map");
  expect_message("architecture: [{dense: {units: 10}}]\nrecipe: [1]\n", "t.yaml:2:9: recipe: expected a map");
  expect_message("architecture: [{dense: {units: 10}}]\nrecipe: {learning_rate: fast}\n",
                 "recipe.learning_rate: expected a number, got fast");
  expect_message("architecture: [{dense: {units: 10}}]\nrecipe: {learning_rate: 1e99}\n", "out of range");
  expect_message("architecture: [{dense: {units: 10}}]\nrecipe: {augmentation: {flip: 3}}\n",
                 "recipe.augmentation.flip: expected true or false, got 3");
  expect_message("architecture: [{dense: {units: 10}}]\ndesigner: {rate: high}\n",
                 "designer.rate: expected a number, got high");
  expect_message("architecture: [{dense: {units: 10}}]\ndesigner: [1, 2]\n", "designer: expected a map");
  expect_message("- dense: {units: 10}\n", "t.yaml:1:1: expected a map (the genome), got a list");
  expect_message("", "t.yaml: empty genome");
  expect_message("# nothing but a comment\n", "t.yaml: empty genome");
}

TEST(GenomeYamlErrors, MissingRequiredKeys) {
  std::string message = parse_error("recipe: {}\n");
  EXPECT_NE(message.find("architecture: missing key"), std::string::npos) << message;
  message = parse_error("architecture:\n  - conv: {kernel: 3}\n  - dense: {units: 10}\n");
  EXPECT_NE(message.find("t.yaml:2:11: architecture[0].conv.channels: missing key"), std::string::npos) << message;
  message = parse_error("architecture:\n  - dense: {}\n");
  EXPECT_NE(message.find("architecture[0].dense.units: missing key"), std::string::npos) << message;
}

TEST(GenomeYamlErrors, FieldDomainsCheckedWithPositions) {
  const auto expect_message = [](const std::string& body, const std::string& fragment) {
    const std::string message = parse_error("architecture:\n  - " + body + "\n  - dense: {units: 10}\n");
    EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nwanted: " << fragment;
  };
  expect_message("conv: {channels: 0}", "t.yaml:2:22: architecture[0].conv.channels: expected a positive integer, got 0");
  expect_message("conv: {channels: 8, stride: 3}", "architecture[0].conv.stride: expected one of 1, 2, got 3");
  expect_message("pool: {size: 4}", "architecture[0].pool.size: expected one of 2, 3, got 4");
  expect_message("pool: {size: 2, stride: 3}", "architecture[0].pool.stride: expected 1 to 2");
  expect_message("residual: {kernel: 2}", "architecture[0].residual.kernel: expected one of 1, 3, 5, got 2");
  expect_message("dropout: {rate: 1}", "architecture[0].dropout.rate: expected a number in [0, 1), got 1");
  expect_message("dense: {units: -3}", "architecture[0].dense.units: expected a positive integer, got -3");

  const auto expect_recipe_message = [](const std::string& recipe, const std::string& fragment) {
    const std::string message = parse_error("architecture: [{dense: {units: 10}}]\nrecipe: {" + recipe + "}\n");
    EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nwanted: " << fragment;
  };
  expect_recipe_message("learning_rate: -1", "t.yaml:2:25: recipe.learning_rate: expected a finite number > 0, got -1");
  expect_recipe_message("learning_rate: .nan", "recipe.learning_rate: expected a finite number > 0, got nan");
  expect_recipe_message("batch_size: 0", "recipe.batch_size");
  expect_recipe_message("epochs: -1", "recipe.epochs");
  expect_recipe_message("momentum: 1", "recipe.momentum");
  expect_recipe_message("weight_decay: -0.1", "recipe.weight_decay");
  expect_recipe_message("augmentation: {shift: 9}", "recipe.augmentation.shift: expected an integer in [0, 8], got 9");
  expect_recipe_message("distillation: {temperature: 0}", "recipe.distillation.temperature");
  expect_recipe_message("distillation: {mix: 1.5}", "recipe.distillation.mix: expected a number in [0, 1], got 1.5");
}

TEST(GenomeYamlErrors, LoadGenomeNamesTheFile) {
  const std::string missing = kGenomeDir + "no-such-genome.yaml";
  std::string message = error_of([&] { load_genome(missing); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  EXPECT_NE(message.find("No such file"), std::string::npos) << message;

  message = error_of([&] { load_genome(kGenomeDir); });
  EXPECT_NE(message.find("directory"), std::string::npos) << message;
}

TEST(GenomeYamlErrors, LoadGenomeUsesThePathAsSource) {
  const std::string path = ::testing::TempDir() + "rsi_test_genome_bad.yaml";
  {
    std::ofstream file(path);
    file << "architecture:\n  - dense: {units: 10, unit: 3}\n";
  }
  const std::string message = error_of([&] { load_genome(path); });
  std::remove(path.c_str());
  EXPECT_EQ(message.rfind(path + ":2:24: architecture[0].dense.unit: unknown key 'unit'", 0), 0u) << message;
}

// ---------------------------------------------------------------------------------------------
// validate

TEST(GenomeValidate, EveryKindCountsParametersAndShapes) {
  const GenomeStats stats = validate(every_kind_genome());
  // conv 5x5 stride 2: (28 + 4 - 5)/2 + 1 = 14; avg pool 3/3: (14 - 3)/3 + 1 = 4.
  const std::int64_t conv_params = 8 * 1 * 25 + 8;
  const std::int64_t bn_spatial = 2 * 8;
  const std::int64_t residual_params = 2 * (8 * 8 * 1 + 8) + 2 * (2 * 8);
  const std::int64_t dense1 = 8 * 4 * 4 * 32 + 32;
  const std::int64_t bn_flat = 2 * 32;
  const std::int64_t dense2 = 32 * 10 + 10;
  EXPECT_EQ(stats.parameters, conv_params + bn_spatial + residual_params + dense1 + bn_flat + dense2);

  const std::int64_t e14 = 8 * 14 * 14;
  const std::int64_t expected_flops = (2LL * 8 * 1 * 25 * 14 * 14 + e14)      // conv + bias
                                      + e14 + e14                             // batchnorm, gelu
                                      + 2 * (2LL * 8 * 8 * 1 * 14 * 14 + e14) + 4 * e14  // residual
                                      + 8 * 4 * 4                             // pool
                                      + 0                                     // dropout
                                      + (2 * 128 * 32 + 32) + 32 + 32         // dense, tanh, batchnorm
                                      + 0 + (2 * 32 * 10 + 10);               // dropout, dense
  EXPECT_EQ(stats.flops, expected_flops);

  ASSERT_EQ(stats.shapes.size(), 11u);
  EXPECT_EQ(stats.shapes[0].channels, 8);
  EXPECT_EQ(stats.shapes[0].height, 14);
  EXPECT_EQ(stats.shapes[0].width, 14);
  EXPECT_EQ(stats.shapes[3].height, 14);  // residual keeps the shape
  EXPECT_EQ(stats.shapes[4].height, 4);
  EXPECT_EQ(stats.shapes[4].features, 128);
  EXPECT_TRUE(stats.shapes[5].spatial);
  EXPECT_FALSE(stats.shapes[6].spatial);
  EXPECT_EQ(stats.shapes[6].features, 32);
}

TEST(GenomeValidate, FlopsAreConsistent) {
  const Genome mlp = mlp_genome();
  const GenomeStats base = validate(mlp);
  EXPECT_GT(base.flops, 0);
  EXPECT_GT(base.flops, 2 * base.parameters - 1000);  // each dense weight is used once per sample

  // Adding a residual block adds exactly its own cost, wherever the rest is.
  Genome cnn = load_genome(kGenomeDir + "cnn.yaml");
  const GenomeStats cnn_stats = validate(cnn);
  cnn.blocks.insert(cnn.blocks.begin() + 3, residual(3));  // at 32x14x14
  const GenomeStats with_residual = validate(cnn);
  const std::int64_t e = 32 * 14 * 14;
  EXPECT_EQ(with_residual.flops - cnn_stats.flops, 2 * (2LL * 32 * 32 * 9 * 14 * 14 + e) + 4 * e);
  EXPECT_EQ(with_residual.parameters - cnn_stats.parameters, 2 * (32 * 32 * 9 + 32) + 4 * 32);

  // A stride-2 conv costs a quarter of the same conv at stride 1 (28x28 -> 14x14).
  Genome strided;
  strided.blocks = {conv(16, 3, 1), dense(10)};
  const std::int64_t stride1_conv = validate(strided).flops - (2 * 16 * 28 * 28 * 10 + 10);
  strided.blocks[0].stride = 2;
  const std::int64_t stride2_conv = validate(strided).flops - (2 * 16 * 14 * 14 * 10 + 10);
  EXPECT_EQ(stride1_conv, 4 * stride2_conv);
}

TEST(GenomeValidate, SpatialBlockAfterDenseIsRejected) {
  for (const Block& spatial : {conv(8), pool(2, 2), residual(3)}) {
    Genome genome;
    genome.blocks = {dense(32), activation(kernels::Activation::ReLU), spatial, dense(10)};
    const std::string message = validate_error(genome);
    const std::string expected = std::string("block 2 (") + block_kind_name(spatial.kind) + "):";
    EXPECT_EQ(message.rfind(expected, 0), 0u) << message;
    EXPECT_NE(message.find("flat after dense block 0"), std::string::npos) << message;
  }
}

TEST(GenomeValidate, BlockFieldErrorsNameIndexKindAndField) {
  const auto expect_block_error = [](const Block& block, const std::string& fragment) {
    Genome genome;
    genome.blocks = {conv(4), block, dense(10)};
    const std::string message = validate_error(genome);
    EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nwanted: " << fragment;
  };
  expect_block_error(conv(0), "block 1 (conv): channels: expected a positive integer, got 0");
  expect_block_error(conv(-4), "block 1 (conv): channels: expected a positive integer, got -4");
  expect_block_error(dense(0), "block 1 (dense): units: expected a positive integer, got 0");
  expect_block_error(conv(4, 4), "block 1 (conv): kernel: expected one of 1, 3, 5, got 4");
  expect_block_error(residual(7), "block 1 (residual): kernel: expected one of 1, 3, 5, got 7");
  expect_block_error(conv(4, 3, 3), "block 1 (conv): stride: expected one of 1, 2, got 3");
  expect_block_error(conv(4, 3, 0), "block 1 (conv): stride: expected one of 1, 2, got 0");
  expect_block_error(pool(4, 2), "block 1 (pool): size: expected one of 2, 3, got 4");
  expect_block_error(pool(2, 0), "block 1 (pool): stride: expected 1 to 2");
  expect_block_error(dropout(1.0f), "block 1 (dropout): rate: expected a number in [0, 1), got 1");
  expect_block_error(dropout(-0.1f), "block 1 (dropout): rate: expected a number in [0, 1), got -0.1");
  expect_block_error(dropout(std::nanf("")), "block 1 (dropout): rate");
}

TEST(GenomeValidate, WindowsLargerThanTheInputAreRejected) {
  Genome genome;
  genome.blocks = {pool(2, 2), pool(2, 2), pool(3, 3), dense(10)};
  InputSpec tiny;
  tiny.height = 5;
  tiny.width = 5;
  // 5 -> 2 -> 1, then a 3x3 window on 1x1.
  const std::string message = validate_error(genome, tiny);
  EXPECT_EQ(message.rfind("block 2 (pool): pool window 3x3 is larger than its 1x1 input", 0), 0u) << message;

  // Same padding keeps a conv's output non-empty even on a 1x1 input.
  genome.blocks = {pool(2, 2), pool(2, 2), conv(4, 5, 2), dense(10)};
  const GenomeStats stats = validate(genome, tiny);
  EXPECT_EQ(stats.shapes[2].height, 1);
}

TEST(GenomeValidate, LastBlockMustBeTheClassifier) {
  Genome genome = mlp_genome();
  genome.blocks.push_back(activation(kernels::Activation::ReLU));
  std::string message = validate_error(genome);
  EXPECT_EQ(message.rfind("block 5 (activation): the last block must be a dense block with 10 units", 0), 0u)
      << message;

  genome = mlp_genome();
  genome.blocks.back().units = 7;
  message = validate_error(genome);
  EXPECT_EQ(message.rfind("block 4 (dense): the last block must be a dense block with 10 units", 0), 0u) << message;
  EXPECT_NE(message.find("got dense with 7 units"), std::string::npos) << message;

  InputSpec seven_classes;
  seven_classes.classes = 7;
  EXPECT_NO_THROW(validate(genome, seven_classes));

  message = validate_error(Genome{});
  EXPECT_NE(message.find("no blocks"), std::string::npos) << message;
}

TEST(GenomeValidate, LimitsSayTheCountAndTheLimit) {
  const Genome genome = mlp_genome();
  GenomeLimits limits;
  limits.max_blocks = 3;
  std::string message = validate_error(genome, {}, limits);
  EXPECT_EQ(message, "genome has 5 blocks, over the limit of 3");

  limits = {};
  limits.max_parameters = 200000;
  message = validate_error(genome, {}, limits);
  EXPECT_EQ(message, "genome has 235146 parameters, over the limit of 200000");

  limits = {};
  limits.max_flops = 1000;
  message = validate_error(genome, {}, limits);
  const std::int64_t flops = validate(genome).flops;
  EXPECT_EQ(message, "genome needs " + std::to_string(flops) + " forward FLOPs per sample, over the limit of 1000");

  limits = {};
  limits.max_parameters = 235146;
  limits.max_flops = flops;
  limits.max_blocks = 5;
  EXPECT_NO_THROW(validate(genome, {}, limits));
}

TEST(GenomeValidate, HugeWidthsSaturateInsteadOfOverflowing) {
  Genome genome;
  genome.blocks = {conv(1 << 30, 5), conv(1 << 30, 5), dense(1 << 30), dense(10)};
  const std::string message = validate_error(genome);
  EXPECT_NE(message.find("over the limit of 50000000"), std::string::npos) << message;
}

TEST(GenomeValidate, RecipeErrorsNameTheField) {
  const auto expect_recipe_error = [](const std::function<void(Recipe&)>& change, const std::string& fragment) {
    Genome genome = mlp_genome();
    change(genome.recipe);
    const std::string message = validate_error(genome);
    EXPECT_NE(message.find(fragment), std::string::npos) << "message: " << message << "\nwanted: " << fragment;
  };
  const float inf = std::numeric_limits<float>::infinity();
  expect_recipe_error([](Recipe& r) { r.learning_rate = 0; }, "recipe.learning_rate: expected a finite number > 0, got 0");
  expect_recipe_error([](Recipe& r) { r.learning_rate = -1e-3f; }, "recipe.learning_rate");
  expect_recipe_error([](Recipe& r) { r.learning_rate = std::nanf(""); }, "recipe.learning_rate");
  expect_recipe_error([&](Recipe& r) { r.learning_rate = inf; }, "recipe.learning_rate: expected a finite number > 0, got inf");
  expect_recipe_error([](Recipe& r) { r.batch_size = 0; }, "recipe.batch_size: expected an integer in [1, 65536], got 0");
  expect_recipe_error([](Recipe& r) { r.batch_size = 65537; }, "recipe.batch_size");
  expect_recipe_error([](Recipe& r) { r.epochs = -1; }, "recipe.epochs: expected an integer >= 0, got -1");
  expect_recipe_error([](Recipe& r) { r.weight_decay = -0.5f; }, "recipe.weight_decay");
  expect_recipe_error([](Recipe& r) { r.distill_mix = 1.5f; }, "recipe.distillation.mix");
  expect_recipe_error([](Recipe& r) { r.distill_mix = -0.1f; }, "recipe.distillation.mix");
  expect_recipe_error([](Recipe& r) { r.distill_temperature = 0; }, "recipe.distillation.temperature");
  expect_recipe_error([](Recipe& r) { r.augmentation.shift = 9; }, "recipe.augmentation.shift");
  expect_recipe_error([](Recipe& r) { r.augmentation.shift = -1; }, "recipe.augmentation.shift");
  expect_recipe_error([](Recipe& r) { r.momentum = 1.0f; }, "recipe.momentum: expected a number in [0, 1), got 1");
  expect_recipe_error([](Recipe& r) { r.momentum = -0.1f; }, "recipe.momentum");

  // The edges that are allowed.
  Genome genome = mlp_genome();
  genome.recipe.batch_size = 65536;
  genome.recipe.epochs = 0;
  genome.recipe.distill_mix = 1.0f;
  genome.recipe.augmentation.shift = 8;
  genome.recipe.momentum = 0.0f;
  EXPECT_NO_THROW(validate(genome));
}

}  // namespace
}  // namespace rsi::models

// Warm-up (the extended recipe space's schedule operator): written only when on, so genomes
// without it keep their canonical text; the learning rate ramps up linearly, then follows the schedule.
TEST(Genome, WarmupRoundTripsAndRampsTheLearningRate) {
  rsi::models::Genome g = rsi::models::from_yaml("architecture:\n  - dense: {units: 10}\n");
  EXPECT_EQ(rsi::models::to_yaml(g).find("warmup"), std::string::npos);
  g.recipe.warmup = 0.1f;
  g.recipe.schedule = rsi::models::Recipe::Schedule::Cosine;
  const std::string text = rsi::models::to_yaml(g);
  EXPECT_NE(text.find("warmup: 0.1"), std::string::npos);
  EXPECT_EQ(rsi::models::from_yaml(text), g);
  EXPECT_THROW(rsi::models::from_yaml("architecture:\n  - dense: {units: 10}\nrecipe: {warmup: 0.7}\n"),
               rsi::models::GenomeError);
  rsi::models::Recipe constant = g.recipe;
  constant.schedule = rsi::models::Recipe::Schedule::Constant;
  constant.warmup = 0.125f;  // 12.5 of 100 steps, exactly representable
  const double base = constant.learning_rate;
  EXPECT_DOUBLE_EQ(rsi::models::scheduled_learning_rate(constant, 0, 100), base / 13.5);
  EXPECT_DOUBLE_EQ(rsi::models::scheduled_learning_rate(constant, 12, 100), base * 13.0 / 13.5);
  EXPECT_DOUBLE_EQ(rsi::models::scheduled_learning_rate(constant, 13, 100), base);
  // After the warm-up, the cosine schedule as without it.
  rsi::models::Recipe plain = g.recipe;
  plain.warmup = 0.0f;
  EXPECT_EQ(rsi::models::scheduled_learning_rate(g.recipe, 50, 100), rsi::models::scheduled_learning_rate(plain, 50, 100));
}

// Weight averaging: written only when on (genomes without it keep their canonical text), read back
// exactly, and a decay outside [0, 1) is an error that names the field.
TEST(Genome, WeightAverageRoundTripsAndIsChecked) {
  rsi::models::Genome g = rsi::models::from_yaml("architecture:\n  - dense: {units: 10}\n");
  EXPECT_EQ(rsi::models::to_yaml(g).find("weight_average"), std::string::npos);
  g.recipe.weight_average = 0.99f;
  const std::string text = rsi::models::to_yaml(g);
  EXPECT_NE(text.find("weight_average: 0.99\n"), std::string::npos) << text;
  EXPECT_EQ(rsi::models::from_yaml(text), g);
  for (const char* bad : {"1", "-0.5", "1.5"}) {
    try {
      rsi::models::from_yaml(std::string("architecture:\n  - dense: {units: 10}\nrecipe: {weight_average: ") + bad + "}\n");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const rsi::models::GenomeError& e) {
      EXPECT_NE(std::string(e.what()).find("recipe.weight_average"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("[0, 1)"), std::string::npos) << e.what();
    }
  }
}
