"""A kerastrain text model as the backbone of `model="transfer"`.

``model_options={"backbone": PATH}`` where PATH is a kerastrain run folder,
a `.keras`/`.h5` file or a SavedModel folder of a kerastrain `transformer`
text classifier or `transformer_lm` (a causal language model). The new
model takes the data's text column as raw strings and holds:

- the backbone's tokenizer: a `TextVectorization` layer with the backbone's
  vocabulary and settings (from the layer inside the backbone, else from the
  ``tokenizer.json`` beside it or in its run folder), not a vocabulary
  learned on the data, so the exported SavedModel takes raw strings;
- the backbone's token and position embeddings, its blocks and its final
  norm, rebuilt under the same layer names (``token_embedding``,
  ``block{i}_attention``, ``block{i}_mlp_in``, ...) with the backbone's
  weights copied layer by layer; a language model's blocks keep their
  causal attention;
- a pooling of the final norm's vectors (``pooling``: the masked mean, or
  the last token), the data's other columns if any, each feature
  standardized over the batch (``head_standardize``, a `BatchNormalization`
  without scale or offset: a frozen backbone's pooled vectors differ little
  between rows next to what they share), and a new head.

The backbone layers are frozen for phase 1; phase 2 (`FineTunePlan`)
unfreezes the top ``fine_tune_layers`` of them (`unfreeze_text_backbone`).
With ``lora={"rank": r, "alpha": a, "targets": [...]}`` the backbone stays
frozen and low-rank adapters (`kerastrain.models.lora`) on the attention
projections and the MLP layers train with the head, in one phase; the
pipeline merges them into the kernels before export (`merge_lora`).

The backbone file is checked before it is loaded, as every model file is
(`kerastrain.export.model_files`, ``trust_model_file``).
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from kerastrain._keras import ensure_tf_keras, keras, tf
from kerastrain.data.layers import (
    LastTokenPool,
    LayerNorm,
    MaskedMeanPool,
    PaddingMask,
    PositionEmbedding,
    TokenEmbedding,
)
from kerastrain.data.preprocess import ModelInputs
from kerastrain.data.text import tokenizer_layer
from kerastrain.errors import ConfigError, ExportError, config_error, message, one_of
from kerastrain.export.model_files import check_model_file
from kerastrain.models.base import Head, transfer_head
from kerastrain.models.lora import (
    ATTENTION_TARGETS,
    LoraDense,
    LoraMultiHeadAttention,
    check_lora,
    lora_parameters,
)

logger = logging.getLogger(__name__)

__all__ = [
    "TextBackbone",
    "load_text_backbone",
    "looks_like_text_backbone",
    "text_transfer",
    "unfreeze_text_backbone",
    "text_backbone_section",
    "LORA_TARGETS",
    "POOLINGS",
    "LM_NAME",
]

#: LoRA targets: the attention projections and the MLP layers of each block.
LORA_TARGETS = (*ATTENTION_TARGETS, "mlp_in", "mlp_out")
#: `model_options.pooling` values; "auto" is the masked mean.
POOLINGS = ("auto", "mean", "last")
#: The model name of a kerastrain language model (a causal backbone).
LM_NAME = "transformer_lm"
#: The tokenizer file of a run folder (`kerastrain.export.text.TOKENIZER_FILE`).
TOKENIZER_FILE = "tokenizer.json"
#: Model files of a run folder, in the order they are looked for.
_RUN_FILES = ("model.keras", "savedmodel", "model.h5")
#: The class of a subword (WordPiece) tokenizer layer (`kerastrain.wordpiece`), and
#: the `split` a `TextBackbone` records for it.
SUBWORD_LAYER, SUBWORD = "WordPieceTokenizer", "subword"
#: The model attribute naming a text transfer model's backbone layers, in order.
BACKBONE_LAYERS = "_kerastrain_backbone_layers"
#: The model attribute holding what `text_backbone_section` reports.
FACTS = "_kerastrain_text_backbone"
_OPTION = "model_options.backbone"


class TextBackbone:
    """A loaded kerastrain text model, read for its parts.

    Attributes:
        model: The loaded tf_keras model.
        source: Where it was loaded from (a file or folder), or `"model"`.
        prefix: Its layers' column prefix (`""` for one text column).
        blocks: How many blocks it has.
        causal: Whether it is a language model (causal attention).
        vocabulary: Its tokenizer's vocabulary (padding and
            out-of-vocabulary not included).
        standardize: Its tokenizer's `standardize` setting.
        split: Its tokenizer's `split` setting.
    """

    def __init__(self, model: keras.Model, source: str, folders: Sequence[Path] = ()):
        self.model = model
        self.source = source
        embeddings = [layer for layer in model.layers if isinstance(layer, TokenEmbedding)]
        if not embeddings:
            raise ConfigError(
                message(
                    f"The backbone {source!r} is not a kerastrain text model: it has no "
                    "token embedding",
                    received={_OPTION: source},
                    allowed="Give a kerastrain model='transformer' trained on text, or a "
                    "model='transformer_lm' (its run folder, .keras file or SavedModel)",
                )
            )
        if len(embeddings) > 1:
            raise ConfigError(
                message(
                    f"The backbone {source!r} reads {len(embeddings)} text columns "
                    f"({', '.join(e.name for e in embeddings)}); a text backbone reads one",
                    received={_OPTION: source},
                    allowed="Give a backbone trained on one text column, or a language model",
                )
            )
        self.prefix = embeddings[0].name[: -len("token_embedding")]
        names = {layer.name for layer in model.layers}
        self.blocks = 0
        while f"{self.prefix}block{self.blocks}_attention" in names:
            self.blocks += 1
        missing = [
            n
            for i in range(self.blocks)
            for n in (f"block{i}_norm1", f"block{i}_mlp_in", f"block{i}_mlp_out", f"block{i}_norm2")
            if self.prefix + n not in names
        ] + [n for n in ("position_embedding", "final_norm") if self.prefix + n not in names]
        if not self.blocks or missing:
            raise ConfigError(
                message(
                    f"The backbone {source!r} does not have the layers of a kerastrain "
                    f"Transformer ({self.blocks} blocks; missing: {', '.join(missing) or '-'})",
                    received={_OPTION: source},
                    allowed="Give a kerastrain model='transformer' or 'transformer_lm'",
                )
            )
        self.causal = model.name == LM_NAME
        self.vocabulary, self.standardize, self.split = _tokenizer(model, source, folders)
        expected = self.layer("token_embedding").vocabulary_size
        if len(self.vocabulary) + 2 != expected:
            raise ConfigError(
                message(
                    f"The backbone's tokenizer has {len(self.vocabulary) + 2} ids but its token "
                    f"embedding {expected}: the tokenizer.json beside it is not its own",
                    received={_OPTION: source},
                )
            )

    def layer(self, name: str) -> keras.layers.Layer:
        """The backbone layer of the single-column ``name``."""
        return self.model.get_layer(self.prefix + name)

    def has(self, name: str) -> bool:
        return any(layer.name == self.prefix + name for layer in self.model.layers)


def _tokenizer(
    model: keras.Model, source: str, folders: Sequence[Path]
) -> tuple[list[str], Any, Any]:
    """The backbone's vocabulary, standardize and split settings: from its
    `TextVectorization` layer, else from ``tokenizer.json`` in ``folders``."""
    pieces = [layer for layer in model.layers if type(layer).__name__ == SUBWORD_LAYER]
    if len(pieces) == 1:  # data_options.tokenizer="subword"
        return [str(p) for p in pieces[0].vocabulary], None, SUBWORD
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization)]
    if len(layers) == 1:
        config = layers[0].get_config()
        vocabulary = [str(token) for token in layers[0].get_vocabulary()]
        return vocabulary[2:], config["standardize"], config["split"]
    for folder in folders:
        file = folder / TOKENIZER_FILE
        if not file.is_file():
            continue
        described = json.loads(file.read_text(encoding="utf-8"))
        if len(described) != 1:
            raise ConfigError(
                message(
                    f"{str(file)!r} describes {len(described)} tokenizers ({', '.join(described)})"
                    "; a text backbone has one",
                    received={_OPTION: source},
                )
            )
        (spec,) = described.values()
        if spec.get("kind") == "wordpiece":
            return [str(t) for t in spec["vocabulary"][2:]], None, SUBWORD
        return [str(t) for t in spec["vocabulary"][2:]], spec["standardize"], spec["split"]
    raise ConfigError(
        message(
            f"The backbone {source!r} has no tokenizer: no TextVectorization layer inside it and "
            f"no {TOKENIZER_FILE} beside it",
            received={_OPTION: source},
            allowed=f"Give the backbone's run folder (it holds {TOKENIZER_FILE}), or put its "
            f"{TOKENIZER_FILE} beside the model file",
        )
    )


def _model_file(path: Path) -> tuple[Path, list[Path]]:
    """The model file of a backbone path (a run folder's model.keras,
    savedmodel/ or model.h5) and the folders a tokenizer.json may be in."""
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        for name in _RUN_FILES:
            found = path / name
            if name == "savedmodel" and found.is_dir():
                versions = sorted(
                    (v for v in found.iterdir() if (v / "saved_model.pb").is_file()),
                    key=lambda v: (not v.name.isdigit(), int(v.name) if v.name.isdigit() else 0),
                )
                found = found if (found / "saved_model.pb").is_file() else (
                    versions[-1] if versions else found
                )  # fmt: skip
            if found.exists() and (not found.is_dir() or (found / "saved_model.pb").is_file()):
                return found, [path]
        raise ConfigError(
            message(
                f"The folder {str(path)!r} is neither a SavedModel nor a kerastrain run folder: "
                f"it holds none of {', '.join(_RUN_FILES)}",
                received={_OPTION: str(path)},
                allowed="Give a kerastrain run folder, a .keras file or a SavedModel folder",
            )
        )
    folders = [path.parent] if path.is_file() else [path, path.parent, path.parent.parent]
    return path, folders


def load_text_backbone(spec: Any, trust: bool = False) -> TextBackbone:
    """Loads the text backbone ``spec`` (a path, or a tf_keras model).

    Args:
        spec: A kerastrain run folder, a `.keras`/`.h5` file, a SavedModel
            folder, or a tf_keras model.
        trust: Load a file even when loading it runs code it carries.
            Defaults to `False`.

    Returns:
        The `TextBackbone`.

    Raises:
        ConfigError: For a missing path, a file that would run code and is
            not trusted, a damaged file, or a model that is not a kerastrain
            text model or has no tokenizer.
    """
    if isinstance(spec, keras.Model) or hasattr(spec, "layers"):
        ensure_tf_keras(spec, _OPTION)
        return TextBackbone(spec, "model")
    if not isinstance(spec, (str, os.PathLike)):
        raise config_error(_OPTION, spec, "the path of a kerastrain text model, or the model")
    path = Path(spec)
    if not path.exists():
        raise config_error(
            _OPTION,
            str(spec),
            "an existing kerastrain run folder, .keras file or SavedModel folder",
        )
    file, folders = _model_file(path)
    try:  # read as data first: refused when it would run code, unless trusted
        kind = check_model_file(file, trust=trust, what=_OPTION)
    except ExportError as exc:
        raise ConfigError(message(str(exc), received={_OPTION: str(path)})) from None
    try:
        if kind == "savedmodel" and not (file / "keras_metadata.pb").is_file():
            model = _lm_from_savedmodel(file, str(path))  # tf.saved_model.save wrote it
        else:
            options = {"safe_mode": not trust} if kind == "keras" else {}
            model = keras.models.load_model(file, compile=False, **options)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            message(
                f"Cannot load the backbone model {str(file)!r}: {type(exc).__name__}: {exc}",
                received={_OPTION: str(path)},
                allowed="Give the path of a kerastrain text model saved by tf_keras",
            )
        ) from None
    return TextBackbone(model, str(path), folders)


def _lm_layout(
    vocabulary: int, d_model: int, length: int, blocks: int, heads: int, key_dim: int, ff: int
) -> keras.Model:
    """An untrained kerastrain language model of the given sizes, its layers
    built in the order (and so its variables listed in the order) of
    `model="transformer_lm"`'s, without dropout."""
    ids = keras.Input((None,), dtype="int64", name="ids")
    x = TokenEmbedding(vocabulary, d_model, length, name="token_embedding")(ids)
    x = PositionEmbedding(length, name="position_embedding")(x)
    mask = PaddingMask(length, name="padding_mask")(ids)
    for i in range(blocks):
        h = LayerNorm(name=f"block{i}_norm1")(x)
        h = keras.layers.MultiHeadAttention(heads, key_dim, name=f"block{i}_attention")(
            h, h, attention_mask=mask, use_causal_mask=True
        )
        x = keras.layers.Add(name=f"block{i}_residual1")([x, h])
        h = LayerNorm(name=f"block{i}_norm2")(x)
        h = keras.layers.Dense(ff, activation="gelu", name=f"block{i}_mlp_in")(h)
        h = keras.layers.Dense(d_model, name=f"block{i}_mlp_out")(h)
        x = keras.layers.Add(name=f"block{i}_residual2")([x, h])
    x = LayerNorm(name="final_norm")(x)
    logits = keras.layers.Dense(vocabulary, name="lm_head")(x)
    return keras.Model(ids, logits, name=LM_NAME)


