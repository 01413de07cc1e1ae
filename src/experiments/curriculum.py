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
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict

from datamodules.errors import ConfigError
from experiments.phase import PhaseContext, load_phase_end
from experiments.resume import latest_checkpoint
from experiments.wandb_run import job_overrides

log = logging.getLogger(__name__)
STATE_FILE = "curriculum.json"

# Phase length keys -> the config keys they set. The first group applies to agents, the second
# to forecasters; a phase names exactly one.
AGENT_LENGTHS = {
    "frames": "model.collector.total_frames",
    "iterations": "model.collector.iterations",
    "episodes": "model.collector.episodes",
}
FORECASTER_LENGTHS = {"epochs": "model.trainer.max_epochs", "steps": "model.trainer.max_steps"}


@dataclass(frozen=True)
class Phase:
    """One phase: ``length`` of ``unit`` (frames | iterations | episodes | epochs | steps), the
    Hydra ``overrides`` it applies, and whether it starts its optimizer afresh."""

    name: str
    unit: str
    length: int
    overrides: tuple[str, ...]
    reset_optimizer: bool = False

    def length_overrides(self, kind: str, scale: float) -> list[str]:
        """The overrides that set this phase's (scaled) length for a model of ``kind``."""
        keys = AGENT_LENGTHS if kind == "agent" else FORECASTER_LENGTHS
        if self.unit not in keys:
            raise ConfigError(
                f"curriculum phase '{self.name}' has a length in {self.unit}, which a "
                f"{kind} does not use; give one of {', '.join(keys)}."
            )
        n = max(1, math.ceil(self.length * scale))
        out = [f"{keys[self.unit]}={n}"]
        if kind == "agent":  # RunLength takes the first non-null of iterations, frames, episodes
            out += [f"{key}=null" for unit, key in AGENT_LENGTHS.items() if unit != self.unit]
        elif self.unit == "steps":  # the other limit off, so the phase runs its steps
            out.append("model.trainer.max_epochs=-1")
        else:
            out.append("model.trainer.max_steps=null")
        return out


def parse_phases(curriculum: DictConfig) -> list[Phase]:
    """The phases of ``cfg.curriculum``, checked; one paragraph naming the phase if wrong."""
    name = curriculum.get("name", "?")
    where = f"conf/curriculum/{name}.yaml"
    phases: list[Phase] = []
    units = (*AGENT_LENGTHS, *FORECASTER_LENGTHS)
    for i, raw in enumerate(curriculum.get("phases") or []):
        label = f"{where}, phase {i + 1}"
        if not isinstance(raw, DictConfig) or not raw.get("name"):
            raise ConfigError(f"{label}: a phase needs a name, a length and overrides.")
        given = [u for u in units if raw.get(u) is not None]
        if len(given) != 1:
            raise ConfigError(
                f"{label} ('{raw.name}'): give exactly one length, one of {', '.join(units)}; "
                f"got {', '.join(given) or 'none'}."
            )
        unit = given[0]
        length = raw.get(unit)
        if not isinstance(length, int) or length < 1:
            raise ConfigError(
                f"{label} ('{raw.name}'): {unit} is {length}; use a whole number >= 1."
            )
        overrides = raw.get("overrides") or []
        if not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ConfigError(
                f"{label} ('{raw.name}'): overrides must be a list of Hydra override strings "
                "such as 'env.costs.scale=0.5'."
            )
        unknown = set(raw.keys()) - {"name", "overrides", "reset_optimizer", *units}
        if unknown:
            raise ConfigError(f"{label} ('{raw.name}'): unknown keys {', '.join(sorted(unknown))}.")
        phases.append(
            Phase(
                str(raw.name),
                unit,
                int(length),
                tuple(overrides),
                bool(raw.get("reset_optimizer", False)),
            )
        )
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: phase names must differ; got {', '.join(names)}.")
    scale = curriculum.get("scale", 1.0)
    if not (isinstance(scale, int | float) and scale > 0):
        raise ConfigError(f"curriculum.scale is {scale}; use a number > 0 (1 = full length).")
    return phases


