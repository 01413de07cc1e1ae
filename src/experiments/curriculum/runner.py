"""Curricula: a run made of phases, each nothing but Hydra overrides of the run's config.

``conf/curriculum/NAME.yaml`` lists phases; each has a ``name``, one length (agents:
``frames``, ``iterations`` or ``episodes``; forecasters: ``epochs`` or ``steps``) and a list of
``overrides`` (Hydra override strings, e.g. ``env.reward.weights=[0.8,0.2]``). ``scale``
multiplies every length (rounded up), so a short version of a curriculum is one knob away.

Each phase's config is composed by Hydra from the job's own overrides plus the phase's
(``overrides``, then its length, then its W&B identity: ``logger.group`` shared by the phases,
``logger.job_type`` = the phase name), so it differs from the run's config by exactly those.
Phases run in order in ``<run>/phases/NN_name/`` (each a complete run folder: config,
checkpoints, W&B run, metrics.json), each starting from the previous phase's final weights and
optimizer state (see :mod:`experiments.phase`). ``curriculum.json`` in the run folder records
the phases' progress, so ``resume=PATH`` (or ``resume=auto``) continues an interrupted
curriculum at the phase it stopped in: finished phases are skipped, the interrupted one
continues from its own latest checkpoint (agents) or restarts from the previous phase's end.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from datamodules.errors import ConfigError
from experiments.config.job import job_overrides
from experiments.curriculum.compose import compose_phase, one_process_error, phase_base
from experiments.curriculum.context import PhaseContext, load_phase_end
from experiments.curriculum.phases import Phase, parse_phases, phase_folder
from experiments.runtime.resume import latest_checkpoint
from modules.hardware import Hardware

log = logging.getLogger(__name__)
STATE_FILE = "curriculum.json"


def curriculum_group(cfg: DictConfig, root: Path) -> str:
    """The logger group of the phases: ``logger.group`` if set, else named after the run."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    return f"{cfg.curriculum.name}-{root.parent.name}-{root.name}"


def logger_identity(cfg: DictConfig) -> bool:
    """Whether the run's logger takes a group and a job type (W&B does), so each phase is
    its own run in the curriculum's group with the phase's name as job type."""
    logger = cfg.get("logger")
    return logger is not None and "group" in logger and "job_type" in logger


def phase_overrides(cfg: DictConfig, family: type, phase: Phase, root: Path) -> list[str]:
    """The overrides a phase adds to the job's: its own, its length, its logger identity."""
    added = [
        *phase.overrides,
        *phase.length_overrides(family, float(cfg.curriculum.get("scale", 1.0))),
    ]
    if logger_identity(cfg):
        added += [f"logger.group={curriculum_group(cfg, root)}", f"logger.job_type={phase.name}"]
    return added


def check_one_process(cfg: DictConfig, hw: Hardware) -> None:
    """Curricula run their phases one after another in one process; refuse DDP hardware (as
    resolved: ``devices: auto`` too; the config check refused what the config says)."""
    if hw.world_size > 1 or "ddp" in hw.strategy_name.lower():
        raise one_process_error(cfg, hw.describe())


class CurriculumState:
    """``curriculum.json``: the phases and which of them finished (with their metrics)."""

    def __init__(self, root: Path, name: str, phases: list[Phase]) -> None:
        self.path = root / STATE_FILE
        self.data = {"curriculum": name, "phases": [{"name": p.name} for p in phases]}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if [p["name"] for p in saved.get("phases", [])] != [p.name for p in phases]:
                raise ConfigError(
                    f"{self.path} records the phases "
                    f"{[p['name'] for p in saved.get('phases', [])]}, but curriculum "
                    f"'{name}' now has {[p.name for p in phases]}: resume with the curriculum "
                    "the run was started with, or start a new run (drop resume=)."
                )
            self.data = saved

    def done(self, index: int) -> bool:
        return self.data["phases"][index].get("status") == "done"

    def mark(self, index: int, **fields) -> None:
        self.data["phases"][index].update(fields)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2))
        tmp.replace(self.path)


BASELINES = ("test/buy_and_hold_", "test/flat_", "test/random_")


def _own_metric(key: str, value) -> bool:
    """The model's finite validation and test metrics (the baselines are in metrics.json)."""
    return isinstance(value, float) and math.isfinite(value) and not key.startswith(BASELINES)


def run_curriculum(cfg: DictConfig, root: Path, hw: Hardware, train_phase) -> dict[str, float]:
    """Run the phases of ``cfg.curriculum`` in order; return the last phase's metrics ({} if
    interrupted). ``train_phase(cfg, phase)`` trains one phase (``experiments.run.job.train``)."""
    from hydra.utils import get_class

    family = get_class(str(cfg.model._target_))
    phases = parse_phases(cfg.curriculum, family.lengths)
    check_one_process(cfg, hw)
    base = phase_base(job_overrides())
    state = CurriculumState(root, str(cfg.curriculum.name), phases)
    log.info("curriculum %s: %s", cfg.curriculum.name, " -> ".join(f"{p.name}" for p in phases))
    # Every phase still to run is composed and checked before the first one trains.
    pending = {
        index: (added, compose_phase(base, added, phase.name))
        for index, phase in enumerate(phases)
        if not state.done(index)
        for added in [phase_overrides(cfg, family, phase, root)]
    }
    carried: dict | None = None
    metrics: dict[str, float] = {}
    for index, phase in enumerate(phases):
        folder = phase_folder(root, index, phase)
        if state.done(index):
            log.info("phase %d (%s) already finished; skipping it", index + 1, phase.name)
            carried = load_phase_end(folder)
            continue
        added, pcfg = pending[index]
        own = latest_checkpoint(folder) if family.resumable else None
        with open_dict(pcfg):
            pcfg.resume = str(folder) if own is not None else None
        context = PhaseContext(
            index=index,
            name=phase.name,
            out=folder,
            root=root,
            overrides=[*base, *added],
            step_offset=int(carried["global_step"]) if carried else 0,
            carried=None if own is not None else carried,
            reset_optimizer=phase.reset_optimizer,
        )
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(added), folder / "overrides.yaml")
        state.mark(index, status="running", folder=str(folder.relative_to(root)), overrides=added)
        log.info("phase %d/%d: %s (%s)", index + 1, len(phases), phase.name, " ".join(added))
        metrics = train_phase(pcfg, context)
        if not metrics:  # interrupted: the phase saved a checkpoint to resume from
            return {}
        carried = load_phase_end(folder)
        state.mark(
            index,
            status="done",
            global_step=int(carried["global_step"]),
            metrics={k: v for k, v in metrics.items() if _own_metric(k, v)},
        )
    if not metrics:  # every phase had finished before this resume
        log.info("curriculum %s: every phase had already finished", cfg.curriculum.name)
        metrics = dict(state.data["phases"][-1].get("metrics") or {})
    return metrics
