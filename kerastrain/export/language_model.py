"""A language model's artifacts and their parity check.

The run folder of `model="transformer_lm"` gets:

- `model.keras`: the tf_keras model from token ids ``(batch, length)``
  int32 (0 pads) to next-token logits ``(batch, length, vocabulary)``;
- `tokenizer.json`: the vocabulary (padding and out-of-vocabulary first)
  and the tokenizer's standardization and split, under the input ``"text"``
  (the format of `kerastrain.export.text`);
- `model_info.json`: ``"task": "language_model"``, the tokenizer, the
  vocabulary size and the context (`max_length`);
- `savedmodel/` (with `"savedmodel"` in `export.formats`): the tf_keras
  model saved as a SavedModel (`tf_keras.models.load_model` reloads it, with
  the tokenizer as one more layer, ``lm_tokenizer``); the signature
  ``serving_default`` takes ``ids`` and returns ``logits`` as the `.keras`
  model; the signature ``next_token`` takes raw strings ``text`` (batch,),
  tokenizes them inside the graph (the tokenizer is part of the SavedModel;
  unknown characters or words are the out-of-vocabulary id), keeps each
  row's last `max_length` tokens and returns ``logits``, the next-token
  logits after each string's last token ``(batch, vocabulary)``;
- `model.tflite` (with `"tflite"` in `export.formats`, float32): the network
  from token ids with TFLite's built-in ops (the string ops have none),
  `tokenizer.json` beside it. Its other modes are not written for a language
  model (logged).

`verify_language_model` checks each artifact's next-token logits against the
trained model's on held-out windows (and the string signature on held-out
prompts) within `export.atol` / `export.rtol`, and raises `ExportError` when
one does not match.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from kerastrain._keras import keras, tf
from kerastrain.config import ExportConfig
from kerastrain.errors import ExportError, message
from kerastrain.export.text import TOKENIZER_FILE
from kerastrain.export.writing import FILENAMES
from kerastrain.files import atomic_path, atomic_write, write_json

logger = logging.getLogger(__name__)

__all__ = ["export_language_model", "verify_language_model", "LM_TASK", "NEXT_TOKEN_SIGNATURE"]

#: `model_info.json`'s task of a language model.
LM_TASK = "language_model"
#: The SavedModel signature from raw strings to next-token logits.
NEXT_TOKEN_SIGNATURE = "next_token"
#: The name of the string signature's input (as in ``tokenizer.json``).
TEXT_COLUMN = "text"
#: Held-out windows the parity check runs.
PARITY_WINDOWS = 8


def _signatures(
    model: keras.Model, tokenizer: keras.layers.TextVectorization, length: int
) -> dict[str, Any]:
    """The SavedModel's signatures: ids to logits, raw strings to the logits
    after each string's last token (its last ``length`` tokens read)."""

    @tf.function(input_signature=[tf.TensorSpec((None, None), tf.int32, name="ids")])
    def ids(ids: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"logits": model(ids, training=False)}

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string, name=TEXT_COLUMN)])
    def next_token(text: tf.Tensor) -> dict[str, tf.Tensor]:
        tokens = tf.cast(tokenizer(text)[:, -length:], tf.int32)  # ragged: each row's own length
        lengths = tf.cast(tokens.row_lengths(), tf.int32)
        logits = model(tokens.to_tensor(default_value=0), training=False)
        last = tf.maximum(lengths - 1, 0)
        return {"logits": tf.gather(logits, last, axis=1, batch_dims=1)}

    return {
        "serving_default": ids.get_concrete_function(),
        NEXT_TOKEN_SIGNATURE: next_token.get_concrete_function(),
    }


def _tokenizer_json(tokenizer: keras.layers.TextVectorization, path: Path) -> None:
    config = tokenizer.get_config()
    write_json(
        path,
        {
            TEXT_COLUMN: {
                "vocabulary": [str(token) for token in tokenizer.get_vocabulary()],
                "standardize": config["standardize"],
                "split": config["split"],
                "padding_id": 0,
                "out_of_vocabulary_id": 1,
            }
        },
    )


