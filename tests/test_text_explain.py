"""Token attributions of a model that reads text: integrated gradients over
the token embeddings, their completeness, a planted keyword found, the run's
explanation stage and the report's shaded tokens."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain.config import DataConfig, ReportConfig
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.explain_text import TokenAttributions, token_attributions
from kerastrain.explanation import check_explainable, explain_run
from kerastrain.models import Head, build_model
from kerastrain.report import ReportInputs, write_report

FILLER = ["the", "a", "movie", "was", "plot", "and", "very", "it", "story", "of", "long", "day"]
KEYWORD = "zebra"


def _keyword_frame(rows: int = 160, seed: int = 0) -> pd.DataFrame:
    """Texts of seven words; the label is whether the keyword is among them
    (the lengths are equal, so that the length tells nothing)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(rows):
        words = list(rng.choice(FILLER, 7))
        if i % 2:
            words[int(rng.integers(0, 7))] = KEYWORD
        texts.append(" ".join(words))
        labels.append(i % 2)
    return pd.DataFrame({"text": texts, "label": labels})


def _model(prepared, **options):
    inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
    options = {"layers": 1, "heads": 2, "d_model": 16, "dropout": 0.0, **options}
    return build_model("transformer", inputs, Head(1, "sigmoid"), options)


@pytest.fixture(scope="module")
def untrained():
    """An untrained transformer (random weights: completeness holds for any model)."""
    from kerastrain._keras import keras

    keras.utils.set_random_seed(0)
    frame = _keyword_frame(60)
    prepared = prepare_data(frame, DataConfig(target="label", text_columns=["text"]), seed=0)
    return _model(prepared), prepared


@pytest.fixture(scope="module")
def keyword_model():
    """A transformer trained to key on the keyword (4 epochs: 5-12 s here)."""
    from kerastrain._keras import keras

    keras.utils.set_random_seed(0)
    prepared = prepare_data(
        _keyword_frame(), DataConfig(target="label", text_columns=["text"]), seed=0
    )
    model = _model(prepared)
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    x, y = prepared.part("train")
    model.fit({"text": x["text"].astype(str)}, y, epochs=4, batch_size=32, verbose=0)
    return model, prepared


def test_token_attributions_sum_to_the_change_in_the_score(untrained):
    model, prepared = untrained
    x, y = prepared.part("test")
    coarse, fine = (
        token_attributions(model, x, y, prepared.task, texts=2, steps=steps, seed=1)[0]
        for steps in (4, 128)
    )
    change = fine.scores - fine.baseline_scores
    assert np.all(np.abs(change) > 1e-3)  # a real change to account for
    sums = np.array([a.sum() for a in fine.attributions])
    np.testing.assert_allclose(sums, change, rtol=0.02, atol=1e-4)
    np.testing.assert_allclose(fine.delta, sums - change, atol=1e-6)
    # More steps: a closer integral.
    assert np.max(np.abs(fine.delta)) < np.max(np.abs(coarse.delta))


@pytest.mark.slow
def test_the_planted_keyword_gets_the_largest_attribution(keyword_model):
    model, prepared = keyword_model
    x, y = prepared.part("test")
    result = kerastrain.explain(
        model, (x, y), "integrated_gradients", examples=len(y), steps=32, seed=0
    )
    assert isinstance(result, TokenAttributions) and result.column == "text"
    keyed = [
        i for i, toks in enumerate(result.tokens) if KEYWORD in toks and result.predicted[i] == 1
    ]
    assert len(keyed) >= 5
    for i in keyed:
        tokens, values = result.tokens[i], result.attributions[i]
        assert len(tokens) == len(values) == len(result.texts[i].split())
        assert tokens[int(np.argmax(values))] == KEYWORD
    # Tokens are the vocabulary's strings, in the text's order.
    first = result.texts[0].lower().split()
    assert result.tokens[0] == first


def test_a_word_outside_the_vocabulary_is_attributed_as_the_unknown_token(untrained):
    model, prepared = untrained
    rows = {"text": np.array(["the qwertyuiop zebra movie"], object)}
    (result,) = token_attributions(model, rows, np.array([1]), prepared.task, steps=8)
    assert result.tokens[0] == ["the", "[UNK]", "zebra", "movie"]


def test_saliency_and_an_unknown_baseline_are_refused_for_text(untrained):
    model, prepared = untrained
    x, y = prepared.part("test")
    with pytest.raises(ConfigError, match="'integrated_gradients' or 'permutation'"):
        kerastrain.explain(model, (x, y), "saliency")
    with pytest.raises(ConfigError, match="'zero' or 'padding'"):
        kerastrain.explain(model, (x, y), "integrated_gradients", baseline="black")
    with pytest.raises(ConfigError, match="report.explain.*'integrated_gradients'"):
        check_explainable("saliency", prepared)


