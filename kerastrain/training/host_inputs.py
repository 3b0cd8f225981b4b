"""A model's string processing, run before the device mesh (`strategy="model_parallel"`).

DTensor lays out numbers only: the string operations of a `TextVectorization`
tokenizer or a category lookup (`StringLower`, `StringSplitV2`, ...) have no
layout propagation ("'tf.StringLower' op does not implement layout
propagation"), so a model that takes raw strings cannot run on a mesh whole.
`split_host_inputs` cuts such a model in two over the *same* layers:

- the **front**: every layer call that reads a string, from the model's inputs
  to the first numbers (token ids, category indices). It runs in the input
  pipeline, on the host, as the batches are made (`HostInputs.map`);
- the **network**: everything after, from those numbers (and the model's
  numeric inputs) to the outputs. It is what is laid out on the mesh.

Token ids come padded to each batch's longest row, a shape a
`DTensorDataset` cannot hold; the front pads (or truncates) them to the
`max_length` the layers reading them keep (kerastrain's transformer
truncates to it anyway). Padding is masked in attention and pooling, so the
network computes what the whole model computes on the unpadded batch.

The whole model (front and network sharing their layers) is what training
hands on: export still gets a model that takes raw strings.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.errors import ConfigError, message
from kerastrain.training.flops import layer_calls

logger = logging.getLogger(__name__)

__all__ = ["HostInputs", "split_host_inputs"]


@dataclasses.dataclass
class HostInputs:
    """A model cut before its first numbers (see the module's notes).

    Attributes:
        front: From the model's inputs (its own structure) to a dict of the
            network's inputs, by name; runs on the host.
        network: From that dict to the model's outputs, over the model's
            own layers (the same variables).
        lengths: Each network input of unknown length to the length it is
            padded or truncated to.
        host_layers: The names of the layers the front runs.
    """

    front: keras.Model
    network: keras.Model
    lengths: dict[str, int]
    host_layers: list[str]

    def features(self, x: Any) -> dict[str, tf.Tensor]:
        """The network's inputs of a batch of the model's inputs."""
        out = dict(self.front(x, training=False))
        for name, length in self.lengths.items():
            value = out[name][:, :length]
            pad = [[0, 0], [0, length - tf.shape(value)[1]]] + [[0, 0]] * (value.shape.rank - 2)
            out[name] = tf.ensure_shape(tf.pad(value, pad), [None, length, *value.shape[2:]])
        return out

    def map(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """``dataset``'s batches of `(x, y, ...)` with ``x`` put through the front."""
        return dataset.map(
            lambda x, *rest: (self.features(x), *rest), num_parallel_calls=tf.data.AUTOTUNE
        )


def _is_string(tensor: Any) -> bool:
    return tensor.dtype == tf.string


def _fixed_length(tensor: Any, consumers: list[Any], name: str) -> int | None:
    """The length a network input of unknown length is padded to: the
    `max_length` of the layers that read it (None when it needs none)."""
    shape = tensor.shape.as_list()
    if None not in shape[1:]:
        return None
    lengths = {getattr(node.layer, "max_length", None) for node in consumers}
    lengths.discard(None)
    if len(shape) == 2 and len(lengths) == 1:
        return int(lengths.pop())
    raise ConfigError(
        message(
            f"strategy='model_parallel' needs the shape of {name!r} (made from strings before "
            f"the mesh) fixed, but it is {shape} and the layers reading it "
            f"({', '.join(n.layer.name for n in consumers)}) set no single max_length",
            allowed="Give the text model a max_length (model_options.max_length), or train "
            "with another strategy",
        )
    )


def split_host_inputs(model: keras.Model) -> HostInputs | None:
    """Cuts ``model`` before its first numbers, when it reads strings.

    Args:
        model: A built functional model.

    Returns:
        The cut model, or None when no input is a string (the model runs on
        the mesh whole).

    Raises:
        ConfigError: When a layer reads both a string and a number computed
            on the mesh, or a network input's shape cannot be fixed.
    """
    inputs = tf.nest.flatten(model.inputs)
    if not any(_is_string(t) for t in inputs):
        return None
    nodes = layer_calls(model)
    host: set[int] = {id(t) for t in inputs}  # tensors the front can compute
    host_layers, host_nodes = [], set()
    for node in nodes:
        reads = tf.nest.flatten(node.keras_inputs)
        if any(_is_string(t) for t in reads):
            if not all(id(t) in host for t in reads):
                raise ConfigError(
                    message(
                        f"strategy='model_parallel' runs the string layers before the mesh, "
                        f"but layer {node.layer.name!r} reads strings and numbers computed "
                        "after them",
                        allowed="Keep the string processing at the model's inputs, or train "
                        "with another strategy",
                    )
                )
            host.update(id(t) for t in tf.nest.flatten(node.outputs))
            host_nodes.add(id(node))
            host_layers.append(node.layer.name)
    # The network's inputs: whatever a mesh layer reads that the front makes.
    boundary: dict[int, tuple[str, Any, list[Any]]] = {}
    names = {id(t): name for t, name in zip(inputs, model.input_names)}
    for node in nodes:
        if id(node) in host_nodes:
            continue
        for t in tf.nest.flatten(node.keras_inputs):
            if id(t) not in host:
                continue
            if id(t) not in boundary:
                producer = t._keras_history.layer  # noqa: SLF001 (tf_keras graph)
                boundary[id(t)] = (names.get(id(t), producer.name), t, [])
            boundary[id(t)][2].append(node)
    new_inputs, mapping, lengths = {}, {}, {}
    for name, tensor, consumers in boundary.values():
        length = _fixed_length(tensor, consumers, name)
        shape = tensor.shape.as_list()[1:]
        if length is not None:
            lengths[name] = length
            shape = [length]
        new_inputs[name] = keras.Input(shape, dtype=tensor.dtype, name=name)
        mapping[id(tensor)] = new_inputs[name]

    def mapped(structure: Any) -> Any:
        return tf.nest.map_structure(lambda t: mapping.get(id(t), t), structure)

    for node in nodes:
        if id(node) in host_nodes:
            continue
        outputs = node.layer(*mapped(node.call_args), **mapped(node.call_kwargs))
        for old, new in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outputs)):
            mapping[id(old)] = new
    network = keras.Model(new_inputs, mapped(model.outputs), name=model.name)
    front = keras.Model(model.input, {name: t for name, t, _ in boundary.values()})
    logger.info(
        "strategy='model_parallel': the string layers (%s) run in the input pipeline, before "
        "the mesh; the network on the mesh reads %s.",
        ", ".join(host_layers),
        ", ".join(f"{n} {list(t.shape)}" for n, t in new_inputs.items()),
    )
    return HostInputs(front, network, lengths, host_layers)