def export_language_model(
    model: keras.Model,
    tokenizer: keras.layers.TextVectorization,
    max_length: int,
    run_dir: str | Path,
    config: ExportConfig,
) -> dict[str, Path]:
    """Writes a language model's artifacts (see the module's docstring).

    Args:
        model: The trained ids-to-logits model.
        tokenizer: The tokenizer (a `TextVectorization` layer with the
            learned vocabulary, padding and out-of-vocabulary first).
        max_length: The model's context.
        run_dir: The run folder.
        config: `formats` (`"savedmodel"`, `"tflite"`; `model.keras` is
            always written).

    Returns:
        Artifact name (`"keras"`, `"savedmodel"`, `"tflite"`) to path.
    """
    run_dir = Path(run_dir)
    artifacts: dict[str, Path] = {}
    with atomic_path(run_dir / FILENAMES["keras"]) as tmp:
        model.save(tmp)
    artifacts["keras"] = run_dir / FILENAMES["keras"]
    _tokenizer_json(tokenizer, run_dir / TOKENIZER_FILE)
    spec = tokenizer.get_config()
    vocabulary = [str(token) for token in tokenizer.get_vocabulary()[2:]]
    kind = "character" if spec["split"] == "character" else "word"
    write_json(
        run_dir / "model_info.json",
        {
            "version": 1,
            "task": LM_TASK,
            "tokenizer": kind,
            "vocabulary_size": len(vocabulary) + 2,
            "max_length": int(max_length),
            "inputs": [{"name": "ids", "dtype": "int32", "shape": [None]}],
            "outputs": {"logits": ["length", len(vocabulary) + 2]},
            "signatures": {
                "serving_default": "ids -> logits",
                NEXT_TOKEN_SIGNATURE: "text -> logits",
            },
        },
    )
    if "savedmodel" in config.formats or "tflite" in config.formats:
        ragged = keras.layers.TextVectorization(
            vocabulary=vocabulary,
            standardize=spec["standardize"],
            split=spec["split"],
            output_mode="int",
            ragged=True,
            name="tokenizer",
        )
        signatures = _signatures(model, ragged, max_length)
        final = run_dir / FILENAMES["savedmodel"]
        # The tokenizer rides on the model while it is saved, so that its
        # vocabulary table is saved with the string signature.
        model.lm_tokenizer = ragged
        try:
            with atomic_path(final) as tmp:
                model.save(tmp, save_format="tf", include_optimizer=False, signatures=signatures)
        finally:
            del model.lm_tokenizer
        if "savedmodel" in config.formats:
            artifacts["savedmodel"] = final
        if "tflite" in config.formats:
            modes = [m for m in config.tflite_modes if m != "float32"]
            if modes:
                logger.info(
                    "A language model's TFLite file is float32 only: %s not written.", modes
                )
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [signatures["serving_default"]], model
            )
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            atomic_write(run_dir / FILENAMES["tflite"], converter.convert())
            artifacts["tflite"] = run_dir / FILENAMES["tflite"]
    logger.info("Language model exported: %s.", {k: str(v) for k, v in artifacts.items()})
    return artifacts


def _tflite_logits(path: Path, x: np.ndarray) -> np.ndarray:
    interpreter = tf.lite.Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    (detail,) = interpreter.get_input_details()
    out = []
    for row in x:
        interpreter.resize_tensor_input(detail["index"], [1, len(row)])
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], row[np.newaxis].astype(np.int32))
        interpreter.invoke()
        out.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    return np.stack(out)


def _compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> dict:
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    agree = float(np.mean(np.argmax(got, -1) == np.argmax(want, -1))) if want.size else 1.0
    if not np.allclose(got, want, atol=atol, rtol=rtol):
        raise ExportError(
            message(
                f"The {name} artifact's next-token logits differ from the trained model's by up "
                f"to {diff:.3g}",
                received={"export.atol": atol, "export.rtol": rtol},
                allowed="Report it: the artifact does not answer like the model",
            )
        )
    return {"max_abs_diff": diff, "next_token_agreement": agree, "parity": True}


def verify_language_model(
    model: keras.Model,
    artifacts: dict[str, Path],
    x: np.ndarray,
    prompts: list[str],
    generator: Any,
    config: ExportConfig,
) -> dict[str, dict[str, Any]]:
    """Each artifact's next-token logits against the trained model's.

    Args:
        model: The trained model.
        artifacts: `export_language_model`'s artifacts.
        x: Held-out windows of token ids `(windows, length)` (the first
            `PARITY_WINDOWS` are run).
        prompts: Held-out texts for the SavedModel's string signature.
        generator: The trained model's `kerastrain.generation.Generator`
            (its tokenizer gives the expected ids of the prompts).
        config: `atol`, `rtol`.

    Returns:
        Artifact name to `max_abs_diff`, `next_token_agreement`, `parity`.

    Raises:
        ExportError: When an artifact's logits are not within tolerance.
    """
    x = np.asarray(x[:PARITY_WINDOWS], np.int32)
    want = model(x, training=False).numpy()
    checked: dict[str, dict[str, Any]] = {}
    for name, path in artifacts.items():
        if name == "keras":
            loaded = keras.models.load_model(path, compile=False)
            got = loaded(x, training=False).numpy()
        elif name == "savedmodel":
            loaded = tf.saved_model.load(str(path))
            got = loaded.signatures["serving_default"](ids=tf.constant(x))["logits"].numpy()
            checked[f"{name}_{NEXT_TOKEN_SIGNATURE}"] = _check_strings(
                loaded, prompts, generator, model, config
            )
        elif name == "tflite":
            got = _tflite_logits(path, x)
        else:
            continue
        checked[name] = _compare(name, got, want, config.atol, config.rtol)
        logger.info(
            "Verified %s: next-token logits within %.3g.", name, checked[name]["max_abs_diff"]
        )
    return checked


def _check_strings(
    loaded: Any, prompts: list[str], generator: Any, model: keras.Model, config: ExportConfig
) -> dict[str, Any]:
    """The string signature's logits against the model's on the same ids."""
    got = loaded.signatures[NEXT_TOKEN_SIGNATURE](text=tf.constant(prompts))["logits"].numpy()
    want = []
    for prompt in prompts:
        ids = generator.encode(prompt)[-generator.max_length :]
        want.append(model(ids[np.newaxis], training=False).numpy()[0, -1])
    return _compare(
        f"savedmodel {NEXT_TOKEN_SIGNATURE!r}", got, np.stack(want), config.atol, config.rtol
    )