#: Variables of a language model's block (two norms, attention, MLP), and
#: outside the blocks (two embeddings; the final norm and the head).
_BLOCK_VARIABLES, _OTHER_VARIABLES = 16, 6


def _lm_from_savedmodel(path: Path, source: str) -> keras.Model:
    """The language model inside a SavedModel that kerastrain wrote with
    `tf.saved_model.save` (a `transformer_lm`'s serving SavedModel, which has
    no Keras metadata to rebuild it from): its `model` object's variables,
    in order, copied into `_lm_layout` of the sizes they have (the blocks'
    dropout is not stored and is left out)."""
    loaded = tf.saved_model.load(str(path))
    values = list(getattr(getattr(loaded, "model", None), "variables", None) or [])
    shapes = [tuple(int(d) for d in v.shape) for v in values]
    blocks, extra = divmod(len(values) - _OTHER_VARIABLES, _BLOCK_VARIABLES)
    model = None
    if len(values) > _OTHER_VARIABLES and not extra and len(shapes[0]) == 2:
        (vocabulary, d_model), (length, _) = shapes[0], shapes[1]
        query, mlp_in = shapes[4], shapes[14]
        if len(query) == 3 and len(mlp_in) == 2:
            model = _lm_layout(vocabulary, d_model, length, blocks, query[1], query[2], mlp_in[1])
    if model is None or [tuple(w.shape) for w in model.variables] != shapes:
        raise ConfigError(
            message(
                f"The SavedModel {str(path)!r} has no Keras metadata and does not hold a "
                "kerastrain language model's variables",
                received={_OPTION: source},
                allowed="Give the run folder or the .keras file of a kerastrain text model, "
                "or a SavedModel written by model.save",
            )
        )
    for variable, value in zip(model.variables, values):
        variable.assign(value)
    logger.info(
        "Backbone %s: a language model rebuilt from its SavedModel's variables (%d blocks).",
        source,
        blocks,
    )
    return model


