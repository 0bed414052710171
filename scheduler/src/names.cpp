// Names of the scheduler's enums, in a file of their own: the manifest loader needs them, and
// keeping them out of loop.cpp and governance.cpp lets a program link the loader without MPI or the loop
// (tests/fuzz/ builds the loader with only yaml-cpp and the genome parser).
#include "rsi/scheduler/governance.h"
#include "rsi/scheduler/loop.h"

namespace rsi::scheduler {

const char* selection_name(SelectionKind k) {
  switch (k) {
    case SelectionKind::Truncation: return "truncation";
    case SelectionKind::Tournament: return "tournament";
    case SelectionKind::Aging: return "aging";
  }
  return "?";
}

const char* on_reject_name(GateConfig::OnReject r) { return r == GateConfig::OnReject::Stop ? "stop" : "rollback"; }

const char* strategy_name(ImprovementConfig::Strategy s) {
  return s == ImprovementConfig::Strategy::Random ? "random" : "evolved";
}

}  // namespace rsi::scheduler
