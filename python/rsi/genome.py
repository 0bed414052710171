"""Genomes as rsi writes them (the canonical YAML of models/src/genome.cpp): parsing, flattening
into table columns, and the named-tensor table of the network a genome builds
(checkpoints/FORMAT.md, "Named tensors"), derived here the way models/src/network.cpp lays it out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

# Fashion-MNIST: one channel, 28 x 28 pixels (models::InputSpec).
INPUT_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class Tensor:
    """One row of the named-tensor table: a tensor inside the params or state buffer."""
    name: str
    buffer: str  # "params" or "state"
    offset: int  # in floats
    shape: tuple

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def line(self) -> str:
        return f"{self.name} {self.buffer} {self.offset} {','.join(str(d) for d in self.shape)}"


def parse(text: str) -> dict:
    """The genome YAML as a dict with `architecture` a list of (kind, fields) pairs."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or "architecture" not in doc:
        raise ValueError("not an rsi genome: no 'architecture' key")
    blocks = []
    for i, item in enumerate(doc["architecture"] or []):
        if not isinstance(item, dict) or len(item) != 1:
            raise ValueError(f"genome block {i}: expected one 'kind: fields' pair, got {item!r}")
        (kind, fields), = item.items()
        blocks.append((kind, fields if fields is not None else {}))
    doc["architecture"] = blocks
    return doc


def block_text(kind: str, f: Any) -> str:
    """A block in the compact form of the `arch.blocks` column: conv(8,k3,s1), maxpool(2,s2), relu."""
    if kind == "conv":
        return f"conv({f['channels']},k{f.get('kernel', 3)},s{f.get('stride', 1)})"
    if kind == "pool":
        size = f.get("size", 2)
        return f"{f.get('kind', 'max')}pool({size},s{f.get('stride', size)})"
    if kind == "residual":
        return f"residual(k{f.get('kernel', 3)})"
    if kind == "dense":
        return f"dense({f['units']})"
    if kind == "dropout":
        return f"dropout({f.get('rate', 0)})"
    if kind == "batchnorm":
        return "batchnorm"
    if kind == "activation":
        return str(f)
    raise ValueError(f"unknown block kind '{kind}'")


def _flatten(prefix: str, value: Any, out: dict) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}", sub, out)
    else:
        out[prefix] = value


def flatten(text: str) -> dict:
    """One column per genome field: arch.n_blocks, arch.blocks (compact text), recipe.learning_rate,
    recipe.augmentation.shift, designer.p.widen, ..."""
    doc = parse(text)
    blocks = doc["architecture"]
    out = {"arch.n_blocks": len(blocks), "arch.blocks": " ".join(block_text(k, f) for k, f in blocks)}
    _flatten("recipe", doc.get("recipe") or {}, out)
    for name, value in (doc.get("designer") or {}).items():
        out[f"designer.{name}"] = value  # gene names hold dots themselves (p.widen): not nested
    return out


class _Layout:
    """Walks the blocks as network.cpp builds them: parameters and state registered in order."""

    def __init__(self):
        self.params, self.states = [], []
        self.param_size = self.state_size = 0

    def param(self, name, shape):
        t = Tensor(name, "params", self.param_size, tuple(shape))
        self.params.append(t)
        self.param_size += t.size

    def norm(self, name, channels):
        self.param(f"{name}.gamma", [channels])
        self.param(f"{name}.beta", [channels])
        self.states.append((name, self.state_size, channels))  # [mean(C), var(C)]
        self.state_size += 2 * channels

    def table(self):
        out = list(self.params)
        for name, offset, c in self.states:
            out.append(Tensor(f"{name}.running_mean", "state", offset, (c,)))
            out.append(Tensor(f"{name}.running_var", "state", offset + c, (c,)))
        return out


def tensor_table(text: str, input_shape=INPUT_SHAPE) -> list:
    """The named-tensor table of the network `text` builds, as rsi writes it into the lineage files
    (files written before the table existed have none: this derives the same rows)."""
    layout = _Layout()
    c, h, w = input_shape
    spatial, features = True, c * h * w
    for i, (kind, f) in enumerate(parse(text)["architecture"]):
        name = f"block{i}"
        if kind == "dense" and spatial:
            spatial, features = False, c * h * w
        if kind == "conv":
            k, s, out = f.get("kernel", 3), f.get("stride", 1), f["channels"]
            layout.param(f"{name}.conv.weight", [out, c, k, k])
            layout.param(f"{name}.conv.bias", [out])
            h, w, c = (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1, out
        elif kind == "pool":
            size = f.get("size", 2)
            s = f.get("stride", size)
            h, w = (h - size) // s + 1, (w - size) // s + 1
        elif kind == "residual":
            k = f.get("kernel", 3)
            for part in ("1", "2"):
                layout.param(f"{name}.residual.conv{part}.weight", [c, c, k, k])
                layout.param(f"{name}.residual.conv{part}.bias", [c])
                layout.norm(f"{name}.residual.bn{part}", c)
        elif kind == "dense":
            layout.param(f"{name}.dense.weight", [f["units"], features])
            layout.param(f"{name}.dense.bias", [f["units"]])
            features = f["units"]
        elif kind == "batchnorm":
            layout.norm(f"{name}.batchnorm", c if spatial else features)
        elif kind not in ("activation", "dropout"):
            raise ValueError(f"genome block {i}: unknown kind '{kind}'")
    return layout.table()


def parse_table(text: str) -> list:
    """The `tensors` dataset's text ("<name> <params|state> <offset> <d0>,<d1>,..." per line)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split(" ")
        if len(fields) != 4 or fields[1] not in ("params", "state"):
            raise ValueError(f"tensors line {n}: expected '<name> <params|state> <offset> <shape>', got {line!r}")
        out.append(Tensor(fields[0], fields[1], int(fields[2]), tuple(int(d) for d in fields[3].split(","))))
    return out
