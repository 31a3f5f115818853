"""Deterministic kernels and a private RNG for one fine-tuning run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["deterministic"]


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on CPU and a private RNG for the run; the caller's settings are restored.

    On CUDA, determinism would need ``CUBLAS_WORKSPACE_CONFIG`` set before CUDA starts and slower
    kernels; GPU runs are reproducible only up to float rounding, as documented.
    """
    # fork_rng: seeding for the run must not change the caller's global RNG stream.
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        if device.type != "cpu":
            yield
            return
        with _deterministic_cpu():
            yield


@contextlib.contextmanager
def _deterministic_cpu() -> Iterator[None]:
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
