"""What the API learns about an uploaded model without running it, and how a job is checked against it.

Weights are described from their names and shapes only: a safetensors header is JSON, and a
``torch.save`` state_dict is read by ``torch.load(weights_only=True)`` onto the ``meta`` device
(with ``mmap`` for the zip format). That restricted unpickler builds tensors and plain containers
and refuses every other global, and ``pickle_scan`` has already checked that the file references
tensor globals only; on the meta device no tensor data is read (a 64 MB state_dict costs no memory
and about 2 ms; a legacy-format ResNet-50, 100 MB, about 70 ms and under 40 MB).

The summary is stored as ``Model.details``. Its ``layers`` (name, type, weight shape) let
``POST /v1/jobs`` resolve a config_list against models that have no registry architecture (ONNX, a
Hugging Face folder) through :func:`skeleton`, with the same resolver and messages as everywhere else.
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from core.errors import InvalidUpload, UnknownArchitecture, WeightsMismatch
from nncompress.models import get
from nncompress.models.meta import build_on_meta

# Layers kept in a summary; a model with more is summarised without them (no config check).
MAX_LAYERS = 20_000
DTYPE_NAMES = {torch.float32: "float32", torch.long: "int64"}


def weight_shapes(path: Path, fmt: str) -> dict[str, list[int]]:
    """Tensor names and shapes of a safetensors file or a ``torch.save`` state_dict, data unread."""
    if fmt == "safetensors":
        try:
            with safe_open(str(path), framework="pt") as handle:  # type: ignore[no-untyped-call]
                return {k: list(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
        except Exception as exc:
            raise InvalidUpload(f"the safetensors file cannot be read: {exc}") from None
    try:
        # The path is ours (a temp file), so torch.load's choice of reader by file name is not the
        # uploader's; mmap + meta: nothing is read but the pickle index. The legacy (non-zip)
        # format cannot be mapped; on meta its storages are skipped, not read, all the same.
        obj = torch.load(str(path), map_location="meta", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:
        raise InvalidUpload(
            f"the state_dict cannot be read with torch.load(weights_only=True): {str(exc).splitlines()[0]}"
        ) from None
    state = _state_of(obj)
    if state is None:
        raise InvalidUpload(
            f"the torch.save file holds a {type(obj).__name__}, not a state_dict of tensors; save "
            "model.state_dict() (or a checkpoint with a 'state_dict' entry)"
        )
    return {k: list(v.shape) for k, v in state.items()}


def _state_of(obj: object) -> Mapping[str, torch.Tensor] | None:
    # The nesting intake accepts: {"state_dict" | "model_state_dict" | "model": {...}} or flat.
    if not isinstance(obj, Mapping):
        return None
    for key in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return {str(k): v for k, v in inner.items()}
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {str(k): v for k, v in obj.items()}
    return None


def build_overrides(architecture: str, shapes: Mapping[str, Sequence[int]]) -> dict[str, object]:
    """Build arguments that fit a library model to the weights (a 10-class head), else ``{}``."""
    try:
        from nncompress.models.libraries import state_overrides
    except ImportError:  # a deployment without the library adapters
        return {}
    return state_overrides(architecture, shapes)


def build_meta(architecture: str, overrides: Mapping[str, object] | None = None) -> nn.Module:
    """The architecture on the ``meta`` device: structure and shapes, no weights, no memory."""
    try:
        arch = get(architecture)
    except KeyError as exc:
        raise UnknownArchitecture(
            str(exc.args[0]), errors=[{"field": "architecture", "value": architecture}]
        ) from None
    return build_on_meta(arch.build, **dict(overrides or {})).eval()


def describe_weights(path: Path, fmt: str, architecture: str) -> dict[str, Any]:
    """Checks that the weights fit ``architecture`` (by name and shape) and summarises the model.

    Raises:
        UnknownArchitecture: the name is not known. WeightsMismatch: names or shapes differ
            (``errors`` lists missing, unexpected and mismatched keys).
    """
    build_meta(architecture)  # an unknown name is a 422 before the file is read
    found = weight_shapes(path, fmt)
    overrides = build_overrides(architecture, found)
    net = build_meta(architecture, overrides)
    expected = {k: list(v.shape) for k, v in net.state_dict().items()}
    check_fit(found, expected, what=f"architecture {architecture!r}")
    arch = get(architecture)
    library = architecture.partition("/")[0] if "/" in architecture else None
    layers = layers_of(net)
    details: dict[str, Any] = {
        "source": "architecture",
        "library": library,
        "build_kwargs": overrides,
        "input": {"shape": list(arch.input_shape), "dtype": DTYPE_NAMES.get(arch.input_dtype, "float32")},
        "num_classes": overrides.get("num_classes", arch.num_classes),
        "parameters": sum(v.numel() for v in net.state_dict().values()),
        "layer_count": len(layers),
    }
    # What POST /v1/jobs checks a job against without building the model again (app.services.validation).
    if len(layers) < MAX_LAYERS:
        details["layers"] = layers
    # An architecture whose default input does not run on meta has none: its jobs are checked in full.
    with contextlib.suppress(RuntimeError, ValueError, IndexError, TypeError):
        details["output_shape"] = meta_output_shape(net, list(arch.input_shape), arch.input_dtype)
    return details


def meta_output_shape(net: nn.Module, input_shape: list[int], dtype: torch.dtype) -> list[int] | None:
    """The shape of a meta model's output for a meta input (None when the output is not a tensor).

    Raises:
        RuntimeError, ValueError, IndexError, TypeError: the input does not fit the model.
    """
    with torch.no_grad():
        out = net(torch.empty(input_shape, dtype=dtype, device="meta"))
    return list(out.shape) if isinstance(out, torch.Tensor) else None


def check_fit(found: Mapping[str, list[int]], expected: Mapping[str, list[int]], *, what: str) -> None:
    """Raises WeightsMismatch naming missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = {
        k: {"file": list(found[k]), "model": list(expected[k])}
        for k in sorted(set(found) & set(expected))
        if list(found[k]) != list(expected[k])
    }
    if not (missing or unexpected or shapes):
        return
    parts = [
        f"missing {missing[:5]}" if missing else "",
        f"unexpected {unexpected[:5]}" if unexpected else "",
        f"shape mismatches {dict(list(shapes.items())[:5])}" if shapes else "",
    ]
    raise WeightsMismatch(
        f"the weights do not fit {what}: " + "; ".join(p for p in parts if p),
        errors=[{"missing": missing, "unexpected": unexpected, "shape_mismatches": shapes}],
    )


