"""A model of an rsi run rebuilt in PyTorch from its genome, with its weights (eval mode).

The input is what rsi feeds its networks: float pixels in [0, 1] (the IDX bytes divided by 255,
models/src/data.cpp; rsi applies no mean/std normalisation), NCHW [N, 1, 28, 28]."""
from __future__ import annotations

try:
    import torch
    from torch import nn
except ImportError as e:  # torch is optional: the rest of the package works without it
    raise ImportError("rsi.to_torch needs PyTorch (Debian: apt-get install python3-torch, or "
                      "scripts/setup --bench)") from e

from . import genome as genomes
from .run import load_weights, model_record

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}  # nn.GELU is the exact erf form, as rsi's


def _norm(spatial: bool, channels: int) -> nn.Module:
    # rsi's batch norm: eps 1e-5, momentum 0.1 (models/src/network.cpp, BatchNormLayer).
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1) if spatial else nn.BatchNorm1d(channels, eps=1e-5,
                                                                                            momentum=0.1)


def _norm_targets(prefix: str, bn: nn.BatchNorm2d) -> dict:
    return {f"{prefix}.gamma": bn.weight, f"{prefix}.beta": bn.bias, f"{prefix}.running_mean": bn.running_mean,
            f"{prefix}.running_var": bn.running_var}


class Residual(nn.Module):
    """x + bn2(conv2(relu(bn1(conv1(x))))) at the input's channels, stride 1, same padding."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel, 1, kernel // 2)
        self.bn1 = _norm(True, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel, 1, kernel // 2)
        self.bn2 = _norm(True, channels)

    def forward(self, x):
        return x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


class RsiNetwork(nn.Module):
    """The blocks of a genome in order; a flatten (C, H, W order) before the first dense block that
    follows a spatial one, or before a first dense block."""

    def __init__(self, genome_text: str, input_shape=genomes.INPUT_SHAPE):
        super().__init__()
        self.genome = genome_text
        self.blocks = nn.ModuleList()
        self.flatten_before = []  # per block: flatten its input first
        self.targets = {}         # table name -> the tensor it fills
        c, h, w = input_shape
        spatial, features = True, c * h * w
        for i, (kind, f) in enumerate(genomes.parse(genome_text)["architecture"]):
            name = f"block{i}"
            flatten = kind == "dense" and spatial
            if flatten:
                spatial, features = False, c * h * w
            module, (c, h, w, features) = self._block(name, kind, f, spatial, (c, h, w, features))
            self.blocks.append(module)
            self.flatten_before.append(flatten)
        self.eval()

    def _block(self, name, kind, f, spatial, shape):
        c, h, w, features = shape
        if kind == "conv":
            k, s, out = f.get("kernel", 3), f.get("stride", 1), f["channels"]
            m = nn.Conv2d(c, out, k, s, k // 2)
            self.targets.update({f"{name}.conv.weight": m.weight, f"{name}.conv.bias": m.bias})
            return m, (out, (h + 2 * (k // 2) - k) // s + 1, (w + 2 * (k // 2) - k) // s + 1, features)
        if kind == "pool":
            size = f.get("size", 2)
            s = f.get("stride", size)
            m = nn.MaxPool2d(size, s) if f.get("kind", "max") == "max" else nn.AvgPool2d(size, s)
            return m, (c, (h - size) // s + 1, (w - size) // s + 1, features)
        if kind == "residual":
            m = Residual(c, f.get("kernel", 3))
            for part in ("1", "2"):
                conv, bn = getattr(m, f"conv{part}"), getattr(m, f"bn{part}")
                self.targets.update({f"{name}.residual.conv{part}.weight": conv.weight,
                                     f"{name}.residual.conv{part}.bias": conv.bias})
                self.targets.update(_norm_targets(f"{name}.residual.bn{part}", bn))
            return m, shape
        if kind == "dense":
            m = nn.Linear(features, f["units"])  # weight [out][in], as rsi's
            self.targets.update({f"{name}.dense.weight": m.weight, f"{name}.dense.bias": m.bias})
            return m, (c, h, w, f["units"])
        if kind == "batchnorm":
            m = _norm(spatial, c if spatial else features)
            self.targets.update(_norm_targets(f"{name}.batchnorm", m))
            return m, shape
        if kind == "activation":
            return _ACTIVATIONS[f](), shape
        if kind == "dropout":
            return nn.Dropout(f.get("rate", 0)), shape  # the identity in eval mode
        raise ValueError(f"{name}: unknown block kind '{kind}'")

    def load_named(self, weights: dict) -> None:
        """Fills every tensor from `weights` (name -> array, load_weights' result); the names must be
        exactly the network's."""
        missing = sorted(set(self.targets) - set(weights))
        extra = sorted(set(weights) - set(self.targets))
        if missing or extra:
            raise ValueError(f"the weights do not fit the genome's network: missing {missing}, unexpected {extra}")
        with torch.no_grad():
            for name, target in self.targets.items():
                value = torch.as_tensor(weights[name])
                if tuple(value.shape) != tuple(target.shape):
                    raise ValueError(f"{name}: shape {list(value.shape)}, the network has {list(target.shape)}")
                target.copy_(value)

    def forward(self, x):
        for flatten, block in zip(self.flatten_before, self.blocks):
            if flatten:
                x = torch.flatten(x, 1)
            x = block(x)
        return x


def to_torch(run_dir: str, model: int) -> RsiNetwork:
    """Model `model` of the run in `run_dir` as a torch.nn.Module in eval mode: input [N, C, H, W]
    float pixels in [0, 1] (the run's input: [N, 1, 28, 28] for Fashion-MNIST), output the logits
    [N, classes] that `rsi eval` computes (within float rounding)."""
    record = model_record(run_dir, model)
    net = RsiNetwork(record["genome"], record["input_shape"])
    net.load_named(load_weights(run_dir, model))
    return net.eval()
