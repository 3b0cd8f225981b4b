"""Transfer learning: a pretrained backbone with a new head, fine-tuned in two
phases inside one training run.

The backbone is a Keras Applications network (`mobilenet_v2`,
`efficientnet_b0`, `resnet50`) with ``weights`` `"imagenet"` (downloaded by
Keras when online), `None` (random), or the path of a weights file; or any
trained tf_keras model (a `.keras`/`.h5` file, a SavedModel folder written
by tf_keras, or the model itself, copied), cut at its penultimate layer (or
at ``backbone_output``). A backbone file whose loading would run code it
carries is refused unless ``trust_model_file`` is set (see
`kerastrain.export.model_files`).

Phase 1 trains the head with the backbone frozen, for ``train.epochs``.
Phase 2 is a plain value, the `FineTunePlan` of the ``fine_tune_*`` options
(`kerastrain.models.fine_tune_plan` reads it from the model option), which
the training stage runs after phase 1 (`kerastrain.training.fine_tune`):
it unfreezes the top ``fine_tune_layers`` layers of the backbone
(`unfreeze_backbone`), keeping every BatchNormalization layer frozen and in
inference mode (the backbone is always called with ``training=False``, as
the Keras transfer-learning guide advises), recompiles at
``fine_tune_learning_rate`` times the learning rate, and trains
``fine_tune_epochs`` more epochs. The history covers both phases.

The backbone receives the raw inputs (not kerastrain's standardized
features): Applications get their own preprocessing (pixels in 0..255,
scaled by ``input_scale``), a trained tf_keras backbone its own layers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.data.preprocess import ModelInputs
from kerastrain.errors import ConfigError, ExportError, config_error, message, one_of
from kerastrain.export.model_files import check_model_file
from kerastrain.models.base import Head, transfer_head
from kerastrain.models.text_backbone import (
    BACKBONE_LAYERS,
    looks_like_text_backbone,
    text_transfer,
    unfreeze_text_backbone,
)

logger = logging.getLogger(__name__)

__all__ = ["transfer", "FineTunePlan", "unfreeze_backbone", "BACKBONES"]

#: Application name -> (constructor name in keras.applications, preprocessing).
BACKBONES = {
    "mobilenet_v2": ("MobileNetV2", "mobilenet"),
    "efficientnet_b0": ("EfficientNetB0", "none"),
    "resnet50": ("ResNet50", "caffe"),
}
#: The smallest input the Applications accept.
MIN_SIZE = 32
BACKBONE_NAME = "backbone"


@dataclasses.dataclass(frozen=True)
class FineTunePlan:
    """Phase 2 of a transfer model's training, run by the training stage.

    Attributes:
        layers: Top backbone layers unfrozen (all when larger than the
            backbone; 0: no phase 2). Defaults to `20`.
        epochs: Epochs of phase 2 (0: no phase 2). Defaults to `5`.
        learning_rate_factor: Phase 2's learning rate as a fraction of
            `train.learning_rate`. Defaults to `0.1`.

    Raises:
        ConfigError: For negative layers or epochs, or a factor outside (0, 1].
    """

    layers: int = 20
    epochs: int = 5
    learning_rate_factor: float = 0.1

    def __post_init__(self) -> None:
        if self.layers < 0 or self.epochs < 0 or not 0 < self.learning_rate_factor <= 1:
            raise config_error(
                "model_options.fine_tune_*",
                (self.layers, self.epochs, self.learning_rate_factor),
                "layers >= 0, epochs >= 0 and a learning-rate factor in (0, 1]",
            )

    @property
    def active(self) -> bool:
        """Whether there is a phase 2: some layers to unfreeze, some epochs."""
        return bool(self.layers and self.epochs)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FineTunePlan:
        """The plan of the model `transfer(inputs, head, **options)` builds
        (none with LoRA: the adapters train with the head, in phase 1)."""
        if options.get("lora") not in (None, False):
            return cls(0, 0)
        return cls(
            options.get("fine_tune_layers", cls.layers),
            options.get("fine_tune_epochs", cls.epochs),
            options.get("fine_tune_learning_rate", cls.learning_rate_factor),
        )


def _application(name: str, weights: Any, shape: tuple[int, int, int]) -> keras.Model:
    constructor = getattr(keras.applications, BACKBONES[name][0])
    if isinstance(weights, (str, os.PathLike)) and weights != "imagenet":
        if not Path(weights).is_file():
            raise config_error(
                "model_options.weights",
                weights,
                "'imagenet', None, or the path of an existing weights file",
            )
        weights = os.fspath(weights)
    try:
        return constructor(include_top=False, weights=weights, input_shape=shape)
    except ValueError as exc:
        raise ConfigError(
            message(
                f"Cannot build the {name} backbone on inputs of shape {shape}: {exc}",
                received={"model_options.weights": weights},
            )
        ) from None
    except Exception as exc:  # a failed download: no network, proxy, disk
        if weights != "imagenet":
            raise
        raise ConfigError(
            message(
                f"Downloading the imagenet weights of {name} failed ({type(exc).__name__}: {exc})",
                received={"model_options.weights": weights},
                allowed="On a machine without network access pass model_options={'weights': "
                "None} (random weights) or the path of the weights file (the '_notop' .h5 file "
                "from https://storage.googleapis.com/tensorflow/keras-applications/, downloaded "
                "elsewhere); Keras also reuses a copy in ~/.keras/models",
            )
        ) from exc


def _preprocess(x: Any, mode: str, scale: float) -> Any:
    if scale != 1.0:
        x = keras.layers.Rescaling(scale, name="input_scale")(x)
    if mode == "mobilenet":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(x)
    if mode == "caffe":  # RGB -> BGR, minus the imagenet channel means
        x = tf.reverse(x, axis=[-1])
        return keras.layers.Normalization(
            mean=[103.939, 116.779, 123.68], variance=[1, 1, 1], name="preprocess"
        )(x)
    return x


def _load_backbone(spec: Any, output: str | None, trust: bool) -> keras.Model:
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.exists():
            raise config_error(
                "model_options.backbone",
                spec,
                one_of(BACKBONES) + ", a tf_keras model, or the path of a saved one",
                BACKBONES,
            )
        try:  # read as data first: refused when it would run code, unless trusted
            kind = check_model_file(path, trust=trust, what="model_options.backbone")
        except ExportError as exc:
            raise ConfigError(
                message(str(exc), received={"model_options.backbone": str(path)})
            ) from None
        try:
            options = {"safe_mode": not trust} if kind == "keras" else {}
            model = keras.models.load_model(path, compile=False, **options)
        except Exception as exc:
            raise ConfigError(
                message(
                    f"Cannot load the backbone model: {type(exc).__name__}: {exc}",
                    received={"model_options.backbone": str(path)},
                    allowed="Give the path of a model saved by tf_keras (.keras, .h5 or a "
                    "SavedModel folder)",
                )
            ) from None
    else:
        ensure_tf_keras(spec, "model_options.backbone")
        if not isinstance(spec, keras.Model):
            raise config_error("model_options.backbone", spec, "a tf_keras model or its path")
        model = keras.models.clone_model(spec)  # the caller's model stays as it was
        model.set_weights(spec.get_weights())
    if not isinstance(model, keras.Model):
        raise config_error("model_options.backbone", spec, "a tf_keras model or its path")
    if output is not None:
        try:
            layer = model.get_layer(output)
        except ValueError:
            names = [layer.name for layer in model.layers]
            raise config_error(
                "model_options.backbone_output",
                output,
                f"a layer of the backbone ({', '.join(names[-8:])})",
                names,
            ) from None
    else:
        layer = model.layers[-2]
    return keras.Model(model.inputs, layer.output, name=BACKBONE_NAME)


def transfer(
    inputs: ModelInputs,
    head: Head,
    *,
    backbone: Any = "mobilenet_v2",
    weights: Any = "imagenet",
    backbone_output: str | None = None,
    input_size: Sequence[int] | None = None,
    input_scale: float = 1.0,
    dense: int = 0,
    dropout: float = 0.2,
    fine_tune_layers: int = FineTunePlan.layers,
    fine_tune_epochs: int = FineTunePlan.epochs,
    fine_tune_learning_rate: float = FineTunePlan.learning_rate_factor,
    l1: float = 0.0,
    l2: float = 0.0,
    initializer: str = "glorot_uniform",
    activation: str = "relu",
    trust_model_file: bool = False,
    lora: Mapping[str, Any] | None = None,
    pooling: str = "auto",
) -> keras.Model:
    """A frozen pretrained backbone and a new head.

    On text, the backbone is a kerastrain text model (a `transformer`
    classifier or a `transformer_lm`; see `kerastrain.models.text_backbone`).

    Args:
        inputs: The model's inputs; the backbone reads the raw ones.
        head: The output layer the task needs.
        backbone: `"mobilenet_v2"`, `"efficientnet_b0"`, `"resnet50"`, a
            tf_keras model, or the path of one. Defaults to `"mobilenet_v2"`.
        weights: For Applications: `"imagenet"`, `None`, or a weights file
            (without the top). Defaults to `"imagenet"`.
        backbone_output: The layer of a model backbone whose output feeds
            the head. Defaults to `None` (its penultimate layer).
        input_size: `[height, width]` the images are resized to for an
            Application. Defaults to `None` (the data's, at least 32).
        input_scale: Multiplies the raw pixels so that they span 0..255
            (`255 / 16` for scikit-learn's digits). Defaults to `1.0`.
        dense: Units of a dense layer in the head (0 for none).
            Defaults to `0`.
        dropout: Dropout before the head's layers. Defaults to `0.2`.
        fine_tune_layers: Top backbone layers unfrozen in phase 2 (0: no
            phase 2; see `FineTunePlan`). Defaults to `20`.
        fine_tune_epochs: Epochs of phase 2. Defaults to `5`.
        fine_tune_learning_rate: Phase 2's learning rate as a fraction of
            `train.learning_rate`. Defaults to `0.1`.
        l1: L1 penalty on the head's kernels. Defaults to `0.0`.
        l2: L2 penalty on the head's kernels. Defaults to `0.0`.
        initializer: The head's kernel initializer. Defaults to
            `"glorot_uniform"`.
        activation: Activation of the head's dense layer. Defaults to `"relu"`.
        trust_model_file: Load a backbone file even when loading it runs
            code it carries (a `Lambda` layer; see the trust model in
            `kerastrain.export.model_files`); otherwise such a file is refused.
            Defaults to `False`.
        lora: Text backbones: `{"rank": 8, "alpha": 16, "targets": [...]}`
            trains low-rank adapters on the frozen backbone (targets among
            `"query"`, `"key"`, `"value"`, `"attention_output"`, `"mlp_in"`,
            `"mlp_out"`; all by default; alpha twice the rank by default),
            merged into the kernels at export; no phase 2. Defaults to `None`.
        pooling: Text backbones: `"mean"` (masked mean of the tokens),
            `"last"` (the last token) or `"auto"` (the mean). Defaults to
            `"auto"`.

    Returns:
        An uncompiled model whose backbone is frozen. Its phase 2 is
        `FineTunePlan.from_options` of the same options.

    Raises:
        ConfigError: For an unknown backbone or layer, inputs that do not
            fit it, imagenet weights that cannot be downloaded, or a backbone
            file that is damaged, or would run code and is not trusted.
    """
    plan = FineTunePlan(fine_tune_layers, fine_tune_epochs, fine_tune_learning_rate)  # checked
    text_backbone = not (isinstance(backbone, str) and backbone in BACKBONES) and (
        inputs.text or lora is not None or looks_like_text_backbone(backbone)
    )
    if text_backbone:
        return text_transfer(
            inputs, head, backbone=backbone, lora=lora, pooling=pooling, dense=dense,
            dropout=dropout, fine_tune_layers=fine_tune_layers, l1=l1, l2=l2,
            initializer=initializer, activation=activation, trust_model_file=trust_model_file,
        )  # fmt: skip
    if lora is not None or inputs.text:
        raise ConfigError(
            message(
                f"model_options.lora and text columns need a kerastrain text backbone; "
                f"{backbone!r} is an image network",
                received={"model_options.backbone": backbone},
                allowed="Give the run folder, .keras file or SavedModel of a kerastrain "
                "'transformer' or 'transformer_lm' as model_options.backbone",
            )
        )
    x = inputs.inputs
    if isinstance(x, dict):
        raise config_error("model", "transfer", "a factory for images; the data is a table")
    shape = tuple(x.shape[1:])
    if isinstance(backbone, str) and backbone in BACKBONES:
        if len(shape) == 2:
            x = keras.layers.Reshape((*shape, 1), name="add_channel")(x)
            shape = (*shape, 1)
        if len(shape) != 3 or shape[-1] not in (1, 3):
            raise config_error(
                "model",
                "transfer",
                f"a factory for images of 1 or 3 channels; the examples have shape {shape}",
            )
        if shape[-1] == 1:
            x = keras.layers.Concatenate(name="to_rgb")([x, x, x])
        size = (
            tuple(input_size) if input_size else (max(shape[0], MIN_SIZE), max(shape[1], MIN_SIZE))
        )
        if size != shape[:2]:
            x = keras.layers.Resizing(*size, name="resize")(x)
        x = _preprocess(x, BACKBONES[backbone][1], input_scale)
        base = _application(backbone, weights, (*size, 3))
        base._name = BACKBONE_NAME
    else:
        base = _load_backbone(backbone, backbone_output, trust_model_file)
        expected = tuple(base.input_shape[1:])
        if len(expected) != len(shape) or any(e not in (None, g) for e, g in zip(expected, shape)):
            raise ConfigError(
                message(
                    f"The backbone takes inputs of shape {expected} but the data's examples "
                    f"have shape {shape}",
                    allowed="Use a backbone built for the data's shape, or resize the images "
                    "(data_options.image_size)",
                )
            )
    base.trainable = False
    features = base(x, training=False)  # BatchNorm stays in inference mode, in both phases
    if len(features.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="global_pool")(features)
    elif len(features.shape) > 2:
        features = keras.layers.Flatten(name="flatten")(features)
    outputs = transfer_head(
        features,
        head,
        dense=dense,
        dropout=dropout,
        activation=activation,
        l1=l1,
        l2=l2,
        initializer=initializer,
    )
    model = keras.Model(inputs.inputs, outputs, name="transfer")
    logger.info(
        "Transfer model: backbone %s (%d layers, frozen), head on %d features; then %s.",
        backbone if isinstance(backbone, str) else "model",
        len(base.layers),
        features.shape[-1],
        f"{plan.epochs} epochs fine-tuning the top {plan.layers} layers"
        if plan.active
        else "no fine-tuning",
    )
    return model


def unfreeze_top(backbone: keras.Model, count: int) -> int:
    """Makes the top ``count`` layers of ``backbone`` trainable, except
    BatchNormalization layers; returns how many layers hold trainable weights."""
    backbone.trainable = True
    cut = max(len(backbone.layers) - count, 0)
    for i, layer in enumerate(backbone.layers):
        frozen = i < cut or isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = not frozen
    return sum(1 for layer in backbone.layers if layer.trainable and layer.trainable_weights)


def unfreeze_backbone(model: keras.Model, count: int) -> int:
    """Makes the top ``count`` layers of a `transfer` model's backbone
    trainable (BatchNormalization layers stay frozen; see `unfreeze_top`);
    returns how many layers hold trainable weights."""
    if hasattr(model, BACKBONE_LAYERS):  # a text backbone's layers, in the model itself
        return unfreeze_text_backbone(model, count)
    return unfreeze_top(model.get_layer(BACKBONE_NAME), count)


transfer.reads_text = True  # type: ignore[attr-defined]  # with a kerastrain text backbone
