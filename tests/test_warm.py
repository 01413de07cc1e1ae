"""The tests' way of running the app's commands (helpers.warm): a process per command, forked
from an interpreter that has done the imports, that ends as a new interpreter would."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import warm
from helpers.cli import TINY, app_env

ERRORS = [
    ("experiments", "+model=gpt"),
    ("experiments", "+model=ppo", "+env.costs.comission_bps=1"),
    ("experiments", "+model=lstm", "data.bar_size=7parsecs", "logger=none"),
    ("experiments.compare", "/nowhere/runs"),
]


@pytest.mark.parametrize("args", ERRORS, ids=[a[-1] for a in ERRORS])
def test_a_warm_command_ends_as_a_new_interpreter_does(args, tmp_path):
    cmd = [sys.executable, "-m", *args]
    if args[0] == "experiments":
        cmd.append(f"paths.output_root={tmp_path}")
    env = app_env()
    fresh = warm.run(cmd, env=env, timeout=120, fresh=True)
    forked = warm.run(cmd, env=env, timeout=120)
    assert fresh.returncode != 0
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )


def test_a_warm_command_past_its_timeout_is_killed(tmp_path):
    cmd = [sys.executable, "-m", "experiments", "+model=lstm", *TINY, "logger=none"]
    with pytest.raises(subprocess.TimeoutExpired):
        warm.run([*cmd, f"paths.output_root={tmp_path}"], env=app_env(), timeout=0.5)
    # The warm interpreter serves the next command as before.
    done = warm.run([sys.executable, "-m", "experiments", "+model=gpt"], env=app_env(), timeout=60)
    assert done.returncode == 1 and "Could not find 'model/gpt'" in done.stderr
