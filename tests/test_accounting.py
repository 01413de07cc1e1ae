"""Tests of envs.accounting: fills at the next open, marks at its close, costs, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datamodules.market import Market
from envs.accounting import COST_COMPONENTS, Account, fill_and_mark, open_account
from envs.frictions import Frictions

ATOL = 1e-9
RTOL = 1e-12
CAPITAL = 100_000.0
OFF = Frictions(commission_bps=0.0, spread_bps=0.0, slippage_bps=0.0, impact_coef=0.0)
ON = Frictions(commission_bps=1.0, spread_bps=2.0, slippage_bps=1.5, impact_coef=0.2)


def _bar(market: Market, t: int) -> dict[str, torch.Tensor]:
    """Prices of bar t + 1 and the impact inputs known at bar t, as the engine takes them."""
    f64 = torch.float64
    return {
        "open_next": torch.as_tensor(market.open[t + 1], dtype=f64),
        "close_next": torch.as_tensor(market.close[t + 1], dtype=f64),
        "sigma": torch.as_tensor(market.sigma[t], dtype=f64),
        "adv": torch.as_tensor(market.adv[t], dtype=f64),
    }


def _random_targets(
    steps: int, assets: int, seed: int, repeat_prob: float = 0.5, batch: tuple[int, ...] = ()
) -> torch.Tensor:
    """(*batch, steps, assets) signed weights in [-1, 1]; whole rows repeat with repeat_prob."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(-1.0, 1.0, (*batch, steps, assets)) / assets
    repeat = rng.uniform(size=(*batch, steps)) < repeat_prob
    for idx in np.ndindex(*batch, steps):
        *b, t = idx
        if t > 0 and repeat[idx]:
            out[(*b, t)] = out[(*b, t - 1)]
    return torch.as_tensor(out, dtype=torch.float64)


def _run(
    market: Market, targets: torch.Tensor, start: int, frictions: Frictions
) -> tuple[list[Account], list]:
    """Loop fill_and_mark over targets (*B, T, A) from bar ``start``; accounts and outcomes."""
    batch = tuple(targets.shape[:-2])
    account = open_account(CAPITAL, batch, market.num_assets)
    accounts, outcomes = [account], []
    for i in range(targets.shape[-2]):
        account, bar = fill_and_mark(
            account, targets[..., i, :], **_bar(market, start + i), frictions=frictions
        )
        accounts.append(account)
        outcomes.append(bar)
    return accounts, outcomes


def _hand_market(open_: list[float], close: list[float]) -> Market:
    """A one-asset daily market with the given opens and closes."""
    o = np.asarray(open_, dtype=np.float64)[:, None]
    c = np.asarray(close, dtype=np.float64)[:, None]
    n = len(o)
    return Market(
        tickers=("X",),
        timestamps=np.arange(n).astype("datetime64[D]").astype("datetime64[us]"),
        open=o,
        high=np.maximum(o, c),
        low=np.minimum(o, c),
        close=c,
        volume=np.full((n, 1), 1e6),
        session=np.arange(n, dtype=np.int64),
        bar_minutes=1440.0,
        bars_per_session=1.0,
        sessions_per_year=252.0,
        features=np.zeros((n, 1, 0), np.float32),
        feature_names=(),
        time_features=np.zeros((n, 0), np.float32),
        time_feature_names=(),
        sigma=np.full((n, 1), 0.01),
        adv=np.full((n, 1), 1e6),
    )


def test_open_account_is_flat_cash() -> None:
    account = open_account(CAPITAL, (2, 3), 4)
    assert account.cash.shape == (2, 3) and account.equity.shape == (2, 3)
    assert account.shares.shape == (2, 3, 4) and account.target.shape == (2, 3, 4)
    assert account.cash.dtype == torch.float64
    assert torch.all(account.cash == CAPITAL) and torch.all(account.equity == CAPITAL)
    assert torch.all(account.shares == 0) and torch.all(account.target == 0)


