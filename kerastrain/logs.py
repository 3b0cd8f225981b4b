"""kerastrain's log lines on stderr, for the processes kerastrain's commands start."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["log_to_stderr"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextlib.contextmanager
def log_to_stderr(verbose: bool = False) -> Iterator[None]:
    """Prints kerastrain's log records on stderr inside the block.

    The command owns kerastrain's output: propagation to the root logger is
    off inside the block (a root handler that a library installs with
    `logging.basicConfig`, as TensorFlow's absl may, would print every line
    twice), and everything is put back afterwards, so running a command in a
    process (a test, a notebook) leaves its logging as it was.

    Args:
        verbose: Log DEBUG records too. Defaults to `False` (INFO and up).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT, "%H:%M:%S"))
    logger = logging.getLogger("kerastrain")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
