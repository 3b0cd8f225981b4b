"""Data: sources (arrays, tables, image folders, TFDS), validation, splits
and folds, augmentation, and the tf.data input pipeline."""

from kerastrain.data.feed import InMemory, make_dataset, training_datasets
from kerastrain.data.sources import BUILTIN_DATASETS, Loaded, load_data
from kerastrain.data.split import Splits, fold_indices, split_indices
from kerastrain.data.stream import Stream
from kerastrain.data.validate import Validated, validate

__all__ = [
    "BUILTIN_DATASETS",
    "InMemory",
    "Loaded",
    "Splits",
    "Stream",
    "Validated",
    "fold_indices",
    "load_data",
    "make_dataset",
    "split_indices",
    "training_datasets",
    "validate",
]
