"""A model folder's ``config.json``, checked: which library (transformers or timm) and which class.

The config is the uploader's, so it is read as data and checked before any library sees it:
nothing that makes transformers fetch or run code (``auto_map``, remote code, hub attention
kernels, quantization back-ends) and no timm argument that names a file or a download.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from nncompress.errors import ModelLoadError

__all__ = ["MAX_CHANNELS", "MAX_IMAGE_SIDE", "REFUSED_TIMM_ARGS", "ParsedConfig", "parse_config"]

# Bounds on the image input a config may ask for (also applied when the input is synthesised).
MAX_IMAGE_SIDE = 4096
MAX_CHANNELS = 64
# The meta-device build in the API process costs time per module, not per weight: a config asking
# for a million layers would stall it. The largest released models have under 200 layers.
_MAX_LAYERS = 1024
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "decoder_layers")
# Keys that would make transformers or timm run, download or read something beyond the config; a
# compressed artifact's recorded timm kwargs are checked against the same set (io/library_rebuild.py).
_REFUSED_TRANSFORMERS_KEYS = ("auto_map", "trust_remote_code", "quantization_config", "custom_pipelines")
REFUSED_TIMM_ARGS = frozenset(
    {
        "pretrained",
        "pretrained_cfg",
        "pretrained_cfg_overlay",
        "checkpoint_path",
        "cache_dir",
        "features_only",
        "feature_cfg",
        "out_indices",
        "scriptable",
        "exportable",
        "no_jit",
    }
)


@dataclass
class ParsedConfig:
    """A checked config: the library, the class, and what to build it from."""

    library: str
    class_name: str
    architecture: str
    model_type: str | None = None
    hf_config: Any = None  # a transformers PretrainedConfig
    timm_args: dict[str, Any] = field(default_factory=dict)
    timm_input_size: tuple[int, ...] | None = None


def parse_config(raw: Mapping[str, Any]) -> ParsedConfig:
    """Decides the library and the class from a parsed config.json, refusing anything unsafe.

    transformers: ``model_type`` / ``architectures``; the class is ``architectures[0]`` (or the base
    model of the type), must be exported by transformers, belong to one of its Auto mappings and
    match the config's type. timm: ``architecture`` (and usually ``pretrained_cfg``), as timm's
    ``save_for_hf`` / ``push_to_hub`` write it.

    Raises:
        ModelLoadError: naming the key at fault.
    """
    refused = _find_key(raw, _REFUSED_TRANSFORMERS_KEYS)
    if refused is not None:
        raise ModelLoadError(
            f"config.json sets {refused!r}: models that need their own code (or a quantization back-end) are "
            "refused; only classes that ship with transformers are built, never with trust_remote_code",
            key=refused,
        )
    too_deep = _find_large(raw, _LAYER_KEYS, _MAX_LAYERS)
    if too_deep is not None:
        raise ModelLoadError(
            f"config.json sets {too_deep} above {_MAX_LAYERS} layers; refused",
            key=too_deep,
            limit=_MAX_LAYERS,
        )
    if "architecture" in raw and "model_type" not in raw:
        return _parse_timm(raw)
    if "model_type" in raw or "architectures" in raw:
        return _parse_transformers(raw)
    raise ModelLoadError(
        "config.json names no model: expected 'model_type'/'architectures' (transformers) or "
        "'architecture' (timm)",
        keys=sorted(raw)[:20],
    )


def _parse_transformers(raw: Mapping[str, Any]) -> ParsedConfig:
    try:
        import transformers
        from transformers.models.auto import modeling_auto
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    except ImportError as exc:
        raise ModelLoadError(
            "transformers is not installed on this deployment", library="transformers"
        ) from exc
    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise ModelLoadError(
            f"config.json has model_type {model_type!r}, "
            f"which transformers {transformers.__version__} does not know",
            key="model_type",
        )
    architectures = raw.get("architectures")
    if architectures is not None and not (
        isinstance(architectures, list) and architectures and all(isinstance(a, str) for a in architectures)
    ):
        raise ModelLoadError("config.json 'architectures' must be a list of class names", key="architectures")
    class_name = architectures[0] if architectures else modeling_auto.MODEL_MAPPING_NAMES.get(model_type)
    if not isinstance(class_name, str) or class_name not in _auto_class_names():
        raise ModelLoadError(
            f"{class_name!r} is not a model class of transformers' Auto mappings; "
            "only classes that ship with transformers are built",
            key="architectures",
            class_name=class_name,
        )
    cls = getattr(transformers, class_name, None)
    config_cls = CONFIG_MAPPING[model_type]
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise ModelLoadError(f"transformers exports no model class {class_name!r}", key="architectures")
    if not issubclass(config_cls, cast(type, cls.config_class)):
        raise ModelLoadError(
            f"{class_name} does not take a {model_type!r} config", key="architectures", model_type=model_type
        )
    # Private keys ('_attn_implementation' could name a hub kernel) are the library's, not the upload's.
    cleaned = {k: v for k, v in raw.items() if not k.startswith("_")}
    try:
        config = config_cls.from_dict(cleaned)
    except Exception as exc:
        raise ModelLoadError(
            f"config.json is not a valid {model_type} config: {exc}", key="model_type"
        ) from exc
    for cfg in (config, *(getattr(config, k, None) for k in getattr(config, "sub_configs", {}))):
        if cfg is not None and hasattr(cfg, "use_cache"):
            cfg.use_cache = False  # a KV cache is an extra output and state the engine has no use for
    return ParsedConfig(
        library="transformers",
        class_name=class_name,
        architecture=f"hf/{class_name}",
        model_type=model_type,
        hf_config=config,
    )


def _parse_timm(raw: Mapping[str, Any]) -> ParsedConfig:
    try:
        import timm
    except ImportError as exc:
        raise ModelLoadError("timm is not installed on this deployment", library="timm") from exc
    arch = raw.get("architecture")
    if not isinstance(arch, str) or not timm.is_model(arch.partition(".")[0]):
        raise ModelLoadError(f"timm has no model {arch!r}", key="architecture")
    args = raw.get("model_args") or {}
    if not isinstance(args, dict):
        raise ModelLoadError("config.json 'model_args' must be an object", key="model_args")
    bad = sorted(k for k in args if k in REFUSED_TIMM_ARGS or not _plain_json(args[k]))
    if bad:
        raise ModelLoadError(
            f"config.json model_args {bad} are refused (files, downloads or objects)", key="model_args"
        )
    kwargs = dict(args)
    num_classes = raw.get("num_classes", kwargs.get("num_classes"))
    if num_classes is not None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise ModelLoadError("config.json num_classes must be a non-negative integer", key="num_classes")
        kwargs["num_classes"] = num_classes
    size = None
    pretrained_cfg = raw.get("pretrained_cfg")
    if isinstance(pretrained_cfg, dict) and pretrained_cfg.get("input_size") is not None:
        value = pretrained_cfg["input_size"]
        if not (
            isinstance(value, list)
            and len(value) == 3
            and all(isinstance(v, int) and 0 < v <= MAX_IMAGE_SIDE for v in value)
            and value[0] <= MAX_CHANNELS
        ):
            raise ModelLoadError("config.json pretrained_cfg.input_size must be [C, H, W]", key="input_size")
        size = tuple(value)
    return ParsedConfig(
        library="timm",
        class_name=arch,
        architecture=f"timm/{arch}",
        timm_args=kwargs,
        timm_input_size=size,
    )


def _auto_class_names() -> frozenset[str]:
    from transformers.models.auto import modeling_auto

    names: set[str] = set()
    for attr in dir(modeling_auto):
        if attr.startswith("MODEL") and attr.endswith("MAPPING_NAMES"):
            for value in getattr(modeling_auto, attr).values():
                names.update([value] if isinstance(value, str) else list(value))
    return frozenset(names)


def _find_key(value: object, keys: tuple[str, ...], depth: int = 0) -> str | None:
    """The first of ``keys`` present anywhere in a nested config (sub-configs included)."""
    if depth > 8:
        return None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if k in keys:
                return str(k)
            found = _find_key(v, keys, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for v in value:
            found = _find_key(v, keys, depth + 1)
            if found is not None:
                return found
    return None


def _find_large(value: object, keys: tuple[str, ...], limit: int, depth: int = 0) -> str | None:
    """The first of ``keys`` (at any depth) whose value is a number above ``limit``."""
    if depth > 8 or not isinstance(value, Mapping):
        return None
    for k, v in value.items():
        if k in keys and isinstance(v, int | float) and v > limit:
            return str(k)
        found = _find_large(v, keys, limit, depth + 1)
        if found is not None:
            return found
    return None


def _plain_json(value: object, depth: int = 0) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list) and depth < 3:
        return all(_plain_json(v, depth + 1) for v in value)
    return False
