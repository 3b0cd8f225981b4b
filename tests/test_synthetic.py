"""Synthetic training rows (``data_options.synthesize``): the option, the
codec's raw rows, the GAN's resume and collapse checks, the stage (training
split only, balance, the fidelity gate), refusals, and the exported model."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import ConfigError, TrainingDivergedError
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.config.synthesize import parse_synthesize
from kerastrain.data.prepare import prepare_data
from kerastrain.synthetic import refuse_source, synthesize_stage
from kerastrain.synthetic.codec import fit_codec
from kerastrain.synthetic.gan import _collapsed, _identical_class

FAST = {"epochs": 1, "batch_size": 64, "min_fidelity": 0.0}


@pytest.mark.parametrize("per_class", [0, -3, 2.5, True, "even"])
def test_per_class_must_be_positive_or_balance(per_class):
    with pytest.raises(ConfigError, match=r"synthesize\.per_class' option must be a positive"):
        DataConfig(synthesize={"method": "gan", "per_class": per_class})


def test_synthesize_options_are_checked_and_filled():
    assert parse_synthesize("gan")["per_class"] == "balance"
    assert parse_synthesize({"per_class": 5, "epochs": 2})["min_fidelity"] == 0.7
    assert parse_synthesize(None) is None
    with pytest.raises(ConfigError, match=r"synthesize\.method' option must be 'gan'"):
        DataConfig(synthesize={"method": "vae"})
    with pytest.raises(ConfigError, match=r"Did you mean 'epochs'"):
        DataConfig(synthesize={"epoch": 3})
    with pytest.raises(ConfigError, match=r"min_fidelity' option must be a number in \[0, 1\]"):
        DataConfig(synthesize={"min_fidelity": 1.5})


def test_codec_maps_numbers_back_to_raw_rows_in_each_column_range():
    frame = {
        "age": np.array([21.0, 35.0, 50.0, np.nan, 44.0]),
        "score": np.array([0.25, 0.5, 0.75, 1.0, 0.5]),
        "city": np.array(["a", "b", "a", None, "c"], dtype=object),
    }
    codec = fit_codec(frame, np.arange(5), {"city": "categorical"})
    assert [c.kind for c in codec.columns] == ["numeric", "numeric", "categorical"]
    numbers = np.random.default_rng(0).normal(0, 3, (200, codec.width))
    rows = codec.decode(numbers)
    assert np.all(rows["age"] == np.round(rows["age"])) and rows["age"].min() >= 21
    assert rows["age"].max() <= 50 and set(rows["score"]) <= set(np.arange(0, 1.01, 0.01).round(2))
    assert rows["score"].min() >= 0.25 and rows["score"].max() <= 1.0
    assert set(rows["city"]) <= {"a", "b", "c"}
    np.testing.assert_allclose(codec.encode(rows)[:, 2:].sum(axis=1), 1.0)
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 3)).astype(np.uint8)
    image_codec = fit_codec(images, np.arange(10))
    back = image_codec.decode(np.random.default_rng(1).normal(0, 2, (5, 6, 6, 3)))
    assert back.dtype == np.uint8 and back.shape == (5, 6, 6, 3)
    np.testing.assert_array_equal(image_codec.decode(image_codec.encode(images)), images)


def _digits(digits_arrays, rows=300, **synth):
    x, y = digits_arrays
    options = DataConfig(synthesize={**FAST, **synth})
    return prepare_data((x[:rows], y[:rows]), options, seed=0)


@pytest.fixture(scope="module")
def digits_gan(digits_arrays, tmp_path_factory):
    """One GAN trained an epoch on 300 digits; its run folder holds its state."""
    run_dir = tmp_path_factory.mktemp("gan")
    prepared = _digits(digits_arrays, per_class=5)
    out, record = synthesize_stage(prepared, seed=0, run_dir=run_dir)
    return prepared, out, record, run_dir


@pytest.mark.slow
def test_synthetic_rows_go_to_the_training_split_only(digits_gan):
    prepared, out, record, run_dir = digits_gan
    before = {k: v.copy() for k, v in prepared.splits.__dict__.items()}
    n = prepared.num_rows
    assert record["used"] and record["rows_added"] == 50 and out.num_rows == n + 50
    new = np.arange(n, n + 50)
    assert np.array_equal(out.splits.train, np.concatenate([before["train"], new]))
    assert np.array_equal(out.splits.val, before["val"])
    assert np.array_equal(out.splits.test, before["test"])
    held = np.concatenate([out.splits.val, out.splits.test])
    assert not np.isin(held, new).any() and held.max() < n  # no synthetic row is held out
    assert np.bincount(out.y[new], minlength=10).tolist() == [5] * 10
    np.testing.assert_array_equal(out.x[:n], prepared.x)  # the real rows are untouched
    assert (run_dir / "synthetic" / "generator.keras").exists()
    assert (run_dir / "synthetic_grid.png").exists()
    for key in ("fidelity", "tstr", "diversity", "exact_copies", "median_distance_to_train"):
        assert key in record


@pytest.mark.slow
def test_generated_images_have_the_data_shape_and_value_range(digits_gan):
    prepared, out, _, _ = digits_gan
    generated = out.x[prepared.num_rows :]
    assert generated.shape == (50, 8, 8, 1) and generated.dtype == np.float32
    assert generated.min() >= 0.0 and generated.max() <= 16.0
    assert np.all(generated == np.round(generated))  # digits' pixels are whole numbers


@pytest.mark.slow
def test_a_one_epoch_generator_is_rejected_with_the_reason(digits_arrays, digits_gan, caplog):
    run_dir = digits_gan[3]  # the same one-epoch generator, reused from its run folder
    prepared = _digits(digits_arrays, per_class=5, min_fidelity=0.7)
    with caplog.at_level(logging.INFO):
        out, record = synthesize_stage(prepared, seed=0, run_dir=run_dir)
    assert "Reusing the GAN generator" in caplog.text and record["gan_epochs"] == 1
    assert out is prepared and not record["used"] and record["rows_added"] == 0
    assert record["fidelity"] < 0.7
    assert "below min_fidelity 0.7" in record["reason"]
    assert "Synthetic rows not used: fidelity" in caplog.text


@pytest.mark.slow
def test_gan_training_resumes_from_its_checkpoint(digits_arrays, digits_gan, tmp_path):
    shutil.copytree(digits_gan[3] / "synthetic", tmp_path / "synthetic")
    (tmp_path / "synthetic" / "generator.keras").unlink()  # killed before the end
    state = json.loads((tmp_path / "synthetic" / "state.json").read_text())
    (tmp_path / "synthetic" / "state.json").write_text(json.dumps({**state, "finished": False}))
    prepared = _digits(digits_arrays, per_class=5, epochs=2)
    _, record = synthesize_stage(prepared, seed=0, run_dir=tmp_path)
    assert record["gan_epochs"] == 2 and "resumed at epoch 2" in record["gan_stop_reason"]


@pytest.mark.slow
def test_balance_evens_the_class_counts_of_a_table(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    label = np.where(np.arange(n) < 180, "common", "rare")
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50, 10, n).round(1),
            "city": rng.choice(["north", "south", "east"], n),
            "label": label,
        }
    )
    options = DataConfig(target="label", synthesize={**FAST, "per_class": "balance"})
    prepared = prepare_data(frame, options, seed=0)
    out, record = synthesize_stage(prepared, seed=0)
    counts = np.bincount(out.y[out.splits.train].astype(int))
    assert counts[0] == counts[1] and record["rows_added"] == int(np.ptp(
        np.bincount(prepared.y[prepared.splits.train].astype(int))
    ))  # fmt: skip
    new = np.arange(prepared.num_rows, out.num_rows)
    city = out.x["city"][new]
    assert set(city) <= {"north", "south", "east"}
    age = out.x["age"][new].astype(float)
    assert np.all(age == np.round(age)) and age.min() >= 18 and age.max() <= 89
    assert set(record["ks"]) == {"age", "income"}


def test_regression_and_dataset_sources_are_refused(breast_cancer_arrays, digits_arrays):
    x, y = breast_cancer_arrays
    with pytest.raises(ConfigError, match="None for a regression task"):
        kerastrain.synthesize((x, y.astype(np.float32) + 0.5), epochs=1, data_options={
            "task": "regression"
        })  # fmt: skip
    dataset = tf.data.Dataset.from_tensor_slices(digits_arrays)
    with pytest.raises(ConfigError, match="None for a tf.data.Dataset source"):
        refuse_source(dataset, DataConfig(synthesize="gan"))
    with pytest.raises(ConfigError, match="None for a tf.data.Dataset source"):
        kerastrain.synthesize(dataset, epochs=1)


def test_identical_samples_of_a_class_are_a_collapse():
    noise = keras.Input((4,))
    label = keras.Input((1,), dtype="int32")
    constant = keras.layers.Lambda(lambda t: tf.zeros((tf.shape(t[0])[0], 3)) + 0.0 * t[0][:, :3])
    generator = keras.Model([noise, label], constant([noise, label]))
    assert _identical_class(generator, 2, 4, seed=0) == 0
    with pytest.raises(TrainingDivergedError, match="collapsed"):
        raise _collapsed(
            "every sample of class 0 is the same", 3, {"g_loss": [1.0], "d_loss": [1.0]}
        )


@pytest.mark.slow
def test_the_exported_model_has_no_trace_of_the_generator(digits_arrays, digits_gan, tmp_path):
    x, y = digits_arrays
    # The run reuses the fixture's generator (same data, split and seed) instead of training one.
    shutil.copytree(digits_gan[3] / "synthetic", tmp_path / "run" / "synthetic")
    result = kerastrain.fit_pipeline(
        (x[:300], y[:300]),
        "mlp",
        data_options={"synthesize": {**FAST, "per_class": 5}},
        train={"epochs": 1, "verbose": 0, "early_stopping": None},
        export={"formats": ["keras"]},
        report={"explain": "none"},
        output_dir=tmp_path / "run",
        seed=0,
    )
    assert result.synthetic["used"] and result.synthetic["rows_added"] == 50
    loaded = keras.models.load_model(result.artifacts["keras"], compile=False)
    names = " ".join(layer.name for layer in loaded.layers)
    assert "generator" not in names and "discriminator" not in names
    assert not any(isinstance(layer, keras.layers.Embedding) for layer in loaded.layers)
    assert loaded.count_params() == result.model.count_params()
    assert loaded.input_shape == (None, 8, 8, 1) and loaded.output_shape == (None, 10)
    assert "Synthetic data" in result.report_path.read_text()
