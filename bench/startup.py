"""Seconds a command takes end to end with our handling of Python's garbage collector at
start-up (``experiments.runtime.collection``) beside Python's default collector.

    python bench/startup.py                # 3 repeats of each case, ~2 minutes on 2 cores
    python bench/startup.py --repeats 5 --json /tmp/startup.json

Each case runs in a fresh process, as a user types it, with outputs in a temporary folder:

* **imports of a run**: ``import experiments.run.job, envs.trading, experiments.reports.run_page``
  (torch, Lightning, TorchRL, W&B's logger, pandera, scipy, matplotlib), nothing else;
* **tiny LSTM run** / **tiny PPO run**: ``python -m experiments`` training, evaluating and
  reporting a run of the size the tests use (``logger=none``: W&B's service is not started).

*ours* is the command as shipped: the collector paused during the command's imports, and
what they made frozen (``gc.freeze``) before training starts. *default* is the same command
with that pause turned into a no-op before the command starts (so the collector runs as
Python sets it). The two alternate, repeat after repeat, so both see the same machine; the
table shows each one's median and the ratio default / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import experiments.run.job, envs.trading, experiments.reports.run_page"
RUN = "import runpy; runpy.run_module('experiments', run_name='__main__', alter_sys=True)"
TINY = ["print_config=false", "export.enabled=false", "logger=none", "quiet=true"]
CASES = {
    "imports of a run": (IMPORTS, []),
    "tiny LSTM run": (
        RUN,
        [
            "+model=lstm",
            "data.synthetic.sessions=120",
            "model.trainer.max_epochs=1",
            "model.trainer.limit_train_batches=4",
            *TINY,
        ],
    ),
    "tiny PPO run": (
        RUN,
        [
            "+model=ppo",
            "env=dual_ticker",
            "data.synthetic.sessions=60",
            "env.num_envs=8",
            "model.collector.frames_per_env=8",
            "model.collector.iterations=3",
            "model.eval.every_n_iterations=1",
            *TINY,
        ],
    ),
}
# The imports case pauses and resumes around its imports, as a command's __main__ does.
PAUSED = "from experiments.runtime import collection; collection.pause()\n"
RESUMED = "\ncollection.resume()"
# The default collector: the pause a no-op, so resume has nothing to undo.
DEFAULT = "import experiments.runtime.collection as c; c.pause = lambda: None\n"


def timed(script: str, args: list[str], out: Path, env: dict) -> float:
    if args:
        args = [*args, f"paths.output_root={out}"]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=900,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{script!r} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant per case")
    parser.add_argument("--json", type=Path, help="write the rows to this file")
    args = parser.parse_args()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (script, case) in CASES.items():
            ours_script = PAUSED + script + RESUMED if script == IMPORTS else script
            times: dict[str, list[float]] = {"ours": [], "default": []}
            for i in range(args.repeats):
                out = Path(tmp) / f"{len(rows)}-{i}"
                times["ours"].append(timed(ours_script, case, out / "ours", env))
                times["default"].append(timed(DEFAULT + script, case, out / "default", env))
            rows.append(
                {
                    "case": name,
                    "command": " ".join(case) if case else script,
                    "ours_s": statistics.median(times["ours"]),
                    "default_s": statistics.median(times["default"]),
                    "ours_all_s": times["ours"],
                    "default_all_s": times["default"],
                }
            )
    header = f"{'case':18} {'ours s':>7} {'default s':>9} {'default/ours':>12}   runs each"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = row["default_s"] / row["ours_s"]
        print(
            f"{row['case']:18} {row['ours_s']:7.2f} {row['default_s']:9.2f} {ratio:12.2f}"
            f"   {args.repeats} (median)"
        )
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
