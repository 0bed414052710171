// `rsi validate FILE`: checks a manifest and prints it resolved (every key, defaults filled in).
#include <cstdio>

#include "rsi/monitoring/exporter.h"
#include "rsi/runtime/commands.h"
#include "rsi/runtime/log.h"
#include "rsi/runtime/manifest.h"

namespace rsi::runtime {

void add_validate_command(CLI::App& app, std::function<int()>& run) {
  auto path = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("validate",
                                     "Check a manifest and print it resolved: every key of the schema with its value,\n"
                                     "defaults filled in, seed genomes in their canonical form. Errors name\n"
                                     "file:line:column and the key; exit code 3 then.");
  cmd->add_option("manifest", *path, "Manifest YAML (see experiments/README.md)")->required();
  cmd->add_flag("--json", *json,
                "One JSON object on stdout: manifest, valid, and manifest_hash and resolved (the resolved YAML\n"
                "as a string), or error (file:line:column and what is wrong); the exit code is the same");
  cmd->callback([&run, path, json] {
    run = [path, json] {
      using monitoring::json_string;
      try {
        const RunConfig config = load_manifest(*path);
        if (*json)
          std::printf("{\"manifest\": %s, \"valid\": true, \"manifest_hash\": %s, \"input\": [%d, %d, %d, %d], "
                      "\"resolved\": %s}\n",
                      json_string(*path).c_str(), json_string(config.manifest_hash).c_str(),
                      config.loop.task.input.channels, config.loop.task.input.height, config.loop.task.input.width,
                      config.loop.task.input.classes, json_string(resolved_yaml(config)).c_str());
        else {
          std::printf("# %s: valid (manifest hash %s)\n", path->c_str(), config.manifest_hash.c_str());
          if (config.loop.task.kind == scheduler::TaskSpec::Kind::Images) {
            const models::InputSpec& in = config.loop.task.input;
            std::printf("# data: input %dx%dx%d, %d classes (channels x height x width, read from the files)\n",
                        in.channels, in.height, in.width, in.classes);
          }
          std::printf("%s", resolved_yaml(config).c_str());
        }
        return static_cast<int>(kExitOk);
      } catch (const ManifestError& e) {
        if (*json)
          std::printf("{\"manifest\": %s, \"valid\": false, \"error\": %s}\n", json_string(*path).c_str(),
                      json_string(e.what()).c_str());
        else
          log_error(e.what());
        return static_cast<int>(kExitBadInput);
      }
    };
  });
}

}  // namespace rsi::runtime
