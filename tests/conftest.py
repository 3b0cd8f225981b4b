"""Shared fixtures. One TensorFlow process serves the whole suite."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerastrain._keras import keras  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_clear():
    """Every test starts seeded and ends with a fresh Keras session."""
    keras.utils.set_random_seed(0)
    yield
    keras.backend.clear_session()


@pytest.fixture(scope="session")
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (n, 8, 8, 1) float32 images and int labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images[..., None].astype(np.float32), bunch.target.astype(np.int64)


@pytest.fixture(scope="session")
def breast_cancer_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's breast cancer data: 569 rows, 30 features, binary labels."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


@pytest.fixture
def fast_train() -> dict:
    """Training options for tests: few epochs, silent."""
    return {"epochs": 3, "verbose": 0, "early_stopping": None}
