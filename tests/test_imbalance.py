"""Class imbalance: `train.class_weight`, `data_options.resample`, and the
binary decision threshold (`evaluate.threshold`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

import kerastrain
from kerastrain._keras import tf
from kerastrain.config import DataConfig, TrainConfig, load_config
from kerastrain.data.balance import check_balance_options, class_weights, resample_rows
from kerastrain.data.feed import training_datasets, with_sample_weights
from kerastrain.data.prepare import prepare_data
from kerastrain.errors import ConfigError
from kerastrain.metrics import compute_metrics
from kerastrain.task import Task
from kerastrain.threshold import check_threshold, choose_threshold, metrics_at_threshold
from kerastrain.training import predict_split, run_training


def _skewed(n: int = 4200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A binary set with 1 positive for 20 negatives, the positives shifted
    by 1.5 standard deviations in two of four features."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 1 / 21).astype(np.int64)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    x[y == 1, :2] += 1.5
    return x, y


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([np.asarray(batch[1]).reshape(-1) for batch in ds])


@pytest.mark.parametrize("mode", ["oversample", "undersample"])
def test_resample_rebalances_training_only(mode):
    x, y = _skewed(2100)
    prepared = prepare_data((x, y), DataConfig(resample=mode), 0)
    counts = np.bincount(y[prepared.splits.train])
    train_ds, val_ds = training_datasets(prepared, 64, seed=0)
    fed = np.bincount(_labels(train_ds).astype(np.int64))
    expected = counts.max() if mode == "oversample" else counts.min()
    assert fed.tolist() == [expected, expected]
    # Validation keeps its rows and its distribution, row for row.
    assert (
        np.bincount(_labels(val_ds).astype(np.int64)).tolist()
        == np.bincount(y[prepared.splits.val]).tolist()
    )
    rows = resample_rows(y, prepared.splits.train, mode, 0)
    assert set(rows) <= set(prepared.splits.train)  # never a validation or test row
    assert not set(rows) & (set(prepared.splits.val) | set(prepared.splits.test))
    if mode == "oversample":
        assert set(rows) == set(prepared.splits.train)  # each original row kept


def test_class_weights_balanced_and_mapping():
    task = Task("binary", 2, ("no", "yes"))
    weights = class_weights("balanced", np.array([0, 0, 0, 1]), task)
    np.testing.assert_allclose(weights, [4 / 6, 2.0])
    np.testing.assert_allclose(class_weights({"yes": 5}, np.array([0, 1]), task), [1.0, 5.0])
    np.testing.assert_allclose(class_weights({0: 0.5}, np.array([0, 1]), task), [0.5, 1.0])
    assert class_weights(None, np.array([0, 1]), task) is None


def test_class_weights_ride_in_the_training_batches():
    x, y = _skewed(2100)
    prepared = prepare_data((x, y), DataConfig(), 0)
    train_ds, val_ds = training_datasets(prepared, 64, seed=0, class_weight={1: 7.0})
    batch = next(iter(train_ds))
    assert len(batch) == 3
    labels, weights = np.asarray(batch[1]).reshape(-1), np.asarray(batch[2])
    np.testing.assert_allclose(weights, np.where(labels == 1, 7.0, 1.0))
    assert len(next(iter(val_ds))) == 2  # validation is not weighted


def test_class_weights_of_mixed_labels_are_their_mix():
    """Mixup and label smoothing feed soft labels: a row weighs its labels'
    mix of the class weights (one-hot columns, or a binary probability)."""
    weights = np.array([1.0, 2.0, 4.0], np.float32)
    soft = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [0.25, 0.75, 0.0]], np.float32)
    ds = tf.data.Dataset.from_tensors((np.zeros((3, 2), np.float32), soft))
    _, _, w = next(iter(with_sample_weights(ds, weights, binary=False)))
    np.testing.assert_allclose(w, [1.0, 3.0, 1.75])
    binary = tf.data.Dataset.from_tensors((np.zeros((3, 2), np.float32), np.array([0, 1, 0.3])))
    _, _, w = next(iter(with_sample_weights(binary, np.array([1.0, 5.0]), binary=True)))
    np.testing.assert_allclose(w, [1.0, 5.0, 2.2], rtol=1e-6)


def test_bad_balance_options_are_refused_naming_them():
    task = Task("binary", 2, ("no", "yes"))
    with pytest.raises(ConfigError, match=r"unknown: 'maybe', 7"):
        check_balance_options({"yes": 2, "maybe": 1, 7: 3}, None, task)
    with pytest.raises(ConfigError, match="each class once"):
        check_balance_options({"yes": 2, 1: 3}, None, task)
    with pytest.raises(ConfigError, match=r"train.class_weight\['yes'\].*> 0"):
        load_config(train={"class_weight": {"no": 1, "yes": -2}})
    with pytest.raises(ConfigError, match=r"train.class_weight\['yes'\]"):
        load_config(train={"class_weight": {"yes": 0}})
    with pytest.raises(ConfigError, match="train.class_weight"):
        load_config(train={"class_weight": "balance"})
    regression = Task("regression")
    with pytest.raises(ConfigError, match="train.class_weight.*regression"):
        check_balance_options("balanced", None, regression)
    with pytest.raises(ConfigError, match="data_options.resample.*regression"):
        check_balance_options(None, "oversample", regression)
    with pytest.raises(ConfigError, match="evaluate.threshold.*multiclass"):
        check_threshold("f1", Task("multiclass", 3), 10)
    with pytest.raises(ConfigError, match="no validation split"):
        check_threshold("f1", task, 0)
    with pytest.raises(ConfigError, match="evaluate.threshold"):
        load_config(evaluate={"threshold": 1.0})
    with pytest.raises(ConfigError, match="evaluate.threshold.*'f1', 'balanced_accuracy'"):
        load_config(evaluate={"threshold": "f2"})


def test_chosen_threshold_beats_half_on_the_rows_it_was_chosen_on():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.05).astype(np.int64)
    scores = np.clip(0.15 + 0.25 * y + rng.normal(0, 0.1, 2000), 0, 1)  # positives below 0.5
    task = Task("binary", 2)
    for rule, score in (("f1", f1_score), ("balanced_accuracy", balanced_accuracy_score)):
        t = choose_threshold(y, scores, rule)
        kwargs = {"average": "macro"} if rule == "f1" else {}
        at_t = score(y, (scores >= t).astype(int), **kwargs)
        assert at_t > score(y, (scores >= 0.5).astype(int), **kwargs) + 0.1
        grid = max(score(y, (scores >= c).astype(int), **kwargs) for c in np.linspace(0, 1, 21))
        assert at_t >= grid - 1e-9  # no grid cut does better
        metrics = metrics_at_threshold(task, y, scores, t)
        assert metrics[rule] == pytest.approx(at_t)
        assert metrics["threshold"] == t


def _fit(prepared, **train) -> float:
    cfg = TrainConfig(epochs=3, batch_size=64, verbose=0, early_stopping=None, **train)
    model, _ = run_training(
        cfg,
        prepared,
        tf.distribute.get_strategy(),
        model_spec="mlp",
        model_options={"width": 16, "depth": 1},
        batch_size=64,
        seed=1,
    )
    outputs = predict_split(model, prepared, "test")
    return compute_metrics(prepared.task, prepared.y[prepared.splits.test], outputs)[
        "balanced_accuracy"
    ]


@pytest.mark.slow
def test_weighting_and_oversampling_raise_balanced_accuracy_on_1_to_20_classes():
    x, y = _skewed()
    plain = prepare_data((x, y), DataConfig(), 0)
    oversampled = prepare_data((x, y), DataConfig(resample="oversample"), 0)
    baseline = _fit(plain)
    balanced = _fit(plain, class_weight="balanced")
    over = _fit(oversampled)
    assert balanced >= baseline + 0.05, (baseline, balanced)
    assert over >= baseline + 0.05, (baseline, over)


@pytest.mark.slow
def test_class_weights_reach_every_micro_batch_of_gradient_accumulation():
    """One weighted update with 2 micro-batches equals the weighted update of
    the whole batch, and differs from the unweighted one."""
    from kerastrain._keras import keras
    from kerastrain.training import compile_model

    x, y = _skewed(64)
    task = Task("binary", 2)
    weights = class_weights("balanced", y, task)
    batch = tf.data.Dataset.from_tensors((x, y.astype(np.float32)))
    weighted = with_sample_weights(batch, weights, binary=True)

    def step(data, accumulation):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, "sigmoid")])
        train = TrainConfig(learning_rate=0.1, gradient_accumulation=accumulation)
        compile_model(model, task, train)
        model.fit(data, epochs=1, verbose=0)
        return model.get_weights()[0]

    whole, accumulated = step(weighted, 1), step(weighted, 2)
    np.testing.assert_allclose(accumulated, whole, rtol=1e-4, atol=1e-6)
    assert not np.allclose(step(batch, 2), whole, atol=1e-4)


@pytest.mark.slow
def test_pipeline_threshold_and_audit_reach_metrics_report_and_model_card(tmp_path):
    x, y = _skewed(2100)
    result = kerastrain.fit_pipeline(
        (x, y),
        "mlp",
        model_options={"width": 16, "depth": 1},
        train={"epochs": 3, "verbose": 0, "early_stopping": None, "batch_size": 64},
        evaluate={"threshold": "f1"},
        export={"formats": ["savedmodel"], "latency_runs": 0},
        report={"explain": "none"},
        output_dir=str(tmp_path / "run"),
        seed=1,
    )
    chosen = result.metrics["val_at_threshold"]
    # The exported model's predictions cut where the run chose, not at 0.5
    # (`kerastrain predict` reads the threshold from model_info.json).
    from kerastrain.predicting import predictions
    from kerastrain.threshold import positive_scores

    np.save(tmp_path / "rows.npy", x[:300])
    table = predictions(result.artifacts["savedmodel"], tmp_path / "rows.npy")
    scores = positive_scores(result.model.predict(x[:300], verbose=0))
    expected = (scores >= chosen["threshold"]).astype(int)
    low, high = sorted([chosen["threshold"], 0.5])
    assert np.sum((scores >= low) & (scores < high)) > 0  # rows the two cuts label differently
    info = json.loads((result.run_dir / "model_info.json").read_text())
    assert info["threshold"] == chosen["threshold"]
    np.testing.assert_array_equal(table["label"].astype(int).to_numpy(), expected)
    assert chosen["f1"] > result.metrics["val"]["f1"]
    assert result.metrics["test_at_threshold"]["threshold"] == chosen["threshold"]
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["val_at_threshold"]["threshold"] == chosen["threshold"]
    card = (result.run_dir / "MODEL_CARD.md").read_text()
    assert "### Decision threshold" in card and f"{chosen['threshold']:.4g}" in card
    assert result.data_quality is not None and result.data_quality.rows == 2100
    assert "Data quality" in result.report_path.read_text()
    assert json.loads((result.run_dir / "data_quality.json").read_text())["rows"] == 2100


@pytest.mark.parametrize("mode", [None, "oversample", "undersample"])
def test_steps_per_epoch_count_the_resampled_rows(mode):
    """Schedules (learning rate, compression's pruning) count the steps of the
    epochs actually fed, resampled rows included."""
    from kerastrain.compress.common import Context

    x, y = _skewed(2100)
    prepared = prepare_data((x, y), DataConfig(resample=mode), 0)
    cfg = load_config(train={"batch_size": 64}, data_options={"resample": mode}, seed=0)
    ctx = Context.create(cfg, prepared, tf.distribute.get_strategy())
    train_ds, _ = ctx.datasets()
    assert ctx.steps_per_epoch == int(train_ds.cardinality())
