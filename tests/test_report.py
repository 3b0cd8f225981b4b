"""The HTML report holds every section that ran and none that did not, embeds
its images, renders in headless Chromium without a broken image; the model
card says how to load each artifact."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import kerastrain
from kerastrain.evaluation import Evaluation, diagnose
from kerastrain.explanation import PermutationImportance
from kerastrain.metrics import compute_metrics, curve_data
from kerastrain.report import ReportInputs, Section, scores_section, write_report
from kerastrain.task import Task

CHROMIUM = "/usr/bin/chromium"
HISTORY = {
    "loss": [1.2, 0.7, 0.45, 0.35, 0.3, 0.26, 0.22],
    "accuracy": [0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92],
    "val_loss": [1.1, 0.8, 0.6, 0.62, 0.66, 0.7, 0.75],
    "val_accuracy": [0.5, 0.65, 0.75, 0.74, 0.73, 0.72, 0.71],
    "lr": [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4, 1e-4],
}
SUMMARY = {
    "data": "test data",
    "rows": 400,
    "example shape": (4,),
    "task": "multiclass",
    "splits": {"train": 280, "val": 60, "test": 60},
    "classes": {"a": 200, "b": 150, "c": 50},
}


def _sections(page: str) -> list[str]:
    return re.findall(r'<section id="[^"]+" data-section="([^"]+)"', page)


def _evaluation(task: Task, n: int = 60) -> Evaluation:
    rng = np.random.default_rng(0)
    if task.kind == "regression":
        y = rng.normal(size=n)
        outputs = (y + rng.normal(0, 0.3, n))[:, None]
    else:
        y = rng.integers(0, task.num_classes, n)
        logits = rng.normal(size=(n, task.num_classes))
        logits[np.arange(n), y] += 2.0
        outputs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Evaluation(
        task=task,
        split="test",
        y_true=y,
        outputs=outputs,
        metrics=compute_metrics(task, y, outputs),
        curves=curve_data(task, y, outputs),
        diagnosis=diagnose(HISTORY, baseline=1.0),
        baseline=1.0,
    )


def _importance() -> PermutationImportance:
    drops = np.array([[0.2, 0.25, 0.22], [0.01, 0.0, -0.01], [0.1, 0.12, 0.08], [0.0, 0.01, 0.0]])
    return PermutationImportance(
        feature_names=["w", "x", "y", "z"],
        importances_mean=drops.mean(axis=1),
        importances_std=drops.std(axis=1),
        importances=drops,
        scoring="accuracy",
        baseline_score=0.9,
    )


def _tuning_plot(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([1, 2, 3], [0.8, 0.85, 0.9])
    fig.savefig(path)
    plt.close(fig)
    return path


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """A report with every section: a run that tuned, compressed and exported."""
    tmp_path = tmp_path_factory.mktemp("full")
    run = tmp_path / "run"
    run.mkdir()
    task = Task("multiclass", 3, ("a", "b", "c"))
    evaluation = _evaluation(task)
    (run / "savedmodel").mkdir()
    (run / "savedmodel" / "saved_model.pb").write_bytes(b"\0" * 5000)
    (run / "model.tflite").write_bytes(b"\0" * 2048)
    artifacts = {"savedmodel": run / "savedmodel", "tflite": run / "model.tflite"}
    metrics = {
        "val": evaluation.metrics,
        "test": evaluation.metrics,
        "savedmodel": {**evaluation.metrics, "max_abs_diff": 0.0, "agreement": 1.0},
        "tflite": {**evaluation.metrics, "max_abs_diff": 3e-7, "agreement": 1.0},
    }
    tuning = Section(
        "Tuning",
        text="3 trials of a random search; the best is trial 2.",
        rows=[
            {"trial": i, "learning_rate": lr, "val_accuracy": acc}
            for i, lr, acc in ((1, 1e-2, 0.8), (2, 1e-3, 0.9), (3, 1e-4, 0.85))
        ],
        images=[_tuning_plot(tmp_path / "trials.png")],
    )
    compression = scores_section(
        "Compression", {"float32": {"accuracy": 0.9}, "pruned 50% int8": {"accuracy": 0.89}}
    )
    path = write_report(
        ReportInputs(
            run,
            name="full",
            summary=SUMMARY,
            history=HISTORY,
            metrics=metrics,
            artifacts=artifacts,
            timings={"train": 3.2, "export": 1.1},
            stop_reason="completed all 7 epochs",
            config={"train": {"epochs": 7}},
            evaluation=evaluation,
            explanations=[_importance()],
            sections=[tuning, compression],
            limitations=["Trained on synthetic rows only."],
        )
    )
    return path


def test_the_report_holds_every_section_that_ran(full_report):
    page = full_report.read_text()
    assert full_report.name == "report.html"
    assert _sections(page) == [
        "summary",
        "config",
        "data",
        "learning-curves",
        "diagnosis",
        "metrics",
        "artifacts",
        "per-class",
        "confusion-matrix",
        "roc-pr",
        "calibration",
        "explanations",
        "tuning",
        "compression",
        "stages",
    ]
    assert "Over-fitting: validation loss rose from 0.6 at epoch 3" in page
    assert "pruned 50% int8" in page and "learning_rate" in page
    run = full_report.parent
    for png in (
        "learning_curves",
        "class_balance",
        "confusion_matrix",
        "roc_pr",
        "calibration",
        "explanation_permutation",
        "tuning_trials",
    ):
        assert (run / f"{png}.png").stat().st_size > 1000


def test_the_report_holds_no_section_that_did_not_run(tmp_path):
    metrics = {"val": {"accuracy": 0.9, "f1": 0.88}}
    page = write_report(
        ReportInputs(
            tmp_path,
            name="bare",
            summary={},
            history={"loss": [1.0, 0.5, 0.4]},
            metrics=metrics,
            artifacts={},
            timings={},
            stop_reason="done",
            model_card=False,
        )
    ).read_text()
    assert _sections(page) == ["summary", "learning-curves", "metrics"]
    for absent in ("Tuning", "Compression", "Confusion", "Calibration", "Explanations"):
        assert absent not in page
    assert not (tmp_path / "MODEL_CARD.md").exists()

    regression = _evaluation(Task("regression"))
    page = write_report(
        ReportInputs(
            tmp_path / "reg",
            name="reg",
            summary={"task": "regression"},
            history={},
            metrics={"test": regression.metrics},
            artifacts={},
            timings={},
            stop_reason="done",
            evaluation=regression,
        )
    ).read_text()
    assert _sections(page) == ["summary", "data", "diagnosis", "metrics", "residuals"]


def test_the_report_is_self_contained(full_report):
    page = full_report.read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert len(sources) == 7
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)
    assert "<script" not in page


def test_the_model_card(full_report):
    card = (full_report.parent / "MODEL_CARD.md").read_text()
    for heading in (
        "## Intended use",
        "## Data",
        "## Metrics",
        "### By class (test split)",
        "## Limits",
        "## How to load",
        "### savedmodel (`savedmodel`, 4.9 KiB)",
        "### tflite (`model.tflite`, 2.0 KiB)",
    ):
        assert heading in card
    assert "- Trained on synthetic rows only." in card
    assert "Weakest class:" in card and "Imbalanced classes" in card
    assert 'tf.saved_model.load("savedmodel")' in card
    assert 'Interpreter(model_path="model.tflite")' in card
    assert 'kerastrain.evaluate("savedmodel", (x, y))' in card
    per_class = re.findall(r"^\| (a|b|c) \|", card, flags=re.M)
    assert per_class == ["a", "b", "c"]


def _chromium_or_skip() -> str:
    path = shutil.which("chromium") or (CHROMIUM if os.access(CHROMIUM, os.X_OK) else None)
    if path is None:
        pytest.skip(
            "Chromium is not installed (Debian package `chromium`; `make test` installs "
            "it when run as root with apt-get available)."
        )
    return path


CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0);
  document.body.setAttribute("data-images", document.images.length);
  document.body.setAttribute("data-broken", broken.map(i => i.alt).join("|") || "none");
});
</script>"""


