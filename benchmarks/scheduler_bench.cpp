// scheduler_bench — how close the RSI loop's scheduler comes to the ideal on the surrogate task.
//
// Every task costs a fixed C seconds (the surrogate spends its cost waiting, so 8 ranks fit on 2
// cores). With k trainer groups a generation of n tasks ideally takes ceil(n / k) * C; the run's
// ideal wall is the sum over generations (the seed generation included). The benchmark prints,
// per generation, the ideal and measured time and where the coordinator spent the rest (design
// before dispatch, the training phase, commit after the last result), then:
//   efficiency          = ideal wall / measured wall                       (goal >= 0.95)
//   coordinator overhead = the coordinator's own serial work per task: its design phase (design,
//                         task building) and commit phase (results in id order, selection,
//                         monitors, sinks), timed in the same loop with C = 0 on one rank, so
//                         that the 7 other ranks do not compete for the cores (best of 3)
//                                                                          (goal <= 200 us)
//   lost wall per task  = (measured - ideal) / tasks (everything together: coordinator work,
//                         message latency, polling sleeps, oversleeping of the cost itself)
// and, to tell the losses apart: the coordinator's design + commit time in the run, the tasks'
// oversleep of their cost, their execution beyond it, and the same loop with C = 0 on all ranks
// (the protocol's task throughput).
//
// How to run (from the repository root, after building; see benchmarks/scheduler):
//   mpirun -n 8 --oversubscribe build/benchmarks/scheduler_bench [--cost 0.2] [--children 32]
//          [--population 8] [--generations 4] [--group-size 1]
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "rsi/collective/communicator.h"
#include "rsi/models/genome.h"
#include "rsi/scheduler/loop.h"
#include "rsi/scheduler/record.h"
#include "rsi/scheduler/surrogate.h"

