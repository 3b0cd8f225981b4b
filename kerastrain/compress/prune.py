"""Magnitude pruning (TF-MOT `prune_low_magnitude`) and its inverse.

`prune(model, ...)` wraps the chosen layers; fine-tuning with the callbacks
of `pruning_callbacks()` (always `UpdatePruningStep`, without which the first
step fails) zeroes the smallest weights on a schedule expressed in epochs;
`strip(model)` removes the wrappers, leaving a plain model with sparse
kernels, which is what is exported. `sparsity_by_layer` measures what was
achieved from the stripped weights; `tflite_sparsity` and
`savedmodel_sparsity` read it back from the exported files.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.compress.common import kernel_names, rebuild, select_layers, tfmot, weight_sparsity
from kerastrain.config.compress import PruneConfig

logger = logging.getLogger(__name__)

__all__ = [
    "prunable",
    "prunable_layers",
    "make_schedule",
    "prune",
    "pruning_callbacks",
    "strip",
    "sparsity_by_layer",
    "tflite_weights",
    "tflite_sparsity",
    "savedmodel_sparsity",
    "is_2_by_4",
    "KERNELS",
]


def _registry() -> Any:
    from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

    return prune_registry.PruneRegistry


def prunable(layer: keras.layers.Layer, structure: str | None = None) -> bool:
    """Whether TF-MOT prunes some weight of ``layer`` (2:4 needs 2-D or 4-D
    kernels: Dense and Conv2D)."""
    names = kernel_names(layer, _registry())
    if not names:
        return False
    if structure == "2:4":
        return all(len(getattr(layer, n).shape) in (2, 4) for n in names if n != "<custom>")
    return True


def prunable_layers(model: keras.Model, config: PruneConfig) -> list[str]:
    """The layers ``config`` selects (see `LayerSelection`)."""
    return select_layers(
        model, config, lambda layer: prunable(layer, config.structure), "compress.prune", "pruned"
    )


def make_schedule(config: PruneConfig, steps_per_epoch: int) -> Any:
    """The TF-MOT pruning schedule of ``config``, in steps.

    The polynomial schedule's last mask update falls exactly on its end step
    (the end is rounded down to a multiple of the frequency), so the target
    sparsity is reached, not approached.

    Args:
        config: `target_sparsity`, `schedule`, `initial_sparsity`,
            `end_epoch`, `frequency`, `epochs`.
        steps_per_epoch: Training steps per epoch.

    Returns:
        A `PolynomialDecay` or `ConstantSparsity` (2:4 masks once, at the
        first step, whatever the schedule).
    """
    sparsity = tfmot().sparsity.keras
    total = config.epochs * steps_per_epoch
    frequency = config.frequency or max(1, steps_per_epoch // 4)
    if config.schedule == "constant" or config.structure == "2:4":
        return sparsity.ConstantSparsity(
            config.target_sparsity, begin_step=0, frequency=min(frequency, total)
        )
    end = min(config.ramp_epochs * steps_per_epoch, total)
    frequency = min(frequency, end)
    end = frequency * (end // frequency)
    return sparsity.PolynomialDecay(
        initial_sparsity=config.initial_sparsity,
        final_sparsity=config.target_sparsity,
        begin_step=0,
        end_step=end,
        frequency=frequency,
    )


def prune(
    model: keras.Model,
    config: PruneConfig,
    steps_per_epoch: int,
    strategy: tf.distribute.Strategy | None = None,
) -> keras.Model:
    """Wraps the selected layers for pruning; the inverse is `strip`.

    Args:
        model: A trained functional tf_keras model.
        config: Target, schedule, structure and layer selection.
        steps_per_epoch: Training steps per epoch (the schedule is in epochs).
        strategy: The strategy whose scope owns the new variables.
            Defaults to `None` (the current one).

    Returns:
        A new, uncompiled model; fine-tune it with `pruning_callbacks()`.

    Raises:
        ConfigError: For a layer selection that names unknown or unprunable
            layers, or selects none.
    """
    strategy = strategy or tf.distribute.get_strategy()
    selected = prunable_layers(model, config)
    schedule = make_schedule(config, steps_per_epoch)
    m_by_n = (2, 4) if config.structure == "2:4" else None
    sparsity = tfmot().sparsity.keras

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        return sparsity.prune_low_magnitude(
            layer, pruning_schedule=schedule, sparsity_m_by_n=m_by_n
        )

    logger.info(
        "Pruning %s to %s.",
        ", ".join(selected),
        "2:4" if m_by_n else f"{config.target_sparsity:.0%} ({config.schedule})",
    )
    return rebuild(model, strategy, wrap, selected)


def pruning_callbacks(log_dir: str | os.PathLike | None = None) -> list[keras.callbacks.Callback]:
    """`UpdatePruningStep`, plus `PruningSummaries` when ``log_dir`` is given."""
    sparsity = tfmot().sparsity.keras
    callbacks = [sparsity.UpdatePruningStep()]
    if log_dir is not None:
        callbacks.append(sparsity.PruningSummaries(log_dir=os.fspath(log_dir)))
    return callbacks


def strip(model: keras.Model, strategy: tf.distribute.Strategy | None = None) -> keras.Model:
    """Removes the pruning wrappers (the inverse of `prune`), keeping the
    sparse weights. The result is uncompiled and reloads with no scopes."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        return tfmot().sparsity.keras.strip_pruning(model)


