"""The memory plan: will this run fit, before anything trains?

`plan_memory` estimates the bytes one device holds while training, from the
built model's shapes (walking its layer calls as `flops.forward_flops` does):

- parameters: every weight, in its variable's dtype (float32 under mixed
  precision too);
- gradients: one per trainable weight, plus the accumulator of
  `train.gradient_accumulation`;
- optimizer slots: the optimizer's per-weight state (Adam's two moments,
  SGD's momentum, ...) and the EMA copy of `train.ema`;
- activations: the output of every layer call, in its compute dtype, for a
  batch of `batch_size` (per device, per micro-batch): what the backward pass
  keeps. Under `train.recompute`, only the blocks' inputs and outputs and one
  block's inside are kept. Each `MultiHeadAttention` call adds its scores
  and softmax (batch x heads x length², `attention_bytes`), and a sequence
  padded per batch counts at the model's `max_length`: a long `max_length`
  is refused before training with the right estimate.

`check_memory` compares the total with the device's memory
(`train.memory_limit_mb`, else the GPU's memory as TensorFlow's allocator
sees it, else the host's RAM shared by the local devices) and refuses a run
that cannot fit with a `ResourceError` listing what would make it fit: a
smaller batch, mixed precision, recomputation, gradient accumulation, model
parallelism over N devices, each with its estimate.

The estimate leaves out what TensorFlow needs besides (kernels' scratch
space, the input pipeline's buffers, the runtime itself), so a plan that fits
by a thin margin may still run out.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

from tensorflow.python.client import device_lib

from kerastrain._keras import keras, tf
from kerastrain.config import TrainConfig
from kerastrain.errors import ResourceError, message
from kerastrain.training.flops import layer_calls
from kerastrain.training.recompute import block_nodes, find_blocks

logger = logging.getLogger(__name__)

__all__ = [
    "MemoryPlan",
    "Suggestion",
    "plan_memory",
    "check_memory",
    "device_memory",
    "memory_section",
    "optimizer_slots",
    "attention_bytes",
]

MiB = 2**20


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", MiB), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{int(n)} B"


@dataclasses.dataclass(frozen=True)
class Suggestion:
    """One change that lowers the estimate.

    Attributes:
        text: The change in words, as options (`"train.batch_size=64"`).
        change: The same change as `fit_pipeline` arguments, nested
            (`{"train": {"batch_size": 64}}`), to merge into the call.
        total: The estimated bytes per device with the change.
        fits: Whether that total fits the available memory.
    """

    text: str
    change: Mapping[str, Any]
    total: int
    fits: bool


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Estimated bytes per device while training.

    Attributes:
        batch_size: Examples per device per micro-batch the activations are
            counted for.
        precision: The precision policy (`"float32"`, `"mixed_bfloat16"`, ...).
        parameters: Bytes of every weight.
        gradients: Bytes of the gradients (and the accumulator).
        optimizer_slots: Bytes of the optimizer's state and the EMA copy.
        activations: Bytes of the activations the backward pass keeps.
        available: Bytes the device has for the run, or None when unknown.
        source: Where `available` comes from, in words.
        recompute: Whether the activations are counted under recomputation.
        suggestions: What would make a run that does not fit fit (empty when
            it fits).
    """

    batch_size: int
    precision: str
    parameters: int
    gradients: int
    optimizer_slots: int
    activations: int
    available: int | None
    source: str
    recompute: bool = False
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def total(self) -> int:
        """Bytes per device, all four parts."""
        return self.parameters + self.gradients + self.optimizer_slots + self.activations

    @property
    def fits(self) -> bool:
        """Whether the total fits the available memory (True when unknown)."""
        return self.available is None or self.total <= self.available

    def parts(self) -> str:
        """The four parts in words."""
        return (
            f"parameters {_size(self.parameters)}, gradients {_size(self.gradients)}, "
            f"optimizer slots {_size(self.optimizer_slots)}, activations "
            f"{_size(self.activations)} at batch size {self.batch_size} in {self.precision}"
            + (" with recomputation" if self.recompute else "")
        )

    def __str__(self) -> str:
        room = (
            f"of {_size(self.available)} ({self.source})" if self.available else "(no limit known)"
        )
        return f"{_size(self.total)} per device {room}"

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain values (bytes), for JSON and `memory_section`."""
        out = dataclasses.asdict(self)
        out.update(total=self.total, fits=self.fits, summary=f"{self}; {self.parts()}")
        return out


def memory_section(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The report's "Memory plan" section, as `Section` arguments.

    Args:
        plan: A plan's `MemoryPlan.as_dict()` (as `TrainResult.memory_plan`
            keeps it).
    """
    names = ("parameters", "gradients", "optimizer_slots", "activations", "total")
    rows = [{"part": name, "MiB": round(plan[name] / MiB, 2)} for name in names]
    if plan.get("available"):
        rows.append(
            {"part": f"available ({plan['source']})", "MiB": round(plan["available"] / MiB, 2)}
        )
    return {
        "title": "Memory plan",
        "text": f"Estimated before training, from the layer shapes: {plan['summary']}. "
        "TensorFlow's own buffers and scratch space come on top.",
        "rows": rows,
    }