def test_the_report_renders_in_chromium_without_broken_images(full_report, tmp_path):
    chromium = _chromium_or_skip()
    # The check runs in a copy, so the report itself stays free of scripts.
    probe = full_report.with_name("probe.html")
    probe.write_text(full_report.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body[^>]*>", result.stdout).group(0)
    assert 'data-images="7"' in body, body
    assert 'data-broken="none"' in body, body
    assert "Confusion matrix" in result.stdout


@pytest.mark.slow
def test_fit_pipeline_writes_the_report_and_model_card_and_tracks_the_run(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow", reason="needs the mlflow extra; `make test` has it")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's switch for folder stores
    store = (tmp_path / "mlruns").as_uri()
    result = kerastrain.fit_pipeline(
        "iris",
        train={"epochs": 4, "verbose": 0},
        export={"formats": ["savedmodel", "tflite"]},
        report={"permutation_repeats": 2, "limitations": ["Iris has 150 rows."]},
        tracking={"tensorboard": True, "mlflow": True, "mlflow_tracking_uri": store},
        output_dir=str(tmp_path / "run"),
        seed=0,
    )
    assert result.report_path == tmp_path / "run" / "report.html"
    page = result.report_path.read_text()
    sections = _sections(page)
    for name in (
        "config",
        "data",
        "learning-curves",
        "diagnosis",
        "metrics",
        "artifacts",
        "per-class",
        "confusion-matrix",
        "roc-pr",
        "calibration",
        "explanations",
    ):
        assert name in sections
    assert "tuning" not in sections and "compression" not in sections
    assert "petal length (cm)" in page  # permutation importance names the real features
    assert len(result.history["learning_rate"]) == 4  # logged for TensorBoard, plotted here
    card = (tmp_path / "run" / "MODEL_CARD.md").read_text()
    assert "- Iris has 150 rows." in card and "setosa" in card
    assert "### savedmodel" in card and "### tflite" in card
    assert {"explain", "report", "track"} <= set(result.timings)
    assert list((tmp_path / "run" / "tensorboard" / "train").glob("events.out.tfevents.*"))

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name("kerastrain").experiment_id])
    assert run.data.params["train.epochs"] == "4"
    assert run.data.metrics["tflite/accuracy"] == pytest.approx(
        result.metrics["tflite"]["accuracy"]
    )
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.html", "MODEL_CARD.md", "model.tflite", "savedmodel"} <= logged
    assert "backup" not in logged


