"""Distributed search on one machine: KerasTuner's chief/worker mode.

This process is the chief: it serves the oracle over gRPC on the loopback
interface. Each worker is a new Python process (``python -m
kerastrain.tune.worker FOLDER``) started with KerasTuner's environment
(``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``);
it reads the search's config from the folder, prepares the same data with the
same seed, and asks the chief for trials until the oracle says stop.

The chief loop is KerasTuner's `start_server`, with two changes: it polls
every fraction of a second (KerasTuner sleeps 20 s while trials finish) and it
stops, with the workers' last log lines, when every worker has exited.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import kerastrain
from kerastrain.config import PipelineConfig, save_config
from kerastrain.errors import ConfigError, TuningError, message
from kerastrain.tune.runner import atomic_state_files

logger = logging.getLogger(__name__)

__all__ = ["serve", "WORKER_CONFIG"]

WORKER_CONFIG = "search_config.yaml"
HOST = "127.0.0.1"
POLL_S = 0.2
EXIT_WAIT_S = 120
EXIT_GRACE_S = 0.5


def _check_portable(config: PipelineConfig) -> None:
    """Workers rebuild the run from YAML: everything must be nameable."""
    problems = []
    if not isinstance(config.data, str):
        problems.append("data (give a path, 'digits' or 'tfds:NAME')")
    if not isinstance(config.model, str):
        problems.append("model (give a registered factory name)")
    if config.tune.build is not None and not isinstance(config.tune.build, str):
        problems.append("tune.build (give its import path 'module:function')")
    if not isinstance(config.strategy, (str, Mapping)):
        problems.append("strategy (give its name, or its kind and options)")
    if problems:
        raise ConfigError(
            message(
                "A search with worker processes rebuilds the run from its YAML config in each "
                "worker, so these options must be names, not Python objects",
                allowed="; ".join(problems),
            )
        )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_worker(index: int, port: int, directory: Path) -> tuple[subprocess.Popen, Path]:
    root = str(Path(kerastrain.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env.update(
        KERASTUNER_TUNER_ID=f"tuner{index}",
        KERASTUNER_ORACLE_IP=HOST,
        KERASTUNER_ORACLE_PORT=str(port),
        TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        PYTHONPATH=os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])]),
    )
    logs = directory / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"tuner{index}.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", "kerastrain.tune.worker", str(directory)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    logger.info("Started worker tuner%d (pid %d), log %s.", index, process.pid, log)
    return process, log


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def serve(search: Any, config: PipelineConfig, workers: int) -> None:
    """Serves the search's oracle until `workers` worker processes finish it.

    Args:
        search: The opened search (`open_search(..., role="chief")`).
        config: The run's config (written for the workers).
        workers: How many worker processes to start.

    Raises:
        ConfigError: When the config holds objects that YAML cannot name.
        TuningError: When a worker exits with an error (its last log lines
            are in the message).
    """
    _check_portable(config)
    with atomic_state_files():
        _serve(search, config, workers)


def _serve(search: Any, config: PipelineConfig, workers: int) -> None:
    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    directory = search.directory
    save_config(config, directory / WORKER_CONFIG)
    search.runner.save()
    oracle = search.oracle
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{HOST}:0")
    server.start()
    logger.info("Chief: serving the oracle on %s:%d to %d worker(s).", HOST, port, workers)
    processes: list[tuple[subprocess.Popen, Path]] = []
    try:
        processes = [_start_worker(i, port, directory) for i in range(1, workers + 1)]
        reported = len(oracle.end_order)
        finished = False
        while not finished:
            time.sleep(POLL_S)
            for trial_id in list(oracle.end_order[reported:]):
                search.runner.progress.end(
                    oracle.trials[trial_id], oracle, search.runner.get_trial_dir(trial_id)
                )
            reported = len(oracle.end_order)
            finished = servicer.stop_triggered and exit_chief(oracle)
            if all(p.poll() is not None for p, _ in processes):
                break
        # Every worker has been told to stop: give them a moment to exit.
        deadline = time.monotonic() + (EXIT_GRACE_S if finished else EXIT_WAIT_S)
        for process, _ in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass  # still running: the loop below kills it
        lingering = [p for p, _ in processes if p.poll() is None]
    finally:
        server.stop(grace=1)
        for process, _ in processes:
            _stop(process)
    if finished:  # stopped by us while tearing TensorFlow down after the search: not a failure
        processes = [(p, log) for p, log in processes if p not in lingering]
    failed = [(p, log) for p, log in processes if p.returncode != 0]
    if failed:
        process, log = failed[0]
        raise TuningError(
            f"{len(failed)} worker(s) failed; the first exited with code "
            f"{process.returncode}. Last lines of {log}:\n{_tail(log)}"
        )
