"""What a speedup returns: the shrunk model and the record of what changed."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from nncompress.speedup.reshape import Rewrite
from nncompress.speedup.verify import VerificationReport

Kept = dict[str, dict[str, list[int]]]
ShapeChanges = dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]]


@dataclass(frozen=True)
class GroupReport:
    """One coupled channel group: its root layer, channels before/after, and why it kept its shape."""

    root: str
    channels_before: int
    channels_after: int
    members: list[str]
    skipped: str | None = None


@dataclass
class SpeedupResult:
    """What :func:`speedup` produced.

    Attributes:
        model: the shrunk model (same classes as the input; a ``torch.fx.GraphModule`` only when a shape
            constant in the forward had to be rewritten, see ``rewrites``).
        kept: per pruned layer, the original ``"out"``/``"in"`` channel indices that were kept.
        shape_changes: per layer and parameter, ``(shape before, shape after)``.
        groups: every coupled channel group, including the ones left at full width and why.
        sparsity: fraction of zero weights left in each masked layer (element masks stay as sparsity).
        rewrites: view/reshape size arguments rewritten in the traced graph.
        params_before: parameter count of the input model.
        params_after: parameter count of the shrunk model.
        verification: the equivalence report (None when ``verify=False``).
        timings: seconds per phase: ``copy`` (copy + masks), ``reference`` (masked outputs), ``shapes``
            (fx shape propagation), ``plan`` (dependency graph, groups), ``prune``, ``run`` (shrunk outputs,
            and the rewrite when needed), ``compare``, ``total``. Verification is reference + run + compare.
    """

    model: nn.Module
    kept: Kept
    shape_changes: ShapeChanges
    groups: list[GroupReport]
    sparsity: dict[str, float]
    rewrites: list[Rewrite]
    params_before: int
    params_after: int
    verification: VerificationReport | None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def smaller(self) -> bool:
        """True when the shrunk model has fewer parameters than the input; False is not a success."""
        return self.params_after < self.params_before

    @property
    def blocked_by(self) -> list[str]:
        """``"root: why"`` for every group left at full width for a reason other than being an output."""
        return [
            f"{g.root}: {g.skipped}"
            for g in self.groups
            if g.skipped is not None and "outputs of the model" not in g.skipped
        ]

    @property
    def graph_rewritten(self) -> bool:
        """True when ``model`` is a GraphModule because shape constants were rewritten."""
        return bool(self.rewrites)

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly summary (everything except the model itself)."""
        return {
            "kept": self.kept,
            "shape_changes": {
                k: {p: [list(a), list(b)] for p, (a, b) in v.items()} for k, v in self.shape_changes.items()
            },
            "groups": [g.__dict__ for g in self.groups],
            "sparsity": self.sparsity,
            "rewrites": [r.__dict__ for r in self.rewrites],
            "graph_rewritten": self.graph_rewritten,
            "smaller": self.smaller,
            "blocked_by": self.blocked_by,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "verification": self.verification.to_dict() if self.verification else None,
            "timings": self.timings,
        }
