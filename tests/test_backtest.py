"""Tests of envs.backtest: timing (no look-ahead), metrics, buy and hold, costs, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from datamodules.errors import ConfigError
from datamodules.market import Market
from envs.accounting import COST_COMPONENTS, DEFAULT_CAPITAL
from envs.backtest import BacktestResult, backtest, buy_and_hold_targets
from envs.frictions import Frictions
from envs.metrics import compute_metrics

ATOL = 1e-9
RTOL = 1e-12
CAPITAL = 100_000.0
OFF = Frictions(commission_bps=0.0, spread_bps=0.0, slippage_bps=0.0, impact_coef=0.0)
ON = Frictions(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0, impact_coef=0.1)
PER_BAR = ("open", "high", "low", "close", "volume", "sigma", "adv")


def _random_targets(paths: int, steps: int, assets: int, seed: int) -> torch.Tensor:
    """(P, T, A) signed weights; about half of the rows repeat the previous one."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(-1.0, 1.0, (paths, steps, assets)) / assets
    for p in range(paths):
        for t in range(1, steps):
            if rng.uniform() < 0.5:
                out[p, t] = out[p, t - 1]
    return torch.as_tensor(out, dtype=torch.float64)


def _perturbed_from(market: Market, row: int, seed: int) -> Market:
    """The market with every per-bar array scaled by random factors from ``row`` on."""
    rng = np.random.default_rng(seed)
    changes = {}
    for name in PER_BAR:
        values = getattr(market, name).copy()
        values[row:] *= rng.uniform(0.5, 1.5, values[row:].shape)
        changes[name] = values
    return dataclasses.replace(market, **changes)


def _total_costs(result: BacktestResult) -> torch.Tensor:
    return sum(result.costs[name] for name in COST_COMPONENTS)


def test_result_shapes_and_timestamps(synthetic: Market) -> None:
    paths, steps, start = 2, 50, 100
    targets = _random_targets(paths, steps, synthetic.num_assets, seed=0)
    result = backtest(synthetic, targets, start, ON, capital=CAPITAL)
    assert result.equity.shape == (paths, steps + 1)
    assert result.returns.shape == (paths, steps)
    assert result.weights.shape == (paths, steps, synthetic.num_assets)
    assert result.targets.shape == (paths, steps, synthetic.num_assets)
    assert result.turnover.shape == (paths, steps) and result.fills.shape == (paths, steps)
    assert set(result.costs) == set(COST_COMPONENTS)
    assert all(v.shape == (paths, steps) for v in result.costs.values())
    assert result.equity.dtype == torch.float64
    np.testing.assert_array_equal(
        result.timestamps, synthetic.timestamps[start : start + steps + 1]
    )
    assert torch.all(result.equity[:, 0] == CAPITAL)


def test_single_path_targets_are_one_path(synthetic: Market) -> None:
    targets = _random_targets(1, 40, synthetic.num_assets, seed=1)
    batched = backtest(synthetic, targets, 10, ON)
    single = backtest(synthetic, targets[0], 10, ON)
    assert single.equity.shape == (1, 41)
    torch.testing.assert_close(single.equity, batched.equity, rtol=0, atol=0)


@pytest.mark.parametrize("i", [0, 7, 38])
def test_no_look_ahead_prices_after_the_fill_bar_do_not_change_the_past(
    synthetic: Market, i: int
) -> None:
    # Decision i is filled at bar start+i+1 and marked at its close: equity[:, :i+2] only
    # depends on bars <= start+i+1.
    start, steps = 300, 40
    targets = _random_targets(3, steps, synthetic.num_assets, seed=2)
    base = backtest(synthetic, targets, start, ON)
    later = backtest(_perturbed_from(synthetic, start + i + 2, seed=i), targets, start, ON)
    assert torch.equal(later.equity[:, : i + 2], base.equity[:, : i + 2])
    assert torch.equal(later.returns[:, : i + 1], base.returns[:, : i + 1])
    assert torch.equal(later.weights[:, : i + 1], base.weights[:, : i + 1])
    for name in COST_COMPONENTS:
        assert torch.equal(later.costs[name][:, : i + 1], base.costs[name][:, : i + 1])
    # The perturbation does reach the bars after: the test can tell.
    if i + 2 <= steps:
        assert not torch.equal(later.equity[:, i + 2 :], base.equity[:, i + 2 :])


def test_the_fill_bar_itself_moves_the_equity(synthetic: Market) -> None:
    # Control for the look-ahead test: perturbing from the fill bar start+i+1 does change
    # equity[:, i+1], so the test above would catch a fill one bar late or early.
    start, steps, i = 300, 40, 7
    targets = torch.full((steps, synthetic.num_assets), 0.3, dtype=torch.float64)
    base = backtest(synthetic, targets, start, ON)
    moved = backtest(_perturbed_from(synthetic, start + i + 1, seed=99), targets, start, ON)
    assert torch.equal(moved.equity[:, : i + 1], base.equity[:, : i + 1])
    assert not torch.equal(moved.equity[:, i + 1], base.equity[:, i + 1])


