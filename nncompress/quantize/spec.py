"""The frozen, validated options of one quantization run (what a job's ``quantize`` field holds)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema

from nncompress.quantize.config import (
    EXCLUDE_LIST_KEYS,
    GRANULARITIES,
    QUANT_DTYPES,
    QUANT_SCHEMES,
    SELECTOR_KEYS,
    SETTING_KEYS,
    TARGET_NAMES,
    QuantConfigEntry,
    QuantConfigError,
    parse_quant_config,
)
from nncompress.specs import Bool, Int, Spec

__all__ = ["FORMATS", "QuantSpec"]

# 'qdq': QuantizeLinear/DequantizeLinear around float ops, which onnxruntime fuses into integer kernels
# at load time (the portable form other runtimes read too). 'qoperator': QLinearConv/QLinearMatMul
# written out directly. Measured equal within noise on this CPU (ResNet-18, batch 64, 1 thread:
# 407 vs 432 ms with uint8 activations), so the portable one is the default.
FORMATS: tuple[str, ...] = ("qdq", "qoperator")
_DEFAULT_CONFIG: tuple[dict[str, Any], ...] = ({"op_types": ["default"]},)


def _parse(raw: object) -> tuple[QuantConfigEntry, ...]:
    # The quantization config has its own parser (NNI v3 keys, messages naming entry and key);
    # its errors are raised as they are, with the key placed under quantize.config_list.
    try:
        return parse_quant_config(raw)
    except QuantConfigError as exc:
        inner, entry = exc.context.get("key"), exc.context.get("entry")
        where = "quantize.config_list" + (f"[{entry}]" if entry is not None else "")
        exc.context["key"] = f"{where}.{inner}" if inner else where
        if exc.message.startswith("config_list"):
            exc.message = "quantize." + exc.message
            exc.args = (exc.message,)
        raise


def _entry_schema() -> dict[str, Any]:
    """The JSON schema of one quantization config entry, from the parser's own key tables.

    What it cannot say is checked against the model (which layers the names and types select).
    """
    name = {"type": "string", "minLength": 1}
    names = {"type": "array", "minItems": 1, "items": name}
    patterns = {"type": "array", "minItems": 1, "items": {**name, "format": "regex"}}
    lists = {key: patterns if key.endswith("_re") else names for key in (*SELECTOR_KEYS, *EXCLUDE_LIST_KEYS)}
    settings = {
        "target_names": {"type": "array", "minItems": 1, "items": {"enum": list(TARGET_NAMES)}},
        "quant_dtype": {"enum": list(QUANT_DTYPES)},
        "quant_scheme": {"enum": list(QUANT_SCHEMES)},
        "granularity": {"enum": list(GRANULARITIES)},
    }
    return {
        "type": "object",
        "properties": {**lists, "exclude": {"type": "boolean"}, **settings},
        "additionalProperties": False,
        # An entry selects layers by at least one selector; an 'exclude' entry carries no settings.
        "allOf": [
            {"anyOf": [{"required": [key]} for key in SELECTOR_KEYS]},
            {
                "anyOf": [
                    {"properties": {"exclude": {"const": False}}},
                    {"not": {"anyOf": [{"required": [key]} for key in SETTING_KEYS]}},
                ]
            },
        ],
    }


QuantConfigList = Annotated[
    tuple[QuantConfigEntry, ...],
    PlainValidator(_parse),
    PlainSerializer(lambda entries: [e.to_dict() for e in entries], return_type=list[dict[str, Any]]),
    WithJsonSchema(
        {
            "type": "array",
            "minItems": 1,
            "items": _entry_schema(),
            "description": "NNI v3 quantization config: entries select layers (op_types, op_names, "
            "op_names_re, less exclude_op_*; 'exclude' leaves them float) and set quant_dtype, "
            "quant_scheme, granularity and target_names; later entries override earlier ones",
            "examples": [[{"op_types": ["Conv2d", "Linear"], "quant_dtype": "int8"}]],
        }
    ),
]


class QuantSpec(Spec):
    """How to quantize a model.

    Attributes:
        mode: ``'static'`` (post-training, calibrated activations), ``'dynamic'`` (weights offline,
            activations per batch at run time; for Linear/LSTM-heavy models) or ``'qat'``
            (fake-quantized fine-tuning by a caller's ``train_fn``, then static conversion).
        config_list: the parsed quantization config (default: every quantizable layer).
        format: ``'qdq'`` or ``'qoperator'``, the ONNX form of the int8 model (static and QAT).
        calibration_batches: how many calibration batches to read at most (static and QAT).
        torch_artifact: also write PyTorch's own int8 model (TorchScript, x86 backend) where it works.

    Example:
        >>> QuantSpec.from_dict({"mode": "static", "config_list": [{"op_types": ["Conv2d"]}]})
    """

    PREFIX = "quantize"
    ERROR = QuantConfigError

    mode: Literal["static", "dynamic", "qat"] = Field(
        default="static",
        description="static: calibrated post-training int8; dynamic: weights int8, activations at run "
        "time; qat: fake-quantized fine-tuning (needs finetune), then static",
    )
    config_list: QuantConfigList = Field(default_factory=lambda: parse_quant_config(list(_DEFAULT_CONFIG)))
    format: Literal["qdq", "qoperator"] = Field(default="qdq", description="the int8 ONNX model's form")
    calibration_batches: Int = Field(default=8, ge=1, description="calibration batches read at most")
    torch_artifact: Bool = Field(default=False, description="also write PyTorch's own int8 model")
