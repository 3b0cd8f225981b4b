"""Export: every format written atomically, reloaded and checked."""

from __future__ import annotations

import numpy as np
import pytest

from kerastrain import ExportError
from kerastrain._keras import keras
from kerastrain.config import ExportConfig
from kerastrain.data.preprocess import Standardizer, model_inputs
from kerastrain.export import export_model, load_predictor, verify_artifacts
from kerastrain.models import Head, build_model
from kerastrain.task import Task


@pytest.fixture
def model_and_data():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 3).astype(np.int64)
    stats = Standardizer(x.mean(axis=0), x.var(axis=0))
    model = build_model("mlp", model_inputs((6,), stats), Head(3, "softmax"), {"width": 8})
    return model, x, y


@pytest.mark.slow
def test_every_format_reloads_and_answers_like_the_model(model_and_data, tmp_path):
    model, x, y = model_and_data
    artifacts = export_model(
        model, tmp_path, ExportConfig(formats=["savedmodel", "keras", "h5", "tflite"])
    )
    assert set(artifacts) == {"savedmodel", "keras", "h5", "tflite"}
    assert (tmp_path / "savedmodel" / "saved_model.pb").exists()
    reference = model(x, training=False).numpy()
    for fmt, path in artifacts.items():
        np.testing.assert_allclose(load_predictor(path)(x), reference, atol=1e-5, err_msg=fmt)
    results = verify_artifacts(reference, artifacts, x, y, Task("multiclass", 3), atol=1e-4)
    assert all(r["agreement"] == 1.0 and r["max_abs_diff"] < 1e-5 for r in results.values())
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_savedmodel_takes_raw_inputs_through_its_serving_signature(model_and_data, tmp_path):
    import tensorflow as tf

    model, x, _ = model_and_data
    export_model(model, tmp_path, ExportConfig(formats=["savedmodel"]))
    serving = tf.saved_model.load(str(tmp_path / "savedmodel")).signatures["serving_default"]
    out = serving(inputs=tf.constant(x))["output"].numpy()
    np.testing.assert_allclose(out, model(x, training=False).numpy(), atol=1e-6)


def test_a_disagreeing_artifact_fails_verification_naming_it(model_and_data, tmp_path):
    model, x, y = model_and_data
    artifacts = export_model(model, tmp_path, ExportConfig(formats=["keras"]))
    shifted = model(x, training=False).numpy() + 0.01
    with pytest.raises(
        ExportError, match=r"exported keras model .* differ by up to 0.01.*export.atol=0.0001"
    ):
        verify_artifacts(shifted, artifacts, x, y, Task("multiclass", 3), atol=1e-4)


def test_a_failing_export_leaves_the_previous_artifact(model_and_data, tmp_path):
    model, _, _ = model_and_data
    export_model(model, tmp_path, ExportConfig(formats=["keras"]))
    before = (tmp_path / "model.keras").read_bytes()

    class Unsaveable(keras.layers.Layer):
        def get_config(self):
            raise TypeError("this layer cannot be serialized")

        def call(self, x):
            return x

    inp = keras.Input((6,))
    broken = keras.Model(inp, Unsaveable()(inp))
    with pytest.raises(ExportError, match="Exporting the model as 'keras'"):
        export_model(broken, tmp_path, ExportConfig(formats=["keras"]))
    assert (tmp_path / "model.keras").read_bytes() == before


def test_unknown_artifact_type_is_an_export_error(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(ExportError, match="Unknown artifact type"):
        load_predictor(tmp_path / "model.pt")


def test_a_damaged_onnx_file_is_an_export_error_naming_it(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ExportError, match=r"Reloading .*model.onnx' failed.*ONNX file"):
        load_predictor(tmp_path / "model.onnx")


def test_load_predictor_calls_the_artifact_batch_size_rows_at_a_time(tmp_path):
    from kerastrain.export import load_predictor

    # A softmax over the batch axis sums to 1 per call: the sum counts the calls.
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Softmax(axis=0)(inputs)).save(tmp_path / "m.keras")
    rows = np.zeros((10, 3), np.float32)
    for batch_size, calls in ((512, 1), (4, 3), (1, 10)):
        outputs = load_predictor(tmp_path / "m.keras", batch_size=batch_size)(rows)
        assert outputs.shape == (10, 3)
        np.testing.assert_allclose(outputs.sum(axis=0), [calls] * 3, rtol=1e-6)
