"""Honest progress: an agent run shows frames done of planned, frames/s, time left, the episode
return and the last validation score; its learning curves land in learning_curves.csv; a normal
run's console is free of library chatter (``weights_only``, ONNX passes) and fits on a screen."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers.agents import ppo
from helpers.cli import TINY_AGENT, run_app, run_folders
from omegaconf import OmegaConf

from experiments.run.trainer import make_trainer
from experiments.runtime.noise import quiet_library_noise
from modules.agents.progress import CURVES_FILE, AgentProgressBar, LearningCurves, plan_of
from modules.hardware import Hardware

# A normal agent run (export on, progress bar on), small enough for the default suite.
NORMAL_RUN = ["+model=ppo", "env=dual_ticker", *TINY_AGENT, "logger=none"]
SCREEN_LINES = 50  # a terminal screen


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory) -> tuple[str, Path]:
    """One normal PPO run from the command line: its console output and its run folder."""
    out = tmp_path_factory.mktemp("progress") / "outputs"
    result = run_app(*NORMAL_RUN, output_root=out)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = run_folders(out)
    return result.stdout + result.stderr, folder


def cpu() -> Hardware:
    return Hardware(
        accelerator="cpu",
        devices=1,
        num_nodes=1,
        world_size=1,
        rank=0,
        device=torch.device("cpu"),
        gpu_ids=(),
        strategy="auto",
        strategy_config="auto",
        precision="32-true",
        deterministic=False,
    )


def fit(module, folder: Path, iterations: int, *callbacks, ckpt_path=None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=iterations,
        logger=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks),
        enable_model_summary=False,
        enable_progress_bar=any(isinstance(c, AgentProgressBar) for c in callbacks),
        num_sanity_val_steps=0,
        check_val_every_n_epoch=1,
        log_every_n_steps=1,
        default_root_dir=str(folder),
        callbacks=list(callbacks),
    )
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


def curves(folder: Path) -> list[dict[str, str]]:
    with open(folder / CURVES_FILE, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_agent_bar_shows_frames_done_of_planned_rate_time_left_return_and_val_score(
    agent_data, tmp_path, capfd
):
    module = ppo(agent_data, iterations=3)  # 8 envs x 16 frames x 3 iterations = 384 frames
    assert plan_of(module) == ("frames", 384, 0)
    fit(module, tmp_path, 3, AgentProgressBar())
    line = capfd.readouterr().err.strip().splitlines()[-1]  # into a pipe: the final state once
    assert line.startswith("ppo: 384/384 frames · ")
    assert "frames/s" in line and "0:00:00 left" in line
    assert "episode return " in line and "episode return -" not in line  # episodes of 10 bars
    assert f"val score {float(pl_score(module)):.2f}" in line


def pl_score(module) -> float:
    return module.trainer.callback_metrics["val/score"]


def test_a_run_whose_length_is_in_episodes_counts_episodes_of_planned(agent_data, tmp_path, capfd):
    module = ppo(agent_data, length={"episodes": 20})
    unit, planned, done = plan_of(module)
    assert (unit, planned, done) == ("episodes", 20, 0)
    fit(module, tmp_path, -1, AgentProgressBar())
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"ppo: {module.episodes}/20 episodes · {module.frames:,} frames · ")
    assert module.episodes >= 20


def test_learning_curves_hold_every_iteration_and_the_validation_scores(agent_data, tmp_path):
    module = ppo(agent_data, iterations=3)
    fit(module, tmp_path, 3, LearningCurves())
    rows = curves(tmp_path)
    assert [float(r["iteration"]) for r in rows] == [1.0, 2.0, 3.0]
    assert [float(r["frames"]) for r in rows] == [128.0, 256.0, 384.0]
    for row in rows:
        assert float(row["train/fps"]) > 0
        assert row["val/score"] and row["val/sharpe"]
    assert float(rows[-1]["val/score"]) == pytest.approx(float(pl_score(module)), abs=1e-6)


def test_a_resumed_run_keeps_its_curves_up_to_the_iteration_it_resumed_from(agent_data, tmp_path):
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(ppo(agent_data, iterations=3), tmp_path, 2, LearningCurves(), saver)
    # A third iteration that never got checkpointed: the resume must drop it.
    fit(ppo(agent_data, iterations=3), tmp_path / "other", 3, LearningCurves())
    (tmp_path / CURVES_FILE).write_text((tmp_path / "other" / CURVES_FILE).read_text())
    module = ppo(agent_data, iterations=4)
    fit(module, tmp_path, 4, LearningCurves(), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    iterations = [float(r["iteration"]) for r in curves(tmp_path)]
    assert iterations == [1.0, 2.0, 3.0, 4.0]
    assert module.iteration == 4


def test_quiet_runs_have_no_bar_and_no_model_summary(agent_data, tmp_path):
    module = ppo(agent_data)
    quiet = make_trainer(OmegaConf.create({"quiet": True}), module, cpu(), tmp_path, None)
    assert not any(isinstance(c, AgentProgressBar) for c in quiet.callbacks)
    assert not any(isinstance(c, pl.callbacks.ModelSummary) for c in quiet.callbacks)
    shown = make_trainer(OmegaConf.create({"quiet": False}), module, cpu(), tmp_path, None)
    assert any(isinstance(c, AgentProgressBar) for c in shown.callbacks)
    assert any(isinstance(c, LearningCurves) for c in shown.callbacks)


def test_library_chatter_is_dropped_and_warnings_stay(caplog):
    quiet_library_noise()
    quiet_library_noise()  # idempotent
    lightning = logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector")
    onnx = logging.getLogger("onnx_ir.passes.common.unused_removal")
    with caplog.at_level(logging.INFO):
        lightning.info("`weights_only` was not set, defaulting to `False`.")
        onnx.info("No unused functions to remove")
        lightning.info("a line Lightning means")
        lightning.warning("`weights_only` was not set and this is a warning")
        onnx.warning("an ONNX pass that failed")
    kept = [r.getMessage() for r in caplog.records]
    assert kept == [
        "a line Lightning means",
        "`weights_only` was not set and this is a warning",
        "an ONNX pass that failed",
    ]


def test_a_normal_run_prints_frames_of_planned_and_no_library_chatter(normal_run):
    output, _ = normal_run
    assert "ppo: 192/192 frames · " in output  # 8 envs x 8 frames x 3 iterations
    for chatter in ("weights_only", "onnx_ir", "onnxscript", "Restoring states", "💡 Tip"):
        assert chatter not in output, chatter
    assert "exported ppo to" in output  # the export ran, without its pass logs
    assert len(output.strip().splitlines()) <= SCREEN_LINES, output


def test_a_normal_run_keeps_its_learning_curves(normal_run):
    _, folder = normal_run
    rows = curves(folder)
    assert [float(r["frames"]) for r in rows] == [64.0, 128.0, 192.0]
    assert all(r["val/score"] for r in rows)
