"""Training and scoring a language model (`model="transformer_lm"`).

The model is built by the registry's `transformer_lm` factory on one input of
token ids named ``"ids"``, compiled with kerastrain's optimizer and schedule
(`make_optimizer`) and a next-token cross-entropy on logits, and fitted by
`train_model` (kerastrain's callbacks: early stopping, the blow-up guard,
backups) on the corpus's windows.

A split is scored on every token but its first (`corpus.windows` with
``held_out=True``): ``loss`` is the mean cross-entropy per token in nats,
``perplexity`` is ``exp(loss)``, ``bits_per_byte`` is the total cross-entropy
in bits over the split's UTF-8 bytes (so it compares models whatever their
tokenizer), and ``accuracy`` is the share of tokens whose most likely next
token is right.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig, PipelineConfig, TrainConfig
from kerastrain.config.train import resolve_schedule
from kerastrain.data.corpus import Corpus, windows
from kerastrain.data.preprocess import ModelInputs
from kerastrain.data.text import TextFeature
from kerastrain.errors import ConfigError, message
from kerastrain.models import Head, build_model
from kerastrain.models.transformer import LM_MAX_LENGTH
from kerastrain.report.section import Section
from kerastrain.training.fit import TrainResult, compile_options, train_model
from kerastrain.training.flops import flops_per_token
from kerastrain.training.optimizers import make_optimizer, steps_per_epoch

logger = logging.getLogger(__name__)

__all__ = [
    "IDS_INPUT",
    "lm_context",
    "build_language_model",
    "train_language_model",
    "score_language_model",
    "language_model_metrics",
    "language_model_defaults",
    "language_model_section",
]

#: The name of the language model's input of token ids.
IDS_INPUT = "ids"
#: Windows scored per batch.
SCORE_BATCH = 64


def lm_context(model_options: Mapping[str, Any] | None) -> int:
    """The context (`model_options.max_length`, else the factory's default)."""
    value = (model_options or {}).get("max_length", LM_MAX_LENGTH)
    return value if isinstance(value, int) and not isinstance(value, bool) else LM_MAX_LENGTH


def build_language_model(
    vocabulary_size: int,
    train: TrainConfig,
    strategy: tf.distribute.Strategy,
    *,
    model_options: Mapping[str, Any] | None,
    steps: int,
) -> keras.Model:
    """Builds and compiles a `transformer_lm` inside the strategy scope.

    Args:
        vocabulary_size: Distinct ids (padding and out-of-vocabulary included).
        train: The training options (optimizer, schedule, warmup).
        strategy: The distribution strategy.
        model_options: The factory's options.
        steps: Optimizer steps per epoch (for the schedule).

    Returns:
        The compiled model (float32).
    """
    with strategy.scope():
        ids = keras.Input((None,), dtype="int32", name=IDS_INPUT)
        feature = TextFeature(ids, vocabulary_size, np.zeros(0, np.int64), "corpus")
        inputs = ModelInputs(ids, None, {IDS_INPUT: feature})
        model = build_model(
            "transformer_lm", inputs, Head(vocabulary_size, "linear"), model_options
        )
        model.compile(
            optimizer=make_optimizer(train, steps_per_epoch=steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            **compile_options(train),
        )
    per_token = flops_per_token(model, lm_context(model_options))
    logger.info(
        "Model 'transformer_lm': %s parameters, %s forward FLOPs per token.",
        f"{model.count_params():,}",
        f"{per_token:,.0f}" if per_token is not None else "unknown",
    )
    return model


def _dataset(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None, batch: int, seed: int | None
) -> tf.data.Dataset:
    parts = (x, y) if w is None else (x, y, w)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch).prefetch(tf.data.AUTOTUNE)


def train_language_model(
    train: TrainConfig,
    corpus: Corpus,
    strategy: tf.distribute.Strategy,
    *,
    model_options: Mapping[str, Any] | None,
    batch_size: int,
    seed: int | None = None,
    backup_dir: str | os.PathLike | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> tuple[keras.Model, TrainResult]:
    """Builds, compiles and fits a `transformer_lm` on ``corpus``.

    Args:
        train: The training options.
        corpus: The prepared corpus.
        strategy: The distribution strategy.
        model_options: The factory's options (`max_length` is the context).
        batch_size: Windows per replica.
        seed: Seeds the order of the windows. Defaults to `None`.
        backup_dir: `BackupAndRestore` folder. Defaults to `None`.
        callbacks: Extra tf_keras callbacks. Defaults to `()`.

    Returns:
        The trained model and what training produced (its history also has
        `tokens_per_second`).
    """
    context = lm_context(model_options)
    x, y, _ = windows(corpus.ids["train"], context)
    global_batch = batch_size * strategy.num_replicas_in_sync
    train_ds = _dataset(x, y, None, global_batch, seed)
    val_ds = None
    if len(corpus.ids["val"]) > 1:
        vx, vy, vw = windows(corpus.ids["val"], context, held_out=True)
        val_ds = _dataset(vx, vy, vw, global_batch, None)
    steps = steps_per_epoch(len(x), global_batch)
    model = build_language_model(
        corpus.vocabulary_size, train, strategy, model_options=model_options, steps=steps
    )
    logger.info(
        "Training the language model on %d windows of %d tokens (%d steps per epoch).",
        len(x),
        context,
        steps,
    )
    result = train_model(
        model,
        train_ds,
        val_ds,
        train,
        callbacks=callbacks,
        backup_dir=backup_dir,
        examples_per_epoch=len(x),
    )
    rates = result.history.get("examples_per_second")
    if rates:
        result.history["tokens_per_second"] = [float(r) * context for r in rates]
        logger.info(
            "Language model trained at %s tokens per second (last epoch).",
            f"{result.history['tokens_per_second'][-1]:,.0f}",
        )
    return model, result


def language_model_metrics(nats: float, tokens: int, correct: int, text_bytes: int) -> dict:
    """The metrics of a split from its sums.

    Args:
        nats: The total next-token cross-entropy, in nats.
        tokens: Tokens scored.
        correct: Tokens whose most likely prediction was right.
        text_bytes: UTF-8 bytes of the split's text.

    Returns:
        ``loss`` (nats per token), ``perplexity`` (``exp(loss)``),
        ``bits_per_byte`` (``nats / ln 2 / text_bytes``), ``accuracy``,
        ``tokens``, ``bytes``.

    Example:
        >>> m = language_model_metrics(10 * math.log(2), 10, 5, 20)
        >>> round(m["perplexity"], 6), m["bits_per_byte"], m["accuracy"]
        (2.0, 0.5, 0.5)
    """
    loss = nats / tokens if tokens else float("nan")
    return {
        "loss": float(loss),
        "perplexity": float(math.exp(loss)) if tokens else float("nan"),
        "bits_per_byte": float(nats / math.log(2) / text_bytes) if text_bytes else float("nan"),
        "accuracy": float(correct / tokens) if tokens else float("nan"),
        "tokens": int(tokens),
        "bytes": int(text_bytes),
    }


def score_language_model(
    model: keras.Model, corpus: Corpus, split: str, context: int
) -> dict[str, float] | None:
    """`language_model_metrics` of ``model`` on one split of ``corpus`` (every
    token but the split's first), or None when the split has under 2 tokens."""
    ids = corpus.ids[split]
    if len(ids) < 2:
        return None
    x, y, w = windows(ids, context, held_out=True)
    nats, correct, tokens = 0.0, 0, 0
    for start in range(0, len(x), SCORE_BATCH):
        bx, by, bw = (a[start : start + SCORE_BATCH] for a in (x, y, w))
        logits = model(bx, training=False)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(by, tf.cast(logits, tf.float32))
        keep = bw > 0
        nats += float(np.sum(loss.numpy()[keep], dtype=np.float64))
        correct += int((np.argmax(logits.numpy(), axis=-1) == by)[keep].sum())
        tokens += int(keep.sum())
    return language_model_metrics(nats, tokens, correct, corpus.text_bytes(split))


def _given(section: Any, key: str, default: Any) -> bool:
    """Whether the user set ``key`` in a section argument (a mapping, or a
    section object whose value differs from the default)."""
    if section is None:
        return False
    if isinstance(section, Mapping):
        return key in section
    return getattr(section, key, None) != getattr(default, key)


def language_model_defaults(cfg: PipelineConfig, given: Mapping[str, Any]) -> PipelineConfig:
    """``cfg`` with the language model's defaults where the user set none:
    `data_options.tokenizer="character"` (lossless, so `bits_per_byte` is
    honest) and `train.schedule="auto"` (cosine after a linear warmup).

    Args:
        cfg: The resolved config.
        given: `fit_pipeline`'s arguments as passed (`train`, `data_options`,
            `config`: a mapping, a section or config object, or a YAML path).
            In a section or config object (as `kerastrain run` passes one), a
            value equal to its default counts as not set.

    Returns:
        The config to train the language model with.

    Raises:
        ConfigError: For an option a language model run does not carry out
            (`tune`, `compress`, `data_options.synthesize`,
            `train.gradient_accumulation`, `train.recompute`, the
            `"model_parallel"` and `"parameter_server"` strategies).
    """
    config = given.get("config")
    if isinstance(config, (str, os.PathLike)):
        config = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
    if isinstance(config, PipelineConfig):
        config = {"train": config.train, "data_options": config.data_options}
    config = config if isinstance(config, Mapping) else {}
    train_given = [given.get("train"), config.get("train")]
    data_given = [given.get("data_options"), config.get("data_options")]
    train, data = cfg.train, cfg.data_options
    if not any(
        _given(s, key, TrainConfig()) for s in train_given for key in ("schedule", "warmup")
    ):
        train = resolve_schedule(train.replace(schedule="auto"))
    if not any(_given(s, "tokenizer", DataConfig()) for s in data_given):
        data = data.replace(tokenizer="character")
    cfg = cfg.replace(train=train, data_options=data)
    _refuse_unsupported(cfg)
    return cfg


def _refuse_unsupported(cfg: PipelineConfig) -> None:
    """Refuses, before any data is read, the options a language model run
    does not carry out (rather than ignoring them)."""
    refused = {
        "tune": cfg.tune is not None,
        "compress": cfg.compress is not None,
        "data_options.synthesize": cfg.data_options.synthesize is not None,
        "train.gradient_accumulation": cfg.train.gradient_accumulation > 1,
        "train.recompute": bool(cfg.train.recompute),
        "strategy": cfg.strategy_kind in ("model_parallel", "parameter_server"),
        # WordPiece ids do not decode back to the text they came from (the
        # "##" joins and the dropped case are lost), so generation and
        # bits per byte would not be honest.
        "data_options.tokenizer='subword'": cfg.data_options.tokenizer == "subword",
    }
    given = [name for name, on in refused.items() if on]
    if given:
        raise ConfigError(
            message(
                f"model='transformer_lm' does not support {', '.join(given)}",
                received={name: getattr(cfg, name, None) for name in given if "." not in name},
                allowed="Leave them unset (the strategy may be 'auto', 'default', 'mirrored' "
                "or 'multi_worker'; the tokenizer 'character' or 'word')",
            )
        )


def language_model_section(
    model: keras.Model,
    corpus: Corpus,
    metrics: Mapping[str, Mapping[str, Any]],
    history: Mapping[str, Sequence[float]],
    context: int,
) -> Section:
    """The report's "Language model" section: the model's size and FLOPs per
    token, the corpus, and each held-out split's perplexity and bits per byte."""
    per_token = flops_per_token(model, context)
    rates = list(history.get("tokens_per_second", []))
    text = [
        f"{model.count_params():,} parameters, context of {context} {corpus.tokenizer} tokens, "
        f"vocabulary of {corpus.vocabulary_size}."
    ]
    if per_token is not None:
        text.append(f"{per_token:,.0f} forward FLOPs per token.")
    if rates:
        text.append(f"Training read {float(np.median(rates[1:] or rates)):,.0f} tokens per second.")
    text.append(
        "Bits per byte: the held-out cross-entropy in bits over the split's UTF-8 bytes "
        "(comparable across tokenizers)."
    )
    rows = [
        {
            "split": split,
            "tokens": m["tokens"],
            "bytes": m["bytes"],
            "loss (nats/token)": round(m["loss"], 4),
            "perplexity": round(m["perplexity"], 4),
            "bits per byte": round(m["bits_per_byte"], 4),
            "next-token accuracy": round(m["accuracy"], 4),
        }
        for split, m in metrics.items()
        if split in ("val", "test")
    ]
    return Section("Language model", text=" ".join(text), rows=rows)
