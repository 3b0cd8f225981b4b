"""The synthesize stage, and `kerastrain.synthesize()`.

A class-conditional GAN (`kerastrain.synthetic.gan`) is trained on the
training split only; its samples, labelled with the class they were
conditioned on, are appended to the data and their rows added to the
training split only, so validation and test never hold a synthetic row.
The standardizer and column encodings stay those fitted on the real
training rows, and generated rows are raw rows (`kerastrain.synthetic.codec`)
that pass the same preprocessing.

Their quality is measured (`kerastrain.synthetic.quality`) before they are
used: below `min_fidelity` they are left out and the log says why.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.config.synthesize import parse_synthesize
from kerastrain.data.prepare import Prepared, prepare_data
from kerastrain.data.split import Splits
from kerastrain.errors import config_error
from kerastrain.synthetic.codec import Codec, fit_codec
from kerastrain.synthetic.gan import GanTraining, generate, train_gan
from kerastrain.synthetic.quality import image_grid, measure_quality

logger = logging.getLogger(__name__)

__all__ = [
    "Synthesis",
    "refuse_source",
    "synthesize",
    "synthesize_stage",
    "synthetic_section",
]

#: Rows per class generated to measure quality when fewer are added.
QUALITY_ROWS = 50
#: The run folder's sub-folder of the GAN's state and generator.
STATE_DIR = "synthetic"
GRID_FILE = "synthetic_grid.png"
PATH = "data_options.synthesize"


@dataclasses.dataclass
class Synthesis:
    """Synthetic rows and what made them.

    Attributes:
        generator: The trained generator, `[noise, label] -> encoded example`
            (decode with `codec`).
        x: The synthetic rows, raw (images, a feature array, or a table's
            dict of columns), as the data's own rows.
        y: The class each row was generated for.
        quality: The quality figures (`kerastrain.synthetic.quality`).
        codec: The map between raw rows and the generator's numbers.
        training: The GAN's training history and stop reason.
    """

    generator: keras.Model
    x: Any
    y: np.ndarray
    quality: dict[str, Any]
    codec: Codec
    training: GanTraining


def refuse_source(data: Any, options: DataConfig) -> None:
    """Refuses `synthesize` on a `tf.data.Dataset` before anything is read.

    Raises:
        ConfigError: When `data_options.synthesize` is set and ``data`` is a
            `tf.data.Dataset`.
    """
    if parse_synthesize(options.synthesize) is not None and isinstance(data, tf.data.Dataset):
        raise config_error(
            PATH,
            options.synthesize,
            "None for a tf.data.Dataset source: synthetic rows are appended to in-memory "
            "arrays or tables (pass (x, y) arrays, a DataFrame or a CSV file instead)",
        )


def _check(prepared: Prepared, options: dict[str, Any]) -> None:
    if not prepared.task.is_classification:
        raise config_error(
            PATH,
            options["method"],
            "None for a regression task: the GAN generates rows of a given class, and "
            f"{prepared.source} has continuous targets",
        )
    if prepared.is_stream:
        raise config_error(
            PATH,
            options["method"],
            "None for data streamed from files (too large for memory): synthetic rows are "
            "appended to in-memory data",
        )
    if prepared.source == "tf.data.Dataset":
        raise config_error(
            PATH,
            options["method"],
            "None for a tf.data.Dataset source: synthetic rows are appended to in-memory "
            "arrays or tables",
        )


def _rows_to_add(y_train: np.ndarray, num_classes: int, per_class: Any) -> np.ndarray:
    counts = np.bincount(y_train, minlength=num_classes)
    if per_class == "balance":
        return counts.max() - counts
    return np.full(num_classes, int(per_class))


def _take(x: Any, mask: np.ndarray) -> Any:
    return {k: v[mask] for k, v in x.items()} if isinstance(x, dict) else x[mask]


def _concat(x: Any, more: Any) -> Any:
    if isinstance(x, dict):
        return {k: np.concatenate([v, np.asarray(more[k]).astype(v.dtype)]) for k, v in x.items()}
    return np.concatenate([x, np.asarray(more).astype(x.dtype)])


def _run(
    prepared: Prepared, options: dict[str, Any], seed: int, out_dir: Path | None
) -> tuple[Synthesis, np.ndarray]:
    """Trains the GAN on the training split and generates; returns the
    synthesis (every generated row, for the quality figures) and the mask of
    the rows to add."""
    _check(prepared, options)
    k = prepared.task.num_classes
    train = prepared.splits.train
    kinds = prepared.table.columns if prepared.table is not None else None
    codec = fit_codec(prepared.x, train, kinds)
    raw_train = prepared.rows(train)
    y_train = prepared.y[train].astype(np.int64)
    logger.info(
        "Training a conditional GAN on the %d training rows (%s, %d classes).",
        len(train),
        codec.kind,
        k,
    )
    training = train_gan(
        codec.encode(raw_train),
        y_train,
        codec,
        k,
        options,
        seed=seed,
        state_dir=out_dir / STATE_DIR if out_dir is not None else None,
    )
    add = _rows_to_add(y_train, k, options["per_class"])
    made = np.maximum(add, QUALITY_ROWS)
    labels = np.repeat(np.arange(k), made)
    raw = codec.decode(generate(training.generator, labels, options["latent_dim"], seed + 1))
    keep = np.concatenate([np.arange(n) < a for n, a in zip(made, add)])
    held = prepared.splits.test if len(prepared.splits.test) else prepared.splits.val
    quality = measure_quality(
        codec,
        codec.encode(raw_train),
        y_train,
        codec.encode(raw),
        labels,
        codec.encode(prepared.rows(held)),
        prepared.y[held].astype(np.int64),
        num_classes=k,
        raw_real=raw_train,
        raw_synth=raw,
        seed=seed,
    )
    quality["held_out_split"] = "test" if len(prepared.splits.test) else "val"
    synthesis = Synthesis(training.generator, raw, labels, quality, codec, training)
    return synthesis, keep


def synthesize_stage(
    prepared: Prepared, seed: int, run_dir: str | Path | None = None
) -> tuple[Prepared, dict[str, Any] | None]:
    """Adds GAN-made rows to the training split when they are good enough.

    Args:
        prepared: The prepared data (`options.synthesize` says what to do).
        seed: Seeds the GAN and its samples.
        run_dir: The run folder: the GAN's checkpoint and generator go to
            its `synthetic/` folder (a rerun resumes), the grid of images
            beside the report. Defaults to `None`.

    Returns:
        The data with the synthetic rows in its training split (or as it
        was, when they were not used), and the figures for
        `result.synthetic` (None when nothing was asked).

    Raises:
        ConfigError: For a regression task or a source that cannot take rows.
        TrainingDivergedError: When the GAN collapses.
    """
    options = parse_synthesize(prepared.options.synthesize)
    if options is None:
        return prepared, None
    out_dir = Path(run_dir) if run_dir is not None else None
    synthesis, keep = _run(prepared, options, seed, out_dir)
    keras.utils.set_random_seed(seed)  # the model's start does not depend on the GAN's draws
    quality, training = synthesis.quality, synthesis.training
    names = prepared.task.class_names or [str(c) for c in range(prepared.task.num_classes)]
    counts = np.bincount(synthesis.y[keep], minlength=len(names))
    record: dict[str, Any] = {
        "method": options["method"],
        "per_class": options["per_class"],
        "rows_per_class": dict(zip(names, counts.tolist())),
        **quality,
        "min_fidelity": options["min_fidelity"],
        "gan_epochs": training.epochs_run,
        "gan_seconds": round(training.seconds, 2),
        "gan_stop_reason": training.stop_reason,
        "gan_final_losses": {
            "g_loss": training.history["g_loss"][-1] if training.history["g_loss"] else None,
            "d_loss": training.history["d_loss"][-1] if training.history["d_loss"] else None,
        },
    }
    if out_dir is not None and synthesis.codec.kind == "image":
        record["grid"] = str(
            image_grid(out_dir / GRID_FILE, np.asarray(synthesis.x), synthesis.y, names)
        )
    added = int(keep.sum())
    if quality["fidelity"] < options["min_fidelity"]:
        record.update(used=False, rows_added=0)
        record["reason"] = (
            f"fidelity {quality['fidelity']:.3f} is below min_fidelity "
            f"{options['min_fidelity']:g}: a classifier trained on the real training rows "
            "labels too few synthetic rows as the class they were generated for"
        )
        logger.warning("Synthetic rows not used: %s.", record["reason"])
        return prepared, record
    if added == 0:
        record.update(used=False, rows_added=0, reason="no rows to add (the classes are balanced)")
        logger.info("Synthetic rows: none added (%s).", record["reason"])
        return prepared, record
    x = _concat(prepared.x, _take(synthesis.x, keep))
    y = np.concatenate([prepared.y, synthesis.y[keep].astype(prepared.y.dtype)])
    new_rows = np.arange(prepared.num_rows, prepared.num_rows + added, dtype=np.int64)
    splits = Splits(
        train=np.concatenate([prepared.splits.train, new_rows]),
        val=prepared.splits.val,
        test=prepared.splits.test,
    )
    record.update(used=True, rows_added=added, reason="")
    logger.info(
        "Added %d synthetic rows to the training split (fidelity %.3f, TSTR %s).",
        added,
        quality["fidelity"],
        "n/a" if quality.get("tstr") is None else f"{quality['tstr']:.3f}",
    )
    return dataclasses.replace(prepared, x=x, y=y, splits=splits), record


def synthetic_section(record: dict[str, Any]) -> dict[str, Any]:
    """The report's section on the synthetic rows: the fields of
    `kerastrain.report.Section`."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    used = (
        f"{record['rows_added']} synthetic rows were added to the training split only."
        if record["used"]
        else f"No synthetic rows were used: {record['reason']}."
    )
    text = (
        f"A conditional GAN trained {record['gan_epochs']} epochs on the real training rows "
        f"({record['gan_seconds']:.0f}s; {record['gan_stop_reason']}). {used}\n\n"
        f"Fidelity {fmt(record['fidelity'])} (min {record['min_fidelity']:g}); TSTR "
        f"{fmt(record.get('tstr'))} against {fmt(record.get('trtr'))} for the same classifier "
        f"trained on real rows ({record.get('held_out_split', 'held-out')} split); diversity "
        f"{fmt(record.get('diversity'))} of the real rows'; {record.get('exact_copies', 0)} "
        f"exact copies of training rows; median distance to the closest training row "
        f"{fmt(record.get('median_distance_to_train'))} against "
        f"{fmt(record.get('median_holdout_distance_to_train'))} for real held-out rows."
    )
    rows = [{"class": c, "rows added": n} for c, n in record["rows_per_class"].items()]
    if record.get("ks"):
        rows += [{"column": c, "KS distance": round(v, 4)} for c, v in record["ks"].items()]
    images = [record["grid"]] if record.get("grid") else []
    return {"title": "Synthetic data", "text": text, "rows": rows, "images": images}


