"""Hyper-parameter search with KerasTuner's oracles and kerastrain's training.

`tune_stage` is the pipeline's stage; `run_search` and `search_command` run a
search alone (the latter is ``kerastrain tune``).
"""

from kerastrain.errors import TuningError
from kerastrain.tune.search import (
    TuneResult,
    hyperband_trials,
    open_search,
    run_search,
    search_command,
    tune_stage,
)

__all__ = [
    "TuneResult",
    "TuningError",
    "hyperband_trials",
    "open_search",
    "run_search",
    "search_command",
    "tune_stage",
    "summary",
]


def summary(result: TuneResult) -> str:
    """A few lines for the command line: the best values and where the results are."""
    values = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in result.best_values.items()
    )
    name = result.objective["name"]
    lines = [
        f"Best {name}: {result.best_score:.4f} (trial {result.best_trial})",
        f"  {values}",
        f"Trials: {len(result.rows)}, epochs: {result.epochs_spent}, {result.seconds:.0f}s",
        f"Results: {result.table_path}",
    ]
    if result.plot_path is not None:
        lines.append(f"Plot:    {result.plot_path}")
    lines.append(f"Search folder (rerun to resume): {result.directory}")
    return "\n".join(lines)
