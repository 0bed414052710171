// `rsi validate FILE`: checks a manifest and prints it resolved (every key, defaults filled in).
#include <cstdio>

#include "rsi/runtime/commands.h"
#include "rsi/runtime/manifest.h"

namespace rsi::runtime {

void add_validate_command(CLI::App& app, std::function<int()>& run) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("validate",
                                     "Check a manifest and print it resolved: every key of the schema with its value,\n"
                                     "defaults filled in, seed genomes in their canonical form. Errors name\n"
                                     "file:line:column and the key; exit code 3 then.");
  cmd->add_option("manifest", *path, "Manifest YAML (see experiments/README.md)")->required();
  cmd->callback([&run, path] {
    run = [path] {
      try {
        const RunConfig config = load_manifest(*path);
        std::printf("# %s: valid (manifest hash %s)\n%s", path->c_str(), config.manifest_hash.c_str(),
                    resolved_yaml(config).c_str());
        return static_cast<int>(kExitOk);
      } catch (const ManifestError& e) {
        std::fprintf(stderr, "rsi validate: %s\n", e.what());
        return static_cast<int>(kExitBadInput);
      }
    };
  });
}

}  // namespace rsi::runtime
