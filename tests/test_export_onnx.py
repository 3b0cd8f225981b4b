"""ONNX export, Keras 3 and TensorFlow Serving: the exported files used
outside tf_keras answer like the trained model."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from kerastrain import ConfigError, fit_pipeline
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig, ExportConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.export import export_model, load_predictor
from kerastrain.models import Head, build_model
from kerastrain.report.model_card import MODEL_CARD_NAME
from kerastrain.report.signature import read_signature


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One short digits run exporting a SavedModel under serving version 1,
    TFLite and ONNX."""
    out = tmp_path_factory.mktemp("digits")
    result = fit_pipeline(
        "digits",
        seed=0,
        output_dir=str(out),
        train={"epochs": 2, "verbose": 0, "early_stopping": None},
        report={"explain": "none"},
        export={
            "formats": ["savedmodel", "tflite", "onnx"],
            "serving_version": 1,
            "latency_runs": 5,
        },
    )
    return result, out


def _table(text: bool, n: int = 48):
    """A small table (numbers, one with holes, and a category given as text
    or as integer codes) and an untrained model built on it."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "dose": rng.normal(5.0, 2.0, n),
            "weight": rng.normal(70.0, 10.0, n),
            "city": rng.choice(["paris", "lyon", "nice"], n) if text else rng.integers(0, 3, n),
            "y": rng.integers(0, 2, n),
        }
    )
    frame.loc[[3, 11], "dose"] = np.nan
    prepared = prepare_data(frame, DataConfig(target="y", missing_indicator=True), seed=0)
    keras.utils.set_random_seed(0)
    model = build_model(
        "mlp", model_inputs((), None, prepared.encoding), Head(1, "sigmoid"), {"width": 8}
    )
    return frame, model, prepared.rows(np.arange(n)), prepared.y


@pytest.mark.slow
def test_digits_onnx_is_reported_beside_the_other_artifacts_with_parity(digits_run):
    result, out = digits_run
    onnx_metrics = result.metrics["onnx"]
    test = result.metrics["test"]
    assert onnx_metrics["max_abs_diff"] < 1e-4
    assert onnx_metrics["agreement"] == 1.0
    assert onnx_metrics["accuracy"] == pytest.approx(test["accuracy"])
    assert onnx_metrics["one_row_checked"] == 8 and onnx_metrics["latency_ms"] > 0
    assert result.artifacts["onnx"] == out / "model.onnx"
    # The file as a user opens it, on held-out-like rows, one row and a batch.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    (given,) = session.get_inputs()
    x = np.random.default_rng(1).uniform(0, 16, (5, *given.shape[1:])).astype(np.float32)
    reference = result.model(x, training=False).numpy()
    for rows in (1, 5):
        (answer,) = session.run(None, {given.name: x[:rows]})
        np.testing.assert_allclose(answer, reference[:rows], atol=1e-5)
    card = (out / MODEL_CARD_NAME).read_text()
    assert 'onnxruntime.InferenceSession("model.onnx"' in card
    assert "| onnx |" in card


@pytest.mark.slow
def test_serving_version_lays_out_the_savedmodel_for_tensorflow_serving(digits_run):
    result, out = digits_run
    assert result.artifacts["savedmodel"] == out / "savedmodel" / "1"
    assert (out / "savedmodel" / "1" / "saved_model.pb").is_file()
    assert [p.name for p in (out / "savedmodel").iterdir()] == ["1"]
    assert result.metrics["savedmodel"]["max_abs_diff"] < 1e-5
    card = (out / MODEL_CARD_NAME).read_text()
    assert 'tf.saved_model.load("savedmodel/1")' in card
    assert "<td>savedmodel/1</td>" in (out / "report.html").read_text()
    assert '-v "$PWD/savedmodel:/models/model"' in card


def _rest_body(card: str) -> dict:
    (body,) = re.findall(r"```json\n(.*?)\n```", card, re.S)
    return json.loads(body)


def _feed_rest_body(savedmodel, body: dict) -> np.ndarray:
    """The REST body given to the SavedModel's serving signature the way
    TensorFlow Serving reads it: the signature's names, dtypes and shapes
    must take it as it is."""
    serve = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    assert body["signature_name"] == "serving_default"
    columns = body["inputs"] if "inputs" in body else {next(iter(specs)): body["instances"]}
    assert set(columns) == set(specs)
    fed = {}
    for name, spec in specs.items():
        value = tf.constant(columns[name], dtype=spec.dtype)  # fails on a wrong dtype
        assert spec.shape.is_compatible_with(value.shape), (name, spec.shape, value.shape)
        fed[name] = value
    (output,) = serve(**fed).values()
    return output.numpy()


@pytest.mark.slow
def test_the_cards_rest_body_matches_the_image_signature(digits_run):
    result, out = digits_run
    body = _rest_body((out / MODEL_CARD_NAME).read_text())
    assert set(body) == {"signature_name", "instances"}
    answer = _feed_rest_body(out / "savedmodel" / "1", body)
    assert answer.shape == (1, 10)
    np.testing.assert_allclose(answer.sum(), 1.0, atol=1e-5)


@pytest.mark.slow
def test_the_cards_rest_body_for_a_table_is_a_dict_of_raw_columns(tmp_path):
    from kerastrain.report.model_card import write_model_card

    frame, model, x, _ = _table(text=True)
    artifacts = export_model(model, tmp_path, ExportConfig(formats=["savedmodel"]))
    write_model_card(tmp_path, name="t", summary={}, metrics={}, artifacts=artifacts)
    body = _rest_body((tmp_path / MODEL_CARD_NAME).read_text())
    signature = read_signature(artifacts["savedmodel"])
    assert set(body["inputs"]) == {s.name for s in signature.inputs}
    assert body["inputs"]["city"] == [""] and body["inputs"]["dose"] == [0.0]
    assert _feed_rest_body(artifacts["savedmodel"], body).shape == (1, 1)


@pytest.mark.slow
def test_a_table_with_integer_codes_exports_to_onnx_with_parity(tmp_path):
    frame, _, _, _ = _table(text=False, n=120)
    result = fit_pipeline(
        frame,
        "mlp",
        seed=0,
        data_options={"target": "y", "missing_indicator": True},
        output_dir=str(tmp_path),
        train={"epochs": 1, "verbose": 0},
        report={"explain": "none"},
        export={"formats": ["savedmodel", "onnx"], "latency_runs": 5},
    )
    onnx_file = result.artifacts["onnx"]
    assert [s.name for s in read_signature(onnx_file).inputs] == ["city", "dose", "weight"]
    assert result.metrics["onnx"]["max_abs_diff"] < 1e-5
    assert result.metrics["onnx"]["one_row_checked"] == 8
    rows = frame.drop(columns="y").iloc[:5]
    x = {name: rows[name].to_numpy(np.float32) for name in ("city", "dose", "weight")}
    np.testing.assert_allclose(
        load_predictor(onnx_file)(x), result.model(x, training=False).numpy(), atol=1e-5
    )


def test_a_table_with_text_columns_is_refused_onnx_before_training(tmp_path):
    frame, _, _, _ = _table(text=True)
    with pytest.raises(ConfigError, match=r"text columns \('city'\).*integer codes") as caught:
        fit_pipeline(
            frame,
            "mlp",
            data_options={"target": "y"},
            output_dir=str(tmp_path),
            train={"epochs": 1, "verbose": 0},
            export={"formats": ["savedmodel", "onnx"]},
        )
    assert "SavedModel, .keras and TFLite files take the text columns" in str(caught.value)
    assert not list(tmp_path.rglob("saved_model.pb"))
    assert not list(tmp_path.rglob("*.weights.h5")) and not list(tmp_path.rglob("checkpoint"))


def test_onnx_export_leaves_the_tf_log_level_as_it_was(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    export_model(model, tmp_path, ExportConfig(formats=["onnx"]))
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # tf2onnx's import sets it to 3


def test_export_model_refuses_onnx_for_a_model_taking_text(tmp_path):
    _, model, _, _ = _table(text=True)
    with pytest.raises(ConfigError, match="text columns"):
        export_model(model, tmp_path, ExportConfig(formats=["onnx"]))
    assert not (tmp_path / "model.onnx").exists()


def test_onnx_without_the_extra_is_a_config_error_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"kerastrain\[onnx\].*not installed: tf2onnx"):
        ExportConfig(formats=["savedmodel", "onnx"])
    ExportConfig(formats=["savedmodel"])  # no ONNX asked: nothing needed


def test_serving_version_must_be_a_whole_number_not_below_zero():
    with pytest.raises(ConfigError, match="serving_version"):
        ExportConfig(serving_version=-1)
    with pytest.raises(ConfigError, match="export.serving_version.*includes 'savedmodel'"):
        ExportConfig(formats=["tflite"], serving_version=1)
    assert ExportConfig(serving_version=3).serving_version == 3


_KERAS3 = """
import json, sys
import numpy as np
import keras

