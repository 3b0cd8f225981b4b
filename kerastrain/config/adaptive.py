"""The ``data_options.augment="auto"`` policy: one magnitude in [0, 1] scales
every augmentation and follows the learning curves while training
(`kerastrain.data.adaptive`, `kerastrain.training.adaptive_augment`).

This module knows nothing of TensorFlow.
"""

from __future__ import annotations

from typing import Any

from kerastrain.errors import config_error

__all__ = ["AUTO_DEFAULTS", "AUTO_AUGMENTATIONS", "is_auto", "parse_auto"]

PATH = "data_options.augment"

#: The keys of ``{"policy": "auto", ...}`` and their defaults.
AUTO_DEFAULTS: dict[str, Any] = {
    "policy": "auto",
    "max_magnitude": 1.0,
    "initial": 0.3,
    "step": 0.1,
    "patience": 2,
}

#: What magnitude 1 means (the list syntax of ``augment``); magnitude m
#: scales each factor (and the noise) by m and mixes a batch's examples with
#: probability m. Flip and crop are left out: they have no strength to scale.
AUTO_AUGMENTATIONS: dict[str, list[Any]] = {
    "image": [
        {"rotation": 0.15},
        {"zoom": 0.2},
        {"translation": 0.15},
        {"contrast": 0.3},
        {"mixup": 0.2},
    ],
    "table": [{"noise": 0.15}, {"mixup": 0.2}],
}


def is_auto(value: Any) -> bool:
    """Whether ``augment`` asks for the adaptive policy."""
    return value == "auto" or (isinstance(value, dict) and value.get("policy") == "auto")


def parse_auto(value: Any) -> dict[str, Any] | None:
    """The adaptive policy's options with every key filled in (None when
    ``value`` is not the adaptive policy).

    Args:
        value: `"auto"` or `{"policy": "auto", "max_magnitude": ..., "initial":
            ..., "step": ..., "patience": ...}`.

    Raises:
        ConfigError: For an unknown key or a value out of range.
    """
    if not is_auto(value):
        return None
    given = value if isinstance(value, dict) else {}
    for key in given:
        if key not in AUTO_DEFAULTS:
            raise config_error(
                f"{PATH}.{key}", key, "one of " + ", ".join(map(repr, AUTO_DEFAULTS)), AUTO_DEFAULTS
            )
    options = {**AUTO_DEFAULTS, **given}
    for key in ("max_magnitude", "initial", "step"):
        val = options[key]
        if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val <= 1:
            raise config_error(f"{PATH}.{key}", val, "a number in [0, 1]")
    if options["step"] <= 0:
        raise config_error(f"{PATH}.step", options["step"], "a number in (0, 1]")
    patience = options["patience"]
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        raise config_error(f"{PATH}.patience", patience, "an integer >= 1")
    options["initial"] = min(float(options["initial"]), float(options["max_magnitude"]))
    return options
