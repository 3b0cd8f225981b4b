"""Searches across processes: a killed search resumes; a chief serves two workers."""

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
    path.write_text(yaml.safe_dump({
        "data": "iris", "model": "mlp", "seed": 0,
        "data_options": {"validation_split": 0.25, "test_split": 0.0},
        "train": {"epochs": epochs, "verbose": 0, "early_stopping": None, "batch_size": 56},
        "tune": {"directory": str(tmp_path / "search"), "max_trials": max_trials,
                 "space": {"learning_rate": {"type": "float", "min": 1e-3, "max": 0.3,
                                             "log": True},
                           "width": [4, 8, 16, 32]}}}))
    return path


def records(search: Path) -> dict[str, dict]:
    out = {}
    for path in (search / "trials").glob("trial_*/kerastrain.json"):
        record = json.loads(path.read_text())
        out[record["trial"]] = record
    return out


def completed(search: Path) -> dict[str, dict]:
    return {k: r for k, r in records(search).items() if r["status"] == "COMPLETED"}


@pytest.mark.subprocess
def test_killed_search_resumes_without_repeating_completed_trials(tmp_path):
    config = write_config(tmp_path, max_trials=8, epochs=2)
    search = tmp_path / "search"
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "first.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "kerastrain.cli", "tune", str(config)],
                                   env=env, stdout=handle, stderr=subprocess.STDOUT)
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
    assert 2 <= len(before) < 8

    assert cli.main(["tune", str(config)]) == 0  # the same command again, in this process

    after = records(search)
    assert sorted(after) == [str(i) for i in range(8)]
    assert all(r["status"] == "COMPLETED" for r in after.values())
    for trial_id, record in before.items():
        assert after[trial_id]["started"] == record["started"], f"trial {trial_id} ran again"
    assert len({json.dumps(r["values"], sort_keys=True) for r in after.values()}) == 8
    with open(search / "tuning_results.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 8

    # A different space on the same folder is refused, not silently mixed in.
    changed = yaml.safe_load(config.read_text())
    changed["tune"]["space"]["width"] = [4, 64]
    config.write_text(yaml.safe_dump(changed))
    assert cli.main(["tune", str(config)]) == 2


@pytest.mark.subprocess
def test_chief_and_two_workers_complete_every_trial_once(tmp_path, capsys):
    config = write_config(tmp_path, max_trials=4, epochs=1)
    search = tmp_path / "search"

    assert cli.main(["tune", "--workers", "2", str(config)]) == 0

    assert "Best val_loss" in capsys.readouterr().out
    done = records(search)
    assert sorted(done) == ["0", "1", "2", "3"]
    assert all(r["status"] == "COMPLETED" for r in done.values())
    assert {r["tuner"] for r in done.values()} <= {"tuner1", "tuner2"}
    assert len({json.dumps(r["values"], sort_keys=True) for r in done.values()}) == 4
    started = []
    for worker in ("tuner1", "tuner2"):
        text = (search / "workers" / f"{worker}.log").read_text()
        assert "the chief ended the search" in text, text[-3000:]
        started += re.findall(r"Trial (\d+) of 4: ", text)
    assert sorted(started) == ["1", "2", "3", "4"]  # each trial started exactly once
    with open(search / "tuning_results.csv") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["COMPLETED"] * 4
