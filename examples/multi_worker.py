"""Multi-worker training: the same script on every machine, each with its TF_CONFIG.

On a cluster (Kubernetes TFJob, Vertex AI), every machine runs this
script; the cluster sets TF_CONFIG (or you do; Slurm sets SLURM_* variables
instead: pass distribute={"cluster": "slurm"}), e.g. on the first of two:
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]},
                "task": {"type": "worker", "index": 0}}' \
        python examples/multi_worker.py --output-dir /shared/runs/digits
and `"index": 1` on the second. The output folder must be one that every
worker reaches (NFS, a mounted bucket): worker 0, the chief, writes the run
there; every worker restores the same backup after a preemption, and the
seed must be the same everywhere (it is fixed below).

On this machine, the launcher starts the workers with free ports and a
TF_CONFIG each, streams their output, and returns the chief's result:
    python examples/multi_worker.py --local 2
(the command line equivalent: `kerastrain launch --workers 2 config.yaml`).
Kill a worker (`kill -9 <pid>`) and rerun the same command: training
resumes from the last completed epoch.
    python examples/multi_worker.py --local 2 --quick    # 1 epoch: a check that it runs

Writes to `saved_models/multi_worker/` (or `--output-dir DIR`) and prints the
report's path.
"""

import argparse
import json
import logging

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--local", type=int, metavar="N", help="launch N local workers")
parser.add_argument("--quick", action="store_true", help="a short run: 1 epoch")
parser.add_argument("--epochs", type=int, help="default 10 (1 with --quick)")
parser.add_argument("--output-dir", default="saved_models/multi_worker")
args = parser.parse_args()
epochs = args.epochs if args.epochs is not None else (1 if args.quick else 10)
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

CONFIG = {
    "data": "digits",
    "model": "cnn",
    "seed": 0,  # the same seed on every worker
    "strategy": "multi_worker",
    "train": {"epochs": epochs, "batch_size": 32},  # 32 per worker
    "export": {"formats": ["savedmodel", "keras", "tflite"]},
    "output_dir": args.output_dir,
    "overwrite": True,
}

if args.local:
    from kerastrain.launch import launch

    result = launch(CONFIG, workers=args.local)
    print(f"Trained on {len(result.tasks)} processes in {result.seconds:.1f} s.")
    print(f"Test accuracy: {result.metrics['test']['accuracy']:.4f}")
    print(f"Report: {result.report_path}")
else:
    import kerastrain
    from kerastrain.distribute import is_chief, tf_config

    print("A sample TF_CONFIG for worker 1 of two machines:")
    print(json.dumps(tf_config(["host1:2222", "host2:2222"], index=1)))

    result = kerastrain.fit_pipeline(config=CONFIG)  # waits here until every worker is up
    if is_chief("multi_worker"):
        print(f"Test accuracy: {result.metrics['test']['accuracy']:.4f}")
        print(f"Report: {result.report_path}")
