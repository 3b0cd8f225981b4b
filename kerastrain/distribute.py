"""The `tf.distribute` strategy behind ``strategy=``, and what follows from it.

One switch carries the same `fit_pipeline` call from a laptop CPU to GPUs, a
TPU, or a cluster of workers (TensorFlow's own engine, as Kubernetes TFJob,
Vertex AI or Slurm run it):

- :func:`make_strategy` turns the `strategy` option into a strategy, logging
  what it chose and why;
- a cluster is described by ``TF_CONFIG`` (:func:`tf_config` builds one);
  only the chief writes the run folder, the other workers write to temporary
  folders that are removed (:func:`process_role` tells
  `kerastrain.runs.open_run_folder` which this process is);
- :func:`distributed_train_config` scales the learning rate with the replicas
  when asked (the precision policy that suits the strategy's device is
  `kerastrain.training.precision.pick_precision`'s choice);
- parameter-server training feeds `model.fit` through dataset functions
  (`kerastrain.data.feed.coordinator_datasets`), as TensorFlow documents it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Mapping
from typing import Any, NoReturn
from urllib.parse import urlparse

from kerastrain._keras import tf
from kerastrain.config import DistributeConfig, PipelineConfig, TrainConfig
from kerastrain.config.distribute import (
    STRATEGIES,
    STRATEGY_KINDS,
    check_strategy_spec,
    is_chief_task,
    task_of,
    tf_config,
)
from kerastrain.errors import ConfigError, config_error, message, one_of
from kerastrain.mesh import mesh_shape
from kerastrain.runs import ProcessRole

logger = logging.getLogger(__name__)

__all__ = [
    "make_strategy",
    "strategy_name",
    "strategy_spec",
    "recorded_strategy",
    "tf_config",
    "is_chief",
    "cluster_task",
    "serve",
    "slurm_tf_config",
    "process_role",
    "distributed_train_config",
    "strategy_summary",
    "uses_coordinator",
    "warn_if_unreachable_by_tpu",
]

#: Seconds to wait for a TPU's gRPC port before concluding nobody is there.
TPU_CONNECT_TIMEOUT = 5.0

_TPU_HELP = (
    "strategy='tpu' needs a TPU: on a Cloud TPU VM set distribute.tpu_address='local'; "
    "on Colab pick a TPU runtime; elsewhere give the TPU's name or its "
    "'grpc://host:port'. strategy='auto' uses a GPU or the CPU when no TPU is found."
)
#: The same help when `distribute.tpu_address='local'` was already given.
_LOCAL_TPU_HELP = (
    "distribute.tpu_address='local' looks for a TPU attached to this machine, as on a "
    "Cloud TPU VM, and this machine has none: on Colab pick a TPU runtime; elsewhere "
    "give the TPU's name or its 'grpc://host:port'. strategy='auto' uses a GPU or the "
    "CPU when no TPU is found."
)


def _tpu_help(address: str | None) -> str:
    """What to do when no TPU answers, knowing what ``tpu_address`` already was."""
    return _LOCAL_TPU_HELP if address == "local" else _TPU_HELP


# --------------------------------------------------------------------------- cluster


def _tf_config_env() -> str | None:
    # TF_CONFIG is TensorFlow's own cluster description, not a kerastrain option.
    return os.environ.get("TF_CONFIG")


def cluster_task() -> tuple[str | None, int]:
    """This process's ``(task type, index)`` in ``TF_CONFIG``; `(None, 0)` without one."""
    return task_of(_tf_config_env())


def _is_multi_worker(strategy: Any) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def uses_coordinator(strategy: Any) -> bool:
    """Whether ``strategy`` trains through a `ClusterCoordinator` (parameter servers)."""
    return isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy)


def is_chief(strategy: Any = None) -> bool:
    """Whether this process writes the run's artifacts and reports.

    Under a multi-worker strategy, the chief is the `"chief"` task, or worker
    0 when the cluster has none; the parameter-server coordinator (the
    process that runs `fit_pipeline`) is the chief. Everything else is its
    own chief.

    Args:
        strategy: A strategy, a strategy name, or `None` (read `TF_CONFIG`).
            Defaults to `None`.
    """
    if _is_multi_worker(strategy):
        return bool(strategy.extended.should_checkpoint)
    if uses_coordinator(strategy):
        return True
    if strategy is None or strategy in ("multi_worker", "parameter_server"):
        return is_chief_task(_tf_config_env())
    return True


