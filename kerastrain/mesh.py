"""Tensor model parallelism with DTensor: the device mesh and where each weight lives.

`strategy="model_parallel"` splits a model's weights over a mesh of devices
(`tf.experimental.dtensor`), so that a model larger than one device trains on
several. This module holds what does not train:

- :func:`mesh_shape` and :func:`make_mesh`: the `distribute.mesh` option
  (`{"batch": B, "model": M}`) checked against the local devices (the GPUs,
  else the logical CPUs) and made a `dtensor.Mesh`;
- :func:`plan_layouts`: where each weight goes. By default, Megatron-style
  pairs of Dense layers (the first split on its output units, the next on its
  input units, so the pair needs one all-reduce), Embedding tables on the
  embedding dimension, biases and normalization weights following their
  kernels (Conv2D kernels stay whole: DTensor's convolution takes no split
  filter); MultiHeadAttention split on
  its heads (query, key and value projections on their heads, the output
  projection on its input heads: again one all-reduce), kerastrain's token
  and position embeddings whole (`TABLE_REPLICATED` says why); `distribute.layouts`
  overrides any of it. What cannot be split stays replicated, with the reason;
- :func:`layout_map` and :func:`check_layouts`: the tf_keras `LayoutMap`
  built from a plan, and every variable of the built model checked against it
  with `dtensor.fetch_layout` (a regex is never trusted alone);
- :func:`gather` / :func:`scatter`: a sharded variable's whole value, and back;
- :func:`dtensor_dataset`: batches of a `tf.data.Dataset` laid out on the
  mesh's "batch" axis, as `model.fit` on a DTensor model needs them;
- :func:`use_logical_cpus`: split the CPU into logical devices (tests and the
  example), which TensorFlow allows only before it starts.

The training run itself is `kerastrain.training.model_parallel`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import DistributeConfig
from kerastrain.config.distribute import MESH_AXES
from kerastrain.data.layers import LayerNorm, PositionEmbedding, TokenEmbedding
from kerastrain.errors import ConfigError, config_error, message

logger = logging.getLogger(__name__)

dtensor = tf.experimental.dtensor

__all__ = [
    "local_devices",
    "mesh_shape",
    "make_mesh",
    "use_logical_cpus",
    "Plan",
    "plan_layouts",
    "layout_map",
    "check_layouts",
    "weight_paths",
    "gather",
    "scatter",
    "replicate_constants",
    "read_values",
    "assign_values",
    "shard_shapes",
    "per_device_parameter_bytes",
    "planned_parameter_bytes",
    "dtensor_dataset",
    "random_generator",
    "dense_gradients",
    "mesh_config",
]

#: Why a convolution's kernel stays whole on a mesh.
CONV_REPLICATED = (
    "DTensor's convolution needs its filter whole on every device ('Filter for convolution "
    "must have fully replicated layout')"
)

#: Why kerastrain's token and position embeddings stay whole on a mesh.
TABLE_REPLICATED = (
    "its vectors feed a layer normalization: split on the embedding dimension, DTensor "
    "(TF 2.21) lost the table's and the norm's updates in training (measured on a 2x2 mesh)"
)

_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)

#: Layers whose output has the shape of their input, element by element along
#: the features: a Megatron pair may run through them (Dense, then ReLU or
#: dropout, then the pair's second Dense).
_ELEMENTWISE = (
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.BatchNormalization,
)


def local_devices() -> list[str]:
    """The devices a mesh is laid on: every local GPU, else every logical CPU."""
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return [d.name for d in devices]


def mesh_shape(options: DistributeConfig, devices: int | None = None) -> tuple[int, int]:
    """``(B, M)``: devices on the "batch" and "model" axes of the mesh.

    Args:
        options: `distribute.mesh` (`{"batch": B, "model": M}`; either may
            be left out).
        devices: The number of devices. Defaults to `None`: the local ones.

    Returns:
        The axis sizes; by default every device on "model".

    Raises:
        ConfigError: When `B x M` is not the number of devices (naming both).
    """
    count = len(local_devices()) if devices is None else devices
    mesh = dict(options.mesh or {})
    batch, model = mesh.get("batch"), mesh.get("model")
    if batch is None and model is None:
        batch, model = 1, count
    elif batch is None:
        batch = count // model if count % model == 0 else 0
    elif model is None:
        model = count // batch if count % batch == 0 else 0
    if not batch or not model or batch * model != count:
        raise ConfigError(
            message(
                f"distribute.mesh asks for {mesh.get('batch', '?')} x "
                f"{mesh.get('model', '?')} devices, but this machine has {count} "
                f"({'GPUs' if tf.config.list_logical_devices('GPU') else 'logical CPUs'})",
                received={"distribute.mesh": options.mesh, "devices": count},
                allowed=f"sizes whose product is {count}, e.g. "
                f"{{'batch': 1, 'model': {count}}}; on a CPU, split it into logical devices "
                "first with kerastrain.mesh.use_logical_cpus(n)",
            )
        )
    return batch, model


def make_mesh(options: DistributeConfig) -> Any:
    """The `dtensor.Mesh` of `options.mesh` over the local devices (see `mesh_shape`)."""
    devices = local_devices()
    batch, model = mesh_shape(options, len(devices))
    kind = tf.DeviceSpec.from_string(devices[0]).device_type or "CPU"
    names = [f"{kind}:{i}" for i in range(len(devices))]
    return dtensor.create_mesh(list(zip(MESH_AXES, (batch, model))), devices=names)


def use_logical_cpus(count: int) -> None:
    """Splits the CPU into ``count`` logical devices, for a mesh on a CPU.

    TensorFlow accepts this only before it starts its devices, so call it
    first thing in the process (before any other TensorFlow work).

    Raises:
        ConfigError: When TensorFlow has already started its devices with
            another number of CPUs.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(
                message(
                    f"The CPU cannot be split into {count} logical devices: TensorFlow "
                    f"already started with {have}",
                    allowed="call kerastrain.mesh.use_logical_cpus first in the process, "
                    "before any other TensorFlow work",
                )
            ) from None


