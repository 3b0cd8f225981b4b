"""A new user's first hour (issue 23): a run's config.yaml repeats it, the
automatic precision keeps its promise under every strategy, stop reasons
count each phase's epochs, and each message is said once, where it belongs."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import yaml

import kerastrain
from kerastrain import fit_pipeline
from kerastrain._keras import keras, tf
from kerastrain.config import load_config
from kerastrain.distribute import make_strategy
from kerastrain.errors import ConfigError
from kerastrain.training.execution import Decision
from kerastrain.training.precision import choose_precision, precision_scope

CANDIDATE = Decision("mixed_bfloat16", "the CPU has native bfloat16")


def _rows(n: int = 60, features: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


QUIET = {
    "train": {"epochs": 1, "verbose": 0, "early_stopping": None},
    "export": {"formats": []},
    "report": {"explain": "none"},
    "overwrite": True,
    "seed": 0,
}


# --------------------------------------------------------------------------- defect 3


@pytest.mark.slow
def test_a_run_given_a_strategy_object_writes_a_config_that_repeats_it(tmp_path):
    data = _rows()
    first = fit_pipeline(
        data,
        "mlp",
        strategy=tf.distribute.MirroredStrategy(["/cpu:0"]),
        output_dir=str(tmp_path / "first"),
        model_options={"width": 8, "depth": 1},
        **QUIET,
    )
    saved = yaml.safe_load((first.run_dir / "config.yaml").read_text())
    assert saved["strategy"] == {
        "kind": "mirrored",
        "devices": ["/job:localhost/replica:0/task:0/device:CPU:0"],
    }
    config = load_config(first.run_dir / "config.yaml")  # raised ConfigError before
    again = fit_pipeline(data, config=config, output_dir=str(tmp_path / "again"))
    strategy = again.model.distribute_strategy
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert list(strategy.extended.worker_devices) == saved["strategy"]["devices"]
    assert again.history["loss"] == pytest.approx(first.history["loss"], rel=1e-5)


def test_each_kind_of_strategy_is_recorded_by_kind_and_rebuilt_from_it():
    from kerastrain.distribute import strategy_spec

    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    spec = strategy_spec(one)
    assert spec == {"kind": "one_device", "device": "/job:localhost/replica:0/task:0/device:CPU:0"}
    rebuilt = make_strategy(spec)
    assert isinstance(rebuilt, tf.distribute.OneDeviceStrategy)
    assert rebuilt.extended.worker_devices == one.extended.worker_devices
    assert strategy_spec(tf.distribute.get_strategy()) == {"kind": "default"}
    assert make_strategy({"kind": "default"}) is tf.distribute.get_strategy()
    # The mapping is a config value like any other: checked on load.
    assert load_config(strategy={"kind": "mirrored", "devices": ["/cpu:0"]}).strategy_kind == (
        "mirrored"
    )


@pytest.mark.parametrize(
    "spec, match",
    [
        ({"kind": "mirored", "devices": ["/cpu:0"]}, "Did you mean 'mirrored'"),
        ({"kind": "one_device"}, "needs 'device'"),
        ({"kind": "mirrored", "device": "/cpu:0"}, "Did you mean 'devices'"),
        ({"kind": "mirrored", "devices": "/cpu:0"}, "non-empty list"),
    ],
)
def test_a_bad_strategy_mapping_is_refused_on_load(spec, match):
    with pytest.raises(ConfigError, match=match):
        load_config(strategy=spec)


def test_a_recorded_device_this_machine_lacks_is_a_clear_error():
    with pytest.raises(ConfigError, match="does not have.*CPU:0"):
        make_strategy({"kind": "one_device", "device": "/gpu:7"})


# --------------------------------------------------------------------------- defect 5


def _bf16_model(width: int, features: int = 8) -> keras.Model:
    with precision_scope("mixed_bfloat16"):
        inp = keras.Input((features,))
        hidden = keras.layers.Dense(width, activation="relu")(inp)
        return keras.Model(inp, keras.layers.Dense(1, dtype="float32")(hidden))


def _batches(rows: int, features: int = 8) -> tf.data.Dataset:
    x = np.random.default_rng(0).normal(size=(rows, features)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, np.zeros(rows, np.float32))).batch(rows)


def test_under_mirrored_a_tiny_step_keeps_float32_by_the_static_rule():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _bf16_model(16)
    kept, decision, seconds = choose_precision(
        model, CANDIDATE, strategy, 32, keras.losses.MeanSquaredError(), _batches(32)
    )
    # 3 x 2 x (8*16 + 16) x 32 = 0.03 MFLOP: float32, unmeasured.
    assert decision.value == "float32" and "0.0 MFLOP" in decision.reason, decision
    assert seconds is None
    assert all(layer.dtype_policy.name == "float32" for layer in kept.layers)


def test_under_mirrored_without_a_batch_to_measure_float32_stays_and_says_why():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _bf16_model(4096)  # 3 x 2 x (8 + 1) x 4096 x 32 = 7 MFLOP: worth measuring
    kept, decision, _ = choose_precision(
        model, CANDIDATE, strategy, 32, keras.losses.MeanSquaredError(), None
    )
    assert decision.value == "float32"
    assert "kept only when a measured step is 1.1x faster" in decision.reason
    assert "no batch to measure" in decision.reason
    assert kept.layers[1].dtype_policy.name == "float32"


class _Unregistered(keras.layers.Layer):
    """A custom layer Keras does not know by name: a model holding it cannot
    be rebuilt from its config, so its step cannot be measured."""

    def call(self, x):
        return 2.0 * x


def test_a_model_that_cannot_be_measured_keeps_float32_with_the_reason():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope(), precision_scope("mixed_bfloat16"):
        inp = keras.Input((8,))
        hidden = _Unregistered()(keras.layers.Dense(4096)(inp))  # 7 MFLOP at 32 rows
        out = keras.layers.Dense(1, dtype="float32")(hidden)
        model = keras.Model(inp, out)
    _, decision, _ = choose_precision(
        model, CANDIDATE, strategy, 32, keras.losses.MeanSquaredError(), _batches(32)
    )
    assert decision.value == "float32"
    assert "could not be measured" in decision.reason, decision


@pytest.mark.slow
def test_under_mirrored_a_large_step_is_measured_on_one_replica():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _bf16_model(8192)
    kept, decision, _ = choose_precision(
        model, CANDIDATE, strategy, 64, keras.losses.MeanSquaredError(), _batches(64)
    )
    assert "ms in mixed_bfloat16" in decision.reason and "ms in float32" in decision.reason
    assert "measured on one replica" in decision.reason
    wanted = "float32" if decision.value == "float32" else "mixed_bfloat16"
    assert kept.layers[1].dtype_policy.name == wanted
    assert kept.distribute_strategy is strategy  # trained where it was built


_TWO_REPLICAS = """
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerastrain import fit_pipeline
from kerastrain._keras import keras
from kerastrain.training.execution import Decision
from kerastrain.training.precision import choose_precision, precision_scope

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = {}
for name, width in (("small", 16), ("large", 8192)):
    with strategy.scope(), precision_scope("mixed_bfloat16"):
        inp = keras.Input((8,))
        model = keras.Model(inp, keras.layers.Dense(1, dtype="float32")(
            keras.layers.Dense(width, activation="relu")(inp)))
    x = np.random.default_rng(0).normal(size=(128, 8)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((x, np.zeros(128, np.float32))).batch(128)
    kept, decision, _ = choose_precision(
        model, Decision("mixed_bfloat16", "the CPU has native bfloat16"), strategy, 128,
        keras.losses.MeanSquaredError(), data)
    out[name] = [decision.value, decision.reason, kept.layers[1].dtype_policy.name]
rng = np.random.default_rng(0)
x = rng.normal(size=(80, 4)).astype(np.float32)
result = fit_pipeline(
    (x, (x[:, 0] > 0).astype(np.int64)), "mlp", strategy="mirrored", seed=0,
    output_dir=sys.argv[1], model_options={"width": 8, "depth": 1},
    train={"epochs": 1, "verbose": 0, "execution": {"mixed_precision": "auto"}},
    export={"formats": []}, report={"explain": "none"})
decision = result.performance["mixed_precision"]
out["pipeline"] = [decision.value, decision.reason, result.model.distribute_strategy.num_replicas_in_sync]
print("RESULT " + json.dumps(out))
"""


@pytest.mark.subprocess
@pytest.mark.slow
def test_auto_precision_under_mirrored_over_two_devices_keeps_the_promise(tmp_path):
    """Two logical CPUs (set before TensorFlow starts, hence a process of its own)."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS, str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    out = json.loads(line[len("RESULT ") :])
    # 3 x 2 x (8*16 + 16) x 64 rows per replica = 0.06 MFLOP: float32 by the static rule.
    assert out["small"][0] == "float32" and "MFLOP" in out["small"][1], out["small"]
    assert out["small"][2] == "float32"
    # A large step is measured, on one replica's 64 rows; the model follows the decision.
    value, reason, policy = out["large"]
    assert "measured on one replica" in reason and "ms in float32" in reason, reason
    assert policy == ("float32" if value == "float32" else "mixed_bfloat16")
    # The whole run: 'auto' on 2 replicas decides as the README says, not by the CPU alone.
    value, reason, replicas = out["pipeline"]
    assert replicas == 2 and value == "float32", reason
    if "native bfloat16" in reason:  # a CPU without it has nothing to decide
        assert "MFLOP" in reason, reason


# --------------------------------------------------------------------------- defect 6


def test_a_fit_that_continues_a_model_counts_its_own_epochs():
    from kerastrain.config import TrainConfig
    from kerastrain.training.fit import train_model

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(inp))
    model.compile("sgd", "mse")
    x, y = _rows(16)
    data = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32))).batch(8)
    train = TrainConfig(verbose=0, early_stopping=None)
    # Epochs 3 to 5 of the model: a second phase of 3 epochs, as fine-tuning runs it.
    result = train_model(model, data, None, train, epochs=5, initial_epoch=2)
    assert result.stop_reason == "completed all 3 epochs", result.stop_reason


