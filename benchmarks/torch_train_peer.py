#!/usr/bin/python3
"""PyTorch peer for benchmarks/train_throughput (CPU) and benchmarks/train_throughput_gpu (--device cuda).

Trains the same Fashion-MNIST models as `rsi train` (experiments/genomes/{mlp,cnn}.yaml)
with Adam(lr=1e-3), batch 128, cross-entropy, reshuffling every epoch, and prints one line:

  train_summary model=mlp threads=1 samples_per_s=... train_seconds=... samples=...
                peak_rss_mib=... test_acc=...

Only the training loop is timed; a 5-step warm-up (on separate batches, not counted) runs first,
and test-set evaluation happens after the timer stops. Data is loaded once into tensors and each
batch is an index into a shuffled permutation (no DataLoader), which is how a careful user would
write this loop. Run with the Debian interpreter that has torch:

  /usr/bin/python3 benchmarks/torch_train_peer.py --model mlp --threads 1 [--epochs 1] [--max-steps N]

On a GPU (--device cuda) the data set lives on the device (uploaded once, like ours), the
permutation is drawn there, and the timer is read after torch.cuda.synchronize() on both ends.
Without the Fashion-MNIST files (or with --synthetic) it trains on uniform random images of the
same shape and says data=synthetic: the work per step does not depend on pixel values.
"""

import argparse
import gzip
import os
import resource
import sys
import time

DATA_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_SAMPLES = 50000
BATCH = 128
WARMUP_STEPS = 5


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mlp", "cnn"], required=True)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op (OpenMP) threads")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OpenBLAS threads (default: --threads); its best may differ from torch's")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="cap on timed optimizer steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--synthetic", action="store_true", help="random images even if the data set is there")
    return p.parse_args()


args = parse_args()
if args.blas_threads is None:
    args.blas_threads = args.threads
if min(args.threads, args.blas_threads, args.epochs) < 1 or (args.max_steps is not None and args.max_steps < 1):
    sys.exit("torch_train_peer: --threads, --blas-threads, --epochs and --max-steps must be >= 1")

# Set both pools torch uses before it is imported: OpenMP for ATen/oneDNN (--threads) and
# OpenBLAS's own pthreads for GEMM (--blas-threads). They compete for the same cores, so the best
# pair is found by trying them (benchmarks/train_throughput does).
os.environ["OMP_NUM_THREADS"] = str(args.threads)
os.environ["MKL_NUM_THREADS"] = str(args.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def read_idx(path):
    """Reads an IDX file (gzip-compressed) into a numpy array of its declared shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise ValueError(f"{path}: size {arr.size} does not match header {dims}")
    return arr.reshape(dims)


def load(split, limit=None):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(os.path.join(args.data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(args.data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    if limit is not None:
        x, y = x[:limit], y[:limit]
    x = torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1)  # N,1,28,28
    y = torch.from_numpy(y.astype(np.int64))
    return x.contiguous(), y.contiguous()


def have_data():
    return not args.synthetic and os.path.exists(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz"))


def synthetic(count, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (count,), generator=g)
    return x.contiguous(), y.contiguous()


def build_model(name):
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, 10),
        )
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )


def cpu_kernels():
    """What torch computes with on this CPU: ATen's vector ISA, OpenBLAS's core, oneDNN's presence."""
    import ctypes
    import re
    cap = re.search(r"CPU capability usage: (\S+)", torch.__config__.show())
    blas = "?"
    with open("/proc/self/maps") as maps:
        libs = sorted({line.split()[-1] for line in maps if "blas" in line and ".so" in line})
    for lib in libs:
        try:
            fn = ctypes.CDLL(lib).openblas_get_corename
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_char_p
        blas = fn().decode()
        break
    onednn = "onednn" if torch.backends.mkldnn.is_available() else "no-onednn"
    return f"aten:{cap.group(1) if cap else '?'},openblas:{blas},{onednn}"


def main():
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)

    if have_data():
        data_kind = "fashion-mnist"
        x_train, y_train = load("train", TRAIN_SAMPLES)
        x_test, y_test = load("test")
    else:
        data_kind = "synthetic"
        print(f"torch_train_peer: no Fashion-MNIST under {args.data_dir} (or --synthetic): synthetic data",
              file=sys.stderr)
        x_train, y_train = synthetic(TRAIN_SAMPLES, 1)
        x_test, y_test = synthetic(10000, 2)
    n = x_train.shape[0]
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            sys.exit("torch_train_peer: --device cuda but torch.cuda.is_available() is False")
        print(f"torch_train_peer: torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
        x_train, y_train = x_train.to(device), y_train.to(device)
        x_test, y_test = x_test.to(device), y_test.to(device)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    model = build_model(args.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step(idx):
        xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    # Warm-up: allocator, oneDNN primitive caches, Adam state. Not timed, not counted.
    model.train()
    warm = torch.randperm(n, device=device)
    for s in range(WARMUP_STEPS):
        step(warm[s * BATCH:(s + 1) * BATCH])

    sync()
    samples = 0
    steps = 0
    done = False
    t0 = time.perf_counter()
    for _ in range(args.epochs):
        perm = torch.randperm(n, device=device)
        for start in range(0, n, BATCH):
            idx = perm[start:start + BATCH]
            loss = step(idx)
            samples += idx.numel()
            steps += 1
            if args.max_steps is not None and steps >= args.max_steps:
                done = True
                break
        if done:
            break
    loss.item()  # make sure the last step has fully completed
    sync()
    train_seconds = time.perf_counter() - t0

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, x_test.shape[0], 1000):
            pred = model(x_test[start:start + 1000]).argmax(1)
            correct += int((pred == y_test[start:start + 1000]).sum())
    test_acc = correct / x_test.shape[0]

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"train_summary model={args.model} threads={args.threads} blas_threads={args.blas_threads} device={args.device} "
          f"samples_per_s={samples / train_seconds:.1f} train_seconds={train_seconds:.3f} "
          f"samples={samples} peak_rss_mib={peak_rss_mib:.1f} test_acc={test_acc:.4f} data={data_kind} "
          f"kernels={cpu_kernels() if not cuda else 'cuda'}",
          flush=True)


if __name__ == "__main__":
    main()
