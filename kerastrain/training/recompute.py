"""Activation recomputation: trade compute for memory in the backward pass.

`recompute_twin(model, blocks)` returns a model over the *same* layers (the
same variables) whose blocks run under `tf.recompute_grad`: the forward pass
keeps only each block's input, and the backward pass runs the block again to
get the activations it needs. The gradients are those of the plain model;
the peak memory of the activations falls to about one block's worth plus the
block inputs.

A block is found in the functional graph, so the `mlp`, `cnn`, `resnet` and
`transformer` factories (and a user's functional model) need no change: a
*cut* is a place in the layer order where one running tensor carries what the
later layers compute from, beside *side inputs* that pass it unchanged (the
Transformer's attention mask, which reaches the activations only as
`attention_mask=`; a table's other columns' features beside a text
encoder), and a block runs from a cut before a stretch holding a layer with a
kernel (`Dense`, `Conv*`, `MultiHeadAttention`) to the next such cut on the
same stream. A residual block is one block (its shortcut spans it); each
pre-norm Transformer block is two, its attention and its MLP, each a residual.
A block's own layers are those of the stretch computed from its running
tensor (other branches' layers there stay outside), and one tensor must
leave it. Layers that draw random numbers (dropout, noise) stay outside the
blocks: run twice they would draw a different mask in the backward pass, and
the gradient would not be the forward pass's; a block with one inside (the
Transformer's residual dropout when `dropout > 0`) is left plain and the log
says so. The block holding the model's output is left plain too.

Two details keep the twin equal to the plain model: each block's function
takes its running tensor and its float side inputs as arguments (a tensor
captured from the enclosing scope gets no gradient through
`tf.recompute_grad`; a boolean mask, which has none, is captured), and the recomputation puts back
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

__all__ = [
    "RecomputedBlock",
    "block_nodes",
    "find_blocks",
    "recompute_twin",
    "share_compilation",
]

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
        block: The block: a functional `tf_keras.Model` from its running
            tensor (then any side inputs, such as an attention mask, as a
            list) to one tensor, built over the layers of the model it
            belongs to.
        **kwargs: `tf_keras.layers.Layer` arguments (`name`).
    """

    def __init__(self, block: keras.Model, **kwargs: Any) -> None:
        # The block casts its own inputs: this layer must pass a float16
        # activation through unchanged under a mixed-precision policy.
        super().__init__(autocast=False, **kwargs)
        self.block = block

    def call(self, inputs: Any, training: bool | None = None) -> tf.Tensor:
        calls = []  # the first run is the forward pass, any later one a recomputation
        block = self.block
        several = isinstance(inputs, (list, tuple))
        tensors = list(inputs) if several else [inputs]
        # Every float input is an argument: a tensor the function captured
        # instead would get no gradient through `tf.recompute_grad`. A
        # boolean or integer one (an attention mask) has no gradient to lose
        # and is captured: the gradient function cannot take it.
        differentiable = [i for i, t in enumerate(tensors) if t.dtype.is_floating]

        def run(*args: tf.Tensor) -> tf.Tensor:
            given = list(tensors)
            for i, arg in zip(differentiable, args):
                given[i] = arg
            x = given if several else given[0]
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

        return tf.recompute_grad(run)(*(tensors[i] for i in differentiable))


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


def _ancestors(nodes: Sequence[Any], data_only: bool = False) -> dict[int, set[int]]:
    """For each tensor the nodes produce, the ids of the tensors it is
    computed from (model inputs included); with ``data_only``, through the
    layers' positional arguments only (not through a keyword tensor such as
    ``attention_mask=``, which conditions a layer rather than feeding it)."""
    ancestors: dict[int, set[int]] = {}
    for node in nodes:
        above: set[int] = set()
        reads = (
            [t for t in tf.nest.flatten(node.call_args) if keras.backend.is_keras_tensor(t)]
            if data_only
            else node.keras_inputs
        )
        for t in reads:
            above.add(id(t))
            above |= ancestors.get(id(t), set())
        for t in _tensors(node):
            ancestors[id(t)] = above
    return ancestors


