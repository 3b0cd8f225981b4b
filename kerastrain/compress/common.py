"""What every compression technique shares: the TF-MOT import, rebuilding a
model inside the strategy scope, choosing layers, and fine-tuning.

TF-MOT is imported on first use only: importing it sets
``TF_USE_LEGACY_KERAS=1`` for the whole process and costs seconds, which a
run that compresses nothing should not pay.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig
from kerastrain.config.compress import LayerSelection
from kerastrain.config.train import TrainConfig
from kerastrain.data.balance import resampled_size
from kerastrain.data.feed import InMemory
from kerastrain.data.prepare import Prepared
from kerastrain.distribute import distributed_train_config
from kerastrain.errors import ConfigError, message
from kerastrain.training import (
    TrainResult,
    compile_model,
    global_batch_size,
    make_datasets,
    train_model,
)

logger = logging.getLogger(__name__)

__all__ = [
    "tfmot",
    "Context",
    "rebuild",
    "select_layers",
    "kernel_names",
    "Step",
    "original_units",
    "weight_sparsity",
]

Wrap = Callable[[keras.layers.Layer], keras.layers.Layer]

#: The fine-tuning rate when the training rate is a schedule object.
FINE_TUNE_RATE = 1e-4


def tfmot() -> ModuleType:
    """The `tensorflow_model_optimization` module, imported on first use."""
    import tensorflow_model_optimization

    return tensorflow_model_optimization


@dataclasses.dataclass
class Step:
    """One compression step, as reported.

    Attributes:
        name: `"distill"`, `"prune"`, `"cluster"` or `"qat"`.
        epochs: Fine-tuning epochs run.
        seconds: Wall time of the step.
        history: The fine-tuning history.
        detail: A short description of what the step did.
    """

    name: str
    epochs: int
    seconds: float
    history: dict[str, list[float]]
    detail: str

    def summary(self) -> dict[str, Any]:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return {
            "step": self.name,
            "detail": self.detail,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 2),
            **last,
        }


@dataclasses.dataclass
class Context:
    """The run a compression step fine-tunes within.

    Attributes:
        config: The resolved run config (`train` options, `compress`).
        prepared: The prepared data.
        strategy: The distribution strategy every model is rebuilt under.
        memory: The data as tensors, shared by every fine-tuning.
        log_dir: Where TF-MOT summaries go, or None for none.
    """

    config: PipelineConfig
    prepared: Prepared
    strategy: tf.distribute.Strategy
    memory: InMemory
    log_dir: Path | None = None

    @classmethod
    def create(
        cls,
        config: PipelineConfig,
        prepared: Prepared,
        strategy: tf.distribute.Strategy,
        log_dir: Path | None = None,
    ) -> Context:
        return cls(
            config, prepared, strategy, InMemory(prepared.x, prepared.training_targets), log_dir
        )

    @property
    def steps_per_epoch(self) -> int:
        """Training steps per epoch at the global batch size."""
        batch = global_batch_size(
            self.config.batch_size, self.strategy, self.config.train.gradient_accumulation
        )
        rows = resampled_size(
            self.prepared.y, self.prepared.splits.train, self.prepared.options.resample
        )  # the rows of an epoch, as make_datasets feeds them
        return max(1, math.ceil(rows / batch))

    def learning_rate(self, own: float | None = None) -> float | None:
        """A step's own rate, else `compress.learning_rate`, else None (the
        training one)."""
        shared = self.config.compress.learning_rate if self.config.compress else None
        return own or shared

    def train_options(self, **changes: Any) -> TrainConfig:
        """`train` as the strategy needs it (see `distributed_train_config`)."""
        return distributed_train_config(
            self.config.train, self.config.distribute, self.strategy
        ).replace(**changes)

    def fine_tune_rate(self, learning_rate: float | None = None) -> float:
        """A constant fine-tuning rate: the given one, else the training
        rate when it is a number (else `FINE_TUNE_RATE`), scaled with the
        replicas under `distribute.scale_learning_rate` like the training
        one."""
        base = self.config.train.learning_rate
        rate = learning_rate or (float(base) if isinstance(base, (int, float)) else FINE_TUNE_RATE)
        replicas = self.strategy.num_replicas_in_sync
        if self.config.distribute.scale_learning_rate and replicas > 1:
            rate *= replicas
        return rate

    def fit(
        self,
        model: keras.Model,
        *,
        epochs: int,
        learning_rate: float | None = None,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> TrainResult:
        """Compiles ``model`` inside the strategy scope and fine-tunes it with
        the spine's `train_model`.

        Fine-tuning runs at a constant rate (`fine_tune_rate`: no warm-up or
        schedule replayed), one step per call and without XLA (TF-MOT's
        wrappers update their masks step by step), without early stopping or
        weight averaging (a pruning schedule must not be cut short, and an
        average of masked weights is not masked)."""
        options = self.train_options(
            epochs=epochs,
            early_stopping=None,
            ema=False,
            **{"execution.steps_per_execution": 1, "execution.jit_compile": False},
        )
        with self.strategy.scope():
            compile_model(
                model, self.prepared.task, options, learning_rate=self.fine_tune_rate(learning_rate)
            )
        train_ds, val_ds = self.datasets()
        return train_model(model, train_ds, val_ds, options, callbacks=callbacks)

    def datasets(self) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        """The run's training and validation datasets (see `make_datasets`)."""
        return make_datasets(
            self.config.train,
            self.prepared,
            self.strategy,
            batch_size=self.config.batch_size,
            seed=self.config.seed,
            memory=self.memory,
        )

    def timed_fit(
        self,
        name: str,
        model: keras.Model,
        *,
        epochs: int,
        learning_rate: float | None,
        detail: str,
        callbacks: Sequence[keras.callbacks.Callback] = (),
    ) -> Step:
        """`fit`, recorded as a `Step`."""
        start = time.perf_counter()
        result = self.fit(model, epochs=epochs, learning_rate=learning_rate, callbacks=callbacks)
        step = Step(name, result.epochs_run, time.perf_counter() - start, result.history, detail)
        logger.info(
            "Compression step %s (%s): %d epochs in %.1fs.", name, detail, step.epochs, step.seconds
        )
        return step


