"""Tables: CSV files and DataFrames with numeric and categorical columns,
missing values, and the failure modes, on real data (breast cancer, wine)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import DataError
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.data.sources import load_data


def _breast_cancer_csv(path, rng):
    """Breast cancer with a categorical size band, and holes in both kinds."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = np.where(frame["diagnosis"] == 1, "benign", "malignant")
    frame["size band"] = pd.cut(
        frame["mean radius"], [0, 12, 15, 100], labels=["small", "medium", "large"]
    ).astype(str)
    frame = frame[["size band", *list(bunch.feature_names[:8]), "diagnosis"]].copy()
    for column in ["mean radius", "mean texture", "mean area"]:
        frame.loc[rng.choice(len(frame), 40, replace=False), column] = np.nan
    frame.loc[rng.choice(len(frame), 30, replace=False), "size band"] = ""
    frame.to_csv(path, index=False)
    return frame


@pytest.mark.slow
def test_csv_with_categories_and_holes_trains_exports_and_serves_raw_columns(tmp_path):
    rng = np.random.default_rng(0)
    frame = _breast_cancer_csv(tmp_path / "cancer.csv", rng)
    result = kerastrain.fit_pipeline(
        str(tmp_path / "cancer.csv"),
        "mlp",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"target": "diagnosis", "missing_indicator": True},
        train={"epochs": 12, "verbose": 0, "early_stopping": None},
        model_options={"width": 32},
        export={"formats": ["savedmodel", "tflite"]},
    )
    assert result.metrics["test"]["accuracy"] > 0.88
    # Every artifact was reloaded and answered like the Keras model.
    assert result.metrics["savedmodel"]["max_abs_diff"] < 1e-4
    assert result.metrics["tflite"]["max_abs_diff"] < 1e-4
    # The report explains the table column by column (permutation importance).
    report = result.report_path.read_text()
    assert "Permutation importance" in report and "size band" in report
    model = result.model
    assert set(model.input) == {
        "size_band",
        "mean_radius",
        "mean_texture",
        "mean_perimeter",
        "mean_area",
        "mean_smoothness",
        "mean_compactness",
        "mean_concavity",
        "mean_concave_points",
    }
    # The learned fill values are the training rows' medians.
    prepared = prepare_data(str(tmp_path / "cancer.csv"), result.config.data_options, 0)
    train_rows = frame.iloc[prepared.splits.train]
    fill = dict(zip([c.name for c in prepared.encoding.numeric], model.get_layer("impute").fill))
    assert fill["mean_radius"] == pytest.approx(train_rows["mean radius"].median(), rel=1e-5)
    assert model.get_layer("missing_indicator") is not None
    # The SavedModel takes raw columns: a missing number (NaN), a missing
    # category (""), and a category never seen in training.
    serve = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["serving_default"]
    raw = {
        name: tf.constant(frame[col].to_numpy()[:3].astype(np.float32))
        for name, col in zip(
            [
                "mean_radius",
                "mean_texture",
                "mean_perimeter",
                "mean_area",
                "mean_smoothness",
                "mean_compactness",
                "mean_concavity",
                "mean_concave_points",
            ],
            frame.columns[1:9],
        )
    }
    raw["mean_radius"] = tf.constant([np.nan, 14.0, 20.0], tf.float32)
    raw["size_band"] = tf.constant(["", "huge", "small"])
    served = serve(**raw)["output"].numpy()
    direct = model.predict({k: v.numpy() for k, v in raw.items()}, verbose=0)
    assert np.isfinite(served).all()
    np.testing.assert_allclose(served, direct, atol=1e-5)


