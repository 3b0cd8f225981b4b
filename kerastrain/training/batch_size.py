"""``train.batch_size="auto"``: the largest batch worth its examples per second.

A short measured sweep: the model is built once, and one forward and
backward pass is timed at batch sizes 32, 64, 128, ... with one traced step
probe of `kerastrain.training.execution` (`gradient_steps`, no weight or
state changes; the fastest of three calls, `fastest_step_seconds`). The batch
keeps doubling while examples/second rises by at least `MIN_RISE`; the last
size that paid is kept. It never exceeds the training split, nor the size
that leaves `MIN_STEPS_PER_EPOCH` updates per epoch (fewer, larger updates
reach a given accuracy in more epochs), nor `MAX_BATCH_SIZE`; with too
few rows for that, it is the base batch 32 (or the training split, if smaller).

The learning rate given (the rate for the default batch, 32) is scaled by
the square root of the batch ratio, the rule that keeps the variance of an
Adam update about constant; the default schedule's warmup (`"auto"`) eases
in the larger rate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from kerastrain._keras import tf
from kerastrain.config import DistributeConfig, TrainConfig
from kerastrain.config.train import is_schedule_object
from kerastrain.data.prepare import Prepared
from kerastrain.training.execution import Decision, fastest_step_seconds, gradient_steps
from kerastrain.training.losses import make_loss
from kerastrain.training.run import build_compiled_model, make_datasets

logger = logging.getLogger(__name__)

__all__ = [
    "BASE_BATCH_SIZE",
    "MIN_RISE",
    "MIN_STEPS_PER_EPOCH",
    "MAX_BATCH_SIZE",
    "batch_size_cap",
    "pick_batch_size",
    "sweep_batch_size",
    "scaled_learning_rate",
]

#: The batch the sweep starts from and the learning rate is given for.
BASE_BATCH_SIZE = 32
#: Doubling the batch must raise examples/second by this factor to be kept.
MIN_RISE = 1.15
#: The batch leaves at least this many optimizer updates per epoch.
MIN_STEPS_PER_EPOCH = 50
MAX_BATCH_SIZE = 4096
#: A probe step slower than this ends the sweep (the call overhead that larger
#: batches amortize is a millisecond; a step this long has none left to win).
MAX_PROBE_STEP_SECONDS = 0.25
#: Measurements of each of the two sizes compared at each doubling.
ROUNDS = 3


def batch_size_cap(train_rows: int, replicas: int = 1) -> tuple[int, str]:
    """The largest batch (per replica) the sweep may choose, and why."""
    limits = {
        f"the training split ({train_rows} rows)": max(1, train_rows // max(replicas, 1)),
        f"{MIN_STEPS_PER_EPOCH} updates per epoch": max(
            1, train_rows // (MIN_STEPS_PER_EPOCH * max(replicas, 1))
        ),
        f"the sweep's limit ({MAX_BATCH_SIZE})": MAX_BATCH_SIZE,
    }
    why = min(limits, key=limits.get)
    floor = min(BASE_BATCH_SIZE, limits[f"the training split ({train_rows} rows)"])
    if limits[why] < floor:  # too few rows for 50 updates of 32: the base batch, as without "auto"
        return floor, f"the base batch {BASE_BATCH_SIZE} (or the training split, if smaller)"
    return limits[why], why


def sweep_batch_size(
    rate: Any, cap: int, *, start: int = BASE_BATCH_SIZE, rounds: int = ROUNDS
) -> tuple[int, list[tuple[int, float]], str]:
    """Doubles the batch from `start` while examples/second keeps rising.

    Each comparison measures the two sizes in turn, `rounds` times each, and
    keeps each size's best rate: on a shared machine, other processes only
    ever slow a measurement down, and alternating spreads a busy spell over
    both sizes.

    Args:
        rate: `rate(batch) -> (examples_per_second, step_seconds)`.
        cap: The largest batch allowed.
        start: The first batch measured. Defaults to `BASE_BATCH_SIZE`.
        rounds: Measurements of each size per comparison. Defaults to `ROUNDS`.

    Returns:
        The chosen batch, every `(batch, examples_per_second)` measured (the
        best of its measurements), and why the sweep stopped.
    """
    best_rates: dict[int, float] = {}
    steps: dict[int, float] = {}

    def measure(size: int) -> None:
        value, step = rate(size)
        if value > best_rates.get(size, 0.0):
            best_rates[size], steps[size] = value, step

    best = min(start, cap)
    measure(best)
    while True:
        if best * 2 > cap:
            stop = "the next size is past the cap"
            break
        if steps[best] > MAX_PROBE_STEP_SECONDS:
            stop = f"a step already takes {steps[best] * 1e3:.0f} ms"
            break
        size = best * 2
        for _ in range(rounds):
            measure(size)
            measure(best)
        if best_rates[size] < MIN_RISE * best_rates[best]:
            stop = (
                f"batch {size} gave {best_rates[size] / best_rates[best]:.2f}x the examples/s "
                f"of {best} (under {MIN_RISE:.2f}x)"
            )
            break
        best = size
    return best, sorted(best_rates.items()), stop


def scaled_learning_rate(learning_rate: Any, batch_size: int) -> tuple[Any, str]:
    """The rate for `batch_size`, given the rate for `BASE_BATCH_SIZE`:
    scaled by ``sqrt(batch_size / 32)``; a schedule object or `"find"` is
    left as it is."""
    if learning_rate == "find":
        return learning_rate, "learning_rate='find' runs its range test at this batch"
    if is_schedule_object(learning_rate):
        return learning_rate, "the learning rate is a schedule object, not scaled"
    factor = math.sqrt(batch_size / BASE_BATCH_SIZE)
    scaled = float(learning_rate) * factor
    return scaled, (
        f"learning rate {float(learning_rate):.3g} scaled by sqrt({batch_size}/"
        f"{BASE_BATCH_SIZE}) to {scaled:.3g}"
    )


def pick_batch_size(
    train: TrainConfig,
    prepared: Prepared,
    strategy: tf.distribute.Strategy,
    *,
    model_spec: Any,
    model_options: Mapping[str, Any] | None = None,
    distribute: DistributeConfig | None = None,
    seed: int | None = None,
) -> tuple[TrainConfig, Decision]:
    """Resolves ``train.batch_size="auto"`` by a measured sweep.

    A probe model is built as `run_training` builds its model (then
    discarded) and one step is timed per candidate batch on real training
    rows (`sweep_batch_size`). Under a multi-worker or parameter-server
    strategy the step cannot be measured the same way on every worker, so
    the base batch is kept.

    Args:
        train: The training options, `batch_size="auto"`.
        prepared: The prepared data.
        strategy: The distribution strategy.
        model_spec: The `model` option.
        model_options: The factory's options. Defaults to `None`.
        distribute: The distribution options. Defaults to `None`.
        seed: Seeds the probe's data pipeline. Defaults to `None`.

    Returns:
        `train` with the chosen batch size and scaled learning rate, and the
        decision with its reason.
    """
    rows = len(prepared.splits.train)
    replicas = strategy.num_replicas_in_sync
    cap, why_cap = batch_size_cap(rows, replicas)
    if isinstance(
        strategy,
        (
            tf.distribute.MultiWorkerMirroredStrategy,
            tf.distribute.experimental.ParameterServerStrategy,
        ),
    ):
        chosen, reason = (
            min(BASE_BATCH_SIZE, cap),
            (
                "multi-worker training: every worker must make the same choice, so the "
                f"base batch {BASE_BATCH_SIZE} is kept"
            ),
        )
    else:
        probe = build_compiled_model(
            train.replace(batch_size=BASE_BATCH_SIZE),
            prepared,
            strategy,
            model_spec=model_spec,
            model_options=model_options,
            batch_size=BASE_BATCH_SIZE,
            distribute=distribute,
        )
        probe_train = train.replace(batch_size=BASE_BATCH_SIZE)
        run = gradient_steps(probe, make_loss(prepared.task, train))
        traced: list[Any] = []

        def rate(size: int) -> tuple[float, float]:
            dataset, _ = make_datasets(probe_train, prepared, strategy, batch_size=size, seed=seed)
            x, y = next(iter(dataset.take(1)))
            if not traced:  # one graph for every size, its batch dimension unknown as in fit
                # A table's (or text's) features are a dict of columns: one spec each.
                specs = tf.nest.map_structure(
                    lambda t: tf.TensorSpec((None, *t.shape[1:]), t.dtype), (x, y)
                )
                traced.append(run.get_concrete_function(*specs, tf.TensorSpec([], tf.int32)))
            seconds = fastest_step_seconds(traced[0], (x, y), repeats=5)
            return size * replicas / seconds, seconds

        rate(min(BASE_BATCH_SIZE, cap))  # untimed: the first calls pay one-time costs
        chosen, measured, stop = sweep_batch_size(rate, cap)
        curve = ", ".join(f"{b}: {r:,.0f}" for b, r in measured)
        reason = f"examples/s by batch ({curve}); stopped: {stop}; at most {cap} ({why_cap})"
    lr, lr_reason = scaled_learning_rate(train.learning_rate, chosen)
    decision = Decision(chosen, f"{reason}; {lr_reason}")
    logger.info("batch_size='auto' chose %s: %s.", chosen, decision.reason)
    return train.replace(batch_size=chosen, learning_rate=lr), decision
