"""rsi.to_torch: the rebuilt module's logits equal `rsi eval`'s within 1e-5 (first 1000 hidden-test
images), and so do its predictions and accuracy (up to near-ties of rsi's two best logits)."""
import numpy as np
import pytest

import rsi
from conftest import assert_logits_close, assert_same_predictions, rsi_logits, trained_with_weights

torch = pytest.importorskip("torch", reason="PyTorch is not installed (Debian python3-torch: scripts/setup --bench)")


def check(run, model, images, labels, tmp_path):
    want, accuracy = rsi_logits(run, model, tmp_path)
    net = rsi.to_torch(run, model)
    assert not net.training
    with torch.no_grad():
        got = net(torch.from_numpy(images)).numpy()
    assert got.shape == want.shape == (1000, 10)
    assert_logits_close(got, want, f"model {model}")
    assert_same_predictions(got, want, labels, accuracy, f"model {model}")


def test_torch_logits_equal_rsi_eval_on_every_block_kind(run_dir, test_images, test_labels, tmp_path):
    models = trained_with_weights(rsi.load_run(run_dir))
    assert len(models) == 4
    for model in models:
        check(run_dir, model, test_images, test_labels, tmp_path)


def test_torch_rebuilds_a_model_of_a_lineage_without_tables(format1_dir, test_images, test_labels, tmp_path):
    check(format1_dir, 2, test_images, test_labels, tmp_path)
