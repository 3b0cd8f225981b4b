"""`cross_validate()`: one model per fold, each trained by `fit_pipeline`.

The data is loaded, validated and split into folds once (scikit-learn's
`StratifiedKFold`, `KFold` or `TimeSeriesSplit`, see
`kerastrain.data.split.fold_indices`). Each fold then goes through the whole
pipeline as a `Prepared` whose test split is the fold's held-out rows and
whose validation split (for early stopping) is carved out of its training
rows; the standardizer and a table's encodings are refitted on each fold's
training rows, so nothing is learned from the held-out fold. The data itself
is shared by every fold, never copied.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras
from kerastrain.batching import predict_model
from kerastrain.config import PipelineConfig, load_config
from kerastrain.data.audit import DataQuality
from kerastrain.data.audit_folds import audit_folds
from kerastrain.data.prepare import prepare_data
from kerastrain.data.split import Splits, fold_indices, split_indices
from kerastrain.files import write_json
from kerastrain.logs import Progress
from kerastrain.pipeline import PipelineResult, fit_pipeline
from kerastrain.runs import RunFolder

logger = logging.getLogger(__name__)

__all__ = ["cross_validate", "CrossValidationResult"]


@dataclasses.dataclass
class CrossValidationResult:
    """What `cross_validate` produced.

    Attributes:
        metrics: For each scalar metric of the held-out folds, its `"mean"`,
            `"std"` (population, as scikit-learn's scores' ``.std()``) and the
            `"folds"` values.
        fold_metrics: Each fold's full held-out metrics.
        models: Each fold's trained model (an ensemble's members).
        results: Each fold's `PipelineResult`.
        folds: Each fold's `(training rows, held-out rows)`.
        predictions: Out-of-fold outputs, one row per data row (NaN for rows
            no fold held out, as in time-series folds).
        config: The resolved configuration.
        run_dir: The folder holding one sub-folder per fold and `cv.json`.
        data_quality: The data-quality audit of the whole data, run once
            before the folds (`audit_folds`); None with `data_options.audit`
            off.
    """

    metrics: dict[str, dict[str, Any]]
    fold_metrics: list[dict[str, Any]]
    models: list[keras.Model]
    results: list[PipelineResult]
    folds: list[tuple[np.ndarray, np.ndarray]]
    predictions: np.ndarray
    config: PipelineConfig
    run_dir: Path
    data_quality: DataQuality | None = None

    def summary(self) -> str:
        """``"accuracy 0.951 ± 0.012, f1 ..."`` over the folds."""
        return ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.2g}" for k, v in self.metrics.items())


def _aggregate(fold_metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in fold_metrics[0]:
        values = [m.get(key) for m in fold_metrics]
        if (
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            and key != "examples"
        ):
            array = np.asarray(values, np.float64)
            out[key] = {
                "mean": float(array.mean()),
                "std": float(array.std()),
                "folds": [float(v) for v in values],
            }
    return out


def _headline(metrics: dict[str, Any]) -> str:
    """A fold's main score, for its progress line (accuracy, else RMSE)."""
    key = next((k for k in ("accuracy", "rmse") if k in metrics), None)
    return f"test {key} {metrics[key]:.4g}" if key else "done"


