"""What the Hydra entry point does around :func:`experiments.train.train`.

Checks that a model was chosen, prints the resolved config, turns user-input errors into
one paragraph without a traceback, and returns the configured objective.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from datamodules.errors import UserInputError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger(__name__)


def model_choices() -> list[str]:
    """Names accepted by ``+model=NAME`` (the files in conf/model/)."""
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def unique_dir(path: str) -> str:
    """``path``, or ``path-1``, ``path-2``... if it exists, so no run folder is ever reused."""
    candidate, n = Path(path), 1
    while candidate.exists():
        candidate = Path(f"{path}-{n}")
        n += 1
    return str(candidate)


_RUN_DIRS: dict[tuple[str, str], str] = {}


def run_dir(path: str, resume=None, *, _root_) -> str:
    """The run folder: a new ``unique_dir(path)``, or the folder a ``resume=`` continues.
    Memoised per (path, resume): Hydra resolves it again after creating the folder."""
    from experiments.resume import resume_dir

    key = (str(path), str(resume))
    if key not in _RUN_DIRS:
        hydra = _root_.get("hydra")
        overrides = list(hydra.overrides.task) if hydra is not None else []
        new = unique_dir(path)
        _RUN_DIRS[key] = resume_dir(new, resume, str(_root_.paths.output_root), overrides)
    return _RUN_DIRS[key]


def register_resolvers() -> None:
    """Resolvers used by conf/ (``unique_dir``, ``run_dir``, ``hydra_subdir``)."""
    from experiments.resume import hydra_subdir

    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", run_dir)
    if not OmegaConf.has_resolver("hydra_subdir"):
        OmegaConf.register_new_resolver("hydra_subdir", hydra_subdir, use_cache=True)


def run(cfg: DictConfig) -> float | None:
    """Run one job; exit with status 2 and a one-paragraph message on bad input."""
    if cfg.get("model") is None:
        print(
            f"No model chosen: add +model=NAME, one of {', '.join(model_choices())} "
            "(e.g. python -m experiments +model=lstm).",
            file=sys.stderr,
        )
        sys.exit(2)
    from experiments.launchers import failed_trial_value
    from experiments.train import train

    # An Optuna trial without a finite score reports the worst value so the study goes on
    # (hydra-optuna-sweeper stops the whole study on None, NaN or an exception).
    worst = failed_trial_value()
    try:
        metrics = train(cfg)
    except UserInputError as err:
        from modules.agent import TrainingDiverged

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
