"""Markdown tables for reports (no plotting, no matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def markdown_table(
    rows: Sequence[Mapping[str, object]],
    columns: Sequence[str] | None = None,
    align: Sequence[str] | None = None,
) -> list[str]:
    """Lines of a Markdown table: one row per mapping, columns in ``columns`` order (default:
    the first row's keys). ``align`` gives ``"l"`` or ``"r"`` per column (default: left).
    Values are written with ``str``; format numbers before passing them."""
    if not rows and columns is None:
        return []
    columns = list(columns if columns is not None else rows[0].keys())
    align = list(align) if align is not None else ["l"] * len(columns)
    if len(align) != len(columns):
        raise ValueError(f"align has {len(align)} entries for {len(columns)} columns")
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(columns) + " |", rule]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return lines