def phase_folder(root: Path, index: int, phase: Phase) -> Path:
    return root / "phases" / f"{index + 1:02d}_{phase.name}"


def curriculum_group(cfg: DictConfig, root: Path) -> str:
    """The W&B group of the phases: ``logger.group`` if set, else named after the run."""
    if cfg.logger.get("group"):
        return str(cfg.logger.group)
    return f"{cfg.curriculum.name}-{root.parent.name}-{root.name}"


def phase_overrides(cfg: DictConfig, phase: Phase, root: Path) -> list[str]:
    """The overrides a phase adds to the job's: its own, its length, its W&B identity."""
    added = [
        *phase.overrides,
        *phase.length_overrides(str(cfg.model.kind), float(cfg.curriculum.get("scale", 1.0))),
    ]
    if cfg.logger.get("enabled", False):
        added += [f"logger.group={curriculum_group(cfg, root)}", f"logger.job_type={phase.name}"]
    return added


def compose_phase(base: list[str], added: list[str], phase: Phase) -> DictConfig:
    """The phase's config: Hydra composes the job's overrides followed by the phase's."""
    from hydra import compose

    config_name, search = "config", []
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        config_name = hydra.job.config_name
        # Where configs are found (a user's own conf dirs) is part of what the job composed.
        search = [o for o in hydra.overrides.hydra if o.startswith("hydra.searchpath")]
    try:
        return compose(config_name=config_name, overrides=[*search, *base, *added])
    except HydraException as err:
        raise ConfigError(
            f"curriculum phase '{phase.name}': its config could not be composed from the run's "
            f"overrides plus the phase's {list(added)}: {str(err).splitlines()[0]} Fix the "
            "phase's overrides in its conf/curriculum file (a key must exist in the config; add "
            "new ones with +key=value)."
        ) from None


def check_one_process(cfg: DictConfig) -> None:
    """Curricula run their phases one after another in one process; refuse DDP configs."""
    hw = cfg.hardware
    strategy = hw.strategy if isinstance(hw.strategy, str) else hw.strategy.get("_target_", "?")
    if hw.devices != 1 or int(hw.get("num_nodes", 1)) != 1 or "ddp" in str(strategy).lower():
        raise ConfigError(
            f"curriculum={cfg.curriculum.name} with hardware devices={hw.devices}, num_nodes="
            f"{hw.get('num_nodes', 1)}, strategy={strategy}: a curriculum runs its phases one "
            "after another in one process, so multi-process DDP is not supported with it. Use "
            "hardware=cpu or hardware=gpu, or run the phases as separate runs."
        )


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


def run_curriculum(cfg: DictConfig, root: Path, train_phase) -> dict[str, float]:
    """Run the phases of ``cfg.curriculum`` in order; return the last phase's metrics ({} if
    interrupted). ``train_phase(cfg, phase)`` trains one phase (``experiments.train.train``)."""
    phases = parse_phases(cfg.curriculum)
    check_one_process(cfg)
    kind = str(cfg.model.kind)
    base = [o for o in job_overrides() if not o.lstrip("+").startswith("resume=")]
    state = CurriculumState(root, str(cfg.curriculum.name), phases)
    log.info("curriculum %s: %s", cfg.curriculum.name, " -> ".join(f"{p.name}" for p in phases))
    carried: dict | None = None
    metrics: dict[str, float] = {}
    for index, phase in enumerate(phases):
        folder = phase_folder(root, index, phase)
        if state.done(index):
            log.info("phase %d (%s) already finished; skipping it", index + 1, phase.name)
            carried = load_phase_end(folder)
            continue
        added = phase_overrides(cfg, phase, root)
        pcfg = compose_phase(base, added, phase)
        own = latest_checkpoint(folder) if kind == "agent" else None
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
