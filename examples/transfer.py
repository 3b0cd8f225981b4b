"""Transfer learning in two phases, inside one fit_pipeline call.

Pretrains a CNN on scikit-learn's digits 0-4, then learns digits 5-9 from 2
labelled examples per class: first a new head on the frozen CNN, then the
top layers fine-tuned at a tenth of the learning rate. The same network
trained from scratch on the same 10 examples is the baseline.

With a Keras Applications backbone, online:
    model="transfer", model_options={"backbone": "mobilenet_v2", "weights": "imagenet"}
(`weights` may also be None or a local '_notop' weights file).

    python examples/transfer.py                   # 3 draws, 20 + 10 epochs a transfer
    python examples/transfer.py --quick           # 1 draw, 2 + 2 epochs: a check that it runs

Writes to `saved_models/transfer/` (or `--output-dir DIR`): the run folders
`pretrain/`, `transfer_<draw>/` and `scratch_<draw>/`; it prints where they are.
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import kerastrain


def main(workdir: Path, quick: bool) -> None:
    digits = load_digits()
    x, y = digits.images[..., None].astype(np.float32), digits.target
    source = y < 5
    pretrained = kerastrain.fit_pipeline(
        (x[source], y[source]),
        "cnn",
        seed=0,
        output_dir=str(workdir / "pretrain"),
        overwrite=True,
        model_options={"filters": 16, "dense": 64},
        train={"epochs": 3 if quick else 10, "verbose": 0, "early_stopping": None},
        export={"formats": []},
    )

    target = np.flatnonzero(~source)
    common = dict(
        data_options={"validation_split": 0.0, "test_split": 0.0},
        export={"formats": []},
        overwrite=True,
    )
    head_epochs, fine_tune_epochs = (2, 2) if quick else (20, 10)
    scores = []
    for draw in range(1 if quick else 3):  # 2 labelled examples per class, three draws
        rng = np.random.default_rng(100 + draw)
        few = np.concatenate(
            [rng.choice(target[y[target] == c], 2, replace=False) for c in range(5, 10)]
        )
        unseen = np.setdiff1d(target, few)
        transferred = kerastrain.fit_pipeline(
            (x[few], y[few] - 5),
            "transfer",
            seed=draw,
            output_dir=str(workdir / f"transfer_{draw}"),
            model_options={
                "backbone": pretrained.model,
                "backbone_output": "flatten",
                "dropout": 0.0,
                "fine_tune_layers": 20,
                "fine_tune_epochs": fine_tune_epochs,
            },
            train={
                "epochs": head_epochs,  # the fine-tuning epochs come after these
                "batch_size": 5,
                "learning_rate": 0.01,
                "verbose": 0,
                "early_stopping": None,
            },
            **common,
        )
        scratch = kerastrain.fit_pipeline(  # the same network, as many epochs, no pretraining
            (x[few], y[few] - 5),
            "cnn",
            seed=draw,
            output_dir=str(workdir / f"scratch_{draw}"),
            model_options={"filters": 16, "dense": 64},
            train={
                "epochs": head_epochs + fine_tune_epochs,
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
    print(f"Runs in {workdir}; the last transfer's report: {transferred.report_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 draw, a few epochs")
    parser.add_argument("--output-dir", type=Path, default=Path("saved_models/transfer"))
    args = parser.parse_args()
    main(args.output_dir, args.quick)
