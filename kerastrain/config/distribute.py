"""Distribution options (``fit_pipeline(distribute={...})``) and ``TF_CONFIG``.

``TF_CONFIG`` is the JSON that TensorFlow's multi-worker strategies read to
learn the cluster and this process's place in it (Kubernetes TFJob and
Vertex AI set it; Slurm sets ``SLURM_*`` variables instead, which
`distribute={"cluster": "slurm"}` reads through TensorFlow's
`SlurmClusterResolver`). The helpers here build and read it without importing
TensorFlow, so that the launcher never pays TensorFlow's start-up.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

from kerastrain.config.base import Section, option
from kerastrain.errors import ConfigError, config_error, did_you_mean

__all__ = [
    "DistributeConfig",
    "tf_config",
    "task_of",
    "is_chief_task",
    "STRATEGIES",
    "STRATEGY_KINDS",
    "check_strategy_spec",
    "TASK_TYPES",
    "MESH_AXES",
    "PIPELINE_REFUSAL",
]

#: The names the top-level `strategy` option accepts (besides a
#: `tf.distribute.Strategy`); `kerastrain.distribute` builds each.
STRATEGIES = (
    "auto",
    "cpu",
    "gpu",
    "mirrored",
    "multi_worker",
    "parameter_server",
    "tpu",
    "model_parallel",
)
#: The axes of a `strategy="model_parallel"` device mesh: examples are split
#: over "batch", weights over "model".
MESH_AXES = ("batch", "model")
#: Why `strategy="pipeline"` is refused, and what to use instead.
PIPELINE_REFUSAL = (
    "strategy='pipeline' is not available: no tf_keras (Keras 2) engine offers "
    "pipeline parallelism on TensorFlow 2.21 (there is no GPipe-style scheduler for "
    "Keras 2), and kerastrain does not build a home-made one. For a model too large "
    "for one device use strategy='model_parallel' (weights split over a device mesh "
    "with DTensor); to save memory on one device use train.recompute (activation "
    "recomputation), train.execution.mixed_precision, or train.gradient_accumulation "
    "(a smaller micro-batch with the same update)"
)
#: The kinds of a strategy given as a mapping (``{"kind": "mirrored", "devices":
#: [...]}``), each with its options and whether they are required. config.yaml
#: records a `tf.distribute.Strategy` object this way
#: (`kerastrain.distribute.strategy_spec`), so that the file repeats the run.
STRATEGY_KINDS: dict[str, dict[str, bool]] = {
    "default": {},
    "one_device": {"device": True},
    "mirrored": {"devices": True},
    "multi_worker": {},
    "parameter_server": {},
    "tpu": {"tpu_address": False},
}
#: The task types a TF_CONFIG cluster may hold.
TASK_TYPES = ("chief", "worker", "ps", "evaluator")


@dataclasses.dataclass
class DistributeConfig(Section):
    """How training is spread over replicas.

    The strategy itself is the top-level `strategy` option; these refine it.

    Attributes:
        scale_learning_rate: Multiply `train.learning_rate` by the number of
            replicas (the linear scaling rule: the rate given is the one for
            one replica's batch, and the global batch grows with the
            replicas). Defaults to `False`.
        tpu_address: The TPU to connect to with `strategy="tpu"`: a TPU name,
            `"local"` (a Cloud TPU VM) or `"grpc://host:port"`. Defaults to
            `None`: TensorFlow's own discovery (Colab, `TPU_NAME`, a TPU VM).
        cluster: Where `strategy="multi_worker"` learns the cluster:
            `"tf_config"` (the `TF_CONFIG` variable, as Kubernetes TFJob and
            Vertex AI set it) or `"slurm"` (the `SLURM_*` variables of an
            `srun` step, through TensorFlow's `SlurmClusterResolver`; one
            task per process). Defaults to `"tf_config"`.
        port_base: With `cluster="slurm"`, the port of the first task on each
            node (the next tasks on the node take the next ports).
            Defaults to `8888`.
        mesh: The device mesh of `strategy="model_parallel"`: devices per
            axis, `{"batch": B, "model": M}` (examples are split over
            "batch", weights over "model"); `B x M` must equal the number of
            local devices (the GPUs, else the logical CPUs). Either key may
            be left out. Defaults to `None`: every device on "model" (`B=1`).
        layouts: How `strategy="model_parallel"` splits chosen weights,
            overriding the default plan: a mapping from a regular expression,
            matched (`re.match`, as tf_keras's `LayoutMap`) against each
            weight's path `"<layer name>.<attribute>"` (`"dense_1.kernel"`,
            `"conv2d.bias"`), to one mesh axis (`"batch"`, `"model"`) or
            `None` (not split) per dimension of the weight, e.g.
            `{"dense_1.kernel": [None, "model"]}`. The first matching entry
            wins. Defaults to `None`: the default plan (Megatron-style pairs
            of Dense layers, MultiHeadAttention on its heads, Embedding on
            the embedding dimension; convolutions whole, as DTensor needs).
    """

    _path: ClassVar[str] = "distribute"

    scale_learning_rate: bool = False
    tpu_address: str | None = None
    cluster: Literal["tf_config", "slurm"] = "tf_config"
    port_base: int = option(8888, gt=0, lt=65536)
    mesh: dict[str, Any] | None = None
    layouts: dict[str, Any] | None = None

    def validate(self) -> None:
        if self.tpu_address is not None and not self.tpu_address.strip():
            raise config_error(
                "distribute.tpu_address",
                self.tpu_address,
                "a TPU name, 'local' or 'grpc://host:port', or None",
            )
        if self.mesh is not None:
            for axis, size in self.mesh.items():
                if axis not in MESH_AXES:
                    raise config_error(
                        "distribute.mesh", self.mesh, f"keys among {MESH_AXES}", MESH_AXES
                    )
                if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                    raise config_error(f"distribute.mesh.{axis}", size, "a whole number >= 1")
        for pattern, spec in (self.layouts or {}).items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise config_error(
                    "distribute.layouts", pattern, f"a regular expression ({exc})"
                ) from None
            if isinstance(spec, str) or not isinstance(spec, Sequence):
                raise config_error(
                    f"distribute.layouts[{pattern!r}]",
                    spec,
                    "a list with one mesh axis ('batch', 'model') or None per dimension",
                )
            for axis in spec:
                if axis is not None and axis not in MESH_AXES:
                    raise config_error(
                        f"distribute.layouts[{pattern!r}]",
                        spec,
                        "a list whose items are 'batch', 'model' or None",
                        MESH_AXES,
                    )


def check_strategy_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy given by kind and options, checked (see `STRATEGY_KINDS`).

    Args:
        spec: ``{"kind": "mirrored", "devices": ["/cpu:0"]}``,
            ``{"kind": "one_device", "device": "/gpu:0"}``, ``{"kind":
            "default"}``, ...

    Returns:
        A plain copy of ``spec`` (devices as a list of strings).

    Raises:
        ConfigError: For a missing or unknown kind, an unknown or missing
            option, or a device that is not a name.
    """
    kinds = tuple(STRATEGY_KINDS)
    kind = spec.get("kind")
    if kind not in STRATEGY_KINDS:
        raise config_error("strategy.kind", kind, "one of " + ", ".join(map(repr, kinds)), kinds)
    allowed = STRATEGY_KINDS[kind]
    for key in spec:
        if key != "kind" and key not in allowed:
            names = ", ".join(map(repr, allowed)) or "none"
            raise ConfigError(
                f"Unknown option {key!r} of strategy kind {kind!r}; its options are: "
                f"{names}." + did_you_mean(str(key), list(allowed))
            )
    for key, required in allowed.items():
        if required and key not in spec:
            raise config_error(
                f"strategy.{key}", None, f"a value: strategy kind {kind!r} needs {key!r}"
            )
    checked: dict[str, Any] = {"kind": kind}
    if "device" in spec:
        if not isinstance(spec["device"], str) or not spec["device"]:
            raise config_error("strategy.device", spec["device"], "a device name like '/gpu:0'")
        checked["device"] = spec["device"]
    if "devices" in spec:
        devices = spec["devices"]
        if (
            isinstance(devices, str)
            or not isinstance(devices, Sequence)
            or not devices
            or not all(isinstance(d, str) and d for d in devices)
        ):
            raise config_error(
                "strategy.devices", devices, "a non-empty list of device names like '/gpu:0'"
            )
        checked["devices"] = list(devices)
    if spec.get("tpu_address") is not None:
        checked["tpu_address"] = str(spec["tpu_address"])
    return checked


