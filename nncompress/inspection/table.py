"""The preflight report as fixed-width text for the terminal (``nncompress inspect``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nncompress.tables import render_table

if TYPE_CHECKING:
    from nncompress.inspection.report import PreflightReport

__all__ = ["render_report"]


def render_report(report: PreflightReport) -> str:
    """The layer table, followed by channel groups, unsupported ops, notes and warnings.

    Args:
        report: the report to render.

    Returns:
        The text, lines joined by newlines (no trailing newline).
    """
    header = ("layer", "type", "weight shape", "sparsity", "channels", "group")
    rows = [header]
    for layer in report.layers:
        after = "ranked" if layer.channels_after is None else str(layer.channels_after)
        channels = f"{layer.channels}→{after}" if layer.structured else f"{layer.channels} (kept)"
        group = "-" if layer.group is None else f"#{layer.group}"
        sparsity = f"{layer.sparse_ratio:.2f}" + ("" if layer.structured else f" {layer.granularity}")
        shape = "x".join(str(d) for d in layer.weight_shape)
        rows.append((layer.name, layer.op_type, shape, sparsity, channels, group))
    lines = render_table(rows).splitlines()
    lines.append("")
    lines.append(f"pruner: {report.pruner}; not selected: {', '.join(report.not_selected) or 'none'}")
    if report.groups:
        lines.append("")
        lines.append("channel groups:")
        for g in report.groups:
            after = "ranked" if g.channels_after is None else str(g.channels_after)
            text = (
                f"  #{g.id}  {', '.join(g.layers) or '(no producing layer)'}: {g.channels}→{after} channels"
            )
            if g.coupled:
                text += " (coupled)"
            if g.carried_by:
                text += f"; carried by {', '.join(g.carried_by)}"
            if not g.prunable:
                text += f"; not prunable: {g.reason}"
            lines.append(text)
    for title, items in (
        ("unsupported:", [f"  {i.name} ({i.op_type}): {i.reason}" for i in report.unsupported]),
        ("notes:", [f"  {layer.name}: {n}" for layer in report.layers for n in layer.notes]),
        ("warnings:", [f"  {w}" for w in report.warnings]),
    ):
        if items:
            lines.extend(["", title, *items])
    return "\n".join(lines)
