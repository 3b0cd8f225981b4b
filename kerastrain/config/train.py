"""Training options: ``fit_pipeline(train={...})``."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from kerastrain.config.base import ConfigError, Section, config_error, did_you_mean, option

Optimizer = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam"]

#: The keyword options each optimizer accepts in ``train.optimizer_options``
#: (tf_keras's own argument names), besides the common ones below.
OPTIMIZER_OPTIONS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov"),
    "adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "adamw": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "rmsprop": ("rho", "momentum", "epsilon", "centered"),
    "adagrad": ("initial_accumulator_value", "epsilon"),
    "nadam": ("beta_1", "beta_2", "epsilon"),
}
COMMON_OPTIMIZER_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm")


@dataclasses.dataclass
class EarlyStoppingConfig(Section):
    """Early stopping with best-weight restore.

    Attributes:
        patience: Epochs without improvement before stopping. Defaults to `5`.
        monitor: The logged quantity watched. Defaults to `"val_loss"`.
        min_delta: The smallest change that counts as an improvement.
            Defaults to `0.0`.
        mode: `"min"`, `"max"`, or `"auto"` (from the name: accuracy, auc,
            precision, recall and f1 are maximized). Defaults to `"auto"`.
        restore_best_weights: Finish with the best epoch's weights.
            Defaults to `True`.
    """

    _path: ClassVar[str] = "train.early_stopping"

    patience: int = option(5, ge=0)
    monitor: str = "val_loss"
    min_delta: float = option(0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"
    restore_best_weights: bool = True


@dataclasses.dataclass
class TrainConfig(Section):
    """How the model is compiled and fitted.

    Attributes:
        epochs: Training epochs (an upper bound with early stopping).
            Defaults to `20`.
        batch_size: Examples per step (per replica under a distribution
            strategy). Defaults to `32` when neither this nor
            `data_options.batch_size` is set.
        optimizer: One of sgd, adam, adamw, rmsprop, adagrad, nadam.
            Defaults to `"adam"`.
        optimizer_options: Extra keyword arguments of the optimizer, e.g.
            `{"momentum": 0.9, "nesterov": True}` for sgd. Defaults to `{}`.
        learning_rate: The (peak) learning rate. Defaults to `1e-3`.
        weight_decay: Decoupled weight decay applied by the optimizer.
            Defaults to `0.0`.
        early_stopping: Patience as an integer, a mapping of
            `EarlyStoppingConfig` options, `True` for the defaults, or
            `None`/`False` to train every epoch. Defaults to `5`.
        loss: A tf_keras loss name, or `"auto"` to choose it from the task.
            Defaults to `"auto"`.
        label_smoothing: Label smoothing for classification losses.
            Defaults to `0.0`.
        deterministic: Enable TensorFlow op determinism (slower, bit-for-bit
            repeatable with a seed). Defaults to `False`.
        verbose: Keras progress output: 0 silent, 1 progress bar, 2 one line
            per epoch, `"auto"`. Defaults to `"auto"`.
    """

    _path: ClassVar[str] = "train"

    epochs: int = option(20, gt=0)
    batch_size: int | None = option(None, gt=0)
    optimizer: Optimizer = "adam"
    optimizer_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    learning_rate: float = option(1e-3, gt=0.0)
    weight_decay: float = option(0.0, ge=0.0)
    early_stopping: bool | int | EarlyStoppingConfig | None = 5
    loss: str = "auto"
    label_smoothing: float = option(0.0, ge=0.0, lt=1.0)
    deterministic: bool = False
    verbose: Literal["auto", 0, 1, 2] = "auto"

    def validate(self) -> None:
        stopping = self.early_stopping
        if stopping is False or stopping is None:
            stopping = None
        elif stopping is True:
            stopping = EarlyStoppingConfig()
        elif isinstance(stopping, int):
            stopping = EarlyStoppingConfig(patience=stopping)
        object.__setattr__(self, "early_stopping", stopping)

        for key in ("learning_rate", "weight_decay"):
            if key in self.optimizer_options:
                raise config_error(f"train.optimizer_options.{key}", self.optimizer_options[key],
                                   f"set as 'train.{key}', not inside optimizer_options")
        allowed = OPTIMIZER_OPTIONS[self.optimizer] + COMMON_OPTIMIZER_OPTIONS
        for key in self.optimizer_options:
            if key not in allowed:
                raise ConfigError(
                    f"Unknown option 'train.optimizer_options.{key}' for optimizer "
                    f"{self.optimizer!r}. It accepts: {', '.join(allowed)}."
                    + did_you_mean(key, allowed))
