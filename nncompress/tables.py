"""Plain fixed-width text tables: the one renderer the CLI, preflight reports and the demo print with."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_table"]


def render_table(rows: Sequence[Sequence[object]], *, align_right: Sequence[int] = ()) -> str:
    """Renders ``rows`` (the first one is the header) as aligned columns with a rule under the header.

    Args:
        rows: the header row, then the body rows; cells are shown with ``str``.
        align_right: indices of the columns to right-align (numbers); the rest are left-aligned.

    Returns:
        The table, lines joined by newlines, without trailing spaces.

    Example:
        >>> print(render_table([("layer", "params"), ("conv1", 520), ("fc1", 400500)], align_right=[1]))
        layer  params
        -----  ------
        conv1     520
        fc1    400500
    """
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    right = set(align_right)
    lines = [
        "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