def looks_like_text_backbone(spec: Any) -> bool:
    """Whether ``spec`` (a model or a path) looks like a kerastrain text
    model, read without loading it: its config names a `TokenEmbedding`."""
    if isinstance(spec, keras.Model):
        return any(isinstance(layer, TokenEmbedding) for layer in spec.layers)
    if not isinstance(spec, (str, os.PathLike)) or not Path(spec).exists():
        return False
    try:
        file, _ = _model_file(Path(spec))
    except ConfigError:
        return False
    candidates = (
        [file / "keras_metadata.pb"] if file.is_dir() else [file]
    )  # a .keras archive stores its config compressed: read it through zipfile
    for candidate in candidates:
        if candidate.suffix == ".keras":
            try:
                with zipfile.ZipFile(candidate) as archive:
                    return b"TokenEmbedding" in archive.read("config.json")
            except (zipfile.BadZipFile, KeyError, OSError):
                return False
        if candidate.suffix in (".h5", ".hdf5"):
            try:
                with h5py.File(candidate, "r") as f:
                    return "TokenEmbedding" in str(f.attrs.get("model_config", ""))
            except OSError:
                return False
        if candidate.is_file():
            return b"TokenEmbedding" in candidate.read_bytes()
    return False


def _lora_options(lora: Any) -> dict[str, Any] | None:
    """``model_options.lora`` checked: rank, alpha, targets."""
    if lora is None or lora is False:
        return None
    if lora is True:
        lora = {}
    if not isinstance(lora, Mapping):
        raise config_error(
            "model_options.lora", lora, "a mapping like {'rank': 8, 'alpha': 16, 'targets': [...]}"
        )
    unknown = [key for key in lora if key not in ("rank", "alpha", "targets")]
    if unknown:
        raise config_error(
            f"model_options.lora.{unknown[0]}",
            lora[unknown[0]],
            "one of the keys " + one_of(("rank", "alpha", "targets")),
            ("rank", "alpha", "targets"),
        )
    rank = lora.get("rank", 8)
    alpha = lora.get("alpha", 2 * rank if isinstance(rank, int) else 16)
    targets = lora.get("targets", LORA_TARGETS)
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    for target in targets:
        if target not in LORA_TARGETS:
            raise config_error(
                "model_options.lora.targets", target, one_of(LORA_TARGETS), LORA_TARGETS
            )
    if not targets:
        raise config_error(
            "model_options.lora.targets", targets, "at least one of " + one_of(LORA_TARGETS)
        )
    rank, alpha = check_lora(rank, alpha)
    return {"rank": rank, "alpha": alpha, "targets": targets}


