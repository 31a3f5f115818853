"""Quantization benchmark: fp32 vs int8 latency, bytes and accuracy (run by hand, prints markdown).

Rows:
- MNIST (real, full 10,000-image test split), the seed Net with the shipped weights: static int8 (QDQ
  and QOperator), dynamic int8, QAT (one fine-tuning pass over part of the training split), and
  prune -> speedup -> fine-tune -> static int8 (50% channels of conv1/conv2/fc1, L1 norm).
- ResNet-18 (CIFAR layout, random weights: no CIFAR data on this machine): static int8 QDQ and
  QOperator, PyTorch's own int8 (torch.ao FX, x86 backend), prune 50% of conv channels -> speedup ->
  static int8. Without labels, "accuracy" is top-1 agreement with fp32 on random inputs.
- LSTM classifier (random weights): dynamic int8, ONNX and torch.

Latency: medians of ``--runs`` passes, fp32 (torch eager and onnxruntime) and int8 interleaved in the
same run, ``--threads`` intra-op threads. Speedup is fp32 onnxruntime / int8 onnxruntime.

Usage:
    .venv/bin/python benchmarks/quantization.py --mnist ../shared/data/mnist [--threads 1] [--runs 15]
"""

from __future__ import annotations

import argparse
import copy
import gzip
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nncompress.data import MNIST_MEAN, MNIST_STD, mnist_net_weights_path
from nncompress.models import get
from nncompress.quantize import QuantMetrics, QuantResult, quantize


def read_idx(path: Path) -> np.ndarray:
    """One gzip idx file as a uint8 array."""
    raw = gzip.decompress(path.read_bytes())
    magic, _ = struct.unpack(">II", raw[:8])
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
    x = ((torch.from_numpy(images.astype(np.float32)) / 255.0 - MNIST_MEAN) / MNIST_STD).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def batches(x: torch.Tensor, y: torch.Tensor | None, size: int) -> list[Any]:
    if y is None:
        return [x[i : i + size] for i in range(0, len(x), size)]
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def fine_tune(x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 0) -> Callable[[nn.Module], None]:
    """One pass of SGD (lr 0.01, momentum 0.9, batch 64) over ``steps`` shuffled batches."""

    def train(model: nn.Module) -> None:
        generator = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(x), generator=generator)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        model.train()
        for step in range(steps):
            idx = order[step * 64 : (step + 1) * 64]
            optimizer.zero_grad()
            F.nll_loss(model(x[idx]), y[idx]).backward()
            optimizer.step()
        model.eval()

    return train


def prune_and_speedup(model: nn.Module, example: torch.Tensor, op_names: list[str] | None) -> nn.Module:
    """50% of output channels by L1 norm (the project's pruner), then the verified physical speedup."""
    from nncompress.pruners import prune
    from nncompress.speedup import speedup

    entry: dict[str, Any] = {"sparsity_per_layer": 0.5}
    if op_names:
        entry["op_names"] = op_names
    else:
        entry["op_types"] = ["Conv2d"]
    masks = prune(model, [entry], example_inputs=example).masks
    return speedup(model, masks, example).model


def row(label: str, result: QuantResult, metrics: QuantMetrics, note: str, labelled: bool) -> str:
    lat = metrics.latency_ms
    acc = metrics.accuracy
    if acc is None or not labelled:
        acc_text = "–"
    else:
        acc_text = f"{100 * acc.fp32:.2f} → {100 * acc.int8:.2f} ({acc.delta_points:+.2f})"
    agreement = f"{acc.agreement:.3f}" if acc is not None else "–"
    torch_int8 = " / ".join(f"{lat[bs]['int8_torch']:.2f}" for bs in lat if "int8_torch" in lat[bs]) or "–"
    return (
        f"| {label} | {lat[1]['fp32_torch']:.2f} / {lat[64]['fp32_torch']:.1f} "
        f"| {lat[1]['fp32_onnx']:.2f} / {lat[64]['fp32_onnx']:.1f} "
        f"| {lat[1]['int8_onnx']:.2f} / {lat[64]['int8_onnx']:.1f} "
        f"| {metrics.speedup[1]:.2f}× / {metrics.speedup[64]:.2f}× | {torch_int8} "
        f"| {result.bytes['fp32_onnx'] / 1e6:.2f} → {result.bytes['int8_onnx'] / 1e6:.2f} "
        f"| {acc_text} | {agreement} | {note} |"
    )


HEADER = (
    "| model / mode | fp32 torch ms (b1 / b64) | fp32 ORT ms (b1 / b64) | int8 ORT ms (b1 / b64) "
    "| ORT int8 speedup (b1 / b64) | torch int8 ms (b1 / b64) | MB fp32 → int8 | top-1 % fp32 → int8 (Δ) "
    "| agreement | notes |\n|---|---|---|---|---|---|---|---|---|---|"
)


