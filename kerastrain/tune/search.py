"""The tuning stage: open (or resume) a search, run it, pick the best.

`tune_stage` is what `fit_pipeline` calls; `run_search` is the same search
with an explicit folder and, optionally, worker processes (the chief serves
the oracle, see `kerastrain.tune.distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain import logs
from kerastrain._keras import keras, tf
from kerastrain.config import PipelineConfig
from kerastrain.data.feed import InMemory
from kerastrain.data.prepare import Prepared, prepare_data
from kerastrain.data.split import Splits, fold_indices
from kerastrain.errors import ConfigError, DataError, TuningError, message
from kerastrain.files import write_json
from kerastrain.training.losses import make_metrics
from kerastrain.tune.distributed import serve
from kerastrain.tune.results import FIXED_COLUMNS, plot_scores, trial_rows, write_table
from kerastrain.tune.runner import RECORD, TrialContext, TrialRunner, heal_interrupted, make_oracle
from kerastrain.tune.space import Space, check_model_options, plain_values, trial_config

logger = logging.getLogger(__name__)

__all__ = [
    "TuneResult",
    "tune_stage",
    "run_search",
    "open_search",
    "search_command",
    "hyperband_trials",
]

FINGERPRINT = "search.json"
#: Validation metrics computed with scikit-learn when an objective asks.
COMPUTED = {
    "classification": ("accuracy", "precision", "recall", "f1", "roc_auc"),
    "regression": ("mae", "rmse", "r2"),
}


@dataclasses.dataclass
class TuneResult:
    """What a search produced.

    Attributes:
        best_values: The best trial's option values.
        best_score: Its objective value.
        best_trial: Its trial id.
        config: The run's config with the best values: train with it.
        rows: One mapping per trial (values, score, status, epochs, ...).
        objective: `{"name", "direction"}`.
        algorithm: The oracle.
        directory: The search folder (its state lets a rerun resume).
        table_path: The CSV of `rows`.
        plot_path: The PNG of the score by trial (and by bracket).
        seconds: Time spent searching in this call.
    """

    best_values: dict[str, Any]
    best_score: float
    best_trial: str
    config: PipelineConfig
    rows: list[dict[str, Any]]
    objective: dict[str, str]
    algorithm: str
    directory: Path
    table_path: Path
    plot_path: Path | None
    seconds: float

    @property
    def epochs_spent(self) -> int:
        """Training epochs over every trial (folds and executions included)."""
        return int(sum(r["epochs_run"] or 0 for r in self.rows))

    def summary(self) -> dict[str, Any]:
        """The search as plain, JSON-ready data (written as ``tuning.json``)."""
        counts: dict[str, int] = {}
        for row in self.rows:
            counts[row["status"]] = counts.get(row["status"], 0) + 1
        return {
            "algorithm": self.algorithm,
            "objective": dict(self.objective),
            "best": {
                "trial": self.best_trial,
                "score": self.best_score,
                "values": dict(self.best_values),
            },
            "trials": counts,
            "epochs_spent": self.epochs_spent,
            "seconds": round(self.seconds, 2),
            "rows": [dict(r) for r in self.rows],
            "table": str(self.table_path),
            "directory": str(self.directory),
            "plots": [str(p) for p in [self.plot_path] if p is not None],
        }

    def report_section(self) -> dict[str, Any]:
        """The report's tuning section: the fields of `kerastrain.report.Section`
        (title, text, rows, images, key)."""
        counts = self.summary()["trials"]
        values = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.best_values.items()
        )
        text = (
            f"{self.algorithm.capitalize()} search over {len(self.rows)} trials "
            f"({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}), "
            f"{self.epochs_spent} training epochs in {self.seconds:.0f}s. Best "
            f"{self.objective['name']} {self.best_score:.4g} (trial {self.best_trial}): "
            f"{values}. The final model was trained with these values. Every trial is in "
            f"{self.table_path.name}; the search state (rerun to resume) is in "
            f"{self.directory}."
        )
        keep = ("trial", "status", "score", "epochs_run", "duration_s", "reason")
        params = [k for k in self.rows[0] if k not in FIXED_COLUMNS] if self.rows else []
        rows = [
            {
                k: r.get(k)
                for k in ("trial", "status", "score", *params, *keep[3:])
                if k in keep or k in params
            }
            for r in self.rows
        ]
        return {
            "title": "Hyper-parameter search",
            "text": text,
            "rows": rows,
            "images": [p for p in [self.plot_path] if p is not None],
            "key": "tuning",
        }


def hyperband_trials(max_epochs: int, factor: int, iterations: int) -> int:
    """Trials of a full Hyperband sweep, by KerasTuner's bracket formulas."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    total = sum(
        math.ceil(end_size / (b + 1) * factor ** (b - r))
        for b in range(brackets)
        for r in range(b + 1)
    )
    return total * iterations


