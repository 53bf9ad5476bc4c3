"""How every benchmark hands over its result: printed, and written to its results file."""

from __future__ import annotations

from pathlib import Path


def publish(lines: list[str], path: Path) -> None:
    """Print the Markdown ``lines`` and write them to ``path`` (folders created)."""
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"written to {path}")
