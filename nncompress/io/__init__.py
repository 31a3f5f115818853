"""Loading and saving models: safe intake of uploads, compressed artifacts, ONNX export.

``save_compressed`` / ``load_compressed`` write and read a compressed model as safetensors plus a
JSON manifest (no pickle); ``export_onnx`` / ``check_onnx`` write ONNX and prove onnxruntime agrees
with torch; ``load_model`` / ``detect_format`` take an uploaded file in whatever safe format it is.
"""

from nncompress.io.artifacts import Manifest, load_compressed, read_manifest, save_compressed
from nncompress.io.intake import detect_format, load_model
from nncompress.io.onnx_export import OnnxCheck, OnnxExportError, check_onnx, export_onnx
from nncompress.io.tensors import safetensors_state_dict, sha256_file

__all__ = [
    "Manifest",
    "OnnxCheck",
    "OnnxExportError",
    "check_onnx",
    "detect_format",
    "export_onnx",
    "load_compressed",
    "load_model",
    "read_manifest",
    "safetensors_state_dict",
    "save_compressed",
    "sha256_file",
]
