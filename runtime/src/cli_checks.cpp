// Command-line checks every subcommand shares: input paths that must exist (a missing one is exit
// code 3, the documented "input missing or invalid", not CLI11's usage error 2), and a command name
// that does not exist (named, with a did-you-mean, exit code 2).
#include <filesystem>
#include <string>
#include <vector>

#include "rsi/models/edit_distance.h"
#include "rsi/runtime/commands.h"

namespace rsi::runtime {

namespace {
bool g_missing_input = false;

CLI::Validator existing_path(bool directory) {
  return CLI::Validator(
      [directory](std::string& path) -> std::string {
        std::error_code ec;
        const auto status = std::filesystem::status(path, ec);
        std::string problem;
        if (!std::filesystem::exists(status))
          problem = path + ": no such " + (directory ? "directory" : "file");
        else if (directory && !std::filesystem::is_directory(status))
          problem = path + ": not a directory";
        else if (!directory && std::filesystem::is_directory(status))
          problem = path + ": a directory, not a file";
        if (!problem.empty()) g_missing_input = true;
        return problem;
      },
      directory ? "DIR" : "FILE");
}
}  // namespace

const CLI::Validator& existing_file() {
  static const CLI::Validator v = existing_path(false);
  return v;
}

const CLI::Validator& existing_directory() {
  static const CLI::Validator v = existing_path(true);
  return v;
}

bool missing_input_seen() { return g_missing_input; }

std::string unknown_command(const CLI::App& app, int argc, char** argv) {
  if (argc < 2) return "";
  const std::string word = argv[1];
  if (word.empty() || word[0] == '-') return "";  // an option of rsi itself (--help, --version)
  std::vector<std::string> names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    if (sub->get_name() == word) return "";
    names.push_back(sub->get_name());
  }
  std::string best, all;
  std::size_t best_distance = 99;
  for (const auto& n : names) {
    all += (all.empty() ? "" : ", ") + n;
    if (const std::size_t d = models::edit_distance(word, n); d < best_distance) best_distance = d, best = n;
  }
  std::string message = "'" + word + "' is not an rsi command";
  if (best_distance <= 2 || (best_distance <= 3 && word.size() > 4)) message += " (did you mean '" + best + "'?)";
  return message + "; the commands are: " + all + " (rsi --help says what each does)";
}

}  // namespace rsi::runtime