def test_the_run_explains_a_text_model_by_its_tokens(untrained, tmp_path):
    model, prepared = untrained
    config = ReportConfig(explain_texts=2, explain_steps=16)
    (result,) = explain_run(model, prepared, config, seed=0)
    assert isinstance(result, TokenAttributions)
    assert len(result.indices) == 2 and set(result.indices) <= set(prepared.splits.test)
    for row, text in zip(result.indices, result.texts):
        assert prepared.x["text"][row] == text  # rows named as the data numbers them
    assert result.plot(tmp_path / "tokens.png").stat().st_size > 1000  # the API's figure
    permuted = explain_run(model, prepared, ReportConfig(explain="permutation"), seed=0)
    assert [e.method for e in permuted] == ["permutation"]


def _attributions(tokens: list[str], values: list[float]) -> TokenAttributions:
    return TokenAttributions(
        column="body",
        indices=np.array([7]),
        texts=[" ".join(tokens)],
        tokens=[tokens],
        attributions=[np.array(values)],
        scores=np.array([0.9]),
        baseline_scores=np.array([0.4]),
        delta=np.array([0.0]),
        labels=np.array([1]),
        predicted=np.array([1]),
        class_names=["no", "yes"],
        steps=16,
    )


def test_the_report_shades_each_token_and_escapes_the_text(tmp_path):
    hostile = "<script>alert(1)</script>"
    explanation = _attributions(["fine", hostile, "dull"], [0.4, 0.1, -0.2])
    page = write_report(
        ReportInputs(tmp_path, name="run", explanations=[explanation], model_card=False)
    ).read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Red for the largest positive token at full shade, blue for the negative one.
    assert (
        'rgba(192,57,43,0.85);color:#fff;padding:1px 2px;border-radius:3px" title="0.4">fine'
        in (page)
    )
    assert (
        'rgba(41,98,185,0.42);color:inherit;padding:1px 2px;border-radius:3px" title="-0.2">dull'
        in (page)
    )
    assert "toward the score" in page and "away from it" in page  # the legend
    assert "Token attributions (body)" in page
    assert not list(tmp_path.glob("explanation_*.png"))  # drawn as HTML, no figure


@pytest.mark.slow
def test_a_text_runs_report_draws_token_attributions(tmp_path):
    frame = _keyword_frame(120)
    frame.loc[frame.index[-5:], "text"] = "<b>bold</b> zebra <script>x</script> the"
    result = kerastrain.fit_pipeline(
        frame,
        "transformer",
        seed=0,
        data_options={"target": "label", "text_columns": ["text"], "tokenizer": "character"},
        model_options={"layers": 1, "heads": 2, "d_model": 8, "dropout": 0.0},
        train={"epochs": 2, "batch_size": 32, "verbose": 0, "early_stopping": None},
        export={"formats": []},
        report={"explain_texts": 3, "explain_steps": 8},
        output_dir=str(tmp_path / "run"),
    )
    page = result.report_path.read_text()
    assert "Token attributions (text)" in page
    assert page.count('class="token-attribution"') == 3
    assert "<script>x" not in page and "<b>bold" not in page


def test_explain_takes_a_tables_columns(untrained):
    # Regression: explain() sliced a table's dict of columns as an array
    # (x[:1]) and failed with a TypeError before explaining anything.
    model, prepared = untrained
    x, y = prepared.part("test")
    result = kerastrain.explain(model, (x, y), "permutation", repeats=2)
    assert result.feature_names == ["text"] and result.importances.shape == (1, 2)


def test_a_tables_other_columns_are_held_fixed_and_permuted_beside_the_tokens():
    """A mixed table: the run permutes the columns and explains the tokens; a
    multi-class softmax and the other inputs pass through the split model."""
    from kerastrain.task import Task

    rng = np.random.default_rng(0)
    frame = _keyword_frame(60).assign(
        stars=rng.normal(size=60), kind=rng.choice(["x", "y"], 60), label=np.arange(60) % 3
    )
    prepared = prepare_data(frame, DataConfig(target="label", text_columns=["text"]), seed=0)
    inputs = model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)
    options = {"layers": 1, "heads": 2, "d_model": 8, "dropout": 0.0}
    model = build_model("transformer", inputs, Head(3, "softmax"), options)
    permuted, tokens = explain_run(
        model, prepared, ReportConfig(explain_texts=2, explain_steps=64, permutation_repeats=2)
    )
    assert permuted.method == "permutation" and set(permuted.feature_names) >= {"stars", "kind"}
    assert tokens.class_names == ["0", "1", "2"] and len(tokens.indices) == 2
    change = tokens.scores - tokens.baseline_scores
    sums = np.array([a.sum() for a in tokens.attributions])
    np.testing.assert_allclose(sums, change, rtol=0.02, atol=1e-5)
    # Regression: the prediction itself is explained, just as completely.
    reg = build_model("transformer", inputs, Head(1, "linear"), options)
    x, y = prepared.part("test")
    (result,) = token_attributions(reg, x, y.astype(float), Task("regression", 1), texts=2)
    assert result.class_names == []
    np.testing.assert_allclose(
        [a.sum() for a in result.attributions],
        result.scores - result.baseline_scores,
        rtol=0.02,
        atol=1e-5,
    )
