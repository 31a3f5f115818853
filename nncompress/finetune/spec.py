"""The fine-tuning options: a frozen, validated spec built from JSON with precise errors."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from nncompress.errors import ConfigError

__all__ = ["OPTIMIZERS", "SCHEDULES", "DistillationSpec", "FinetuneSpec"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("none", "cosine", "step")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")


@dataclass(frozen=True)
class DistillationSpec:
    """Knowledge distillation from a teacher (usually the unpruned model).

    The loss is ``(1 - weight) * CE(student, y) + weight * KL(teacher_T || student_T) * T²`` with
    ``T = temperature`` and both distributions softened by ``T`` (Hinton et al., 2015).

    Attributes:
        weight: share of the distillation term, in ``[0, 1]``.
        temperature: softening temperature, ``> 0``.
    """

    weight: float = 0.5
    temperature: float = 4.0

    def __post_init__(self) -> None:
        _distillation_values(asdict(self), "distillation")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, prefix: str = "finetune.distillation") -> DistillationSpec:
        """Builds the spec from JSON-like data.

        Raises:
            ConfigError: unknown key, wrong type or out of range; ``context['key']`` is the dotted path.
        """
        return cls(**_distillation_values(data, prefix))


@dataclass(frozen=True)
class FinetuneSpec:
    """How to fine-tune a pruned model.

    Attributes:
        epochs: passes over the training data, ``>= 1``.
        batch_size: training batch size.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        lr: initial learning rate, ``> 0``.
        momentum: SGD momentum in ``[0, 1)`` (ignored by Adam/AdamW).
        weight_decay: L2 penalty (decoupled for AdamW), ``>= 0``.
        schedule: learning-rate schedule, stepped every batch: ``"none"``, ``"cosine"`` (to 0 over all
            steps) or ``"step"`` (times ``gamma`` every ``step_size`` epochs).
        step_size: epochs between decays of the ``"step"`` schedule.
        gamma: decay factor of the ``"step"`` schedule, in ``(0, 1]``.
        seed: seeds shuffling, initialisation of the RNG and dropout; same seed, same weights on CPU.
        distillation: distil from a teacher, or None.
        device: ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` (CUDA when present).
        amp: on CUDA, autocast to bfloat16 (float16 with loss scaling where bf16 is missing);
            no effect on CPU.
        eval_batch_size: batch size for evaluation.
    """

    epochs: int = 1
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    step_size: int = 1
    gamma: float = 0.1
    seed: int = 0
    distillation: DistillationSpec | None = None
    device: str = "cpu"
    amp: bool = True
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        # Direct construction gets the same checks (and normalisation: a distillation dict becomes a
        # DistillationSpec, names are lower-cased) as from_dict: a spec object is always valid.
        for name, value in _finetune_values(asdict(self), "finetune").items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, prefix: str = "finetune") -> FinetuneSpec:
        """Builds a spec from JSON-like data, checking every key.

        Args:
            data: the options; missing keys take their defaults.
            prefix: dotted path of ``data`` in the job spec, used in messages and ``context['key']``.

        Returns:
            The spec.

        Raises:
            ConfigError: an unknown key (with the nearest valid one), a wrong type or a value out of range.

        Example:
            >>> FinetuneSpec.from_dict({"epochs": 2, "optimizer": "adam", "lr": 1e-3,
            ...                         "distillation": {"weight": 0.7, "temperature": 4}})
        """
        return cls(**_finetune_values(data, prefix))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``FinetuneSpec.from_dict(spec.to_dict()) == spec``."""
        return asdict(self)


def _distillation_values(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    r = _Reader(data, prefix, DistillationSpec)
    return {
        "weight": r.number("weight", DistillationSpec.weight, low=0.0, high=1.0),
        "temperature": r.number("temperature", DistillationSpec.temperature, low=0.0, low_open=True),
    }


def _finetune_values(data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    r = _Reader(data, prefix, FinetuneSpec)
    distill = data.get("distillation")
    if isinstance(distill, DistillationSpec):
        distill = asdict(distill)
    if distill is not None and not isinstance(distill, Mapping):
        r.fail("distillation", "an object {weight, temperature} or null", distill)
    d = FinetuneSpec
    return {
        "epochs": r.integer("epochs", d.epochs, low=1),
        "batch_size": r.integer("batch_size", d.batch_size, low=1),
        "optimizer": r.choice("optimizer", d.optimizer, OPTIMIZERS),
        "lr": r.number("lr", d.lr, low=0.0, low_open=True),
        "momentum": r.number("momentum", d.momentum, low=0.0, high=1.0, high_open=True),
        "weight_decay": r.number("weight_decay", d.weight_decay, low=0.0),
        "schedule": r.choice("schedule", d.schedule, SCHEDULES),
        "step_size": r.integer("step_size", d.step_size, low=1),
        "gamma": r.number("gamma", d.gamma, low=0.0, high=1.0, low_open=True),
        "seed": r.integer("seed", d.seed, low=0),
        "distillation": (
            None
            if distill is None
            else DistillationSpec(**_distillation_values(distill, f"{prefix}.distillation"))
        ),
        "device": r.device("device", d.device),
        "amp": r.boolean("amp", d.amp),
        "eval_batch_size": r.integer("eval_batch_size", d.eval_batch_size, low=1),
    }


class _Reader:
    """Reads typed, range-checked values from a mapping; every failure names the dotted key."""

    def __init__(self, data: Mapping[str, Any], prefix: str, cls: type) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{prefix} must be an object, got {type(data).__name__}", key=prefix)
        allowed = [f.name for f in fields(cls)]
        for key in data:
            if key not in allowed:
                near = [a for a in allowed if a.startswith(str(key))] or difflib.get_close_matches(
                    str(key), allowed, n=1
                )
                hint = f"; did you mean {near[0]!r}?" if near else f"; allowed: {', '.join(allowed)}"
                raise ConfigError(
                    f"unknown key {prefix}.{key}{hint}", key=f"{prefix}.{key}", expected=allowed
                )
        self.data = data
        self.prefix = prefix

    def fail(self, name: str, expected: str, got: Any) -> None:
        raise ConfigError(
            f"{self.prefix}.{name} must be {expected}, got {got!r}",
            key=f"{self.prefix}.{name}",
            expected=expected,
            got=got if isinstance(got, (int, float, str, bool, type(None))) else repr(got),
        )

    def integer(self, name: str, default: int, *, low: int) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"an integer >= {low}", value)
        if value < low:
            self.fail(name, f"an integer >= {low}", value)
        return int(value)

    def number(
        self,
        name: str,
        default: float,
        *,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
    ) -> float:
        value = self.data.get(name, default)
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        expected = f"a number in {lo or '(-inf'}, {hi or 'inf)'}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(name, expected, value)
        if low is not None and (value < low or (low_open and value == low)):
            self.fail(name, expected, value)
        if high is not None and (value > high or (high_open and value == high)):
            self.fail(name, expected, value)
        return float(value)

    def choice(self, name: str, default: str, options: tuple[str, ...]) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str) or value.lower() not in options:
            self.fail(name, f"one of {', '.join(options)}", value)
        return value.lower()

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, "true or false", value)
        return value

    def device(self, name: str, default: str) -> str:
        value = self.data.get(name, default)
        ok = isinstance(value, str) and (
            value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit())
        )
        if not ok:
            self.fail(name, "'cpu', 'cuda', 'cuda:N' or 'auto'", value)
        return value
