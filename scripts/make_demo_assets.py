"""Builds the demo assets that ship in ``nncompress/data/`` (run by hand, not at install or run time).

Writes:
  * ``mnist_subset.npz``: the first N images of the MNIST *test* split (uint8, 28x28) and their labels.
  * ``mnist_net.safetensors``: the seed ``Net`` trained on the MNIST *train* split, deterministically.

The real MNIST lies outside the project (``../shared/data/mnist``); the project must not read it at run
time, so the few things the demo needs are generated here once and committed.

Usage:
    .venv/bin/python scripts/make_demo_assets.py                      # defaults below
    .venv/bin/python scripts/make_demo_assets.py --mnist-dir /path/to/mnist --epochs 1 --subset 1000
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from nncompress.data import MNIST_MEAN as MEAN
from nncompress.data import MNIST_STD as STD
from nncompress.models.mnist import Net

ROOT = Path(__file__).resolve().parent.parent
DATA_OUT = ROOT / "nncompress" / "data"
# Uncompressed MD5s published with the files (see ../shared/data/mnist/README.md).
EXPECTED_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


def read_idx(path: Path) -> np.ndarray:
    """Reads one gzip idx file, checking its published MD5 so a corrupt copy fails here, not in training."""
    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.md5(raw).hexdigest()
    if digest != EXPECTED_MD5[path.name]:
        raise SystemExit(f"{path}: md5 {digest} != expected {EXPECTED_MD5[path.name]}")
    magic, count = struct.unpack(">II", raw[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    assert dims[0] == count
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(images.astype(np.float32)) / 255.0 - MEAN) / STD).unsqueeze(1)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), 1000):
        out = model(to_tensor(images[start : start + 1000]))
        correct += int(
            (out.argmax(1) == torch.from_numpy(labels[start : start + 1000].astype(np.int64))).sum()
        )
    return correct / len(images)


def train(images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = Net()
    # SGD with momentum, batch 64: one epoch reaches ~98-99% on this net (as in NNI's MNIST example).
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_all = to_tensor(images)
    y_all = torch.from_numpy(labels.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        t0 = time.perf_counter()
        for step, start in enumerate(range(0, len(order), 64)):
            idx = order[start : start + 64]
            optimizer.zero_grad()
            loss = F.nll_loss(model(x_all[idx]), y_all[idx])
            loss.backward()
            optimizer.step()
            if step % 200 == 0:
                print(f"epoch {epoch + 1} step {step:4d} loss {loss.item():.4f}", flush=True)
        print(f"epoch {epoch + 1} took {time.perf_counter() - t0:.1f}s", flush=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mnist-dir", type=Path, default=ROOT.parent / "shared" / "data" / "mnist")
    parser.add_argument("--out", type=Path, default=DATA_OUT)
    parser.add_argument("--subset", type=int, default=1000, help="test images to ship (default 1000)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # Single-threaded so the trained weights are bit-for-bit the same on every run of this script.
    torch.set_num_threads(1)
    train_x = read_idx(args.mnist_dir / "train-images-idx3-ubyte.gz")
    train_y = read_idx(args.mnist_dir / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(args.mnist_dir / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(args.mnist_dir / "t10k-labels-idx1-ubyte.gz")

    args.out.mkdir(parents=True, exist_ok=True)
    sub_x, sub_y = test_x[: args.subset], test_y[: args.subset]
    np.savez_compressed(args.out / "mnist_subset.npz", images=sub_x, labels=sub_y)

    model = train(train_x, train_y, epochs=args.epochs, seed=args.seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    weights_path = args.out / "mnist_net.safetensors"
    # One metadata key only: safetensors writes metadata in hash-map order, so several keys would make
    # the file's bytes (and its sha256) differ between runs even though the tensors are identical.
    save_file(state, str(weights_path), metadata={"nncompress_architecture": "mnist_net"})
    # A safetensors file opens with its header length (u64, little endian). A length whose first bytes
    # are 0x80 0x02..0x05 also reads as a pickle PROTO opcode, and naive format sniffers call the file
    # a pickle (the first version of this file, header 640 = 0x280, was refused that way).
    head = weights_path.read_bytes()[:2]
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        raise SystemExit(f"{weights_path}: header length looks like a pickle opcode; change the metadata")

    summary = {
        "test_accuracy_full": accuracy(model, test_x, test_y),
        "test_accuracy_subset": accuracy(model, sub_x, sub_y),
        "subset_size": len(sub_x),
        "epochs": args.epochs,
        "seed": args.seed,
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "torch": torch.__version__,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
