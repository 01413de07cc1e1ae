"""A curriculum phase's config, and the checks of a curriculum that need only the config.

A light module (Hydra and OmegaConf; no torch, no Lightning): :func:`check_curriculum` runs
with the config check, before anything heavy is imported, so a phase override of a key the
config lacks, or a curriculum on multi-process hardware, is refused in about a second instead
of after the imports and the data (``bench/config_check.py``). The runner composes each phase
again when the curriculum starts, with the lengths its model family adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig

from datamodules.errors import ConfigError
from experiments.config.groups import conf_dirs, rewrite_shorthand, searchpath_from_args

__all__ = ["check_curriculum", "compose_phase", "one_process_error", "phase_base"]


def phase_base(overrides: Sequence[str]) -> list[str]:
    """The job's overrides every phase composes with: all but ``resume=`` (the curriculum
    resumes phase by phase, each from its own folder)."""
    return [o for o in overrides if not o.lstrip("+").startswith("resume=")]


def compose_phase(
    base: list[str], added: list[str], name: str, search: Sequence[str] | None = None
) -> DictConfig:
    """Phase ``name``'s config: Hydra composes the job's overrides ``base`` followed by the
    phase's ``added``, and the job checks pass on it. ``search``: the job's
    ``hydra.searchpath`` overrides (default: the running job's)."""
    from hydra import compose

    config_name = "config"
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        config_name = hydra.job.config_name
        if search is None:  # where configs are found (a user's conf dirs) is part of the job
            search = [o for o in hydra.overrides.hydra if o.startswith("hydra.searchpath")]
    search = list(search or [])
    dirs = conf_dirs(searchpath_from_args(search))
    try:
        composed = compose(
            config_name=config_name, overrides=[*search, *base, *rewrite_shorthand(added, dirs)]
        )
    except HydraException as err:
        raise ConfigError(
            f"curriculum phase '{name}': its config could not be composed from the run's "
            f"overrides plus the phase's {list(added)}: {str(err).splitlines()[0]} Fix the "
            "phase's overrides in its conf/curriculum file (a key must exist in the config; add "
            "new ones with +key=value)."
        ) from None
    from experiments.config.job import check_job

    try:
        check_job(composed)
    except ConfigError as err:
        raise ConfigError(f"curriculum phase '{name}' ({' '.join(added)}): {err}") from None
    return composed


def one_process_error(cfg: DictConfig, hardware: str) -> ConfigError:
    """The refusal of a curriculum on multi-process hardware (``hardware``: it in words)."""
    return ConfigError(
        f"curriculum={cfg.curriculum.name} with {hardware}: a curriculum runs its "
        "phases one after another in one process, so multi-process DDP is not supported "
        "with it. Use hardware=cpu or hardware=gpu, or run the phases as separate runs."
    )


def check_curriculum(cfg: DictConfig, base: list[str], search: Sequence[str] | None = None) -> None:
    """A curriculum's checks that need only the job's config ``cfg`` and its overrides
    ``base``: the hardware as configured is one process, and every phase's own overrides
    compose with the job's and pass the job checks. No-op without curriculum phases. (The
    phases' lengths were checked with the config; the hardware is checked again once resolved,
    for ``devices: auto``.)"""
    curriculum = cfg.get("curriculum")
    if curriculum is None or not curriculum.get("phases"):
        return
    hardware = cfg.get("hardware") or {}
    strategy = hardware.get("strategy")
    target = strategy.get("_target_", "") if isinstance(strategy, Mapping) else strategy
    devices, nodes = hardware.get("devices"), hardware.get("num_nodes", 1)
    if (
        (isinstance(devices, int) and devices > 1)
        or (isinstance(nodes, int) and nodes > 1)
        or "ddp" in str(target or "").lower()
    ):
        words = f"hardware: devices={devices}, num_nodes={nodes}, strategy={target}"
        raise one_process_error(cfg, words)
    base = phase_base(base)
    for phase in curriculum.phases:
        compose_phase(base, list(phase.get("overrides") or []), str(phase.name), search)
