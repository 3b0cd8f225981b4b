"""Every script in examples/ runs, in its quick mode, as a new user runs it.

Each example is started as its own process (`python examples/X.py --quick`)
in an empty folder, with this checkout first on PYTHONPATH, and must do what
its docstring promises: exit 0, write its files under
`saved_models/<example name>/` and nowhere else (no temporary folder left
behind), and print where its report is. An example that needs hardware this
machine lacks (a TPU) is checked for its clear refusal instead.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TESTED = {
    "cross_validate",
    "data_csv",
    "data_images",
    "data_tfds",
    "multi_gpu",
    "model_parallel",
    "multi_worker",
    "parameter_server",
    "quickstart",
    "tpu",
    "transfer",
}


def run_example(name: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs `examples/<name>.py --quick *args` in `cwd`, its temporary files in `cwd/tmp`."""
    tmp = cwd / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TMPDIR": str(tmp),
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def check_ran(done: subprocess.CompletedProcess, cwd: Path, name: str) -> Path:
    """Exit 0, everything written under saved_models/<name>/, no temporary file left.

    Returns:
        The example's folder.
    """
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert sorted(p.name for p in cwd.iterdir()) == ["saved_models", "tmp"]
    assert [p.name for p in (cwd / "saved_models").iterdir()] == [name]
    # TFDS (4.9) leaves an empty `tmp*tfds` folder for each builder of a data set
    # not yet prepared (DatasetInfo.initialize_from_bucket); nothing else may stay.
    left = [p for p in (cwd / "tmp").iterdir() if not (p.name.endswith("tfds") and p.is_dir())]
    assert left == []
    assert [p for p in (cwd / "tmp").rglob("*") if not p.is_dir()] == []
    return cwd / "saved_models" / name


def printed_paths(stdout: str, label: str, cwd: Path) -> list[Path]:
    """The paths printed after `label` (`"Report: saved_models/x/report.html"`)."""
    return [cwd / found for found in re.findall(rf"^{label}: (\S+)", stdout, re.MULTILINE)]


def check_reports(done: subprocess.CompletedProcess, cwd: Path, folder: Path, count: int = 1):
    reports = printed_paths(done.stdout, "Report", cwd)
    assert len(reports) == count, done.stdout
    for report in reports:
        assert report.is_file()
        assert report.resolve().is_relative_to(folder.resolve())
        assert (report.parent / "MODEL_CARD.md").is_file()


def test_every_example_is_tested_and_documented():
    scripts = {path.stem for path in EXAMPLES.glob("*.py")}
    assert scripts == TESTED
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `(\w+)\.py` \|", readme, re.MULTILINE))
    assert table == scripts
    for name in scripts:
        source = (EXAMPLES / f"{name}.py").read_text()
        docstring = ast.get_docstring(ast.parse(source))
        assert f"python examples/{name}.py" in docstring and "--quick" in docstring, name
        assert f"saved_models/{name}/" in docstring and "--output-dir" in docstring, name
        assert "tempfile" not in source, name


