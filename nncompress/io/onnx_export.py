"""ONNX export of a (compressed) model, and a check that onnxruntime computes what torch computes.

Exporter choice, measured on torch 2.13 CPU here: the ``torch.export``-based exporter
(``dynamo=True``, the default since torch 2.9) handled every CNN of the zoo and the
``fx.GraphModule`` the speedup returns when it rewrites shape constants, with a dynamic batch
dimension, in about 1–10 s. It is the first choice, with the deprecated TorchScript exporter as the
fallback for models ``torch.export`` cannot capture — except for recurrent models, where
``torch.export`` needed 12 s (LSTM) and 38 s (GRU) against 0.2 s for the TorchScript exporter, with
the same outputs, so the order is reversed there. A file whose batch dimension came out fixed is
refused and the next exporter tried. Whichever ran is returned, and :func:`check_onnx` is what
proves the file is right.
"""

from __future__ import annotations

import ast
import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nncompress.errors import ArtifactError, NncompressError

Inputs = torch.Tensor | Sequence[torch.Tensor]

__all__ = [
    "OnnxCheck",
    "OnnxExportError",
    "check_onnx",
    "export_onnx",
    "export_onnx_with_info",
    "torch_name_scopes",
]

# Opset 18 is the lowest the torch.export-based exporter emits natively; the TorchScript fallback
# uses 17. Both satisfy onnxruntime 1.17+.
DYNAMO_OPSET = 18
LEGACY_OPSET = 17


class OnnxExportError(NncompressError):
    """Neither exporter could turn the model into ONNX."""

    code = "onnx_export_failed"


@dataclass(frozen=True)
class OnnxCheck:
    """Result of running an ONNX file in onnxruntime next to the torch model.

    Attributes:
        max_abs_diff: largest absolute difference over all outputs and inputs checked.
        batch_sizes: batch sizes that were run (a dynamic batch is checked at more than one).
        provider: the onnxruntime execution provider used.
    """

    max_abs_diff: float
    batch_sizes: tuple[int, ...]
    provider: str


def export_onnx(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    exporter: str = "auto",
) -> Path:
    """Exports ``model`` to an ONNX file.

    Args:
        model: the model to export; it is put in eval mode for the export and restored after.
        example_inputs: one input tensor or a sequence of them (batch dimension first).
        path: where to write the ``.onnx`` file; parent folders must exist.
        dynamic_batch: make dimension 0 of every input and output symbolic.
        exporter: ``"dynamo"`` (torch.export), ``"torchscript"``, or ``"auto"``: dynamo first, except
            for models with recurrent layers, where the TorchScript exporter goes first; either way
            the other one is the fallback.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        OnnxExportError: when no exporter succeeds; the message carries every reason.
    """
    return export_onnx_with_info(model, example_inputs, path, dynamic_batch=dynamic_batch, exporter=exporter)[
        0
    ]


def export_onnx_with_info(
    model: nn.Module,
    example_inputs: Inputs,
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    exporter: str = "auto",
) -> tuple[Path, str]:
    """Like :func:`export_onnx`, and also says which exporter wrote the file.

    Returns:
        ``(path, exporter)`` where exporter is ``"torch.export (dynamo), opset 18"`` or
        ``"torchscript, opset 17"``.
    """
    out = Path(path)
    inputs = _as_tuple(example_inputs)
    order = _exporter_order(model, exporter)
    was_training = model.training
    model.eval()
    failures: list[str] = []
    try:
        for name in order:
            try:
                _EXPORTERS[name](model, inputs, out, dynamic=dynamic_batch)
                if dynamic_batch and not _batch_is_dynamic(out):
                    # An exporter can pin a dimension it was asked to keep symbolic (e.g. when model
                    # code calls int() on a size) and still succeed; that file runs at one batch only.
                    raise RuntimeError("the exporter fixed the batch dimension instead of keeping it dynamic")
            except Exception as exc:
                failures.append(f"{_LABELS[name]} said {first_line(exc)}")
                continue
            return out, _LABELS[name]
    finally:
        model.train(was_training)
    raise OnnxExportError("ONNX export failed: " + "; ".join(failures), path=str(out))


