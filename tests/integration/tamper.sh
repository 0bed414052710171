#!/usr/bin/env bash
# Damaged history, end to end (issue 19): a small Fashion-MNIST run on 2 ranks, then copies of it
# damaged at every position — the first, a middle and the newest generation (an accuracy edited
# with h5py, a deleted file, weights changed with h5py), LATEST (deleted, naming an older
# generation) and the weights sidecars (a flipped byte) — and for each: `rsi verify` must name the
# damage, and resuming with the same command must do what checkpoints/FORMAT.md says:
#   - damaged metadata before the resume point: refuse, exit code 3, naming file, model and field,
#     with models.tsv, generations.tsv, LATEST and the generation files left exactly as they were;
#   - damaged newest file: fall back past it (moved aside) and end in the undisturbed lineage;
#   - damaged weights of an older generation, a damaged sidecar, a missing or lagging LATEST:
#     resume (exit 0) into the undisturbed lineage; LATEST rewritten.
# And a data directory that does not exist is exit code 3 from rank 0 before the job starts.
#   bash tests/integration/tamper.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: tamper.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: tamper.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "tamper.sh: no rsi executable at $rsi" >&2; exit 1; }
py=/usr/bin/python3
"$py" -c 'import h5py' 2>/dev/null ||
  { echo "tamper.sh: h5py is missing for $py (scripts/setup installs python3-h5py)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
manifest=$source_dir/tests/manifests/resume-fashion.yaml  # 5 generations, sidecars of the last 2 kept
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-tamper.XXXXXX")
trap '[[ -n ${RSI_KEEP_TMP:-} ]] || rm -rf "$tmp"' EXIT

run() {  # run OUT: the same command every time; prints its exit code
  local rc=0
  mpirun -n 2 "$rsi" run "$manifest" --out "$1" >"$1.log" 2>&1 || rc=$?
  echo "$rc"
}

echo "== undisturbed run"
start=$SECONDS
rc=$(run "$tmp/reference")
((rc == 0)) || { echo "FAIL: the reference run failed:" >&2; tail -30 "$tmp/reference.log" >&2; exit 1; }
"$rsi" verify "$tmp/reference" >/dev/null || { echo "FAIL: the reference run does not verify" >&2; exit 1; }
echo "   $((SECONDS - start)) s, $(ls "$tmp/reference" | grep -c '^gen-[0-9]*\.h5$') generation files"

h5() {  # h5 PYTHON-CODE: runs with `f(path)` opening an HDF5 file read-write
  "$py" -c "import h5py, hashlib, sys
def f(p): return h5py.File(p, 'r+')
$1"
}
first_trained_child() {  # first_trained_child FILE: the id of the first trained child of that generation
  "$py" -c "import h5py
g = h5py.File('$1', 'r')['models']
print(next(k for k in sorted(g, key=int) if g[k].attrs['status'].decode() == 'trained'))"
}
flip_middle_byte() {  # flip_middle_byte FILE: a byte in the middle of the file's data, changed
  local size offset byte
  size=$(stat -c %s "$1")
  offset=$((size * 2 / 3))
  byte=$(od -An -tu1 -j "$offset" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $(((byte + 1) % 256)))" | dd of="$1" bs=1 seek="$offset" conv=notrunc status=none
}
snapshot() {  # what a refused resume must leave as it was
  (cd "$1" && md5sum models.tsv generations.tsv && ls -1 && { cat LATEST 2>/dev/null || echo "no LATEST"; })
}

failures=0
fail() { echo "FAIL ($case): $*" >&2; failures=$((failures + 1)); }

# check CASE EXPECTED_VERIFY EXPECTED_RC EXPECTED_MESSAGE: the damage is already done to $dir
check() {
  local want_verify=$1 want_rc=$2 want_message=$3 before rc
  if "$rsi" verify "$dir" >"$dir.verify" 2>&1; then
    fail "rsi verify passed"
  elif ! grep -qF -- "$want_verify" "$dir.verify"; then
    fail "rsi verify did not name '$want_verify':"; cat "$dir.verify" >&2
  fi
  before=$(snapshot "$dir")
  rc=$(run "$dir")
  if [[ $rc != "$want_rc" ]]; then
    fail "resume exited $rc, expected $want_rc:"; tail -15 "$dir.log" >&2
    return
  fi
  [[ -z $want_message ]] || grep -qF -- "$want_message" "$dir.log" ||
    { fail "the resume did not say '$want_message':"; tail -15 "$dir.log" >&2; }
  if ((want_rc == 3)); then
    [[ $(snapshot "$dir") == "$before" ]] || fail "the refused resume changed the run directory"
    echo "   $case: verify and resume name it; resume refused (exit 3), nothing changed"
  else
    cmp -s "$tmp/reference/models.tsv" "$dir/models.tsv" || fail "models.tsv differs from the undisturbed run"
    echo "   $case: verify names it; resume went on (exit 0) into the undisturbed lineage"
  fi
}

newcase() {  # newcase NAME: a fresh copy of the undisturbed run in $dir
  case=$1
  dir=$tmp/$case
  cp -r "$tmp/reference" "$dir"
}

echo "== damaged metadata before the resume point: refused"
for gen in 0 2; do
  newcase "accuracy-edited-in-generation-$gen"
  file=$dir/gen-00000$gen.h5
  id=$(first_trained_child "$file")
  h5 "g = f('$file')['models/$id/metrics']; g.attrs['val_accuracy'] = g.attrs['val_accuracy'] + 0.1"
  check "gen-00000$gen.h5: model $id: metrics: digest mismatch" 3 "gen-00000$gen.h5: model $id: metrics: digest mismatch"
done
newcase "generation-0-deleted"
rm "$dir/gen-000000.h5"
check "gen-000000.h5: missing" 3 "gen-000000.h5: missing (the next file is gen-000001.h5)"

echo "== damaged newest file: falls back past it"
newcase "accuracy-edited-in-the-newest-generation"
file=$dir/gen-000005.h5
id=$(first_trained_child "$file")
h5 "g = f('$file')['models/$id/metrics']; g.attrs['val_accuracy'] = g.attrs['val_accuracy'] + 0.1"
check "gen-000005.h5: model $id: metrics: digest mismatch" 0 "moved aside to gen-000005.h5.corrupt"
"$rsi" verify "$dir" >/dev/null || fail "the resumed run does not verify"

echo "== damaged weights, sidecars and LATEST: not what a resume needs"
newcase "weights-edited-in-generation-2"
file=$dir/gen-000002.h5
id=$("$py" -c "import h5py
g = h5py.File('$file', 'r')['models']
print(next(k for k in sorted(g, key=int) if 'params' in g[k]))")
h5 "d = f('$file')['models/$id/params']; d[0] = d[0] + 1.0"
check "gen-000002.h5: model $id: weights/params: digest mismatch" 0 "resuming after generation 5"
newcase "byte-flipped-in-an-older-sidecar"
flip_middle_byte "$dir/gen-000004.weights.h5"
check "gen-000004.weights.h5" 0 "resuming after generation 5"
newcase "byte-flipped-in-the-newest-sidecar"
flip_middle_byte "$dir/gen-000005.weights.h5"
check "gen-000005.weights.h5" 0 "the weights sidecar is damaged; resuming anyway"
newcase "LATEST-deleted"
rm "$dir/LATEST"
check "LATEST: missing, although the newest generation file is gen-000005.h5" 0 "resuming after generation 5"
"$rsi" verify "$dir" >/dev/null || fail "LATEST was not rewritten by the resume"
newcase "LATEST-names-an-older-generation"
h5 "p = '$dir/gen-000004.h5'
h = h5py.File(p, 'r').attrs['generation_hash'].decode()
open('$dir/LATEST', 'w').write('4 gen-000004.h5 %s %s\n' % (h, hashlib.sha256(open(p, 'rb').read()).hexdigest()))"
check "LATEST: names generation 4 but the newest generation file is gen-000005.h5" 0 "resuming after generation 5"
"$rsi" verify "$dir" >/dev/null || fail "LATEST was not brought up to date by the resume"

echo "== a data directory that does not exist: exit 3 from rank 0 before the job starts"
case=missing-data
sed -e "s|kind: fashion_mnist|kind: fashion_mnist\n  data_dir: $tmp/no-such-data|" \
  -e "s|\.\./\.\./experiments|$(realpath "$source_dir")/experiments|" "$manifest" >"$tmp/nodata.yaml"
rc=0
mpirun -n 2 "$rsi" run "$tmp/nodata.yaml" --out "$tmp/nodata" >"$tmp/nodata.log" 2>&1 || rc=$?
if ((rc != 3)) || ! grep -q "\[rank 0\] .*task.data_dir: Fashion-MNIST directory $tmp/no-such-data not found" "$tmp/nodata.log"; then
  fail "exit $rc:"; tail -5 "$tmp/nodata.log" >&2
elif [[ -e $tmp/nodata ]]; then
  fail "the run directory was created"
else
  echo "   $case: exit 3, named on rank 0, nothing created"
fi

((failures == 0)) && echo "tamper: all checks passed" || { echo "tamper: $failures failure(s)" >&2; exit 1; }
