"""Text: free-text table columns, folders of `.txt` files, and the tokenizer.

A text column is one model input of raw strings. Its tokenizer (a
`TextVectorization` layer) learns its vocabulary on the training split only
and sits inside the model, so the exported SavedModel and `.keras` file take
raw strings; a token never seen in training maps to the out-of-vocabulary
id (1), the padding id is 0. Sequences are padded per batch to the longest
row of the batch; the model truncates them to its `max_length` (the
`transformer` logs how many training rows that cuts).

With ``tokenizer="subword"`` the tokenizer is a WordPiece vocabulary
(`kerastrain.wordpiece`, the optional extra ``kerastrain[text]``) learned
the same way and applied by a `WordPieceTokenizer` layer inside the model.

A table streamed from files learns its vocabulary from token counts gathered
batch by batch (`count_tokens`, `vocabulary_from_counts`): ranked as
`TextVectorization.adapt` ranks them, so the vocabulary equals the one the
same rows give in memory.

A folder of class sub-folders of `.txt` files reads as a table of one text
column named ``"text"``.

Bad text raises `DataError` before training: a text column with no word in
any row, a value that is not a string (rows named), a file that is not
UTF-8 (file and byte offset named), a folder without `.txt` files.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.data.images import IMAGE_EXTENSIONS
from kerastrain.data.validate import rows
from kerastrain.errors import DataError, message
from kerastrain.extras import require

logger = logging.getLogger(__name__)

__all__ = [
    "TextFeature",
    "looks_like_text",
    "check_text_column",
    "is_text_folder",
    "read_text_folder",
    "read_utf8",
    "fit_vocabulary",
    "tokenizer_layer",
    "count_tokens",
    "vocabulary_from_counts",
    "row_lengths",
    "wordpiece",
    "TEXT_COLUMN",
    "PAD_ID",
    "OOV_ID",
]

#: The column name of a folder of `.txt` files read as a table.
TEXT_COLUMN = "text"
#: The token id of padding, and of a token outside the vocabulary.
PAD_ID, OOV_ID = 0, 1
#: A string column is text (not categories) when at least this share of its
#: present values are distinct ...
TEXT_DISTINCT_SHARE = 0.5
#: ... and its values have at least this many words on average.
TEXT_MEAN_WORDS = 3.0
#: Rows tokenized at a time to count each row's tokens.
LENGTH_CHUNK = 512
#: Files a text folder's reading logs its progress every.
PROGRESS_FILES = 10_000

#: `TextVectorization` arguments of each `data_options.tokenizer`.
_TOKENIZERS = {
    "word": {"standardize": "lower_and_strip_punctuation", "split": "whitespace"},
    "character": {"standardize": None, "split": "character"},
}
#: `TextVectorization`'s punctuation, stripped by the `"word"` tokenizer.
_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


@dataclasses.dataclass(frozen=True)
class TextFeature:
    """A text column inside the model, as a factory receives it.

    Attributes:
        ids: The `(batch, length)` int64 token ids (0 pads) of the column.
        vocabulary_size: Distinct ids, padding and out-of-vocabulary included.
        lengths: Tokens of each training row (before any truncation).
        source: The column's name in the data.
    """

    ids: Any
    vocabulary_size: int
    lengths: np.ndarray
    source: str


def looks_like_text(values: np.ndarray, missing: np.ndarray) -> bool:
    """Whether a string column is free text rather than categories: most of
    its values distinct and several words long on average."""
    present = [v for v in values[~missing] if isinstance(v, str)]
    if not present:
        return False
    words = np.mean([len(v.split()) for v in present])
    return len(set(present)) / len(present) >= TEXT_DISTINCT_SHARE and words >= TEXT_MEAN_WORDS


def check_text_column(
    name: str,
    values: np.ndarray,
    missing: np.ndarray,
    source: str,
    where: Callable[[np.ndarray], str],
) -> np.ndarray:
    """The column as an object array of strings (`""` where missing).

    Raises:
        DataError: When a present value is not a string (rows named), or
            when no row holds anything but blanks.
    """
    bad = np.flatnonzero([not m and not isinstance(v, str) for v, m in zip(values, missing)])
    if len(bad):
        first = values[bad[0]]
        raise DataError(
            message(
                f"Text column {name!r} of {source}: {where(bad)} hold values that are not "
                f"strings (first: {first!r}, a {type(first).__name__})",
                allowed="Make every value a string (or leave it empty), or declare the column "
                f"otherwise in data_options.columns={{{name!r}: 'numeric' | 'categorical'}}",
            )
        )
    text = np.array(["" if m else v for v, m in zip(values, missing)], dtype=object)
    if not any(v.strip() for v in text):
        raise DataError(
            message(
                f"Text column {name!r} of {source} is blank: none of its {len(text)} rows holds "
                "anything but spaces",
                allowed=f"Fill it, or drop it with data_options.columns={{{name!r}: 'drop'}}",
            )
        )
    return text


def is_text_folder(path: Path) -> bool:
    """Whether ``path`` is a folder of class sub-folders holding `.txt`
    files and no image (an image folder with a stray `notes.txt` stays an
    image folder)."""
    if not path.is_dir():
        return False
    subs = [sub for sub in path.iterdir() if sub.is_dir()]
    has_text = any(any(sub.glob("*.txt")) for sub in subs)
    return has_text and not any(
        f.suffix.lower() in IMAGE_EXTENSIONS for sub in subs for f in sub.iterdir()
    )


def read_utf8(file: Path) -> str:
    """The text of ``file``.

    Raises:
        DataError: When it is not UTF-8 (file and byte offset named).
    """
    content = file.read_bytes()
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            message(
                f"The text file {str(file)!r} is not UTF-8: byte {exc.start} "
                f"(0x{content[exc.start]:02x}) starts no UTF-8 character ({exc.reason})",
                allowed="Save it as UTF-8 (e.g. iconv -f latin1 -t utf-8), or remove it",
            )
        ) from None


def read_text_folder(path: Path) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Reads a folder of class sub-folders of `.txt` files.

    Args:
        path: The folder; each sub-folder's name is a class.

    Returns:
        The text column (``{"text": strings}``), the class index of each
        file, and the class names (sorted).

    Raises:
        DataError: When no sub-folder holds a `.txt` file, or a file is not
            UTF-8 (named, with the byte offset).
    """
    classes = sorted(s.name for s in path.iterdir() if s.is_dir() and any(s.glob("*.txt")))
    if not classes:
        raise DataError(
            message(
                f"The folder {str(path)!r} has no class sub-folder holding .txt files",
                allowed="Put each class's .txt files in a sub-folder named after the class",
            )
        )
    texts, labels = [], []
    for index, name in enumerate(classes):
        for file in sorted((path / name).glob("*.txt")):
            texts.append(read_utf8(file))
            labels.append(index)
            if len(texts) % PROGRESS_FILES == 0:
                logger.info("Read %d text files of %s so far.", len(texts), path)
    logger.info("Text folder %s: %d files in %d classes.", path, len(texts), len(classes))
    return {TEXT_COLUMN: np.array(texts, dtype=object)}, np.array(labels, np.int64), classes


