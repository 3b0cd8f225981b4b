"""Token attributions of a model that reads text: integrated gradients on
the token embeddings.

A text column enters the model as raw strings; its tokenizer (inside the
model) turns them into token ids and a `TokenEmbedding` layer
(``token_embedding``, or ``<column>_token_embedding`` beside other text
columns) into vectors. Ids are integers, with no gradient, so the model is
split at the ids: a second model over the same layers takes the ids (for the
padding mask) and the embedding vectors (for everything else), and the
gradients are taken with respect to the vectors.

For one text with embeddings ``x`` (``(tokens, d)``) and a baseline ``b``
(zero vectors by default, or the padding id's vector), integrated gradients
(Sundararajan et al., 2017) average the gradients of the explained score
along the straight path from ``b`` to ``x`` (``steps`` intervals, trapezoidal
rule); a token's attribution is the sum over the embedding dimension of
``(x - b) * mean gradient``. The attributions of a text sum to
``f(x) - f(b)`` up to the integral's error (``delta``, reported). The padding
mask keeps the text's own tokens on the whole path, so only the vectors
change.

The score explained is the predicted class's probability (classification)
or the model's output (regression).
"""

from __future__ import annotations

import dataclasses
import html
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.batching import DIRECT_CALL_ROWS, predict_model
from kerastrain.data.layers import TokenEmbedding
from kerastrain.errors import ConfigError, DataError, config_error, message
from kerastrain.figures import figure
from kerastrain.metrics import class_names, predicted_classes
from kerastrain.task import Task

logger = logging.getLogger(__name__)

__all__ = [
    "TokenAttributions",
    "token_attributions",
    "text_embeddings",
    "class_score",
    "BASELINES",
    "DEFAULT_TEXTS",
]

#: Baselines of the path integral: zero vectors, or the padding id's vector.
BASELINES = ("zero", "padding")
#: Texts explained by default.
DEFAULT_TEXTS = 5
#: Tokens drawn per text in `TokenAttributions.plot` (the HTML shows all).
PLOTTED_TOKENS = 40
#: Path points per gradient batch (bounds the memory of a long text).
PATH_BATCH = 64

_POSITIVE = (192, 57, 43)  # red: pushes toward the explained score
_NEGATIVE = (41, 98, 185)  # blue: pushes away from it


def class_score(task: Task, outputs: Any, target: np.ndarray) -> Any:
    """The score each row is explained for, differentiably: the probability
    of the class ``target`` (classification), or the output (regression).

    Args:
        task: The task the model answers.
        outputs: The model's outputs, a tensor.
        target: One class index per row (ignored for regression).

    Returns:
        A ``(rows,)`` tensor.
    """
    if task.kind == "regression":
        return tf.reshape(outputs, (tf.shape(outputs)[0], -1))[:, 0]
    if task.kind == "binary" and outputs.shape[-1] != 2:
        p = tf.reshape(outputs, (-1,))
        return tf.where(tf.constant(target == 1), p, 1.0 - p)
    return tf.gather(tf.reshape(outputs, (tf.shape(outputs)[0], -1)), target, axis=1, batch_dims=1)


