"""Backtests of several spans as one record: a part of a split made of several contiguous spans
(CPCV's test groups) is priced span by span, each from the same capital and flat, and the
records are joined here.

Per-bar records are concatenated in time order; the equity curve is chained (each span's
returns compounded on from the end of the one before), so the joined returns, equity and
metrics agree; ``segments`` keeps where each span starts, for the trade journal (which reads
each span's fills in its own currency). Timestamps: the first span's decision bar, then every
bar traded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from envs.backtest import BacktestResult
from envs.metrics import compute_metrics

# Fields whose first axis is time (T, ...) rather than paths (P, T, ...).
TIME_FIRST = ("fill_price", "mark_price")


def concat_results(results: Sequence[BacktestResult], periods_per_year: float) -> BacktestResult:
    """One record of the spans' ``results`` (in time order, the same paths and assets)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    values = {}
    for f in dataclasses.fields(BacktestResult):
        name = f.name
        parts = [getattr(r, name) for r in results]
        if name in ("timestamps", "equity", "metrics", "segments"):
            continue
        if parts[0] is None:
            values[name] = None
        elif isinstance(parts[0], dict):
            values[name] = {k: torch.cat([p[k] for p in parts], dim=1) for k in parts[0]}
        elif isinstance(parts[0], torch.Tensor):
            values[name] = torch.cat(parts, dim=0 if name in TIME_FIRST else 1)
        else:
            values[name] = parts[0]
    returns = values["returns"]
    capital = first.equity[:, :1]
    growth = torch.cumprod(1.0 + returns.to(torch.float64), dim=1)
    values["equity"] = torch.cat([capital, capital * growth], dim=1)
    values["timestamps"] = np.concatenate(
        [np.asarray(first.timestamps)] + [np.asarray(r.timestamps)[1:] for r in results[1:]]
    )
    lengths = [r.returns.shape[1] for r in results]
    values["segments"] = tuple(int(x) for x in np.cumsum([0, *lengths[:-1]]))
    values["metrics"] = compute_metrics(
        returns,
        periods_per_year,
        positions=values["weights"],
        turnover=values["turnover"],
        trades=values["fills"],
    )
    return BacktestResult(**values)
