"""PyTorch's own int8 model, next to the ONNX one: ``torch.ao`` FX graph mode on the x86 backend.

What torch 2.13 offers, checked here: ``torch.ao.quantization.quantize_fx`` (deprecated but present)
converts to ``quantized::conv2d``/``linear`` kernels of the x86 backend (FBGEMM + oneDNN, which use
this CPU's VNNI/AMX int8 instructions); ``quantize_dynamic`` handles Linear and LSTM;
``quantize_pt2e`` is gone from torch (it lives in torchao now; its figures are in
:mod:`nncompress.quantize.ort_backend`). The converted model is saved as TorchScript
(``torch.jit.load`` reads it without unpickling Python objects). FX tracing or TorchScript fails on
some models (the seed Net's ``x.view`` on a channels-last output); then no torch artifact is written,
the reason is returned, and the ONNX artifact stands alone.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nncompress.quantize.calibration import input_arrays
from nncompress.quantize.resolve import LayerQuant

__all__ = ["torch_int8"]


def torch_int8(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    layers: dict[str, LayerQuant],
    *,
    mode: str,
    calibration: Iterable[Any] | None,
    calibration_batches: int,
    path: Path,
) -> tuple[Path | None, str | None]:
    """Writes PyTorch's int8 version of ``model`` as TorchScript, if torch can build it.

    Args:
        model: the float model (after QAT training, for mode ``'qat'``); it is not modified.
        inputs: example inputs for tracing.
        layers: the resolved layers to quantize (the rest stay float).
        mode: ``'static'``/``'qat'`` (calibrated FX conversion) or ``'dynamic'``.
        calibration: input batches for static/QAT observers.
        calibration_batches: the most batches read.
        path: the ``.pt`` file to write.

    Returns:
        ``(path, None)`` on success, ``(None, reason)`` when torch could not quantize or save it.
    """
    try:
        with _x86_engine(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantized = _convert(
                copy.deepcopy(model).eval(), inputs, layers, mode, calibration, calibration_batches
            )
            with torch.inference_mode():
                traced = torch.jit.trace(quantized, inputs, check_trace=False)
            torch.jit.save(traced, str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"{type(exc).__name__}: {first}"
    return path, None


def _convert(
    model: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    layers: dict[str, LayerQuant],
    mode: str,
    calibration: Iterable[Any] | None,
    calibration_batches: int,
) -> nn.Module:
    from torch.ao.quantization import QConfigMapping, get_default_qconfig, quantize_dynamic
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if mode == "dynamic":
        return quantize_dynamic(model, set(layers), dtype=torch.qint8)
    # x86's default qconfig: per-channel symmetric int8 weights, uint8 affine activations (histogram
    # observer), the same choice as the ONNX artifact's defaults.
    qconfig = get_default_qconfig("x86")
    mapping = QConfigMapping()
    for name in layers:
        mapping.set_module_name(name, qconfig)
    prepared = prepare_fx(model, mapping, inputs)
    batches = (
        itertools.islice(iter(calibration), calibration_batches)
        if calibration is not None
        else iter([inputs])
    )
    with torch.inference_mode():
        for batch in batches:
            arrays = input_arrays(batch, len(inputs))
            prepared(*(torch.from_numpy(a) for a in arrays))
    return convert_fx(prepared)


@contextlib.contextmanager
def _x86_engine() -> Iterator[None]:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous
