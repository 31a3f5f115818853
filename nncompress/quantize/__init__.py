"""int8 quantization that really runs smaller and faster: static (calibrated), dynamic, and QAT.

The artifact is an int8 ONNX model run by onnxruntime (any onnxruntime loads it, no project code
needed); optionally PyTorch's own int8 model (TorchScript, x86 backend) is written next to it.

Example:
    >>> from nncompress.quantize import QuantSpec, quantize, load_quantized
    >>> spec = QuantSpec.from_dict({"mode": "static", "config_list": [{"op_types": ["Conv2d", "Linear"]}]})
    >>> result = quantize(model, torch.randn(1, 1, 28, 28), spec, calibration=loader, out_dir="out")
    >>> load_quantized(result.onnx_path)(torch.randn(4, 1, 28, 28)).shape
    torch.Size([4, 10])
"""

from nncompress.quantize.api import LayerReport, QuantResult, plan_quantization, quantize
from nncompress.quantize.config import (
    QuantConfigEntry,
    QuantConfigError,
    QuantNoMatchError,
    UnknownQuantLayerError,
    parse_quant_config,
)
from nncompress.quantize.export import QuantizationExportError
from nncompress.quantize.measure import Accuracy, QuantMetrics, measure_quantized
from nncompress.quantize.resolve import LayerQuant, TensorQuant, resolve_quant_config
from nncompress.quantize.session import OnnxModel, load_quantized
from nncompress.quantize.spec import QuantSpec

__all__ = [
    "Accuracy",
    "LayerQuant",
    "LayerReport",
    "OnnxModel",
    "QuantConfigEntry",
    "QuantConfigError",
    "QuantMetrics",
    "QuantNoMatchError",
    "QuantResult",
    "QuantSpec",
    "QuantizationExportError",
    "TensorQuant",
    "UnknownQuantLayerError",
    "load_quantized",
    "measure_quantized",
    "parse_quant_config",
    "plan_quantization",
    "quantize",
    "resolve_quant_config",
]
