"""The import's own proof: the converted module against onnxruntime on a generated input."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import fx

from nncompress.errors import ModelLoadError
from nncompress.io.onnx_import.summary import OnnxSummary, example_inputs

__all__ = ["compare_with_onnxruntime"]

# Errors are measured relative to each output's scale (its largest magnitude, at least 1): float32
# rounding in a deep network grows with the activations, not with the tolerance we would like.
TOLERANCE = 1e-4


def compare_with_onnxruntime(
    gm: fx.GraphModule, proto: Any, summary: OnnxSummary, *, batch: int = 2, tolerance: float = TOLERANCE
) -> dict[str, Any]:
    """Runs ``gm`` and onnxruntime on the same random inputs and compares every output.

    Args:
        gm: the converted module.
        proto: the ``ModelProto`` it was converted from, external data already loaded.
        summary: its summary (for input names, dtypes and shapes).
        batch: the size given to a symbolic batch dimension; 2 rather than 1, so a batch the
            conversion baked in as a constant shows up as a mismatch.
        tolerance: the largest accepted error relative to an output's scale.

    Returns:
        ``{"max_abs_error", "max_rel_error", "batch", "outputs"}``.

    Raises:
        ModelLoadError: onnxruntime cannot run the model, or an output differs (the first one named).
    """
    import onnxruntime as ort

    inputs = example_inputs(summary, batch=batch)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        expected = session.run(None, {s.name: t.numpy() for s, t in zip(summary.inputs, inputs, strict=True)})
    except Exception as exc:
        raise ModelLoadError(f"onnxruntime cannot run the uploaded model: {exc}") from exc
    with torch.inference_mode():
        got = gm(*inputs)
    got_list = list(got) if isinstance(got, tuple | list) else [got]
    if len(got_list) != len(expected):
        raise ModelLoadError(
            f"the converted model returns {len(got_list)} outputs, the ONNX graph {len(expected)}",
        )
    worst_abs, worst_rel = 0.0, 0.0
    for spec, ours, theirs in zip(summary.outputs, got_list, expected, strict=True):
        ours_np = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else np.asarray(ours)
        if ours_np.shape != theirs.shape:
            raise ModelLoadError(
                f"output {spec.name!r} of the converted model has shape {list(ours_np.shape)}, "
                f"onnxruntime's {list(theirs.shape)}",
                output=spec.name,
            )
        abs_err, rel_err = _errors(ours_np, theirs)
        worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
        if not rel_err <= tolerance:
            raise ModelLoadError(
                f"output {spec.name!r} of the converted model differs from onnxruntime's: max abs error "
                f"{abs_err:.3g}, relative {rel_err:.3g} (tolerance {tolerance:g}); the conversion is wrong "
                "for this graph, please report it",
                output=spec.name,
                max_abs_error=abs_err,
                max_rel_error=rel_err,
            )
    return {"max_abs_error": worst_abs, "max_rel_error": worst_rel, "batch": batch, "outputs": len(expected)}


def _errors(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    if ours.size == 0:
        return 0.0, 0.0
    if theirs.dtype.kind in "biu":
        wrong = float(np.max(ours.astype(np.int64) != theirs.astype(np.int64)))
        return wrong, wrong
    a, b = ours.astype(np.float64), theirs.astype(np.float64)
    both_nan = np.isnan(a) & np.isnan(b)
    diff = np.where(both_nan, 0.0, np.abs(a - b))
    abs_err = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
    scale = max(1.0, float(np.nanmax(np.abs(b))) if np.isfinite(b).any() else 1.0)
    return abs_err, abs_err / scale
