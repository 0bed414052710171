// The shipped seed genomes (experiments/genomes/NAME.yaml), for the unit tests that run the loop.
#pragma once

#include <string>

#include "rsi/models/genome.h"

inline rsi::models::Genome seed_genome(const std::string& name) {
  return rsi::models::load_genome(std::string(RSI_SOURCE_DIR) + "/experiments/genomes/" + name + ".yaml");
}
