"""Explanations: which features a tabular model relies on, and which pixels an
image model looks at.

- ``"permutation"``: scikit-learn's permutation importance (the drop in score
  when one feature's column is shuffled, over several repeats), for rows of
  features.
- ``"saliency"``: the gradient of the predicted class's probability with
  respect to the input pixels.
- ``"integrated_gradients"``: the gradients averaged along the straight path
  from a baseline image (black by default) to the input, times the
  difference (Sundararajan et al., 2017); the attributions of an image sum
  to the change in the output between the baseline and the image. For a
  model that reads text, the same integral runs over the token embeddings
  and gives one attribution per token (`kerastrain.explain_text`).

Attribution maps are computed for a few correctly and a few incorrectly
classified images, and drawn as one figure.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.batching import DIRECT_CALL_ROWS, predict_model, take
from kerastrain.errors import DataError, config_error, message, one_of
from kerastrain.evaluation import (
    TaskArg,
    infer_task,
    labels_for,
    output_activation,
    read_labelled,
)
from kerastrain.explain_text import (
    DEFAULT_TEXTS,
    TokenAttributions,
    text_embeddings,
    token_attributions,
)
from kerastrain.explain_text import class_score as _target_score
from kerastrain.figures import figure
from kerastrain.metrics import class_names, class_probabilities, normalized, predicted_classes
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "explain",
    "explain_run",
    "check_explainable",
    "PermutationImportance",
    "AttributionMaps",
    "TokenAttributions",
    "METHODS",
    "SCORINGS",
]

METHODS = ("permutation", "saliency", "integrated_gradients")
#: Scores permutation importance can watch; "auto" is accuracy or R².
SCORINGS = (
    "auto",
    "accuracy",
    "balanced_accuracy",
    "neg_log_loss",
    "roc_auc",
    "r2",
    "neg_mean_absolute_error",
    "neg_root_mean_squared_error",
)
#: Features drawn in the permutation importance figure.
MAX_PLOTTED_FEATURES = 20


@dataclasses.dataclass
class PermutationImportance:
    """Permutation importance, shaped like scikit-learn's result.

    Attributes:
        feature_names: One name per feature.
        importances_mean: The mean drop in score per feature.
        importances_std: Its standard deviation over the repeats.
        importances: The drop of every repeat, `(features, repeats)`.
        scoring: The score watched.
        baseline_score: The score on the unshuffled rows.
        method: `"permutation"`.
    """

    feature_names: list[str]
    importances_mean: np.ndarray
    importances_std: np.ndarray
    importances: np.ndarray
    scoring: str
    baseline_score: float
    method: str = "permutation"

    @property
    def title(self) -> str:
        return "Permutation importance"

    def ranking(self) -> list[str]:
        """Feature names, most important first."""
        return [self.feature_names[i] for i in np.argsort(-self.importances_mean, kind="stable")]

    def rows(self, limit: int = MAX_PLOTTED_FEATURES) -> list[dict[str, Any]]:
        """The most important features as table rows, for the report."""
        order = np.argsort(-self.importances_mean, kind="stable")[:limit]
        return [
            {
                "feature": self.feature_names[i],
                f"mean drop in {self.scoring}": float(self.importances_mean[i]),
                "std": float(self.importances_std[i]),
            }
            for i in order
        ]

    def describe(self) -> str:
        top = ", ".join(self.ranking()[:3])
        return (
            f"Shuffling one feature at a time over {self.importances.shape[1]} repeats; "
            f"{self.scoring} on the unshuffled rows is {self.baseline_score:.4g}. "
            f"Most important: {top}."
        )

    def plot(self, path: str | os.PathLike) -> Path:
        """Draws the importances (mean and spread) as a horizontal box plot."""
        order = np.argsort(-self.importances_mean, kind="stable")[:MAX_PLOTTED_FEATURES][::-1]
        with figure(path, figsize=(7, 0.3 * len(order) + 1.5)) as (_, ax):
            ax.boxplot(
                self.importances[order].T,
                orientation="horizontal",
                tick_labels=[self.feature_names[i] for i in order],
            )
            ax.axvline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_xlabel(f"drop in {self.scoring} when shuffled")
            ax.set_title("Permutation importance")
        return Path(path)


@dataclasses.dataclass
class AttributionMaps:
    """Saliency or integrated-gradients maps of a few images.

    Attributes:
        method: `"saliency"` or `"integrated_gradients"`.
        indices: The rows of the data that were explained.
        images: Those rows.
        attributions: Per-pixel attributions, the images' shape.
        maps: `|attributions|` summed over channels, `(examples, height, width)`.
        labels: The true classes.
        predicted: The predicted classes (the class each map explains).
        correct: Whether each prediction is right.
        class_names: Names of the classes.
        delta: Integrated gradients only: the sum of each image's
            attributions minus the change in the output from the baseline
            (0 for an exact integral).
    """

    method: str
    indices: np.ndarray
    images: np.ndarray
    attributions: np.ndarray
    maps: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    correct: np.ndarray
    class_names: list[str]
    delta: np.ndarray | None = None

    @property
    def title(self) -> str:
        return {"saliency": "Saliency maps", "integrated_gradients": "Integrated gradients"}[
            self.method
        ]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "row": int(i),
                "true": self.class_names[t],
                "predicted": self.class_names[p],
                "correct": bool(c),
            }
            for i, t, p, c in zip(self.indices, self.labels, self.predicted, self.correct)
        ]

    def describe(self) -> str:
        right, wrong = int(self.correct.sum()), int((~self.correct).sum())
        return (
            f"{self.title} of the predicted class for {right} correctly and {wrong} "
            "incorrectly classified images; brighter pixels moved the prediction more."
        )

    def plot(self, path: str | os.PathLike) -> Path:
        """Draws each image above its attribution map."""
        n = len(self.indices)
        with figure(path, 2, n, figsize=(1.9 * n + 0.5, 4.2), squeeze=False) as (_, axes):
            self._draw(axes)
        return Path(path)

    def _draw(self, axes: Any) -> None:
        """Each image above its map, one column of ``axes`` per image."""
        for j in range(len(self.indices)):
            image = self.images[j]
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            low, high = float(image.min()), float(image.max())
            shown = (image - low) / (high - low) if high > low else np.zeros_like(image)
            axes[0, j].imshow(shown, cmap="gray" if shown.ndim == 2 else None)
            verdict = "right" if self.correct[j] else "wrong"
            axes[0, j].set_title(
                f"true {self.class_names[self.labels[j]]}\n"
                f"pred {self.class_names[self.predicted[j]]} ({verdict})",
                fontsize=8,
                color="black" if self.correct[j] else "crimson",
            )
            axes[1, j].imshow(self.maps[j], cmap="inferno")
            for ax in axes[:, j]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[1, 0].set_ylabel(self.method.replace("_", " "), fontsize=8)


Explanation = PermutationImportance | AttributionMaps | TokenAttributions


def _call(model: keras.Model, batch_size: int = 1024) -> Callable[[np.ndarray], np.ndarray]:
    # Calling the model directly avoids `predict`'s per-call set-up, which
    # dominates for the many small calls of permutation importance.
    return functools.partial(
        predict_model, model, batch_size=batch_size, direct_call_rows=DIRECT_CALL_ROWS
    )


def _scorer(task: Task, scoring: str, predict: Callable[[np.ndarray], np.ndarray]) -> Callable:
    from sklearn import metrics as skm

    def score(_estimator: Any, x: Any, y: np.ndarray) -> float:
        table = hasattr(x, "columns")  # a table's columns, as a DataFrame
        out = predict(
            {k: x[k].to_numpy() for k in x.columns} if table else np.asarray(x, np.float32)
        )
        if task.kind == "regression":
            pred = out.reshape(-1)
            return float(
                {
                    "r2": skm.r2_score,
                    "neg_mean_absolute_error": lambda a, b: -skm.mean_absolute_error(a, b),
                    "neg_root_mean_squared_error": lambda a, b: -skm.root_mean_squared_error(a, b),
                }[scoring](y, pred)
            )
        proba = normalized(class_probabilities(task, out))
        if scoring == "neg_log_loss":
            return -float(skm.log_loss(y, proba, labels=list(range(task.num_classes))))
        if scoring == "roc_auc":
            return float(skm.roc_auc_score(y, proba[:, 1]))
        pred = proba.argmax(axis=1)
        metric = skm.accuracy_score if scoring == "accuracy" else skm.balanced_accuracy_score
        return float(metric(y, pred))

    return score


class _Trained:
    """A trained model seen through scikit-learn's estimator interface.

    `permutation_importance` only scores the estimator it is given; it never
    fits it, but checks that the object has a `fit` method.
    """

    def __init__(self, model: keras.Model):
        self.model = model

    def fit(self, x: Any, y: Any = None) -> _Trained:
        """The model is already trained; there is nothing to fit."""
        return self


def _resolve_scoring(task: Task, scoring: str) -> str:
    if scoring not in SCORINGS:
        raise config_error("scoring", scoring, one_of(SCORINGS), SCORINGS)
    if scoring == "auto":
        return "accuracy" if task.is_classification else "r2"
    regression = scoring in ("r2", "neg_mean_absolute_error", "neg_root_mean_squared_error")
    if regression != (task.kind == "regression") or (
        scoring == "roc_auc" and task.kind != "binary"
    ):
        raise config_error("scoring", scoring, f"a score of a {task.kind} task")
    return scoring


def _permutation(
    model: keras.Model,
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str] | None,
    scoring: str,
    repeats: int,
    seed: int,
) -> PermutationImportance:
    from sklearn.inspection import permutation_importance

    if x.ndim != 2:
        raise DataError(
            message(
                "Permutation importance needs rows of features (2-D data); the data has "
                f"shape {x.shape}",
                allowed="Use method='saliency' or 'integrated_gradients' for images",
            )
        )
    names = (
        list(feature_names)
        if feature_names is not None
        else [f"feature_{i}" for i in range(x.shape[1])]
    )
    if len(names) != x.shape[1]:
        raise config_error("feature_names", feature_names, f"{x.shape[1]} names, one per feature")
    scoring = _resolve_scoring(task, scoring)
    scorer = _scorer(task, scoring, _call(model))
    result = permutation_importance(
        _Trained(model), x, y, scoring=scorer, n_repeats=repeats, random_state=seed
    )
    baseline = scorer(None, x, y)
    logger.info(
        "Permutation importance (%s, baseline %.4g): %s.",
        scoring,
        baseline,
        ", ".join(
            f"{names[i]} {result.importances_mean[i]:.3g}"
            for i in np.argsort(-result.importances_mean)[:5]
        ),
    )
    return PermutationImportance(
        feature_names=names,
        importances_mean=result.importances_mean,
        importances_std=result.importances_std,
        importances=result.importances,
        scoring=scoring,
        baseline_score=baseline,
    )


def _choose(correct: np.ndarray, examples: int, seed: int) -> np.ndarray:
    """Up to half the examples wrongly classified, the rest right."""
    rng = np.random.default_rng(seed)
    wrong = rng.permutation(np.flatnonzero(~correct))
    right = rng.permutation(np.flatnonzero(correct))
    n_wrong = min(len(wrong), examples // 2)
    n_right = min(len(right), examples - n_wrong)
    n_wrong = min(len(wrong), examples - n_right)
    return np.concatenate([right[:n_right], wrong[:n_wrong]]).astype(np.int64)


def _gradients(model: keras.Model, task: Task, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    inputs = tf.convert_to_tensor(x, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = _target_score(task, model(inputs, training=False), target)
    return tape.gradient(score, inputs).numpy()


def _integrated(
    model: keras.Model,
    task: Task,
    x: np.ndarray,
    target: np.ndarray,
    baseline: np.ndarray,
    steps: int,
) -> tuple[np.ndarray, np.ndarray]:
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    shape = (-1,) + (1,) * (x.ndim - 1)
    attributions, deltas = [], []
    for image, cls in zip(x, target):
        path = baseline[None] + alphas.reshape(shape) * (image - baseline)[None]
        grads = _gradients(model, task, path, np.full(len(path), cls))
        average = ((grads[:-1] + grads[1:]) / 2.0).mean(axis=0)  # trapezoidal rule
        attribution = (image - baseline) * average
        ends = _target_score(
            task, model(np.stack([baseline, image]), training=False), np.full(2, cls)
        ).numpy()
        attributions.append(attribution)
        deltas.append(float(attribution.sum() - (ends[1] - ends[0])))
    return np.stack(attributions), np.asarray(deltas)


def _attributions(
    model: keras.Model,
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    method: str,
    examples: int,
    steps: int,
    baseline: Any,
    seed: int,
) -> AttributionMaps:
    if not task.is_classification:
        raise config_error(
            "method",
            method,
            "'permutation' for a regression model (attribution maps explain a predicted class)",
            ("permutation",),
        )
    if x.ndim < 3:
        raise DataError(
            message(
                "Attribution maps need images, (rows, height, width[, channels]); the data has "
                f"shape {x.shape}",
                allowed="Use method='permutation' for rows of features",
            )
        )
    predicted = predicted_classes(task, _call(model)(x))
    correct = predicted == y
    chosen = _choose(correct, examples, seed)
    images = x[chosen]
    if method == "saliency":
        attributions = _gradients(model, task, images, predicted[chosen])
        delta = None
    else:
        base = (
            np.zeros_like(images[0])
            if baseline is None
            else np.broadcast_to(np.asarray(baseline, np.float32), images[0].shape).copy()
        )
        attributions, delta = _integrated(model, task, images, predicted[chosen], base, steps)
    maps = np.abs(attributions)
    if maps.ndim == 4:
        maps = maps.sum(axis=-1)
    logger.info(
        "%s for %d images (%d wrongly classified).",
        method,
        len(chosen),
        int((~correct[chosen]).sum()),
    )
    return AttributionMaps(
        method=method,
        indices=chosen,
        images=images,
        attributions=attributions,
        maps=maps,
        labels=y[chosen],
        predicted=predicted[chosen],
        correct=correct[chosen],
        class_names=class_names(task),
        delta=delta,
    )


def explain(
    model: keras.Model,
    data: Any,
    method: Literal["permutation", "saliency", "integrated_gradients"] = "permutation",
    *,
    task: TaskArg = "auto",
    feature_names: Sequence[str] | None = None,
    scoring: str = "auto",
    repeats: int = 5,
    examples: int | None = None,
    steps: int = 64,
    baseline: Any = None,
    target: str | None = None,
    seed: int = 0,
    text_column: str | None = None,
) -> PermutationImportance | AttributionMaps | TokenAttributions:
    """Explains what a trained model relies on.

    Args:
        model: A trained tf_keras model.
        data: Labelled rows: `(x, y)`, a built-in data set name, a DataFrame
            with `target`.
        method: `"permutation"` (rows of features), `"saliency"` or
            `"integrated_gradients"` (images), `"integrated_gradients"` (a
            model that reads text: per-token attributions). Defaults to
            `"permutation"`.
        task: The task, or `"auto"` to read it from the model's outputs.
            Defaults to `"auto"`.
        feature_names: Names of the features. Defaults to the data's column
            names, else `feature_<i>`.
        scoring: Permutation: the score whose drop is measured, one of
            `SCORINGS`; `"auto"` is accuracy (classification) or R².
            Defaults to `"auto"`.
        repeats: Permutation: shuffles per feature. Defaults to `5`.
        examples: Maps: images (or texts) explained, up to half of them
            wrongly classified when there are such. Defaults to `None`
            (6 images, 5 texts).
        steps: Integrated gradients: steps of the path integral.
            Defaults to `64`.
        baseline: Integrated gradients: the reference input, broadcast to an
            image's shape; for text `"zero"` (zero vectors) or `"padding"`
            (the padding token's vector). Defaults to `None` (zeros: a
            black image, zero vectors).
        target: The label column when `data` is a DataFrame.
            Defaults to `None`.
        seed: Seed of the shuffles and of the choice of images.
            Defaults to `0`.
        text_column: A text model's column whose tokens are explained.
            Defaults to `None` (the first text column the model reads).

    Returns:
        A `PermutationImportance` (with `importances_mean` and
        `importances_std` per feature, as scikit-learn's), an
        `AttributionMaps`, or, for a text model, a `TokenAttributions`
        (tokens as vocabulary strings and one attribution per token); all
        draw themselves with `plot(path)`.

    Raises:
        ConfigError: For an unknown method or scoring, or a model that is not
            a tf_keras model.
        DataError: For data of the wrong shape for the method, or that cannot
            be read.

    Example:
        >>> imp = explain(model, (x_test, y_test), feature_names=columns)  # doctest: +SKIP
        >>> imp.ranking()[:3]  # doctest: +SKIP
    """
    ensure_tf_keras(model, "model")
    if not isinstance(model, keras.Model):
        raise config_error("model", model, "a trained tf_keras model")
    if method not in METHODS:
        raise config_error("method", method, one_of(METHODS), METHODS)
    for key, value, low in (
        ("repeats", repeats, 1),
        ("examples", 1 if examples is None else examples, 1),
        ("steps", steps, 2),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise config_error(key, value, f"an integer >= {low}")
    x, y, loaded = read_labelled(data, target)
    outputs = _call(model)(take(x, 0, 1))
    resolved = infer_task(
        outputs, y, activation=output_activation(model), task=task, class_names=loaded.class_names
    )
    y = labels_for(resolved, y)
    if method != "permutation" and isinstance(x, dict) and text_embeddings(model):
        if method == "saliency":
            raise config_error(
                "method", method, "'integrated_gradients' or 'permutation' for a text model"
            )
        return token_attributions(
            model,
            x,
            y,
            resolved,
            column=text_column,
            texts=DEFAULT_TEXTS if examples is None else examples,
            steps=steps,
            baseline=baseline,
            seed=seed,
        )[0]
    if method == "permutation":
        if isinstance(x, dict):  # a table's raw columns, permuted as a DataFrame's
            import pandas as pd

            x = pd.DataFrame(x)
        return _permutation(
            model, resolved, x, y, feature_names or loaded.feature_names, scoring, repeats, seed
        )
    return _attributions(
        model, resolved, x, y, method, 6 if examples is None else examples, steps, baseline, seed
    )


def _method_for(method: str, prepared: Any) -> str:
    if getattr(prepared, "has_text", False):
        return method  # "auto": token attributions (and permutation beside other columns)
    images = not isinstance(prepared.x, dict) and len(prepared.x.shape) >= 3
    if method == "auto":
        if images:
            return "saliency" if prepared.task.is_classification else "none"
        return "permutation"
    return method


def check_explainable(method: str, prepared: Any) -> None:
    """Refuses, before training, an explanation the data cannot have.

    Args:
        method: `report.explain`.
        prepared: The prepared data.

    Raises:
        ConfigError: For permutation importance of images, attribution
            maps of rows of features or of a regression model, or saliency
            of a model that reads text.
    """
    if getattr(prepared, "has_text", False):
        if method == "saliency":
            raise config_error(
                "report.explain",
                method,
                "'integrated_gradients' (token attributions), 'permutation', 'auto' or 'none' "
                "for data with text columns",
                ("integrated_gradients", "auto"),
            )
        return
    method = _method_for(method, prepared)
    images = not isinstance(prepared.x, dict) and len(prepared.x.shape) >= 3
    if method == "permutation" and images:
        raise config_error(
            "report.explain",
            method,
            "'saliency', 'integrated_gradients', 'auto' or 'none' for image data",
            ("saliency", "auto"),
        )
    if method in ("saliency", "integrated_gradients") and (
        not images or not prepared.task.is_classification
    ):
        raise config_error(
            "report.explain",
            method,
            "'permutation', 'auto' or 'none' for "
            + ("a regression task" if images else "rows of features"),
            ("permutation", "auto"),
        )


def explain_run(
    model: keras.Model, prepared: Any, config: Any, seed: int = 0
) -> list[PermutationImportance | AttributionMaps | TokenAttributions]:
    """The explanation the run report shows, on the held-out rows.

    Data with text columns gets token attributions (integrated gradients
    over the token embeddings of `config.explain_texts` texts per text
    column, `config.explain_steps` steps) with `"auto"` or
    `"integrated_gradients"`, and permutation importance of the columns with
    `"permutation"`, or with `"auto"` when the table has other columns too.

    Args:
        model: The trained model.
        prepared: The prepared data (`kerastrain.data.prepare.Prepared`).
        config: The report options (`ReportConfig`).
        seed: Seed of the row sample, shuffles and image choice.
            Defaults to `0`.

    Returns:
        The explanations (one per text column for token attributions), or
        none when `config.explain` resolves to `"none"`.
    """
    method = _method_for(config.explain, prepared)
    text = getattr(prepared, "has_text", False)
    splits = prepared.splits
    split = "test" if len(splits.test) else "val" if len(splits.val) else "train"
    rows = getattr(splits, split)
    if method == "none" or len(rows) == 0:
        return []
    y = prepared.y[rows]
    # Sample the rows first, then gather only those (a large split is never copied whole).
    table = isinstance(prepared.x, dict) or prepared.table is not None  # in memory or streamed
    if table or method == "permutation" and len(rows) > config.max_explain_rows:
        keep = np.sort(
            np.random.default_rng(seed).choice(
                len(rows), min(len(rows), config.max_explain_rows), replace=False
            )
        )
        rows, y = rows[keep], y[keep]
    x = prepared.rows(rows)
    found: list[Any] = []
    if text and method in ("auto", "integrated_gradients"):
        found = _token_run(model, prepared, config, x, y, rows, seed)
        if method != "auto" or len(x) == 1:  # permuting a lone text column says nothing more
            return found
    if table:  # permute its raw columns
        import pandas as pd

        return [
            _permutation(
                model,
                prepared.task,
                pd.DataFrame(x),
                labels_for(prepared.task, y),
                prepared.feature_names,
                "auto",
                config.permutation_repeats,
                seed,
            ),
            *found,
        ]
    return [
        explain(
            model,
            (x, y),
            method,
            task=prepared.task,
            feature_names=prepared.feature_names,
            repeats=config.permutation_repeats,
            examples=config.explain_examples,
            seed=seed,
        )
    ]


def _token_run(
    model: keras.Model,
    prepared: Any,
    config: Any,
    x: dict[str, np.ndarray],
    y: np.ndarray,
    rows: np.ndarray,
    seed: int,
) -> list[TokenAttributions]:
    """The run's token attributions of a model that reads text (none, with
    the reason logged, when the model has no token embedding layer to take
    gradients at, e.g. one whose layers compression wrapped)."""
    if not text_embeddings(model):
        logger.warning(
            "Token attributions skipped: the model %r has no token embedding layer "
            "(kerastrain.data.layers.TokenEmbedding) at its top level.",
            model.name,
        )
        return []
    return token_attributions(
        model,
        x,
        labels_for(prepared.task, y),
        prepared.task,
        texts=config.explain_texts,
        steps=config.explain_steps,
        seed=seed,
        rows=rows,
    )
