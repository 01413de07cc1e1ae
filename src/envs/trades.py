"""The trade journal: a backtest's fills grouped into round trips, per asset.

A round trip opens when an asset's position leaves 0 (or flips sign) and closes when it comes
back to 0 (or flips); resizing in between belongs to the trade. Its PnL is its cash flows,
``-(shares traded x fill price) - costs`` summed over its fills (plus the position marked at
the last close while it is still open), so the journal's PnLs sum to the equity curve's total
PnL: that is what :func:`TradeJournal.reconcile` checks. A fill that flips a position is cut in
two at 0, its costs shared between the two trades in proportion to the shares of each part.
A stop that ends an evaluation episode (loss cut, profit lock) closes its trades at the close of
the bar that hit it, without costs, as the evaluation's equity does.

Units: prices and PnLs in currency, quantities in shares, costs in currency by component
(commission, spread, slippage, impact), bars counted in the split's bars (bar ``i`` is row
``i`` of the run's ``returns_<split>.csv``), times as the bar start times of the market.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from envs.accounting import COST_COMPONENTS

COLUMNS = (
    "asset",
    "side",
    "status",
    "entry_bar",
    "exit_bar",
    "entry_time",
    "exit_time",
    "quantity",
    "entry_price",
    "exit_price",
    *COST_COMPONENTS,
    "costs",
    "pnl",
    "return",
    "bars_held",
    "exit_reason",
)


@dataclass
class _Open:
    """A round trip being built: its side (+1 long, -1 short) and running sums."""

    asset: str
    side: int
    entry_bar: int
    cash: float = 0.0  # cash flows so far: -(traded x price) - costs
    bought: float = 0.0  # |shares| added to the position, and their notional
    bought_value: float = 0.0
    sold: float = 0.0  # |shares| taken off the position, and their notional
    sold_value: float = 0.0
    peak: float = 0.0  # the largest |position|
    costs: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COST_COMPONENTS, 0.0))

    def fill(self, traded: float, price: float, costs: Mapping[str, float], share: float):
        """A fill of ``traded`` shares at ``price``, paying ``share`` of ``costs``."""
        paid = 0.0
        for name in COST_COMPONENTS:
            c = costs[name] * share
            self.costs[name] += c
            paid += c
        self.cash += -traded * price - paid
        if traded * self.side > 0:
            self.bought += abs(traded)
            self.bought_value += abs(traded) * price
        else:
            self.sold += abs(traded)
            self.sold_value += abs(traded) * price


@dataclass(frozen=True)
class TradeJournal:
    """Round trips (``rows``: dicts keyed by :data:`COLUMNS`; ``status`` is ``closed`` or
    ``open``, an open trade marked at the last close) and the totals they reconcile with:
    ``start_equity`` and ``end_equity`` of the equity curve (currency)."""

    rows: list[dict]
    start_equity: float
    end_equity: float

    @property
    def closed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "closed"]

    def reconcile(self) -> float:
        """Relative gap between the trades' summed PnL (closed and open) and the equity
        curve's total PnL: ``|sum - total| / max(|total|, 1e-12 x start_equity)``."""
        total = self.end_equity - self.start_equity
        summed = math.fsum(r["pnl"] for r in self.rows)
        return abs(summed - total) / max(abs(total), 1e-12 * abs(self.start_equity))

    def summary(self) -> dict[str, float]:
        """Closed trades: ``trades``, ``win_rate`` (share with PnL > 0), ``avg_win`` and
        ``avg_loss`` (currency, the loss negative), ``expectancy`` (mean PnL per trade),
        ``profit_factor`` (gains / |losses|), ``avg_bars_held`` and ``avg_hours_held``; then
        ``open_trades``, ``open_pnl`` and ``costs`` (all trades, currency). NaN where there is
        no trade to average."""
        pnl = np.array([r["pnl"] for r in self.closed], dtype=np.float64)
        wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
        bars = [r["bars_held"] for r in self.closed]
        hours = [(r["exit_time"] - r["entry_time"]).total_seconds() / 3600 for r in self.closed]
        nan = math.nan
        gain, loss = float(wins.sum()), float(-losses.sum())
        return {
            "trades": float(len(pnl)),
            "win_rate": float(len(wins) / len(pnl)) if len(pnl) else nan,
            "avg_win": float(wins.mean()) if len(wins) else nan,
            "avg_loss": float(losses.mean()) if len(losses) else nan,
            "expectancy": float(pnl.mean()) if len(pnl) else nan,
            "profit_factor": gain / loss if loss > 0 else (math.inf if gain > 0 else nan),
            "avg_bars_held": float(np.mean(bars)) if bars else nan,
            "avg_hours_held": float(np.mean(hours)) if hours else nan,
            "open_trades": float(len(self.rows) - len(pnl)),
            "open_pnl": math.fsum(r["pnl"] for r in self.rows if r["status"] == "open"),
            "costs": math.fsum(r["costs"] for r in self.rows),
        }