def test_early_stopping_in_a_later_phase_names_the_phase_epoch():
    from kerastrain.callbacks import EarlyStopping

    stop = EarlyStopping(monitor="loss", patience=1)
    stop.stopped_epoch, stop.stop_reason = 24, "'loss' did not improve for 1 epoch"
    assert stop.summary(10, first=20).startswith("early stopping after epoch 5:")


# --------------------------------------------------------------------------- defect 8


def test_a_missing_validation_split_is_said_once(tmp_path, caplog, monkeypatch):
    from kerastrain import logs
    from kerastrain.config import TrainConfig
    from kerastrain.training.fit import default_callbacks

    monkeypatch.setattr(logs, "_SAID", set())
    caplog.set_level(logging.DEBUG, logger="kerastrain")
    for phase in range(3):  # a transfer run's two phases and a baseline run
        default_callbacks(TrainConfig(), has_validation=False, run_dir=tmp_path / str(phase))
    said = [r for r in caplog.records if r.getMessage().startswith("No validation split")]
    messages = {r.getMessage() for r in said}
    for message in messages:  # each fact (early stopping, best checkpoint) once
        levels = [r.levelno for r in said if r.getMessage() == message]
        assert levels == [logging.WARNING, logging.DEBUG, logging.DEBUG], message
    assert any("best checkpoint" in m for m in messages)


