"""What a job learns from the sweep that launched it: its share of the cores, and what an
Optuna trial reports when it has no score.

- Threads: the joblib launcher runs several jobs at once on one machine. Each job gets
  ``cores // jobs at once`` torch intra-op threads (at least 1), so two jobs on two cores do
  not fight over them. Under submitit, ``hydra.launcher.cpus_per_task`` (when set) is the
  job's thread count. ``hardware.num_threads`` set explicitly wins over both; other launchers
  and single runs keep torch's default.
- Optuna: hydra-optuna-sweeper 1.2 stops the whole study when a trial returns anything but a
  finite float (None, NaN) or raises. A trial whose ``optimized_metric`` is NaN or infinite,
  or whose training diverged, is therefore told the worst value for the study's direction
  (``-inf`` when maximizing, ``+inf`` when minimizing): the study goes on and its sampler
  learns to avoid that region.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    """Cores this process may use, as joblib counts them (affinity and cgroup quotas)."""
    try:
        from joblib import cpu_count

        return max(1, int(cpu_count()))
    except ImportError:  # pragma: no cover - joblib comes with the launcher plugin
        return max(1, len(os.sched_getaffinity(0)))


def concurrent_jobs(
    launcher: Mapping[str, Any], sweeper: Mapping[str, Any], cores: int
) -> int | None:
    """How many jobs the joblib ``launcher`` runs at once on ``cores`` cores, or None for any
    other launcher. joblib's negative ``n_jobs`` counts back from the cores (-1 = all,
    -2 = all but one); the sweeper's batch (Optuna's ``n_jobs``, the basic sweeper's
    ``max_batch_size``) caps it, since no more jobs than a batch are ever launched together."""
    if not str(launcher.get("_target_", "")).endswith("JoblibLauncher"):
        return None
    n_jobs = launcher.get("n_jobs")
    n_jobs = 1 if n_jobs is None else int(n_jobs)
    jobs = max(cores + 1 + n_jobs, 1) if n_jobs < 0 else max(n_jobs, 1)
    target = str(sweeper.get("_target_", ""))
    batch = sweeper.get("n_jobs") if target.endswith("OptunaSweeper") else None
    batch = sweeper.get("max_batch_size") if target.endswith("BasicSweeper") else batch
    return min(jobs, int(batch)) if batch else jobs


def launcher_threads(
    launcher: Mapping[str, Any], sweeper: Mapping[str, Any], cores: int
) -> int | None:
    """Torch threads per job under ``launcher``: joblib, ``cores // jobs at once`` (at least 1);
    submitit with ``cpus_per_task`` set, that many; anything else None (torch's default)."""
    jobs = concurrent_jobs(launcher, sweeper, cores)
    if jobs is not None:
        return max(1, cores // jobs)
    if "hydra_submitit_launcher" in str(launcher.get("_target_", "")):
        cpus = launcher.get("cpus_per_task")
        return int(cpus) if cpus else None
    return None


def job_threads(cfg: DictConfig) -> int | None:
    """Torch intra-op threads for this job: ``hardware.num_threads`` if set; in a multirun,
    the launcher's share (:func:`launcher_threads`); else None (torch's default).

    Agents may lower it further: ``experiments.agents.agent_threads`` picks 1 thread for small
    CPU batches and otherwise leaves the count set here."""
    explicit = cfg.hardware.get("num_threads")
    if explicit:
        return int(explicit)
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    cores = cpu_cores()
    threads = launcher_threads(hydra.launcher, hydra.sweeper, cores)
    if threads is not None:
        log.info(
            "%s on %d core(s): %d torch thread(s) per job (hardware.num_threads overrides)",
            str(hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
            cores,
            threads,
        )
    return threads


def optuna_direction() -> str | None:
    """``maximize`` or ``minimize`` when this job is a single-objective Optuna trial, else None."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    sweeper = HydraConfig.get().sweeper
    if not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
        return None
    direction = sweeper.get("direction")
    if isinstance(direction, str):
        return direction
    if isinstance(direction, Mapping) or direction is None:
        return None
    names = [str(getattr(d, "name", d)) for d in direction]
    return names[0] if len(names) == 1 else None


def failed_trial_value() -> float | None:
    """The value an Optuna trial reports when it has no finite score: the worst for the
    study's direction (``-inf`` maximizing, ``+inf`` minimizing); None outside Optuna."""
    direction = optuna_direction()
    if direction is None:
        return None
    return float("-inf") if direction.lower() == "maximize" else float("inf")
