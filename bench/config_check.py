"""How fast a bad config is refused: seconds from the command to its one-paragraph error.

    python bench/config_check.py                # ours, and the project before the config check
    python bench/config_check.py --before none  # ours only
    python bench/config_check.py --json PATH    # also write the rows as JSON

Each case runs the real command line (``python -m experiments ...``) in a fresh process, as a
user types it, with outputs in a temporary folder. ``ours`` is this checkout; ``before`` is the
same command run by the project at git revision ``--before`` (default: the last commit
before the config check, checked out into a temporary worktree), so the two columns are
measured in one run on the same machine. A case shows its exit status and the first line of
its message. The goal: every bad input refused in under 2 s, before any data is built or any
job of a sweep starts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "65414b14f45fd80b269a0fecb8ab3a7fb5c59019"  # the project before the config check
TINY = [
    "data.synthetic.sessions=40",
    "env.num_envs=8",
    "model.collector.frames_per_env=8",
    "model.collector.iterations=2",
    "model.eval.every_n_iterations=1",
    "export.enabled=false",
    "logger=none",
    "print_config=false",
    "quiet=true",
]
CASES = {
    "a negative cost": ["+model=ppo", "env.costs.commission_bps=-1"],
    "a typo'd key (+key)": ["+model=ppo", "+env.costs.comission_bps=1"],
    "a typo'd key": ["+model=ppo", "env.costs.comission_bps=1"],
    "an unknown _target_": ["+model=ppo", "env.actions._target_=envs.actions.TargetActionz"],
    "a curriculum on 2 processes": [
        "+model=ppo",
        "env=dual_ticker",
        "curriculum=dual_ticker_3phase",
        "hardware=ddp_cpu",
    ],
    "job 3 of a multirun invalid": [
        "-m",
        "+model=ppo",
        "env.num_envs=4,8,-3",
        *TINY[:1],
        *TINY[2:],
    ],
}


def run(python: list[str], args: list[str], cwd: Path, out: Path, env: dict) -> dict:
    start = time.perf_counter()
    done = subprocess.run(
        [*python, "-m", "experiments", *args, f"paths.output_root={out}"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    text = (done.stderr or done.stdout).strip().splitlines()
    first = next((line for line in text if line.startswith(("Error", "Could not"))), "")
    first = first or (text[-1] if text else "")
    jobs = len(list(out.rglob("metrics.json")))
    return {"seconds": seconds, "exit": done.returncode, "message": first[:110], "jobs_run": jobs}


def worktree(revision: str, into: Path) -> Path | None:
    """A checkout of ``revision`` (None when git or the revision is not there)."""
    done = subprocess.run(
        ["git", "worktree", "add", "--detach", str(into), revision],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return into if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default=BEFORE, help="git revision to compare (or none)")
    parser.add_argument("--json", type=Path, help="write the rows to this file")
    args = parser.parse_args()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = worktree(args.before, tmp / "before") if args.before != "none" else None
        for name, case in CASES.items():
            row = {"case": name, "command": " ".join(case)}
            row["ours"] = run([sys.executable], case, ROOT, tmp / f"ours-{len(rows)}", env)
            if old is not None:
                # The old checkout's packages first on the path (this venv installs ours).
                old_env = {**env, "PYTHONPATH": str(old / "src")}
                row["before"] = run([sys.executable], case, old, tmp / f"old-{len(rows)}", old_env)
            rows.append(row)
        if old is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT)
            shutil.rmtree(old, ignore_errors=True)
    header = f"{'case':30} {'ours s':>7} {'exit':>4} {'jobs':>4} {'before s':>8} {'exit':>4} {'jobs':>4} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ours, before = row["ours"], row.get("before")
        b = (
            f"{before['seconds']:8.1f} {before['exit']:4d} {before['jobs_run']:4d} "
            f"{before['seconds'] / ours['seconds']:6.1f}"
            if before
            else f"{'-':>8} {'-':>4} {'-':>4} {'-':>6}"
        )
        print(
            f"{row['case']:30} {ours['seconds']:7.1f} {ours['exit']:4d} {ours['jobs_run']:4d} {b}"
        )
    print("\nmessages (ours):")
    for row in rows:
        print(f"  {row['case']}: {row['ours']['message']}")
    if any(r.get("before") for r in rows):
        print("messages (before):")
        for row in rows:
            print(f"  {row['case']}: {row['before']['message']}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
