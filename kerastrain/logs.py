"""kerastrain's log lines on stderr, and each line printed once.

`log_to_stderr` prints kerastrain's records for the processes kerastrain's
commands start; `print_tensorflow_once` keeps TensorFlow's own handler from
repeating what the root logger prints; `log_once` says a message that every
run would repeat once per process.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["log_to_stderr", "print_tensorflow_once", "log_once"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The logger TensorFlow's Python code logs to (`tf.get_logger()`).
TENSORFLOW_LOGGER = "tensorflow"

#: The messages `log_once` has said in this process, by logger.
_SAID: set[tuple[str, str]] = set()


def log_once(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Logs ``msg`` at ``level`` the first time this process says it, at DEBUG after.

    For a fact that every run (or every phase of a run) would repeat, such
    as "No validation split: ..."; a script that runs several pipelines says
    it once.

    Args:
        logger: The logger.
        level: The level of the first time (`logging.WARNING`, ...).
        msg: The message, %-style.
        *args: Its arguments.
    """
    key = (logger.name, msg % args if args else msg)
    if key in _SAID:
        logger.debug(msg, *args)
        return
    _SAID.add(key)
    logger.log(level, msg, *args)


class _UnlessRootPrints(logging.Filter):
    """Passes a record only when no handler of the root logger will print it too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.getLogger(TENSORFLOW_LOGGER).propagate:
            return True
        return not any(record.levelno >= handler.level for handler in logging.getLogger().handlers)


def print_tensorflow_once() -> None:
    """Keeps TensorFlow's own log handler from printing what the root logger prints.

    TensorFlow adds a stderr handler to its logger when it is imported
    before the root logger has one; a script that then calls
    `logging.basicConfig` (as the examples do) printed every TensorFlow line
    twice, once from each. After this call TensorFlow's handler stays
    silent for a record that a root handler prints, and prints the others.
    Safe to call again.
    """
    for handler in logging.getLogger(TENSORFLOW_LOGGER).handlers:
        if isinstance(handler, logging.StreamHandler) and not any(
            isinstance(f, _UnlessRootPrints) for f in handler.filters
        ):
            handler.addFilter(_UnlessRootPrints())


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
