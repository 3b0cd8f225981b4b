"""Synthetic data from the conditional GAN (issue 16): quality, and whether it helps.

For digits (8x8 images) and breast cancer (30 numeric features):

1. A GAN trained on the training split of the whole data within a time
   budget (`--seconds`, default 170: "within 3 minutes"): fidelity, TSTR (a
   logistic regression trained on synthetic rows only, scored on the real
   test split) against TRTR (the same classifier trained on the real rows),
   diversity and memorisation, beside the two cheap baselines of DESIGN.md
   (a per-class Gaussian and SMOTE-style interpolation between two rows of a
   class, in the same encoded space, as many rows).
2. 10% of the data (stratified), trained by `fit_pipeline` with and without
   `data_options.synthesize`, both scored on the other 90% (rows neither
   run saw).

    python benchmarks/synthetic.py [--seconds 170] [--seed 0] [--data digits breast_cancer]
        [--parts quality small] [--small-gan-epochs 2000]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401 - quiet TensorFlow
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kerastrain  # noqa: E402
from kerastrain.synthetic.quality import _classifier  # noqa: E402


def _baselines(synthesis, real_x, real_y, test_x, test_y, seed):
    """TSTR of a per-class Gaussian and of SMOTE-style interpolation, with as
    many rows per class as the GAN made, in the codec's encoded space."""
    rng = np.random.default_rng(seed)
    codec = synthesis.codec
    real = codec.encode(real_x).reshape(len(real_y), -1)
    test = codec.encode(test_x).reshape(len(test_y), -1)
    counts = np.bincount(synthesis.y, minlength=int(real_y.max()) + 1)
    out = {}
    for name in ("gaussian", "smote"):
        xs, ys = [], []
        for c, n in enumerate(counts):
            rows = real[real_y == c]
            if name == "gaussian":
                cov = np.cov(rows, rowvar=False) + 1e-3 * np.eye(rows.shape[1])
                made = rng.multivariate_normal(rows.mean(0), cov, n)
            else:
                a, b = rows[rng.integers(len(rows), size=n)], rows[rng.integers(len(rows), size=n)]
                made = a + rng.uniform(size=(n, 1)) * (b - a)
            raw = codec.decode(made.reshape(n, *np.shape(codec.encode(real_x[:1]))[1:]))
            xs.append(codec.encode(raw).reshape(n, -1))
            ys.append(np.full(n, c))
        xs, ys = np.concatenate(xs), np.concatenate(ys)
        clf = _classifier(xs, ys, seed)
        nearest = np.sqrt(
            np.maximum(
                (xs**2).sum(1)[:, None] + (real**2).sum(1)[None, :] - 2 * xs @ real.T, 0
            ).min(1)
        )
        out[name] = {
            "tstr": float(np.mean(clf.predict(test) == test_y)),
            "exact_copies": int(np.sum(nearest < 1e-6)),
            "median_distance_to_train": float(np.median(nearest)),
        }
    return out


def _load(name):
    from sklearn import datasets

    if name == "digits":
        bunch = datasets.load_digits()
        return bunch.images[..., None].astype(np.float32), bunch.target.astype(np.int64)
    bunch = getattr(datasets, f"load_{name}")()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def quality(name, seconds, seed, epochs):
    from kerastrain.config import DataConfig
    from kerastrain.data.prepare import prepare_data

    x, y = _load(name)
    start = time.perf_counter()
    synthesis = kerastrain.synthesize(
        (x, y), per_class=200, epochs=epochs, seed=seed, max_seconds=seconds, min_fidelity=0.0
    )
    wall = time.perf_counter() - start
    prepared = prepare_data((x, y), DataConfig(), seed)  # the same split synthesize used
    real_x, real_y = prepared.part("train")
    test_x, test_y = prepared.part("test")
    q = {k: v for k, v in synthesis.quality.items() if k not in ("diversity_per_class", "ks")}
    return {
        "data": name,
        "gan_epochs": synthesis.training.epochs_run,
        "gan_seconds": round(synthesis.training.seconds, 1),
        "wall_seconds": round(wall, 1),
        **q,
        "baselines": _baselines(synthesis, real_x, real_y, test_x, test_y, seed),
    }


def small_data(name, seed, epochs, gan_epochs, per_class, seconds):
    from sklearn.model_selection import train_test_split

    x, y = _load(name)
    x_small, x_rest, y_small, y_rest = train_test_split(
        x, y, train_size=0.1, stratify=y, random_state=seed
    )
    scores = {}
    for label, synth in (
        ("real only", None),
        (
            "real + synthetic",
            {"epochs": gan_epochs, "per_class": per_class, "max_seconds": seconds},
        ),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            result = kerastrain.fit_pipeline(
                (x_small, y_small),
                "auto",
                data_options={"synthesize": synth},
                # Pinned: "auto" precision and XLA are chosen by timing, which differs
                # between two runs on a shared machine and would change the numbers.
                train={
                    "epochs": epochs,
                    "verbose": 0,
                    "execution": {"mixed_precision": "float32", "jit_compile": False},
                },
                export={"formats": []},
                report={"explain": "none"},
                output_dir=tmp,
                seed=seed,
            )
            predicted = np.argmax(result.model.predict(x_rest, verbose=0), axis=-1)
            if result.model.output_shape[-1] == 1:
                predicted = (result.model.predict(x_rest, verbose=0)[:, 0] > 0.5).astype(int)
            scores[label] = {
                "accuracy_on_the_other_90pct": float(np.mean(predicted == y_rest)),
                "epochs_run": len(result.history["loss"]),
            }
            if result.synthetic:
                scores[label]["synthetic"] = {
                    k: result.synthetic.get(k)
                    for k in ("used", "rows_added", "fidelity", "tstr", "trtr", "reason")
                }
    return {"data": name, "rows": len(y_small), **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=170.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", nargs="+", default=["digits", "breast_cancer"])
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--parts", nargs="+", default=["quality", "small"], choices=["quality", "small"]
    )
    parser.add_argument("--small-gan-epochs", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = []
    for name in args.data:
        if "quality" in args.parts:
            results.append(quality(name, args.seconds, args.seed, epochs=2000))
            print(json.dumps(results[-1], indent=1), flush=True)
        if "small" in args.parts:
            results.append(
                small_data(
                    name, args.seed, 60, args.small_gan_epochs, per_class=100, seconds=args.seconds
                )
            )
            print(json.dumps(results[-1], indent=1), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