def optimizer_slots(train: TrainConfig) -> int:
    """Values the optimizer (and the EMA) keeps per trainable weight."""
    options = train.optimizer_options
    slots = {
        "sgd": 1 if options.get("momentum", 0) else 0,
        "adam": 2 + bool(options.get("amsgrad")),
        "adamw": 2 + bool(options.get("amsgrad")),
        "nadam": 2,
        "rmsprop": 1 + bool(options.get("momentum", 0)) + bool(options.get("centered")),
        "adagrad": 1,
    }[train.optimizer]
    return slots + bool(train.ema)


def _sequence_length(model: keras.Model) -> int | None:
    """The tokens per row of a sequence model: the largest `max_length` its
    layers keep (kerastrain's transformer keeps one in its embeddings)."""
    lengths = [getattr(layer, "max_length", None) for layer in model.layers]
    return max((n for n in lengths if isinstance(n, int)), default=None)


def _tensor_bytes(tensor: Any, half: bool, length: int | None = None) -> int:
    shape = tensor.shape.as_list()[1:]
    if length is not None and len(shape) == 2 and shape[0] is None:
        shape[0] = length  # a sequence padded per batch: counted at its max_length
    if any(d is None for d in shape):
        return 0  # a dimension known only at run time: not counted
    size = tensor.dtype.size
    if half and tensor.dtype.is_floating and size == 4:
        size = 2
    return math.prod(shape) * size


def attention_bytes(layer: Any, query_length: int, key_length: int, half: bool = False) -> int:
    """Bytes per example a `MultiHeadAttention` call keeps for the backward
    pass besides its output: the scores ``Q K^T`` and their softmax, each
    ``heads x query_length x key_length`` values (the attention dropout's
    output too when it has a rate), in the compute dtype.

    Example:
        >>> mha = keras.layers.MultiHeadAttention(4, 8)
        >>> _ = mha(tf.zeros((1, 16, 32)), tf.zeros((1, 16, 32)))
        >>> attention_bytes(mha, 16, 16)  # 4 heads x 16 x 16, twice, 4 bytes
        8192
    """
    copies = 2 + bool(getattr(layer, "_dropout", 0))
    heads = layer._num_heads  # noqa: SLF001 (tf_keras keeps it private)
    return copies * heads * query_length * key_length * (2 if half else 4)


def _attention_call_bytes(node: Any, half: bool, length: int | None) -> int:
    args = [a for a in node.call_args if hasattr(a, "shape")]  # query, value[, key]
    shapes = [a.shape.as_list() for a in args]
    query = shapes[0][1] if shapes and len(shapes[0]) == 3 else None
    key = shapes[1][1] if len(shapes) > 1 and len(shapes[1]) == 3 else query
    query, key = query or length, key or length
    if not query or not key:
        return 0  # a length known only at run time: not counted
    return attention_bytes(node.layer, query, key, half)


def _call_bytes(model: keras.Model, half: bool, length: int | None = None) -> list[int]:
    """Bytes per example of each layer call's outputs, in topological order
    (a nested model's calls summed in); under `half`, float32 outputs are
    counted as a mixed-precision policy computes them. A sequence axis known
    only at run time counts at the model's `max_length`, and each attention
    call adds its scores and softmax (`attention_bytes`)."""
    out = []
    nodes = layer_calls(model)
    length = length or _sequence_length(model)
    for i, node in enumerate(nodes):
        # The output layer stays float32 (`models.base.output_layer`).
        halved = half and i < len(nodes) - 1
        if isinstance(node.layer, keras.Model) and getattr(node.layer, "_is_graph_network", False):
            out.append(sum(_call_bytes(node.layer, halved, length)))
        else:
            out.append(sum(_tensor_bytes(t, halved, length) for t in tf.nest.flatten(node.outputs)))
            if isinstance(node.layer, keras.layers.MultiHeadAttention):
                out[-1] += _attention_call_bytes(node, halved, length)
    return out


