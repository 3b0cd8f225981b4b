"""The class-conditional GAN: its two networks and its training loop.

- Images: a small conditional DCGAN sized from the image shape. The
  generator embeds the label, concatenates it to the noise, and upsamples
  with transposed convolutions and batch normalization to the image size
  (tanh, [-1, 1]); the discriminator gets the label's embedding as an extra
  image channel, strided convolutions without batch normalization.
- Arrays and tables: multilayer perceptrons; the generator ends in a linear
  block for the standardized numeric columns and a softmax per categorical
  column.

Training is the non-saturating GAN loss with one-sided label smoothing, one
Adam optimizer per network (one optimizer shared by both fails in tf_keras).
Each epoch logs the generator and discriminator losses. A checkpoint of
both networks, both optimizers, the noise generator and the epoch is written
to the state folder, so a killed run resumes where it was. Training stops
with a `TrainingDivergedError` when it collapses: the discriminator tells
every real from every fake example for `collapse_patience` epochs, or all
the samples of a class are identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.errors import TrainingDivergedError, message
from kerastrain.files import atomic_path, atomic_write
from kerastrain.synthetic.codec import Codec

logger = logging.getLogger(__name__)

__all__ = ["build_generator", "build_discriminator", "train_gan", "GanTraining", "generate"]

GENERATOR_FILE = "generator.keras"
STATE_FILE = "state.json"
CHECKPOINT = "checkpoint"
#: Every this many epochs, a class whose samples are all identical stops training.
IDENTICAL_CHECK_EVERY = 10


def _upsamplings(height: int, width: int) -> int:
    """How many times the generator doubles its first feature map: the most
    (up to 3) that divide the image exactly and leave at least 4 pixels (or
    the image itself when it is smaller)."""
    for k in (3, 2, 1):
        if height % 2**k == 0 and width % 2**k == 0 and min(height, width) // 2**k >= 4:
            return k
    return 0


def build_generator(codec: Codec, num_classes: int, latent_dim: int) -> keras.Model:
    """The conditional generator: `[noise, label] -> example` (encoded)."""
    noise = keras.Input((latent_dim,), name="noise")
    label = keras.Input((1,), dtype="int32", name="label")
    embedded = keras.layers.Flatten()(keras.layers.Embedding(num_classes, 16)(label))
    h = keras.layers.Concatenate()([noise, embedded])
    if codec.kind == "image":
        height, width, channels = codec.shape
        k = _upsamplings(height, width)
        h0, w0, filters = height // 2**k, width // 2**k, 32 * 2**k
        h = keras.layers.Dense(h0 * w0 * filters, use_bias=False)(h)
        h = keras.layers.LeakyReLU(0.2)(keras.layers.BatchNormalization()(h))
        h = keras.layers.Reshape((h0, w0, filters))(h)
        for i in range(k):
            h = keras.layers.Conv2DTranspose(
                filters // 2 ** (i + 1), 4, strides=2, padding="same", use_bias=False
            )(h)
            h = keras.layers.LeakyReLU(0.2)(keras.layers.BatchNormalization()(h))
        out = keras.layers.Conv2D(channels, 3, padding="same", activation="tanh")(h)
        return keras.Model([noise, label], out, name="generator")
    for units in (128, 128):
        h = keras.layers.Dense(units, use_bias=False)(h)
        h = keras.layers.LeakyReLU(0.2)(keras.layers.BatchNormalization()(h))
    blocks = []
    for kind, size in codec.segments:
        activation = "softmax" if kind == "categorical" else None
        blocks.append(keras.layers.Dense(size, activation=activation)(h))
    out = blocks[0] if len(blocks) == 1 else keras.layers.Concatenate()(blocks)
    return keras.Model([noise, label], out, name="generator")


def build_discriminator(codec: Codec, num_classes: int) -> keras.Model:
    """The conditional discriminator: `[example, label] -> logit` (real > 0).
    No batch normalization: it mixes real and fake statistics."""
    label = keras.Input((1,), dtype="int32", name="label")
    if codec.kind == "image":
        height, width, _ = codec.shape
        example = keras.Input(codec.shape, name="example")
        plane = keras.layers.Embedding(num_classes, height * width)(label)
        plane = keras.layers.Reshape((height, width, 1))(plane)
        h = keras.layers.Concatenate()([example, plane])
        filters = 32
        for _ in range(max(1, _upsamplings(height, width))):
            h = keras.layers.Conv2D(filters, 4, strides=2, padding="same")(h)
            h = keras.layers.Dropout(0.3)(keras.layers.LeakyReLU(0.2)(h))
            filters *= 2
        h = keras.layers.Flatten()(h)
    else:
        example = keras.Input((codec.width,), name="example")
        embedded = keras.layers.Flatten()(keras.layers.Embedding(num_classes, 16)(label))
        h = keras.layers.Concatenate()([example, embedded])
        for units in (128, 128):
            h = keras.layers.Dropout(0.2)(keras.layers.LeakyReLU(0.2)(keras.layers.Dense(units)(h)))
    return keras.Model([example, label], keras.layers.Dense(1)(h), name="discriminator")


@dataclasses.dataclass
class GanTraining:
    """What training the GAN produced.

    Attributes:
        generator: The trained generator.
        history: Per epoch: `g_loss`, `d_loss`, `d_accuracy`.
        epochs_run: Epochs trained in all (with those before a resume).
        resumed_at: The epoch (1-based) a resumed training started from.
        stop_reason: Why training stopped.
        seconds: Training time of this call.
    """

    generator: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    resumed_at: int | None
    stop_reason: str
    seconds: float


def _collapsed(what: str, epoch: int, history: dict[str, list[float]]) -> TrainingDivergedError:
    return TrainingDivergedError(
        message(
            f"The GAN collapsed at epoch {epoch}: {what}; its samples would add nothing "
            f"(last losses: generator {history['g_loss'][-1]:.4g}, discriminator "
            f"{history['d_loss'][-1]:.4g})",
            allowed="Lower data_options.synthesize.learning_rate, change the seed, or train "
            "without synthesize",
        )
    )


def generate(
    generator: keras.Model, labels: np.ndarray, latent_dim: int, seed: int, batch: int = 1024
) -> np.ndarray:
    """Encoded samples of the classes ``labels`` (one row each), seeded."""
    noise = np.random.default_rng(seed).standard_normal((len(labels), latent_dim)).astype("f4")
    if len(labels) == 0:
        return np.zeros((0, *generator.output_shape[1:]), np.float32)
    parts = [
        generator(
            [noise[i : i + batch], labels[i : i + batch, None].astype("int32")], training=False
        )
        for i in range(0, len(labels), batch)
    ]
    return np.concatenate([p.numpy() for p in parts])


def _identical_class(
    generator: keras.Model, num_classes: int, latent_dim: int, seed: int
) -> int | None:
    labels = np.repeat(np.arange(num_classes), 16)
    samples = generate(generator, labels, latent_dim, seed).reshape(len(labels), -1)
    for c in range(num_classes):
        if np.all(np.ptp(samples[labels == c], axis=0) < 1e-6):
            return c
    return None


def train_gan(
    x: np.ndarray,
    y: np.ndarray,
    codec: Codec,
    num_classes: int,
    options: dict[str, Any],
    *,
    seed: int,
    state_dir: str | Path | None = None,
) -> GanTraining:
    """Trains the conditional GAN on encoded examples ``x`` of classes ``y``.

    Args:
        x: Encoded training examples (`Codec.encode`).
        y: Their integer classes.
        codec: The codec (the networks' shapes).
        num_classes: Classes to condition on.
        options: The parsed `data_options.synthesize`.
        seed: Seeds the networks, the order of the rows and the noise.
        state_dir: Where the checkpoint, `state.json` and the finished
            generator go; a rerun with the same folder resumes (or reuses a
            finished generator). Defaults to `None` (nothing is written).

    Returns:
        The generator and its training history.

    Raises:
        TrainingDivergedError: When training collapses.
    """
    start = time.perf_counter()
    latent, epochs, batch = options["latent_dim"], options["epochs"], options["batch_size"]
    state_dir = Path(state_dir) if state_dir is not None else None
    fingerprint = {
        "kind": codec.kind,
        "width": codec.width,
        "rows": int(len(x)),
        "classes": int(num_classes),
        "latent_dim": int(latent),
        "seed": int(seed),
        "data": hashlib.sha1(
            np.ascontiguousarray(x, np.float32).tobytes() + np.asarray(y, np.int64).tobytes()
        ).hexdigest(),
    }
    state = _read_state(state_dir)
    if state is not None and state.get("fingerprint") != fingerprint:
        logger.info(
            "The GAN state in %s is of other data or options: training a new GAN.", state_dir
        )
        for stale in state_dir.iterdir():
            if stale.is_file():
                stale.unlink()
        state = None
    if state is not None and state.get("finished") and (state_dir / GENERATOR_FILE).exists():
        logger.info("Reusing the GAN generator trained earlier in %s.", state_dir)
        generator = keras.models.load_model(state_dir / GENERATOR_FILE, compile=False)
        return GanTraining(
            generator,
            state["history"],
            state["epochs_run"],
            None,
            state["stop_reason"] + " (reused from the run folder)",
            0.0,
        )
    keras.utils.set_random_seed(seed)
    generator = build_generator(codec, num_classes, latent)
    discriminator = build_discriminator(codec, num_classes)
    g_opt = keras.optimizers.Adam(options["learning_rate"], beta_1=0.5)
    d_opt = keras.optimizers.Adam(options["learning_rate"], beta_1=0.5)
    noise_gen = tf.random.Generator.from_seed(seed)
    epoch_var = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        generator=generator,
        discriminator=discriminator,
        g_opt=g_opt,
        d_opt=d_opt,
        noise=noise_gen,
        epoch=epoch_var,
    )
    history: dict[str, list[float]] = {"g_loss": [], "d_loss": [], "d_accuracy": []}
    resumed_at = None
    if state is not None and state_dir is not None:
        latest = tf.train.latest_checkpoint(state_dir)
        if latest is not None:
            checkpoint.restore(latest)
            history = state["history"]
            resumed_at = int(epoch_var.numpy()) + 1
            logger.info("Resuming the GAN's training at epoch %d from %s.", resumed_at, latest)
    cross = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function(  # one trace: the last, smaller batch of an epoch does not retrace
        input_signature=[
            tf.TensorSpec((None, *x.shape[1:]), tf.float32),
            tf.TensorSpec((None, 1), tf.int32),
        ]
    )
    def step(real: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        n = tf.shape(real)[0]
        z = noise_gen.normal((n, latent))
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = generator([z, labels], training=True)
            real_logit = discriminator([real, labels], training=True)
            fake_logit = discriminator([fake, labels], training=True)
            d_loss = cross(tf.fill(tf.shape(real_logit), 0.9), real_logit) + cross(
                tf.zeros_like(fake_logit), fake_logit
            )
            g_loss = cross(tf.ones_like(fake_logit), fake_logit)
        d_opt.apply_gradients(
            zip(d_tape.gradient(d_loss, discriminator.trainable_variables),
                discriminator.trainable_variables)
        )  # fmt: skip
        g_opt.apply_gradients(
            zip(g_tape.gradient(g_loss, generator.trainable_variables),
                generator.trainable_variables)
        )  # fmt: skip
        correct = tf.reduce_sum(tf.cast(real_logit > 0, tf.float32)) + tf.reduce_sum(
            tf.cast(fake_logit <= 0, tf.float32)
        )
        return g_loss, d_loss, correct / tf.cast(2 * n, tf.float32)

    x = x.astype(np.float32)
    labels_all = y.astype(np.int32)[:, None]
    steps = max(1, math.ceil(len(x) / batch))
    first = int(epoch_var.numpy())
    reason = f"completed all {epochs} epochs"
    pinned = 0
    for d_acc in history["d_accuracy"][::-1]:
        if d_acc < 0.999:
            break
        pinned += 1
    budget = options.get("max_seconds")
    for epoch in range(first, epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(x))
        sums = np.zeros(3)
        for s in range(steps):
            idx = order[s * batch : (s + 1) * batch]
            if len(idx) < 2:
                continue
            sums += [float(v) for v in step(tf.constant(x[idx]), tf.constant(labels_all[idx]))]
        g, d, acc = sums / steps
        history["g_loss"].append(g)
        history["d_loss"].append(d)
        history["d_accuracy"].append(acc)
        logger.info(
            "GAN epoch %d/%d: G loss %.4f, D loss %.4f, D accuracy %.3f.",
            epoch + 1, epochs, g, d, acc,
        )  # fmt: skip
        epoch_var.assign(epoch + 1)
        pinned = pinned + 1 if acc >= 0.999 else 0
        if pinned >= options["collapse_patience"]:
            raise _collapsed(
                f"the discriminator told every real from every generated example for "
                f"{pinned} epochs in a row (accuracy 1.0)",
                epoch + 1,
                history,
            )
        if (epoch + 1) % IDENTICAL_CHECK_EVERY == 0 or epoch + 1 == epochs:
            same = _identical_class(generator, num_classes, latent, seed + epoch)
            if same is not None:
                raise _collapsed(f"every sample of class {same} is the same", epoch + 1, history)
        out_of_time = budget is not None and time.perf_counter() - start >= budget
        if state_dir is not None and (
            (epoch + 1) % max(1, epochs // 20) == 0 or epoch + 1 == epochs or out_of_time
        ):
            _save(
                state_dir, checkpoint, history, epoch + 1, finished=False, reason="",
                fingerprint=fingerprint,
            )  # fmt: skip
        if out_of_time:
            reason = f"stopped after epoch {epoch + 1} of {epochs}: max_seconds={budget:g} spent"
            break
    if resumed_at is not None:
        reason += f"; resumed at epoch {resumed_at}"
    epochs_run = int(epoch_var.numpy())
    logger.info("GAN training %s.", reason)
    if state_dir is not None:
        with atomic_path(state_dir / GENERATOR_FILE) as tmp:
            generator.save(tmp)
        _save(
            state_dir,
            None,
            history,
            epochs_run,
            finished=True,
            reason=reason,
            fingerprint=fingerprint,
        )
    return GanTraining(
        generator, history, epochs_run, resumed_at, reason, time.perf_counter() - start
    )


def _read_state(state_dir: Path | None) -> dict[str, Any] | None:
    if state_dir is None or not (state_dir / STATE_FILE).exists():
        return None
    return json.loads((state_dir / STATE_FILE).read_text())


def _save(
    state_dir: Path,
    checkpoint: tf.train.Checkpoint | None,
    history: dict[str, list[float]],
    epochs_run: int,
    *,
    finished: bool,
    reason: str,
    fingerprint: dict[str, Any],
) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        manager = tf.train.CheckpointManager(checkpoint, state_dir, max_to_keep=1)
        manager.save()
    atomic_write(
        state_dir / STATE_FILE,
        json.dumps(
            {
                "history": history,
                "epochs_run": epochs_run,
                "finished": finished,
                "stop_reason": reason,
                "fingerprint": fingerprint,
            }
        ),
    )
