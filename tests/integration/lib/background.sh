# Helpers for tests that run `rsi run` in the background and watch it (governance.sh, status.sh).
# Source it after setting `tmp` (the test's scratch directory: its *.log files are shown on failure).

fail() {  # fail MESSAGE...: says what failed, shows the end of every log in $tmp, exits 1
  echo "FAIL: $*" >&2
  for log in "$tmp"/*.log; do
    [[ -f $log ]] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }
  done
  exit 1
}

wait_for() {  # wait_for SECONDS COMMAND...: polls until the command succeeds (its output dropped); 1 on timeout
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}