@pytest.mark.parametrize("frictions", [OFF, ON], ids=["frictionless", "with-costs"])
def test_equity_is_cash_plus_shares_at_close_every_step(synthetic: Market, frictions) -> None:
    start, steps = 100, 300
    targets = _random_targets(steps, synthetic.num_assets, seed=1, batch=(3,))
    accounts, outcomes = _run(synthetic, targets, start, frictions)
    for i, (account, bar) in enumerate(zip(accounts[1:], outcomes, strict=True)):
        close = torch.as_tensor(synthetic.close[start + i + 1], dtype=torch.float64)
        marked = account.cash + (account.shares * close).sum(-1)
        torch.testing.assert_close(account.equity, marked, rtol=RTOL, atol=ATOL)
        # The weights reported are the positions' value over that equity.
        torch.testing.assert_close(
            bar.weights, account.shares * close / account.equity.unsqueeze(-1), rtol=RTOL, atol=ATOL
        )
        # pnl is the change of equity, bar_return its fraction of the previous equity.
        torch.testing.assert_close(
            bar.pnl, account.equity - accounts[i].equity, rtol=RTOL, atol=ATOL
        )
        torch.testing.assert_close(
            bar.bar_return, bar.pnl / accounts[i].equity, rtol=RTOL, atol=ATOL
        )


def test_costs_are_paid_only_on_bars_where_the_position_changes(synthetic: Market) -> None:
    start, steps = 200, 200
    targets = _random_targets(steps, synthetic.num_assets, seed=2, repeat_prob=0.5)
    accounts, outcomes = _run(synthetic, targets, start, ON)
    repeated = changed = 0
    for i, bar in enumerate(outcomes):
        previous = targets[i - 1] if i > 0 else torch.zeros_like(targets[0])
        moved = targets[i] != previous
        traded = accounts[i + 1].shares - accounts[i].shares
        assert torch.equal(traded != 0, moved), f"bar {i}: trades where the target did not move"
        assert int(bar.fills) == int(moved.sum())
        if moved.any():
            changed += 1
            assert float(bar.total_cost) > 0.0
            assert float(bar.turnover) > 0.0
        else:
            repeated += 1
            assert float(bar.total_cost) == 0.0
            assert all(float(bar.costs[name]) == 0.0 for name in COST_COMPONENTS)
            assert float(bar.traded_notional) == 0.0 and float(bar.turnover) == 0.0
            # The held shares drift with prices, they are not rebalanced to the target.
            assert torch.equal(accounts[i + 1].shares, accounts[i].shares)
    assert repeated > 20 and changed > 20


def test_only_the_assets_whose_target_moved_are_traded(synthetic: Market) -> None:
    start = 300
    first = torch.tensor([0.3, -0.2, 0.4], dtype=torch.float64)
    second = torch.tensor([0.3, 0.1, 0.4], dtype=torch.float64)  # only asset 1 moves
    targets = torch.stack([first, second])
    accounts, outcomes = _run(synthetic, targets, start, ON)
    assert int(outcomes[0].fills) == 3
    assert int(outcomes[1].fills) == 1
    traded = accounts[2].shares - accounts[1].shares
    assert traded[0] == 0 and traded[2] == 0 and traded[1] > 0
    open_ = torch.as_tensor(synthetic.open[start + 2], dtype=torch.float64)
    assert float(outcomes[1].traded_notional) == pytest.approx(
        float(traded[1] * open_[1]), rel=RTOL
    )


def test_flat_policy_earns_and_pays_nothing(synthetic: Market) -> None:
    targets = torch.zeros((2, 400, synthetic.num_assets), dtype=torch.float64)
    accounts, outcomes = _run(synthetic, targets, 50, ON)
    for account, bar in zip(accounts[1:], outcomes, strict=True):
        torch.testing.assert_close(
            account.equity, torch.full_like(account.equity, CAPITAL), rtol=0, atol=ATOL
        )
        assert torch.all(bar.total_cost == 0) and torch.all(bar.fills == 0)
        assert torch.all(bar.pnl.abs() <= ATOL) and torch.all(account.shares == 0)


