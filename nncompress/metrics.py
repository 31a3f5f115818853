"""Metrics measured on a model: size, compute, latency and sparsity.

Nothing here is estimated from a config: parameters are counted, bytes are the length of the
state_dict really serialised as safetensors, MACs/FLOPs come from running the model once under
``torch.utils.flop_counter.FlopCounterMode``, and latency is timed.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nncompress.io.tensors import safetensors_state_dict

Inputs = torch.Tensor | Sequence[torch.Tensor]

__all__ = ["LATENCY_MODES", "LatencyStats", "ModelMetrics", "file_bytes", "measure_model", "resolve_device"]

# "auto" is CUDA graphs on a GPU and eager on the CPU. Eager small models are launch-bound on a GPU,
# which hides what pruning saves (design §3). Measured on an H200 (torch 2.11): the CIFAR ResNet-18
# at batch 1 took 1.28 ms eager and 0.44 ms replayed as a graph; pruned to half its channels, eager
# showed no gain (1.00x) where the graph showed 1.42x.
LATENCY_MODES = ("auto", "eager", "cuda_graph")


# A measurement stops early once its median is known to within this fraction: the approximate 95%
# interval of a median, ±1.57·IQR/√n (McGill, Tukey and Larsen's notches), at least MIN_STABLE_RUNS in.
STABLE_RELATIVE = 0.02
MIN_STABLE_RUNS = 5


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock latency of one forward pass at one batch size, with its spread.

    Attributes:
        batch_size: rows in the input batch.
        median_ms: median over ``runs`` timed passes, in milliseconds.
        p90_ms: 90th percentile over the same passes.
        runs: timed passes made (after ``warmup`` untimed ones); at most the runs asked for.
        warmup: untimed passes run first.
        method: how the passes ran (``"eager"``, ``"cuda_graph"``, or eager with the reason the
            CUDA graph capture failed).
        q1_ms, q3_ms: first and third quartiles of the timed passes.
        iqr_ms: ``q3_ms - q1_ms``, the spread of one pass's time.
        median_ci_ms: half-width of an approximate 95% interval of the median (1.57·IQR/√runs);
            None with fewer than two runs. The figure is ``median_ms ± median_ci_ms``.
        stopped: why timing stopped: ``"runs"`` (all that were asked for), ``"stable"`` (the
            interval fell within 2% of the median) or ``"budget"`` (the time allowed was spent).
    """

    batch_size: int
    median_ms: float
    p90_ms: float
    runs: int
    warmup: int
    method: str = "eager"
    q1_ms: float = 0.0
    q3_ms: float = 0.0
    iqr_ms: float = 0.0
    median_ci_ms: float | None = None
    stopped: str = "runs"


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
        budget_s: wall seconds the timing may take, shared evenly by the batch sizes; each one
            stops at ``runs``, when its median is stable (:data:`STABLE_RELATIVE`), or when the
            next pass would overrun its share (after at least one timed pass; warm-up stops after
            one pass once a quarter of the share is spent, and a first pass longer than half the
            share is the figure itself). None: exactly ``runs`` passes each.

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
    mode = _latency_mode(latency_mode, dev)
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
        flops = _count_flops(subject, _batch(inputs, 1, dev, dtype))
        share = None if budget_s is None else budget_s / max(1, len(batch_sizes))
        latency = tuple(
            _time_forward(
                subject,
                _batch(inputs, bs, dev, dtype),
                dev,
                bs,
                runs=runs,
                warmup=warmup,
                mode=mode,
                budget_s=share,
            )
            for bs in batch_sizes
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
    )


def _as_tuple(example_inputs: Inputs) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def _latency_mode(mode: str, dev: torch.device) -> str:
    if mode not in LATENCY_MODES:
        raise ValueError(f"latency_mode must be one of {', '.join(LATENCY_MODES)}, got {mode!r}")
    if mode == "auto":
        return "cuda_graph" if dev.type == "cuda" else "eager"
    if mode == "cuda_graph" and dev.type != "cuda":
        raise ValueError("latency_mode 'cuda_graph' needs a CUDA device")
    return mode


def _batch(
    inputs: tuple[torch.Tensor, ...], batch_size: int, dev: torch.device, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, ...]:
    # Repeat the first row rather than drawing new data: the timing must not depend on values.
    out = tuple(t[:1].repeat(batch_size, *([1] * (t.dim() - 1))).to(dev) for t in inputs)
    if dtype is not None:
        out = tuple(t.to(dtype) if t.is_floating_point() else t for t in out)
    return out


