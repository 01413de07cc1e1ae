"""experiments.compare reads offline W&B runs in-process: the same config, summary, history,
names, group, job type and state as W&B's own command-line reader (``wandb leet inspect``)
gives for the same file, records larger than a block, resumed and killed runs included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules.errors import UserInputError
from experiments.compare.cli import load_offline
from experiments.compare.offline import BLOCK, offline_runs, read_run, rfc3339


def write_runs(specs: dict[str, dict]) -> dict[str, Path]:
    """Offline W&B runs written by W&B itself in one child process (as a run of the app writes
    them), each under its own root: a nested config (with a ``big``-character text), ``rows``
    logged rows (non-finite numbers among them), a summary and an ``exit_code``; ``sessions``
    > 1 resumes a run that many times under its ``run_id`` (a folder per session)."""
    script = """
import json, os, sys, time, wandb
for root, spec in json.loads(sys.argv[1]).items():
    for session in range(spec.get("sessions", 1)):
        if session:
            time.sleep(1.1)  # a session's folder is named by the second it starts
        run = wandb.init(dir=root, mode="offline", project="p", name="run-name", group="g",
                         job_type="phase1", tags=["a", "b"], id=spec.get("run_id"),
                         resume="allow", config={"model": {"lr": 0.001, "sizes": [8, 8]},
                                                 "seed": 3, "note": "x" * spec.get("big", 0)})
        for i in range(spec.get("rows", 30)):
            run.log({"train/loss": 1.0 / (i + 1), "trainer/global_step": i, "nested": {"a": i}})
        run.log({"val/sharpe": float("nan"), "val/cap": float("inf"), "val/score": 0.5})
        run.summary.update({"test/sharpe": 1.25, "test/flat_sharpe": None, "test/nested": {"k": 2}})
        run.finish(exit_code=spec.get("exit_code", 0))
"""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    roots = {str(spec.pop("root")): spec for spec in specs.values()}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(roots)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {name: offline_runs(Path(root))[-1] for name, root in zip(specs, roots, strict=True)}


def leet(folder: Path) -> dict:
    """The same run through ``wandb leet inspect`` (its summary view, then its records)."""

    def inspect(*flags: str) -> str:
        cmd = [sys.executable, "-m", "wandb", "leet", "inspect", *flags, str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    data = json.loads(inspect("--summary", "--json"))
    records = [json.loads(line) for line in inspect("--json").splitlines()]
    [run] = [r["run"] for r in records if r.get("type") == "run"]
    data["group"], data["job_type"] = run.get("run_group", ""), run.get("job_type", "")
    data["history"] = [r["history"]["item"] for r in records if r.get("type") == "history"]
    return data


KEYS = ("run_id", "name", "group", "job_type", "tags", "start_time", "state", "config", "summary")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wandb_runs")
    return write_runs(
        {
            "plain": {"root": root / "plain"},
            "big": {"root": root / "big", "rows": 5, "big": 3 * BLOCK},  # over three blocks
            "failed": {"root": root / "failed", "rows": 3, "exit_code": 1},
            "resumed": {"root": root / "resumed", "rows": 4, "run_id": "resumed1", "sessions": 2},
        }
    )


@pytest.mark.parametrize("which", ["plain", "big", "failed"])
def test_a_run_reads_as_wandbs_own_reader_reads_it(runs, which) -> None:
    ours, theirs = read_run(runs[which]), leet(runs[which])
    for key in KEYS:
        assert ours[key] == theirs[key], key
    assert ours["history"] == theirs["history"]


def test_what_a_run_holds(runs) -> None:
    run = read_run(runs["plain"])
    assert run["state"] == "finished" and run["group"] == "g" and run["job_type"] == "phase1"
    assert run["config"]["model"] == {"lr": 0.001, "sizes": [8, 8]} and run["config"]["seed"] == 3
    assert run["summary"]["test/sharpe"] == 1.25 and run["summary"]["test/nested"] == {"k": 2}
    assert "test/flat_sharpe" not in run["summary"]  # a None is left out, as W&B leaves it out
    losses = [row["train/loss"] for row in run["history"] if "train/loss" in row]
    assert losses == [1.0 / (i + 1) for i in range(30)]
    assert [row["_step"] for row in run["history"]] == list(range(31))
    last = run["history"][-1]  # non-finite numbers as W&B's readers give them
    assert last["val/sharpe"] == "NaN" and last["val/cap"] == "Infinity"
    assert len(read_run(runs["big"])["config"]["note"]) == 3 * BLOCK
    assert read_run(runs["failed"])["state"] == "failed"


def test_a_torn_last_record_ends_the_read_without_an_error(runs, tmp_path) -> None:
    import shutil

    torn = tmp_path / runs["plain"].name
    shutil.copytree(runs["plain"], torn)
    [log] = torn.glob("run-*.wandb")
    data = log.read_bytes()
    log.write_bytes(data[: len(data) - 40])  # cut inside the last record
    run = read_run(torn)
    assert run["run_id"] == read_run(runs["plain"])["run_id"]
    assert run["state"] == "running"  # its exit record is gone


def test_a_file_that_is_not_a_wandb_run_is_one_clear_error(tmp_path) -> None:
    folder = tmp_path / "offline-run-x"
    folder.mkdir()
    (folder / "run-x.wandb").write_bytes(b"not a wandb file at all")
    with pytest.raises(UserInputError, match="not a W&B run file"):
        read_run(folder)


def test_a_resumed_run_is_one_record_with_both_sessions_history(runs) -> None:
    root = runs["resumed"].parent
    assert len(offline_runs(root)) == 2  # one folder per session, one run id
    [record] = load_offline(root)
    steps = [row for row in record.history if "train/loss" in row]
    assert len(steps) == 2 * 4
    assert record.summary["test/sharpe"] == 1.25 and record.run_id == "resumed1"


def test_compare_reads_without_starting_a_process(runs, monkeypatch) -> None:
    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[:1]}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    records = load_offline(runs["plain"].parent)
    assert [r.name for r in records] == ["run-name"]


def test_start_times_are_written_as_wandbs_reader_writes_them() -> None:
    """Trailing zeros of the fraction dropped, none on a whole second (the runs above draw
    their start times, so the comparison with leet meets these cases only by chance)."""
    second = 1_795_000_857  # 2026-11-18T11:20:57Z
    assert rfc3339(second, 620_280_000) == "2026-11-18T11:20:57.62028Z"
    assert rfc3339(second, 5) == "2026-11-18T11:20:57.000000005Z"
    assert rfc3339(second, 0) == "2026-11-18T11:20:57Z"
