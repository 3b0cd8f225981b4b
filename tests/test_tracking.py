"""TensorBoard scalars and HParams, and MLflow runs in local stores, read back
with each tool's own reader."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

import kerastrain
from kerastrain._keras import keras, tf
from kerastrain.config import TrackingConfig
from kerastrain.tracking import (
    log_final_scalars,
    log_hparams,
    log_mlflow,
    track_run,
    training_callbacks,
)


def _scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar under ``log_dir``, read with TensorBoard's own loader."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(log_dir))
    mux.Reload()
    found: dict[str, list[tuple[int, float]]] = {}
    for run, tags in mux.PluginRunToTagToContent("scalars").items():
        for tag in tags:
            found[f"{run}/{tag}"] = [
                (e.step, float(tf.make_ndarray(e.tensor_proto))) for e in mux.Tensors(run, tag)
            ]
    return found


def test_tensorboard_scalars_during_training_and_after(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    callbacks = training_callbacks(TrackingConfig(tensorboard=True), tmp_path)
    history = model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=callbacks)
    log_final_scalars(tmp_path / "tensorboard", {"test": {"accuracy": 0.75, "per_class": {}}})
    scalars = _scalars(tmp_path / "tensorboard")
    losses = [v for _, v in sorted(scalars["train/epoch_loss"])]
    np.testing.assert_allclose(losses, history.history["loss"], rtol=1e-5)
    assert [s for s, _ in scalars["validation/epoch_accuracy"]] == [0, 1, 2]
    assert [v for _, v in scalars["train/epoch_learning_rate"]] == pytest.approx([1e-3] * 3)
    assert history.history["learning_rate"] == pytest.approx([1e-3] * 3)  # the report plots it
    assert scalars["final/test/accuracy"] == [(0, 0.75)]
    assert training_callbacks(TrackingConfig(), tmp_path) == []


def test_hparams_for_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
    from tensorboard.plugins.hparams import plugin_data_pb2

    log_hparams(
        tmp_path / "trial_1",
        {"learning_rate": 1e-3, "width": 64, "optimizer": "adam"},
        {"val_accuracy": 0.93},
    )
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    content = mux.PluginRunToTagToContent("hparams")["trial_1"]["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert info.hparams["learning_rate"].number_value == pytest.approx(1e-3)
    assert info.hparams["width"].number_value == 64
    assert info.hparams["optimizer"].string_value == "adam"
    assert info.group_name == "trial_1"
    assert _scalars(tmp_path)["trial_1/val_accuracy"] == [(0, pytest.approx(0.93))]


@pytest.fixture
def finished_run(tmp_path):
    """A run folder as the pipeline leaves it (report, model card, artifacts, backup)."""
    run = tmp_path / "run"
    (run / "savedmodel" / "variables").mkdir(parents=True)
    (run / "savedmodel" / "saved_model.pb").write_bytes(b"pb")
    (run / "backup").mkdir()
    (run / "backup" / "chkpt").write_bytes(b"never logged")
    for name in ("report.html", "MODEL_CARD.md", "model.tflite", "learning_curves.png"):
        (run / name).write_bytes(b"content of " + name.encode())
    (run / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.9}}))
    return run


@pytest.mark.slow
@pytest.mark.parametrize("store", ["file", "sqlite"])
def test_mlflow_run_in_a_local_store(finished_run, tmp_path, monkeypatch, store):
    mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra; `make test` has it")
    if store == "file":
        # MLflow 3 keeps the plain-folder store behind this switch of its own.
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = (tmp_path / "mlruns").as_uri()
    else:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = TrackingConfig(
        mlflow=True,
        mlflow_tracking_uri=uri,
        mlflow_experiment="unit",
        mlflow_artifact_location=(tmp_path / "artifacts").as_uri(),
    )
    history = {"loss": [0.9, 0.5, 0.3], "val_loss": [1.0, 0.6, 0.5]}
    metrics = {
        "test": {"accuracy": 0.9, "per_class": {"a": {"f1": 0.8}}, "roc_auc": None},
        "tflite": {"accuracy": 0.9, "max_abs_diff": 2e-7},
    }
    params = {"model": "mlp", "train": {"epochs": 3, "optimizer": "adam"}, "data": "x" * 900}
    logged = track_run(
        config, finished_run, name="unit-run", params=params, metrics=metrics, history=history
    )

    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    run = client.get_run(logged["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "unit-run"
    assert client.get_experiment(run.info.experiment_id).name == "unit"
    assert run.data.params["train.epochs"] == "3" and run.data.params["model"] == "mlp"
    assert len(run.data.params["data"]) == 500
    assert run.data.metrics["test/accuracy"] == pytest.approx(0.9)
    assert run.data.metrics["tflite/max_abs_diff"] == pytest.approx(2e-7)
    assert "test/roc_auc" not in run.data.metrics
    steps = client.get_metric_history(run.info.run_id, "val_loss")
    assert [(m.step, m.value) for m in sorted(steps, key=lambda m: m.step)] == [
        (0, 1.0),
        (1, 0.6),
        (2, 0.5),
    ]
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert top == {
        "report.html",
        "MODEL_CARD.md",
        "model.tflite",
        "learning_curves.png",
        "metrics.json",
        "savedmodel",
    }
    inside = {a.path for a in client.list_artifacts(run.info.run_id, "savedmodel")}
    assert "savedmodel/saved_model.pb" in inside


def test_tracking_options_are_checked(monkeypatch):
    with pytest.raises(kerastrain.ConfigError, match="tracking.mlflow is False"):
        TrackingConfig(mlflow_tracking_uri="sqlite:///x.db")
    with pytest.raises(kerastrain.ConfigError, match="Unknown option 'tracking.tensorbord'"):
        kerastrain.load_config(tracking={"tensorbord": True})
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    with pytest.raises(kerastrain.ConfigError, match=r"pip install 'kerastrain\[mlflow\]'"):
        TrackingConfig(mlflow=True)
    with pytest.raises(kerastrain.ConfigError, match=r"kerastrain\[mlflow\]"):
        log_mlflow(".", name="x", params={}, metrics={}, history={})
