"""Parameter-server training: a coordinator, workers and parameter servers.

Variables live on the parameter servers; workers compute steps that the
coordinator (the "chief" task, which runs `fit_pipeline`) schedules through a
`ClusterCoordinator`. Each worker builds its own input pipeline from a
dataset function, as TensorFlow documents it.

On a cluster, every task runs this script with its own TF_CONFIG: the
"worker" and "ps" tasks serve until stopped, the "chief" trains, e.g.
    TF_CONFIG='{"cluster": {"chief": ["c:2222"], "worker": ["w0:2222", "w1:2222"],
                "ps": ["p0:2222"]}, "task": {"type": "ps", "index": 0}}' \
        python examples/parameter_server.py --output-dir /shared/runs/ps
(`kerastrain.distribute.tf_config(workers, index, ps=..., chief=..., task_type=...)`
builds each one.)

On this machine, the launcher starts the chief, 2 workers and 1 parameter
server on free ports:
    python examples/parameter_server.py --local
(or: `kerastrain launch --workers 2 --ps 1 config.yaml`).
    python examples/parameter_server.py --local --quick  # 1 epoch: a check that it runs

Writes to `saved_models/parameter_server/` (or `--output-dir DIR`) and prints
the report's path.
"""

import argparse
import logging

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--local", action="store_true", help="launch a local cluster")
parser.add_argument("--workers", type=int, default=2)
parser.add_argument("--ps", type=int, default=1)
parser.add_argument("--quick", action="store_true", help="a short run: 1 epoch")
parser.add_argument("--epochs", type=int, help="default 5 (1 with --quick)")
parser.add_argument("--output-dir", default="saved_models/parameter_server")
args = parser.parse_args()
epochs = args.epochs if args.epochs is not None else (1 if args.quick else 5)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

CONFIG = {
    "data": "breast_cancer",
    "model": "mlp",
    "seed": 0,
    "strategy": "parameter_server",
    # Steps are asynchronous: each worker applies its own batches of 64.
    "train": {"epochs": epochs, "batch_size": 64, "early_stopping": None},
    "export": {"formats": ["savedmodel", "keras", "tflite"]},
    "output_dir": args.output_dir,
    "overwrite": True,
}

if args.local:
    from kerastrain.launch import launch

    result = launch(CONFIG, workers=args.workers, ps=args.ps)
else:
    import kerastrain

    result = kerastrain.fit_pipeline(config=CONFIG)  # only the chief returns
print(f"Test accuracy: {result.metrics['test']['accuracy']:.4f}")
print(f"Report: {result.report_path}")
