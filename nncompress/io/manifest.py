"""``manifest.json``: the record that lets a compressed model be rebuilt around its weights.

It holds the architecture and its kwargs (a registry name, or ``hf/<Class>`` with the model's
config), the kept channel indices of every pruned layer, the shape of every tensor, the config_list
and pruner that produced it, the input it expects, library versions, metrics, and the sha256 of the
weights file. Reading it validates every field, so an edited or truncated manifest is an
:class:`~nncompress.errors.ArtifactError` naming the field, never a crash further on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from nncompress.errors import ArtifactError

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "WEIGHTS_FILE",
    "Manifest",
    "library_versions",
    "manifest_file",
    "read_manifest",
]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """The contents of ``manifest.json``.

    Attributes:
        format_version: version of this layout; a loader refuses versions it does not know.
        architecture: registry name of the architecture (``timm/resnet18`` included), or
            ``hf/<transformers class>``, or None when the model has no buildable architecture (e.g.
            an ONNX upload): such an artifact cannot be rebuilt from weights alone.
        architecture_kwargs: keyword arguments the architecture was built with; for ``hf/…``
            ``{"config": <config.to_dict()>}`` of the model before speedup.
        kept: per pruned module, the kept indices per dimension (e.g. ``{"conv1": {"out": [...]}}``);
            empty when no shape changed (unstructured sparsity, or no speedup).
        structured: True when ``kept`` describes a physical shrink of the architecture.
        tensors: every tensor of the weights file: name → ``{"shape": [...], "dtype": "float32"}``.
        config_list: the config_list the model was pruned with.
        pruner: the pruner's registry name.
        input_shape: shape of one example input, batch dimension included.
        input_dtype: dtype of the example input (``"float32"``, ``"int64"``).
        versions: library versions that wrote the artifact.
        metrics: measured metrics (``ModelMetrics.to_dict()`` forms), free-form.
        weights_file: file name of the weights, relative to the manifest.
        weights_sha256: hex sha256 of the weights file.
        weights_bytes: size of the weights file.
        extra: anything else the caller wants recorded (JSON-able).
    """

    architecture: str | None
    architecture_kwargs: dict[str, Any]
    kept: dict[str, dict[str, list[int]]]
    structured: bool
    tensors: dict[str, dict[str, Any]]
    config_list: list[dict[str, Any]]
    pruner: str
    input_shape: list[int]
    input_dtype: str
    versions: dict[str, str]
    weights_sha256: str
    weights_bytes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    weights_file: str = WEIGHTS_FILE
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as written to ``manifest.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Parses a manifest, raising :class:`ArtifactError` naming the first bad field."""
        if not isinstance(data, Mapping):
            raise ArtifactError("manifest.json must hold a JSON object", field="<root>")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(
                f"manifest format_version {version!r} is not supported "
                f"(this nncompress reads {FORMAT_VERSION})",
                field="format_version",
            )
        expected: dict[str, type | tuple[type, ...]] = {
            "architecture": (str, type(None)),
            "architecture_kwargs": dict,
            "kept": dict,
            "structured": bool,
            "tensors": dict,
            "config_list": list,
            "pruner": str,
            "input_shape": list,
            "input_dtype": str,
            "versions": dict,
            "weights_sha256": str,
            "weights_bytes": int,
            "metrics": dict,
            "extra": dict,
            "weights_file": str,
        }
        for key, kind in expected.items():
            if key not in data:
                raise ArtifactError(f"manifest field {key!r} is missing", field=key)
            if not isinstance(data[key], kind):
                raise ArtifactError(
                    f"manifest field {key!r} has the wrong type ({type(data[key]).__name__})", field=key
                )
        for name, spec in data["tensors"].items():
            if not (isinstance(spec, Mapping) and isinstance(spec.get("shape"), list)):
                raise ArtifactError(
                    f"manifest entry for tensor {name!r} has no shape list", field="tensors", tensor=name
                )
        weights_file = data["weights_file"]
        # The weights file is always next to the manifest: a path component would let an edited
        # manifest point the loader anywhere on disk.
        if Path(weights_file).name != weights_file or weights_file in ("", ".", ".."):
            raise ArtifactError(
                f"manifest weights_file {weights_file!r} must be a bare file name", field="weights_file"
            )
        unknown = set(data) - set(expected) - {"format_version"}
        if unknown:
            raise ArtifactError(f"manifest has unknown fields: {sorted(unknown)}", field=sorted(unknown)[0])
        return cls(**{k: data[k] for k in (*expected, "format_version")})


def library_versions() -> dict[str, str]:
    """Versions of the libraries an artifact depends on (nncompress, torch, torch-pruning, safetensors)."""
    import safetensors

    import nncompress

    versions = {
        "nncompress": nncompress.__version__,
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
    }
    try:
        import torch_pruning

        versions["torch_pruning"] = str(getattr(torch_pruning, "__version__", "unknown"))
    except ImportError:  # pragma: no cover - torch-pruning is a hard dependency
        versions["torch_pruning"] = "not installed"
    return versions


def read_manifest(path: str | Path) -> Manifest:
    """Reads and validates ``manifest.json`` from a folder (or the manifest file itself)."""
    manifest_path = manifest_file(path)
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"no {MANIFEST_FILE} at {manifest_path}", field="manifest") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{MANIFEST_FILE} is not valid JSON: {exc}", field="manifest") from exc
    return Manifest.from_dict(data)


def manifest_file(path: str | Path) -> Path:
    """The manifest's path, given the artifact folder or the manifest file itself."""
    p = Path(path)
    return p / MANIFEST_FILE if p.is_dir() else p
