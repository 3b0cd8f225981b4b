"""Transfer learning in two phases, inside one fit_pipeline call.

Pretrains a CNN on scikit-learn's digits 0-4, then learns digits 5-9 from 4
labelled examples per class: first a new head on the frozen CNN, then the
top layers fine-tuned at a tenth of the learning rate. The same network
trained from scratch on the same 20 examples is the baseline.

With a Keras Applications backbone, online:
    model="transfer", model_options={"backbone": "mobilenet_v2", "weights": "imagenet"}
(`weights` may also be None or a local '_notop' weights file).

    python examples/transfer.py
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import kerastrain


def main(workdir: Path) -> None:
    digits = load_digits()
    x, y = digits.images[..., None].astype(np.float32), digits.target
    source = y < 5
    pretrained = kerastrain.fit_pipeline(
        (x[source], y[source]), "cnn", seed=0, output_dir=str(workdir / "pretrain"),
        model_options={"filters": 16, "dense": 64},
        train={"epochs": 10, "verbose": 0, "early_stopping": None}, export={"formats": []})

    target = np.flatnonzero(~source)
    rng = np.random.default_rng(100)
    few = np.concatenate([rng.choice(target[y[target] == c], 4, replace=False)
                          for c in range(5, 10)])
    unseen = np.setdiff1d(target, few)
    common = dict(seed=0, data_options={"validation_split": 0.0, "test_split": 0.0},
                  export={"formats": []})
    transferred = kerastrain.fit_pipeline(
        (x[few], y[few] - 5), "transfer", output_dir=str(workdir / "transfer"),
        model_options={"backbone": pretrained.model, "backbone_output": "flatten",
                       "dropout": 0.0, "fine_tune_layers": 20, "fine_tune_epochs": 10},
        train={"epochs": 20, "batch_size": 8, "learning_rate": 0.01, "verbose": 0,
               "early_stopping": None}, **common)
    print("phases:", transferred.stop_reason)
    scratch = kerastrain.fit_pipeline(
        (x[few], y[few] - 5), "cnn", output_dir=str(workdir / "scratch"),
        model_options={"filters": 16, "dense": 64},
        train={"epochs": 30, "batch_size": 8, "learning_rate": 0.01, "verbose": 0,
               "early_stopping": None}, **common)
    for name, run in (("transfer", transferred), ("scratch", scratch)):
        predicted = run.model.predict(x[unseen], verbose=0).argmax(axis=1)
        print(f"{name}: accuracy {np.mean(predicted == y[unseen] - 5):.3f} on {len(unseen)} "
              "digits 5-9 never seen")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
