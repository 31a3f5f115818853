"""Device choice, autocast and data placement shared by evaluation and training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from nncompress.errors import ConfigError

__all__ = ["amp_dtype", "autocast", "fits_on_device", "model_device", "resolve_device"]

# Share of the free GPU memory a data set may take to be kept on the device whole; the rest is left
# to activations, gradients and optimizer state.
_DATA_SHARE = 0.25


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; ``"cuda"`` without CUDA is a ConfigError."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for but CUDA is not available here", key="device")
    return dev


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16 where supported, else fp16; None on CPU or when off."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, amp: bool) -> Iterator[None]:
    """Mixed precision on CUDA when ``amp``; a no-op otherwise."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of data may live on ``device`` for the whole run."""
    if device.type != "cuda":
        return True
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= _DATA_SHARE * free