class Progress:
    """Logs each trial's start ("Trial n of N: values") and end ("Trial n/N: "): its score, the
    best so far, and the time left at the pace of the trials ended so far
    (`kerastrain.logs.Progress`)."""

    def __init__(self, total: int, objective: dict[str, str], approximate: bool = False):
        self.objective = objective
        self.ended = 0
        self.lines = logs.Progress(logger, "Trial", total, every=0, approximate=approximate)

    @property
    def total(self) -> str:
        """The number of trials as written (``"~N"`` when approximate)."""
        return self.lines.total_text

    def resumed(self, ended: int) -> None:
        """Counts the trials a resumed search had already ended (not in its pace)."""
        self.ended = self.lines.done_before = ended

    def _number(self, trial: Any) -> str:
        try:
            return str(int(trial.trial_id) + 1)
        except ValueError:
            return str(trial.trial_id)

    def begin(self, trial: Any) -> None:
        values = plain_values(trial.hyperparameters)
        epochs = trial.hyperparameters.values.get("tuner/epochs")
        initial = trial.hyperparameters.values.get("tuner/initial_epoch", 0)
        extra = f" (epochs {initial}->{epochs})" if epochs else ""
        logger.info(
            "Trial %s of %s%s: %s",
            self._number(trial),
            self.total,
            extra,
            ", ".join(f"{k}={_short(v)}" for k, v in values.items()),
        )

    def end(self, trial: Any, oracle: Any, trial_dir: str) -> None:
        name = self.objective["name"]
        try:
            record = json.loads((Path(trial_dir) / RECORD).read_text())
        except (OSError, ValueError):
            record = {}
        if record.get("status") == "COMPLETED":
            outcome = f"{name}={record['score']:.4g}"
        else:
            outcome = f"FAILED ({record.get('reason') or 'see its trial.json'})"
        best = [t for t in oracle.get_best_trials(1) if str(t.status) == "COMPLETED"]
        best_text = (
            f"best so far {best[0].score:.4g} (trial {best[0].trial_id})"
            if best
            else "no trial completed yet"
        )
        self.ended += 1
        self.lines.update(
            self.ended,
            f"{outcome} in {record.get('duration_s', float('nan')):.1f}s; {best_text}",
            position=self._number(trial),
        )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _computed_metrics(config: PipelineConfig, prepared: Prepared) -> tuple[str, ...]:
    """Checks the objective is produced; returns what scikit-learn must add.

    Raises:
        ConfigError: Naming the objective and the quantities available.
    """
    tune, task = config.tune, prepared.task
    name = tune.objective_name
    has_val = bool(len(prepared.splits.val)) or tune.cv_folds is not None
    logged = ["loss"] + [m.name for m in make_metrics(task, config.train)]
    kind = "regression" if task.kind == "regression" else "classification"
    computed = [c for c in COMPUTED[kind] if c not in logged]
    available = list(logged)
    if has_val:
        available += [f"val_{n}" for n in logged] + [f"val_{n}" for n in computed]
    if name not in available:
        hint = ""
        if name.startswith("val_") and not has_val and name[4:] in logged + computed:
            hint = (
                " It needs a validation split: set data_options.validation_split > 0 or "
                "tune.cv_folds."
            )
        raise ConfigError(
            message(
                f"The objective {name!r} ('tune.objective') is not a quantity training "
                f"produces for this {task.kind} task.{hint}",
                received={"tune.objective.name": name},
                allowed=f"Available: {', '.join(available)}",
                candidates=available,
            )
        )
    return (name,) if name[4:] in computed and name.startswith("val_") else ()


