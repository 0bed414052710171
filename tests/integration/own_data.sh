#!/usr/bin/env bash
# Your own data (task kind images) end to end, on a second real data set: scikit-learn's digits
# (Debian python3-sklearn), converted by scripts/digits-data into a NumPy .npz (training part,
# uint8, deflated zip64 members as numpy writes them) and an HDF5 file (hidden test part, float32):
#   1. rsi validate finds the input in the data (1x8x8, 10 classes) and names the file of a bad one;
#   2. a run of experiments/digits.yaml (mpirun -n 2) learns (hidden test >= 0.85) and verifies;
#      rsi show names the classes the manifest gave;
#   3. its lineage records the input, the data's absolute paths and fingerprints;
#   4. rsi eval of an exported model agrees with the recorded accuracy, and refuses a changed test set;
#      so does a resume of the run (exit 3), which goes on once the data is restored;
#   5. ONNX (when built with it) and PyTorch (when present) give rsi eval's logits within 1e-5
#      (relative to the row's largest logit when it exceeds 1, as python/tests/conftest.py);
#   6. rsi reproduce re-runs it from the lineage alone, generation hashes equal.
#   bash tests/integration/own_data.sh BUILD_DIR SOURCE_DIR
# About 10 s on 2 cores.
set -euo pipefail

build_dir=${1:?usage: own_data.sh BUILD_DIR SOURCE_DIR}
source_dir=${2:?usage: own_data.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "own_data.sh: no rsi executable at $rsi" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1} OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}
py=/usr/bin/python3
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-own-data.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail() { echo "own_data.sh: FAIL: $*" >&2; exit 1; }
expect_exit() {  # expect_exit CODE OUT WHAT COMMAND...: COMMAND (output in OUT) exits with CODE
  local code=$1 out=$2 what=$3 rc=0
  shift 3
  "$@" >"$out" 2>&1 || rc=$?
  [[ $rc -eq $code ]] || fail "$what gave exit code $rc, expected $code: $(cat "$out")"
}

# The experiment's manifest, with its data in $tmp (paths relative to the manifest, as shipped).
mkdir -p "$tmp/experiments" "$tmp/data"
"$py" "$source_dir/scripts/digits-data" "$tmp/data/digits"
cp -r "$source_dir/experiments/genomes" "$tmp/experiments/"
sed -e 's|directory: runs/digits|directory: '"$tmp"'/run|' "$source_dir/experiments/digits.yaml" >"$tmp/experiments/digits.yaml"
manifest=$tmp/experiments/digits.yaml

# 1. validate
"$rsi" validate "$manifest" >"$tmp/validate.out" || fail "rsi validate exited $?: $(cat "$tmp/validate.out")"
grep -q "input 1x8x8, 10 classes" "$tmp/validate.out" || fail "validate does not report the input: $(head -3 "$tmp/validate.out")"
sed -e 's|test.h5, images: images|test.h5, images: pixels|' "$manifest" >"$tmp/experiments/bad.yaml"
expect_exit 3 "$tmp/bad.out" "a missing dataset" "$rsi" validate "$tmp/experiments/bad.yaml"
grep -q "bad.yaml:.*task.test: .*test.h5: no dataset 'pixels'" "$tmp/bad.out" || fail "unclear error: $(cat "$tmp/bad.out")"

# 2. run
mpirun -n 2 --oversubscribe "$rsi" run "$manifest" >"$tmp/run.log" 2>&1 || { tail -20 "$tmp/run.log"; fail "the run failed"; }
"$rsi" verify "$tmp/run" >/dev/null || fail "rsi verify failed"
best=$("$py" - "$tmp/run" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/models.tsv"), delimiter="\t"))
best = max((r for r in rows if r["status"] == "trained"), key=lambda r: (float(r["val_acc"]), -int(r["id"])))
assert float(best["test_acc"]) >= 0.85, f"best model {best['id']}: hidden test {best['test_acc']} < 0.85"
print(best["id"])
PY
) || fail "the run did not learn the digits"

"$rsi" show "$tmp/run" "$best" | grep -q "per-class test accuracy: zero [0-9.]* one " ||
  fail "rsi show does not name the classes: $("$rsi" show "$tmp/run" "$best" | grep per-class)"

# 3. lineage attributes
"$py" - "$tmp/run/gen-000000.h5" "$tmp/data/digits" <<'PY' || fail "the lineage does not record the data"
import sys, h5py
a = h5py.File(sys.argv[1], "r").attrs
assert list(a["input"]) == [1, 8, 8, 10], a["input"]
data = a["data"].decode() if isinstance(a["data"], bytes) else a["data"]
assert sys.argv[2] + "/train.npz" in data and sys.argv[2] + "/test.h5" in data, data
fp = a["data_fingerprint"]
fp = fp.decode() if isinstance(fp, bytes) else fp
assert fp.startswith("train=") and " test=" in fp, fp
PY

