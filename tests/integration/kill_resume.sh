#!/usr/bin/env bash
# "Nothing lost", end to end: a small Fashion-MNIST run on 2 ranks is killed with SIGKILL (the
# whole job: every process of mpirun's session, checked gone) at several random moments — mid-training and, through
# RSI_FAULT_KILL_DURING_CHECKPOINT, in the middle of a checkpoint write — and resumed each time
# with the same command. The final lineage must be identical to an undisturbed run: the same
# models.tsv (genomes, metrics, weight digests), the same generation hashes, and `rsi verify`
# passes. Also: a bit-flipped newest file is detected and resume falls back to the last good one.
#   RSI=build/runtime/rsi bash tests/integration/kill_resume.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: kill_resume.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: kill_resume.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "kill_resume.sh: no rsi executable at $rsi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
# RSI_KILL_RESUME_MANIFEST: another manifest (integration_kill_resume_improving: every self-improvement switch on).
manifest=${RSI_KILL_RESUME_MANIFEST:-$source_dir/tests/manifests/resume-fashion.yaml}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-kill-resume.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
RANDOM=${RSI_TEST_SEED:-4242}

pid=
run() {  # run OUT [extra env...]: the whole job in its own session, in the background; sets pid
  local out=$1
  shift
  env "$@" setsid mpirun -n 2 "$rsi" run "$manifest" --out "$out" >>"$out.log" 2>&1 &
  pid=$!
}

# SIGKILL every process of the job. Open MPI puts each rank in a process group of its own, so
# `kill -- -<mpirun pid>` kills mpirun alone and the ranks go on (rank 0 was seen to rename a
# generation file and write LATEST a second later); they all stay in mpirun's session (setsid made
# mpirun its leader: the session id is its pid), so the session is what is killed, and the test
# checks that none of its processes survives. Returns 1 when nothing of the job was left to kill.
kill_job() {
  local procs
  procs=$(pgrep -s "$pid" | wc -l)
  ((procs > 0)) || return 1
  pkill -9 -s "$pid" || true
  wait "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    pgrep -s "$pid" >/dev/null || break
    sleep 0.1
  done
  if pgrep -s "$pid" >/dev/null; then
    echo "FAIL: processes of the killed job survived the kill:" >&2
    pgrep -a -s "$pid" >&2
    exit 1
  fi
  echo "   (SIGKILL to the job's session: $procs process(es) left of mpirun and its ranks; none survives)"
}

source "$(dirname "$0")/lib/lineage.sh"  # generation_hashes

echo "== undisturbed reference run"
start=$SECONDS
run "$tmp/reference"
wait "$pid" || { echo "FAIL: the reference run failed:" >&2; tail -30 "$tmp/reference.log" >&2; exit 1; }
reference_seconds=$((SECONDS - start))
echo "   $reference_seconds s, $(($(wc -l <"$tmp/reference/models.tsv") - 1)) models"

echo "== killed and resumed run"
out=$tmp/killed
kills=0
# 1. A kill in the middle of a checkpoint write (the store kills its own job after writing the .tmp
#    file of generation 2, before the rename).
run "$out" RSI_FAULT_KILL_DURING_CHECKPOINT=2
wait "$pid" && { echo "FAIL: the fault-injected run was not killed" >&2; exit 1; }
kill_job || true  # the ranks mpirun left behind, if any
kills=$((kills + 1))
echo "   killed during the checkpoint write of generation 2: $(ls "$out" | grep -c '^gen-[0-9]*\.h5$') durable file(s), leftover: $(ls "$out" | grep '\.tmp$' | tr '\n' ' ')"
# 2. Kills at random moments.
for i in 1 2 3; do
  run "$out"
  delay=$(awk -v r=$RANDOM -v t="$reference_seconds" 'BEGIN { printf "%.2f", 1 + (r / 32767) * t * 0.3 }')
  sleep "$delay"
  if kill -0 "$pid" 2>/dev/null && kill_job; then
    kills=$((kills + 1))
    echo "   SIGKILL after ${delay} s: $(ls "$out" | grep -c '^gen-[0-9]*\.h5$') durable generation file(s)"
  else
    wait "$pid" || true
    echo "   run finished before the kill at ${delay} s"
  fi
done
# 3. Resume to the end.
run "$out"
wait "$pid" || { echo "FAIL: the final resume failed:" >&2; tail -30 "$out.log" >&2; exit 1; }
grep -q "resuming after generation" "$out.log" || { echo "FAIL: no run ever resumed" >&2; exit 1; }
echo "   $kills kill(s); resumed to the end"
((kills >= 2)) || { echo "FAIL: only $kills kill(s) landed; the test proves little" >&2; exit 1; }

failures=0
if ! cmp -s "$tmp/reference/models.tsv" "$out/models.tsv"; then
  echo "FAIL: models.tsv differs from the undisturbed run:" >&2
  diff "$tmp/reference/models.tsv" "$out/models.tsv" >&2 || true
  failures=$((failures + 1))
fi
if ! diff <(generation_hashes "$tmp/reference") <(generation_hashes "$out") >/dev/null; then
  echo "FAIL: generation hashes differ from the undisturbed run" >&2
  diff <(generation_hashes "$tmp/reference") <(generation_hashes "$out") >&2 || true
  failures=$((failures + 1))
fi
"$rsi" verify "$out" || { echo "FAIL: rsi verify failed on the resumed run" >&2; failures=$((failures + 1)); }
hashes=$(generation_hashes "$out" | grep -c '^"[0-9a-f]\{64\}"$' || true)
if [[ $hashes != "$(ls "$out" | grep -c '^gen-[0-9]*\.h5$')" ]] || ((hashes == 0)); then
  echo "FAIL: could not read the generation hashes ($hashes)" >&2
  failures=$((failures + 1))
fi
echo "   lineage identical to the undisturbed run: $hashes generation hashes"

echo "== a bit-flipped newest file"
flipped=$tmp/flipped
cp -r "$tmp/reference" "$flipped"
newest=$(ls "$flipped"/gen-??????.h5 | tail -1)
size=$(stat -c %s "$newest")
offset=$((size / 2))
byte=$(od -An -tu1 -j "$offset" -N1 "$newest" | tr -d ' ')
printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$newest" bs=1 seek="$offset" conv=notrunc status=none
if "$rsi" verify "$flipped" >"$tmp/verify.log" 2>&1; then
  echo "FAIL: rsi verify did not notice a flipped byte at offset $offset of $newest" >&2
  failures=$((failures + 1))
else
  echo "   rsi verify: $(grep -m1 PROBLEM "$tmp/verify.log")"
fi
run "$flipped"
wait "$pid" || { echo "FAIL: resume after a bit flip failed:" >&2; tail -30 "$flipped.log" >&2; failures=$((failures + 1)); }
if grep -q "warning" "$flipped.log" && grep -q "resuming after generation" "$flipped.log"; then
  echo "   resume: $(grep -m1 warning "$flipped.log")"
  cmp -s "$tmp/reference/models.tsv" "$flipped/models.tsv" ||
    { echo "FAIL: the run resumed past a bit flip differs from the reference" >&2; failures=$((failures + 1)); }
else
  echo "FAIL: resume did not report the damaged file and fall back" >&2
  tail -20 "$flipped.log" >&2
  failures=$((failures + 1))
fi

((failures == 0)) && echo "kill_resume: all checks passed" || { echo "kill_resume: $failures failure(s)" >&2; exit 1; }
