"""Check every job of a multirun before the first one starts.

A Hydra callback (``conf/hydra/default.yaml``): at the start of a multirun it lists the jobs
the sweep will launch, composes each one's config and runs the config check on it, so a
100-job sweep whose 37th job has a bad value fails in seconds instead of after 36 jobs. A grid
sweep (Hydra's basic sweeper) is checked job by job. A sweeper that samples its jobs (Optuna)
is checked on its base config and on each value of its search space one key at a time (every
``choice`` option, both ends of every ``interval``), which covers every value a trial can
take for a key, though not every combination.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from datamodules.errors import UserInputError

log = logging.getLogger(__name__)


def _plain(overrides: list[Override]) -> list[str]:
    return [o.input_line for o in overrides if not o.is_sweep_override()]


def _values(override: Override) -> list[str]:
    """The values a sweep override can take that the check tries."""
    key = override.get_key_element()
    if override.is_discrete_sweep():
        return [f"{key}={v}" for v in override.sweep_string_iterator()]
    value = override.value()
    if isinstance(value, IntervalSweep):
        return [f"{key}={value.start}", f"{key}={value.end}"]
    return []


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of the jobs to check (see the module doc)."""
    parser = OverridesParser.create()
    sweeper = config.hydra.sweeper
    params = sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
    given = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = parser.parse_overrides(given)
    if str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    base = _plain(overrides)
    jobs = [base]
    for override in overrides:
        if override.is_sweep_override():
            jobs += [[*base, value] for value in _values(override)]
    return jobs


def _hydra_overrides(config: DictConfig) -> list[str]:
    """The Hydra overrides each job composes with too (where configs are found)."""
    return [o for o in config.hydra.overrides.hydra if str(o).startswith("hydra.searchpath")]


class CheckEveryJob(Callback):
    """Runs :func:`experiments.config.check.check_config` on every job of a multirun before
    the sweeper launches the first; a failure is one paragraph naming the job, exit status 2."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra import compose

        from experiments.config.job import check_job
        from experiments.curriculum.compose import check_curriculum

        started = time.perf_counter()
        jobs = sweep_jobs(config)
        search = _hydra_overrides(config)
        name = config.hydra.job.config_name
        for i, job in enumerate(jobs):
            try:
                cfg = compose(config_name=name, overrides=[*search, *job])
                check_job(cfg)
                check_curriculum(cfg, list(job), search)
            except UserInputError as err:
                label = " ".join(job) or "(no overrides)"
                print(
                    f"Error: job {i + 1} of {len(jobs)} of this multirun ({label}): {err} "
                    "No job was started.",
                    file=sys.stderr,
                )
                sys.exit(2)
            except Exception as err:  # noqa: BLE001 - a composition error of one job
                label = " ".join(job) or "(no overrides)"
                print(
                    f"Error: job {i + 1} of {len(jobs)} of this multirun ({label}) cannot be "
                    f"composed: {' '.join(str(err).split())} No job was started.",
                    file=sys.stderr,
                )
                sys.exit(2)
        log.info(
            "checked the configs of %d job(s) in %.1f s", len(jobs), time.perf_counter() - started
        )