def layers_of(net: nn.Module) -> list[dict[str, Any]]:
    """Every named module with its type, its weight's shape where it has one, and the shapes of its
    other own tensors (``bias``, a recurrent layer's ``weight_ih_l0``…): what the config resolver reads."""
    out = []
    for name, module in net.named_modules():
        if not name:
            continue
        weight = getattr(module, "weight", None)
        entry: dict[str, Any] = {"name": name, "type": type(module).__name__}
        if isinstance(weight, torch.Tensor):
            entry["weight_shape"] = list(weight.shape)
        others = {
            key: list(tensor.shape)
            for key, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            if key != "weight" and tensor is not None
        }
        if others:
            entry["tensors"] = others
        out.append(entry)
    return out[:MAX_LAYERS]


_SKELETON_TYPES: dict[str, type[nn.Module]] = {}


def skeleton(layers: Sequence[Mapping[str, Any]]) -> nn.Module:
    """A weightless stand-in with the summary's module names, types and weight shapes.

    ``nncompress.config.resolve_config`` reads only names, ``type(module).__name__`` and weight
    shapes, so resolving a config_list against this gives the same answer (and the same
    ``unknown_layer`` message with the nearest names) as against the real model.
    """
    root = nn.Module()
    for layer in layers:
        name, type_name = str(layer["name"]), str(layer["type"])
        parent = root
        *path, leaf = name.split(".")
        for part in path:
            child = parent._modules.get(part)
            if child is None:
                child = nn.Module()
                parent._modules[part] = child
            parent = child
        cls = _SKELETON_TYPES.setdefault(type_name, type(type_name, (nn.Module,), {}))
        existing = parent._modules.get(leaf)
        module = cls()
        if existing is not None:  # a container recorded after one of its children
            module._modules.update(existing._modules)
        if "weight_shape" in layer:
            module.weight = torch.empty(layer["weight_shape"], device="meta")
        for key, shape in (layer.get("tensors") or {}).items():
            setattr(module, str(key), torch.empty(shape, device="meta"))
        parent._modules[leaf] = module
    return root
