"""How much arithmetic a model does, and how much this device can do.

`forward_flops` counts, from a built model's layer shapes, the multiply-adds
of one forward pass of one example (2 FLOPs each: a multiply and an add);
`training_flops` is three times that. `matmul_peak_flops` measures the
matrix-product throughput of the device this process runs on, so that an
achieved training rate (`training_flops(model) * examples_per_second`) can be
read as a fraction of what the hardware does on its best-suited work.

Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> forward_flops(model)   # 4 * 3 multiply-adds
    24
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterable
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, config_error, message, one_of

logger = logging.getLogger(__name__)

__all__ = [
    "forward_flops",
    "training_flops",
    "matmul_peak_flops",
    "layer_flops",
    "layer_calls",
    "attention_flops",
    "flops_per_token",
    "TRAINING_MULTIPLIER",
    "PEAK_DTYPES",
]

#: A training step is the forward pass plus, for every matrix product
#: ``y = x @ w``, two backward products of the same size: ``dx = dy @ w.T``
#: and ``dw = x.T @ dy``. So 3x the forward FLOPs (the first layer's ``dx``,
#: which is not needed, is counted too, as is customary).
TRAINING_MULTIPLIER = 3

#: The dtypes `matmul_peak_flops` measures.
PEAK_DTYPES = ("float32", "bfloat16", "float16", "float64")

#: Layers whose arithmetic is real matrix products but that are not counted
#: (counted as 0: `forward_flops` under-counts models that use them).
_UNCOUNTED_MATMUL_LAYERS = (
    "RNN",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "Bidirectional",
    "Attention",
    "AdditiveAttention",
    "EinsumDense",
    "ConvLSTM1D",
    "ConvLSTM2D",
    "ConvLSTM3D",
)


def _dims(shape: Any) -> tuple:
    """A shape (TensorShape, tuple or a one-element list of them) as a tuple."""
    if isinstance(shape, list) and len(shape) == 1:
        shape = shape[0]
    return tuple(tf.TensorShape(shape).as_list())


def _known_prod(values: Iterable[Any], layer: Any) -> int:
    values = list(values)
    if any(v is None for v in values):
        raise ConfigError(
            message(
                f"forward_flops needs static shapes; layer {layer.name!r} "
                f"({type(layer).__name__}) has an unknown dimension in {values}",
                allowed="Build the model on inputs of a fixed size",
            )
        )
    return math.prod(values)


def _spatial(layer: Any, shape: tuple) -> tuple:
    """The spatial axes of a convolution's input or output shape."""
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    return shape[2:] if channels_first else shape[1:-1]


def layer_flops(layer: Any, input_shape: Any, output_shape: Any) -> int:
    """Forward FLOPs of one call of a single (not nested) layer, per example.

    Dense: ``2 * in * out`` per position of the other non-batch axes.
    Convolutions (1D/2D/3D, grouped): ``2 * prod(kernel) * cin / groups *
    cout`` per output position. Depthwise: ``2 * prod(kernel) * cin *
    multiplier`` per output position; separable adds its pointwise
    ``2 * cin * multiplier * cout``. Transposed convolutions: ``2 *
    prod(kernel) * cin * cout`` per *input* position (each input pixel is
    scattered over a kernel-sized patch of every output channel). Biases,
    activations and every other layer count 0.

    Args:
        layer: A built tf_keras layer.
        input_shape: The shape it was called on, batch axis first.
        output_shape: The shape it returned, batch axis first.

    Returns:
        FLOPs (2 per multiply-add) for one example.
    """
    layers = keras.layers
    if isinstance(layer, layers.MultiHeadAttention):
        out = _dims(output_shape)
        length = _known_prod(out[1:-1], layer)
        return attention_flops(layer, length, length)
    if isinstance(layer, layers.TimeDistributed):
        inner_in = _dims(input_shape)
        inner_out = _dims(output_shape)
        steps = _known_prod([inner_in[1]], layer)
        return steps * _call_flops(layer.layer, (None, *inner_in[2:]), (None, *inner_out[2:]))
    if isinstance(layer, layers.Dense):
        out = _dims(output_shape)
        return 2 * math.prod(layer.kernel.shape) * _known_prod(out[1:-1], layer)
    if isinstance(layer, (layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose)):
        return (
            2
            * math.prod(layer.kernel.shape)
            * _known_prod(_spatial(layer, _dims(input_shape)), layer)
        )
    if isinstance(layer, (layers.DepthwiseConv1D, layers.DepthwiseConv2D)):
        return (
            2
            * math.prod(layer.depthwise_kernel.shape)
            * _known_prod(_spatial(layer, _dims(output_shape)), layer)
        )
    if isinstance(layer, (layers.SeparableConv1D, layers.SeparableConv2D)):
        per_position = math.prod(layer.depthwise_kernel.shape) + math.prod(
            layer.pointwise_kernel.shape
        )
        return 2 * per_position * _known_prod(_spatial(layer, _dims(output_shape)), layer)
    if isinstance(layer, (layers.Conv1D, layers.Conv2D, layers.Conv3D)):
        # The kernel is (*kernel_size, cin / groups, cout).
        return (
            2
            * math.prod(layer.kernel.shape)
            * _known_prod(_spatial(layer, _dims(output_shape)), layer)
        )
    # Notes for whoever reads the count, not for the user training: DEBUG.
    if type(layer).__name__ in _UNCOUNTED_MATMUL_LAYERS:
        logger.debug(
            "forward_flops counts layer %r (%s) as 0 FLOPs: its matrix products "
            "are not modelled, so the total is an under-count.",
            layer.name,
            type(layer).__name__,
        )
    elif getattr(layer, "_self_tracked_trackables", None) and any(
        isinstance(sub, keras.layers.Layer) for sub in layer._self_tracked_trackables
    ):
        logger.debug(
            "forward_flops counts custom layer %r (%s) as 0 FLOPs: the shapes its "
            "sub-layers are called on are not recorded. Build it as a functional "
            "model to have them counted.",
            layer.name,
            type(layer).__name__,
        )
    return 0