@contextlib.contextmanager
def random_generator() -> Iterator[None]:
    """tf_keras's `tf.random.Generator`-based random numbers, for this block.

    Layers with random state (dropout) cannot be laid out on a mesh with the
    legacy random ops; the setting is process-wide, so it is put back after.
    """
    experimental = keras.backend.experimental
    was = experimental.is_tf_random_generator_enabled()
    experimental.enable_tf_random_generator()
    try:
        yield
    finally:
        if not was:
            experimental.disable_tf_random_generator()


def _densified(grads_and_vars: Any) -> list[tuple[Any, Any]]:
    return [
        (tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g, v)
        for g, v in grads_and_vars
    ]


def dense_gradients(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Makes ``optimizer`` apply a sparse gradient (an embedding table's rows,
    a `tf.IndexedSlices`) as a dense one.

    Applied sparse, the update is a `ResourceScatterAdd`, which DTensor cannot
    lay out ("does not implement layout propagation"); the dense sum of the
    same rows is laid out like the table. Changes this instance only.

    Returns:
        ``optimizer``.
    """
    apply = optimizer.apply_gradients

    def apply_dense(grads_and_vars: Any, *args: Any, **kwargs: Any) -> Any:
        return apply(_densified(grads_and_vars), *args, **kwargs)

    optimizer.apply_gradients = apply_dense
    return optimizer


def mesh_config(config: Any) -> Any:
    """A model's `get_config()` with what DTensor cannot lay out replaced by
    its equal: each `BatchNormalization` unfused (`FusedBatchNormV3` has no
    layout propagation; the unfused one computes the same normalization with
    `tf.nn.moments`). Nested models' layers too; ``config`` is not changed."""
    if isinstance(config, list):
        return [mesh_config(item) for item in config]
    if not isinstance(config, dict):
        return config
    out = {key: mesh_config(value) for key, value in config.items()}
    if out.get("class_name") == "BatchNormalization" and isinstance(out.get("config"), dict):
        out["config"] = {**out["config"], "fused": False}
    return out


# --------------------------------------------------------------------------- the plan


#: Attributes tf_keras's `LayoutMap` skips when it names a variable by its
#: object path (`tf_keras.src.dtensor.layout_map._KERAS_ATTRIBUTES_TO_SKIP`).
_SKIPPED_ATTRIBUTES = frozenset(
    ("_self_tracked_trackables", "_trainable_weights", "_non_trainable_weights",
     "_captured_weight_regularizer")
)  # fmt: skip


def weight_paths(model: keras.Model) -> dict[int, str]:
    """Each weight's path as tf_keras's `LayoutMap` sees it (`"dense_1.kernel"`,
    `"block0_attention._output_dense.kernel"` for a weight of a layer inside a
    layer), by the variable's `id`."""
    paths = {}
    for layer in model.layers:
        weights = {id(w) for w in layer.weights}
        for attr, value in vars(layer).items():
            if isinstance(value, tf.Variable) and id(value) in weights:
                paths.setdefault(id(value), f"{layer.name}.{attr}")
        if all(id(w) in paths for w in layer.weights):
            continue
        # A layer's sub-layers (MultiHeadAttention's projections): the first
        # object path in tf_keras's own walk, as the LayoutMap names them.
        for path, value in layer._flatten(  # noqa: SLF001 (the walk LayoutMap uses)
            predicate=lambda obj: isinstance(obj, tf.Variable), with_path=True
        ):
            if id(value) in weights and not _SKIPPED_ATTRIBUTES.intersection(map(str, path)):
                paths.setdefault(id(value), ".".join([layer.name, *map(str, path)]))
    return paths


@dataclasses.dataclass
class Plan:
    """Where each weight of a model lives on the mesh.

    Attributes:
        mesh: `{"batch": B, "model": M}`.
        specs: Each weight's path (`"dense_1.kernel"`) to one mesh axis or
            None per dimension; a weight not listed is replicated.
        split: Each split layer's name to how (`"output units"`, ...).
        replicated: Each layer with weights that stays whole on every
            device, to why.
    """

    mesh: dict[str, int]
    specs: dict[str, tuple[str | None, ...]] = dataclasses.field(default_factory=dict)
    split: dict[str, str] = dataclasses.field(default_factory=dict)
    replicated: dict[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """One line for the log and the report."""
        split = ", ".join(f"{k} ({v})" for k, v in self.split.items()) or "none"
        kept = "; ".join(f"{k}: {v}" for k, v in self.replicated.items()) or "none"
        return (
            f"mesh batch={self.mesh['batch']} x model={self.mesh['model']}; "
            f"split: {split}; replicated: {kept}"
        )


class _Planner:
    """Walks the layers in order, pairing Dense layers Megatron-style."""

    def __init__(self, model: keras.Model, mesh: dict[str, int]):
        self.model = model
        self.size = mesh["model"]
        self.plan = Plan(dict(mesh))
        self.paths = weight_paths(model)
        self.pending: str | None = None  # a Dense split on its outputs, waiting for its pair
        self.split_features = 0  # the last dimension of the activations is split, this wide

    def path(self, layer: keras.layers.Layer, attr: str) -> str | None:
        value = getattr(layer, attr, None)
        return self.paths.get(id(value)) if value is not None else None

    def put(self, layer: keras.layers.Layer, attr: str, spec: tuple[str | None, ...]) -> None:
        path = self.path(layer, attr)
        if path is not None:
            self.plan.specs[path] = spec

    def keep(self, layer: keras.layers.Layer, why: str) -> None:
        self.plan.replicated[layer.name] = why
        self.pending, self.split_features = None, 0

    def dense(self, layer: keras.layers.Dense) -> None:
        rows, cols = layer.kernel.shape
        if self.pending is not None and rows == self.split_features and rows % self.size == 0:
            self.put(layer, "kernel", ("model", None))
            self.plan.split[layer.name] = f"input units, paired with {self.pending}"
            self.pending, self.split_features = None, 0
        elif cols % self.size == 0:
            self.put(layer, "kernel", (None, "model"))
            self.put(layer, "bias", ("model",))
            self.plan.split[layer.name] = "output units"
            self.pending, self.split_features = layer.name, cols
        else:
            self.keep(layer, f"{cols} output units are not divisible by {self.size} devices")

    def conv(self, layer: keras.layers.Conv2D) -> None:
        """Kept whole: DTensor's convolution refuses a split filter (TF 2.21:
        "Filter for convolution must have fully replicated layout")."""
        self.keep(layer, CONV_REPLICATED)

    def embedding(self, layer: keras.layers.Embedding) -> None:
        width = layer.embeddings.shape[-1]
        if width % self.size == 0:
            self.put(layer, "embeddings", (None, "model"))
            self.plan.split[layer.name] = "embedding dimension"
            self.pending, self.split_features = None, width
        else:
            self.keep(layer, f"embedding dimension {width} is not divisible by {self.size}")

    def batch_norm(self, layer: keras.layers.BatchNormalization) -> None:
        width = layer.gamma.shape[-1] if layer.gamma is not None else layer.moving_mean.shape[-1]
        if self.split_features and width == self.split_features:
            for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
                self.put(layer, attr, ("model",))
            self.plan.split[layer.name] = "features, following the layer before"
        else:
            self.plan.replicated[layer.name] = "its features are not split before it"

    def attention(self, layer: keras.layers.MultiHeadAttention) -> None:
        """Megatron-style attention: the query, key and value projections
        split on their heads (each device attends with its own heads), the
        output projection on its input heads (one all-reduce after it)."""
        heads = layer._num_heads  # noqa: SLF001 (tf_keras keeps it private)
        if heads % self.size:
            self.keep(layer, f"{heads} heads are not divisible by {self.size} devices")
            return
        for sub in (layer._query_dense, layer._key_dense, layer._value_dense):  # noqa: SLF001
            self.put(sub, "kernel", (None, "model", None))  # (width, heads, head size)
            self.put(sub, "bias", ("model", None))  # (heads, head size)
        self.put(layer._output_dense, "kernel", ("model", None, None))  # noqa: SLF001
        self.plan.split[layer.name] = (
            f"heads ({heads // self.size} of {heads} per device: query, key and value on "
            "their heads, the output projection on its input heads)"
        )
        self.pending, self.split_features = None, 0

    def table(self, layer: keras.layers.Layer) -> None:
        """kerastrain's token and position embeddings stay whole (see
        `TABLE_REPLICATED`); the attention and MLP weights after them split."""
        self.keep(layer, TABLE_REPLICATED)

    def layer_norm(self, layer: keras.layers.Layer) -> None:
        """A layer normalization reads every feature: its two vectors stay whole."""
        self.keep(layer, "a layer normalization reads all its features (kept whole)")

    def walk(self) -> Plan:
        if self.size == 1:
            for layer in self.model.layers:
                if layer.weights:
                    self.plan.replicated[layer.name] = "the mesh has one device on 'model'"
            return self.plan
        rules = (
            (keras.layers.Dense, self.dense),
            (keras.layers.Conv2D, self.conv),
            (keras.layers.Embedding, self.embedding),
            (keras.layers.BatchNormalization, self.batch_norm),
            (keras.layers.MultiHeadAttention, self.attention),
            (TokenEmbedding, self.table),
            (PositionEmbedding, self.table),
            (LayerNorm, self.layer_norm),
        )
        for layer in self.model.layers:
            rule = next((r for kind, r in rules if type(layer) is kind), None)
            if rule is not None:
                rule(layer)
            elif layer.weights:
                self.keep(layer, f"kerastrain has no split rule for {type(layer).__name__}")
            elif not isinstance(layer, _ELEMENTWISE + (keras.layers.InputLayer,)):
                self.pending, self.split_features = None, 0
        return self.plan


def _check_spec(path: str, shape: Sequence[int], spec: Sequence[Any], mesh: Mapping) -> None:
    """Refuses a layout that does not fit the weight it matched."""
    where = f"distribute.layouts (for {path}, shape {list(shape)})"
    if len(spec) != len(shape):
        raise config_error(where, list(spec), f"{len(shape)} entries, one per dimension")
    used = [axis for axis in spec if axis is not None]
    if len(used) != len(set(used)):
        raise config_error(where, list(spec), "each mesh axis at most once")
    for size, axis in zip(shape, spec):
        if axis is not None and size % mesh[axis] != 0:
            raise config_error(
                where,
                list(spec),
                f"axes whose size divides the dimension ({size} is not divisible by "
                f"{axis}={mesh[axis]})",
            )


def plan_layouts(
    model: keras.Model, mesh: Mapping[str, int], overrides: Mapping[str, Sequence[Any]] | None
) -> Plan:
    """Where each weight of ``model`` goes on a mesh (see the module's notes).

    Args:
        model: The model, built (on one device is enough).
        mesh: `{"batch": B, "model": M}`.
        overrides: `distribute.layouts`: regex to one axis or None per
            dimension, matched against each weight's path; first match wins,
            before the default plan.

    Returns:
        The plan.

    Raises:
        ConfigError: When an override matches no weight, has the wrong
            number of entries, or splits a dimension its axis does not divide.
    """
    plan = _Planner(model, dict(mesh)).walk()
    if not overrides:
        return plan
    paths = weight_paths(model)
    shapes = {paths[id(w)]: tuple(w.shape) for w in model.weights if id(w) in paths}
    for pattern in overrides:
        matched = [path for path in shapes if re.match(pattern, path)]
        if not matched:
            raise config_error(
                "distribute.layouts",
                pattern,
                "a regex that matches a weight path of the model",
                sorted(shapes),
            )
    owners = {path: path.rsplit(".", 1)[0] for path in shapes}
    for path, shape in shapes.items():
        pattern = next((p for p in overrides if re.match(p, path)), None)
        if pattern is None:
            continue
        spec = tuple(overrides[pattern])
        _check_spec(path, shape, spec, mesh)
        if (
            any(spec)
            and path.endswith(".kernel")
            and isinstance(model.get_layer(path.split(".", 1)[0]), _CONVOLUTIONS)
        ):
            raise config_error(
                f"distribute.layouts (for {path})", list(spec), f"[None, ...]: {CONV_REPLICATED}"
            )
        layer = owners[path]
        if any(spec):
            plan.specs[path] = spec
            plan.split[layer] = "as distribute.layouts asks"
            plan.replicated.pop(layer, None)
        else:
            plan.specs.pop(path, None)
            if not any(plan.specs.get(p) for p, o in owners.items() if o == layer):
                plan.split.pop(layer, None)
                plan.replicated[layer] = "as distribute.layouts asks"
    return plan


def _layout(spec: Sequence[str | None], mesh: Any) -> Any:
    return dtensor.Layout([axis or dtensor.UNSHARDED for axis in spec], mesh)


def layout_map(plan: Plan, mesh: Any) -> Any:
    """The tf_keras `LayoutMap` of ``plan`` (exact paths; everything else replicated)."""
    layouts = keras.dtensor.experimental.LayoutMap(mesh)
    for path, spec in plan.specs.items():
        layouts[re.escape(path) + "$"] = _layout(spec, mesh)
    return layouts


def _specs(variable: Any) -> tuple[str | None, ...]:
    specs = dtensor.fetch_layout(variable).sharding_specs
    return tuple(None if s == dtensor.UNSHARDED else s for s in specs)


def check_layouts(model: keras.Model, plan: Plan) -> None:
    """Checks every variable of a model built under `layout_map(plan)` with
    `dtensor.fetch_layout`: each has the layout the plan gave it.

    Raises:
        RuntimeError: When a variable's layout is not the planned one.
    """
    paths = weight_paths(model)
    for variable in model.weights:
        path = paths.get(id(variable), variable.name)
        want = plan.specs.get(path, (None,) * variable.shape.rank)
        have = _specs(variable)
        if have != want:
            raise RuntimeError(
                f"Weight {path} was laid out as {list(have)} on the mesh, not as the plan's "
                f"{list(want)}: its LayoutMap key did not reach it"
            )
    logger.info("Every one of the %d weights has its planned layout.", len(model.weights))


# --------------------------------------------------------------------------- values


def replicate_constants(model: keras.Model, mesh: Any) -> list[str]:
    """Copies the constant tensors layers hold (a `Normalization` given its mean
    and variance keeps them as tensors, not weights) to every device of the
    mesh: a DTensor function refuses an ordinary tensor as input.

    Returns:
        The `"<layer>.<attribute>"` of each tensor copied.
    """
    copied = []
    for layer in model.submodules:
        if not isinstance(layer, keras.layers.Layer):
            continue
        for attr, value in list(vars(layer).items()):
            if isinstance(value, tf.Tensor) and not isinstance(value, tf.Variable):
                if dtensor.is_dtensor(value):
                    continue
                layout = dtensor.Layout.replicated(mesh, value.shape.rank)
                object.__setattr__(layer, attr, dtensor.copy_to_mesh(value, layout))
                copied.append(f"{layer.name}.{attr}")
    return copied


def gather(variable: Any) -> np.ndarray:
    """The whole value of a (possibly sharded) variable, as one array."""
    value = variable.read_value()
    layout = dtensor.fetch_layout(value)
    if not layout.is_fully_replicated():
        value = dtensor.relayout(value, dtensor.Layout.replicated(layout.mesh, value.shape.rank))
    return value.numpy()


def scatter(variable: Any, value: Any) -> None:
    """Assigns a whole value to a (possibly sharded) variable, each device its shard."""
    layout = dtensor.fetch_layout(variable)
    tensor = tf.convert_to_tensor(np.asarray(value), dtype=variable.dtype)
    whole = dtensor.copy_to_mesh(tensor, dtensor.Layout.replicated(layout.mesh, tensor.shape.rank))
    variable.assign(dtensor.relayout(whole, layout))


def _on_mesh(variable: Any) -> bool:
    """Whether ``variable`` lives on a DTensor mesh. Asked of the variable's
    class: `dtensor.is_dtensor` fails on a `tf.distribute` variable (a
    mirrored one hands it a tensor with no handle)."""
    return isinstance(variable, dtensor.DVariable)


def read_values(variables: Sequence[Any]) -> list[Any]:
    """The whole values of ``variables``, gathered from the mesh for those on one
    (`keras.backend.batch_get_value` refuses a split DTensor)."""
    plain = [v for v in variables if not _on_mesh(v)]
    values = iter(keras.backend.batch_get_value(plain))
    return [gather(v) if _on_mesh(v) else next(values) for v in variables]


def assign_values(variables: Sequence[Any], values: Sequence[Any]) -> None:
    """Assigns whole values to ``variables``, each device of a mesh its shard."""
    plain = []
    for variable, value in zip(variables, values):
        if _on_mesh(variable):
            scatter(variable, value)
        else:
            plain.append((variable, value))
    keras.backend.batch_set_value(plain)


def shard_shapes(variable: Any) -> list[tuple[int, ...]]:
    """The shape of the piece of ``variable`` each device holds."""
    return [tuple(part.shape) for part in dtensor.unpack(variable.read_value())]


def per_device_parameter_bytes(model: keras.Model) -> int:
    """Bytes of weights the most loaded device holds (every weight, trainable or not)."""
    total = 0
    for variable in model.weights:
        try:
            shape = shard_shapes(variable)[0]
        except (TypeError, ValueError, tf.errors.OpError):  # not a DTensor: whole
            shape = tuple(variable.shape)
        total += math.prod(shape) * variable.dtype.size
    return total


def planned_parameter_bytes(model: keras.Model, plan: Plan) -> int:
    """Bytes of weights each device would hold under ``plan`` (from shapes alone:
    nothing is placed). Each split dimension is divided by its axis's size."""
    paths = weight_paths(model)
    total = 0
    for weight in model.weights:
        spec = plan.specs.get(paths.get(id(weight), ""), ())
        share = math.prod(plan.mesh[axis] for axis in spec if axis is not None)
        total += weight.shape.num_elements() * weight.dtype.size // share
    return total


def dtensor_dataset(dataset: tf.data.Dataset, global_batch: int, mesh: Any) -> Any:
    """``dataset``'s examples, repeated, in batches of `global_batch` on the mesh.

    `DTensorDataset` opens one iterator over ``dataset`` per local device, so
    every iterator must yield the same batches: a dataset that reshuffles
    at each new iterator (kerastrain's training batches, by default) gives
    each device another order, and then a tensor laid out as one value holds
    different rows on different devices, whose partial matmuls and
    all-reduces mix them (measured on TF 2.21, 2x2 mesh: the first step's
    loss 5e-3 off a single device's on the same weights, the epoch losses
    4.7e-3 off). Give it the training batches as one pass over fixed epochs
    (`kerastrain.data.feed.make_dataset`'s `epoch_seeds`).

    Each batch arrives whole on every device (replicated over "batch"). With
    the batches split over "batch" (`batch_dim="batch"`, every device's
    iterator yielding the same batches), the first step's loss matched a
    single device but its update was lost (the weights after it were the
    initial ones, the logged loss mean read 0.0) and the later updates
    differed (TF 2.21, 2x2 mesh): the "batch" axis therefore holds copies of
    the computation, not shares of the batch.

    Args:
        dataset: Batches of `(x, y)`; they are re-batched.
        global_batch: Examples per step.
        mesh: The mesh.

    Returns:
        A `dtensor.DTensorDataset`; `model.fit` needs `steps_per_epoch` with it.
    """
    examples = dataset.unbatch().repeat()
    layouts = tf.nest.map_structure(
        lambda spec: dtensor.Layout.replicated(mesh, rank=spec.shape.rank + 1),
        examples.element_spec,
    )
    return dtensor.DTensorDataset(
        dataset=examples, global_batch_size=global_batch, mesh=mesh, layouts=layouts
    )
