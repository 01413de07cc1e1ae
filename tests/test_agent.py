"""Tests of modules.agents.base: what every RL agent shares (validation and test passes with their
baselines, the divergence check, the length in episodes, and checkpointable state)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from helpers.agents import ENV, dqn, fit, ppo, trainer
from helpers.envs import env_cfg, env_factory
from tensordict import TensorDict

from datamodules.errors import UserInputError
from envs.backtest import backtest, buy_and_hold_targets
from envs.evaluation import evaluate_policy
from envs.frictions import Frictions
from envs.metrics import metrics_to_floats
from envs.score import composite_score
from modules.agents.base import LOGGED, Evaluation
from modules.agents.ppo import PPOModule
from modules.family import TrainingDiverged

pytestmark = pytest.mark.usefixtures("single_thread")

AGENTS = {
    "ppo": lambda data, **kw: ppo(data, **kw),
    "ppo-gru": lambda data, **kw: ppo(data, network={"kind": "gru"}, **kw),
    "dqn": lambda data, **kw: dqn(data, **kw),
}


def floats(result) -> dict[str, float]:
    return metrics_to_floats({k: v[0] for k, v in result.metrics.items()})


# ------------------------------------------------------------------ evaluation
def test_validation_logs_sharpe_score_and_the_simulator_metrics(agent_data) -> None:
    module = ppo(agent_data)
    t = trainer(1, val_every=1)
    t.fit(module)
    logged = {k: float(v) for k, v in t.logged_metrics.items()}
    assert {f"val/{k}" for k in LOGGED} | {"val/score"} <= set(logged)
    assert all(math.isfinite(logged[f"val/{k}"]) for k in LOGGED)

    # the greedy policy's pass over the validation split, scored with the composite score
    result, _ = evaluate_policy(
        module.greedy_policy(), module.evaluation.make_env, agent_data.split.val
    )
    ours = floats(result)
    assert logged["val/score"] == pytest.approx(composite_score(ours), rel=1e-5, abs=1e-6)
    expected_sharpe = ours["sharpe"] if math.isfinite(ours["sharpe"]) else 0.0
    assert logged["val/sharpe"] == pytest.approx(expected_sharpe, rel=1e-5, abs=1e-6)
    assert logged["val/total_return"] == pytest.approx(ours["total_return"], rel=1e-5, abs=1e-9)


def test_validation_runs_every_n_iterations(agent_data) -> None:
    module = ppo(agent_data, iterations=2, frames_per_env=8)
    seen = []

    class Count(pl.Callback):
        def on_validation_end(self, trainer, pl_module) -> None:
            seen.append(pl_module.iteration)

    trainer(2, val_every=2, callbacks=[Count()]).fit(module)
    assert seen == [2]


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_test_step_reports_the_strategy_and_three_baselines(agent_data, agent) -> None:
    module = AGENTS[agent](agent_data)
    t = trainer(1)
    t.fit(module)
    t.test(module, verbose=False)
    reports = module.reports["test"]
    assert set(reports) == {"strategy", "buy_and_hold", "flat", "random"}
    market, span = agent_data.market, agent_data.split.test

    strategy, _ = evaluate_policy(module.greedy_policy(), module.evaluation.make_env, span)
    torch.testing.assert_close(reports["strategy"].equity, strategy.equity)
    steps = strategy.returns.shape[1]
    assert all(r.returns.shape == (1, steps) for r in reports.values())
    assert all((r.timestamps == strategy.timestamps).all() for r in reports.values())

    flat = reports["flat"]
    assert bool((flat.returns == 0).all()) and bool((flat.equity == 100_000.0).all())
    assert composite_score(floats(flat)) == 0.0

    hold = backtest(
        market,
        buy_and_hold_targets(steps, market.num_assets),
        span[0],
        Frictions.from_config(ENV["costs"]),
        ENV["capital"],
    )
    torch.testing.assert_close(reports["buy_and_hold"].returns, hold.returns)
    torch.testing.assert_close(reports["buy_and_hold"].equity, hold.equity)

    logged = {k: float(v) for k, v in t.logged_metrics.items()}
    for prefix in ("test/", "test/buy_and_hold_", "test/flat_", "test/random_"):
        assert f"{prefix}score" in logged and f"{prefix}sharpe" in logged
    assert logged["test/flat_total_return"] == 0.0
    assert logged["test/buy_and_hold_total_return"] == pytest.approx(
        floats(hold)["total_return"], rel=1e-5
    )
    assert set(module.risk_totals) == {k[len("test/risk_") :] for k in logged if "risk_" in k}


def test_random_baseline_is_seeded(agent_data) -> None:
    module = ppo(agent_data)
    t = trainer(1)
    t.test(module, verbose=False)
    first = module.reports["test"]["random"]
    assert int(first.fills.sum()) > 0  # it trades
    t.test(module, verbose=False)
    torch.testing.assert_close(module.reports["test"]["random"].equity, first.equity)


def test_baselines_start_where_the_strategy_starts_with_a_longer_window(agent_data) -> None:
    factory = env_factory(agent_data.market, env_cfg(episode={"length": 10, "window": 5}))
    torch.manual_seed(0)
    trading = factory(agent_data.split.train, num_envs=4)
    evaluation = Evaluation(factory, agent_data.split.val, agent_data.split.test)
    module = PPOModule(
        trading,
        evaluation,
        collector={"frames_per_env": 8, "iterations": 1},
        network={"hidden_sizes": (16,)},
        optim={"epochs": 1, "minibatch_size": 32},
    )
    trainer(1).test(module, verbose=False)
    reports = module.reports["test"]
    # the split's first bar: its window of five bars reaches back into the validation split
    start = agent_data.market.timestamps[agent_data.split.test[0]]
    for name in ("strategy", "buy_and_hold", "flat", "random"):
        assert reports[name].timestamps[0] == start
        assert (reports[name].timestamps == reports["strategy"].timestamps).all()


# ------------------------------------------------------------------ divergence
def test_a_nan_parameter_stops_training_naming_it(agent_data) -> None:
    module = dqn(agent_data, learning_starts=64 * 200)  # no update: only the injected NaN
    with torch.no_grad():
        module.qnet.advantage.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"qnet\.advantage\.weight") as err:
        trainer(1).fit(module)
    assert "iteration 1" in str(err.value)
    assert isinstance(err.value, UserInputError)


def test_a_nan_critic_makes_ppo_diverge(agent_data) -> None:
    # one epoch of one minibatch: the NaN values reach the losses and every updated weight
    module = ppo(agent_data, optim={"epochs": 1, "minibatch_size": 1024})
    with torch.no_grad():
        module.value_net.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="loss_critic") as err:
        trainer(1).fit(module)
    message = str(err.value)
    assert "became NaN or infinite" in message and "iteration 1" in message
    assert "policy_net." in message or "value_net." in message  # a parameter is named
    assert "model.optim" in message  # and how to avoid it


def test_a_nan_critic_makes_ppo_diverge_with_several_minibatches(agent_data) -> None:
    module = ppo(agent_data, optim={"epochs": 2, "minibatch_size": 32})
    with torch.no_grad():
        module.value_net.head.bias.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"policy_net\.|value_net\."):
        trainer(1).fit(module)


# ------------------------------------------------------------------ run length and config
def test_a_length_in_episodes_stops_after_the_iteration_that_completes_them(agent_data) -> None:
    module = ppo(agent_data, length={"episodes": 20}, frames_per_env=8)
    assert module.max_iterations is None
    rec = fit(module, 10)  # 10 = a guard: the episodes stop it sooner
    episodes = rec.series("train/episodes")
    assert episodes[-1] >= 20 and all(e < 20 for e in episodes[:-1])
    assert module.iteration == len(episodes) < 10


def test_frames_per_env_below_one_is_rejected(agent_data) -> None:
    with pytest.raises(UserInputError, match=r"model\.collector\.frames_per_env is 0"):
        ppo(agent_data, frames_per_env=0)


def test_frames_per_batch_and_max_iterations(agent_data) -> None:
    module = ppo(agent_data, length={"total_frames": 1000}, num_envs=8, frames_per_env=16)
    assert module.num_envs == 8 and module.frames_per_batch == 128
    assert module.max_iterations == 8  # 1000 / 128, rounded up


def test_baselines_are_priced_with_the_costs_and_capital_of_the_env(agent_data) -> None:
    factory = env_factory(agent_data.market, env_cfg(costs={"commission_bps": 30.0}, capital=5e4))
    evaluation = Evaluation(factory, agent_data.split.val, agent_data.split.test)
    module = PPOModule(
        factory(agent_data.split.train, num_envs=2),
        evaluation,
        collector={"frames_per_env": 4, "iterations": 1},
        network={"hidden_sizes": (8,)},
    )
    trainer(1).test(module, verbose=False)
    hold = module.reports["test"]["buy_and_hold"]
    assert float(hold.equity[0, 0]) == 5e4
    expected = backtest(
        agent_data.market,
        buy_and_hold_targets(hold.returns.shape[1], 1),
        agent_data.split.test[0],
        Frictions(commission_bps=30.0),
        5e4,
    )
    torch.testing.assert_close(hold.equity, expected.equity)


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("agent", list(AGENTS))
def test_module_state_loads_weights_only_and_resumes_exactly(agent_data, tmp_path, agent) -> None:
    module = AGENTS[agent](agent_data, iterations=2)
    fit(module, 2)
    path = tmp_path / "state.pt"
    torch.save(module._state(), path)
    frames, completed = module.frames, module.tracker.completed
    running = module.tracker.running.clone()
    expected = module.collect()  # the batch the run would have collected next

    state = torch.load(path, weights_only=True)
    assert state["frames"] == frames and state["iteration"] == 2
    assert state["episodes"]["completed"] == completed
    fresh = AGENTS[agent](agent_data, iterations=2)
    fresh.load_state_dict(module.state_dict())
    fresh.on_load_checkpoint({"agent_state": state})  # before its collector exists: pending
    resumed = fresh.collect()  # builds the collector, restores the state (and RNG), collects
    assert fresh.frames == frames and fresh.iteration == 2
    assert fresh.tracker.completed == completed
    torch.testing.assert_close(fresh.tracker.running, running)
    for key in ("observation", "action", ("next", "reward"), ("next", "done")):
        torch.testing.assert_close(resumed[key], expected[key])


@pytest.mark.parametrize("agent", ["ppo", "dqn"])
def test_lightning_checkpoint_loads_weights_only(agent_data, tmp_path, agent) -> None:
    module = AGENTS[agent](agent_data)
    t = trainer(1)
    t.fit(module)
    path = tmp_path / "last.ckpt"
    t.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["agent_state"]["iteration"] == 1
    assert checkpoint["agent_state"]["collector"]["frames"] == module.frames
    assert set(checkpoint["state_dict"]) == set(module.state_dict())


@pytest.mark.parametrize("family", ["ppo_mlp", "dqn"])
def test_on_a_cpcv_fold_the_agent_trains_only_on_its_purged_training_groups(
    family, tmp_path
) -> None:
    from helpers.export import compose_run

    from experiments.export.bundle import rebuild

    extra = ["data.split.method=cpcv", "data.split.fold=6", "data.split.embargo_bars=8"]
    module, data = rebuild(compose_run(family, extra), tmp_path)
    split = data.split
    assert module.env.spans == split.spans("train") and len(module.env.spans) > 1
    window = data.window
    for a, b in module.env.spans:
        for ta, tb in (*split.spans("test"), *split.spans("val")):
            # No decision's window or fill bar touches a held-out span or its embargo.
            assert b <= ta or a - window + 1 >= tb + 8
    # Episodes started anywhere stay inside the training span they started in.
    env = module.env
    env.reset()
    starts = env.state["t"].tolist()
    span_of = [next(s for s in env.spans if s[0] <= t < s[1]) for t in starts]
    action = TensorDict({"action": torch.zeros(env.num_envs, dtype=torch.long)}, env.batch_size)
    for _ in range(env.length):
        env.step(action)
        now = env.state["t"].tolist()
        assert all(a <= t < b for t, (a, b) in zip(now, span_of, strict=True))
