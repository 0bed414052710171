#!/usr/bin/python3
"""Optuna TPE + PyTorch peer for benchmarks/time_to_accuracy: a hyper-parameter and architecture search
over a CNN space comparable to what rsi's designer reaches under a manifest's `design:` limits, on
exactly rsi's labeled/validation split, until a wall-clock budget ends.

Each trial samples (TPESampler(seed=--sampler-seed), define-by-run):
  conv layers 1..3, each 8/16/32/64 channels, kernel 3 or 5 (same padding, stride 1), ReLU, optional
  2x2 max pool after it; batch-norm after every conv (yes/no); dense layers 0..2 of 32..256 units
  with ReLU and dropout 0..0.5 before the 10-way output; Adam, learning rate log-uniform 1e-4..1e-2,
  weight decay 0/1e-5/1e-4, constant or cosine schedule, batch 32..256, epochs 1..max_epochs.
  With --weight-average search, also weight averaging off or on (torch.optim.swa_utils.AveragedModel:
  the bias-corrected moving average of the iterates with decay 0.99 per step, norm statistics
  included, as rsi's recipe key weight_average; the averaged model is the one validated, pruned on
  and tested). Off by default: on 2 cores TPE then settled on 2-epoch averaged trials and stayed under
  0.90 for 900 s (0.8954; without it, 0.90 at 187-215 s; Intel Xeon VM, 2026-12-06).
A sample over the manifest's max_parameters or max_flops (counted as rsi counts them,
models/src/genome.cpp) is pruned before any training, as rsi's red lines refuse such a child.
The sampled network trains on the labeled split with cross-entropy; validation accuracy after
every epoch goes to the pruner (MedianPruner by default, as Optuna's users run TPE; --pruner none
turns it off); a completed trial is scored on the validation split (the only selection signal) and
on the hidden test set (reported, never used). Pixels are value/255, as models/src/data.cpp reads them.

The split is rsi's: models::make_split (a forward Fisher-Yates shuffle of the 60k training images
drawn from Philox4x32-10, key = run seed, stream Split) cut into labeled / unlabeled / validation,
reproduced here in numpy; its FNV-1a fingerprint is printed and, with --expect-fingerprint, checked
against the one rsi stores in its lineage (run attribute split_fingerprint). The unlabeled part is
not used (a plain supervised search has no use for it).

Output: one JSON line per trial on --log (and a summary on stdout):
  {"trial": n, "state": "complete"|"pruned"|"infeasible"|"cut", "end_s": seconds since --t0,
   "val": ..., "test": ..., "params": ..., "flops": ..., "train_s": ..., "config": {...}}
"cut" is a trial that the budget ended mid-training (not counted). Run with the interpreter of
.venv-bench (scripts/setup --bench: Debian's python3-torch plus a pinned Optuna):

  .venv-bench/bin/python benchmarks/time_to_accuracy_peer.py --budget 900 --log trials.jsonl \\
      [--seed 1 --labeled 40000 --unlabeled 10000 --validation 5000] \\
      [--max-parameters 1000000 --max-flops 20000000 --max-epochs 3] [--threads 2 --blas-threads 1]
"""

import argparse
import gzip
import json
import math
import os
import sys
import time

