"""Every exported artifact answers one row and a batch, with the interpreter
settings a user gets; verification checks both and times one row of each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerastrain import ExportError
from kerastrain._keras import keras, tf
from kerastrain.batching import take
from kerastrain.config import DataConfig, ExportConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import Standardizer, model_inputs
from kerastrain.export import export_model, input_standardizers, load_predictor, verify_artifacts
from kerastrain.models import Head, build_model
from kerastrain.task import Task


@pytest.fixture(scope="module")
def table():
    """A small table with numbers (one with holes) and a text category (with
    a missing value), and an untrained model on it: the model built from
    kerastrain's table layers is what is under test, not its accuracy."""
    rng = np.random.default_rng(0)
    n = 48
    frame = pd.DataFrame(
        {
            "dose": rng.normal(5.0, 2.0, n),
            "weight": rng.normal(70.0, 10.0, n),
            "city": rng.choice(["paris", "lyon", "nice", ""], n),
            "y": rng.integers(0, 2, n),
        }
    )
    frame.loc[[3, 11], "dose"] = np.nan
    prepared = prepare_data(frame, DataConfig(target="y", missing_indicator=True), seed=0)
    keras.utils.set_random_seed(0)
    model = build_model(
        "mlp", model_inputs((), None, prepared.encoding), Head(1, "sigmoid"), {"width": 8}
    )
    x = prepared.rows(np.arange(n))
    return model, x, prepared.y


def _user_runner(path):
    """The TFLite file as a user opens it: the default interpreter settings
    (XNNPACK on), its serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_runner("serving_default")


def _as_fed(rows):
    return {k: v.astype(str) if v.dtype == object else v for k, v in rows.items()}


def test_a_table_model_exported_to_tflite_answers_one_row(table, tmp_path):
    model, x, _ = table
    artifacts = export_model(model, tmp_path, ExportConfig(formats=["tflite"]))
    runner = _user_runner(artifacts["tflite"])
    for rows in (1, 5):
        given = take(x, 0, rows)
        (answer,) = runner(**_as_fed(given)).values()
        np.testing.assert_allclose(answer, model(given, training=False).numpy(), atol=1e-5)


@pytest.mark.slow
def test_every_format_of_a_table_model_answers_one_row_and_a_batch(table, tmp_path):
    model, x, y = table
    config = ExportConfig(
        formats=["savedmodel", "keras", "h5", "tflite"],
        tflite=["float32", "float16", "dynamic", "int8"],
    )
    artifacts = export_model(
        model, tmp_path, config, representative=x
    )  # int8 calibrates row by row
    assert set(artifacts) == {
        "savedmodel",
        "keras",
        "h5",
        "tflite",
        "tflite_float16",
        "tflite_dynamic",
        "tflite_int8",
    }
    assert input_standardizers(model) == ["impute", "normalize", "missing_indicator", "encode_city"]
    reference = model(x, training=False).numpy()
    for name, path in artifacts.items():
        predict = load_predictor(path)
        for rows in (1, 6):
            answer = predict(take(x, 0, rows))
            assert answer.shape == (rows, 1), name
            if name not in artifacts.approximate:
                np.testing.assert_allclose(answer, reference[:rows], atol=1e-5, err_msg=name)
        if path.suffix == ".tflite":  # and with the interpreter a user opens
            (alone,) = _user_runner(path)(**_as_fed(take(x, 0, 1))).values()
            np.testing.assert_allclose(alone, predict(take(x, 0, 1)), atol=1e-6, err_msg=name)
    # The untrained model answers near 0.5, where a small gap flips a class:
    # the int8 file is held to its outputs' gap below, not to agreement.
    results = verify_artifacts(
        reference, artifacts, x, y, Task("binary", 2), atol=1e-4, min_agreement=0.5, latency_runs=5
    )
    for name, metrics in results.items():
        assert metrics["one_row_checked"] == 8, name
        assert metrics["latency_ms"] > 0, name
    # The raw columns (an area beside a smoothness) are imputed, encoded and
    # standardized in float before int8 starts: with one int8 scale for all
    # the raw columns the outputs were up to 0.10 off.
    assert results["tflite_int8"]["max_abs_diff"] < 0.05


class _UnrankedLookup(keras.layers.Layer):
    """A text category's one-hot row the way `EncodeCategory` built it before
    the fix: the TFLite converter leaves the hash-table lookup unranked, and
    the file then fails on a single row while it answers larger batches."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lookup = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="int")

    def call(self, x):
        x = tf.reshape(x, [-1])
        index = tf.cast(self.lookup(x), tf.int32)
        index = tf.where(tf.equal(x, ""), tf.constant(1, tf.int32), index)  # "" -> "a"
        return tf.one_hot(index, 3)


