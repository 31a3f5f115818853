"""From a checked ``config.json`` to a module: build it, load its weights, and synthesise its input.

The config itself is parsed and checked by :mod:`nncompress.io.hf_config`; nothing here runs
before that check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from nncompress.errors import ModelLoadError
from nncompress.io.hf_config import MAX_CHANNELS, MAX_IMAGE_SIDE, ParsedConfig, parse_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# ParsedConfig and parse_config are re-exported: callers import them from here since before the split.
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
        if not (isinstance(channels, int) and 0 < channels <= MAX_CHANNELS) or hw is None or len(hw) != 2:
            raise ModelLoadError(
                f"{parsed.architecture}: config.json needs image_size and num_channels", key="image_size"
            )
        if not all(isinstance(s, int) and 0 < s <= MAX_IMAGE_SIDE for s in hw):
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
