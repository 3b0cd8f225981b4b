"""Progress lines with the time left (`kerastrain.logs.Progress`): the
arithmetic, the rate limit, and each site that logs them on a real run
(the 2-trial search and the cross-validation runs of test_tune.py and
test_cv.py assert their lines too)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kerastrain.logs import Progress, duration, time_left

logger = logging.getLogger("kerastrain.test_progress")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_left_is_the_mean_step_times_the_steps_to_go():
    assert time_left(30.0, 3, 10) == pytest.approx(70.0)
    assert time_left(12.0, 4, 4) == 0.0
    assert time_left(5.0, 0, 10) is None  # no step ended yet: no pace
    # A resumed loop: the 4 steps of earlier processes are not in this one's 20 s.
    assert time_left(20.0, 6, 10, done_before=4) == pytest.approx(40.0)
    assert time_left(20.0, 4, 10, done_before=4) is None
    assert time_left(10.0, 12, 10) == 0.0  # more done than the estimate: nothing left


def test_duration_in_words():
    assert duration(4.24) == "4.2 s"
    assert duration(38.4) == "38 s"
    assert duration(185) == "3 min 5 s"
    assert duration(7620) == "2 h 7 min"


def test_a_line_per_step_with_the_pace_so_far(caplog):
    clock = Clock()
    progress = Progress(logger, "Trial", 4, every=0, clock=clock)
    caplog.set_level(logging.INFO, logger=logger.name)
    clock.now += 10
    assert progress.update(1, "val_loss=0.5")
    clock.now += 20
    assert progress.update(2, "val_loss=0.4", position="3")  # trials may end out of order
    clock.now += 30
    assert progress.update(4)  # every=0: the last step too
    assert [r.getMessage() for r in caplog.records] == [
        "Trial 1/4: val_loss=0.5; 10 s elapsed, about 30 s left.",
        "Trial 3/4: val_loss=0.4; 30 s elapsed, about 30 s left.",
        "Trial 4/4; 1 min 0 s elapsed, about 0.0 s left.",
    ]


def test_many_short_steps_log_at_most_every_few_seconds_and_not_the_last(caplog):
    clock = Clock()
    progress = Progress(logger, "Verifying tflite: batch", 100, every=5.0, clock=clock)
    caplog.set_level(logging.INFO, logger=logger.name)
    logged = []
    for done in range(1, 101):
        clock.now += 0.5  # 0.5 s a batch: a line every 10 batches
        logged.append(progress.update(done))
    assert [i + 1 for i, said in enumerate(logged) if said] == [10, 20, 30, 40, 50, 60, 70, 80, 90]
    first = caplog.records[0].getMessage()
    assert first == "Verifying tflite: batch 10/100; 5.0 s elapsed, about 45 s left."


def test_a_unit_shows_the_share_done_and_an_estimate_is_marked():
    clock = Clock()
    rows = Progress(logger, "Predicting 'x.csv':", 2000, unit="rows", clock=clock)
    clock.now += 8
    assert (
        rows.line(500) == "Predicting 'x.csv': 500/2000 rows (25%); 8.0 s elapsed, about 24 s left."
    )
    trials = Progress(logger, "Trial", 30, approximate=True, every=0, clock=clock)
    assert trials.line(0) == "Trial 0/~30; 0.0 s elapsed."


@pytest.mark.slow
def test_export_verification_logs_batches_done_of_the_total(caplog, tmp_path, monkeypatch):
    from kerastrain._keras import keras
    from kerastrain.export import verify
    from kerastrain.task import Task

    monkeypatch.setattr(verify, "VERIFY_BATCH", 8)
    monkeypatch.setattr("kerastrain.logs.PROGRESS_SECONDS", 1e-9)  # each batch but the last
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.save(tmp_path / "model.keras")
    reference = model.predict(x, verbose=0)
    caplog.set_level(logging.INFO, logger="kerastrain")
    verify.verify_artifacts(
        reference, {"keras": tmp_path / "model.keras"}, x, y, Task("multiclass", 2), atol=1e-5
    )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Verifying keras")]
    assert [line.split(";")[0] for line in lines] == [
        f"Verifying keras: batch {i}/5" for i in (1, 2, 3, 4)
    ]
    assert all("left." in line for line in lines)