def attention_flops(layer: Any, query_length: int, key_length: int) -> int:
    """Forward FLOPs of a built `MultiHeadAttention` for one example.

    The four projections (``2 * length * prod(kernel)`` each: query and
    output over the query positions, key and value over the key positions),
    the scores ``Q K^T`` (``2 * Lq * Lk * heads * key_dim``) and the weighted
    sum of values (``2 * Lq * Lk * heads * value_dim``). The softmax and
    biases count 0, as elsewhere.

    Args:
        layer: A built `MultiHeadAttention`.
        query_length: Query positions.
        key_length: Key (and value) positions.

    Returns:
        FLOPs (2 per multiply-add) for one example.
    """
    query = math.prod(layer._query_dense.kernel.shape)
    key = math.prod(layer._key_dense.kernel.shape)
    value = math.prod(layer._value_dense.kernel.shape)
    output = math.prod(layer._output_dense.kernel.shape)
    heads, key_dim = layer._num_heads, layer._key_dim
    value_dim = layer._value_dim or key_dim
    projections = query_length * (query + output) + key_length * (key + value)
    mixing = query_length * key_length * heads * (key_dim + value_dim)
    return 2 * (projections + mixing)


def _with_length(shape: Any, length: int) -> Any:
    """``shape`` with an unknown sequence axis (axis 1 of a 3-D shape) set to ``length``."""
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return type(shape)(_with_length(s, length) for s in shape)
    try:
        dims = _dims(shape)
    except (TypeError, ValueError):  # a structure no layer's count reads
        return shape
    if len(dims) == 3 and dims[1] is None:
        return (dims[0], length, dims[2])
    return dims


def flops_per_token(model: keras.Model, length: int | None = None) -> float | None:
    """Forward FLOPs per token of a sequence model at ``length`` tokens.

    Every layer is counted as `forward_flops` counts it, with an unknown
    sequence axis set to ``length`` (attention then costs ``length``
    squared), and the total divided by ``length``: what one token of a
    ``length``-token row costs, the head's per-row work spread over its
    tokens.

    Args:
        model: A built functional model.
        length: Tokens per row. Defaults to `None`: the largest
            ``max_length`` of the model's layers (kerastrain's `transformer`
            keeps one in its embeddings).

    Returns:
        FLOPs per token, or None when the model has no sequence length.
    """
    if length is None:
        lengths = [getattr(layer, "max_length", None) for layer in model.layers]
        length = max((n for n in lengths if isinstance(n, int)), default=None)
    if not length:
        return None
    total = 0
    for node in layer_calls(model):
        total += _call_flops(
            node.layer,
            _with_length(node.input_shapes, length),
            _with_length(node.output_shapes, length),
        )
    return total / length


def _call_flops(layer: Any, input_shape: Any, output_shape: Any) -> int:
    if isinstance(layer, keras.Model):
        return forward_flops(layer)
    return layer_flops(layer, input_shape, output_shape)


def layer_calls(model: keras.Model) -> list:
    """The calls (nodes) of a functional or Sequential model, inputs
    excluded, in topological order: each has `layer`, `input_shapes`,
    `output_shapes` and `outputs` (the memory plan walks them too).

    Raises:
        ConfigError: For a subclassed or unbuilt model.
    """
    by_depth = getattr(model, "_nodes_by_depth", None)
    if not getattr(model, "_is_graph_network", False) or not by_depth:
        raise ConfigError(
            message(
                f"forward_flops needs a built functional or Sequential model; {model.name!r} "
                f"({type(model).__name__}) is subclassed or not built, so the shapes its "
                "layers are called on are unknown",
                allowed="Build it on a keras.Input first",
            )
        )
    return [
        node
        for depth in sorted(by_depth, reverse=True)
        for node in by_depth[depth]
        if not node.is_input
    ]


