"""A Transformer encoder for text columns (and 3-D numeric sequences), and
the causal decoder of a language model (`transformer_lm`).

Each text column's token ids are truncated to ``max_length``, embedded
(token plus learned position embeddings), passed through pre-norm blocks
(multi-head self-attention, then a GELU MLP, each with dropout and a
residual connection) and mean-pooled over the tokens that are not padding.
The pooled vectors, with a table's other columns encoded, feed the head.

The blocks are plain functional layers, named ``<column>_block<i>_attention``,
``_mlp_in``, ``_mlp_out``, so that a layer can be found by name; the few that
tf_keras lacks are in `kerastrain.data.layers`, beside the table layers (so
that loading a `.keras` file registers both).

`transformer_lm` is the same block code (`_blocks`, with ``causal=True``)
from token ids to next-token logits; its layers carry the single-column
names (``token_embedding``, ``block<i>_attention``, ..., ``final_norm``)
and the output is ``lm_head``. Its corpus, training and generation live in
`kerastrain.data.corpus`, `kerastrain.training.language_model` and
`kerastrain.generation`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kerastrain._keras import keras
from kerastrain.data.layers import (
    AllPositions,
    LayerNorm,
    MaskedMeanPool,
    PaddingMask,
    PositionEmbedding,
    TokenEmbedding,
)
from kerastrain.data.preprocess import ModelInputs
from kerastrain.errors import ConfigError, config_error, message
from kerastrain.models.base import Head, output_layer

logger = logging.getLogger(__name__)

__all__ = [
    "transformer",
    "transformer_lm",
    "LM_MAX_LENGTH",
    "DEFAULT_MAX_LENGTH_QUANTILE",
    "MAX_AUTO_LENGTH",
]

#: The language model's default context, in tokens.
LM_MAX_LENGTH = 128
#: `max_length=None` covers this quantile of the training rows' lengths ...
DEFAULT_MAX_LENGTH_QUANTILE = 0.95
#: ... but no more than this many tokens.
MAX_AUTO_LENGTH = 512


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise config_error(f"model_options.{name}", value, "a positive integer")
    return int(value)


def _auto_length(lengths: np.ndarray) -> int:
    if not len(lengths):
        return MAX_AUTO_LENGTH
    covered = int(np.ceil(np.quantile(lengths, DEFAULT_MAX_LENGTH_QUANTILE)))
    return int(min(MAX_AUTO_LENGTH, max(8, covered)))


def _log_truncation(source: str, lengths: np.ndarray, max_length: int) -> None:
    cut = int((lengths > max_length).sum())
    level = logging.WARNING if cut > len(lengths) // 10 else logging.INFO
    logger.log(
        level,
        "Text column %r: max_length=%d truncates %d of the %d training rows (longest %d tokens).",
        source,
        max_length,
        cut,
        len(lengths),
        int(lengths.max()) if len(lengths) else 0,
    )


def _block_options(layers: Any, heads: Any, d_model: Any, ff: Any, dropout: Any) -> dict:
    """The blocks' options, checked (`ff=None` is `4 * d_model`)."""
    layers, heads, d_model = (
        _positive("layers", layers),
        _positive("heads", heads),
        _positive("d_model", d_model),
    )
    ff = 4 * d_model if ff is None else _positive("ff", ff)
    if d_model % heads:
        raise config_error(
            "model_options.d_model", d_model, f"a multiple of model_options.heads={heads}"
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise config_error("model_options.dropout", dropout, "a rate from 0 to below 1")
    return dict(layers=layers, heads=heads, d_model=d_model, ff=ff, dropout=float(dropout))


def _blocks(
    x: Any,
    mask: Any,
    prefix: str,
    *,
    layers: int,
    heads: int,
    d_model: int,
    ff: int,
    dropout: float,
    causal: bool = False,
    attention_dropout: float | None = None,
) -> Any:
    """Pre-norm blocks over ``(batch, length, d_model)`` vectors, then the
    final normalization: the encoder's (``causal=False``) and the language
    model's (``causal=True``: each position attends to itself and the
    positions before it only, besides ``mask``). ``attention_dropout`` is the
    rate on the attention weights (None: ``dropout``)."""
    for i in range(layers):
        name = f"{prefix}block{i}"
        h = LayerNorm(name=f"{name}_norm1")(x)
        h = keras.layers.MultiHeadAttention(
            heads,
            d_model // heads,
            dropout=dropout if attention_dropout is None else attention_dropout,
            name=f"{name}_attention",
        )(h, h, attention_mask=mask, use_causal_mask=causal)
        if dropout:
            h = keras.layers.Dropout(dropout, name=f"{name}_dropout1")(h)
        x = keras.layers.Add(name=f"{name}_residual1")([x, h])
        h = LayerNorm(name=f"{name}_norm2")(x)
        h = keras.layers.Dense(ff, activation="gelu", name=f"{name}_mlp_in")(h)
        h = keras.layers.Dense(d_model, name=f"{name}_mlp_out")(h)
        if dropout:
            h = keras.layers.Dropout(dropout, name=f"{name}_dropout2")(h)
        x = keras.layers.Add(name=f"{name}_residual2")([x, h])
    return LayerNorm(name=f"{prefix}final_norm")(x)


def _encoder(x: Any, mask: Any, prefix: str, **options: Any) -> Any:
    """The encoder's blocks, then the masked mean."""
    x = _blocks(x, mask, prefix, **options)
    return MaskedMeanPool(name=f"{prefix}pool")([x, mask])


def transformer(
    inputs: ModelInputs,
    head: Head,
    *,
    layers: int = 2,
    heads: int = 4,
    d_model: int = 128,
    ff: int | None = None,
    max_length: int | None = None,
    dropout: float = 0.1,
    attention_dropout: float = 0.0,
) -> keras.Model:
    """A Transformer encoder over each text column (or a numeric sequence).

    Args:
        inputs: The model's inputs: text columns' token ids (`inputs.text`),
            and a table's other columns encoded; or `(length, features)`
            numeric sequences as `inputs.features`.
        head: The output layer the task needs.
        layers: Encoder blocks. Defaults to `2`.
        heads: Attention heads per block (`d_model` must divide by it).
            Defaults to `4`.
        d_model: Width of the token vectors. Defaults to `128`.
        ff: Width of each block's MLP. Defaults to `None` (`4 * d_model`).
        max_length: Tokens kept per text row (the first ones); the number of
            training rows it truncates is logged. Defaults to `None` (the
            95th percentile of the training rows' lengths, from 8 to 512).
        dropout: Dropout rate of the embeddings, each block's outputs and
            the pooled vector. Defaults to `0.1`.
        attention_dropout: Dropout rate of the attention weights. Defaults
            to `0.0`, as the Keras tutorial's Transformer: dropping attention
            weights draws a random number per (row, head, query, key), a
            fifth of a small encoder's CPU training step here
            (benchmarks/RESULTS.md, issue 22).

    Returns:
        An uncompiled functional `tf_keras.Model`.

    Raises:
        ConfigError: For a bad option, or data with neither text columns nor
            `(length, features)` sequences.
    """
    options = _block_options(layers, heads, d_model, ff, dropout)
    if not 0.0 <= float(attention_dropout) < 1.0:
        raise config_error(
            "model_options.attention_dropout", attention_dropout, "a rate from 0 to below 1"
        )
    options["attention_dropout"] = float(attention_dropout)
    d_model = options["d_model"]
    if max_length is not None:
        max_length = _positive("max_length", max_length)
    pooled = []
    several = len(inputs.text) > 1
    for name, feature in inputs.text.items():
        length = max_length or _auto_length(feature.lengths)
        _log_truncation(feature.source, feature.lengths, length)
        prefix = f"{name}_" if several else ""
        x = TokenEmbedding(
            feature.vocabulary_size, d_model, length, name=f"{prefix}token_embedding"
        )(feature.ids)
        x = PositionEmbedding(length, name=f"{prefix}position_embedding")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{prefix}embedding_dropout")(x)
        mask = PaddingMask(length, name=f"{prefix}padding_mask")(feature.ids)
        pooled.append(_encoder(x, mask, prefix, **options))
    features = inputs.features
    if not inputs.text:
        if features is None or len(features.shape) != 3:
            raise ConfigError(
                message(
                    "model='transformer' reads text columns or numeric sequences of shape "
                    f"(length, features); the data's examples have shape {inputs.feature_shape}",
                    allowed="Pass a table with a text column (data_options.text_columns), a "
                    "folder of .txt files, or arrays of shape (rows, length, features)",
                )
            )
        steps = int(features.shape[1])
        if max_length is not None and max_length != steps:
            raise config_error(
                "model_options.max_length",
                max_length,
                f"None or the sequences' length, {steps}",
            )
        x = keras.layers.Dense(d_model, name="project")(features)
        x = PositionEmbedding(steps, name="position_embedding")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
        mask = AllPositions(name="all_positions")(features)
        pooled.append(_encoder(x, mask, "", **options))
        features = None
    if features is not None:
        pooled.append(features)
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="joined")(pooled)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.Model(inputs.inputs, output_layer(head)(x), name="transformer")