#: The weights pruning and clustering act on, by variable name.
KERNELS = ("kernel", "depthwise_kernel", "pointwise_kernel", "embeddings")


def sparsity_by_layer(model: keras.Model, layers: list[str] | None = None) -> dict[str, float]:
    """The share of zero weights in each layer's kernel.

    Variables are matched by name (`<layer>/kernel:0`), which TF-MOT's
    pruning, clustering and quantization wrappers all keep, so the same call
    measures a stripped model and a quantization-aware one.

    Args:
        model: A stripped (or quantization-aware) model.
        layers: Layer names, or None for every layer with a kernel.

    Returns:
        Layer name -> sparsity.
    """
    values: dict[str, list[np.ndarray]] = {}
    for variable in model.weights:
        layer, _, rest = variable.name.rpartition("/")
        if rest.split(":")[0] in KERNELS and (layers is None or layer in layers):
            values.setdefault(layer, []).append(variable.numpy().ravel())
    return {name: weight_sparsity(np.concatenate(parts)) for name, parts in values.items()}


#: TFLite tensor types that hold weights, and their NumPy dtypes.
_TFLITE_WEIGHT_TYPES = {0: np.float32, 1: np.float16, 9: np.int8}


def tflite_weights(path: str | os.PathLike, min_size: int = 64) -> dict[str, np.ndarray]:
    """The constant weight tensors of a TFLite file, read from its buffers.

    Args:
        path: The `.tflite` file.
        min_size: Skip tensors with fewer elements (biases, scales).
            Defaults to `64`.

    Returns:
        Tensor name -> values in the file's layout (Dense `(out, in)`,
        Conv2D `(out, h, w, in)`), for float32, float16 and int8 tensors of
        rank 2 or more.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(os.fspath(path))
    result = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data
            dtype = _TFLITE_WEIGHT_TYPES.get(tensor.type)
            shape = tuple(int(d) for d in tensor.shape)
            if data is None or dtype is None or len(shape) < 2 or np.prod(shape) < min_size:
                continue
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
            result[name] = np.frombuffer(bytes(bytearray(data)), dtype=dtype).reshape(shape)
    return result


def tflite_sparsity(path: str | os.PathLike, min_size: int = 64) -> dict[str, float]:
    """The share of zeros in each weight tensor of a TFLite file (int8
    weights are symmetric, so a zero weight is a zero byte); see
    `tflite_weights`."""
    return {name: weight_sparsity(v) for name, v in tflite_weights(path, min_size).items()}


def savedmodel_sparsity(path: str | os.PathLike) -> dict[str, float]:
    """The share of zeros in each kernel variable of a SavedModel directory,
    loaded with `tf.saved_model.load` (no scopes, no custom objects)."""
    loaded = tf.saved_model.load(os.fspath(Path(path)))
    return {
        v.name: weight_sparsity(v.numpy())
        for v in loaded.variables
        if v.name.split("/")[-1].startswith("kernel")
    }


def is_2_by_4(kernel: np.ndarray) -> bool:
    """Whether every 4 consecutive input weights of each output hold at
    least 2 zeros: TF-MOT's 2:4 layout (TFLite's), grouping a Dense
    `(in, out)` or Conv2D `(h, w, in, out)` kernel along `in`. A last group
    of fewer than 4 is padded with zeros, as TF-MOT does."""
    kernel = np.asarray(kernel)
    rows = np.moveaxis(kernel, -1, 0).reshape(-1, kernel.shape[-2])  # (out[*h*w], in)
    pad = -rows.shape[1] % 4
    rows = np.pad(rows, [(0, 0), (0, pad)])
    blocks = rows.reshape(rows.shape[0], -1, 4)
    return bool(np.all(np.sum(blocks == 0, axis=-1) >= 2))