# 4. eval, and a changed test set
"$rsi" export "$tmp/run" "$best" --out "$tmp/best.h5" >/dev/null
"$rsi" eval "$tmp/best.h5" --logits "$tmp/logits.npy" >"$tmp/eval.out" || fail "rsi eval exited $?: $(cat "$tmp/eval.out")"
grep -q "on 397 images" "$tmp/eval.out" || fail "eval did not use the 397 test images: $(cat "$tmp/eval.out")"
cp "$tmp/data/digits/test.h5" "$tmp/test.h5.orig"
"$py" -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r+'); x = f['images'][:]; x[0, 0, 0] = 1 - x[0, 0, 0]; f['images'][...] = x" \
  "$tmp/data/digits/test.h5"
expect_exit 1 "$tmp/changed.out" "eval on a changed test set" "$rsi" eval "$tmp/best.h5"
grep -q "not the one the run was tested on" "$tmp/changed.out" || fail "unclear: $(cat "$tmp/changed.out")"
# ... and a resume of the run on the changed data is refused, naming both fingerprints
expect_exit 3 "$tmp/resume-changed.out" "a resume on changed data" mpirun -n 2 --oversubscribe "$rsi" run "$manifest"
grep -q "began on other data" "$tmp/resume-changed.out" || fail "unclear: $(cat "$tmp/resume-changed.out")"
cp "$tmp/test.h5.orig" "$tmp/data/digits/test.h5"
mpirun -n 2 --oversubscribe "$rsi" run "$manifest" >"$tmp/resume.out" 2>&1 || fail "a resume on the same data failed: $(tail -5 "$tmp/resume.out")"

# 5. ONNX and PyTorch against rsi eval's logits (within 1e-5 of the row's scale, as python/tests do)
onnx_py=$source_dir/.venv/bin/python
if "$rsi" export "$tmp/run" "$best" --format onnx --out "$tmp/best.onnx" >/dev/null 2>"$tmp/onnx.err" &&
   [[ -x $onnx_py ]] && "$onnx_py" -c "import onnxruntime" 2>/dev/null; then
  "$onnx_py" - "$tmp" <<'PY' || fail "ONNX logits differ"
import sys, h5py, numpy as np, onnxruntime as ort
t = sys.argv[1]
x = h5py.File(t + "/data/digits/test.h5", "r")["images"][:].astype(np.float32)[:, None]
got = ort.InferenceSession(t + "/best.onnx").run(None, {"image": x})[0]
want = np.load(t + "/logits.npy")
# within 1e-5 relative to the row's largest logit when that exceeds 1 (python/tests/conftest.py)
err = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want).max(axis=1, keepdims=True))
assert got.shape == (397, 10) and err.max() <= 1e-5, err.max()
PY
  echo "own_data.sh: ONNX logits agree with rsi eval"
else
  echo "own_data.sh: ONNX check skipped ($(head -1 "$tmp/onnx.err"); or no .venv with onnxruntime: scripts/setup)"
fi
if "$py" -c "import torch" 2>/dev/null; then
  PYTHONPATH=$source_dir/python "$py" - "$tmp" "$best" <<'PY' || fail "PyTorch logits differ"
import sys, h5py, numpy as np, torch, rsi
t, best = sys.argv[1], int(sys.argv[2])
x = torch.from_numpy(h5py.File(t + "/data/digits/test.h5", "r")["images"][:])[:, None]
with torch.no_grad():
    got = rsi.to_torch(t + "/run", best)(x).numpy()
want = np.load(t + "/logits.npy")
err = np.abs(got.astype(np.float64) - want) / np.maximum(1.0, np.abs(want).max(axis=1, keepdims=True))
assert err.max() <= 1e-5, err.max()
frame = rsi.load_run(t + "/run")
assert len(frame) > 10 and "val_accuracy" in frame.columns
PY
  echo "own_data.sh: PyTorch logits agree with rsi eval"
fi

# 6. reproduce from the lineage alone (the data found through its recorded paths)
(cd "$tmp" && mpirun -n 2 --oversubscribe "$rsi" reproduce "$tmp/run" >"$tmp/reproduce.log" 2>&1) ||
  { tail -20 "$tmp/reproduce.log"; fail "rsi reproduce failed"; }
echo "own_data.sh: OK (best model $best)"