def _text_column(inputs: ModelInputs, source: str) -> str:
    """The one text column of the data, by input name."""
    columns = [feature.source for feature in inputs.text.values()]
    if not columns:
        raise ConfigError(
            message(
                f"model='transfer' with the text backbone {source!r} reads a text column; the "
                "data has none",
                allowed="Pass a table with a text column (detected, or named with "
                "data_options.text_columns) or a folder of .txt files in class sub-folders",
            )
        )
    if len(columns) > 1:
        raise ConfigError(
            message(
                f"model='transfer' with a text backbone reads one text column; the data has "
                f"{len(columns)}: {columns}",
                allowed="Keep one (drop the others with data_options.columns={name: 'drop'}, "
                "or name it alone in data_options.text_columns)",
            )
        )
    return next(iter(inputs.text))


def _count(weights: Sequence[Any]) -> int:
    return int(sum(np.prod(w.shape) for w in weights))


def text_transfer(
    inputs: ModelInputs,
    head: Head,
    *,
    backbone: Any,
    lora: Any = None,
    pooling: str = "auto",
    dense: int = 0,
    dropout: float = 0.2,
    fine_tune_layers: int = 20,
    l1: float = 0.0,
    l2: float = 0.0,
    initializer: str = "glorot_uniform",
    activation: str = "relu",
    trust_model_file: bool = False,
) -> keras.Model:
    """The `transfer` model on a kerastrain text backbone (see the module).

    Args:
        inputs: The model's inputs, with one text column.
        head: The output layer the task needs.
        backbone: A kerastrain run folder, `.keras`/`.h5` file or SavedModel
            folder of a text `transformer` or a `transformer_lm`, or the model.
        lora: `{"rank", "alpha", "targets"}` to train low-rank adapters on
            the frozen backbone (rank 8, alpha twice the rank, every target
            of `LORA_TARGETS` when left out), or None. Defaults to `None`.
        pooling: `"mean"` (masked mean of the final norm's vectors),
            `"last"` (the last token's, for a causal backbone) or `"auto"`
            (the mean). Defaults to `"auto"`.
        dense: Units of a dense layer in the head (0: none). Defaults to `0`.
        dropout: Dropout before the head's layers. Defaults to `0.2`.
        fine_tune_layers: Top backbone layers phase 2 unfreezes (for the
            report's count of trainable parameters). Defaults to `20`.
        l1: L1 penalty on the head's kernels. Defaults to `0.0`.
        l2: L2 penalty on the head's kernels. Defaults to `0.0`.
        initializer: The head's kernel initializer. Defaults to
            `"glorot_uniform"`.
        activation: Activation of the head's dense layer. Defaults to `"relu"`.
        trust_model_file: Load a backbone file even when loading it runs code
            it carries. Defaults to `False`.

    Returns:
        An uncompiled model whose backbone layers are frozen (their names in
        its ``_kerastrain_backbone_layers``).

    Raises:
        ConfigError: For a bad backbone, data without exactly one text
            column, or a bad `lora` or `pooling`.
    """
    adapters = _lora_options(lora)
    if pooling not in POOLINGS:
        raise config_error("model_options.pooling", pooling, one_of(POOLINGS), POOLINGS)
    source = backbone if isinstance(backbone, (str, os.PathLike)) else "model"
    column = _text_column(inputs, str(source))
    bb = load_text_backbone(backbone, trust_model_file)
    pool = "mean" if pooling == "auto" else pooling
    raw = inputs.inputs[column] if isinstance(inputs.inputs, dict) else inputs.inputs
    if bb.split == SUBWORD:
        tokenizer = tokenizer_layer(bb.vocabulary, SUBWORD, f"tokenize_{column}")
    else:
        tokenizer = keras.layers.TextVectorization(
            vocabulary=bb.vocabulary,
            standardize=bb.standardize,
            split=bb.split,
            output_mode="int",
            name=f"tokenize_{column}",
        )
    ids = tokenizer(raw)
    logger.info(
        "Text column %r is tokenized by the backbone's tokenizer (split %r, vocabulary of %d + "
        "padding and out-of-vocabulary), not by one learned on the data.",
        inputs.text[column].source,
        bb.split,
        len(bb.vocabulary),
    )
    built: list[keras.layers.Layer] = []

    def add(layer: keras.layers.Layer) -> keras.layers.Layer:
        built.append(layer)
        return layer

    embedding = bb.layer("token_embedding")
    x = add(
        TokenEmbedding(
            embedding.vocabulary_size,
            embedding.d_model,
            embedding.max_length,
            name="token_embedding",
        )
    )(ids)
    x = add(
        PositionEmbedding(bb.layer("position_embedding").max_length, name="position_embedding")
    )(x)
    if bb.has("embedding_dropout"):
        x = add(keras.layers.Dropout(bb.layer("embedding_dropout").rate, name="embedding_dropout"))(
            x
        )
    mask = add(PaddingMask(embedding.max_length, name="padding_mask"))(ids)
    targets = adapters["targets"] if adapters else []
    for i in range(bb.blocks):
        name = f"block{i}"
        h = add(LayerNorm(bb.layer(f"{name}_norm1").epsilon, name=f"{name}_norm1"))(x)
        attention = bb.layer(f"{name}_attention").get_config()
        options = {
            k: attention[k]
            for k in ("value_dim", "dropout", "use_bias", "output_shape", "attention_axes")
            if k in attention
        }
        attention_targets = [t for t in targets if t in ATTENTION_TARGETS]
        if attention_targets:
            layer = LoraMultiHeadAttention(
                attention["num_heads"],
                attention["key_dim"],
                lora_rank=adapters["rank"],
                lora_alpha=adapters["alpha"],
                lora_targets=attention_targets,
                name=f"{name}_attention",
                **options,
            )
        else:
            layer = keras.layers.MultiHeadAttention(
                attention["num_heads"], attention["key_dim"], name=f"{name}_attention", **options
            )
        h = add(layer)(h, h, attention_mask=mask, use_causal_mask=bb.causal)
        if bb.has(f"{name}_dropout1"):
            h = add(
                keras.layers.Dropout(bb.layer(f"{name}_dropout1").rate, name=f"{name}_dropout1")
            )(h)
        x = add(keras.layers.Add(name=f"{name}_residual1"))([x, h])
        h = add(LayerNorm(bb.layer(f"{name}_norm2").epsilon, name=f"{name}_norm2"))(x)
        for part in ("mlp_in", "mlp_out"):
            config = bb.layer(f"{name}_{part}").get_config()
            kind = {"units": config["units"], "activation": config["activation"]}
            if part in targets:
                dense_layer = LoraDense(
                    lora_rank=adapters["rank"],
                    lora_alpha=adapters["alpha"],
                    name=f"{name}_{part}",
                    **kind,
                )
            else:
                dense_layer = keras.layers.Dense(name=f"{name}_{part}", **kind)
            h = add(dense_layer)(h)
        if bb.has(f"{name}_dropout2"):
            h = add(
                keras.layers.Dropout(bb.layer(f"{name}_dropout2").rate, name=f"{name}_dropout2")
            )(h)
        x = add(keras.layers.Add(name=f"{name}_residual2"))([x, h])
    x = add(LayerNorm(bb.layer("final_norm").epsilon, name="final_norm"))(x)
    pooled = (MaskedMeanPool if pool == "mean" else LastTokenPool)(name="pool")([x, mask])
    if inputs.features is not None:  # the table's other columns, encoded
        pooled = keras.layers.Concatenate(name="joined")([pooled, inputs.features])
    # The pooled vectors of a frozen backbone share a large common part and
    # differ little between rows (a language model's mean-pooled final norm:
    # per feature, a spread ~2% of its size), so a linear head on them barely
    # moves at usual rates; each feature is standardized over the batch
    # first (moving statistics at inference), as linear probes do.
    pooled = keras.layers.BatchNormalization(
        momentum=0.9, center=False, scale=False, name="head_standardize"
    )(pooled)
    outputs = transfer_head(
        pooled,
        head,
        dense=dense,
        dropout=dropout,
        activation=activation,
        l1=l1,
        l2=l2,
        initializer=initializer,
    )
    model = keras.Model(inputs.inputs, outputs, name="transfer")
    _copy_backbone(bb, built)
    for layer in built:
        if not isinstance(layer, (LoraDense, LoraMultiHeadAttention)):
            layer.trainable = False
    names = [layer.name for layer in built]
    setattr(model, BACKBONE_LAYERS, names)
    setattr(model, FACTS, _facts(model, bb, built, pool, adapters, fine_tune_layers))
    return model


