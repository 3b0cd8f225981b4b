"""Channel pruning: remove whole Dense units and convolution filters, and
rebuild a smaller dense model from the survivors.

Magnitude pruning leaves a model of the same shape whose zeros are stored
and multiplied like any other weight; removing units makes the file smaller
and every example cheaper without special kernels.

How a cut is decided (`plan_channels`) and made (`cut_channels`):

1. The graph is walked in order, giving every channel (the last axis of every
   tensor) the identity of the unit that produced it. A Dense or Conv layer
   creates new units; BatchNormalization, activations, dropout, pooling,
   padding and Flatten pass them through (Flatten repeats them once per
   position); Concatenate joins them; Add, Subtract, Multiply, Average,
   Maximum and Minimum *tie* the channels they combine, so that both
   branches of a residual block keep the same channels.
2. Channels that must not change are fixed, each with its reason: the model
   inputs and what their preprocessing makes (never cut), every model output
   (so the output layer is never cut), the layers the selection skips, and
   the inputs of any layer that cannot be followed (an unknown type, one that
   mixes its channels like LayerNormalization or softmax, a shared layer,
   channels not on the last axis). A fixed channel fixes everything tied to
   it. The cut stops there; it never guesses.
3. Each unit is scored (`criterion`): the L1 (or L2) norm of its kernel
   slice, times ``|gamma| / sqrt(variance + epsilon)`` of a
   BatchNormalization that directly follows it (the scale its output really
   has; network slimming's criterion folded into the weight norm). Tied
   units are scored together, each layer's scores divided by their mean so
   that no layer dominates. Within each group of tied layers, the lowest
   ``floor(ratio * n)`` are removed (at least one unit is kept).
4. The smaller model is cloned from the original with fewer units, and every
   weight is sliced: the kernel's outputs and inputs, biases, BatchNorm's
   gamma, beta and moving statistics. The next layer simply no longer sees
   the removed channels.

The smaller model answers exactly like the original with the removed
channels' contributions zeroed where they are consumed (`zero_channels`):
the tests hold the two to float tolerance.

Example:
    >>> plan = plan_channels(model, PruneConfig(structure="channels"))  # doctest: +SKIP
    >>> smaller = cut_channels(model, plan)  # doctest: +SKIP
    >>> plan.units  # doctest: +SKIP
    {'conv_1': (64, 32), 'dense': (64, 32)}
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.compress.common import select_layers
from kerastrain.config.compress import PruneConfig

logger = logging.getLogger(__name__)

__all__ = [
    "ChannelPlan",
    "plan_channels",
    "cut_channels",
    "zero_channels",
    "cut_schedule",
    "units_by_layer",
    "PRODUCERS",
]

L = keras.layers

#: Layers whose output units can be removed (their kernel's last axis).
PRODUCERS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
#: Transposed, depthwise and separable convolutions subclass these but lay
#: out their kernels differently: never treated as producers.
_NOT_PRODUCERS = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose, L.SeparableConv1D,
                  L.SeparableConv2D, L.DepthwiseConv1D, L.DepthwiseConv2D)  # fmt: skip
#: Layers that act on each channel alone, without weights: channels pass through.
_PASS = (
    L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.ThresholdedReLU,
    L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.SpatialDropout3D,
    L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D,
    L.Cropping1D, L.Cropping2D, L.Cropping3D,
    L.UpSampling1D, L.UpSampling2D, L.UpSampling3D,
)  # fmt: skip
#: Merges that combine channel i of every input into channel i: they tie them.
_TIE = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
#: Activations that mix the channels (a removed one changes the others).
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")
#: Why some known layers cannot be cut through.
_WHY_NOT = {
    L.LayerNormalization: "it normalizes across the channels, so removing one changes the others",
    L.Softmax: "it normalizes across the channels, so removing one changes the others",
    L.Reshape: "it rearranges the channels",
    L.Permute: "it moves the channel axis",
    L.Normalization: "it is the input preprocessing, which is never cut",
}


@dataclasses.dataclass
class ChannelPlan:
    """Which channels a cut removes, per layer.

    Attributes:
        in_masks: Layer -> one boolean mask per input: which channels of
            that input survive.
        out_masks: Layer -> boolean mask of its output's surviving channels
            (first output only; layers with several outputs are fixed).
        units: Producer (Dense/Conv) layer -> (units before, units after),
            for every producer.
        kept: Producer layer -> why none of its units can be removed (the
            output, a skipped layer, a layer the cut cannot follow, a tie to
            such a layer).
        groups: Layers tied together (by Add and friends) -> the number of
            unit sets the group has before the cut: the size the ratio is
            taken of.
        ratio: The share of each group's units removed.
    """

    in_masks: dict[str, list[np.ndarray]]
    out_masks: dict[str, np.ndarray]
    units: dict[str, tuple[int, int]]
    kept: dict[str, str]
    groups: dict[tuple[str, ...], int]
    ratio: float

    @property
    def cut(self) -> dict[str, tuple[int, int]]:
        """The producers that lose units: layer -> (before, after)."""
        return {k: v for k, v in self.units.items() if v[1] < v[0]}

    def describe(self) -> str:
        return ", ".join(f"{k} {a}->{b}" for k, (a, b) in self.cut.items()) or "nothing cut"


class _Ties:
    """Union-find over channel ids; a set is fixed (kept whole) with a reason."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.reason: dict[int, str] = {}
        self.owner: dict[int, tuple[str, int]] = {}  # id -> (producer, unit)

    def new(self, count: int, owner: str | None = None, reason: str | None = None) -> np.ndarray:
        start = len(self.parent)
        ids = np.arange(start, start + count)
        self.parent.extend(ids.tolist())
        for i, node in enumerate(ids):
            if owner is not None:
                self.owner[int(node)] = (owner, i)
            if reason is not None:
                self.reason[int(node)] = reason
        return ids

    def find(self, node: int) -> int:
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        if ra in self.reason and rb not in self.reason:
            ra, rb = rb, ra
        self.parent[ra] = rb  # a fixed root stays the root, with its reason

    def fix(self, nodes: Iterable[int], reason: str) -> None:
        for node in nodes:
            root = self.find(int(node))
            self.reason.setdefault(root, reason)

    def fixed(self, node: int) -> str | None:
        return self.reason.get(self.find(int(node)))


