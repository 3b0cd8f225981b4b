"""Fast by default: the ``"auto"`` precision, and the float32 twin of a model.

`pick_precision` chooses a mixed-precision policy from what the device can
do; on CPUs, under every strategy, `choose_precision` then keeps float32 for
a step too small to gain, times the model built under it against its
float32 twin (the step probe of `kerastrain.training.execution`, which
changes no weight; one replica of it under a strategy with several) and
keeps the faster one, remembering the choice for that architecture; where
nothing can be measured (a cluster of workers), float32 stays, with the
reason. `precision_scope`
builds a model under a policy; `as_float32` gives the float32 copy that is
exported and evaluated.

Measured on the 2-core AVX-512/AMX development machine (TF 2.21, tf_keras):
``mixed_bfloat16`` trains a small CNN about 2x faster than float32, and a
small MLP several times slower (the casts cost more than the products save).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from kerastrain._keras import keras, tf
from kerastrain.training.execution import (
    Decision,
    DeviceInfo,
    device_info,
    measure_step_seconds,
    probe_batch,
)
from kerastrain.training.flops import training_flops

logger = logging.getLogger(__name__)

__all__ = [
    "pick_precision",
    "pick_measured_precision",
    "measure_precision",
    "choose_precision",
    "remembered_precision",
    "precision_scope",
    "resolve_precision",
    "too_small_for_precision",
    "measure_one_replica",
    "computes_in_float32",
    "float32_twin",
    "as_float32",
]

#: GPUs from this compute capability on have tensor cores for float16.
TENSOR_CORE_CAPABILITY = (7, 0)
#: On a CPU, a reduced-precision policy must make the measured training step
#: at least this much faster than float32 to be kept (a tie keeps float32).
PRECISION_MIN_SPEEDUP = 1.1
#: A training step with fewer matrix-product FLOPs than this keeps float32
#: without being measured: bfloat16 ran a 1.2 MFLOP step (a 64-wide MLP at
#: batch 32) 2.7x slower here, and first became faster near 10 MFLOP.
PRECISION_MIN_STEP_FLOPS = 4e6

#: Precision decisions taken in this process, by model architecture (see
#: `_architecture`): a model rebuilt later (a tuning trial's best, a Hyperband
#: child warm-started from its parent) computes as the first one did.
_MEASURED_PRECISION: dict[tuple, Decision] = {}


def pick_precision(device: DeviceInfo) -> Decision:
    """The mixed-precision policy for ``device``.

    `mixed_bfloat16` on TPUs and on CPUs with native bfloat16 (AVX512_BF16
    or AMX); `mixed_float16` (with loss scaling, which tf_keras adds at
    compile time) on GPUs with tensor cores; float32 elsewhere.
    """
    if device.kind == "tpu":
        return Decision("mixed_bfloat16", "TPUs compute natively in bfloat16")
    if device.kind == "gpu":
        cap = device.gpu_capability
        if cap is not None and cap >= TENSOR_CORE_CAPABILITY:
            return Decision(
                "mixed_float16", f"GPU compute capability {cap[0]}.{cap[1]} has tensor cores"
            )
        return Decision(
            "float32",
            f"GPU compute capability {cap} has no tensor cores"
            if cap
            else "GPU compute capability unknown",
        )
    if device.cpu_bf16:
        return Decision("mixed_bfloat16", "the CPU has native bfloat16 (AVX512_BF16 or AMX)")
    return Decision("float32", "the CPU has no native bfloat16 instructions")


def pick_measured_precision(
    candidate: Decision, reduced_seconds: float, float32_seconds: float
) -> Decision:
    """Keeps ``candidate`` only when it measured faster than float32.

    A CPU with native bfloat16 runs large matrix products about twice as
    fast in bfloat16, but every layer of a mixed-precision model also casts
    its inputs and weights; on a small model (a tabular MLP at batch 32) the
    casts cost more than the products save, and bfloat16 measured 2.7x
    slower than float32 on the development machine.

    Args:
        candidate: What `pick_precision` chose for the device.
        reduced_seconds: A measured training step under ``candidate``.
        float32_seconds: The same step in float32.

    Returns:
        ``candidate`` when it is at least `PRECISION_MIN_SPEEDUP` times
        faster, else float32; the reason quotes both measurements.
    """
    speedup = float32_seconds / max(reduced_seconds, 1e-9)
    timing = (
        f"a measured step took {reduced_seconds * 1e3:.2f} ms in {candidate.value} and "
        f"{float32_seconds * 1e3:.2f} ms in float32 ({speedup:.2f}x)"
    )
    if speedup >= PRECISION_MIN_SPEEDUP:
        return Decision(candidate.value, f"{candidate.reason}, and {timing}")
    return Decision(
        "float32",
        f"{candidate.reason}, but {timing}: this model is too small for "
        "faster matrix products to pay for the casts",
    )


def _step_flops(model: keras.Model, rows: int) -> int | None:
    """Matrix-product FLOPs of one training step on ``rows`` examples (None
    when the model's shapes are not static enough to count)."""
    try:
        return training_flops(model) * int(rows)
    except ValueError:
        return None


def _batch_rows(batch: tuple[Any, Any]) -> int:
    return int(tf.shape(tf.nest.flatten(batch[0])[0])[0])


def too_small_for_precision(model: keras.Model, candidate: Decision, rows: int) -> Decision | None:
    """float32, and why, when a step on ``rows`` examples is too small to gain.

    The static rule of ``"auto"``, applied before any measurement and under
    every strategy: a step of fewer than `PRECISION_MIN_STEP_FLOPS`
    matrix-product FLOPs keeps float32.

    Args:
        model: A model built under ``candidate``'s policy.
        candidate: The reduced precision `pick_precision` chose.
        rows: Examples in one replica's step.

    Returns:
        The float32 decision, or None when the rule does not decide (a large
        step, or shapes too dynamic to count).
    """
    step_flops = _step_flops(model, rows)
    if step_flops is None or step_flops >= PRECISION_MIN_STEP_FLOPS:
        return None
    return Decision(
        "float32",
        f"{candidate.reason}, but a training step is {step_flops / 1e6:.1f} MFLOP of "
        "matrix products, too few for faster products to pay for the casts",
    )


def measure_precision(
    model: keras.Model, candidate: Decision, loss: Any, batch: tuple[Any, Any]
) -> tuple[keras.Model, Decision, float | None]:
    """Times ``model`` (built under ``candidate``) against its float32 twin.

    A step of fewer than `PRECISION_MIN_STEP_FLOPS` matrix-product FLOPs
    (`kerastrain.training.flops`) keeps float32 unmeasured. Otherwise both steps are
    measured by `measure_step_seconds` (no weights change)
    on the same batch; the faster model is returned (see
    `pick_measured_precision`). The twin has the same weights, so the choice
    does not change where training starts.

    Args:
        model: An uncompiled model built under a reduced-precision policy.
        candidate: The policy it was built under, and why.
        loss: The loss the model will be trained with.
        batch: One `(x, y)` batch as training will feed it.

    Returns:
        The model to train, the decision, and its measured seconds per step
        (None when the step was too small to measure: see
        `PRECISION_MIN_STEP_FLOPS`).
    """
    twin = float32_twin(model)
    small = too_small_for_precision(model, candidate, _batch_rows(batch))
    if small is not None:
        return twin, small, None
    reduced = measure_step_seconds(model, loss, batch)
    single = measure_step_seconds(twin, loss, batch)
    decision = pick_measured_precision(candidate, reduced, single)
    if decision.value == "float32":
        return twin, decision, single
    return model, decision, reduced


@contextlib.contextmanager
def precision_scope(policy: str) -> Iterator[None]:
    """Builds layers under ``policy``; restores the previous global policy after.

    Layers keep the policy they were created with, so only the model built
    inside the block is affected. Output layers built with `dtype="float32"`
    stay in float32.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def resolve_precision(setting: str, strategy: tf.distribute.Strategy) -> Decision:
    """`train.execution.mixed_precision` made concrete: `"auto"` asks `pick_precision`."""
    if setting != "auto":
        return Decision(setting, "as configured")
    return pick_precision(device_info(strategy))


def _cluster_reason(strategy: tf.distribute.Strategy) -> str | None:
    """Why a step cannot be measured in this process under ``strategy``, if so."""
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        return "parameter-server training runs the step on remote workers"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "every worker must make the same choice, and each would measure its own step"
    return None


def _one_replica(model: keras.Model, float32: bool) -> keras.Model:
    """A copy of ``model`` outside any strategy (one device, same weights),
    in its own precision or in float32."""
    config = model.get_config()
    copy = model.__class__.from_config(_float32_config(config) if float32 else config)
    copy.set_weights(model.get_weights())
    return copy


def measure_one_replica(
    model: keras.Model, candidate: Decision, loss: Any, batch: tuple[Any, Any], rows: int
) -> Decision:
    """`measure_precision` on one replica of a model built under a strategy
    with several: copies outside the strategy, timed on one replica's share
    (the first ``rows`` examples) of ``batch``. Returns the decision only."""
    share = tf.nest.map_structure(lambda t: t[:rows], batch)
    local = _one_replica(model, float32=False)
    reduced = measure_step_seconds(local, loss, share)
    single = measure_step_seconds(_one_replica(model, float32=True), loss, share)
    decision = pick_measured_precision(candidate, reduced, single)
    return Decision(decision.value, f"{decision.reason} (measured on one replica)")


def _architecture(model: keras.Model, batch_size: int) -> tuple:
    """What a precision measurement depends on, without layer names (they
    change from one build to the next) or per-layer shapes (a shared layer
    has several)."""
    return (
        batch_size,
        str(model.input_shape),
        str(model.output_shape),
        tuple((type(layer).__name__, layer.count_params()) for layer in model.layers),
    )


def choose_precision(
    model: keras.Model,
    candidate: Decision,
    strategy: tf.distribute.Strategy,
    batch_size: int,
    loss: Any,
    probe_data: Any = None,
) -> tuple[keras.Model, Decision, float | None]:
    """Settles `mixed_precision="auto"` for a model built under ``candidate``.

    On CPUs, under every strategy: a step under `PRECISION_MIN_STEP_FLOPS`
    keeps float32 unmeasured (`too_small_for_precision`). Otherwise the
    reduced precision is timed against float32 on a batch of `probe_data`
    and kept only when `PRECISION_MIN_SPEEDUP` times faster: the model
    itself on one device (`measure_precision`), one replica of it when the
    strategy mirrors over several devices (`measure_one_replica`). Where no
    step can be measured (a cluster of workers, no batch, a model that
    cannot be copied), float32 is kept and the decision says why. The
    decision is remembered for this architecture, so that later builds of
    it (without data to measure on) make the same choice. GPUs and TPUs keep
    ``candidate``.

    Args:
        model: The uncompiled model, built under ``candidate``'s policy.
        candidate: What `resolve_precision` chose, and why.
        strategy: The strategy the model was built under.
        batch_size: The global batch size (part of what was measured).
        loss: The loss the model will be trained with.
        probe_data: The dataset to take the measured batch from. Defaults to
            `None` (nothing to measure on).

    Returns:
        The model to train, the decision, and the measured seconds of one
        step of it (None when nothing was measured). The model still
        computes in ``candidate``'s policy only if the decision is float32
        and no float32 copy of it could be made (`float32_twin` raised): the
        caller builds it again in float32.
    """
    if candidate.value == "float32" or device_info(strategy).kind != "cpu":
        return model, candidate, None
    replicas = max(strategy.num_replicas_in_sync, 1)
    rows = max(batch_size // replicas, 1)
    decision = too_small_for_precision(model, candidate, rows)
    cluster = _cluster_reason(strategy)
    if decision is None and cluster is not None:
        decision = _unmeasured(candidate, cluster)
    if decision is None:
        decision = _MEASURED_PRECISION.get(_architecture(model, batch_size))
    batch = probe_batch(probe_data) if decision is None else None
    if decision is None and batch is None:
        decision = _unmeasured(candidate, "there is no batch to measure")
    if decision is not None:
        _MEASURED_PRECISION.setdefault(_architecture(model, batch_size), decision)
        return _in_precision(model, decision), decision, None
    step_seconds = None
    try:
        if replicas == 1 and not isinstance(strategy, tf.distribute.MirroredStrategy):
            model, decision, step_seconds = measure_precision(model, candidate, loss, batch)
        else:
            decision = measure_one_replica(model, candidate, loss, batch, rows)
            model = _in_precision(model, decision)
    except (ValueError, TypeError, tf.errors.OpError) as exc:  # a custom layer, say
        why = f"the step could not be measured ({type(exc).__name__}: {exc})"
        decision = _unmeasured(candidate, why)
        model = _in_precision(model, decision)
    _MEASURED_PRECISION[_architecture(model, batch_size)] = decision
    return model, decision, step_seconds


def _unmeasured(candidate: Decision, why: str) -> Decision:
    return Decision(
        "float32",
        f"{candidate.reason}, but {candidate.value} is kept only when a measured step is "
        f"{PRECISION_MIN_SPEEDUP}x faster than float32, and {why}",
    )


def computes_in_float32(model: keras.Model) -> bool:
    """Whether every layer of ``model`` computes in float32."""
    return all(layer.dtype_policy.name == "float32" for layer in model.layers)


def _in_precision(model: keras.Model, decision: Decision) -> keras.Model:
    """``model`` when it already computes in ``decision``'s policy, else its
    float32 twin (``model`` itself when no twin can be made)."""
    if decision.value != "float32" or computes_in_float32(model):
        return model
    try:
        return float32_twin(model)
    except (ValueError, TypeError) as exc:
        logger.debug("No float32 twin of %r (%s): it is built again.", model.name, exc)
        return model


def remembered_precision(
    model: keras.Model, setting: str, strategy: tf.distribute.Strategy, batch_size: int
) -> Decision:
    """The precision a model built earlier computes in: the measured choice
    for its architecture (see `choose_precision`), else `resolve_precision`."""
    return _MEASURED_PRECISION.get(
        _architecture(model, batch_size), resolve_precision(setting, strategy)
    )


def _float32_config(value: Any) -> Any:
    """A layer config tree with every dtype policy set to float32."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "dtype" and (
                isinstance(item, dict)
                and item.get("class_name") in ("Policy", "DTypePolicy")
                or item in ("mixed_bfloat16", "mixed_float16")
            ):
                out[key] = "float32"
            else:
                out[key] = _float32_config(item)
        return out
    if isinstance(value, list):
        return [_float32_config(item) for item in value]
    return value


