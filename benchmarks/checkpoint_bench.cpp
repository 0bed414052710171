// checkpoint_bench — the HDF5 lineage store's write bandwidth next to a raw sequential write of the
// same number of bytes with fsync (dd conv=fsync), in one run, as a ratio (goal >= 0.8).
//
// It writes generations of a synthetic population (P models of W float parameters each, the
// weights a resume needs) through checkpoints::LineageStore — gen-N.h5.tmp, Fletcher32-filtered
// chunked datasets, SHA-256 provenance hashes, fsync, rename, directory fsync — and times each
// generation; then `dd if=/dev/zero of=FILE bs=1M count=MB conv=fsync` writes as many bytes.
//   build/benchmarks/checkpoint_bench [--models P] [--params W] [--generations G] [--dir DIR]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "rsi/checkpoints/store.h"
#include "rsi/kernels/rng.h"

namespace fs = std::filesystem;
using namespace rsi;

int main(int argc, char** argv) {
  int models = 8, generations = 8;
  std::int64_t params = 2'000'000;
  std::string dir = (fs::temp_directory_path() / "rsi-checkpoint-bench").string();
  CLI::App app{"HDF5 lineage store write bandwidth vs dd conv=fsync of the same bytes"};
  app.add_option("--models", models, "Population size (models with weights per generation)")->capture_default_str();
  app.add_option("--params", params, "Parameters per model (float32)")->capture_default_str();
  app.add_option("--generations", generations, "Generations written")->capture_default_str();
  app.add_option("--dir", dir, "Scratch directory (emptied)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  fs::remove_all(dir);
  fs::create_directories(dir);
  checkpoints::RunInfo info;
  info.run_name = "checkpoint-bench";
  info.manifest_text = "run: {name: checkpoint-bench}\n";
  checkpoints::Retention retention;
  retention.keep_last_generations = 0;
  checkpoints::LineageStore store(dir, info, retention);

  double store_seconds = 0.0, dd_seconds = 0.0, dd_bytes = 0.0;
  std::uint64_t store_bytes = 0;
  const fs::path raw = fs::path(dir) / "raw.bin";
  std::uint64_t next_id = 1;
  std::vector<scheduler::ModelRecord> population;
  for (int g = 0; g < generations; ++g) {
    scheduler::GenerationRecord record;
    record.generation = g;
    for (int m = 0; m < models; ++m) {
      scheduler::ModelRecord r;
      r.id = next_id++;
      r.generation = g;
      if (g > 0) r.parents = {population[static_cast<std::size_t>(m)].id};
      r.genome_yaml = "architecture:\n  - dense: {units: 10}\n";
      r.op = g == 0 ? "seed" : "lr";
      r.metrics.val_accuracy = 0.8 + 0.001 * static_cast<double>(r.id);
      auto w = std::make_shared<scheduler::Weights>();
      w->params.resize(static_cast<std::size_t>(params));
      const kernels::CounterRng rng(1, r.id);
      for (std::size_t i = 0; i < w->params.size(); ++i) w->params[i] = rng.uniform(i) - 0.5f;  // incompressible
      w->state.assign(64, 1.0f);
      r.weights = w;
      r.weights_digest = scheduler::weights_digest(*w);
      record.children.push_back(r);
    }
    population = record.children;
    for (const auto& m : population) record.population.push_back(m.id);
    record.population_models = population;
    record.next_model_id = next_id;
    record.best_id = population.front().id;
    store.on_generation(record);
    store_seconds += store.last_write_seconds();
    store_bytes += store.last_write_bytes();
    // The peer right after, on the same bytes, so both see the same disk and page-cache state.
    const int mb = static_cast<int>(std::ceil(static_cast<double>(store.last_write_bytes()) / (1 << 20)));
    const std::string cmd = "dd if=/dev/zero of='" + raw.string() + "' bs=1M count=" + std::to_string(mb) +
                            " conv=fsync status=none";
    const auto start = std::chrono::steady_clock::now();
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "checkpoint_bench: '%s' failed\n", cmd.c_str());
      return 1;
    }
    const double dd = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    dd_seconds += dd;
    dd_bytes += static_cast<double>(mb) * (1 << 20);
    fs::remove(raw);
    std::printf("generation %d: store %.1f MB in %.3f s (%.0f MB/s); dd %d MiB in %.3f s (%.0f MB/s)\n", g,
                store.last_write_bytes() / 1e6, store.last_write_seconds(),
                store.last_write_bytes() / 1e6 / store.last_write_seconds(), mb, dd, mb * 1.048576 / dd);
  }

  const double ours = store_bytes / store_seconds / 1e6, theirs = dd_bytes / dd_seconds / 1e6;
  std::printf("\n%-36s %10s %10s %10s\n", "writer", "MB", "seconds", "MB/s");
  std::printf("%-36s %10.1f %10.3f %10.0f\n", "LineageStore (HDF5, Fletcher32, SHA)", store_bytes / 1e6, store_seconds,
              ours);
  std::printf("%-36s %10.1f %10.3f %10.0f\n", "dd bs=1M conv=fsync", dd_bytes / 1e6, dd_seconds, theirs);
  std::printf("checkpoint write bandwidth ratio (ours/dd): %.2f (goal >= 0.8)\n", ours / theirs);
  fs::remove_all(dir);
  return 0;
}
