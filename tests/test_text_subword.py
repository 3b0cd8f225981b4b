"""Subword text (a WordPiece vocabulary through tensorflow-text, inside the
model) and text columns in tables streamed from files, on small generated
texts."""

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
from kerastrain._keras import tf
from kerastrain.config import DataConfig
from kerastrain.data import table_stream
from kerastrain.data.prepare import prepare_data
from kerastrain.data.table_stream import TableStream
from kerastrain.data.text import OOV_ID, PAD_ID, tokenizer_layer
from kerastrain.export.predictors import load_predictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_text import _reviews  # noqa: E402

#: Forces streaming: every generated table is larger than this.
TINY_MB = 0.001


def _text_column(prepared):
    (column,) = [c for c in prepared.encoding.columns if c.kind == "text"]
    return column


# ------------------------------------------------------------------- the subword vocabulary


def test_the_subword_vocabulary_is_learned_on_the_training_rows_only():
    frame = _reviews(80)
    # Held out by the time split: a word and a letter no training row has.
    frame.loc[64:, "review"] = "zebra zebra zebra жук great"
    options = {"target": "label", "tokenizer": "subword", "split": "time"}
    options.update(validation_split=0.0, test_split=0.2)
    prepared = prepare_data(frame, DataConfig(vocabulary_size=200, **options), seed=0)
    assert prepared.splits.train.max() < 64
    column = _text_column(prepared)
    assert column.tokenizer == "subword"
    assert "great" in column.vocabulary and "movie" in column.vocabulary  # whole training words
    assert {"m", "##o"} <= set(column.vocabulary)  # letters, to spell words never seen
    pieces = "".join(column.vocabulary)
    assert "z" not in pieces and "ж" not in pieces  # not a piece of any held-out word
    assert len(column.lengths) == len(prepared.splits.train)
    small = _text_column(prepare_data(frame, DataConfig(vocabulary_size=40, **options), seed=0))
    assert len(small.vocabulary) + 2 <= 40  # vocabulary_size counts padding and OOV


def test_an_unseen_word_at_serving_maps_to_pieces_or_out_of_vocabulary_never_an_error():
    vocabulary = ["a", "e", "g", "r", "t", "##a", "##e", "##r", "##t", "great", "tea"]
    layer = tokenizer_layer(vocabulary, "subword", "tokenize")
    ids = layer(tf.constant(["Great TEA!", "zebra жук", "", "a tear"])).numpy()
    assert ids.dtype == np.int64
    # [PAD]=0, [UNK]=1, then the vocabulary: great=11, tea=12; "!" is no piece.
    assert ids[0].tolist()[:3] == [11, 12, OOV_ID]
    assert ids[1].tolist()[:2] == [OOV_ID, OOV_ID]  # unknown letters: one OOV id a word
    assert (ids[2] == PAD_ID).all()  # an empty row is all padding
    assert ids[3].tolist()[:3] == [2, 12, 9]  # "tear" spelled from pieces: tea ##r


