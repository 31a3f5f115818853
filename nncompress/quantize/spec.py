"""The frozen, validated options of one quantization run (what a job's ``quantization`` field holds)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nncompress.config.messages import did_you_mean, jsonable, show
from nncompress.quantize.config import QuantConfigEntry, QuantConfigError, parse_quant_config
from nncompress.quantize.resolve import MODES

__all__ = ["FORMATS", "QuantSpec"]

# 'qdq': QuantizeLinear/DequantizeLinear around float ops, which onnxruntime fuses into integer kernels
# at load time (the portable form other runtimes read too). 'qoperator': QLinearConv/QLinearMatMul
# written out directly. Measured equal within noise on this CPU (ResNet-18, batch 64, 1 thread:
# 407 vs 432 ms with uint8 activations), so the portable one is the default.
FORMATS: tuple[str, ...] = ("qdq", "qoperator")
_DEFAULT_CONFIG: tuple[dict[str, Any], ...] = ({"op_types": ["default"]},)
_KEYS: tuple[str, ...] = ("mode", "config_list", "format", "calibration_batches", "torch_artifact")


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize a model.

    Attributes:
        mode: ``'static'`` (post-training, calibrated activations), ``'dynamic'`` (weights offline,
            activations per batch at run time; for Linear/LSTM-heavy models) or ``'qat'``
            (fake-quantized fine-tuning by a caller's ``train_fn``, then static conversion).
        config_list: the parsed quantization config (default: every quantizable layer).
        format: ``'qdq'`` or ``'qoperator'``, the ONNX form of the int8 model (static and QAT).
        calibration_batches: how many calibration batches to read at most (static and QAT).
        torch_artifact: also write PyTorch's own int8 model (TorchScript, x86 backend) where it works.
    """

    mode: str = "static"
    config_list: tuple[QuantConfigEntry, ...] = field(
        default_factory=lambda: parse_quant_config(list(_DEFAULT_CONFIG))
    )
    format: str = "qdq"
    calibration_batches: int = 8
    torch_artifact: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise _bad("mode", self.mode, "one of " + ", ".join(repr(m) for m in MODES))
        if self.format not in FORMATS:
            raise _bad("format", self.format, "one of " + ", ".join(repr(f) for f in FORMATS))
        batches = self.calibration_batches
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise _bad("calibration_batches", batches, "an integer >= 1")
        if not isinstance(self.torch_artifact, bool):
            raise _bad("torch_artifact", self.torch_artifact, "True or False")
        object.__setattr__(self, "config_list", parse_quant_config(self.config_list))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> QuantSpec:
        """Builds a spec from JSON-like data, e.g. ``{'mode': 'static', 'config_list': [...]}``.

        Args:
            raw: keys ``mode``, ``config_list``, ``format``, ``calibration_batches``, ``torch_artifact``;
                every key is optional.

        Returns:
            The validated spec.

        Raises:
            QuantConfigError: an unknown key or a bad value, named with what is allowed.
        """
        if not isinstance(raw, Mapping):
            raise _bad(None, raw, "a dict such as {'mode': 'static', 'config_list': [...]}")
        for key in raw:
            if key not in _KEYS:
                hint = did_you_mean(str(key), _KEYS)
                raise QuantConfigError(
                    f"quantization[{key!r}]: unknown key"
                    + (f"; {hint}" if hint else "")
                    + " Valid keys: "
                    + ", ".join(_KEYS),
                    key=key,
                    value=jsonable(raw[key]),
                    expected="one of " + ", ".join(_KEYS),
                )
        kwargs = dict(raw)
        kwargs["config_list"] = parse_quant_config(raw.get("config_list", list(_DEFAULT_CONFIG)))
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_dict` reads back to an equal spec."""
        return {
            "mode": self.mode,
            "config_list": [e.to_dict() for e in self.config_list],
            "format": self.format,
            "calibration_batches": self.calibration_batches,
            "torch_artifact": self.torch_artifact,
        }


def _bad(key: str | None, value: object, expected: str) -> QuantConfigError:
    where = "quantization" if key is None else f"quantization[{key!r}]"
    hint = ""
    if key is not None and isinstance(value, str):
        choices = {"mode": MODES, "format": FORMATS}.get(key, ())
        suggestion = (
            f"did you mean {value.lower()!r}?" if value.lower() in choices else did_you_mean(value, choices)
        )
        hint = f"; {suggestion}" if suggestion else ""
    return QuantConfigError(
        f"{where}: expected {expected}, got {show(value)}{hint}",
        key=key,
        value=jsonable(value),
        expected=expected,
    )
