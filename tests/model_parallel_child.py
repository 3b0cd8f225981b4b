"""Model parallel on a 2x2 mesh of logical CPUs (run in its own process)."""

# ruff: noqa: E402  (the logical CPUs must be set before TensorFlow starts)
import json
import sys
import time
from pathlib import Path

import kerastrain.mesh as meshes

meshes.use_logical_cpus(4)
import numpy as np
from sklearn.datasets import make_classification

import kerastrain
import kerastrain.pipeline
import kerastrain.training.model_parallel as mp
from kerastrain._keras import keras, tf
from kerastrain.callbacks.guard import BlowupGuard

out = Path(sys.argv[1])
t0 = time.time()
x, y = make_classification(512, 16, n_informative=8, n_classes=3, random_state=0)
data = (x.astype("float32"), y)
common = dict(
    model="mlp",
    model_options={"width": 64, "depth": 2, "dropout": 0.0},
    seed=3,
    data_options={"validation_split": 0.25, "test_split": 0.0},
)
train = {
    "epochs": 3,
    "early_stopping": None,
    "verbose": 0,
    "backup": {"interval": 0},
    "execution": {"mixed_precision": "float32"},
}
single = kerastrain.fit_pipeline(
    data,
    **common,
    train={**train, "batch_size": 64},
    strategy="cpu",
    export={"formats": []},
    output_dir=str(out / "single"),
)
seen = {}
real_shard = mp.shard_model


def keep(*a, **k):
    seen["model"] = real_shard(*a, **k)
    return seen["model"]


mp.shard_model = keep
sharded_run = kerastrain.fit_pipeline(
    data,
    **common,
    train={**train, "batch_size": 32},
    strategy="model_parallel",
    distribute={"mesh": {"batch": 2, "model": 2}},
    export={"formats": ["tflite"]},
    output_dir=str(out / "mp"),
)
mp.shard_model = real_shard
a, b = np.array(single.history["loss"]), np.array(sharded_run.history["loss"])
report = {"single": a.tolist(), "sharded": b.tolist(), "rel": (np.abs(a - b) / np.abs(a)).tolist()}
sharded = seen["model"]
report["shards"] = {
    v.name: [list(v.shape), [list(s) for s in meshes.shard_shapes(v)]] for v in sharded.weights
}
val = x.astype("float32")[:64]
dt = tf.experimental.dtensor
inp = dt.copy_to_mesh(
    tf.constant(val), dt.Layout.replicated(dt.fetch_layout(sharded.weights[-1]).mesh, 2)
)
out_sharded = sharded(inp, training=False)
out_sharded = dt.relayout(
    out_sharded, dt.Layout.replicated(dt.fetch_layout(out_sharded).mesh, 2)
).numpy()
interp = tf.lite.Interpreter(model_path=str(sharded_run.artifacts["tflite"]))
interp.resize_tensor_input(interp.get_input_details()[0]["index"], val.shape)
interp.allocate_tensors()
interp.set_tensor(interp.get_input_details()[0]["index"], val)
interp.invoke()
lite = interp.get_tensor(interp.get_output_details()[0]["index"])
report["tflite_max_diff"] = float(np.abs(lite - out_sharded).max())
report["plain_vs_sharded"] = float(
    np.abs(sharded_run.model.predict(val, verbose=0) - out_sharded).max()
)

# The blow-up guard on the sharded model: a non-finite loss puts back the last good weights
# and optimizer slots (gathered and scattered over the mesh) and lowers the learning rate.
guard = BlowupGuard(retries=1, lr_factor=0.5)
guard.set_model(sharded)
guard.on_train_begin()
guard.on_epoch_begin(0)
good = sharded.get_weights()
good_slots = meshes.read_values(sharded.optimizer.variables)
lr = float(keras.backend.get_value(sharded.optimizer.learning_rate))
sharded.set_weights([w + 100 for w in good])
for v in sharded.optimizer.variables[1:]:
    meshes.assign_values([v], [np.full(v.shape, 7, v.dtype.as_numpy_dtype)])
guard.on_train_batch_end(0, {"loss": float("nan")})
report["guard_weights_diff"] = max(
    float(np.abs(a - b).max()) for a, b in zip(sharded.get_weights(), good)
)
report["guard_slots_diff"] = max(
    float(np.abs(np.asarray(a, float) - np.asarray(b, float)).max())
    for a, b in zip(meshes.read_values(sharded.optimizer.variables), good_slots)
)
report["guard_lr"] = [lr, float(keras.backend.get_value(sharded.optimizer.learning_rate))]
report["guard_split_slots"] = sum(
    not dt.fetch_layout(v).is_fully_replicated() for v in sharded.optimizer.variables
)
report["verify"] = {
    k: v
    for k, v in sharded_run.metrics.get("tflite", {}).items()
    if not isinstance(v, (list, dict))
}
report["performance"] = {k: [str(d.value), d.reason] for k, d in sharded_run.performance.items()}
report["seconds"] = time.time() - t0


# Kill-and-resume: a crash after epoch 2 of 4, then the same call again.
class Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("simulated crash")


real_callbacks = kerastrain.pipeline.training_callbacks
kerastrain.pipeline.training_callbacks = lambda *a, **k: [Crash()]
args = dict(
    **common,
    train={**train, "epochs": 4, "batch_size": 32},
    strategy="model_parallel",
    distribute={"mesh": {"batch": 2, "model": 2}},
    export={"formats": []},
    output_dir=str(out / "resume"),
)
try:
    kerastrain.fit_pipeline(data, **args)
except RuntimeError as exc:
    report["crashed"] = str(exc)
kerastrain.pipeline.training_callbacks = real_callbacks
resumed = kerastrain.fit_pipeline(data, **args)
report["resumed_epochs"] = len(resumed.history["loss"])
report["resumed_reason"] = resumed.stop_reason
print("REPORT " + json.dumps(report))
