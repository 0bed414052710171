// Messages from code below runtime/ that has nowhere to throw (destructors: a network that cannot
// move back to its device, a lineage store's unseen background error, a CUDA call that fails while
// freeing). They reach the process's one logging facility once it installed itself (runtime's main
// does, with log.h), so they carry the command, rank and time prefix; before that, stderr.
#pragma once

#include <string>

namespace rsi::kernels {

enum class ReportLevel { Error, Warning };
using ReportHandler = void (*)(ReportLevel level, const std::string& text);

// Where messages go; nullptr: stderr ("rsi: warning: TEXT", "rsi: error: TEXT").
void set_report_handler(ReportHandler handler);
// Thread-safe; never throws.
void report(ReportLevel level, const std::string& text) noexcept;
inline void report_warning(const std::string& text) noexcept { report(ReportLevel::Warning, text); }
inline void report_error(const std::string& text) noexcept { report(ReportLevel::Error, text); }

}  // namespace rsi::kernels
