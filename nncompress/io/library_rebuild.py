"""What a manifest records to rebuild a library model without pickle, and the rebuild itself.

A registry architecture (``mnist_net``, ``torchvision/resnet18``, ``timm/resnet18``) is rebuilt
from its name and build kwargs. A Hugging Face transformers model has no name-only build: it is
rebuilt from its configuration, so the manifest records ``architecture="hf/<Class>"`` and
``architecture_kwargs={"config": <config.to_dict()>}``. A timm model that came as a
``save_for_hf`` folder is a registry name plus the folder's ``model_args``.

The recorded config is the one of the model *before* speedup. The engine's speedup shrinks modules
in place and does not rewrite config attributes (``intermediate_size`` keeps its old value when the
FFN shrinks), so a rebuild from the config gives the original widths and the manifest's ``kept``
indices are replayed on it, exactly as for registry architectures.

A manifest is a file a user may have edited, so it is vetted like an upload: the config goes
through the same checks as an uploaded ``config.json`` (no remote code, only classes that ship with
transformers), and timm kwargs that would download or read files are refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from torch import nn

from nncompress.errors import ArtifactError, ModelLoadError
from nncompress.io.hf_config import REFUSED_TIMM_ARGS

__all__ = [
    "HF_PREFIX",
    "build_recorded",
    "check_recorded_kwargs",
    "is_hf_architecture",
    "recorded_build",
    "transformers_build_kwargs",
]

HF_PREFIX = "hf/"


def is_hf_architecture(name: str | None) -> bool:
    """Whether ``name`` is spelled ``hf/<transformers class>`` (rebuilt from a recorded config)."""
    return isinstance(name, str) and name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX)


def transformers_build_kwargs(model: nn.Module) -> dict[str, Any]:
    """``{"config": ...}``: the JSON form of a transformers model's config, its class named in it.

    Args:
        model: a ``transformers.PreTrainedModel`` (before speedup: see the module docstring).

    Raises:
        ArtifactError: the model has no transformers config.
    """
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_json_string"):
        raise ArtifactError(
            f"{type(model).__name__} has no transformers config to record", field="architecture_kwargs"
        )
    # Through JSON text: to_dict() may hold values json.dumps refuses (dtypes), the string does not.
    data = json.loads(config.to_json_string(use_diff=False))
    data["architectures"] = [type(model).__name__]
    return {"config": data}


def recorded_build(
    library: str, class_name: str, model: nn.Module, config: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The ``(architecture, architecture_kwargs)`` a manifest records for a model loaded from a folder.

    Args:
        library: ``"transformers"`` or ``"timm"`` (``HfDirSummary.library``).
        class_name: the transformers class or timm model name (``HfDirSummary.class_name``).
        model: the loaded model (transformers: its config is recorded).
        config: the folder's parsed ``config.json`` (timm: its ``model_args`` and ``num_classes``).

    Returns:
        ``("hf/<Class>", {"config": {...}})`` or ``("timm/<model>", {"pretrained": False, ...})``.

    Raises:
        ArtifactError: an unknown library.
    """
    if library == "transformers":
        return f"{HF_PREFIX}{class_name}", transformers_build_kwargs(model)
    if library == "timm":
        from nncompress.io.hf_build import parse_config

        parsed = parse_config(config)
        return parsed.architecture, {"pretrained": False, **parsed.timm_args}
    raise ArtifactError(f"no rebuild is known for library {library!r}", field="architecture", library=library)


def check_recorded_kwargs(architecture: str, kwargs: Mapping[str, Any]) -> None:
    """Refuses build kwargs a rebuild must not pass on (downloads, files, feature extraction).

    Raises:
        ArtifactError: naming the key.
    """
    if not architecture.startswith("timm/"):
        return
    # The same keys an uploaded config.json may not carry; ``pretrained=False`` is what a rebuild passes.
    bad = sorted(k for k in kwargs if k in REFUSED_TIMM_ARGS and k != "pretrained")
    if kwargs.get("pretrained", False) is not False:
        bad.insert(0, "pretrained")
    if bad:
        raise ArtifactError(
            f"architecture_kwargs {bad} are refused for {architecture}: a rebuild never downloads or reads "
            "files; the weights come from the artifact",
            field="architecture_kwargs",
            keys=bad,
        )


def build_recorded(architecture: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """Builds the recorded architecture with random weights (eval mode): the module the weights fit.

    ``hf/<Class>`` is built from ``kwargs["config"]`` after the upload-time checks of
    :func:`nncompress.io.hf_build.parse_config`, with eager attention and the first-output hook
    (the same module a job got from :func:`nncompress.io.hf_dir.load_hf_dir`). Other names come from
    the registry.

    Raises:
        ArtifactError: unknown architecture, refused or unusable kwargs; ``field`` names the part.
    """
    if is_hf_architecture(architecture):
        return _build_transformers(architecture, kwargs)
    from nncompress.models import get

    check_recorded_kwargs(architecture, kwargs)
    try:
        arch = get(architecture)
    except KeyError as exc:
        raise ArtifactError(str(exc.args[0]), field="architecture") from exc
    try:
        return arch.build(**kwargs).eval()
    except TypeError as exc:
        raise ArtifactError(
            f"architecture {arch.name!r} rejects the manifest's kwargs: {exc}", field="architecture_kwargs"
        ) from exc


def _build_transformers(architecture: str, kwargs: Mapping[str, Any]) -> nn.Module:
    from nncompress.io.hf_build import build_model, parse_config

    config = kwargs.get("config")
    if not isinstance(config, Mapping) or set(kwargs) != {"config"}:
        raise ArtifactError(
            f"{architecture} is rebuilt from architecture_kwargs {{'config': {{...}}}} alone "
            f"(the model's config.json); found keys {sorted(kwargs)}",
            field="architecture_kwargs",
        )
    try:
        parsed = parse_config(config)
        if parsed.architecture != architecture:
            raise ArtifactError(
                f"the recorded config describes {parsed.architecture}, not {architecture}",
                field="architecture_kwargs",
                expected=architecture,
                actual=parsed.architecture,
            )
        return build_model(parsed).eval()
    except ModelLoadError as exc:
        raise ArtifactError(
            f"{architecture} cannot be rebuilt from the recorded config: {exc.message}",
            field="architecture_kwargs",
            **exc.context,
        ) from exc
