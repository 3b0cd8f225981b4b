"""Language models (`model="transformer_lm"`): the corpus (three forms, the
split, the bad inputs), the causal decoder, perplexity and bits per byte,
seeded generation, the CLI's `generate`, and the exported artifacts, on tiny
corpora and tiny models."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from kerastrain import ConfigError, DataError
from kerastrain._keras import keras, tf
from kerastrain.cli import main
from kerastrain.config import DataConfig, load_config
from kerastrain.data.corpus import prepare_corpus, read_corpus, split_corpus, windows
from kerastrain.generation import Generator, load_generator
from kerastrain.pipeline import fit_pipeline
from kerastrain.training.language_model import (
    build_language_model,
    language_model_defaults,
    language_model_metrics,
    score_language_model,
)

SENTENCES = [
    "the cat sat on the mat and looked at the dog. ",
    "a dog ran to the park with a ball in its mouth. ",
    "birds sing in the morning when the sun comes up. ",
]
TINY = {"d_model": 16, "layers": 1, "heads": 2, "max_length": 8, "dropout": 0.0}
SPEC_LAYERS = [
    "token_embedding",
    "position_embedding",
    "block0_norm1",
    "block0_attention",
    "block0_mlp_in",
    "block0_mlp_out",
    "block0_norm2",
    "final_norm",
    "lm_head",
]


def _documents(count: int = 12) -> list[str]:
    return [f"document {i}: " + SENTENCES[i % 3] * (1 + i % 2) for i in range(count)]


def _tiny_model(vocabulary_size: int = 20, **options) -> keras.Model:
    return build_language_model(
        vocabulary_size,
        load_config(None).train,
        tf.distribute.get_strategy(),
        model_options={**TINY, **options},
        steps=1,
    )


# ------------------------------------------------------------------------- the corpus


def test_a_corpus_reads_from_a_txt_file_a_folder_of_them_and_a_list(tmp_path):
    (tmp_path / "one.txt").write_text("first document\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.txt").write_text("second one", encoding="utf-8")
    (tmp_path / "blank.txt").write_text("  \n", encoding="utf-8")
    assert read_corpus(tmp_path / "one.txt") == ["first document\n"]
    assert read_corpus(str(tmp_path)) == ["first document\n", "second one"]  # blank dropped
    assert read_corpus(["a b", "  ", "c"]) == ["a b", "c"]


def test_many_documents_split_by_document_with_no_text_shared_and_the_same_for_a_seed():
    documents = [f"doc{i} " + "x" * (10 + i) for i in range(20)]
    split = split_corpus(documents, 0.2, 0.2, seed=3)
    parts = {name: set(text.split("\n")) for name, text in split.items()}
    assert parts["train"] | parts["val"] | parts["test"] == set(documents)
    assert not parts["train"] & parts["val"] and not parts["train"] & parts["test"]
    assert not parts["val"] & parts["test"] and parts["val"] and parts["test"]
    assert split_corpus(documents, 0.2, 0.2, seed=3) == split
    assert split_corpus(documents, 0.2, 0.2, seed=4) != split


def test_one_document_splits_by_contiguous_chunks_in_order():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    split = split_corpus([text], 0.1, 0.2, seed=0)
    assert split["train"] + split["val"] + split["test"] == text
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (700, 100, 200)


def test_the_tokenizer_learns_on_the_training_split_only_and_maps_unseen_characters_to_oov():
    corpus = prepare_corpus(
        ["abc" * 50 + "xyz"], DataConfig(tokenizer="character", test_split=0.05), 0, 8
    )
    assert set(corpus.vocabulary) == {"a", "b", "c"}  # x, y, z are only in the test text
    assert corpus.text["test"].endswith("xyz") and list(corpus.ids["test"][-3:]) == [1, 1, 1]


def test_windows_cover_every_held_out_token_but_the_first_once():
    ids = np.arange(1, 22, dtype=np.int32)
    x, y, w = windows(ids, 8, held_out=True)
    assert x.shape == (3, 8) and w.sum() == len(ids) - 1
    assert sorted(y[w > 0].tolist()) == ids[1:].tolist()
    tx, ty, _ = windows(ids, 8)
    assert len(tx) == 2 and (tx[:, 1:] == ty[:, :-1]).all()


@pytest.mark.parametrize(
    "data, expected",
    [
        ([], "empty"),
        (["  ", "\n\t"], "empty"),
        (["fine", 3, None, "ok"], "indices 1, 2"),
        ([b"bytes"], "indices 0"),
    ],
)
def test_bad_corpora_are_refused_with_what_is_wrong(data, expected):
    with pytest.raises(DataError, match=expected):
        read_corpus(data)


def test_a_corpus_file_that_is_not_utf8_is_named_with_its_byte_offset(tmp_path):
    (tmp_path / "ok.txt").write_text("fine text", encoding="utf-8")
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt.*byte 3 \(0xe9\)"):
        read_corpus(tmp_path)


def test_a_corpus_too_short_for_one_window_is_refused_before_training(tmp_path):
    with pytest.raises(DataError, match=r"too short.*max_length \+ 1 = 65"):
        prepare_corpus(["short text"], DataConfig(tokenizer="character"), 0, 64)
    with pytest.raises(DataError, match="too short"):
        fit_pipeline(["short text"], "transformer_lm", output_dir=tmp_path / "run")


# ------------------------------------------------------------------------- the model


def test_the_decoder_is_causal_a_later_token_never_changes_earlier_logits():
    model = _tiny_model()
    ids = np.array([[3, 4, 5, 6, 7, 8, 9, 10]], np.int32)
    changed = ids.copy()
    changed[0, 5] = 15
    before, after = model(ids).numpy(), model(changed).numpy()
    np.testing.assert_allclose(before[0, :5], after[0, :5], atol=1e-6)
    assert np.abs(before[0, 5:] - after[0, 5:]).max() > 1e-4


def test_the_decoder_has_the_spec_layer_names_and_its_name():
    model = _tiny_model()
    names = [layer.name for layer in model.layers]
    assert model.name == "transformer_lm" and set(SPEC_LAYERS) <= set(names)
    assert isinstance(model.get_layer("block0_attention"), keras.layers.MultiHeadAttention)
    assert model.output_shape == (None, None, 20)


def test_a_bad_model_option_is_refused():
    with pytest.raises(ConfigError, match="heads"):
        _tiny_model(d_model=10, heads=3)


# ------------------------------------------------------------------------- metrics


def test_perplexity_and_bits_per_byte_from_their_sums_by_hand():
    # 4 tokens, 2 right, 4 * ln(8) nats over 6 bytes: 12 bits / 6 bytes.
    m = language_model_metrics(4 * math.log(8), 4, 2, 6)
    assert m["perplexity"] == pytest.approx(8.0)
    assert m["bits_per_byte"] == pytest.approx(2.0)
    assert m["loss"] == pytest.approx(math.log(8)) and m["accuracy"] == 0.5


def test_a_split_s_perplexity_is_exp_of_its_mean_loss_and_bits_count_its_bytes():
    corpus = prepare_corpus(
        ["héllo wörld, " * 40], DataConfig(tokenizer="character", test_split=0.2), 0, 8
    )
    model = _tiny_model(corpus.vocabulary_size)
    m = score_language_model(model, corpus, "test", 8)
    x, y, w = windows(corpus.ids["test"], 8, held_out=True)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    nats = float((loss(y, model(x)).numpy() * w).sum())
    assert m["tokens"] == len(corpus.ids["test"]) - 1
    assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    assert m["loss"] == pytest.approx(nats / m["tokens"], rel=1e-5)
    assert m["bytes"] == len(corpus.text["test"].encode("utf-8")) > len(corpus.text["test"])
    assert m["bits_per_byte"] == pytest.approx(nats / math.log(2) / m["bytes"], rel=1e-5)


def test_a_language_model_defaults_to_characters_and_warmup_cosine_unless_told():
    cfg = load_config(None, data=["x"], model="transformer_lm")
    chosen = language_model_defaults(cfg, {})
    assert chosen.data_options.tokenizer == "character"
    assert chosen.train.schedule == "cosine" and chosen.train.warmup.enabled
    given = {"train": {"schedule": "constant"}, "data_options": {"tokenizer": "word"}}
    kept = language_model_defaults(load_config(None, model="transformer_lm", **given), given)
    assert kept.data_options.tokenizer == "word" and kept.train.schedule == "constant"


def test_options_a_language_model_run_does_not_carry_out_are_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError, match="does not support compress"):
        fit_pipeline(
            _documents(),
            "transformer_lm",
            compress={"prune": {"target_sparsity": 0.5}},
            output_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()  # refused before the run folder
    with pytest.raises(ConfigError, match="tokenizer='subword'"):
        fit_pipeline(
            _documents(),
            "transformer_lm",
            data_options={"tokenizer": "subword"},
            output_dir=tmp_path / "run",
        )
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- generation


@pytest.fixture(scope="module")
def generator() -> Generator:
    keras.utils.set_random_seed(0)
    vocabulary = list("abcdefghijklmnopq ")
    return Generator.from_model(_tiny_model(len(vocabulary) + 2), vocabulary, "character", 8)


def test_generate_gives_the_same_text_for_a_seed_and_other_text_for_another(generator):
    first = generator.generate("abc", max_tokens=30, seed=1)
    assert first == generator.generate("abc", max_tokens=30, seed=1)
    assert first != generator.generate("abc", max_tokens=30, seed=2)
    assert first.startswith("abc") and len(first) == 33
    greedy = generator.generate("abc", max_tokens=10, temperature=0, seed=1)
    assert greedy == generator.generate("abc", max_tokens=10, temperature=0, seed=9)


def test_top_k_of_one_is_greedy(generator):
    assert generator.generate("ab", max_tokens=12, top_k=1, seed=5) == generator.generate(
        "ab", max_tokens=12, temperature=0
    )


def test_a_prompt_longer_than_the_context_keeps_its_last_tokens_with_a_warning(generator, caplog):
    long = "abcdefghijklmnop"
    with caplog.at_level(logging.WARNING, logger="kerastrain.generation"):
        text = generator.generate(long, max_tokens=5, temperature=0)
    assert "16 tokens, more than the model's context of 8" in caplog.text
    assert text == long + generator.generate(long[-8:], max_tokens=5, temperature=0)[8:]


def test_unknown_characters_are_oov_never_an_error_and_an_empty_prompt_is_refused(generator):
    assert generator.generate("xyz€", max_tokens=3, seed=0).startswith("xyz€")
    assert list(generator.encode("a€")) == [generator.vocabulary.index("a"), 1]
    with pytest.raises(DataError, match="no character token"):
        generator.generate("", max_tokens=3)
    with pytest.raises(ConfigError, match="temperature"):
        generator.generate("a", temperature=-1)


# ------------------------------------------------------------------------- one tiny run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    return fit_pipeline(
        _documents(),
        "transformer_lm",
        model_options=TINY,
        train={"epochs": 1, "batch_size": 16},
        output_dir=tmp_path_factory.mktemp("lm") / "run",
        seed=0,
    )


@pytest.mark.slow
def test_a_run_scores_its_held_out_splits_and_verifies_its_artifacts(run):
    for split in ("val", "test"):
        m = run.metrics[split]
        assert {"loss", "perplexity", "bits_per_byte", "accuracy"} <= set(m)
        assert m["perplexity"] == pytest.approx(math.exp(m["loss"]))
        assert "f1" not in m
    for name in ("keras", "savedmodel", "savedmodel_next_token", "tflite"):
        assert run.metrics[name]["parity"] is True
    assert run.config.train.schedule == "cosine"
    info = json.loads((run.run_dir / "model_info.json").read_text())
    assert info["task"] == "language_model" and info["max_length"] == 8
    assert json.loads((run.run_dir / "tokenizer.json").read_text())["text"]["split"] == "character"
    assert "Language model" in (run.run_dir / "report.html").read_text()


@pytest.mark.slow
def test_the_run_s_keras_file_and_savedmodel_answer_like_the_trained_model(run):
    ids = np.array([[5, 6, 7, 8, 9, 3]], np.int32)
    want = run.model(ids).numpy()
    loaded = keras.models.load_model(run.run_dir / "model.keras", compile=False)
    assert set(SPEC_LAYERS) <= {layer.name for layer in loaded.layers}
    np.testing.assert_allclose(loaded(ids).numpy(), want, atol=1e-5)
    saved = tf.saved_model.load(str(run.run_dir / "savedmodel"))
    got = saved.signatures["serving_default"](ids=tf.constant(ids))["logits"].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    as_keras = keras.models.load_model(run.run_dir / "savedmodel", compile=False)
    assert as_keras.name == "transformer_lm"
    assert set(SPEC_LAYERS) <= {layer.name for layer in as_keras.layers}
    np.testing.assert_allclose(as_keras(ids).numpy(), want, atol=1e-5)
    prompt = "the cat"
    expected = run.model(run.generator.encode(prompt)[np.newaxis]).numpy()[0, -1]
    strings = saved.signatures["next_token"](text=tf.constant([prompt, "a"]))["logits"].numpy()
    np.testing.assert_allclose(strings[0], expected, atol=1e-5)


@pytest.mark.slow
def test_result_generate_and_the_cli_give_the_same_text_for_a_seed(run, capsys):
    text = run.generate("the ", max_tokens=20, seed=7)
    assert text == run.generate("the ", max_tokens=20, seed=7)
    assert main(["generate", str(run.run_dir), "the ", "--max-tokens", "20", "--seed", "7"]) == 0
    assert capsys.readouterr().out == text + "\n"
    from_savedmodel = load_generator(run.run_dir / "savedmodel")
    assert from_savedmodel.generate("the ", max_tokens=20, seed=7) == text


def test_the_word_tokenizer_splits_on_words_and_generates_words():
    corpus = prepare_corpus(
        [" ".join(SENTENCES) * 20], DataConfig(tokenizer="word", test_split=0.1), 0, 8
    )
    assert "cat" in corpus.vocabulary and "cat." not in corpus.vocabulary
    vocabulary = corpus.vocabulary
    generator = Generator.from_model(_tiny_model(corpus.vocabulary_size), vocabulary, "word", 8)
    text = generator.generate("The Cat sat", max_tokens=4, seed=0)
    assert text.startswith("The Cat sat ") and len(text.split()) == 7
    assert all(word in vocabulary for word in text.split()[3:])


@pytest.mark.slow
def test_kerastrain_run_keeps_the_tokenizer_a_config_file_sets(tmp_path):
    # "word" equals DataConfig's default; a config object could not tell that the
    # file set it, and the language model's default ("character") replaced it.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(_documents()), encoding="utf-8")
    config = tmp_path / "lm.yaml"
    config.write_text(
        json.dumps(
            {
                "data": str(corpus),
                "model": "transformer_lm",
                "data_options": {"tokenizer": "word"},
                "model_options": TINY,
                "train": {"epochs": 1, "batch_size": 16},
                "export": {"formats": ["keras"]},
                "seed": 0,
            }
        ),
        encoding="utf-8",
    )
    assert main(["run", str(config), "--output-dir", str(tmp_path / "run")]) == 0
    info = json.loads((tmp_path / "run" / "model_info.json").read_text(encoding="utf-8"))
    assert info["tokenizer"] == "word"
