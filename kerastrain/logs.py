"""kerastrain's log lines on stderr, each line printed once, and progress lines.

`log_to_stderr` prints kerastrain's records for the processes kerastrain's
commands start; `print_tensorflow_once` keeps TensorFlow's own handler from
repeating what the root logger prints; `log_once` says a message that every
run would repeat once per process. `Progress` logs how far a long loop is,
with the time left, where Keras's own progress bar does not show it
(tuning trials, cross-validation folds, the compression budget's
candidates, the verification of exported files, ``kerastrain predict``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "log_to_stderr",
    "print_tensorflow_once",
    "log_once",
    "Progress",
    "time_left",
    "duration",
    "PROGRESS_SECONDS",
]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The logger TensorFlow's Python code logs to (`tf.get_logger()`).
TENSORFLOW_LOGGER = "tensorflow"

#: The messages `log_once` has said in this process, by logger.
_SAID: set[tuple[str, str]] = set()
#: Seconds between two progress lines of a loop of many short steps.
PROGRESS_SECONDS = 5.0


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


def time_left(elapsed: float, done: int, total: int, done_before: int = 0) -> float | None:
    """The seconds a loop still needs, at the pace of the steps done so far.

    Args:
        elapsed: Seconds spent on the steps done in this process.
        done: Steps done, those of earlier processes included.
        total: Steps in all.
        done_before: Steps done before this process started (a resumed
            search): not part of `elapsed`. Defaults to `0`.

    Returns:
        ``elapsed / (done - done_before) * (total - done)``, never below 0;
        `None` before a step of this process has ended.

    Example:
        >>> time_left(30.0, 3, 10)  # 10 s a step, 7 to go
        70.0
    """
    ran = done - done_before
    if ran <= 0:
        return None
    return elapsed / ran * max(total - done, 0)


def duration(seconds: float) -> str:
    """A number of seconds in words: ``"4.2 s"``, ``"38 s"``, ``"3 min 5 s"``, ``"2 h 7 min"``.

    Example:
        >>> duration(185)
        '3 min 5 s'
    """
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


class Progress:
    """Logs ``<what> <done>/<total>: <detail>; <elapsed> elapsed, about <left> left.``

    For loops that Keras's progress bar does not cover. A loop of long steps
    (trials, folds) logs every step (``every=0``); one of many short steps
    (batches) logs at most every `every` seconds, and not its last step.

    Args:
        logger: The logger (at INFO).
        what: What is counted, first in the line (``"Trial"``,
            ``"Verifying tflite: batch"``).
        total: Steps in all.
        unit: A word after the count (``"rows"``), with the share done in
            percent. Defaults to none.
        every: Seconds between two lines; 0 logs every step. Defaults to
            `PROGRESS_SECONDS`.
        done_before: Steps done before this process started (a resumed
            search), left out of the pace. Defaults to `0`.
        approximate: `total` is an upper estimate (Hyperband's trials): it
            is written ``~N``. Defaults to `False`.
        clock: The clock, in seconds. Defaults to `time.monotonic`.

    Example:
        >>> progress = Progress(logger, "Fold", 5, every=0)  # doctest: +SKIP
        >>> progress.update(1, "accuracy=0.95")  # doctest: +SKIP
        Fold 1/5: accuracy=0.95; 12 s elapsed, about 48 s left.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: int,
        *,
        unit: str = "",
        every: float = PROGRESS_SECONDS,
        done_before: int = 0,
        approximate: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger, self.what, self.total, self.unit = logger, what, total, unit
        self.every, self.done_before, self.approximate = every, done_before, approximate
        self.clock = clock
        self.start = self.last = clock()

    @property
    def total_text(self) -> str:
        """The total as written: ``"30"``, or ``"~30"`` when approximate."""
        return f"~{self.total}" if self.approximate else str(self.total)

    def line(
        self, done: int, detail: str = "", now: float | None = None, position: Any = None
    ) -> str:
        """The progress line after `done` steps (what `update` logs)."""
        now = self.clock() if now is None else now
        elapsed = now - self.start
        count = f"{self.what} {done if position is None else position}/{self.total_text}"
        if self.unit:
            count += f" {self.unit}"
            if self.total:
                count += f" ({100 * done / self.total:.0f}%)"
        left = time_left(elapsed, done, self.total, self.done_before)
        pace = f"{duration(elapsed)} elapsed"
        if left is not None:
            pace += f", about {duration(left)} left"
        return f"{count}{': ' + detail if detail else ''}; {pace}."

    def update(self, done: int, detail: str = "", position: Any = None) -> bool:
        """Logs the line for `done` steps if one is due; returns whether it did.

        Args:
            done: Steps done so far (earlier processes' included).
            detail: What the last step found (a score, the best so far).
                Defaults to none.
            position: The number shown before the total, when it is not
                `done` (a trial's own number, where trials end out of order).
                Defaults to `done`.
        """
        now = self.clock()
        if self.every > 0 and (done >= self.total or now - self.last < self.every):
            return False
        self.last = now
        self.logger.info("%s", self.line(done, detail, now, position))
        return True