T_IMPORT = time.time()
DATA_DIR = "/usr/share/datasets/fashion-mnist"
TRAIN_SIZE = 60000
CHANNELS = [8, 16, 32, 64]
UNITS = [32, 64, 128, 256]
BATCHES = [32, 64, 128, 256]
WEIGHT_AVERAGE = 0.99
EVAL_BATCH = 1000


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, required=True, help="wall seconds from --t0 until the search stops")
    p.add_argument("--t0", type=float, default=None,
                   help="UNIX time the budget counts from (the driver's start of this command; default: now)")
    p.add_argument("--log", required=True, help="JSON-lines file, one line per trial")
    p.add_argument("--seed", type=int, default=1, help="rsi run seed: decides the split (run.seed)")
    p.add_argument("--labeled", type=int, default=40000)
    p.add_argument("--unlabeled", type=int, default=10000)
    p.add_argument("--validation", type=int, default=5000)
    p.add_argument("--max-parameters", type=int, default=1000000)
    p.add_argument("--max-flops", type=int, default=20000000, help="forward FLOPs per sample, as rsi counts")
    p.add_argument("--max-epochs", type=int, default=3)
    p.add_argument("--sampler-seed", type=int, default=0, help="TPESampler seed")
    p.add_argument("--pruner", choices=["median", "none"], default="median")
    p.add_argument("--weight-average", choices=["off", "search"], default="off",
                   help="off: every trial returns its last weights (default); search: weight averaging "
                        "(decay 0.99) off or on is one more choice of the search")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op (OpenMP) threads")
    p.add_argument("--blas-threads", type=int, default=1, help="OpenBLAS threads")
    p.add_argument("--jobs", type=int, default=1,
                   help="trials in parallel (Optuna n_jobs, threads of this process sharing --threads)")
    p.add_argument("--data-dir", default=DATA_DIR)
    p.add_argument("--expect-fingerprint", type=int, default=None,
                   help="rsi's split_fingerprint (decimal): exit 3 if the reproduced split differs")
    a = p.parse_args()
    if a.t0 is None:
        a.t0 = T_IMPORT
    if min(a.threads, a.blas_threads, a.max_epochs, a.jobs) < 1 or a.budget <= 0:
        p.error("--threads, --blas-threads, --jobs and --max-epochs must be >= 1, --budget > 0")
    if min(a.labeled, a.unlabeled, a.validation) < 0 or a.labeled + a.unlabeled + a.validation > TRAIN_SIZE:
        p.error(f"--labeled + --unlabeled + --validation must be within the {TRAIN_SIZE} training images")
    if a.labeled < 1 or a.validation < 1:
        p.error("--labeled and --validation must be >= 1")
    return a


args = parse_args()
# Both pools torch uses, set before it is imported (benchmarks/torch_train_peer.py found T=2, B=1
# best for a CNN on 2 cores; the driver passes what it was told).
os.environ["OMP_NUM_THREADS"] = str(args.threads)
os.environ["MKL_NUM_THREADS"] = str(args.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)

import numpy as np  # noqa: E402

try:
    import optuna  # noqa: E402
except ImportError:
    sys.exit("time_to_accuracy_peer: optuna is not importable by " + sys.executable +
             "; run scripts/setup --bench and use .venv-bench/bin/python")
import torch  # noqa: E402
from torch import nn  # noqa: E402


# ---- rsi's split, reproduced (models/src/data.cpp make_split, kernels rng.h, fnv1a.h) ----------

M32 = np.uint64(0xFFFFFFFF)


def philox_u32(key, c0, c1, c2, c3):
    """Word 0 of Philox4x32-10 for arrays of counters (rsi::kernels::Philox::generate)."""
    k0, k1 = np.uint64(key & 0xFFFFFFFF), np.uint64((key >> 32) & 0xFFFFFFFF)
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & M32 for c in (c0, c1, c2, c3))
    for _ in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & M32, (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & M32)
        k0 = (k0 + np.uint64(0x9E3779B9)) & M32
        k1 = (k1 + np.uint64(0xBB67AE85)) & M32
    return c0


def make_split(train_size, labeled, unlabeled, validation, seed):
    used = labeled + unlabeled + validation
    stream = 5 << 40  # rng_stream(RngUse::Split, 0)
    n = min(used, train_size - 1)
    i = np.arange(n, dtype=np.uint64)
    u = philox_u32(seed, np.full(n, stream & 0xFFFFFFFF, np.uint64), np.full(n, stream >> 32, np.uint64),
                   i >> np.uint64(32), i & M32)
    picks = (i + ((u * (np.uint64(train_size) - i)) >> np.uint64(32))).tolist()  # i + rng.below(i, remaining)
    order = list(range(train_size))
    for k, p in enumerate(picks):
        order[k], order[p] = order[p], order[k]
    order = np.asarray(order, dtype=np.int64)
    return order[:labeled], order[labeled:labeled + unlabeled], order[labeled + unlabeled:used]


def split_fingerprint(lists):
    h, prime, mask = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1

    def add(value):
        nonlocal h
        for b in (value & mask).to_bytes(8, "little"):
            h = ((h ^ b) * prime) & mask

    for number, indices in enumerate(lists):
        add(0x53504C4954000000 + number)
        add(len(indices))
        for v in indices.tolist():
            add(v)
    return h


# ---- data -----------------------------------------------------------------------------------------

def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.exit(f"time_to_accuracy_peer: cannot read {path}: {e}; install the Debian package "
                 "dataset-fashion-mnist (scripts/setup) or pass --data-dir")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if data[0] or data[1] or data[2] != 0x08 or arr.size != int(np.prod(dims)):
        sys.exit(f"time_to_accuracy_peer: {path} is not an unsigned-byte IDX file of its declared size; "
                 "reinstall dataset-fashion-mnist")
    return arr.reshape(dims)


