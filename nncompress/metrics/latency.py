"""Latency of a forward pass: timed eagerly or as a CUDA graph replay, to a run count or a time budget.

:func:`time_forward` makes the passes; :class:`LatencyStats` holds one batch size's figure with its
spread (quartiles, IQR and the approximate 95% interval of the median).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "LATENCY_MODES",
    "MIN_STABLE_RUNS",
    "STABLE_RELATIVE",
    "LatencyStats",
    "resolve_latency_mode",
    "time_forward",
]

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
        budget_s: the wall seconds this figure was allowed (its share of the measurement's
            budget); None: no budget, exactly ``runs`` passes.
        elapsed_s: wall seconds its passes took, warm-up included.
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
    budget_s: float | None = None
    elapsed_s: float = 0.0


def resolve_latency_mode(mode: str, dev: torch.device) -> str:
    """The way passes are timed on ``dev`` for a :data:`LATENCY_MODES` entry.

    Args:
        mode: ``"auto"``, ``"eager"`` or ``"cuda_graph"``.
        dev: the device the model runs on.

    Returns:
        ``"eager"`` or ``"cuda_graph"`` (``"auto"``: graphs on CUDA, eager elsewhere).

    Raises:
        ValueError: an unknown mode, or ``"cuda_graph"`` off CUDA.
    """
    if mode not in LATENCY_MODES:
        raise ValueError(f"latency_mode must be one of {', '.join(LATENCY_MODES)}, got {mode!r}")
    if mode == "auto":
        return "cuda_graph" if dev.type == "cuda" else "eager"
    if mode == "cuda_graph" and dev.type != "cuda":
        raise ValueError("latency_mode 'cuda_graph' needs a CUDA device")
    return mode


def time_forward(
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
    """Times forward passes of ``model`` on ``inputs`` (already a batch of ``batch_size`` on ``dev``).

    Args:
        model: the model, in eval mode.
        inputs: the positional inputs of one pass.
        dev: where the model and inputs are.
        batch_size: recorded in the result.
        runs: timed passes at most.
        warmup: untimed passes first (fewer under a tight budget).
        mode: ``"eager"`` or ``"cuda_graph"`` (see :func:`resolve_latency_mode`); a failed capture
            falls back to eager and the result's ``method`` says why.
        budget_s: wall seconds these passes may take (see :func:`~nncompress.metrics.measure_model`);
            None makes exactly ``runs`` timed passes.

    Returns:
        The :class:`LatencyStats` of the timed passes.
    """
    cuda = dev.type == "cuda"
    began = time.perf_counter()  # a CUDA graph's capture counts against the budget too
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

    warmed = 0
    samples: list[float] = []
    stopped = "runs"

    def result(samples: list[float], warmup: int, stopped: str) -> LatencyStats:
        return _stats(
            samples,
            batch_size=batch_size,
            warmup=warmup,
            method=method,
            stopped=stopped,
            budget_s=budget_s,
            elapsed_s=time.perf_counter() - began,
        )

    with torch.inference_mode():
        while warmed < warmup:
            seconds = timed()
            warmed += 1
            if budget_s is not None and seconds > budget_s / 2:
                # One pass takes more than half the share: a second would overrun it, so this
                # (cold) pass is the figure; a pass this long hides its warm-up cost anyway.
                return result([seconds * 1000.0], 0, "budget")
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
    return result(samples, warmed, stopped)


def _quartiles(samples: list[float]) -> tuple[float, float, float]:
    if len(samples) < 2:
        return samples[0], samples[0], samples[0]
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q1, median, q3


def _stable(samples: list[float]) -> bool:
    q1, median, q3 = _quartiles(samples)
    return 1.57 * (q3 - q1) / math.sqrt(len(samples)) <= STABLE_RELATIVE * median


def _stats(
    samples: list[float],
    *,
    batch_size: int,
    warmup: int,
    method: str,
    stopped: str,
    budget_s: float | None = None,
    elapsed_s: float = 0.0,
) -> LatencyStats:
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
        budget_s=budget_s,
        elapsed_s=elapsed_s,
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