def test_always_long_reproduces_buy_and_hold(msft: Market) -> None:
    start, steps = 10, msft.num_bars - 11
    targets = torch.ones((steps, 1), dtype=torch.float64)
    accounts, _ = _run(msft, targets, start, OFF)
    equity = torch.stack([a.equity for a in accounts[1:]]).numpy()
    expected = CAPITAL * msft.close[start + 1 : start + steps + 1, 0] / msft.open[start + 1, 0]
    np.testing.assert_allclose(equity, expected, rtol=1e-9, atol=0)


def test_fill_happens_at_next_open() -> None:
    # Close of the decision bar 50, open of the next bar 100, its close 110.
    market = _hand_market(open_=[49.0, 100.0], close=[50.0, 110.0])
    account = open_account(CAPITAL, (), 1)
    new, bar = fill_and_mark(
        account, torch.tensor([0.5], dtype=torch.float64), **_bar(market, 0), frictions=OFF
    )
    shares = float(new.shares[0])
    cash_spent = CAPITAL - float(new.cash)
    assert shares == pytest.approx(0.5 * CAPITAL / 100.0, rel=RTOL)
    assert cash_spent == pytest.approx(shares * 100.0, rel=RTOL)  # open of bar t+1
    assert cash_spent != pytest.approx(shares * 50.0, rel=1e-3)  # not the close of bar t
    assert float(new.equity) == pytest.approx(CAPITAL / 2 + shares * 110.0, rel=RTOL)
    assert float(bar.traded_notional) == pytest.approx(0.5 * CAPITAL, rel=RTOL)
    assert float(bar.turnover) == pytest.approx(0.5, rel=RTOL)


def test_shares_are_sized_from_equity_at_the_open() -> None:
    # Long 1 share-worth of equity at 100, the next bar gaps up to 120 at the open; a rebalance
    # to 0.5 is sized from the equity at that open (cash + shares x 120), not the last close.
    market = _hand_market(open_=[100.0, 100.0, 120.0], close=[100.0, 110.0, 125.0])
    account = open_account(CAPITAL, (), 1)
    account, _ = fill_and_mark(
        account, torch.tensor([1.0], dtype=torch.float64), **_bar(market, 0), frictions=OFF
    )
    held = float(account.shares[0])
    account, _ = fill_and_mark(
        account, torch.tensor([0.5], dtype=torch.float64), **_bar(market, 1), frictions=OFF
    )
    equity_open = held * 120.0
    assert float(account.shares[0]) == pytest.approx(0.5 * equity_open / 120.0, rel=RTOL)
    assert float(account.equity) == pytest.approx(
        0.5 * equity_open + 0.5 * equity_open / 120.0 * 125.0, rel=RTOL
    )


def test_short_position_gains_when_the_price_falls() -> None:
    market = _hand_market(open_=[100.0, 100.0, 90.0], close=[100.0, 95.0, 80.0])
    account = open_account(CAPITAL, (), 1)
    short = torch.tensor([-1.0], dtype=torch.float64)
    account, bar1 = fill_and_mark(account, short, **_bar(market, 0), frictions=OFF)
    assert float(account.shares[0]) == pytest.approx(-CAPITAL / 100.0, rel=RTOL)
    assert float(account.cash) == pytest.approx(2 * CAPITAL, rel=RTOL)  # short sale proceeds
    assert float(bar1.pnl) == pytest.approx(CAPITAL * 0.05, rel=RTOL)
    account, bar2 = fill_and_mark(account, short, **_bar(market, 1), frictions=OFF)
    assert float(bar2.pnl) == pytest.approx(CAPITAL / 100.0 * 15.0, rel=RTOL)
    assert float(account.equity) == pytest.approx(CAPITAL * (2 - 80.0 / 100.0), rel=RTOL)
    assert float(bar2.weights[0]) < 0


