"""Activation recomputation: trade compute for memory in the backward pass.

`recompute_twin(model, blocks)` returns a model over the *same* layers (the
same variables) whose blocks run under `tf.recompute_grad`: the forward pass
keeps only each block's input, and the backward pass runs the block again to
get the activations it needs. The gradients are those of the plain model;
the peak memory of the activations falls to about one block's worth plus the
block inputs.

A block is found in the functional graph, so the `mlp`, `cnn` and `resnet`
factories (and a user's functional model) need no change: a *cut* is a place
in the layer order where a single tensor carries everything later layers
read, and a block runs from a cut before a layer with a kernel (`Dense`,
`Conv*`) to the next such cut. A residual block is one block (its shortcut
spans it). Layers that draw random numbers (dropout, noise) stay outside the
blocks: run twice they would draw a different mask in the backward pass, and
the gradient would not be the forward pass's; a block with one inside is left
plain. The block holding the model's output is left plain too.

Two details keep the twin equal to the plain model: each block's function
takes its input as an argument (a tensor captured from the enclosing scope
gets no gradient through `tf.recompute_grad`), and the recomputation puts back
the non-trainable variables (batch-norm moving averages) it updated, so they
move once per step as in the plain model.

The twin is for training only: kerastrain hands the plain model, trained
through the shared variables, to the later stages (evaluation, compression,
export), so what ships is an ordinary model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, config_error, message

logger = logging.getLogger(__name__)

__all__ = ["RecomputedBlock", "find_blocks", "recompute_twin", "share_compilation"]

#: Layers that draw new random numbers on each call in training.
_RANDOM_LAYERS = (
    keras.layers.Dropout,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)


class RecomputedBlock(keras.layers.Layer):
    """Runs a block (a functional model over existing layers) under
    `tf.recompute_grad`.

    Args:
        block: The block: a functional `tf_keras.Model` from one tensor to one
            tensor, built over the layers of the model it belongs to.
        **kwargs: `tf_keras.layers.Layer` arguments (`name`).
    """

    def __init__(self, block: keras.Model, **kwargs: Any) -> None:
        # The block casts its own inputs: this layer must pass a float16
        # activation through unchanged under a mixed-precision policy.
        super().__init__(autocast=False, **kwargs)
        self.block = block

    def call(self, inputs: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        calls = []  # the first run is the forward pass, any later one a recomputation
        block = self.block

        def run(x: tf.Tensor) -> tf.Tensor:
            recomputing = bool(calls)
            calls.append(1)
            if not recomputing:
                return block(x, training=training)
            state = list(block.non_trainable_variables)
            saved = [v.read_value() for v in state]
            y = block(x, training=training)
            with tf.control_dependencies([y]):
                for variable, value in zip(state, saved):
                    variable.assign(value)  # the forward pass already moved them
            return y

        return tf.recompute_grad(run)(inputs)


def _order(model: keras.Model) -> list[Any]:
    """The model's own nodes (not its input layers') in topological order."""
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):  # noqa: SLF001 (tf_keras graph)
        for node in model._nodes_by_depth[depth]:  # noqa: SLF001
            if not isinstance(node.layer, keras.layers.InputLayer):
                nodes.append(node)
    return nodes


def _tensors(node: Any) -> list[Any]:
    return list(tf.nest.flatten(node.outputs))


def _cuts(model: keras.Model, nodes: Sequence[Any]) -> list[Any | None]:
    """For each node position, the single tensor alive before it, or None
    when several tensors are (not a cut)."""
    last_use: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for t in node.keras_inputs:
            last_use[id(t)] = i
    for t in tf.nest.flatten(model.outputs):
        last_use[id(t)] = len(nodes)
    alive: dict[int, Any] = {id(t): t for t in tf.nest.flatten(model.inputs)}
    cuts: list[Any | None] = []
    for i, node in enumerate(nodes):
        alive = {k: t for k, t in alive.items() if last_use.get(k, -1) >= i}
        cuts.append(next(iter(alive.values())) if len(alive) == 1 else None)
        for t in _tensors(node):
            alive[id(t)] = t
    return cuts


def find_blocks(model: keras.Model) -> list[tuple[int, int]]:
    """The blocks that can be recomputed, as `[start, end)` node positions
    in the model's topological order.

    Args:
        model: A functional tf_keras model.

    Returns:
        The blocks, in order (an empty list when none is found).

    Raises:
        ConfigError: For a model that is not functional (a subclassed or
            Sequential-in-name-only model has no graph to cut).
    """
    if not getattr(model, "_is_graph_network", False):
        raise ConfigError(
            message(
                f"train.recompute needs a functional model; {model.name!r} "
                f"({type(model).__name__}) has no graph of layers to cut into blocks",
                allowed="Build the model with the functional API, or leave train.recompute off",
            )
        )
    nodes = _order(model)
    cuts = _cuts(model, nodes)
    outputs = {id(t) for t in tf.nest.flatten(model.outputs)}

    def starts_block(i: int) -> bool:
        return cuts[i] is not None and hasattr(nodes[i].layer, "kernel")

    def ends_block(i: int) -> bool:  # a cut before position i closes a block
        return cuts[i] is not None and (
            starts_block(i) or isinstance(nodes[i].layer, _RANDOM_LAYERS)
        )

    blocks = []
    i = 0
    while i < len(nodes):
        if not starts_block(i):
            i += 1
            continue
        end = i + 1
        while end < len(nodes) and not ends_block(end):
            end += 1
        inside = nodes[i:end]
        produces_output = any(id(t) in outputs for n in inside for t in _tensors(n))
        random = [n.layer.name for n in inside if isinstance(n.layer, _RANDOM_LAYERS)]
        if random:
            logger.warning(
                "train.recompute leaves the block of %s plain: it holds %s, whose random "
                "mask would differ when recomputed.",
                inside[0].layer.name,
                ", ".join(random),
            )
        elif not produces_output:  # then a cut closes it: one tensor leaves
            blocks.append((i, end))
        i = end
    return blocks


def recompute_twin(model: keras.Model, blocks: bool | int = True) -> keras.Model:
    """A model over the same layers whose blocks recompute their activations
    in the backward pass.

    Build it inside the strategy scope the model was built in; compile it
    with the plain model's optimizer to share the optimizer's state.

    Args:
        model: A functional tf_keras model (it is not changed).
        blocks: `True` for every block, or the number of blocks to
            recompute, counted from the input (where a CNN's activations are
            largest). Defaults to `True`.

    Returns:
        An uncompiled tf_keras model with the same variables and the same
        outputs as `model`.

    Raises:
        ConfigError: For a model with no graph, one with no block to
            recompute, or a block count larger than the blocks there are.
    """
    found = find_blocks(model)
    if not found:
        raise ConfigError(
            message(
                f"train.recompute found no block to recompute in model {model.name!r}",
                received={"train.recompute": blocks},
                allowed="A block starts where one tensor enters a Dense or convolution layer "
                "and ends where one tensor leaves; leave train.recompute off for this model",
            )
        )
    if blocks is not True:
        if blocks > len(found):
            raise config_error(
                "train.recompute",
                blocks,
                f"True, or a block count of at most {len(found)} "
                f"(the blocks model {model.name!r} has)",
            )
        found = found[:blocks]
    nodes = _order(model)
    cuts = _cuts(model, nodes)
    starts = {start: end for start, end in found}
    mapping: dict[int, Any] = {id(t): t for t in tf.nest.flatten(model.inputs)}

    def mapped(structure: Any) -> Any:
        return tf.nest.map_structure(lambda t: mapping.get(id(t), t), structure)

    i = 0
    while i < len(nodes):
        if i in starts:
            end = starts[i]
            block_in, block_out = cuts[i], cuts[end]
            block = keras.Model(block_in, block_out, name=f"{nodes[i].layer.name}_block")
            layer = RecomputedBlock(block, name=f"recompute_{nodes[i].layer.name}")
            mapping[id(block_out)] = layer(mapping[id(block_in)])
            i = end
            continue
        node = nodes[i]
        outputs = node.layer(*mapped(node.call_args), **mapped(node.call_kwargs))
        for old, new in zip(_tensors(node), tf.nest.flatten(outputs)):
            mapping[id(old)] = new
        i += 1
    logger.info(
        "train.recompute: %d block(s) of model %r recompute their activations in the "
        "backward pass.",
        len(found),
        model.name,
    )
    return keras.Model(model.inputs, mapped(model.outputs), name=model.name)


def share_compilation(twin: keras.Model, model: keras.Model) -> keras.Model:
    """Makes a compiled ``twin`` update ``model``'s optimizer.

    The twin's own optimizer (from its `compile`) is replaced by the plain
    model's, whose slots are keyed by the variables both share: the state the
    twin's training builds is the plain model's, so the plain model goes on
    (evaluation, fine-tuning, export) exactly where the twin stopped.

    Args:
        twin: The compiled `recompute_twin` of `model`.
        model: The compiled plain model.

    Returns:
        `twin`.
    """
    twin.optimizer = model.optimizer
    twin.train_function = None
    return twin
