"""Tests of envs.evaluation: a policy's deterministic pass over a split, scored like a backtest."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers.envs import env_cfg, env_factory
from helpers.markets import crafted, synthetic_data

from datamodules.market import Market
from datamodules.pipeline import MarketData
from envs.accounting import COST_COMPONENTS, DEFAULT_CAPITAL
from envs.actions import TargetActions
from envs.backtest import backtest, buy_and_hold_targets
from envs.evaluation import evaluate_policy
from envs.frictions import Frictions
from envs.metrics import compute_metrics
from envs.risk import RULES

CAPITAL = 100_000.0


@pytest.fixture(scope="module")
def data() -> MarketData:
    return synthetic_data(["AAA", "BBB", "CCC"], sessions=40, seed=2)


def evaluate(policy, market: Market, span: tuple[int, int], cfg: dict, paths: int = 1):
    """``evaluate_policy`` with the env configured by ``cfg`` over ``market``."""
    return evaluate_policy(policy, env_factory(market, cfg), span, paths=paths)


def only_asset(market: Market, i: int) -> Market:
    per_bar = ("open", "high", "low", "close", "volume", "sigma", "adv", "features")
    return dataclasses.replace(
        market,
        tickers=(market.tickers[i],),
        **{name: getattr(market, name)[:, i : i + 1] for name in per_bar},
    )


def constant(action: int):
    return lambda obs: torch.full((obs.shape[0],), action, dtype=torch.long)


@pytest.mark.parametrize("assets", [1, 3])
def test_always_long_equals_buy_and_hold_backtest(data, assets) -> None:
    market = data.market if assets == 3 else only_asset(data.market, 0)
    long_all = TargetActions(market).names.index("/".join(["+1"] * assets))
    span = data.split.val
    cfg = env_cfg()
    result, counts = evaluate(constant(long_all), market, span, cfg, paths=2)
    steps = span[1] - 1 - span[0]
    reference = backtest(
        market,
        buy_and_hold_targets(steps, assets),
        span[0],
        Frictions.from_config(cfg["costs"]),
    )
    assert DEFAULT_CAPITAL == CAPITAL == cfg["capital"]
    assert result.equity.shape == (2, steps + 1) and result.returns.shape == (2, steps)
    assert (result.timestamps == reference.timestamps).all()
    for name in ("equity", "returns", "weights", "targets", "fills"):
        ref = getattr(reference, name).expand_as(getattr(result, name)).to(torch.float64)
        torch.testing.assert_close(getattr(result, name), ref, rtol=1e-12, atol=1e-9, msg=name)
    # Costs and turnover pass through the env's float32 info: equal to float32 precision.
    total = sum(reference.costs[name] for name in COST_COMPONENTS).expand(2, -1)
    assert float(total[0, 0]) > 0 and (total[:, 1:] == 0).all()
    torch.testing.assert_close(result.costs["total"], total, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(result.turnover, reference.turnover.expand(2, -1), rtol=1e-6, atol=0)
    for name, value in reference.metrics.items():
        torch.testing.assert_close(
            result.metrics[name], value.expand(2), rtol=1e-6, atol=1e-9, equal_nan=True, msg=name
        )
    assert counts == dict.fromkeys(RULES, 0)


def test_metrics_are_compute_metrics_of_its_returns(data) -> None:
    def momentum(obs: torch.Tensor) -> torch.Tensor:  # long if the last bar rose, else short
        return torch.where(obs[:, 0] > 0, 1, 2)

    market = only_asset(data.market, 1)
    result, _ = evaluate(momentum, market, data.split.test, env_cfg(), paths=1)
    expected = compute_metrics(
        result.returns,
        market.periods_per_year,
        positions=result.weights,
        turnover=result.turnover,
        trades=result.fills,
    )
    assert set(result.metrics) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(result.metrics[name], value, equal_nan=True, msg=name)
    assert (result.fills > 0).sum() > 5  # the policy does trade


def test_evaluation_ignores_training_episode_settings(data) -> None:
    market = only_asset(data.market, 2)
    span = data.split.val

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return torch.where(obs[:, 0] > 0, 1, 0)

    base, _ = evaluate(policy, market, span, env_cfg(), paths=3)
    training = env_cfg(episode={"length": 10, "random_start": True}, dtype="float32", num_envs=64)
    other, _ = evaluate(policy, market, span, training, paths=3)
    assert base.returns.shape[1] == span[1] - 1 - span[0]
    assert base.equity.dtype == torch.float64
    torch.testing.assert_close(base.equity, other.equity, rtol=0, atol=0)
    # Every path runs the same pass.
    assert (base.equity == base.equity[:1]).all()


def test_flat_policy_keeps_the_capital(data) -> None:
    result, _ = evaluate(constant(0), data.market, data.split.val, env_cfg(), paths=1)
    assert (result.equity == CAPITAL).all() and (result.returns == 0).all()
    assert (result.costs["total"] == 0).all() and (result.weights == 0).all()
    assert float(result.metrics["total_return"][0]) == 0.0


# ------------------------------------------------------------------ early ends

CRASH_THEN_RALLY = [100.0] * 10 + [90.0] * 6 + [95.0, 100.0, 105.0, 110.0, 120.0, 130.0, 140.0]


def test_a_loss_cut_mid_split_keeps_the_equity_flat_afterwards() -> None:
    market = crafted(CRASH_THEN_RALLY)
    cfg = env_cfg(risk={"loss_cut": 0.05})
    result, _ = evaluate(constant(1), market, (0, market.num_bars), cfg, paths=2)
    cut = 9  # decided at bar 9, filled at bar 10's open: the 10% fall ends the episode
    equity = result.equity[0]
    assert float(equity[cut + 1]) < 0.91 * CAPITAL
    assert (result.equity[:, cut + 1 :] == equity[cut + 1]).all()
    assert (result.returns[:, cut + 1 :] == 0).all() and (result.returns[:, cut] < -0.09).all()
    assert (result.weights[:, cut + 1 :] == 0).all() and (result.weights[:, cut] > 0).all()
    assert (result.costs["total"][:, cut + 1 :] == 0).all()
    assert (result.turnover[:, cut + 1 :] == 0).all() and (result.fills[:, cut + 1 :] == 0).all()
    assert result.returns.shape[1] == market.num_bars - 1  # the record still spans the split
    total = float(result.metrics["total_return"][0])
    assert total == pytest.approx(float(equity[-1]) / CAPITAL - 1.0)
    # Without the rule the same policy rides the rally.
    free, _ = evaluate(constant(1), market, (0, market.num_bars), env_cfg(), paths=1)
    assert float(free.equity[0, -1]) > 1.3 * CAPITAL


def test_risk_counts_of_an_evaluation_count_each_path_once() -> None:
    market = crafted(CRASH_THEN_RALLY + [150.0, 160.0])
    cfg = env_cfg(risk={"loss_cut": 0.05, "profit_lock": 0.4})
    _, counts = evaluate(constant(1), market, (0, market.num_bars), cfg, paths=2)
    assert counts == {**dict.fromkeys(RULES, 0), "loss_cut": 2}
