"""A search worker: ``python -m kerastrain.tune.worker SEARCH_FOLDER``.

Started by `kerastrain.tune.distributed.serve` with KerasTuner's environment
(``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``).
It rebuilds the run from the folder's config, prepares the same data with the
same seed, audits it (`data_options.audit`; `"strict"` stops the worker on
leakage), and runs the trials the chief hands out until the search ends.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    """Runs trials for the chief; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m kerastrain.tune.worker SEARCH_FOLDER\n")
        return 2
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    from kerastrain._keras import keras
    from kerastrain.config import load_config
    from kerastrain.data.audit_folds import audit_prepared
    from kerastrain.data.prepare import prepare_data
    from kerastrain.distribute import make_strategy
    from kerastrain.tune.distributed import WORKER_CONFIG
    from kerastrain.tune.search import open_search

    directory = Path(args[0])
    config = load_config(directory / WORKER_CONFIG)
    keras.utils.set_random_seed(config.seed)
    prepared = prepare_data(config.data, config.data_options, config.seed)
    # The chief audits in fit_pipeline; a worker prepares its own copy, and
    # stops on it too with audit="strict" (it would wait for no trials).
    audit_prepared(prepared, config.data_options, config.seed)
    search = open_search(
        config, prepared, make_strategy(config.strategy, config.distribute), role="worker"
    )
    search.runner.search()
    logging.getLogger(__name__).info(
        "Worker %s: the chief ended the search.", search.runner.tuner_id
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
