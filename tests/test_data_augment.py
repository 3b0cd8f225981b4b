"""Augmentation: options, the image layers, mixup and cutmix label mixing,
and that none of it reaches evaluation or the exported model."""

from __future__ import annotations

import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import tf
from kerastrain.config import DataConfig
from kerastrain.config.data import parse_augment
from kerastrain.data.augment import cutmix, mixup
from kerastrain.data.feed import training_datasets
from kerastrain.data.prepare import prepare_data
from kerastrain.export import load_predictor

#: Explanations are tested in test_explain.py; these runs skip them.
NOEXPLAIN = {"explain": "none"}


def test_presets_and_lists_parse_to_full_parameters():
    assert [a["name"] for a in parse_augment("light", "image")] == ["flip", "rotation", "zoom"]
    assert parse_augment("light", "table") == [{"name": "noise", "stddev": 0.05}]
    assert parse_augment(["flip", {"rotation": 0.3}, {"flip": "vertical"}][1:], "image") == [
        {"name": "rotation", "factor": 0.3},
        {"name": "flip", "mode": "vertical"},
    ]
    assert parse_augment([{"mixup": {"alpha": 0.4}}]) == [{"name": "mixup", "alpha": 0.4}]


@pytest.mark.parametrize(
    "value, message",
    [
        (["rotaton"], r"augment\[0\]' option must be one of .*Did you mean 'rotation'"),
        ([{"zoom": {"factr": 0.1}}], r"augment\[0\]\.zoom' option must be one of its parameters"),
        ([{"zoom": 3.0}], r"augment\[0\]\.zoom\.factor' option must be a number in \(0, 1\]"),
        (["mixup", "cutmix"], r"at most one of 'mixup' and 'cutmix'"),
        ("medium", r"must be 'light', 'strong'"),
    ],
)
def test_bad_augment_options_are_refused_before_anything_runs(value, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(augment=value)


def test_image_augmentation_on_a_table_is_refused(breast_cancer_arrays):
    with pytest.raises(ConfigError, match=r"its examples are not images \(shape \(30,\)\)"):
        prepare_data(breast_cancer_arrays, DataConfig(augment=["flip"]), seed=0)


def test_image_layers_change_training_batches_only(digits_arrays):
    options = DataConfig(augment=["rotation", "zoom", "translation", "contrast", "crop"])
    prepared = prepare_data(digits_arrays, options, seed=0)
    train_ds, val_ds = training_datasets(prepared, 4096, seed=0)
    x, _ = digits_arrays
    first = next(iter(train_ds))[0].numpy()
    second = next(iter(train_ds))[0].numpy()
    clean = x[prepared.splits.train]
    assert first.shape == clean.shape and first.dtype == np.float32
    # Shuffled and transformed: sorted pixel sums differ from the clean ones,
    # and from one epoch to the next.
    sums = lambda a: np.sort(a.reshape(len(a), -1).sum(axis=1))  # noqa: E731
    assert not np.allclose(sums(first), sums(clean))
    assert not np.allclose(first, second)
    assert first.min() >= 0 and first.max() <= 255  # contrast clips to the pixel range
    val_first = next(iter(val_ds))[0].numpy()
    np.testing.assert_array_equal(val_first, x[prepared.splits.val])
    np.testing.assert_array_equal(next(iter(val_ds))[0].numpy(), val_first)


def test_mixup_mixes_inputs_and_labels_by_the_same_weight():
    n = 64
    x = tf.eye(n)  # each example marks its own position ...
    y = tf.eye(n)  # ... and its own class
    mixed_x, mixed_y = mixup(x, y, tf.constant([3, 7], tf.int64), alpha=0.4)
    np.testing.assert_allclose(mixed_x.numpy(), mixed_y.numpy(), atol=1e-6)
    np.testing.assert_allclose(mixed_y.numpy().sum(axis=1), 1.0, atol=1e-6)
    assert (mixed_y.numpy().max(axis=1) < 0.999).mean() > 0.5  # most labels are soft


def test_cutmix_label_weights_are_the_pixel_shares():
    n, size = 32, 16
    x = tf.reshape(tf.repeat(tf.range(n, dtype=tf.float32), size * size), (n, size, size, 1))
    y = tf.one_hot(tf.range(n), n)
    mixed_x, mixed_y = cutmix(x, y, tf.constant([1, 2], tf.int64), alpha=1.0)
    pixels = mixed_x.numpy().reshape(n, -1)
    own = (pixels == np.arange(n)[:, None]).mean(axis=1)
    np.testing.assert_allclose(mixed_y.numpy()[np.arange(n), np.arange(n)], own, atol=1e-6)
    assert (own < 1).sum() > n // 2  # most images got a patch


@pytest.mark.slow
def test_augmented_training_never_leaks_into_the_exported_model(digits_arrays, tmp_path):
    result = kerastrain.fit_pipeline(
        digits_arrays,
        "cnn",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"augment": "strong"},
        model_options={"filters": 8, "dense": 32},
        train={"epochs": 2, "batch_size": 128, "verbose": 0, "early_stopping": None},
        export={"formats": ["savedmodel"]},
        report=NOEXPLAIN,
    )
    model = result.model
    # mixup in the preset: one-hot labels and the categorical loss.
    assert result.config.data_options.augment == "strong"
    assert type(model.loss).__name__ == "CategoricalCrossentropy"
    assert not [layer for layer in model.layers if type(layer).__name__.startswith("Random")]
    x = digits_arrays[0][:64]
    predictor = load_predictor(result.artifacts["savedmodel"])
    once, twice = predictor(x), predictor(x)
    np.testing.assert_array_equal(once, twice)
    np.testing.assert_allclose(once, model.predict(x, verbose=0), atol=1e-5)