assert keras.__version__.startswith("3."), keras.__version__
path, x_path, expected_path = sys.argv[1:]
layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
inputs = keras.Input(shape=np.load(x_path).shape[1:])
model = keras.Model(inputs, layer(inputs))
out = model.predict(np.load(x_path), verbose=0)
out = out["output"] if isinstance(out, dict) else out
print(json.dumps({"keras": keras.__version__,
                  "max_abs_diff": float(np.abs(out - np.load(expected_path)).max())}))
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_keras3_loads_the_savedmodel_with_tfsmlayer_and_matches(digits_run, tmp_path):
    result, out = digits_run
    savedmodel = result.artifacts["savedmodel"]
    shape = read_signature(savedmodel).inputs[0].shape
    x = np.random.default_rng(2).uniform(0, 16, (20, *shape)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", result.model.predict(x, verbose=0))
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KERAS3), str(savedmodel)]
        + [str(tmp_path / "x.npy"), str(tmp_path / "expected.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["keras"].startswith("3.")
    assert answer["max_abs_diff"] < 1e-5


def test_the_cards_rest_body_for_a_large_image_is_built_in_python(tmp_path):
    from kerastrain.report.model_card import write_model_card

    inputs = keras.Input((32, 32, 3), name="image")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(inputs)))
    artifacts = export_model(
        model, tmp_path, ExportConfig(formats=["savedmodel"], serving_version=2)
    )
    write_model_card(tmp_path, name="big", summary={}, metrics={}, artifacts=artifacts)
    card = (tmp_path / MODEL_CARD_NAME).read_text()
    assert "```json" not in card  # 3,072 values a row: not pasted into the card
    (block,) = re.findall(r"```python\n(import json\n.*?)```", card, re.S)
    namespace: dict = {}
    exec(block, namespace)
    answer = _feed_rest_body(tmp_path / "savedmodel" / "2", json.loads(namespace["body"]))
    assert answer.shape == (1, 2)
    assert "Served as version 2" in card
