"""One W&B run per job: its name, group, tags and config come from the Hydra job.

Offline by default, written inside the run's folder; ``wandb sync`` uploads it later.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)


def job_overrides() -> list[str]:
    """The task overrides of this job (``+model=lstm``, ``seed=1``...)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


# Overrides that change where or how loudly a run goes, not what it computes: left out of names.
UNNAMED = ("paths.", "print_config=", "quiet=", "logger.", "hydra.", "tags=", "hparams_search=")


def run_name(cfg: DictConfig, phase: str | None = None) -> str:
    """``lstm`` for a plain run; then the overrides that shape the result, in command order.
    A curriculum phase's run adds ``/`` and the phase's name."""
    parts = [o.lstrip("+~") for o in job_overrides()]
    parts = [o for o in parts if not o.startswith(("model=", *UNNAMED))]
    base = str(cfg.model.get("name", "run"))
    name = ",".join([base, *parts]) if parts else base
    return f"{name}/{phase}" if phase else name


def run_group(cfg: DictConfig) -> str | None:
    """The configured group, else the sweep folder for multirun jobs (shared by its jobs),
    named after the Optuna study when it has a name: ``<study_name>-<date>-<time>``."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep = Path(HydraConfig.get().sweep.dir)
        study = HydraConfig.get().sweeper.get("study_name")
        return f"{study or 'sweep'}-{sweep.parent.name}-{sweep.name}"
    return None


def run_config(cfg: DictConfig, overrides: list[str] | None = None) -> dict:
    """The resolved config as plain containers, plus the override list."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    plain["overrides"] = job_overrides() if overrides is None else list(overrides)
    return plain


def make_wandb_logger(
    cfg: DictConfig, run_dir: Path, tags: list[str], run_id: str | None = None, phase=None
):
    """A WandbLogger for this job, or None when ``logger.enabled`` is false. With ``run_id``
    (a resumed run) it continues that W&B run. In a curriculum ``phase``
    (:class:`experiments.phase.PhaseContext`) the config holds the phase's overrides and the
    global step continues from the previous phase."""
    if not cfg.logger.get("enabled", False):
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    mode = str(cfg.logger.get("mode", "offline"))
    overrides = phase.overrides if phase is not None else None
    logger = StepOffsetWandbLogger(
        step_offset=phase.step_offset if phase is not None else 0,
        name=run_name(cfg, phase.name if phase is not None else None),
        save_dir=str(run_dir),
        project=str(cfg.logger.project),
        entity=cfg.logger.get("entity"),
        group=run_group(cfg),
        job_type=str(cfg.logger.get("job_type", "train")),
        tags=tags,
        mode=mode,
        config=run_config(cfg, overrides),
        log_model=False,
        **({"id": run_id, "resume": "allow"} if run_id else {}),
    )
    # WandbLogger always passes anonymous=None, which wandb 0.31 warns about on every run.
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)
    return logger


class StepOffsetWandbLogger(WandbLogger):
    """Lightning's WandbLogger with every step shifted by ``step_offset``, so the phases of a
    curriculum continue one global step (each phase's Trainer counts from 0)."""

    def __init__(self, *args, step_offset: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.step_offset = int(step_offset)

    def log_metrics(self, metrics, step=None) -> None:
        super().log_metrics(metrics, None if step is None else step + self.step_offset)


def finish(logger) -> None:
    """Close this job's W&B run so the next multirun job starts a fresh one."""
    if logger is None:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish()
