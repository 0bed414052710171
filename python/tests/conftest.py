"""Fixtures of the rsi package's tests: a tiny real Fashion-MNIST run made with the built `rsi`
(tests/data/export-fashion.yaml, ~10 s on one core), and the committed format-1 lineage
tests/golden/lineage-format1 (written before the named-tensor table existed).

The rsi executable comes from $RSI (CTest sets it), else build/runtime/rsi of the source tree."""
import os
import subprocess

import numpy as np
import pytest

import rsi

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(os.path.dirname(HERE))
FASHION_MNIST = os.environ.get("RSI_FASHION_MNIST", "/usr/share/datasets/fashion-mnist")


def rsi_binary():
    path = os.environ.get("RSI") or os.path.join(SOURCE, "build", "runtime", "rsi")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no rsi executable at {path}: build it (cmake --build build) or set RSI")
    return path


def run_rsi(*args, check=True):
    """Runs `rsi ARGS`; returns its standard output (fails the test with its output otherwise)."""
    done = subprocess.run([rsi_binary(), *map(str, args)], capture_output=True, text=True)
    if check and done.returncode != 0:
        pytest.fail(f"rsi {' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "export-fashion"
    run_rsi("run", os.path.join(HERE, "data", "export-fashion.yaml"), "--out", out)
    return str(out)


@pytest.fixture(scope="session")
def format1_dir():
    return os.path.join(SOURCE, "tests", "golden", "lineage-format1")


def read_tsv(path):
    with open(path) as f:
        header, *rows = [line.rstrip("\n").split("\t") for line in f]
    return [dict(zip(header, row)) for row in rows]


def hidden_test_set(limit=None):
    """The hidden test set as rsi reads it: images bytes / 255 [N, 1, 28, 28], labels [N]."""
    return rsi.fashion_mnist_test(limit, FASHION_MNIST)


@pytest.fixture(scope="session")
def test_images():
    """The first 1000 hidden-test images."""
    return hidden_test_set(1000)[0]


@pytest.fixture(scope="session")
def test_labels():
    return hidden_test_set(1000)[1]


def trained_with_weights(frame):
    return [int(i) for i in frame[(frame.status == "trained")].id]


def rsi_logits(run, model, tmp_path, limit=1000):
    """`rsi eval`'s logits of the first `limit` test images (None: all; rsi eval then also checks
    the accuracy it recorded), and the accuracy it prints."""
    exported, logits = tmp_path / f"model-{model}.h5", tmp_path / f"logits-{model}.npy"
    run_rsi("export", run, model, "--out", exported)
    out = run_rsi("eval", exported, "--threads", "1", "--logits", logits, *(["--limit", limit] if limit else []))
    accuracy = float(out.split("hidden test accuracy ")[1].split()[0])
    return np.load(logits), accuracy


def assert_same_predictions(got, want, labels, accuracy, what):
    """`got` predicts what `want` (rsi eval's logits, whose accuracy rsi printed) predicts, except
    where rsi's two best logits are within float rounding of each other (a near-tie: 1.197975 vs
    1.1979752 happens in 1000 images), and its accuracy differs from rsi's by those alone."""
    assert f"{(want.argmax(1) == labels).mean():.4f}" == f"{accuracy:.4f}", "rsi's logits and its accuracy disagree"
    top2 = np.sort(want, axis=1)[:, -2:]
    differ = np.flatnonzero(got.argmax(1) != want.argmax(1))
    gaps = top2[differ, 1] - top2[differ, 0]
    assert np.all(gaps < 1e-5), f"{what}: images {differ[gaps >= 1e-5]} predicted differently without a near-tie"
    assert abs((got.argmax(1) == labels).mean() - accuracy) <= len(differ) / len(labels) + 1e-12


def assert_logits_close(got, want, what):
    """Each logit within 1e-5 of rsi's, relative to the largest logit of its row when that exceeds
    1: float32 sums of thousands of products (a dense layer over 3136 inputs) differ in their last
    bits with the order of summation, and a logit near 0 that cancels terms of size 10 carries
    their rounding (seen: 1.0014e-05 on one of 100,000 logits of a row whose largest is ~10)."""
    assert got.shape == want.shape
    scale = np.maximum(1.0, np.abs(want).max(axis=1, keepdims=True))
    error = np.abs(got.astype(np.float64) - want) / scale
    worst = np.unravel_index(np.argmax(error), error.shape)
    assert error.max() <= 1e-5, (f"{what}: logit {worst} is {got[worst]!r}, rsi's {want[worst]!r} "
                                 f"(error {error.max():.3g} of the row's scale {scale[worst[0], 0]:.3g})")
