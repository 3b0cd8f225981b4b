"""``"tfds:NAME"``: TFDS mock data, a real local TFDS builder prepared on
disk (scikit-learn's digits), split names, streaming, and the failures
(unknown name, data set not prepared, a download that fails). No test
reaches the network."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow_datasets as tfds

import kerastrain
from kerastrain import DataError
from kerastrain.config import DataConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.sources import load_data
from kerastrain.data.tfds import TfdsStream

#: Explanations are tested in test_explain.py; these runs skip them.
NOEXPLAIN = {"explain": "none"}


class KerastrainTestDigits(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's digits as a TFDS data set: 1,200 train, 597 test."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(0, 1200),
            "test": self._generate_examples(1200, 1797),
        }

    def _generate_examples(self, start, stop):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        for i in range(start, stop):
            yield (
                i,
                {
                    "image": (bunch.images[i][..., None] * 15).astype(np.uint8),
                    "label": int(bunch.target[i]),
                },
            )


class KerastrainTestOffline(tfds.core.GeneratorBasedBuilder):
    """A data set whose download fails, as it does on a machine offline."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "x": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                    "label": tfds.features.ClassLabel(num_classes=2),
                }
            ),
            supervised_keys=("x", "label"),
        )

    def _split_generators(self, dl_manager):
        raise ConnectionError("Failed to establish a connection to example.invalid")

    def _generate_examples(self):
        yield 0, {"x": np.zeros(2, np.float32), "label": 0}


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    tfds.builder("kerastrain_test_digits", data_dir=str(data_dir)).download_and_prepare()
    return str(data_dir)


@pytest.mark.slow
def test_local_builder_with_named_splits_trains_through_fit_pipeline(digits_dir, tmp_path):
    options = {
        "tfds_data_dir": digits_dir,
        "tfds_split": {"train": "train", "test": "test"},
        "validation_split": 0.1,
    }
    result = kerastrain.fit_pipeline(
        "tfds:kerastrain_test_digits",
        "cnn",
        seed=0,
        data_options=options,
        output_dir=str(tmp_path / "run"),
        model_options={"filters": 16, "dense": 64},
        train={"epochs": 6, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    # TFDS's test split is the test split; validation comes out of its train split.
    assert result.metrics["test"]["examples"] == 597
    assert result.metrics["test"]["accuracy"] > 0.85
    prepared = prepare_data("tfds:kerastrain_test_digits", DataConfig(**options), seed=0)
    assert prepared.splits.test.min() == 1200 and prepared.splits.val.max() < 1200
    assert prepared.task.class_names == tuple(str(i) for i in range(10))


@pytest.mark.slow
def test_streamed_tfds_reads_the_rows_the_index_names(digits_dir, tmp_path):
    options = DataConfig(tfds_data_dir=digits_dir, tfds_split="train+test")
    in_memory = load_data("tfds:kerastrain_test_digits", options)
    streamed = prepare_data("tfds:kerastrain_test_digits", options.replace(in_memory_mb=0), seed=0)
    assert isinstance(streamed.x, TfdsStream)
    rows = np.array([1500, 3, 1199, 1200, 42])
    np.testing.assert_array_equal(streamed.rows(rows), in_memory.x[rows])
    np.testing.assert_array_equal(streamed.y, in_memory.y)
    result = kerastrain.fit_pipeline(
        "tfds:kerastrain_test_digits",
        "cnn",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"tfds_data_dir": digits_dir, "tfds_split": "train+test", "in_memory_mb": 0},
        model_options={"filters": 8, "dense": 32},
        train={"epochs": 2, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report=NOEXPLAIN,
    )
    assert result.metrics["test"]["accuracy"] > 0.4  # labels stay with their images (chance: 0.1)


def test_mock_data_loads_as_supervised_pairs(tmp_path):
    with tfds.testing.mock_data(num_examples=60):
        loaded = load_data("tfds:mnist", DataConfig(tfds_data_dir=str(tmp_path)))
    assert loaded.x.shape == (60, 28, 28, 1) and loaded.x.dtype == np.uint8
    assert loaded.class_names == [str(i) for i in range(10)]
    assert loaded.y.min() >= 0 and loaded.y.max() <= 9


def test_an_unknown_name_is_refused_with_a_suggestion():
    with pytest.raises(DataError, match=r"no data set named 'mnits'.*Did you mean 'mnist'"):
        load_data("tfds:mnits", DataConfig())


def test_a_data_set_not_prepared_says_how_to_prepare_it_offline(tmp_path):
    with pytest.raises(DataError) as info:
        load_data(
            "tfds:kerastrain_test_digits",
            DataConfig(tfds_data_dir=str(tmp_path), tfds_download=False),
        )
    message = str(info.value)
    assert "'kerastrain_test_digits' is not prepared in " + str(tmp_path) in message
    assert "tfds build kerastrain_test_digits" in message


def test_a_failed_download_names_the_data_set_the_folder_and_the_way_out(tmp_path):
    with pytest.raises(DataError) as info:
        load_data("tfds:kerastrain_test_offline", DataConfig(tfds_data_dir=str(tmp_path)))
    message = str(info.value)
    assert "Preparing the TFDS data set 'kerastrain_test_offline' in " + str(tmp_path) in message
    assert "ConnectionError: Failed to establish a connection" in message
    assert "on a machine with network access" in message and "downloads/manual" in message