def cross_validate(
    data: Any = None, model: Any = None, folds: int = 5, *, config: Any = None, **options: Any
) -> CrossValidationResult:
    """Trains and scores one model per cross-validation fold.

    Takes the same options as `fit_pipeline`. With `data_options.split="time"`
    the folds are scikit-learn's `TimeSeriesSplit` (each fold trains on the
    past only); classification with `stratify` uses `StratifiedKFold`;
    anything else `KFold`. `test_split` is not used: each fold's held-out
    rows are its test split. The data-quality audit (`data_options.audit`)
    runs once on the whole data before the folds (`audit_folds`), its
    findings in `data_quality` and `cv.json`. A built model passed as `model` is cloned per
    fold (fresh weights), so the folds are independent.

    Args:
        data: As `fit_pipeline`. Defaults to the config's, else `"digits"`.
        model: As `fit_pipeline`. Defaults to the config's, else `"auto"`.
        folds: The number of folds. Defaults to `5`.
        config: As `fit_pipeline`. Defaults to `None`.
        **options: Any other keyword of `fit_pipeline` (`data_options`,
            `train`, `export` (each fold exports its model), `model_options`,
            `report`, `strategy`, ...). `output_dir` holds the folds
            (`fold_1`, ...; default `saved_models/<run name>`), `seed` seeds
            the folds and each fold's run (seed + fold), `name` defaults to
            `cv-<model>-<timestamp>`.

    Returns:
        A `CrossValidationResult`.

    Raises:
        ConfigError: For a bad option, before any data is read.
        DataError: For data that cannot be split into `folds` folds, or with
            `data_options.audit="strict"`, for rows shared by two folds or a
            column suspected of target leakage (before any fold trains).

    Example:
        >>> cv = cross_validate("wine", "mlp", folds=5, train={"epochs": 30})  # doctest: +SKIP
        >>> cv.metrics["accuracy"]["mean"], cv.metrics["accuracy"]["std"]  # doctest: +SKIP
    """
    cfg = load_config(config, data=data, model=model, **options)
    if cfg.seed is None:
        cfg = dataclasses.replace(cfg, seed=random.SystemRandom().randrange(2**31))
    if cfg.name is None:
        cfg = dataclasses.replace(cfg, name="cv-" + RunFolder.default_name(cfg.model))
    root = Path(cfg.output_dir) if cfg.output_dir else Path("saved_models") / cfg.name
    data_options = cfg.data_options
    prepared = prepare_data(cfg.data, data_options, cfg.seed)
    pairs = fold_indices(prepared.y, prepared.task, data_options, folds, cfg.seed)
    # Once on the whole data, before any fold trains ("strict" stops here);
    # the folds themselves are not audited again.
    quality = audit_folds(prepared, pairs, data_options, cfg.seed)
    fold_cfg = cfg.replace(data_options=data_options.replace(audit=False))
    predictions: np.ndarray | None = None
    results, fold_metrics = [], []
    progress = Progress(logger, "Fold", len(pairs), every=0)
    for i, (train_rows, held) in enumerate(pairs, start=1):
        inner = split_indices(
            prepared.y, prepared.task, data_options, cfg.seed + i, within=train_rows, test_split=0.0
        )
        fold = prepared.with_splits(Splits(train=inner.train, val=inner.val, test=held))
        logger.info(
            "Fold %d of %d: %d training, %d validation, %d held-out rows.",
            i,
            folds,
            len(inner.train),
            len(inner.val),
            len(held),
        )
        spec = cfg.model
        if isinstance(spec, keras.Model):
            spec = keras.models.clone_model(spec)
        result = fit_pipeline(
            fold,
            spec,
            config=fold_cfg,
            output_dir=str(root / f"fold_{i}"),
            seed=cfg.seed + i,
            name=f"{cfg.name}-fold{i}",
        )
        outputs = predict_model(result.model, fold.rows(held))
        if predictions is None:
            predictions = np.full((prepared.num_rows, *outputs.shape[1:]), np.nan, np.float32)
        predictions[held] = outputs
        results.append(result)
        fold_metrics.append(result.metrics["test"])
        progress.update(i, _headline(result.metrics["test"]))
    metrics = _aggregate(fold_metrics)
    summary = {
        "folds": folds,
        "metrics": metrics,
        "fold_metrics": fold_metrics,
        "held_out_rows": [len(h) for _, h in pairs],
        "data_quality": quality.to_dict() if quality is not None else None,
    }
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / "cv.json", summary)
    outcome = CrossValidationResult(
        metrics=metrics,
        fold_metrics=fold_metrics,
        models=[r.model for r in results],
        results=results,
        folds=pairs,
        predictions=predictions,
        config=cfg,
        run_dir=root,
        data_quality=quality,
    )
    logger.info("Cross-validation over %d folds: %s.", folds, outcome.summary())
    return outcome
