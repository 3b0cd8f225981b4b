"""A cluster of training processes on this machine, for trying a cluster config.

``kerastrain launch --workers 2 [--ps 1] CONFIG.yaml`` (or :func:`launch`)
starts one Python process per task on 127.0.0.1, each with free ports and
its own ``TF_CONFIG``, as Kubernetes TFJob or Vertex AI would start them on
separate machines (Slurm starts them with ``SLURM_*`` variables instead; see
`distribute={"cluster": "slurm"}` and ``kerastrain launch --emit slurm``):
every process runs the same `fit_pipeline`
call with `strategy="multi_worker"` (or `"parameter_server"` with `--ps`).
Their output is streamed with a prefix (``[worker 1] ...``); the chief writes
its result to a JSON file that the launcher returns. When a process dies,
the launcher stops the others and raises :class:`WorkerFailed`, naming the
process and why; running the same launch again resumes from the training
backup.

The launcher itself never imports TensorFlow.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import kerastrain
from kerastrain.config import PipelineConfig, load_config
from kerastrain.config.distribute import is_chief_task, tf_config
from kerastrain.errors import (
    ConfigError,
    DataError,
    ExportError,
    WorkerFailed,
    config_error,
    message,
    one_of,
)
from kerastrain.files import write_json
from kerastrain.logs import log_to_stderr
from kerastrain.runs import RunFolder, run_seed

logger = logging.getLogger("kerastrain.launch")  # also when run as __main__ in each process

__all__ = ["launch", "Launcher", "LaunchResult", "free_ports"]

#: Lines of each process's output kept to explain a failure.
TAIL_LINES = 60
POLL_SECONDS = 0.05
#: Seconds a process gets to exit after SIGTERM before SIGKILL.
STOP_SECONDS = 5.0
_EXCEPTION = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b:?.*)")


@dataclasses.dataclass
class LaunchResult:
    """What the chief of a launched cluster produced.

    Attributes:
        run_dir: The run folder (written by the chief alone).
        metrics: As `PipelineResult.metrics`.
        history: As `PipelineResult.history`.
        artifacts: Format name to path.
        report_path: The run's report.
        stop_reason: Why training stopped.
        timings: Seconds per pipeline stage, on the chief.
        pipeline_seconds: Seconds the chief spent in `fit_pipeline`.
        seconds: Seconds from the first process's start to the chief's result.
        tasks: The processes, e.g. `["worker 0", "worker 1"]`.
        config: The config every process ran (strategy, seed, name and
            output_dir resolved once for all).
    """

    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    artifacts: dict[str, Path]
    report_path: Path
    stop_reason: str
    timings: dict[str, float]
    pipeline_seconds: float
    seconds: float
    tasks: list[str]
    config: PipelineConfig


@dataclasses.dataclass
class _Task:
    kind: str
    index: int
    address: str

    @property
    def name(self) -> str:
        return f"{self.kind} {self.index}"


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _launch_config(config: Any, ps: int) -> PipelineConfig:
    """The config every process runs: strategy, seed, name and folder fixed once."""
    cfg = load_config(config)
    wanted = "parameter_server" if ps else "multi_worker"
    if cfg.strategy_kind is None:
        raise config_error(
            "strategy",
            cfg.strategy,
            f"'auto' or {wanted!r} for a launch (a strategy object cannot be "
            "sent to other processes)",
        )
    # A config.yaml records a strategy object by kind: {kind: multi_worker} launches too.
    if cfg.strategy_kind not in ("auto", wanted):
        raise config_error(
            "strategy",
            cfg.strategy,
            f"'auto' or {wanted!r} for a launch with "
            f"{'parameter servers' if ps else 'workers only'}",
        )
    name = cfg.name or RunFolder.default_name(cfg.model)
    output_dir = os.path.abspath(RunFolder.location(cfg.output_dir, name))
    RunFolder.check(Path(output_dir), cfg.overwrite)  # before any process starts
    seed = run_seed(Path(output_dir), cfg.seed, cfg.train.backup.resume)  # a rerun keeps its seed
    return dataclasses.replace(cfg, strategy=wanted, seed=seed, name=name, output_dir=output_dir)


def _reason(returncode: int, tail: Sequence[str]) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by signal {name}"
    if returncode == 0:
        return "exited (code 0) while the chief was still training"
    for line in reversed(tail):
        found = _EXCEPTION.search(line)
        if found:
            return f"exited with code {returncode}: {found.group(1).strip()}"
    last = next((line for line in reversed(tail) if line.strip()), "")
    return f"exited with code {returncode}" + (f": {last.strip()}" if last else "")


class Launcher:
    """Starts, watches and stops the processes of a local cluster.

    `launch` is `start` then `wait`; use the class to act on the processes
    while they run (`kill` one to rehearse a preemption).

    Args:
        config: A `PipelineConfig`, a mapping, or a YAML path. Its strategy
            must be `"auto"` or the one the launch runs.
        workers: Worker processes. Defaults to `2`.
        ps: Parameter-server processes; with any, a chief (the coordinator)
            is started too and the strategy is `"parameter_server"`.
            Defaults to `0`.
        env: Extra environment variables of every process. Defaults to `None`:
            each process gets its own `TMPDIR` in the launch's temporary
            folder, which is removed when the processes end, and
            `TF_USE_LEGACY_KERAS=1` (`tf.keras` is tf_keras, as kerastrain
            needs; TensorFlow then skips importing Keras 3).
        timeout: Seconds after which every process is stopped and
            `WorkerFailed` raised. Defaults to `None` (no limit).
        stream: Where the prefixed output goes. Defaults to `sys.stderr`.
        on_line: Called as `on_line(task, line)` for each line of output.
            Defaults to `None`.
        python: The interpreter. Defaults to `sys.executable`.
        grace: Seconds the other workers get to finish after the chief has.
            Defaults to `60.0`.

    Raises:
        ConfigError: For a bad config or process count, before any process
            starts.
    """

    def __init__(
        self,
        config: Any,
        workers: int = 2,
        ps: int = 0,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stream: TextIO | None = None,
        on_line: Callable[[str, str], None] | None = None,
        python: str | None = None,
        grace: float = 60.0,
    ):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise config_error("workers", workers, "an integer >= 1")
        if not isinstance(ps, int) or isinstance(ps, bool) or ps < 0:
            raise config_error("ps", ps, "an integer >= 0")
        if timeout is not None and timeout <= 0:
            raise config_error("timeout", timeout, "> 0, or None for no limit")
        self.config = _launch_config(config, ps)
        self.workers, self.ps = workers, ps
        self.env = dict(env or {})
        self.timeout = timeout
        self.stream = stream
        self.on_line = on_line
        self.python = python or sys.executable
        self.grace = grace
        self.tasks: list[_Task] = []
        self.processes: dict[str, subprocess.Popen] = {}
        self._tails: dict[str, collections.deque] = {}
        self._readers: list[threading.Thread] = []
        self._exited: dict[str, float] = {}
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._started = 0.0

    # ----------------------------------------------------------------- start

    @property
    def chief(self) -> str:
        """The chief's name: `"chief 0"` with parameter servers, else `"worker 0"`."""
        return "chief 0" if self.ps else "worker 0"

    def _cluster(self) -> list[_Task]:
        count = self.workers + self.ps + (1 if self.ps else 0)
        addresses = [f"127.0.0.1:{port}" for port in free_ports(count)]
        tasks = []
        if self.ps:
            tasks.append(_Task("chief", 0, addresses.pop(0)))
        tasks += [_Task("worker", i, addresses.pop(0)) for i in range(self.workers)]
        tasks += [_Task("ps", i, addresses.pop(0)) for i in range(self.ps)]
        return tasks

    def _tf_config(self, task: _Task) -> str:
        by_kind = {
            kind: [t.address for t in self.tasks if t.kind == kind]
            for kind in ("chief", "worker", "ps")
        }
        chief = by_kind["chief"][0] if by_kind["chief"] else None
        return json.dumps(
            tf_config(
                by_kind["worker"], task.index, ps=by_kind["ps"], chief=chief, task_type=task.kind
            )
        )

    def _environment(self, task: _Task) -> dict[str, str]:
        env = {**os.environ, **self.env}
        if "TMPDIR" not in self.env:  # removed with the launch, even after a SIGKILL
            scratch = (self._folder or Path()) / f"tmp-{task.kind}{task.index}"
            scratch.mkdir()
            env["TMPDIR"] = str(scratch)
        package_root = str(Path(kerastrain.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        # tf.keras is tf_keras there (what kerastrain builds anyway), and TensorFlow
        # skips importing Keras 3: about a third of each process's start-up.
        env.setdefault("TF_USE_LEGACY_KERAS", "1")
        env["TF_CONFIG"] = self._tf_config(task)
        return env

    def start(self) -> Launcher:
        """Starts every process (parameter servers and workers before the chief)."""
        if self.processes:
            raise RuntimeError("This launcher has started already; make a new one.")
        self._folder = Path(tempfile.mkdtemp(prefix="kerastrain-launch-"))
        config_file = self._folder / "config.pickle"
        try:
            config_file.write_bytes(pickle.dumps(self.config))
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise ConfigError(
                message(
                    f"The config cannot be sent to the worker processes ({exc})",
                    allowed="Pass data, model and callables that can be pickled: names, "
                    "arrays, functions defined at module level",
                )
            ) from None
        self.tasks = self._cluster()
        order = sorted(self.tasks, key=lambda t: t.kind == "chief" or t.name == self.chief)
        logger.info(
            "Launching %s (run folder %s).",
            ", ".join(t.name for t in self.tasks),
            self.config.output_dir,
        )
        self._started = time.perf_counter()
        for task in order:
            command = [
                self.python,
                "-m",
                "kerastrain.launch",
                str(config_file),
                str(self._folder / "result.json"),
            ]
            process = subprocess.Popen(
                command,
                env=self._environment(task),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,
            )
            self.processes[task.name] = process
            self._tails[task.name] = collections.deque(maxlen=TAIL_LINES)
            reader = threading.Thread(
                target=self._pump,
                args=(task.name, process),
                daemon=True,
                name=f"kerastrain-launch-{task.name}",
            )
            reader.start()
            self._readers.append(reader)
        return self

    def _pump(self, name: str, process: subprocess.Popen) -> None:
        stream = self.stream or sys.stderr
        for line in process.stdout:  # type: ignore[union-attr]
            line = line.rstrip("\n")
            self._tails[name].append(line)
            with self._lock:
                stream.write(f"[{name}] {line}\n")
                stream.flush()
            if self.on_line is not None:
                try:
                    self.on_line(name, line)
                except Exception:  # keep reading, or the process blocks on a full pipe
                    logger.exception("on_line failed on a line of %s.", name)

    # ----------------------------------------------------------------- watch

    def kill(self, task: str, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to one process, e.g. `kill("worker 1")` (a preemption)."""
        if task not in self.processes:
            raise config_error("task", task, one_of(self.processes), self.processes)
        logger.info("Sending %s to %s.", signal.Signals(sig).name, task)
        try:
            os.kill(self.processes[task].pid, sig)
        except ProcessLookupError:
            pass  # it has already exited

    def _must_outlive_chief(self, name: str) -> bool:
        # Parameter-server workers and servers serve until they are stopped.
        return bool(self.ps) and name != self.chief

    def _failure(self) -> WorkerFailed | None:
        now = time.monotonic()
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None and name not in self._exited:
                self._exited[name] = now
        failed = [
            (self._exited[n], self.processes[n].returncode >= 0, n)
            for n in self._exited
            if self.processes[n].returncode != 0 or self._must_outlive_chief(n)
        ]
        if not failed:
            return None
        name = min(failed)[2]
        code = self.processes[name].returncode
        return WorkerFailed(name, code, _reason(code, self._tails[name]), self._tails[name])

    def wait(self) -> LaunchResult:
        """Waits for the chief's result, stopping everything on a failure.

        Returns:
            The chief's result.

        Raises:
            WorkerFailed: When a process dies (the others are stopped first),
                or the launch exceeds `timeout`.
        """
        if not self.processes:
            raise RuntimeError("Call start() before wait().")
        chief = self.processes[self.chief]
        try:
            while True:
                failure = self._failure()
                if failure is not None:
                    raise failure
                if chief.poll() == 0:
                    break
                if self.timeout is not None and time.perf_counter() - self._started > self.timeout:
                    raise WorkerFailed(
                        self.chief,
                        None,
                        f"did not finish within the timeout of {self.timeout:g} s",
                        self._tails[self.chief],
                    )
                time.sleep(POLL_SECONDS)
            seconds = time.perf_counter() - self._started
            self._finish_others()
            return self._result(seconds)
        finally:
            self.stop()

    def _finish_others(self) -> None:
        """Lets the other workers finish (multi-worker), or stops them (parameter servers)."""
        if not self.ps:
            deadline = time.perf_counter() + self.grace
            for name, process in self.processes.items():
                try:
                    process.wait(timeout=max(0.0, deadline - time.perf_counter()))
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "%s was still running %g s after the chief finished; stopping it.",
                        name,
                        self.grace,
                    )
            failure = self._failure()
            if failure is not None:
                raise failure

    def stop(self) -> None:
        """Stops every process still running: SIGTERM, then SIGKILL."""
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.perf_counter() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.perf_counter()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        for reader in self._readers:
            reader.join(timeout=STOP_SECONDS)
        if self._folder is not None and all(p.poll() is not None for p in self.processes.values()):
            shutil.rmtree(self._folder, ignore_errors=True)

    def _result(self, seconds: float) -> LaunchResult:
        path = (self._folder or Path()) / "result.json"
        if not path.exists():
            raise WorkerFailed(
                self.chief, 0, "exited without writing its result", self._tails[self.chief]
            )
        data = json.loads(path.read_text())
        return LaunchResult(
            run_dir=Path(data["run_dir"]),
            metrics=data["metrics"],
            history=data["history"],
            artifacts={k: Path(v) for k, v in data["artifacts"].items()},
            report_path=Path(data["report_path"]),
            stop_reason=data["stop_reason"],
            timings=data["timings"],
            pipeline_seconds=data["pipeline_seconds"],
            seconds=seconds,
            tasks=[t.name for t in self.tasks],
            config=self.config,
        )

    def __enter__(self) -> Launcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group has already exited


def launch(config: Any, workers: int = 2, ps: int = 0, **options: Any) -> LaunchResult:
    """Trains ``config`` on a cluster of local processes and returns the chief's result.

    Args:
        config: A `PipelineConfig`, a mapping, or a YAML path (the keys of
            `fit_pipeline`). Its strategy must be `"auto"` or the one the
            launch runs; the seed, run name and `output_dir` are fixed here
            once for every process (`output_dir` defaults to
            `saved_models/<run name>`).
        workers: Worker processes. Defaults to `2`.
        ps: Parameter-server processes (with a chief that coordinates).
            Defaults to `0`: multi-worker mirrored training.
        **options: `env`, `timeout`, `stream`, `on_line`, `python`, `grace`;
            see `Launcher`.

    Returns:
        A `LaunchResult`.

    Raises:
        ConfigError: For a bad config, before any process starts.
        WorkerFailed: When a process dies; the others are stopped first.

    Example:
        >>> result = launch({"data": "iris", "output_dir": "runs/iris"})  # doctest: +SKIP
        >>> result.metrics["test"]["accuracy"]  # doctest: +SKIP
    """
    launcher = Launcher(config, workers, ps, **options)
    launcher.start()
    return launcher.wait()


# --------------------------------------------------------------------------- in each process


def _task_main(argv: Sequence[str]) -> int:
    """One process of a launch: `python -m kerastrain.launch CONFIG.pickle RESULT.json`."""
    parser = argparse.ArgumentParser(
        prog="python -m kerastrain.launch", description="One process of `kerastrain launch`."
    )
    parser.add_argument("config", help="the pickled PipelineConfig")
    parser.add_argument("result", help="where the chief writes its result (JSON)")
    args = parser.parse_args(argv)
    with log_to_stderr():
        return _run_task(args)


def _run_task(args: argparse.Namespace) -> int:
    config = pickle.loads(Path(args.config).read_bytes())
    from kerastrain.pipeline import fit_pipeline

    start = time.perf_counter()
    try:
        result = fit_pipeline(config=config)
    except (ConfigError, DataError, ExportError) as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        return 2
    if is_chief_task(os.environ.get("TF_CONFIG")):
        write_json(
            Path(args.result),
            {
                "run_dir": str(result.run_dir),
                "metrics": result.metrics,
                "history": result.history,
                "artifacts": {k: str(v) for k, v in result.artifacts.items()},
                "report_path": str(result.report_path),
                "stop_reason": result.stop_reason,
                "timings": result.timings,
                "pipeline_seconds": time.perf_counter() - start,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(_task_main(sys.argv[1:]))
