// Progress display of `rsi run` on the coordinator. On a terminal: a generation bar with elapsed time
// and ETA over the whole run and a line of per-child status (trained, failed, still running or
// queued), redrawn in place, above one permanent summary line per generation. Otherwise (a log file,
// Slurm output): plain lines, each prefixed with the UTC time and the rank, one per generation start,
// finished child and generation. A summary table at the end either way.
//
// The formatting is made of pure functions (bar, ETA, status line) so tests/unit/test_progress.cpp
// checks them without a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

#include "rsi/scheduler/record.h"

namespace rsi::runtime {

// "12.3s", "4m05s", "2h07m"; "--" for a negative (unknown) time.
std::string fmt_seconds(double s);

// "[=========>          ]" of `width` cells between the brackets; the fraction is clamped to [0, 1].
std::string progress_bar(double fraction, int width);

// Seconds left when `fraction` of the work took `elapsed` seconds, at the same pace; -1 (unknown)
// before any work is done.
double eta_seconds(double elapsed, double fraction);

// What a run's time scales with: forward FLOPs x training samples of each trained child (its
// `work`). Generations grow, so the pace of the past (work per second) times the work still to come
// says more than the mean generation time: after generation 8 of the quickstart the old ETA said
// 2m01s and generation 9 alone took 4m23s.
struct WorkSoFar {
  std::vector<double> generations;  // work of each complete generation this process ran, in order
  bool in_flight = false;           // a generation is running
  double in_flight_work = 0;        // of its children finished so far
  int in_flight_done = 0, in_flight_total = 0;
  int later = 0;                    // generations after the one in flight (or after the last complete)
};
double generation_work(const scheduler::GenerationRecord& g);
double model_work(const scheduler::ModelRecord& m);
// The work still to come: the generation in flight at its finished children's mean per child, each
// later one as the one before times the last complete generation's growth over its predecessor
// (clamped to 1..2), up to 8 times the current generation. `next` (if given) gets the expected work
// of the next generation to start.
double remaining_work(const WorkSoFar& w, double* next = nullptr);
// Seconds left at the pace of the work done in `elapsed` seconds; -1 when no work is known yet (a
// surrogate task trains nothing: the caller falls back to eta_seconds).
double cost_eta_seconds(const WorkSoFar& w, double elapsed);

// "[rank 3]": every line a rank writes to a log carries it (several ranks share one Slurm log).
std::string rank_tag(int rank);

// "2026-11-26T01:40:02Z [rank 0] ": the prefix of a plain log line.
std::string log_prefix(int rank, std::time_t when);

// Whether the display may redraw in place on `fd`: a terminal; under mpirun (Open MPI, or MPICH's
// hydra) the launcher's own standard output, which a rank finds among its ancestors on this host
// (launcher_terminal), since the rank's own output says nothing (Open MPI hands each rank a
// pseudo-terminal even when mpirun's output goes to a file); under srun never. RSI_PROGRESS=tty or
// RSI_PROGRESS=plain in the environment overrides the guess.
bool interactive_output(int fd);
// The terminal (/dev/pts/N, /dev/ttyN) the MPI launcher this process descends from writes its
// standard output to; "" when there is no such launcher on this host or its output is not a terminal.
std::string launcher_terminal();

// What is known of one child of the generation in flight.
struct ChildState {
  std::uint64_t id = 0;
  scheduler::ModelRecord::Status status = scheduler::ModelRecord::Status::Trained;
  double val_accuracy = 0.0;
};

// The per-child status line: counts, then each finished child in the order it finished, cut to
// `width` characters (ending in "...") so it never wraps on the terminal.
std::string children_line(const std::vector<ChildState>& done, int total, int width);

// The generation bar line: generation g of [first, last], how far the whole run (in this process)
// is, elapsed and ETA.
// `eta` < -1: from the fraction at the same pace (eta_seconds).
std::string bar_line(int generation, int last_generation, double fraction, double elapsed, int width,
                     double eta = -2);

class Progress final : public scheduler::GenerationSink {
 public:
  // Generations 0..`generations` are run; `tty` picks the redrawn display over plain log lines.
  Progress(int generations, bool tty, int rank = 0, std::FILE* out = stdout);
  void on_generation(const scheduler::GenerationRecord& g) override;
  void on_model_done(const scheduler::ModelRecord& m);
  void on_generation_start(int generation, int total);
  void on_finish() override;
  // Seconds since this process started the run.
  double elapsed() const;
  // Seconds left: from the work (cost_eta_seconds) when it is known, else from the fraction; -1
  // before anything is known (the status file records it: run_status.h).
  double eta() const;

 private:
  // Fraction of this process's generations done, counting the children finished in the one in flight.
  double fraction() const;
  WorkSoFar work() const;
  void clear_live();
  void draw_live();
  void log(const std::string& line);

  int generations_;
  bool tty_;
  int rank_;
  std::FILE* out_;
  std::chrono::steady_clock::time_point start_;
  std::vector<scheduler::GenerationRecord> rows_;
  int first_generation_ = -1;  // the first generation this process runs (> 0 after a resume)
  int current_ = -1;
  int done_ = 0, total_ = 0;
  std::vector<ChildState> children_;
  std::vector<double> work_;      // of each complete generation
  double in_flight_work_ = 0;     // of the children finished in the generation in flight
  double predicted_seconds_ = -1; // the next generation's time as predicted at the last one's end
  int live_lines_ = 0;  // lines of the in-place display now on the terminal
};

}  // namespace rsi::runtime
