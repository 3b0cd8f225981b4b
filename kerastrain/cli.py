"""The ``kerastrain`` command: ``run``, ``tune``, ``demo``, ``launch``,
``predict`` and ``evaluate`` (an exported artifact on a data file, see
`kerastrain.predicting`), and ``generate`` (a language model's text, see
`kerastrain.generation`).

Errors in the config or the data print one paragraph and exit with code 2,
without a traceback (wrapped at spaces only: a path in the message stays
whole, to be copied); anything else is a bug and keeps its traceback.
``--trust`` loads a ``model_options.backbone`` file (``run``, ``launch``) or
the ARTIFACT (``predict``, ``evaluate``) even when it carries code (see the
trust model in `kerastrain.export.model_files`).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from kerastrain.logs import log_to_stderr

__all__ = ["main"]

EXIT_USAGE = 2
TRUST_HELP = (
    "load the model_options.backbone file even if it carries code (a Lambda layer): "
    "only for files you wrote or trust"
)
ARTIFACT_TRUST_HELP = (
    "load ARTIFACT even if loading it runs code it carries (a Lambda layer): only for files "
    "you wrote or trust"
)
#: Width of an error paragraph.
WIDTH = 100


def _paragraph(text: str) -> str:
    """``text`` wrapped at spaces to `WIDTH`, each of its lines on its own:
    never inside a word, a path or a hyphenated name."""
    return "\n".join(
        textwrap.fill(line, width=WIDTH, break_on_hyphens=False, break_long_words=False)
        for line in text.splitlines()
    )


def _trusting(config, trust: bool):  # noqa: ANN001, ANN202 - PipelineConfig, imported lazily
    """The config with ``model_options.trust_model_file`` set when ``--trust``
    is given and the model loads a backbone file."""
    if not trust or "backbone" not in config.model_options:
        return config
    from kerastrain.config import load_config

    return load_config(config, model_options={**config.model_options, "trust_model_file": True})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerastrain", description="Train, evaluate and export a tf_keras model in one command."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the pipeline a YAML config describes",
        description="Run fit_pipeline(config=CONFIG).",
    )
    run.add_argument("config", help="path of a YAML config (the keys of fit_pipeline)")
    run.add_argument("--output-dir", help="the run folder (overrides the config's)")
    run.add_argument("--overwrite", action="store_true", help="replace a finished run")
    run.add_argument("--trust", action="store_true", help=TRUST_HELP)

    tune = commands.add_parser(
        "tune",
        help="search hyper-parameters as the config's 'tune' section says",
        description="Run the search alone (`kerastrain run` searches, then trains with the best "
        "values). Rerunning with the same search folder resumes it.",
    )
    tune.add_argument("config", help="path of a YAML config with a 'tune' section")
    tune.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="worker processes; this process serves the oracle on loopback "
        "(default: 0, trials run in this process)",
    )
    tune.add_argument(
        "--output-dir",
        help="the run folder; the search goes in its 'tuning' "
        "sub-folder unless tune.directory is set",
    )

    launch = commands.add_parser(
        "launch",
        help="run a YAML config on a cluster of local processes",
        description="Start N workers (and M parameter servers with a chief) on 127.0.0.1, "
        "each with its own TF_CONFIG, as a cluster would; stream their output; report a "
        "process that dies. Rerunning resumes from the training backup.",
    )
    launch.add_argument("config", help="path of a YAML config (the keys of fit_pipeline)")
    launch.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    launch.add_argument(
        "--ps",
        type=int,
        default=0,
        help="parameter servers (default: 0, multi-worker mirrored training)",
    )
    launch.add_argument("--timeout", type=float, help="stop everything after this many seconds")
    launch.add_argument("--output-dir", help="the run folder (overrides the config's)")
    launch.add_argument("--overwrite", action="store_true", help="replace a finished run")
    launch.add_argument("--trust", action="store_true", help=TRUST_HELP)
    launch.add_argument(
        "--emit",
        choices=("slurm", "tfjob"),
        help="write a cluster job for the config instead of launching: an sbatch script "
        "(slurm) or a Kubeflow TFJob manifest (tfjob), one `kerastrain run` per worker",
    )
    launch.add_argument("--gpus", type=int, default=0, help="with --emit: GPUs per worker")
    launch.add_argument("--output", help="with --emit: the file to write")
    launch.add_argument(
        "--image", default="kerastrain:latest", help="with --emit tfjob: the container image"
    )

    artifact_help = (
        "an exported model: a SavedModel folder, or a .keras, .h5, .tflite or .onnx file "
        "(any format kerastrain exports); the run's model_info.json beside it names its "
        "inputs and classes"
    )
    predict = commands.add_parser(
        "predict",
        help="write an exported model's predictions on a data file to CSV",
        description="Run ARTIFACT on DATA and write one CSV row per data row: 'row' (or "
        "'file' for images), the predicted 'label' and one 'probability_<class>' per class "
        "(or 'value' for a regression). A table's columns are matched to the model's inputs "
        "by name; extra columns are ignored (and named), missing ones refused.",
    )
    predict.add_argument("artifact", metavar="ARTIFACT", help=artifact_help)
    predict.add_argument(
        "data",
        metavar="DATA",
        help="a .csv, .tsv or .parquet table, a .npy array, or a folder of images",
    )
    predict.add_argument(
        "--output",
        metavar="FILE",
        help="the CSV to write, '-' for stdout (default: DATA's name with "
        "'.predictions.csv', beside it)",
    )

    evaluate = commands.add_parser(
        "evaluate",
        help="score an exported model on a labelled data file",
        description="Print the metrics of kerastrain.evaluate for ARTIFACT on DATA: a table "
        "with a label column, or a folder of class sub-folders of images.",
    )
    evaluate.add_argument("artifact", metavar="ARTIFACT", help=artifact_help)
    evaluate.add_argument(
        "data",
        metavar="DATA",
        help="a .csv, .tsv or .parquet table with a label column, or a folder of class "
        "sub-folders of images",
    )
    evaluate.add_argument(
        "--target",
        metavar="COL",
        help="the label column (default: the one the run trained on, from model_info.json)",
    )
    evaluate.add_argument(
        "--json", action="store_true", help="print the metrics as one JSON object"
    )
    for scoring in (predict, evaluate):
        scoring.add_argument(
            "--batch-size",
            type=int,
            default=512,
            metavar="N",
            help="rows read and predicted at a time (default: %(default)s)",
        )
        scoring.add_argument("--trust", action="store_true", help=ARTIFACT_TRUST_HELP)

    demo = commands.add_parser(
        "demo",
        help="train on the embedded digits data end to end",
        description="Train a CNN on scikit-learn's digits, export "
        "SavedModel, .keras and TFLite, and verify them.",
    )
    demo.add_argument(
        "--output-dir",
        default=os.path.join("saved_models", "demo"),
        help="the run folder (default: %(default)s)",
    )
    demo.add_argument("--epochs", type=int, default=20, help="training epochs (default: 20)")

    generate = commands.add_parser(
        "generate",
        help="continue a prompt with a language model (model='transformer_lm')",
        description="Print PROMPT followed by the tokens a language model generates. The same "
        "seed gives the same text. A prompt longer than the model's context keeps its last "
        "max_length tokens (with a warning); unknown characters or words are the "
        "out-of-vocabulary token.",
    )
    generate.add_argument(
        "artifact",
        metavar="ARTIFACT",
        help="the run folder of a language model, its SavedModel folder or its model.keras",
    )
    generate.add_argument("prompt", metavar="PROMPT", help="the text to continue")
    generate.add_argument(
        "--max-tokens", type=int, default=100, help="tokens to add (default: %(default)s)"
    )
    generate.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="0 picks the most likely token; above, samples (default: %(default)s)",
    )
    generate.add_argument(
        "--top-k", type=int, default=None, help="sample among the K most likely tokens only"
    )
    generate.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    return parser


def _summary(result) -> str:  # noqa: ANN001 - PipelineResult, imported lazily
    lines = [f"Run folder: {result.run_dir}"]
    for fmt, path in result.artifacts.items():
        lines.append(f"  {fmt:<10} {path}")
    lines.append(f"  report     {result.report_path}")
    for where in ("test", *result.artifacts):
        values = result.metrics.get(where)
        if not values:
            continue
        key = "accuracy" if "accuracy" in values else "rmse"
        label = "Keras model" if where == "test" else f"{where} model"
        if "bits_per_byte" in values:  # a language model
            lines.append(f"Test bits per byte ({label}): {values['bits_per_byte']:.4f}")
        if key in values:  # a language model's artifacts have their parity instead
            lines.append(f"Test {key} ({label}): {values[key]:.4f}")
    return "\n".join(lines)


def _artifact_command(args: argparse.Namespace) -> int:
    """``predict`` and ``evaluate``: the work is `kerastrain.predicting`'s."""
    import json

    from kerastrain.predicting import evaluate_file, format_metrics, predict_file, predictions

    if args.command == "predict":
        options = {"batch_size": args.batch_size, "trust": args.trust}
        if args.output == "-":
            table = predictions(args.artifact, args.data, **options)
            print(table.to_csv(index=False), end="")
        else:
            print(predict_file(args.artifact, args.data, output=args.output, **options))
        return 0
    metrics = evaluate_file(
        args.artifact, args.data, target=args.target, batch_size=args.batch_size, trust=args.trust
    )
    print(json.dumps(metrics, default=str) if args.json else format_metrics(metrics))
    return 0


