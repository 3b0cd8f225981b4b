"""Hyper-parameter search: real KerasTuner oracles, real tf_keras trials, real data."""

from __future__ import annotations

import csv
import json
import logging
import math

import keras_tuner as kt
import numpy as np
import pytest

from kerastrain import ConfigError, DataError
from kerastrain._keras import keras
from kerastrain.batching import predict_model
from kerastrain.config import load_config
from kerastrain.data.prepare import prepare_data
from kerastrain.distribute import make_strategy
from kerastrain.metrics import compute_metrics
from kerastrain.training import run_training
from kerastrain.tune import TuningError, open_search, run_search
from kerastrain.tune.search import _folds
from kerastrain.tune.space import Space, declare_space, trial_config

#: Tiny models: no speed probe before each fit (the "auto" speed options measure a step).
FIXED_SPEED = {"execution": {"steps_per_execution": 1, "jit_compile": False}}
#: A deliberately poor default: plain SGD at 1e-4 barely moves in 2 epochs.
POOR = {
    "epochs": 2,
    "verbose": 0,
    "early_stopping": None,
    "optimizer": "sgd",
    "learning_rate": 1e-4,
    **FIXED_SPEED,
}
GOOD_SPACE = {
    "learning_rate": {"type": "float", "min": 0.01, "max": 0.3, "log": True},
    "optimizer": ["adam", "rmsprop"],
}


@pytest.fixture(scope="module")
def bc(breast_cancer_arrays):
    """512 rows of breast cancer: 384 train + 128 validation rows, whole batches of 32."""
    x, y = breast_cancer_arrays
    return x[:512], y[:512]


def make_config(data, directory, train=None, **tune):
    return load_config(
        {
            "data": data,
            "model": "mlp",
            "seed": 0,
            "model_options": {"width": 4, "depth": 1},
            "data_options": {"validation_split": 0.25, "test_split": 0.0},
            "train": {**POOR, **(train or {})},
            "tune": {"directory": str(directory), **tune},
        }
    )


def prepare(config):
    return prepare_data(config.data, config.data_options, config.seed)


def best_val_loss(config, prepared):
    keras.utils.set_random_seed(config.seed)
    _, fit = run_training(
        config.train,
        prepared,
        make_strategy("cpu"),
        model_spec=config.model,
        model_options=config.model_options,
        batch_size=config.batch_size,
        seed=config.seed,
        distribute=config.distribute,
    )
    return min(fit.history["val_loss"])


@pytest.fixture(scope="module")
def poor_default(bc, tmp_path_factory):
    config = make_config(bc, tmp_path_factory.mktemp("poor"), space=GOOD_SPACE)
    return best_val_loss(config, prepare(config))


@pytest.mark.slow
@pytest.mark.parametrize(
    "algorithm, space, trials",
    [
        ("random", GOOD_SPACE, 3),
        ("bayesian", GOOD_SPACE, 3),
    ],
)  # grid: in the fit_pipeline test below
def test_each_oracle_beats_a_poor_default(bc, tmp_path, poor_default, algorithm, space, trials):
    config = make_config(
        bc, tmp_path / "search", algorithm=algorithm, max_trials=trials, space=space
    )
    result = run_search(config, prepare(config), make_strategy("cpu"), output_dir=tmp_path)
    assert [r["status"] for r in result.rows] == ["COMPLETED"] * trials
    assert len({json.dumps([r["learning_rate"], r["optimizer"]]) for r in result.rows}) == trials
    assert result.best_score < poor_default - 0.1, (result.best_score, poor_default)
    best = min(result.rows, key=lambda r: r["score"])
    assert result.best_values == {
        "learning_rate": best["learning_rate"],
        "optimizer": best["optimizer"],
    }
    assert result.config.train.learning_rate == best["learning_rate"]
    assert result.config.train.optimizer == best["optimizer"]
    assert result.epochs_spent == 2 * trials
    with open(result.table_path) as handle:
        table = list(csv.DictReader(handle))
    assert [row["trial"] for row in table] == [r["trial"] for r in result.rows]
    assert {"score", "status", "learning_rate", "optimizer", "epochs_run", "duration_s"} <= set(
        table[0]
    )
    assert result.plot_path.stat().st_size > 1000
    if algorithm == "random":
        # A trial trains exactly as the final fit does: same config, same score.
        assert best_val_loss(result.config, prepare(config)) == pytest.approx(
            result.best_score, abs=1e-4
        )


