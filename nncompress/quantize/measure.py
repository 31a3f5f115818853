"""Measuring an int8 model next to its fp32 baseline: latency, bytes and accuracy, in one run.

Latency is timed round-robin (fp32 torch, fp32 ONNX, int8 ONNX, then again) so that load from other
processes on a shared machine hits all three alike; medians are reported. The fp32 ONNX model in the
same runtime is the fair baseline for the speedup; eager torch is shown next to it.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.quantize.calibration import input_arrays
from nncompress.quantize.session import OnnxModel

__all__ = ["Accuracy", "QuantMetrics", "measure_quantized"]


@dataclass(frozen=True)
class Accuracy:
    """Top-1 accuracy on labelled data, and how far the int8 logits are from fp32's.

    Attributes:
        examples: labelled examples evaluated.
        fp32: top-1 accuracy of the float torch model.
        int8: top-1 accuracy of the int8 ONNX model.
        agreement: fraction of examples where both predict the same class.
        max_abs_logit_error: largest ``|int8 - fp32|`` over all outputs.
    """

    examples: int
    fp32: float
    int8: float
    agreement: float
    max_abs_logit_error: float

    @property
    def delta_points(self) -> float:
        """Accuracy change in percentage points (negative: int8 is worse)."""
        return 100.0 * (self.int8 - self.fp32)


@dataclass(frozen=True)
class QuantMetrics:
    """Latency, size and accuracy of fp32 vs int8.

    Attributes:
        latency_ms: ``{batch size: {'fp32_torch': ms, 'fp32_onnx': ms, 'int8_onnx': ms}}``, medians
            (and ``'int8_torch'`` when PyTorch's int8 model was given).
        speedup: ``{batch size: fp32_onnx / int8_onnx}`` (same runtime, same run).
        bytes: ``{'fp32_onnx': n, 'int8_onnx': n}`` file sizes.
        accuracy: present when labelled data was given.
        runs: timed passes per model and batch size.
        threads: intra-op threads of torch and onnxruntime during timing.
    """

    latency_ms: dict[int, dict[str, float]]
    speedup: dict[int, float]
    bytes: dict[str, int]
    accuracy: Accuracy | None = None
    runs: int = 0
    threads: int = 1
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able view (batch sizes become string keys)."""
        out = asdict(self)
        out["latency_ms"] = {str(k): v for k, v in self.latency_ms.items()}
        out["speedup"] = {str(k): v for k, v in self.speedup.items()}
        if self.accuracy is not None:
            out["accuracy"]["delta_points"] = self.accuracy.delta_points
        out["notes"] = list(self.notes)
        return out


def measure_quantized(
    model: nn.Module | None,
    fp32_onnx: str | Path,
    int8_onnx: str | Path,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    data: Iterable[Any] | None = None,
    batch_sizes: Sequence[int] = (1, 64),
    runs: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    torch_int8: str | Path | None = None,
) -> QuantMetrics:
    """Times and evaluates fp32 and int8 side by side.

    Args:
        model: the float torch model (``None`` to skip eager torch and torch-side accuracy).
        fp32_onnx: the fp32 ONNX file (the same graph before quantization).
        int8_onnx: the int8 ONNX file.
        example_inputs: one input (or a sequence); its first row is tiled to each batch size.
        data: labelled batches ``(inputs..., labels)`` for accuracy; ``None`` skips accuracy.
        batch_sizes: batch sizes to time.
        runs: timed passes per model and batch size (medians reported).
        warmup: untimed passes first.
        threads: intra-op threads for torch and onnxruntime (``None``: torch's current setting).
        torch_int8: PyTorch's int8 TorchScript file, timed as ``int8_torch`` when given.

    Returns:
        The measurements.
    """
    n_threads = threads if threads is not None else torch.get_num_threads()
    fp32 = OnnxModel(fp32_onnx, threads=n_threads)
    int8 = OnnxModel(int8_onnx, threads=n_threads)
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    scripted = torch.jit.load(str(torch_int8)) if torch_int8 is not None else None
    if model is not None:
        model.eval()
    latency: dict[int, dict[str, float]] = {}
    try:
        for bs in batch_sizes:
            batch = tuple(t[:1].repeat(bs, *([1] * (t.dim() - 1))) for t in inputs)
            arrays = input_arrays(batch, len(batch))
            runners: dict[str, Callable[[], object]] = {}
            if model is not None:
                runners["fp32_torch"] = functools.partial(_torch_forward, model, batch)
            runners["fp32_onnx"] = functools.partial(fp32.run, *arrays)
            runners["int8_onnx"] = functools.partial(int8.run, *arrays)
            if scripted is not None:
                runners["int8_torch"] = functools.partial(_torch_forward, scripted, batch)
            latency[bs] = _round_robin(runners, runs=runs, warmup=warmup)
        accuracy = _accuracy(model, fp32, int8, data) if data is not None else None
    finally:
        torch.set_num_threads(previous)
    speedup = {bs: t["fp32_onnx"] / t["int8_onnx"] for bs, t in latency.items()}
    sizes = {"fp32_onnx": Path(fp32_onnx).stat().st_size, "int8_onnx": Path(int8_onnx).stat().st_size}
    return QuantMetrics(
        latency_ms=latency, speedup=speedup, bytes=sizes, accuracy=accuracy, runs=runs, threads=n_threads
    )


def _torch_forward(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> object:
    with torch.inference_mode():
        return model(*batch)


def _round_robin(runners: dict[str, Callable[[], object]], *, runs: int, warmup: int) -> dict[str, float]:
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in times.items()}


def _accuracy(model: nn.Module | None, fp32: OnnxModel, int8: OnnxModel, data: Iterable[Any]) -> Accuracy:
    count = correct_fp32 = correct_int8 = agree = 0
    worst = 0.0
    n_inputs = len(int8.input_names)
    for batch in data:
        items = tuple(batch)
        arrays, labels = input_arrays(items, n_inputs), np.asarray(items[n_inputs])
        if model is not None:
            with torch.inference_mode():
                ref = model(*(torch.from_numpy(a) for a in arrays)).float().numpy()
        else:
            ref = fp32.run(*arrays)[0]
        got = int8.run(*arrays)[0]
        worst = max(worst, float(np.max(np.abs(ref - got))))
        ref_top, got_top = ref.argmax(axis=1), got.argmax(axis=1)
        correct_fp32 += int((ref_top == labels).sum())
        correct_int8 += int((got_top == labels).sum())
        agree += int((ref_top == got_top).sum())
        count += len(labels)
    if count == 0:
        return Accuracy(0, 0.0, 0.0, 0.0, 0.0)
    return Accuracy(count, correct_fp32 / count, correct_int8 / count, agree / count, worst)
