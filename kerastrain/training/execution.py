"""Fast by default: the ``"auto"`` policies for steps per execution and XLA.

Each decision is a pure function of measured facts (the device, the
measured cost of one training step) that returns the choice and the reason,
so it can be logged, recorded in the report, and tested alone. The step
probe (`measure_step_seconds`) never changes the model's weights or the
optimizer's state; `kerastrain.training.precision` times its precision
choice with it too.

Measured on the 2-core AVX-512/AMX development machine (TF 2.21, tf_keras):
XLA made a small CNN slower, and a small MLP runs several times faster with
many steps per execution, because each ``fit`` call into the graph costs
about a millisecond.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any, Literal

from kerastrain._keras import keras, tf

logger = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "DeviceInfo",
    "cpu_flags",
    "device_info",
    "measure_step_seconds",
    "gradient_steps",
    "fastest_step_seconds",
    "pick_steps_per_execution",
    "pick_jit",
    "configure_execution",
    "describe_decisions",
    "probe_batch",
]

#: CPU flags (from /proc/cpuinfo) that mean native bfloat16 matrix products.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Aim for at least this much work per call into the training graph.
TARGET_SECONDS_PER_EXECUTION = 0.05
MAX_STEPS_PER_EXECUTION = 128
#: Probe XLA only when the run is long enough to pay for a compilation.
JIT_PROBE_MIN_RUN_SECONDS = 60.0
#: XLA must be this much faster to be switched on.
JIT_MIN_SPEEDUP = 1.1
#: Keras callbacks that stay correct when ``fit`` runs many steps per call.
_STEP_SAFE_CALLBACKS = (
    "History",
    "ProgbarLogger",
    "BaseLogger",
    "EarlyStopping",
    "BackupAndRestore",
    "ModelCheckpoint",
    "TerminateOnNaN",
    "CSVLogger",
    "ReduceLROnPlateau",
    "LearningRateScheduler",
    "TensorBoard",
    "RemoteMonitor",
    "LambdaCallback",
)


@dataclasses.dataclass(frozen=True)
class Decision:
    """A chosen value and why it was chosen."""

    value: Any
    reason: str


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """What the training devices can do.

    Attributes:
        kind: `"tpu"`, `"gpu"` or `"cpu"`.
        gpu_capability: The smallest CUDA compute capability among the
            GPUs, or None.
        cpu_bf16: Whether the CPU has native bfloat16 instructions.
    """

    kind: Literal["tpu", "gpu", "cpu"]
    gpu_capability: tuple[int, int] | None = None
    cpu_bf16: bool = False


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass  # no /proc/cpuinfo (not Linux): no flags known
    return frozenset()


def device_info(strategy: tf.distribute.Strategy) -> DeviceInfo:
    """Inspects the devices that ``strategy`` trains on."""
    bf16 = any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return DeviceInfo("tpu", cpu_bf16=bf16)
    try:
        devices = list(strategy.extended.worker_devices)
    except RuntimeError:  # the default strategy: TensorFlow's own placement
        devices = [d.name for d in tf.config.list_logical_devices("GPU")][:1]
    if any("GPU" in d.upper() for d in devices):
        capabilities = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            if "compute_capability" in details:
                capabilities.append(tuple(details["compute_capability"]))
        return DeviceInfo("gpu", min(capabilities) if capabilities else None, bf16)
    return DeviceInfo("cpu", cpu_bf16=bf16)


#: A probe call runs enough steps to make about this much work, so that the
#: cost of calling into the graph (about a millisecond) cancels out.
PROBE_SECONDS_PER_CALL = 0.05
MAX_PROBE_STEPS = 32


def _gradient_steps(model: keras.Model, loss: Any, jit: bool) -> Any:
    """`n` forward and backward passes in one graph call. Nothing is
    assigned, so probing changes neither the weights nor any layer's state;
    the gradients are summed into the result so that none is pruned away."""

    def total(gradients: Sequence[Any]) -> tf.Tensor:
        values = [
            g.values if isinstance(g, tf.IndexedSlices) else g for g in gradients if g is not None
        ]
        return tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in values] or [0.0])

    def steps(x: Any, y: Any, n: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, acc: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=False))
            return i + 1, acc + total(tape.gradient(value, model.trainable_variables))

        return tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), tf.constant(0.0)))[1]

    return tf.function(steps, jit_compile=jit, reduce_retracing=True)


def measure_step_seconds(
    model: keras.Model, loss: Any, batch: tuple[Any, Any], *, jit: bool = False, repeats: int = 5
) -> float:
    """The time of one forward+backward pass on ``batch``, inside the graph.

    Calls that run one step and calls that run `k` steps are timed, and the
    difference divided by `k - 1`: what remains is the step itself, without
    the fixed cost of a call, which `steps_per_execution` is there to
    amortize. `k` makes a call about `PROBE_SECONDS_PER_CALL` long.

    Args:
        model: A built model.
        loss: Its loss function.
        batch: One `(x, y)` batch as the training dataset yields it.
        jit: Compile with XLA. Defaults to `False`.
        repeats: Timed pairs of calls after one untimed tracing call; the
            median is returned. Defaults to `5`.

    Returns:
        Seconds per step (the optimizer's update is not included).
    """
    run = _gradient_steps(model, loss, jit)
    x, y = batch

    def timed(n: int) -> float:
        start = time.perf_counter()
        run(x, y, tf.constant(n)).numpy()
        return time.perf_counter() - start

    timed(1)  # trace and warm up
    single = min(timed(1) for _ in range(2))
    k = int(min(max(PROBE_SECONDS_PER_CALL / max(single, 1e-6), 2), MAX_PROBE_STEPS))
    estimates = []
    for _ in range(repeats):
        one = timed(1)
        estimates.append((timed(k) - one) / (k - 1))
    return max(statistics.median(estimates), 1e-7)


def gradient_steps(model: keras.Model, loss: Any) -> Any:
    """The step probe's traced function, ``run(x, y, n)``: `n` forward and
    backward passes in one graph call, changing no weight or state. One
    function serves batches of several sizes (it is traced with relaxed
    shapes), so a sweep over batch sizes traces it about twice, not once a size."""
    return _gradient_steps(model, loss, False)


def fastest_step_seconds(run: Any, batch: tuple[Any, Any], *, repeats: int = 3) -> float:
    """Seconds per step of the fastest of `repeats` calls of `run` (from
    `gradient_steps`), each running enough steps for about
    `PROBE_SECONDS_PER_CALL` of work.

    The fastest call, not the median: other processes on the machine only
    ever add time, and a ratio of two sizes' medians under such noise can
    come out at any value (`measure_step_seconds`' difference of two calls
    is finer for the step alone, but not for comparing sizes on a busy
    machine). The cost of the call is shared by its steps, as
    `steps_per_execution` shares it in training.
    """
    x, y = batch

    def timed(n: int) -> float:
        start = time.perf_counter()
        run(x, y, tf.constant(n)).numpy()
        return time.perf_counter() - start

    timed(1)  # trace (the first sizes) and warm up
    single = min(timed(1) for _ in range(2))
    k = int(min(max(PROBE_SECONDS_PER_CALL / max(single, 1e-6), 2), MAX_PROBE_STEPS))
    return max(min(timed(k) for _ in range(repeats)) / k, 1e-7)


def _needs_every_step(callbacks: Sequence[Any]) -> list[str]:
    """Names of callbacks that override a per-batch hook and are not known
    to stay correct when several steps run per call."""
    hooks = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
    names = []
    for callback in callbacks:
        cls = type(callback)
        if cls.__name__ in _STEP_SAFE_CALLBACKS:
            continue
        if getattr(callback, "kerastrain_step_safe", False):
            continue
        if any(getattr(cls, h, None) is not getattr(keras.callbacks.Callback, h) for h in hooks):
            names.append(cls.__name__)
    return names


def pick_steps_per_execution(
    step_seconds: float, steps_per_epoch: int, callbacks: Sequence[Any] = ()
) -> Decision:
    """How many training steps each call into the graph runs.

    Enough steps that a call takes about `TARGET_SECONDS_PER_EXECUTION`, at
    most an epoch and `MAX_STEPS_PER_EXECUTION`; 1 when a callback needs
    every step (TF-MOT's `UpdatePruningStep` counts calls, not steps).

    Args:
        step_seconds: Measured seconds per step.
        steps_per_epoch: Steps in one epoch.
        callbacks: The fit's callbacks. Defaults to `()`.

    Returns:
        The number of steps per execution and the reason.
    """
    blocking = _needs_every_step(callbacks)
    if blocking:
        return Decision(1, f"callback {blocking[0]} runs on every step")
    wanted = int(TARGET_SECONDS_PER_EXECUTION / max(step_seconds, 1e-6))
    value = max(1, min(wanted, steps_per_epoch, MAX_STEPS_PER_EXECUTION))
    return Decision(
        value,
        f"a step takes {step_seconds * 1e3:.2f} ms: {value} step(s) per call "
        f"make about {value * step_seconds * 1e3:.0f} ms of work per call",
    )


def pick_jit(device: DeviceInfo, *, run_seconds: float, probe: Any = None) -> Decision:
    """Whether to compile the training step with XLA.

    On for TPUs (they need it). Elsewhere, off unless a probe shows XLA at
    least `JIT_MIN_SPEEDUP` times faster; the probe (an XLA compilation) runs
    only when the run is long enough to pay for it.

    Args:
        device: The training devices.
        run_seconds: The estimated length of training without XLA.
        probe: `probe() -> (seconds_without, seconds_with)`, called only
            when worth it. Defaults to `None` (no probe: off).

    Returns:
        `True` or `False` and the reason.
    """
    if device.kind == "tpu":
        return Decision(True, "TPUs run XLA-compiled steps")
    if probe is None or run_seconds < JIT_PROBE_MIN_RUN_SECONDS:
        length = "under a second" if run_seconds < 1 else f"about {run_seconds:.0f} s"
        return Decision(
            False,
            f"training is estimated at {length} on {device.kind.upper()}, too short to "
            f"pay for an XLA compilation (probed from {JIT_PROBE_MIN_RUN_SECONDS:.0f} s)",
        )
    try:
        without, with_xla = probe()
    except (ValueError, TypeError, RuntimeError, tf.errors.OpError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Decision(False, f"XLA could not compile the step ({type(exc).__name__}: {first})")
    speedup = without / max(with_xla, 1e-9)
    if speedup >= JIT_MIN_SPEEDUP:
        return Decision(True, f"XLA probe: {speedup:.2f}x faster per step")
    return Decision(False, f"XLA probe: {speedup:.2f}x per step, not worth it")


def probe_batch(dataset: Any) -> tuple[Any, Any] | None:
    """One `(x, y)` batch of a tf.data dataset, or None when there is none to
    take (a parameter-server `DatasetCreator`, an empty dataset)."""
    if not isinstance(dataset, tf.data.Dataset):
        return None
    for batch in dataset.take(1):
        return batch[0], batch[1]
    return None


def configure_execution(
    model: keras.Model,
    dataset: Any,
    train: Any,
    callbacks: Sequence[Any],
    *,
    epochs: int,
    steps_per_epoch: int | None = None,
    probe_dataset: Any = None,
    step_seconds: float | None = None,
) -> dict[str, Decision]:
    """Resolves `"auto"` `steps_per_execution` and `jit_compile` on a compiled model.

    Measures one forward and backward pass on a real batch (see
    `measure_step_seconds`: no weight or state changes) and applies the
    decisions before `fit` builds its training function.

    Args:
        model: The compiled model, not yet fitted with these settings.
        dataset: The training dataset.
        train: The training options (`execution.steps_per_execution`,
            `execution.jit_compile`).
        callbacks: Every callback the fit will run.
        epochs: Epochs the fit will run.
        steps_per_epoch: Steps of an epoch when the dataset does not say.
            Defaults to `None`.
        probe_dataset: Where to take the measured batch from, when not the
            training dataset: iterating a reshuffling dataset once more would
            change the order of the epochs that follow. Defaults to `None`.
        step_seconds: A step of this model already measured on this data
            (`measure_precision` measured one): not measured again. Defaults
            to `None`.

    Returns:
        The decisions taken, by option name (empty when nothing was `"auto"`).
    """
    want_steps = train.execution.steps_per_execution == "auto"
    want_jit = train.execution.jit_compile == "auto"
    if not (want_steps or want_jit):
        return {}
    strategy = model.distribute_strategy
    steps = steps_per_epoch
    if steps is None and isinstance(dataset, tf.data.Dataset):
        cardinality = int(dataset.cardinality())
        steps = cardinality if cardinality > 0 else None
    decisions: dict[str, Decision] = {}
    blocking = _needs_every_step(callbacks)
    batch = None
    if isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        reason = "parameter-server training: the step runs on remote workers"
        step_seconds = None
    elif isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Each worker would measure its own step; differing choices would
        # desynchronize their collective operations.
        reason = "multi-worker training: every worker must make the same choice"
        step_seconds = None
    elif want_steps and not blocking and (steps or 1) > 1 or want_jit:
        if step_seconds is None or want_jit:
            batch = probe_batch(probe_dataset if probe_dataset is not None else dataset)
        reason = "no batch to measure"
    if batch is not None and step_seconds is None:
        try:
            step_seconds = measure_step_seconds(model, keras.losses.get(model.loss), batch)
        except (ValueError, TypeError, RuntimeError, tf.errors.OpError) as exc:
            reason = f"the step could not be measured ({type(exc).__name__}: {exc})"
    if want_steps:
        if blocking:
            decision = Decision(1, f"callback {blocking[0]} runs on every step")
        elif steps is None:
            # tf_keras cannot run several steps per call over data of unknown length.
            decision = Decision(1, "the number of steps in an epoch is unknown")
        elif steps == 1:
            decision = Decision(1, "an epoch is one step")
        elif step_seconds is None:
            decision = Decision(1, reason)
        else:
            decision = pick_steps_per_execution(step_seconds, steps, callbacks)
        # tf_keras keeps steps_per_execution in a variable that its own
        # "auto" tuner assigns the same way; fit reads it at every call.
        model._steps_per_execution.assign(decision.value)
        decisions["steps_per_execution"] = decision
    if want_jit:
        device = device_info(strategy)
        if step_seconds is None and device.kind != "tpu":
            decision = Decision(False, reason)
        # a subclassed model (a distiller) has no `inputs`: its probe decides
        elif any(t.dtype == tf.string for t in tf.nest.flatten(model.inputs or [])):
            decision = Decision(
                False,
                "the model takes strings (text or category columns), whose ops XLA cannot compile",
            )
        else:
            run_seconds = (step_seconds or 0.0) * (steps or 1) * max(epochs, 1)
            decision = pick_jit(
                device,
                run_seconds=run_seconds,
                probe=lambda: (
                    step_seconds,
                    measure_step_seconds(model, keras.losses.get(model.loss), batch, jit=True),
                ),
            )
        model._jit_compile = bool(decision.value)
        model.train_function = None  # rebuilt by fit with the new setting
        decisions["jit_compile"] = decision
    for name, decision in decisions.items():
        logger.info("%s='auto' chose %s: %s.", name, decision.value, decision.reason)
    return decisions


def describe_decisions(decisions: dict[str, Decision]) -> dict[str, str]:
    """Report lines: ``{"steps_per_execution": "50 (a step takes ...)"}``; a
    decision whose value is a mapping (the accuracy milestones) by its reason,
    which says the same in words."""
    return {
        name: d.reason if isinstance(d.value, dict) else f"{d.value} ({d.reason})"
        for name, d in decisions.items()
    }
