"""One way to draw a figure and save it as a PNG: :func:`figure`.

Every plot kerastrain writes (the report's, the explanations', the tuning
scores, the learning-rate range test) is drawn inside :func:`figure`, which
sets matplotlib up for files (the ``Agg`` backend, no window), opens a new
figure, and on leaving lays it out, saves it atomically (through
`kerastrain.files.atomic_path`) and closes it. This module sits beside
`kerastrain.files`, below every stage, so callbacks and tuning can draw
without importing the report stage. It imports nothing of TensorFlow, and
matplotlib only when a figure is drawn.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from kerastrain.files import atomic_path

__all__ = ["figure", "pyplot", "DPI"]

#: Resolution of every saved figure.
DPI = 100


def pyplot() -> Any:
    """`matplotlib.pyplot` on the ``Agg`` backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


@contextlib.contextmanager
def figure(path: str | os.PathLike, *args: Any, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """A new figure and its axes; on leaving, laid out, saved to ``path`` and closed.

    The PNG is written under a temporary name and renamed into place, so a
    reader never sees half of one. When the block raises, nothing is written
    and the figure is closed all the same.

    Args:
        path: The PNG to write.
        *args: Passed to `matplotlib.pyplot.subplots` (rows, columns).
        **kwargs: Passed to `matplotlib.pyplot.subplots` (`figsize`,
            `squeeze`, `gridspec_kw`, ...).

    Yields:
        ``(figure, axes)``, as `matplotlib.pyplot.subplots` returns them.

    Example:
        >>> with figure(tmp_dir / "line.png", figsize=(4, 3)) as (fig, ax):  # doctest: +SKIP
        ...     ax.plot([1, 2, 3])
    """
    plt = pyplot()
    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI)
    finally:
        plt.close(fig)
