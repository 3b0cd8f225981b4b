"""Hostile and careless data, tried as a new user would: every case is refused
with a `DataError` naming the rows, column, file, element or option at fault,
before anything trains (most cases call `prepare_data`, the data stage, which
runs before any model is built)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kerastrain import DataError, fit_pipeline
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import fit_standardizer, fit_target_scaler, with_target_scale


def prepare(data, **options):
    return prepare_data(data, DataConfig(**options), seed=0)


def refused(data, pattern: str, **options) -> str:
    with pytest.raises(DataError, match=pattern) as info:
        prepare(data, **options)
    return str(info.value)


def features(n: int = 40, width: int = 3) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, width)).astype(np.float32)


def two_classes(n: int = 40) -> np.ndarray:
    return np.arange(n) % 2


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((6, 6, 3), value, np.uint8)
    path.write_bytes(tf.io.encode_png(image).numpy())


# --- A single class (defect 2) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        (np.zeros(40, int), "0"),
        (np.ones(40, int), "1"),
        (np.full(40, 3), "3"),
        (np.full(40, 2.0), "2"),
        (np.array(["cat"] * 40), "'cat'"),
    ],
    ids=["all-0", "all-1", "all-3", "all-2.0", "all-cat"],
)
def test_a_single_class_is_refused(labels, shown):
    text = refused((features(), labels), "a classifier needs examples of at least two classes")
    assert f"Every label is {shown} (all 40 rows)" in text


def test_a_single_class_of_one_hot_rows_is_refused():
    one_hot = np.eye(4)[np.full(40, 2)]
    refused((features(), one_hot), r"Every label is 2 \(all 40 rows\)")


def test_a_single_class_in_a_table_is_refused():
    frame = pd.DataFrame({"a": np.arange(30.0), "label": ["spam"] * 30})
    refused(frame, "Every label is 'spam'", target="label")


def test_an_image_folder_with_one_class_folder_is_refused(tmp_path):
    for i in range(4):
        write_png(tmp_path / "cat" / f"{i}.png", 40 * i)
    text = refused(tmp_path, "single class sub-folder, 'cat'")
    assert str(tmp_path) in text


def test_class_indices_with_gaps_are_refused_with_a_remap_hint():
    labels = np.where(two_classes() == 0, 0, 7)
    text = refused((features(), labels), "which makes 8 classes, but 6 of them have no example")
    assert "classes 1, 2, 3, 4, 5, 6" in text
    assert "np.unique(y, return_inverse=True)" in text
    assert "data_options.num_classes=8" in text


def test_class_indices_with_gaps_are_kept_when_num_classes_says_so():
    labels = np.where(two_classes() == 0, 0, 7)
    prepared = prepare((features(), labels), num_classes=8, stratify=False)
    assert prepared.task.num_classes == 8


def test_one_hot_rows_give_their_width_as_the_class_count():
    labels = np.eye(5)[np.arange(40) % 4]  # class 4 never appears
    prepared = prepare((features(), labels))
    assert prepared.task.num_classes == 5


def test_a_class_with_a_single_row_cannot_be_stratified():
    labels = np.r_[two_classes(39), 2]
    text = refused((features(), labels), "Class 2 has 1 example")
    assert "rows 39 (1 row)" in text
    assert "data_options.stratify=False" in text


def test_a_time_split_whose_training_rows_hold_one_class_is_refused():
    labels = np.r_[np.zeros(28, int), np.ones(12, int)]
    refused(
        (features(), labels),
        "The training split holds a single class, 0",
        split="time",
    )


def test_a_constant_regression_target_is_refused():
    refused((features(), np.full(40, 2.5)), "Every regression target is 2.5", task="regression")


# --- Non-finite values, on every input path (defect 3) ------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [(np.inf, "infinite"), (-np.inf, "infinite"), (np.nan, "NaN"), (1e39, "infinite")],
    ids=["inf", "-inf", "nan", "beyond-float32"],
)
def test_non_finite_array_features_name_the_rows(value, kind):
    x = features().astype(np.float64)
    x[[5, 17], 1] = value
    text = refused((x, two_classes()), rf"Rows 5, 17 \(2 rows\) have {kind}")
    assert "feature values" in text


@pytest.mark.parametrize("value", [np.inf, -np.inf, 1e39], ids=["inf", "-inf", "beyond-float32"])
def test_non_finite_dataframe_features_name_the_column_and_rows(value):
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.ones(40), "label": two_classes()})
    frame.loc[7, "a"] = value
    text = refused(frame, r"Rows 7 \(1 row\) have infinite", target="label")
    assert "column 'a'" in text


def test_missing_dataframe_values_are_imputed_not_refused():
    frame = pd.DataFrame({"a": np.arange(40.0), "label": two_classes()})
    frame.loc[[3, 9], "a"] = np.nan
    prepared = prepare(frame, target="label")
    assert prepared.num_rows == 40


@pytest.mark.parametrize("value", ["inf", "-inf", "1e39"])
def test_non_finite_csv_values_name_the_file_line(tmp_path, value):
    lines = ["a,b,label", *(f"{i},{i % 3},{i % 2}" for i in range(30))]
    lines[4] = f"{value},1,1"  # data row 3
    path = tmp_path / "data.csv"
    path.write_text("\n".join(lines) + "\n")
    text = refused(path, r"Rows 3 \(1 row\) \(file lines 5\) have infinite", target="label")
    assert f"column 'a' of {path}" in text


def test_non_finite_dataset_features_name_the_rows():
    x = features()
    x[11, 0] = np.inf
    dataset = tf.data.Dataset.from_tensor_slices((x, two_classes())).batch(8)
    refused(dataset, r"Rows 11 \(1 row\) have infinite")


@pytest.mark.parametrize(
    ("value", "kind"), [(np.inf, "infinite"), (np.nan, "NaN"), (1e39, "infinite")]
)
def test_non_finite_regression_targets_name_the_rows(value, kind):
    y = np.linspace(0.0, 1.0, 40)
    y[21] = value
    refused((features(), y), rf"Rows 21 \(1 row\) have {kind}", task="regression")


def test_targets_near_1e25_are_scaled_in_float64():
    y = np.linspace(1.0, 3.0, 40) * 1e25
    prepared = prepare((features(), y), task="regression")
    targets = prepared.training_targets
    assert np.isfinite(targets).all()
    assert abs(float(targets[prepared.splits.train].std()) - 1.0) < 1e-3
    identity = keras.Sequential([keras.Input((1,)), keras.layers.Lambda(lambda t: t)])
    scaled = with_target_scale(identity, prepared.target_scaler)
    back = scaled.predict(targets[:, None], verbose=0)[:, 0]
    np.testing.assert_allclose(back, prepared.y, rtol=1e-4)


def test_a_target_scale_beyond_float32_is_refused():
    y = np.r_[np.full(20, -1e300), np.full(20, 1e300)]
    with pytest.raises(DataError, match="The regression targets are spread too widely") as info:
        fit_target_scaler(y, np.arange(40))
    assert "data_options.scale_target=False" in str(info.value)


def test_features_whose_variance_overflows_float32_are_refused():
    x = features()
    x[:, 2] *= 1e25
    text = refused((x, two_classes()), r"Feature \(last-axis index 2\) is spread too widely")
    assert "data_options.normalize=False" in text


def test_a_table_column_whose_variance_overflows_float32_is_refused():
    frame = pd.DataFrame({"a": np.arange(40.0) * 1e25, "label": two_classes()})
    refused(frame, "Column 'a' spreads too widely", target="label")


def test_the_variance_of_large_values_keeps_its_precision():
    x = (1e9 + np.random.default_rng(0).normal(size=(1000, 1))).astype(np.float64)
    variance = fit_standardizer(x, np.arange(1000)).variance[0]
    assert abs(variance - x.var()) < 1e-4 * x.var()


# --- tf.data inputs (defect 4) -------------------------------------------------------------


def generator_dataset(shapes, labels=None):
    labels = labels if labels is not None else [i % 2 for i in range(len(shapes))]

    def generate():
        for shape, label in zip(shapes, labels):
            yield np.ones(shape, np.float32), label

    signature = (
        tf.TensorSpec((None,), tf.float32),
        tf.TensorSpec((), tf.int64),
    )
    return tf.data.Dataset.from_generator(generate, output_signature=signature)


def test_an_unbatched_generator_with_an_open_dimension_is_read_row_by_row():
    prepared = prepare(generator_dataset([(4,)] * 30))
    assert prepared.num_rows == 30
    assert prepared.feature_shape == (4,)


def test_a_generator_of_unknown_rank_is_read_row_by_row():
    def generate():
        for i in range(30):
            yield np.full(4, i, np.float32), i % 2

    signature = (tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.int64))
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
    prepared = prepare(dataset)
    assert (prepared.num_rows, prepared.feature_shape) == (30, (4,))


def test_mismatched_generator_elements_name_the_element():
    shapes = [(4,)] * 30
    shapes[9] = (3,)
    text = refused(generator_dataset(shapes), r"Element 9 of the tf.data.Dataset has features")
    assert "shape (3,), but element 0 has (4,)" in text


def test_mismatched_batches_name_the_batch():
    def batches():  # tf.data cannot concatenate batches of two widths; a generator can
        for width in (4, 4, 5):
            yield np.ones((8, width), np.float32), np.arange(8) % 2

    signature = (tf.TensorSpec((None, None), tf.float32), tf.TensorSpec((None,), tf.int64))
    dataset = tf.data.Dataset.from_generator(batches, output_signature=signature)
    refused(dataset, r"Batch 2 of the tf.data.Dataset has features of shape \(5,\)")


def test_a_generator_that_never_ends_stops_at_max_dataset_rows():
    def forever():
        i = 0
        while True:
            yield np.full(3, i, np.float32), i % 2
            i += 1

    signature = (tf.TensorSpec((3,), tf.float32), tf.TensorSpec((), tf.int64))
    dataset = tf.data.Dataset.from_generator(forever, output_signature=signature)
    text = refused(
        dataset, r"more than data_options.max_dataset_rows=50 examples", max_dataset_rows=50
    )
    assert "length is unknown" in text


def test_a_dataset_longer_than_max_dataset_rows_is_refused_before_reading():
    dataset = tf.data.Dataset.from_tensor_slices((features(100), two_classes(100)))
    refused(dataset, r"max_dataset_rows=50 examples \(100 elements\)", max_dataset_rows=50)


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_batched_datasets_are_read_batch_by_batch(drop_remainder):
    dataset = tf.data.Dataset.from_tensor_slices((features(40), two_classes(40)))
    prepared = prepare(dataset.batch(8, drop_remainder=drop_remainder))
    assert prepared.num_rows == 40
    assert prepared.feature_shape == (3,)


def test_one_hot_examples_as_long_as_their_features_are_not_taken_for_batches():
    one_hot = np.eye(3)[np.arange(40) % 3]
    prepared = prepare(tf.data.Dataset.from_tensor_slices((features(40), one_hot)))
    assert (prepared.num_rows, prepared.task.num_classes) == (40, 3)


def test_a_dataset_of_feature_dicts_is_refused():
    dataset = tf.data.Dataset.from_tensor_slices(({"a": features()[:, 0]}, two_classes()))
    refused(dataset, "pairs of dense tensors")


def test_a_repeating_dataset_is_refused():
    dataset = tf.data.Dataset.from_tensor_slices((features(), two_classes())).repeat()
    refused(dataset, "infinite")


# --- Other careless data ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ((np.zeros((0, 3)), np.zeros(0)), "The data is empty"),
        ((features(10), two_classes(9)), "The features have 10 rows but there are 9 labels"),
        ((np.zeros((10, 0)), two_classes(10)), r"no values: each of the 10 rows has shape \(0,\)"),
        ((features(), np.r_[two_classes(39), np.nan]), r"Rows 39 \(1 row\) have NaN labels"),
        ((features(), np.array([0, 1, None, 1] * 10, object)), r"Rows 2, 6, 10"),
        ((features(), np.r_[two_classes(39), -1]), "Class labels must be 0 or more"),
        ((features(), np.ones((40, 3))), "not one-hot"),
        ((np.array([["1", "x"]] * 40), two_classes()), "The features must be numbers"),
    ],
    ids=[
        "empty",
        "length-mismatch",
        "no-feature-columns",
        "nan-label",
        "none-label",
        "negative-label",
        "2d-labels-not-one-hot",
        "text-in-array",
    ],
)
def test_careless_arrays_are_refused(data, pattern):
    refused(data, pattern)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (([[1.0, 2.0]] * 5 + [[3.0]] + [[1.0, 2.0]] * 4, two_classes(10)), r"features are ragged"),
        ((features(3), [[0], [1, 0], [1]]), r"labels are ragged: rows 1 \(1 row\)"),
    ],
    ids=["ragged-features", "ragged-labels"],
)
def test_ragged_lists_name_the_rows(data, pattern):
    text = refused(data, pattern)
    assert "row 0" in text


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (None, "Cannot read data of type NoneType"),
        (42, "Cannot read data of type int"),
        ({"x": [1, 2]}, "Cannot read data of type dict"),
        ("digts", "Did you mean 'digits'"),
        ("no/such/folder", "Unknown data source"),
        ((features(), two_classes(), two_classes()), "Cannot read data of type tuple"),
    ],
    ids=["none", "int", "dict", "typo", "missing-path", "triple"],
)
def test_data_of_an_unknown_kind_is_refused(data, pattern):
    refused(data, pattern)


def test_fractional_labels_for_a_classifier_are_refused():
    labels = two_classes() + 0.5
    text = refused((features(), labels), "whole class indices", task="multiclass")
    assert "(first: 0.5)" in text


def test_whole_float_labels_are_classes():
    prepared = prepare((features(), (np.arange(40) % 3).astype(np.float64)))
    assert (prepared.task.kind, prepared.task.num_classes) == ("multiclass", 3)


@pytest.mark.parametrize(
    ("frame", "options", "pattern"),
    [
        (
            pd.DataFrame({"a": [None] * 40, "b": np.arange(40.0), "label": two_classes()}),
            {"target": "label"},
            "Column 'a' of DataFrame .* has no value in any of its 40 rows",
        ),
        (
            pd.DataFrame({"a": np.arange(40.0), "label": two_classes()}),
            {"target": "labels"},
            "Did you mean 'label'",
        ),
        (
            pd.DataFrame(
                np.c_[np.arange(40.0), np.arange(40.0), two_classes()], columns=["a", "a", "y"]
            ),
            {"target": "y"},
            "more than one column named 'a'",
        ),
        (
            pd.DataFrame({"a": np.arange(40.0), "label": np.r_[two_classes(39), np.nan]}),
            {"target": "label"},
            r"rows 39 \(1 row\) of DataFrame .* have no label in column 'label'",
        ),
        (
            pd.DataFrame({"a": np.arange(40.0), "label": two_classes()}),
            {},
            "no label column was named",
        ),
        (
            pd.DataFrame({"a": np.arange(40.0), "id": [f"user{i}" for i in range(40)]}),
            {"target": "id"},
            r"Class 'user0' has 1 example \(rows 0 \(1 row\)\)",
        ),
    ],
    ids=[
        "all-missing-column",
        "missing-target",
        "duplicate-columns",
        "nan-label",
        "no-target",
        "id-column-as-target",
    ],
)
def test_careless_dataframes_are_refused(frame, options, pattern):
    refused(frame, pattern, **options)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("a,b,label\n1,2,0\n3,4,1,9\n5,6,0\n", r"Cannot read the CSV file .*line 3"),
        ("a,a,label\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(30)), "named 'a'"),
        ("a,b\n" + "".join(f"{i},{i % 2}\n" for i in range(30)), "data_options.target='label'"),
        (
            "a,label\n" + "".join(f"{'x' if i == 4 else i},{i % 2}\n" for i in range(30)),
            r"rows 4 \(1 row\) \(file lines 6\)",
        ),
        ("", "Cannot read the CSV file"),
        ("a,label\n", "has no rows"),
        ("a;b;label\n" + "1;2;0\n" * 30, "seem separated by ';', not by commas"),
    ],
    ids=[
        "ragged-row",
        "duplicate-header",
        "missing-target",
        "word-in-number-column",
        "empty-file",
        "header-only",
        "semicolons",
    ],
)
def test_careless_csv_files_are_refused(tmp_path, text, pattern):
    path = tmp_path / "data.csv"
    path.write_text(text)
    refused(path, pattern, target="label")


def test_a_tsv_file_is_read_with_tabs(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("a\tb\tlabel\n" + "".join(f"{i}\t{i % 5}\t{i % 2}\n" for i in range(40)))
    prepared = prepare(path, target="label")
    assert prepared.feature_names == ["a", "b"]


def test_a_missing_csv_file_is_refused(tmp_path):
    refused(tmp_path / "nope.csv", "The data file does not exist")


@pytest.mark.parametrize("which", [0, 3], ids=["first-file", "later-file"])
def test_a_corrupt_image_is_named(tmp_path, which):
    for label in ("cat", "dog"):
        for i in range(4):
            write_png(tmp_path / label / f"{i}.png", 60 * i)
    broken = tmp_path / "cat" / f"{which}.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="decode") as info:
        prepare(tmp_path)
    assert str(broken) in str(info.value)


def test_a_class_folder_without_images_is_refused(tmp_path):
    write_png(tmp_path / "cat" / "0.png", 10)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    refused(tmp_path, f"The class folder '{tmp_path / 'dog'}' holds no image")


def test_an_image_folder_without_class_folders_is_refused(tmp_path):
    write_png(tmp_path / "a.png", 10)
    refused(tmp_path, "has no class sub-folders")


def test_fit_pipeline_refuses_one_class_before_training(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DataError, match="Every label is 1"):
        fit_pipeline(
            data=(features(), np.ones(40, int)),
            model="mlp",
            train={"epochs": 1, "verbose": 0},
            output_dir=str(run),
        )
    written = [p.name for p in run.rglob("*") if p.is_file()] if run.exists() else []
    assert not any(name.endswith((".h5", ".keras", ".tflite", ".pb")) for name in written)


def test_fit_pipeline_refuses_inf_in_a_dataframe_before_training(tmp_path):
    frame = pd.DataFrame({"a": np.arange(40.0), "label": two_classes()})
    frame.loc[3, "a"] = math.inf
    with pytest.raises(DataError, match="column 'a'"):
        fit_pipeline(
            data=frame,
            data_options={"target": "label"},
            model="mlp",
            train={"epochs": 1, "verbose": 0},
            output_dir=str(tmp_path / "run"),
        )
    assert not list((tmp_path / "run").rglob("*.weights.h5"))
