"""Model intake: detect an uploaded file's format from its bytes and load it safely.

Accepted, in order of safety (design §4):

1. a registry architecture plus weights as safetensors, or a state_dict saved with ``torch.save``
   and read back with ``torch.load(weights_only=True)`` (a restricted unpickler that builds
   tensors and containers only);
2. ONNX, converted to an ``nn.Module`` (external-data tensors refused);
3. a whole pickled ``nn.Module`` / ``GraphModule``, or a ``torch.export`` archive (``.pt2``, whose
   constants may be pickled), only with ``allow_pickle=True``.

A zip of a Hugging Face model folder (``config.json`` + safetensors) is format ``"hf_dir"`` and is
handled by :mod:`nncompress.io.hf_dir`.

The format is always sniffed from the content, never taken from the file name: a pickle renamed
``model.safetensors`` is still a pickle and is refused as one.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io.detect import detect_format

__all__ = ["FORMATS", "check_shapes_fit", "detect_format", "load_model", "load_state_dict_strict"]

FORMATS = ("safetensors", "torch_zip", "pickle", "onnx", "pt2", "hf_dir")
# Both are torch.save output (zip since torch 1.6, a raw pickle before): a caller that says "pickle"
# for a torch.save zip, or the reverse, means the same thing.
_TORCH_SAVE = frozenset({"torch_zip", "pickle"})

_SAFE_ROUTES = (
    "Upload the model as ONNX (torch.onnx.export(model, (example,), 'model.onnx', dynamo=True)), or its "
    "weights (safetensors.torch.save_file(model.state_dict(), 'model.safetensors')) with the name of its "
    "architecture (a built-in, torchvision/<model> or timm/<model>), or a Hugging Face save_pretrained "
    "folder zipped"
)
PICKLE_DISABLED = (
    "pickled modules are disabled on this deployment: loading a pickle runs arbitrary code. " + _SAFE_ROUTES
)
PT2_DISABLED = (
    "torch.export archives (.pt2) are disabled on this deployment: their constants may be pickled, and "
    "loading a pickle runs arbitrary code. " + _SAFE_ROUTES
)


def load_model(
    path: str | Path,
    *,
    fmt: str | None = None,
    architecture: str | None = None,
    allow_pickle: bool = False,
) -> nn.Module:
    """Loads a model file into an ``nn.Module``, refusing anything unsafe.

    Args:
        path: the uploaded file.
        fmt: the format the caller expects (one of :data:`FORMATS`); it must agree with what the
            bytes say, or the load is refused ("pickle" and "torch_zip" are interchangeable: both
            are torch.save output). None accepts whatever is detected.
        architecture: registry name to load weights onto; required for safetensors and state_dicts.
            Library names (``torchvision/resnet50``) get the head the weights have (see
            :func:`nncompress.models.libraries.build_for_state`).
        allow_pickle: allow whole pickled modules and ``torch.export`` archives (runs code from the
            file: enable only for trusted uploads, and only inside a worker). A ``.pt2`` loads as
            ``ExportedProgram.module()``, a flat ``GraphModule`` that is not always prunable.

    Returns:
        The model in eval mode.

    Raises:
        ModelLoadError: with a message naming what is wrong (format mismatch, unknown architecture,
            missing/unexpected keys, shape mismatches, pickles refused, unsupported ONNX ops).
    """
    p = Path(path)
    detected = detect_format(p)
    if fmt is not None and fmt not in FORMATS:
        raise ModelLoadError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", format=fmt)
    if fmt is not None and fmt != detected and not {fmt, detected} <= _TORCH_SAVE:
        raise ModelLoadError(
            f"the file was declared as {fmt} but its content is {detected}", declared=fmt, detected=detected
        )
    if detected == "onnx":
        from nncompress.io.onnx_import import load_onnx

        return load_onnx(p).eval()
    if detected == "hf_dir":
        from nncompress.io.hf_dir import load_hf_dir

        loaded = load_hf_dir(p)
        if architecture is not None and architecture != loaded.summary.architecture:
            raise ModelLoadError(
                f"the model folder holds {loaded.summary.architecture}, not {architecture}",
                architecture=architecture,
                detected=loaded.summary.architecture,
            )
        return loaded.model.eval()
    if detected == "pt2":
        return _load_pt2(p, allow_pickle=allow_pickle)
    if detected == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelLoadError(f"the safetensors file cannot be read: {exc}", path=str(p)) from exc
        model = _build(architecture, detected, state)
        load_state_dict_strict(model, state, architecture=str(architecture))
        return model.eval()
    return _load_torch_file(p, detected, architecture=architecture, allow_pickle=allow_pickle)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, Any], *, architecture: str) -> None:
    """``load_state_dict(strict=True)`` with an error that lists every problem by name.

    Raises:
        ModelLoadError: naming missing keys, unexpected keys and shape mismatches
            (``context``: ``missing``, ``unexpected``, ``shape_mismatches``).
    """
    bad_values = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad_values:
        raise ModelLoadError(f"state_dict entry {bad_values[0]!r} is not a tensor", key=bad_values[0])
    expected = model.state_dict()
    check_shapes_fit(
        {k: tuple(v.shape) for k, v in state.items()},
        {k: tuple(v.shape) for k, v in expected.items()},
        message=f"the weights do not fit architecture {architecture!r}",
        architecture=architecture,
    )
    model.load_state_dict(dict(state), strict=True)


def check_shapes_fit(
    file_shapes: Mapping[str, tuple[int, ...]],
    model_shapes: Mapping[str, tuple[int, ...]],
    *,
    message: str,
    architecture: str,
    tied: Collection[str] = (),
) -> None:
    """Compares a checkpoint's tensor names and shapes with a model's, naming every problem.

    One check for both ways in: a loaded state_dict (:func:`load_state_dict_strict`) and a Hugging
    Face folder's safetensors headers, read before any weight is (:mod:`nncompress.io.hf_dir`).

    Args:
        file_shapes: the checkpoint's tensors, name → shape.
        model_shapes: the tensors the model expects, name → shape.
        message: the error's opening words, saying what did not fit what.
        architecture: the model's architecture, for the error's context.
        tied: model keys that may be absent from the file because they share a tensor with another.

    Raises:
        ModelLoadError: naming missing keys, unexpected keys and shape mismatches
            (``context``: ``missing``, ``unexpected``, ``shape_mismatches``).
    """
    missing = sorted(set(model_shapes) - set(file_shapes) - set(tied))
    unexpected = sorted(set(file_shapes) - set(model_shapes))
    mismatched = {
        k: {"file": list(file_shapes[k]), "model": list(model_shapes[k])}
        for k in sorted(set(file_shapes) & set(model_shapes))
        if file_shapes[k] != model_shapes[k]
    }
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if mismatched:
            shown = "; ".join(
                f"{k}: file {v['file']} vs model {v['model']}" for k, v in list(mismatched.items())[:5]
            )
            parts.append(f"shape mismatches {shown}")
        raise ModelLoadError(
            f"{message}: " + ", ".join(parts),
            architecture=architecture,
            missing=missing,
            unexpected=unexpected,
            shape_mismatches=mismatched,
        )


def _load_torch_file(p: Path, detected: str, *, architecture: str | None, allow_pickle: bool) -> nn.Module:
    # First the restricted unpickler: it builds tensors and plain containers and refuses any other
    # global, so a hostile __reduce__ never runs here.
    # A file object, not the path: torch.load picks its safetensors reader by file name, and the
    # name is the uploader's to choose.
    try:
        with open(p, "rb") as fh, warnings.catch_warnings():
            # torch warns that protocol-4 pickles may use opcodes it lacks; a failure says so anyway.
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError, ValueError) as exc:
        weights_only_error: Exception | None = exc
        obj = None
    else:
        weights_only_error = None
    if weights_only_error is None:
        state = _extract_state_dict(obj)
        if state is None:
            raise ModelLoadError(
                f"the {detected} file holds a {type(obj).__name__}, not a state_dict of tensors", path=str(p)
            )
        model = _build(architecture, detected, state)
        load_state_dict_strict(model, state, architecture=str(architecture))
        return model.eval()
    if not allow_pickle:
        raise ModelLoadError(PICKLE_DISABLED, format=detected)
    # Trusted path, explicitly enabled by the deployment: a whole pickled module.
    try:
        with open(p, "rb") as fh:
            obj = torch.load(fh, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"the pickled model cannot be loaded: {exc}", format=detected) from exc
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"the pickle holds a {type(obj).__name__}, not an nn.Module", format=detected)
    return obj.eval()


def _extract_state_dict(obj: object) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        # Training checkpoints often nest the weights: {"state_dict": {...}, "epoch": 3}.
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if (
                isinstance(inner, Mapping)
                and inner
                and all(isinstance(v, torch.Tensor) for v in inner.values())
            ):
                return {str(k): v for k, v in inner.items()}
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): v for k, v in obj.items()}
    return None


def _load_pt2(p: Path, *, allow_pickle: bool) -> nn.Module:
    if not allow_pickle:
        raise ModelLoadError(PT2_DISABLED, format="pt2")
    # Trusted path, explicitly enabled by the deployment.
    try:
        with open(p, "rb") as fh:
            program = torch.export.load(fh)
        module = program.module()
    except Exception as exc:
        raise ModelLoadError(f"the torch.export archive cannot be loaded: {exc}", format="pt2") from exc
    # An ExportedProgram's module refuses .eval()/.train(): it keeps the mode it was exported in.
    return module


def _build(architecture: str | None, detected: str, state: Mapping[str, Any]) -> nn.Module:
    if architecture is None:
        raise ModelLoadError(
            f"a {detected} file holds weights only; name the architecture they belong to "
            "(see `nncompress models`)",
            format=detected,
        )
    from nncompress.models.libraries import build_for_state

    shapes = {k: list(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    try:
        return build_for_state(architecture, shapes)
    except KeyError as exc:
        raise ModelLoadError(str(exc.args[0]), architecture=architecture) from exc


def _short(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}]"
