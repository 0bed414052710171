"""Reading an rsi run directory (checkpoints/FORMAT.md) into pandas, and a model's weights by name."""
from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict

import h5py
import numpy as np
import pandas as pd

from . import genome as genomes

_GENERATION_FILE = re.compile(r"^gen-(\d{6})\.h5$")
# Root attributes that are the same long text in every file, or per-file bookkeeping.
_SKIPPED_ROOT = {"manifest_text", "format"}


def generation_files(run_dir: str) -> list:
    """The run's gen-NNNNNN.h5 files in generation order (sidecars and *.tmp left out)."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: not a directory (expected an rsi run directory)")
    files = sorted(f for f in os.listdir(run_dir) if _GENERATION_FILE.match(f))
    if not files:
        raise FileNotFoundError(f"{run_dir}: no generation files (gen-NNNNNN.h5): is this an rsi run directory?")
    return [os.path.join(run_dir, f) for f in files]


def _value(v):
    """An HDF5 attribute as a plain Python value (strings are stored NUL-padded: bytes in h5py)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [_value(x) for x in v.tolist()] if v.dtype.kind in "SO" else v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _model_row(group, generation_file, population) -> dict:
    row = {k: _value(v) for k, v in group.attrs.items() if not k.endswith("_sha256")}
    row["parents"] = list(row.get("parents", []))
    for key, value in group["metrics"].attrs.items():
        row[key] = _value(value)
    row["genome"] = group["genome"][()].decode()
    row["file"] = os.path.basename(generation_file)
    row["selected"] = int(row["id"]) in population
    row["has_tensor_table"] = "tensors" in group
    try:
        row.update(genomes.flatten(row["genome"]))
    except (ValueError, KeyError) as e:  # a refused design can still be a valid genome; keep the row anyway
        row["genome_error"] = str(e)
    return row


def load_run(run_dir: str) -> pd.DataFrame:
    """One row per model of the run (every child of every generation, trained, failed or refused):
    id, generation, parents, op, description, status, failure, the metrics (val_accuracy,
    test_accuracy, val_loss, test_loss, parameters, flops, samples, wall_seconds, per-class lists,
    ...), `selected` (kept by its generation's selection), and one column per genome field
    (arch.n_blocks, arch.blocks, recipe.*, designer.*). Sorted by id."""
    rows = []
    for path in generation_files(run_dir):
        with h5py.File(path, "r") as f:
            population = {int(x) for x in f.attrs["population"]}
            for key in f["models"]:
                rows.append(_model_row(f["models"][key], path, population))
    front = ["id", "generation", "parents", "op", "status", "failure", "val_accuracy", "test_accuracy",
             "parameters", "flops"]
    frame = pd.DataFrame(rows)
    frame = frame[front + [c for c in frame.columns if c not in front]]
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def load_generations(run_dir: str) -> pd.DataFrame:
    """One row per generation: its root attributes (best_val, median_val, best_test, best_id, gain,
    design_skill, diversity, trained, failed, refused, seconds, population, governance fields,
    hashes, ...) without the manifest text, which every file repeats."""
    rows = []
    for path in generation_files(run_dir):
        with h5py.File(path, "r") as f:
            row = {k: _value(v) for k, v in f.attrs.items() if k not in _SKIPPED_ROOT}
            row["file"] = os.path.basename(path)
            rows.append(row)
    frame = pd.DataFrame(rows)
    front = ["generation", "best_val", "median_val", "best_test", "best_id", "trained", "failed", "refused"]
    frame = frame[front + [c for c in frame.columns if c not in front]]
    return frame.sort_values("generation").reset_index(drop=True)


def _birth(run_dir: str, model: int):
    """(file index, files) of the generation file whose /models holds `model`."""
    files = generation_files(run_dir)
    for i, path in enumerate(files):
        with h5py.File(path, "r") as f:
            if str(model) in f["models"]:
                return i, files
    raise KeyError(f"{run_dir}: model {model} is in none of {os.path.basename(files[0])} .. "
                   f"{os.path.basename(files[-1])}")


