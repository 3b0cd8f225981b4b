"""Every plot of the report, each drawn inside `kerastrain.figures.figure`
(one PNG, written atomically); each returns the PNG's path."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain.figures import figure

__all__ = [
    "plot_history",
    "plot_class_balance",
    "plot_confusion",
    "plot_roc_pr",
    "plot_reliability",
    "plot_residuals",
    "LEARNING_RATE_KEYS",
]

#: The history keys that hold the learning rate.
LEARNING_RATE_KEYS = ("lr", "learning_rate")
#: The history key of the adaptive augmentation's magnitude (its own panel).
MAGNITUDE_KEY = "augment_magnitude"
#: Largest class count whose confusion matrix cells get their numbers written.
ANNOTATED_CLASSES = 12
#: Largest class count whose curves get one line each (more: the legend is dropped).
LEGEND_CLASSES = 10


def plot_history(history: Mapping[str, Sequence[float]], path: Path) -> Path | None:
    """Plots the loss, each logged metric against its validation twin, the
    learning rate and the adaptive augmentation's magnitude when they were
    logged; returns the PNG (None when empty)."""
    from matplotlib.ticker import MaxNLocator

    names = [
        k
        for k in history
        if not k.startswith("val_")
        and k not in LEARNING_RATE_KEYS
        and k != MAGNITUDE_KEY
        and len(history[k])
    ]
    names.sort(key=lambda k: k != "loss")
    rate = next((k for k in LEARNING_RATE_KEYS if len(history.get(k, ()))), None)
    magnitude = MAGNITUDE_KEY if len(history.get(MAGNITUDE_KEY, ())) else None
    panels = names + ([rate] if rate else []) + ([magnitude] if magnitude else [])
    if not panels:
        return None
    with figure(path, 1, len(panels), figsize=(4.3 * len(panels), 3.4), squeeze=False) as (
        _,
        axes,
    ):
        for ax, name in zip(axes[0], panels):
            values = history[name]
            epochs = range(1, len(values) + 1)
            if name == rate:
                ax.plot(epochs, values, color="tab:green")
                ax.set_title("learning rate")
                if min(values) > 0:
                    ax.set_yscale("log")
            elif name == magnitude:
                ax.step(epochs, values, where="mid", color="tab:purple")
                ax.set_ylim(-0.05, 1.05)
                ax.set_title("augmentation magnitude")
            else:
                ax.plot(epochs, values, label="train")
                if len(history.get(f"val_{name}", ())):
                    ax.plot(
                        range(1, len(history[f"val_{name}"]) + 1),
                        history[f"val_{name}"],
                        label="validation",
                    )
                ax.set_title(name)
                ax.legend()
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
    return path


def plot_class_balance(classes: Mapping[str, int], path: Path) -> Path:
    """Rows per class as bars."""
    names, counts = list(map(str, classes)), list(classes.values())
    with figure(path, figsize=(min(1.0 + 0.45 * len(names), 12), 3.0)) as (_, ax):
        ax.bar(range(len(names)), counts, color="tab:blue")
        ax.set_xticks(
            range(len(names)),
            names,
            rotation=45 if len(names) > 8 else 0,
            ha="right" if len(names) > 8 else "center",
        )
        ax.set_ylabel("rows")
        ax.set_title("Rows per class")
    return path


def plot_confusion(
    counts: np.ndarray, normalized: np.ndarray, names: Sequence[str], path: Path
) -> Path:
    """The confusion matrix in counts and as shares of each true class, side by side."""
    k = len(names)
    size = min(3.0 + 0.35 * k, 9.0)
    with figure(path, 1, 2, figsize=(2 * size + 1, size)) as (fig, axes):
        for ax, matrix, title, fmt in (
            (axes[0], counts, "counts", "d"),
            (axes[1], normalized, "share of each true class", ".2f"),
        ):
            image = ax.imshow(matrix, cmap="Blues", vmin=0)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_xticks(range(k), names, rotation=45 if k > 6 else 0, fontsize=8)
            ax.set_yticks(range(k), names, fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(title)
            if k <= ANNOTATED_CLASSES:
                top = matrix.max() if matrix.size else 0
                for i in range(k):
                    for j in range(k):
                        ax.text(
                            j,
                            i,
                            format(matrix[i, j], fmt),
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if top and matrix[i, j] > top / 2 else "black",
                        )
    return path


def plot_roc_pr(
    roc: Mapping[str, Mapping[str, Any]], pr: Mapping[str, Mapping[str, Any]], path: Path
) -> Path:
    """ROC and precision-recall curves, one line per class, side by side."""
    with figure(path, 1, 2, figsize=(10, 4.2)) as (_, axes):
        for name, curve in roc.items():
            axes[0].plot(
                curve["fpr"], curve["tpr"], lw=1.2, label=f"{name} (AUC {curve['auc']:.3f})"
            )
        axes[0].plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
        axes[0].set(
            xlabel="false positive rate",
            ylabel="true positive rate",
            title="ROC",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        for name, curve in pr.items():
            axes[1].plot(
                curve["recall"], curve["precision"], lw=1.2, label=f"{name} (AP {curve['ap']:.3f})"
            )
        axes[1].set(
            xlabel="recall",
            ylabel="precision",
            title="Precision-recall",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        for ax in axes:
            ax.grid(alpha=0.3)
            if len(roc) <= LEGEND_CLASSES:
                ax.legend(fontsize=7, loc="lower right" if ax is axes[0] else "lower left")
    return path


def plot_reliability(bins: Mapping[str, Any], path: Path) -> Path:
    """The reliability diagram beside the rows in each probability bin."""
    confidence, observed = np.asarray(bins["confidence"]), np.asarray(bins["observed"])
    counts, edges = np.asarray(bins["counts"]), np.asarray(bins["bin_edges"])
    with figure(path, 1, 2, figsize=(9, 4), gridspec_kw={"width_ratios": [3, 2]}) as (_, axes):
        axes[0].plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfectly calibrated")
        axes[0].plot(confidence, observed, marker="o", label="model")
        axes[0].set(
            xlabel=f"predicted probability ({bins['kind']})",
            ylabel="observed frequency",
            title=f"Reliability (ECE {bins['ece']:.3f})",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        axes[0].legend(fontsize=8)
        axes[0].grid(alpha=0.3)
        axes[1].bar(confidence, counts, width=float(edges[1] - edges[0]) * 0.9, color="tab:blue")
        axes[1].set(
            xlabel="predicted probability", ylabel="rows", title="Rows per bin", xlim=(0, 1)
        )
    return path


def plot_residuals(predicted: np.ndarray, residual: np.ndarray, path: Path) -> Path:
    """Residuals against the prediction, and their distribution."""
    with figure(path, 1, 2, figsize=(9.5, 3.8)) as (_, axes):
        axes[0].scatter(predicted, residual, s=8, alpha=0.6)
        axes[0].axhline(0.0, color="grey", lw=0.8, ls="--")
        axes[0].set(xlabel="predicted", ylabel="true - predicted", title="Residuals")
        axes[1].hist(residual, bins=30, color="tab:blue")
        axes[1].set(xlabel="true - predicted", ylabel="rows", title="Residual distribution")
        for ax in axes:
            ax.grid(alpha=0.3)
    return path
