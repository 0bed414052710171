// YAML that people write (manifests, genome files): what every reader refuses the same way.
// One document only (a second `---` document would be dropped silently), no tags (yaml-cpp ignores
// `!!python/object` and `!foo`, so the value would be read as something the writer did not mean),
// and error positions counted in the text the user wrote. Used by models::from_yaml and
// runtime::parse_manifest; genome_from_node reads a genome written inline in a manifest.
#pragma once

#include <optional>
#include <string>

#include <yaml-cpp/yaml.h>

#include "rsi/models/genome.h"

namespace rsi::models {

// "source:line:column" of a node (just `source` when the node has no position).
std::string yaml_position(const std::string& source, const YAML::Mark& mark);

// The one document of `text` (a null node when it is empty). Throws YAML::ParserException as
// YAML::Load does; returns the problem, with its position, when there is more than one document
// with content or when a node carries a tag. `visits` bounds the walk (aliases make the nodes a
// graph that can expand exponentially); nodes past it are not checked.
struct YamlDocument {
  YAML::Node root;
  std::optional<std::string> problem;
};
YamlDocument load_yaml_document(const std::string& text, const std::string& source);

// A genome written as a YAML node inside another document (a manifest's inline seed): positions
// are the enclosing file's, and quoting is kept ("128" is a string, as in a genome file).
Genome genome_from_node(const YAML::Node& node, const std::string& source, const DesignerGeneRanges* genes = nullptr);

// Up to `max` characters of the line of `text` a problem is at, for quoting in a message: a file
// that is not what the user meant (a seed path naming /etc/passwd) must not be printed whole.
std::string excerpt(const std::string& text, std::size_t max = 60);

}  // namespace rsi::models
