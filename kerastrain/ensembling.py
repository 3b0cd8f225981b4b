"""Ensembles: several trained tf_keras models combined into one tf_keras model.

The ensemble is a plain functional model whose layers are the members, so it
is saved, exported to SavedModel and TFLite, verified and reported like any
other model. Three ways to combine:

- ``"average"``: the mean of the members' outputs (probabilities, or
  regression values);
- ``"vote"``: majority vote of the members' predicted classes, ties broken by
  the average probability; the output is the vote share;
- ``"stack"``: a small meta-learner (one ``Dense`` layer: multinomial
  logistic regression on the members' log-probabilities, or ridge regression
  on their predictions) trained with scikit-learn over rows none of the
  members was trained on, its coefficients then copied into the layer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.batching import DIRECT_CALL_ROWS, predict_model
from kerastrain.errors import ConfigError, DataError, config_error, message, one_of
from kerastrain.evaluation import (
    TaskArg,
    infer_task,
    labels_for,
    output_activation,
    read_labelled,
)
from kerastrain.metrics import compute_metrics
from kerastrain.task import Task
from kerastrain.training import as_float32

logger = logging.getLogger(__name__)

__all__ = ["ensemble", "METHODS"]

METHODS = ("average", "vote", "stack")
#: Weight of the average probability in a vote: below one vote, so it only
#: breaks ties.
TIE_BREAK = 0.5
#: Regularization of the stacking meta-learner (scikit-learn's `C` / `alpha`).
META_C = 1.0
#: Probabilities are clipped to [EPS, 1 - EPS] before their logarithm is taken.
EPS = 1e-6


def _check_members(models: Any) -> list[keras.Model]:
    if isinstance(models, keras.Model) or not isinstance(models, Sequence):
        raise config_error("models", models, "a list of at least 2 trained tf_keras models")
    members = list(models)
    if len(members) < 2:
        raise config_error("models", members, "a list of at least 2 trained tf_keras models")
    for i, member in enumerate(members):
        ensure_tf_keras(member, f"models[{i}]")
        if not isinstance(member, keras.Model):
            raise config_error(f"models[{i}]", member, "a trained tf_keras model")
    first_in, first_out = members[0].input_shape, members[0].output_shape
    for i, member in enumerate(members[1:], start=1):
        if member.input_shape != first_in or member.output_shape != first_out:
            raise ConfigError(
                message(
                    "The members of an ensemble must take the same inputs and give the same "
                    f"outputs: models[0] maps {first_in} to {first_out} but models[{i}] maps "
                    f"{member.input_shape} to {member.output_shape}",
                    allowed="Combine models trained on the same features for the same task",
                )
            )
    return members


def _as_layer(member: keras.Model, name: str) -> keras.Model:
    """The member under a unique layer name; a clone (sharing no variables)
    when the model can be cloned, else the member itself renamed."""
    try:
        clone = keras.models.clone_model(member)
        clone.set_weights(member.get_weights())
    except (ValueError, TypeError, NotImplementedError):  # subclassed models cannot be cloned
        logger.info(
            "Model %r cannot be cloned; it is used in the ensemble as %r.", member.name, name
        )
        clone = member
    clone._name = name  # tf_keras has no public rename; layer names must be unique
    return clone


def _vote(task: Task, outputs: list[Any]) -> Any:
    """Majority vote as tf_keras functional ops (each becomes a `TFOpLambda`
    layer, which SavedModel, `.keras` and TFLite all handle)."""
    members = float(len(outputs))
    average = keras.layers.Average(name="average")(outputs)
    if task.kind == "binary":
        votes = [tf.cast(tf.greater(o, 0.5), tf.float32) for o in outputs]
    else:
        votes = [tf.one_hot(tf.argmax(o, axis=-1), depth=task.num_classes) for o in outputs]
    counts = keras.layers.Add(name="votes")(votes)
    return (counts + TIE_BREAK * average) / (members + TIE_BREAK)


def _stack_features(task: Task, outputs: np.ndarray) -> np.ndarray:
    """What the meta-learner reads from one member's outputs: log-odds
    (binary), log-probabilities (multi-class) or the predictions. Logarithms
    spread out the probabilities of members that are unsure, which a linear
    model on raw probabilities near 0.5 hardly separates."""
    outputs = np.asarray(outputs, np.float32).reshape(len(outputs), -1)
    if task.kind == "binary":
        p = np.clip(outputs, EPS, 1 - EPS)
        return np.log(p) - np.log1p(-p)
    if task.kind == "multiclass":
        return np.log(np.clip(outputs, EPS, 1.0))
    return outputs


def _stack_tensor(task: Task, output: Any) -> Any:
    """`_stack_features` as tf_keras functional ops, inside the ensemble."""
    output = keras.layers.Flatten()(output)
    if task.kind == "binary":
        p = tf.clip_by_value(output, EPS, 1 - EPS)
        return tf.math.log(p) - tf.math.log(1.0 - p)
    if task.kind == "multiclass":
        return tf.math.log(tf.clip_by_value(output, EPS, 1.0))
    return output


def _meta_learner(task: Task, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression, Ridge

    if task.kind == "regression":
        return Ridge(alpha=1.0 / META_C)
    return LogisticRegression(C=META_C, max_iter=2000, random_state=seed)


def _fit_stack(
    task: Task, features: np.ndarray, y: np.ndarray, folds: int, seed: int
) -> tuple[Any, np.ndarray]:
    """Fits the meta-learner on all rows and predicts each row out of fold."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    if task.is_classification:
        counts = np.bincount(y, minlength=task.num_classes)
        missing = np.flatnonzero(counts == 0)
        if len(missing):
            raise DataError(
                message(
                    f"Stacking needs every class in `data`; class {int(missing[0])} has no "
                    f"row there ({len(missing)} class(es) missing)",
                    allowed="Pass rows of every class the members predict",
                )
            )
        folds = min(folds, int(counts.min()))
        if folds < 2:
            raise DataError(
                message(
                    "Stacking needs at least 2 rows of every class in `data` to predict "
                    f"each row out of fold; the smallest class has {int(counts.min())}",
                    allowed="Pass more rows, or use method='average' or 'vote'",
                )
            )
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        method = "predict_proba"
    else:
        splitter = KFold(min(folds, len(y)), shuffle=True, random_state=seed)
        method = "predict"
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    # The meta-learner's problems are tiny: BLAS threads only contend (measured
    # here: 0.2-0.9 s per fit with the default pool, 0.03 s with one thread).
    with threadpool_limits(limits=1):
        oof = cross_val_predict(_meta_learner(task, seed), features, y, cv=splitter, method=method)
        learner = _meta_learner(task, seed).fit(features, y)
    if task.kind == "binary":
        oof = oof[:, 1:]
    return learner, np.asarray(oof).reshape(len(y), -1)


