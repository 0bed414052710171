# Helpers for tests that drive Slurm jobs (slurm.sh, and the multi-node tests through
# lib/multinode.sh). Source it; set `scontrol` to the command that reaches the cluster (default: the
# local `scontrol`; the emulated nodes' tests run it on node1) and `poll_seconds` to the polling step.
scontrol=(${scontrol[@]:-scontrol})
poll_seconds=${poll_seconds:-0.5}

job_field() {  # JOB FIELD: a field of `scontrol show job` (JobState, Restarts, ExitCode, NodeList, ...)
  "${scontrol[@]}" show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
wait_for() {  # SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds
  local limit=$1 what=$2
  shift 2
  local end=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= end)); then
      echo "FAIL: timed out after $limit s waiting for $what" >&2
      return 1
    fi
    sleep "$poll_seconds"
  done
}
job_finished() { [[ $(job_field "$1" JobState) =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|PREEMPTED)$ ]]; }
show_job() {  # JOB RUN_DIR: the job's record and output, after a failure (needs $cluster)
  "${scontrol[@]}" show job "$1" >&2 || true
  cat "$2"/slurm-"$1".out "$2"/slurm-"$1".err >&2 2>/dev/null || true
  tail -5 "$cluster"/log/*.log >&2
}
