"""The ``data_options.synthesize`` option: synthetic training rows from a
class-conditional GAN (`kerastrain.synthesize`).

This module knows nothing of TensorFlow.
"""

from __future__ import annotations

from typing import Any

from kerastrain.errors import config_error

__all__ = ["SYNTHESIZE_DEFAULTS", "parse_synthesize"]

PATH = "data_options.synthesize"

#: Every key of ``data_options.synthesize`` and its default.
SYNTHESIZE_DEFAULTS: dict[str, Any] = {
    "method": "gan",
    "per_class": "balance",
    "epochs": 300,
    "latent_dim": 32,
    "batch_size": 64,
    "learning_rate": 2e-4,
    "min_fidelity": 0.7,
    "collapse_patience": 20,
    "max_seconds": None,
}

METHODS = ("gan",)


def _number(key: str, value: Any, *, integer: bool, low: float, high: float | None = None) -> None:
    kind = int if integer else (int, float)
    bad = isinstance(value, bool) or not isinstance(value, kind)
    if not bad and (value < low or (high is not None and value > high)):
        bad = True
    if bad:
        what = "an integer" if integer else "a number"
        bounds = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise config_error(f"{PATH}.{key}", value, f"{what} {bounds}")


def parse_synthesize(value: Any) -> dict[str, Any] | None:
    """The ``synthesize`` option with every key filled in, or None.

    Args:
        value: None, `"gan"`, or a mapping of the keys of
            `SYNTHESIZE_DEFAULTS`: `method` (`"gan"`), `per_class` (a
            positive number of rows per class, or `"balance"`: the minority
            classes up to the largest one's count), `epochs`, `latent_dim`,
            `batch_size`, `learning_rate`, `min_fidelity` (in [0, 1]),
            `collapse_patience` (epochs the discriminator may stay perfect)
            and `max_seconds` (a time budget, or None).

    Returns:
        The options, or None when there is nothing to synthesize.

    Raises:
        ConfigError: For an unknown key or method, a `per_class` that is not a
            positive integer or `"balance"`, or a bad number.
    """
    if value is None or value is False:
        return None
    if isinstance(value, str):
        value = {"method": value}
    if not isinstance(value, dict):
        raise config_error(PATH, value, "None, 'gan', or a mapping such as {'method': 'gan'}")
    for key in value:
        if key not in SYNTHESIZE_DEFAULTS:
            raise config_error(
                f"{PATH}.{key}",
                key,
                "one of " + ", ".join(map(repr, SYNTHESIZE_DEFAULTS)),
                SYNTHESIZE_DEFAULTS,
            )
    options = {**SYNTHESIZE_DEFAULTS, **value}
    if options["method"] not in METHODS:
        raise config_error(f"{PATH}.method", options["method"], "'gan'", METHODS)
    per_class = options["per_class"]
    if per_class != "balance" and (
        isinstance(per_class, bool) or not isinstance(per_class, int) or per_class <= 0
    ):
        raise config_error(
            f"{PATH}.per_class", per_class, "a positive integer (rows per class) or 'balance'"
        )
    _number("epochs", options["epochs"], integer=True, low=1)
    _number("latent_dim", options["latent_dim"], integer=True, low=1)
    _number("batch_size", options["batch_size"], integer=True, low=2)
    _number("collapse_patience", options["collapse_patience"], integer=True, low=1)
    _number("learning_rate", options["learning_rate"], integer=False, low=1e-8, high=1.0)
    _number("min_fidelity", options["min_fidelity"], integer=False, low=0.0, high=1.0)
    if options["max_seconds"] is not None:
        _number("max_seconds", options["max_seconds"], integer=False, low=1e-3)
    return options
