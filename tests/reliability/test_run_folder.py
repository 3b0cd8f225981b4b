"""Hostile run folders: a file or a dangling link as output_dir, overwriting,
leftovers of killed runs, two runs at once, odd names, and CLI messages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import kerastrain
from kerastrain import ConfigError
from kerastrain.cli import main
from kerastrain.files import write_json
from kerastrain.runs import LOCK, MARKER, RunFolder


def _finished_run(folder: Path) -> None:
    """A folder as a finished run leaves it, with an artifact and a sub-folder."""
    folder.mkdir(parents=True)
    (folder / "model.tflite").write_bytes(b"old model")
    (folder / "report").mkdir()
    (folder / "report" / "plot.png").write_bytes(b"old plot")
    write_json(folder / MARKER, {"status": "finished"})


def _config(tmp_path: Path, output_dir: Path, **extra) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"data": "iris", "output_dir": str(output_dir), **extra}))
    return path


# --------------------------------------------------------------------------- what output_dir is


def test_the_cli_refuses_an_output_dir_that_is_a_file_in_one_paragraph(tmp_path, capsys):
    target = tmp_path / "results.csv"
    target.write_text("a,b\n")
    assert main(["run", str(_config(tmp_path, target))]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    assert "ConfigError: The output_dir" in err and "is an existing file" in err
    assert "Traceback" not in err
    assert target.read_text() == "a,b\n"


def test_fit_pipeline_refuses_a_file_before_reading_any_data(tmp_path):
    target = tmp_path / "model.h5"
    target.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="is an existing file"):
        kerastrain.fit_pipeline(str(tmp_path / "no-such-data.csv"), output_dir=str(target))
    assert target.read_bytes() == b"keep me"


def test_an_output_dir_below_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"below '.*file', which is a file"):
        RunFolder.prepare(str(tmp_path / "file" / "run"), "n", overwrite=False)


def test_a_dangling_symlink_output_dir_is_refused(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(ConfigError, match="a link to nothing"):
        RunFolder.prepare(str(tmp_path / "link"), "n", overwrite=False)


def test_a_symlink_to_a_folder_is_followed_and_kept_on_overwrite(tmp_path):
    real = tmp_path / "scratch"
    _finished_run(real)
    (tmp_path / "link").symlink_to(real)
    folder = RunFolder.prepare(str(tmp_path / "link"), "n", overwrite=True)
    assert (tmp_path / "link").is_symlink() and real.is_dir()
    assert sorted(p.name for p in real.iterdir()) == sorted([LOCK, MARKER])
    folder.mark("finished")


def test_an_unwritable_output_dir_is_a_config_error(tmp_path):
    # /proc refuses new folders, even to root (chmod does not stop root).
    with pytest.raises(ConfigError, match="cannot be written"):
        RunFolder.prepare("/proc/kerastrain-test-run", "n", overwrite=False)


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ""])
def test_a_run_name_that_is_not_one_folder_is_refused(name):
    with pytest.raises(ConfigError, match="must name one folder inside saved_models"):
        RunFolder.location(None, name)


def test_odd_characters_in_the_folder_name_work(tmp_path):
    path = tmp_path / "run with spaces, ünïcode & $HOME -- 'quotes'"
    folder = RunFolder.prepare(str(path), "n", overwrite=False)
    folder.mark("finished")
    assert json.loads((path / MARKER).read_text())["status"] == "finished"


def test_an_unreadable_marker_is_not_overwritten_silently(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / MARKER).write_text("{not json")
    (tmp_path / "run" / "model.keras").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="cannot be read"):
        RunFolder.prepare(str(tmp_path / "run"), "n", overwrite=False)
    assert (tmp_path / "run" / "model.keras").read_bytes() == b"precious"
    RunFolder.prepare(str(tmp_path / "run"), "n", overwrite=True).mark("finished")
    assert not (tmp_path / "run" / "model.keras").exists()


# --------------------------------------------------------------------------- overwrite and leftovers


def test_overwrite_removes_every_artifact_of_the_old_run(tmp_path):
    _finished_run(tmp_path / "run")
    folder = RunFolder.prepare(str(tmp_path / "run"), "n", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([LOCK, MARKER])
    assert json.loads((tmp_path / "run" / MARKER).read_text())["status"] == "running"
    folder.mark("finished")


def test_overwrite_keeps_what_was_in_the_folder_before_the_first_run(tmp_path):
    run = tmp_path / "project"
    (run / "data").mkdir(parents=True)  # the user's own folder, chosen as output_dir
    (run / "data" / ".tmp-mine.csv").write_text("the user's")
    (run / "notes.txt").write_text("the user's")
    folder = RunFolder.prepare(str(run), "n", overwrite=False)
    (run / "model.tflite").write_bytes(b"run 1")
    (run / "report").mkdir()
    folder.mark("finished")
    assert json.loads((run / MARKER).read_text())["written"] == ["model.tflite", "report"]
    RunFolder.prepare(str(run), "n", overwrite=True).mark("finished")
    assert sorted(p.name for p in run.iterdir()) == sorted(["data", "notes.txt", LOCK, MARKER])
    assert (run / "data" / ".tmp-mine.csv").read_text() == "the user's"


def test_a_clear_stopped_half_way_is_finished_by_the_next_run(tmp_path):
    _finished_run(tmp_path / "run")
    write_json(tmp_path / "run" / MARKER, {"status": "clearing"})  # killed while clearing
    (tmp_path / "run" / ".old-1234abcd").mkdir()
    (tmp_path / "run" / ".old-1234abcd" / "saved_model.pb").write_bytes(b"old")
    RunFolder.prepare(str(tmp_path / "run"), "n", overwrite=False).mark("finished")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted([LOCK, MARKER])


def test_temporaries_of_a_killed_run_are_removed_when_it_resumes(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    write_json(run / MARKER, {"status": "running"})  # killed
    (run / ".tmp-0badf00d-model.tflite").write_bytes(b"half")
    (run / ".tmp-0badf00d-savedmodel").mkdir()
    (run / "checkpoints" / ".tmp-deadbeef-last.weights.h5").write_bytes(b"half")
    (run / "checkpoints" / "best.weights.h5").write_bytes(b"kept")
    RunFolder.prepare(str(run), "n", overwrite=False).mark("finished")
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == sorted(["checkpoints", "checkpoints/best.weights.h5", LOCK, MARKER])


def test_write_json_writes_through_a_unique_temporary_name(tmp_path, monkeypatch):
    renamed = []
    real_replace = os.replace

    def spy(src, dst):
        renamed.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    for i in range(3):
        write_json(tmp_path / "state.json", {"i": i})
    assert len(set(renamed)) == 3 and all(n.startswith(".tmp-") for n in renamed)
    assert json.loads((tmp_path / "state.json").read_text()) == {"i": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


@pytest.mark.slow
def test_a_real_rerun_with_overwrite_leaves_only_the_new_run(tmp_path):
    common = {
        "model": "mlp",
        "train": {"epochs": 1, "verbose": 0},
        "report": {"explain": "none"},
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
    }
    kerastrain.fit_pipeline("iris", export={"formats": ["savedmodel", "tflite"]}, **common)
    (tmp_path / "run" / ".tmp-0badf00d-report.html").write_text("stale")
    kerastrain.fit_pipeline("iris", export={"formats": ["keras"]}, overwrite=True, **common)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert "model.keras" in names
    assert not names & {"savedmodel", "model.tflite"}
    assert not [n for n in names if n.startswith((".tmp-", ".old-"))]


# --------------------------------------------------------------------------- two runs at once

HOLDER = textwrap.dedent(
    """
    import sys, time
    from kerastrain.runs import RunFolder
    RunFolder.prepare(sys.argv[1], "n", overwrite=False)
    print("locked", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.subprocess
def test_a_second_live_run_is_refused_and_a_killed_ones_folder_resumes(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"Another kerastrain run \(PID {holder.pid}\)"):
            RunFolder.prepare(str(run), "n", overwrite=True)
        assert json.loads((run / MARKER).read_text())["status"] == "running"  # untouched
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    folder = RunFolder.prepare(str(run), "n", overwrite=False)  # the lock died with it
    assert (run / LOCK).read_text().strip() == str(os.getpid())
    folder.mark("failed")


@pytest.mark.subprocess
def test_the_cli_names_the_live_run_that_holds_the_folder(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "kerastrain.cli", "run", str(_config(tmp_path, run))],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"(PID {holder.pid})" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 100


def test_a_finished_run_releases_its_lock(tmp_path):
    RunFolder.prepare(str(tmp_path / "run"), "n", overwrite=False).mark("finished")
    RunFolder.prepare(str(tmp_path / "run"), "n", overwrite=True).mark("failed")


# --------------------------------------------------------------------------- CLI messages


def test_cli_errors_never_break_a_hyphenated_path(tmp_path, capsys):
    run = tmp_path / "my-long-project-name" / "experiment-2026-12-03-learning-rate-sweep-run-a"
    _finished_run(run)  # refused without --overwrite: the message quotes the path
    assert len(str(run)) > 100  # longer than a line: the old wrap split it at a hyphen
    assert main(["run", str(_config(tmp_path, run))]) == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    paragraph = err[err.index("kerastrain: ConfigError") :].splitlines()
    assert "holds a finished run" in " ".join(paragraph)
    assert any(str(run) in line for line in paragraph)
    assert all(len(line) <= 100 or str(run) in line for line in paragraph)


def test_the_tune_command_refuses_an_output_dir_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("x")
    config = _config(
        tmp_path, target, tune={"max_trials": 2, "space": {"learning_rate": [0.01, 0.1]}}
    )
    assert main(["tune", str(config)]) == 2
    assert "is an existing file" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("command", ["demo", "launch"])
def test_demo_and_launch_refuse_a_file_as_output_dir(tmp_path, capsys, command):
    target = tmp_path / "model.tflite"
    target.write_bytes(b"keep")
    argv = (
        ["demo", "--output-dir", str(target)]
        if command == "demo"
        else ["launch", str(_config(tmp_path, target)), "--workers", "2"]
    )
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())  # the paragraph is wrapped
    assert "is an existing file" in err and "Traceback" not in err
    assert target.read_bytes() == b"keep"