@pytest.mark.slow
def test_hyperband_honours_its_epochs_and_warm_starts_from_the_parent(bc, tmp_path, poor_default):
    config = make_config(
        bc, tmp_path / "search", algorithm="hyperband", max_trials=4, max_epochs=3, space=GOOD_SPACE
    )
    prepared = prepare(config)
    result = run_search(config, prepared, make_strategy("cpu"), output_dir=tmp_path)
    rows = {r["trial"]: r for r in result.rows}
    assert [r["status"] for r in rows.values()] == ["COMPLETED"] * 4
    assert [(r["epochs"], r["initial_epoch"], r["epochs_run"]) for r in rows.values()] == [
        (1, 0, 1)
    ] * 3 + [(3, 1, 2)]
    child = result.rows[-1]
    parent = rows[child["parent"]]
    assert parent["score"] == min(r["score"] for r in result.rows[:3])  # the best goes on
    assert child["bracket"] == parent["bracket"] == 1 and child["round"] == 1
    assert result.epochs_spent == 5
    assert result.best_score < poor_default - 0.1
    # The parent's checkpoint (its best epoch) reproduces the parent's score.
    search = open_search(config, prepared, make_strategy("cpu"))
    assert search.resumed
    model = search.runner.load_model(search.oracle.trials[parent["trial"]])
    x, y = prepared.part("val")
    loss = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(parent["score"], abs=1e-4)


def test_conditional_parameters_and_routing(bc, tmp_path):
    config = make_config(
        bc,
        tmp_path,
        space={
            "optimizer": ["adam", "sgd"],
            "momentum": {"type": "float", "min": 0.5, "max": 0.9, "when": {"optimizer": "sgd"}},
            "nesterov": {"type": "bool", "when": {"optimizer": "sgd"}},
            "width": {"type": "int", "min": 8, "max": 32, "step": 8},
            "batch_size": [16, 64],
            "learning_rate": [0.01],
        },
    )
    space = Space(config.tune, {})
    discovered = space.discover()
    conditions = {p.name: [(c.name, c.values) for c in p.conditions] for p in discovered.space}
    assert conditions["momentum"] == [("optimizer", ["sgd"])]
    assert conditions["width"] == []
    hp = kt.HyperParameters()
    hp.values = {"optimizer": "adam", "width": 16, "batch_size": 64, "learning_rate": 0.01}
    assert "momentum" not in declare_space(config.tune.space, hp)
    hp = kt.HyperParameters()
    hp.values = {
        "optimizer": "sgd",
        "momentum": 0.7,
        "nesterov": True,
        "width": 24,
        "batch_size": 16,
        "learning_rate": 0.01,
    }
    trial = trial_config(config, space, hp)
    assert trial.train.optimizer == "sgd"
    assert trial.train.optimizer_options == {"momentum": 0.7, "nesterov": True}
    assert trial.model_options == {"width": 24, "depth": 1}
    assert trial.batch_size == 16 and trial.data_options.batch_size == 16
    assert config.train.optimizer_options == {}  # the base config is untouched


def test_unknown_model_option_is_refused_with_the_accepted_names(bc, tmp_path):
    config = make_config(bc, tmp_path / "search", space={"widht": [8, 16]})
    with pytest.raises(
        ConfigError,
        match=r"'tune.space.widht'.*accepts: width, depth, dropout"
        r".*Did you mean 'width'",
    ):
        open_search(config, prepare(config), make_strategy("cpu"))
    assert not (tmp_path / "search").exists()  # refused before the search starts


def test_objective_that_training_does_not_produce_is_refused(bc, tmp_path):
    config = make_config(bc, tmp_path / "a", space=GOOD_SPACE, objective="val_f2")
    with pytest.raises(
        ConfigError,
        match=r"'val_f2'.*Available: loss, accuracy, auc, val_loss.*"
        r"val_f1.*Did you mean 'val_f1'",
    ):
        open_search(config, prepare(config), make_strategy("cpu"))
    config = load_config(
        make_config(bc, tmp_path / "b", space=GOOD_SPACE), data_options={"validation_split": 0.0}
    )
    with pytest.raises(ConfigError, match="needs a validation split"):
        open_search(config, prepare(config), make_strategy("cpu"))


