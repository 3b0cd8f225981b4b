"""Data options: ``fit_pipeline(data_options={...})``."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, ClassVar, Literal

from kerastrain.config.adaptive import AUTO_AUGMENTATIONS, parse_auto
from kerastrain.config.base import Section, option
from kerastrain.config.synthesize import parse_synthesize
from kerastrain.errors import ConfigError, config_error
from kerastrain.extras import missing_extra

Task = Literal["auto", "binary", "multiclass", "regression"]
ColumnKind = Literal["numeric", "categorical", "text", "drop"]

#: Augmentations and their parameters (name -> {parameter: default}).
#: Image ones are tf_keras preprocessing layers; mixup and cutmix mix whole
#: batches; noise is Gaussian noise on standardized numeric columns.
AUGMENTATIONS: dict[str, dict[str, Any]] = {
    "flip": {"mode": "horizontal"},
    "rotation": {"factor": 0.1},
    "zoom": {"factor": 0.1},
    "translation": {"factor": 0.1},
    "contrast": {"factor": 0.2},
    "crop": {"factor": 0.1},
    "mixup": {"alpha": 0.2},
    "cutmix": {"alpha": 1.0},
    "noise": {"stddev": 0.05},
}
IMAGE_AUGMENTATIONS = ("flip", "rotation", "zoom", "translation", "contrast", "crop", "cutmix")
#: The module `tokenizer="subword"` needs (the extra ``kerastrain[text]``).
SUBWORD_MODULE = "tensorflow_text"
FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical")

#: What the presets mean for images and for tables (in the list syntax).
PRESETS: dict[str, dict[str, list[Any]]] = {
    "light": {
        "image": ["flip", {"rotation": 0.05}, {"zoom": 0.1}],
        "table": [{"noise": 0.05}],
    },
    "strong": {
        "image": [
            "flip",
            {"rotation": 0.15},
            {"zoom": 0.2},
            {"translation": 0.1},
            {"contrast": 0.3},
            {"crop": 0.1},
            {"mixup": 0.2},
        ],
        "table": [{"noise": 0.1}, {"mixup": 0.2}],
    },
}


def parse_augment(value: Any, kind: str | None = None) -> list[dict[str, Any]]:
    """The ``augment`` option as a list of ``{"name": ..., parameter: value}``.

    Args:
        value: `None`, `"light"`, `"strong"`, or a list whose items are a name
            (`"flip"`) or a one-key mapping of a name to its parameters
            (`{"rotation": 0.2}` sets the first parameter, or
            `{"rotation": {"factor": 0.2}}`).
        kind: `"image"` or `"table"` to expand a preset, or None to only
            check. Defaults to `None`.

    Returns:
        Each augmentation with all its parameters (empty for `None`, and for
        a preset when `kind` is None).

    Raises:
        ConfigError: For an unknown name or parameter, or a bad value.
    """
    path = "data_options.augment"
    if value is None:
        return []
    if parse_auto(value) is not None:  # the adaptive policy: its full-strength list
        return parse_augment(AUTO_AUGMENTATIONS[kind]) if kind else []
    if isinstance(value, str):
        if value in PRESETS:
            return parse_augment(PRESETS[value][kind]) if kind else []
        raise config_error(
            path,
            value,
            "'light', 'strong', 'auto', a list of augmentations, or None",
            [*PRESETS, "auto", *AUGMENTATIONS],
        )
    if not isinstance(value, (list, tuple)):
        raise config_error(path, value, "'light', 'strong', a list of augmentations, or None")
    parsed = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if isinstance(item, str):
            name, params = item, {}
        elif isinstance(item, dict) and len(item) == 1:
            ((name, params),) = item.items()
            if not isinstance(params, dict):
                params = {next(iter(AUGMENTATIONS.get(name, {"value": None}))): params}
        else:
            raise config_error(where, item, "a name or a one-key mapping {name: parameters}")
        if name not in AUGMENTATIONS:
            raise config_error(
                where, name, "one of " + ", ".join(map(repr, AUGMENTATIONS)), AUGMENTATIONS
            )
        defaults = AUGMENTATIONS[name]
        for key, val in params.items():
            if key not in defaults:
                raise config_error(
                    f"{where}.{name}",
                    key,
                    "one of its parameters: " + ", ".join(map(repr, defaults)),
                    defaults,
                )
            if key == "mode":
                if val not in FLIP_MODES:
                    raise config_error(
                        f"{where}.{name}.mode",
                        val,
                        "one of " + ", ".join(map(repr, FLIP_MODES)),
                        FLIP_MODES,
                    )
            elif (
                isinstance(val, bool)
                or not isinstance(val, (int, float))
                or not (0 < val <= (1 if name not in ("mixup", "cutmix", "noise") else 100))
            ):
                raise config_error(
                    f"{where}.{name}.{key}",
                    val,
                    "a number in (0, 1]"
                    if name not in ("mixup", "cutmix", "noise")
                    else "a positive number",
                )
        parsed.append({"name": name, **defaults, **params})
    names = [p["name"] for p in parsed]
    if "mixup" in names and "cutmix" in names:
        raise config_error(path, value, "at most one of 'mixup' and 'cutmix' (both mix batches)")
    if len(set(names)) != len(names):
        raise config_error(path, value, "a list without repeats")
    return parsed


@dataclasses.dataclass
class DataConfig(Section):
    """How the data is read, checked, split, encoded, augmented and fed.

    Attributes:
        target: The label column when the data is a DataFrame or a CSV file.
            Defaults to `None` (arrays and datasets carry their labels).
        task: `"binary"`, `"multiclass"`, `"regression"`, or `"auto"` to infer
            it from the labels (integers with few distinct values are classes).
            Defaults to `"auto"`.
        num_classes: The number of classes, when the labels do not show all of
            them. Defaults to `None` (the largest label plus one).
        validation_split: Fraction of the rows held out for validation (early
            stopping, tuning). Defaults to `0.15`.
        test_split: Fraction of the rows held out for the final test, never
            seen in training or tuning. Defaults to `0.15`.
        stratify: Keep each class's share equal across splits (classification
            only). Defaults to `True`.
        split: `"random"`: a shuffled holdout (stratified when `stratify`);
            `"time"`: rows stay in their order, the earliest train, then
            validation, the latest test, so nothing is learned from the
            future (cross-validation then uses scikit-learn's
            `TimeSeriesSplit`). Defaults to `"random"`.
        batch_size: Alias of `train.batch_size` kept for the design's contract
            (an integer or `"auto"`); setting both to different values is an
            error. Defaults to `None`.
        normalize: Standardize the features with a `Normalization` layer adapted
            on the training split and placed inside the exported model.
            Defaults to `True`.
        scale_target: For regression, train on standardized targets and
            append a `Rescaling` layer that maps outputs back to the original
            units, so the exported model answers in those units.
            Defaults to `True`.
        columns: Table columns by name: `"numeric"`, `"categorical"`,
            `"text"` or `"drop"`; columns not named are inferred (strings,
            booleans and integer columns with at most 10 distinct values are
            categorical; strings of several words, most of them distinct,
            are text). Defaults to `{}`.
        text_columns: Table columns that hold free text (same as
            `columns={name: "text"}`): each is tokenized by a vocabulary
            learned on the training split, inside the model, so the exported
            model takes raw strings. Defaults to `[]` (detected).
        tokenizer: How text is cut into tokens: `"word"` (lower-cased,
            punctuation stripped, split on whitespace), `"character"`, or
            `"subword"` (a WordPiece vocabulary learned on the training rows
            with tensorflow-text, the extra `pip install 'kerastrain[text]'`:
            lower-cased words split on punctuation, then cut into the
            vocabulary's pieces, so an unseen word is spelled from pieces).
            Defaults to `"word"`; for `model="transformer_lm"`,
            `"character"` when not set (lossless, so bits per byte is honest).
        vocabulary_size: The most tokens a text vocabulary keeps (the most
            frequent in training, counting the padding and out-of-vocabulary
            tokens); a token outside it maps to out-of-vocabulary.
            Defaults to `20000`.
        categorical: Encoding of categorical columns: `"one_hot"`,
            `"embedding"`, or `"auto"` (one-hot up to 32 categories, else an
            embedding). Unseen categories map to an out-of-vocabulary bucket.
            Defaults to `"auto"`.
        embedding_dim: Width of categorical embeddings. Defaults to `None`
            (`min(16, round(1.6 * categories ** 0.56))`).
        impute: Missing table values (empty, NaN): `"auto"` (median for
            numbers, most frequent category), `"median"`, `"mean"`,
            `"most_frequent"` (the statistic for numeric columns; categories
            always take the most frequent), `"drop"` (drop the rows, reporting
            how many and which), or `"error"`. Statistics are learned on the
            training split and live in the model. Defaults to `"auto"`.
        missing_indicator: Add a 0/1 column per numeric column that had missing
            values in training. Defaults to `False`.
        augment: `"light"`, `"strong"`, or a list of `flip`, `rotation`,
            `zoom`, `translation`, `contrast`, `crop` (images), `mixup`,
            `cutmix` (batches), `noise` (tables), each a name or
            `{name: parameters}`. Applied to training batches only, never to
            evaluation or the exported model. `"auto"` (or `{"policy":
            "auto", "max_magnitude": 1.0, "initial": 0.3, "step": 0.1,
            "patience": 2}`): one magnitude in [0, `max_magnitude`] scales
            rotation, zoom, translation, contrast, noise and the mixup
            probability; after each epoch it rises a `step` when the
            train-validation loss gap grew for `patience` epochs (or the
            diagnosis sees over-fitting) and falls a `step` on under-fitting;
            the history records `augment_magnitude`. Defaults to `None`.
        synthesize: Add synthetic training rows from a class-conditional GAN
            trained on the training split only (classification, in-memory
            images or tables): `"gan"` or `{"method": "gan", "per_class": N or
            "balance", "epochs": 300, "latent_dim": 32, "batch_size": 64,
            "learning_rate": 2e-4, "min_fidelity": 0.7, "collapse_patience":
            20, "max_seconds": None}`. `"balance"` tops the minority classes
            up to the largest one's count. The rows are used only when a
            classifier trained on the real training rows labels at least
            `min_fidelity` of them as their class; validation and test never
            hold synthetic rows. Defaults to `None`.
        image_size: `[height, width]` images are resized to (image folders,
            TFDS). Defaults to `None` (the first image's size).
        channels: 1 (grayscale) or 3 (RGB) for image folders. Defaults to
            `None` (the first image's).
        tfds_split: TFDS split(s): a split expression (`"train"`,
            `"train+test"`, `"train[:50%]"`), split by `validation_split` and
            `test_split`; or a mapping `{"train": ..., "val": ..., "test": ...}`
            using the named TFDS splits as they are (a missing `val` or `test`
            is carved out of `train`). Defaults to `"train"`.
        tfds_data_dir: Where TFDS data is (or is downloaded to). Defaults to
            `None` (TFDS's own default, `~/tensorflow_datasets`).
        tfds_download: Download and prepare a TFDS data set that is not in
            `tfds_data_dir`. Defaults to `True`.
        in_memory_mb: File-based sources (image folders, TFDS, CSV, Parquet
            and TFRecord tables) are decoded into memory when they take at
            most this many MiB, else streamed from their files every epoch
            (a table after one statistics pass over its training rows).
            Defaults to `1024`.
        split_key: A column of a table read from files whose stable hash
            decides each row's split (rows that share a key share a split;
            the same split every run, in memory or streamed). Defaults to
            `None` (a streamed table hashes each row's file name and
            position; an in-memory one is split as `split` says).
        max_dataset_rows: The most examples read from a `tf.data.Dataset`
            (which is read into memory to be checked and split); a dataset
            with more, or a generator that never ends, is refused with a
            `DataError` once this many are read. Defaults to `1_000_000`.
        audit: The data-quality audit run between the split and training
            (`kerastrain.data.audit`): exact duplicate rows, duplicates shared
            by two splits, identical features with different labels, constant
            and near-constant columns, a single column that predicts the label
            almost perfectly, outliers, missing values, and drift between the
            training and test splits. `True` logs its findings as warnings and
            records them (`result.data_quality`, the report); `"strict"` also
            raises a `DataError` before training for duplicates shared by
            splits and for suspected target leakage; `False` skips it.
            Defaults to `True`.
        audit_rows: The column checks of the audit (leakage, outliers, drift,
            constant columns) read a seeded sample of at most this many rows;
            the row checks hash every row. Defaults to `50_000`.
        deduplicate: Drop exact duplicate rows (same features and label),
            keeping the first of each, before the split; how many and which
            are logged and reported. Defaults to `False`.
        resample: Rebalance the training split only (validation and test
            keep their distribution): `"oversample"` repeats rows of the
            smaller classes, drawn at random, until each class has as many as
            the largest; `"undersample"` keeps a random subset of each class
            as large as the smallest. Drawn anew with the run's seed;
            classification only. Defaults to `None`.
    """

    _path: ClassVar[str] = "data_options"

    target: str | None = None
    task: Task = "auto"
    num_classes: int | None = option(None, ge=2)
    validation_split: float = option(0.15, ge=0.0, lt=1.0)
    test_split: float = option(0.15, ge=0.0, lt=1.0)
    stratify: bool = True
    split: Literal["random", "time"] = "random"
    batch_size: int | Literal["auto"] | None = option(None, gt=0)
    normalize: bool = True
    scale_target: bool = True
    columns: dict[str, Any] = dataclasses.field(default_factory=dict)
    text_columns: list[str] = dataclasses.field(default_factory=list)
    tokenizer: Literal["word", "character", "subword"] = "word"
    vocabulary_size: int = option(20000, ge=3)
    categorical: Literal["auto", "one_hot", "embedding"] = "auto"
    embedding_dim: int | None = option(None, gt=0)
    impute: Literal["auto", "median", "mean", "most_frequent", "drop", "error"] = "auto"
    missing_indicator: bool = False
    augment: Any = None
    synthesize: Any = None
    image_size: list[int] | None = None
    channels: Literal[1, 3, None] = None
    tfds_split: str | dict[str, str] = "train"
    tfds_data_dir: str | None = None
    tfds_download: bool = True
    in_memory_mb: float = option(1024.0, ge=0.0)
    max_dataset_rows: int = option(1_000_000, gt=0)
    audit: bool | Literal["strict"] = True
    audit_rows: int = option(50_000, ge=100)
    deduplicate: bool = False
    resample: Literal["oversample", "undersample"] | None = None
    split_key: str | None = None

    def validate(self) -> None:
        held_out = self.validation_split + self.test_split
        if held_out >= 1.0:
            raise config_error(
                "data_options.validation_split",
                self.validation_split,
                f"small enough that validation_split + test_split < 1 "
                f"(test_split={self.test_split}, sum={held_out:g})",
            )
        kinds = ("numeric", "categorical", "text", "drop")
        for name, kind in self.columns.items():
            if kind not in kinds:
                raise config_error(
                    f"data_options.columns.{name}",
                    kind,
                    "one of " + ", ".join(map(repr, kinds)),
                    kinds,
                )
        if self.target is not None and self.columns.get(self.target) is not None:
            raise config_error(
                f"data_options.columns.{self.target}",
                self.columns[self.target],
                "absent: it is the target column",
            )
        for name in self.text_columns:
            if self.columns.get(name, "text") != "text" or name == self.target:
                raise config_error(
                    "data_options.text_columns",
                    self.text_columns,
                    f"columns that are neither the target nor declared otherwise ({name!r} is "
                    f"{'the target' if name == self.target else repr(self.columns[name])})",
                )
        if self.tokenizer == "subword" and importlib.util.find_spec(SUBWORD_MODULE) is None:
            raise ConfigError(
                missing_extra("data_options.tokenizer='subword'", "text", SUBWORD_MODULE)
            )
        parse_augment(self.augment)
        parse_synthesize(self.synthesize)
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            raise config_error(
                "data_options.image_size",
                self.image_size,
                "a list [height, width] of two positive integers",
            )
        if isinstance(self.tfds_split, dict):
            allowed = ("train", "val", "test")
            for key in self.tfds_split:
                if key not in allowed:
                    raise config_error(
                        f"data_options.tfds_split.{key}",
                        key,
                        "one of 'train', 'val', 'test'",
                        allowed,
                    )
            if "train" not in self.tfds_split:
                raise config_error(
                    "data_options.tfds_split", self.tfds_split, "a mapping with a 'train' entry"
                )


__all__ = ["DataConfig", "AUGMENTATIONS", "PRESETS", "IMAGE_AUGMENTATIONS", "parse_augment"]