def test_encoding_is_learned_on_the_training_rows_only(caplog):
    # Rows 0-59 train; the held-out rows have other values and a new category.
    frame = pd.DataFrame(
        {
            "x": np.r_[np.arange(60.0), np.full(40, 1000.0)],
            "colour": ["red"] * 40 + ["blue"] * 20 + ["green"] * 40,
            "y": np.r_[np.zeros(30), np.ones(30), np.zeros(20), np.ones(20)].astype(int),
        }
    )
    options = DataConfig(target="y", split="time", validation_split=0.0, test_split=0.4)
    with caplog.at_level(logging.WARNING):
        prepared = prepare_data(frame, options, seed=0)
    assert prepared.splits.train.max() == 59
    # The held-out category is reported, and mapped to the out-of-vocabulary bucket.
    assert "Column 'colour': 40 rows ('green') of the held-out rows" in caplog.text
    assert prepared.summary()["categories unseen in training (out-of-vocabulary)"] == {
        "colour": "40 rows ('green')"
    }
    x_col, colour = prepared.encoding.columns
    assert x_col.fill == pytest.approx(29.5) and x_col.mean == pytest.approx(29.5)
    assert colour.vocabulary == ["red", "blue"] and colour.fill == "red"
    inputs = model_inputs((), None, prepared.encoding)
    encoder = keras.Model(inputs.inputs, inputs.features)
    out = encoder.predict(
        {"x": np.array([np.nan, 29.5], np.float32), "colour": np.array(["green", ""], object)},
        verbose=0,
    )
    # [standardized x, OOV, red, blue]: NaN -> median (0 after centring),
    # green -> out-of-vocabulary, "" -> the most frequent category.
    np.testing.assert_allclose(out, [[0, 1, 0, 0], [0, 0, 1, 0]], atol=1e-6)


def test_wide_categories_use_an_embedding_and_integer_categories_are_detected():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "city": [f"c{i}" for i in rng.integers(0, 60, 300)],
            "floors": rng.integers(1, 4, 300),
            "area": rng.normal(100, 20, 300),
            "y": rng.integers(0, 2, 300),
        }
    )
    prepared = prepare_data(frame, DataConfig(target="y"), seed=0)
    kinds = {c.name: (c.kind, c.embedding_dim) for c in prepared.encoding.columns}
    assert kinds["floors"] == ("categorical", 0)  # 3 distinct integers: one-hot
    assert kinds["city"][0] == "categorical" and kinds["city"][1] > 0  # 60 > 31: embedding
    assert kinds["area"] == ("numeric", 0)
    forced = prepare_data(
        frame,
        DataConfig(
            target="y",
            columns={"floors": "numeric", "city": "drop"},
            categorical="embedding",
            embedding_dim=3,
        ),
        seed=0,
    )
    assert [c.name for c in forced.encoding.columns] == ["floors", "area"]
    assert forced.encoding.columns[0].kind == "numeric"


def test_table_preprocessing_stays_float32_under_mixed_precision():
    from kerastrain.models import Head, build_model
    from kerastrain.training.precision import precision_scope

    frame = pd.DataFrame(
        {
            "income": [120_000.0, np.nan, 95_500.0, 250_250.0] * 10,
            "city": ["a", "b", "", "c"] * 10,
            "city_code": [f"k{i}" for i in range(40)],  # 40: an embedding
            "y": [0, 1, 0, 1] * 10,
        }
    )
    prepared = prepare_data(frame, DataConfig(target="y"), seed=0)
    with precision_scope("mixed_bfloat16"):
        inputs = model_inputs((), None, prepared.encoding)
        model = build_model("mlp", inputs, Head(1, "sigmoid"), {"width": 8})
    assert inputs.features.dtype == tf.float32
    assert model.get_layer("dense_0").compute_dtype == "bfloat16"
    out = model.predict(prepared.rows(np.arange(4)), verbose=0)
    assert np.isfinite(out).all()


def test_missing_target_column_is_named_with_a_suggestion(tmp_path):
    pd.DataFrame({"a": [1, 2], "label": [0, 1]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"target='lable' is not in .*d\.csv.*Did you mean 'label'"):
        load_data(str(tmp_path / "d.csv"), DataConfig(target="lable"))


def test_a_column_with_no_value_is_refused_by_name(tmp_path):
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "empty": [None, None, None], "y": [0, 1, 0]}).to_csv(
        tmp_path / "d.csv", index=False
    )
    with pytest.raises(DataError, match=r"Column 'empty' .* has no value in any of its 3 rows"):
        load_data(str(tmp_path / "d.csv"), DataConfig(target="y"))
    # Declared as dropped, the same file loads.
    loaded = load_data(str(tmp_path / "d.csv"), DataConfig(target="y", columns={"empty": "drop"}))
    assert list(loaded.x) == ["a"]


