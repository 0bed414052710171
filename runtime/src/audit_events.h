// Every governance event of a run, in order: the lineage's events (gates, approvals, rejections, red
// lines, the budget, monitor alerts) with their provenance hashes, the designs the design limits
// refused, and the entries of audit.log (stops, decisions as written) by time. `rsi audit` prints them
// (text or --json); `rsi status` shows the last one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace rsi::runtime {

struct AuditEvent {
  std::string when;  // UTC ISO 8601; "" for a refused design (the lineage keeps no time for it)
  int generation = -1;
  std::uint64_t model = 0;  // 0: the event concerns the generation or the run
  std::string kind, who, reason;
  std::string provenance;   // the model's or generation's hash; for audit.log entries, a note saying so
  bool from_audit_log = false;
};

struct AuditTrail {
  std::vector<AuditEvent> events;
  std::vector<std::string> problems;  // generation files that did not read (their events are missing)
  int files = 0;                      // generation files present
  int latest_generation = -1;         // of the newest file that read
  std::string latest_status;          // its record's status ("completed", "awaiting_approval")
};

// Throws checkpoints::CheckpointError when the directory holds no generation file.
AuditTrail audit_trail(const std::filesystem::path& run);

}  // namespace rsi::runtime
