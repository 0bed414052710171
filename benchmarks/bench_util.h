// Small helpers shared by the benchmark programs: the median of timings and byte counts as people read them.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace rsi::bench {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// "4 MiB", "32 KiB" (whole units, as the size tables print them).
inline std::string human_bytes(std::size_t b) {
  char s[32];
  if (b >= (std::size_t{1} << 20)) std::snprintf(s, sizeof s, "%zu MiB", b >> 20);
  else std::snprintf(s, sizeof s, "%zu KiB", b >> 10);
  return s;
}

// The integer value of option argv[i] (argv[i + 1]); advances i past it. Throws naming the option
// when the value is missing.
inline long option_value(int argc, char** argv, int& i) {
  if (i + 1 >= argc) throw std::runtime_error(std::string(argv[i]) + " needs a value");
  ++i;
  return std::strtol(argv[i], nullptr, 10);
}

}  // namespace rsi::bench