def test_a_word_in_a_number_column_names_column_rows_and_lines(tmp_path):
    values = [str(v) for v in np.arange(30.0)]
    values[4], values[17] = "n/a?", "twelve"
    pd.DataFrame({"dose": values, "y": [0, 1] * 15}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(
        DataError,
        match=r"Column 'dose' holds numbers but rows 4, 17 \(2 rows\) "
        r"\(file lines 6, 19\).*first: 'n/a\?'",
    ):
        load_data(str(tmp_path / "d.csv"), DataConfig(target="y"))


def test_a_column_missing_in_every_training_row_is_refused():
    frame = pd.DataFrame(
        {"a": np.r_[np.full(20, np.nan), np.arange(10.0)], "b": np.arange(30.0), "y": [0, 1] * 15}
    )
    with pytest.raises(DataError, match=r"Column 'a' has no value in the 20 training rows"):
        prepare_data(
            frame,
            DataConfig(target="y", split="time", validation_split=0.0, test_split=1 / 3),
            seed=0,
        )


def test_dropping_rows_is_on_request_and_reported(caplog):
    frame = pd.DataFrame(
        {
            "a": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
            "b": ["x", "y", "", "x", "y", "x", "y", "x"],
            "y": [0, 1, 0, 1, 0, np.nan, 0, 1],
        }
    )
    with pytest.raises(DataError, match=r"rows 5 \(1 row\) .* have no label.*impute='drop'"):
        prepare_data(frame, DataConfig(target="y"), seed=0)
    with pytest.raises(DataError, match=r"rows 1, 2 \(2 rows\) .* missing values .*'error'"):
        prepare_data(frame, DataConfig(target="y", impute="error"), seed=0)
    options = DataConfig(target="y", impute="drop", validation_split=0.0, test_split=0.0)
    prepared = prepare_data(frame, options, seed=0)
    assert prepared.dropped.tolist() == [1, 2, 5]
    assert prepared.num_rows == 5
    assert prepared.summary()["dropped rows (impute='drop')"] == "1, 2, 5 (3 rows)"
    assert "dropped rows 1, 2, 5 (3 rows)" in caplog.text


def test_table_noise_perturbs_training_numbers_only(breast_cancer_arrays):
    x, y = breast_cancer_arrays
    frame = pd.DataFrame(x[:, :4], columns=["a", "b", "c", "d"])
    frame["kind"] = np.where(x[:, 0] > 14, "big", "small")
    frame["y"] = y
    from kerastrain.data.feed import training_datasets

    prepared = prepare_data(frame, DataConfig(target="y", augment=[{"noise": 0.5}]), seed=0)
    train_ds, val_ds = training_datasets(prepared, 512, seed=0)
    batch, _ = next(iter(train_ds))
    rows = np.sort(prepared.splits.train)
    # Shuffled: compare the perturbation through the sorted values' spread.
    noisy = batch["a"].numpy()
    assert len(noisy) == len(rows)
    std = prepared.encoding.numeric_std()["a"]
    clean_sorted = np.sort(frame["a"].to_numpy(np.float32)[rows])
    assert not np.allclose(np.sort(noisy), clean_sorted)
    assert abs(np.std(noisy) / np.sqrt(std**2 * 1.25) - 1) < 0.1  # variance grows by 0.5**2
    assert set(batch["kind"].numpy().astype(str)) == {"big", "small"}  # categories untouched
    val_batch, _ = next(iter(val_ds))
    np.testing.assert_array_equal(
        val_batch["a"].numpy(), frame["a"].to_numpy(np.float32)[prepared.splits.val]
    )
