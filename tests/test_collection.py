"""The garbage collector around a command's start-up: off while the heavy imports run, then
on again with what they made frozen; a library import leaves it alone. Each check runs in
its own interpreter, since the collector's state is the process's."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.cli import app_env

# Prints, at exit: collector on, objects frozen, full passes (those over every object).
REPORT = """
import atexit, gc, sys
passes = []
gc.callbacks.append(lambda phase, info: phase == "start" and passes.append(info["generation"]))
atexit.register(lambda: print("STATE", gc.isenabled(), gc.get_freeze_count() > 0, passes.count(2)))
"""


def _state(script: str, *args: str) -> tuple[bool, bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", REPORT + script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=app_env(),
    )
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("STATE ")]
    enabled, frozen, passes = line.split()[1:]
    return enabled == "True", frozen == "True", int(passes)


def test_pause_stops_collection_and_resume_freezes_what_exists_and_collects_again():
    script = """
from experiments.runtime import collection
collection.pause()
assert not gc.isenabled()
junk = [[] for _ in range(100_000)]  # would start a few passes with collection on
assert gc.get_freeze_count() == 0
collection.resume()
collection.resume()  # a second call changes nothing
"""
    assert _state(script) == (True, True, 0)


def test_a_collector_that_was_off_before_stays_off():
    script = """
gc.disable()
from experiments.runtime import collection
collection.pause()
collection.resume()
"""
    assert _state(script) == (False, False, 0)


def test_importing_the_library_leaves_the_collector_alone():
    enabled, frozen, passes = _state("import experiments.run.entry, experiments.run.job, envs")
    assert (enabled, frozen) == (True, False)
    assert passes > 0  # torch's import alone starts a few


@pytest.mark.parametrize(
    "command", ["experiments.compare", "experiments.export", "experiments.ingest"]
)
def test_a_command_imports_without_passes_and_collects_before_its_main(command):
    # run_name other than __main__: the module's imports run, its main does not.
    script = f"import runpy; runpy.run_module({command!r}, run_name='imported')"
    assert _state(script) == (True, True, 0)


def test_the_app_collects_again_once_the_training_code_is_imported(tmp_path):
    # The requested 1h bars are finer than the sample's daily ones: an error raised by the
    # data step of training, after the training code was imported.
    script = "import runpy; runpy.run_module('experiments', run_name='__main__', alter_sys=True)"
    args = ["+model=lstm", "data=sample", "env.tickers=[MSFT]", "data.bar_size=1h"]
    enabled, frozen, passes = _state(script, *args, f"paths.output_root={tmp_path}")
    assert (enabled, frozen) == (True, True)