def test_short_position_loses_when_the_price_rises() -> None:
    market = _hand_market(open_=[100.0, 100.0], close=[100.0, 104.0])
    account, bar = fill_and_mark(
        open_account(CAPITAL, (), 1),
        torch.tensor([-0.5], dtype=torch.float64),
        **_bar(market, 0),
        frictions=OFF,
    )
    assert float(bar.pnl) == pytest.approx(-0.5 * CAPITAL * 0.04, rel=RTOL)


def test_costs_reduce_equity_by_exactly_their_sum(synthetic: Market) -> None:
    rng = np.random.default_rng(3)
    # Start from a held, non-flat position so that the trade is a rebalance.
    warm = torch.as_tensor(rng.uniform(-0.3, 0.3, (4, synthetic.num_assets)))
    account = open_account(CAPITAL, (4,), synthetic.num_assets)
    account, _ = fill_and_mark(account, warm, **_bar(synthetic, 400), frictions=OFF)
    target = torch.as_tensor(rng.uniform(-0.3, 0.3, (4, synthetic.num_assets)))
    free, bar_free = fill_and_mark(account, target, **_bar(synthetic, 401), frictions=OFF)
    paid, bar_paid = fill_and_mark(account, target, **_bar(synthetic, 401), frictions=ON)
    assert torch.all(bar_free.total_cost == 0)
    assert torch.all(bar_paid.total_cost > 0)
    components = sum(bar_paid.costs[name] for name in COST_COMPONENTS)
    torch.testing.assert_close(bar_paid.total_cost, components, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(free.equity - paid.equity, bar_paid.total_cost, rtol=0, atol=ATOL)
    torch.testing.assert_close(free.cash - paid.cash, bar_paid.total_cost, rtol=0, atol=ATOL)
    assert torch.equal(free.shares, paid.shares)  # costs do not change the size of the fill


def test_cost_components_match_frictions_on_the_traded_shares(synthetic: Market) -> None:
    t = 500
    target = torch.tensor([0.5, -0.25, 0.25], dtype=torch.float64)
    new, bar = fill_and_mark(
        open_account(CAPITAL, (), 3), target, **_bar(synthetic, t), frictions=ON
    )
    inputs = _bar(synthetic, t)
    expected = ON.costs(new.shares, inputs["open_next"], inputs["sigma"], inputs["adv"])
    for name in COST_COMPONENTS:
        torch.testing.assert_close(bar.costs[name], expected[name].sum(-1), rtol=RTOL, atol=ATOL)
    # Linear costs on |target| x capital of notional.
    notional = float(target.abs().sum()) * CAPITAL
    assert float(bar.costs["commission"]) == pytest.approx(notional * 1.0e-4, rel=1e-9)
    assert float(bar.costs["spread"]) == pytest.approx(notional * 1.0e-4, rel=1e-9)
    assert float(bar.costs["slippage"]) == pytest.approx(notional * 1.5e-4, rel=1e-9)


def test_batch_gives_the_same_result_as_each_path_alone(synthetic: Market) -> None:
    start, steps = 600, 150
    targets = _random_targets(steps, synthetic.num_assets, seed=4, batch=(2, 3))
    batch_accounts, batch_bars = _run(synthetic, targets, start, ON)
    for idx in np.ndindex(2, 3):
        alone_accounts, alone_bars = _run(synthetic, targets[idx], start, ON)
        for batched, alone in zip(batch_accounts, alone_accounts, strict=True):
            torch.testing.assert_close(batched.equity[idx], alone.equity, rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(batched.shares[idx], alone.shares, rtol=RTOL, atol=ATOL)
        for batched, alone in zip(batch_bars, alone_bars, strict=True):
            torch.testing.assert_close(
                batched.total_cost[idx], alone.total_cost, rtol=RTOL, atol=ATOL
            )
            assert int(batched.fills[idx]) == int(alone.fills)