def synthesize(
    data: Any,
    *,
    per_class: Any = "balance",
    epochs: int = 300,
    latent_dim: int = 32,
    data_options: Any = None,
    seed: int = 0,
    output_dir: str | Path | None = None,
    **options: Any,
) -> Synthesis:
    """A conditional GAN and its samples, without a training run.

    The data is read and split as `fit_pipeline` would (`data_options`),
    the GAN trained on the training split, and the samples' quality measured
    against the held-out split.

    Args:
        data: Anything `fit_pipeline` takes that holds classes in memory.
        per_class: Rows per class, or `"balance"`. Defaults to `"balance"`.
        epochs: GAN training epochs. Defaults to `300`.
        latent_dim: The noise's size. Defaults to `32`.
        data_options: Mapping or `DataConfig`. Defaults to `None`.
        seed: Seeds the split, the GAN and the samples. Defaults to `0`.
        output_dir: Where the GAN's checkpoint and generator go (a rerun
            resumes). Defaults to `None`.
        **options: Other keys of `data_options.synthesize` (`batch_size`,
            `learning_rate`, `min_fidelity`, `collapse_patience`,
            `max_seconds`).

    Returns:
        A `Synthesis`: the generator and the rows asked for.

    Raises:
        ConfigError: For a bad option, a regression task or a dataset source.
    """
    asked = {"per_class": per_class, "epochs": epochs, "latent_dim": latent_dim, **options}
    parsed = parse_synthesize(asked)
    if isinstance(data_options, DataConfig):
        cfg = data_options.replace(synthesize=asked)
    else:
        cfg = DataConfig.from_dict({**(data_options or {}), "synthesize": asked})
    refuse_source(data, cfg)
    prepared = prepare_data(data, cfg, seed)
    keras.utils.set_random_seed(seed)
    synthesis, keep = _run(prepared, parsed, seed, Path(output_dir) if output_dir else None)
    if synthesis.quality["fidelity"] < parsed["min_fidelity"]:
        logger.warning(
            "Synthetic rows' fidelity %.3f is below min_fidelity %g.",
            synthesis.quality["fidelity"],
            parsed["min_fidelity"],
        )
    return dataclasses.replace(synthesis, x=_take(synthesis.x, keep), y=synthesis.y[keep])
