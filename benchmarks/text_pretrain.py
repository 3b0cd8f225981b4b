"""Pretrain, then fine-tune, on the library-docstring task (issue 22).

The task of `benchmarks/text.py` (which of numpy, pandas, scikit-learn and
SciPy a docstring comes from), on one seeded split, kerastrain's
(`test_split=0.25`, stratified). Four sides:

- TF-IDF (words and bigrams) + logistic regression on the training rows:
  the reference;
- kerastrain's `transformer` trained from scratch on the labelled training
  rows (`fit_pipeline(frame, "transformer")`);
- a kerastrain `transformer_lm` pretrained without labels on the training
  rows' text, plus with ``--extra-docs N`` up to N docstrings of other
  installed packages and Python's help topics (`docstring_corpus.py`; none
  equal to or holding a validation or test docstring)
  (`fit_pipeline(list_of_strings, "transformer_lm")`, word tokens), then `model="transfer"` with it as the backbone: phase 1 trains
  the head on the frozen backbone, phase 2 every backbone layer at a lower
  rate (the full fine-tune), for each `--pooling`;
- the same backbone with LoRA rank 8, alpha 16 on every attention projection
  and MLP layer (the backbone frozen): its trainable share, its accuracy
  against the full fine-tune's, and the parity of its exported SavedModel
  and TFLite file (adapters merged into the kernels).

Every model has the same width, blocks and context (`--layers`, `--d-model`,
4 heads, `--lm-max-length` tokens).
The held-out rows' text is never seen by the language model.

Usage:
    python benchmarks/text_pretrain.py --epochs 6 --head-epochs 2 --lm-epochs 2 --lm-max-length 64
    python benchmarks/text_pretrain.py --sides full lora --pooling mean last --epochs 6 \
        --head-epochs 2 --lm-epochs 3 --lm-max-length 64 --extra-docs 8000 \
        --lora-lr 1e-3 3e-3 --lora-epochs 12
    python benchmarks/text_pretrain.py --backbone saved_models/docstrings-lm  # reuse one
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402, F401  (sets TF's log level)
import numpy as np  # noqa: E402
from text import docstrings  # noqa: E402  (the task's data, as benchmarks/text.py builds it)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20, help="scratch and phase-2 epochs")
    parser.add_argument("--head-epochs", type=int, default=3, help="phase 1 (head only)")
    parser.add_argument("--lm-epochs", type=int, default=10)
    parser.add_argument("--lora-epochs", type=int, help="LoRA's epochs (default: --epochs)")
    parser.add_argument("--lm-max-length", type=int, default=128)
    parser.add_argument(
        "--lm-vocabulary", type=int, default=4000, help="its softmax is the LM's main cost"
    )
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--fine-tune-lr", type=float, default=0.3, help="phase 2 rate factor")
    parser.add_argument(
        "--lora-lr", type=float, nargs="+", default=[3e-3], help="chosen on validation"
    )
    parser.add_argument(
        "--extra-docs",
        type=int,
        default=0,
        help="pretrain on the training rows plus up to this many other packages' docstrings "
        "and help topics (benchmarks/docstring_corpus.py; none equal to or holding a held-out "
        "docstring)",
    )
    parser.add_argument("--pooling", nargs="+", default=["mean", "last"])
    parser.add_argument("--backbone", help="a pretrained kerastrain language model to reuse")
    parser.add_argument(
        "--sides", nargs="+", default=["scratch", "full", "lora"], help="the models to train"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    import kerastrain
    from kerastrain.config import DataConfig
    from kerastrain.data.prepare import prepare_data
    from kerastrain.models import MODELS

    if "transformer_lm" not in MODELS and args.backbone is None:
        sys.exit("model='transformer_lm' is not in this kerastrain: pretraining cannot run.")

    frame = docstrings()
    print(f"{len(frame)} docstrings: {frame['library'].value_counts().to_dict()}")
    options = {"target": "library", "text_columns": ["text"], "test_split": 0.25}
    prepared = prepare_data(frame, DataConfig(**options), args.seed)
    train, test = prepared.splits.train, prepared.splits.test
    texts, labels = frame["text"].to_numpy(), prepared.y
    work = Path(tempfile.mkdtemp(prefix="kerastrain-pretrain-bench-"))
    common = dict(seed=args.seed, report={"explain": "none"}, overwrite=True)
    heads, d = 4, args.d_model
    rows: list[tuple[str, float, str]] = []

    tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    baseline = LogisticRegression(max_iter=2000, C=10.0)
    baseline.fit(tfidf.fit_transform(texts[train]), labels[train])
    tfidf_accuracy = float((baseline.predict(tfidf.transform(texts[test])) == labels[test]).mean())
    rows.append(("TF-IDF + logistic regression", tfidf_accuracy, ""))

    def timed(what: str, **kwargs):
        start = time.perf_counter()
        result = kerastrain.fit_pipeline(**kwargs, **common)
        seconds = time.perf_counter() - start
        print(f"{what}: {seconds:.0f} s", flush=True)
        return result, seconds

    scratch = None
    if "scratch" in args.sides:
        scratch, seconds = timed(
            "scratch transformer",
            data=frame,
            model="transformer",
            data_options=options,
            model_options={
                "layers": args.layers,
                "heads": heads,
                "d_model": d,
                "dropout": 0.1,
                "max_length": args.lm_max_length,  # the backbone's context: the same tokens read
            },
            train={"epochs": args.epochs, "batch_size": 32, "verbose": 0},
            export={"formats": []},
            output_dir=str(work / "scratch"),
        )
        rows.append(
            ("transformer from scratch", scratch.metrics["test"]["accuracy"], f"{seconds:.0f} s")
        )

    backbone = args.backbone
    if backbone is None:
        corpus = [str(t) for t in texts[train]]  # the training rows' text, no labels
        if args.extra_docs:
            from docstring_corpus import corpus as extra_corpus

            held_out = [str(t) for t in texts[np.concatenate([prepared.splits.val, test])]]
            extra, facts = extra_corpus(held_out, args.extra_docs, args.seed)
            corpus += extra
            print(f"LM corpus: {len(train)} training docstrings + {facts}", flush=True)
        print(f"LM corpus: {len(corpus)} texts, {sum(map(len, corpus)):,} characters", flush=True)
        lm, seconds = timed(
            "language model",
            data=corpus,
            model="transformer_lm",
            data_options={"tokenizer": "word", "vocabulary_size": args.lm_vocabulary},
            model_options={
                "layers": args.layers,
                "heads": heads,
                "d_model": d,
                "max_length": args.lm_max_length,
                "dropout": 0.1,
            },
            train={"epochs": args.lm_epochs, "batch_size": 32, "verbose": 0},
            export={"formats": ["keras"], "verify": False},
            output_dir=str(work / "lm"),
        )
        backbone = str(lm.run_dir)
        print(f"language model: {backbone}, test {lm.metrics.get('test')}", flush=True)
        test_metrics = lm.metrics.get("test", {})
        rows.append(
            (
                "language model on the training docstrings (no labels)",
                float("nan"),
                f"test perplexity {test_metrics.get('perplexity', float('nan')):.1f}, bits per "
                f"byte {test_metrics.get('bits_per_byte', float('nan')):.3f}, {seconds:.0f} s",
            )
        )

    transfer_train = {"epochs": args.head_epochs, "batch_size": 32, "verbose": 0}
    full, full_val = {}, {}
    for pooling in args.pooling if "full" in args.sides else []:
        result, seconds = timed(
            f"full fine-tune, {pooling} pooling",
            data=frame,
            model="transfer",
            data_options=options,
            model_options={
                "backbone": backbone,
                "pooling": pooling,
                "fine_tune_layers": 1000,
                "fine_tune_epochs": args.epochs,
                "fine_tune_learning_rate": args.fine_tune_lr,
            },
            train=transfer_train,
            export={"formats": []},
            output_dir=str(work / f"full-{pooling}"),
        )
        full[pooling] = result.metrics["test"]["accuracy"]
        full_val[pooling] = result.metrics["val"]["accuracy"]
        rows.append(
            (
                f"fine-tuned from the LM, {pooling} pooling",
                full[pooling],
                f"(val {full_val[pooling]:.3f}; history {_phases(result)}) {seconds:.0f} s",
            )
        )
    # The pooling is chosen on the validation split, never on the test split.
    best = max(full_val, key=full_val.get) if full_val else args.pooling[0]
    if "lora" not in args.sides:
        _show(rows, full, best, scratch, tfidf_accuracy, None)
        return

    lora_runs = {}
    for rate in args.lora_lr:
        result, seconds = timed(
            f"LoRA, lr {rate:g}",
            data=frame,
            model="transfer",
            data_options=options,
            model_options={
                "backbone": backbone,
                "pooling": best,
                "lora": {"rank": 8, "alpha": 16},
            },
            train={
                "epochs": args.lora_epochs or args.epochs,
                "batch_size": 32,
                "verbose": 0,
                "learning_rate": rate,
            },
            export={"formats": ["savedmodel", "tflite"], "latency_runs": 0},
            output_dir=str(work / f"lora-{rate:g}"),
        )
        lora_runs[rate] = (result, seconds)
        print(
            f"LoRA lr {rate:g}: val {result.metrics['val']['accuracy']:.3f}, test "
            f"{result.metrics['test']['accuracy']:.3f}; history {_phases(result)}",
            flush=True,
        )
    # The rate is chosen on the validation split, never on the test split.
    rate = max(lora_runs, key=lambda r: lora_runs[r][0].metrics["val"]["accuracy"])
    lora, seconds = lora_runs[rate]
    facts = lora.model._kerastrain_text_backbone
    parity = max(lora.metrics[a]["max_abs_diff"] for a in ("savedmodel", "tflite"))
    adapters = [w.name for w in lora.model.weights if "lora" in w.name]
    rows.append(
        (
            f"LoRA rank 8, alpha 16, {best} pooling, lr {rate:g} (chosen on validation)",
            lora.metrics["test"]["accuracy"],
            f"trains {facts['trainable']:,} of {facts['parameters']:,} parameters "
            f"({100 * facts['trainable_share']:.1f}%); exported SavedModel/TFLite max |diff| "
            f"{parity:.1g}, adapter variables in the export: {len(adapters)}; {seconds:.0f} s",
        )
    )

    print(f"\nsplit: {len(train)} train, {len(prepared.splits.val)} val, {len(test)} test")
    _show(rows, full, best, scratch, tfidf_accuracy, lora.metrics["test"]["accuracy"])


def _phases(result) -> str:
    """Validation accuracy per epoch, with the phase of each (full fine-tune)."""
    history = result.history
    val = history.get("val_accuracy", [])
    phase = history.get("phase", [1.0] * len(val))
    return ", ".join(f"p{int(p)}:{v:.2f}" for p, v in zip(phase, val))


def _show(rows, full, best, scratch, tfidf_accuracy, lora_accuracy) -> None:
    for name, accuracy, note in rows:
        shown = "-" if np.isnan(accuracy) else f"{accuracy:.3f}"
        print(f"{name}: test accuracy {shown} {note}")
    if best in full and scratch is not None:
        gain = full[best] - scratch.metrics["test"]["accuracy"]
        print(f"fine-tuned ({best}, chosen on validation) - scratch: {gain:+.3f}; "
              f"fine-tuned - TF-IDF: {full[best] - tfidf_accuracy:+.3f}")  # fmt: skip
    if best in full and lora_accuracy is not None:
        print(f"LoRA - fine-tuned ({best}): {lora_accuracy - full[best]:+.3f}")


if __name__ == "__main__":
    main()
