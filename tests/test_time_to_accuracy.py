"""Time to accuracy (issue 18): `train.batch_size="auto"`, the default
schedule, and the accuracy milestones a run reports."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.config import TrainConfig, load_config
from kerastrain.config.train import resolve_schedule
from kerastrain.training.batch_size import (
    BASE_BATCH_SIZE,
    MAX_BATCH_SIZE,
    batch_size_cap,
    scaled_learning_rate,
    sweep_batch_size,
)
from kerastrain.training.milestones import accuracy_milestones

#: The auto batch's test accuracy on the digits may be this far below batch 32's.
AUTO_BATCH_TOLERANCE = 0.03


# --------------------------------------------------------------------------- batch_size="auto"
@pytest.mark.parametrize("rows", [1, 7, 31, 32, 33, 100, 1257, 1600, 5000, 140_000, 10**7])
@pytest.mark.parametrize("replicas", [1, 2])
def test_auto_batch_cap_never_exceeds_the_training_split(rows, replicas):
    cap, why = batch_size_cap(rows, replicas)
    assert 1 <= cap <= max(1, rows // replicas)
    assert cap <= MAX_BATCH_SIZE
    assert why


@pytest.mark.parametrize("cap", [5, 32, 100, 300, 4096])
def test_the_sweep_never_chooses_past_its_cap(cap):
    # Throughput rising forever: only the cap stops the sweep.
    chosen, measured, stop = sweep_batch_size(lambda b: (b * 1000.0, 1e-4), cap)
    assert chosen <= cap
    assert all(b <= cap for b, _ in measured)
    assert "cap" in stop


def test_the_sweep_keeps_the_last_batch_that_raised_throughput():
    # examples/s saturate at 256: 512 gives no more, so 256 is kept.
    chosen, measured, stop = sweep_batch_size(lambda b: (min(b, 256) * 100.0, 1e-4), 4096)
    assert chosen == 256
    assert [b for b, _ in measured] == [32, 64, 128, 256, 512]
    assert dict(measured)[256] == 25600.0
    assert "512" in stop


def test_the_learning_rate_scales_with_the_square_root_of_the_batch():
    lr, reason = scaled_learning_rate(1e-3, 128)
    assert lr == pytest.approx(2e-3)
    assert "sqrt(128/32)" in reason
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
    assert scaled_learning_rate(schedule, 128)[0] is schedule
    assert scaled_learning_rate("find", 128)[0] == "find"


def test_an_unresolved_auto_batch_has_no_number_yet():
    cfg = load_config(None, train={"batch_size": "auto"})
    assert cfg.train.batch_size == "auto" and cfg.data_options.batch_size == "auto"
    with pytest.raises(ConfigError, match="batch_size='auto'"):
        cfg.batch_size  # noqa: B018
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_config(None, train={"batch_size": "large"})


def _tiled_digits(copies: int) -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    x = np.concatenate([bunch.data] * copies).astype(np.float32)
    return x, np.concatenate([bunch.target] * copies).astype(np.int64)


def _fit(data, tmp_path, name, **train):
    return kerastrain.fit_pipeline(
        data,
        "mlp",
        model_options={"width": 32, "depth": 1},
        train={"epochs": 3, "verbose": 0, "early_stopping": None, **train},
        export={"formats": []},
        report={"explain": "none"},
        output_dir=tmp_path / name,
        seed=3,
    )


@pytest.mark.slow
def test_auto_batch_is_recorded_and_reaches_batch_32_accuracy_on_digits(tmp_path):
    data = _tiled_digits(3)  # 5,391 rows: 3,773 in training, room for a batch above 32
    auto = _fit(data, tmp_path, "auto", batch_size="auto")
    decision = auto.performance["batch_size"]
    train_rows = round(len(data[0]) * 0.7)
    assert isinstance(auto.config.train.batch_size, int)
    assert auto.config.train.batch_size == decision.value
    assert BASE_BATCH_SIZE <= decision.value <= train_rows
    assert "examples/s by batch" in decision.reason and "scaled" in decision.reason
    assert auto.config.data_options.batch_size == decision.value
    assert "batch_size" in auto.report_path.read_text()
    fixed = _fit(data, tmp_path, "fixed", batch_size=32)
    assert "batch_size" not in fixed.performance  # an explicit batch is never swept
    assert fixed.config.train.batch_size == 32
    assert fixed.config.train.learning_rate == pytest.approx(1e-3)
    gap = fixed.metrics["test"]["accuracy"] - auto.metrics["test"]["accuracy"]
    assert gap <= AUTO_BATCH_TOLERANCE, (decision, gap)


# --------------------------------------------------------------------------- the default schedule
def test_the_auto_schedule_is_recorded_in_the_resolved_config():
    assert load_config(None).train.schedule == "constant"  # the default: "auto" is asked for
    cfg = load_config(None, train={"epochs": 10, "schedule": "auto"})
    assert cfg.train.schedule == "cosine"
    assert cfg.train.warmup.epochs == pytest.approx(0.5)
    assert cfg.to_dict()["train"]["schedule"] == "cosine"
    # The recorded config repeats the same run.
    assert load_config(cfg.to_dict()).train == cfg.train


@pytest.mark.parametrize("schedule", ["constant", "step", "onecycle", "plateau"])
def test_an_explicit_schedule_is_never_replaced(schedule):
    cfg = load_config(None, train={"schedule": schedule})
    assert cfg.train.schedule == schedule
    assert cfg.train.warmup.epochs == 0.0


def test_a_given_warmup_is_kept_by_the_auto_schedule():
    cfg = load_config(None, train={"schedule": "auto", "warmup": {"epochs": 2}})
    assert (cfg.train.schedule, cfg.train.warmup.epochs) == ("cosine", 2.0)


def test_a_schedule_object_makes_the_auto_schedule_constant():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
    train = resolve_schedule(TrainConfig(learning_rate=schedule, schedule="auto"))
    assert train.schedule == "constant" and train.learning_rate is schedule


def test_an_unresolved_auto_schedule_trains_as_constant():
    from kerastrain.training.optimizers import make_learning_rate

    assert make_learning_rate(TrainConfig(learning_rate=0.01, schedule="auto")) == 0.01


# --------------------------------------------------------------------------- milestones
def test_milestones_are_the_first_crossings_against_the_epochs_time():
    history = {
        "epoch_time": [1.0, 2.0, 3.0, 4.0],
        "val_accuracy": [0.6, 0.85, 0.84, 0.96],
    }
    decision = accuracy_milestones(history)
    assert decision.value == {
        0.5: {"seconds": 1.0, "epoch": 1},
        0.8: {"seconds": 3.0, "epoch": 2},
        0.9: {"seconds": 10.0, "epoch": 4},
        0.95: {"seconds": 10.0, "epoch": 4},
    }
    assert "validation accuracy" in decision.reason
    assert accuracy_milestones({"epoch_time": [1.0], "loss": [0.3]}) is None


@pytest.mark.slow
def test_a_run_reports_its_milestones(tmp_path):
    result = _fit(_tiled_digits(1), tmp_path, "run", epochs=3, learning_rate=0.01)
    milestones = result.performance["milestones"]
    assert 0.5 in milestones.value  # the digits pass 0.5 within three epochs
    assert all(m["epoch"] <= 3 for m in milestones.value.values())
    assert "first reached" in result.report_path.read_text()
