"""Model-parallel (DTensor) vs data-parallel (MirroredStrategy) on the same model.

`benchmarks/gpu.py --model-parallel` runs it on the GPUs: a wide MLP (the
`mlp` factory) trained with `kerastrain.fit_pipeline` two ways over the same
devices and the same global batch:

- data parallel: `strategy="mirrored"`, each device holds every weight;
- model parallel: `strategy="model_parallel"` with every device on the mesh's
  "model" axis, each Dense pair split Megatron-style.

Reported per side: steady-state examples/s (the median of the epochs after
the first, from the run's `examples_per_second` history) and the parameter
bytes each device holds (data parallel: all of them; model parallel: from
the layout plan, `kerastrain.mesh.planned_parameter_bytes`). With one GPU the
GPU is split into `--devices` logical GPUs: the numbers then show the cost of
the split on one chip, not the gain of several chips. `--cpu-dry-run` runs a
tiny version on logical CPUs, to check the code without a GPU.
"""

from __future__ import annotations

import statistics

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.mesh import plan_layouts, planned_parameter_bytes, use_logical_cpus
from kerastrain.models import Head, ModelInputs, mlp


def split_devices(count: int, dry_run: bool, memory_mb: int) -> str:
    """Makes ``count`` devices: logical CPUs (dry run), the GPUs, or one GPU split."""
    if dry_run:
        use_logical_cpus(count)
        return f"{count} logical CPUs (dry run)"
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) >= count:
        tf.config.set_visible_devices(gpus[:count], "GPU")
        return f"{count} GPUs"
    tf.config.set_logical_device_configuration(
        gpus[0], [tf.config.LogicalDeviceConfiguration(memory_limit=memory_mb)] * count
    )
    return f"one GPU split into {count} logical GPUs of {memory_mb:,} MB (overhead, not scaling)"


def run(args) -> None:
    """The section: both sides, interleaved, `args.repeats` times."""
    dry = args.cpu_dry_run
    width, depth = (256, 2) if dry else (args.mp_width, args.mp_depth)
    examples = 2048 if dry else args.examples
    batch = 64 if dry else args.batch
    epochs = 2 if dry else args.epochs
    where = split_devices(args.devices, dry, args.memory_mb)
    import kerastrain  # after the devices are set

    rng = np.random.default_rng(0)
    x = rng.normal(size=(examples, 256)).astype(np.float32)
    y = (x @ rng.normal(size=(256, 10))).argmax(axis=1)
    options = {"width": width, "depth": depth, "dropout": 0.0}
    common = dict(
        model="mlp",
        model_options=options,
        data_options={"validation_split": 0.1, "test_split": 0.0},
        export={"formats": []},
        report={"explain": "none"},
        overwrite=True,
    )
    train = {"epochs": epochs, "early_stopping": None, "checkpoints": False, "verbose": 0}
    sides = {
        "data parallel (mirrored)": dict(
            strategy="mirrored", train={**train, "batch_size": batch // args.devices}
        ),
        "model parallel (DTensor)": dict(
            strategy="model_parallel",
            distribute={"mesh": {"batch": 1, "model": args.devices}},
            train={**train, "batch_size": batch},
        ),
    }
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name, side in sides.items():
            result = kerastrain.fit_pipeline(
                (x, y), **common, **side, seed=repeat, output_dir=f"/tmp/kerastrain-mp-{repeat}"
            )
            rates[name].append(statistics.median(result.history["examples_per_second"][1:]))
    inputs = keras.Input((x.shape[1],))
    model = mlp(ModelInputs(inputs, inputs), Head(10, "softmax"), **options)
    whole = sum(w.shape.num_elements() * w.dtype.size for w in model.weights)
    plan = plan_layouts(model, {"batch": 1, "model": args.devices}, None)
    split = planned_parameter_bytes(model, plan)
    print(
        f"model parallel vs data parallel on {where}: mlp width {width}, depth {depth}, "
        f"global batch {batch}, {epochs} epochs (first excluded), {args.repeats} repeats"
    )
    per_device = {"data parallel (mirrored)": whole, "model parallel (DTensor)": split}
    for name in sides:
        print(
            f"  {name:28s} {statistics.median(rates[name]):12,.0f} examples/s   "
            f"{per_device[name] / 2**20:10,.1f} MiB of parameters per device"
        )
    dp, mp = (statistics.median(rates[name]) for name in sides)
    print(
        f"  model / data parallel: throughput {mp / dp:.2f}x, parameters per device "
        f"{split / whole:.2f}x; split: {', '.join(plan.split) or 'none'}"
    )
