"""Text inputs and the Transformer: text columns (detected or named) beside
numbers, folders of .txt files, the tokenizer learned on train and kept in
the model, the encoder, the exported artifacts on raw strings, and the bad
inputs, on small generated texts."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import ConfigError, DataError
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig, TrainConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.export.predictors import TFLiteRunner
from kerastrain.models import Head, build_model
from kerastrain.training.execution import DeviceInfo, configure_execution, pick_jit
from kerastrain.training.flops import flops_per_token

POSITIVE = ["great", "lovely", "excellent", "fine", "happy"]
NEGATIVE = ["awful", "bad", "terrible", "sad", "poor"]
FILLER = ["the", "a", "movie", "was", "plot", "and", "very", "it", "story", "of"]


def _reviews(rows: int = 120, seed: int = 0, words: int = 6) -> pd.DataFrame:
    """Reviews whose label is the sentiment of the two words mixed into
    filler, a numeric column of noise and a categorical column."""
    rng = np.random.default_rng(seed)
    data = []
    for i in range(rows):
        label = i % 2
        tokens = [*rng.choice(FILLER, words), *rng.choice(POSITIVE if label else NEGATIVE, 2)]
        rng.shuffle(tokens)
        data.append((" ".join(tokens), float(rng.normal()), ["x", "y"][i % 3 == 0], label))
    return pd.DataFrame(data, columns=["review", "score", "kind", "label"])


def _prepared(frame: pd.DataFrame, **options) -> kerastrain.data.prepare.Prepared:
    return prepare_data(frame, DataConfig(target="label", **options), seed=0)


# ------------------------------------------------------------------------- reading text


def test_a_string_column_of_free_text_is_detected_beside_numbers_and_categories():
    prepared = _prepared(_reviews())
    assert prepared.table.columns == {
        "review": "text",
        "score": "numeric",
        "kind": "categorical",
    }
    assert prepared.summary()["columns"]["review"].startswith("text, word tokens")


def test_a_csv_text_column_with_commas_and_quotes_reads_as_text(tmp_path):
    frame = _reviews(40)
    frame["review"] = frame["review"].str.replace(" ", ", ", n=1) + ' "quoted"'
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    prepared = prepare_data(str(tmp_path / "reviews.csv"), DataConfig(target="label"), seed=0)
    assert prepared.table.columns["review"] == "text"
    assert prepared.x["review"][0] == frame["review"][0]


def test_text_columns_are_named_when_detection_would_say_categories():
    frame = pd.DataFrame({"tag": ["red fox", "blue whale"] * 20, "label": [0, 1] * 20})
    assert _prepared(frame).table.columns == {"tag": "categorical"}  # few distinct values
    assert _prepared(frame, text_columns=["tag"]).table.columns == {"tag": "text"}
    assert _prepared(frame, columns={"tag": "text"}).table.columns == {"tag": "text"}


def test_the_vocabulary_is_learned_on_the_training_rows_only():
    frame = _reviews(60)
    frame.loc[50:, "review"] = "zebra " * 3 + "unicorn"  # held out by the time split
    prepared = _prepared(frame, split="time", validation_split=0.0, test_split=0.2)
    assert prepared.splits.train.max() < 50
    (column,) = [c for c in prepared.encoding.columns if c.kind == "text"]
    assert "zebra" not in column.vocabulary and "great" in column.vocabulary
    assert len(column.lengths) == len(prepared.splits.train)
    assert column.lengths.tolist() == [8] * len(prepared.splits.train)


def test_the_character_tokenizer_keeps_case_and_punctuation_as_tokens():
    frame = pd.DataFrame({"s": ["Ab, c!", "bA c", "x y z."] * 8, "label": [0, 1, 0] * 8})
    prepared = _prepared(frame, text_columns=["s"], tokenizer="character")
    (column,) = prepared.encoding.columns
    assert {"A", "b", ",", "!", " "} <= set(column.vocabulary)
    expected = [len(frame["s"][i]) for i in prepared.splits.train]  # one token per character
    assert column.lengths.tolist() == expected


def test_a_folder_of_text_files_reads_as_a_text_column_with_its_classes(tmp_path):
    for label, words in (("neg", NEGATIVE), ("pos", POSITIVE)):
        (tmp_path / label).mkdir()
        for i in range(12):
            (tmp_path / label / f"{i}.txt").write_text(f"the film was {words[i % 5]} é", "utf-8")
    prepared = prepare_data(str(tmp_path), DataConfig(), seed=0)
    assert prepared.table.columns == {"text": "text"}
    assert list(prepared.task.class_names) == ["neg", "pos"]
    assert prepared.x["text"][0] == "the film was awful é"
    assert prepared.y.tolist() == [0] * 12 + [1] * 12


def test_an_image_folder_with_a_stray_text_file_stays_an_image_folder(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(10):
            pixels = np.full((8, 8), 12 * i + (100 if label == "b" else 0), np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    (tmp_path / "a" / "notes.txt").write_text("collected by hand", "utf-8")
    prepared = prepare_data(str(tmp_path), DataConfig(), seed=0)
    assert prepared.table is None and prepared.x.shape[1:3] == (8, 8)


# ----------------------------------------------------------------------------- bad text


def test_a_blank_text_column_is_refused_by_name():
    frame = pd.DataFrame({"body": ["  ", "\t", " "] * 10, "label": [0, 1, 0] * 10})
    with pytest.raises(DataError, match=r"Text column 'body' of DataFrame .* is blank"):
        _prepared(frame, text_columns=["body"])


def test_non_strings_in_a_text_column_are_refused_with_their_rows():
    frame = _reviews(30)
    frame["review"] = frame["review"].astype(object)
    frame.loc[4, "review"] = 17
    frame.loc[9, "review"] = b"bytes"
    with pytest.raises(DataError, match=r"'review'.*rows 4, 9 .* hold values that are not strings"):
        _prepared(frame, text_columns=["review"])


def test_a_text_file_that_is_not_utf8_is_named_with_its_byte_offset(tmp_path):
    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "ok.txt").write_text("fine words here", "utf-8")
    bad = tmp_path / "b" / "latin.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt' is not UTF-8: byte 3 \(0xe9\)"):
        prepare_data(str(tmp_path), DataConfig(), seed=0)


def test_a_named_text_column_that_is_absent_is_refused_with_a_suggestion():
    with pytest.raises(DataError, match=r"names 'reveiw'.*review"):
        _prepared(_reviews(20), text_columns=["reveiw"])


def test_a_text_column_declared_otherwise_is_a_config_error():
    with pytest.raises(ConfigError, match="text_columns"):
        DataConfig(target="label", text_columns=["review"], columns={"review": "categorical"})


def test_a_model_that_cannot_read_text_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"model='mlp' cannot read the text column\(s\)"):
        kerastrain.fit_pipeline(
            _reviews(40),
            "mlp",
            data_options={"target": "label"},
            output_dir=str(tmp_path / "run"),
            train={"epochs": 1, "verbose": 0},
        )


def test_int8_tflite_of_a_text_model_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="cannot calibrate a model that reads the text"):
        kerastrain.fit_pipeline(
            _reviews(40),
            "transformer",
            data_options={"target": "label"},
            export={"formats": ["tflite"], "tflite": "int8"},
            output_dir=str(tmp_path / "run"),
            train={"epochs": 1, "verbose": 0},
        )
    assert not (tmp_path / "run" / "backup").exists()


# -------------------------------------------------------------------------- the encoder


def _encoder(prepared, **options) -> keras.Model:
    inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
    return build_model("transformer", inputs, Head(1, "sigmoid"), options)


def test_bad_transformer_options_are_config_errors():
    prepared = _prepared(_reviews(30))
    with pytest.raises(ConfigError, match=r"model_options.d_model.*multiple of.*heads=3"):
        _encoder(prepared, d_model=16, heads=3)
    with pytest.raises(ConfigError, match="model_options.layers"):
        _encoder(prepared, layers=0)
    with pytest.raises(ConfigError, match="Unknown option 'model_options.width'"):
        _encoder(prepared, width=3)


def test_padding_and_batch_company_do_not_change_a_rows_answer():
    prepared = _prepared(_reviews(60))
    model = _encoder(prepared, layers=2, heads=2, d_model=16)
    alone = {"review": np.array(["great movie"]), "score": np.zeros(1, np.float32)}
    alone["kind"] = np.array(["x"], object)
    padded = {
        "review": np.array(["great movie", "the plot was very sad and the story of it awful"]),
        "score": np.zeros(2, np.float32),
        "kind": np.array(["x", "x"], object),
    }
    np.testing.assert_allclose(
        model(alone, training=False).numpy()[0], model(padded, training=False).numpy()[0], atol=1e-6
    )


def test_max_length_truncates_and_logs_how_many_training_rows_it_cut(caplog):
    frame = _reviews(60)
    frame.loc[::4, "review"] = frame.loc[::4, "review"] + " and it was long" * 5
    prepared = _prepared(frame)
    cut = int((prepared.encoding.columns[0].lengths > 10).sum())
    assert cut > 0
    with caplog.at_level(logging.INFO):
        model = _encoder(prepared, layers=1, heads=2, d_model=8, max_length=10)
    assert f"max_length=10 truncates {cut} of the {len(prepared.splits.train)}" in caplog.text
    # Only the first 10 tokens count: words after them change nothing.
    row = {"score": np.zeros(1, np.float32), "kind": np.array(["x"], object)}
    ten = "great " + "the " * 9
    a = model({**row, "review": np.array([ten])}, training=False).numpy()
    b = model({**row, "review": np.array([ten + "awful awful"])}, training=False).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_an_unknown_word_maps_to_out_of_vocabulary_not_an_error():
    prepared = _prepared(_reviews(40))
    model = _encoder(prepared, layers=1, heads=2, d_model=8)
    tokenize = model.get_layer("tokenize_review")
    assert tokenize(tf.constant(["great qwertyuiop"])).numpy()[0, 1] == 1  # the OOV id
    row = {"score": np.zeros(1, np.float32), "kind": np.array(["x"], object)}
    a = model({**row, "review": np.array(["great qwertyuiop"])}, training=False).numpy()
    b = model({**row, "review": np.array(["great zzzzzzzz"])}, training=False).numpy()
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_the_transformer_reads_numeric_sequences():
    x = np.random.default_rng(0).normal(size=(40, 12, 3)).astype(np.float32)
    y = (x[:, :, 0].mean(axis=1) > 0).astype(np.int64)
    prepared = prepare_data((x, y), DataConfig(), seed=0)
    inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
    model = build_model("transformer", inputs, Head(1, "sigmoid"), {"d_model": 8, "heads": 2})
    assert model.predict(x[:5], verbose=0).shape == (5, 1)
    assert model.get_layer("block1_attention") is not None


def test_flops_per_token_counts_attention_and_the_mlp():
    prepared = _prepared(_reviews(40))
    d, ff, length, blocks = 16, 24, 10, 2
    model = _encoder(prepared, layers=blocks, heads=2, d_model=d, ff=ff, max_length=length)
    per_block = 2 * (4 * d * d + 2 * length * d + 2 * d * ff)  # projections, QK^T and AV, MLP
    head = 2 * (d + 1 + 3)  # the output over the pooled vector, score, kind one-hot (x, y, OOV)
    assert flops_per_token(model) == pytest.approx(blocks * per_block + head / length)
    assert flops_per_token(model, 20) > flops_per_token(model, 10)  # attention grows with length


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_transformers_keras_file_loads_in_a_fresh_process_for_evaluate(tmp_path):
    frame = _reviews(40)
    model = _encoder(_prepared(frame), layers=1, heads=2, d_model=8)
    model.save(tmp_path / "model.keras")
    frame.to_csv(tmp_path / "rows.csv", index=False)
    script = (
        "import kerastrain, sys; "
        "m = kerastrain.evaluate(sys.argv[1], sys.argv[2], target='label'); "
        "print('examples', m['examples'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "model.keras"), str(tmp_path / "rows.csv")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "examples 40" in done.stdout


def test_jit_auto_on_a_model_that_takes_strings_is_off_instead_of_crashing():
    # XLA has no string kernels: the probe of a long run raised InvalidArgumentError.
    prepared = _prepared(_reviews(64))
    model = _encoder(prepared, layers=1, heads=2, d_model=8)
    model.compile("adam", "binary_crossentropy")
    x, y = prepared.part("train")
    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype(np.float32)[:, None])).batch(16)
    decisions = configure_execution(model, dataset, TrainConfig(), [], epochs=10**7)
    assert decisions["jit_compile"].value is False
    assert "takes strings" in decisions["jit_compile"].reason

    def failing_probe():
        raise tf.errors.InvalidArgumentError(None, None, "Detected unsupported operations\nmore")

    decision = pick_jit(DeviceInfo("cpu"), run_seconds=600, probe=failing_probe)
    assert decision.value is False
    assert "XLA could not compile the step (InvalidArgumentError: Detected" in decision.reason


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_a_table_with_text_trains_and_every_artifact_answers_raw_strings(tmp_path):
    frame = _reviews(200)
    result = kerastrain.fit_pipeline(
        frame,
        "auto",
        seed=0,
        data_options={"target": "label"},
        model_options={"layers": 1, "heads": 2, "d_model": 16},
        train={
            "epochs": 6,
            "batch_size": 32,
            "verbose": 0,
            "early_stopping": None,
            "execution": {"mixed_precision": "float32", "jit_compile": False},
        },
        export={"formats": ["savedmodel", "tflite"], "latency_runs": 0},
        report={"explain": "none"},
        output_dir=str(tmp_path / "run"),
    )
    assert result.model.name == "transformer"  # auto chose it for the text column
    report = result.report_path.read_text()
    assert "Text model" in report and "forward FLOPs per token at" in report
    assert "real (non-padding) tokens per second" in report
    assert result.metrics["test"]["accuracy"] >= 0.9
    for artifact in ("savedmodel", "tflite"):  # the verify stage's parity
        assert result.metrics[artifact]["max_abs_diff"] < 1e-4
    # The SavedModel, loaded as a server would, takes raw strings (words never
    # seen included) and answers like the trained model.
    rows = {
        "review": np.array(["a great lovely plot", "awful sad story of xyzzy", ""], object),
        "score": np.array([0.1, -1.0, 2.0], np.float32),
        "kind": np.array(["x", "y", ""], object),
    }
    serve = tf.saved_model.load(str(result.artifacts["savedmodel"])).signatures["serving_default"]
    served = serve(**{k: tf.constant(v.astype(str) if v.dtype == object else v)
                      for k, v in rows.items()})["output"].numpy()  # fmt: skip
    direct = result.model(rows, training=False).numpy()
    np.testing.assert_allclose(served, direct, atol=1e-5)
    assert served[0, 0] > 0.5 > served[1, 0]
    # TFLite takes token ids; tokenizer.json beside it gives the vocabulary.
    tokenizer = json.loads((result.run_dir / "tokenizer.json").read_text())
    assert tokenizer["review"]["vocabulary"][:2] == ["", "[UNK]"]
    runner = TFLiteRunner(result.artifacts["tflite"])
    assert runner.feed(rows)["review"].dtype == np.int64
    np.testing.assert_allclose(runner(rows), direct, atol=1e-5)


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from test_text import _reviews
    from kerastrain.pipeline import fit_pipeline

    common = dict(data=_reviews(120), model="transformer", seed=3, export={"formats": []},
                  model_options={"layers": 1, "heads": 2, "d_model": 8, "dropout": 0.0},
                  data_options={"target": "label", "validation_split": 0.2, "test_split": 0.2},
                  report={"explain": "none"})
    train = {"epochs": 1, "optimizer": "sgd", "learning_rate": 0.1, "early_stopping": None,
             "verbose": 0, "execution": {"mixed_precision": "float32", "jit_compile": False,
                                         "steps_per_execution": 1}}
    # 72 training rows: 3 steps of 24 examples either way.
    single = fit_pipeline(**common, strategy="cpu", train={**train, "batch_size": 24},
                          output_dir=sys.argv[1] + "/single")
    mirrored = fit_pipeline(**common, strategy="mirrored", train={**train, "batch_size": 12},
                            output_dir=sys.argv[1] + "/mirrored")
    diffs = [float(np.max(np.abs(a - b))) for a, b in
             zip(single.model.get_weights(), mirrored.model.get_weights())]
    print(json.dumps({"single": single.history["loss"][0],
                      "mirrored": mirrored.history["loss"][0],
                      "replicas": mirrored.model.distribute_strategy.num_replicas_in_sync,
                      "max_weight_diff": max(diffs)}))
""")


@pytest.mark.slow
@pytest.mark.subprocess
def test_mirrored_over_two_cpus_trains_the_transformer_like_one_device(tmp_path):
    tests = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path), str(tests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads(done.stdout.strip().splitlines()[-1])
    assert run["replicas"] == 2
    assert run["mirrored"] == pytest.approx(run["single"], abs=1e-5)  # the first epoch's loss
    assert run["max_weight_diff"] < 1e-5