def _stack_layer(task: Task, learner: Any, inputs: int) -> keras.layers.Dense:
    activation = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}[task.kind]
    layer = keras.layers.Dense(
        task.output_units, activation=activation, dtype="float32", name="meta_learner"
    )
    layer.build((None, inputs))
    coef = np.asarray(learner.coef_, np.float32).reshape(-1, inputs)
    intercept = np.asarray(learner.intercept_, np.float32).reshape(-1)
    if task.kind == "multiclass" and len(coef) == 1:
        # scikit-learn fits two classes as one log-odds z; a softmax over
        # (-z/2, z/2) gives the same probabilities, sigmoid(z).
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    kernel = coef.reshape(task.output_units, inputs).T
    bias = intercept.reshape(task.output_units)
    layer.set_weights([kernel, bias])
    return layer


def ensemble(
    models: Sequence[keras.Model],
    method: Literal["average", "vote", "stack"] = "average",
    data: Any = None,
    *,
    task: TaskArg = "auto",
    folds: int = 5,
    seed: int = 0,
    target: str | None = None,
    name: str | None = None,
) -> keras.Model:
    """Combines trained tf_keras models into one tf_keras model.

    Args:
        models: Two or more trained tf_keras models with the same inputs and
            outputs (the k models of a cross-validation, the best trials of a
            search). They are cloned, so the ensemble shares no variables with
            them.
        method: `"average"`, `"vote"` (classification only) or `"stack"`.
            Defaults to `"average"`.
        data: Labelled rows that none of the members was trained on: `(x, y)`,
            a built-in data set name, a DataFrame with `target`. Stacking fits
            its meta-learner on the members' predictions over these rows (and
            needs them); every method scores each member and the ensemble on
            them. Defaults to `None` (no scores).
        task: The task, or `"auto"` to read it from the members' outputs.
            Defaults to `"auto"`.
        folds: Stacking: the ensemble's score is computed out of fold, each
            row predicted by a meta-learner fitted on the other folds, so that
            it is not scored on rows it learned from. Defaults to `5`.
        seed: Seed of the stacking folds and meta-learner. Defaults to `0`.
        target: The label column when `data` is a DataFrame.
            Defaults to `None`.
        name: The ensemble model's name. Defaults to `"ensemble_<method>"`.

    Returns:
        A functional tf_keras model. Its `scores` attribute maps each member's
        name (`"member_0"`, ...) and `"ensemble"` to their metrics on `data`
        (empty without `data`); `ensemble_method` names the method.

    Raises:
        ConfigError: For fewer than 2 models, models that do not match, a
            Keras 3 model, an unknown method, a vote on a regression task, or
            a stack without `data`.
        DataError: For `data` that cannot be scored, or a stack whose `data`
            misses a class.

    Example:
        >>> ens = ensemble(cv.models, "stack", data=(x_val, y_val))  # doctest: +SKIP
        >>> ens.scores["ensemble"]["accuracy"], ens.scores["member_0"]["accuracy"]  # doctest: +SKIP
    """
    # Members trained under mixed precision are combined in float32, the
    # precision the ensemble is exported and scored in.
    members = [as_float32(m) for m in _check_members(models)]
    if method not in METHODS:
        raise config_error("method", method, one_of(METHODS), METHODS)
    if method == "stack" and data is None:
        raise ConfigError(
            message(
                "The 'data' argument is required with method='stack'",
                received={"data": data},
                allowed="Pass rows (x, y) that none of the members was trained on, to fit the "
                "meta-learner on",
            )
        )
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise config_error("folds", folds, "an integer >= 2")

    x = y = None
    outputs: list[np.ndarray] = []
    if data is not None:
        x, y, loaded = read_labelled(data, target)
        outputs = [predict_model(m, x, direct_call_rows=DIRECT_CALL_ROWS) for m in members]
        resolved = infer_task(
            outputs[0],
            y,
            activation=output_activation(members[0]),
            task=task,
            class_names=loaded.class_names,
        )
        y = labels_for(resolved, y)
    else:
        probe = np.zeros((1, *members[0].input_shape[1:]), np.float32)
        resolved = infer_task(
            predict_model(members[0], probe, direct_call_rows=DIRECT_CALL_ROWS),
            np.zeros(0),
            activation=output_activation(members[0]),
            task=task,
        )
    if method == "vote" and not resolved.is_classification:
        raise config_error(
            "method",
            method,
            "'average' or 'stack' for a regression task (a vote needs classes)",
            ("average", "stack"),
        )

    names = [f"member_{i}" for i in range(len(members))]
    inputs = keras.Input(
        shape=members[0].input_shape[1:], dtype=members[0].inputs[0].dtype, name="inputs"
    )
    member_outputs = [_as_layer(m, n)(inputs) for m, n in zip(members, names)]
    ensemble_oof = None
    if method == "average":
        combined = keras.layers.Average(name="average")(member_outputs)
    elif method == "vote":
        combined = _vote(resolved, member_outputs)
    else:
        features = np.concatenate([_stack_features(resolved, o) for o in outputs], axis=1)
        learner, ensemble_oof = _fit_stack(resolved, features, y, folds, seed)
        stacked = keras.layers.Concatenate(name="member_outputs")(
            [_stack_tensor(resolved, o) for o in member_outputs]
        )
        combined = _stack_layer(resolved, learner, features.shape[1])(stacked)
    model = keras.Model(inputs, combined, name=name or f"ensemble_{method}")

    scores: dict[str, dict[str, Any]] = {}
    if data is not None:
        for member_name, out in zip(names, outputs):
            scores[member_name] = compute_metrics(resolved, y, out)
        # A stack is scored out of fold; averages and votes learned nothing from `data`.
        combined_out = (
            ensemble_oof
            if ensemble_oof is not None
            else predict_model(model, x, direct_call_rows=DIRECT_CALL_ROWS)
        )
        scores["ensemble"] = compute_metrics(resolved, y, combined_out)
        key = "accuracy" if resolved.is_classification else "rmse"
        logger.info(
            "Ensemble (%s) %s %.4f; members %s.",
            method,
            key,
            scores["ensemble"][key],
            ", ".join(f"{scores[n][key]:.4f}" for n in names),
        )
    # Plain attributes, kept out of tf_keras's object tracking (not saved with
    # the model, and not turned into trackable wrappers).
    model._self_setattr_tracking = False
    try:
        model.scores = scores
        model.ensemble_method = method
    finally:
        model._self_setattr_tracking = True
    return model
