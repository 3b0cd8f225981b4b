"""Text from a language model: `result.generate` and `kerastrain generate`.

A `Generator` tokenizes a prompt with the model's tokenizer, then adds one
token at a time: it reads the next-token logits at the last position of the
last `max_length` tokens, and picks the most likely token (``temperature=0``)
or samples from ``softmax(logits / temperature)`` restricted to the
``top_k`` most likely tokens. Padding and the out-of-vocabulary token are
never picked. The sampling draws from its own NumPy generator seeded with
``seed``, so the same prompt, settings and seed give the same text, whatever
else the process drew.

Stated behaviours: a prompt longer than the context keeps its last
`max_length` tokens (a warning names both lengths); a character or word the
tokenizer never saw maps to the out-of-vocabulary token, never an error; a
prompt with no token at all (empty, or only what the word tokenizer strips)
is refused with a `DataError`.

`load_generator` reads a run folder or the SavedModel folder in it
(`model.keras` or the SavedModel, with `tokenizer.json` and
`model_info.json` beside it or one folder up).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

import kerastrain.data.layers  # noqa: F401  (registers the model's layers for loading)
from kerastrain._keras import keras, tf
from kerastrain.data.text import OOV_ID, PAD_ID, tokenizer_layer
from kerastrain.errors import ConfigError, DataError, config_error, message
from kerastrain.export.language_model import LM_TASK

logger = logging.getLogger(__name__)

__all__ = ["Generator", "load_generator"]


class Generator:
    """Generates text from a next-token model.

    Args:
        next_logits: Token ids `(1, length)` int32 to the logits of every
            position `(1, length, vocabulary_size)`.
        vocabulary: The learned vocabulary, padding and out-of-vocabulary
            not included.
        tokenizer: `"character"` or `"word"`.
        max_length: The model's context, in tokens.
    """

    def __init__(self, next_logits: Any, vocabulary: list[str], tokenizer: str, max_length: int):
        self.next_logits = next_logits
        self.vocabulary = ["", "[UNK]", *vocabulary]
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.layer = tokenizer_layer(list(vocabulary), tokenizer, "generate_tokenizer")

    @classmethod
    def from_model(
        cls, model: keras.Model, vocabulary: list[str], tokenizer: str, max_length: int
    ) -> Generator:
        """A generator over an in-memory tf_keras model (one traced step)."""

        @tf.function(input_signature=[tf.TensorSpec((1, None), tf.int32)])
        def step(ids: tf.Tensor) -> tf.Tensor:
            return model(ids, training=False)

        return cls(step, vocabulary, tokenizer, max_length)

    def encode(self, text: str) -> np.ndarray:
        """The token ids of ``text`` (unknown tokens are 1)."""
        ids = self.layer(tf.constant([text])).numpy()[0].astype(np.int32)
        return ids[ids != PAD_ID]

    def decode(self, ids: Any) -> str:
        """Text from token ids (padding dropped)."""
        tokens = [self.vocabulary[int(i)] for i in ids if int(i) != PAD_ID]
        return ("" if self.tokenizer == "character" else " ").join(tokens)

    def generate(
        self,
        prompt: str,
        max_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> str:
        """The prompt followed by ``max_tokens`` generated tokens.

        Args:
            prompt: The text to continue.
            max_tokens: Tokens to add. Defaults to `100`.
            temperature: `0` picks the most likely token; above it, sampling
                from the logits divided by it. Defaults to `1.0`.
            top_k: Sample among the `top_k` most likely tokens only.
                Defaults to `None` (all).
            seed: Seeds the sampling. Defaults to `0`.

        Returns:
            The prompt and its continuation (word tokens joined by spaces; the
            prompt as given).

        Raises:
            ConfigError: For a bad setting.
            DataError: For a prompt with no token.
        """
        if not isinstance(prompt, str):
            raise config_error("prompt", prompt, "a string")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
            raise config_error("max_tokens", max_tokens, "an integer >= 0")
        if not isinstance(temperature, (int, float)) or temperature < 0:
            raise config_error("temperature", temperature, "a number >= 0")
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise config_error("top_k", top_k, "None or an integer >= 1")
        ids = self.encode(prompt)
        if not len(ids):
            raise DataError(
                message(
                    f"The prompt {prompt!r} holds no {self.tokenizer} token",
                    allowed="Give the prompt at least one character or word",
                )
            )
        if len(ids) > self.max_length:
            logger.warning(
                "The prompt has %d tokens, more than the model's context of %d: its last %d "
                "tokens are kept.",
                len(ids),
                self.max_length,
                self.max_length,
            )
        rng = np.random.default_rng(seed)
        context = list(ids[-self.max_length :])
        added = []
        for _ in range(max_tokens):
            window = np.array([context[-self.max_length :]], np.int32)
            logits = np.asarray(self.next_logits(tf.constant(window)))[0, -1].astype(np.float64)
            token = _pick(logits, temperature, top_k, rng)
            added.append(token)
            context.append(token)
        continuation = self.decode(added)
        if self.tokenizer == "word" and continuation:
            return f"{prompt} {continuation}"
        return prompt + continuation


def _pick(logits: np.ndarray, temperature: float, top_k: int | None, rng: Any) -> int:
    """The next token from one position's logits (never padding or OOV)."""
    logits = logits.copy()
    logits[[PAD_ID, OOV_ID]] = -np.inf
    if temperature == 0:
        return int(np.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < len(logits):
        cut = np.sort(logits)[-top_k]
        logits[logits < cut] = -np.inf
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return int(rng.choice(len(p), p=p))


def _find(folder: Path, name: str) -> Path | None:
    for where in (folder, folder.parent):
        if (where / name).is_file():
            return where / name
    return None


def load_generator(artifact: str | os.PathLike) -> Generator:
    """The generator of a language model's run folder or SavedModel folder.

    Args:
        artifact: A run folder (its `model.keras` is used), a `.keras` file,
            or a SavedModel folder with a `serving_default` signature on
            token ids; `tokenizer.json` and `model_info.json` are read beside
            it or one folder up.

    Returns:
        The `Generator`.

    Raises:
        ConfigError: When it is not a kerastrain language model.
    """
    path = Path(artifact)
    folder = path if path.is_dir() else path.parent
    info_path, tokenizer_path = _find(folder, "model_info.json"), _find(folder, "tokenizer.json")
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path else {}
    if info.get("task") != LM_TASK or tokenizer_path is None:
        raise ConfigError(
            message(
                f"{str(path)!r} is not a kerastrain language model (no model_info.json with "
                f"task {LM_TASK!r} and tokenizer.json beside it)",
                allowed="The run folder of model='transformer_lm', or its SavedModel folder",
            )
        )
    spec = json.loads(tokenizer_path.read_text(encoding="utf-8"))["text"]
    vocabulary = [str(t) for t in spec["vocabulary"][2:]]
    tokenizer = "character" if spec["split"] == "character" else "word"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        loaded = tf.saved_model.load(str(path))
        serve = loaded.signatures["serving_default"]

        def next_logits(ids: tf.Tensor) -> tf.Tensor:
            return serve(ids=tf.cast(ids, tf.int32))["logits"]

        return Generator(next_logits, vocabulary, tokenizer, info["max_length"])
    file = path if path.is_file() else path / "model.keras"
    model = keras.models.load_model(file, compile=False)
    return Generator.from_model(model, vocabulary, tokenizer, info["max_length"])
