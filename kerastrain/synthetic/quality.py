"""How good synthetic rows are, measured on held-out real data, never assumed.

- fidelity: a logistic regression trained on the real training rows labels
  the synthetic rows; the share it labels as the class they were generated
  for.
- TSTR (train on synthetic, test on real): the same classifier trained on
  the synthetic rows only, scored on the real test rows (validation when there
  is no test split); `trtr` is the real-trained one on the same rows.
- diversity: the mean pairwise distance of a class's synthetic rows divided
  by that of its real training rows (1 matches; near 0 is a collapse).
- memorisation: synthetic rows identical to a training row, and the median
  distance of a synthetic row to its closest training row beside that of a
  real held-out row (a generator that copies sits far nearer).
- tables and feature arrays: each numeric column's two-sample
  Kolmogorov-Smirnov distance between the real training rows and the
  synthetic ones.

All distances are in the codec's encoded space (standardized columns, pixels
in [-1, 1]).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.figures import figure
from kerastrain.synthetic.codec import Codec

logger = logging.getLogger(__name__)

__all__ = ["measure_quality", "image_grid"]

#: Rows per class used for the pairwise distances.
DIVERSITY_ROWS = 200
#: Training rows compared against for memorisation (a seeded sample above it).
NEAREST_ROWS = 5000


def _classifier(x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=500, random_state=seed)
    model.fit(x, y)
    return model


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).astype(np.float64)


def _mean_pairwise(a: np.ndarray, rng: np.random.Generator) -> float:
    if len(a) > DIVERSITY_ROWS:
        a = a[rng.choice(len(a), DIVERSITY_ROWS, replace=False)]
    if len(a) < 2:
        return float("nan")
    sq = np.sum(a**2, axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * a @ a.T, 0.0))
    return float(d[np.triu_indices(len(a), 1)].mean())


def _nearest(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Distance of each row of ``a`` to its closest row of ``ref``."""
    out = np.empty(len(a))
    ref_sq = np.sum(ref**2, axis=1)
    for i in range(0, len(a), 512):
        part = a[i : i + 512]
        d = np.sum(part**2, axis=1)[:, None] + ref_sq[None, :] - 2 * part @ ref.T
        out[i : i + 512] = np.sqrt(np.maximum(d.min(axis=1), 0.0))
    return out


def measure_quality(
    codec: Codec,
    real_x: np.ndarray,
    real_y: np.ndarray,
    synth_x: np.ndarray,
    synth_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    num_classes: int,
    raw_real: Any = None,
    raw_synth: Any = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The quality figures of ``synth_x`` (module docstring).

    Args:
        codec: The codec (column names for the KS distances).
        real_x: Encoded real training rows.
        real_y: Their classes.
        synth_x: Encoded synthetic rows (decoded and encoded again, so
            they are what would be added).
        synth_y: The classes they were generated for.
        test_x: Encoded real held-out rows (for TSTR and memorisation).
        test_y: Their classes.
        num_classes: The number of classes.
        raw_real: Raw training rows (tables, arrays), for the KS distances.
            Defaults to `None`.
        raw_synth: Raw synthetic rows likewise. Defaults to `None`.
        seed: Seeds the classifiers and samples. Defaults to `0`.

    Returns:
        `fidelity`, `tstr`, `trtr`, `diversity` (and `diversity_per_class`),
        `exact_copies`, `median_distance_to_train`,
        `median_holdout_distance_to_train`, `closer_than_holdout_p5`, and
        `ks` for tables and arrays.
    """
    rng = np.random.default_rng(seed)
    real, synth, test = _flat(real_x), _flat(synth_x), _flat(test_x)
    quality: dict[str, Any] = {"rows": int(len(synth))}
    real_clf = _classifier(real, real_y, seed)
    quality["fidelity"] = float(np.mean(real_clf.predict(synth) == synth_y)) if len(synth) else 0.0
    if len(test):
        quality["trtr"] = float(np.mean(real_clf.predict(test) == test_y))
        if len(np.unique(synth_y)) >= 2:
            synth_clf = _classifier(synth, synth_y, seed)
            quality["tstr"] = float(np.mean(synth_clf.predict(test) == test_y))
        else:
            quality["tstr"] = None
    per_class = {}
    for c in range(num_classes):
        s, r = synth[synth_y == c], real[real_y == c]
        if len(s) >= 2 and len(r) >= 2:
            per_class[str(c)] = _mean_pairwise(s, rng) / max(_mean_pairwise(r, rng), 1e-12)
    quality["diversity"] = float(np.mean(list(per_class.values()))) if per_class else None
    quality["diversity_per_class"] = per_class
    reference = real
    if len(real) > NEAREST_ROWS:
        reference = real[rng.choice(len(real), NEAREST_ROWS, replace=False)]
    if len(synth):
        distances = _nearest(synth, reference)
        quality["exact_copies"] = int(np.sum(distances < 1e-6))
        quality["median_distance_to_train"] = float(np.median(distances))
        if len(test):
            held = _nearest(test, reference)
            quality["median_holdout_distance_to_train"] = float(np.median(held))
            quality["closer_than_holdout_p5"] = float(np.mean(distances < np.percentile(held, 5)))
    if codec.kind != "image" and raw_real is not None and raw_synth is not None and len(synth):
        from scipy.stats import ks_2samp

        ks = {}
        for i, column in enumerate(codec.columns):
            if column.kind != "numeric":
                continue
            if codec.kind == "table":
                a, b = raw_real[column.name], raw_synth[column.name]
            else:
                a, b = np.asarray(raw_real)[:, i], np.asarray(raw_synth)[:, i]
            a = np.asarray(a, np.float64)
            ks[str(column.name)] = float(ks_2samp(a[~np.isnan(a)], np.asarray(b, np.float64))[0])
        quality["ks"] = ks
        quality["ks_mean"] = float(np.mean(list(ks.values()))) if ks else None
    return quality


def image_grid(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    per_class: int = 8,
) -> Path:
    """A PNG with a row of generated images per class."""
    classes = len(class_names)
    with figure(
        path, classes, per_class, figsize=(per_class * 0.8, classes * 0.8), squeeze=False
    ) as (_, axes):
        for c in range(classes):
            picks = images[labels == c][:per_class]
            for j in range(per_class):
                ax = axes[c][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(picks):
                    img = picks[j].astype(np.float64)
                    img = img[..., 0] if img.shape[-1] == 1 else img / max(img.max(), 1e-12)
                    ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
                if j == 0:
                    ax.set_ylabel(class_names[c], fontsize=7)
    return Path(path)