def _generate(args: argparse.Namespace) -> int:
    """``generate``: the work is `kerastrain.generation`'s."""
    from kerastrain.generation import load_generator

    text = load_generator(args.artifact).generate(
        args.prompt,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
    )
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with log_to_stderr(args.verbose):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from kerastrain.config import load_config
    from kerastrain.errors import (
        ConfigError,
        DataError,
        ExportError,
        KerastrainError,
        TuningError,
        WorkerFailed,
    )
    from kerastrain.launch import launch  # no TensorFlow in the launcher
    from kerastrain.runs import check_folder

    try:
        if args.command in ("predict", "evaluate"):
            return _artifact_command(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "launch":
            config = load_config(
                args.config, output_dir=args.output_dir, overwrite=args.overwrite or None
            )
            config = _trusting(config, args.trust)
            if args.emit:
                from kerastrain.emit import emit_job

                print(
                    emit_job(
                        config,
                        args.emit,
                        workers=args.workers,
                        gpus=args.gpus,
                        output=args.output,
                        image=args.image,
                    )
                )
                return 0
            result = launch(config, workers=args.workers, ps=args.ps, timeout=args.timeout)
            print(_summary(result))
            return 0
        if args.command == "tune":
            from kerastrain.tune import search_command, summary

            config = load_config(args.config, output_dir=args.output_dir)
            if config.output_dir is not None:
                check_folder(config.output_dir)
            try:
                print(summary(search_command(config, workers=args.workers)))
            except TuningError as exc:
                print(f"kerastrain: TuningError: {exc}", file=sys.stderr)
                return 1
            return 0
        if args.command == "run":
            # Checked before TensorFlow is imported: a typo costs no startup.
            config = load_config(
                args.config, output_dir=args.output_dir, overwrite=args.overwrite or None
            )
            config = _trusting(config, args.trust)
        else:
            config = load_config(
                None,
                data="digits",
                model="auto",
                train={"epochs": args.epochs},
                output_dir=args.output_dir,
                overwrite=True,
                seed=0,
            )
        if config.output_dir is not None:
            check_folder(config.output_dir)  # a file there is refused before TensorFlow loads
        from kerastrain.pipeline import fit_pipeline

        if args.command == "run":
            # The file itself, with the command's options over it, so that the
            # run knows which options the file sets (a language model takes its
            # own defaults only for the options a config leaves out).
            result = fit_pipeline(
                config=args.config,
                output_dir=args.output_dir,
                overwrite=args.overwrite or None,
                model_options=config.model_options if args.trust else None,
            )
        else:
            result = fit_pipeline(config=config)
    except (ConfigError, DataError, ExportError) as exc:
        kind = type(exc).__name__
        print(_paragraph(f"kerastrain: {kind}: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except WorkerFailed as exc:
        print(f"kerastrain: {exc}", file=sys.stderr)
        return 1
    except KerastrainError as exc:  # training diverged, a budget was not met: the run failed
        print(_paragraph(f"kerastrain: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1
    print(_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