_CARD_RUNNER = """
import json, sys
import numpy as np

blocks, out = json.loads(sys.argv[1]), sys.argv[2]
for name, code in blocks:  # each in a fresh namespace, in the card's order
    namespace = {}
    exec(compile(code, name, "exec"), namespace)
    np.save(f"{out}/{name}.npy", np.asarray(namespace["outputs"]))
"""


def _run_card_code(card: Path, out: Path) -> dict[str, np.ndarray]:
    """Runs each loading block of a model card as a user would, in a fresh
    Python process started in the card's folder (one process for the card's
    blocks, run in order: the first Keras file is loaded before anything
    imported kerastrain, and every Keras block must import what registers
    its layers itself). Returns each block's `outputs`, by its heading."""
    import sys

    text = card.read_text().split("## How to load")[1]
    blocks = re.findall(r"^### (\S+) \(`[^\n]*\n\n```python\n(.*?)```", text, flags=re.M | re.S)
    assert blocks, text
    env = {**os.environ, "PYTHONPATH": str(Path(kerastrain.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", _CARD_RUNNER, json.dumps(blocks), str(out)],
        cwd=card.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: np.load(out / f"{name}.npy") for name, _ in blocks}


def _placeholder_row(card: Path) -> dict[str, np.ndarray]:
    """The `x` the card's SavedModel block builds."""
    loading = card.read_text().split("## How to load")[1]
    block = re.search(r"```python\n(.*?)```", loading, flags=re.S).group(1)
    namespace: dict = {"np": np}
    exec(block[block.index("x = ") : block.index("outputs =")], namespace)
    return namespace["x"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_model_card_code_runs_for_a_table_with_a_text_column(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "dose (mg)": rng.normal(5.0, 2.0, 120),
            "age": rng.integers(20, 80, 120).astype(float),
            "city": rng.choice(["paris", "lyon", "nice", ""], 120),
        }
    )
    frame["outcome"] = (frame["dose (mg)"] > 5).astype(int)
    result = kerastrain.fit_pipeline(
        frame,
        "mlp",
        seed=0,
        output_dir=str(tmp_path / "run"),
        data_options={"target": "outcome"},
        train={"epochs": 1, "verbose": 0},
        export={"formats": ["savedmodel", "keras", "h5", "tflite"], "latency_runs": 5},
        report={"explain": "none"},
    )
    card = tmp_path / "run" / "MODEL_CARD.md"
    outputs = _run_card_code(card, tmp_path)
    text = card.read_text()
    assert "raw feature rows as float32" not in text and "(name,) =" not in text
    assert '"city": np.full((1,), ""),  # text, shape (rows,)' in text
    assert '"dose__mg_": np.zeros((1,), np.float32),  # float32, shape (rows,)' in text
    for heading in ("### keras", "### h5"):  # both Keras files need kerastrain's layers
        block = text.split(heading)[1].split("```")[1]
        assert "import kerastrain.data.layers" in block
    assert set(outputs) == {"savedmodel", "keras", "h5", "tflite"}
    expected = result.model.predict(_placeholder_row(card), verbose=0)
    for name, answer in outputs.items():
        np.testing.assert_allclose(answer, expected, atol=1e-5, err_msg=name)
    # metrics.json: every artifact's one-row latency, none left empty.
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in ("savedmodel", "keras", "h5", "tflite"):
        assert saved[name]["latency_ms"] > 0 and saved[name]["one_row_checked"] > 0, name


@pytest.mark.slow
@pytest.mark.subprocess
def test_the_model_card_code_runs_for_the_digits_model(tmp_path):
    result = kerastrain.fit_pipeline(
        "digits",
        "mlp",
        seed=0,
        output_dir=str(tmp_path / "run"),
        train={"epochs": 2, "verbose": 0},
        export={
            "formats": ["savedmodel", "keras", "tflite", "onnx"],
            "tflite": ["float32", "int8"],
            "int8_io": True,  # int8 in and out: the card's code quantizes
            "min_agreement": 0.8,
            "latency_runs": 5,
        },
        report={"explain": "none"},
    )
    card = tmp_path / "run" / "MODEL_CARD.md"
    outputs = _run_card_code(card, tmp_path)
    text = card.read_text()
    assert "import kerastrain" not in text.split("Paths are relative")[0]  # plain tf_keras
    assert '["inputs"]["quantization"]' in text  # the int8 file's own scale
    assert set(outputs) == {"savedmodel", "keras", "tflite", "tflite_int8", "onnx"}
    expected = result.model.predict(_placeholder_row(card), verbose=0)
    assert expected.shape == (1, 10)
    for name in ("savedmodel", "keras", "tflite", "onnx"):
        np.testing.assert_allclose(outputs[name], expected, atol=1e-5, err_msg=name)
    assert outputs["tflite_int8"].shape == (1, 10)
    assert outputs["tflite_int8"].dtype == np.float32  # dequantized by the card's code
    assert abs(outputs["tflite_int8"].sum() - 1.0) < 0.1  # probabilities, not int8 codes
    assert "kerastrain.evaluate(" in text
