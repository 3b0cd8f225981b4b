"""The tf_keras trial runner: a `keras_tuner.Tuner` whose trials are
kerastrain's own training runs.

KerasTuner's stock `Tuner` refuses tf_keras models, so `TrialRunner`
overrides `run_trial` (a new config per trial, then `run_training`, the
function the final fit calls too), `save_model`/`load_model` (tf_keras
checkpoints) and the trial hooks (progress, freeing memory). The oracles,
their saved state, resume and the chief/worker protocol are KerasTuner's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import keras_tuner as kt
import numpy as np
from keras_tuner.src import config as kt_config
from keras_tuner.src import utils as kt_utils
from tensorflow.python.framework import ops as tf_ops

from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig
from kerastrain.data.feed import InMemory
from kerastrain.data.prepare import Prepared
from kerastrain.errors import message
from kerastrain.files import atomic_write, write_json
from kerastrain.metrics import compute_metrics
from kerastrain.training import build_compiled_model, predict_split, run_training
from kerastrain.tune.space import Space, plain_values, trial_config

logger = logging.getLogger(__name__)

__all__ = [
    "TrialRunner",
    "TrialContext",
    "make_oracle",
    "release_trial_gradients",
    "atomic_state_files",
    "heal_interrupted",
    "RECORD",
    "rss_mb",
]

#: Per-trial facts kerastrain adds next to KerasTuner's ``trial.json``.
RECORD = "kerastrain.json"


def rss_mb() -> float | None:
    """This process's resident memory in MiB (Linux), else None."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_oracle(
    algorithm: str,
    *,
    objective: dict[str, str],
    hyperparameters: kt.HyperParameters,
    max_trials: int,
    max_epochs: int,
    seed: int,
    max_consecutive_failures: int,
    hyperband_factor: int = 3,
    hyperband_iterations: int = 1,
) -> kt.Oracle:
    """KerasTuner's oracle for ``algorithm`` over the discovered space.

    Bayesian optimization starts from `max(2, min(3 * dims, max_trials // 2))`
    random points, so that the Gaussian process proposes the rest even
    within a small budget. Hyperband stops at `max_trials` too.
    """
    common = dict(
        objective=kt.Objective(objective["name"], objective["direction"]),
        hyperparameters=hyperparameters,
        seed=seed,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=max_consecutive_failures,
    )
    if algorithm == "random":
        return kt.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if algorithm == "grid":
        return kt.oracles.GridSearchOracle(max_trials=max_trials, **common)
    if algorithm == "bayesian":
        dims = sum(1 for p in hyperparameters.space if type(p).__name__ != "Fixed")
        initial = max(2, min(3 * dims, max_trials // 2))
        return kt.oracles.BayesianOptimizationOracle(
            max_trials=max_trials, num_initial_points=initial, **common
        )
    oracle = kt.oracles.HyperbandOracle(
        max_epochs=max_epochs,
        factor=hyperband_factor,
        hyperband_iterations=hyperband_iterations,
        **common,
    )
    oracle.max_trials = max_trials
    return oracle


class _ValidationMetrics(keras.callbacks.Callback):
    """Adds scikit-learn validation metrics Keras does not log (``val_f1``...).

    Runs before the callbacks that read them (early stopping on them is not
    supported; the tuner's checkpoint and `History` see them).
    """

    def __init__(self, prepared: Prepared, memory: InMemory, names: Sequence[str]):
        super().__init__()
        self.prepared, self.memory = prepared, memory
        self.y = prepared.training_targets[prepared.splits.val]  # what the model predicts
        self.names = tuple(names)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        if logs is None:
            return
        outputs = predict_split(self.model, self.prepared, "val", self.memory)
        scores = compute_metrics(self.prepared.task, self.y, outputs)
        for name in self.names:
            value = scores.get(name[len("val_") :])
            logs[name] = float("nan") if value is None else float(value)


class _SaveBest(keras.callbacks.Callback):
    """Saves the weights of the best epoch so far (a tf_keras checkpoint)."""

    def __init__(self, objective: dict[str, str], path: str):
        super().__init__()
        self.name, self.direction, self.path = objective["name"], objective["direction"], path
        self.best: float | None = None

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        value = (logs or {}).get(self.name)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        better = self.best is None or (
            value < self.best if self.direction == "min" else value > self.best
        )
        if better:
            self.best = value
            self.model.save_weights(self.path)


@contextlib.contextmanager
def release_trial_gradients() -> Iterator[None]:
    """Forgets the gradient functions a trial registered in TensorFlow.

    `tf.custom_gradient` (used by the replica all-reduce of every tf_keras
    optimizer step) registers one gradient function per traced call in
    TensorFlow's global gradient registry and never removes it; each entry
    keeps its training graph alive, about 2-5 MB per trial here, whatever
    `clear_session` does (tf-keras issue #286). The entries added during a
    trial belong to that trial's graphs only, so they are dropped after it.
    """
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for key in [k for k in registry if k not in before]:
                if str(key).startswith("CustomGradient-"):
                    del registry[key]


@contextlib.contextmanager
def atomic_state_files() -> Iterator[None]:
    """Makes KerasTuner write its state files (``oracle.json``, ``trial.json``,
    the tuner's) to a temporary name and rename them into place.

    KerasTuner writes them in place, so a search killed during a write would
    leave a truncated file that no rerun can read.
    """
    original = kt_utils.save_json

    def save_json(path: Any, obj: Any) -> str:
        if "://" in str(path):  # a remote file system: KerasTuner's own writer
            return original(path, obj)
        text = json.dumps(obj)
        atomic_write(path, text)
        return text

    kt_utils.save_json = save_json
    try:
        yield
    finally:
        kt_utils.save_json = original


def heal_interrupted(oracle: kt.Oracle) -> list[str]:
    """Keeps a reloaded oracle from rerunning trials that had ended.

    KerasTuner saves a finished trial, then the oracle; a search killed
    between the two reloads that trial as "ongoing" and would run it again.

    Returns:
        The ids of the trials taken off the retry queue.
    """
    ended = ("COMPLETED", "FAILED")
    healed = [t for t in oracle._retry_queue if str(oracle.trials[t].status) in ended]
    if healed:
        oracle._retry_queue = [t for t in oracle._retry_queue if t not in healed]
        oracle.end_order.extend(t for t in healed if t not in oracle.end_order)
    return healed


def _reason(exc: BaseException) -> str:
    if isinstance(exc, kt.errors.FailedTrialError):
        return str(exc)
    if isinstance(exc, tf.errors.ResourceExhaustedError):
        return "out of memory: " + str(exc).strip().splitlines()[0][:300]
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


@dataclasses.dataclass
class TrialContext:
    """What every trial shares: the base config, data, strategy and space.

    Attributes:
        config: The run's config; each trial replaces the tuned options.
        prepared: The prepared data.
        strategy: The distribution strategy.
        space: The search space.
        parts: The data each trial trains on: the prepared data, or one
            `Prepared` per cross-validation fold.
        memories: The tensors of each part, built once for every trial.
        cross_validated: Whether `parts` are folds (no checkpoint is kept).
        computed: Validation metrics computed by scikit-learn each epoch.
        epochs: Epochs of a trial when neither Hyperband nor the space says.
    """

    config: PipelineConfig
    prepared: Prepared
    strategy: Any
    space: Space
    parts: list[Prepared]
    memories: list[InMemory]
    cross_validated: bool
    computed: tuple[str, ...]
    epochs: int

    @property
    def objective(self) -> dict[str, str]:
        return self.config.tune.objective

    def run(self, runner: TrialRunner, trial: kt.engine.trial.Trial) -> dict[str, float]:
        """Trains the trial's configuration; returns the objective.

        Raises:
            keras_tuner.errors.FailedTrialError: With the reason, for a trial
                that failed (non-finite loss, out of memory, a refused value).
            keras_tuner.errors.FatalValueError: When training does not log
                the objective at all (the search cannot go on).
        """
        hp = trial.hyperparameters
        record: dict[str, Any] = {
            "trial": trial.trial_id,
            "values": plain_values(hp),
            "tuner": runner.tuner_id,
            "started": time.time(),
        }
        for key in ("bracket", "round", "trial_id"):
            if f"tuner/{key}" in hp.values:
                record["parent" if key == "trial_id" else key] = hp.values[f"tuner/{key}"]
        start = time.perf_counter()
        try:
            with release_trial_gradients():
                score = self._train(runner, trial, record)
        except kt.errors.FatalError:
            raise
        except Exception as exc:  # a failed trial must not end the search
            record.update(status="FAILED", reason=_reason(exc))
            logger.debug("Trial %s failed.", trial.trial_id, exc_info=True)
            raise kt.errors.FailedTrialError(record["reason"]) from exc
        else:
            record.update(status="COMPLETED", score=score)
        finally:
            keras.backend.clear_session()
            gc.collect()  # cheap: the objects from before the search are frozen
            record.update(duration_s=round(time.perf_counter() - start, 3), rss_mb=rss_mb())
            write_json(Path(runner.get_trial_dir(trial.trial_id)) / RECORD, record)
        return {self.objective["name"]: score}

    def _train(self, runner: TrialRunner, trial: Any, record: dict[str, Any]) -> float:
        hp = trial.hyperparameters
        config = trial_config(self.config, self.space, hp)
        # Hyperband's budget, else the tuned epochs, else tune.max_epochs (or train.epochs).
        epochs = int(
            hp.values.get("tuner/epochs")
            or (config.train.epochs if "epochs" in record["values"] else self.epochs)
        )
        initial = int(hp.values.get("tuner/initial_epoch", 0))
        parent = hp.values.get("tuner/trial_id")
        record.update(epochs=epochs, initial_epoch=initial, epochs_run=0)
        saver = (
            None
            if self.cross_validated
            else _SaveBest(self.objective, runner.checkpoint_path(trial.trial_id))
        )
        scores = []
        for execution in range(self.config.tune.executions):
            for part, memory in zip(self.parts, self.memories):
                # Before entering the strategy scope (MirroredStrategy needs it).
                keras.backend.clear_session()
                keras.utils.set_random_seed(config.seed + execution)
                model = None
                if parent is not None:
                    model = self._build(config, part)
                    model.load_weights(runner.checkpoint_path(parent)).expect_partial()
                callbacks: list[keras.callbacks.Callback] = []
                if self.computed:
                    callbacks.append(_ValidationMetrics(part, memory, self.computed))
                if saver is not None:
                    callbacks.append(saver)
                model, fit = run_training(
                    config.train,
                    part,
                    self.strategy,
                    model_spec=config.model,
                    model_options=config.model_options,
                    batch_size=config.batch_size,
                    seed=config.seed,
                    distribute=config.distribute,
                    epochs=epochs,
                    initial_epoch=initial,
                    model=model,
                    callbacks=callbacks,
                    memory=memory,
                )
                del model
                record["epochs_run"] += fit.epochs_run
                # A loss the blow-up guard could not save raised TrainingDivergedError;
                # with the guard off, a non-finite loss fails the trial here.
                losses = np.asarray(fit.history.get("loss", []), dtype=np.float64)
                if not np.isfinite(losses).all():
                    epoch = int(np.flatnonzero(~np.isfinite(losses))[0]) + initial + 1
                    raise kt.errors.FailedTrialError(
                        f"the training loss became {losses[epoch - initial - 1]} at epoch {epoch}"
                    )
                scores.append(self._best(fit.history))
        if len(scores) > 1:
            record["scores"] = scores
        return float(np.mean(scores))

    def _best(self, history: dict[str, list[float]]) -> float:
        name, direction = self.objective["name"], self.objective["direction"]
        if name not in history:
            raise kt.errors.FatalValueError(  # KerasTuner stops the search on it
                message(
                    "The objective was not logged by training",
                    received={"tune.objective.name": name},
                    allowed=f"Logged: {', '.join(sorted(history))}; choose one of them as "
                    "tune.objective",
                    candidates=sorted(history),
                )
            )
        values = np.asarray(history[name], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if not len(finite):
            raise kt.errors.FailedTrialError(f"{name} was never finite ({values.tolist()})")
        return float(finite.min() if direction == "min" else finite.max())

    def load(self, runner: TrialRunner, trial: Any) -> keras.Model:
        """The trial's model with its best epoch's weights."""
        keras.backend.clear_session()
        config = trial_config(self.config, self.space, trial.hyperparameters)
        model = self._build(config, self.prepared)
        model.load_weights(runner.checkpoint_path(trial.trial_id)).expect_partial()
        return model

    def _build(self, config: PipelineConfig, part: Prepared) -> keras.Model:
        """The trial's model, compiled as `run_training` builds it."""
        return build_compiled_model(
            config.train,
            part,
            self.strategy,
            model_spec=config.model,
            model_options=config.model_options,
            batch_size=config.batch_size,
            distribute=config.distribute,
        )


class TrialRunner(kt.Tuner):
    """Runs KerasTuner trials with kerastrain's training (tf_keras models).

    Args:
        oracle: A KerasTuner oracle (or, in a worker, one that the chief's
            oracle will stand in for).
        context: What the trials share.
        directory: The search folder; trials live in `directory/trials`.
        progress: Logs each trial's start and end.
    """

    def __init__(self, oracle: kt.Oracle, context: TrialContext, directory: Path, progress: Any):
        self.context = context
        self.progress = progress
        super().__init__(
            oracle=oracle, directory=str(directory), project_name="trials", overwrite=False
        )
        self.oracle.verbose = 0  # kerastrain logs progress itself
        create = self.oracle.create_trial

        def create_trial(tuner_id: str) -> Any:
            trial = create(tuner_id)
            if trial.status == kt.engine.trial.TrialStatus.IDLE:
                time.sleep(0.5)  # the oracle waits on another worker: do not spin
            return trial

        self.oracle.create_trial = create_trial

    def search(self, *args: Any, **kwargs: Any) -> None:
        """KerasTuner's search loop, without its printed tracebacks (a failed
        trial's reason is logged and kept in the results instead), with the
        objects that existed before the search frozen for the garbage
        collector, so that freeing each trial's graphs costs milliseconds."""
        previous, kt_config.DEBUG = kt_config.DEBUG, False
        gc.collect()
        gc.freeze()  # the collection after each trial then skips TensorFlow's own objects
        try:
            with atomic_state_files():
                super().search(*args, **kwargs)
        finally:
            gc.unfreeze()
            kt_config.DEBUG = previous

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
        return self.context.run(self, trial)

    def checkpoint_path(self, trial_id: str) -> str:
        """The tf_keras checkpoint prefix of a trial's best weights."""
        return os.path.join(self.get_trial_dir(trial_id), "checkpoint")

    def save_model(self, trial_id: str, model: keras.Model, step: int = 0) -> None:
        model.save_weights(self.checkpoint_path(trial_id))

    def load_model(self, trial: Any) -> keras.Model:
        return self.context.load(self, trial)

    def on_trial_begin(self, trial: Any) -> None:
        self.progress.begin(trial)

    def on_trial_end(self, trial: Any) -> None:
        try:
            super().on_trial_end(trial)
        finally:
            self.progress.end(trial, self.oracle, self.get_trial_dir(trial.trial_id))
