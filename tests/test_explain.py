"""Explanations on data whose signal is known: permutation importance on
features of which only some matter, attribution maps on images whose class is
written in one corner."""

from __future__ import annotations

import numpy as np
import pytest

import kerastrain
from kerastrain._keras import keras
from kerastrain.explanation import AttributionMaps, PermutationImportance, check_explainable


def _fit(model, x, y, loss, epochs):
    model.compile(keras.optimizers.Adam(1e-2), loss)
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def tabular():
    """Six features; the label depends on features 1 and 4 only."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (1.5 * x[:, 1] - 2.0 * x[:, 4] + 0.3 * rng.normal(size=600) > 0).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    return _fit(model, x[:400], y[:400], "sparse_categorical_crossentropy", 15), x[400:], y[400:]


@pytest.fixture(scope="module")
def images():
    """8x8 noise images; class 1 when the top-left 3x3 corner is bright.
    One label in ten is flipped, so some images are always misclassified."""
    rng = np.random.default_rng(1)
    n = 1000
    x = rng.normal(0.0, 0.5, size=(n, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    x[y == 1, :3, :3, 0] += 1.5
    flipped = rng.random(n) < 0.1
    y = np.where(flipped, 1 - y, y)
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                16, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-2)
            ),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    return (
        _fit(model, x[:900], y[:900].astype(np.float32), "binary_crossentropy", 12),
        x[900:],
        y[900:],
    )


def test_permutation_importance_ranks_the_signal_features_first(tabular, tmp_path):
    model, x, y = tabular
    names = ["a", "signal_1", "c", "d", "signal_4", "f"]
    imp = kerastrain.explain(model, (x, y), "permutation", feature_names=names, repeats=5)
    assert isinstance(imp, PermutationImportance)
    assert set(imp.ranking()[:2]) == {"signal_1", "signal_4"}
    noise = [0, 2, 3, 5]
    assert np.all(imp.importances_mean[[1, 4]] > 0.15)
    assert np.all(np.abs(imp.importances_mean[noise]) < 0.03)
    assert imp.importances.shape == (6, 5)
    np.testing.assert_allclose(imp.importances_mean, imp.importances.mean(axis=1))
    np.testing.assert_allclose(imp.importances_std, imp.importances.std(axis=1))
    assert imp.scoring == "accuracy" and imp.baseline_score > 0.85
    assert imp.plot(tmp_path / "imp.png").stat().st_size > 1000
    by_loss = kerastrain.explain(model, (x, y), "permutation", scoring="neg_log_loss", repeats=2)
    assert set(by_loss.ranking()[:2]) == {"feature_1", "feature_4"}


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_attribution_maps_look_at_the_corner(images, method, tmp_path):
    model, x, y = images
    maps = kerastrain.explain(model, (x, y), method, examples=6)
    assert isinstance(maps, AttributionMaps)
    assert maps.correct.any() and (~maps.correct).any()  # right and wrong examples both shown
    predicted = (model.predict(x[maps.indices], verbose=0)[:, 0] > 0.5).astype(int)
    np.testing.assert_array_equal(maps.predicted, predicted)
    np.testing.assert_array_equal(maps.correct, predicted == y[maps.indices])
    assert maps.maps.shape == (6, 8, 8)
    corner = maps.maps[:, :3, :3].mean()
    rest = (maps.maps.sum(axis=(1, 2)) - maps.maps[:, :3, :3].sum(axis=(1, 2))).sum() / (6 * 55)
    # Gradients of a ReLU network are noisy; their path integral much less so.
    assert corner > (1.5 if method == "saliency" else 3.0) * rest
    if method == "integrated_gradients":
        # Completeness: the attributions add up to the output's change from the baseline.
        assert np.all(np.abs(maps.delta) < 0.02)
    assert maps.plot(tmp_path / f"{method}.png").stat().st_size > 1000


def test_explain_refuses_what_the_data_cannot_show(tabular, images):
    model, x, y = tabular
    with pytest.raises(kerastrain.DataError, match="need images"):
        kerastrain.explain(model, (x, y), "saliency")
    with pytest.raises(kerastrain.ConfigError, match="Did you mean 'saliency'"):
        kerastrain.explain(model, (x, y), "salency")
    with pytest.raises(kerastrain.ConfigError, match="'scoring' option"):
        kerastrain.explain(model, (x, y), scoring="r2")
    image_model, xi, yi = images
    with pytest.raises(kerastrain.DataError, match="rows of features"):
        kerastrain.explain(image_model, (xi, yi), "permutation")


def test_the_pipeline_refuses_an_impossible_explanation_before_training():
    from kerastrain.config import DataConfig
    from kerastrain.data.prepare import prepare_data

    prepared = prepare_data("digits", DataConfig(), seed=0)
    check_explainable("auto", prepared)
    with pytest.raises(kerastrain.ConfigError, match="'report.explain' option"):
        check_explainable("permutation", prepared)
