"""The knowledge-distillation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss"]


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    *,
    weight: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hinton's mix of hard-label cross-entropy and soft-label KL divergence.

    ``loss = (1 - weight) * CE(student, targets)``
    ``     + weight * T² * KL(softmax(teacher/T) || softmax(student/T))``.
    The ``T²`` keeps the soft term's gradients on the scale of the hard term's as ``T`` grows.
    Logits and log-probabilities both work: ``log_softmax`` ignores a per-row shift.

    Args:
        student: student outputs ``(N, C)``.
        teacher: teacher outputs ``(N, C)`` (no gradient needed).
        targets: class indices ``(N,)``.
        weight: share of the distillation term in ``[0, 1]``.
        temperature: softening temperature ``T > 0``.

    Returns:
        ``(loss, ce, kd)``: the mixed loss and its two terms (kd already multiplied by ``T²``).
    """
    student = student.float()
    ce = F.cross_entropy(student, targets)
    t = temperature
    kd = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher.float().detach() / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    return (1.0 - weight) * ce + weight * kd, ce, kd