def serve(resolver: Any = None) -> NoReturn:
    """Runs this process's worker or parameter-server task until it is killed.

    In parameter-server training only the coordinator (the `"chief"` task)
    runs the pipeline; workers and parameter servers run a
    `tf.distribute.Server` that the coordinator sends work to.

    Args:
        resolver: The cluster. Defaults to `None`: read `TF_CONFIG`.
    """
    resolver = resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()
    # As TensorFlow's parameter-server tutorial does: fail RPCs to dead peers fast.
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        start=True,
    )
    logger.info(
        "Serving as %s %d of the parameter-server cluster; the coordinator sends the work.",
        resolver.task_type,
        resolver.task_id,
    )
    server.join()
    raise SystemExit(0)  # join() returns only when the server is stopped


# --------------------------------------------------------------------------- TPU


def _probe(address: str) -> str | None:
    """Why nothing answers at ``grpc://host:port``, or None when a port is open."""
    parsed = urlparse(address)
    if parsed.scheme != "grpc" or not parsed.hostname or not parsed.port:
        return None
    try:
        with socket.create_connection((parsed.hostname, parsed.port), TPU_CONNECT_TIMEOUT):
            return None
    except OSError as exc:
        return f"nothing answers at {address} ({exc.strerror or exc})"


def _no_tpu(reason: str, address: str | None) -> ConfigError:
    error = ConfigError(message(f"No TPU was found: {reason}", allowed=_tpu_help(address)))
    error.reason = f"no TPU: {reason}"  # type: ignore[attr-defined]
    return error


def _tpu_resolver(address: str | None) -> Any:
    """A TPU cluster resolver, or ConfigError saying why there is none."""
    if address is not None:
        reason = _probe(address)
        if reason:
            raise _no_tpu(reason, address)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
    except (ValueError, OSError, RuntimeError, KeyError) as exc:
        if address is None and tf.config.list_physical_devices("TPU"):
            return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
        raise _no_tpu(f"{type(exc).__name__}: {str(exc).rstrip('.')}", address) from None
    reason = _probe(resolver.master())
    if reason:
        raise _no_tpu(reason, address)
    return resolver


def _is_local_tpu(resolver: Any) -> bool:
    return not resolver.master() or resolver.master() == "local"