@dataclasses.dataclass
class TokenAttributions:
    """Integrated-gradients attributions of the tokens of a few texts.

    Attributes:
        column: The text column explained.
        indices: The rows of the data that were explained.
        texts: Those rows' texts.
        tokens: Each text's tokens as the model reads them (vocabulary
            strings; ``"[UNK]"`` for a word outside the vocabulary), after
            truncation to the model's `max_length`.
        attributions: Each text's attribution per token (same lengths as
            `tokens`).
        scores: The explained score of each text, ``f(x)``.
        baseline_scores: The score at the baseline, ``f(b)``.
        delta: The sum of each text's attributions minus
            ``f(x) - f(b)`` (0 for an exact integral).
        labels: The true labels (class indices, or targets).
        predicted: The predicted class of each text (regression: the
            prediction).
        class_names: The classes (empty for regression).
        steps: Intervals of the path integral.
        baseline: `"zero"` or `"padding"`.
        character: Tokens are characters (drawn without spaces between).
        method: `"integrated_gradients"`.
    """

    column: str
    indices: np.ndarray
    texts: list[str]
    tokens: list[list[str]]
    attributions: list[np.ndarray]
    scores: np.ndarray
    baseline_scores: np.ndarray
    delta: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    class_names: list[str]
    steps: int
    baseline: str = "zero"
    character: bool = False
    method: str = "integrated_gradients"

    @property
    def title(self) -> str:
        return f"Token attributions ({self.column})"

    def _name(self, value: Any) -> str:
        if not self.class_names:
            return f"{float(value):.4g}"
        return self.class_names[int(value)]

    def top_tokens(self, k: int = 3) -> list[list[str]]:
        """Each text's ``k`` tokens with the largest attribution."""
        return [
            [toks[i] for i in np.argsort(-a, kind="stable")[:k]]
            for toks, a in zip(self.tokens, self.attributions)
        ]

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "row": int(i),
                "true": self._name(t),
                "predicted": self._name(p),
                "score": float(s),
                "baseline score": float(b),
                "sum - change": float(d),
                "top tokens": ", ".join(top),
            }
            for i, t, p, s, b, d, top in zip(
                self.indices,
                self.labels,
                self.predicted,
                self.scores,
                self.baseline_scores,
                self.delta,
                self.top_tokens(),
            )
        ]

    def describe(self) -> str:
        score = "predicted class's probability" if self.class_names else "prediction"
        worst = float(np.max(np.abs(self.delta))) if len(self.delta) else 0.0
        return (
            f"Integrated gradients of the {score} over the token embeddings of column "
            f"{self.column!r}, for {len(self.indices)} held-out texts ({self.steps} steps from "
            f"{'zero vectors' if self.baseline == 'zero' else 'the padding vector'}). "
            "Red tokens push toward the score, blue ones away; the shade is the token's share "
            "of the text's largest attribution. A text's attributions sum to its score minus "
            f"the baseline's, here within {worst:.2g}."
        )

    def html(self) -> str:
        """The texts with each token shaded by its attribution, and a legend
        (an HTML fragment; every token is escaped)."""
        legend = (
            '<p class="token-legend" style="font-size:.85em">'
            + _span("toward the score", 1.0)
            + " "
            + _span("away from it", -1.0)
            + " shade: share of the text's largest |attribution| (hover a token for its value)"
            + "</p>"
        )
        blocks = []
        joiner = "" if self.character else " "
        for j, (tokens, values) in enumerate(zip(self.tokens, self.attributions)):
            scale = float(np.max(np.abs(values))) if len(values) else 0.0
            spans = joiner.join(
                _span(tok, (v / scale) if scale > 0 else 0.0, v) for tok, v in zip(tokens, values)
            )
            head = html.escape(
                f"row {int(self.indices[j])}: true {self._name(self.labels[j])}, predicted "
                f"{self._name(self.predicted[j])} (score {self.scores[j]:.3f}, baseline "
                f"{self.baseline_scores[j]:.3f})"
            )
            blocks.append(
                f'<div class="token-attribution" style="margin:8px 0">'
                f'<div style="font-size:.85em;color:#566">{head}</div>'
                f'<div style="line-height:1.9">{spans}</div></div>'
            )
        return legend + "".join(blocks)

    def plot(self, path: str | os.PathLike) -> Path:
        """Draws each text's token attributions as bars (its first tokens)."""
        n = len(self.indices)
        with figure(path, n, 1, figsize=(9, 1.9 * n + 0.4), squeeze=False) as (_, axes):
            for j in range(n):
                ax = axes[j, 0]
                values = self.attributions[j][:PLOTTED_TOKENS]
                tokens = self.tokens[j][:PLOTTED_TOKENS]
                colors = [
                    tuple(c / 255 for c in (_POSITIVE if v >= 0 else _NEGATIVE)) for v in values
                ]
                ax.bar(np.arange(len(values)), values, color=colors)
                ax.set_xticks(np.arange(len(values)))
                ax.set_xticklabels(tokens, rotation=60, fontsize=7, ha="right")
                ax.axhline(0.0, color="grey", lw=0.6)
                ax.set_title(
                    f"row {int(self.indices[j])}: predicted {self._name(self.predicted[j])}",
                    fontsize=8,
                )
        return Path(path)


def _span(token: str, share: float, value: float | None = None) -> str:
    """One token on a background red (positive) or blue (negative) whose
    opacity is ``|share|``."""
    r, g, b = _POSITIVE if share >= 0 else _NEGATIVE
    alpha = min(1.0, abs(float(share))) * 0.85
    title = "" if value is None else f' title="{value:.4g}"'
    color = "#fff" if alpha > 0.5 else "inherit"
    return (
        f'<span style="background:rgba({r},{g},{b},{alpha:.2f});color:{color};'
        f'padding:1px 2px;border-radius:3px"{title}>{html.escape(token)}</span>'
    )


# --------------------------------------------------------------------------- the split model


@dataclasses.dataclass
class _TextSplit:
    """A model split at one text column's token ids."""

    column: str
    to_ids: keras.Model  # raw strings of the column -> ids
    embed: TokenEmbedding
    inner: keras.Model  # [ids, vectors, *other inputs] -> outputs
    others: list[str]  # names of the other inputs, in `inner`'s order
    vocabulary: list[str]
    character: bool


