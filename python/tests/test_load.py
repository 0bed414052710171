"""rsi.load_run / load_generations / load_weights against what rsi itself reports for the same run:
models.tsv, generations.tsv, `rsi show`, the recorded weight digests."""
import hashlib

import numpy as np
import pytest

import rsi
from conftest import read_tsv, run_rsi, trained_with_weights

FNV_PRIME = 1099511628211
FNV_BASIS = {2: 14695981039346656037, 1: 1469598103934665603}  # FORMAT.md, "Format versions"


def fnv1a(data: bytes, basis: int) -> str:
    h = basis
    for byte in data:
        h = ((h ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def buffers_from(weights, table):
    """params and state rebuilt from the named tensors (each at its offset)."""
    sizes = {"params": 0, "state": 0}
    for t in table:
        sizes[t.buffer] = max(sizes[t.buffer], t.offset + t.size)
    out = {b: np.full(n, np.nan, np.float32) for b, n in sizes.items()}
    for t in table:
        out[t.buffer][t.offset:t.offset + t.size] = weights[t.name].ravel()
    return out["params"], out["state"]


def test_load_run_has_one_row_per_model_of_models_tsv(run_dir):
    frame = rsi.load_run(run_dir)
    tsv = read_tsv(f"{run_dir}/models.tsv")
    assert len(frame) == len(tsv) > 0
    for row, want in zip(frame.itertuples(), tsv):
        assert row.id == int(want["id"]) and row.generation == int(want["generation"])
        assert row.op == want["op"] and row.status == want["status"]
        assert row.parents == ([] if want["parents"] == "-" else [int(p) for p in want["parents"].split(",")])
        assert row.val_accuracy == float(want["val_acc"]) and row.test_accuracy == float(want["test_acc"])
        assert row.parameters == int(want["params"]) and row.flops == int(want["flops"])
        assert row.weights_digest == want["weights"]
    for column in ("recipe.learning_rate", "recipe.augmentation.shift", "designer.p.widen", "arch.n_blocks",
                   "arch.blocks", "val_per_class", "selected"):
        assert column in frame.columns, column
    seed = frame[frame.id == 1].iloc[0]
    assert seed["arch.n_blocks"] == 15 and seed["recipe.learning_rate"] == 0.003
    assert seed["arch.blocks"].startswith("conv(6,k5,s1) batchnorm gelu residual(k3) maxpool(2,s2) conv(8,k3,s2)")


def test_accuracies_are_those_rsi_show_prints(run_dir):
    frame = rsi.load_run(run_dir)
    for row in frame.itertuples():
        shown = run_rsi("show", run_dir, row.id)
        assert f"validation {row.val_accuracy:.4f}  hidden test {row.test_accuracy:.4f}" in shown, shown


def test_load_generations_matches_generations_tsv(run_dir):
    frame = rsi.load_generations(run_dir)
    tsv = read_tsv(f"{run_dir}/generations.tsv")
    assert len(frame) == len(tsv) == 2
    for row, want in zip(frame.itertuples(), tsv):
        assert row.generation == int(want["generation"]) and row.best_id == int(want["best_id"])
        assert f"{row.best_val:.6f}" == want["best_val"] and row.trained == int(want["trained"])
        assert "manifest_text" not in frame.columns


def test_weights_by_name_rebuild_the_recorded_buffers(run_dir):
    frame = rsi.load_run(run_dir)
    models = trained_with_weights(frame)
    assert models
    for model in models:
        record = rsi.model_record(run_dir, model)
        stored = rsi.parse_table(record["tensors"])
        assert stored == rsi.tensor_table(record["genome"]), f"model {model}: the derived table differs"
        weights = rsi.load_weights(run_dir, model)
        assert list(weights) == [t.name for t in stored]
        for t in stored:
            assert weights[t.name].shape == t.shape and weights[t.name].dtype == np.float32
        params, state = buffers_from(weights, stored)
        assert hashlib.sha256(params.tobytes()).hexdigest() == record["params_sha256"]
        assert hashlib.sha256(state.tobytes()).hexdigest() == record["state_sha256"]
        assert fnv1a(params.tobytes() + state.tobytes(), FNV_BASIS[2]) == record["weights_digest"]
        assert params.size == frame[frame.id == model].parameters.iloc[0]


def test_weights_of_a_lineage_without_tables_come_from_the_genome(format1_dir):
    tsv = read_tsv(f"{format1_dir}/models.tsv")
    for want in tsv:
        record = rsi.model_record(format1_dir, int(want["id"]))
        assert record["tensors"] is None  # written before the table existed
        weights = rsi.load_weights(format1_dir, int(want["id"]))
        params, state = buffers_from(weights, rsi.tensor_table(record["genome"]))
        assert fnv1a(params.tobytes() + state.tobytes(), FNV_BASIS[1]) == want["weights"]
    assert rsi.load_weights(format1_dir, 2)["block0.conv.weight"].shape == (8, 1, 3, 3)


def test_clear_errors(run_dir, tmp_path):
    with pytest.raises(KeyError, match="model 999 is in none of gen-000000.h5 .. gen-000001.h5"):
        rsi.load_weights(run_dir, 999)
    with pytest.raises(FileNotFoundError, match="no generation files"):
        rsi.load_run(str(tmp_path))