def _tpu_strategy(resolver: Any, address: str | None = None) -> tf.distribute.Strategy:
    try:
        if not _is_local_tpu(resolver):
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (tf.errors.OpError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0].rstrip(".")
        raise ConfigError(
            message(
                f"No TPU could be initialized at {resolver.master() or 'local'!r} "
                f"({type(exc).__name__}: {first})",
                allowed=_tpu_help(address),
            )
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def _discover_tpu(address: str | None) -> tuple[Any, str]:
    """``(resolver, reason)`` when a TPU answers, else ``(None, why not)``."""
    try:
        return _tpu_resolver(address), "a TPU answered"
    except ConfigError as exc:
        return None, getattr(exc, "reason", str(exc))


def warn_if_unreachable_by_tpu(
    strategy: Any, path: str | os.PathLike | None, what: str = "output_dir"
) -> bool:
    """Warns when a remote TPU would have to write to a local ``path``.

    A Cloud TPU reached over the network (a TPU node, not a TPU VM) reads and
    writes checkpoints itself, so they must be on a file system it reaches,
    such as `gs://bucket/...`.

    Args:
        strategy: The strategy in use.
        path: The folder (run folder, tuner directory, backup).
        what: The option's name, for the message. Defaults to `"output_dir"`.

    Returns:
        Whether a warning was logged.
    """
    if not isinstance(strategy, tf.distribute.TPUStrategy):
        return False
    resolver = strategy.cluster_resolver
    if resolver is None or _is_local_tpu(resolver) or "://" in os.fspath(path or ""):
        return False
    logger.warning(
        "The TPU at %s is remote, but %s=%r is a local path it cannot reach: "
        "checkpoints and backups would fail. Use a bucket the TPU can write to "
        "(e.g. 'gs://my-bucket/run').",
        resolver.master(),
        what,
        os.fspath(path) if path else "saved_models/<run name>",
    )
    return True


# --------------------------------------------------------------------------- strategies


def strategy_name(strategy: Any) -> str:
    """The public name of ``strategy``'s kind (`"MultiWorkerMirroredStrategy"`,
    not its internal class `CollectiveAllReduceStrategy`)."""
    kinds = (
        (tf.distribute.TPUStrategy, "TPUStrategy"),
        (tf.distribute.MultiWorkerMirroredStrategy, "MultiWorkerMirroredStrategy"),
        (tf.distribute.experimental.ParameterServerStrategy, "ParameterServerStrategy"),
        (tf.distribute.MirroredStrategy, "MirroredStrategy"),
        (tf.distribute.OneDeviceStrategy, "OneDeviceStrategy"),
    )
    return next(
        (name for kind, name in kinds if isinstance(strategy, kind)), "the default strategy"
    )


def _cpu() -> tf.distribute.Strategy:
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    return tf.distribute.get_strategy()


def _gpu() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        raise ConfigError(
            message(
                "A GPU was asked for but TensorFlow sees no GPU",
                received={"strategy": "gpu"},
                allowed="Use 'auto' or 'cpu', or check the CUDA installation",
            )
        )
    return tf.distribute.OneDeviceStrategy(gpus[0].name)


def _mirrored() -> tf.distribute.Strategy:
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    if len(devices) == 1:
        logger.info("strategy='mirrored' has one device (%s) to mirror over.", devices[0].name)
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def slurm_tf_config(port_base: int = 8888) -> dict[str, Any]:
    """This Slurm task's cluster, from the ``SLURM_*`` variables of its step,
    as a ``TF_CONFIG`` mapping.

    Resolved by TensorFlow's `SlurmClusterResolver` (one worker per task,
    ports counted from `port_base` on each node). On nodes without GPUs the
    resolver, which hands GPUs out to tasks, is given one slot per task and
    leaves `CUDA_VISIBLE_DEVICES` alone.

    Args:
        port_base: The first task's port on each node. Defaults to `8888`.

    Returns:
        `{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}`.

    Raises:
        ConfigError: Outside a Slurm step (no `SLURM_PROCID`, ...).
    """
    resolve = tf.distribute.cluster_resolver.SlurmClusterResolver
    try:
        # GPUs are counted the resolver's way (CUDA_VISIBLE_DEVICES, else
        # nvidia-smi): TensorFlow must not touch its devices before the strategy.
        if os.environ.get("CUDA_VISIBLE_DEVICES") or shutil.which("nvidia-smi"):
            resolver = resolve(port_base=port_base)
        else:
            per_node = max(int(n) for n in _slurm_tasks_per_node())
            resolver = resolve(
                port_base=port_base, gpus_per_node=per_node, gpus_per_task=1, auto_set_gpu=False
            )
        spec = resolver.cluster_spec().as_dict()
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            message(
                f"distribute.cluster='slurm' could not read the Slurm step ({exc})",
                allowed="Start each task with srun inside an sbatch job "
                "(`kerastrain launch --emit slurm` writes one), or use "
                "distribute.cluster='tf_config' with TF_CONFIG",
            )
        ) from None
    task_type, index = resolver.get_task_info()
    return {"cluster": spec, "task": {"type": task_type, "index": index}}


def _slurm_tasks_per_node() -> list[str]:
    """`SLURM_STEP_TASKS_PER_NODE` (`"2(x3),1"`) as one count per node."""
    counts = []
    for part in os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1").split(","):
        number, _, repeat = part.partition("(x")
        counts += [number] * int(repeat.rstrip(")") or 1)
    return counts


def _multi_worker(options: DistributeConfig | None = None) -> tf.distribute.Strategy:
    if options is not None and options.cluster == "slurm":
        config = slurm_tf_config(options.port_base)
        # One description of the cluster for TensorFlow and for kerastrain's
        # own questions (which task is the chief, which folder it writes).
        os.environ["TF_CONFIG"] = json.dumps(config)
        logger.info(
            "distribute.cluster='slurm': %d worker(s) from the Slurm step, this task is worker %d.",
            len(config["cluster"]["worker"]),
            config["task"]["index"],
        )
    task_type, index = cluster_task()
    if task_type is None:
        logger.info("strategy='multi_worker' without TF_CONFIG: this process is the only worker.")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        if "program startup" not in str(exc):
            raise
        raise ConfigError(
            message(
                "strategy='multi_worker' must be created before TensorFlow runs any operation "
                "in this process, and something ran first",
                allowed="Start each worker in a fresh process (`kerastrain launch`, or your "
                "cluster's entry point) that calls fit_pipeline before any other TensorFlow work",
            )
        ) from None


