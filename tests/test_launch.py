"""The local launcher: real worker processes on 127.0.0.1, each with its own
TF_CONFIG. One scenario (a worker killed mid-training, then the same launch
rerun) serves several tests, since each launch costs seconds of start-up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from kerastrain import ConfigError, WorkerFailed
from kerastrain._keras import keras
from kerastrain.cli import main as cli_main
from kerastrain.launch import Launcher, _launch_config, _reason, free_ports
from kerastrain.pipeline import fit_pipeline

EPOCHS = 3
#: Iris with 90 training rows: one full batch of 45 per worker, so that the
#: order of the rows (reshuffled per epoch, restarted by a resume) does not
#: change the result, and a single process with a batch of 90 must agree.
CONFIG = {
    "data": "iris",
    "model": "mlp",
    "seed": 5,
    "model_options": {"width": 16, "dropout": 0.0},
    "data_options": {"validation_split": 0.2, "test_split": 0.2},
    "train": {
        "epochs": EPOCHS,
        "batch_size": 45,
        "optimizer": "sgd",
        "learning_rate": 0.1,
        "early_stopping": None,
        "verbose": 2,
        "execution": {"mixed_precision": "float32"},
    },  # weights compared to 1e-5 across processes
    "export": {"formats": ["keras"]},
}


# --------------------------------------------------------------------------- before any process


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"config": {**CONFIG, "strategy": "mirrored"}}, r"'strategy'.*'auto' or 'multi_worker'"),
        (
            {"config": {**CONFIG, "strategy": "multi_worker"}, "ps": 1},
            r"'strategy'.*'parameter_server'",
        ),
        ({"config": CONFIG, "workers": 0}, r"'workers' option must be an integer >= 1"),
        ({"config": {**CONFIG, "train": {"epochs": 0}}}, r"'train.epochs'.*> 0"),
    ],
)
def test_a_bad_launch_is_refused_before_any_process_starts(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Launcher(**kwargs)


def test_every_process_gets_the_same_seed_name_and_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _launch_config({"data": "iris"}, ps=0)
    assert cfg.strategy == "multi_worker" and cfg.seed is not None
    assert cfg.output_dir == str(tmp_path / "saved_models" / cfg.name)
    assert _launch_config({"data": "iris"}, ps=1).strategy == "parameter_server"
    # The config.yaml of a run given a MultiWorkerMirroredStrategy object launches too.
    recorded = {"data": "iris", "strategy": {"kind": "multi_worker"}}
    assert _launch_config(recorded, ps=0).strategy == "multi_worker"


def test_why_a_process_died_is_read_from_its_exit_and_output():
    assert _reason(-signal.SIGKILL, []) == "was killed by signal SIGKILL"
    tail = [
        "Traceback (most recent call last):",
        '  File "x.py", line 1',
        "tensorflow.python.framework.errors_impl.UnavailableError: peer went away",
    ]
    assert _reason(1, tail) == "exited with code 1: UnavailableError: peer went away"
    assert (
        _reason(2, ["12:00:00 ERROR kerastrain.launch: DataError: 3 rows are NaN"])
        == "exited with code 2: DataError: 3 rows are NaN"
    )
    assert _reason(0, []).startswith("exited (code 0) while the chief")


def test_a_finished_run_is_not_launched_over(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(ConfigError, match="holds a finished run"):
        Launcher({"data": "iris", "output_dir": str(tmp_path)})
    Launcher({"data": "iris", "output_dir": str(tmp_path), "overwrite": True})


def test_free_ports_are_distinct():
    ports = free_ports(4)
    assert len(set(ports)) == 4 and all(0 < p < 65536 for p in ports)


def test_cli_launch_refuses_bad_options_without_starting(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": "iris"}))
    assert cli_main(["launch", "--workers", "0", str(path)]) == 2
    assert "'workers' option must be an integer >= 1" in " ".join(capsys.readouterr().err.split())


# --------------------------------------------------------------------------- kill, then rerun


@pytest.fixture(scope="module")
def killed_then_rerun(tmp_path_factory):
    """Launch 1 is killed after epoch 1 (worker 1 gets SIGKILL); launch 2 resumes."""
    root = tmp_path_factory.mktemp("launch")
    config = {**CONFIG, "output_dir": str(root / "run")}
    epochs: dict[int, list[str]] = {1: [], 2: []}
    lines: dict[int, list[tuple[str, str]]] = {1: [], 2: []}

    def watch(launch_no: int, launcher: Launcher):
        def on_line(task: str, line: str) -> None:
            lines[launch_no].append((task, line))
            if task == "worker 0" and line.startswith("Epoch "):
                epochs[launch_no].append(line.split()[1])
                # The chief starts epoch 2 only after backing up epoch 1.
                if launch_no == 1 and line.startswith("Epoch 2/"):
                    launcher.kill("worker 1", signal.SIGKILL)

        return on_line

    first = Launcher(config, workers=2, timeout=240)
    first.on_line = watch(1, first)
    first.start()
    with pytest.raises(WorkerFailed) as failed:
        first.wait()
    backup_after_kill = sorted(p.name for p in (root / "run" / "backup").rglob("*"))
    states = {name: p.returncode for name, p in first.processes.items()}

    second = Launcher(config, workers=2, timeout=240)
    second.on_line = watch(2, second)
    second.start()
    result = second.wait()

    # One process, the same global batch (90), the same seed.
    single = fit_pipeline(
        config={**CONFIG, "train": {**CONFIG["train"], "batch_size": 90, "verbose": 0}},
        strategy="cpu",
        output_dir=str(root / "single"),
    )
    return {
        "failed": failed.value,
        "states": states,
        "backup_after_kill": backup_after_kill,
        "epochs": epochs,
        "lines": lines,
        "result": result,
        "single": single,
    }


def _temporary_folders(lines: list[tuple[str, str]], task: str, what: str) -> list[Path]:
    return [
        Path(line.split(what)[1].strip().rstrip("."))
        for t, line in lines
        if t == task and what in line
    ]


@pytest.mark.subprocess
def test_the_launcher_reports_which_worker_died_and_why(killed_then_rerun):
    failed = killed_then_rerun["failed"]
    assert failed.task == "worker 1" and failed.returncode == -signal.SIGKILL
    assert "worker 1 was killed by signal SIGKILL; the other processes were stopped" in str(failed)
    # The chief was stopped, not left waiting for its dead peer.
    assert killed_then_rerun["states"]["worker 0"] is not None


@pytest.mark.subprocess
def test_a_rerun_resumes_from_the_backup_without_losing_epochs(killed_then_rerun):
    assert killed_then_rerun["backup_after_kill"]  # epoch 1 was backed up
    assert killed_then_rerun["epochs"][1] == [f"1/{EPOCHS}", f"2/{EPOCHS}"]
    # The rerun starts at epoch 2: epoch 1 is neither lost nor trained twice.
    assert killed_then_rerun["epochs"][2] == [f"{e}/{EPOCHS}" for e in range(2, EPOCHS + 1)]
    result = killed_then_rerun["result"]
    assert result.stop_reason.startswith("completed")
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "finished"


@pytest.mark.subprocess
def test_only_the_chief_writes_the_run_folder(killed_then_rerun):
    result, single = killed_then_rerun["result"], killed_then_rerun["single"]

    def written(folder: Path) -> list[str]:
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))

    # The chief writes what one process writes; nothing comes from worker 1.
    assert written(result.run_dir) == written(single.run_dir)
    assert "model.keras" in written(result.run_dir)
    assert result.artifacts == {"keras": result.run_dir / "model.keras"}
    # Worker 1 wrote its copy to a temporary folder and removed it; the
    # launcher removed the one its killed predecessor left.
    lines = killed_then_rerun["lines"]
    writes = "this worker writes to the temporary folder"
    used = _temporary_folders(lines[2], "worker 1", writes)
    assert len(used) == 1 and not used[0].exists()
    removed = _temporary_folders(lines[2], "worker 1", "Removed this worker's temporary folder")
    assert removed == used
    killed = _temporary_folders(lines[1], "worker 1", writes)
    assert len(killed) == 1 and not killed[0].exists()
    assert not _temporary_folders(lines[2], "worker 0", writes)
    report = result.report_path.read_text()
    assert "MultiWorkerMirroredStrategy, 2 replica(s) on 2 workers" in report
    assert "45 per replica x 2 = 90" in report


@pytest.mark.subprocess
def test_only_the_chief_explains_and_reports(killed_then_rerun):
    lines = killed_then_rerun["lines"][2]

    def stages(task: str) -> set[str]:
        return {
            line.split("Stage ")[1].split()[0]
            for t, line in lines
            if t == task and "Stage " in line
        }

    assert {"explain", "report"} <= stages("worker 0")
    # Worker 1 trains and evaluates with the chief, but its explanation and
    # report would go to a folder that is removed: it skips them.
    assert "train" in stages("worker 1")
    assert not {"explain", "report"} & stages("worker 1")


@pytest.mark.subprocess
def test_two_workers_match_one_process_with_the_same_global_batch(killed_then_rerun):
    result, single = killed_then_rerun["result"], killed_then_rerun["single"]
    launched = keras.models.load_model(result.artifacts["keras"])
    diffs = [
        np.max(np.abs(a - b)) for a, b in zip(single.model.get_weights(), launched.get_weights())
    ]
    assert max(diffs) < 1e-5
    # The resumed epochs log the same losses as the single process's.
    np.testing.assert_allclose(result.history["loss"][-1], single.history["loss"][-1], rtol=1e-5)
    assert single.history["loss"][0] - single.history["loss"][-1] > 1e-2  # it did train


# --------------------------------------------------------------------------- parameter servers


@pytest.mark.subprocess
def test_parameter_server_training_with_one_ps_and_two_workers_completes(tmp_path, capsys):
    path = tmp_path / "cluster.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": "iris",
                "model": "mlp",
                "seed": 2,
                "output_dir": str(tmp_path / "run"),
                "model_options": {"width": 16},
                "export": {"formats": ["keras"]},
                "train": {"epochs": 2, "batch_size": 16, "early_stopping": None},
            }
        )
    )
    assert cli_main(["launch", "--workers", "2", "--ps", "1", "--timeout", "240", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"Run folder: {tmp_path / 'run'}" in out
    for task in ("chief 0", "worker 0", "worker 1", "ps 0"):
        assert f"[{task}]" in err
    assert "Serving as ps 0 of the parameter-server cluster" in err
    run = Path(tmp_path / "run")
    assert len(json.loads((run / "history.json").read_text())["loss"]) == 2
    report = (run / "report.html").read_text()
    assert "ParameterServerStrategy, 1 replica(s) on 2 workers" in report
    assert keras.models.load_model(run / "model.keras").predict(
        np.zeros((1, 4)), verbose=0
    ).shape == (1, 3)


# --------------------------------------------------------------------------- Slurm and TFJob


def _consecutive_free_ports() -> int:
    """A port `p` with `p + 1` free too (a Slurm node's tasks take consecutive ports)."""
    for _ in range(50):
        port = free_ports(1)[0]
        if port < 65535 and _free(port + 1):
            return port
    raise RuntimeError("no two consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _slurm_env(tmp_path: Path, procid: int, tasks: int = 2) -> dict[str, str]:
    """What `srun` gives each task of a one-node step on 127.0.0.1, and a
    stand-in `scontrol` first on PATH (older TensorFlow resolvers call it to
    expand the node list; it logs its calls)."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        scontrol = bin_dir / "scontrol"
        scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\necho 127.0.0.1\n')
        scontrol.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TF_CONFIG"))}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        SLURM_JOB_ID="4242",
        SLURM_PROCID=str(procid),
        SLURM_NTASKS=str(tasks),
        SLURM_STEP_NUM_TASKS=str(tasks),
        SLURM_STEP_NODELIST="127.0.0.1",
        SLURM_STEP_TASKS_PER_NODE=str(tasks),
        SLURM_JOB_NODELIST="127.0.0.1",
        TMPDIR=str(tmp_path / f"tmp{procid}"),
        PYTHONPATH=os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
        ),
        TF_USE_LEGACY_KERAS="1",
    )
    (tmp_path / f"tmp{procid}").mkdir(exist_ok=True)
    return env


def test_the_slurm_step_becomes_the_tf_config_of_each_task(tmp_path, monkeypatch):
    from kerastrain.distribute import slurm_tf_config

    for key, value in _slurm_env(tmp_path, procid=1).items():
        monkeypatch.setenv(key, value)
    config = slurm_tf_config(port_base=7000)
    assert config == {
        "cluster": {"worker": ["127.0.0.1:7000", "127.0.0.1:7001"]},
        "task": {"type": "worker", "index": 1},
    }
    monkeypatch.delenv("SLURM_PROCID")
    with pytest.raises(ConfigError, match=r"SLURM_PROCID.*srun"):
        slurm_tf_config()


def test_cluster_slurm_needs_the_multi_worker_strategy():
    from kerastrain.config import DistributeConfig
    from kerastrain.distribute import make_strategy

    with pytest.raises(ConfigError, match=r"distribute\.cluster.*multi_worker.*'cpu'"):
        make_strategy("cpu", DistributeConfig(cluster="slurm"))
    with pytest.raises(ConfigError, match=r"distribute\.cluster.*one of 'tf_config', 'slurm'"):
        DistributeConfig(cluster="slurmm")


def _sbatch_config(text: str) -> dict:
    return yaml.safe_load(text.split("<<'KERASTRAIN_CONFIG'\n")[1].split("KERASTRAIN_CONFIG\n")[0])


def test_emitted_sbatch_script_and_tfjob_have_what_each_needs(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "output_dir": str(tmp_path / "run")}))
    script = tmp_path / "job.sbatch"
    argv = ["launch", "--emit", "slurm", "--workers", "3", "--output", str(script), str(path)]
    assert cli_main(argv) == 0
    assert capsys.readouterr().out.strip() == str(script)
    text = script.read_text()
    assert text.startswith("#!/bin/bash\n") and os.access(script, os.X_OK)
    directives = dict(
        line[len("#SBATCH --") :].split("=", 1)
        for line in text.splitlines()
        if line.startswith("#SBATCH")
    )
    assert directives["nodes"] == directives["ntasks"] == "3"
    assert directives["ntasks-per-node"] == "1" and directives["job-name"]
    assert 'srun --ntasks=3 kerastrain run "$CONFIG"' in text
    emitted = _sbatch_config(text)
    assert emitted["strategy"] == "multi_worker"
    assert emitted["distribute"]["cluster"] == "slurm"
    assert isinstance(emitted["seed"], int) and emitted["output_dir"] == str(tmp_path / "run")
    assert emitted["train"]["batch_size"] == 45 and emitted["train"]["epochs"] == EPOCHS
    assert emitted["train"]["execution"]["mixed_precision"] == "float32"

    manifest = tmp_path / "job.yaml"
    argv = ["launch", "--emit", "tfjob", "--workers", "2", "--gpus", "1", "--image", "me/kt:1"]
    assert cli_main([*argv, "--output", str(manifest), str(path)]) == 0
    config_map, job = yaml.safe_load_all(manifest.read_text())
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "tensorflow" and container["image"] == "me/kt:1"
    assert container["command"] == ["kerastrain", "run", "/etc/kerastrain/config.yaml"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["volumeMounts"][0]["mountPath"] == "/etc/kerastrain"
    assert pod["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_map["kind"] == "ConfigMap"
    emitted = yaml.safe_load(config_map["data"]["config.yaml"])
    assert emitted["strategy"] == "multi_worker"
    assert emitted["distribute"]["cluster"] == "tf_config"  # the operator sets TF_CONFIG
    assert emitted["seed"] == _sbatch_config(text)["seed"]  # one run, whatever the cluster


def test_a_job_that_cannot_run_on_a_cluster_is_not_emitted(tmp_path):
    from kerastrain.emit import emit_job

    output = tmp_path / "job.sbatch"
    arrays = (np.zeros((10, 2)), np.zeros(10))
    with pytest.raises(ConfigError, match="in-memory data"):
        emit_job({"data": arrays, "output_dir": str(tmp_path / "r")}, "slurm", output=output)
    with pytest.raises(ConfigError, match=r"'strategy'.*'multi_worker'"):
        emit_job({**CONFIG, "strategy": "mirrored"}, "slurm", output=output)
    with pytest.raises(ConfigError, match=r"'emit' option must be one of 'slurm', 'tfjob'"):
        emit_job(CONFIG, "k8s", output=output)
    assert not output.exists()


@pytest.mark.subprocess
def test_two_slurm_tasks_train_to_the_launchers_result(killed_then_rerun, tmp_path):
    """`srun kerastrain run` on 2 tasks (SLURM_* set as srun does, on 127.0.0.1)
    trains as the loopback launcher's 2 workers do."""
    config = {
        **CONFIG,
        "strategy": "multi_worker",
        "distribute": {"cluster": "slurm", "port_base": _consecutive_free_ports()},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "kerastrain.cli", "run", str(path)],
            env=_slurm_env(tmp_path, procid),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for procid in (0, 1)
    ]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "2 worker(s) from the Slurm step, this task is worker 1" in outputs[1]
    launched = killed_then_rerun["result"]
    slurm = keras.models.load_model(tmp_path / "run" / "model.keras")
    reference = keras.models.load_model(launched.artifacts["keras"])
    diffs = [np.max(np.abs(a - b)) for a, b in zip(reference.get_weights(), slurm.get_weights())]
    assert max(diffs) < 1e-5
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    np.testing.assert_allclose(history["loss"][-1], launched.history["loss"][-1], rtol=1e-5)
    report = (tmp_path / "run" / "report.html").read_text()
    assert "MultiWorkerMirroredStrategy, 2 replica(s) on 2 workers" in report
