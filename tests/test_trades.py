"""envs.trades: round trips from a backtest's fills, reconciled with its equity curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.accounting import COST_COMPONENTS
from envs.backtest import backtest
from envs.frictions import Frictions
from envs.trades import COLUMNS, trade_journal


def journal_of(result, tickers):
    return trade_journal(
        timestamps=result.timestamps,
        tickers=tickers,
        shares=result.shares[0].numpy(),
        fill_price=result.fill_price.numpy(),
        mark=result.mark_price.numpy(),
        costs={k: v[0].numpy() for k, v in result.asset_costs.items()},
        start_equity=float(result.equity[0, 0]),
        end_equity=float(result.equity[0, -1]),
    )


def test_a_long_a_flip_to_short_and_an_open_long_are_three_round_trips(msft):
    start = 100
    weights = [0.0, 1.0, 1.0, 0.5, 0.5, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0]
    result = backtest(msft, torch.tensor(weights)[:, None], start, Frictions())
    journal = journal_of(result, ["MSFT"])
    rows = journal.rows
    assert [(r["side"], r["status"]) for r in rows] == [
        ("long", "closed"),
        ("short", "closed"),
        ("long", "open"),
    ]
    long, short, still = rows
    # Entered at the open of bar 1 (decision 1), resized at bar 3, flipped at bar 5.
    assert (long["entry_bar"], long["exit_bar"], long["bars_held"]) == (1, 5, 4)
    assert np.datetime64(long["entry_time"], "us") == msft.timestamps[start + 2]
    opens = msft.open[start + 1 : start + 1 + len(weights), 0]
    held = result.shares[0, :, 0].numpy()
    sold = [(held[1] - held[3], opens[3]), (held[3], opens[5])]  # half at bar 3, rest at the flip
    vwap = sum(q * p for q, p in sold) / sum(q for q, _ in sold)
    assert long["exit_price"] == pytest.approx(vwap) and long["quantity"] == held[1]
    assert long["entry_price"] == pytest.approx(opens[1])  # only the entry added shares
    assert (short["entry_bar"], short["exit_bar"], short["exit_reason"]) == (5, 7, "signal")
    assert short["entry_price"] == pytest.approx(opens[5])
    assert still["exit_bar"] is None and still["exit_price"] is None
    # The flip's costs are shared between the two trades by their shares.
    for name in COST_COMPONENTS:
        total = float(result.asset_costs[name][0].sum())
        assert sum(r[name] for r in rows) == pytest.approx(total, rel=1e-12)
    assert journal.reconcile() < 1e-9
    assert set(rows[0]) == set(COLUMNS)


def test_the_journal_reconciles_with_the_equity_of_a_busy_multi_asset_backtest(synthetic):
    rng = np.random.default_rng(0)
    steps = 400
    targets = torch.as_tensor(rng.choice([-0.5, 0.0, 0.3, 0.5], size=(steps, 3)))
    targets[rng.random((steps, 3)) < 0.7] = np.nan  # hold most bars: forward-fill below
    for i in range(1, steps):
        targets[i] = torch.where(torch.isnan(targets[i]), targets[i - 1], targets[i])
    targets = torch.nan_to_num(targets, 0.0)
    result = backtest(synthetic, targets, 50, Frictions(impact_coef=0.5))
    journal = journal_of(result, ["AAA", "BBB", "CCC"])
    assert len(journal.closed) > 50
    assert {r["asset"] for r in journal.rows} == {"AAA", "BBB", "CCC"}
    assert journal.reconcile() < 1e-9
    s = journal.summary()
    pnl = np.array([r["pnl"] for r in journal.closed])
    assert s["trades"] == len(pnl)
    assert s["win_rate"] == pytest.approx((pnl > 0).mean())
    assert s["expectancy"] == pytest.approx(pnl.mean())
    assert s["profit_factor"] == pytest.approx(pnl[pnl > 0].sum() / -pnl[pnl <= 0].sum())
    assert s["avg_win"] > 0 > s["avg_loss"]
    total = float(result.equity[0, -1] - result.equity[0, 0])
    assert pnl.sum() + s["open_pnl"] == pytest.approx(total, rel=1e-9)


def test_a_stop_closes_the_trade_at_that_bars_close_without_costs():
    bars, stamps = 6, np.arange(7).astype("datetime64[h]")
    shares = np.array([[10.0], [10.0], [10.0], [0.0], [0.0], [0.0]])
    price = np.array([[100.0], [101.0], [102.0], [103.0], [104.0], [105.0]])
    mark = price + 0.5
    costs = {n: np.zeros((bars, 1)) for n in COST_COMPONENTS}
    costs["commission"][0, 0] = 1.0
    stopped = np.array([False, False, True, False, False, False])
    start = 10_000.0
    end = start - 10 * 100.0 - 1.0 + 10 * 102.5  # cash after the buy + the position at bar 2
    journal = trade_journal(stamps, ["X"], shares, price, mark, costs, start, end, stopped)
    (row,) = journal.rows
    assert (row["exit_bar"], row["exit_reason"], row["exit_price"]) == (2, "stop", 102.5)
    assert row["bars_held"] == 3 and row["pnl"] == pytest.approx(24.0)
    assert journal.reconcile() < 1e-12


def test_no_trade_gives_an_empty_journal_and_nan_averages(msft):
    result = backtest(msft, torch.zeros(30, 1, dtype=torch.float64), 10, Frictions())
    journal = journal_of(result, ["MSFT"])
    assert journal.rows == [] and journal.summary()["trades"] == 0
    assert np.isnan(journal.summary()["win_rate"])
