// libFuzzer target for the manifest loader (runtime/src/manifest.cpp): bytes in, parse_manifest
// out. The contract it checks: every input ends in a RunConfig or a ManifestError — any other
// exception, crash, hang or sanitizer report is a finding. A manifest that loads must also
// round-trip: its resolved form (what `rsi validate` prints and a checkpoint stores) loads again to
// the same resolved form, and manifest_differences finds nothing between a text and itself.
//
// Build and run: see tests/fuzz/CMakeLists.txt and tests/README.md. Seed paths in the input are
// resolved against experiments/, so "genomes/linear.yaml" reaches the genome parser.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "rsi/runtime/manifest.h"

namespace {

[[noreturn]] void finding(const std::string& what, const std::string& input) {
  std::fprintf(stderr, "manifest_fuzzer: FINDING: %s\n--- input (%zu bytes) ---\n%s\n--- end of input ---\n",
               what.c_str(), input.size(), input.c_str());
  std::abort();
}

// RSI_FUZZ_PRINT=1 prints each input's outcome: for replaying inputs by hand.
const bool kPrint = std::getenv("RSI_FUZZ_PRINT") != nullptr;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string base_dir = RSI_SOURCE_DIR "/experiments";
  rsi::runtime::RunConfig config;
  try {
    config = rsi::runtime::parse_manifest(text, "fuzz.yaml", base_dir);
  } catch (const rsi::runtime::ManifestError& e) {
    if (kPrint) std::fprintf(stderr, "manifest_fuzzer: ManifestError: %s\n", e.what());
    if (std::string(e.what()).rfind("fuzz.yaml", 0) != 0)
      finding(std::string("a ManifestError that does not start with the file name: ") + e.what(), text);
    return 0;
  } catch (const std::exception& e) {
    finding(std::string("parse_manifest threw something other than ManifestError: ") + e.what(), text);
  } catch (...) {
    finding("parse_manifest threw a non-std exception", text);
  }

  if (kPrint) std::fprintf(stderr, "manifest_fuzzer: loaded '%s'\n", config.name.c_str());
  std::string resolved;
  try {
    resolved = rsi::runtime::resolved_yaml(config);
    const auto again = rsi::runtime::parse_manifest(resolved, "resolved.yaml", "/nonexistent");
    if (const std::string twice = rsi::runtime::resolved_yaml(again); twice != resolved)
      finding("the resolved manifest does not round-trip:\n" + resolved + "--- resolves again to ---\n" + twice, text);
    if (!(again.loop.seeds == config.loop.seeds)) finding("the resolved manifest's seeds differ", text);
    if (const std::string d = rsi::runtime::manifest_differences(text, text); !d.empty())
      finding("manifest_differences of a text with itself is not empty:\n" + d, text);
  } catch (const std::exception& e) {
    finding(std::string("a manifest that loads fails to round-trip: ") + e.what() + "\n--- resolved ---\n" + resolved,
            text);
  }
  return 0;
}
