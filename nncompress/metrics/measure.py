"""What :func:`measure_model` reports: size, compute, latency and sparsity of a model, measured.

Nothing here is estimated from a config: parameters are counted, bytes are the length of the
state_dict really serialised as safetensors, MACs/FLOPs come from running the model once under
``torch.utils.flop_counter.FlopCounterMode`` (on fake tensors where it can: the same count from
shapes alone, see :mod:`~nncompress.metrics.flops`), and latency is timed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from nncompress.io.tensors import safetensors_state_dict
from nncompress.metrics.flops import count_flops
from nncompress.metrics.latency import LatencyStats, resolve_latency_mode, time_forward

__all__ = ["Inputs", "ModelMetrics", "file_bytes", "measure_model", "resolve_device"]

Inputs = torch.Tensor | Sequence[torch.Tensor]


@dataclass(frozen=True)
class ModelMetrics:
    """What :func:`measure_model` measured.

    Attributes:
        params: parameter count (every element of every parameter).
        nonzero_params: parameter elements that are not exactly zero.
        state_dict_bytes: length of the state_dict serialised as safetensors.
        macs: multiply-accumulates of one forward pass at batch 1 (``flops // 2``).
        flops: FLOPs of one forward pass at batch 1, as FlopCounterMode counts them (matmul-like
            ops: convolutions, linear layers, matmuls, attention; 2 FLOPs per MAC).
        latency: one entry per measured batch size.
        sparsity: fraction of exactly-zero elements of each module's ``weight``.
        device: the device the latency was measured on, e.g. ``"cpu"`` or ``"cuda:0 (NVIDIA H100)"``.
        latency_method: how latency was measured, so numbers from different setups are not mixed.
        threads: torch intra-op threads during the CPU measurement.
        latency_skipped: batch sizes left out under ``fit_budget``, each with why.
    """

    params: int
    nonzero_params: int
    state_dict_bytes: int
    macs: int
    flops: int
    latency: tuple[LatencyStats, ...]
    sparsity: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    latency_method: str = "eager, torch.inference_mode"
    threads: int = 1
    dtype: str = "float32"
    latency_skipped: tuple[str, ...] = ()

    def latency_at(self, batch_size: int) -> LatencyStats | None:
        """Returns the latency entry for ``batch_size``, or None when it was not measured."""
        return next((s for s in self.latency if s.batch_size == batch_size), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; latency is a list of dicts in the order measured."""
        data = asdict(self)
        data["latency"] = [asdict(s) for s in self.latency]
        return data


def file_bytes(path: str | Path) -> int:
    """Size of a file on disk in bytes (artifact sizes are reported with this)."""
    return os.stat(path).st_size


def resolve_device(device: str) -> torch.device:
    """Maps ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` to a torch device.

    ``"auto"`` picks CUDA when it is available. Asking for CUDA where there is none raises
    ``ValueError`` rather than silently measuring on the CPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here")
    return dev


def measure_model(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    device: str = "cpu",
    batch_sizes: Sequence[int] = (1, 64),
    runs: int = 50,
    warmup: int = 5,
    latency_mode: str = "auto",
    dtype: torch.dtype | None = None,
    budget_s: float | None = None,
    fit_budget: bool = False,
) -> ModelMetrics:
    """Measures size, compute, latency and sparsity of ``model``.

    The model is not modified: when it must move to another device, a copy is measured.

    Args:
        model: the model to measure (its train/eval mode is restored afterwards).
        example_inputs: one input tensor or a sequence of them, batch dimension first; the first
            row of each is repeated to build batches of each size in ``batch_sizes`` (FLOPs are
            counted at batch 1).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
        batch_sizes: batch sizes to time.
        runs: timed forward passes per batch size (median and p90 are over these).
        warmup: untimed passes before timing.
        latency_mode: ``"eager"``, ``"cuda_graph"`` (CUDA only: capture one forward per batch size
            and time its replay), or ``"auto"`` (CUDA graphs on a GPU, eager on the CPU). A model
            whose capture fails is timed eagerly, and the entry's ``method`` says why.
        dtype: time a copy converted to this dtype (e.g. ``torch.bfloat16``; floating inputs are cast
            too). Sizes, FLOPs and sparsity are always of the model as given.
        budget_s: wall seconds the timing may take. The batch sizes are timed in the order given,
            each allowed an even share of what is left, so time a figure leaves unspent goes to the
            next; each stops at ``runs``, when its median is stable (:data:`STABLE_RELATIVE`), or
            when the next pass would overrun its share (after at least one timed pass; warm-up
            stops after one pass once a quarter of the share is spent, and a first pass longer than
            half the share is the figure itself). None: exactly ``runs`` passes each.
        fit_budget: leave out a batch size one pass of which would take longer than the whole
            ``budget_s``, predicted from the largest smaller batch size timed (pass time in
            proportion to the batch, as a big model's on a CPU); ``latency_skipped`` says which and
            why. False: every batch size gets at least one pass, however long.

    Returns:
        A frozen :class:`ModelMetrics`.

    Examples:
        >>> from nncompress.models import get
        >>> arch = get("mnist_net")
        >>> m = measure_model(arch.build(), arch.example_input(), runs=3, warmup=1)
        >>> m.params
        431080
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"budget_s must be > 0, got {budget_s}")
    inputs = _as_tuple(example_inputs)
    params = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    size = len(safetensors_save(safetensors_state_dict(model)))
    sparsity = _weight_sparsity(model)

    dev = resolve_device(device)
    mode = resolve_latency_mode(latency_mode, dev)
    current = next((p.device for p in model.parameters()), torch.device("cpu"))
    current_dtype = next((p.dtype for p in model.parameters()), torch.float32)
    # Measuring must not move or convert the caller's model: copy when device or dtype differ.
    subject = model
    if current != dev or (dtype is not None and dtype != current_dtype):
        subject = copy.deepcopy(model).to(dev)
        if dtype is not None:
            subject = subject.to(dtype)
    was_training = subject.training
    subject.eval()
    try:
        flops = count_flops(subject, _batch(inputs, 1, dev, dtype))
        latency, skipped = _time_batches(
            subject,
            inputs,
            dev,
            dtype,
            batch_sizes,
            runs=runs,
            warmup=warmup,
            mode=mode,
            budget_s=budget_s,
            fit_budget=fit_budget,
        )
    finally:
        subject.train(was_training)
    methods = sorted({s.method for s in latency})
    return ModelMetrics(
        params=params,
        nonzero_params=nonzero,
        state_dict_bytes=size,
        macs=flops // 2,
        flops=flops,
        latency=latency,
        sparsity=sparsity,
        device=_describe(dev),
        latency_method=", ".join(
            [*methods, "torch.inference_mode"]
            + (["torch.cuda.synchronize around each pass"] if dev.type == "cuda" else [])
        ),
        threads=torch.get_num_threads(),
        dtype=str(dtype or current_dtype).removeprefix("torch."),
        latency_skipped=skipped,
    )


def _time_batches(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    dev: torch.device,
    dtype: torch.dtype | None,
    batch_sizes: Sequence[int],
    *,
    runs: int,
    warmup: int,
    mode: str,
    budget_s: float | None,
    fit_budget: bool,
) -> tuple[tuple[LatencyStats, ...], tuple[str, ...]]:
    """The latency figures at each batch size, to ``budget_s`` (see :func:`measure_model`)."""
    latency: list[LatencyStats] = []
    skipped: list[str] = []
    spent = 0.0
    for index, bs in enumerate(batch_sizes):
        share = None
        if budget_s is not None:
            left = budget_s - spent
            # A figure that stopped early (stable, or all its runs) hands its unspent time on.
            share = max(left, 0.0) / (len(batch_sizes) - index) or 1e-9
            smaller = [s for s in latency if s.batch_size < bs]
            if fit_budget and smaller:
                # Pass time in proportion to the batch overestimates a small or launch-bound model
                # (and any GPU), so only a figure that could not fit the whole budget is left out.
                base = max(smaller, key=lambda s: s.batch_size)
                # The first quartile: one stalled pass of a loaded machine does not skip a figure.
                base_s = base.q1_ms / 1000.0
                predicted = base_s * bs / base.batch_size
                if predicted > budget_s:
                    skipped.append(
                        f"batch {bs}: one pass would take about {predicted:.1f} s (batch "
                        f"{base.batch_size}'s {base_s:.2f} s scaled by the batch), more than the "
                        f"whole {budget_s:.1f} s budget"
                    )
                    continue
        stats = time_forward(
            model,
            _batch(inputs, bs, dev, dtype),
            dev,
            bs,
            runs=runs,
            warmup=warmup,
            mode=mode,
            budget_s=share,
        )
        spent += stats.elapsed_s
        latency.append(stats)
    return tuple(latency), tuple(skipped)


def _as_tuple(example_inputs: Inputs) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _batch(
    inputs: tuple[torch.Tensor, ...], batch_size: int, dev: torch.device, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, ...]:
    # Repeat the first row rather than drawing new data: the timing must not depend on values.
    out = tuple(t[:1].repeat(batch_size, *([1] * (t.dim() - 1))).to(dev) for t in inputs)
    if dtype is not None:
        out = tuple(t.to(dtype) if t.is_floating_point() else t for t in out)
    return out


def _weight_sparsity(model: nn.Module) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.numel():
            zeros = weight.numel() - int(torch.count_nonzero(weight.detach()))
            out[name] = zeros / weight.numel()
    return out


def _describe(dev: torch.device) -> str:
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return dev.type
