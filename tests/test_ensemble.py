"""Ensembles of k-fold models trained by kerastrain's own training step, on
scikit-learn's wine and breast cancer data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split

import kerastrain
from kerastrain._keras import keras
from kerastrain.config import ExportConfig, load_config
from kerastrain.data.prepare import Prepared
from kerastrain.data.preprocess import fit_standardizer
from kerastrain.data.split import Splits
from kerastrain.distribute import make_strategy
from kerastrain.ensembling import EPS, ensemble
from kerastrain.export import export_model, verify_artifacts
from kerastrain.task import Task
from kerastrain.training import run_training


def _kfold_members(x, y, task, folds, epochs, seed=0):
    """Held-out test rows, and one model per fold trained on the other folds."""
    dev, test = train_test_split(np.arange(len(y)), test_size=0.4, stratify=y, random_state=seed)
    members = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for i, (train, _) in enumerate(splitter.split(dev, y[dev])):
        rows = dev[train]
        prepared = Prepared(
            x=x,
            y=y,
            task=task,
            splits=Splits(rows, np.array([], np.int64), test),
            standardizer=fit_standardizer(x, rows),
            source="test data",
        )
        config = load_config(
            model="mlp",
            model_options={"width": 8, "depth": 1, "dropout": 0.0},
            train={
                "epochs": epochs,
                "verbose": 0,
                "early_stopping": None,
                "batch_size": 16,
                "learning_rate": 3e-3,
                # float32 members: the test compares the ensemble with
                # the members' own outputs to 1e-6
                "execution": {"mixed_precision": "float32"},
            },
            seed=seed + i,
        )
        keras.utils.set_random_seed(seed + i)
        model, _ = run_training(
            config.train,
            prepared,
            make_strategy("cpu"),
            model_spec=config.model,
            model_options=config.model_options,
            batch_size=config.batch_size,
            seed=config.seed,
            distribute=config.distribute,
        )
        members.append(model)
    return members, x[test], y[test]


@pytest.fixture(scope="module")
def wine_members():
    from sklearn.datasets import load_wine

    bunch = load_wine()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    return _kfold_members(x, y, Task("multiclass", 3), folds=3, epochs=6)


@pytest.fixture(scope="module")
def cancer_members(breast_cancer_arrays):
    x, y = breast_cancer_arrays
    return _kfold_members(x, y.astype(np.float32), Task("binary", 2), folds=2, epochs=2)


def _member_mean(scores, key):
    return np.mean([v[key] for k, v in scores.items() if k != "ensemble"])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["average", "vote", "stack"])
def test_ensemble_beats_or_matches_the_mean_of_its_members(wine_members, method):
    members, x, y = wine_members
    ens = ensemble(members, method, data=(x, y))
    scores = ens.scores
    assert set(scores) == {"member_0", "member_1", "member_2", "ensemble"}
    assert scores["ensemble"]["accuracy"] >= _member_mean(scores, "accuracy")
    assert scores["ensemble"]["f1"] >= _member_mean(scores, "f1")
    outputs = [m.predict(x, verbose=0) for m in members]
    combined = ens.predict(x, verbose=0)
    if method == "average":
        np.testing.assert_allclose(combined, np.mean(outputs, axis=0), atol=1e-6)
        assert scores["ensemble"]["log_loss"] <= _member_mean(scores, "log_loss")
    elif method == "vote":
        votes = np.sum([np.eye(3)[o.argmax(axis=1)] for o in outputs], axis=0)
        average = np.mean(outputs, axis=0)
        expected = (votes + 0.5 * average).argmax(axis=1)
        np.testing.assert_array_equal(combined.argmax(axis=1), expected)
        decided = np.sort(votes, axis=1)[:, -1] > np.sort(votes, axis=1)[:, -2]
        np.testing.assert_array_equal(
            combined.argmax(axis=1)[decided], votes.argmax(axis=1)[decided]
        )
        np.testing.assert_allclose(combined.sum(axis=1), 1.0, atol=1e-6)
    else:
        features = np.concatenate([np.log(np.clip(o, EPS, 1)) for o in outputs], axis=1)
        meta = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(features, y)
        np.testing.assert_allclose(combined, meta.predict_proba(features), atol=1e-4)
    assert ens.ensemble_method == method
    assert [m.name for m in members] == ["mlp"] * 3  # the members were cloned, not renamed


@pytest.mark.slow
def test_binary_ensembles_and_their_exports(cancer_members, tmp_path):
    members, x, y = cancer_members
    outputs = [m.predict(x, verbose=0) for m in members]
    stack = ensemble(members, "stack", data=(x, y), folds=3)
    assert stack.scores["ensemble"]["accuracy"] >= _member_mean(stack.scores, "accuracy")
    logits = np.concatenate(
        [np.log(np.clip(o, EPS, 1 - EPS)) - np.log1p(-np.clip(o, EPS, 1 - EPS)) for o in outputs],
        axis=1,
    )
    meta = LogisticRegression(C=1.0, max_iter=2000, random_state=0).fit(logits, y)
    np.testing.assert_allclose(
        stack.predict(x, verbose=0)[:, 0], meta.predict_proba(logits)[:, 1], atol=1e-4
    )

    vote = ensemble(members, "vote", data=(x, y))
    assert vote.scores["ensemble"]["accuracy"] >= _member_mean(vote.scores, "accuracy")
    assert vote.output_shape == (None, 1)
    positive = np.sum([o[:, 0] > 0.5 for o in outputs], axis=0)
    average = np.mean(outputs, axis=0)[:, 0]
    expected = np.where(positive * 2 == len(members), average > 0.5, positive * 2 > len(members))
    np.testing.assert_array_equal(vote.predict(x, verbose=0)[:, 0] > 0.5, expected)
    # The vote's arg-max, one-hot and comparison ops survive export like any other layer.
    artifacts = export_model(vote, tmp_path, ExportConfig(formats=["savedmodel", "tflite"]))
    checked = verify_artifacts(
        vote.predict(x, verbose=0), artifacts, x, y, Task("binary", 2), atol=1e-4
    )
    for fmt in ("savedmodel", "tflite"):
        assert checked[fmt]["agreement"] == 1.0
    assert kerastrain.evaluate(artifacts["tflite"], (x, y))["accuracy"] == pytest.approx(
        vote.scores["ensemble"]["accuracy"]
    )


def test_ensemble_without_data_has_no_scores(wine_members):
    members, x, _ = wine_members
    ens = ensemble(members[:2])
    assert ens.scores == {}
    np.testing.assert_allclose(
        ens.predict(x, verbose=0),
        (members[0].predict(x, verbose=0) + members[1].predict(x, verbose=0)) / 2,
        atol=1e-6,
    )


def test_ensemble_refuses_bad_input(wine_members):
    members, x, y = wine_members
    with pytest.raises(kerastrain.ConfigError, match="at least 2"):
        ensemble(members[:1])
    with pytest.raises(kerastrain.ConfigError, match="Did you mean 'vote'"):
        ensemble(members, "vot")
    with pytest.raises(kerastrain.ConfigError, match="'data' argument is required"):
        ensemble(members, "stack")
    other = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="softmax")])
    with pytest.raises(kerastrain.ConfigError, match=r"models\[2\] maps"):
        ensemble([members[0], members[1], other])
    regressors = [keras.Sequential([keras.Input((13,)), keras.layers.Dense(1)]) for _ in range(2)]
    with pytest.raises(kerastrain.ConfigError, match="a vote needs classes"):
        ensemble(regressors, "vote")
    with pytest.raises(kerastrain.DataError, match="class 0 has no row"):
        ensemble(members, "stack", data=(x[y > 0], y[y > 0]))
