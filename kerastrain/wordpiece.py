"""Subword text: a WordPiece vocabulary learned from word counts, and the
tf_keras layer that applies it inside a model.

`data_options.tokenizer="subword"` cuts text in two steps, the same when
the vocabulary is learned and when the model reads a row:

1. BERT's basic tokenization (tensorflow-text's `BasicTokenizer` with
   ``lower_case=True``): case folded, NFD-normalized with accents removed,
   split on whitespace and around every punctuation character (each one a
   word of its own);
2. WordPiece (`tensorflow_text.FastWordpieceTokenizer`): each word becomes
   the longest vocabulary pieces that spell it, a piece inside a word
   prefixed with ``##``; a word that no pieces spell is one out-of-vocabulary
   id.

The vocabulary is learned by tensorflow-text's WordPiece learner (the one
``bert_vocab_from_dataset`` calls) from the words' counts over the training
rows, so a table streamed from files (its counts gathered batch by batch) and
one in memory learn it the same way. Its first two entries are ``[PAD]``
(id 0) and ``[UNK]`` (id 1), as for the word and character tokenizers; the
single characters of the training words and their ``##`` forms come next, so
a word never seen is spelled from pieces rather than lost.

This module imports tensorflow-text, the optional extra ``kerastrain[text]``
(it costs about 1.5 s): nothing imports it at ``import kerastrain``; it is
loaded through `kerastrain.extras.require` where subword text is used, and
tf_keras imports it by name when it loads a ``.keras`` file holding a
`WordPieceTokenizer` (so such a file loads in a fresh process). It sits
beside the stages, not in `kerastrain.data`, because the export stage also
builds the layer (to tokenize for TFLite runners) and does not import data.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import numpy as np
import tensorflow_text as tf_text
from tensorflow_text.python.ops.bert_tokenizer import BasicTokenizer
from tensorflow_text.tools.wordpiece_vocab import wordpiece_tokenizer_learner_lib as learner

from kerastrain._keras import keras, tf

__all__ = [
    "WordPieceTokenizer",
    "count_words",
    "learn_vocabulary",
    "words",
    "PAD",
    "UNK",
    "SUFFIX",
]

#: The padding piece (id 0) and the out-of-vocabulary piece (id 1).
PAD, UNK = "[PAD]", "[UNK]"
#: The prefix of a piece that continues a word.
SUFFIX = "##"
#: Longer words are one out-of-vocabulary id.
MAX_BYTES_PER_WORD = 100
#: A piece must be seen at least this often in training to be learned
#: (single characters always are).
MIN_PIECE_COUNT = 2

_BASIC = BasicTokenizer(lower_case=True)


def words(strings: Any) -> tf.RaggedTensor:
    """The words of each string (step 1 of the module's docstring), as a
    `(rows, words)` ragged string tensor."""
    return _BASIC.tokenize(tf.convert_to_tensor(strings, tf.string))


def count_words(strings: Any, counts: collections.Counter | None = None) -> collections.Counter:
    """Adds the words of ``strings`` (a batch of rows) to ``counts``.

    Args:
        strings: Rows of text (an array of `str`, or a string tensor).
        counts: The counts so far. Defaults to a new `Counter`.

    Returns:
        ``counts``, updated (word to count).
    """
    counts = collections.Counter() if counts is None else counts
    flat = words(strings).flat_values.numpy()
    if len(flat):
        distinct, seen = np.unique(flat, return_counts=True)
        for word, n in zip(distinct.tolist(), seen.tolist()):
            counts[word.decode("utf-8")] += n
    return counts


def learn_vocabulary(word_counts: dict[str, int], max_tokens: int | None) -> list[str]:
    """A WordPiece vocabulary from word counts.

    Args:
        word_counts: Each training word's count (`count_words`).
        max_tokens: The most pieces kept, ``[PAD]`` and ``[UNK]`` included
            (the learner aims just below it; the rarest pieces beyond it are
            cut). None keeps what the learner finds at its lowest threshold.

    Returns:
        The pieces, without ``[PAD]`` and ``[UNK]``: single characters first
        (sorted), then the learned pieces, most frequent first.
    """
    if not word_counts:
        return []
    size = max_tokens if max_tokens is not None else 1 << 30
    vocabulary = learner.learn(
        sorted(word_counts.items()),
        vocab_size=size,
        reserved_tokens=[PAD, UNK],
        lower_thresh=MIN_PIECE_COUNT,
        joiner=SUFFIX,
        include_joiner_token=True,
    )
    return [piece for piece in vocabulary[:size] if piece not in (PAD, UNK)]


@keras.saving.register_keras_serializable(package="kerastrain")
class WordPieceTokenizer(keras.layers.Layer):
    """Raw strings to WordPiece ids inside a model (see the module's
    docstring): ``(rows,)`` strings in, ``(rows, pieces)`` int64 ids out,
    padded with 0 to the batch's longest row; a word no piece spells is 1.

    Args:
        vocabulary: The pieces, without ``[PAD]`` and ``[UNK]``; None for a
            layer to `adapt`.
        max_tokens: The most pieces `adapt` keeps, ``[PAD]`` and ``[UNK]``
            included. Defaults to `None`.
    """

    def __init__(
        self, vocabulary: list[str] | None = None, max_tokens: int | None = None, **kwargs: Any
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.max_tokens = max_tokens
        self._set_vocabulary(vocabulary)

    def _set_vocabulary(self, vocabulary: list[str] | None) -> None:
        self.vocabulary = None if vocabulary is None else [str(p) for p in vocabulary]
        self._pieces = None
        if self.vocabulary is not None:
            self._pieces = tf_text.FastWordpieceTokenizer(
                vocab=[PAD, UNK, *self.vocabulary],
                suffix_indicator=SUFFIX,
                max_bytes_per_word=MAX_BYTES_PER_WORD,
                token_out_type=tf.int64,
                unknown_token=UNK,
                no_pretokenization=True,
                support_detokenization=False,
            )

    def adapt(self, data: Iterable[Any] | Any) -> None:
        """Learns the vocabulary from rows of text: an array of strings or
        a `tf.data.Dataset` (or other iterable) of batches of them."""
        counts: collections.Counter = collections.Counter()
        batches = [data] if isinstance(data, (np.ndarray, list, tf.Tensor)) else data
        for batch in batches:
            count_words(batch, counts)
        self._set_vocabulary(learn_vocabulary(counts, self.max_tokens))

    def get_vocabulary(self) -> list[str]:
        """Every piece by id: ``[PAD]``, ``[UNK]``, then the learned ones."""
        return [PAD, UNK, *(self.vocabulary or [])]

    def vocabulary_size(self) -> int:
        """Distinct ids, ``[PAD]`` and ``[UNK]`` included."""
        return len(self.get_vocabulary())

    def tokenizer_spec(self) -> dict[str, Any]:
        """How a client outside TensorFlow reproduces this layer, for
        ``tokenizer.json``."""
        return {
            "kind": "wordpiece",
            "vocabulary": self.get_vocabulary(),
            "standardize": "bert_basic_uncased",
            "split": "wordpiece",
            "suffix_indicator": SUFFIX,
            "max_bytes_per_word": MAX_BYTES_PER_WORD,
            "padding_id": 0,
            "out_of_vocabulary_id": 1,
        }

    def call(self, inputs: Any) -> tf.Tensor:
        if self._pieces is None:
            raise ValueError(f"The WordPieceTokenizer {self.name!r} has no vocabulary: adapt it")
        strings = tf.convert_to_tensor(inputs, tf.string)
        if strings.shape.rank == 2:  # (rows, 1), as a reloaded model may pass it
            strings = tf.squeeze(strings, axis=-1)
        pieces = self._pieces.tokenize(words(strings))  # (rows, words, pieces)
        return pieces.merge_dims(-2, -1).to_tensor(default_value=0)

    def compute_output_shape(self, input_shape: Any) -> tf.TensorShape:
        return tf.TensorShape([input_shape[0], None])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "max_tokens": self.max_tokens,
        }
