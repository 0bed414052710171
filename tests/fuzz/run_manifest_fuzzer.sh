#!/usr/bin/env bash
# CTest's fuzz_manifest: builds tests/fuzz/ with clang (libFuzzer + ASan + UBSan) in BUILD_DIR/fuzz
# and fuzzes the manifest loader for a bounded time, starting from tests/fuzz/corpus/ (the shipped
# manifests and the bad ones of tests/unit/test_manifest.cpp). Any finding fails the test and
# leaves the input under BUILD_DIR/fuzz/findings/ with the command that replays it.
#   bash tests/fuzz/run_manifest_fuzzer.sh BUILD_DIR SOURCE_DIR
#   RSI_FUZZ_SECONDS=600 bash tests/fuzz/run_manifest_fuzzer.sh ...   # a longer run (default 45 s)
# Exits 77 (CTest: skipped) only when no clang is installed. About 1.5 minutes on 2 cores with a
# cold ccache (the build is ~40 s of it).
set -euo pipefail

build_dir=${1:?usage: run_manifest_fuzzer.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: run_manifest_fuzzer.sh BUILD_DIR SOURCE_DIR}
seconds=${RSI_FUZZ_SECONDS:-45}
fuzz_dir=$build_dir/fuzz

cxx=${RSI_FUZZ_CXX:-}
if [[ -z $cxx ]]; then
  for candidate in clang++ clang++-14 clang++-15 clang++-16; do
    if command -v "$candidate" >/dev/null; then cxx=$(command -v "$candidate"); break; fi
  done
fi
if [[ -z $cxx ]]; then
  echo "run_manifest_fuzzer.sh: SKIPPED: no clang++ found; libFuzzer needs clang." \
       "Install it with scripts/setup (Debian: apt-get install clang libclang-rt-14-dev) or set RSI_FUZZ_CXX." >&2
  exit 77
fi
cc=${cxx/clang++/clang}

launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
if [[ ! -f $fuzz_dir/CMakeCache.txt ]]; then
  CC=$cc CXX=$cxx cmake -S "$source_dir/tests/fuzz" -B "$fuzz_dir" "${launcher[@]}" >"$build_dir/fuzz-configure.log" 2>&1 || {
    cat "$build_dir/fuzz-configure.log" >&2
    echo "FAIL: configuring tests/fuzz with $cxx failed (log above)" >&2
    exit 1
  }
fi
if ! cmake --build "$fuzz_dir" -j"$(nproc)" >"$fuzz_dir/build.log" 2>&1; then
  tail -40 "$fuzz_dir/build.log" >&2
  echo "FAIL: building manifest_fuzzer with $cxx failed (log above; 'cannot find -lclang_rt.fuzzer'" \
       "means libFuzzer is missing: apt-get install libclang-rt-14-dev)" >&2
  exit 1
fi

# A fresh working corpus each run: libFuzzer writes the inputs it finds interesting into the first
# directory, and the shipped corpus stays as committed.
work=$fuzz_dir/corpus-work
findings=$fuzz_dir/findings
rm -rf "$work"
mkdir -p "$work" "$findings"
log=$fuzz_dir/fuzz.log
echo "fuzz_manifest: fuzzing the manifest loader for $seconds s ($fuzz_dir/manifest_fuzzer)"
status=0
# The outer timeout catches a fuzzer that stops answering altogether; -timeout catches one slow input.
timeout --kill-after=10 $((seconds + 120)) \
  "$fuzz_dir/manifest_fuzzer" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 -max_len=8192 \
  -dict="$source_dir/tests/fuzz/manifest.dict" -artifact_prefix="$findings/" -print_final_stats=1 \
  "$work" "$source_dir/tests/fuzz/corpus" >"$log" 2>&1 || status=$?
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|^#[0-9]+ *DONE' "$log" || true
if ((status != 0)); then
  grep -v -E '^#[0-9]+ *(NEW|REDUCE|pulse)|NEW_FUNC' "$log" | tail -60 >&2
  artifact=$(grep -o "Test unit written to .*" "$log" | tail -1 | sed 's/Test unit written to //')
  echo "FAIL: manifest_fuzzer exited $status: a finding (crash, hang, leak, sanitizer report or a wrong exception)." >&2
  [[ -n $artifact ]] && echo "  input: $artifact; replay: $fuzz_dir/manifest_fuzzer $artifact" >&2
  echo "  full log: $log. Fix the loader and add the input to tests/fuzz/corpus/ or tests/unit/test_manifest.cpp." >&2
  exit 1
fi
echo "fuzz_manifest: no findings"