def _input_name(tensor: Any) -> str:
    return tensor._keras_history.layer.name


def _source(tensor: Any) -> Any:
    """The model input a tensor is computed from (following first inputs)."""
    layer = tensor._keras_history.layer
    while not isinstance(layer, keras.layers.InputLayer):
        tensor = layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input
        layer = tensor._keras_history.layer
    return tensor


def text_embeddings(model: keras.Model) -> list[TokenEmbedding]:
    """The model's token embedding layers, one per text column it reads
    (none for a model without text)."""
    return [layer for layer in model.layers if isinstance(layer, TokenEmbedding)]


def _split(model: keras.Model, embed: TokenEmbedding) -> _TextSplit:
    ids = embed.input
    source = _source(ids)
    column = _input_name(source)
    others = [t for t in model.inputs if t is not source]
    inner = keras.Model([ids, embed.output, *others], model.outputs, name=f"{column}_from_ids")
    tokenizer = ids._keras_history.layer
    vocabulary = list(tokenizer.get_vocabulary()) if hasattr(tokenizer, "get_vocabulary") else []
    split = (
        tokenizer.get_config().get("split") if hasattr(tokenizer, "get_config") else "whitespace"
    )
    return _TextSplit(
        column=column,
        to_ids=keras.Model(source, ids, name=f"{column}_ids"),
        embed=embed,
        inner=inner,
        others=[_input_name(t) for t in others],
        vocabulary=vocabulary,
        character=split == "character",
    )


def _column_values(x: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """A column as the model input takes it (text: strings, missing as "")."""
    values = np.asarray(x[name])
    if values.dtype.kind in "OUS":
        return np.array(
            ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in values],
            dtype=object,
        )
    return values.astype(np.float32)


def _integrate(
    split: _TextSplit,
    task: Task,
    ids: np.ndarray,
    others: list[np.ndarray],  # one-row arrays of the other inputs
    target: int,
    steps: int,
    baseline: str,
) -> tuple[np.ndarray, float, float]:
    """One text's attribution per token, its score and the baseline's."""
    ids_t = tf.constant(ids[None])
    x = tf.cast(split.embed(ids_t), tf.float32)[0].numpy()  # (tokens, d)
    if baseline == "padding":
        pad = tf.cast(split.embed(tf.zeros((1, 1), tf.int64)), tf.float32)[0, 0].numpy()
        base = np.broadcast_to(pad, x.shape).astype(np.float32)
    else:
        base = np.zeros_like(x)
    alphas = np.linspace(0.0, 1.0, steps + 1, dtype=np.float32)
    grads, scores = [], []
    for start in range(0, len(alphas), PATH_BATCH):
        a = alphas[start : start + PATH_BATCH]
        path = tf.constant(base[None] + a[:, None, None] * (x - base)[None])
        n = len(a)
        rest = [tf.constant(np.repeat(v, n, axis=0)) for v in others]
        with tf.GradientTape() as tape:
            tape.watch(path)
            out = split.inner([tf.repeat(ids_t, n, axis=0), path, *rest], training=False)
            score = class_score(task, tf.cast(out, tf.float32), np.full(n, target))
        grads.append(tape.gradient(score, path).numpy())
        scores.append(score.numpy())
    g, ends = np.concatenate(grads), np.concatenate(scores)
    average = ((g[:-1] + g[1:]) / 2.0).mean(axis=0)  # trapezoidal rule
    return ((x - base) * average).sum(axis=-1), float(ends[-1]), float(ends[0])


