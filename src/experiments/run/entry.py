"""What the Hydra entry point does around :func:`experiments.run.job.train`.

Checks the composed config (a model was chosen; every key, type, range and ``_target_``)
before anything heavy is imported, turns user-input errors into one paragraph without a
traceback (exit status 2), and returns the configured objective to sweepers. Light: torch,
Lightning and the data are only touched once the config passed.
"""

from __future__ import annotations

import logging
import math
import sys

from omegaconf import DictConfig

from datamodules.errors import UserInputError
from experiments.config.job import NoModel, check_job
from experiments.runtime.sweeps import failed_trial_value

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> float | None:
    """Run one job; exit with status 2 and a one-paragraph message on bad input."""
    try:
        check_job(cfg)
    except UserInputError as err:
        print(str(err) if isinstance(err, NoModel) else f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    from experiments.run.job import train
    from modules.family import TrainingDiverged

    # An Optuna trial without a finite score reports the worst value so the study goes on
    # (hydra-optuna-sweeper stops the whole study on None, NaN or an exception).
    worst = failed_trial_value()
    try:
        metrics = train(cfg)
    except UserInputError as err:
        if isinstance(err, TrainingDiverged) and worst is not None:
            log.error("%s\nThis Optuna trial scores %s; the study goes on.", err, worst)
            return worst
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    name = cfg.get("optimized_metric")
    if not name or not metrics:  # no metrics: the run was interrupted and saved for resuming
        return None
    if name not in metrics:
        known = ", ".join(sorted(metrics))
        if worst is not None:  # the same for every trial: stop the study with a clear message
            print(f"Error: optimized_metric {name} was not logged; known: {known}", file=sys.stderr)
            sys.exit(2)
        log.warning("optimized_metric %s was not logged; known: %s", name, known)
        return None
    value = float(metrics[name])
    if math.isfinite(value):
        return value
    if worst is not None:
        log.warning("%s is %s: this Optuna trial scores %s; the study goes on.", name, value, worst)
    return worst
