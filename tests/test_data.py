"""Data sources, validation errors that name rows, splits and the feed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerastrain import DataError
from kerastrain.config import DataConfig
from kerastrain.data import InMemory, load_data, make_dataset, split_indices, validate
from kerastrain.data.preprocess import fit_standardizer
from kerastrain.data.validate import rows
from kerastrain.task import Task

OPTS = DataConfig()


def test_rows_names_the_first_few_and_counts_all():
    assert rows([3]) == "3 (1 row)"
    assert rows(range(10)) == "0, 1, 2, 3, 4, ... (10 rows)"


def test_digits_is_embedded_and_shaped_as_images():
    loaded = load_data("digits", OPTS)
    assert loaded.x.shape == (1797, 8, 8, 1) and loaded.x.dtype == np.float32
    assert loaded.class_names == [str(i) for i in range(10)]


def test_unknown_source_name_suggests_a_close_one():
    with pytest.raises(DataError, match="Did you mean 'digits'"):
        load_data("digit", OPTS)


def test_nan_and_infinite_features_name_their_rows():
    x = np.ones((10, 3), np.float32)
    x[2, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(
        DataError, match=r"Rows 2, 7 \(2 rows\) have NaN or infinite feature values"
    ):
        validate(x, np.arange(10) % 2, OPTS)


def test_labels_outside_the_class_range_name_their_rows():
    y = np.array([0, 1, 2, 5, 1, 7])
    with pytest.raises(
        DataError, match=r"Rows 3, 5 \(2 rows\) have labels outside the class range 0..2"
    ):
        validate(np.zeros((6, 2)), y, DataConfig(num_classes=3))


def test_negative_labels_are_refused():
    with pytest.raises(DataError, match=r"rows 1 \(1 row\) are negative"):
        validate(np.zeros((3, 2)), [0, -1, 1], OPTS)


def test_mismatched_lengths_and_empty_data():
    with pytest.raises(DataError, match="5 rows but there are 4 labels"):
        validate(np.zeros((5, 2)), np.zeros(4), OPTS)
    with pytest.raises(DataError, match="empty"):
        validate(np.zeros((0, 2)), np.zeros(0), OPTS)


def test_non_numeric_features_name_their_rows():
    x = np.array([[1, 2], [3, "x"], [5, 6]], dtype=object)
    with pytest.raises(DataError, match=r"rows 1 \(1 row\) hold values that are not"):
        validate(x, [0, 1, 0], OPTS)
    with pytest.raises(DataError, match="dtype"):
        validate(np.array(["2020-01-01"] * 4, dtype="datetime64[D]"), [0, 1, 0, 1], OPTS)


def test_dataframe_non_numeric_column_is_named_with_its_rows():
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["1", "oops", "3"], "y": [0, 1, 0]})
    # A text column is categorical unless declared numeric (see test_data_tabular.py).
    with pytest.raises(DataError, match=r"Column 'b' is declared numeric but rows 1 \(1 row\)"):
        load_data(frame, DataConfig(target="y", columns={"b": "numeric"}))
    with pytest.raises(DataError, match="Did you mean 'y'"):
        load_data(frame, DataConfig(target="Y"))
    with pytest.raises(DataError, match="no label column was named"):
        load_data(frame, OPTS)


def test_fractional_labels_for_an_explicit_classification_task():
    with pytest.raises(DataError, match=r"rows 1 \(1 row\) are not"):
        validate(np.zeros((3, 1)), [0.0, 0.5, 1.0], DataConfig(task="multiclass"))


def test_task_inference():
    x = np.zeros((6, 2))
    assert validate(x, [0, 1, 1, 0, 1, 0], OPTS).task.kind == "binary"
    assert validate(x, [0, 1, 2, 0, 1, 2], OPTS).task == Task("multiclass", 3)
    assert validate(x, np.linspace(0, 1, 6), OPTS).task.kind == "regression"
    named = validate(x, ["cat", "dog", "cat", "eel", "dog", "eel"], OPTS)
    assert named.task == Task("multiclass", 3, ("cat", "dog", "eel"))
    assert named.y.tolist() == [0, 1, 0, 2, 1, 2]
    onehot = validate(x, np.eye(3)[[0, 1, 2, 0, 1, 2]], OPTS)
    assert onehot.y.tolist() == [0, 1, 2, 0, 1, 2] and onehot.task.num_classes == 3


def test_tf_dataset_is_read_batched_or_not():
    import tensorflow as tf

    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10) % 2
    for ds in (
        tf.data.Dataset.from_tensor_slices((x, y)),
        tf.data.Dataset.from_tensor_slices((x, y)).batch(3),
    ):
        loaded = load_data(ds, OPTS)
        np.testing.assert_array_equal(loaded.x, x)
        np.testing.assert_array_equal(loaded.y, y)
    with pytest.raises(DataError, match="infinite"):
        load_data(tf.data.Dataset.from_tensor_slices((x, y)).repeat(), OPTS)


def test_stratified_split_keeps_class_shares_and_partitions_rows(digits_arrays):
    _, y = digits_arrays
    splits = split_indices(
        y, Task("multiclass", 10), DataConfig(validation_split=0.2, test_split=0.2), seed=1
    )
    everything = np.concatenate([splits.train, splits.val, splits.test])
    assert sorted(everything.tolist()) == list(range(len(y)))
    for part in (splits.val, splits.test):
        shares = np.bincount(y[part], minlength=10) / len(part)
        np.testing.assert_allclose(shares, np.bincount(y) / len(y), atol=0.01)
    assert splits.sizes() == {"train": 1077, "val": 360, "test": 360}


def test_split_is_seeded_and_test_rows_do_not_move_with_validation_split(digits_arrays):
    _, y = digits_arrays
    task = Task("multiclass", 10)
    a = split_indices(y, task, DataConfig(validation_split=0.1), seed=5)
    b = split_indices(y, task, DataConfig(validation_split=0.3), seed=5)
    np.testing.assert_array_equal(a.test, b.test)
    np.testing.assert_array_equal(
        a.train, split_indices(y, task, DataConfig(validation_split=0.1), seed=5).train
    )


def test_too_few_examples_of_a_class_for_a_stratified_split():
    y = np.array([0] * 10 + [1] * 10 + [2])
    with pytest.raises(DataError, match=r"Class 2 has 1 example \(rows 20 \(1 row\)\).*at least 3"):
        split_indices(y, Task("multiclass", 3), OPTS, seed=0)
    with pytest.raises(DataError, match="fewer than the 3 classes"):
        split_indices(np.array([0, 1, 2] * 4), Task("multiclass", 3), OPTS, seed=0)


def test_standardizer_uses_training_rows_only_and_centres_constant_features():
    x = np.array([[1.0, 5.0], [3.0, 5.0], [100.0, 5.0]], np.float32)
    stats = fit_standardizer(x, np.array([0, 1]))
    np.testing.assert_allclose(stats.mean, [2.0, 5.0])
    np.testing.assert_allclose(stats.variance, [1.0, 1.0])  # 1.0 for the constant column


def test_feed_gathers_batches_shuffles_training_and_keeps_evaluation_order():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20)
    memory = InMemory(x, y)
    idx = np.arange(0, 20, 2)
    evaluation = [b for b in make_dataset(memory, idx, 4, training=False)]
    assert [len(b[1]) for b in evaluation] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in evaluation]), idx)
    epoch1 = np.concatenate([b[1] for b in make_dataset(memory, idx, 4, training=True, seed=1)])
    assert sorted(epoch1.tolist()) == idx.tolist() and epoch1.tolist() != idx.tolist()
    for xb, yb in make_dataset(memory, idx, 4, training=True, seed=1):
        np.testing.assert_array_equal(xb.numpy()[:, 0], 2 * yb.numpy())


def test_training_feed_reshuffles_every_epoch_reproducibly_with_a_known_length():
    memory = InMemory(np.arange(200, dtype=np.float32).reshape(100, 2), np.arange(100))
    idx = np.arange(3, 100)  # 97 rows: 9 batches of 10 and one of 7

    def epochs(ds, n=3):
        iterators = [np.concatenate([b[1].numpy() for b in ds]) for _ in range(n)]
        return [order.tolist() for order in iterators]

    ds = make_dataset(memory, idx, 10, training=True, seed=5)
    assert int(ds.cardinality()) == 10  # fit can run several steps per call
    first = epochs(ds)
    assert all(sorted(order) == idx.tolist() for order in first)  # every row once
    assert len({tuple(order) for order in first}) == 3  # a new order each epoch
    assert epochs(make_dataset(memory, idx, 10, training=True, seed=5)) == first  # seeded
    assert epochs(make_dataset(memory, idx, 10, training=True, seed=6))[0] != first[0]
    assert [len(b[1]) for b in ds] == [10] * 9 + [7]


def test_a_split_sample_copies_only_the_sampled_rows():
    import tracemalloc

    from kerastrain.config import load_config
    from kerastrain.data.prepare import prepare_data
    from kerastrain.export import representative_sample

    x = np.random.default_rng(0).normal(size=(20000, 256)).astype(np.float32)  # 20 MB
    y = (x[:, 0] > 0).astype(np.int64)
    config = load_config(data=(x, y), seed=0)
    prepared = prepare_data(config.data, config.data_options, 0)
    tracemalloc.start()
    sample = prepared.sample("train", 100)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sample.shape == (100, 256) and peak < 1_000_000  # not the 14 MB training split
    # The same rows the int8 calibration took from a full copy of the split before.
    np.testing.assert_array_equal(sample, representative_sample(prepared.part("train")[0], 100))