def _copy_backbone(bb: TextBackbone, built: Sequence[keras.layers.Layer]) -> None:
    """Sets each rebuilt layer's (base) weights to its backbone layer's."""
    for layer in built:
        original = bb.layer(layer.name)
        if isinstance(layer, keras.layers.MultiHeadAttention):
            for attribute in ATTENTION_TARGETS.values():
                mine, theirs = getattr(layer, attribute), getattr(original, attribute)
                mine.kernel.assign(theirs.kernel)
                if theirs.bias is not None:
                    mine.bias.assign(theirs.bias)
        elif isinstance(layer, LoraDense):
            layer.kernel.assign(original.kernel)
            if original.bias is not None:
                layer.bias.assign(original.bias)
        else:
            layer.set_weights(original.get_weights())


def _facts(
    model: keras.Model,
    bb: TextBackbone,
    built: Sequence[keras.layers.Layer],
    pool: str,
    adapters: dict[str, Any] | None,
    fine_tune_layers: int,
) -> dict[str, Any]:
    """What the log and the report say: the backbone, trainable against total."""
    total = model.count_params()
    trainable = _count(model.trainable_weights)
    facts: dict[str, Any] = {
        "backbone": bb.source,
        "kind": "causal language model" if bb.causal else "Transformer encoder",
        "blocks": bb.blocks,
        "d_model": int(bb.layer("token_embedding").d_model),
        "max_length": int(bb.layer("token_embedding").max_length),
        "vocabulary": len(bb.vocabulary) + 2,
        "pooling": pool,
        "parameters": total,
        "trainable": trainable,
        "trainable_share": trainable / total if total else 0.0,
    }
    if adapters:
        facts["lora"] = {**adapters, "parameters": lora_parameters(model)}
        logger.info(
            "Transfer from the text backbone %s (%s, %d blocks): LoRA rank %d, alpha %g on %s; "
            "%s trainable of %s parameters (%.2f%%: adapters %s and the head).",
            bb.source,
            facts["kind"],
            bb.blocks,
            adapters["rank"],
            adapters["alpha"],
            ", ".join(adapters["targets"]),
            f"{trainable:,}",
            f"{total:,}",
            100 * facts["trainable_share"],
            f"{facts['lora']['parameters']:,}",
        )
    else:
        top = list(built)[-fine_tune_layers:] if fine_tune_layers else []
        facts["fine_tune_trainable"] = trainable + _count(w for layer in top for w in layer.weights)
        logger.info(
            "Transfer from the text backbone %s (%s, %d blocks, %s pooling): phase 1 trains "
            "%s of %s parameters (the head); phase 2 %s (the top %d backbone layers too).",
            bb.source,
            facts["kind"],
            bb.blocks,
            pool,
            f"{trainable:,}",
            f"{total:,}",
            f"{facts['fine_tune_trainable']:,}",
            fine_tune_layers,
        )
    return facts


