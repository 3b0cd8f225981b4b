"""Searches across processes: a killed search resumes on a chief serving two workers."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kerastrain import cli

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, max_trials: int, epochs: int) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": "iris",
                "model": "mlp",
                "seed": 0,
                "data_options": {"validation_split": 0.25, "test_split": 0.0},
                "train": {
                    "epochs": epochs,
                    "verbose": 0,
                    "early_stopping": None,
                    "batch_size": 56,
                    "execution": {"steps_per_execution": 1, "jit_compile": False},
                },
                "tune": {
                    "directory": str(tmp_path / "search"),
                    "max_trials": max_trials,
                    "space": {
                        "learning_rate": {"type": "float", "min": 1e-3, "max": 0.3, "log": True},
                        "width": [4, 8, 16, 32],
                    },
                },
            }
        )
    )
    return path


def records(search: Path) -> dict[str, dict]:
    out = {}
    for path in (search / "trials").glob("trial_*/kerastrain.json"):
        record = json.loads(path.read_text())
        out[record["trial"]] = record
    return out


def completed(search: Path) -> dict[str, dict]:
    """kerastrain's records of the trials KerasTuner has recorded as completed."""
    done = {}
    for path in (search / "trials").glob("trial_*/trial.json"):
        try:
            state = json.loads(path.read_text())
        except ValueError:  # being replaced this very moment
            continue
        if state["status"] == "COMPLETED":
            done[state["trial_id"]] = json.loads((path.parent / "kerastrain.json").read_text())
    return done


@pytest.mark.subprocess
def test_killed_search_resumes_on_a_chief_and_two_workers(tmp_path, capsys):
    """A search killed with SIGKILL is rerun (same command, same folder) by a chief
    serving two worker processes: every trial completes once, none is repeated."""
    config = write_config(tmp_path, max_trials=6, epochs=1)
    search = tmp_path / "search"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = tmp_path / "first.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "kerastrain.cli", "tune", str(config)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while len(completed(search)) < 2:
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the search made no progress"
            time.sleep(0.1)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    before = completed(search)
    assert 2 <= len(before) < 6

    assert cli.main(["tune", "--workers", "2", str(config)]) == 0  # this process is the chief

    assert "Best val_loss" in capsys.readouterr().out
    after = records(search)
    assert sorted(after, key=int) == [str(i) for i in range(6)]
    assert all(r["status"] == "COMPLETED" for r in after.values())
    for trial_id, record in before.items():
        assert after[trial_id]["started"] == record["started"], f"trial {trial_id} ran again"
    rest = sorted(set(after) - set(before), key=int)
    assert {after[t]["tuner"] for t in rest} <= {"tuner1", "tuner2"}
    assert len({json.dumps(r["values"], sort_keys=True) for r in after.values()}) == 6
    started = []
    for worker in ("tuner1", "tuner2"):
        text = (search / "workers" / f"{worker}.log").read_text()
        assert "the chief ended the search" in text, text[-3000:]
        started += re.findall(r"Trial (\d+) of 6: ", text)
    assert sorted(started, key=int) == [str(int(t) + 1) for t in rest]  # each exactly once
    with open(search / "tuning_results.csv") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["COMPLETED"] * 6

    # A different space on the same folder is refused, not silently mixed in.
    changed = yaml.safe_load(config.read_text())
    changed["tune"]["space"]["width"] = [4, 64]
    config.write_text(yaml.safe_dump(changed))
    assert cli.main(["tune", str(config)]) == 2
    assert "another search space" in " ".join(capsys.readouterr().err.split())  # wrapped