def _activations_per_example(model: keras.Model, *, half: bool, recompute: bool | int) -> int:
    inputs = sum(_tensor_bytes(t, False) for t in tf.nest.flatten(model.inputs or []))
    if not getattr(model, "_is_graph_network", False):
        # A subclassed model: its layer calls are not recorded, so only what
        # goes in and comes out is counted (an under-estimate, logged).
        logger.info(
            "Memory plan: model %r is subclassed; the activations inside it are not counted.",
            model.name,
        )
        outputs = tf.nest.flatten(getattr(model, "outputs", None) or [])
        return inputs + sum(_tensor_bytes(t, False) for t in outputs)
    calls = _call_bytes(model, half)
    if not recompute:
        return inputs + sum(calls)
    blocks = block_nodes(model)  # positions in `layer_calls` order, as `calls`
    if recompute is not True:
        blocks = blocks[:recompute]
    inside = set()
    widest = 0
    for positions in blocks:
        inside.update(positions[:-1])  # the block's output stays
        widest = max(widest, sum(calls[k] for k in positions))
    return inputs + sum(b for i, b in enumerate(calls) if i not in inside) + widest


def device_memory(strategy: tf.distribute.Strategy | None = None) -> tuple[int | None, str]:
    """Bytes one training device has, and where that figure comes from.

    A GPU's memory is its allocator's limit as TensorFlow reports it (the
    smallest among the GPUs); on CPUs it is the host's physical RAM divided
    among the strategy's local devices.
    """
    if tf.config.list_physical_devices("GPU"):
        limits = [d.memory_limit for d in device_lib.list_local_devices() if d.device_type == "GPU"]
        if limits:
            return min(limits), "GPU memory, from TensorFlow"
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None, "unknown"
    local = _local_devices(strategy)
    shared = f" shared by {local} devices" if local > 1 else ""
    return ram // max(local, 1), f"host RAM{shared}"


def _local_devices(strategy: tf.distribute.Strategy | None) -> int:
    """The devices of this process that the strategy trains on (1 for the
    default strategy, which has no device list)."""
    if strategy is None:
        return 1
    try:
        return max(len(strategy.extended.worker_devices), 1)
    except RuntimeError:  # the default strategy: this process's one device
        return 1


def plan_memory(
    model: keras.Model,
    train: TrainConfig,
    *,
    batch_size: int,
    precision: str,
    available: int | None = None,
    source: str = "unknown",
    model_devices: int = 1,
) -> MemoryPlan:
    """The estimated bytes per device of training ``model`` as ``train`` asks.

    Args:
        model: The built (functional or Sequential) model.
        train: The training options (optimizer, EMA, accumulation, recompute).
        batch_size: Examples per device per micro-batch.
        precision: The precision policy name; a `"mixed_*"` one computes
            (and keeps activations) in 16 bits.
        available: The bytes the device has, or None. Defaults to `None`.
        source: Where `available` comes from. Defaults to `"unknown"`.
        model_devices: Devices the weights are split over (model
            parallelism): parameters, gradients and slots are divided by it.
            Defaults to `1`.

    Returns:
        The plan, with its suggestions when it does not fit.

    A subclassed model's activations are not counted (its layer calls are
    not recorded); only its inputs and outputs are.

    Example:
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        >>> plan_memory(model, TrainConfig(), batch_size=8, precision="float32").parameters
        60
    """
    plan = _estimate(model, train, batch_size, precision, available, source, model_devices)
    if plan.fits:
        return plan
    return dataclasses.replace(plan, suggestions=tuple(_suggestions(plan, model, train)))


