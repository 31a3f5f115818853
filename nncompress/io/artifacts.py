"""Compressed-model artifacts: safetensors weights plus a JSON manifest, loaded back without pickle.

A compressed model is stored as two files in one folder:

* ``model.safetensors`` — every tensor of the state_dict (no code, so loading it runs nothing);
* ``manifest.json`` — what is needed to rebuild the module around those tensors: the
  architecture and its kwargs (a registry name, or ``hf/<Class>`` with the model's config), the
  kept channel indices of every pruned layer, the shape of every tensor, the config_list and
  pruner that produced it, the input it expects, library versions, metrics, and the sha256 of
  the weights file.

Loading rebuilds the architecture (registry, or transformers from the recorded config; see
:mod:`nncompress.io.library_rebuild`), replays the recorded pruning on it
(``nncompress.speedup.apply_kept_indices``), and only then loads the weights with
``strict=True``; every mismatch is an :class:`~nncompress.errors.ArtifactError` naming the field
or tensor.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nncompress.errors import ArtifactError
from nncompress.io.manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Manifest,
    library_versions,
    manifest_file,
    read_manifest,
)
from nncompress.io.tensors import dtype_from_name, dtype_name, safetensors_state_dict, sha256_file

# The manifest's names are re-exported: callers import them from here since before the split.
__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "Manifest",
    "library_versions",
    "load_compressed",
    "read_manifest",
    "save_compressed",
]

Kept = Mapping[str, Mapping[str, Sequence[int]]]


def save_compressed(
    model: nn.Module,
    out_dir: str | Path,
    *,
    architecture: str | None,
    kept: Kept | None,
    config_list: Sequence[Mapping[str, Any]],
    pruner: str,
    input_shape: Sequence[int],
    input_dtype: torch.dtype = torch.float32,
    architecture_kwargs: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """Writes ``model.safetensors`` and ``manifest.json`` into ``out_dir``.

    Args:
        model: the compressed model (shrunk, or masked when no speedup ran).
        out_dir: folder to write into; created when missing. Existing files of the same names are replaced.
        architecture: registry name the model was built from, ``hf/<Class>``, or None when there is none.
        kept: kept indices per pruned module as returned by the speedup; None or empty for no shape change.
        config_list: the config_list used (stored verbatim; must be JSON-able).
        pruner: the pruner's registry name.
        input_shape: example input shape, batch dimension included.
        input_dtype: example input dtype.
        architecture_kwargs: kwargs the architecture was built with; defaults to the registry's
            (required for ``hf/…``: ``library_rebuild.transformers_build_kwargs(original)``).
        metrics: measured metrics to record (JSON-able).
        extra: anything else to record (JSON-able).

    Returns:
        The :class:`Manifest` that was written.

    Raises:
        ArtifactError: ``architecture`` is unknown, or a field is not JSON-serialisable.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = dict(architecture_kwargs) if architecture_kwargs is not None else _registry_kwargs(architecture)
    tensors = safetensors_state_dict(model)
    weights_path = out / WEIGHTS_FILE
    save_file(tensors, str(weights_path), metadata={"format": "pt", "nncompress_format": str(FORMAT_VERSION)})
    kept_clean = {
        str(module): {str(dim): [int(i) for i in idx] for dim, idx in dims.items()}
        for module, dims in (kept or {}).items()
    }
    manifest = Manifest(
        architecture=architecture,
        architecture_kwargs=kwargs,
        kept=kept_clean,
        structured=bool(kept_clean),
        tensors={k: {"shape": list(t.shape), "dtype": dtype_name(t.dtype)} for k, t in tensors.items()},
        config_list=[dict(entry) for entry in config_list],
        pruner=pruner,
        input_shape=[int(d) for d in input_shape],
        input_dtype=dtype_name(input_dtype),
        versions=library_versions(),
        weights_sha256=sha256_file(weights_path),
        weights_bytes=weights_path.stat().st_size,
        metrics=dict(metrics or {}),
        extra=dict(extra or {}),
    )
    try:
        text = json.dumps(manifest.to_dict(), indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ArtifactError(f"manifest is not JSON-serialisable: {exc}", field="manifest") from exc
    (out / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")
    return manifest


def load_compressed(path: str | Path, *, map_location: str = "cpu") -> nn.Module:
    """Rebuilds a compressed model from its folder, without unpickling anything.

    Steps: read and validate the manifest → check the weights file's sha256 → build the
    architecture (registry, or ``hf/…`` from the recorded config) → replay the kept indices on
    it → load the safetensors weights → check every tensor's shape against the manifest and the
    rebuilt module → ``load_state_dict(strict=True)``.

    Args:
        path: the artifact folder (or its ``manifest.json``).
        map_location: device the returned model lives on (the rebuild itself runs on the CPU).

    Returns:
        The model in eval mode. It may be a ``torch.fx.GraphModule`` when the speedup had to
        rewrite shape constants of the architecture's forward.

    Raises:
        ArtifactError: missing or corrupt files, a checksum mismatch, an unknown architecture,
            or a tensor whose name or shape disagrees; the context names the field or tensor.

    Examples:
        >>> model = load_compressed("out/")  # doctest: +SKIP
        >>> model(torch.randn(1, 1, 28, 28)).shape  # doctest: +SKIP
        torch.Size([1, 10])
    """
    manifest_path = manifest_file(path)
    manifest = read_manifest(manifest_path)
    weights_path = manifest_path.parent / manifest.weights_file
    if not weights_path.is_file():
        raise ArtifactError(f"weights file {weights_path.name} is missing", field="weights_file")
    actual_sha = sha256_file(weights_path)
    if actual_sha != manifest.weights_sha256:
        raise ArtifactError(
            f"{weights_path.name} is corrupt or was replaced: sha256 {actual_sha[:12]}… does not match "
            f"the manifest's {manifest.weights_sha256[:12]}…",
            field="weights_sha256",
            expected=manifest.weights_sha256,
            actual=actual_sha,
        )
    model = _rebuild(manifest)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{weights_path.name} cannot be read: {exc}", field="weights_file") from exc
    _check_tensors(manifest, state, model)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def _registry_kwargs(architecture: str | None) -> dict[str, Any]:
    if architecture is None:
        return {}
    from nncompress.io.library_rebuild import is_hf_architecture

    if is_hf_architecture(architecture):
        raise ArtifactError(
            f"{architecture} is rebuilt from its config: pass architecture_kwargs={{'config': ...}} "
            "(nncompress.io.library_rebuild.transformers_build_kwargs(model))",
            field="architecture_kwargs",
        )
    from nncompress.models import get

    try:
        return dict(get(architecture).kwargs)
    except KeyError as exc:
        raise ArtifactError(str(exc.args[0]), field="architecture") from exc


def _rebuild(manifest: Manifest) -> nn.Module:
    from nncompress.io.library_rebuild import build_recorded

    if manifest.architecture is None:
        raise ArtifactError(
            "this artifact names no architecture, so it cannot be rebuilt from its weights; "
            "load its model.onnx instead",
            field="architecture",
        )
    model = build_recorded(manifest.architecture, manifest.architecture_kwargs)
    model.eval()
    if not manifest.kept:
        return model
    from nncompress.speedup import apply_kept_indices

    try:
        dtype = dtype_from_name(manifest.input_dtype)
    except ValueError as exc:
        raise ArtifactError(str(exc), field="input_dtype") from exc
    shape = tuple(manifest.input_shape)
    # Zeros are a valid input for every architecture, token-id models included (id 0 always exists);
    # the replay only needs the shapes flowing through the graph, not meaningful values.
    example = torch.zeros(shape, dtype=dtype)
    try:
        return apply_kept_indices(model, manifest.kept, example)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(
            f"replaying the manifest's kept indices on {manifest.architecture!r} failed: {exc}", field="kept"
        ) from exc


def _check_tensors(manifest: Manifest, state: Mapping[str, torch.Tensor], model: nn.Module) -> None:
    expected = manifest.tensors
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ArtifactError(
            f"tensor {missing[0]!r} is listed in the manifest but missing from the weights",
            field="tensors",
            tensor=missing[0],
        )
    unlisted = sorted(set(state) - set(expected))
    if unlisted:
        raise ArtifactError(
            f"tensor {unlisted[0]!r} is in the weights but not in the manifest",
            field="tensors",
            tensor=unlisted[0],
        )
    model_state = model.state_dict()
    for name, tensor in state.items():
        listed = list(expected[name]["shape"])
        if list(tensor.shape) != listed:
            raise ArtifactError(
                f"tensor {name!r} has shape {list(tensor.shape)} but the manifest says {listed}",
                field="tensors",
                tensor=name,
                shape=list(tensor.shape),
                expected=listed,
            )
        if name not in model_state:
            raise ArtifactError(
                f"tensor {name!r} has no place in the rebuilt {manifest.architecture!r}",
                field="tensors",
                tensor=name,
            )
        if list(model_state[name].shape) != listed:
            raise ArtifactError(
                f"tensor {name!r} has shape {listed} but the rebuilt {manifest.architecture!r} expects "
                f"{list(model_state[name].shape)}",
                field="tensors",
                tensor=name,
                shape=listed,
                expected=list(model_state[name].shape),
            )
    lacking = sorted(set(model_state) - set(state))
    if lacking:
        raise ArtifactError(
            f"the rebuilt model expects tensor {lacking[0]!r}, which the weights lack",
            field="tensors",
            tensor=lacking[0],
        )
