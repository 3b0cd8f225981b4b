"""Exceptions raised by kerastrain, and the one way their messages are written.

Each class also *is* the built-in exception it stands for, so that
``except ValueError`` in user code keeps working (KerasTuner's
``FatalValueError`` does the same): bad input is a `ValueError`, a step that
could not be done is a `RuntimeError`.

Every message a user can cause is built by `message` (or by `config_error`,
its shape for one option): what is wrong, what was received, what is
allowed, and a suggestion for a near miss::

    The 'train.optimizer' option must be one of 'adam', 'sgd'. Received:
    train.optimizer='adamm'. Did you mean 'adam'?

This module imports nothing of kerastrain, TensorFlow or Keras.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "KerastrainError",
    "ConfigError",
    "DataError",
    "ExportError",
    "CompressionError",
    "BudgetNotMet",
    "TrainingDivergedError",
    "TuningError",
    "ResourceError",
    "WorkerFailed",
    "message",
    "config_error",
    "did_you_mean",
    "describe",
    "one_of",
]


class KerastrainError(Exception):
    """Base class of every error kerastrain raises on purpose."""


class ConfigError(KerastrainError, ValueError):
    """An option is unknown or has a value that is not allowed.

    Raised while the configuration is built, before any data is read or any
    model is trained, and by functions given an argument they cannot use. The
    message names the option (``train.optimizer``), the value received, what
    is allowed and, for near misses, a suggestion.
    """


class DataError(KerastrainError, ValueError):
    """The data cannot be trained on as given.

    Raised before training starts. The message names the problem and the
    offending rows (the first few indices and how many there are in all).
    """


class ExportError(KerastrainError, RuntimeError):
    """An exported artifact could not be written, reloaded, or does not answer
    like the model it was exported from."""


class CompressionError(KerastrainError, RuntimeError):
    """A compression step could not be carried out on the model it was given."""


class BudgetNotMet(CompressionError):
    """No candidate of `compress.budget` met both its size and its accuracy
    limit. The message lists every candidate and the best one found."""


class TrainingDivergedError(KerastrainError, RuntimeError):
    """The training loss stayed NaN or infinite after every recovery."""


class TuningError(KerastrainError, RuntimeError):
    """The search could not produce a result (every trial failed, too many
    failures in a row, or a worker process died)."""


class ResourceError(KerastrainError, MemoryError):
    """The run is estimated not to fit the device's memory (the memory plan,
    `kerastrain.training.memory`). Raised before training, with the estimate
    and what would make it fit.

    Attributes:
        plan: The `MemoryPlan` that did not fit, with its `suggestions`.
    """

    def __init__(self, text: str, plan: Any = None) -> None:
        super().__init__(text)
        self.plan = plan


class WorkerFailed(KerastrainError, RuntimeError):
    """A process of a launched cluster died (or never finished).

    Attributes:
        task: The process, e.g. `"worker 1"`.
        returncode: Its exit status (negative: the signal that killed it), or
            None when it was still running.
        reason: Why, in words (`"was killed by signal SIGKILL"`).
        log_tail: Its last lines of output.
    """

    def __init__(self, task: str, returncode: int | None, reason: str, log_tail: Sequence[str]):
        self.task = task
        self.returncode = returncode
        self.reason = reason
        self.log_tail = list(log_tail)
        shown = "\n".join(f"    {line}" for line in self.log_tail[-12:]) or "    (no output)"
        super().__init__(
            f"{task} {reason}; the other processes were stopped. Rerun the same "
            f"launch to resume from the last backed-up epoch. The last output of "
            f"{task}:\n{shown}"
        )


def did_you_mean(value: Any, candidates: Iterable[Any]) -> str:
    """Returns `` Did you mean 'x'?`` for a near miss, else an empty string."""
    if not isinstance(value, str):
        return ""
    names = [str(c) for c in candidates]
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.6)
    if not close:
        lowered = {n.lower(): n for n in names}
        close = [lowered[value.lower()]] if value.lower() in lowered else []
    return f" Did you mean {close[0]!r}?" if close else ""


def describe(value: Any) -> str:
    """A short, safe rendering of a received value for an error message.

    Text and paths are shown whole (up to 4096 characters), so that a path
    in a message can be copied; anything else longer than 80 characters
    (an array, a mapping) is cut."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    text = repr(value)
    if isinstance(value, str) and len(text) <= 4096:
        return text
    if len(text) > 80:
        text = f"<{type(value).__name__} {text[:60]}...>"
    return text


def one_of(choices: Iterable[Any]) -> str:
    """``one of 'a', 'b', 'c'``: the allowed values, for `message` or `config_error`."""
    return "one of " + ", ".join(repr(c) for c in choices)


def _sentence(text: str) -> str:
    """`text` ending in a period (or ``?``, ``!``, ``:``); a text that ends a
    line (a list of files, say) is kept as it is."""
    if text.endswith("\n"):
        return text
    text = text.rstrip()
    return text if text.endswith((".", "?", "!", ":")) else text + "."


_FROM_RECEIVED = object()


def message(
    what: str,
    *,
    received: Mapping[str, Any] | None = None,
    allowed: str | None = None,
    candidates: Iterable[Any] = (),
    near: Any = _FROM_RECEIVED,
) -> str:
    """The message of every error a user can cause, in one format.

    ``<what>. Received: <name>=<value>, .... <allowed>. Did you mean 'x'?``;
    each part but the first is left out when it is not given.

    Args:
        what: What is wrong, one sentence or more (a final period is added
            when missing).
        received: The values received, by the name the user knows them by
            (``"train.optimizer"``, ``"mode"``). Defaults to none.
        allowed: What is allowed, or how to fix it. Defaults to none.
        candidates: The known names; a near miss of one ends the message
            with ``Did you mean 'x'?``. Defaults to none.
        near: The value compared with `candidates`. Defaults to the first
            received value that has a close match.

    Returns:
        The message.

    Example:
        >>> message(
        ...     "Unknown TFLite mode",
        ...     received={"mode": "in8"},
        ...     allowed="Use " + one_of(["float32", "int8"]),
        ...     candidates=["float32", "int8"],
        ... )
        "Unknown TFLite mode. Received: mode='in8'. Use one of 'float32', 'int8'. Did you mean 'int8'?"
    """
    parts = [_sentence(what)]
    if received:
        values = ", ".join(f"{name}={describe(value)}" for name, value in received.items())
        parts.append(f"Received: {values}.")
    if allowed:
        parts.append(_sentence(allowed))
    text = parts[0]
    for part in parts[1:]:
        text += part if text.endswith("\n") else " " + part
    candidates = list(candidates)
    if candidates:
        tried = (received or {}).values() if near is _FROM_RECEIVED else [near]
        text += next((s for s in (did_you_mean(v, candidates) for v in tried) if s), "")
    return text


def config_error(
    path: str, value: Any, expected: str, candidates: Iterable[Any] = ()
) -> ConfigError:
    """The error of one option with a value that is not allowed.

    ``The 'train.optimizer' option must be one of 'adam', 'sgd'. Received:
    train.optimizer='adamm'. Did you mean 'adam'?``

    Args:
        path: The option, as the user writes it (``"train.optimizer"``, or an
            argument's name).
        value: The value received.
        expected: What the value must be (``"> 0"``, ``one_of(...)``).
        candidates: The allowed names, for a did-you-mean. Defaults to none.

    Returns:
        The `ConfigError` to raise.
    """
    return ConfigError(
        message(
            f"The {path!r} option must be {expected}.",
            received={path: value},
            candidates=candidates,
        )
    )