def _check_addresses(name: str, addresses: Sequence[str]) -> list[str]:
    if isinstance(addresses, str) or not isinstance(addresses, (list, tuple)):
        raise config_error(name, addresses, "a list of 'host:port' addresses")
    checked = []
    for i, address in enumerate(addresses):
        host, sep, port = str(address).rpartition(":")
        if not (
            isinstance(address, str) and sep and host and port.isdigit() and 0 < int(port) < 65536
        ):
            raise config_error(f"{name}[{i}]", address, "a 'host:port' address")
        checked.append(address)
    return checked


def tf_config(
    workers: Sequence[str],
    index: int = 0,
    *,
    ps: Sequence[str] = (),
    chief: str | None = None,
    task_type: str = "worker",
) -> dict[str, Any]:
    """A ``TF_CONFIG`` mapping: the cluster and this process's task in it.

    Set it with ``os.environ["TF_CONFIG"] = json.dumps(tf_config(...))``
    before TensorFlow starts (before the strategy is created).

    Args:
        workers: The workers' `host:port` addresses.
        index: This task's index among the tasks of `task_type`.
            Defaults to `0`.
        ps: The parameter servers' addresses (parameter-server training).
            Defaults to `()`.
        chief: The chief's address. Parameter-server training needs one (it
            is the coordinator); multi-worker training without it makes
            worker 0 the chief. Defaults to `None`.
        task_type: This task's type: `"worker"`, `"chief"`, `"ps"` or
            `"evaluator"`. Defaults to `"worker"`.

    Returns:
        `{"cluster": {...}, "task": {"type": ..., "index": ...}}`.

    Raises:
        ConfigError: For a malformed address, an unknown task type, or an
            index outside the cluster.

    Example:
        >>> tf_config(["10.0.0.1:2222", "10.0.0.2:2222"], index=1)["task"]
        {'type': 'worker', 'index': 1}
    """
    cluster: dict[str, list[str]] = {}
    if chief is not None:
        cluster["chief"] = _check_addresses("chief", [chief])
    cluster["worker"] = _check_addresses("workers", workers)
    if ps:
        cluster["ps"] = _check_addresses("ps", ps)
    if not cluster["worker"]:
        raise config_error("workers", list(workers), "at least one 'host:port' address")
    if task_type not in TASK_TYPES:
        raise config_error(
            "task_type", task_type, "one of " + ", ".join(map(repr, TASK_TYPES)), TASK_TYPES
        )
    tasks = cluster.get(task_type, [])
    if task_type != "evaluator" and not 0 <= index < len(tasks):
        raise config_error(
            "index",
            index,
            f"between 0 and {len(tasks) - 1}, the {task_type} "
            f"tasks of the cluster ({len(tasks)} given)",
        )
    return {"cluster": cluster, "task": {"type": task_type, "index": index}}