@pytest.mark.subprocess
@pytest.mark.slow
def test_quickstart(tmp_path):
    done = run_example("quickstart", tmp_path)
    folder = check_ran(done, tmp_path, "quickstart")
    check_reports(done, tmp_path, folder)
    for artifact in ("savedmodel/saved_model.pb", "model.keras", "model.tflite"):
        assert (folder / artifact).is_file()
    assert "Training stopped: completed all 2 epochs" in done.stdout
    assert "Test accuracy, TFLite model:" in done.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_cross_validate(tmp_path):
    done = run_example("cross_validate", tmp_path)
    folder = check_ran(done, tmp_path, "cross_validate")
    summaries = printed_paths(done.stdout, "Summary", tmp_path)
    assert summaries == [folder / "wine" / "cv.json", folder / "diabetes" / "cv.json"]
    for data, folds in (("wine", 2), ("diabetes", 2)):
        assert (folder / data / "cv.json").is_file()
        assert len(list((folder / data).glob("fold_*/report.html"))) == folds
    assert "wine, stratified 2-fold: accuracy" in done.stdout
    assert "diabetes, time-series 2-fold: mae" in done.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_data_csv(tmp_path):
    done = run_example("data_csv", tmp_path)
    folder = check_ran(done, tmp_path, "data_csv")
    check_reports(done, tmp_path, folder)
    assert (folder / "cancer.csv").is_file()
    assert "size: categorical, 3 categories + out-of-vocabulary" in done.stdout
    assert "SavedModel on raw columns:" in done.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_data_images(tmp_path):
    done = run_example("data_images", tmp_path)
    folder = check_ran(done, tmp_path, "data_images")
    check_reports(done, tmp_path, folder, count=2)
    assert sorted(p.name for p in (folder / "digits").iterdir()) == [
        "four",
        "one",
        "three",
        "two",
        "zero",
    ]
    assert (folder / "memory" / "model.tflite").is_file()
    assert "streamed, test accuracy:" in done.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_data_tfds(tmp_path):
    done = run_example("data_tfds", tmp_path)
    folder = check_ran(done, tmp_path, "data_tfds")
    check_reports(done, tmp_path, folder)
    assert "TFDS test split accuracy:" in done.stdout
    assert "(397 examples)" in done.stdout
    # The deliberately failing call leaves no run folder behind.
    assert "Without the data and without download:" in done.stdout
    assert "tfds build mnist" in done.stdout
    assert sorted(p.name for p in folder.iterdir()) == ["run", "tfds"]


@pytest.mark.subprocess
@pytest.mark.slow
def test_multi_gpu_mirrors_over_two_logical_cpus(tmp_path):
    done = run_example("multi_gpu", tmp_path)
    folder = check_ran(done, tmp_path, "multi_gpu")
    check_reports(done, tmp_path, folder)
    assert "Mirroring over 2 devices" in done.stdout
    assert "Global batch: 64 x 2 replicas = 128" in done.stdout
    assert (folder / "savedmodel" / "saved_model.pb").is_file()


@pytest.mark.subprocess
@pytest.mark.slow
def test_model_parallel_on_a_two_by_two_mesh_of_logical_cpus(tmp_path):
    done = run_example("model_parallel", tmp_path)
    folder = check_ran(done, tmp_path, "model_parallel")
    check_reports(done, tmp_path, folder)
    assert "Mesh: mesh batch=2 x model=2" in done.stdout
    assert "dense_1 (input units, paired with dense_0)" in done.stdout
    assert (folder / "model.tflite").is_file()


@pytest.mark.subprocess
@pytest.mark.slow
def test_multi_worker_on_two_local_workers(tmp_path):
    done = run_example("multi_worker", tmp_path, "--local", "2")
    folder = check_ran(done, tmp_path, "multi_worker")
    check_reports(done, tmp_path, folder)
    assert "Trained on 2 processes" in done.stdout
    assert (folder / "model.tflite").is_file()


@pytest.mark.subprocess
@pytest.mark.slow
def test_parameter_server_on_a_local_cluster(tmp_path):
    done = run_example("parameter_server", tmp_path, "--local")
    folder = check_ran(done, tmp_path, "parameter_server")
    check_reports(done, tmp_path, folder)
    assert "Test accuracy:" in done.stdout
    assert (folder / "model.tflite").is_file()


@pytest.mark.subprocess
@pytest.mark.slow
def test_transfer(tmp_path):
    done = run_example("transfer", tmp_path)
    folder = check_ran(done, tmp_path, "transfer")
    assert sorted(p.name for p in folder.iterdir()) == ["pretrain", "scratch_0", "transfer_0"]
    assert "draw 0: transfer" in done.stdout
    assert "phases: head (backbone frozen)" in done.stdout
    (report,) = re.findall(r"the last transfer's report: (\S+)", done.stdout)
    assert (tmp_path / report).is_file() and (tmp_path / report).parent.name == "transfer_0"


@pytest.mark.subprocess
@pytest.mark.slow
def test_tpu_refuses_clearly_without_a_tpu(tmp_path):
    done = run_example("tpu", tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No TPU was found" in done.stderr
    assert "distribute.tpu_address='local'" in done.stderr
    assert "strategy='auto' uses a GPU or the CPU" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]  # nothing written
