"""``resume=auto`` / ``resume=PATH``: continue a run in its own folder from its latest checkpoint.

``resume=PATH`` continues the run in folder PATH. ``resume=auto`` continues the newest run
under ``<output_root>/runs/`` that was started with the same overrides (``resume=`` and
``hydra.*`` aside) and has a checkpoint; if there is none it starts a fresh run. The resumed
job writes its Hydra files to ``.hydra/resumed-<time>/`` so the original ones stay as they
were, logs to the same W&B run id, and continues from the newest checkpoint in
``checkpoints/`` (``interrupted*.ckpt`` or ``last.ckpt``) that is intact: each is checked
first and a damaged one set aside (:func:`experiments.runtime.checkpoints.intact_checkpoint`).
A multirun continues as a whole: :mod:`experiments.runtime.sweep_resume`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import yaml

from datamodules.database.uri import mask_credentials

RUN_ID_FILE = "wandb_run_id.txt"  # the logger run id a resumed run continues


def _comparable(overrides) -> list[str]:
    # saved overrides have their URI passwords masked (experiments.run.job.mask_hydra_files)
    return sorted(
        mask_credentials(str(o))
        for o in overrides
        if not str(o).startswith(("resume=", "hydra.", "paths."))
    )


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``*.ckpt`` in ``run_dir/checkpoints`` (by modification time), or None."""
    found = list((Path(run_dir) / "checkpoints").glob("*.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _progress_time(run: Path) -> float | None:
    """When ``run`` last saved something to resume from: its newest checkpoint, or for a
    curriculum with unfinished phases its ``curriculum.json``; None if there is nothing."""
    ckpt = latest_checkpoint(run)
    if ckpt is not None:
        return ckpt.stat().st_mtime
    state = run / "curriculum.json"
    if state.exists():
        try:
            phases = json.loads(state.read_text()).get("phases", [])
        except (OSError, ValueError):
            return None
        if any(p.get("status") != "done" for p in phases):
            return state.stat().st_mtime
    return None


def find_resumable(output_root: str, overrides) -> Path | None:
    """The newest run folder under ``output_root/runs`` started with ``overrides`` that holds
    a checkpoint (or an unfinished curriculum), or None."""
    wanted = _comparable(overrides)
    best: tuple[float, Path] | None = None
    for saved in Path(output_root, "runs").glob("*/*/.hydra/overrides.yaml"):
        run = saved.parent.parent
        stamp = _progress_time(run)
        if stamp is None:
            continue
        try:
            theirs = yaml.safe_load(saved.read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        if _comparable(theirs) != wanted:
            continue
        if best is None or stamp > best[0]:
            best = (stamp, run)
    return best[1] if best else None


def resume_dir(new_dir: str, resume, output_root: str, overrides) -> str:
    """The run folder for ``hydra.run.dir``: ``new_dir`` unless resuming (see module doc)."""
    if resume in (None, "", "null", "None"):
        return new_dir
    if str(resume) == "auto":
        found = find_resumable(output_root, overrides)
        return str(found) if found is not None else new_dir
    return str(resume)


def hydra_subdir(run_dir: str) -> str:
    """``.hydra`` for a new folder; ``.hydra/resumed-<time>`` when continuing an old one."""
    if (Path(run_dir) / ".hydra" / "config.yaml").exists():
        return f".hydra/resumed-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    return ".hydra"
