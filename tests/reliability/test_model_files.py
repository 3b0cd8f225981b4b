"""Hostile model files: code carried in a model, damaged files, and models of
two-class softmax given to `evaluate`.

Each unsafe file here writes a sentinel file when its code runs: a test
passes only when the file is refused and the sentinel does not exist.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError, ExportError
from kerastrain._keras import keras, tf
from kerastrain.data.preprocess import model_inputs
from kerastrain.export import load_predictor
from kerastrain.export.model_files import savedmodel_unsafe_ops, unsafe_parts
from kerastrain.metrics import compute_metrics, curve_data
from kerastrain.models import Head, build_model
from kerastrain.task import Task

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4)).astype(np.float32)
Y = (X[:, 0] > 0).astype(np.int64)


def _evil_model(sentinel) -> keras.Model:
    """A model whose Lambda layer creates ``sentinel`` when it runs (the path
    is a constant of the bytecode, as an attacker's would be)."""
    touch = eval(f"lambda t: (open({str(sentinel)!r}, 'w').close(), t)[1]")  # noqa: S307
    inputs = keras.Input((4,))
    x = keras.layers.Lambda(touch, name="evil")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def _softmax_model(units: int = 2) -> keras.Model:
    """A safe model: Dense layers and TensorFlow math (TFOpLambda layers)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = tf.math.log(tf.clip_by_value(x + 1.0, 1e-3, 1e3))  # TFOpLambda layers
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax")(x))


# --------------------------------------------------------------------------- code in model files


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_evaluate_refuses_a_lambda_model_file_and_runs_none_of_it(tmp_path, suffix):
    sentinel = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    _evil_model(sentinel).save(path)
    sentinel.unlink()  # saving traced the layer once
    with pytest.raises(ConfigError, match="would run code") as info:
        kerastrain.evaluate(str(path), (X, Y))
    assert not sentinel.exists()
    text = str(info.value)
    assert "Lambda layer 'evil'" in text and "trust_model_file=True" in text and "--trust" in text


def test_trust_model_file_loads_the_lambda_model(tmp_path):
    sentinel = tmp_path / "ran"
    path = tmp_path / "model.h5"
    _evil_model(sentinel).save(path)
    sentinel.unlink()
    metrics = kerastrain.evaluate(str(path), (X, Y), trust_model_file=True)
    assert sentinel.exists()  # the user vouched for it: its code ran
    assert metrics["examples"] == len(X)


def test_a_backbone_file_with_a_lambda_is_refused_unless_trusted(tmp_path):
    sentinel = tmp_path / "pwned"
    touch = eval(f"lambda t: (open({str(sentinel)!r}, 'w').close(), t)[1]")  # noqa: S307
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(touch, name="evil")(x)
    x = keras.layers.Dense(6, name="features")(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / "backbone.h5")
    sentinel.unlink()
    options = {"backbone": str(tmp_path / "backbone.h5"), "fine_tune_layers": 0}
    with pytest.raises(ConfigError, match="model_options.trust_model_file: true"):
        build_model("transfer", model_inputs((8, 8, 1), None), Head(3, "softmax"), options)
    assert not sentinel.exists()
    model = build_model(
        "transfer",
        model_inputs((8, 8, 1), None),
        Head(3, "softmax"),
        {**options, "trust_model_file": True},
    )
    assert model.get_layer("backbone").output_shape == (None, 6)


def test_a_keras_savedmodel_backbone_with_a_lambda_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    _evil_model(sentinel).save(tmp_path / "sm")  # Keras SavedModel: keras_metadata.pb
    sentinel.unlink()
    with pytest.raises(ConfigError, match="Lambda layer 'evil'"):
        build_model(
            "transfer",
            model_inputs((4,), None),
            Head(2, "softmax"),
            {"backbone": str(tmp_path / "sm"), "fine_tune_layers": 0},
        )
    assert not sentinel.exists()


def test_a_savedmodel_graph_that_writes_files_is_refused(tmp_path):
    sentinel = tmp_path / "written"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(sentinel), "pwned")
            return {"output": tf.nn.softmax(x[:, :2])}

    module = Writer()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    assert any(op.startswith("WriteFile") for op in savedmodel_unsafe_ops(tmp_path / "sm"))
    with pytest.raises(ConfigError, match="WriteFile"):
        kerastrain.evaluate(str(tmp_path / "sm"), (X, Y))
    assert not sentinel.exists()


def test_tfoplambda_outside_tensorflow_math_and_foreign_modules_are_unsafe():
    evil = {
        "class_name": "Functional",
        "config": {
            "layers": [
                {"class_name": "TFOpLambda", "config": {"name": "w", "function": "io.write_file"}},
                {"class_name": "TFOpLambda", "config": {"name": "p", "function": "py_function"}},
                {"class_name": "TFOpLambda", "config": {"name": "ok", "function": "math.log"}},
                {"class_name": "Dense", "module": "os", "config": {"name": "d"}},
            ]
        },
    }
    found = unsafe_parts(evil)
    assert len(found) == 3
    assert any("io.write_file" in f for f in found) and any("'os'" in f for f in found)
    assert not any("math.log" in f for f in found)


def test_a_foreign_module_in_an_h5_config_is_refused(tmp_path):
    path = tmp_path / "model.h5"
    _softmax_model().save(path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["config"]["layers"][1]["module"] = "subprocess"
        f.attrs["model_config"] = json.dumps(config)
    with pytest.raises(ConfigError, match="module 'subprocess'"):
        load_predictor(path)


def test_safe_models_load_without_trust(tmp_path):
    model = _softmax_model()
    expected = model.predict(X, verbose=0)
    model.save(tmp_path / "m.h5")
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "sm")
    for path in ("m.h5", "m.keras", "sm"):
        np.testing.assert_allclose(load_predictor(tmp_path / path)(X), expected, atol=1e-5)


def test_evaluate_of_a_savedmodel_reads_its_graph_not_its_lambda_bytecode(tmp_path):
    # tf.saved_model.load calls the traced graph: the Lambda's Python is not
    # revived, so a SavedModel export of such a model is scored without trust.
    sentinel = tmp_path / "ran"
    _evil_model(sentinel).save(tmp_path / "sm")
    sentinel.unlink()
    assert kerastrain.evaluate(str(tmp_path / "sm"), (X, Y))["examples"] == len(X)
    assert not sentinel.exists()


# --------------------------------------------------------------------------- damaged files


def test_a_truncated_h5_fails_clearly(tmp_path):
    _softmax_model().save(tmp_path / "m.h5")
    content = (tmp_path / "m.h5").read_bytes()
    (tmp_path / "m.h5").write_bytes(content[: len(content) // 3])
    with pytest.raises(ExportError, match=r"cannot be read as a model .*truncated"):
        kerastrain.evaluate(str(tmp_path / "m.h5"), (X, Y))


def test_a_weights_only_h5_fails_clearly(tmp_path):
    _softmax_model().save_weights(tmp_path / "w.h5")
    with pytest.raises(ExportError, match="holds no model config.*load_weights"):
        kerastrain.evaluate(str(tmp_path / "w.h5"), (X, Y))


def test_a_keras_file_that_is_not_an_archive_fails_clearly(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"not a zip file at all")
    with pytest.raises(ExportError, match="not a Keras archive"):
        kerastrain.evaluate(str(tmp_path / "m.keras"), (X, Y))


def test_a_folder_that_is_not_a_savedmodel_fails_clearly(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("hello")
    with pytest.raises(ExportError, match="is not a SavedModel: it has no saved_model.pb"):
        kerastrain.evaluate(str(tmp_path / "folder"), (X, Y))


def test_a_damaged_saved_model_pb_fails_clearly(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x12\xff\xff\xff\x0fgarbage")
    with pytest.raises(ExportError, match="saved_model.pb is damaged"):
        kerastrain.evaluate(str(tmp_path / "sm"), (X, Y))


def test_a_garbage_tflite_fails_clearly(tmp_path):
    (tmp_path / "m.tflite").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(ExportError, match=r"Reloading .*m\.tflite' failed"):
        kerastrain.evaluate(str(tmp_path / "m.tflite"), (X, Y))


def test_a_missing_path_and_an_unknown_suffix_fail_clearly(tmp_path):
    with pytest.raises(ExportError, match="No model file or folder"):
        kerastrain.evaluate(str(tmp_path / "absent.h5"), (X, Y))
    (tmp_path / "model.pt").write_bytes(b"torch")
    with pytest.raises(ExportError, match="Unknown artifact type"):
        kerastrain.evaluate(str(tmp_path / "model.pt"), (X, Y))


# --------------------------------------------------------------------------- two-class softmax


def test_evaluate_scores_a_two_unit_softmax_model(tmp_path):
    model = _softmax_model(2)
    model.save(tmp_path / "m.keras")
    for given in (model, str(tmp_path / "m.keras")):
        metrics = kerastrain.evaluate(given, (X, Y))
        assert metrics["task"] == "multiclass"
        assert 0.0 <= metrics["roc_auc"] <= 1.0 and 0.0 <= metrics["pr_auc"] <= 1.0
        assert np.isfinite(metrics["ece"]) and set(metrics["per_class"]) == {"0", "1"}
    assert kerastrain.evaluate(model, (X, Y), task="binary")["task"] == "binary"


def test_two_column_metrics_match_the_positive_column():
    from sklearn.metrics import roc_auc_score

    p = RNG.random(len(Y))
    two = np.stack([1 - p, p], axis=1)
    multi = compute_metrics(Task("multiclass", 2), Y, two)
    binary = compute_metrics(Task("binary", 2), Y, p[:, None])
    as_binary = compute_metrics(Task("binary", 2), Y, two)  # a 2-unit softmax read as binary
    assert multi["roc_auc"] == pytest.approx(roc_auc_score(Y, p))
    assert multi["f1"] == pytest.approx(binary["f1"]) and multi["accuracy"] == binary["accuracy"]
    assert as_binary["roc_auc"] == pytest.approx(binary["roc_auc"])
    assert as_binary["ece"] == pytest.approx(binary["ece"])
    assert set(curve_data(Task("multiclass", 2), Y, two)["roc"]) == {"0", "1"}


@pytest.mark.slow
def test_a_multiclass_run_on_two_classes_completes(tmp_path):
    result = kerastrain.fit_pipeline(
        (np.tile(X, (3, 1)), np.tile(Y, 3)),
        "mlp",
        data_options={"task": "multiclass"},
        train={"epochs": 1, "verbose": 0},
        export={"formats": ["keras"]},
        report={"explain": "none"},
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    assert result.metrics["test"]["roc_auc"] is not None
    assert len(result.metrics["test"]["per_class"]) == 2


def test_the_cli_trust_flag_trusts_only_a_backbone_file():
    from kerastrain.cli import _trusting
    from kerastrain.config import load_config

    config = load_config({"model": "transfer", "model_options": {"backbone": "b.h5"}})
    assert _trusting(config, True).model_options == {"backbone": "b.h5", "trust_model_file": True}
    assert _trusting(config, False) is config
    plain = load_config({"data": "iris"})  # nothing to trust: mlp takes no such option
    assert _trusting(plain, True) is plain


def test_a_lambda_nested_in_an_inner_model_is_found(tmp_path):
    sentinel = tmp_path / "pwned"
    inner = keras.Sequential([keras.Input((4,)), _evil_model(sentinel).layers[1]], name="inner")
    outer_in = keras.Input((4,))
    outer = keras.Model(outer_in, keras.layers.Dense(1, activation="sigmoid")(inner(outer_in)))
    outer.save(tmp_path / "nested.h5")
    sentinel.unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="Lambda layer 'evil'"):
        kerastrain.evaluate(str(tmp_path / "nested.h5"), (X, Y))
    assert not sentinel.exists()


def test_an_h5_whose_config_is_not_json_fails_clearly(tmp_path):
    _softmax_model().save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5", "r+") as f:
        f.attrs["model_config"] = "{'class_name': 'Functional'"  # not JSON
    with pytest.raises(ExportError, match="its config is not JSON"):
        kerastrain.evaluate(str(tmp_path / "m.h5"), (X, Y))


def test_a_savedmodel_without_its_variables_fails_clearly(tmp_path):
    _softmax_model().save(tmp_path / "sm")
    for file in (tmp_path / "sm" / "variables").iterdir():
        file.unlink()
    with pytest.raises(ExportError, match=r"Reloading '.*sm' failed"):
        kerastrain.evaluate(str(tmp_path / "sm"), (X, Y))


def test_a_stacked_ensemble_of_two_unit_softmax_models_builds_and_scores():
    from sklearn.linear_model import LogisticRegression

    from kerastrain.ensembling import EPS, META_C

    members = []
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2, activation="softmax")], name=f"m{seed}"
        )
        model.compile(keras.optimizers.Adam(0.1), "sparse_categorical_crossentropy")
        model.fit(X, Y, epochs=20, verbose=0)
        members.append(model)
    stacked = kerastrain.ensemble(members, "stack", (X, Y), folds=2)
    out = stacked.predict(X, verbose=0)
    assert out.shape == (len(X), 2) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)
    # Its probabilities are the meta-learner's (one log-odds for two classes).
    features = np.concatenate(
        [np.log(np.clip(m.predict(X, verbose=0), EPS, 1.0)) for m in members], axis=1
    )
    learner = LogisticRegression(C=META_C, max_iter=2000, random_state=0).fit(features, Y)
    np.testing.assert_allclose(out, learner.predict_proba(features), atol=1e-4)
    assert stacked.scores["ensemble"]["roc_auc"] is not None


@pytest.mark.parametrize("name", ["backbone.keras", "backbone.h5", "backbone_sm"])
def test_a_safe_backbone_file_loads_without_trust(tmp_path, name):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Dense(5, name="features")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(tmp_path / name)
    model = build_model(
        "transfer",
        model_inputs((8, 8, 1), None),
        Head(3, "softmax"),
        {"backbone": str(tmp_path / name), "fine_tune_layers": 0},
    )
    assert model.get_layer("backbone").output_shape == (None, 5)


def test_a_damaged_backbone_file_is_a_config_error_naming_the_option(tmp_path):
    (tmp_path / "backbone.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 16)
    with pytest.raises(ConfigError, match="cannot be read as a model.*model_options.backbone="):
        build_model(
            "transfer",
            model_inputs((8, 8, 1), None),
            Head(3, "softmax"),
            {"backbone": str(tmp_path / "backbone.h5"), "fine_tune_layers": 0},
        )


def test_kerastrains_own_layers_are_not_foreign_code_but_look_alike_modules_are():
    from kerastrain.export.model_files import unsafe_parts

    ours = {"class_name": "EncodeCategory", "module": "kerastrain.data.layers", "config": {}}
    assert unsafe_parts(ours) == []
    look_alike = {"class_name": "EncodeCategory", "module": "kerastrain_evil.layers", "config": {}}
    assert "kerastrain_evil.layers" in unsafe_parts(look_alike)[0]
