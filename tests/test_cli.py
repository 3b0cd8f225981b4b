"""The kerastrain command line."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
import yaml

from kerastrain.cli import main


@pytest.mark.slow
def test_run_trains_from_a_yaml_file(tmp_path, capsys):
    config = tmp_path / "iris.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": "iris",
                "model": "mlp",
                "train": {"epochs": 20, "learning_rate": 0.01, "verbose": 0},
                "export": {"formats": ["tflite"]},
                "seed": 0,
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    kerastrain_logger = logging.getLogger("kerastrain")
    handlers = list(kerastrain_logger.handlers)
    assert main(["run", str(config)]) == 0
    captured = capsys.readouterr()
    # The command logged to stderr while it ran, and put logging back after.
    assert "kerastrain.pipeline: Stage train done" in captured.err
    assert kerastrain_logger.handlers == handlers and kerastrain_logger.propagate
    out = captured.out
    assert f"Run folder: {tmp_path / 'run'}" in out
    assert "Test accuracy (Keras model):" in out and "Test accuracy (tflite model):" in out
    assert (tmp_path / "run" / "model.tflite").exists()
    # The same folder again is refused: a finished run is kept.
    assert main(["run", str(config)]) == 2
    assert "holds a finished run" in " ".join(capsys.readouterr().err.split())


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kerastrain.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_bad_yaml_exits_2_with_one_paragraph_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n  optimiser: adam\n")
    done = _cli("run", str(bad))
    assert done.returncode == 2
    assert "ConfigError: Unknown option 'train.optimiser'" in done.stderr
    assert "Did you mean 'optimizer'?" in done.stderr
    assert "Traceback" not in done.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: 3\n")
    done = _cli("run", str(broken))
    # The paragraph wraps at spaces wherever the path's length puts them.
    assert done.returncode == 2 and "not valid YAML at line" in " ".join(done.stderr.split())


def test_help_lists_the_commands():
    done = _cli("--help")
    assert done.returncode == 0 and "run" in done.stdout and "demo" in done.stdout