def _exporter_order(model: nn.Module, exporter: str) -> tuple[str, ...]:
    if exporter == "dynamo":
        return ("dynamo",)
    if exporter == "torchscript":
        return ("torchscript",)
    if exporter != "auto":
        raise ValueError(f"exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    # Measured here: torch.export took 12 s (LSTM) and 38 s (GRU) on the zoo's text classifiers, the
    # TorchScript exporter 0.05-0.2 s, both emitting ONNX LSTM/GRU ops with the same outputs.
    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return ("torchscript", "dynamo")
    return ("dynamo", "torchscript")


def check_onnx(
    path: str | Path,
    model: nn.Module,
    inputs: Inputs,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    batch_sizes: Sequence[int] = (1, 3),
) -> OnnxCheck:
    """Runs the ONNX file in onnxruntime (CPU) and compares every output with torch's.

    Args:
        path: the ``.onnx`` file.
        model: the torch model it was exported from.
        inputs: one input tensor or a sequence of them; the first row is repeated to build each
            batch size in ``batch_sizes`` (use ``(1,)`` for a model exported without a dynamic batch).
        rtol: relative tolerance of ``numpy.allclose``.
        atol: absolute tolerance of ``numpy.allclose``.
        batch_sizes: batch sizes to run.

    Returns:
        An :class:`OnnxCheck` with the largest difference seen.

    Raises:
        ArtifactError: the file does not load or run, or an output differs beyond tolerance
            (the message names the output index, the batch size and the difference).
    """
    import onnxruntime as ort

    provider = "CPUExecutionProvider"
    try:
        session = ort.InferenceSession(str(path), providers=[provider])
    except Exception as exc:
        raise ArtifactError(f"onnxruntime cannot load {path}: {first_line(exc)}", path=str(path)) from exc
    names = [i.name for i in session.get_inputs()]
    base = _as_tuple(inputs)
    if len(names) != len(base):
        raise ArtifactError(
            f"the ONNX graph takes {len(names)} inputs but {len(base)} were given", path=str(path)
        )
    was_training = model.training
    model.eval()
    worst = 0.0
    try:
        for bs in batch_sizes:
            batch = tuple(t[:1].repeat(bs, *([1] * (t.dim() - 1))).cpu() for t in base)
            with torch.inference_mode():
                expected = _flatten_outputs(model(*batch))
            try:
                got = session.run(None, {n: t.numpy() for n, t in zip(names, batch, strict=True)})
            except Exception as exc:
                raise ArtifactError(
                    f"onnxruntime failed to run {path} at batch {bs}: {first_line(exc)}", path=str(path)
                ) from exc
            if len(got) != len(expected):
                raise ArtifactError(
                    f"the ONNX graph returns {len(got)} outputs, torch returns {len(expected)}",
                    path=str(path),
                )
            for index, (ref, out) in enumerate(zip(expected, got, strict=True)):
                ref_np = ref.detach().cpu().numpy()
                if ref_np.shape != out.shape:
                    raise ArtifactError(
                        f"ONNX output {index} at batch {bs} has shape {list(out.shape)}, "
                        f"torch has {list(ref_np.shape)}",
                        path=str(path),
                        output=index,
                    )
                diff = float(np.max(np.abs(ref_np.astype(np.float64) - out))) if out.size else 0.0
                worst = max(worst, diff)
                if not np.allclose(out, ref_np, rtol=rtol, atol=atol):
                    raise ArtifactError(
                        f"ONNX output {index} at batch {bs} differs from torch by up to {diff:.3g} "
                        f"(rtol={rtol}, atol={atol})",
                        path=str(path),
                        output=index,
                        max_abs_diff=diff,
                    )
    finally:
        model.train(was_training)
    return OnnxCheck(max_abs_diff=worst, batch_sizes=tuple(batch_sizes), provider=provider)


def export_dynamo(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    out: Path,
    *,
    dynamic: bool = True,
    optimize: bool = True,
) -> None:
    """Writes ``model`` with the torch.export-based exporter (opset :data:`DYNAMO_OPSET`), one file."""
    dynamic_shapes = None
    if dynamic:
        batch = torch.export.Dim("batch")
        dynamic_shapes = tuple({0: batch} for _ in inputs)
        # torch.export specialises dimensions of size 0 and 1, so a batch-1 example would fix the
        # batch at 1 in some graphs (seen with nn.LSTM); trace with two rows instead.
        inputs = tuple(t[:1].repeat(2, *([1] * (t.dim() - 1))) for t in inputs)
    with quiet_exporters():
        program = torch.onnx.export(
            model,
            inputs,
            dynamo=True,
            optimize=optimize,
            opset_version=DYNAMO_OPSET,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
            external_data=False,
        )
        if program is None:  # pragma: no cover - dynamo=True always returns a program
            raise RuntimeError("torch.onnx.export returned no program")
        program.save(str(out), external_data=False)


def export_legacy(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], out: Path, *, dynamic: bool = True
) -> None:
    """Writes ``model`` with the TorchScript exporter (opset :data:`LEGACY_OPSET`), batch axis named."""
    input_names = [f"input_{i}" for i in range(len(inputs))]
    axes = {name: {0: "batch"} for name in input_names}
    axes["output"] = {0: "batch"}
    with quiet_exporters():
        torch.onnx.export(
            model,
            inputs,
            str(out),
            dynamo=False,
            opset_version=LEGACY_OPSET,
            input_names=input_names,
            output_names=["output"],
            dynamic_axes=axes if dynamic else None,
        )


_LABELS = {
    "dynamo": f"torch.export (dynamo), opset {DYNAMO_OPSET}",
    "torchscript": f"torchscript, opset {LEGACY_OPSET}",
}


def _batch_is_dynamic(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    return all(
        v.type.tensor_type.shape.dim and not v.type.tensor_type.shape.dim[0].HasField("dim_value")
        for v in inputs
    )


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    # The exporters print progress lines and deprecation warnings; a library must not.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _flatten_outputs(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten_outputs(item)]
    if isinstance(out, dict):
        return [t for value in out.values() for t in _flatten_outputs(value)]
    raise ArtifactError(f"cannot compare a model output of type {type(out).__name__} with ONNX")


def _as_tuple(example_inputs: Inputs) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def first_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for errors that quote an exporter's failure."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


_EXPORTERS: dict[str, Callable[..., None]] = {
    "dynamo": export_dynamo,
    "torchscript": export_legacy,
}


def torch_name_scopes(node: Any) -> list[Any] | None:
    """The module scopes torch's dynamo exporter records on an ONNX node, outermost first.

    Args:
        node: an ``onnx.NodeProto``.

    Returns:
        The parsed ``pkg.torch.onnx.name_scopes`` property (torch writes a list of module paths),
        or None when the node has none or it is not a list.
    """
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return scopes if isinstance(scopes, list) else None
    return None
