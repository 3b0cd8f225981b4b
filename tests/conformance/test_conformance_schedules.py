"""Every schedule, at every update of a 100-step run and 50 steps past its end,
against a reference kerastrain did not write.

The schedules are built as a user builds them, from `TrainConfig` options in
epochs (10 epochs of 10 steps), and read with `schedules.value_at` at each
optimizer step `s` (the step the `s`-th update, counted from 0, uses). The
references are published formulas computed here with NumPy in float64:

- PyTorch's closed forms (`torch/optim/lr_scheduler.py`): `StepLR`,
  `MultiStepLR`, `CosineAnnealingLR`, `PolynomialLR`, `OneCycleLR` (two
  phases, ``anneal_strategy="cos"``), `CosineAnnealingWarmRestarts` (SGDR,
  Loshchilov & Hutter 2017);
- tf_keras's documented formulas (`ExponentialDecay`, `PolynomialDecay`,
  `CosineDecay`) and, for `step`, tf_keras's own `ExponentialDecay` with
  ``staircase=True``;
- the Transformer schedule ("Attention is all you need", section 5.3);
- Hugging Face's `get_constant_schedule_with_warmup`,
  `get_linear_schedule_with_warmup` and `get_cosine_schedule_with_warmup`;
- NumPy's `geomspace` for the exponential warmup.
"""

from __future__ import annotations

import bisect
import math

import numpy as np
import pytest

from kerastrain._keras import keras
from kerastrain.config import TrainConfig
from kerastrain.training import schedules
from kerastrain.training.optimizers import make_learning_rate

PEAK = 0.1
EPOCHS = 10
STEPS_PER_EPOCH = 10
TOTAL = EPOCHS * STEPS_PER_EPOCH  # 100 updates
STEPS = np.arange(TOTAL + 50)  # every update, then 50 steps past the end

#: Relative tolerance of every schedule against its reference. The schedules
#: run in float32 (relative resolution 6e-8); the issue's bar for one-cycle and
#: multistep is 1e-6 relative at every one of the 100 updates.
RTOL = 1e-6
#: Absolute slack for tf_keras's own float32 cosine formulas (cosine, restarts):
#: they compute `1 + cos(x)` near its zero and, with restarts, the place within
#: a period as `s / period - floor(s / period)`; both carry a few float32
#: roundings of a term the size of the peak (measured: 2.4e-7 * PEAK at step
#: 144), far below any rate that matters.
ATOL_TF_KERAS_FLOAT32 = 5e-7 * PEAK


def kerastrain_rates(steps: np.ndarray = STEPS, **train) -> np.ndarray:
    config = TrainConfig(epochs=EPOCHS, learning_rate=PEAK, **train)
    lr = make_learning_rate(config, STEPS_PER_EPOCH)
    return np.array([schedules.value_at(lr, int(s)) for s in steps])


# --------------------------------------------------------------------- references


