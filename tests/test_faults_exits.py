"""Every command ends promptly after an error with its own status, when its output is a pipe
(``cmd | tee log``, a test, CI) as when it is a terminal, whatever W&B's service does."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers.cli import app_env

from experiments.runtime.exits import EXIT_GRACE_S, SERVICE_STOP_S

# Far below the 300 s a hung command used to wait for its test's timeout.
PROMPT_S = 120

AGENT_TINY = [
    "data.synthetic.sessions=40",
    "env.num_envs=4",
    "++model.collector.frames_per_env=8",
    "++model.collector.iterations=2",
    "print_config=false",
    "quiet=true",
    "export.enabled=false",
]

UNREACHABLE_WANDB = {
    "WANDB_API_KEY": "a" * 40,
    "WANDB_BASE_URL": "http://127.0.0.1:9",  # nothing listens there
    "WANDB_HTTP_TIMEOUT": "2",
}


def piped(module: str, *args: str, env: dict | None = None) -> tuple[int, str, float]:
    """``python -m MODULE ARGS 2>&1 | cat``: status, everything printed, seconds to EOF."""
    cmd = " ".join([sys.executable, "-m", module, *(f"'{a}'" for a in args)])
    start = time.monotonic()
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{cmd} 2>&1 | cat"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROMPT_S,
        env={**app_env(), **(env or {})},
    )
    return done.returncode, done.stdout, time.monotonic() - start


CASES = {
    "experiments: a typo'd key": (
        "experiments",
        ["+model=lstm", "+env.costs.comission_bps=1"],
        {},
        "did you mean commission_bps",
    ),
    "experiments: training diverges with W&B logging": (
        "experiments",
        ["+model=ppo", *AGENT_TINY, "env.reward.scale=1e40"],
        {},
        "diverged",
    ),
    "compare: a folder without runs": ("experiments.compare", ["{tmp}"], {}, "No W&B runs"),
    "compare: W&B server unreachable": (
        "experiments.compare",
        ["sweep-x", "--online", "me/proj"],
        {**UNREACHABLE_WANDB, "HOME": "{tmp}"},  # no ~/.netrc: only the key above
        "wandb login",
    ),
    "export: not a run folder": ("experiments.export", ["{tmp}"], {}, "not a run folder"),
    "ingest: a file that does not exist": (
        "experiments.ingest",
        ["{tmp}/missing.csv", "--to", "duckdb:///{tmp}/m.duckdb"],
        {},
        "missing.csv",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_error_path_ends_promptly_when_piped(case, tmp_path):
    module, args, env, needle = CASES[case]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if module == "experiments":
        args.append(f"paths.output_root={tmp_path / 'outputs'}")
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    code, printed, seconds = piped(module, *args, env=env)
    assert code == 2, printed[-3000:]
    assert "Traceback" not in printed
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) == 1, printed  # the one paragraph, and nothing after it
    assert needle in lines[0]
    assert seconds < PROMPT_S


STUCK_SERVICE = textwrap.dedent(
    """
    import os, signal, sys
    import wandb
    from experiments.runtime.exits import run_command, wandb_service

    def main():
        run = wandb.init(mode="offline", dir=sys.argv[1], project="p")
        run.log({"x": 1.0})
        run.finish()
        service = wandb_service()
        print(service.pid, flush=True)
        os.kill(service.pid, signal.SIGSTOP)  # the service no longer answers anything
        print("Error: the command failed after its W&B run", file=sys.stderr)
        return 3

    run_command(main)
    """
)


def test_a_stuck_wandb_service_neither_hangs_the_command_nor_holds_its_pipe(tmp_path):
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", STUCK_SERVICE, str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROMPT_S,
        env={**app_env(), "WANDB_SILENT": "true"},
    )
    seconds = time.monotonic() - start
    assert done.returncode == 3, done.stderr[-3000:]
    assert done.stderr.strip() == "Error: the command failed after its W&B run"
    assert seconds < SERVICE_STOP_S + EXIT_GRACE_S + 30
    service = int(done.stdout.split()[0])
    assert not Path(f"/proc/{service}").exists()  # killed, not left behind
    assert list(tmp_path.rglob("*.wandb"))  # the run it finished is on disk


@pytest.mark.slow  # waits out SERVICE_STOP_S
def test_a_successful_command_still_says_when_the_service_had_to_be_killed(tmp_path):
    script = STUCK_SERVICE.replace("return 3", "return 0").replace(
        'print("Error: the command failed after its W&B run", file=sys.stderr)', "pass"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=PROMPT_S,
        env={**app_env(), "WANDB_SILENT": "true"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "did not stop within" in done.stderr and "was killed" in done.stderr