def _folds(prepared: Prepared, k: int, seed: int) -> list[Prepared]:
    """k folds of the training and validation rows (stratified by class, as
    `cross_validate` folds them), each with its standardization and column
    encodings refitted on its training rows. The test rows stay out.

    Raises:
        DataError: When a class has fewer than k rows.
    """
    rows = np.sort(np.concatenate([prepared.splits.train, prepared.splits.val]))
    try:
        pairs = fold_indices(prepared.y[rows], prepared.task, prepared.options, k, seed)
    except DataError as exc:
        raise DataError(
            message(f"tune.cv_folds={k} cannot split the training and validation rows: {exc}")
        ) from None
    return [
        prepared.with_splits(Splits(train=rows[train], val=rows[held], test=prepared.splits.test))
        for train, held in pairs
    ]


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "space":
            continue
        if old.get(key) != new.get(key):
            changes.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    before, after = old.get("space", {}), new.get("space", {})
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    changed = [n for n in after if n in before and after[n] != before[n]]
    if added:
        changes.append("added " + ", ".join(added))
    if removed:
        changes.append("removed " + ", ".join(removed))
    for n in changed:
        diff = {
            k: (before[n].get(k), after[n].get(k))
            for k in set(before[n]) | set(after[n])
            if before[n].get(k) != after[n].get(k)
        }
        changes.append(
            f"changed {n}: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in diff.items())
        )
    return changes


def _check_fingerprint(directory: Path, fingerprint: dict[str, Any], role: str) -> bool:
    """Writes the search's fingerprint, or checks it against the saved one.

    Returns:
        Whether the folder already held a search (a resume).

    Raises:
        ConfigError: When the space or the meaning of the scores changed.
    """
    path = directory / FINGERPRINT
    if path.exists():
        saved = json.loads(path.read_text())
        changes = _differences(saved, fingerprint)
        if changes:
            raise ConfigError(
                message(
                    f"The search in {str(directory)!r} was started with another search space "
                    f"or scoring, so its trials cannot be resumed: {'; '.join(changes)}",
                    allowed="Use a new 'tune.directory', restore the original space, or set "
                    "'tune.overwrite: true' to discard the saved trials",
                )
            )
        return True
    if role == "worker":
        raise ConfigError(
            message(
                "There is no search to join: its chief has not started it",
                received={"directory": str(directory)},
            )
        )
    directory.mkdir(parents=True, exist_ok=True)
    write_json(path, fingerprint)
    return False


@dataclasses.dataclass
class Search:
    """An opened search: the runner (tuner), its space and folder."""

    runner: TrialRunner
    space: Space
    directory: Path
    resumed: bool

    @property
    def oracle(self) -> Any:
        return self.runner.oracle


