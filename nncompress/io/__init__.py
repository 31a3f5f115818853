"""Loading and saving models: safe intake of uploads, compressed artifacts, ONNX export.

``save_compressed`` / ``load_compressed`` write and read a compressed model as safetensors plus a
JSON manifest (no pickle); ``export_onnx`` / ``check_onnx`` write ONNX and prove onnxruntime agrees
with torch; ``load_model`` / ``detect_format`` take an uploaded file in whatever safe format it is;
``describe_hf_dir`` / ``load_hf_dir`` read Hugging Face (transformers or timm) model folders and
``inspect_onnx`` summarises an ONNX file without converting it.
"""

from nncompress.io.artifacts import load_compressed, save_compressed
from nncompress.io.hf_dir import HfDirSummary, LoadedHf, describe_hf_dir, load_hf_dir
from nncompress.io.intake import detect_format, load_model
from nncompress.io.library_rebuild import build_recorded, recorded_build
from nncompress.io.manifest import Manifest, read_manifest
from nncompress.io.onnx_export import OnnxCheck, OnnxExportError, check_onnx, export_onnx
from nncompress.io.onnx_import import inspect_onnx
from nncompress.io.tensors import safetensors_state_dict, sha256_file

__all__ = [
    "HfDirSummary",
    "LoadedHf",
    "Manifest",
    "OnnxCheck",
    "OnnxExportError",
    "build_recorded",
    "check_onnx",
    "describe_hf_dir",
    "detect_format",
    "export_onnx",
    "inspect_onnx",
    "load_compressed",
    "load_hf_dir",
    "load_model",
    "read_manifest",
    "recorded_build",
    "safetensors_state_dict",
    "save_compressed",
    "sha256_file",
]
