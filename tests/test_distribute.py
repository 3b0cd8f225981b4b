"""The strategy factory, TF_CONFIG helpers, chief-only writing, and Mirrored
over two logical CPUs (in its own process: logical devices must be set up
before TensorFlow initializes its devices)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from kerastrain import ConfigError
from kerastrain._keras import tf
from kerastrain.config import DistributeConfig, PipelineConfig, load_config
from kerastrain.config.distribute import is_chief_task, task_of, tf_config
from kerastrain.data.feed import coordinator_datasets
from kerastrain.data.prepare import prepare_data
from kerastrain.distribute import (
    distributed_train_config,
    make_strategy,
    process_role,
    strategy_name,
    strategy_summary,
)
from kerastrain.launch import free_ports
from kerastrain.runs import ProcessRole, WorkerRunFolder, open_run_folder
from kerastrain.training import make_datasets

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- TF_CONFIG


def test_tf_config_describes_the_cluster_and_this_task(monkeypatch):
    cfg = tf_config(
        ["10.0.0.1:2222", "10.0.0.2:2222"], index=1, ps=["10.0.0.3:2222"], chief="10.0.0.4:2222"
    )
    assert cfg == {
        "cluster": {
            "chief": ["10.0.0.4:2222"],
            "worker": ["10.0.0.1:2222", "10.0.0.2:2222"],
            "ps": ["10.0.0.3:2222"],
        },
        "task": {"type": "worker", "index": 1},
    }
    assert task_of(json.dumps(cfg)) == ("worker", 1)
    # TensorFlow reads it the same way.
    monkeypatch.setenv("TF_CONFIG", json.dumps(cfg))
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert resolver.cluster_spec().as_dict()["ps"] == ["10.0.0.3:2222"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"workers": ["10.0.0.1"], "index": 0}, r"'workers\[0\]'.*'host:port'"),
        ({"workers": ["a:1", "b:2"], "index": 2}, r"'index'.*between 0 and 1"),
        ({"workers": ["a:1"], "index": 0, "task_type": "wroker"}, r"Did you mean 'worker'"),
        ({"workers": [], "index": 0}, r"'workers'.*at least one"),
    ],
)
def test_tf_config_refuses_a_malformed_cluster(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tf_config(**kwargs)


@pytest.mark.parametrize(
    "config, chief",
    [
        (None, True),
        (tf_config(["a:1", "b:2"], 0), True),
        (tf_config(["a:1", "b:2"], 1), False),
        (tf_config(["a:1", "b:2"], 0, chief="c:3"), False),
        (tf_config(["a:1"], 0, chief="c:3", task_type="chief"), True),
        (tf_config(["a:1"], 0, ps=["p:1"], chief="c:3", task_type="ps"), False),
    ],
)
def test_the_chief_is_the_chief_task_else_worker_zero(config, chief):
    assert is_chief_task(None if config is None else json.dumps(config)) is chief


def test_a_bad_tf_config_is_a_config_error():
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        task_of("{'cluster': }")
    with pytest.raises(ConfigError, match="Unknown key 'clster'.*Did you mean 'cluster'"):
        task_of({"clster": {}})


# --------------------------------------------------------------------------- factory


def test_auto_picks_what_this_machine_has(caplog):
    caplog.set_level("INFO", logger="kerastrain")
    gpus = tf.config.list_physical_devices("GPU")
    strategy = make_strategy("auto")
    expected = (
        "MirroredStrategy"
        if len(gpus) > 1
        else "OneDeviceStrategy"
        if gpus
        else "the default strategy"
    )
    assert strategy_name(strategy) == expected
    chose = [r.getMessage() for r in caplog.records if "strategy='auto' chose" in r.getMessage()]
    assert len(chose) == 1 and expected in chose[0]
    if not gpus:  # the reason is stated, including why no TPU was used
        assert "no GPU; no TPU: ValueError" in chose[0]


def test_cpu_and_instances():
    assert make_strategy("cpu").num_replicas_in_sync == 1
    given = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert make_strategy(given) is given


def test_unknown_strategy_names_the_choices():
    with pytest.raises(ConfigError, match=r"'strategy'.*'multi_worker'.*Did you mean 'mirrored'"):
        make_strategy("mirored")


def test_a_tpu_request_without_a_tpu_fails_fast_and_says_what_to_do():
    port = free_ports(1)[0]  # nothing listens there: a gRPC connect would retry forever
    for address in (None, f"grpc://127.0.0.1:{port}"):
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=r"No TPU was found.*tpu_address='local'"):
            make_strategy("tpu", DistributeConfig(tpu_address=address))
        assert time.perf_counter() - start < 10


def test_gpu_request_without_gpu_is_refused():
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="sees no GPU"):
        make_strategy("gpu")


def test_distribute_options_are_checked():
    with pytest.raises(ConfigError, match="Unknown option 'distribute.scale_lr'"):
        load_config({"distribute": {"scale_lr": True}})
    cfg = load_config(
        {"distribute": {"scale_learning_rate": True}}, distribute={"tpu_address": "local"}
    )
    assert cfg.distribute == DistributeConfig(scale_learning_rate=True, tpu_address="local")


# --------------------------------------------------------------------------- data and folders


def test_in_memory_data_is_sharded_by_data_under_a_strategy():
    cfg = PipelineConfig(data="iris", train={"batch_size": 8}, seed=0)
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    train_ds, val_ds = make_datasets(
        cfg.train, prepared, tf.distribute.get_strategy(), batch_size=cfg.batch_size, seed=cfg.seed
    )
    data = tf.data.experimental.AutoShardPolicy.DATA
    for ds in (train_ds, val_ds):
        assert ds.options().experimental_distribute.auto_shard_policy == data


def test_parameter_server_datasets_repeat_and_count_the_steps():
    cfg = PipelineConfig(data="iris", train={"batch_size": 16}, seed=0)
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    strategy = tf.distribute.get_strategy()
    train, val, steps = coordinator_datasets(
        lambda: make_datasets(
            cfg.train, prepared, strategy, batch_size=cfg.batch_size, seed=cfg.seed
        ),
        prepared,
        16,
    )
    assert steps == {
        "steps_per_epoch": math.ceil(len(prepared.splits.train) / 16),
        "validation_steps": math.ceil(len(prepared.splits.val) / 16),
    }
    context = tf.distribute.InputContext()
    for creator in (train, val):
        ds = creator(context)
        assert ds.cardinality() == tf.data.INFINITE_CARDINALITY
        x, _ = next(iter(ds))
        assert x.shape[-1] == 4
    no_val = PipelineConfig(data="iris", data_options={"validation_split": 0.0}, seed=0)
    prepared = prepare_data(no_val.data, no_val.data_options, no_val.seed)
    _, val, steps = coordinator_datasets(
        lambda: make_datasets(
            no_val.train, prepared, strategy, batch_size=no_val.batch_size, seed=no_val.seed
        ),
        prepared,
        32,
    )
    assert val is None and "validation_steps" not in steps


def test_parameter_servers_refuse_data_too_large_to_send(monkeypatch):
    from kerastrain.data import feed

    cfg = PipelineConfig(data="iris", seed=0)
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    monkeypatch.setattr(feed, "ZERO_COPY_BYTES", prepared.x.nbytes)  # as if it were large
    with pytest.raises(ConfigError, match="strategy='multi_worker' for this data"):
        coordinator_datasets(
            lambda: make_datasets(
                cfg.train,
                prepared,
                tf.distribute.get_strategy(),
                batch_size=cfg.batch_size,
                seed=cfg.seed,
            ),
            prepared,
            32,
        )


def test_a_non_chief_worker_writes_to_a_temporary_folder_it_removes(tmp_path):
    shared = tmp_path / "run"
    folder = WorkerRunFolder(tmp_path / "worker-tmp", shared)
    folder.path.mkdir()
    (folder.path / "model.keras").write_text("x")
    folder.mark("running")
    assert folder.path.exists() and not shared.exists()
    assert folder.backup_dir == shared / "backup"  # every worker restores the same epoch
    folder.mark("finished")
    assert not folder.path.exists() and not shared.exists()


def test_the_run_folder_is_the_chiefs_and_a_temporary_one_elsewhere(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert process_role(tf.distribute.get_strategy()) == ProcessRole(True, 1, "worker0")
    cfg = PipelineConfig(name="run", output_dir=str(tmp_path / "run"))
    worker = open_run_folder(cfg, ProcessRole(chief=False, workers=2, task="worker1"))
    assert isinstance(worker, WorkerRunFolder) and worker.path.name.startswith(
        "kerastrain-worker1-"
    )
    assert worker.backup_dir == tmp_path / "run" / "backup" and not (tmp_path / "run").exists()
    worker.mark("finished")
    assert not worker.path.exists()
    chief = open_run_folder(cfg, ProcessRole(chief=True, workers=2))
    assert chief.path == tmp_path / "run" and (chief.path / "run.json").exists()
    with pytest.raises(ConfigError, match="Training on 2 workers needs output_dir"):
        open_run_folder(PipelineConfig(name="run"), ProcessRole(workers=2))


def test_no_learning_rate_scaling_on_one_replica():
    cfg = PipelineConfig(
        distribute={"scale_learning_rate": True}, train={"learning_rate": 0.01, "batch_size": 8}
    )
    strategy = tf.distribute.get_strategy()
    assert distributed_train_config(cfg.train, cfg.distribute, strategy).learning_rate == 0.01
    assert strategy_summary(cfg, strategy)["global batch"] == "8 per replica x 1 = 8"


# --------------------------------------------------------------------------- 2 logical CPUs

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from kerastrain import ConfigError
    from kerastrain.config import DistributeConfig, load_config
    from kerastrain.data.prepare import prepare_data
    from kerastrain.distribute import make_strategy, strategy_name, strategy_summary
    from kerastrain.pipeline import fit_pipeline
    from kerastrain.training import build_compiled_model

    out = sys.argv[1]
    common = dict(data="iris", model="mlp", seed=3, export={"formats": []},
                  model_options={"width": 16, "dropout": 0.0},
                  data_options={"validation_split": 0.2, "test_split": 0.2})
    train = {"epochs": 2, "optimizer": "sgd", "learning_rate": 0.1,
             "early_stopping": None, "verbose": 0, "execution": {"mixed_precision": "float32"}}
    # 90 training rows: 3 steps of 30 examples either way.
    single = fit_pipeline(**common, strategy="cpu", train={**train, "batch_size": 30},
                          output_dir=out + "/single")
    mirrored = fit_pipeline(**common, strategy="mirrored", train={**train, "batch_size": 15},
                            output_dir=out + "/mirrored")
    diffs = [float(np.max(np.abs(a - b))) for a, b in
             zip(single.model.get_weights(), mirrored.model.get_weights())]
    moved = float(np.max(np.abs(single.history["loss"][0] - single.history["loss"][-1])))

    strategy = make_strategy("mirrored")
    cfg = load_config(common, train={**train, "batch_size": 15},
                      distribute={"scale_learning_rate": True})
    prepared = prepare_data(cfg.data, cfg.data_options, cfg.seed)
    model = build_compiled_model(
        cfg.train, prepared, strategy, model_spec=cfg.model, model_options=cfg.model_options,
        batch_size=cfg.batch_size, distribute=cfg.distribute)

    start = time.perf_counter()
    try:
        make_strategy("tpu", DistributeConfig(tpu_address="local"))
        tpu = "no error"
    except ConfigError as exc:
        tpu = str(exc)
    print(json.dumps({
        "max_weight_diff": max(diffs), "loss_moved": moved,
        "mirrored_replicas": mirrored.model.distribute_strategy.num_replicas_in_sync,
        "report": mirrored.report_path.read_text(),
        "auto": strategy_name(make_strategy("auto")),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "scaled_lr": float(model.optimizer.learning_rate.numpy()),
        "summary": strategy_summary(cfg, strategy),
        "tpu_error": tpu, "tpu_seconds": time.perf_counter() - start}))
""")


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored")
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",
    }  # skips importing Keras 3
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_mirrored_over_two_cpus_matches_one_device_with_the_same_global_batch(mirrored_run):
    assert mirrored_run["mirrored_replicas"] == 2
    assert mirrored_run["loss_moved"] > 1e-2  # training changed the weights noticeably
    assert mirrored_run["max_weight_diff"] < 1e-5
    assert "15 per replica x 2 = 30" in mirrored_run["report"]
    assert "MirroredStrategy, 2 replica(s)" in mirrored_run["report"]


@pytest.mark.subprocess
def test_learning_rate_scales_with_the_replicas_when_asked(mirrored_run):
    assert mirrored_run["scaled_lr"] == pytest.approx(0.2)
    assert mirrored_run["summary"]["learning rate"] == "0.1 x 2 replicas = 0.2 (linear scaling)"


@pytest.mark.subprocess
def test_auto_does_not_mirror_over_logical_cpus_and_local_tpu_fails_fast(mirrored_run):
    if not mirrored_run["gpus"]:
        assert mirrored_run["auto"] == "the default strategy"
    assert "No TPU could be initialized at 'local'" in mirrored_run["tpu_error"]
    assert mirrored_run["tpu_seconds"] < 30
