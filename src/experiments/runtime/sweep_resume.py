"""A multirun started again continues: finished jobs are skipped, interrupted ones continue
from their own checkpoints, the rest run.

- The sweep folder: ``resume=auto`` on a multirun picks the newest sweep under
  ``<output_root>/multirun/`` started with the same overrides (``resume=``, ``hydra.*`` and
  ``paths.*`` aside; its :data:`SWEEP_FILE` says); ``resume=PATH`` names a sweep folder; a
  ``hydra.sweep.dir`` given on the command line is used as it is. Else a new folder.
- Each job runs in its own folder (``<sweep>/<job number>``) as before. A job whose folder
  holds :data:`DONE_FILE` (written when it finished) is not run again: its metrics are
  returned from that file, so a sweeper (Optuna) gets the same value. A job whose folder holds
  a checkpoint continues from it (as ``resume=`` does, with the same W&B run id); a family
  that cannot continue mid-training sets its checkpoints aside and starts that job again.
  A folder that holds another job (other overrides: the command changed) is refused.

Light: no torch, no Lightning.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

from datamodules.database.uri import mask_credentials
from datamodules.errors import ConfigError, UserInputError
from experiments.runtime.paths import next_free
from experiments.runtime.resume import _comparable

log = logging.getLogger(__name__)

DONE_FILE = "job_done.json"  # written in a job's folder when it finished: its metrics
SWEEP_FILE = "sweep_overrides.yaml"  # the command's overrides, written when a sweep starts


def in_multirun() -> bool:
    """True in a job of a multirun (any launcher, any sweeper)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_overrides(sweep: Path) -> list[str]:
    """The overrides the sweep in folder ``sweep`` was started with: its :data:`SWEEP_FILE`
    (every sweeper), else Hydra's ``multirun.yaml`` (the basic sweeper's)."""
    try:
        return [str(o) for o in yaml.safe_load((Path(sweep) / SWEEP_FILE).read_text()) or []]
    except (OSError, yaml.YAMLError, TypeError):
        pass
    try:
        saved = yaml.safe_load((Path(sweep) / "multirun.yaml").read_text()) or {}
        return [str(o) for o in saved["hydra"]["overrides"]["task"] or []]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / SWEEP_FILE).is_file() or (Path(folder) / "multirun.yaml").is_file()


def find_sweep(output_root: str, overrides) -> Path | None:
    """The newest sweep folder under ``output_root/multirun`` whose ``multirun.yaml`` was
    started with ``overrides`` (compared as :func:`experiments.runtime.resume._comparable`)."""
    wanted = _comparable(overrides)
    best: tuple[float, Path] | None = None
    for folder in Path(output_root, "multirun").glob("*/*"):
        theirs = sweep_overrides(folder) if is_sweep(folder) else []
        if not theirs or _comparable(theirs) != wanted:
            continue
        stamp = folder.stat().st_mtime
        if best is None or stamp > best[0]:
            best = (stamp, folder)
    return best[1] if best else None


def sweep_folder(new_dir: str, resume, output_root: str, overrides) -> str:
    """The folder for ``hydra.sweep.dir``: the sweep a ``resume=`` continues (see the module
    doc), else the first free name from ``new_dir``."""
    if resume not in (None, "", "null", "None"):
        if str(resume) == "auto":
            found = find_sweep(output_root, overrides)
            if found is not None:
                return str(found)
        elif is_sweep(Path(str(resume))):
            return str(resume)
        else:
            raise ConfigError(
                f"resume={resume}: not a sweep folder (it holds no {SWEEP_FILE} or "
                "multirun.yaml). On a "
                "multirun, resume= takes auto or the folder of an earlier sweep (e.g. "
                "outputs/multirun/<date>/<time>)."
            )
    return str(next_free(new_dir))


def finished_job(out: Path) -> dict | None:
    """The metrics of the job that finished in ``out`` (its :data:`DONE_FILE`), or None."""
    path = Path(out) / DONE_FILE
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text())["metrics"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s is unreadable; the job runs again", path)
        return None


def mark_finished(out: Path, metrics: dict[str, float]) -> None:
    """Record in ``out`` that its job finished with ``metrics`` (written atomically)."""
    path = Path(out) / DONE_FILE
    part = path.with_name(f".{DONE_FILE}.{os.getpid()}.partial")
    part.write_text(json.dumps({"metrics": {k: float(v) for k, v in metrics.items()}}))
    os.replace(part, path)


def saved_overrides(out: Path) -> list[str] | None:
    """The overrides the job that first ran in ``out`` was started with, or None."""
    path = Path(out) / ".hydra" / "overrides.yaml"
    try:
        return list(yaml.safe_load(path.read_text()) or [])
    except (OSError, yaml.YAMLError, TypeError):
        return None


def check_same_job(out: Path, overrides) -> None:
    """Refuse to continue in ``out`` a job other than the one that ran there before."""
    theirs = saved_overrides(out)
    if theirs is None or _comparable(theirs) == _comparable(overrides):
        return
    ours = " ".join(_comparable(overrides)) or "(none)"
    raise ConfigError(
        f"{out} holds a job started with other overrides ({' '.join(_comparable(theirs))}) "
        f"than this one ({ours}); nothing in it was touched. Continue a sweep with the command "
        "that started it, or give this one a new folder (drop resume= and hydra.sweep.dir)."
    )


def has_checkpoint(out: Path) -> bool:
    return any((Path(out) / "checkpoints").glob("*.ckpt"))


def set_aside_checkpoints(out: Path) -> Path:
    """Rename ``out/checkpoints`` to ``checkpoints.interrupted`` (``-1``... if taken), so a job
    that starts again keeps what the interrupted one saved."""
    folder = Path(out) / "checkpoints"
    target = next_free(folder.with_name("checkpoints.interrupted"))
    os.replace(folder, target)
    return target


class ContinueSweep(Callback):
    """A Hydra callback (``conf/hydra/default.yaml``): at the start of a multirun, resolves
    the sweep folder (a bad ``resume=`` is one paragraph, exit status 2) and, when it already
    holds jobs, says what continues."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep = Path(str(config.hydra.sweep.dir))
        except InterpolationResolutionError as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, UserInputError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            print(f"Error: {cause}", file=sys.stderr)
            sys.exit(2)
        record = sweep / SWEEP_FILE
        if not record.exists():  # what resume=auto finds the sweep by, for every sweeper
            sweep.mkdir(parents=True, exist_ok=True)
            overrides = [mask_credentials(str(o)) for o in config.hydra.overrides.task]
            record.write_text(yaml.safe_dump(overrides))  # no password stays on disk
        jobs = [p.parent for p in sweep.glob("*/.hydra")]
        if not jobs:
            return
        done = sum(finished_job(job) is not None for job in jobs)
        saved = sum(finished_job(job) is None and has_checkpoint(job) for job in jobs)
        log.info(
            "continuing the sweep in %s: %d job(s) finished (skipped), %d continue from their "
            "checkpoints, the others run",
            sweep,
            done,
            saved,
        )
