"""The compiled backtest: the same numbers as the eager loop (equity to 1e-12 relative,
bitwise here), metrics that still match empyrical, and which path a backtest of a given size
takes. The tests that compile (about 10 s: the scan's one compile) are in the slow set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.market import Market
from envs.accounting import COST_COMPONENTS
from envs.backtest import CHUNK, COMPILE_MIN_PATH_BARS, backtest, compiles
from envs.frictions import Frictions

EVERY = Frictions(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.0, impact_coef=0.1)


def sticky_targets(paths: int, steps: int, assets: int, seed: int) -> torch.Tensor:
    """(P, T, A) weights in [-1/A, 1/A] that keep their value on about 70% of the bars."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(-1.0, 1.0, (paths, steps, assets)) / assets
    keep = rng.uniform(size=(paths, steps)) < 0.7
    for t in range(1, steps):
        out[:, t][keep[:, t]] = out[:, t - 1][keep[:, t]]
    return torch.as_tensor(out, dtype=torch.float64)


PATHS = 3


@pytest.fixture(scope="module")
def priced(synthetic: Market):
    """Three paths of the three-asset market priced by both loops, every friction, over more
    than two chunks with a padded last one (the module's one compile)."""
    steps = 2 * CHUNK + 37
    targets = sticky_targets(PATHS, steps, synthetic.num_assets, seed=1)
    eager = backtest(synthetic, targets, 5, EVERY, compile=False)
    fused = backtest(synthetic, targets, 5, EVERY, compile=True)
    return eager, fused


@pytest.mark.slow
def test_the_compiled_scan_prices_every_record_like_the_eager_loop(priced) -> None:
    eager, fused = priced
    steps = eager.returns.shape[1]
    assert torch.equal(fused.equity, eager.equity)  # bitwise; the issue allows 1e-12 relative
    for name in ("returns", "weights", "turnover", "fills", "targets"):
        mine, theirs = getattr(fused, name), getattr(eager, name)
        assert mine.shape == theirs.shape and mine.dtype == theirs.dtype, name
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=0, msg=name)
    for name in COST_COMPONENTS:
        torch.testing.assert_close(fused.costs[name], eager.costs[name], rtol=1e-12, atol=1e-12)
    for name, value in eager.metrics.items():
        torch.testing.assert_close(fused.metrics[name], value, rtol=1e-12, atol=0, equal_nan=True)
    assert (fused.timestamps == eager.timestamps).all()
    assert int(eager.fills.sum()) > steps  # the paths trade


@pytest.mark.slow
def test_compiled_metrics_match_empyrical(priced, synthetic: Market) -> None:
    empyrical = pytest.importorskip("empyrical")
    _, fused = priced
    ppy = synthetic.periods_per_year
    for p in range(PATHS):
        r = fused.returns[p].numpy()
        np.testing.assert_allclose(
            float(fused.metrics["sharpe"][p]), empyrical.sharpe_ratio(r, annualization=ppy), 1e-9
        )
        np.testing.assert_allclose(
            float(fused.metrics["max_drawdown"][p]), empyrical.max_drawdown(r), 1e-9
        )
        np.testing.assert_allclose(
            float(fused.metrics["annual_volatility"][p]),
            empyrical.annual_volatility(r, annualization=ppy),
            1e-9,
        )


def test_auto_compiles_large_batches_and_shapes_already_compiled() -> None:
    big = COMPILE_MIN_PATH_BARS // 64
    other = Frictions(commission_bps=3.0, spread_bps=0.0, slippage_bps=0.0, impact_coef=0.0)
    assert not compiles(1, 5000, 1, other)  # a run's split: eager, no compile to pay
    assert compiles(64, big, 1, other)  # a batch of paths this large pays for its compile
    assert not compiles(64, big, 1, other, compile=False)
    assert compiles(1, 10, 1, other, compile=True)
    assert not compiles(64, big, 1, other, device="cuda")  # the scan is a CPU loop


@pytest.mark.slow
def test_a_shape_compiled_once_is_taken_by_auto_at_any_length(priced, synthetic: Market) -> None:
    assets = synthetic.num_assets
    assert compiles(PATHS, 100, assets, EVERY)  # compiled by the fixture: auto takes it
    targets = sticky_targets(PATHS, 700, assets, seed=4)
    eager = backtest(synthetic, targets, 9, EVERY, compile=False)
    again = backtest(synthetic, targets, 9, EVERY)
    assert torch.equal(again.equity, eager.equity)


@pytest.mark.parametrize("which", ["msft", "synthetic"])  # one real ticker, three synthetic
def test_the_record_after_the_loop_is_what_each_bar_reported(request, which) -> None:
    """The loops keep only the accounts; the record computed from them after the loop
    (envs.accounting.replay_outcomes) is, bitwise, what fill_and_mark reported bar by bar."""
    from envs.accounting import fill_and_mark, open_account

    market = request.getfixturevalue(which)
    steps, start = 300, 7
    targets = sticky_targets(2, steps, market.num_assets, seed=3)
    got = backtest(market, targets, start, EVERY, compile=False)
    account = open_account(got.equity[0, 0].item(), (2,), market.num_assets)
    bars = []
    for i in range(steps):
        t = start + i

        def price(x, at):
            return torch.as_tensor(x[at], dtype=torch.float64)

        account, bar = fill_and_mark(
            account,
            targets[:, i],
            price(market.open, t + 1),
            price(market.close, t + 1),
            price(market.sigma, t),
            price(market.adv, t),
            EVERY,
        )
        bars.append((account, bar))
    want = {
        "equity": torch.stack([a.equity for a, _ in bars], 1),
        "returns": torch.stack([b.bar_return for _, b in bars], 1),
        "weights": torch.stack([b.weights for _, b in bars], 1),
        "turnover": torch.stack([b.turnover for _, b in bars], 1),
        "fills": torch.stack([b.fills for _, b in bars], 1),
        "shares": torch.stack([a.shares for a, _ in bars], 1),
    }
    assert torch.equal(got.equity[:, 1:], want["equity"])
    for name in ("returns", "weights", "turnover", "fills", "shares"):
        assert torch.equal(getattr(got, name), want[name]), name
    for name in COST_COMPONENTS:
        assert torch.equal(got.costs[name], torch.stack([b.costs[name] for _, b in bars], 1))
        per_asset = torch.stack([b.asset_costs[name] for _, b in bars], 1)
        assert torch.equal(got.asset_costs[name], per_asset), name
    assert float(got.costs["impact"].sum()) > 0 and int(got.fills.sum()) > steps // 4
