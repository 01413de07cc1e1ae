"""What the Hydra entry point does around :func:`experiments.run.job.train`.

Checks the composed config (a model was chosen; every key, type, range and ``_target_``)
before anything heavy is imported, turns user-input errors into one paragraph without a
traceback (exit status 2), and returns the configured objective to sweepers. Light: torch,
Lightning and the data are only touched once the config passed.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from datamodules.errors import UserInputError
from experiments.config.job import NoModel, check_job, job_overrides
from experiments.curriculum.compose import check_curriculum
from experiments.runtime import collection
from experiments.runtime.disk import DiskFull, disk_full, is_disk_full
from experiments.runtime.noise import quiet_library_noise
from experiments.runtime.sweep_resume import (
    DONE_FILE,
    check_same_job,
    finished_job,
    in_multirun,
    mark_finished,
)
from experiments.runtime.sweeps import failed_trial_value

log = logging.getLogger(__name__)


def continued_sweep_job(cfg: DictConfig) -> dict[str, float] | None:
    """In a multirun whose job folder already holds this job: its metrics if it finished (it
    is skipped), else None (it runs, continuing from its checkpoint); a folder holding another
    job is refused. None outside a multirun or in a new folder."""
    if not in_multirun():
        return None
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    out = Path(hydra.runtime.output_dir)
    check_same_job(out, list(hydra.overrides.task))
    metrics = finished_job(out)
    if metrics is not None:
        print(f"{out}: this job had finished; skipped (its metrics: {DONE_FILE}).", file=sys.stderr)
    return metrics


def finished_sweep_job(metrics: dict[str, float]) -> None:
    """Record a multirun job that finished (not one interrupted and saved for resuming), on
    the process that reports (rank 0)."""
    if not metrics or not in_multirun() or int(os.environ.get("RANK", "0") or 0) != 0:
        return
    from hydra.core.hydra_config import HydraConfig

    mark_finished(Path(HydraConfig.get().runtime.output_dir), metrics)


def stopped_for_space(cfg: DictConfig, err: BaseException) -> str:
    """The paragraph of a run stopped by a write that failed for lack of space: the file, the
    free space, and the command that continues it."""
    from experiments.run.job import resume_command, run_dir

    out = run_dir(cfg)
    then = (
        "Free some space, then continue with (a run that cannot continue mid-training starts "
        f"again): {resume_command(out)}"
    )
    if isinstance(err, DiskFull):
        return f"{err} {then}"
    return str(disk_full(err, f"a file in {out}", then))


def run(cfg: DictConfig) -> float | None:
    """Run one job; exit with status 2 and a one-paragraph message on bad input."""
    try:
        check_job(cfg)
        check_curriculum(cfg, job_overrides())
        done = continued_sweep_job(cfg)  # a sweep's job that had finished: nothing to import
    except UserInputError as err:
        print(str(err) if isinstance(err, NoModel) else f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    # An Optuna trial without a finite score reports the worst value so the study goes on
    # (hydra-optuna-sweeper stops the whole study on None, NaN or an exception).
    worst = failed_trial_value()
    if done is not None:
        return objective(cfg, done, worst)
    quiet_library_noise()
    from experiments.run.job import train
    from modules.family import TrainingDiverged

    collection.resume()  # the heavy imports are done: collect again, skipping what they made

    try:
        metrics = train(cfg)
        finished_sweep_job(metrics)
    except DiskFull as err:  # before UserInputError, which it is: the paragraph adds the way on
        print(f"Error: {stopped_for_space(cfg, err)}", file=sys.stderr)
        sys.exit(2)
    except UserInputError as err:
        if isinstance(err, TrainingDiverged) and worst is not None:
            log.error("%s\nThis Optuna trial scores %s; the study goes on.", err, worst)
            return worst
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:
        if not is_disk_full(err):
            raise
        print(f"Error: {stopped_for_space(cfg, err)}", file=sys.stderr)
        sys.exit(2)
    return objective(cfg, metrics, worst)


def objective(cfg: DictConfig, metrics: dict[str, float], worst: float | None) -> float | None:
    """What the job returns to the sweeper: ``optimized_metric`` of ``metrics``; ``worst``
    (an Optuna trial's) when it is not finite; None when there is nothing to report."""
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
