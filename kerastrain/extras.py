"""Optional extras: importing a module that needs one.

A feature behind an optional dependency (``pip install 'kerastrain[text]'``
for subword text) imports the module that uses it through `require`, only
where the feature is used, so ``import kerastrain`` never pays for it and a
missing extra is a `ConfigError` that names what to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from kerastrain.errors import ConfigError, message

__all__ = ["require", "missing_extra"]


def missing_extra(feature: str, extra: str, module: str) -> str:
    """The message for a feature whose extra is not installed."""
    return message(
        f"{feature} needs the optional extra kerastrain[{extra}]: the module {module!r} is "
        "not installed",
        allowed=f"pip install 'kerastrain[{extra}]', or choose another option",
    )


def require(name: str, *, dependency: str, extra: str, feature: str) -> ModuleType:
    """Imports the module ``name``, which imports ``dependency``.

    Args:
        name: The module to import (e.g. `"kerastrain.wordpiece"`).
        dependency: The third-party module the extra installs.
        extra: The extra's name in setup.cfg.
        feature: What needs it, for the message (e.g. an option and value).

    Raises:
        ConfigError: When ``dependency`` is not installed.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        if exc.name != dependency:
            raise
        raise ConfigError(missing_extra(feature, extra, dependency)) from None