def unfreeze_text_backbone(model: keras.Model, count: int) -> int:
    """Makes the top ``count`` backbone layers of a text `transfer` model
    trainable; returns how many of them hold weights."""
    layers = [model.get_layer(name) for name in getattr(model, BACKBONE_LAYERS)]
    cut = max(len(layers) - count, 0)
    for i, layer in enumerate(layers):
        layer.trainable = i >= cut
    return sum(1 for layer in layers if layer.trainable and layer.weights)


def text_backbone_section(model: keras.Model) -> dict[str, Any] | None:
    """The report's "Text backbone" section of a text `transfer` model, as
    `kerastrain.report.Section`'s arguments (None for another model): the
    backbone, and trainable against total parameters (with LoRA, the
    adapters' share)."""
    facts = getattr(model, FACTS, None)
    if not facts:
        return None
    lines = [
        f"Backbone {facts['backbone']} ({facts['kind']}, {facts['blocks']} blocks, d_model "
        f"{facts['d_model']}, {facts['max_length']} tokens, vocabulary of {facts['vocabulary']} "
        f"ids, its own tokenizer); {facts['pooling']} pooling."
    ]
    if "lora" in facts:
        lora = facts["lora"]
        lines.append(
            f"LoRA rank {lora['rank']}, alpha {lora['alpha']:g} on {', '.join(lora['targets'])}: "
            f"{facts['trainable']:,} trainable of {facts['parameters']:,} parameters "
            f"({100 * facts['trainable_share']:.2f}%; adapters {lora['parameters']:,}). The "
            "exported model has the adapters merged into its kernels."
        )
    else:
        lines.append(
            f"Phase 1 trained {facts['trainable']:,} of {facts['parameters']:,} parameters (the "
            f"head); phase 2 {facts['fine_tune_trainable']:,}."
        )
    rows = [{"quantity": k, "value": v} for k, v in facts.items() if not isinstance(v, dict)]
    return {"title": "Text backbone", "text": " ".join(lines), "rows": rows}