def test_an_uncounted_custom_layer_is_a_developer_note_at_debug(caplog):
    from kerastrain.training.flops import forward_flops

    class Encode(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Dense(1)(Encode()(inp)))
    caplog.set_level(logging.DEBUG, logger="kerastrain")
    forward_flops(model)
    notes = [r for r in caplog.records if "counts custom layer" in r.getMessage()]
    assert notes and all(r.levelno == logging.DEBUG for r in notes)


def test_a_short_run_says_why_xla_stays_off_in_words():
    from kerastrain.training.execution import DeviceInfo, pick_jit

    decision = pick_jit(DeviceInfo("cpu"), run_seconds=0.3)
    assert decision.value is False
    assert "a 0 s run" not in decision.reason and "under a second" in decision.reason


_TWICE = """
import logging
import tensorflow as tf
from kerastrain import fit_pipeline  # noqa: F401  (imports TensorFlow, as a script does)
tf.get_logger().warning("a warning before logging is configured")
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
tf.get_logger().info("a line from TensorFlow")
tf.get_logger().warning("a warning from TensorFlow")
"""


@pytest.mark.subprocess
def test_a_tensorflow_line_is_printed_once_whether_or_not_the_script_configures_logging():
    done = subprocess.run(
        [sys.executable, "-c", _TWICE], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for line in (
        "a warning before logging is configured",  # TensorFlow's own handler prints it
        "a line from TensorFlow",  # the root handler prints them, TensorFlow's stays silent
        "a warning from TensorFlow",
    ):
        assert done.stderr.count(line) == 1, done.stderr[-2000:]


def test_a_local_tpu_request_does_not_tell_the_user_to_ask_for_a_local_tpu():
    from kerastrain.distribute import _tpu_help

    assert "set distribute.tpu_address='local'" not in _tpu_help("local")
    assert "this machine has none" in _tpu_help("local")
    assert "set distribute.tpu_address='local'" in _tpu_help(None)


@pytest.mark.subprocess
@pytest.mark.slow
def test_the_tpu_example_with_tpu_local_refuses_once_and_clearly(tmp_path):
    from pathlib import Path

    root = Path(kerastrain.__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "tpu.py"), "--tpu", "local", "--quick",
         "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    assert "No TPU could be initialized at 'local'" in done.stderr
    assert "set distribute.tpu_address='local'" not in done.stderr
    initializing = [line for line in done.stderr.splitlines() if "Initializing the TPU" in line]
    assert len(initializing) == 1, initializing
