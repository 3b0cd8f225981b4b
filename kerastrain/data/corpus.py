"""A text corpus for language modelling: read, split, tokenized, windowed.

`fit_pipeline(corpus, "transformer_lm")` takes a `.txt` file, a folder of
`.txt` files (read recursively, in sorted order) or a list of strings; each
file or string is a document. The corpus is split into training, validation
and test text with no text shared:

- by document when there are at least `MIN_DOCUMENTS` of them: the
  documents are shuffled with the run's seed and dealt to the test split,
  then the validation split, until each holds its share
  (`data_options.test_split`, `validation_split`) of the characters; the
  rest train;
- else by contiguous chunks of the (joined) text: training first, then
  validation, then test.

A split's documents are joined with a newline into one stream of text; its
UTF-8 bytes are the denominator of `bits_per_byte`. The tokenizer
(`data_options.tokenizer`, `"character"` by default for a language model:
lossless, every character a token) learns its vocabulary on the training
text only; a character or word it never saw maps to the out-of-vocabulary
id (1). Training reads non-overlapping windows of `max_length + 1` tokens
(inputs are the first `max_length`, targets the last); the held-out splits
are scored on every token but the split's first, with the last window
padded (padding is not scored).

Bad input raises `DataError` before training: an empty or all-blank corpus,
a file that is not UTF-8 (file and byte offset named), a list holding
non-strings (indices named), a folder without `.txt` files, and a training
split too short for one window.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.data.text import PAD_ID, fit_vocabulary, read_utf8, tokenizer_layer
from kerastrain.errors import DataError, message

logger = logging.getLogger(__name__)

__all__ = [
    "Corpus",
    "read_corpus",
    "split_corpus",
    "prepare_corpus",
    "windows",
    "is_corpus",
    "MIN_DOCUMENTS",
    "DOCUMENT_SEPARATOR",
]

#: Fewest documents split by document; fewer are split by chunks of text.
MIN_DOCUMENTS = 10
#: What joins a split's documents into one stream.
DOCUMENT_SEPARATOR = "\n"


def is_corpus(data: Any) -> bool:
    """Whether ``data`` has a corpus's form: a list or tuple, a path ending in
    `.txt`, or a folder (it may still be refused by `read_corpus`)."""
    if isinstance(data, (list, tuple)):
        return True
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        return path.suffix.lower() == ".txt" or path.is_dir()
    return False


def read_corpus(data: Any) -> list[str]:
    """The documents of a corpus.

    Args:
        data: A `.txt` file, a folder of `.txt` files (recursively, sorted
            by path), or a list of strings.

    Returns:
        One string per document (blank ones dropped).

    Raises:
        DataError: For a list holding values that are not strings (indices
            named), a missing path, a folder without `.txt` files, a file
            that is not UTF-8, or a corpus with no character but blanks.
    """
    if isinstance(data, (list, tuple)):
        bad = [i for i, v in enumerate(data) if not isinstance(v, str)]
        if bad:
            first = data[bad[0]]
            shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
            raise DataError(
                message(
                    f"The corpus list holds {len(bad)} values that are not strings, at "
                    f"indices {shown} (first: {first!r}, a {type(first).__name__})",
                    allowed="A list of strings, one per document",
                )
            )
        documents, source = list(data), f"the list of {len(data)} strings"
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if path.is_dir():
            files = sorted(path.rglob("*.txt"))
            if not files:
                raise DataError(
                    message(
                        f"The corpus folder {str(path)!r} holds no .txt file",
                        allowed="A folder of UTF-8 .txt files (sub-folders are read too)",
                    )
                )
            documents, source = [read_utf8(f) for f in files], f"{len(files)} files of {path}"
        elif path.is_file():
            documents, source = [read_utf8(path)], str(path)
        else:
            raise DataError(
                message(
                    f"The corpus {str(path)!r} does not exist",
                    allowed="A .txt file, a folder of .txt files, or a list of strings",
                )
            )
    else:
        raise DataError(
            message(
                f"A language model reads a corpus, not a {type(data).__name__}",
                allowed="A .txt file, a folder of .txt files, or a list of strings",
            )
        )
    kept = [d for d in documents if d.strip()]
    if not kept:
        raise DataError(
            message(
                f"The corpus ({source}) is empty: it holds no character but blanks",
                allowed="Give it text",
            )
        )
    if len(kept) < len(documents):
        logger.info("Corpus: %d blank documents dropped.", len(documents) - len(kept))
    logger.info(
        "Corpus %s: %d documents, %s characters.",
        source,
        len(kept),
        f"{sum(map(len, kept)):,}",
    )
    return kept


def split_corpus(
    documents: Sequence[str], validation: float, test: float, seed: int
) -> dict[str, str]:
    """The training, validation and test text (see the module's docstring).

    Args:
        documents: The corpus's documents.
        validation: The validation share of the characters.
        test: The test share of the characters.
        seed: Seeds the order in which documents are dealt.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, each split's documents
        joined with `DOCUMENT_SEPARATOR` (empty when its share is 0).
    """
    total = sum(map(len, documents))
    if len(documents) >= MIN_DOCUMENTS:
        order = np.random.default_rng(seed).permutation(len(documents))
        parts: dict[str, list[str]] = {"test": [], "val": [], "train": []}
        held = {"test": test * total, "val": validation * total}
        filled = {"test": 0, "val": 0}
        for index in order:
            name = next((n for n in ("test", "val") if filled[n] < held[n]), "train")
            parts[name].append(documents[index])
            if name != "train":
                filled[name] += len(documents[index])
        if parts["train"]:
            logger.info(
                "Corpus split by document: %d train, %d validation, %d test.",
                len(parts["train"]),
                len(parts["val"]),
                len(parts["test"]),
            )
            return {name: DOCUMENT_SEPARATOR.join(docs) for name, docs in parts.items()}
    text = DOCUMENT_SEPARATOR.join(documents)
    train_end = int(round(len(text) * (1.0 - validation - test)))
    val_end = int(round(len(text) * (1.0 - test)))
    logger.info(
        "Corpus split by contiguous chunks of its %s characters (%d document(s)).",
        f"{len(text):,}",
        len(documents),
    )
    return {"train": text[:train_end], "val": text[train_end:val_end], "test": text[val_end:]}


@dataclasses.dataclass
class Corpus:
    """A corpus ready for a language model.

    Attributes:
        text: Each split's text (`"train"`, `"val"`, `"test"`).
        ids: Each split's token ids, one stream (int32).
        vocabulary: The learned vocabulary, padding and out-of-vocabulary
            not included (id `i + 2` is `vocabulary[i]`).
        tokenizer: `"character"` or `"word"`.
    """

    text: dict[str, str]
    ids: dict[str, np.ndarray]
    vocabulary: list[str]
    tokenizer: str

    @property
    def vocabulary_size(self) -> int:
        """Distinct ids, padding and out-of-vocabulary included."""
        return len(self.vocabulary) + 2

    def text_bytes(self, split: str) -> int:
        """UTF-8 bytes of a split's text."""
        return len(self.text[split].encode("utf-8"))

    def summary(self) -> dict[str, Any]:
        """The corpus in figures, for the log and the report."""
        return {
            "tokenizer": self.tokenizer,
            "vocabulary": self.vocabulary_size,
            **{f"{split} tokens": int(len(ids)) for split, ids in self.ids.items()},
            **{f"{split} bytes": self.text_bytes(split) for split in self.text},
        }


def encode(layer: keras.layers.TextVectorization, text: str) -> np.ndarray:
    """One stream of text as its token ids (int32)."""
    if not text:
        return np.zeros(0, np.int32)
    return layer(tf.constant([text])).numpy()[0].astype(np.int32)


def prepare_corpus(data: Any, options: DataConfig, seed: int, max_length: int) -> Corpus:
    """Reads, splits and tokenizes a corpus (see the module's docstring).

    Args:
        data: A `.txt` file, a folder of them, or a list of strings.
        options: `tokenizer`, `vocabulary_size`, `validation_split`,
            `test_split`.
        seed: Seeds the split by document.
        max_length: The model's context, in tokens.

    Returns:
        The `Corpus`.

    Raises:
        DataError: For bad input (`read_corpus`), or a training split with
            fewer than `max_length + 1` tokens.
    """
    documents = read_corpus(data)
    text = split_corpus(documents, options.validation_split, options.test_split, seed)
    vocabulary, _ = fit_vocabulary(np.array([text["train"]], dtype=object), options, "corpus")
    layer = tokenizer_layer(vocabulary, options.tokenizer, "tokenizer")
    ids = {split: encode(layer, part) for split, part in text.items()}
    if len(ids["train"]) < max_length + 1:
        raise DataError(
            message(
                f"The corpus is too short: its training split holds {len(ids['train'])} "
                f"{options.tokenizer} tokens, fewer than one window of max_length + 1 = "
                f"{max_length + 1}",
                allowed="Give more text, or a smaller model_options.max_length",
            )
        )
    corpus = Corpus(text, ids, vocabulary, options.tokenizer)
    logger.info("Corpus prepared: %s.", corpus.summary())
    return corpus


def windows(
    ids: np.ndarray, max_length: int, *, held_out: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Next-token windows of a stream of ids.

    Args:
        ids: The stream.
        max_length: Tokens per window's input.
        held_out: Cover every token but the first (the last window padded,
            its padding weighted 0) instead of full windows only.

    Returns:
        Inputs and targets `(windows, max_length)` (int32) and the weight of
        each target (1.0, or 0.0 for padding).
    """
    step = max_length
    count = (len(ids) - 1) // step if not held_out else -(-(len(ids) - 1) // step)
    count = max(count, 0)
    x = np.full((count, max_length), PAD_ID, np.int32)
    y = np.full((count, max_length), PAD_ID, np.int32)
    w = np.zeros((count, max_length), np.float32)
    for i in range(count):
        chunk = ids[i * step : i * step + max_length + 1]
        n = len(chunk) - 1
        x[i, :n], y[i, :n], w[i, :n] = chunk[:-1], chunk[1:], 1.0
    return x, y, w
