"""The transformer, a CNN with batch normalization and an Embedding model on a
2x2 mesh of logical CPUs (run in its own process by test_model_parallel.py)."""

# ruff: noqa: E402  (the logical CPUs must be set before TensorFlow starts)
import json
import sys
import time
from pathlib import Path

import kerastrain.mesh as meshes

meshes.use_logical_cpus(4)
import numpy as np

import kerastrain
import kerastrain.training.model_parallel as mp
from kerastrain._keras import keras, tf

out = Path(sys.argv[1])
sys.path.insert(0, sys.argv[2])
from test_text import _reviews

t0 = time.time()
report = {}

# 1. A text transformer (raw strings, a number and a category column).
common = dict(
    data=_reviews(120),
    model="transformer",
    seed=3,
    model_options={"layers": 1, "heads": 2, "d_model": 8, "dropout": 0.0},
    data_options={"target": "label", "validation_split": 0.2, "test_split": 0.2},
    report={"explain": "none"},
)
train = {
    "epochs": 1,
    "optimizer": "sgd",
    "learning_rate": 0.1,
    "early_stopping": None,
    "verbose": 0,
    "execution": {"mixed_precision": "float32", "jit_compile": False, "steps_per_execution": 1},
}
# 72 training rows: 3 steps of 24 examples either way.
single = kerastrain.fit_pipeline(
    **common,
    strategy="cpu",
    train={**train, "batch_size": 24},
    export={"formats": []},
    output_dir=str(out / "single"),
)
seen = {}
real_shard = mp.shard_model


def keep(*args, **kwargs):
    seen["model"] = real_shard(*args, **kwargs)
    return seen["model"]


mp.shard_model = keep
sharded_run = kerastrain.fit_pipeline(
    **common,
    strategy="model_parallel",
    distribute={"mesh": {"batch": 2, "model": 2}},
    train={**train, "batch_size": 12},
    export={"formats": ["savedmodel"]},
    output_dir=str(out / "mp"),
)
mp.shard_model = real_shard
report["text"] = {
    "single": single.history["loss"][0],
    "sharded": sharded_run.history["loss"][0],
    "savedmodel_max_abs_diff": sharded_run.metrics["savedmodel"]["max_abs_diff"],
    "takes_strings": sharded_run.model.input["review"].dtype == tf.string,
    "shards": {
        v.name: [list(v.shape), [list(s) for s in meshes.shard_shapes(v)]]
        for v in seen["model"].weights
    },
}


# 2. A CNN with batch normalization, and an Embedding model (keras.layers.Embedding).
def cnn():
    images = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(images)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", name="hidden")(x)
    return keras.Model(images, keras.layers.Dense(1, activation="sigmoid", name="out")(x))


def embedding():
    ids = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 4, name="emb")(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(ids, keras.layers.Dense(1, activation="sigmoid", name="out")(x))


rng = np.random.default_rng(0)
images = rng.normal(size=(64, 8, 8, 1)).astype("float32")
ids = rng.integers(0, 20, (64, 6)).astype("int32")
cases = {
    "cnn": (cnn, images, (images.mean((1, 2, 3)) > 0).astype("float32")),
    "embedding": (embedding, ids, (ids[:, 0] % 2).astype("float32")),
}
mesh = tf.experimental.dtensor.create_mesh(
    [("batch", 2), ("model", 2)], devices=[f"CPU:{i}" for i in range(4)]
)
for name, (build, x, y) in cases.items():
    keras.utils.set_random_seed(0)
    plain = build()
    start = plain.get_weights()
    plain.compile(keras.optimizers.SGD(0.1), "binary_crossentropy")
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    one = plain.fit(batches, epochs=1, verbose=0).history["loss"][0]
    plain.set_weights(start)
    plan = meshes.plan_layouts(plain, {"batch": 2, "model": 2}, None)
    sharded = mp.shard_model(plain, plan, mesh)
    sharded.compile(keras.optimizers.SGD(0.1, mesh=mesh), "binary_crossentropy")
    meshes.dense_gradients(sharded.optimizer)
    fit = sharded.fit(
        meshes.dtensor_dataset(batches, 16, mesh), steps_per_epoch=4, epochs=1, verbose=0
    )
    mp.gather_into(sharded, plain)
    report[name] = {
        "single": one,
        "sharded": fit.history["loss"][0],
        "split": sorted(plan.split),
        "replicated": plan.replicated,
        "moved": float(max(np.abs(a - b).max() for a, b in zip(start, plain.get_weights()))),
    }
report["seconds"] = time.time() - t0
print("REPORT " + json.dumps(report))