namespace {

using Clock = std::chrono::steady_clock;
using rsi::scheduler::GenerationRecord;
using rsi::scheduler::LoopConfig;

double seconds_between(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Timestamps of the coordinator's phases, taken from the loop's events and a sink.
struct PhaseClock final : rsi::scheduler::GenerationSink {
  struct Generation {
    int tasks = 0;
    Clock::time_point dispatch, last_result, committed;
  };
  Clock::time_point start;
  std::vector<Generation> generations;
  double cost = 0.0;
  double overrun = 0.0;  // sum over trained tasks of their measured wall minus their cost
  int trained = 0;
  std::vector<std::pair<std::uint64_t, std::string>> genomes;  // (id, genome) of every task

  void on_generation_start(int generation, int tasks) {
    generations.resize(static_cast<std::size_t>(generation) + 1);
    generations.back().tasks = tasks;
    generations.back().dispatch = generations.back().last_result = Clock::now();
  }
  void on_model_done() { generations.back().last_result = Clock::now(); }
  void on_generation(const GenerationRecord& record) override {
    generations.back().committed = Clock::now();
    for (const auto& m : record.children) {
      genomes.emplace_back(m.id, m.genome_yaml);
      if (m.trained()) overrun += m.metrics.wall_seconds - cost, ++trained;
    }
  }

  // Time from the previous commit (or the start) to this generation's dispatch: design.
  double design_seconds(std::size_t g) const {
    return seconds_between(g == 0 ? start : generations[g - 1].committed, generations[g].dispatch);
  }
  double train_seconds(std::size_t g) const { return seconds_between(generations[g].dispatch, generations[g].last_result); }
  double commit_seconds(std::size_t g) const {
    return seconds_between(generations[g].last_result, generations[g].committed);
  }
  double design_and_commit_seconds() const {
    double s = 0.0;
    for (std::size_t g = 0; g < generations.size(); ++g) s += design_seconds(g) + commit_seconds(g);
    return s;
  }
};

struct Measured {
  double wall = 0.0;
  int tasks = 0;
  PhaseClock phases;
};

// Collective over `world`; the timings are meaningful on rank 0.
Measured run(const LoopConfig& config, rsi::collective::Communicator& world) {
  Measured out;
  rsi::scheduler::LoopEvents events;
  std::vector<rsi::scheduler::GenerationSink*> sinks;
  if (world.rank() == 0) {
    PhaseClock* clock = &out.phases;
    events.on_generation_start = [clock](int g, int n) { clock->on_generation_start(g, n); };
    events.on_model_done = [clock](const rsi::scheduler::ModelRecord&) { clock->on_model_done(); };
    sinks.push_back(clock);
  }
  world.barrier();
  out.phases.cost = config.task.surrogate_cost_seconds;
  out.phases.start = Clock::now();
  rsi::scheduler::run_loop(config, world, sinks, events);
  out.wall = seconds_between(out.phases.start, Clock::now());
  world.barrier();
  for (const auto& g : out.phases.generations) out.tasks += g.tasks;
  return out;
}

// What a task does besides waiting out its cost (see scheduler/src/task.cpp): parse its genome
// and score it. Seconds for all of `genomes`, best of 3.
double task_execution_seconds(const std::vector<std::pair<std::uint64_t, std::string>>& genomes, const LoopConfig& config) {
  double best = 1e30;
  for (int i = 0; i < 3; ++i) {
    const auto start = Clock::now();
    double sink = 0.0;
    for (const auto& [id, yaml] : genomes)
      sink += rsi::scheduler::surrogate_evaluate(rsi::models::from_yaml(yaml, "task genome"), config.seed, id,
                                                 config.task.surrogate_noise)
                  .metrics.val_accuracy;
    best = std::min(best, seconds_between(start, Clock::now()) + 0.0 * sink);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  double cost = 0.2;
  int children = 32, population = 8, generations = 4, group_size = 1;
  CLI::App app{"Scheduler efficiency and coordinator overhead of the RSI loop on the surrogate task."};
  app.add_option("--cost", cost, "seconds per task (default 0.2)")->check(CLI::Range(0.0, 60.0));
  app.add_option("--children", children, "children per generation (default 32)")->check(CLI::PositiveNumber);
  app.add_option("--population", population, "population size (default 8)")->check(CLI::PositiveNumber);
  app.add_option("--generations", generations, "generations after the seeds (default 4)")->check(CLI::NonNegativeNumber);
  app.add_option("--group-size", group_size, "ranks per trainer group (default 1)")->check(CLI::PositiveNumber);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    MPI_Finalize();
    return rc;
  }

  auto world = rsi::collective::make_mpi_world_communicator();
  const int rank = world->rank();
  if (world->size() % group_size != 0) {
    if (rank == 0)
      std::fprintf(stderr, "scheduler_bench: --group-size %d does not divide the %d ranks\n", group_size,
                   world->size());
    MPI_Finalize();
    return 2;
  }
  const int groups = world->size() / group_size;

  LoopConfig config;
  config.seed = 1;
  config.generations = generations;
  config.population_size = population;
  config.children_per_generation = children;
  config.group_size = group_size;
  config.task.kind = rsi::scheduler::TaskSpec::Kind::Surrogate;
  config.task.surrogate_cost_seconds = cost;
  config.task.surrogate_noise = 0.005;
  const std::string genomes = std::string(RSI_SOURCE_DIR) + "/experiments/genomes/";
  config.seeds = {rsi::models::load_genome(genomes + "linear.yaml"), rsi::models::load_genome(genomes + "mlp.yaml")};

  const Measured main_run = run(config, *world);
  LoopConfig free_tasks = config;
  free_tasks.task.surrogate_cost_seconds = 0.0;
  const Measured protocol = run(free_tasks, *world);

  if (rank == 0) {
    // The coordinator's own work per task: the same loop with free tasks on one rank (best of 3).
    auto local = rsi::collective::make_local_communicator();
    LoopConfig alone = free_tasks;
    alone.group_size = 1;
    double alone_wall = 1e30, alone_own = 1e30;
    int alone_tasks = 0;
    std::vector<std::pair<std::uint64_t, std::string>> alone_genomes;
    for (int i = 0; i < 3; ++i) {
      const Measured m = run(alone, *local);
      alone_wall = std::min(alone_wall, m.wall);
      alone_own = std::min(alone_own, m.phases.design_and_commit_seconds());
      alone_tasks = m.tasks;
      alone_genomes = m.phases.genomes;
    }
    const double execution = task_execution_seconds(alone_genomes, alone);
    const double coordinator_per_task = alone_own / alone_tasks;

    const auto& ph = main_run.phases;
    std::printf("scheduler_bench: %d ranks in %d groups of %d, surrogate task of %.3f s, population %d, "
                "%d children x %d generations + %zu seeds = %d tasks\n\n",
                world->size(), groups, group_size, cost, population, children, generations, config.seeds.size(),
                main_run.tasks);
    std::printf("%-4s %6s %9s %9s %9s %9s %9s %7s\n", "gen", "tasks", "ideal_s", "wall_s", "design_ms", "train_s",
                "commit_ms", "eff");
    double ideal = 0.0, design = 0.0, commit = 0.0;
    for (std::size_t g = 0; g < ph.generations.size(); ++g) {
      const int tasks = ph.generations[g].tasks;
      const double gen_ideal = std::ceil(static_cast<double>(tasks) / groups) * cost;
      const double gen_wall = ph.design_seconds(g) + ph.train_seconds(g) + ph.commit_seconds(g);
      ideal += gen_ideal;
      design += ph.design_seconds(g);
      commit += ph.commit_seconds(g);
      std::printf("%-4zu %6d %9.4f %9.4f %9.3f %9.4f %9.3f %7.4f\n", g, tasks, gen_ideal, gen_wall,
                  1e3 * ph.design_seconds(g), ph.train_seconds(g), 1e3 * ph.commit_seconds(g),
                  gen_wall > 0 ? gen_ideal / gen_wall : 0.0);
    }
    const double tasks = main_run.tasks;
    const double tail = main_run.wall - seconds_between(ph.start, ph.generations.back().committed);
    std::printf("%-4s %6d %9.4f %9.4f %9.3f %9s %9.3f %7.4f   (wall includes %.3f ms stopping the workers)\n\n",
                "all", main_run.tasks, ideal, main_run.wall, 1e3 * design, "", 1e3 * commit, ideal / main_run.wall,
                1e3 * tail);

    const auto row = [](const char* what, double us) { std::printf("  %-66s %9.1f us\n", what, us); };
    std::printf("per task:\n");
    row("lost wall: (measured - ideal) / tasks", 1e6 * (main_run.wall - ideal) / tasks);
    row("coordinator design + commit in this run (serial, workers idle)", 1e6 * (design + commit) / tasks);
    row("task oversleep: its measured wall - cost, mean", 1e6 * ph.overrun / std::max(ph.trained, 1));
    row("task execution besides the cost: parse genome + score (best of 3)", 1e6 * execution / alone_tasks);
    row("free tasks on all ranks: wall / tasks (protocol throughput)", 1e6 * protocol.wall / protocol.tasks);
    row("free tasks on 1 rank: wall / tasks (best of 3)", 1e6 * alone_wall / alone_tasks);
    row("free tasks on 1 rank: design + commit / tasks (best of 3)", 1e6 * coordinator_per_task);
    std::printf("\nefficiency %.4f (goal >= 0.95)\n", ideal / main_run.wall);
    std::printf("coordinator overhead %.1f us/task (goal <= 200)\n", 1e6 * coordinator_per_task);
    std::fflush(stdout);
  }
  MPI_Finalize();
  return 0;
}
