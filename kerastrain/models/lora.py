"""LoRA: low-rank adapters on a frozen Transformer, merged away at export.

tf_keras has no ``enable_lora``; kerastrain's adapters are layers of their
own, registered with tf_keras under the package ``kerastrain`` (so that a
`.keras` file of an adapted model reloads, and `float32_twin` can rebuild
one from its config):

- `LoraDense`: a `Dense` whose kernel and bias are frozen, plus trainable
  ``A`` (``in x rank``, He-uniform) and ``B`` (``rank x units``, zeros);
- `LoraEinsumDense`: the same for an `EinsumDense` (the projections inside
  `MultiHeadAttention`), its kernel read as an ``in x out`` matrix (the
  kernel axes the equation contracts against the input, then the others);
- `LoraMultiHeadAttention`: a `MultiHeadAttention` whose query, key, value
  and output projections (``targets``) are `LoraEinsumDense`; the others
  are frozen.

Each computes with the kernel ``W + (alpha / rank) * A @ B`` (reshaped to
the kernel's axes): at the start ``B`` is zero, so the adapted model answers
exactly as the backbone does. `merge_lora` folds the adapters into the
kernels and returns a plain model (`Dense`, `MultiHeadAttention`) with the
same answers: what kerastrain exports.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.errors import config_error

logger = logging.getLogger(__name__)

__all__ = [
    "LoraDense",
    "LoraEinsumDense",
    "LoraMultiHeadAttention",
    "ATTENTION_TARGETS",
    "is_adapter",
    "adapter_layers",
    "lora_parameters",
    "merge_lora",
    "check_lora",
]

_register = keras.utils.register_keras_serializable(package="kerastrain")

#: LoRA target name -> the `MultiHeadAttention` attribute of that projection.
ATTENTION_TARGETS = {
    "query": "_query_dense",
    "key": "_key_dense",
    "value": "_value_dense",
    "attention_output": "_output_dense",
}
#: The config keys the adapter layers add to their plain layer's.
_LORA_KEYS = ("lora_rank", "lora_alpha", "lora_targets")


def check_lora(rank: Any, alpha: Any) -> tuple[int, float]:
    """``rank`` and ``alpha`` checked: a positive integer and a positive number.

    Raises:
        ConfigError: Naming `model_options.lora.rank` or `.alpha`.
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise config_error("model_options.lora.rank", rank, "a positive integer")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise config_error("model_options.lora.alpha", alpha, "a positive number")
    return int(rank), float(alpha)


class _Adapter:
    """What `LoraDense` and `LoraEinsumDense` share: a frozen kernel and
    bias, the factors ``A`` and ``B``, and the merged kernel."""

    lora_rank: int
    lora_alpha: float

    def add_weight(self, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        # The base layer's build creates the kernel and bias: frozen here.
        if name in ("kernel", "bias"):
            kwargs["trainable"] = False
        return super().add_weight(name, *args, **kwargs)  # type: ignore[misc]

    def _in_axes(self, kernel_rank: int) -> list[int]:
        return [0]

    def _add_factors(self) -> None:
        shape = [int(d) for d in self.kernel.shape]
        axes = self._in_axes(len(shape))
        inner = math.prod(shape[a] for a in axes)
        outer = math.prod(shape) // inner
        self.lora_a = super().add_weight(  # type: ignore[misc]
            "lora_a",
            shape=(inner, self.lora_rank),
            initializer=keras.initializers.HeUniform(),
            dtype=self.dtype,
            trainable=True,
        )
        self.lora_b = super().add_weight(  # type: ignore[misc]
            "lora_b",
            shape=(self.lora_rank, outer),
            initializer="zeros",
            dtype=self.dtype,
            trainable=True,
        )

    @property
    def scale(self) -> float:
        """``alpha / rank``, the factor of ``A @ B``."""
        return self.lora_alpha / self.lora_rank

    def merged_kernel(self, a: Any = None, b: Any = None, kernel: Any = None) -> Any:
        """``W + scale * A @ B`` in the kernel's shape (the variables, or the
        given arrays/tensors)."""
        kernel = self.kernel if kernel is None else kernel
        a = self.lora_a if a is None else a
        b = self.lora_b if b is None else b
        shape = [int(d) for d in self.kernel.shape]
        axes = self._in_axes(len(shape))
        rest = [i for i in range(len(shape)) if i not in axes]
        order = axes + rest
        delta = tf.reshape(tf.matmul(a, b), [shape[i] for i in order])
        if order != sorted(order):
            delta = tf.transpose(delta, np.argsort(order).tolist())
        return kernel + tf.cast(self.scale, delta.dtype) * delta

    def merged_weights(self) -> list[np.ndarray]:
        """The plain layer's weights: the merged kernel, then the bias (if any)."""
        kernel = self.merged_kernel(
            self.lora_a.numpy(), self.lora_b.numpy(), self.kernel.numpy()
        ).numpy()
        return [kernel] + ([self.bias.numpy()] if self.bias is not None else [])


@_register
class LoraDense(_Adapter, keras.layers.Dense):
    """A `Dense` layer with a frozen kernel and bias and a trainable
    low-rank update (see the module's docstring).

    Args:
        units: Output width.
        lora_rank: The rank of ``A @ B``.
        lora_alpha: ``A @ B`` is scaled by ``lora_alpha / lora_rank``.
        **kwargs: `Dense`'s other arguments.
    """

    def __init__(self, units: int, lora_rank: int = 8, lora_alpha: float = 16.0, **kwargs: Any):
        super().__init__(units, **kwargs)
        self.lora_rank, self.lora_alpha = check_lora(lora_rank, lora_alpha)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._add_factors()

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        if inputs.dtype.base_dtype != self._compute_dtype_object.base_dtype:
            inputs = tf.cast(inputs, self._compute_dtype_object)
        kernel = self.merged_kernel()
        outputs = tf.tensordot(inputs, kernel, [[inputs.shape.rank - 1], [0]])
        if self.bias is not None:
            outputs = outputs + self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha}


