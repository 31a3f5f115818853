"""The fine-tuning options: frozen, validated specs (:class:`~nncompress.specs.Spec`) whose errors
name the dotted key; the service's API takes the same classes as the types of its request body."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field

from nncompress.specs import Bool, Int, Number, Spec

__all__ = ["DEVICES", "OPTIMIZERS", "SCHEDULES", "DistillationSpec", "FinetuneSpec"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
SCHEDULES: tuple[str, ...] = ("none", "cosine", "step")
DEVICES: tuple[str, ...] = ("cpu", "cuda", "auto")


def _lower(value: object) -> object:
    # Names are matched case-insensitively ('AdamW'); the spec stores them lower-case.
    return value.lower() if isinstance(value, str) else value


Optimizer = Annotated[Literal["sgd", "adam", "adamw"], BeforeValidator(_lower)]
LrSchedule = Annotated[Literal["none", "cosine", "step"], BeforeValidator(_lower)]
Device = Annotated[
    str, Field(pattern=r"^(cpu|cuda|auto|cuda:[0-9]+)$", description="'cpu', 'cuda', 'cuda:N' or 'auto'")
]


class DistillationSpec(Spec):
    """Knowledge distillation from a teacher (usually the unpruned model).

    The loss is ``(1 - weight) * CE(student, y) + weight * KL(teacher_T || student_T) * T²`` with
    ``T = temperature`` and both distributions softened by ``T`` (Hinton et al., 2015).

    Attributes:
        weight: share of the distillation term, in ``[0, 1]``.
        temperature: softening temperature, ``> 0``.
    """

    PREFIX = "distillation"

    weight: Number = Field(default=0.5, ge=0.0, le=1.0, description="share of the distillation term")
    temperature: Number = Field(default=4.0, gt=0.0, description="softening temperature")


class FinetuneSpec(Spec):
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

    Example:
        >>> FinetuneSpec.from_dict({"epochs": 2, "optimizer": "adam", "lr": 1e-3,
        ...                         "distillation": {"weight": 0.7, "temperature": 4}})
    """

    PREFIX = "finetune"

    epochs: Int = Field(default=1, ge=1, description="passes over the training data")
    batch_size: Int = Field(default=64, ge=1)
    optimizer: Optimizer = "sgd"
    lr: Number = Field(default=0.01, gt=0.0, description="initial learning rate")
    momentum: Number = Field(default=0.9, ge=0.0, lt=1.0, description="SGD momentum (Adam ignores it)")
    weight_decay: Number = Field(default=0.0, ge=0.0, description="L2 penalty, decoupled for AdamW")
    schedule: LrSchedule = Field(
        default="none", description="learning-rate schedule, stepped every batch: cosine to 0, or step"
    )
    step_size: Int = Field(default=1, ge=1, description="epochs between decays of the step schedule")
    gamma: Number = Field(default=0.1, gt=0.0, le=1.0, description="decay factor of the step schedule")
    seed: Int = Field(default=0, ge=0, description="seeds shuffling, initialisation and dropout")
    distillation: DistillationSpec | None = Field(
        default=None, description="distil from the unpruned model; null for none"
    )
    device: Device = Field(default="cpu", description="'cpu', 'cuda', 'cuda:N' or 'auto'")
    amp: Bool = Field(default=True, description="on CUDA, autocast to bfloat16 (float16 without bf16)")
    eval_batch_size: Int = Field(default=256, ge=1)