@pytest.mark.slow
def test_failed_trials_are_marked_and_the_search_goes_on(bc, tmp_path):
    # The training stage's blow-up guard (no retries here) raises on the NaN loss.
    config = make_config(
        bc,
        tmp_path / "a",
        algorithm="grid",
        train={"epochs": 1, "blowup_guard": 0},
        space={"learning_rate": [1e12, 0.05], "optimizer": ["sgd"]},
    )
    result = run_search(config, prepare(config), make_strategy("cpu"))
    failed, done = result.rows
    assert failed["status"] == "FAILED"
    assert failed["reason"].startswith("TrainingDivergedError: The training loss became nan")
    assert done["status"] == "COMPLETED" and result.best_values["learning_rate"] == 0.05
    # Too many failures in a row stop the search with every reason (guard off: the
    # trial itself finds the NaN loss in the history).
    config = make_config(
        bc,
        tmp_path / "b",
        algorithm="grid",
        train={"epochs": 1, "blowup_guard": False},
        max_consecutive_failures=2,
        space={"learning_rate": [1e12, 1e13, 1e14], "optimizer": ["sgd"]},
    )
    with pytest.raises(
        TuningError,
        match=r"2 trials in a row failed.*trial 00: the training "
        r"loss became nan at epoch 1; trial 01: the training",
    ):
        run_search(config, prepare(config), make_strategy("cpu"))
    trials = sorted(p.name for p in (tmp_path / "b" / "trials").glob("trial_*"))
    assert trials == ["trial_00", "trial_01"]


@pytest.mark.slow
def test_cross_validated_objective_is_the_mean_over_stratified_folds(bc, tmp_path):
    config = make_config(
        bc, tmp_path / "search", train={"epochs": 1}, max_trials=1, space=GOOD_SPACE, cv_folds=2
    )
    prepared = prepare(config)
    folds = _folds(prepared, 2, config.seed)
    rows = np.concatenate([prepared.splits.train, prepared.splits.val])
    assert sorted(np.concatenate([f.splits.val for f in folds]).tolist()) == sorted(rows.tolist())
    share = prepared.y[rows].mean()
    assert all(abs(prepared.y[f.splits.val].mean() - share) < 0.01 for f in folds)
    result = run_search(config, prepared, make_strategy("cpu"))
    assert len(result.rows) == 1
    for row in result.rows:
        record = json.loads(
            (
                tmp_path / "search" / "trials" / f"trial_{row['trial']}" / "kerastrain.json"
            ).read_text()
        )
        assert len(record["scores"]) == 2 and row["epochs_run"] == 2
        assert row["score"] == pytest.approx(np.mean(record["scores"]))
    with pytest.raises(DataError, match="tune.cv_folds=300 cannot split.*fewer than the 300"):
        _folds(prepared, 300, 0)
    # Killed after KerasTuner saved the finished trial but before the oracle: not rerun.
    state_path = tmp_path / "search" / "trials" / "oracle.json"
    state = json.loads(state_path.read_text())
    state["ongoing_trials"] = {"tuner0": "0"}
    state_path.write_text(json.dumps(state))
    search = open_search(config, prepared, make_strategy("cpu"))
    assert search.oracle._retry_queue == [] and "0" in search.oracle.end_order
    search.runner.search()
    assert (
        json.loads((tmp_path / "search" / "trials" / "trial_0" / "kerastrain.json").read_text())[
            "started"
        ]
        == record["started"]
    )


def test_changing_the_space_on_resume_is_refused(bc, tmp_path):
    config = make_config(bc, tmp_path / "search", space=GOOD_SPACE)
    prepared = prepare(config)
    assert not open_search(config, prepared, make_strategy("cpu")).resumed
    assert open_search(config, prepared, make_strategy("cpu")).resumed
    changed = load_config(
        config, tune={"space": {**GOOD_SPACE, "width": [8, 16]}, "objective": "val_accuracy"}
    )
    with pytest.raises(
        ConfigError,
        match=r"another search space or scoring.*objective.*"
        r"added width.*tune.overwrite",
    ):
        open_search(changed, prepared, make_strategy("cpu"))
    narrowed = load_config(config, tune={"space": {**GOOD_SPACE, "optimizer": ["adam"]}})
    with pytest.raises(
        ConfigError,
        match=r"changed optimizer: values \['adam', 'rmsprop'\] -> "
        r"\['adam'\]",
    ):
        open_search(narrowed, prepared, make_strategy("cpu"))
    fresh = load_config(changed, tune={"overwrite": True})
    assert not open_search(fresh, prepared, make_strategy("cpu")).resumed