transformer.reads_text = True  # type: ignore[attr-defined]


def transformer_lm(
    inputs: ModelInputs,
    head: Head,
    *,
    layers: int = 2,
    heads: int = 4,
    d_model: int = 128,
    ff: int | None = None,
    max_length: int = LM_MAX_LENGTH,
    dropout: float = 0.1,
) -> keras.Model:
    """A causal Transformer decoder: token ids to next-token logits.

    The same pre-norm blocks as `transformer` with causal self-attention
    (position `t` attends to positions `0..t` that are not padding), and
    the layer names of a single-column encoder (`token_embedding`,
    `position_embedding`, `block{i}_norm1`, `block{i}_attention`,
    `block{i}_mlp_in`, `block{i}_mlp_out`, `block{i}_norm2`, `final_norm`),
    then `lm_head`, a float32 `Dense` to one logit per vocabulary id.

    Args:
        inputs: One text feature (`inputs.text`) whose `ids` are the
            `(batch, length)` int token ids the model is called on (0 pads).
        head: `units` is the vocabulary size (padding and out-of-vocabulary
            included); the activation is ignored (logits).
        layers: Decoder blocks. Defaults to `2`.
        heads: Attention heads per block (`d_model` must divide by it).
            Defaults to `4`.
        d_model: Width of the token vectors. Defaults to `128`.
        ff: Width of each block's MLP. Defaults to `None` (`4 * d_model`).
        max_length: The context: the most tokens a call reads (the first
            ones). Defaults to `LM_MAX_LENGTH` (128).
        dropout: Dropout rate of the attention weights, the embeddings and
            each block's outputs. Defaults to `0.1`.

    Returns:
        An uncompiled functional `tf_keras.Model` named `"transformer_lm"`.

    Raises:
        ConfigError: For a bad option, or inputs that are not one text feature.
    """
    options = _block_options(layers, heads, d_model, ff, dropout)
    max_length = _positive("max_length", max_length)
    if len(inputs.text) != 1 or inputs.features is not None:
        raise ConfigError(
            message(
                "model='transformer_lm' reads one stream of token ids (a corpus), not "
                f"{len(inputs.text)} text column(s) and other features",
                allowed="Pass a .txt file, a folder of .txt files or a list of strings",
            )
        )
    (feature,) = inputs.text.values()
    x = TokenEmbedding(
        feature.vocabulary_size, options["d_model"], max_length, name="token_embedding"
    )(feature.ids)
    x = PositionEmbedding(max_length, name="position_embedding")(x)
    if options["dropout"]:
        x = keras.layers.Dropout(options["dropout"], name="embedding_dropout")(x)
    mask = PaddingMask(max_length, name="padding_mask")(feature.ids)
    x = _blocks(x, mask, "", causal=True, **options)
    logits = keras.layers.Dense(head.units, dtype="float32", name="lm_head")(x)
    return keras.Model(inputs.inputs, logits, name="transformer_lm")


transformer_lm.reads_text = True  # type: ignore[attr-defined]