def open_search(
    config: PipelineConfig, prepared: Prepared, strategy: Any, *, role: str = "main"
) -> Search:
    """Checks everything, then opens (or resumes) the search in `tune.directory`.

    Args:
        config: The run's config, with `tune.directory` set.
        prepared: The prepared data.
        strategy: The distribution strategy of every trial.
        role: `"main"` (trials run here), `"chief"` (serves the oracle) or
            `"worker"` (asks the chief for trials). Defaults to `"main"`.

    Returns:
        The opened search.

    Raises:
        ConfigError: For an unknown model option, an objective that training
            does not produce, or a space that differs from the saved one.
        DataError: When `cv_folds` cannot split the data.
    """
    tune = config.tune
    if isinstance(
        strategy,
        (
            tf.distribute.MultiWorkerMirroredStrategy,
            tf.distribute.experimental.ParameterServerStrategy,
        ),
    ):
        raise ConfigError(
            message(
                f"Tuning runs its trials in one process, not across a "
                f"{type(strategy).__name__} cluster",
                allowed="Search with `kerastrain tune --workers N CONFIG.yaml` (one trial per "
                "worker process), then train the best values on the cluster without 'tune'",
            )
        )
    directory = Path(tune.directory)
    if tune.overwrite and role != "worker" and directory.exists():
        logger.info("tune.overwrite: discarding the search in %s.", directory)
        shutil.rmtree(directory)
    task = prepared.task
    space = Space(
        tune,
        {
            "input_shape": prepared.feature_shape,
            "num_outputs": task.output_units,
            "output_activation": task.output_activation,
        },
    )
    hyperparameters = space.discover()
    check_model_options(
        config, hyperparameters, prepared.feature_shape, space.returns_model, prepared.has_text
    )
    computed = _computed_metrics(config, prepared)
    parts = _folds(prepared, tune.cv_folds, config.seed) if tune.cv_folds else [prepared]
    shared = InMemory(prepared.x, prepared.training_targets)
    memories = [
        shared
        if p.target_scaler is prepared.target_scaler  # else: refit per fold
        else InMemory(p.x, p.training_targets)
        for p in parts
    ]
    max_epochs = tune.max_epochs or config.train.epochs
    fingerprint = {
        **space.fingerprint(hyperparameters),
        "seed": config.seed,
        "max_epochs": max_epochs if tune.algorithm == "hyperband" else None,
    }
    resumed = _check_fingerprint(directory, fingerprint, role)
    oracle = make_oracle(
        tune.algorithm,
        objective=tune.objective,
        hyperparameters=hyperparameters,
        max_trials=tune.max_trials,
        max_epochs=max_epochs,
        seed=tune.seed if tune.seed is not None else config.seed,
        max_consecutive_failures=tune.max_consecutive_failures,
        hyperband_factor=tune.hyperband_factor,
        hyperband_iterations=tune.hyperband_iterations,
    )
    if tune.algorithm == "hyperband":
        total = min(
            tune.max_trials,
            hyperband_trials(max_epochs, tune.hyperband_factor, tune.hyperband_iterations),
        )
    else:
        total = tune.max_trials
    context = TrialContext(
        config=config,
        prepared=prepared,
        strategy=strategy,
        space=space,
        parts=parts,
        memories=memories,
        cross_validated=bool(tune.cv_folds),
        computed=computed,
        epochs=max_epochs,
    )
    progress = Progress(total, tune.objective, approximate=tune.algorithm in ("hyperband", "grid"))
    runner = TrialRunner(oracle, context, directory, progress)
    if resumed and role != "worker":
        healed = heal_interrupted(runner.oracle)
        if healed:
            logger.info(
                "Trial(s) %s had ended before the search was stopped; not rerun.", ", ".join(healed)
            )
        done = sum(
            1 for t in runner.oracle.trials.values() if str(t.status) in ("COMPLETED", "FAILED")
        )
        progress.resumed(done)
        logger.info(
            "Resuming the search in %s: %d trial(s) already ended; they are not repeated.",
            directory,
            done,
        )
    logger.info(
        "Search: %s over %d parameter(s), objective %s (%s), up to %s trials.",
        tune.algorithm,
        len(hyperparameters.space),
        tune.objective_name,
        tune.direction,
        progress.total,
    )
    return Search(runner=runner, space=space, directory=directory, resumed=resumed)


def _failure_streak(oracle: Any) -> list[Any]:
    """The longest run of consecutive failed trials, in end order."""
    longest: list[Any] = []
    current: list[Any] = []
    for trial_id in oracle.end_order:
        trial = oracle.trials[trial_id]
        current = current + [trial] if str(trial.status) == "FAILED" else []
        longest = current if len(current) > len(longest) else longest
    return longest


def _raise_if_failed(oracle: Any, rows: list[dict[str, Any]], limit: int) -> None:
    streak = _failure_streak(oracle)
    reasons = {r["trial"]: r["reason"] for r in rows}
    if len(streak) >= limit:
        listed = "; ".join(
            f"trial {t.trial_id}: {str(reasons.get(t.trial_id)).rstrip('.')}"
            for t in streak[-limit:]
        )
        raise TuningError(
            f"The search stopped: {len(streak)} trials in a row failed (the limit is "
            f"tune.max_consecutive_failures={limit}). {listed}."
        )
    if not any(r["status"] == "COMPLETED" for r in rows):
        listed = (
            "; ".join(f"trial {r['trial']}: {str(r['reason']).rstrip('.')}" for r in rows[:5])
            or "no trial ran"
        )
        raise TuningError(f"No trial of the search completed: {listed}.")