def test_decision_bar_close_is_not_the_fill_price(msft: Market) -> None:
    # Changing only the close of the decision bar (and nothing after) leaves the result
    # unchanged when impact is off: the trade is filled at the next open, not this close.
    start = 100
    closes = msft.close.copy()
    closes[start] *= 1.5
    shifted = dataclasses.replace(msft, close=closes)
    targets = torch.ones((20, 1), dtype=torch.float64)
    fees = Frictions(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0, impact_coef=0.0)
    a = backtest(msft, targets, start, fees)
    b = backtest(shifted, targets, start, fees)
    torch.testing.assert_close(a.equity, b.equity, rtol=0, atol=0)


def test_metrics_equal_compute_metrics_on_its_returns(synthetic: Market) -> None:
    targets = _random_targets(3, 200, synthetic.num_assets, seed=3)
    result = backtest(synthetic, targets, 50, ON)
    expected = compute_metrics(
        result.returns,
        synthetic.periods_per_year,
        positions=result.weights,
        turnover=result.turnover,
        trades=result.fills,
    )
    assert set(result.metrics) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(result.metrics[key], value, rtol=0, atol=0, equal_nan=True)


def test_returns_compound_to_the_equity_curve(synthetic: Market) -> None:
    targets = _random_targets(2, 200, synthetic.num_assets, seed=4)
    result = backtest(synthetic, targets, 50, ON, capital=CAPITAL)
    growth = torch.cumprod(1.0 + result.returns, dim=1)
    torch.testing.assert_close(CAPITAL * growth, result.equity[:, 1:], rtol=1e-10, atol=0)
    torch.testing.assert_close(
        result.metrics["total_return"], result.equity[:, -1] / CAPITAL - 1.0, rtol=0, atol=ATOL
    )
    assert result.metrics["periods_per_year"][0] == synthetic.periods_per_year


def test_buy_and_hold_targets_are_equal_weights() -> None:
    targets = buy_and_hold_targets(5, 4)
    assert targets.shape == (5, 4) and targets.dtype == torch.float64
    assert torch.all(targets == 0.25)


def test_buy_and_hold_one_asset_matches_the_price_ratio(msft: Market) -> None:
    start = 5
    steps = msft.num_bars - start - 1  # up to the last bar
    result = backtest(msft, buy_and_hold_targets(steps, 1), start, OFF, capital=CAPITAL)
    expected = msft.close[start + 1 :, 0] / msft.open[start + 1, 0]
    np.testing.assert_allclose(result.equity[0, 1:].numpy() / CAPITAL, expected, rtol=1e-9, atol=0)
    assert int(result.fills.sum()) == 1  # bought once, then held
    assert float(result.metrics["total_return"][0]) == pytest.approx(expected[-1] - 1.0, abs=ATOL)
    np.testing.assert_allclose(result.weights[0, :, 0].numpy(), 1.0, rtol=0, atol=ATOL)


def test_buy_and_hold_many_assets_matches_the_mean_price_ratio(synthetic: Market) -> None:
    start, steps = 20, 1000
    result = backtest(
        synthetic, buy_and_hold_targets(steps, synthetic.num_assets), start, OFF, capital=CAPITAL
    )
    ratio = synthetic.close[start + 1 : start + steps + 1] / synthetic.open[start + 1]
    np.testing.assert_allclose(
        result.equity[0, 1:].numpy() / CAPITAL, ratio.mean(axis=1), rtol=1e-9, atol=0
    )
    assert int(result.fills.sum()) == synthetic.num_assets


def test_wrong_number_of_assets_raises(synthetic: Market) -> None:
    targets = torch.zeros((10, 2), dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"2 assets.*market has 3 \(AAA, BBB, CCC\)"):
        backtest(synthetic, targets, 0, OFF)


def test_range_past_the_end_raises(synthetic: Market) -> None:
    n = synthetic.num_bars
    steps = 10
    # The last decision at bar n - 2 is filled at the last bar n - 1: allowed.
    ok = backtest(synthetic, torch.zeros((steps, 3), dtype=torch.float64), n - 1 - steps, OFF)
    assert ok.equity.shape == (1, steps + 1)
    # One more and the last decision has no bar to be filled in.
    with pytest.raises(ConfigError, match=rf"needs bars {n - steps}\.\.{n} .*has {n}"):
        backtest(synthetic, torch.zeros((steps, 3), dtype=torch.float64), n - steps, OFF)
    with pytest.raises(ConfigError, match="needs bars"):
        backtest(synthetic, torch.zeros((n, 3), dtype=torch.float64), 0, OFF)