def _estimate(
    model: keras.Model,
    train: TrainConfig,
    batch_size: int,
    precision: str,
    available: int | None,
    source: str,
    model_devices: int,
) -> MemoryPlan:
    parameters = sum(v.shape.num_elements() * v.dtype.size for v in model.weights)
    trainable = sum(v.shape.num_elements() * v.dtype.size for v in model.trainable_weights)
    gradients = trainable * (2 if train.gradient_accumulation > 1 else 1)
    per_example = _activations_per_example(
        model, half=precision.startswith("mixed"), recompute=train.recompute
    )
    return MemoryPlan(
        batch_size=batch_size,
        precision=precision,
        parameters=-(-parameters // model_devices),
        gradients=-(-gradients // model_devices),
        optimizer_slots=-(-trainable * optimizer_slots(train) // model_devices),
        activations=per_example * batch_size,
        available=available,
        source=source,
        recompute=bool(train.recompute),
    )


def _suggestions(plan: MemoryPlan, model: keras.Model, train: TrainConfig) -> list[Suggestion]:
    room = plan.available or 0
    static = plan.parameters + plan.gradients + plan.optimizer_slots
    per_example = plan.activations // max(plan.batch_size, 1)
    out = []

    def add(text: str, change: Mapping[str, Any], total: int) -> None:
        out.append(Suggestion(text, change, int(total), total <= room))

    if per_example and room > static:
        batch = min(plan.batch_size - 1, (room - static) // per_example)
        if batch >= 1:
            batch = 2 ** int(math.log2(batch)) if batch >= 8 else batch
            add(
                f"train.batch_size={batch}",
                {"train": {"batch_size": batch}},
                static + per_example * batch,
            )
    if not plan.precision.startswith("mixed"):
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
        mixed = _activations_per_example(model, half=True, recompute=train.recompute)
        add(
            f"train.execution.mixed_precision={policy!r}",
            {"train": {"execution": {"mixed_precision": policy}}},
            static + mixed * plan.batch_size,
        )
    if not train.recompute and getattr(model, "_is_graph_network", False) and find_blocks(model):
        kept = _activations_per_example(
            model, half=plan.precision.startswith("mixed"), recompute=True
        )
        add("train.recompute=True", {"train": {"recompute": True}}, static + kept * plan.batch_size)
    accumulator = 0 if train.gradient_accumulation > 1 else plan.gradients
    for k in (2, 4, 8, 16, 32, 64):
        if plan.batch_size % k:
            break
        total = static + accumulator + per_example * plan.batch_size // k
        if total <= room or k == 64 or plan.batch_size % (2 * k):
            steps = train.gradient_accumulation * k
            add(
                f"train.batch_size={plan.batch_size // k} with "
                f"train.gradient_accumulation={steps} (the same examples per update)",
                {"train": {"batch_size": plan.batch_size // k, "gradient_accumulation": steps}},
                total,
            )
            break
    for n in (2, 4, 8, 16, 32, 64):
        total = -(-static // n) + plan.activations
        if total <= room or n == 64:
            add(
                f'strategy="model_parallel" over {n} devices '
                f'(distribute={{"mesh": {{"batch": 1, "model": {n}}}}})',
                {"strategy": "model_parallel", "distribute": {"mesh": {"batch": 1, "model": n}}},
                total,
            )
            break
    return sorted(out, key=lambda s: (not s.fits, s.total))


def check_memory(plan: MemoryPlan, *, limit_option: str = "train.memory_limit_mb") -> None:
    """Logs the plan, and refuses one that does not fit.

    Args:
        plan: The plan (`plan_memory`).
        limit_option: The option that sets the limit, for the message.
            Defaults to `"train.memory_limit_mb"`.

    Raises:
        ResourceError: When the estimate exceeds the available memory; the
            message has the estimate and each suggestion with its estimate.
    """
    logger.info("Memory plan: %s; %s.", plan, plan.parts())
    if plan.fits:
        return
    lines = [
        f"{s.text}: {_size(s.total)}" + ("" if s.fits else " (not enough alone)")
        for s in plan.suggestions
    ]
    raise ResourceError(
        message(
            f"The run is estimated to need {_size(plan.total)} per device ({plan.parts()}), "
            f"more than the {_size(plan.available or 0)} available ({plan.source})",
            received={"batch_size": plan.batch_size, "precision": plan.precision},
            allowed="What would make it fit, with its estimate: "
            + ("; ".join(lines) if lines else "nothing found")
            + f". Or raise {limit_option} if the device has more memory",
        ),
        plan,
    )