def _channels_last(layer: keras.layers.Layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _is_producer(layer: keras.layers.Layer) -> bool:
    return (
        isinstance(layer, PRODUCERS)
        and not isinstance(layer, _NOT_PRODUCERS)
        and _channels_last(layer)
        and getattr(layer, "groups", 1) == 1
    )


def _last_axis(layer: keras.layers.Layer, axis: Any, rank: int) -> bool:
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    return len(axes) == 1 and axes[0] % rank == rank - 1


def _obstacle(layer: keras.layers.Layer, inputs: Sequence[Any]) -> str | None:
    """Why ``layer`` cannot pass, tie or join its inputs' channels; None
    when it can. Producers and BatchNormalization are judged here too."""
    kind = type(layer).__name__
    for cls, why in _WHY_NOT.items():
        if type(layer) is cls:
            return why
    if isinstance(layer, L.BatchNormalization):
        rank = len(inputs[0].shape)
        return None if _last_axis(layer, layer.axis, rank) else "it normalizes another axis"
    if _is_producer(layer):
        return None
    if isinstance(layer, PRODUCERS):
        return f"a {kind} with groups or channels first, whose kernel layout is not followed"
    if isinstance(layer, L.Activation) and layer.get_config()["activation"] in _MIXING_ACTIVATIONS:
        return "its activation mixes the channels"
    if isinstance(layer, _PASS):
        return None if _channels_last(layer) else "its channels are not on the last axis"
    if isinstance(layer, L.Flatten):
        return None if _channels_last(layer) else "its channels are not on the last axis"
    if isinstance(layer, _TIE):
        shapes = {tuple(t.shape[1:]) for t in inputs}
        return None if len(shapes) == 1 else "it broadcasts inputs of different shapes"
    if isinstance(layer, L.Concatenate):
        return None if layer.axis % len(inputs[0].shape) == len(inputs[0].shape) - 1 else (
            "it joins along another axis than the channels"
        )  # fmt: skip
    if isinstance(layer, L.InputLayer):
        return "model input"
    return f"kerastrain cannot follow channels through a {kind} layer"


def _nodes(model: keras.Model) -> list[Any]:
    """The model's nodes (layer calls), inputs first."""
    return [
        node for depth in sorted(model._nodes_by_depth, reverse=True)
        for node in model._nodes_by_depth[depth]
    ]  # fmt: skip


def _selected(model: keras.Model, config: PruneConfig) -> dict[str, str]:
    """Producer -> why it is not selected (absent when it is); the selection
    is `select_layers`', with its errors."""
    chosen = select_layers(model, config, _is_producer, "compress.prune", "cut into channels")
    skipped = {}
    for layer in model.layers:
        name = layer.name
        if not _is_producer(layer) or name in chosen and name not in model.output_names:
            continue
        if name in model.output_names:
            skipped[name] = "the output layer is never cut"
        elif config.layers is not None:
            skipped[name] = "not named in compress.prune.layers"
        elif name in config.skip:
            skipped[name] = "named in compress.prune.skip"
        else:
            skipped[name] = "the first convolution (compress.prune.skip_first_conv)"
    return skipped


def _unit_scores(layer: keras.layers.Layer, criterion: str) -> np.ndarray:
    kernel = layer.kernel.numpy()
    flat = np.abs(kernel.reshape(-1, kernel.shape[-1]))
    return flat.sum(0) if criterion == "l1" else np.sqrt(np.square(flat).sum(0))


def _bn_scale(layer: keras.layers.BatchNormalization) -> np.ndarray:
    weights = {w.name.rpartition("/")[2].split(":")[0]: w.numpy() for w in layer.weights}
    gamma = weights.get("gamma", np.ones_like(weights["moving_variance"]))
    return np.abs(gamma) / np.sqrt(weights["moving_variance"] + layer.epsilon)


def plan_channels(
    model: keras.Model,
    config: PruneConfig,
    ratio: float | None = None,
    group_sizes: Mapping[tuple[str, ...], int] | None = None,
) -> ChannelPlan:
    """Decides which units a cut removes (nothing is changed).

    Args:
        model: A functional (or Sequential) tf_keras model.
        config: `criterion`, `target_ratio` and the layer selection
            (`layers`, `skip`, `skip_first_conv`; the output is never cut).
        ratio: The share of each group's units to remove. Defaults to
            `None`: `config.target_ratio`.
        group_sizes: Each group's size in the model the ratio refers to
            (from the first cut's plan, when cutting in steps). Defaults to
            `None`: this model's.

    Returns:
        The plan: masks per layer, units per producer, and the producers
        kept whole with the reason.

    Raises:
        ConfigError: For a layer selection naming unknown layers or layers
            that are not Dense/Conv.
    """
    ratio = config.target_ratio if ratio is None else ratio
    skipped = _selected(model, config)
    ties = _Ties()
    ids: dict[int, np.ndarray] = {}  # id(keras tensor) -> channel ids
    inputs_of: dict[str, list[np.ndarray]] = {}
    output_of: dict[str, np.ndarray] = {}
    bn_after: dict[str, np.ndarray] = {}
    calls: dict[str, int] = {}
    for node in _nodes(model):
        calls[node.layer.name] = calls.get(node.layer.name, 0) + 1
    for node in _nodes(model):
        layer = node.layer
        name = layer.name
        kind = type(layer).__name__
        inputs = tf.nest.flatten(node.keras_inputs)
        outputs = tf.nest.flatten(node.outputs)
        arrays = [ids[id(t)] for t in inputs]
        why = _obstacle(layer, inputs)
        if calls[name] > 1:
            why = "it is called more than once (a shared layer)"
        if why is None and len(outputs) != 1:
            why = "it has several outputs"
        if why is None and outputs[0].shape[-1] is None:
            why = "its output has no fixed number of channels"
        if why is not None:
            for array in arrays:
                ties.fix(array, f"it feeds {name} ({kind}): {why}")
            result = [ties.new(int(t.shape[-1] or 0), reason=why) for t in outputs]
            for t, array in zip(outputs, result):
                ids[id(t)] = array
            inputs_of[name] = arrays
            output_of[name] = result[0] if result else np.zeros(0, int)
            continue
        (output,) = outputs
        width = int(output.shape[-1])
        if _is_producer(layer):
            activation = getattr(layer, "activation", None)
            mixing = getattr(activation, "__name__", "") in _MIXING_ACTIVATIONS
            reason = skipped.get(name) or (
                "its softmax activation mixes its units" if mixing else None
            )
            out = ties.new(width, owner=name, reason=reason)
        elif isinstance(layer, L.Flatten):
            (array,) = arrays
            out = np.tile(array, width // max(1, len(array)))
        elif isinstance(layer, L.Concatenate):
            out = np.concatenate(arrays)
        elif isinstance(layer, _TIE):
            for other in arrays[1:]:
                for a, b in zip(arrays[0], other):
                    ties.union(a, b)
            out = arrays[0]
        else:  # BatchNormalization and per-channel layers
            out = arrays[0]
            source = inputs[0]._keras_history.layer
            if isinstance(layer, L.BatchNormalization) and _is_producer(source):
                bn_after[name] = out
        ids[id(output)] = out
        inputs_of[name] = arrays
        output_of[name] = out
    for i, tensor in enumerate(model.outputs):
        ties.fix(ids[id(tensor)], f"it reaches the model output {model.output_names[i]!r}")

    scale: dict[int, float] = {}  # producer channel id -> BatchNorm scale after it
    for name, array in bn_after.items():
        factors = _bn_scale(model.get_layer(name))
        for node, factor in zip(array, factors):
            if int(node) in ties.owner:
                scale[int(node)] = float(factor)
    members: dict[int, list[int]] = {}
    for node in ties.owner:
        members.setdefault(ties.find(node), []).append(node)
    scores: dict[str, np.ndarray] = {}  # producer -> unit scores / their mean
    for name in {owner for owner, _ in ties.owner.values()}:
        raw = _unit_scores(model.get_layer(name), config.criterion or "l1")
        raw = raw * np.array([scale.get(int(n), 1.0) for n in output_of[name]])
        scores[name] = raw / (raw.mean() or 1.0)
    grouped: dict[tuple[str, ...], list[tuple[float, int]]] = {}
    for root, nodes in members.items():
        if ties.fixed(root) is not None:
            continue
        total = sum(float(scores[ties.owner[n][0]][ties.owner[n][1]]) for n in nodes)
        key = tuple(sorted({ties.owner[n][0] for n in nodes}))
        grouped.setdefault(key, []).append((total, root))
    removed: set[int] = set()
    sizes = dict(group_sizes or {})
    groups = {}
    for key, entries in grouped.items():
        size = sizes.get(key, len(entries))
        groups[key] = size
        keep = max(1, size - math.floor(ratio * size + 1e-9))
        entries.sort()
        count = max(0, len(entries) - keep)
        removed.update(root for _, root in entries[:count])

    def mask(array: np.ndarray) -> np.ndarray:
        return np.array([ties.find(int(n)) not in removed for n in array], dtype=bool)

    in_masks = {name: [mask(a) for a in arrays] for name, arrays in inputs_of.items()}
    out_masks = {name: mask(array) for name, array in output_of.items()}
    units, kept = {}, {}
    for layer in model.layers:
        if not _is_producer(layer) or layer.name not in out_masks:
            continue
        out = out_masks[layer.name]
        units[layer.name] = (len(out), int(out.sum()))
        reasons = [ties.fixed(n) for n in output_of[layer.name]]
        if all(reasons):
            kept[layer.name] = reasons[0]
    return ChannelPlan(in_masks, out_masks, units, kept, groups, ratio)


def _sliced_weights(layer: keras.layers.Layer, plan: ChannelPlan) -> list[np.ndarray]:
    weights = layer.get_weights()
    name = layer.name
    if name not in plan.out_masks:
        return weights
    out = plan.out_masks[name]
    if _is_producer(layer):
        (inside,) = plan.in_masks[name]
        kernel = weights[0][..., inside, :][..., out]
        return [kernel, *(w[out] for w in weights[1:])]
    if isinstance(layer, L.BatchNormalization):
        return [w[out] for w in weights]
    return weights


def cut_channels(
    model: keras.Model, plan: ChannelPlan, strategy: tf.distribute.Strategy | None = None
) -> keras.Model:
    """The smaller model: ``model`` without the units ``plan`` removes.

    Every layer keeps its name and configuration; producers get fewer units
    or filters, and each weight is sliced to the surviving channels (kernel
    inputs and outputs, bias, BatchNorm's gamma, beta and moving statistics).

    Args:
        model: The model the plan was made for (not changed).
        plan: From `plan_channels`.
        strategy: The strategy whose scope owns the new variables.
            Defaults to `None` (the current one).

    Returns:
        A new, uncompiled functional model.
    """
    strategy = strategy or tf.distribute.get_strategy()

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if _is_producer(layer) and layer.name in plan.out_masks:
            key = "units" if isinstance(layer, L.Dense) else "filters"
            config[key] = int(plan.out_masks[layer.name].sum())
        return type(layer).from_config(config)

    with strategy.scope():
        smaller = keras.models.clone_model(model, clone_function=clone)
        for layer in model.layers:
            if isinstance(layer, L.InputLayer):
                continue
            smaller.get_layer(layer.name).set_weights(_sliced_weights(layer, plan))
    logger.info(
        "Channel cut: %s (%s -> %s parameters).",
        plan.describe(),
        f"{model.count_params():,}",
        f"{smaller.count_params():,}",
    )
    return smaller


def zero_channels(model: keras.Model, plan: ChannelPlan) -> keras.Model:
    """The masked original: ``model``'s architecture and weights, with the
    inputs of every Dense/Conv layer that ``plan`` removes zeroed.

    A removed channel then contributes nothing anywhere (its only consumers
    are Dense/Conv layers: every other path ends fixed), so this model
    answers exactly like `cut_channels`' smaller one, which is how the cut is
    proven right.

    Args:
        model: The model the plan was made for (not changed).
        plan: From `plan_channels`.

    Returns:
        A new, uncompiled model of the same shape.
    """
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for layer in copy.layers:
        if _is_producer(layer) and layer.name in plan.in_masks:
            (inside,) = plan.in_masks[layer.name]
            kernel = layer.kernel.numpy()
            kernel[..., ~inside, :] = 0.0
            layer.kernel.assign(kernel)
    return copy


def cut_schedule(config: PruneConfig) -> list[tuple[float, int]]:
    """The cuts of ``config``: (share removed so far, fine-tuning epochs after).

    A `"constant"` schedule cuts once, to the target, then fine-tunes every
    epoch. A `"polynomial"` one cuts before each epoch up to `end_epoch`
    (half the epochs by default), the share rising as TF-MOT's polynomial
    sparsity (``target * (1 - (1 - k / n) ** 3)``), and the last cut's
    fine-tuning takes the remaining epochs.

    Returns:
        One (ratio, epochs) per cut; the epochs add up to `config.epochs`.
    """
    target = config.target_ratio
    ramp = 1 if config.schedule == "constant" else config.ramp_epochs
    cuts = [(target * (1 - (1 - k / ramp) ** 3), 1) for k in range(1, ramp + 1)]
    cuts[-1] = (target, config.epochs - ramp + 1)
    return cuts


def units_by_layer(model: keras.Model) -> dict[str, int]:
    """Units (Dense) or filters (Conv) of every layer that has them."""
    return {
        layer.name: int(layer.kernel.shape[-1]) for layer in model.layers if _is_producer(layer)
    }
