"""Pretrain, then fine-tune: a kerastrain text model (a `transformer`
classifier, or a `transformer_lm`) as the backbone of `model="transfer"`,
its two phases, LoRA adapters, their merge at export, and the bad inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import kerastrain
from kerastrain import ConfigError
from kerastrain._keras import keras, tf
from kerastrain.config import DataConfig
from kerastrain.data.layers import LayerNorm, PaddingMask, PositionEmbedding, TokenEmbedding
from kerastrain.data.prepare import prepare_data
from kerastrain.data.preprocess import model_inputs
from kerastrain.models import Head, build_model, fine_tune_plan
from kerastrain.models.lora import adapter_layers, merge_lora
from kerastrain.models.text_backbone import LORA_TARGETS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_text import _reviews  # noqa: E402

TRAIN = {
    "epochs": 1,
    "batch_size": 32,
    "verbose": 0,
    "early_stopping": None,
    "execution": {"mixed_precision": "float32", "jit_compile": False},
}
ROWS = np.array(["a great lovely plot", "awful sad story of xyzzy", "", "the movie"], object)


@pytest.fixture(scope="module")
def backbone_run(tmp_path_factory) -> Path:
    """A folder laid out like a run folder (model.keras) holding a tiny
    kerastrain `transformer` classifier of the reviews (untrained: its
    weights are seeded random values, which a copy must reproduce)."""
    folder = tmp_path_factory.mktemp("backbone") / "run"
    folder.mkdir()
    keras.utils.set_random_seed(1)
    model = build_model(
        "transformer",
        _inputs(_reviews(160)[["review", "label"]]),
        Head(1, "sigmoid"),
        {"layers": 1, "heads": 2, "d_model": 16, "max_length": 12},
    )
    model.save(folder / "model.keras")
    return folder


_PREPARED: dict = {}


def _inputs(frame):
    """The model inputs of ``frame`` (target "label"), its data prepared once."""
    key = tuple(frame.columns), len(frame), frame.iloc[0, 0]
    if key not in _PREPARED:
        _PREPARED[key] = prepare_data(frame, DataConfig(target="label"), seed=0)
    prepared = _PREPARED[key]
    return model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding)


def _frame(rows: int = 96):
    """Reviews with a second vocabulary (other filler words) and a target."""
    frame = _reviews(rows, seed=1)[["review", "label"]]
    frame["review"] = frame["review"] + " indeed"
    return frame


def _build(options: dict, frame=None, head: Head | None = None) -> keras.Model:
    return build_model(
        "transfer",
        _inputs(_frame() if frame is None else frame),
        head or Head(1, "sigmoid"),
        options,
    )


def _loaded(path: Path) -> keras.Model:
    return keras.models.load_model(path, compile=False)


# ------------------------------------------------------------------------- the backbone


def test_the_model_takes_the_backbones_tokenizer_and_starts_from_its_weights(backbone_run):
    original = _loaded(backbone_run / "model.keras")
    model = _build({"backbone": str(backbone_run)})  # the run folder
    ours, theirs = model.get_layer("tokenize_review"), original.get_layer("tokenize_review")
    assert ours.get_vocabulary() == theirs.get_vocabulary()  # not the new data's
    assert "indeed" not in ours.get_vocabulary()
    names = [layer.name for layer in original.layers if layer.weights and layer.name != "output"]
    assert "block0_attention" in names and "final_norm" in names
    for name in names:
        for got, expected in zip(model.get_layer(name).weights, original.get_layer(name).weights):
            np.testing.assert_array_equal(got.numpy(), expected.numpy())
    # The rebuilt encoder computes what the backbone computed: the same pooled vectors.
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)
    before = keras.Model(original.inputs, original.get_layer("pool").output)
    np.testing.assert_allclose(
        pooled({"review": ROWS}).numpy(), before({"review": ROWS}).numpy(), atol=1e-6
    )
    # Phase 1: the backbone is frozen, the head trains.
    assert {w.name.split("/")[0] for w in model.trainable_weights} == {"output"}
    plan = fine_tune_plan("transfer", {"fine_tune_layers": 4})
    assert plan is not None and plan.layers == 4


@pytest.mark.slow
def test_a_savedmodel_backbone_builds_the_same_model(backbone_run, tmp_path):
    reference = _loaded(backbone_run / "model.keras")
    reference.save(tmp_path / "savedmodel" / "1", save_format="tf")
    for path in (tmp_path / "savedmodel" / "1", tmp_path):  # the folder, or the run's
        model = _build({"backbone": str(path), "dropout": 0.0})
        np.testing.assert_array_equal(
            model.get_layer("block0_mlp_in").kernel.numpy(),
            reference.get_layer("block0_mlp_in").kernel.numpy(),
        )
        assert model.get_layer("tokenize_review").vocabulary_size() == 22


@pytest.mark.slow
def test_a_subword_backbone_brings_its_wordpiece_tokenizer(tmp_path):
    frame = _reviews(160)[["review", "label"]]
    prepared = prepare_data(frame, DataConfig(target="label", tokenizer="subword"), seed=0)
    original = build_model(
        "transformer",
        model_inputs(prepared.feature_shape, prepared.standardizer, prepared.encoding),
        Head(1, "sigmoid"),
        {"layers": 1, "heads": 2, "d_model": 16, "max_length": 12},
    )
    original.save(tmp_path / "subword.keras")
    model = _build({"backbone": str(tmp_path / "subword.keras"), "dropout": 0.0})
    ours, theirs = model.get_layer("tokenize_review"), original.get_layer("tokenize_review")
    assert type(ours).__name__ == "WordPieceTokenizer" and ours.vocabulary == theirs.vocabulary
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)({"review": ROWS})
    before = keras.Model(original.inputs, original.get_layer("pool").output)({"review": ROWS})
    np.testing.assert_allclose(pooled.numpy(), before.numpy(), atol=1e-6)


def _lm_folder(folder: Path, vocabulary: list[str], causal_name: str = "transformer_lm") -> Path:
    """A language model shaped as lm_spec.md describes: ids in, next-token
    logits out, layers named like the encoder, model.keras and tokenizer.json."""
    ids = keras.Input((None,), dtype="int64", name="text")
    x = TokenEmbedding(len(vocabulary) + 2, 16, 10, name="token_embedding")(ids)
    x = PositionEmbedding(10, name="position_embedding")(x)
    mask = PaddingMask(10, name="padding_mask")(ids)
    h = LayerNorm(name="block0_norm1")(x)
    h = keras.layers.MultiHeadAttention(2, 8, name="block0_attention")(
        h, h, attention_mask=mask, use_causal_mask=True
    )
    x = keras.layers.Add(name="block0_residual1")([x, h])
    h = LayerNorm(name="block0_norm2")(x)
    h = keras.layers.Dense(32, activation="gelu", name="block0_mlp_in")(h)
    h = keras.layers.Dense(16, name="block0_mlp_out")(h)
    x = keras.layers.Add(name="block0_residual2")([x, h])
    x = LayerNorm(name="final_norm")(x)
    logits = keras.layers.Dense(len(vocabulary) + 2, name="lm_head")(x)
    model = keras.Model(ids, logits, name=causal_name)
    for weight in model.weights:  # not the initial values: a copy must be seen
        weight.assign(tf.random.normal(weight.shape, stddev=0.3, seed=1))
    folder.mkdir(parents=True)
    model.save(folder / "model.keras")
    spec = {"standardize": "lower_and_strip_punctuation", "split": "whitespace"}
    (folder / "tokenizer.json").write_text(
        json.dumps({"text": {"vocabulary": ["", "[UNK]", *vocabulary], **spec}})
    )
    return folder, model


def test_a_language_model_backbone_keeps_its_causal_attention(tmp_path):
    words = sorted({w for text in _frame()["review"] for w in text.split()})
    folder, lm = _lm_folder(tmp_path / "lm", words)
    model = _build({"backbone": str(folder), "pooling": "last", "dropout": 0.0})
    tokens = model.get_layer("tokenize_review")(tf.constant(ROWS.astype(str))).numpy()
    hidden = keras.Model(model.inputs, model.get_layer("final_norm").output)
    theirs = keras.Model(lm.inputs, lm.get_layer("final_norm").output)(tokens).numpy()
    ours = hidden({"review": ROWS}).numpy()
    real = tokens != 0  # the padded positions' vectors are never read
    np.testing.assert_allclose(ours[real], theirs[real], atol=1e-5)
    # "last" pooling reads the last real token of each row (zeros for an empty row).
    pooled = keras.Model(model.inputs, model.get_layer("pool").output)({"review": ROWS}).numpy()
    last = real.sum(axis=1) - 1
    for row, position in enumerate(last):
        expected = ours[row, position] if position >= 0 else np.zeros(16)
        np.testing.assert_allclose(pooled[row], expected, atol=1e-6)
    # Without the causal mask, the first token's vector would change with what follows it.
    assert not np.allclose(ours[0, 0], ours[1, 0])


@pytest.mark.slow
def test_a_language_models_serving_savedmodel_is_rebuilt_from_its_variables(tmp_path):
    words = sorted({w for text in _frame()["review"] for w in text.split()})
    folder, lm = _lm_folder(tmp_path / "lm", words)
    module = tf.Module()
    module.model = lm  # as kerastrain's serving SavedModel holds it, without Keras metadata
    serve = tf.function(
        lambda ids: lm(ids), input_signature=[tf.TensorSpec((None, None), tf.int64)]
    )
    tf.saved_model.save(
        module, str(folder / "savedmodel"), signatures=serve.get_concrete_function()
    )
    assert not (folder / "savedmodel" / "keras_metadata.pb").exists()
    from_file = _build({"backbone": str(folder / "model.keras"), "dropout": 0.0})
    from_savedmodel = _build({"backbone": str(folder / "savedmodel"), "dropout": 0.0})
    hidden = [
        keras.Model(m.inputs, m.get_layer("final_norm").output)({"review": ROWS}).numpy()
        for m in (from_file, from_savedmodel)
    ]
    np.testing.assert_allclose(hidden[0], hidden[1], atol=1e-6)
    assert from_savedmodel._kerastrain_text_backbone["kind"] == "causal language model"


@pytest.mark.slow
def test_a_kerastrain_language_model_is_a_backbone_from_its_run_folder_and_savedmodel(tmp_path):
    lm = kerastrain.fit_pipeline(
        [str(text) for text in _reviews(200, seed=5)["review"]],
        "transformer_lm",
        seed=0,
        data_options={"tokenizer": "word"},
        model_options={"layers": 1, "heads": 2, "d_model": 16, "max_length": 16},
        train=TRAIN,
        export={"formats": ["keras", "savedmodel"], "verify": False},
        report={"explain": "none"},
        output_dir=str(tmp_path / "lm"),
    )
    original = _loaded(lm.run_dir / "model.keras")
    assert original.name == "transformer_lm"
    hidden = keras.Model(original.inputs, original.get_layer("final_norm").output)
    for path in (lm.run_dir, lm.run_dir / "savedmodel"):
        model = _build({"backbone": str(path), "dropout": 0.0})
        assert model._kerastrain_text_backbone["kind"] == "causal language model"
        tokens = model.get_layer("tokenize_review")(tf.constant(ROWS.astype(str))).numpy()
        ours = keras.Model(model.inputs, model.get_layer("final_norm").output)
        real = tokens != 0
        np.testing.assert_allclose(
            ours({"review": ROWS}).numpy()[real], hidden(tokens).numpy()[real], atol=1e-5
        )


# ------------------------------------------------------------------------- training


@pytest.mark.slow
def test_pretrain_then_two_phases_train_the_head_then_the_top_backbone_layers(tmp_path):
    common = dict(seed=0, report={"explain": "none"}, data_options={"target": "label"})
    kerastrain.fit_pipeline(  # a real run folder as the backbone
        _reviews(120)[["review", "label"]],
        "transformer",
        model_options={"layers": 1, "heads": 2, "d_model": 16, "max_length": 12},
        train=TRAIN,
        export={"formats": ["keras"], "verify": False},
        output_dir=str(tmp_path / "pretrained"),
        **common,
    )
    original = _loaded(tmp_path / "pretrained" / "model.keras")
    result = kerastrain.fit_pipeline(
        _frame(),
        "transfer",
        model_options={
            "backbone": str(tmp_path / "pretrained"),
            "fine_tune_layers": 3,
            "fine_tune_epochs": 1,
        },
        train=TRAIN,
        export={"formats": []},
        output_dir=str(tmp_path / "run"),
        **common,
    )
    assert result.history["phase"] == [1.0, 2.0]
    model = result.model
    # Phase 2 unfroze the top 3 backbone layers only (mlp's dropout, the
    # residual, final_norm): the embeddings and the first norm never moved.
    for name in ("token_embedding", "block0_norm1"):
        for got, before in zip(model.get_layer(name).weights, original.get_layer(name).weights):
            np.testing.assert_array_equal(got.numpy(), before.numpy())
    assert not np.array_equal(
        model.get_layer("final_norm").gamma.numpy(), original.get_layer("final_norm").gamma.numpy()
    )
    report = result.report_path.read_text()
    assert "Text backbone" in report and "phase 2" in report


@pytest.mark.slow
def test_the_head_learns_on_frozen_features_that_differ_little_between_rows(backbone_run):
    # A pretrained language model's mean-pooled final norm: a large part all
    # rows share, a small part telling them apart (measured on the docstring
    # LM: per feature a spread ~2% of the size). Mimicked with the final
    # norm's offset at 1 and its scale at 0.02. The head alone (the frozen
    # backbone's phase 1) must still learn the reviews' labels from it.
    model = _build({"backbone": str(backbone_run), "dropout": 0.0})
    norm = model.get_layer("final_norm")
    norm.set_weights([np.full_like(norm.gamma, 0.02), np.ones_like(norm.beta)])
    frame = _frame(192)
    x, y = {"review": frame["review"].to_numpy(object)}, frame["label"].to_numpy()
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", metrics=["accuracy"])
    keras.utils.set_random_seed(0)
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    majority = max(y.mean(), 1 - y.mean())
    assert model.evaluate(x, y, verbose=0)[1] >= majority + 0.15


def _lora_count(model: keras.Model, rank: int, targets=LORA_TARGETS) -> int:
    """Adapter parameters from the shapes: rank * (in + out) per target."""
    total = 0
    for layer in model.layers:
        if layer.name.endswith("_attention"):
            d = layer._query_dense.kernel.shape[0]
            inner = layer._num_heads * layer._key_dim
            total += sum(rank * (d + inner) for t in ("query", "key", "value", "attention_output")
                         if t in targets)  # fmt: skip
        for part in ("mlp_in", "mlp_out"):
            if layer.name.endswith(part) and part in targets:
                total += rank * (layer.kernel.shape[0] + layer.kernel.shape[1])
    return total


def test_lora_trains_only_adapters_and_the_head(backbone_run):
    model = _build({"backbone": str(backbone_run), "lora": {"rank": 2, "alpha": 4}})
    head = sum(int(np.prod(w.shape)) for w in model.get_layer("output").weights)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    # d_model 16, ff 64, rank 2: 4 attention projections 2*(16+16), mlp 2*(16+64) twice.
    assert _lora_count(model, 2) == 4 * 64 + 2 * 160
    assert trainable == _lora_count(model, 2) + head
    assert {w.name.split("/")[-1].split(":")[0] for w in model.trainable_weights} == {
        "lora_a",
        "lora_b",
        "kernel",
        "bias",
    }  # the head's kernel and bias, the adapters' factors
    facts = model._kerastrain_text_backbone
    assert facts["trainable"] == trainable and facts["parameters"] == model.count_params()
    assert fine_tune_plan("transfer", {"lora": {"rank": 2}}) is None  # one phase
    only = _build({"backbone": str(backbone_run), "lora": {"rank": 1, "targets": ["query"]}})
    assert sum(int(np.prod(w.shape)) for w in only.trainable_weights) == 32 + head
    # Rank 1 on every target: under a tenth of this tiny model (the benchmark
    # holds rank 8 at d_model 128 to the same bound).
    small = _build({"backbone": str(backbone_run), "lora": {"rank": 1}})._kerastrain_text_backbone
    assert small["trainable"] == _lora_count(model, 1) + head
    assert small["trainable_share"] <= 0.10
    # B starts at zero: the adapted model answers as the plain one.
    plain = _build({"backbone": str(backbone_run), "dropout": 0.0})
    model.get_layer("output").set_weights(plain.get_layer("output").get_weights())
    np.testing.assert_allclose(
        model({"review": ROWS}).numpy(), plain({"review": ROWS}).numpy(), atol=1e-6
    )


@pytest.mark.slow
def test_lora_training_merges_into_a_plain_exported_model_that_passes_parity(
    backbone_run, tmp_path
):
    original = _loaded(backbone_run / "model.keras")
    result = kerastrain.fit_pipeline(
        _frame(),
        "transfer",
        seed=0,
        data_options={"target": "label"},
        model_options={"backbone": str(backbone_run / "model.keras"), "lora": {"rank": 2}},
        train={**TRAIN, "epochs": 2, "learning_rate": 0.01},
        export={"formats": ["savedmodel", "keras", "tflite"], "latency_runs": 0},
        report={"explain": "none"},
        output_dir=str(tmp_path / "run"),
    )
    for artifact in ("savedmodel", "keras", "tflite"):  # verified against the adapted model
        assert result.metrics[artifact]["max_abs_diff"] < 1e-5
    plain = result.model
    assert not adapter_layers(plain)
    assert not [w.name for w in plain.weights if "lora" in w.name]
    exported = _loaded(result.artifacts["keras"])
    assert not [w.name for w in exported.weights if "lora" in w.name]
    kinds = {type(layer).__name__ for layer in exported.layers}
    assert kinds >= {"MultiHeadAttention", "Dense"}
    assert not any(kind.startswith("Lora") for kind in kinds)
    # The merged kernels moved away from the backbone's (the adapters learned),
    # and the frozen norms and embeddings did not.
    assert not np.allclose(
        plain.get_layer("block0_mlp_in").kernel.numpy(),
        original.get_layer("block0_mlp_in").kernel.numpy(),
    )
    np.testing.assert_array_equal(
        plain.get_layer("block0_norm1").gamma.numpy(),
        original.get_layer("block0_norm1").gamma.numpy(),
    )
    report = result.report_path.read_text()
    assert "LoRA rank 2" in report and "trainable of" in report


def test_merged_outputs_equal_the_adapters_and_leave_the_backbone_untouched(backbone_run):
    original = _loaded(backbone_run / "model.keras")
    model = _build({"backbone": str(backbone_run), "lora": {"rank": 3, "alpha": 6}})
    rng = np.random.default_rng(0)
    for layer in adapter_layers(model):  # as if trained: B no longer zero
        for sub in [layer, *[getattr(layer, a, None) for a in ("_query_dense", "_key_dense",
                                                             "_value_dense", "_output_dense")]]:  # fmt: skip
            if sub is not None and hasattr(sub, "lora_b"):
                sub.lora_b.assign(rng.normal(0, 0.2, sub.lora_b.shape))
    adapted = model({"review": ROWS}).numpy()
    # The base kernels are the backbone's: only A and B differ.
    np.testing.assert_array_equal(
        model.get_layer("block0_attention")._value_dense.kernel.numpy(),
        original.get_layer("block0_attention")._value_dense.kernel.numpy(),
    )
    plain = merge_lora(model)
    assert plain is not model and not adapter_layers(plain)
    assert not [w.name for w in plain.weights if "lora" in w.name]
    np.testing.assert_allclose(plain({"review": ROWS}).numpy(), adapted, atol=1e-5)
    assert plain._kerastrain_backbone_layers == model._kerastrain_backbone_layers
    assert merge_lora(plain) is plain  # nothing left to merge


# ------------------------------------------------------------------------- bad inputs


def test_bad_backbones_are_refused_before_training(backbone_run, tmp_path):
    with pytest.raises(ConfigError, match="'model_options.backbone' option must be an existing"):
        _build({"backbone": str(tmp_path / "missing")})
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a SavedModel nor a kerastrain run folder"):
        _build({"backbone": str(tmp_path / "empty")})
    mlp = build_model("mlp", model_inputs((4,), None), Head(1, "sigmoid"), {"width": 4, "depth": 1})
    mlp.save(tmp_path / "mlp.keras")
    with pytest.raises(ConfigError, match="not a kerastrain text model"):
        _build({"backbone": str(tmp_path / "mlp.keras")})
    unsafe = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x + 1)])
    unsafe.save(tmp_path / "lambda.keras")
    with pytest.raises(ConfigError, match="trust_model_file"):
        _build({"backbone": str(tmp_path / "lambda.keras")})
    lone = tmp_path / "lone"
    lone.mkdir()
    words = ["great", "awful"]
    (_lm_folder(tmp_path / "lm", words)[0] / "model.keras").rename(lone / "model.keras")
    with pytest.raises(ConfigError, match="has no tokenizer"):
        _build({"backbone": str(lone / "model.keras")})


def test_data_must_have_exactly_one_text_column(backbone_run):
    numbers = _frame()[["label"]].assign(x=np.arange(96.0), y=np.arange(96.0) % 7)
    with pytest.raises(ConfigError, match="reads a text column; the data has none"):
        _build({"backbone": str(backbone_run)}, frame=numbers)
    two = _frame().assign(other=lambda f: f["review"].str.upper() + " more words here")
    with pytest.raises(
        ConfigError, match=r"reads one text column; the data has 2: \['review', 'other'\]"
    ):
        _build({"backbone": str(backbone_run)}, frame=two)


def test_bad_lora_and_pooling_options_name_the_allowed_values(backbone_run):
    with pytest.raises(ConfigError, match="'mlp_in'.*'mlp_out'") as error:
        _build({"backbone": str(backbone_run), "lora": {"targets": ["query", "qeury_dense"]}})
    assert "model_options.lora.targets" in str(error.value)
    with pytest.raises(ConfigError, match="model_options.lora.rank"):
        _build({"backbone": str(backbone_run), "lora": {"rank": 0}})
    with pytest.raises(ConfigError, match="model_options.lora.ranks"):
        _build({"backbone": str(backbone_run), "lora": {"ranks": 4}})
    with pytest.raises(ConfigError, match="model_options.pooling"):
        _build({"backbone": str(backbone_run), "pooling": "max"})
    with pytest.raises(ConfigError, match="need a kerastrain text backbone"):
        _build({"backbone": "mobilenet_v2", "lora": {"rank": 2}})
