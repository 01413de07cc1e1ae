"""RL agents from the command line: every model x env pair trains, resumes exactly after
Ctrl+C, refuses what it cannot do, and learns what is there (slow tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import warm
from helpers.cli import (
    TINY_AGENT,
    app_env,
    ctrl_c_once,
    dqn_cmd,
    read_metrics,
    run_app,
    run_folders,
)

# An agent run small enough for tests: 60 sessions, 8 envs, 3 iterations of 8 steps.
AGENT_TINY = [
    *TINY_AGENT,
    "++model.checkpoint.every_n_iterations=1",
    "quiet=true",
    "export.enabled=false",  # export has its own tests (test_export.py)
]
DQN_TINY = ["++model.collector.learning_starts=64", "++model.replay.batch_size=32"]


def test_every_model_and_env_pair_trains_and_reports_against_baselines(out):
    # One sweep per model: a key one model does not take (model.replay for PPO) is refused.
    for model, extra in (("+model=ppo", []), ("+model=dqn", DQN_TINY)):
        result = run_app(
            "-m",
            model,
            "env=single_ticker,dual_ticker,portfolio",
            *AGENT_TINY,
            *extra,
            "logger=none",
            output_root=out,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    folders = run_folders(out)
    assert len(folders) == 6
    seen = set()
    for folder in folders:
        metrics = read_metrics(folder)
        assert set(metrics["test"]) == {"strategy", "buy_and_hold", "flat", "random"}
        assert metrics["test"]["flat"]["total_return"] == 0.0
        assert "val/score" in metrics["logged"] and "test/score" in metrics["logged"]
        assert (folder / "plots" / "equity_test.png").exists()
        assert list((folder / "checkpoints").glob("*.ckpt"))
        seen.add((metrics["model"], tuple(metrics["tickers"])))
    assert {m for m, _ in seen} == {"ppo", "dqn"}
    assert len({t for _, t in seen}) == 3


def test_ppo_with_a_gru_policy_trains_on_dual_ticker_and_logs_to_wandb(out):
    result = run_app(
        "+model=ppo",
        "env=dual_ticker",
        "model.network=gru",
        "env.episode.length=8",
        *AGENT_TINY,
        output_root=out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = run_folders(out)
    config = (folder / "resolved_config.yaml").read_text()
    assert "kind: gru" in config  # model.network=gru selected conf/model/network/gru.yaml
    logged = read_metrics(folder)["logged"]
    assert np.isfinite(logged["test/sharpe"])
    runs = list((folder / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = (runs[0] / f"run-{runs[0].name.split('-')[-1]}.wandb").read_bytes()
    for key in (b"train/fps", b"train/loss_critic", b"train/kl", b"train/episode_return"):
        assert key in history, key


def test_unknown_network_name_is_a_clear_error(out):
    result = run_app("+model=ppo", "model.network=transformerz", *AGENT_TINY, output_root=out)
    assert result.returncode == 2
    assert "model.network" in result.stderr and "gru" in result.stderr
    assert "Traceback" not in result.stderr


def test_dqn_refuses_a_recurrent_network_with_a_clear_message(out):
    result = run_app("+model=dqn", "model/network=gru", *AGENT_TINY, output_root=out)
    assert result.returncode == 2
    assert "model/network=mlp" in result.stderr and "Traceback" not in result.stderr


def test_a_strategy_other_than_ddp_is_refused_for_agents_with_a_clear_message(out):
    # DDP itself trains agents (tests/test_distributed.py); FSDP and the like do not.
    result = run_app(
        "+model=ppo",
        "env=dual_ticker",
        "hardware.devices=2",
        "hardware.strategy=fsdp",
        *AGENT_TINY,
        output_root=out,
    )
    assert result.returncode == 2
    assert "hardware.strategy=fsdp" in result.stderr and "hardware=ddp_cpu" in result.stderr
    assert "Traceback" not in result.stderr


def _agent_cmd(out: Path, *extra: str) -> list[str]:
    # export has its own tests (test_export.py)
    return dqn_cmd(out, 200, 10, 10, "export.enabled=false", *extra)


@pytest.mark.slow
def test_a_run_stopped_by_ctrl_c_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    done = warm.run(_agent_cmd(straight), env=app_env())
    assert done.returncode == 0, done.stderr[-3000:]

    # Interrupt once training is under way (the first periodic checkpoint exists).
    code, err = ctrl_c_once(_agent_cmd(stopped), stopped, "last.ckpt")
    assert code == 0, err[-3000:]
    assert "Resume with:" in err
    (folder,) = [p.parent.parent for p in stopped.rglob("interrupted.ckpt")]
    assert not (folder / "metrics.json").exists()
    checkpoint = torch.load(folder / "checkpoints" / "interrupted.ckpt", weights_only=True)
    assert 0 < checkpoint["agent_state"]["iteration"] < 200

    resumed = warm.run(_agent_cmd(stopped, f"resume={folder}"), env=app_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = read_metrics(run_folders(straight)[0])
    b = read_metrics(folder)
    assert a["test"] == b["test"]
    assert {k: v for k, v in a["logged"].items()} == {k: v for k, v in b["logged"].items()}
    # The resumed job kept the first job's files and continued its W&B run.
    assert len(list((folder / ".hydra").glob("resumed-*"))) == 1
    ids = {p.name.split("-")[-1] for p in (folder / "wandb").glob("offline-run-*")}
    assert len(ids) == 1 and len(list((folder / "wandb").glob("offline-run-*"))) == 2


@pytest.mark.slow
def test_resume_auto_finds_the_run_with_the_same_overrides(tmp_path):
    out = tmp_path / "outputs"
    first = warm.run(
        _agent_cmd(out, "model.collector.iterations=10", "logger=none"),
        env=app_env(),
    )
    assert first.returncode == 0, first.stderr[-3000:]
    (folder,) = run_folders(out)
    before = json.loads((folder / "metrics.json").read_text())
    again = warm.run(
        _agent_cmd(out, "model.collector.iterations=10", "logger=none", "resume=auto"),
        env=app_env(),
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert run_folders(out) == [folder]  # no new folder: it continued the finished run
    assert json.loads((folder / "metrics.json").read_text())["test"] == before["test"]


def test_resume_from_a_folder_without_checkpoints_is_a_clear_error(out, tmp_path):
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    result = run_app("+model=ppo", *AGENT_TINY, f"resume={empty}", output_root=out)
    assert result.returncode == 2
    assert "no checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_a_diverging_run_stops_with_a_clear_message(out):
    result = run_app(
        "+model=ppo",
        *AGENT_TINY,
        "env.reward.scale=1e40",  # float32 rewards overflow to inf: the critic's loss follows
        "logger=none",
        output_root=out,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "diverged" in result.stderr and "NaN" in result.stderr
    assert "Traceback" not in result.stderr


NO_COSTS = [
    "env.costs.commission_bps=0",
    "env.costs.spread_bps=0",
    "env.costs.slippage_bps=0",
    "env.costs.impact_coef=0",
]
LEARNING = {
    "ppo": ["model.collector.total_frames=160000"],
    "dqn": ["model.collector.total_frames=150000"],
}


def _oracle_sharpe(sessions: int) -> float:
    """Test-split Sharpe of a policy that knows the planted component: long when bar t's
    open-to-close return (which carries bar t's shock) is up, short when down."""
    from datamodules.sources import SyntheticSource
    from envs.backtest import backtest
    from envs.frictions import Frictions

    data = SyntheticSource(  # the split of conf/data (a 20-bar gap), as the app's run has it
        tickers=["NVDA"],
        bar_size="15min",
        seed=42,
        cache_dir=None,
        synthetic={"sessions": sessions, "planted_strength": 0.3},
    ).build()
    market, (start, stop) = data.market, data.split.test
    signs = np.sign(np.log(market.close / market.open))[start : stop - 1]
    result = backtest(market, torch.as_tensor(signs), start, Frictions(0, 0, 0, 0))
    return float(result.metrics["sharpe"][0])


def _learning_run(out: Path, model: str, *extra: str) -> dict:
    """Train ``model`` on 300 sessions of one synthetic ticker; return its metrics.json."""
    result = run_app(
        f"+model={model}",
        "env=single_ticker",
        "data.synthetic.sessions=300",
        *LEARNING[model],
        "model.eval.every_n_iterations=10",
        "print_config=false",
        "quiet=true",
        "logger=none",
        *extra,
        output_root=out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return read_metrics(run_folders(out)[0])


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ppo", "dqn"])
def test_agent_learns_a_planted_component(out, model):
    metrics = _learning_run(out, model, "data.synthetic.planted_strength=0.3", *NO_COSTS)
    sharpe = metrics["test"]["strategy"]["sharpe"]
    oracle = _oracle_sharpe(300)
    assert sharpe > 2.0 and sharpe >= 0.5 * oracle, (sharpe, oracle)
    # What the run reports about it: a 95% interval above 0 and the verdict.
    stats = metrics["statistics"]["test"]
    assert stats["intervals"]["strategy"]["sharpe"]["low"] > 0, stats["verdict"]
    assert stats["beats_buy_and_hold"] is True and stats["beats_flat"] is True, stats["verdict"]
    assert stats["verdict"].startswith(f"{model} beats buy-and-hold")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ppo", "dqn"])
def test_agent_does_not_beat_flat_on_a_market_with_nothing_to_learn(out, model):
    metrics = _learning_run(out, model)  # costs on, nothing planted
    test = metrics["test"]["strategy"]
    start, stop = metrics["split"]["test"]
    # Flat has Sharpe 0; a Sharpe estimate over n bars has a standard error of about
    # sqrt(periods_per_year / n) (annualised) when there is nothing to find.
    noise = 2.0 * np.sqrt(metrics["periods_per_year"] / (stop - start))
    assert (test["sharpe"] or 0.0) < noise, (test["sharpe"], noise)
    assert test["total_return"] < 0.05
    stats = metrics["statistics"]["test"]
    assert stats["beats_buy_and_hold"] is False and stats["beats_flat"] is False, stats["verdict"]


def test_num_envs_auto_sizes_the_batch_within_its_cap_and_logs_the_choice(out):
    tiny = [o for o in AGENT_TINY if not o.startswith(("env.num_envs=", "quiet="))]
    result = run_app(
        "+model=ppo",
        "env.num_envs=auto",
        "env.auto_envs_cap=16",
        "model.optim.minibatch_size=auto",
        *tiny,
        "logger=none",
        output_root=out,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = run_folders(out)
    log = (folder / "train.log").read_text()
    assert "env.num_envs=auto: 16 envs" in log
    assert "16 envs x 8 frames per iteration" in log