def load(prefix):
    x = read_idx(os.path.join(args.data_dir, f"{prefix}-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(args.data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
    return (torch.from_numpy(x.astype(np.float32) / 255.0).unsqueeze(1).contiguous(),
            torch.from_numpy(y.astype(np.int64)).contiguous())


# ---- the search space -------------------------------------------------------------------------------

def sample_config(trial):
    c = {"convs": [], "dense": []}
    for i in range(trial.suggest_int("n_conv", 1, 3)):
        c["convs"].append({"channels": trial.suggest_categorical(f"conv{i}_channels", CHANNELS),
                           "kernel": trial.suggest_categorical(f"conv{i}_kernel", [3, 5]),
                           "pool": trial.suggest_categorical(f"conv{i}_pool", [True, False])})
    c["batch_norm"] = trial.suggest_categorical("batch_norm", [True, False])
    for i in range(trial.suggest_int("n_dense", 0, 2)):
        c["dense"].append(trial.suggest_categorical(f"dense{i}_units", UNITS))
    c["dropout"] = trial.suggest_float("dropout", 0.0, 0.5) if c["dense"] else 0.0
    c["lr"] = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    c["weight_decay"] = trial.suggest_categorical("weight_decay", [0.0, 1e-5, 1e-4])
    c["schedule"] = trial.suggest_categorical("schedule", ["constant", "cosine"])
    c["batch"] = trial.suggest_categorical("batch", BATCHES)
    c["epochs"] = trial.suggest_int("epochs", 1, args.max_epochs)
    c["weight_average"] = (trial.suggest_categorical("weight_average", [0.0, WEIGHT_AVERAGE])
                           if args.weight_average == "search" else 0.0)
    return c


def averaged_model(model, decay):
    """The bias-corrected exponential moving average of the iterates (rsi's Recipe::weight_average):
    after the t-th update, avg += (1 - d) / (1 - d^t) * (weights - avg); the first update copies."""
    def ema(avg, now, averaged):
        t = float(averaged) + 1.0
        return avg + (1.0 - decay) / (1.0 - decay ** t) * (now - avg)
    return torch.optim.swa_utils.AveragedModel(model, avg_fn=ema, use_buffers=True)


def cost(c):
    """Parameters and forward FLOPs per sample, counted as rsi's models::validate counts them."""
    ch, h, w = 1, 28, 28
    params = flops = 0
    for conv in c["convs"]:
        k, out = conv["kernel"], conv["channels"]
        params += out * ch * k * k + out
        flops += 2 * out * ch * k * k * h * w + out * h * w
        ch = out
        if c["batch_norm"]:
            params += 2 * ch
            flops += ch * h * w
        flops += ch * h * w  # ReLU
        if conv["pool"]:
            h, w = h // 2, w // 2
            flops += ch * h * w
    features = ch * h * w
    for units in c["dense"] + [10]:
        params += features * units + units
        flops += 2 * features * units + units
        features = units
    flops += sum(c["dense"])  # the ReLU after each hidden dense layer
    return params, flops


def build(c):
    layers, ch = [], 1
    for conv in c["convs"]:
        layers.append(nn.Conv2d(ch, conv["channels"], conv["kernel"], padding=conv["kernel"] // 2))
        ch = conv["channels"]
        if c["batch_norm"]:
            layers.append(nn.BatchNorm2d(ch))
        layers.append(nn.ReLU())
        if conv["pool"]:
            layers.append(nn.MaxPool2d(2))
    layers.append(nn.Flatten())
    side = 28
    for conv in c["convs"]:
        side = side // 2 if conv["pool"] else side
    features = ch * side * side
    for units in c["dense"]:
        layers += [nn.Linear(features, units), nn.ReLU()]
        if c["dropout"] > 0:
            layers.append(nn.Dropout(c["dropout"]))
        features = units
    layers.append(nn.Linear(features, 10))
    return nn.Sequential(*layers)


class BudgetEnded(Exception):
    pass


def accuracy(model, x, y):
    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, x.shape[0], EVAL_BATCH):
            correct += int((model(x[s:s + EVAL_BATCH]).argmax(1) == y[s:s + EVAL_BATCH]).sum())
    return correct / x.shape[0]


def main():
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    deadline = args.t0 + args.budget

    labeled, unlabeled, validation = make_split(TRAIN_SIZE, args.labeled, args.unlabeled, args.validation, args.seed)
    fingerprint = split_fingerprint([labeled, unlabeled, validation])
    print(f"peer: split seed={args.seed} labeled={args.labeled} unlabeled={args.unlabeled} "
          f"validation={args.validation} fingerprint={fingerprint}", flush=True)
    if args.expect_fingerprint is not None and fingerprint != args.expect_fingerprint:
        print(f"time_to_accuracy_peer: the reproduced split's fingerprint {fingerprint} differs from rsi's "
              f"{args.expect_fingerprint}; models::make_split or the manifest's task sizes changed — update "
              "make_split in this file to match models/src/data.cpp", file=sys.stderr)
        return 3
    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
    if x_train.shape[0] != TRAIN_SIZE:
        sys.exit(f"time_to_accuracy_peer: expected {TRAIN_SIZE} training images, found {x_train.shape[0]}")
    lab = torch.from_numpy(labeled)
    x_lab, y_lab = x_train.index_select(0, lab).contiguous(), y_train.index_select(0, lab).contiguous()
    val = torch.from_numpy(validation)
    x_val, y_val = x_train.index_select(0, val).contiguous(), y_train.index_select(0, val).contiguous()
    del x_train, y_train
    n = x_lab.shape[0]
    print(f"peer: data ready at {time.time() - args.t0:.2f} s; torch {torch.__version__}, optuna {optuna.__version__}, "
          f"threads={torch.get_num_threads()} blas_threads={args.blas_threads} jobs={args.jobs}", flush=True)

    log = open(args.log, "a", buffering=1)
    loss_fn = nn.CrossEntropyLoss()

    def record(trial, state, c, **fields):
        line = {"trial": trial.number, "state": state, "end_s": round(time.time() - args.t0, 3), **fields,
                "config": c}
        log.write(json.dumps(line) + "\n")
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        print(f"peer: trial {trial.number} {state} at {line['end_s']:.1f} s {shown}", flush=True)

    def objective(trial):
        c = sample_config(trial)
        params, flops = cost(c)
        if params > args.max_parameters or flops > args.max_flops:
            record(trial, "infeasible", c, params=params, flops=flops)
            raise optuna.TrialPruned()
        torch.manual_seed(trial.number)
        model = build(c)
        opt = torch.optim.Adam(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
        steps_per_epoch = math.ceil(n / c["batch"])
        sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_per_epoch * c["epochs"])
                 if c["schedule"] == "cosine" else None)
        averaged = averaged_model(model, c["weight_average"]) if c["weight_average"] > 0 else None
        scored = averaged if averaged is not None else model
        gen = torch.Generator().manual_seed(trial.number)
        started = time.time()
        val_acc = 0.0
        step = 0
        try:
            for epoch in range(c["epochs"]):
                model.train()
                perm = torch.randperm(n, generator=gen)
                for s in range(0, n, c["batch"]):
                    idx = perm[s:s + c["batch"]]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x_lab.index_select(0, idx)), y_lab.index_select(0, idx))
                    loss.backward()
                    opt.step()
                    if sched:
                        sched.step()
                    if averaged is not None:
                        averaged.update_parameters(model)
                    step += 1
                    if time.time() >= deadline:
                        raise BudgetEnded()
                if not math.isfinite(loss.item()):
                    record(trial, "diverged", c, params=params, flops=flops)
                    raise optuna.TrialPruned()
                val_acc = accuracy(scored, x_val, y_val)
                if time.time() >= deadline:
                    raise BudgetEnded()
                trial.report(val_acc, epoch)
                if trial.should_prune():
                    record(trial, "pruned", c, val=val_acc, epoch=epoch + 1, params=params, flops=flops)
                    raise optuna.TrialPruned()
            test_acc = accuracy(scored, x_test, y_test)  # reported, never selected on
        except BudgetEnded:
            record(trial, "cut", c, params=params, flops=flops)
            trial.study.stop()
            raise optuna.TrialPruned()
        if time.time() >= deadline:
            record(trial, "cut", c, val=val_acc, params=params, flops=flops)
            trial.study.stop()
            raise optuna.TrialPruned()
        record(trial, "complete", c, val=val_acc, test=test_acc, params=params, flops=flops,
               train_s=round(time.time() - started, 2))
        return val_acc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0) if args.pruner == "median" \
        else optuna.pruners.NopPruner()
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.sampler_seed),
                                pruner=pruner)
    remaining = deadline - time.time()
    if remaining > 0:
        study.optimize(objective, timeout=remaining, n_jobs=args.jobs, gc_after_trial=False)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    print(f"peer: {len(study.trials)} trials, {len(done)} complete, ended at {time.time() - args.t0:.1f} s"
          + (f"; best val {study.best_value:.4f}" if done else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
