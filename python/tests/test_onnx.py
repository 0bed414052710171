"""rsi export --format onnx, run by onnxruntime on the whole hidden test set: the logits equal
`rsi eval`'s within 1e-5, and so do the predictions and the accuracy (which rsi eval checks against
the recorded one), up to near-ties; the graph's interface and metadata are as documented."""
import subprocess

import numpy as np
import pytest

import rsi
from conftest import (assert_logits_close, assert_same_predictions, hidden_test_set, rsi_binary, rsi_logits, run_rsi,
                      trained_with_weights)

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: scripts/setup installs it into .venv "
                                                "(python/requirements-test.txt); ctest uses .venv when it exists")


@pytest.fixture(scope="module")
def full_test_set():
    return hidden_test_set()


def session(run, model, tmp_path):
    out = tmp_path / f"model-{model}.onnx"
    printed = run_rsi("export", run, model, "--format", "onnx", "--out", out)
    assert "(onnx)" in printed
    return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def check(run, model, test_set, tmp_path):
    images, labels = test_set
    want, accuracy = rsi_logits(run, model, tmp_path, limit=None)
    s = session(run, model, tmp_path)
    assert [(i.name, i.shape) for i in s.get_inputs()] == [("image", ["N", 1, 28, 28])]
    assert [(o.name, o.shape) for o in s.get_outputs()] == [("logits", ["N", 10])]
    got = s.run(["logits"], {"image": images})[0]
    assert got.shape == want.shape == (10000, 10)
    assert_logits_close(got, want, f"model {model}")
    assert_same_predictions(got, want, labels, accuracy, f"model {model}")
    meta = s.get_modelmeta().custom_metadata_map
    record = rsi.model_record(run, model)
    assert meta["genome"] == record["genome"] and meta["model_id"] == str(model)
    assert meta["run_name"] == record["run"]["run_name"] and meta["weights_digest"] == record["weights_digest"]
    assert float(meta["test_accuracy"]) == record_accuracy(run, model)


def record_accuracy(run, model):
    frame = rsi.load_run(run)
    return float(frame[frame.id == model].test_accuracy.iloc[0])


def test_onnx_logits_equal_rsi_eval_on_every_block_kind(run_dir, full_test_set, tmp_path):
    models = trained_with_weights(rsi.load_run(run_dir))
    assert len(models) == 4
    for model in models:
        check(run_dir, model, full_test_set, tmp_path)


def test_onnx_export_of_a_lineage_without_tables(format1_dir, full_test_set, tmp_path):
    check(format1_dir, 4, full_test_set, tmp_path)


def test_onnx_export_refuses_clearly(run_dir, tmp_path):
    out = tmp_path / "x.onnx"
    done = subprocess.run([rsi_binary(), "export", run_dir, "999", "--format", "onnx", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and not out.exists()
    assert "model 999: not found in gen-000000.h5 .. gen-000001.h5" in done.stderr, done.stderr
