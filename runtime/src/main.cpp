// rsi — the command line. `rsi --help` lists the subcommands; `rsi SUBCOMMAND --help` explains each.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <functional>

#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"

int main(int argc, char** argv) {
  CLI::App app{
      "rsi — recursive self-improvement experiments: generations of parent networks design, distill and\n"
      "fine-tune child networks on Fashion-MNIST, traced and governed.\n"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("rsi ") + RSI_VERSION);
  std::function<int()> run;
  rsi::runtime::add_train_command(app, run);
  rsi::runtime::add_run_command(app, run);
  rsi::runtime::add_validate_command(app, run);
  rsi::runtime::add_lineage_commands(app, run);
  rsi::runtime::add_report_command(app, run);
  rsi::runtime::add_study_command(app, run);
  rsi::runtime::add_compare_command(app, run);
  rsi::runtime::add_submit_command(app, run);
  rsi::runtime::add_status_command(app, run);
  rsi::runtime::add_governance_commands(app, run);
  // `rsi stauts RUN` would otherwise read as a missing subcommand, and `rsi nosuch --help` print
  // the main help with exit code 0.
  if (const std::string unknown = rsi::runtime::unknown_command(app, argc, argv); !unknown.empty()) {
    rsi::runtime::log_error(unknown);
    return rsi::runtime::kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (rsi::runtime::missing_input_seen()) {  // an input path that does not exist: exit code 3
      rsi::runtime::set_log_source(argc > 1 ? argv[1] : "");
      rsi::runtime::log_error(std::string("argument ") + e.what());
      return rsi::runtime::kExitBadInput;
    }
    const int rc = app.exit(e);
    return rc == 0 ? 0 : rsi::runtime::kExitUsage;
  }
  // Every message from here on names the command (rsi/runtime/log.h).
  for (const CLI::App* sub : app.get_subcommands()) rsi::runtime::set_log_source(sub->get_name());
  try {
    return run();
  } catch (const std::exception& e) {
    rsi::runtime::log_error(std::string("error: ") + e.what());
    return rsi::runtime::kExitFailure;
  }
}