def trade_journal(
    timestamps: np.ndarray,
    tickers: Sequence[str],
    shares: np.ndarray,
    fill_price: np.ndarray,
    mark: np.ndarray,
    costs: Mapping[str, np.ndarray],
    start_equity: float,
    end_equity: float,
    stopped: np.ndarray | None = None,
) -> TradeJournal:
    """The round trips of one path of a backtest over T bars and A assets.

    ``timestamps`` (T + 1,): the decision bar's time, then each bar's; ``shares`` (T, A): the
    position after bar i's fill (held over its close); ``fill_price`` and ``mark`` (T, A): bar
    i's open (the fill) and close (the mark); ``costs`` (T, A) per component: what bar i's fill
    paid; ``stopped`` (T,): bar i ended the episode at its close (the position is 0 from bar
    i + 1 on, without a fill).
    """
    shares = np.asarray(shares, dtype=np.float64)
    bars, assets = shares.shape
    stops = np.zeros(bars, dtype=bool) if stopped is None else np.asarray(stopped, dtype=bool)
    times = np.asarray(timestamps)
    rows: list[dict] = []
    for a in range(assets):
        held = 0.0
        trade: _Open | None = None
        for i in np.flatnonzero((np.diff(shares[:, a], prepend=0.0) != 0) | stops):
            new = shares[i, a]
            traded = new - held
            bar_costs = {n: float(costs[n][i, a]) for n in COST_COMPONENTS}
            price = float(fill_price[i, a])
            if traded != 0:
                if held != 0 and (new == 0 or np.sign(new) != np.sign(held)):
                    closing = -held  # the part of the fill that takes the position to 0
                    trade.fill(closing, price, bar_costs, abs(closing / traded))
                    rows.append(_row(trade, i, times, "signal", price))
                    trade, traded, share = None, traded - closing, abs(1 - closing / traded)
                else:
                    share = 1.0
                if traded != 0:
                    if trade is None:
                        trade = _Open(str(tickers[a]), int(np.sign(new)), int(i))
                    trade.fill(traded, price, bar_costs, share)
                    trade.peak = max(trade.peak, abs(new))
                held = new
            if stops[i] and trade is not None:  # closed at this bar's close, no costs
                close = float(mark[i, a])
                trade.fill(-held, close, dict.fromkeys(COST_COMPONENTS, 0.0), 0.0)
                rows.append(_row(trade, i, times, "stop", close, at_close=True))
                trade, held = None, 0.0
            elif stops[i]:
                held = 0.0
        if trade is not None:  # still open after the last bar: marked at its close
            last = bars - 1
            value = held * float(mark[last, a])
            rows.append(_row(trade, last, times, "", math.nan, open_value=value))
    rows.sort(key=lambda r: (r["entry_bar"], r["asset"]))
    return TradeJournal(rows, float(start_equity), float(end_equity))


def _row(
    trade: _Open,
    bar: int,
    times: np.ndarray,
    reason: str,
    price: float,
    at_close: bool = False,
    open_value: float | None = None,
) -> dict:
    """The journal row of ``trade``, closed at ``bar`` (its fill at the open, or the close
    ``at_close``), or still open (``open_value``: the position marked at the last close)."""
    is_open = open_value is not None
    pnl = trade.cash + (open_value or 0.0)
    entry_price = trade.bought_value / trade.bought
    exit_price = trade.sold_value / trade.sold if trade.sold and not is_open else price
    held = bar - trade.entry_bar + (1 if at_close or is_open else 0)
    paid = math.fsum(trade.costs.values())
    return {
        "asset": trade.asset,
        "side": "long" if trade.side > 0 else "short",
        "status": "open" if is_open else "closed",
        "entry_bar": trade.entry_bar,
        "exit_bar": None if is_open else bar,
        "entry_time": _when(times[trade.entry_bar + 1]),
        "exit_time": None if is_open else _when(times[bar + 1]),
        "quantity": trade.peak,
        "entry_price": entry_price,
        "exit_price": None if is_open else exit_price,
        **trade.costs,
        "costs": paid,
        "pnl": pnl,
        "return": pnl / (trade.peak * entry_price),
        "bars_held": held,
        "exit_reason": "open" if is_open else reason,
    }


def _when(stamp) -> datetime.datetime:
    """A bar time as a Python datetime (microseconds)."""
    return np.datetime64(stamp, "us").item()