def _parse(config: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if config is None or config == "":
        return {}
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"TF_CONFIG is not valid JSON: {exc.msg} at character "
                f"{exc.pos}. Received: {config[:80]!r}."
            ) from None
    if not isinstance(config, Mapping):
        raise config_error("TF_CONFIG", config, "a JSON object with 'cluster' and 'task'")
    unknown = [k for k in config if k not in ("cluster", "task", "rpc_layer", "environment")]
    if unknown:
        raise ConfigError(
            f"Unknown key {unknown[0]!r} in TF_CONFIG; it holds 'cluster' and "
            "'task'." + did_you_mean(unknown[0], ["cluster", "task"])
        )
    return dict(config)


def task_of(config: str | Mapping[str, Any] | None) -> tuple[str | None, int]:
    """This process's ``(task type, index)`` in a ``TF_CONFIG``.

    Args:
        config: The TF_CONFIG as JSON text or a mapping; `None` or `""` for
            none.

    Returns:
        `(None, 0)` when there is no cluster.
    """
    parsed = _parse(config)
    task = parsed.get("task") or {}
    return task.get("type"), int(task.get("index", 0))


def is_chief_task(config: str | Mapping[str, Any] | None) -> bool:
    """Whether this process is the chief of the cluster ``config`` describes.

    The chief is the `"chief"` task, or worker 0 when the cluster has no
    chief; a process without a cluster is its own chief.
    """
    parsed = _parse(config)
    task_type, index = task_of(parsed)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = bool((parsed.get("cluster") or {}).get("chief"))
    return task_type == "worker" and index == 0 and not has_chief