def agreement_data(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random inputs labelled with fp32's own predictions: accuracy then reads as agreement."""
    with torch.inference_mode():
        labels = model(x).argmax(1)
    return batches(x, labels, 64)


def run(args: argparse.Namespace) -> str:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="quant-bench-"))
    lines = [HEADER]
    runs = args.runs

    def measure(
        label: str, result: QuantResult, data: Any, note: str = "", example: Any = None, labelled: bool = True
    ) -> QuantMetrics:
        start = time.perf_counter()
        metrics = result.measure(data, example_inputs=example, runs=runs, threads=args.threads)
        lines.append(row(label, result, metrics, note, labelled))
        print(lines[-1], f"  [{time.perf_counter() - start:.0f}s]", file=sys.stderr)
        return metrics

    # MNIST, seed Net with shipped weights.
    x_test, y_test = load_mnist(args.mnist, "test")
    x_train, y_train = load_mnist(args.mnist, "train")
    net = get("mnist_net").build()
    net.load_state_dict(load_file(str(mnist_net_weights_path())))
    net.eval()
    calib = batches(x_train[:1024], None, 64)  # 16 batches of training images, never test images
    test = batches(x_test, y_test, 500)
    base = None
    for fmt in ("qdq", "qoperator"):
        result = quantize(
            net,
            x_test[:1],
            {"format": fmt, "calibration_batches": 16},
            calibration=calib,
            out_dir=out / f"net-{fmt}",
        )
        base = measure(f"MNIST Net, static {fmt.upper()}", result, test).accuracy
    before = f"shipped fp32 {100 * base.fp32:.2f}; " if base is not None else ""
    result = quantize(net, x_test[:1], {"mode": "dynamic"}, out_dir=out / "net-dyn")
    measure("MNIST Net, dynamic (fc only)", result, test)
    result = quantize(
        net,
        x_test[:1],
        {"mode": "qat", "calibration_batches": 16},
        calibration=calib,
        train_fn=fine_tune(x_train, y_train, args.qat_steps),
        out_dir=out / "net-qat",
    )
    measure(
        "MNIST Net, QAT",
        result,
        test,
        f"{before}fp32 column = after {args.qat_steps} fake-quantized SGD steps",
    )
    pruned = prune_and_speedup(copy.deepcopy(net), x_test[:1], ["conv1", "conv2", "fc1"])
    fine_tune(x_train, y_train, args.qat_steps)(pruned)
    result = quantize(
        pruned, x_test[:1], {"calibration_batches": 16}, calibration=calib, out_dir=out / "net-pq"
    )
    params = sum(p.numel() for p in pruned.parameters())
    note = f"{before}fp32 column = pruned + {args.qat_steps} SGD steps; {params:,} params (of 431,080)"
    measure("MNIST Net, prune 50% → speedup → fine-tune → static QDQ", result, test, note)

    # ResNet-18, CIFAR layout, random weights.
    resnet = get("resnet18_cifar").build().eval()
    x_rand = torch.randn(512, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calib_r = batches(x_rand[:256], None, 32)
    agree = agreement_data(resnet, x_rand[256:])
    for fmt in ("qdq", "qoperator"):
        spec = {"format": fmt, "torch_artifact": fmt == "qdq"}
        result = quantize(resnet, x_rand[:1], spec, calibration=calib_r, out_dir=out / f"r18-{fmt}")
        note = "random weights; torch int8 = torch.ao FX x86"
        measure(f"ResNet-18 CIFAR, static {fmt.upper()}", result, agree, note, labelled=False)
    pruned_r = prune_and_speedup(copy.deepcopy(resnet), x_rand[:1], None)
    agree_p = agreement_data(pruned_r, x_rand[256:])
    result = quantize(pruned_r, x_rand[:1], {}, calibration=calib_r, out_dir=out / "r18-pq")
    params = sum(p.numel() for p in pruned_r.parameters())
    note = f"{params:,} params; agreement vs pruned fp32"
    measure("ResNet-18, prune 50% → speedup → static QDQ", result, agree_p, note, labelled=False)

    # LSTM classifier, dynamic.
    lstm = get("lstm_classifier").build().eval()
    tokens = torch.randint(0, 1000, (256, 256), generator=torch.Generator().manual_seed(2))
    result = quantize(lstm, tokens[:1], {"mode": "dynamic", "torch_artifact": True}, out_dir=out / "lstm")
    data = agreement_data(lstm, tokens)
    measure("LSTM classifier, dynamic", result, data, "random weights", tokens[:1], labelled=False)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", type=Path, required=True, help="folder with the MNIST idx .gz files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15, help="timed passes per model and batch size")
    parser.add_argument("--qat-steps", type=int, default=300, help="SGD steps (batch 64) for QAT and pruning")
    args = parser.parse_args()
    start = time.perf_counter()
    table = run(args)
    print(table)
    print(
        f"\n{args.threads} thread(s), {args.runs} runs per cell, torch {torch.__version__}; "
        f"total {time.perf_counter() - start:.0f} s"
    )


if __name__ == "__main__":
    main()
