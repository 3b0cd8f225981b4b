"""Exceptions raised by kerastrain.

Each one also *is* the built-in exception it stands for, so that
``except ValueError`` in user code keeps working (KerasTuner's
``FatalValueError`` does the same).
"""


class KerastrainError(Exception):
    """Base class of every error kerastrain raises on purpose."""


class ConfigError(KerastrainError, ValueError):
    """An option is unknown or has a value that is not allowed.

    Raised while the configuration is built, before any data is read or any
    model is trained. The message names the option (``train.optimizer``), the
    value received, what is allowed and, for near misses, a suggestion.
    """


class DataError(KerastrainError, ValueError):
    """The data cannot be trained on as given.

    Raised before training starts. The message names the problem and the
    offending rows (the first few indices and how many there are in all).
    """


class ExportError(KerastrainError, RuntimeError):
    """An exported artifact could not be written, reloaded, or does not answer
    like the model it was exported from."""