def _parameter_server() -> tf.distribute.Strategy:
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    jobs = resolver.cluster_spec().jobs
    if "ps" not in jobs or "worker" not in jobs or "chief" not in jobs:
        raise ConfigError(
            message(
                "strategy='parameter_server' needs a TF_CONFIG cluster with 'chief' (the "
                "coordinator that runs fit_pipeline), 'worker' and 'ps' tasks",
                received={"TF_CONFIG tasks": sorted(jobs)},
                allowed="Build one with kerastrain.distribute.tf_config(..., ps=[...], "
                "chief=...), or try it locally with `kerastrain launch --workers 2 --ps 1 "
                "CONFIG.yaml`",
            )
        )
    if resolver.task_type in ("worker", "ps"):
        serve(resolver)
    return tf.distribute.ParameterServerStrategy(resolver)


def _auto(options: DistributeConfig) -> tf.distribute.Strategy:
    resolver, why_not_tpu = _discover_tpu(options.tpu_address)
    gpus = tf.config.list_logical_devices("GPU")
    if resolver is not None:
        reason, strategy = (
            f"a TPU answered at {resolver.master() or 'local'}",
            _tpu_strategy(resolver, options.tpu_address),
        )
    elif len(gpus) > 1:
        reason = f"{len(gpus)} GPUs; {why_not_tpu}"
        strategy = tf.distribute.MirroredStrategy([g.name for g in gpus])
    elif gpus:
        reason, strategy = f"one GPU; {why_not_tpu}", tf.distribute.OneDeviceStrategy(gpus[0].name)
    else:
        reason, strategy = f"no GPU; {why_not_tpu}", tf.distribute.get_strategy()
    logger.info(
        "strategy='auto' chose %s with %d replica(s) (%s).",
        strategy_name(strategy),
        strategy.num_replicas_in_sync,
        reason,
    )
    if task_of(_tf_config_env())[0] is not None:
        logger.warning(
            "TF_CONFIG describes a cluster, but strategy='auto' trains on this "
            "machine alone; set strategy='multi_worker' or 'parameter_server'."
        )
    return strategy


def _model_parallel(options: DistributeConfig) -> tf.distribute.Strategy:
    """The mesh is checked against the devices now; the weights are laid on it
    when the model is built (`kerastrain.training.model_parallel`). DTensor
    replaces a `tf.distribute` strategy there: the one in scope stays TensorFlow's
    default."""
    batch, model = mesh_shape(options)
    logger.info(
        "strategy='model_parallel': a mesh of %d device(s), batch=%d x model=%d.",
        batch * model,
        batch,
        model,
    )
    return tf.distribute.get_strategy()


#: How each strategy name of the config (`STRATEGIES`) is built; a test keeps
#: the two in step.
STRATEGY_BUILDERS: dict[str, Callable[[DistributeConfig], tf.distribute.Strategy]] = {
    "auto": _auto,
    "cpu": lambda options: _cpu(),
    "gpu": lambda options: _gpu(),
    "mirrored": lambda options: _mirrored(),
    "multi_worker": _multi_worker,
    "parameter_server": lambda options: _parameter_server(),
    "tpu": lambda options: _tpu_strategy(_tpu_resolver(options.tpu_address), options.tpu_address),
    "model_parallel": _model_parallel,
}


def _devices(names: list[str], option: str) -> list[str]:
    """``names`` checked against this machine's logical devices."""
    available = tf.config.list_logical_devices()

    def known(name: str) -> bool:
        try:
            wanted = tf.DeviceSpec.from_string(name)
        except ValueError:
            return False
        return any(
            (wanted.device_type or "").upper() == (spec.device_type or "").upper()
            and (wanted.device_index or 0) == (spec.device_index or 0)
            for spec in (tf.DeviceSpec.from_string(d.name) for d in available)
        )

    missing = [name for name in names if not known(name)]
    if missing:
        raise ConfigError(
            message(
                f"{option} names a device this machine does not have",
                received={option: missing[0]},
                allowed=", ".join(d.name for d in available),
            )
        )
    return names


