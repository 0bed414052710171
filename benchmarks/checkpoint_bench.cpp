// checkpoint_bench — the HDF5 lineage store's write bandwidth next to a raw sequential write of the
// same bytes with fsync (dd conv=fsync), in one run, as a ratio (goal >= 0.8).
//
// It writes generations of a synthetic population (P models of W float parameters each, the
// weights a resume needs) through checkpoints::LineageStore — gen-N.h5.tmp, Fletcher32-filtered
// chunked datasets, SHA-256 provenance hashes, fsync, rename, directory fsync — and times each
// generation twice: (a) until on_generation returns, when the file is durable (renamed into place,
// directory fsynced: what dd's conv=fsync marks too), the goal's figure; (b) until flush() returns,
// that is with the background work too (the whole file's SHA-256 and LATEST). flush() returns
// before dd starts, so our background hashing never overlaps dd's timed section. Right after, `dd if=gen-N.h5 of=FILE bs=1M conv=fsync` writes the very bytes the store
// wrote (read from the page cache, where the store just put them), and, for comparison with earlier
// figures, `dd if=/dev/zero` writes as many zeros (zeros can be cheaper for the disk: hosts detect
// or compress them). The two dd runs alternate in order from one generation to the next.
//   build/benchmarks/checkpoint_bench [--models P] [--params W] [--generations G] [--dir DIR]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>
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

  double durable_seconds = 0.0, joined_seconds = 0.0;  // (a) and (b)
  std::uint64_t store_bytes = 0;
  // Two peers: dd of the store's own file (the goal's reference) and dd of zeros (the old one).
  struct Peer {
    const char* name;
    double seconds = 0.0, bytes = 0.0;
  };
  Peer same{"dd if=gen-N.h5 bs=1M conv=fsync"}, zeros{"dd if=/dev/zero bs=1M conv=fsync"};
  const fs::path raw = fs::path(dir) / "raw.bin";
  // Times one dd writing `raw` (process start included, as for anyone running dd).
  auto run_dd = [&raw](const std::string& input, const std::string& count) {
    const std::string cmd =
        "dd if='" + input + "' of='" + raw.string() + "' bs=1M " + count + " conv=fsync status=none";
    const auto start = std::chrono::steady_clock::now();
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "checkpoint_bench: '%s' failed\n", cmd.c_str());
      std::exit(1);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto bytes = static_cast<double>(fs::file_size(raw));
    fs::remove(raw);
    return std::pair{seconds, bytes};
  };
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
    const auto start = std::chrono::steady_clock::now();
    store.on_generation(record);
    const auto durable = std::chrono::steady_clock::now();
    store.flush();
    const auto joined = std::chrono::steady_clock::now();
    const double a = std::chrono::duration<double>(durable - start).count();
    const double b = std::chrono::duration<double>(joined - start).count();
    durable_seconds += a;
    joined_seconds += b;
    store_bytes += store.last_write_bytes();
    // Every model is in the population, so the generation file holds every byte written (no sidecar).
    char file_name[32];
    std::snprintf(file_name, sizeof file_name, "gen-%06d.h5", g);  // FORMAT.md's naming
    const fs::path written = fs::path(dir) / file_name;
    if (fs::file_size(written) != store.last_write_bytes()) {
      std::fprintf(stderr, "checkpoint_bench: %s holds %ju bytes, the store wrote %ju: a sidecar appeared?\n",
                   written.c_str(), static_cast<std::uintmax_t>(fs::file_size(written)),
                   static_cast<std::uintmax_t>(store.last_write_bytes()));
      return 1;
    }
    const std::string zero_count =
        "count=" + std::to_string((store.last_write_bytes() + (1 << 20) - 1) >> 20);  // whole MiB, rounded up
    std::pair<double, double> s, z;
    if (g % 2 == 0) {
      s = run_dd(written.string(), "");
      z = run_dd("/dev/zero", zero_count);
    } else {
      z = run_dd("/dev/zero", zero_count);
      s = run_dd(written.string(), "");
    }
    same.seconds += s.first;
    same.bytes += s.second;
    zeros.seconds += z.first;
    zeros.bytes += z.second;
    const double mb = store.last_write_bytes() / 1e6;
    std::printf("generation %d: store %.1f MB durable in %.3f s (%.0f MB/s), with file digest + LATEST %.3f s "
                "(%.0f MB/s); dd same bytes %.3f s (%.0f MB/s); dd zeros %.3f s (%.0f MB/s)\n",
                g, mb, a, mb / a, b, mb / b, s.first, s.second / 1e6 / s.first, z.first, z.second / 1e6 / z.first);
  }

  const double durable_mbs = store_bytes / durable_seconds / 1e6, joined_mbs = store_bytes / joined_seconds / 1e6;
  const double dd_mbs = same.bytes / same.seconds / 1e6;
  std::printf("\n%-44s %10s %10s %10s\n", "writer", "MB", "seconds", "MB/s");
  std::printf("%-44s %10.1f %10.3f %10.0f\n", "(a) LineageStore until durable", store_bytes / 1e6, durable_seconds,
              durable_mbs);
  std::printf("%-44s %10.1f %10.3f %10.0f\n", "(b) LineageStore incl. file digest + LATEST", store_bytes / 1e6,
              joined_seconds, joined_mbs);
  for (const Peer* p : {&same, &zeros})
    std::printf("%-44s %10.1f %10.3f %10.0f\n", p->name, p->bytes / 1e6, p->seconds, p->bytes / p->seconds / 1e6);
  std::printf("ratio vs dd of zeros (earlier peer): (a) %.2f, (b) %.2f\n", durable_mbs / (zeros.bytes / zeros.seconds / 1e6),
              joined_mbs / (zeros.bytes / zeros.seconds / 1e6));
  const double ratio_a = durable_mbs / dd_mbs, ratio_b = joined_mbs / dd_mbs;
  std::printf("checkpoint write bandwidth ratio (ours/dd of the same bytes): (a) until durable %.2f -> goal >= 0.8 %s; "
              "(b) incl. background digest + LATEST %.2f\n",
              ratio_a, ratio_a >= 0.8 ? "MET" : "MISSED", ratio_b);
  fs::remove_all(dir);
  return 0;
}