def test_without_tensorflow_text_subword_is_a_config_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"tokenizer='subword'.*kerastrain\[text\]"):
        DataConfig(target="label", tokenizer="subword")
    # The layer's import guard says the same (the module is imported afresh).
    monkeypatch.delitem(sys.modules, "kerastrain.wordpiece", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'kerastrain\[text\]'"):
        tokenizer_layer(["a"], "subword", "tokenize")


# ----------------------------------------------------------------- artifacts on raw strings

FRESH_PROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import kerastrain.pipeline  # every stage, the table layers among them
    from kerastrain.export.predictors import TFLiteRunner, load_predictor
    loaded_early = "tensorflow_text" in sys.modules
    run, rows = sys.argv[1], json.loads(sys.argv[2])
    rows = {k: np.array(v, object if isinstance(v[0], str) else np.float32)
            for k, v in rows.items()}
    out = {"tensorflow_text_at_import": loaded_early}
    out["savedmodel"] = load_predictor(run + "/savedmodel")(rows).tolist()
    out["keras"] = load_predictor(run + "/model.keras")(rows).tolist()
    runner = TFLiteRunner(__import__("pathlib").Path(run + "/model.tflite"))
    out["tflite"] = runner(rows).tolist()
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.subprocess
def test_subword_artifacts_load_in_a_fresh_process_and_answer_raw_strings(tmp_path):
    result = kerastrain.fit_pipeline(
        _reviews(100),
        "transformer",
        seed=0,
        data_options={"target": "label", "tokenizer": "subword", "vocabulary_size": 60},
        model_options={"layers": 1, "heads": 2, "d_model": 8},
        train={
            "epochs": 1,
            "batch_size": 32,
            "verbose": 0,
            "early_stopping": None,
            "execution": {"mixed_precision": "float32", "jit_compile": False},
        },
        export={"formats": ["savedmodel", "keras", "tflite"], "latency_runs": 0},
        report={"explain": "none"},
        output_dir=str(tmp_path / "run"),
    )
    tokenizer = json.loads((result.run_dir / "tokenizer.json").read_text())["review"]
    assert tokenizer["kind"] == "wordpiece" and tokenizer["vocabulary"][:2] == ["[PAD]", "[UNK]"]
    rows = {  # unseen words and letters, punctuation, an empty row
        "review": ["a great, lovely plot!", "awful sad story of xyzzy жук", ""],
        "score": [0.1, -1.0, 2.0],
        "kind": ["x", "y", ""],
    }
    direct = result.model(
        {k: np.array(v, object if k != "score" else np.float32) for k, v in rows.items()},
        training=False,
    ).numpy()
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(result.run_dir), json.dumps(rows)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT")]
    out = json.loads(line[len("RESULT") :])
    assert out["tensorflow_text_at_import"] is False  # imported only where subword is used
    for artifact in ("savedmodel", "keras"):
        np.testing.assert_allclose(np.array(out[artifact]), direct, atol=1e-5)
    # TFLite runs on ids; its runner tokenizes the raw strings as the SavedModel does.
    np.testing.assert_allclose(np.array(out["tflite"]), np.array(out["savedmodel"]), atol=1e-5)


# ------------------------------------------------------------------------ streamed tables


def _with_ties(rows: int = 300) -> pd.DataFrame:
    """Reviews with an id, and words whose counts tie (each once per row of
    its kind), so the order of equal counts and the cut of a capped
    vocabulary are both exercised."""
    frame = _reviews(rows)
    frame["review"] = frame["review"] + np.where(
        np.arange(rows) % 2, " tie_b tie_a tie_c", " tie_a tie_b tie_d"
    )
    frame.insert(0, "id", np.arange(rows))
    return frame


@pytest.mark.parametrize("tokenizer", ["word", "character", "subword"])
def test_a_streamed_text_column_learns_the_in_memory_vocabulary(tmp_path, tokenizer):
    path = tmp_path / "reviews.csv"
    _with_ties().to_csv(path, index=False)
    options = {
        "target": "label",
        "split_key": "id",  # the same split in memory and streamed
        "columns": {"id": "drop"},
        "tokenizer": tokenizer,
        "vocabulary_size": 14,  # cuts inside tied counts
    }
    streamed = prepare_data(str(path), DataConfig(in_memory_mb=TINY_MB, **options), seed=0)
    memory = prepare_data(str(path), DataConfig(**options), seed=0)
    assert isinstance(streamed.x, TableStream) and isinstance(memory.x, dict)
    np.testing.assert_array_equal(streamed.splits.train, memory.splits.train)
    s, m = _text_column(streamed), _text_column(memory)
    assert streamed.table.columns["review"] == "text" and s.text
    assert s.vocabulary == [str(token) for token in m.vocabulary]
    assert len(s.vocabulary) + 2 <= 14 or tokenizer == "subword"
    assert sorted(s.lengths.tolist()) == sorted(m.lengths.tolist())  # every row: the sample


def test_a_capped_token_counter_keeps_the_most_frequent_tokens_and_says_so(
    tmp_path, monkeypatch, caplog
):
    path = tmp_path / "reviews.csv"
    _with_ties().to_csv(path, index=False)
    monkeypatch.setattr(table_stream, "TEXT_TOKEN_LIMIT", 3)  # pruned past 2 x 3 tokens
    options = {"target": "label", "split_key": "id", "columns": {"id": "drop"}}
    with caplog.at_level(logging.WARNING):
        streamed = prepare_data(
            str(path), DataConfig(in_memory_mb=TINY_MB, vocabulary_size=5, **options), seed=0
        )
    memory = prepare_data(str(path), DataConfig(vocabulary_size=5, **options), seed=0)
    assert "more than 10 distinct tokens in training" in caplog.text  # max(3, 2 x 5)
    # The frequent tokens (each in every row) survive the pruning.
    assert _text_column(streamed).vocabulary == [str(t) for t in _text_column(memory).vocabulary]


def test_text_columns_are_honoured_for_streamed_files(tmp_path):
    frame = pd.DataFrame({"tag": ["red fox", "blue whale"] * 200, "label": [0, 1] * 200})
    frame.to_csv(tmp_path / "tags.csv", index=False)
    options = DataConfig(target="label", text_columns=["tag"], in_memory_mb=TINY_MB)
    streamed = prepare_data(str(tmp_path / "tags.csv"), options, seed=0)
    assert isinstance(streamed.x, TableStream)
    assert streamed.table.columns == {"tag": "text"}  # detection alone says categorical
    assert set(_text_column(streamed).vocabulary) == {"red", "fox", "blue", "whale"}


@pytest.mark.slow
def test_a_streamed_csv_with_a_text_column_trains_and_its_savedmodel_takes_raw_strings(
    tmp_path,
):
    _reviews(300).to_csv(tmp_path / "reviews.csv", index=False)
    result = kerastrain.fit_pipeline(
        str(tmp_path / "reviews.csv"),
        "transformer",
        seed=0,
        data_options={"target": "label", "in_memory_mb": TINY_MB},
        model_options={"layers": 1, "heads": 2, "d_model": 16},
        train={
            "epochs": 4,
            "batch_size": 32,
            "verbose": 0,
            "early_stopping": None,
            "execution": {"mixed_precision": "float32", "jit_compile": False},
        },
        export={"formats": ["savedmodel"], "latency_runs": 0},
        report={"explain": "none"},
        output_dir=str(tmp_path / "run"),
    )
    assert result.metrics["test"]["accuracy"] >= 0.8
    rows = {
        "review": np.array(["a great lovely plot", "awful sad story of xyzzy", ""], object),
        "score": np.array([0.1, -1.0, 2.0], np.float32),
        "kind": np.array(["x", "y", ""], object),
    }
    served = load_predictor(result.artifacts["savedmodel"])(rows)
    np.testing.assert_allclose(served, result.model(rows, training=False).numpy(), atol=1e-5)
    assert served[0, 0] > 0.5 > served[1, 0]


def test_a_line_break_inside_a_streamed_csv_text_value_is_refused_with_its_row(tmp_path):
    # The streamed reader parses lines: the row would be cut in two.
    frame = _reviews(300)
    frame.loc[7, "review"] = 'great line one\nand line two, "quoted"'
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    options = DataConfig(target="label", in_memory_mb=TINY_MB)
    with pytest.raises(DataError, match=r"Column 'review' of the CSV file .* line break .*row 7"):
        prepare_data(str(tmp_path / "reviews.csv"), options, seed=0)
    # Read whole (in memory), the same file is fine.
    memory = prepare_data(str(tmp_path / "reviews.csv"), DataConfig(target="label"), seed=0)
    assert memory.x["review"][7] == frame["review"][7]