def _from_spec(spec: Mapping[str, Any], options: DistributeConfig) -> tf.distribute.Strategy:
    """The strategy a ``{"kind": ..., ...}`` mapping describes (see `strategy_spec`)."""
    kind = spec["kind"]
    if kind == "one_device":
        return tf.distribute.OneDeviceStrategy(_devices([spec["device"]], "strategy.device")[0])
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy(_devices(spec["devices"], "strategy.devices"))
    if kind == "tpu":
        address = spec.get("tpu_address", options.tpu_address)
        return _tpu_strategy(_tpu_resolver(address), address)
    builders: dict[str, Callable[[], tf.distribute.Strategy]] = {
        "default": tf.distribute.get_strategy,
        "multi_worker": lambda: _multi_worker(options),
        "parameter_server": _parameter_server,
    }
    return builders[kind]()


def strategy_spec(strategy: tf.distribute.Strategy) -> dict[str, Any] | str:
    """``strategy`` by kind and options, as config.yaml records it.

    `make_strategy` builds the same kind of strategy over the same devices
    from it: ``{"kind": "mirrored", "devices": [...]}``, ``{"kind":
    "one_device", "device": ...}``, ``{"kind": "multi_worker"}`` (its
    workers come from `TF_CONFIG`), ``{"kind": "parameter_server"}``,
    ``{"kind": "tpu", "tpu_address": ...}``, ``{"kind": "default"}``. A kind
    kerastrain does not know (say `CentralStorageStrategy`) is recorded as
    `"auto"`, with a warning.
    """
    if isinstance(strategy, tf.distribute.TPUStrategy):
        resolver = strategy.cluster_resolver
        master = resolver.master() if resolver is not None else ""
        return {"kind": "tpu", **({"tpu_address": master} if master else {})}
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return {"kind": "multi_worker"}
    if uses_coordinator(strategy):
        return {"kind": "parameter_server"}
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return {"kind": "mirrored", "devices": list(strategy.extended.worker_devices)}
    if isinstance(strategy, tf.distribute.OneDeviceStrategy):
        return {"kind": "one_device", "device": strategy.extended.worker_devices[0]}
    if not tf.distribute.has_strategy() and strategy is tf.distribute.get_strategy():
        return {"kind": "default"}  # TensorFlow's one default strategy, outside any scope
    logger.warning(
        "config.yaml records strategy 'auto' for the %s given: its kind is none of %s. "
        "To repeat the run, pass the strategy object again with config=config.yaml.",
        type(strategy).__name__,
        ", ".join(STRATEGY_KINDS),
    )
    return "auto"


def recorded_strategy(spec: Any, strategy: tf.distribute.Strategy) -> Any:
    """The `strategy` option as config.yaml records it: a name or a mapping
    as given, a strategy object by kind and options (`strategy_spec`)."""
    if isinstance(spec, (str, Mapping)):
        return spec
    return strategy_spec(strategy)


