"""Splits and folds through scikit-learn: holdout (stratified), time order,
k-fold, stratified k-fold, time-series folds, and splits a source fixes."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain import DataError
from kerastrain.config import DataConfig
from kerastrain.data.split import fixed_splits, fold_indices, split_indices
from kerastrain.task import Task

WINE_CLASSES = Task("multiclass", 3)


@pytest.fixture(scope="module")
def wine_labels():
    from sklearn.datasets import load_wine

    return load_wine().target


def test_stratified_holdout_keeps_class_shares(wine_labels):
    splits = split_indices(wine_labels, WINE_CLASSES, DataConfig(), seed=0)
    everything = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(everything.tolist()) == list(range(len(wine_labels)))
    share = np.bincount(wine_labels) / len(wine_labels)
    for part in (splits.train, splits.val, splits.test):
        np.testing.assert_allclose(np.bincount(wine_labels[part]) / len(part), share, atol=0.04)


def test_time_split_never_trains_on_the_future():
    y = np.arange(100, dtype=np.float32)
    splits = split_indices(y, Task("regression"), DataConfig(split="time"), seed=0)
    assert splits.train.max() < splits.val.min() <= splits.val.max() < splits.test.min()
    assert splits.sizes() == {"train": 70, "val": 15, "test": 15}


def test_kfold_and_stratified_kfold_hold_each_row_out_once(wine_labels):
    for stratify in (True, False):
        folds = fold_indices(wine_labels, WINE_CLASSES, DataConfig(stratify=stratify), 5, seed=0)
        held = np.concatenate([test for _, test in folds])
        assert sorted(held.tolist()) == list(range(len(wine_labels)))
        for train, test in folds:
            assert not set(train) & set(test)
            if stratify:
                share = np.bincount(wine_labels[test], minlength=3) / len(test)
                np.testing.assert_allclose(
                    share, np.bincount(wine_labels) / len(wine_labels), atol=0.05
                )


def test_time_series_folds_train_on_the_past_only():
    y = np.arange(60, dtype=np.float32)
    folds = fold_indices(y, Task("regression"), DataConfig(split="time"), 4, seed=0)
    assert len(folds) == 4
    for train, test in folds:
        assert train.max() < test.min()
    assert folds[0][1].min() > 0  # the earliest rows are never held out


def test_too_many_folds_for_a_class_are_refused():
    y = np.array([0] * 10 + [1] * 3)
    with pytest.raises(DataError, match=r"Class 1 has 3 rows .* fewer than the 5 folds"):
        fold_indices(y, Task("binary", 2), DataConfig(), 5, seed=0)


def test_fixed_splits_carve_only_what_is_missing(wine_labels):
    parts = {"train": np.arange(150), "test": np.arange(150, 178)}
    splits = fixed_splits(wine_labels, WINE_CLASSES, DataConfig(validation_split=0.2), 0, parts)
    np.testing.assert_array_equal(splits.test, parts["test"])
    assert len(splits.val) == 30 and splits.val.max() < 150
    assert len(splits.train) == 120
