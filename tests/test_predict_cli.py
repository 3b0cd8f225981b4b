"""`kerastrain predict` and `kerastrain evaluate`: an exported artifact on a data file.

One small table run (numbers and a text column, 2 epochs, every format) is
trained once for the module; the array and image models are built untrained
and exported in a second, which is all their tests need.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import predicting
from kerastrain._keras import keras, tf
from kerastrain.cli import main
from kerastrain.config import ExportConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.export import export_model
from kerastrain.export.model_info import MODEL_INFO, read_model_info, write_model_info
from kerastrain.task import Task

FORMATS = {"savedmodel": "savedmodel", "keras": "model.keras", "h5": "model.h5"}
FORMATS["tflite"] = "model.tflite"


def _table() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.iloc[:, :5].copy()
    frame["size"] = np.where(frame["mean radius"] > 14, "large", "small")
    frame["diagnosis"] = np.array(["malignant", "benign"])[bunch.target]
    return frame


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """The run, its test rows as a CSV file (with the label column), and the frame."""
    frame = _table()
    folder = tmp_path_factory.mktemp("predict")
    result = kerastrain.fit_pipeline(
        frame,
        data_options={"target": "diagnosis"},
        train={"epochs": 2, "verbose": 0, "early_stopping": None},
        export={"formats": list(FORMATS)},
        report={"explain": "none"},
        output_dir=folder / "run",
        seed=0,
    )
    cfg = result.config
    test = prepare_data(frame, cfg.data_options, cfg.seed).splits.test
    csv = folder / "test.csv"
    frame.iloc[test].to_csv(csv, index=False)
    return result, csv, frame


def _labels(path) -> list[str]:
    return pd.read_csv(path)["label"].tolist()


# --------------------------------------------------------------------------- definition of done


@pytest.mark.slow
def test_predict_writes_the_same_labels_for_every_format(table_run, tmp_path):
    result, csv, frame = table_run
    written = {}
    for fmt, name in FORMATS.items():
        out = tmp_path / f"{fmt}.csv"
        # Untrusted: kerastrain's own table layers (named by module in a .keras
        # file, registered for an .h5) are not foreign code.
        assert main(["predict", str(result.run_dir / name), str(csv), "--output", str(out)]) == 0
        written[fmt] = pd.read_csv(out)
    reference = written["savedmodel"]
    assert list(reference.columns) == [
        "row",
        "label",
        "probability_benign",
        "probability_malignant",
    ]
    rows = pd.read_csv(csv)
    assert reference["row"].tolist() == list(range(len(rows)))
    for fmt, table in written.items():
        assert table["label"].tolist() == reference["label"].tolist(), fmt
        np.testing.assert_allclose(
            table["probability_malignant"], reference["probability_malignant"], atol=1e-4
        )
    # The labels are the Keras model's answers, named by the run's classes.
    x = {
        name: (
            rows[column].to_numpy(np.float32)
            if spec.dtype != "string"
            else rows[column].to_numpy(object)
        )
        for spec in read_model_info(result.artifacts["savedmodel"]).inputs
        for name, column in [(spec.name, spec.column)]
    }
    p = result.model.predict(x, verbose=0).reshape(-1)
    assert reference["label"].tolist() == np.where(p >= 0.5, "malignant", "benign").tolist()
    np.testing.assert_allclose(reference["probability_malignant"], p, atol=1e-5)


@pytest.mark.slow
def test_evaluate_prints_the_runs_test_accuracy(table_run, capsys):
    result, csv, _ = table_run
    expected = result.metrics["test"]
    # The label column comes from model_info.json; --target names it too.
    assert main(["evaluate", str(result.artifacts["tflite"]), str(csv), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["task"] == "binary" and scored["examples"] == expected["examples"]
    assert scored["accuracy"] == expected["accuracy"]
    assert scored["roc_auc"] == pytest.approx(expected["roc_auc"], abs=1e-4)
    assert scored["per_class"].keys() == expected["per_class"].keys()
    assert (
        main(["evaluate", str(result.artifacts["savedmodel"]), str(csv), "--target", "diagnosis"])
        == 0
    )
    table = capsys.readouterr().out
    assert f"accuracy            {expected['accuracy']:.4f}" in table
    assert "confusion matrix" in table and "malignant" in table


@pytest.mark.slow
def test_model_info_records_the_task_classes_and_columns(table_run):
    result, _, frame = table_run
    info = read_model_info(result.artifacts["tflite"])
    assert info.path == result.run_dir / MODEL_INFO
    assert info.task == Task("binary", 2, ("benign", "malignant"))
    assert info.target == "diagnosis" and info.is_table
    assert {i.column for i in info.inputs} == set(frame.columns) - {"diagnosis"}
    assert {i.name: i.dtype for i in info.inputs}["size"] == "string"
    assert MODEL_INFO in json.loads((result.run_dir / "run.json").read_text())["written"]


# --------------------------------------------------------------------------- evaluate() on a table


@pytest.mark.slow
def test_evaluate_scores_a_table_frame_and_columns(table_run):
    """Regression: `read_labelled` counted a table's columns as its rows
    ("The features have 6 rows but there are 569 labels")."""
    result, csv, frame = table_run
    test = pd.read_csv(csv)
    expected = result.metrics["test"]["accuracy"]
    artifact = result.artifacts["savedmodel"]
    from_frame = kerastrain.evaluate(artifact, test, target="diagnosis")
    assert from_frame["examples"] == len(test) and from_frame["accuracy"] == expected
    columns = {c: test[c].to_numpy() for c in test.columns if c != "diagnosis"}
    from_columns = kerastrain.evaluate(artifact, (columns, test["diagnosis"].to_numpy()))
    assert from_columns["accuracy"] == expected
    # The Keras model itself, whose task comes from its sigmoid, with class indices.
    index = (test["diagnosis"] == "malignant").to_numpy().astype(int)
    assert kerastrain.evaluate(result.model, (columns, index))["accuracy"] == expected
    with pytest.raises(kerastrain.DataError, match="differ in length"):
        kerastrain.evaluate(artifact, (columns, test["diagnosis"].to_numpy()[:-1]))


# --------------------------------------------------------------------------- outputs and progress


@pytest.mark.slow
def test_predict_output_beside_the_data_or_stdout(table_run, capsys):
    result, csv, _ = table_run
    assert main(["predict", str(result.artifacts["tflite"]), str(csv)]) == 0
    beside = csv.with_name("test.predictions.csv")
    assert capsys.readouterr().out.strip() == str(beside)
    assert main(["predict", str(result.artifacts["tflite"]), str(csv), "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "row,label,probability_benign,probability_malignant"
    assert pd.read_csv(beside)["label"].tolist() == [
        line.split(",")[1] for line in out.splitlines()[1:]
    ]
    # Never written over the data itself.
    assert main(["predict", str(result.artifacts["tflite"]), str(csv), "--output", str(csv)]) == 2
    assert "is the data file" in capsys.readouterr().err


@pytest.mark.slow
def test_predict_logs_progress_with_time_left(table_run, tmp_path, monkeypatch, caplog):
    result, csv, _ = table_run
    monkeypatch.setattr(predicting, "PROGRESS_SECONDS", 1e-9)  # a line each batch but the last
    caplog.set_level(logging.INFO, logger="kerastrain")
    written = predicting.predict_file(
        result.artifacts["tflite"], csv, output=tmp_path / "p.csv", batch_size=20
    )
    lines = [r.getMessage() for r in caplog.records if "s left" in r.getMessage()]
    assert len(lines) == len(pd.read_csv(csv)) // 20 - (len(pd.read_csv(csv)) % 20 == 0)
    assert lines[0].startswith(f"Predicting '{csv}': 20/{len(pd.read_csv(csv))} rows (")
    assert written == tmp_path / "p.csv"


# --------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path, csv):
    rows = pd.read_csv(csv)
    renamed = tmp_path / "renamed.csv"
    rows.rename(columns={"mean texture": "texture"}).drop(columns=["size"]).to_csv(
        renamed, index=False
    )
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text(",".join(rows.columns) + "\n")
    words = tmp_path / "words.csv"
    broken = rows.copy().astype({"mean area": object})
    broken.loc[3, "mean area"] = "big"
    broken.to_csv(words, index=False)
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((3, 6), np.float32))
    return {
        "missing and extra columns": (
            ["predict", "{run}/savedmodel", str(renamed)],
            ["do not match the model's inputs", "missing 'mean texture', 'size'", "'texture'"],
        ),
        "empty file": (["predict", "{run}/model.tflite", str(empty)], ["is empty"]),
        "header only": (
            ["evaluate", "{run}/model.tflite", str(header)],
            ["has a header but no rows"],
        ),
        "target not there": (
            ["evaluate", "{run}/model.tflite", str(csv), "--target", "diagnosys"],
            ["label column 'diagnosys' is not in", "Did you mean 'diagnosis'?"],
        ),
        "no such artifact": (["predict", "{run}/nothing.tflite", str(csv)], ["No model file"]),
        "not a model": (["predict", "{run}/config.yaml", str(csv)], ["Unknown artifact"]),
        "folder not a model": (["evaluate", "{run}/checkpoints", str(csv)], ["not a SavedModel"]),
        "no such data": (
            ["predict", "{run}/model.tflite", str(tmp_path / "no.csv")],
            ["does not exist"],
        ),
        "a word in a number column": (
            ["predict", "{run}/model.tflite", str(words)],
            ["Column 'mean area'", "rows 3", "file lines 5", "'big'"],
        ),
        "an array for a table model": (
            ["predict", "{run}/model.tflite", str(npy)],
            ["takes a table's named columns", "'size'"],
        ),
    }


CASES = [
    "missing and extra columns",
    "empty file",
    "header only",
    "target not there",
    "no such artifact",
    "not a model",
    "folder not a model",
    "no such data",
    "a word in a number column",
    "an array for a table model",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_paragraph_and_exit_2(table_run, tmp_path, capsys, case):
    result, csv, _ = table_run
    argv, quoted = _bad_inputs(tmp_path, csv)[case]
    argv = [a.replace("{run}", str(result.run_dir)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    paragraph = " ".join(line for line in err.splitlines() if not line[:2].isdigit())
    assert paragraph.startswith("kerastrain: ")
    for text in quoted:
        assert text in paragraph
    assert not list(tmp_path.glob("*.predictions.csv"))  # nothing written


@pytest.mark.slow
@pytest.mark.subprocess
def test_bad_columns_in_a_process_exit_2_without_traceback(table_run, tmp_path):
    result, csv, _ = table_run
    argv, _ = _bad_inputs(tmp_path, csv)["missing and extra columns"]
    argv = [a.replace("{run}", str(result.run_dir)) for a in argv]
    done = subprocess.run(
        [sys.executable, "-m", "kerastrain.cli", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "DataError: The columns of" in done.stderr


# --------------------------------------------------------------------------- arrays and images


def _exported(model, folder, task, formats=("savedmodel",), **info):
    artifacts = export_model(model, folder, ExportConfig(formats=list(formats)))
    write_model_info(folder, model.inputs, task, **info)
    return artifacts["savedmodel"]


def test_array_model_reads_named_columns_and_npy(tmp_path, capsys):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    task = Task("multiclass", 3, ("a", "b", "c"))
    artifact = _exported(
        model, tmp_path / "run", task, ("savedmodel", "onnx"), feature_names=["x", "y", "z"]
    )
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    expected = np.array(["a", "b", "c"])[model.predict(x, verbose=0).argmax(axis=1)]
    # Columns by name, whatever their order; an extra column is ignored.
    pd.DataFrame({"id": range(7), "z": x[:, 2], "x": x[:, 0], "y": x[:, 1]}).to_csv(
        tmp_path / "rows.csv", index=False
    )
    assert main(["predict", str(artifact), str(tmp_path / "rows.csv")]) == 0
    assert _labels(tmp_path / "rows.predictions.csv") == expected.tolist()
    assert "ignored 1 columns the model does not read: 'id'" in capsys.readouterr().err
    # Any format load_predictor reads answers through the same model_info.json.
    assert main(["predict", str(artifact.parent / "model.onnx"), str(tmp_path / "rows.csv")]) == 0
    assert _labels(tmp_path / "rows.predictions.csv") == expected.tolist()
    # Parquet (through pandas' pyarrow engine) reads the same.
    pd.read_csv(tmp_path / "rows.csv").to_parquet(tmp_path / "rows.parquet")
    assert main(["predict", str(artifact), str(tmp_path / "rows.parquet")]) == 0
    assert _labels(tmp_path / "rows.predictions.csv") == expected.tolist()
    np.save(tmp_path / "rows.npy", x)
    assert main(["predict", str(artifact), str(tmp_path / "rows.npy")]) == 0
    table = pd.read_csv(tmp_path / "rows.predictions.csv")
    assert table["label"].tolist() == expected.tolist()
    assert list(table.columns) == [
        "row",
        "label",
        "probability_a",
        "probability_b",
        "probability_c",
    ]
    np.save(tmp_path / "wide.npy", np.zeros((2, 4), np.float32))
    capsys.readouterr()
    assert main(["predict", str(artifact), str(tmp_path / "wide.npy")]) == 2
    assert "have shape (4,); the model takes (3,)" in " ".join(capsys.readouterr().err.split())


def test_without_model_info_outputs_are_named_by_index(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    artifact = export_model(model, tmp_path / "run", ExportConfig(formats=["savedmodel"]))
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    pd.DataFrame(x, columns=["p", "q"]).to_csv(tmp_path / "rows.csv", index=False)
    out = predicting.predict_file(artifact["savedmodel"], tmp_path / "rows.csv")
    table = pd.read_csv(out)
    assert list(table.columns) == ["row", "output"]
    np.testing.assert_allclose(table["output"], model.predict(x, verbose=0)[:, 0], rtol=1e-5)


def test_image_folder_predict_and_evaluate(tmp_path, capsys):
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    artifact = _exported(model, tmp_path / "run", Task("multiclass", 2, ("cat", "dog")))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 6, 6, 1), dtype=np.uint8)
    for i, image in enumerate(images):
        folder = tmp_path / "photos" / ("cat" if i < 3 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())
    expected = np.array(["cat", "dog"])[
        model.predict(images.astype(np.float32), verbose=0).argmax(1)
    ]
    assert main(["predict", str(artifact), str(tmp_path / "photos")]) == 0
    table = pd.read_csv(tmp_path / "photos.predictions.csv")
    assert table["file"].tolist() == [f"{'cat' if i < 3 else 'dog'}/{i}.png" for i in range(6)]
    assert table["label"].tolist() == expected.tolist()
    capsys.readouterr()
    assert main(["evaluate", str(artifact), str(tmp_path / "photos"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    truth = np.array(["cat"] * 3 + ["dog"] * 3)
    assert scored["accuracy"] == pytest.approx(np.mean(expected == truth))


def test_regression_value_and_evaluate_metrics(tmp_path, capsys):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    artifact = _exported(
        model, tmp_path / "run", Task("regression"), target="price", feature_names=["a", "b"]
    )
    x = np.random.default_rng(1).normal(size=(9, 2)).astype(np.float32)
    price = np.arange(9, dtype=np.float64)
    pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "price": price}).to_csv(
        tmp_path / "rows.csv", index=False
    )
    values = model.predict(x, verbose=0)[:, 0]
    table = predicting.predictions(artifact, tmp_path / "rows.csv")
    assert list(table.columns) == ["row", "value"]
    np.testing.assert_allclose(table["value"], values, rtol=1e-5)
    # The label column is the run's target: no --target needed.
    assert main(["evaluate", str(artifact), str(tmp_path / "rows.csv"), "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["task"] == "regression"
    assert scored["rmse"] == pytest.approx(np.sqrt(np.mean((values - price) ** 2)), rel=1e-5)


@pytest.mark.slow
@pytest.mark.subprocess
def test_evaluate_loads_a_table_models_keras_and_h5_in_a_fresh_process(table_run):
    """Regression: in a process that had not imported kerastrain's table
    layers, their .h5 failed ("Unknown layer: 'kerastrain>FillMissing'") and
    their .keras with "'str' object is not callable"."""
    result, csv, _ = table_run
    code = (
        "import sys, pandas as pd, kerastrain\n"
        "rows = pd.read_csv(sys.argv[1])\n"
        "for path in sys.argv[2:]:\n"
        "    print(kerastrain.evaluate(path, rows, target='diagnosis')['accuracy'])\n"
    )
    paths = [str(result.run_dir / FORMATS[f]) for f in ("keras", "h5")]
    done = subprocess.run(
        [sys.executable, "-c", code, str(csv), *paths], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = result.metrics["test"]["accuracy"]
    assert [float(v) for v in done.stdout.split()] == [expected, expected]


def test_model_info_is_found_beside_or_above_a_versioned_savedmodel(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    write_model_info(tmp_path, model.inputs, Task("binary", 2, ("no", "yes")))
    (tmp_path / "savedmodel" / "3").mkdir(parents=True)
    for artifact in (
        tmp_path / "model.tflite",
        tmp_path / "savedmodel",
        tmp_path / "savedmodel" / "3",
    ):
        assert read_model_info(artifact).task.class_names == ("no", "yes")
    assert read_model_info(tmp_path / "savedmodel" / "3" / "deeper" / "x") is None
    (tmp_path / MODEL_INFO).write_text("{not json")
    with pytest.raises(kerastrain.ExportError, match="Cannot read"):
        read_model_info(tmp_path / "model.tflite")
