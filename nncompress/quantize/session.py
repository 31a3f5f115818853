"""Running an ONNX model (int8 or fp32) in onnxruntime on the CPU, fed with numpy arrays or tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nncompress.errors import ArtifactError

__all__ = ["OnnxModel", "load_quantized"]


class OnnxModel:
    """An onnxruntime CPU session with a model-like call.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (``None``: onnxruntime's default, one per core).

    Raises:
        ArtifactError: the file is missing or onnxruntime cannot load it.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ArtifactError(
                f"onnxruntime cannot load {self.path}: {type(exc).__name__}: {first}", path=str(self.path)
            ) from exc
        self.input_names: tuple[str, ...] = tuple(i.name for i in self.session.get_inputs())
        self._input_types = tuple(i.type for i in self.session.get_inputs())

    def run(self, *inputs: Any) -> list[np.ndarray]:
        """All outputs for the given inputs (numpy arrays or tensors, one per graph input)."""
        if len(inputs) != len(self.input_names):
            raise ArtifactError(
                f"{self.path.name} takes {len(self.input_names)} inputs, got {len(inputs)}",
                path=str(self.path),
            )
        feed = {
            name: _to_numpy(x, kind)
            for name, x, kind in zip(self.input_names, inputs, self._input_types, strict=True)
        }
        return list(self.session.run(None, feed))

    def __call__(self, *inputs: Any) -> Any:
        """The first output: a tensor when the first input is a tensor, else a numpy array."""
        out = self.run(*inputs)[0]
        return torch.from_numpy(out) if isinstance(inputs[0], torch.Tensor) else out


def load_quantized(path: str | Path, *, threads: int | None = None) -> OnnxModel:
    """Loads an int8 ONNX artifact for inference.

    Args:
        path: the ``.onnx`` file written by :func:`nncompress.quantize.quantize`.
        threads: intra-op threads (``None``: onnxruntime's default).

    Returns:
        A callable model: ``model(x)`` with ``x`` a numpy array or a tensor.

    Examples:
        >>> model = load_quantized(result.onnx_path)
        >>> logits = model(torch.randn(4, 1, 28, 28))
    """
    return OnnxModel(path, threads=threads)


def _to_numpy(x: Any, kind: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return array.astype(np.int64 if "int64" in kind else np.float32, copy=False)