def _find_weights(run_dir, model, born, files):
    """params, state as FORMAT.md orders the places: gen-N.h5, its sidecar, a later population."""
    key = str(model)
    with h5py.File(files[born], "r") as f:
        if "params" in f["models"][key]:
            return f["models"][key]["params"][:], f["models"][key]["state"][:]
    sidecar = files[born][:-len(".h5")] + ".weights.h5"
    if os.path.exists(sidecar):
        with h5py.File(sidecar, "r") as f:
            if key in f.get("models", {}):
                return f["models"][key]["params"][:], f["models"][key]["state"][:]
    for path in reversed(files[born:]):
        with h5py.File(path, "r") as f:
            member = f.get("population", {}).get(key)
            if member is not None and "params" in member:
                return member["params"][:], member["state"][:]
    return None


def model_record(run_dir: str, model: int) -> dict:
    """The model's attributes, genome text and tensor table (stored, or derived for older files)."""
    born, files = _birth(run_dir, model)
    with h5py.File(files[born], "r") as f:
        g = f["models"][str(model)]
        record = {k: _value(v) for k, v in g.attrs.items()}
        record["genome"] = g["genome"][()].decode()
        record["tensors"] = g["tensors"][()].decode() if "tensors" in g else None
        record["run"] = {k: _value(v) for k, v in f.attrs.items()
                         if k in ("run_name", "manifest_text", "manifest_hash", "program_version", "git_commit",
                                  "data", "data_fingerprint")}
        # [channels, height, width, classes]: written for a task of kind images; Fashion-MNIST's otherwise
        shape = [int(v) for v in f.attrs["input"]] if "input" in f.attrs else [*genomes.INPUT_SHAPE, 10]
        record["input_shape"], record["classes"] = tuple(shape[:3]), shape[3]
    record["born_in"], record["files"] = born, files
    return record


def tensors_of(record: dict) -> list:
    """The named-tensor table of a model record: the file's, or derived from the genome."""
    if record["tensors"] is not None:
        return genomes.parse_table(record["tensors"])
    return genomes.tensor_table(record["genome"], record["input_shape"])


def load_weights(run_dir: str, model: int) -> "OrderedDict[str, np.ndarray]":
    """name -> float32 array of its shape (block0.conv.weight [K,C,k,k], block3.dense.weight
    [out,in], block1.batchnorm.running_var [C], ...), in the table's order. The weights are checked
    against the SHA-256 digests the lineage recorded. Raises KeyError for an unknown model and
    LookupError when retention dropped its weights."""
    record = model_record(run_dir, model)
    if record["status"] != "trained" or not record["params_sha256"]:
        raise LookupError(f"{run_dir}: model {model} has no weights (status {record['status']}: "
                          f"{record['failure'] or 'a surrogate task trains no weights'})")
    found = _find_weights(run_dir, model, record["born_in"], record["files"])
    if found is None:
        raise LookupError(f"{run_dir}: model {model} (generation {record['generation']}): its weights were not "
                          "kept (retention keeps the children of the last K generations and the population)")
    params, state = found
    for name, values in (("params", params), ("state", state)):
        digest = hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).hexdigest()
        if digest != record[f"{name}_sha256"]:
            raise ValueError(f"{run_dir}: model {model}: {name} digest mismatch (recorded "
                             f"{record[name + '_sha256']}, computed {digest}): run 'rsi verify {run_dir}'")
    buffers = {"params": params, "state": state}
    out = OrderedDict()
    for t in tensors_of(record):
        values = buffers[t.buffer][t.offset:t.offset + t.size]
        if values.size != t.size:
            raise ValueError(f"{run_dir}: model {model}: tensor {t.name} {list(t.shape)} @ {t.offset} runs past the "
                             f"end of {t.buffer} ({buffers[t.buffer].size} values)")
        out[t.name] = values.reshape(t.shape).astype(np.float32, copy=True)
    return out
