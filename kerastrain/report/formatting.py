"""How values read in the report and the model card: numbers, flags, shapes
and file sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_value", "disk_size", "human_size"]


def format_value(value: Any) -> str:
    """A table cell: `n/a` for None, yes/no, 4 significant digits, `2×3` for a shape."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return "×".join(str(v) for v in value) if value else "()"
    return str(value)


def disk_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder; 0 when missing."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.exists() else 0


def human_size(size: int) -> str:
    """``size`` bytes in B, KiB, MiB or GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