@_register
class LoraEinsumDense(_Adapter, keras.layers.EinsumDense):
    """An `EinsumDense` layer with a frozen kernel and bias and a trainable
    low-rank update; the kernel is read as a matrix from the axes the
    equation contracts with the input to the others.

    Args:
        equation: The einsum equation, as `EinsumDense` takes it.
        output_shape: As `EinsumDense` takes it.
        lora_rank: The rank of ``A @ B``.
        lora_alpha: ``A @ B`` is scaled by ``lora_alpha / lora_rank``.
        **kwargs: `EinsumDense`'s other arguments.
    """

    def __init__(
        self,
        equation: str,
        output_shape: Any,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        **kwargs: Any,
    ):
        super().__init__(equation, output_shape, **kwargs)
        self.lora_rank, self.lora_alpha = check_lora(lora_rank, lora_alpha)

    def _in_axes(self, kernel_rank: int) -> list[int]:
        inputs, rest = self.equation.split(",")
        kernel = rest.split("->")[0]
        return [i for i, letter in enumerate(kernel) if letter in inputs]

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self._add_factors()

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        outputs = tf.einsum(self.equation, inputs, self.merged_kernel())
        if self.bias is not None:
            outputs += self.bias
        return self.activation(outputs) if self.activation is not None else outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha}


@_register
class LoraMultiHeadAttention(keras.layers.MultiHeadAttention):
    """`MultiHeadAttention` whose projections named in ``lora_targets``
    carry low-rank adapters (`LoraEinsumDense`); every projection's own
    kernel and bias are frozen.

    Args:
        num_heads: As `MultiHeadAttention` takes it.
        key_dim: As `MultiHeadAttention` takes it.
        lora_rank: The rank of each adapter.
        lora_alpha: Each update is scaled by ``lora_alpha / lora_rank``.
        lora_targets: Among `"query"`, `"key"`, `"value"`,
            `"attention_output"`. Defaults to all four.
        **kwargs: `MultiHeadAttention`'s other arguments.
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: Sequence[str] = tuple(ATTENTION_TARGETS),
        **kwargs: Any,
    ):
        super().__init__(num_heads, key_dim, **kwargs)
        self.lora_rank, self.lora_alpha = check_lora(lora_rank, lora_alpha)
        self.lora_targets = [t for t in ATTENTION_TARGETS if t in lora_targets]

    def _build_from_signature(self, query: Any, value: Any, key: Any = None) -> None:
        super()._build_from_signature(query, value, key)
        for target, attribute in ATTENTION_TARGETS.items():
            plain = getattr(self, attribute)
            if target not in self.lora_targets:
                plain.trainable = False
                continue
            config = {
                **plain.get_config(),
                "lora_rank": self.lora_rank,
                "lora_alpha": self.lora_alpha,
            }
            setattr(self, attribute, LoraEinsumDense.from_config(config))

    def merged_weights(self) -> dict[str, list[np.ndarray]]:
        """Each projection's plain weights (adapters merged), by attribute."""
        out = {}
        for attribute in ATTENTION_TARGETS.values():
            layer = getattr(self, attribute)
            out[attribute] = (
                layer.merged_weights() if isinstance(layer, _Adapter) else layer.get_weights()
            )
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": list(self.lora_targets),
        }


