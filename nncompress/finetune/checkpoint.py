"""Per-epoch checkpoints of a fine-tuning run, so a crashed worker resumes instead of starting over.

A checkpoint holds tensors, state dicts and plain values only, and is read back with
``torch.load(weights_only=True)``: loading it can never run code. It is written to a temporary file
and renamed, so a crash mid-write leaves the previous epoch's checkpoint intact. Its fingerprint
(spec, parameter shapes, data) must match the run that resumes, or it is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.datasets import LabelledDataset
from nncompress.finetune.spec import FinetuneSpec

__all__ = ["CHECKPOINT_FILE", "fingerprint", "load_checkpoint", "remove_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "finetune.pt"
_VERSION = 1


def fingerprint(
    model: nn.Module, train: LabelledDataset, val: LabelledDataset, spec: FinetuneSpec, *, teacher: bool
) -> str:
    """A digest of everything a resumed run must share with the interrupted one: spec, starting weights, data.

    The device is left out on purpose: a job retried on another worker may resume on another device.
    """
    spec_data = spec.to_dict()
    spec_data.pop("device")
    weights = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        # The starting weights too: a checkpoint of another model with the same shapes must not be resumed.
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    data = {
        "spec": spec_data,
        "params": [[name, list(p.shape)] for name, p in model.state_dict().items()],
        "weights": weights.hexdigest(),
        "train": [len(train), train.sha256, list(train.sample_shape)],
        "val": [len(val), val.sha256],
        "teacher": teacher,
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def save_checkpoint(folder: Path, state: dict[str, Any]) -> Path:
    """Writes ``state`` atomically to ``folder/finetune.pt``.

    Returns:
        The checkpoint path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    tmp = folder / f".{CHECKPOINT_FILE}.tmp"
    torch.save({"version": _VERSION, **state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(folder: Path, expected_fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint in ``folder`` when it belongs to this run, else None.

    A missing, unreadable, older-version or foreign checkpoint yields None: the run starts over.
    """
    path = folder / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file: starting over is the safe answer
        return None
    if not isinstance(state, dict) or state.get("version") != _VERSION:
        return None
    if state.get("fingerprint") != expected_fingerprint:
        return None
    return state


def remove_checkpoint(folder: Path) -> None:
    """Deletes the checkpoint in ``folder`` (after the caller has stored the result)."""
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)