@pytest.mark.slow
def test_memory_stays_flat_over_30_trials(tmp_path):
    """Each trial's Keras session and model are freed, and so are the graphs
    TensorFlow's gradient registry would keep (tf-keras issue #286)."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    rows = np.random.RandomState(0).permutation(len(iris.target))[:128]  # 2 whole batches
    config = load_config(
        {
            "data": (iris.data[rows].astype(np.float32), iris.target[rows]),
            "model": "mlp",
            "seed": 0,
            "data_options": {"validation_split": 0.0, "test_split": 0.0},
            # float32: oneDNN's bfloat16 kernel cache fills over the first trials on its own.
            "train": {
                "epochs": 1,
                "verbose": 0,
                "early_stopping": None,
                "batch_size": 64,
                "execution": {**FIXED_SPEED["execution"], "mixed_precision": "float32"},
            },
            "tune": {
                "directory": str(tmp_path),
                "max_trials": 30,
                "objective": "loss",
                "space": {"width": {"type": "int", "min": 4, "max": 32}, "depth": [1, 2]},
            },
        }
    )
    result = run_search(config, prepare(config), make_strategy("cpu"))
    rss = [r["rss_mb"] for r in result.rows]
    assert len(rss) == 30 and all(r["status"] == "COMPLETED" for r in result.rows)
    # Stated bound: at most 20 MiB from trial 10 to trial 30 (1 MiB a trial); measured
    # 2.4 MiB, and 33 MiB without releasing the trials' gradient functions.
    assert rss[-1] - rss[9] < 20, rss


@pytest.mark.slow
def test_user_build_returning_a_model_with_a_custom_objective(bc, tmp_path, caplog):
    def build(hp, input_shape, num_outputs, output_activation):
        inputs = keras.Input(input_shape)
        hidden = keras.layers.Dense(hp.Int("units", 4, 16, step=12), activation="relu")(inputs)
        hp.Float("learning_rate", 0.01, 0.1, sampling="log")
        outputs = keras.layers.Dense(num_outputs, activation=output_activation)(hidden)
        return keras.Model(inputs, outputs)

    config = make_config(
        bc,
        tmp_path / "search",
        train={"epochs": 1},
        max_trials=2,
        build=build,
        objective={"name": "val_f1", "direction": "max"},
    )
    prepared = prepare(config)
    caplog.set_level(logging.INFO, logger="kerastrain")
    result = run_search(config, prepared, make_strategy("cpu"))
    assert {r["status"] for r in result.rows} == {"COMPLETED"}
    # Each trial's end: n/N, its score, the best so far and the time left.
    ends = [r.getMessage() for r in caplog.records if r.getMessage().endswith(" left.")]
    assert [line.split(":")[0] for line in ends] == ["Trial 1/2", "Trial 2/2"], ends
    assert all("val_f1=" in line and "best so far" in line for line in ends)
    assert "about 0.0 s left" in ends[1]
    assert set(result.best_values) == {"units", "learning_rate"}
    assert result.config.train.learning_rate == result.best_values["learning_rate"]
    assert result.objective == {"name": "val_f1", "direction": "max"}
    assert result.best_score == max(r["score"] for r in result.rows)
    # val_f1 (computed with scikit-learn each epoch) picked the checkpoint kept.
    search = open_search(config, prepared, make_strategy("cpu"))
    model = search.runner.load_model(search.oracle.trials[result.best_trial])
    x, y = prepared.part("val")
    assert compute_metrics(prepared.task, y, predict_model(model, x))["f1"] == pytest.approx(
        result.best_score, abs=1e-6
    )
    dense = [layer for layer in model.layers[-1].layers if isinstance(layer, keras.layers.Dense)]
    assert dense[0].units == result.best_values["units"]  # behind kerastrain's normalization


@pytest.mark.slow
def test_fit_pipeline_grid_search_then_trains_with_the_best_values(bc, tmp_path, poor_default):
    from kerastrain import fit_pipeline

    x, y = bc
    result = fit_pipeline(
        (x, y),
        "mlp",
        model_options={"width": 4, "depth": 1},
        seed=0,
        data_options={"validation_split": 0.25, "test_split": 0.0},
        train=POOR,
        export={"formats": []},
        output_dir=str(tmp_path / "run"),
        tune={
            "algorithm": "grid",
            "max_trials": 3,
            "space": {"learning_rate": [0.01, 0.1], "optimizer": ["adam", "rmsprop"]},
        },
    )
    best = result.best_hyperparameters
    run = tmp_path / "run"
    summary = json.loads((run / "tuning.json").read_text())
    assert summary["trials"] == {"COMPLETED": 3} and summary["best"]["values"] == best
    assert summary["best"]["score"] < poor_default - 0.1, (summary["best"], poor_default)
    with open(run / "tuning_results.csv") as handle:
        grid = [(float(r["learning_rate"]), r["optimizer"]) for r in csv.DictReader(handle)]
    assert grid == [(0.01, "adam"), (0.01, "rmsprop"), (0.1, "adam")]  # in grid order
    assert result.config.train.learning_rate == best["learning_rate"]
    assert result.config.train.optimizer == best["optimizer"]
    assert "tune" in result.timings
    assert (run / "tuning_scores.png").exists() and (run / "tuning" / "search.json").exists()
    report = (run / "report.html").read_text()
    assert "Hyper-parameter search" in report and "tuning_scores.png" in report
    assert math.isfinite(result.metrics["val"]["accuracy"])
