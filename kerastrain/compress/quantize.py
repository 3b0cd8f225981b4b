"""Quantization-aware training (TF-MOT `quantize_apply`) and its inverse.

`quantize(model, preserve=...)` returns a model that simulates int8 in
training, so that the int8 TFLite file converted from it loses little
accuracy. After pruning it uses TF-MOT's prune-preserving scheme and after
clustering the cluster-preserving one (a plain QAT pass would undo them).
Layers TF-MOT cannot quantize get a no-op `QuantizeConfig` and are listed,
instead of failing the whole model. The input standardization is left out
of quantization altogether: quantizing the raw input with one int8 scale
would erase every feature whose range is small beside the largest one (a
tabular MLP fell to the majority class), so the int8 part starts after it,
as in the int8 export. `strip(qat_model, float_model)` gives
the float twin: the same architecture as before, with the QAT-trained
weights and no fake quantization.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.compress.common import rebuild, tfmot
from kerastrain.errors import CompressionError, config_error, message, one_of
from kerastrain.export import input_standardizers

logger = logging.getLogger(__name__)

__all__ = ["fuse_activations", "quantize", "strip", "SCHEMES"]

#: What QAT preserves -> the TF-MOT scheme that does it.
SCHEMES = ("sparsity", "clusters", "clusters+sparsity")

#: Layers whose output TF-MOT's int8 scheme fuses with a following ReLU.
_FUSABLE = ("Conv2D", "DepthwiseConv2D", "Dense")


def _is_plain_relu(layer_config: dict[str, Any]) -> bool:
    cls, cfg = layer_config["class_name"], layer_config["config"]
    if cls == "Activation":
        return cfg.get("activation") == "relu"
    if cls == "ReLU":
        return (
            not cfg.get("max_value") and not cfg.get("negative_slope") and not cfg.get("threshold")
        )
    return False


def fuse_activations(
    model: keras.Model, strategy: tf.distribute.Strategy | None = None
) -> keras.Model:
    """Moves each separate ReLU into the Conv2D/Dense layer before it.

    TF-MOT's int8 layout leaves a Conv2D or Dense layer that a separate ReLU
    layer follows without weight quantization (it gives it a no-op config to
    fuse the two), so the prune-preserving scheme lost that layer's sparsity
    (0.8 fell to 0.005 here) and its weights were never fake-quantized. With
    the ReLU inside the layer (`activation="relu"`) and the old ReLU made an
    identity, the model computes the same outputs and every kernel is
    quantization-aware. Only a layer whose sole consumer is the ReLU is
    changed.

    Args:
        model: A functional model.
        strategy: The strategy whose scope owns the new variables.
            Defaults to `None` (the current one).

    Returns:
        A new model with the same weights (or ``model`` when nothing fuses).
    """
    strategy = strategy or tf.distribute.get_strategy()
    config = model.get_config()
    if "layers" not in config or "input_layers" not in config:
        return model  # not functional
    by_name = {layer["name"]: layer for layer in config["layers"]}
    consumers: dict[str, int] = {}
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for inbound in node:
                consumers[inbound[0]] = consumers.get(inbound[0], 0) + 1
    fused = []
    for layer in config["layers"]:
        nodes = layer["inbound_nodes"]
        if not _is_plain_relu(layer) or len(nodes) != 1 or len(nodes[0]) != 1:
            continue
        source = by_name[nodes[0][0][0]]
        if (
            source["class_name"] in _FUSABLE
            and source["config"].get("activation") == "linear"
            and consumers.get(source["name"]) == 1
        ):
            source["config"]["activation"] = "relu"
            old = layer["config"]
            layer["class_name"], layer["config"] = (
                "Activation",
                {
                    "name": old["name"],
                    "trainable": old.get("trainable", True),
                    "dtype": old.get("dtype"),
                    "activation": "linear",
                },
            )
            fused.append(source["name"])
    if not fused:
        return model
    with strategy.scope():
        new = keras.Model.from_config(config)
        for layer in new.layers:
            if layer.weights:
                layer.set_weights(model.get_layer(layer.name).get_weights())
    logger.info(
        "Fused the ReLU that follows %s into the layer for int8 training.", ", ".join(fused)
    )
    return new


def _scheme(preserve: str | None) -> Any:
    combine = tfmot().experimental.combine
    if preserve is None:
        return tfmot().quantization.keras.default_8bit.Default8BitQuantizeScheme()
    if preserve == "sparsity":
        return combine.Default8BitPrunePreserveQuantizeScheme()
    if preserve in ("clusters", "clusters+sparsity"):
        return combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity=preserve == "clusters+sparsity"
        )
    raise config_error("preserve", preserve, "None or " + one_of(SCHEMES), SCHEMES)


class _LayerRegistry:
    """The scheme's quantize registry, made safe to apply layer by layer.

    It refuses the layers kept in float, so that `quantize_apply` leaves
    them alone (the prune- and cluster-preserving registries "support" a
    Normalization layer for having no trainable weights, then fail on it).
    And it gives each layer its own weight quantizer: the preserving
    registries share one per config class, and the cluster-preserving one
    turns sparsity preservation off *on that shared quantizer* as soon as it
    meets a layer without zeros (an unpruned first convolution), so every
    pruned layer after it lost its zeros in QAT (0.9 fell to 0.0 here).
    """

    def __init__(self, inner: Any, float_layers: set[str]):
        self.inner = inner
        self.float_layers = float_layers

    def supports(self, layer: keras.layers.Layer) -> bool:
        return layer.name not in self.float_layers and self.inner.supports(layer)

    def get_quantize_config(self, layer: keras.layers.Layer) -> Any:
        config = self.inner.get_quantize_config(layer)
        if getattr(config, "weight_quantizer", None) is not None:
            config.weight_quantizer = copy.copy(config.weight_quantizer)
        return config


def _keep_float(scheme: Any, float_layers: set[str]) -> Any:
    """``scheme`` (a TF-MOT `QuantizeScheme`) with ``float_layers`` left float."""
    base = tfmot().quantization.keras.QuantizeScheme

    class KeepFloat(base):
        def get_layout_transformer(self) -> Any:
            return scheme.get_layout_transformer()

        def get_quantize_registry(self) -> Any:
            return _LayerRegistry(scheme.get_quantize_registry(), float_layers)

    return KeepFloat()


def quantize(
    model: keras.Model,
    *,
    preserve: str | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[keras.Model, list[str]]:
    """Makes ``model`` quantization-aware; the inverse is `strip`.

    Args:
        model: A trained functional model, stripped of pruning or clustering
            wrappers.
        preserve: `None`, `"sparsity"` (after pruning), `"clusters"` (after
            clustering) or `"clusters+sparsity"` (after both).
            Defaults to `None`.
        strategy: The strategy whose scope owns the new variables.
            Defaults to `None` (the current one).

    Returns:
        The uncompiled QAT model, and the names of the layers left
        unquantized: the input standardization, kept in float, and the
        layers TF-MOT has no config for (no-op config).

    Raises:
        ConfigError: For an unknown `preserve`.
    """
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_configs,
        default_8bit_quantize_registry,
    )

    strategy = strategy or tf.distribute.get_strategy()
    qkeras = tfmot().quantization.keras
    scheme = _scheme(preserve)
    registries = [
        default_8bit_quantize_registry.Default8BitQuantizeRegistry(),
        scheme.get_quantize_registry(),
    ]
    noop = default_8bit_quantize_configs.NoOpQuantizeConfig
    fused = fuse_activations(model, strategy)
    standardizers = input_standardizers(fused)
    unquantized: list[str] = list(standardizers)

    def annotate(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in standardizers:
            return layer
        if all(registry.supports(layer) for registry in registries):
            return qkeras.quantize_annotate_layer(layer)
        unquantized.append(layer.name)
        return qkeras.quantize_annotate_layer(layer, quantize_config=noop())

    # TF-MOT re-creates every layer from its config while applying, so the
    # model's own layer classes (a user's custom layer) must be in scope.
    scope = {type(layer).__name__: type(layer) for layer in fused.layers}
    scope["NoOpQuantizeConfig"] = noop
    with strategy.scope():
        annotated = keras.models.clone_model(fused, clone_function=annotate)
        with qkeras.quantize_scope(scope):
            quantized = qkeras.quantize_apply(annotated, _keep_float(scheme, set(standardizers)))
    if standardizers:
        logger.info(
            "The input standardization (%s) stays in float; int8 starts after it.",
            ", ".join(standardizers),
        )
    noops = [n for n in unquantized if n not in standardizers]
    if noops:
        logger.warning(
            "TF-MOT cannot quantize %s; left unquantized (no-op QuantizeConfig): the "
            "int8 converter calibrates them on training rows instead.",
            ", ".join(f"{n} ({type(fused.get_layer(n)).__name__})" for n in noops),
        )
    logger.info(
        "Quantization-aware model built%s.", f" (preserving {preserve})" if preserve else ""
    )
    return quantized, unquantized


def strip(
    qat_model: keras.Model, float_model: keras.Model, strategy: tf.distribute.Strategy | None = None
) -> keras.Model:
    """The float twin of a QAT model (the inverse of `quantize`).

    TF-MOT has no strip for QAT, and its quantized layers do not reload from
    `.keras`/`.h5` files. The twin is ``float_model``'s architecture with the
    QAT-trained weights: a plain model that reloads anywhere and predicts
    like the QAT model up to the int8 rounding it no longer simulates.

    Args:
        qat_model: The trained quantization-aware model.
        float_model: The model `quantize` was given.
        strategy: The strategy whose scope owns the new variables.
            Defaults to `None` (the current one).

    Returns:
        A new, uncompiled float model.

    Raises:
        CompressionError: When ``float_model`` is not the model that
            ``qat_model`` was made from (a `RuntimeError` too).
    """
    strategy = strategy or tf.distribute.get_strategy()
    twin = fuse_activations(rebuild(float_model, strategy), strategy)
    # The quantize wrapper keeps the inner layer's variables (named
    # `<layer>/<weight>`) but not always in the inner layer's weight list.
    trained = {v.name: v for v in qat_model.weights}
    missing = []
    for variable in twin.weights:
        if variable.name in trained:
            variable.assign(trained[variable.name])
        else:
            missing.append(variable.name)
    if missing:
        raise CompressionError(
            message(
                f"The QAT model has no variables named {missing}, so its float twin cannot be "
                "built",
                allowed="Pass as float_model the model that quantize() was given",
            )
        )
    return twin