def test_negative_start_raises(synthetic: Market) -> None:
    with pytest.raises(ConfigError, match="needs bars -1"):
        backtest(synthetic, torch.zeros((5, 3), dtype=torch.float64), -1, OFF)


def test_costs_sum_to_the_shortfall_versus_the_frictionless_run(synthetic: Market) -> None:
    # Buy and hold trades once, sized from the same capital with or without costs, so every
    # later bar differs from the frictionless run by exactly the costs paid.
    start, steps = 40, 500
    targets = buy_and_hold_targets(steps, synthetic.num_assets)
    free = backtest(synthetic, targets, start, OFF, capital=CAPITAL)
    paid = backtest(synthetic, targets, start, ON, capital=CAPITAL)
    costs = _total_costs(paid)
    assert float(costs[0, 0]) > 0 and torch.all(costs[:, 1:] == 0)
    for name in COST_COMPONENTS:
        assert float(paid.costs[name][0, 0]) > 0, name
    shortfall = free.equity[:, 1:] - paid.equity[:, 1:]
    torch.testing.assert_close(shortfall, torch.cumsum(costs, dim=1), rtol=0, atol=ATOL)
    assert torch.all(paid.equity[:, 1:] < free.equity[:, 1:])


def test_first_fill_costs_are_bps_of_capital_and_impact_uses_the_decision_bar(
    synthetic: Market,
) -> None:
    start, steps = 40, 5
    a = synthetic.num_assets
    result = backtest(synthetic, buy_and_hold_targets(steps, a), start, ON, capital=CAPITAL)
    # Notional traded is the whole capital.
    assert float(result.costs["commission"][0, 0]) == pytest.approx(CAPITAL * 1e-4, rel=1e-9)
    assert float(result.costs["spread"][0, 0]) == pytest.approx(CAPITAL * 1e-4, rel=1e-9)
    assert float(result.costs["slippage"][0, 0]) == pytest.approx(CAPITAL * 1e-4, rel=1e-9)
    # Impact with sigma and adv known at the close of the decision bar (start).
    open_ = synthetic.open[start + 1]
    shares = CAPITAL / a / open_
    sigma, adv = synthetic.sigma[start], synthetic.adv[start]
    impact = (shares * open_ * 0.1 * sigma * np.sqrt(shares / adv)).sum()
    assert float(result.costs["impact"][0, 0]) == pytest.approx(impact, rel=1e-9)
    assert float(result.turnover[0, 0]) == pytest.approx(1.0, rel=1e-9)


def test_frictionless_run_is_never_worse_for_always_long(msft: Market) -> None:
    start, steps = 0, 500
    targets = torch.ones((steps, 1), dtype=torch.float64)
    free = backtest(msft, targets, start, OFF)
    paid = backtest(msft, targets, start, Frictions())
    assert torch.all(free.equity[:, 1:] > paid.equity[:, 1:])
    assert torch.all(free.metrics["total_return"] > paid.metrics["total_return"])


def test_flat_backtest_earns_nothing_and_trades_nothing(synthetic: Market) -> None:
    result = backtest(synthetic, torch.zeros((2, 300, 3), dtype=torch.float64), 10, ON)
    torch.testing.assert_close(
        result.equity, torch.full_like(result.equity, CAPITAL), rtol=0, atol=ATOL
    )
    assert torch.all(result.fills == 0) and torch.all(_total_costs(result) == 0)
    assert float(result.metrics["num_trades"].sum()) == 0.0


def test_batch_gives_the_same_result_as_each_path_alone(synthetic: Market) -> None:
    paths, steps, start = 4, 250, 500
    targets = _random_targets(paths, steps, synthetic.num_assets, seed=5)
    batch = backtest(synthetic, targets, start, ON)
    for p in range(paths):
        alone = backtest(synthetic, targets[p], start, ON)
        torch.testing.assert_close(batch.equity[p : p + 1], alone.equity, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(batch.returns[p : p + 1], alone.returns, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(batch.weights[p : p + 1], alone.weights, rtol=RTOL, atol=ATOL)
        for name in COST_COMPONENTS:
            torch.testing.assert_close(
                batch.costs[name][p : p + 1], alone.costs[name], rtol=RTOL, atol=ATOL
            )
        for key, value in alone.metrics.items():
            torch.testing.assert_close(
                batch.metrics[key][p : p + 1], value, rtol=1e-10, atol=ATOL, equal_nan=True
            )


def test_the_default_capital_is_the_one_default(synthetic: Market) -> None:
    assert DEFAULT_CAPITAL == CAPITAL
    targets = _random_targets(1, 20, synthetic.num_assets, seed=9)
    default = backtest(synthetic, targets, 100, ON)
    explicit = backtest(synthetic, targets, 100, ON, capital=DEFAULT_CAPITAL)
    assert float(default.equity[0, 0]) == DEFAULT_CAPITAL
    torch.testing.assert_close(default.equity, explicit.equity, rtol=0, atol=0)