def _recurrent_flops(
    input_shape: Sequence[int],
    hx: object,
    params: Sequence[Sequence[int]],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
    *args: object,
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """FLOPs of ``aten.lstm`` / ``aten.gru`` / ``aten.rnn_*`` (``.input`` overloads), from shapes.

    Every time step multiplies the input by each layer's ``weight_ih`` and the hidden state by its
    ``weight_hh``: 2 × steps × batch × (elements of all weight matrices). Gate nonlinearities and
    bias adds are elementwise and, as everywhere in FlopCounterMode, not counted. GRU measured by
    its decomposition into ``addmm`` gives exactly this count.
    """
    steps, batch = (input_shape[1], input_shape[0]) if batch_first else (input_shape[0], input_shape[1])
    matrices = sum(math.prod(shape) for shape in params if len(shape) == 2)
    return 2 * steps * batch * matrices


# CPU torch runs nn.LSTM as one fused aten.lstm op, which FlopCounterMode has no formula for (it
# counted 0 FLOPs for the LSTM layer of lstm_classifier); these give the recurrent layers their due.
_RECURRENT_OPS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def _count_flops(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    # FlopCounterMode counts by op packet (aten.lstm) but decides whether to decompose an op by its
    # overload (aten.lstm.input): register both, or the fused op is decomposed into ops it ignores.
    packets = [getattr(torch.ops.aten, name) for name in _RECURRENT_OPS]
    mapping: dict[Any, Any] = {p: _recurrent_flops for p in packets}
    mapping.update({p.input: _recurrent_flops for p in packets})
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.inference_mode(), counter:
        model(*inputs)
    return int(counter.get_total_flops())


def _time_forward(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    dev: torch.device,
    batch_size: int,
    *,
    runs: int,
    warmup: int,
    mode: str,
    budget_s: float | None = None,
) -> LatencyStats:
    cuda = dev.type == "cuda"
    method = mode
    step: Callable[[], object] = lambda: model(*inputs)  # noqa: E731 - replaced by a graph replay below
    if mode == "cuda_graph":
        try:
            step = _capture_cuda_graph(model, inputs, dev)
        except Exception as exc:  # capture refuses some models (host syncs, dynamic control flow)
            method = f"eager (CUDA graph capture failed: {type(exc).__name__})"

    def timed() -> float:
        # CUDA launches are asynchronous; without synchronising we would time the launch only.
        if cuda:
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(dev)
        return time.perf_counter() - start

    began = time.perf_counter()
    warmed = 0
    samples: list[float] = []
    stopped = "runs"
    with torch.inference_mode():
        while warmed < warmup:
            seconds = timed()
            warmed += 1
            if budget_s is not None and seconds > budget_s / 2:
                # One pass takes more than half the share: a second would overrun it, so this
                # (cold) pass is the figure; a pass this long hides its warm-up cost anyway.
                return _stats(
                    [seconds * 1000.0], batch_size=batch_size, warmup=0, method=method, stopped="budget"
                )
            if budget_s is not None and time.perf_counter() - began >= budget_s / 4:
                break  # a slow model needs no more than one pass to warm up
        while len(samples) < runs:
            if samples and budget_s is not None:
                mean_pass = sum(samples) / len(samples) / 1000.0
                if time.perf_counter() - began + mean_pass > budget_s:
                    stopped = "budget"
                    break
            samples.append(timed() * 1000.0)
            if budget_s is not None and MIN_STABLE_RUNS <= len(samples) < runs and _stable(samples):
                stopped = "stable"
                break
    return _stats(samples, batch_size=batch_size, warmup=warmed, method=method, stopped=stopped)


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        return samples[0], samples[0], samples[0]
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, median, q3


def _stable(samples: list[float]) -> bool:
    q1, median, q3 = _quartiles(samples)
    return 1.57 * (q3 - q1) / math.sqrt(len(samples)) <= STABLE_RELATIVE * median


def _stats(samples: list[float], *, batch_size: int, warmup: int, method: str, stopped: str) -> LatencyStats:
    q1, _, q3 = _quartiles(samples)
    ordered = sorted(samples)
    p90_index = min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))
    return LatencyStats(
        batch_size=batch_size,
        median_ms=statistics.median(ordered),
        p90_ms=ordered[p90_index],
        runs=len(ordered),
        warmup=warmup,
        method=method,
        q1_ms=q1,
        q3_ms=q3,
        iqr_ms=q3 - q1,
        median_ci_ms=1.57 * (q3 - q1) / math.sqrt(len(ordered)) if len(ordered) > 1 else None,
        stopped=stopped,
    )


def _capture_cuda_graph(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], dev: torch.device
) -> Callable[[], object]:
    """Records one forward pass as a CUDA graph and returns its replay (inputs are fixed buffers)."""
    static = tuple(t.clone() for t in inputs)
    side = torch.cuda.Stream(dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    # Warm up on a side stream, as capture requires: lazy initialisation must not be recorded.
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(3):
            model(*static)
    torch.cuda.current_stream(dev).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        model(*static)
    return graph.replay


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