def test_verify_fails_on_an_artifact_that_cannot_answer_one_row(tmp_path):
    number = keras.Input(shape=(), name="number")
    text = keras.Input(shape=(), name="text", dtype=tf.string)
    features = keras.layers.Concatenate()(
        [keras.layers.Reshape((1,))(number), _UnrankedLookup()(text)]
    )
    model = keras.Model({"number": number, "text": text}, keras.layers.Dense(1)(features))
    x = {"number": np.arange(6, dtype=np.float32), "text": np.array(["a", "b", "c"] * 2)}
    artifacts = export_model(model, tmp_path, ExportConfig(formats=["tflite"]))
    reference = model(x, training=False).numpy()
    np.testing.assert_allclose(load_predictor(artifacts["tflite"])(x), reference, atol=1e-5)
    with pytest.raises(ExportError, match=r"exported tflite model .* cannot answer a single row"):
        verify_artifacts(reference, artifacts, x, np.zeros(6), Task("regression", 1), atol=1e-4)


@pytest.fixture
def array_model():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(30, 6)).astype(np.float32)
    y = (x[:, 0] > 3).astype(np.int64)
    stats = Standardizer(x.mean(axis=0), x.var(axis=0))
    model = build_model("mlp", model_inputs((6,), stats), Head(3, "softmax"), {"width": 8})
    return model, x, y


@pytest.mark.slow
def test_verify_times_one_row_of_every_artifact(array_model, tmp_path):
    model, x, y = array_model
    artifacts = export_model(
        model, tmp_path, ExportConfig(formats=["savedmodel", "keras", "h5", "tflite"])
    )
    reference = model(x, training=False).numpy()
    results = verify_artifacts(
        reference, artifacts, x, y, Task("multiclass", 3), atol=1e-4, latency_runs=7
    )
    assert set(results) == {"savedmodel", "keras", "h5", "tflite"}
    for name, metrics in results.items():
        assert metrics["latency_ms"] > 0 and metrics["latency_runs"] >= 5, name
        assert metrics["one_row_checked"] == 8, name
    assert results["tflite"]["kernels"] == "default delegates (XNNPACK)"


def test_the_signature_is_read_from_each_file(table, tmp_path):
    from kerastrain.report.signature import InputSpec, read_signature

    model, _, _ = table
    artifacts = export_model(model, tmp_path / "table", ExportConfig(formats=["keras", "h5"]))
    for name in ("keras", "h5"):
        signature = read_signature(artifacts[name])
        assert signature.by_name and signature.outputs == ("output",), name
        assert signature.modules == ("kerastrain.data.layers",), name
        assert InputSpec("city", "string", ()) in signature.inputs, name
        assert InputSpec("dose", "float32", ()) in signature.inputs, name
    sequential = keras.Sequential([keras.Input((4, 3)), keras.layers.Dense(2, name="out")])
    artifacts = export_model(sequential, tmp_path / "seq", ExportConfig(formats=["keras", "h5"]))
    for name in ("keras", "h5"):
        signature = read_signature(artifacts[name])
        assert not signature.by_name and signature.modules == (), name
        assert [(s.dtype, s.shape) for s in signature.inputs] == [("float32", (4, 3))], name
    with pytest.raises(ExportError, match="Reading the input signature"):
        read_signature(tmp_path / "seq" / "missing.keras")
