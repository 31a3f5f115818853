"""The resume checkpoint: masks saved after pruning, reused when an interrupted job is retried.

Pruning is the step worth not repeating (the data-driven pruners run the model over data); the
speedup that follows is deterministic given the masks. The checkpoint is keyed by the spec and a
hash of the model's weights, so masks are never applied to a different job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file
from torch import nn

from nncompress.io.tensors import safetensors_state_dict
from nncompress.pipeline.spec import JobSpec

__all__ = ["load_masks", "remove_checkpoint", "save_masks", "state_digest"]


def state_digest(model: nn.Module) -> str:
    """sha256 of the model's state_dict serialised as safetensors: which weights a job started from."""
    return hashlib.sha256(save(safetensors_state_dict(model))).hexdigest()


def save_masks(
    folder: Path, spec: JobSpec, digest: str, masks: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Writes ``masks`` (safetensors) and the key they belong to (spec + model digest) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    # "/" cannot appear in a module or parameter name, so it separates them unambiguously.
    flat = {f"{m}/{p}": t.contiguous() for m, params in masks.items() for p, t in params.items()}
    save_file(flat, str(folder / "masks.safetensors"))
    key = {"spec": spec.to_dict(), "model_sha256": digest}
    (folder / "key.json").write_text(json.dumps(key, sort_keys=True), encoding="utf-8")


def load_masks(folder: Path, spec: JobSpec, digest: str) -> dict[str, dict[str, torch.Tensor]] | None:
    """Returns the saved masks when they exist and belong to this spec and model, else None."""
    try:
        key = json.loads((folder / "key.json").read_text(encoding="utf-8"))
        flat = load_file(str(folder / "masks.safetensors"))
    except (OSError, ValueError):
        return None
    if key != json.loads(json.dumps({"spec": spec.to_dict(), "model_sha256": digest}, sort_keys=True)):
        return None
    masks: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in flat.items():
        module, _, param = name.rpartition("/")
        masks.setdefault(module, {})[param] = tensor
    return masks


def remove_checkpoint(folder: Path) -> None:
    """Deletes the checkpoint once the job has succeeded (the folder too, when nothing else is in it)."""
    for name in ("masks.safetensors", "key.json"):
        (folder / name).unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
