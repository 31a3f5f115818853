"""From a model folder's ``config.json`` to a module: which library, which class, which input.

The config is the uploader's, so it is read as data and checked before any library sees it:
nothing that makes transformers fetch or run code (``auto_map``, remote code, hub attention
kernels, quantization back-ends) and no timm argument that names a file or a download.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from nncompress.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "ParsedConfig",
    "build_model",
    "checkpoint_shapes",
    "first_output",
    "input_spec",
    "load_transformers",
    "parse_config",
]

TEXT_SEQ_LEN = 16
_MAX_IMAGE_SIDE = 4096
_MAX_CHANNELS = 64
# The meta-device build in the API process costs time per module, not per weight: a config asking
# for a million layers would stall it. The largest released models have under 200 layers.
_MAX_LAYERS = 1024
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers", "decoder_layers")
# Keys that would make transformers or timm run, download or read something beyond the config.
_REFUSED_TRANSFORMERS_KEYS = ("auto_map", "trust_remote_code", "quantization_config", "custom_pipelines")
_REFUSED_TIMM_ARGS = frozenset(
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


def build_model(parsed: ParsedConfig, *, device: str | None = None) -> nn.Module:
    """Builds the model with random weights, in float32, on ``device`` (``"meta"`` for shapes only)."""
    ctx = torch.device(device) if device else contextlib.nullcontext()
    try:
        with ctx:
            if parsed.library == "timm":
                import timm

                return timm.create_model(parsed.class_name, pretrained=False, **parsed.timm_args)
            import transformers

            cls = getattr(transformers, parsed.class_name)
            model = cls._from_config(parsed.hf_config, attn_implementation="eager", dtype=torch.float32)
    except ModelLoadError:
        raise
    except Exception as exc:  # a config the class cannot be built from: wrong types or values
        raise ModelLoadError(
            f"{parsed.architecture} cannot be built from this config.json: {type(exc).__name__}: {exc}",
            architecture=parsed.architecture,
        ) from exc
    model.register_forward_hook(first_output)
    return model


def checkpoint_shapes(
    parsed: ParsedConfig, model: nn.Module
) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """The tensor names and shapes a checkpoint of ``model`` holds, and its tied keys (target → source).

    transformers 5 renames (and for some models merges or splits) weights between its modules and
    its checkpoints, and ``save_pretrained`` writes the checkpoint side (ViT's ``query`` for the
    module's ``q_proj``). The model's state_dict is therefore mapped through transformers' own
    reverse conversion, on the meta device, before it is compared with the file's headers.
    """
    state = dict(model.state_dict())
    if parsed.library != "transformers":
        return {k: tuple(v.shape) for k, v in state.items()}, {}
    from transformers.core_model_loading import revert_weight_conversion

    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    converted = revert_weight_conversion(cast("PreTrainedModel", model), state)  # library == transformers
    return {k: tuple(v.shape) for k, v in converted.items()}, {str(k): str(v) for k, v in tied.items()}


def load_transformers(parsed: ParsedConfig, directory: str) -> nn.Module:
    """Loads a checked transformers folder with transformers' own loader, offline and strictly.

    ``from_pretrained`` applies the checkpoint→module conversions and ties weights the way the
    library does; it reads only ``model*.safetensors`` here (``use_safetensors``), never the network
    (``local_files_only``), never remote code, and with the already checked config object. Any
    missing, unexpected or mis-shaped key is an error, not a random initialisation.
    """
    import transformers

    cls = getattr(transformers, parsed.class_name)
    try:
        model, info = cls.from_pretrained(
            directory,
            config=parsed.hf_config,
            attn_implementation="eager",
            dtype=torch.float32,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not load {parsed.architecture}: {type(exc).__name__}: {exc}",
            architecture=parsed.architecture,
        ) from exc
    problems = {
        k: sorted(str(x) for x in info.get(k, ()))
        for k in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(problems.values()):
        raise ModelLoadError(
            f"the weights do not fit {parsed.architecture}: "
            + ", ".join(f"{k.replace('_', ' ')} {v[:5]}" for k, v in problems.items() if v),
            architecture=parsed.architecture,
            missing=problems["missing_keys"],
            unexpected=problems["unexpected_keys"],
            shape_mismatches=problems["mismatched_keys"],
        )
    model.register_forward_hook(first_output)
    return model.eval()


def first_output(module: nn.Module, args: object, output: object) -> object:
    """Forward hook: a ``ModelOutput`` (or tuple) becomes its first tensor (logits / last_hidden_state).

    Module-level so that a hooked model can still be deep-copied and pickled.
    """
    if isinstance(output, Mapping):
        return next(iter(output.values()))
    if isinstance(output, tuple | list):
        return output[0]
    return output


def input_spec(parsed: ParsedConfig, model: nn.Module) -> tuple[tuple[int, ...], torch.dtype, int | None]:
    """The example input's shape (batch 1), dtype, and vocabulary size for token ids.

    Raises:
        ModelLoadError: the model takes an input the pipeline cannot synthesise (audio, multi-modal).
    """
    if parsed.library == "timm":
        size = parsed.timm_input_size or tuple(
            getattr(model, "pretrained_cfg", {}).get("input_size", (3, 224, 224))
        )
        return (1, *size), torch.float32, None
    config = parsed.hf_config
    main = getattr(type(model), "main_input_name", "input_ids")
    if main == "input_ids":
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        vocab = getattr(text, "vocab_size", None)
        if not isinstance(vocab, int) or vocab < 1:
            raise ModelLoadError(f"{parsed.architecture}: config.json has no vocab_size", key="vocab_size")
        positions = [
            getattr(text, k)
            for k in ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len")
            if isinstance(getattr(text, k, None), int) and getattr(text, k) > 0
        ]
        return (1, min([TEXT_SEQ_LEN, *positions])), torch.long, vocab
    if main == "pixel_values":
        channels = getattr(config, "num_channels", 3)
        side = getattr(config, "image_size", None)
        hw = (
            (side, side) if isinstance(side, int) else tuple(side) if isinstance(side, list | tuple) else None
        )
        if not (isinstance(channels, int) and 0 < channels <= _MAX_CHANNELS) or hw is None or len(hw) != 2:
            raise ModelLoadError(
                f"{parsed.architecture}: config.json needs image_size and num_channels", key="image_size"
            )
        if not all(isinstance(s, int) and 0 < s <= _MAX_IMAGE_SIDE for s in hw):
            raise ModelLoadError(
                f"{parsed.architecture}: image_size {list(hw)} is out of range", key="image_size"
            )
        return (1, channels, *hw), torch.float32, None
    raise ModelLoadError(
        f"{parsed.architecture} takes {main!r} as its main input; only token-id (input_ids) and image "
        "(pixel_values) models are supported so far",
        architecture=parsed.architecture,
        input=main,
    )


# --- per library ---------------------------------------------------------------------------------


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
    bad = sorted(k for k in args if k in _REFUSED_TIMM_ARGS or not _plain_json(args[k]))
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
            and all(isinstance(v, int) and 0 < v <= _MAX_IMAGE_SIDE for v in value)
            and value[0] <= _MAX_CHANNELS
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
