"""Plug-ins of a user's own, with zero edits under src/: the ``myplugins`` package next to these
tests adds an A2C agent, an action scheme and a data source, selected from the command line
with ``hydra.searchpath`` (and the package on ``PYTHONPATH``) like the shipped ones."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml
from helpers import warm
from helpers.cli import (
    PLUGIN_SEARCHPATH,
    ctrl_c_once,
    plugin_env,
    read_metrics,
    run_app,
    run_folders,
)

from datamodules.sources import sample_path
from experiments.export.bundle import best_checkpoint, load_weights, rebuild
from experiments.inference import Policy

A2C = [
    PLUGIN_SEARCHPATH,
    "+model=a2c",
    "data.synthetic.sessions=60",
    "env.num_envs=8",
    "model.collector.frames_per_env=8",
    "model.collector.total_frames=null",
    "model.eval.every_n_iterations=50",
    "model.checkpoint.every_n_iterations=5",
    "model.network.hidden_sizes=[16]",
    "export.max_verify_samples=64",
    "print_config=false",
    "quiet=true",
]


def _a2c_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "experiments",
        *A2C,
        "model.collector.iterations=300",
        f"paths.output_root={out}",
        *extra,
    ]


@pytest.mark.slow  # moved out of the default suite (its time); CI runs it
def test_an_a2c_agent_of_a_users_own_trains_resumes_exactly_exports_and_loads(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    done = warm.run(_a2c_cmd(straight), env=plugin_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (first,) = run_folders(straight)
    resolved = yaml.safe_load((first / "resolved_config.yaml").read_text())
    assert resolved["model"]["_target_"] == "myplugins.a2c.A2CModule"
    assert list((first / "checkpoints").glob("best-iter*.ckpt"))

    # Ctrl+C once training is under way, then resume: the same numbers as without the stop.
    code, err = ctrl_c_once(_a2c_cmd(stopped), stopped, "last.ckpt", env=plugin_env())
    assert code == 0 and "Resume with:" in err, err[-3000:]
    (folder,) = [p.parent.parent for p in stopped.rglob("interrupted.ckpt")]
    state = torch.load(folder / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert 0 < state["agent_state"]["iteration"] < 300
    resumed = warm.run(
        _a2c_cmd(stopped, f"resume={folder}"),
        env=plugin_env(),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(first)["test"] == read_metrics(folder)["test"]
    assert read_metrics(first)["logged"] == read_metrics(folder)["logged"]

    # The verified export loads with Policy.load and acts as the trained network does.
    meta = json.loads((folder / "export" / "metadata.json").read_text())
    assert meta["family"] == "myplugins.a2c.A2CModule" and meta["kind"] == "agent"
    policy = Policy.load(folder / "export")
    cfg = yaml.safe_load((folder / "resolved_config.yaml").read_text())
    from omegaconf import OmegaConf

    module, _ = rebuild(OmegaConf.create(cfg), tmp_path)
    load_weights(module, best_checkpoint(folder))
    obs = np.random.default_rng(0).standard_normal((32, policy.obs_dim)).astype(np.float32)
    actions, logits = policy(obs)
    with torch.no_grad():
        expected = module.policy_net(torch.from_numpy(obs))
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(actions, expected.argmax(-1).numpy())


def test_an_action_scheme_of_a_users_own_is_chosen_with_env_actions(out):
    done = run_app(
        PLUGIN_SEARCHPATH,
        "+model=ppo",
        "env.actions=exposure",  # conf/env/actions/exposure.yaml in the plug-in's conf folder
        "env.actions.steps=2",
        "data.synthetic.sessions=40",
        "env.num_envs=4",
        "model.collector.frames_per_env=8",
        "model.collector.iterations=2",
        "model.eval.every_n_iterations=1",
        "model.network.hidden_sizes=[16]",
        "export.max_verify_samples=32",
        "logger=none",
        "quiet=true",
        "print_config=false",
        output_root=out,
        env=plugin_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = run_folders(out)
    resolved = yaml.safe_load((folder / "resolved_config.yaml").read_text())
    assert resolved["env"]["actions"]["_target_"] == "myplugins.actions.ExposureActions"
    meta = json.loads((folder / "export" / "metadata.json").read_text())
    assert meta["action_map"] == {"0": [0.0], "1": [0.5], "2": [1.0]}
    assert meta["action_meanings"] == ["exposure=0", "exposure=0.5", "exposure=1"]


@pytest.fixture(scope="module")
def msft_sqlite(tmp_path_factory) -> Path:
    """The shipped daily MSFT bars in a SQLite table, as a desk might keep them."""
    path = tmp_path_factory.mktemp("db") / "bars.sqlite"
    frame = pl.read_parquet(sample_path()).filter(pl.col("ticker") == "MSFT")
    rows = frame.select(
        "ticker",
        pl.col("timestamp").dt.strftime("%Y-%m-%dT%H:%M:%S"),
        "open",
        "high",
        "low",
        "close",
        "volume",
    ).rows()
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE bars (ticker TEXT, timestamp TEXT, open REAL, high REAL, low REAL, "
            "close REAL, volume REAL, PRIMARY KEY (ticker, timestamp))"
        )
        db.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return path


SAME_DATA = [
    "env.tickers=[MSFT]",
    "data.window=16",
    "data.batch_size=128",
    "data.split.gap_bars=5",
    "model.trainer.max_epochs=1",
    "model.trainer.limit_train_batches=4",
    "export.enabled=false",
    "logger=none",
    "print_config=false",
]


def test_a_data_source_of_a_users_own_goes_through_the_same_pipeline(tmp_path, msft_sqlite):
    ours = run_app(
        PLUGIN_SEARCHPATH,
        "+model=lstm",
        "data=sqlite",
        f"data.path={msft_sqlite}",
        *SAME_DATA,
        output_root=tmp_path / "sqlite",
        env=plugin_env(),
    )
    assert ours.returncode == 0, ours.stderr[-3000:]
    shipped = run_app("+model=lstm", "data=sample", *SAME_DATA, output_root=tmp_path / "sample")
    assert shipped.returncode == 0, shipped.stderr[-3000:]
    a = read_metrics(run_folders(tmp_path / "sqlite")[0])
    b = read_metrics(run_folders(tmp_path / "sample")[0])
    assert a["tickers"] == ["MSFT"] and a["split"] == b["split"]
    assert a["test"] == b["test"]  # the same bars in, the same numbers out


def test_a_bad_row_of_a_users_source_is_reported_by_the_shared_validation(tmp_path, msft_sqlite):
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(msft_sqlite.read_bytes())
    with sqlite3.connect(broken) as db:
        db.execute("UPDATE bars SET high = low / 2 WHERE timestamp = '2005-06-01T00:00:00'")
    done = run_app(
        PLUGIN_SEARCHPATH,
        "+model=lstm",
        "data=sqlite",
        f"data.path={broken}",
        *SAME_DATA,
        output_root=tmp_path / "out",
        env=plugin_env(),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "bars.sqlite" not in done.stderr and "broken.sqlite:bars" in done.stderr
    assert "high >= max(open, close)" in done.stderr


def test_a_plug_in_with_an_unknown_key_is_refused_by_the_config_check(out):
    done = run_app(
        PLUGIN_SEARCHPATH,
        "+model=a2c",
        "+model.a2c.learning_rate=0.1",
        output_root=out,
        env=plugin_env(),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "model.a2c.learning_rate is not a setting" in done.stderr
    assert "myplugins.a2c.A2CConfig" in done.stderr
