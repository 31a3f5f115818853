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

__all__ = [
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