def _walk(layer: Any) -> Iterator[Any]:
    yield layer
    for sub in getattr(layer, "layers", ()):
        yield from _walk(sub)


def float32_twin(model: keras.Model) -> keras.Model:
    """An uncompiled copy of ``model`` that computes in float32, same weights.

    Built in the original's strategy scope, with the same `trainable` flags
    and kerastrain's notes (`_kerastrain*` attributes).

    Raises:
        ValueError, TypeError: When the model cannot be rebuilt from its
            config (a custom layer Keras does not know).
    """
    config = _float32_config(model.get_config())
    with model.distribute_strategy.scope():  # the copy lives where the original does
        copy = model.__class__.from_config(config)
        copy.set_weights(model.get_weights())
    # Parent first: setting a nested model's `trainable` resets its layers'.
    for original, twin in zip(_walk(model), _walk(copy)):
        twin.trainable = original.trainable
    for key, value in vars(model).items():  # kerastrain's own notes on the model
        if key.startswith("_kerastrain"):
            setattr(copy, key, value)
    return copy


def as_float32(model: keras.Model) -> keras.Model:
    """A float32 copy of a model trained under a mixed-precision policy.

    The variables of a mixed-precision model are already float32; only its
    computations are not. The copy computes in float32 with the same weights,
    which is what TFLite and most servers run (TFLite has no bfloat16
    kernels). A float32 model is returned as is.
    """
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = float32_twin(model)
    if getattr(model, "optimizer", None) is not None:
        # Same loss and metrics, a fresh optimizer of the same configuration,
        # so that `evaluate` and further `fit` calls work on the copy.
        compiled = model.get_compile_config()
        if compiled:
            with model.distribute_strategy.scope():
                copy.compile_from_config(compiled)
    logger.info(
        "Exported and evaluated in float32: the copy of the %s-trained model computes "
        "with the same weights.",
        next(
            layer.dtype_policy.name
            for layer in model.layers
            if layer.dtype_policy.name != "float32"
        ),
    )
    return copy