def _cuts(model: keras.Model, nodes: Sequence[Any]) -> list[Any | None]:
    """For each node position, the *running* tensor when the position is a
    cut, else None.

    A position is a cut when the node there reads one tensor (the running
    one; a float one is preferred to a boolean mask) such that no other
    tensor alive there is computed from it or feeds it as data (through a
    layer's positional arguments). Those others (an attention mask, which
    reaches the running tensor only as `attention_mask=`; a table's other
    columns' features) pass beside the blocks and enter them as side inputs.
    In a one-input chain a cut is where a single tensor is alive; inside a
    residual block the shortcut's tensor feeds the branch's as data, so no
    cut falls there.
    """
    last_use: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for t in node.keras_inputs:
            last_use[id(t)] = i
    for t in tf.nest.flatten(model.outputs):
        last_use[id(t)] = len(nodes)
    ancestors, data = _ancestors(nodes), _ancestors(nodes, data_only=True)

    def related(running: Any, other: Any) -> bool:
        return id(running) in ancestors.get(id(other), ()) or id(other) in data.get(id(running), ())

    alive: dict[int, Any] = {id(t): t for t in tf.nest.flatten(model.inputs)}
    cuts: list[Any | None] = []
    for i, node in enumerate(nodes):
        alive = {k: t for k, t in alive.items() if last_use.get(k, -1) >= i}
        read = {id(t): t for t in node.keras_inputs if id(t) in alive}
        running = [
            t
            for t in read.values()
            if not any(related(t, other) for k, other in alive.items() if k != id(t))
        ]
        floating = [t for t in running if t.dtype.is_floating]
        running = floating if len(floating) == 1 else running
        cuts.append(running[0] if len(running) == 1 else None)
        for t in _tensors(node):
            alive[id(t)] = t
    return cuts


def _has_kernel(layer: Any) -> bool:
    """Whether a layer holds a weight matrix: a `Dense` or convolution, or a
    `MultiHeadAttention` through its projections (a nested model does not
    count: it starts no block)."""
    return hasattr(layer, "kernel") or isinstance(layer, keras.layers.MultiHeadAttention)


def _draws_random(layer: Any) -> bool:
    """Whether a layer, or one inside it (a `MultiHeadAttention`'s attention
    dropout, a nested model's dropout), draws random numbers in training."""
    return any(
        isinstance(inner, _RANDOM_LAYERS)
        and not (isinstance(getattr(inner, "rate", None), (int, float)) and inner.rate == 0)
        for inner in layer._flatten_layers(include_self=True)  # noqa: SLF001 (tf_keras)
    )


def _blocks(model: keras.Model, random_plain: list[str] | None = None) -> list[dict[str, Any]]:
    """The blocks, each as a dict: ``nodes`` (positions, the output's last),
    ``inputs`` (the running tensor, then the side inputs) and ``output``.
    The random layers that leave a block plain are appended to
    ``random_plain``."""
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
    ancestors = _ancestors(nodes)
    outputs = {id(t) for t in tf.nest.flatten(model.outputs)}

    def follows(i: int, j: int) -> bool:  # the cut at j is on the stream of the cut at i
        return cuts[j] is not None and id(cuts[i]) in ancestors.get(id(cuts[j]), ())

    def next_cut(i: int) -> int:
        j = i + 1
        while j < len(nodes) and not follows(i, j):
            j += 1
        return j

    def starts_block(i: int) -> bool:  # a stretch to the next cut holds a kernel
        if cuts[i] is None:
            return False
        return any(
            _has_kernel(nodes[k].layer)
            for k in range(i, next_cut(i))
            if k == i or id(cuts[i]) in ancestors.get(id(_tensors(nodes[k])[0]), ())
        )

    blocks = []
    i = 0
    while i < len(nodes):
        if not starts_block(i):
            i += 1
            continue
        end = next_cut(i)
        while end < len(nodes) and not (starts_block(end) or _draws_random(nodes[end].layer)):
            end = next_cut(end)
        running = cuts[i]
        # The block's nodes: those in the stretch computed from its running tensor.
        inside = [i] + [
            k
            for k in range(i + 1, end)
            if any(
                id(t) == id(running) or id(running) in ancestors.get(id(t), ())
                for t in nodes[k].keras_inputs
            )
        ]
        produced = {id(t) for k in inside for t in _tensors(nodes[k])}
        side: dict[int, Any] = {}
        for k in inside:
            for t in nodes[k].keras_inputs:
                if id(t) not in produced and id(t) != id(running):
                    side[id(t)] = t
        later = {id(t) for k, n in enumerate(nodes) if k not in inside for t in n.keras_inputs}
        leaving = [
            t for k in inside for t in _tensors(nodes[k]) if id(t) in later or id(t) in outputs
        ]
        random = [nodes[k].layer.name for k in inside if _draws_random(nodes[k].layer)]
        first = nodes[i].layer.name
        if random:
            if random_plain is not None:
                random_plain.extend(random)
            logger.warning(
                "train.recompute leaves the block of %s plain: it holds %s, whose random "
                "mask would differ when recomputed.",
                first,
                ", ".join(random),
            )
        elif any(id(t) in outputs for t in leaving):
            pass  # the block holding the model's output stays plain
        elif len(leaving) == 1 and id(leaving[0]) == id(_tensors(nodes[inside[-1]])[0]):
            blocks.append(
                {"nodes": inside, "inputs": [running, *side.values()], "output": leaving[0]}
            )
        else:
            logger.info(
                "train.recompute leaves the block of %s plain: %d tensors leave it.",
                first,
                len(leaving),
            )
        i = end
    return blocks