def rebuild(
    model: keras.Model,
    strategy: tf.distribute.Strategy,
    wrap: Wrap | None = None,
    selected: Sequence[str] = (),
) -> keras.Model:
    """A copy of a functional model, every variable created inside the
    strategy scope, with the layers named in ``selected`` wrapped.

    The copy is cloned and given the trained weights *before* any layer is
    wrapped, so a wrapper that reads the weights when it is built
    (clustering's centroids, the prune-preserving quantizer's mask) sees
    the trained ones. TF-MOT's wrappers fail under a `MirroredStrategy` when
    the layer's variables were created outside its scope; rebuilding inside
    it is what works.

    Args:
        model: A functional or Sequential tf_keras model.
        strategy: The strategy whose scope owns the new variables.
        wrap: `wrap(layer) -> wrapped layer`. Defaults to `None`.
        selected: Names of the layers to wrap. Defaults to `()`.

    Returns:
        The new model (uncompiled).
    """
    selected = set(selected)
    with strategy.scope():
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
        if wrap is None or not selected:
            return copy
        return keras.models.clone_model(
            copy, clone_function=lambda layer: wrap(layer) if layer.name in selected else layer
        )


def kernel_names(layer: keras.layers.Layer, registry: Any) -> list[str]:
    """The weight attributes a TF-MOT registry (pruning or clustering) would
    transform in ``layer``; empty when it transforms none."""
    if hasattr(layer, "get_prunable_weights") or hasattr(layer, "get_clusterable_weights"):
        return ["<custom>"]
    if not registry.supports(layer):
        return []
    # `_weight_names` is how both registries of TF-MOT 0.8 list the weights of
    # built-in layers; layers they "support" with no weights are no-ops.
    return list(registry._weight_names(layer))


def select_layers(
    model: keras.Model,
    selection: LayerSelection,
    supported: Callable[[Any], bool],
    option: str,
    verb: str,
) -> list[str]:
    """The layers a technique applies to.

    Args:
        model: The model.
        selection: `layers`, `skip`, `skip_first_conv`, `skip_output`.
        supported: Whether the technique can apply to a layer.
        option: The config section, for messages (`"compress.prune"`).
        verb: What the technique does, for messages (`"pruned"`).

    Returns:
        Layer names, in model order.

    Raises:
        ConfigError: For an unknown or unsupported layer name, or when no
            layer is left.
    """
    names = [layer.name for layer in model.layers]
    for key in ("layers", "skip"):
        for name in getattr(selection, key) or ():
            if name not in names:
                raise ConfigError(
                    message(
                        f"The {option}.{key} option names layer {name!r}, which the model does "
                        "not have",
                        allowed=f"Its layers are: {', '.join(names)}",
                        candidates=names,
                        near=name,
                    )
                )
    can = [layer.name for layer in model.layers if supported(layer)]
    if selection.layers is not None:
        wrong = [n for n in selection.layers if n not in can]
        if wrong:
            raise ConfigError(
                message(
                    f"The {option}.layers option names {wrong[0]!r} "
                    f"({type(model.get_layer(wrong[0])).__name__}), which cannot be {verb}",
                    allowed=f"Layers that can: {', '.join(can) or 'none'}",
                )
            )
        return [n for n in names if n in selection.layers]
    skip = set(selection.skip)
    if selection.skip_first_conv:
        convs = [layer.name for layer in model.layers if "Conv" in type(layer).__name__]
        skip.update(convs[:1])
    if selection.skip_output:
        skip.update(model.output_names)
    chosen = [n for n in can if n not in skip]
    if not chosen:
        raise ConfigError(
            message(
                f"No layer is left to be {verb}: the layers that can be "
                f"({', '.join(can) or 'none'}) are all skipped",
                allowed=f"Set {option}.skip_first_conv or {option}.skip_output to False, or name "
                f"the layers in {option}.layers",
            )
        )
    return chosen


def original_units(prepared: Prepared, outputs: np.ndarray) -> np.ndarray:
    """Outputs of a model trained on standardized regression targets, in the
    targets' original units (unchanged for classification)."""
    scaler = prepared.target_scaler
    if scaler is None:
        return outputs
    return outputs * np.sqrt(scaler.variance[0]) + scaler.mean[0]


def weight_sparsity(values: np.ndarray) -> float:
    """The share of exact zeros in an array."""
    values = np.asarray(values)
    return float(np.mean(values == 0)) if values.size else 0.0