def run_search(
    config: PipelineConfig,
    prepared: Prepared,
    strategy: Any,
    *,
    workers: int = 0,
    output_dir: str | os.PathLike | None = None,
) -> TuneResult:
    """Runs (or resumes) the search and returns the best configuration.

    Args:
        config: The run's config, with `tune.directory` set.
        prepared: The prepared data.
        strategy: The distribution strategy of every trial.
        workers: Worker processes on this machine; 0 runs the trials in
            this process. With workers, this process serves the oracle
            (KerasTuner's chief) on the loopback interface. Defaults to `0`.
        output_dir: Where the results table and plot go. Defaults to
            `tune.directory`.

    Returns:
        The `TuneResult`.

    Raises:
        ConfigError: See `open_search`.
        TuningError: When no trial completed, too many failed in a row, or
            a worker died.
    """
    search = open_search(config, prepared, strategy, role="chief" if workers else "main")
    start = time.perf_counter()
    error: BaseException | None = None
    try:
        if workers:
            serve(search, config, workers)
        else:
            search.runner.search()
    except RuntimeError as exc:  # KerasTuner's consecutive-failure stop, or a dead worker
        error = exc
    seconds = time.perf_counter() - start
    oracle = search.oracle
    rows = trial_rows(oracle, Path(search.runner.project_dir))
    out = Path(output_dir) if output_dir is not None else search.directory
    out.mkdir(parents=True, exist_ok=True)
    table = write_table(rows, out / "tuning_results.csv")
    plot = plot_scores(rows, config.tune.objective, out / "tuning_scores.png")
    _raise_if_failed(oracle, rows, config.tune.max_consecutive_failures)
    if error is not None:
        raise error
    best = oracle.get_best_trials(1)[0]
    final = trial_config(config, search.space, best.hyperparameters)
    result = TuneResult(
        best_values=plain_values(best.hyperparameters),
        best_score=float(best.score),
        best_trial=best.trial_id,
        config=final,
        rows=rows,
        objective=dict(config.tune.objective),
        algorithm=config.tune.algorithm,
        directory=search.directory,
        table_path=table,
        plot_path=plot,
        seconds=seconds,
    )
    logger.info(
        "Search done: best %s=%.4g (trial %s) with %s; %d trials, %d epochs, %.0fs.",
        config.tune.objective_name,
        result.best_score,
        result.best_trial,
        result.best_values,
        len(rows),
        result.epochs_spent,
        seconds,
    )
    keras.backend.clear_session()
    return result


def tune_stage(
    config: PipelineConfig, prepared: Prepared, strategy: Any, run_dir: str | os.PathLike
) -> TuneResult:
    """The pipeline's tuning stage: searches in `tune.directory` (default
    `<run folder>/tuning`) and writes the results table and plot in the run
    folder.

    Returns:
        The `TuneResult`; train the final model with its `config`.
    """
    directory = config.tune.directory or str(Path(run_dir) / "tuning")
    config = config.replace(tune=config.tune.replace(directory=directory))
    result = run_search(config, prepared, strategy, output_dir=run_dir)
    write_json(Path(run_dir) / "tuning.json", result.summary())
    return result


def search_command(config: PipelineConfig, workers: int = 0) -> TuneResult:
    """`kerastrain tune [--workers N] CONFIG.yaml`: the search alone.

    The search folder is `tune.directory`, else `<output_dir>/tuning`. A seed
    left unset is drawn once and then read back from the folder, so a rerun
    resumes on the same splits.

    Raises:
        ConfigError: When the config has no `tune` section.
    """
    if config.tune is None:
        raise ConfigError(
            message("The config has no 'tune' section", allowed="Add one with at least a 'space'")
        )
    if workers < 0:
        raise ConfigError(message("--workers must be 0 or more", received={"--workers": workers}))
    output = Path(config.output_dir or Path("saved_models") / (config.name or "search"))
    directory = Path(config.tune.directory or output / "tuning").resolve()
    seed = config.seed
    if seed is None:
        saved = directory / FINGERPRINT
        seed = (
            json.loads(saved.read_text())["seed"]
            if saved.exists()
            else random.SystemRandom().randrange(2**31)
        )
    config = config.replace(seed=seed, tune=config.tune.replace(directory=str(directory)))
    keras.utils.set_random_seed(seed)
    prepared = prepare_data(config.data, config.data_options, seed)
    from kerastrain.distribute import make_strategy

    return run_search(
        config, prepared, make_strategy(config.strategy, config.distribute), workers=workers
    )