def find_blocks(model: keras.Model) -> list[tuple[int, int]]:
    """The blocks that can be recomputed, as `[start, end)` node positions
    in the model's topological order (`flops.layer_calls`'s).

    A block runs from a cut (one running tensor, beside side inputs that
    pass it unchanged, such as an attention mask) to the next one on the
    same stream; it holds the nodes of that stretch computed from its
    running tensor, so a `[start, end)` range may also span nodes of other
    branches, which stay outside it (`block_nodes` lists a block's own).

    Args:
        model: A functional tf_keras model.

    Returns:
        The blocks, in order (an empty list when none is found).

    Raises:
        ConfigError: For a model that is not functional (a subclassed or
            Sequential-in-name-only model has no graph to cut into blocks).
    """
    return [(b["nodes"][0], b["nodes"][-1] + 1) for b in _blocks(model)]


def block_nodes(model: keras.Model) -> list[list[int]]:
    """Each block's own node positions (the node making its output last),
    in the order of `find_blocks`.

    Raises:
        ConfigError: As `find_blocks`.
    """
    return [list(b["nodes"]) for b in _blocks(model)]


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
    random_plain: list[str] = []
    found = _blocks(model, random_plain)
    if not found:
        why = (
            f" (the blocks that hold random layers stay plain: {', '.join(random_plain)}; "
            "with their rate at 0, e.g. model_options.dropout=0, they are recomputed)"
            if random_plain
            else ""
        )
        raise ConfigError(
            message(
                f"train.recompute found no block to recompute in model {model.name!r}{why}",
                received={"train.recompute": blocks},
                allowed="A block starts where one running tensor (beside side inputs such as "
                "an attention mask) enters a stretch with a Dense, convolution or attention "
                "layer, and ends where one tensor leaves; leave train.recompute off for "
                "this model",
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
    # A block is called where its output's node stands: by then its side
    # inputs are made, and the other branches' nodes in its stretch read
    # nothing from it.
    at_output = {b["nodes"][-1]: b for b in found}
    skipped = {k for b in found for k in b["nodes"]}
    mapping: dict[int, Any] = {id(t): t for t in tf.nest.flatten(model.inputs)}

    def mapped(structure: Any) -> Any:
        return tf.nest.map_structure(lambda t: mapping.get(id(t), t), structure)

    for i, node in enumerate(nodes):
        if i in at_output:
            found_block = at_output[i]
            name = nodes[found_block["nodes"][0]].layer.name
            ins, out = found_block["inputs"], found_block["output"]
            block = keras.Model(ins if len(ins) > 1 else ins[0], out, name=f"{name}_block")
            layer = RecomputedBlock(block, name=f"recompute_{name}")
            args = [mapping[id(t)] for t in ins]
            mapping[id(out)] = layer(args if len(args) > 1 else args[0])
            continue
        if i in skipped:
            continue
        outputs = node.layer(*mapped(node.call_args), **mapped(node.call_kwargs))
        for old, new in zip(_tensors(node), tf.nest.flatten(outputs)):
            mapping[id(old)] = new
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