def make_strategy(
    spec: Any = "auto", options: DistributeConfig | None = None
) -> tf.distribute.Strategy:
    """The strategy that ``spec`` names, with its choice logged.

    A worker or parameter-server task of a parameter-server cluster does not
    return: it serves the coordinator until it is stopped (see `serve`).

    Args:
        spec: `"auto"` (a TPU when one answers; Mirrored over several GPUs;
            one GPU; else the default strategy on the CPU), `"cpu"`, `"gpu"`,
            `"mirrored"` (all GPUs, else all logical CPUs), `"multi_worker"`
            (`MultiWorkerMirroredStrategy` over the `TF_CONFIG` cluster),
            `"parameter_server"`, `"tpu"`, a `tf.distribute.Strategy`,
            used as is, or a strategy by kind and options (see
            `strategy_spec`). Defaults to `"auto"`.
        options: The `distribute` options (`tpu_address`). Defaults to `None`.

    Returns:
        The strategy; build and compile models inside its `scope()`.

    Raises:
        ConfigError: When the hardware or cluster asked for is not there (a
            TPU request without a TPU fails in seconds, it does not hang).

    Example:
        >>> make_strategy("cpu").num_replicas_in_sync
        1
    """
    options = options or DistributeConfig()
    kind = spec.get("kind") if isinstance(spec, Mapping) else spec
    if options.cluster == "slurm" and kind != "multi_worker":
        raise config_error(
            "distribute.cluster",
            "slurm",
            "used with strategy='multi_worker' (a Slurm step's tasks train as its workers); "
            f"the strategy is {spec if isinstance(spec, str | Mapping) else strategy_name(spec)!r}",
        )
    if isinstance(spec, tf.distribute.Strategy):
        logger.info(
            "Strategy: %s with %d replica(s), as given.",
            strategy_name(spec),
            spec.num_replicas_in_sync,
        )
        return spec
    if isinstance(spec, Mapping):
        spec = check_strategy_spec(spec)
        strategy = _from_spec(spec, options)
        logger.info(
            "Strategy: %s with %d replica(s), from %s%s.",
            strategy_name(strategy),
            strategy.num_replicas_in_sync,
            spec,
            _cluster_words(),
        )
        return strategy
    if not isinstance(spec, str) or spec not in STRATEGIES:
        raise config_error(
            "strategy",
            spec,
            one_of(STRATEGIES) + " or a tf.distribute.Strategy",
            STRATEGIES,
        )
    strategy = STRATEGY_BUILDERS[spec](options)
    if spec == "auto":
        return strategy  # _auto logs its own choice
    logger.info(
        "strategy=%r: %s with %d replica(s)%s.",
        spec,
        strategy_name(strategy),
        strategy.num_replicas_in_sync,
        _cluster_words(),
    )
    return strategy


def _cluster_words() -> str:
    task_type, index = cluster_task()
    return f", this process is {task_type} {index}" if task_type else ""


# --------------------------------------------------------------------------- this process


def process_role(strategy: Any) -> ProcessRole:
    """This process's place among the training processes, for `open_run_folder`.

    Args:
        strategy: The strategy in use.

    Returns:
        Whether this process is the chief, how many workers train, and this
        task's name (`"worker1"`, `"chief0"`).
    """
    task_type, index = cluster_task()
    return ProcessRole(
        chief=is_chief(strategy),
        workers=strategy.extended._num_workers if _is_multi_worker(strategy) else 1,
        task=f"{task_type or 'worker'}{index}",
    )


# --------------------------------------------------------------------------- training options


def distributed_train_config(
    train: TrainConfig, distribute: DistributeConfig, strategy: Any
) -> TrainConfig:
    """``train`` as the strategy needs it.

    With `distribute.scale_learning_rate`, the learning rate is multiplied by
    the replicas (the linear scaling rule). Under parameter-server training,
    progress is logged once per epoch (Keras refuses a progress bar there).
    """
    replicas = strategy.num_replicas_in_sync
    lr = train.learning_rate
    if distribute.scale_learning_rate and replicas > 1 and isinstance(lr, (int, float)):
        train = train.replace(learning_rate=lr * replicas)
    if uses_coordinator(strategy) and train.verbose in ("auto", 1):
        train = train.replace(verbose=2)
    return train


def strategy_summary(config: PipelineConfig, strategy: Any) -> dict[str, str]:
    """Facts for the report: the strategy, the global batch, the learning rate."""
    if config.strategy_kind == "model_parallel":
        batch, model = mesh_shape(config.distribute)
        return {
            "strategy": f"model parallel (DTensor), mesh batch={batch} x model={model}",
            "global batch": f"{config.batch_size} per batch shard x {batch} = "
            f"{config.batch_size * batch}",
        }
    replicas = strategy.num_replicas_in_sync
    workers = getattr(strategy.extended, "_num_workers", 1) or 1
    where = f" on {workers} workers" if workers > 1 else ""
    facts = {
        "strategy": f"{strategy_name(strategy)}, {replicas} replica(s){where}",
        "global batch": f"{config.batch_size} per replica x {replicas} = "
        f"{config.batch_size * replicas}",
    }
    scaled = distributed_train_config(config.train, config.distribute, strategy).learning_rate
    if scaled != config.train.learning_rate:
        facts["learning rate"] = (
            f"{config.train.learning_rate:g} x {replicas} replicas = {scaled:g} (linear scaling)"
        )
    return facts