def is_adapter(layer: Any) -> bool:
    """Whether ``layer`` is one of the adapter layers of this module."""
    return isinstance(layer, (_Adapter, LoraMultiHeadAttention))


def _walk(model: keras.Model) -> Iterator[keras.layers.Layer]:
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def adapter_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The adapter layers of ``model`` (nested models searched too)."""
    return [layer for layer in _walk(model) if is_adapter(layer)]


def lora_parameters(model: keras.Model) -> int:
    """How many parameters the adapters of ``model`` hold (``A`` and ``B``)."""
    return sum(
        int(np.prod(w.shape))
        for layer in adapter_layers(model)
        for w in layer.weights
        if "lora_" in w.name
    )


_PLAIN = {
    "LoraDense": "Dense",
    "LoraEinsumDense": "EinsumDense",
    "LoraMultiHeadAttention": "MultiHeadAttention",
}


def _plain_config(config: Any) -> Any:
    """A model config with every adapter layer turned into its plain layer."""
    if isinstance(config, list):
        return [_plain_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {key: _plain_config(value) for key, value in config.items()}
    kind = str(out.get("class_name", "")).split(">")[-1]
    if kind in _PLAIN and isinstance(out.get("config"), dict):
        out["class_name"] = _PLAIN[kind]
        out["config"] = {k: v for k, v in out["config"].items() if k not in _LORA_KEYS}
        out.pop("registered_name", None)
        out.pop("module", None)
    return out


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    for layer in source.layers:
        twin = target.get_layer(layer.name)
        if isinstance(layer, keras.Model):
            _copy_weights(layer, twin)
        elif isinstance(layer, LoraMultiHeadAttention):
            for attribute, weights in layer.merged_weights().items():
                getattr(twin, attribute).set_weights(weights)
        elif isinstance(layer, _Adapter):
            twin.set_weights(layer.merged_weights())
        else:
            twin.set_weights(layer.get_weights())


def merge_lora(model: keras.Model) -> keras.Model:
    """A plain copy of ``model`` with every adapter merged into its kernel.

    ``W + (alpha / rank) * A @ B`` becomes the kernel of a `Dense`,
    `EinsumDense` or `MultiHeadAttention` layer of the same name: the copy
    has no adapter layer or variable and answers as ``model`` does (to
    float rounding). Built in ``model``'s strategy scope, compiled like it
    when it is compiled, with kerastrain's notes (``_kerastrain*``
    attributes) and every layer's ``trainable`` flag. A model without
    adapters is returned as is.

    Args:
        model: A functional model, possibly with adapter layers.

    Returns:
        The plain model (or ``model`` itself).
    """
    adapters = adapter_layers(model)
    if not adapters:
        return model
    config = _plain_config(model.get_config())
    with model.distribute_strategy.scope():
        plain = model.__class__.from_config(config)
        _copy_weights(model, plain)
    for layer in model.layers:
        if not is_adapter(layer):
            plain.get_layer(layer.name).trainable = layer.trainable
    for key, value in vars(model).items():
        if key.startswith("_kerastrain"):
            setattr(plain, key, value)
    if getattr(model, "optimizer", None) is not None:
        compiled = model.get_compile_config()
        if compiled:
            with model.distribute_strategy.scope():
                plain.compile_from_config(compiled)
    logger.info(
        "LoRA: %d adapter layers merged into their kernels (%s adapter parameters); the "
        "exported model is plain (%s parameters).",
        len(adapters),
        f"{lora_parameters(model):,}",
        f"{plain.count_params():,}",
    )
    return plain