def wordpiece() -> Any:
    """The module `kerastrain.wordpiece` (it imports tensorflow-text).

    Raises:
        ConfigError: When tensorflow-text is not installed, naming the
            extra ``kerastrain[text]``.
    """
    return require(
        "kerastrain.wordpiece",
        dependency="tensorflow_text",
        extra="text",
        feature="data_options.tokenizer='subword'",
    )


def tokenizer_layer(
    vocabulary: list[str] | None, tokenizer: str, name: str, *, max_tokens: int | None = None
) -> keras.layers.Layer:
    """The tokenizer layer of one text column: from its learned
    ``vocabulary`` (padding and out-of-vocabulary not included), or, when
    None, a layer to adapt. A `TextVectorization` for `"word"` and
    `"character"`, a `kerastrain.wordpiece.WordPieceTokenizer` for
    `"subword"`; either maps raw strings to int64 ids (0 pads, 1 is out of
    vocabulary) and has `adapt` and `get_vocabulary`."""
    if tokenizer == "subword":
        return wordpiece().WordPieceTokenizer(vocabulary, max_tokens=max_tokens, name=name)
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        vocabulary=vocabulary,
        output_mode="int",
        name=name,
        **_TOKENIZERS[tokenizer],
    )


def fit_vocabulary(
    values: np.ndarray, options: DataConfig, source: str
) -> tuple[list[str], np.ndarray]:
    """Learns a text column's vocabulary on the training rows ``values``.

    Returns:
        The vocabulary, most frequent first (padding and out-of-vocabulary
        not included), and the tokens in each row.

    Raises:
        DataError: When the training rows hold no token.
    """
    layer = tokenizer_layer(None, options.tokenizer, "adapt", max_tokens=options.vocabulary_size)
    strings = tf.constant(values.astype(str))
    layer.adapt(tf.data.Dataset.from_tensor_slices(strings).batch(1024))
    vocabulary = layer.get_vocabulary()[2:]
    if not vocabulary:
        raise DataError(
            message(
                f"Text column {source!r} holds no token in its training rows (once lower-cased "
                "and stripped of punctuation)",
                allowed="Give the column words, or use data_options.tokenizer='character'",
            )
        )
    lengths = _lengths(layer, values)
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        logger.info(
            "Text column %r: %d training rows have no token (%s); the model reads them as empty.",
            source,
            len(empty),
            rows(empty),
        )
    return vocabulary, lengths


