"""Data: sources, validation, splits and the tf.data input pipeline."""

from kerastrain.data.feed import InMemory, make_dataset
from kerastrain.data.sources import BUILTIN_DATASETS, Loaded, load_data
from kerastrain.data.split import Splits, split_indices
from kerastrain.data.validate import Task, Validated, validate

__all__ = ["BUILTIN_DATASETS", "InMemory", "Loaded", "Splits", "Task", "Validated",
           "load_data", "make_dataset", "split_indices", "validate"]
