"""Run the app as a user would, in a subprocess, with outputs in a test's folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import warm

# A run small enough for tests: 120 sessions of 15-min bars, one short epoch.
TINY = [
    "data.synthetic.sessions=120",
    "model.trainer.max_epochs=1",
    "model.trainer.limit_train_batches=4",
    "print_config=false",
    "export.enabled=false",  # export has its own tests (test_export.py)
]


# A tiny agent run (any agent family and env): 3 iterations of 8 envs x 8 frames, a
# validation pass after each. Add the model, the env and what the test needs.
TINY_AGENT = [
    "data.synthetic.sessions=60",
    "env.num_envs=8",
    "++model.collector.frames_per_env=8",
    "++model.collector.iterations=3",
    "++model.eval.every_n_iterations=1",
    "print_config=false",
]


def app_env() -> dict:
    """The environment the app runs in for tests: W&B offline and quiet, no inherited rank."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    env.pop("LOCAL_RANK", None)
    return env


TESTS = Path(__file__).resolve().parents[1]
PLUGINS = TESTS / "myplugins"  # a plug-in package of a user's own (model, action scheme, source)
PLUGIN_SEARCHPATH = f"hydra.searchpath=[file://{PLUGINS / 'conf'}]"


def plugin_env() -> dict:
    """:func:`app_env` with the folder of the ``myplugins`` package on ``PYTHONPATH``, as a user
    puts their own package there."""
    env = app_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH")) if p)
    return env


def run_app(
    *args: str,
    output_root: Path,
    module: str = "experiments",
    timeout: int = 600,
    env: dict | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """``python -m experiments ARGS`` with W&B offline and outputs under ``output_root``, as a
    process of its own (:func:`helpers.warm.run`; ``fresh``: a new interpreter)."""
    cmd = [sys.executable, "-m", module, *args]
    if module == "experiments":
        cmd.append(f"paths.output_root={output_root}")
    return warm.run(cmd, timeout=timeout, env=env or app_env(), fresh=fresh)


def run_compare(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m experiments.compare ARGS`` with no terminal (stdin closed)."""
    return warm.run(
        [sys.executable, "-m", "experiments.compare", *args],
        timeout=300,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def ctrl_c_once(
    cmd: list[str], watch: Path, pattern: str, timeout: float = 300, env: dict | None = None
) -> tuple[int, str]:
    """Start ``cmd``, send it one SIGINT as soon as a file matching ``pattern`` appears under
    ``watch`` (training is under way), and return its exit status and stderr."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or app_env()
    )
    deadline = time.time() + timeout
    while time.time() < deadline and not list(watch.rglob(pattern)):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def run_folders(output_root: Path) -> list[Path]:
    """Job folders (those holding metrics.json) under ``output_root``, oldest first."""
    return sorted(p.parent for p in output_root.rglob("metrics.json"))


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def dqn_cmd(
    out: Path, iterations: int, eval_every: int, checkpoint_every: int, *extra: str
) -> list[str]:
    """``python -m experiments`` of a small DQN run (8 envs x 8 frames an iteration) of
    ``iterations`` iterations, validating every ``eval_every`` and writing ``last.ckpt`` every
    ``checkpoint_every``, into ``out``; then the overrides ``extra``."""
    return [
        sys.executable,
        "-m",
        "experiments",
        "+model=dqn",
        "env=single_ticker",
        "data.synthetic.sessions=60",
        "env.num_envs=8",
        "model.collector.frames_per_env=8",
        f"model.collector.iterations={iterations}",
        "model.collector.learning_starts=64",
        "model.replay.batch_size=32",
        f"model.eval.every_n_iterations={eval_every}",
        f"model.checkpoint.every_n_iterations={checkpoint_every}",
        "print_config=false",
        "quiet=true",
        f"paths.output_root={out}",
        *extra,
    ]
