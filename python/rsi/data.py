"""The hidden test set as rsi reads it (models/src/data.cpp): Fashion-MNIST's t10k IDX files from
Debian's dataset-fashion-mnist, pixels = bytes / 255 (no other normalisation), NCHW."""
from __future__ import annotations

import gzip
import os

import numpy as np

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"


def _idx(path: str, magic: int) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    if int.from_bytes(raw[:4], "big") != magic:
        raise ValueError(f"{path}: magic {raw[:4].hex()}, expected {magic:08x}: not a Fashion-MNIST IDX file")
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_mnist_test(limit: int | None = None, data_dir: str = FASHION_MNIST):
    """(images float32 [N, 1, 28, 28] in [0, 1], labels uint8 [N]) of the first `limit` (default
    all 10,000) hidden-test images, as `rsi eval` feeds them."""
    images = _idx(os.path.join(data_dir, "t10k-images-idx3-ubyte.gz"), 0x803)[:limit]
    labels = _idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte.gz"), 0x801)[:limit]
    return images[:, None].astype(np.float32) / np.float32(255), labels
