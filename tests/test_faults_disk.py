"""A full disk, with a real kernel limit (RLIMIT_FSIZE lowered inside the run by the test
callback ``myplugins.disk.FillDisk``: every later write past the limit fails with EFBIG, as
one on a full disk fails with ENOSPC): the run stops with one paragraph naming the file and
the free space, every earlier file stays intact, and ``resume=`` then ends with exactly the
metrics of a run that never met it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import warm
from helpers.cli import PLUGINS, dqn_cmd, plugin_env, read_metrics, run_folders

from experiments.runtime.checkpoints import checkpoint_problem

LIMIT = 512 * 1024  # above every report file of this run, below its checkpoints (~1.1 MB)


def agent_cmd(out: Path, *extra: str) -> list[str]:
    """A DQN run of 20 iterations, ``last.ckpt`` every 4 (iterations 4, 8, ...)."""
    return dqn_cmd(out, 20, 10, 4, "logger=none", *extra)


def fill_disk(at_epoch: int | None, limit: int = LIMIT) -> list[str]:
    where = "null" if at_epoch is None else str(at_epoch)
    return [
        "+callbacks.fill._target_=myplugins.disk.FillDisk",
        f"+callbacks.fill.limit_bytes={limit}",
        f"+callbacks.fill.at_epoch={where}",
    ]


def app(cmd: list[str]) -> subprocess.CompletedProcess:
    assert PLUGINS.is_dir()
    return warm.run(cmd, env=plugin_env(), timeout=600)


def one_paragraph(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def same_metrics(a: Path, b: Path) -> None:
    ma, mb = read_metrics(a), read_metrics(b)
    assert ma["test"] == mb["test"] and ma["logged"] == mb["logged"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_disk_full_during_a_checkpoint_stops_the_run_and_resume_finishes_it(tmp_path):
    done = app(agent_cmd(tmp_path / "straight", "export.enabled=false"))
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "full"
    # The limit falls after iteration 6: the save of iteration 8's last.ckpt fails.
    message = one_paragraph(app(agent_cmd(out, "export.enabled=false", *fill_disk(5))))
    (folder,) = [p.parent.parent for p in out.rglob("checkpoints/last.ckpt")]
    assert f"Out of space while writing {folder / 'checkpoints' / 'last.ckpt'}" in message
    assert "free on the disk holding" in message and "ulimit -f" in message
    assert "intact" in message and f"resume={folder}" in message
    # The last good checkpoint (iteration 4) is intact and no partial file is left.
    ckpts = folder / "checkpoints"
    assert checkpoint_problem(ckpts / "last.ckpt") is None
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["epoch"] == 3
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt"]
    kept = snapshot(folder)

    resumed = app(agent_cmd(out, "export.enabled=false", f"resume={folder}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same_metrics(run_folders(tmp_path / "straight")[0], folder)
    after = snapshot(folder)
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "resolved_config.yaml"):
        assert after[name] == kept[name]  # the first run's files, as they were


@pytest.mark.slow
def test_a_disk_full_during_export_keeps_the_report_and_resume_exports(tmp_path):
    done = app(agent_cmd(tmp_path / "straight"))
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "full"
    message = one_paragraph(app(agent_cmd(out, *fill_disk(None))))
    (folder,) = run_folders(out)  # the report was written before the export
    assert f"Out of space while writing {folder}/.export-staging-" in message
    assert "free on the disk holding" in message and f"resume={folder}" in message
    assert not list(folder.glob("export*")) and not list(folder.glob(".export-staging-*"))
    same_metrics(run_folders(tmp_path / "straight")[0], folder)

    resumed = app(agent_cmd(out, f"resume={folder}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same_metrics(run_folders(tmp_path / "straight")[0], folder)
    assert (folder / "export" / "metadata.json").is_file()
    assert not list(folder.glob("export-*"))


@pytest.mark.slow
def test_a_disk_full_while_the_report_is_written_stops_and_resume_reports(tmp_path):
    done = app(agent_cmd(tmp_path / "straight", "export.enabled=false"))
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "full"
    # 4 KB: the first report file (metrics, returns, trades, plots) already does not fit.
    message = one_paragraph(app(agent_cmd(out, "export.enabled=false", *fill_disk(None, 4096))))
    (folder,) = [p.parent.parent for p in out.rglob("checkpoints/last.ckpt")]
    # Python's error of a failed write names no file: the run folder is named (the report's
    # writes wrapped in experiments.runtime.disk.writing(path) would name each file).
    assert f"Out of space while writing a file in {folder}" in message
    assert "4.0 KB is in force" in message
    assert f"resume={folder}" in message
    assert checkpoint_problem(folder / "checkpoints" / "last.ckpt") is None

    resumed = app(agent_cmd(out, "export.enabled=false", f"resume={folder}"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    same_metrics(run_folders(tmp_path / "straight")[0], folder)


WRITE_PAST_THE_LIMIT = """
import resource, signal, sys
from pathlib import Path
from experiments.runtime.disk import DiskFull, writing
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
path = Path(sys.argv[1])
try:
    with writing(path):
        path.write_bytes(b"x" * 1024 * 1024)
except DiskFull as err:
    print(err)
"""


def test_a_write_past_the_limit_names_its_file_and_the_free_space(tmp_path):
    target = tmp_path / "metrics.json"
    done = subprocess.run(
        [sys.executable, "-c", WRITE_PAST_THE_LIMIT, str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f"Out of space while writing {target} (File too large)" in done.stdout
    assert "free on the disk holding" in done.stdout and "64.0 KB is in force" in done.stdout
