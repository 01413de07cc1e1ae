"""Preemption: SIGTERM (what SLURM and most schedulers send before they kill a job) saves a
checkpoint at the end of the iteration and exits 0 as Ctrl+C does; the resumed run ends with
exactly the metrics of one that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.cli import app_env, dqn_cmd, read_metrics, run_folders


def agent_cmd(out: Path, *extra: str) -> list[str]:
    """A DQN run of 40 iterations with ``last.ckpt`` every 5."""
    return dqn_cmd(out, 40, 10, 5, "export.enabled=false", "logger=none", *extra)


def terminated_once(cmd: list[str], watch: Path, timeout: float = 300) -> tuple[int, str]:
    """Start ``cmd``, send it SIGTERM once its first ``last.ckpt`` exists; status, stderr."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=app_env()
    )
    deadline = time.time() + timeout
    while time.time() < deadline and not list(watch.rglob("last.ckpt")):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def stop_with_sigterm(out: Path) -> Path:
    code, err = terminated_once(agent_cmd(out), out)
    assert code == 0, err[-3000:]
    assert "SIGTERM received" in err and "Resume with:" in err
    (saved,) = out.rglob("interrupted.ckpt")
    assert not list(out.rglob(".*.partial"))
    assert 0 < torch.load(saved, weights_only=True)["agent_state"]["iteration"] < 40
    folder = saved.parent.parent
    assert not (folder / "metrics.json").exists()
    return folder


def test_sigterm_saves_a_checkpoint_and_exits_0(tmp_path):
    stop_with_sigterm(tmp_path / "stopped")


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    straight = subprocess.run(
        agent_cmd(tmp_path / "straight"), capture_output=True, text=True, env=app_env()
    )
    assert straight.returncode == 0, straight.stderr[-3000:]
    folder = stop_with_sigterm(tmp_path / "stopped")
    resumed = subprocess.run(
        agent_cmd(tmp_path / "stopped", f"resume={folder}"),
        capture_output=True,
        text=True,
        env=app_env(),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = read_metrics(run_folders(tmp_path / "straight")[0]), read_metrics(folder)
    assert a["test"] == b["test"] and a["logged"] == b["logged"]


def submitit_task(folder: Path) -> int | None:
    """The pid of the submitit_local task running a job whose submitit folder is under
    ``folder`` (its command line names that folder), or None."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        ours = "submitit.core._submit" in cmdline and str(folder) in cmdline
        if ours and b"SUBMITIT_LOCAL_GLOBALID=0" in environ:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    one_thread = "hardware.num_threads=1"  # the same arithmetic in the run and in the job
    straight = subprocess.run(
        agent_cmd(tmp_path / "straight", one_thread), capture_output=True, text=True, env=app_env()
    )
    assert straight.returncode == 0, straight.stderr[-3000:]

    out = tmp_path / "sweep"
    cmd = agent_cmd(out, one_thread, "hydra/launcher=submitit_local")
    cmd.insert(3, "-m")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=app_env()
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("multirun/*/*/0/checkpoints/last.ckpt")):
        time.sleep(0.1)
    task = submitit_task(out)
    assert task is not None, "no submitit task found"
    os.kill(task, signal.SIGUSR2)  # what SLURM sends a job it preempts (--signal=USR2)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]

    (sweep,) = (out / "multirun").glob("*/*")
    job = sweep / "0"
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*.out"))
    assert "Requeued job" in logs + "".join(
        p.read_text() for p in (sweep / ".submitit").rglob("*.err")
    )
    assert list((job / ".hydra").glob("resumed-*"))  # the requeued job continued the folder
    a, b = read_metrics(run_folders(tmp_path / "straight")[0]), read_metrics(job)
    assert a["test"] == b["test"] and a["logged"] == b["logged"]
