"""Tests of the trading env's rewards: pnl, ticker weights, log return, differential Sharpe,
normalisation, the reward-scale warning and the reported components."""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.envs import env_cfg, make_env
from helpers.markets import synthetic_data
from hydra.utils import instantiate
from tensordict import TensorDict

from datamodules.errors import ConfigError
from datamodules.market import Market
from datamodules.pipeline import MarketData
from envs.actions import TargetActions
from envs.rewards import (
    DifferentialSharpeReward,
    LogReturnReward,
    PnLReward,
    Reward,
    differential_sharpe,
)
from envs.trading import TradingEnv

CONF = Path(__file__).resolve().parents[1] / "conf" / "env"
CAPITAL = 100_000.0
NO_COSTS = {"commission_bps": 0.0, "spread_bps": 0.0, "slippage_bps": 0.0, "impact_coef": 0.0}


@pytest.fixture(scope="module")
def pair() -> MarketData:
    return synthetic_data(["AAA", "BBB"], sessions=40, seed=1)


def actions_for(env: TradingEnv, steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, env.actions.num_actions, (steps, env.num_envs), generator=gen)


def actions_for_n(num_envs: int, steps: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return torch.randint(0, 9, (steps, num_envs), generator=gen)


def run(env: TradingEnv, actions: torch.Tensor) -> dict[str, torch.Tensor]:
    """Step through ``actions`` (T, N); stacked (T, N) rewards, equities before/after, info."""
    env.reset()
    out: dict[str, list] = {"reward": [], "before": [], "after": []}
    for action in actions:
        before = {k: env.state[k].clone() for k in ("equity", "shares", "mark")}
        td = env.step(TensorDict({"action": action}, env.batch_size))["next"]
        out["before"].append(before["equity"])
        out["after"].append(env.state["equity"].clone())
        for key in ("shares", "mark"):
            out.setdefault(f"{key}_before", []).append(before[key])
        out.setdefault("shares_after", []).append(env.state["shares"].clone())
        out.setdefault("t", []).append(env.state["t"].clone())
        out["reward"].append(td["reward"].squeeze(-1))
        for key, value in td["info"].items():
            if key != "triggers":
                out.setdefault(key, []).append(value.squeeze(-1))
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("cls", [PnLReward, LogReturnReward, DifferentialSharpeReward])
def test_rewards_are_validated(cls) -> None:
    for scale in (0.0, -1.0):
        with pytest.raises(ConfigError, match="env.reward.scale"):
            cls(scale=scale)
    for eta in (0.0, 1.5):
        with pytest.raises(ConfigError, match="env.reward.normalize_eta"):
            cls(normalize_eta=eta)
    with pytest.raises(ConfigError, match="env.reward.warn_below.*env.reward.warn_above"):
        cls(warn_above=1e-3, warn_below=1.0)


def test_reward_specific_knobs_are_validated() -> None:
    with pytest.raises(ConfigError, match="env.reward.sharpe_eta"):
        DifferentialSharpeReward(sharpe_eta=0.0)
    with pytest.raises(ConfigError, match="env.reward.weights"):
        PnLReward(weights=["a lot", "little"])


@pytest.mark.parametrize(
    "name, cls, scale",
    [
        ("pnl", PnLReward, 1e4),
        ("log_return", LogReturnReward, 1e4),
        ("differential_sharpe", DifferentialSharpeReward, 1.0),
    ],
)
def test_each_reward_config_builds_its_reward_by_target(name, cls, scale) -> None:
    cfg = env_cfg(overrides=[f"reward={name}"])
    reward = instantiate(cfg["reward"])
    assert type(reward) is cls and isinstance(reward, Reward)
    assert reward.scale == scale and reward.normalize is False
    assert (reward.warn_above, reward.warn_below) == (1e3, 1e-6)


def test_a_bound_reward_is_a_copy_so_one_config_serves_several_envs(pair) -> None:
    reward = PnLReward(weights=[1.0, 0.0])
    span = pair.split.train
    actions = TargetActions
    low = TradingEnv(pair.market, span, actions=actions, reward=reward, dtype="float32")
    high = TradingEnv(pair.market, span, actions=actions, reward=reward, evaluation=True)
    assert reward.capital is None and low.reward is not reward and high.reward is not low.reward
    assert low.reward.dtype == torch.float32 and high.reward.dtype == torch.float64
    assert low.state["reward_var"].dtype == torch.float32


@pytest.mark.parametrize("scale", [1e4, 1.0])
def test_pnl_reward_is_the_equity_change_over_capital_times_scale(pair, scale) -> None:
    cfg = env_cfg("dual_ticker", dtype="float64", reward={"scale": scale})
    env = make_env(pair.market, pair.split.train, cfg, num_envs=6, seed=1)
    out = run(env, actions_for(env, 80))
    expected = (out["after"] - out["before"]) / CAPITAL * scale
    torch.testing.assert_close(out["reward"], expected.float(), rtol=1e-5, atol=1e-6 * scale)
    assert (out["reward"] != 0).any()


@pytest.mark.parametrize("scale", [1e4, 250.0])
def test_reward_is_pnl_minus_cost_minus_penalty(pair, scale) -> None:
    risk = {"max_daily_drawdown": 0.002, "drawdown_penalty": 3.0}
    cfg = env_cfg("dual_ticker", dtype="float64", risk=risk, reward={"scale": scale})
    env = make_env(pair.market, pair.split.train, cfg, num_envs=8, seed=2)
    out = run(env, actions_for(env, 120, seed=1))
    # pnl (before costs) and cost are in basis points of capital; the penalty in reward units.
    expected = (out["pnl"] - out["cost"]) * (scale / 1e4) - out["penalty"]
    torch.testing.assert_close(out["reward"], expected, rtol=1e-4, atol=1e-3)
    assert (out["penalty"] == 3.0).any() and (out["cost"] > 0).any()
    equity_change_bps = (out["after"] - out["before"]) / CAPITAL * 1e4
    torch.testing.assert_close(
        out["pnl"] - out["cost"], equity_change_bps.float(), rtol=1e-4, atol=1e-3
    )


def _second_ticker_constant(market: Market) -> Market:
    """The market with the second ticker's price frozen at 50."""
    prices = {}
    for name in ("open", "high", "low", "close"):
        values = getattr(market, name).copy()
        values[:, 1] = 50.0
        prices[name] = values
    return dataclasses.replace(market, **prices)


def test_reward_weights_one_zero_reward_only_the_first_ticker(pair) -> None:
    frozen = _second_ticker_constant(pair.market)
    cfg = env_cfg("dual_ticker", costs=NO_COSTS, dtype="float64")
    one_zero = {**cfg, "reward": {**cfg["reward"], "weights": [1.0, 0.0]}}

    def rollout(market: Market, config: dict) -> dict[str, torch.Tensor]:
        env = make_env(market, pair.split.train, config, num_envs=4, seed=3)
        return run(env, actions_for(env, 100, seed=2))

    first_only = rollout(pair.market, one_zero)
    # The first ticker's pnl of each bar (frictionless): held shares marked from the last close
    # to this close, traded shares from this open.
    t = first_only["t"]
    open_ = torch.as_tensor(pair.market.open[:, 0])[t]
    close = torch.as_tensor(pair.market.close[:, 0])[t]
    old, new = first_only["shares_before"][..., 0], first_only["shares_after"][..., 0]
    pnl_first = new * close - old * first_only["mark_before"][..., 0] - (new - old) * open_
    assert (pnl_first != 0).any()
    # Weights are relative and rescaled to average 1 per ticker: [1, 0] weighs the first
    # ticker's pnl 2 (of the pair's total 2) and the second's 0.
    expected = 2 * pnl_first / CAPITAL * 1e4
    torch.testing.assert_close(first_only["reward"], expected.float(), rtol=1e-5, atol=1e-3)
    assert not torch.allclose(first_only["reward"], first_only["pnl"], rtol=1e-3, atol=1e-2)
    # With the second ticker's price frozen, all the pnl is the first ticker's.
    frozen_first_only = rollout(frozen, one_zero)
    frozen_equal = rollout(frozen, cfg)
    torch.testing.assert_close(frozen_first_only["reward"], 2 * frozen_equal["reward"])
    torch.testing.assert_close(frozen_equal["reward"], frozen_equal["pnl"], rtol=1e-5, atol=1e-4)
    relative = {**cfg, "reward": {**cfg["reward"], "weights": [3.0, 0.0]}}
    torch.testing.assert_close(rollout(pair.market, relative)["reward"], first_only["reward"])


def test_log_return_reward(pair) -> None:
    log_return = ["reward=log_return", "~reward.weights"]
    cfg = env_cfg("dual_ticker", log_return, dtype="float64", reward={"scale": 100.0})
    env = make_env(pair.market, pair.split.train, cfg, num_envs=4, seed=4)
    out = run(env, actions_for(env, 100, seed=3))
    assert torch.isfinite(out["reward"]).all() and (out["reward"] != 0).any()
    expected = torch.log(out["after"] / out["before"]) * 100.0
    torch.testing.assert_close(out["reward"], expected.float(), rtol=1e-5, atol=1e-7)


def test_differential_sharpe_reward_follows_the_ema_recursion(pair) -> None:
    eta = 0.05
    reward = {"scale": 1.0, "sharpe_eta": eta}
    dsr = ["reward=differential_sharpe", "~reward.weights"]
    cfg = env_cfg("dual_ticker", dsr, dtype="float64", reward=reward)
    env = make_env(pair.market, pair.split.train, cfg, num_envs=4, seed=5)
    out = run(env, actions_for(env, 150, seed=4))
    assert torch.isfinite(out["reward"]).all() and (out["reward"] != 0).any()
    r = (out["after"] / out["before"] - 1.0).numpy()
    a = np.zeros(r.shape[1])
    b = np.zeros(r.shape[1])
    expected = np.zeros_like(r)
    for i in range(len(r)):
        var = b - a * a
        d = (b * (r[i] - a) - 0.5 * a * (r[i] ** 2 - b)) / np.maximum(var, 1e-12) ** 1.5
        expected[i] = np.where(var > 1e-12, d, 0.0)
        a, b = a + eta * (r[i] - a), b + eta * (r[i] ** 2 - b)
    torch.testing.assert_close(
        out["reward"], torch.as_tensor(expected).float(), rtol=1e-4, atol=1e-4
    )
    assert (out["reward"][0] == 0).all()  # no variance yet on the first step


def test_differential_sharpe_step() -> None:
    r = torch.tensor([0.01, -0.02], dtype=torch.float64)
    a = torch.tensor([0.001, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0002, 0.0], dtype=torch.float64)
    d, a2, b2 = differential_sharpe(r, a, b, 0.1)
    expected = (0.0002 * (0.01 - 0.001) - 0.5 * 0.001 * (1e-4 - 0.0002)) / (
        0.0002 - 0.001**2
    ) ** 1.5
    assert float(d[0]) == pytest.approx(expected)
    assert float(d[1]) == 0.0  # zero variance: no signal
    torch.testing.assert_close(a2, a + 0.1 * (r - a))
    torch.testing.assert_close(b2, b + 0.1 * (r * r - b))


def test_normalized_reward_divides_by_a_running_std(pair) -> None:
    eta = 0.1
    base = env_cfg("dual_ticker", dtype="float64")
    norm = env_cfg("dual_ticker", dtype="float64", reward={"normalize": True, "normalize_eta": eta})
    raw = run(make_env(pair.market, pair.split.train, base, 4, seed=6), actions_for_n(4, 60))
    scaled = run(make_env(pair.market, pair.split.train, norm, 4, seed=6), actions_for_n(4, 60))
    var = 1.0
    for i in range(60):
        var = (1 - eta) * var + eta * float((raw["reward"][i].double() ** 2).mean())
        expected = raw["reward"][i] / math.sqrt(var)
        torch.testing.assert_close(scaled["reward"][i], expected, rtol=1e-4, atol=1e-6)


def _scale_warnings(record: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in record if "env.reward.scale" in str(w.message)]


@pytest.mark.parametrize("scale", [1e9, 1e-9])
def test_env_warns_once_when_the_reward_scale_is_absurd(pair, scale) -> None:
    cfg = env_cfg("dual_ticker", reward={"scale": scale})
    env = make_env(pair.market, pair.split.train, cfg, num_envs=4, seed=8)
    with pytest.warns(UserWarning, match="env.reward.scale") as record:
        env.rollout(40, break_when_any_done=False)
        env.rollout(40, break_when_any_done=False)
    assert len(_scale_warnings(record)) == 1
    assert f"{scale:g}" in str(_scale_warnings(record)[0].message)


def test_env_does_not_warn_with_default_reward(pair) -> None:
    env = make_env(pair.market, pair.split.train, env_cfg("dual_ticker"), num_envs=4, seed=9)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        td = env.rollout(40, break_when_any_done=False)
    assert (td["next", "reward"] != 0).any()
    assert _scale_warnings(record) == []


def test_normalize_silences_an_absurd_scale(pair) -> None:
    cfg = env_cfg("dual_ticker", reward={"scale": 1e9, "normalize": True, "normalize_eta": 0.5})
    env = make_env(pair.market, pair.split.train, cfg, num_envs=4, seed=10)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        env.rollout(40, break_when_any_done=False)
    assert _scale_warnings(record) == []
