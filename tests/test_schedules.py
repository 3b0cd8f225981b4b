"""Learning-rate schedules: closed-form values, config round trips, save and reload."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kerastrain import ConfigError
from kerastrain._keras import keras
from kerastrain.callbacks import Scaled
from kerastrain.config import TrainConfig
from kerastrain.config.train import SCHEDULES
from kerastrain.task import Task
from kerastrain.training import compile_model, schedules
from kerastrain.training.optimizers import make_learning_rate

PEAK = 0.1
STEPS_PER_EPOCH = 10  # 10 epochs -> 100 steps


def lr_of(train: dict, steps: list[int]) -> list[float]:
    lr = make_learning_rate(TrainConfig(epochs=10, learning_rate=PEAK, **train), STEPS_PER_EPOCH)
    return [schedules.value_at(lr, s) for s in steps]


def cosine(fraction: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * fraction))


# (train options, steps, closed-form values at those steps)
CASES = {
    "constant": ({}, [0, 50, 99], [PEAK] * 3),
    "step": (
        {"schedule": "step", "schedule_options": {"step_size": 3, "gamma": 0.5}},
        [29, 30, 65],
        [PEAK, PEAK / 2, PEAK / 4],
    ),
    "step_default": (
        {"schedule": "step"},  # a third of 10 epochs: 33 steps
        [32, 33, 66],
        [PEAK, PEAK * 0.1, PEAK * 0.01],
    ),
    "multistep_default": (
        {"schedule": "multistep"},  # at 50% and 75% (steps 50, 75), gamma 0.1
        [10, 49, 50, 74, 75, 90],
        [PEAK, PEAK, PEAK * 0.1, PEAK * 0.1, PEAK * 0.01, PEAK * 0.01],
    ),
    "multistep_values": (
        {
            "schedule": "multistep",
            "schedule_options": {"boundaries": [2, 4], "values": [0.3, 0.2, 0.05]},
        },
        [5, 25, 45],
        [0.3, 0.2, 0.05],
    ),
    "exponential": (
        {"schedule": "exponential", "schedule_options": {"decay_epochs": 2, "decay_rate": 0.5}},
        [0, 30, 40],
        [PEAK, PEAK * 0.5**1.5, PEAK * 0.25],
    ),
    "exponential_staircase": (
        {
            "schedule": "exponential",
            "schedule_options": {"decay_epochs": 2, "decay_rate": 0.5, "staircase": True},
        },
        [39, 40],
        [PEAK / 2, PEAK / 4],
    ),
    "polynomial": (
        {"schedule": "polynomial", "schedule_options": {"power": 2.0}},
        [0, 50, 100, 150],
        [PEAK, PEAK * 0.25, 0.0, 0.0],
    ),
    "cosine": ({"schedule": "cosine"}, [0, 25, 100], [PEAK, PEAK * cosine(0.25), 0.0]),
    "cosine_alpha": (
        {"schedule": "cosine", "schedule_options": {"alpha": 0.1}},
        [50, 100],
        [PEAK * (0.9 * 0.5 + 0.1), PEAK * 0.1],
    ),
    # first period: 10 epochs / (1 + 2 + 4) = 1.43 epochs -> 14 steps, then 28.
    "cosine_restarts": (
        {"schedule": "cosine_restarts"},
        [7, 15, 28, 43],
        [PEAK * 0.5, PEAK * cosine(1 / 28), PEAK * 0.5, PEAK * cosine(1 / 56)],
    ),
    # PyTorch's OneCycleLR: the peak at step 0.3 * 100 - 1, the end at the last update.
    "onecycle": (
        {"schedule": "onecycle"},
        [0, 29, 64, 99, 150],
        [
            PEAK / 25,
            PEAK,
            PEAK / 25 / 1e4 + (PEAK - PEAK / 25 / 1e4) * 0.5,
            PEAK / 25 / 1e4,
            PEAK / 25 / 1e4,
        ],
    ),
    "inverse_sqrt": (
        {"schedule": "inverse_sqrt", "warmup": {"epochs": 1}},  # timescale = warmup
        [5, 10, 40],
        [PEAK / 2, PEAK, PEAK / 2],
    ),
    "warmup_cosine": (
        {"schedule": "cosine", "warmup": {"epochs": 2}},  # 20 steps, then 80
        [0, 10, 20, 60, 100],
        [0.0, PEAK / 2, PEAK, PEAK * 0.5, 0.0],
    ),
    "warmup_from": (
        {"warmup": {"steps": 10, "start_learning_rate": 0.02}},
        [0, 5, 10, 70],
        [0.02, 0.06, PEAK, PEAK],
    ),
    "warmup_exponential": (
        {
            "schedule": "cosine",
            "warmup": {"epochs": 2, "method": "exponential", "start_learning_rate": 0.001},
        },
        [0, 10, 20],
        [0.001, 0.001 * 100**0.5, PEAK],
    ),
    "plateau": ({"schedule": "plateau"}, [0, 99], [PEAK, PEAK]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_values_match_closed_form(name):
    train, steps, expected = CASES[name]
    np.testing.assert_allclose(lr_of(train, steps), expected, rtol=1e-5, atol=1e-9)


def test_schedule_classes_closed_form():
    step = schedules.StepDecay(1.0, step_size=4, gamma=0.5)
    assert [schedules.value_at(step, s) for s in (3, 4, 8, 11)] == pytest.approx(
        [1, 0.5, 0.25, 0.25]
    )
    inv = schedules.InverseSquareRoot(2.0, timescale=5)
    assert schedules.value_at(inv, 15) == pytest.approx(1.0)
    cycle = schedules.OneCycle(
        1.0, total_steps=10, pct_start=0.5, div_factor=10, final_div_factor=10
    )
    assert [schedules.value_at(cycle, s) for s in (0, 2, 4, 9, 20)] == pytest.approx(
        [0.1, 0.55, 1, 0.01, 0.01]
    )
    scaled = Scaled(step, scale=0.5)
    assert schedules.value_at(scaled, 4) == pytest.approx(0.25)
    scaled.scale.assign(0.1)
    assert schedules.value_at(scaled, 4) == pytest.approx(0.05)
    # Warmup's schedule sees the steps after warmup: step 0 when warmup ends.
    warm = schedules.Warmup(step, warmup_steps=10)
    assert [schedules.value_at(warm, s) for s in (0, 5, 10, 13, 14)] == pytest.approx(
        [0, 0.5, 1, 1, 0.5]
    )


@pytest.mark.parametrize(
    "bad",
    [
        lambda: schedules.StepDecay(0.1, step_size=0),
        lambda: schedules.OneCycle(0.1, total_steps=10, pct_start=1.0),
        lambda: schedules.InverseSquareRoot(0.1, timescale=-1),
        lambda: schedules.Warmup(0.1, warmup_steps=5, method="cubic"),
        lambda: schedules.Warmup(
            0.1, warmup_steps=5, warmup_learning_rate=0.0, method="exponential"
        ),
    ],
)
def test_bad_schedule_arguments_name_the_argument(bad):
    with pytest.raises(ConfigError, match=r"Argument `\w+` must"):
        bad()


#: Every schedule built as a schedule object (plateau sets the rate itself): the
#: config's names, so that a schedule added there without a builder fails here.
ALL = [name for name in SCHEDULES if name != "plateau"]


@pytest.mark.parametrize("name", ALL)
def test_get_config_round_trip(name):
    lr = make_learning_rate(
        TrainConfig(epochs=10, learning_rate=PEAK, schedule=name, warmup={"epochs": 1}),
        STEPS_PER_EPOCH,
    )
    lr = Scaled(lr, scale=0.5)
    config = keras.optimizers.schedules.serialize(lr)
    again = keras.optimizers.schedules.deserialize(config)
    assert type(again) is Scaled and type(again.schedule) is schedules.Warmup
    assert keras.optimizers.schedules.serialize(again) == config
    steps = [0, 5, 10, 37, 64, 99]
    np.testing.assert_allclose(
        [schedules.value_at(again, s) for s in steps],
        [schedules.value_at(lr, s) for s in steps],
        rtol=1e-6,
    )


def test_models_with_each_schedule_save_and_reload(tmp_path):
    task = Task("multiclass", 3)
    for name in ALL + ["plateau"]:
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
        train = TrainConfig(
            epochs=10,
            learning_rate=PEAK,
            schedule=name,
            warmup={"epochs": 0 if name == "plateau" else 1},
        )
        compile_model(model, task, train, steps_per_epoch=STEPS_PER_EPOCH)
        model.optimizer.build(model.trainable_variables)
        model.optimizer.iterations.assign(37)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # compile=True: the schedule is rebuilt
        original, reloaded = model.optimizer.get_config(), loaded.optimizer.get_config()
        assert reloaded["learning_rate"] == original["learning_rate"], name
        assert int(loaded.optimizer.iterations) == 37
        lr = loaded.optimizer._learning_rate  # the schedule object itself
        assert schedules.value_at(lr, 37) == pytest.approx(
            schedules.value_at(model.optimizer._learning_rate, 37), rel=1e-6
        )
        for a, b in zip(loaded.get_weights(), model.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_plateau_refused_with_a_schedule_object():
    cosine_object = keras.optimizers.schedules.CosineDecay(0.1, 100)
    with pytest.raises(ConfigError, match="plateau.*cannot be combined with a schedule object"):
        TrainConfig(schedule="plateau", learning_rate=cosine_object)
    with pytest.raises(ConfigError, match="plateau.*warmup was asked for"):
        TrainConfig(schedule="plateau", warmup={"epochs": 1})
    with pytest.raises(ConfigError, match="already is the schedule"):
        TrainConfig(schedule="cosine", learning_rate=cosine_object)
    # A schedule object with the default 'constant' schedule is used as is.
    lr = make_learning_rate(TrainConfig(learning_rate=cosine_object))
    assert lr is cosine_object


def test_schedule_options_are_checked_by_schedule():
    with pytest.raises(
        ConfigError,
        match=r"'train.schedule_options.gama' for schedule 'step'.*"
        r"Did you mean 'gamma'",
    ):
        TrainConfig(schedule="step", schedule_options={"gama": 0.5})
    with pytest.raises(
        ConfigError, match="'train.schedule_options.decay_epochs' option must be > 0"
    ):
        TrainConfig(schedule="cosine", schedule_options={"decay_epochs": 0})
    with pytest.raises(ConfigError, match="3 learning rates"):
        TrainConfig(schedule="multistep", schedule_options={"boundaries": [2, 4], "values": [1.0]})
    with pytest.raises(ConfigError, match=r"warmup\.epochs.*< train.epochs"):
        TrainConfig(epochs=3, warmup={"epochs": 3})
    with pytest.raises(ConfigError, match="needs the number of steps per epoch"):
        make_learning_rate(TrainConfig(schedule="cosine"))
