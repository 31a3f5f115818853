"""nncompress: prune, speed up, fine-tune and quantize PyTorch models.

The engine is a library: it imports torch, never the web or queue side of the service.
"""

from nncompress.errors import (
    ConfigError,
    ModelLoadError,
    NncompressError,
    NoMatchError,
    SpeedupError,
    UnknownLayerError,
    UnsupportedModelError,
    VerificationError,
)

__version__ = "0.1.0"

# Public names re-exported lazily from the modules that own them, so that `import nncompress`
# stays cheap and a user switching from NNI only changes the import line.
_LAZY: dict[str, str] = {
    "LevelPruner": "nncompress.pruners",
    "L1NormPruner": "nncompress.pruners",
    "L2NormPruner": "nncompress.pruners",
    "FPGMPruner": "nncompress.pruners",
    "SlimPruner": "nncompress.pruners",
    "TaylorFOWeightPruner": "nncompress.pruners",
    "TaylorPruner": "nncompress.pruners",
    "ActivationAPoZRankPruner": "nncompress.pruners",
    "ActivationMeanRankPruner": "nncompress.pruners",
    "prune": "nncompress.pruners",
    "ModelSpeedup": "nncompress.speedup",
    "speedup": "nncompress.speedup",
    "verify_equivalence": "nncompress.speedup",
    "parse_config_list": "nncompress.config",
    "resolve_config": "nncompress.config",
    "preflight": "nncompress.inspection",
    "save_compressed": "nncompress.io",
    "load_compressed": "nncompress.io",
    "export_onnx": "nncompress.io",
    "measure_model": "nncompress.metrics",
}


def __getattr__(name: str) -> object:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'nncompress' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)


__all__ = [
    *_LAZY,
    "ConfigError",
    "ModelLoadError",
    "NncompressError",
    "NoMatchError",
    "SpeedupError",
    "UnknownLayerError",
    "UnsupportedModelError",
    "VerificationError",
    "__version__",
]
