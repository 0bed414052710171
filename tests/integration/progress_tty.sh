#!/usr/bin/env bash
# The progress display under mpirun: with mpirun's own output on a terminal (a pseudo-terminal from
# `script`), rank 0 redraws its generation bar in place; with mpirun's output in a file, plain
# timestamped lines and no escape sequences. A rank's own output is a pipe either way, so rank 0
# must look at the launcher's (runtime/src/progress.cpp, launcher_terminal).
#   bash tests/integration/progress_tty.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: progress_tty.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: progress_tty.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "progress_tty.sh: no rsi executable at $rsi" >&2; exit 1; }
command -v script >/dev/null || { echo "progress_tty.sh: needs script(1) from util-linux" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
unset RSI_PROGRESS
manifest=$source_dir/tests/manifests/study-small.yaml
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-progress-tty.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "== mpirun on a terminal: the bar redraws in place"
script -qfec "mpirun -n 2 --oversubscribe $rsi run $manifest --out $tmp/tty" "$tmp/tty.log" >/dev/null
redraws=$(grep -c $'\033\\[J' "$tmp/tty.log" || true)
((redraws > 0)) || { echo "FAIL: no redraw (ESC[J) in the output of mpirun on a terminal:" >&2; tail -20 "$tmp/tty.log" >&2; exit 1; }
grep -q 'gen  5/5' "$tmp/tty.log" || { echo "FAIL: the last generation's line is missing:" >&2; tail -20 "$tmp/tty.log" >&2; exit 1; }
echo "   $redraws redraws"

echo "== mpirun into a file: plain lines"
mpirun -n 2 --oversubscribe "$rsi" run "$manifest" --out "$tmp/file" >"$tmp/file.log" 2>&1
if grep -q $'\033' "$tmp/file.log"; then
  echo "FAIL: escape sequences in a log file:" >&2
  grep -n $'\033' "$tmp/file.log" | head -5 >&2
  exit 1
fi
grep -q '\[rank 0\] gen  5/5' "$tmp/file.log" || { echo "FAIL: no plain '[rank 0] gen  5/5' line:" >&2; tail -20 "$tmp/file.log" >&2; exit 1; }
echo "   $(grep -c '\[rank 0\]' "$tmp/file.log") plain lines"
echo "progress_tty.sh: ok"
