"""Read W&B runs from their offline files with wandb's own reader (``wandb leet inspect``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from datamodules.errors import UserInputError


def offline_runs(root: Path) -> list[Path]:
    """Every offline W&B run folder under ``root`` (a run, a multirun or outputs/)."""
    return sorted(
        p.parent
        for p in Path(root).rglob("run-*.wandb")
        if p.parent.name.startswith(("offline-run-", "run-"))
    )


def read_run(run_folder: Path) -> dict:
    """Config, summary, tags, name, state, group, job type and history of one offline run, as
    plain JSON. ``history`` lists the logged rows in order, each a flat dict of the keys logged
    at that step (``_step``, ``trainer/global_step``, ``val/sharpe``...)."""
    summary = _inspect(run_folder, "--summary", "--json")
    data = json.loads(summary)
    data.setdefault("group", "")
    data.setdefault("job_type", "")
    data["history"] = []
    records = _inspect(run_folder, "--json")
    for line in records.splitlines():
        record = json.loads(line)
        record_type = record.get("type")
        if record_type == "run":
            run = record.get("run", {})
            data["group"] = run.get("run_group") or run.get("group") or ""
            data["job_type"] = run.get("job_type", "")
        elif record_type == "history":
            item = record.get("history", {}).get("item")
            if isinstance(item, dict):
                data["history"].append(item)
    return data


def _inspect(run_folder: Path, *flags: str) -> str:
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(run_folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise UserInputError(
            f"wandb could not read the run in {run_folder}: {done.stderr.strip()[:500]}"
        )
    return done.stdout
