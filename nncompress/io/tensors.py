"""Turning a module's state_dict into tensors safetensors can write, and hashing files.

safetensors refuses tensors that share storage or are not contiguous. A pruned model has both:
tied weights share storage and index-selected or transposed tensors are often strided. Every
tensor is therefore made contiguous and given storage of its own, so that every key of the
state_dict is written and a strict ``load_state_dict`` sees all of them again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

_CHUNK = 1 << 20


def safetensors_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Returns ``model``'s state_dict as detached, contiguous CPU tensors with distinct storage.

    Args:
        model: any module; parameters and buffers are both included, as in ``state_dict()``.

    Returns:
        A new dict name → tensor, safe to pass to ``safetensors.torch.save_file``.
    """
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        # A second tensor on storage we already hold (tied weights, views) gets its own copy;
        # an empty tensor has a null pointer and needs no copy.
        if t.numel() and ptr in seen:
            t = t.clone()
        elif t.numel():
            seen.add(ptr)
        out[name] = t
    return out


def sha256_file(path: str | Path) -> str:
    """Returns the hex sha256 of a file, read in 1 MiB chunks so large files never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` → ``"float32"``: the spelling manifests and reports use."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """Inverse of :func:`dtype_name`; raises ``ValueError`` for anything that is not a torch dtype."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype")
    return dtype
