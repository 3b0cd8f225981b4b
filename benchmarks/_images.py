"""The image data the CNN benchmarks share: real digits at MNIST size, and
shifted copies of them for a larger set."""

from __future__ import annotations

import numpy as np


def digits28():
    """scikit-learn's digits resized to 28x28 (real data, MNIST-sized)."""
    from sklearn.datasets import load_digits

    from kerastrain._keras import tf

    bunch = load_digits()
    x = tf.image.resize(bunch.images[..., None].astype(np.float32), (28, 28)).numpy()
    return x, bunch.target.astype(np.int64)


def shifted_tiles(
    x: np.ndarray, y: np.ndarray, n: int, shift: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images: copies of ``x``, each moved by up to ``shift`` pixels
    in each direction (zero-filled), the first copy unmoved."""
    rng = np.random.default_rng(seed)
    padded = np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
    index = np.arange(n) % len(x)
    moves = rng.integers(-shift, shift + 1, size=(n, 2))
    moves[: len(x)] = 0
    h, w = x.shape[1:3]
    out = np.empty((n, *x.shape[1:]), x.dtype)
    for i, (source, (dy, dx)) in enumerate(zip(index, moves)):
        out[i] = padded[source, shift + dy : shift + dy + h, shift + dx : shift + dx + w]
    return out, y[index]
