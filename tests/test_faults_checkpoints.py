"""Damaged files met at resume, export and load: a checkpoint cut short (a crash or a full
disk while it was written) is named in one paragraph, set aside under a new name (never
deleted) and the newest intact one used; with none intact, one paragraph and exit 2; the
same for a damaged checkpoint at export and a damaged export bundle."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from helpers import warm
from helpers.cli import app_env, dqn_cmd, read_metrics, run_app, run_folders
from helpers.export import copy_bundle, exported

from experiments.inference.bundle import BundleError
from experiments.inference.policy import Policy
from experiments.runtime.checkpoints import checkpoint_problem, intact_checkpoint


def agent_cmd(out: Path, *extra: str) -> list[str]:
    """A DQN run of 10 iterations: ``last.ckpt`` every 5, the best one by validation every 4."""
    return dqn_cmd(out, 10, 4, 5, "export.enabled=false", "logger=none", *extra)


def one_paragraph(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run's folder (``best-iter*.ckpt`` and ``last.ckpt``); tests take copies."""
    out = tmp_path_factory.mktemp("finished")
    done = warm.run(agent_cmd(out), env=app_env())
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    return folder


def copy_run(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to / "run")
    return to / "run"


def cut_short(path: Path) -> int:
    """Truncate ``path`` to a third of its size, as a crash while writing leaves it."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 3)
    return size // 3


def test_a_truncated_last_checkpoint_is_set_aside_and_the_best_one_resumes(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    ckpts = run / "checkpoints"
    (best,) = ckpts.glob("best-iter*.ckpt")
    cut = cut_short(ckpts / "last.ckpt")
    (run / "metrics.json").unlink()  # what a run that died in its last save leaves

    done = warm.run(
        agent_cmd(tmp_path / "outputs", f"resume={run}"),
        env=app_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    notice = one_paragraph(done.stderr)
    assert "last.ckpt: it does not open" in notice and "set aside as last.ckpt.damaged" in notice
    assert f"resuming from {best.name}" in notice
    # The damaged bytes are kept; the run trained on from the best checkpoint to the end.
    assert (ckpts / "last.ckpt.damaged").stat().st_size == cut
    resumed = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 9
    assert torch.load(best, weights_only=True)["epoch"] < 9
    assert read_metrics(run)["test"]
    assert run_folders(tmp_path / "outputs") == []  # no new folder


def test_with_every_checkpoint_damaged_resume_is_one_paragraph_and_nothing_is_deleted(
    finished, tmp_path
):
    run = copy_run(finished, tmp_path)
    ckpts = run / "checkpoints"
    names = sorted(p.name for p in ckpts.glob("*.ckpt"))
    sizes = {name: cut_short(ckpts / name) for name in names}

    done = warm.run(
        agent_cmd(tmp_path / "outputs", f"resume={run}"),
        env=app_env(),
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    message = one_paragraph(done.stderr)
    assert "every checkpoint in" in message and "nothing was deleted" in message
    assert "dropping resume=" in message
    for name in names:
        assert name in message
        assert (ckpts / f"{name}.damaged").stat().st_size == sizes[name]
    assert not list(ckpts.glob("*.ckpt"))


def saved(state: object, path: Path, at: int) -> Path:
    """``torch.save`` with the file's modification time set to ``at`` seconds (so which one is
    newer does not hang on the file system's clock tick)."""
    torch.save(state, path)
    os.utime(path, ns=(at * 10**9, at * 10**9))
    return path


GOOD = {k: 0 for k in ("loops", "optimizer_states", "epoch", "global_step")}


def test_the_newest_intact_checkpoint_is_chosen_and_a_second_damage_gets_a_new_name(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    best = saved({**GOOD, "state_dict": {"w": torch.ones(2)}}, ckpts / "best-iter0003.ckpt", 100)
    last = saved({**GOOD, "state_dict": {}}, ckpts / "last.ckpt", 200)  # newest, holds no model
    assert checkpoint_problem(last) == "its state_dict is empty"
    assert intact_checkpoint(tmp_path, "resume=X") == best
    saved({"state_dict": {"w": torch.ones(2)}}, last, 300)  # damaged again
    assert "it lacks loops, optimizer_states" in checkpoint_problem(last)
    assert intact_checkpoint(tmp_path, "resume=X") == best
    assert (ckpts / "last.ckpt.damaged").is_file() and (ckpts / "last.ckpt.damaged-1").is_file()
    torch.save([1, 2], ckpts / "odd.ckpt")
    assert checkpoint_problem(ckpts / "odd.ckpt") == "it holds a list, not a training checkpoint"


def test_checkpoints_saved_in_the_same_clock_tick_are_tried_in_the_order_they_are_written(
    tmp_path,
):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    state = {**GOOD, "state_dict": {"w": torch.ones(2)}}
    for name in ("best-iter0003.ckpt", "best-iter0010.ckpt", "last.ckpt", "interrupted-1.ckpt"):
        saved(state, ckpts / name, 100)
    saved(state, ckpts / "best-iter0002.ckpt", 99)
    tried = []
    while (found := intact_checkpoint(tmp_path, "resume=X")) is not None:
        tried.append(found.name)
        found.unlink()
    assert tried == [
        "interrupted-1.ckpt",
        "last.ckpt",
        "best-iter0010.ckpt",
        "best-iter0003.ckpt",
        "best-iter0002.ckpt",
    ]


def test_export_of_a_damaged_checkpoint_is_one_paragraph_and_changes_nothing(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    (best,) = (run / "checkpoints").glob("best-iter*.ckpt")
    cut = cut_short(best)
    done = run_app(str(run), output_root=tmp_path, module="experiments.export")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    message = one_paragraph(done.stderr)
    assert f"{best} cannot be used: it does not open" in message and f"resume={run}" in message
    assert best.stat().st_size == cut and not list(run.glob("export*"))


def test_a_damaged_bundle_metadata_file_is_one_paragraph(tmp_path):
    root = tmp_path / "runs"
    bundle = copy_bundle(exported("dqn", root)[3], tmp_path / "export")
    meta = bundle / "metadata.json"
    meta.write_bytes(meta.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"metadata.json is damaged \(JSONDecodeError"):
        Policy.load(bundle)
