"""What a run keeps so its numbers can be checked and re-analysed: per split (validation, test),
the per-bar returns of the strategy and its baselines (``returns_<split>.csv``), their
bootstrap statistics and verdict (:mod:`envs.statistics.verdict`) and the trade journal
(``trades_<split>.csv``, :mod:`envs.trades`).

A split's bar ``i`` is row ``i`` of its returns file: the return from the close of the bar
before to the close of bar ``i`` (its ``timestamp``, the bar start time), after the fill at its
open. The journal's ``entry_bar`` and ``exit_bar`` count the same bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from datamodules.splits import Split
from envs.backtest import BacktestResult
from envs.statistics.verdict import SplitStatistics, split_statistics
from envs.trades import COLUMNS, TradeJournal, trade_journal
from experiments.config.schema import StatisticsSettings

SPLITS = ("val", "test")


def statistics_settings(cfg: DictConfig) -> StatisticsSettings:
    """``cfg.statistics`` as settings, its seed defaulting to the run's."""
    given = dict(cfg.get("statistics") or {})
    if given.get("seed") is None:
        given["seed"] = int(cfg.seed)
    return StatisticsSettings(**given)


@dataclass(frozen=True)
class SplitEvidence:
    """One split's per-bar returns by series (``returns``, each (T,)), bar times
    (``timestamps``, (T,)), statistics, trade journal (None when the backtest did not
    record positions) and, for CPCV test groups, the group of each bar."""

    split: str
    timestamps: np.ndarray
    returns: dict[str, np.ndarray]
    statistics: SplitStatistics
    journal: TradeJournal | None
    groups: np.ndarray | None = None

    def returns_frame(self):
        """The returns as a polars frame: ``timestamp``, one column per series, and the CPCV
        ``group`` of each bar when the split has groups."""
        import polars

        extra = {} if self.groups is None else {"group": self.groups}
        return polars.DataFrame({"timestamp": self.timestamps, **self.returns, **extra})

    def trades_frame(self):
        """The journal's rows as a polars frame (every column of :data:`envs.trades.COLUMNS`,
        an empty frame without trades)."""
        import polars

        rows = self.journal.rows if self.journal is not None else []
        if not rows:
            return polars.DataFrame(schema=dict.fromkeys(COLUMNS, polars.String))
        return polars.DataFrame(rows).select(COLUMNS)

    def write(self, out: Path) -> list[Path]:
        """``returns_<split>.csv`` and ``trades_<split>.csv`` in ``out``; return the paths."""
        paths = [out / f"returns_{self.split}.csv"]
        self.returns_frame().write_csv(paths[0])
        if self.journal is not None:
            paths.append(out / f"trades_{self.split}.csv")
            self.trades_frame().write_csv(paths[1])
        return paths


def journal_of(result: BacktestResult, tickers: list[str]) -> TradeJournal | None:
    """The trade journal of path 0 of ``result`` (None when it recorded no positions). A
    record joined from several spans (:mod:`envs.stitch`) is read span by span, each in its
    own currency from the same capital; its totals are then the sum of the spans' PnLs."""
    needed = (result.shares, result.fill_price, result.mark_price, result.asset_costs)
    if any(x is None for x in needed):
        return None
    bars = result.returns.shape[1]
    edges = [*result.segments, bars]
    capital = float(result.equity[0, 0])
    stamps = np.asarray(result.timestamps)
    rows, end = [], capital
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        growth = float(torch.prod(1.0 + result.returns[0, a:b].double()))
        part = trade_journal(
            timestamps=stamps[a : b + 1],  # bar i of the span is stamps[a + i + 1]
            tickers=tickers,
            shares=result.shares[0, a:b].cpu().numpy(),
            fill_price=result.fill_price[a:b].cpu().numpy(),
            mark=result.mark_price[a:b].cpu().numpy(),
            costs={k: v[0, a:b].cpu().numpy() for k, v in result.asset_costs.items()},
            start_equity=capital,
            end_equity=capital * growth if len(edges) > 2 else float(result.equity[0, -1]),
            stopped=None if result.stopped is None else result.stopped[0, a:b].cpu().numpy(),
        )
        for row in part.rows:
            row["entry_bar"] += a
            if row["exit_bar"] is not None:
                row["exit_bar"] += a
        rows += part.rows
        end += part.end_equity - capital
    return TradeJournal(rows, capital, end)


def split_evidence(
    split: str,
    results: dict[str, BacktestResult],
    tickers: list[str],
    periods_per_year: float,
    settings: StatisticsSettings,
    groups: np.ndarray | None = None,
) -> SplitEvidence:
    """The evidence of one split from its backtests (``strategy`` and the baselines);
    ``groups`` (T,), the CPCV group of each bar, becomes the returns file's ``group``
    column."""
    returns = {name: res.returns[0].double().cpu().numpy() for name, res in results.items()}
    stats = split_statistics(
        split, returns, periods_per_year, settings.reps, settings.level, int(settings.seed)
    )
    return SplitEvidence(
        split=split,
        timestamps=np.asarray(results["strategy"].timestamps[1:]),
        returns=returns,
        statistics=stats,
        journal=journal_of(results["strategy"], tickers),
        groups=groups,
    )


def bar_groups(split: Split, part: str, market_times: np.ndarray, times: np.ndarray):
    """The CPCV group of each bar traded in ``part`` (the group of the test span holding it),
    or None for a split without groups (time splits, validation)."""
    if part != "test" or not split.groups:
        return None
    bars = np.searchsorted(market_times, times)
    out = np.full(len(bars), -1, dtype=np.int64)
    for (a, b), g in zip(split.spans("test"), split.groups, strict=True):
        out[(bars >= a) & (bars < b)] = g
    return out


def table_of(frame) -> tuple[list[str], list[list]]:
    """Columns and rows of a polars frame for a logger's table (times as ISO text, NaN as
    None)."""
    columns = list(frame.columns)
    rows = []
    for row in frame.iter_rows():
        rows.append([_cell(v) for v in row])
    return columns, rows


def _cell(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return v