def forward_flops(model: keras.Model) -> int:
    """FLOPs of one forward pass of one example through ``model``.

    Counted analytically from the layers' shapes, 2 per multiply-add, for
    every layer call (a shared layer counts once per call), recursing into
    nested functional and Sequential models: `Dense`, `Conv1D/2D/3D`
    (including grouped), `DepthwiseConv1D/2D`, `SeparableConv1D/2D`,
    `Conv1D/2D/3DTranspose`, and those wrapped in `TimeDistributed`; see
    `layer_flops` for each formula.

    Every other layer counts 0. Activations, pooling, normalization,
    dropout, reshapes, additions and embeddings do a few operations per value
    they touch and are bound by memory traffic, not arithmetic, so leaving
    them out is the usual convention for a model's FLOPs; biases are left out
    too. Recurrent, attention and `EinsumDense` layers *are* matrix products
    but are not modelled: they count 0 with a logged warning, as do custom
    layers whose sub-layers cannot be seen.

    Args:
        model: A built functional or Sequential tf_keras model with fixed
            non-batch input dimensions.

    Returns:
        FLOPs per example (an int).

    Raises:
        ConfigError: For a subclassed or unbuilt model, or a layer whose
            shapes are not static (a `ValueError` too).
    """
    total = 0
    for node in layer_calls(model):
        total += _call_flops(node.layer, node.input_shapes, node.output_shapes)
    return total


def training_flops(model: keras.Model) -> int:
    """FLOPs of one training step of one example: `TRAINING_MULTIPLIER`
    (3) times `forward_flops` (the forward product and, in the backward pass,
    one product for the input gradient and one for the weight gradient).
    The optimizer's update (a few operations per weight, per batch) is not
    counted."""
    return TRAINING_MULTIPLIER * forward_flops(model)


def _chained_matmuls() -> Any:
    """`n` dependent matrix products in one graph call, reduced to a scalar,
    so that nothing is pruned or merged and the host waits for all of them."""

    def run(x: tf.Tensor, w: tf.Tensor, n: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return i + 1, tf.linalg.matmul(y, w)

        y = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), x))[1]
        return tf.reduce_sum(tf.cast(y[:1], tf.float32))

    return tf.function(run, reduce_retracing=True)


def matmul_peak_flops(
    dtype: str = "float32",
    size: int = 2048,
    repeats: int = 5,
    *,
    min_seconds: float = 0.2,
    max_products: int = 1000,
) -> float:
    """The measured matrix-product throughput of this device, in FLOP/s.

    Multiplies square ``size x size`` matrices of ``dtype`` with
    `tf.linalg.matmul` on the default device (a GPU when TensorFlow sees
    one): one untimed call to trace and warm up, then ``repeats`` timed
    calls, each a chain of enough dependent products to last about
    ``min_seconds``, so that the cost of calling into the graph does not
    count. A product counts ``2 * size**3`` FLOPs.

    This is a *measurement* of what the installed TensorFlow kernels achieve
    here, now (on a shared machine, under whatever else runs), not the
    spec-sheet figure of the chip; it is the practical ceiling against which
    a model's achieved FLOP/s is fair to compare. Small sizes under-state the
    peak of a large accelerator (use 8192 on a datacenter GPU).

    Args:
        dtype: `"float32"`, `"bfloat16"`, `"float16"` or `"float64"`.
            Defaults to `"float32"`.
        size: Rows and columns of the matrices. Defaults to `2048`.
        repeats: Timed calls; the median is returned. Defaults to `5`.
        min_seconds: Aim for timed calls at least this long. Defaults to
            `0.2`.
        max_products: At most this many products per call. Defaults to
            `1000`.

    Returns:
        The median FLOP/s over the timed calls.

    Raises:
        ConfigError: For a dtype not in `PEAK_DTYPES` or a non-positive
            size or repeats.

    Example:
        >>> matmul_peak_flops("bfloat16", size=1024) / 1e9  # GFLOP/s
    """
    if dtype not in PEAK_DTYPES:
        raise config_error("dtype", dtype, one_of(PEAK_DTYPES), PEAK_DTYPES)
    for name, value in (("size", size), ("repeats", repeats), ("max_products", max_products)):
        if not isinstance(value, int) or value < 1:
            raise config_error(name, value, "a positive integer")
    # Entries of variance 1/size keep the chained product's scale steady,
    # far from overflow (float16) and from denormals.
    x = tf.cast(tf.random.normal((size, size), seed=1), dtype)
    w = tf.cast(tf.random.normal((size, size), stddev=size**-0.5, seed=2), dtype)
    run = _chained_matmuls()

    def timed(n: int) -> float:
        start = time.perf_counter()
        run(x, w, tf.constant(n)).numpy()
        return time.perf_counter() - start

    timed(1)  # trace, allocate, warm up the kernels
    one = timed(1)
    n = int(min(max(math.ceil(min_seconds / max(one, 1e-9)), 1), max_products))
    seconds = [timed(n) for _ in range(repeats)]
    flops = 2 * size**3 * n / statistics.median(seconds)
    logger.info(
        "matmul peak (%s, %dx%d, %d products per call): %.1f GFLOP/s",
        dtype,
        size,
        size,
        n,
        flops / 1e9,
    )
    return flops
