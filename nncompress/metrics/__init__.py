"""Metrics measured on a model: size, compute, latency and sparsity.

- :mod:`~nncompress.metrics.measure`: :func:`measure_model` and the :class:`ModelMetrics` it returns.
- :mod:`~nncompress.metrics.latency`: timing forward passes (eager or CUDA graph, to a time budget).
- :mod:`~nncompress.metrics.flops`: FLOPs of one forward pass.
"""

from nncompress.metrics.latency import LATENCY_MODES, LatencyStats
from nncompress.metrics.measure import ModelMetrics, file_bytes, measure_model, resolve_device

__all__ = ["LATENCY_MODES", "LatencyStats", "ModelMetrics", "file_bytes", "measure_model", "resolve_device"]
