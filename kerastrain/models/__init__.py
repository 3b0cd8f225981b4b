"""Model factories: `mlp`, `cnn`, `resnet`, `transfer`, `transformer`, `transformer_lm`, and the
registry that names them.

A `transfer` model's second training phase is a plain value, its
`FineTunePlan` (`fine_tune_plan`), which the training stage runs. On a
kerastrain text backbone it can train LoRA adapters instead
(`kerastrain.models.lora`), which `merge_lora` folds into the kernels.
"""

from kerastrain.data.preprocess import ModelInputs
from kerastrain.models.base import Head
from kerastrain.models.cnn import cnn
from kerastrain.models.lora import merge_lora
from kerastrain.models.mlp import mlp
from kerastrain.models.registry import (
    MODELS,
    build_model,
    factory_for,
    factory_options,
    fine_tune_plan,
    register_model,
)
from kerastrain.models.resnet import resnet
from kerastrain.models.transfer import FineTunePlan, transfer
from kerastrain.models.transformer import transformer, transformer_lm

__all__ = [
    "Head",
    "ModelInputs",
    "MODELS",
    "build_model",
    "cnn",
    "factory_for",
    "factory_options",
    "fine_tune_plan",
    "FineTunePlan",
    "merge_lora",
    "mlp",
    "register_model",
    "resnet",
    "transfer",
    "transformer",
    "transformer_lm",
]
