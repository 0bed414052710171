#include "rsi/kernels/report.h"

#include <atomic>
#include <cstdio>

namespace rsi::kernels {
namespace {
std::atomic<ReportHandler> handler{nullptr};
}

void set_report_handler(ReportHandler h) { handler.store(h); }

void report(ReportLevel level, const std::string& text) noexcept {
  try {
    if (const ReportHandler h = handler.load()) return h(level, text);
  } catch (...) {  // a handler that throws: stderr instead
  }
  std::fprintf(stderr, "rsi: %s: %s\n", level == ReportLevel::Error ? "error" : "warning", text.c_str());
}

}  // namespace rsi::kernels
