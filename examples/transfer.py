"""Transfer learning in two phases, inside one fit_pipeline call.

Pretrains a CNN on scikit-learn's digits 0-4, then learns digits 5-9 from 2
labelled examples per class: first a new head on the frozen CNN, then the
top layers fine-tuned at a tenth of the learning rate. The same network
trained from scratch on the same 10 examples is the baseline.

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
    workdir.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x, y = digits.images[..., None].astype(np.float32), digits.target
    source = y < 5
    pretrained = kerastrain.fit_pipeline(
        (x[source], y[source]),
        "cnn",
        seed=0,
        output_dir=str(workdir / "pretrain"),
        model_options={"filters": 16, "dense": 64},
        train={"epochs": 10, "verbose": 0, "early_stopping": None},
        export={"formats": []},
    )

    target = np.flatnonzero(~source)
    common = dict(data_options={"validation_split": 0.0, "test_split": 0.0}, export={"formats": []})
    scores = []
    for draw in range(3):  # 2 labelled examples per class, three draws
        rng = np.random.default_rng(100 + draw)
        few = np.concatenate(
            [rng.choice(target[y[target] == c], 2, replace=False) for c in range(5, 10)]
        )
        unseen = np.setdiff1d(target, few)
        transferred = kerastrain.fit_pipeline(
            (x[few], y[few] - 5),
            "transfer",
            seed=draw,
            output_dir=str(workdir / f"t{draw}"),
            model_options={
                "backbone": pretrained.model,
                "backbone_output": "flatten",
                "dropout": 0.0,
                "fine_tune_layers": 20,
                "fine_tune_epochs": 10,
            },
            train={
                "epochs": 20,
                "batch_size": 5,
                "learning_rate": 0.01,
                "verbose": 0,
                "early_stopping": None,
            },
            **common,
        )
        scratch = kerastrain.fit_pipeline(  # the same network, 30 epochs, no pretraining
            (x[few], y[few] - 5),
            "cnn",
            seed=draw,
            output_dir=str(workdir / f"s{draw}"),
            model_options={"filters": 16, "dense": 64},
            train={
                "epochs": 30,
                "batch_size": 5,
                "learning_rate": 0.01,
                "verbose": 0,
                "early_stopping": None,
            },
            **common,
        )
        scores.append(
            [
                np.mean(run.model.predict(x[unseen], verbose=0).argmax(axis=1) == y[unseen] - 5)
                for run in (transferred, scratch)
            ]
        )
        print(f"draw {draw}: transfer {scores[-1][0]:.3f}, scratch {scores[-1][1]:.3f}")
    print("phases:", transferred.stop_reason)
    mean = np.mean(scores, axis=0)
    print(f"mean accuracy on digits 5-9 never seen: transfer {mean[0]:.3f}, scratch {mean[1]:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