def torch_step_lr(s, step_size, gamma):
    return PEAK * gamma ** (s // step_size)


def torch_multistep_lr(s, milestones, gamma):
    return PEAK * gamma ** bisect.bisect_right(milestones, s)


def torch_one_cycle_lr(s, total, max_lr=PEAK, pct_start=0.3, div_factor=25.0, final_div=1e4):
    """PyTorch's `OneCycleLR.get_lr` for one group, two phases, cosine annealing."""
    initial = max_lr / div_factor
    minimum = initial / final_div
    phases = [
        (float(pct_start * total) - 1, initial, max_lr),
        (total - 1, max_lr, minimum),
    ]

    def anneal_cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    start_step = 0.0
    for i, (end_step, start_lr, end_lr) in enumerate(phases):
        if s <= end_step or i == len(phases) - 1:
            return anneal_cos(start_lr, end_lr, (s - start_step) / (end_step - start_step))
        start_step = end_step
    raise AssertionError("unreachable")


def torch_cosine_annealing_lr(s, t_max, eta_min):
    return eta_min + (PEAK - eta_min) * (1 + math.cos(math.pi * s / t_max)) / 2


def sgdr(s, first, t_mul):
    """SGDR / PyTorch's `CosineAnnealingWarmRestarts`: T_cur within period T_i."""
    begin, period = 0, first
    while s >= begin + period:
        begin, period = begin + period, period * t_mul
    return PEAK * (1 + math.cos(math.pi * (s - begin) / period)) / 2


def transformer(s, warmup):
    """d_model**-0.5 * min(s**-0.5, s * warmup**-1.5), scaled to peak at PEAK."""
    return PEAK * min(s / warmup, math.sqrt(warmup / s)) if s > 0 else 0.0


def hf_constant_with_warmup(s, warmup):
    return PEAK * (s / max(1, warmup) if s < warmup else 1.0)


def hf_linear_with_warmup(s, warmup, total):
    if s < warmup:
        return PEAK * s / max(1, warmup)
    return PEAK * max(0.0, (total - s) / max(1, total - warmup))


def hf_cosine_with_warmup(s, warmup, total, num_cycles=0.5):
    if s < warmup:
        return PEAK * s / max(1, warmup)
    progress = (s - warmup) / max(1, total - warmup)
    return PEAK * max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def reference(fn, steps: np.ndarray = STEPS) -> np.ndarray:
    return np.array([fn(int(s)) for s in steps])


# (TrainConfig options, reference at step s, absolute slack)
CASES = {
    "constant": ({}, lambda s: PEAK, 0.0),
    "step": (
        {"schedule": "step", "schedule_options": {"step_size": 3, "gamma": 0.5}},
        lambda s: torch_step_lr(s, 30, 0.5),
        0.0,
    ),
    "step_default": (  # a third of the 10 epochs: 33 steps
        {"schedule": "step"},
        lambda s: torch_step_lr(s, 33, 0.1),
        0.0,
    ),
    "multistep": (
        {"schedule": "multistep", "schedule_options": {"boundaries": [2, 4, 6, 8]}},
        lambda s: torch_multistep_lr(s, [20, 40, 60, 80], 0.1),
        0.0,
    ),
    "multistep_default": (  # at half and three quarters of the run
        {"schedule": "multistep"},
        lambda s: torch_multistep_lr(s, [50, 75], 0.1),
        0.0,
    ),
    "multistep_values": (
        {
            "schedule": "multistep",
            "schedule_options": {"boundaries": [2, 4.5], "values": [0.3, 0.2, 0.05]},
        },
        lambda s: [0.3, 0.2, 0.05][bisect.bisect_right([20, 45], s)],
        0.0,
    ),
    "exponential": (  # tf_keras: initial * decay_rate ** (step / decay_steps)
        {"schedule": "exponential", "schedule_options": {"decay_epochs": 2, "decay_rate": 0.5}},
        lambda s: PEAK * 0.5 ** (s / 20),
        0.0,
    ),
    "exponential_staircase": (
        {
            "schedule": "exponential",
            "schedule_options": {"decay_epochs": 2, "decay_rate": 0.5, "staircase": True},
        },
        lambda s: PEAK * 0.5 ** (s // 20),
        0.0,
    ),
    "polynomial": (  # tf_keras: (initial - end) * (1 - min(s, D) / D) ** power + end
        {
            "schedule": "polynomial",
            "schedule_options": {"power": 2.0, "end_learning_rate": 0.001},
        },
        lambda s: (PEAK - 0.001) * (1 - min(s, TOTAL) / TOTAL) ** 2 + 0.001,
        0.0,
    ),
    "cosine": (  # PyTorch CosineAnnealingLR, eta_min = alpha * peak; flat past the end
        {"schedule": "cosine", "schedule_options": {"alpha": 0.1}},
        lambda s: torch_cosine_annealing_lr(min(s, TOTAL), TOTAL, 0.1 * PEAK),
        ATOL_TF_KERAS_FLOAT32,
    ),
    # first period: 10 epochs / (1 + 2 + 4) = 1.43 epochs -> 14 steps, then 28, 56, 112.
    "cosine_restarts": (
        {"schedule": "cosine_restarts"},
        lambda s: sgdr(s, 14, 2),
        ATOL_TF_KERAS_FLOAT32,
    ),
    "cosine_restarts_t_mul_1": (
        {"schedule": "cosine_restarts", "schedule_options": {"first_decay_epochs": 3, "t_mul": 1}},
        lambda s: sgdr(s, 30, 1),
        ATOL_TF_KERAS_FLOAT32,
    ),
    # Past the cycle one-cycle stays at its end value (PyTorch refuses to step there).
    "onecycle": (
        {"schedule": "onecycle"},
        lambda s: torch_one_cycle_lr(min(s, TOTAL - 1), TOTAL),
        0.0,
    ),
    "onecycle_options": (
        {
            "schedule": "onecycle",
            "schedule_options": {
                "total_epochs": 7,
                "pct_start": 0.25,
                "div_factor": 10.0,
                "final_div_factor": 100.0,
            },
        },
        lambda s: torch_one_cycle_lr(min(s, 69), 70, PEAK, 0.25, 10.0, 100.0),
        0.0,
    ),
    "inverse_sqrt_warmup": (  # timescale defaults to the warmup: the Transformer's schedule
        {"schedule": "inverse_sqrt", "warmup": {"epochs": 1}},
        lambda s: transformer(s, 10),
        0.0,
    ),
    "inverse_sqrt": (  # without warmup: the Transformer's curve from its peak (step 20) on
        {"schedule": "inverse_sqrt", "schedule_options": {"timescale_epochs": 2}},
        lambda s: transformer(s + 20, 20),
        0.0,
    ),
    "warmup_constant": (
        {"warmup": {"steps": 10}},
        lambda s: hf_constant_with_warmup(s, 10),
        0.0,
    ),
    "warmup_linear": (
        {"schedule": "polynomial", "warmup": {"epochs": 2}},
        lambda s: hf_linear_with_warmup(s, 20, TOTAL),
        0.0,
    ),
    # HF's cosine rises again past num_training_steps; tf_keras's CosineDecay stays at 0.
    "warmup_cosine": (
        {"schedule": "cosine", "warmup": {"epochs": 2}},
        lambda s: hf_cosine_with_warmup(min(s, TOTAL), 20, TOTAL),
        ATOL_TF_KERAS_FLOAT32,
    ),
    "warmup_exponential": (
        {
            "schedule": "constant",
            "warmup": {"steps": 20, "method": "exponential", "start_learning_rate": 1e-4},
        },
        lambda s: np.geomspace(1e-4, PEAK, 21)[min(s, 20)],
        0.0,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_schedule_matches_its_reference_at_every_step(name):
    train, fn, atol = CASES[name]
    np.testing.assert_allclose(kerastrain_rates(**train), reference(fn), rtol=RTOL, atol=atol)


def test_onecycle_first_peak_and_last_update_are_pytorchs():
    # The numbers: PyTorch peaks at update 29 and uses 4e-7 at update 99.
    rates = kerastrain_rates(np.array([0, 28, 29, 30, 98, 99]), schedule="onecycle")
    assert rates[0] == pytest.approx(PEAK / 25, rel=RTOL)
    assert rates.argmax() == 2 and rates[2] == pytest.approx(PEAK, rel=RTOL)
    assert rates[-1] == pytest.approx(PEAK / 25 / 1e4, rel=RTOL)


def test_multistep_boundaries_equal_step_decay_at_every_step():
    multistep = kerastrain_rates(
        schedule="multistep", schedule_options={"boundaries": [2, 4, 6, 8]}
    )
    step = kerastrain_rates(schedule="step", schedule_options={"step_size": 2})
    run = slice(0, TOTAL)  # past the run, step keeps decaying every 2 epochs
    np.testing.assert_allclose(multistep[run], step[run], rtol=RTOL)
    assert multistep[60] == pytest.approx(PEAK * 1e-3, rel=RTOL)  # the step 60


def test_step_decay_equals_tf_keras_staircase_exponential_decay():
    ours = kerastrain_rates(schedule="step", schedule_options={"step_size": 3, "gamma": 0.5})
    keras_lr = keras.optimizers.schedules.ExponentialDecay(PEAK, 30, 0.5, staircase=True)
    np.testing.assert_allclose(ours, reference(lambda s: float(keras_lr(s))), rtol=RTOL)


def test_linear_warmup_from_zero_makes_the_first_update_use_rate_zero():
    # Documented: as the Transformer and Hugging Face schedules, not PyTorch's LinearLR
    # (whose default start factor is 1/3); warmup.start_learning_rate moves the start.
    assert kerastrain_rates(np.array([0, 1]), warmup={"steps": 10}).tolist() == pytest.approx(
        [0.0, PEAK / 10]
    )
    start = kerastrain_rates(np.array([0]), warmup={"steps": 10, "start_learning_rate": 0.01})
    assert start[0] == pytest.approx(0.01, rel=RTOL)


@pytest.mark.parametrize(
    "total,pct_start",
    [(1, 0.3), (3, 0.3), (5, 0.3), (7, 0.5), (12, 0.9), (33, 0.25), (1000, 0.3)],
)
def test_onecycle_class_equals_pytorch_for_short_and_long_cycles(total, pct_start):
    # Every (T, pct_start) PyTorch accepts; pct_start * T == 1 is left out: PyTorch
    # divides 0 by 0 there (kerastrain starts the cycle at its peak).
    cycle = schedules.OneCycle(PEAK, total, pct_start)
    steps = np.unique(np.linspace(0, total - 1, 120).round().astype(int))
    got = np.array([schedules.value_at(cycle, int(s)) for s in steps])
    want = reference(lambda s: torch_one_cycle_lr(s, total, PEAK, pct_start), steps)
    np.testing.assert_allclose(got, want, rtol=RTOL)