def _lengths(layer: keras.layers.Layer, values: np.ndarray) -> np.ndarray:
    """Tokens in each row of ``values`` (as ``layer`` cuts them)."""
    strings = tf.constant(np.asarray(values).astype(str))
    chunks = [
        (layer(strings[start : start + LENGTH_CHUNK]).numpy() != PAD_ID).sum(axis=1)
        for start in range(0, len(values), LENGTH_CHUNK)
    ]
    return np.concatenate(chunks).astype(np.int64) if chunks else np.zeros(0, np.int64)


def row_lengths(values: np.ndarray, vocabulary: list[str], tokenizer: str) -> np.ndarray:
    """Tokens in each row of ``values`` under a learned vocabulary."""
    return _lengths(tokenizer_layer(vocabulary, tokenizer, "lengths"), values)


def count_tokens(
    values: np.ndarray, tokenizer: str, counts: collections.Counter
) -> collections.Counter:
    """Adds the tokens of a batch of rows to ``counts`` (updated and
    returned): the `"word"` and `"character"` tokens as `TextVectorization`
    cuts them, or for `"subword"` the words the WordPiece learner counts."""
    if tokenizer == "subword":
        return wordpiece().count_words(values, counts)
    strings = tf.constant(np.asarray(values).astype(str))
    if tokenizer == "word":
        tokens = tf.strings.split(
            tf.strings.regex_replace(tf.strings.lower(strings), _PUNCTUATION, "")
        )
    else:
        tokens = tf.strings.unicode_split(strings, "UTF-8")
    flat = tokens.flat_values.numpy()
    if len(flat):
        distinct, seen = np.unique(flat, return_counts=True)
        for token, n in zip(distinct.tolist(), seen.tolist()):
            counts[token.decode("utf-8")] += n
    return counts


def vocabulary_from_counts(
    counts: collections.Counter, tokenizer: str, max_tokens: int | None
) -> list[str]:
    """A vocabulary (padding and out-of-vocabulary not included) from the
    training rows' `count_tokens`: the most frequent tokens, ties broken as
    `TextVectorization.adapt` breaks them (the later token in code-point
    order first), or for `"subword"` the WordPiece pieces learned from the
    word counts; ``max_tokens`` counts the padding and out-of-vocabulary
    tokens."""
    if tokenizer == "subword":
        return wordpiece().learn_vocabulary(counts, max_tokens)
    ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    if max_tokens is not None:
        ranked = ranked[: max(max_tokens - 2, 0)]
    return [token for token, _ in ranked]
