"""Domain errors of the engine.

Every error carries a stable ``code`` (the service maps it to a problem ``type``) and a
``context`` dict naming what the user must fix: the config entry, the key, the layer, the shape.
"""

from __future__ import annotations

from typing import Any


class NncompressError(Exception):
    """Base of every error the engine raises on purpose."""

    code: str = "nncompress_error"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "context": self.context}


class ConfigError(NncompressError):
    """A config_list entry is malformed: wrong key, type or value."""

    code = "invalid_config"


class UnknownLayerError(ConfigError):
    """A config names a layer the model does not have."""

    code = "unknown_layer"


class NoMatchError(ConfigError):
    """A config selects no layer of the model at all."""

    code = "config_matches_nothing"


class UnsupportedModelError(NncompressError):
    """The model contains something the engine cannot prune or speed up."""

    code = "unsupported_model"


class SpeedupError(NncompressError):
    """Turning masks into a smaller model failed."""

    code = "speedup_failed"


class VerificationError(SpeedupError):
    """The shrunk model does not compute what the masked model computes."""

    code = "verification_failed"


class NotCompressedError(SpeedupError):
    """Speedup ran, but every pruned group was blocked, so the model came out no smaller."""

    code = "not_compressed"


class ModelLoadError(NncompressError):
    """An uploaded model or weights file could not be loaded safely."""

    code = "model_load_failed"


class ArtifactError(NncompressError):
    """A saved artifact is missing, corrupt or does not match its manifest."""

    code = "artifact_invalid"