def _choose(tokens: np.ndarray, correct: np.ndarray, texts: int, seed: int) -> np.ndarray:
    """Up to ``texts`` rows with at least one token, up to half of them
    wrongly predicted when there are such."""
    rng = np.random.default_rng(seed)
    usable = tokens > 0
    wrong = rng.permutation(np.flatnonzero(usable & ~correct))
    right = rng.permutation(np.flatnonzero(usable & correct))
    n_wrong = min(len(wrong), texts // 2)
    n_right = min(len(right), texts - n_wrong)
    n_wrong = min(len(wrong), texts - n_right)
    return np.sort(np.concatenate([right[:n_right], wrong[:n_wrong]]).astype(np.int64))


def token_attributions(
    model: keras.Model,
    x: Mapping[str, np.ndarray],
    y: np.ndarray,
    task: Task,
    *,
    column: str | None = None,
    texts: int = DEFAULT_TEXTS,
    steps: int = 64,
    baseline: str | None = None,
    seed: int = 0,
    rows: np.ndarray | None = None,
) -> list[TokenAttributions]:
    """Integrated gradients over the token embeddings of a few texts.

    Args:
        model: A trained model that reads text (has a `TokenEmbedding`).
        x: The rows, a dict of columns (raw strings for text).
        y: Their labels (class indices, or targets).
        task: The task the model answers.
        column: The text column to explain. Defaults to `None` (each one).
        texts: Texts explained per column (rows with at least one token, up
            to half of them wrongly classified). Defaults to `5`.
        steps: Intervals of the path integral. Defaults to `64`.
        baseline: `"zero"` (zero vectors) or `"padding"` (the padding id's
            vector at every token). Defaults to `None` (`"zero"`).
        seed: Seed of the choice of texts. Defaults to `0`.
        rows: Row numbers to report for the rows of ``x``. Defaults to
            `None` (their positions in ``x``).

    Returns:
        One `TokenAttributions` per text column explained.

    Raises:
        ConfigError: For a model without token embeddings, an unknown
            column or baseline, or bad `texts` or `steps`.
        DataError: When ``x`` lacks a column the model reads.
    """
    baseline = baseline or "zero"
    if baseline not in BASELINES:
        raise config_error("baseline", baseline, "'zero' or 'padding' for a text model", BASELINES)
    for key, value, low in (("examples", texts, 1), ("steps", steps, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise config_error(key, value, f"an integer >= {low}")
    layers = text_embeddings(model)
    if not layers:
        raise ConfigError(
            message(
                f"Token attributions need a model that reads text; {model.name!r} has no token "
                "embedding layer (kerastrain.data.layers.TokenEmbedding)",
                allowed="A model='transformer' trained on a text column",
            )
        )
    splits = [_split(model, layer) for layer in layers]
    if column is not None:
        columns = [s.column for s in splits]
        if column not in columns:
            raise config_error("column", column, f"one of the text columns {columns}", columns)
        splits = [s for s in splits if s.column == column]
    names = [_input_name(t) for t in model.inputs]
    missing = [n for n in names if n not in x]
    if missing:
        raise DataError(
            message(
                f"The rows lack the column(s) {missing} the model reads",
                allowed=f"Pass every input: {names}",
            )
        )
    values = {name: _column_values(x, name) for name in names}
    positions = np.arange(len(y)) if rows is None else np.asarray(rows)
    outputs = predict_model(model, values, direct_call_rows=DIRECT_CALL_ROWS)
    if task.is_classification:
        predicted = predicted_classes(task, outputs)
        correct = predicted == np.asarray(y)
    else:
        predicted = np.asarray(outputs, np.float64).reshape(len(outputs), -1)[:, 0]
        correct = np.ones(len(y), bool)
    results = []
    for split in splits:
        ids = split.to_ids(tf.constant(values[split.column].astype(str))).numpy()
        lengths = np.minimum((ids != 0).sum(axis=1), split.embed.max_length)
        chosen = _choose(lengths, correct, texts, seed)
        tokens, attributions, scores, bases, deltas = [], [], [], [], []
        for i in chosen:
            row_ids = ids[i, : lengths[i]]
            attribution, score, base = _integrate(
                split,
                task,
                row_ids,
                [_one(values[name], i) for name in split.others],
                int(predicted[i]) if task.is_classification else 0,
                steps,
                baseline,
            )
            tokens.append([_token(split.vocabulary, int(t)) for t in row_ids])
            attributions.append(attribution)
            scores.append(score)
            bases.append(base)
            deltas.append(float(attribution.sum() - (score - base)))
        result = TokenAttributions(
            column=split.column,
            indices=positions[chosen],
            texts=[str(values[split.column][i]) for i in chosen],
            tokens=tokens,
            attributions=attributions,
            scores=np.asarray(scores),
            baseline_scores=np.asarray(bases),
            delta=np.asarray(deltas),
            labels=np.asarray(y)[chosen],
            predicted=predicted[chosen],
            class_names=class_names(task) if task.is_classification else [],
            steps=steps,
            baseline=baseline,
            character=split.character,
        )
        logger.info(
            "Token attributions of %r for %d texts (%d steps; largest |sum - change| %.3g): %s.",
            split.column,
            len(chosen),
            steps,
            float(np.max(np.abs(result.delta))) if len(chosen) else 0.0,
            "; ".join(", ".join(top) for top in result.top_tokens()),
        )
        results.append(result)
    return results


def _one(values: np.ndarray, i: int) -> np.ndarray:
    """Row ``i`` of a column, as a one-row array the model takes."""
    row = values[i : i + 1]
    return row.astype(str) if row.dtype == object else row


def _token(vocabulary: list[str], token_id: int) -> str:
    return str(vocabulary[token_id]) if 0 <= token_id < len(vocabulary) else f"<{token_id}>"
