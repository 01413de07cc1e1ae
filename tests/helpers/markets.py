"""Markets of the tests: synthetic ones from the data pipeline, and crafted ones with prices
chosen by a test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl

from datamodules.market import Market
from datamodules.pipeline import MarketData
from datamodules.sources import SyntheticSource

BARS = 8  # bars per crafted session: 10:00 to 11:45 in 15-minute bars (two clock hours)
NO_GAP = {"gap_bars": 0}  # the env tests' splits predate data.split's default gap


def synthetic_data(
    tickers: Sequence[str], sessions: int, seed: int = 0, window: int = 4, bar_size: str = "15min"
) -> MarketData:
    """A synthetic market of ``sessions`` sessions (15-minute bars by default), split
    train/val/test without a gap, not cached."""
    return SyntheticSource(
        tickers=list(tickers),
        bar_size=bar_size,
        seed=seed,
        window=window,
        cache_dir=None,
        split=NO_GAP,
        synthetic={"sessions": sessions},
    ).build()


def crafted(
    close: list[float] | np.ndarray, open_: list[float] | np.ndarray | None = None
) -> Market:
    """A market with the given closes, (T,) or (T, A), 15-minute bars, sessions of ``BARS``
    bars from 10:00; each open is the previous close unless given."""
    c = np.asarray(close, dtype=np.float64)
    c = c[:, None] if c.ndim == 1 else c
    if open_ is None:
        o = np.concatenate([c[:1], c[:-1]])
    else:
        o = np.asarray(open_, dtype=np.float64).reshape(c.shape)
    n, a = c.shape
    bar = np.arange(n)
    stamps = (
        np.datetime64("2024-01-01T10:00", "m")
        + (bar // BARS) * np.timedelta64(1, "D")
        + (bar % BARS) * np.timedelta64(15, "m")
    ).astype("datetime64[us]")
    return Market(
        tickers=tuple(f"X{i}" for i in range(a)),
        timestamps=stamps,
        open=o,
        high=np.maximum(o, c),
        low=np.minimum(o, c),
        close=c,
        volume=np.full((n, a), 1e6),
        session=bar // BARS,
        bar_minutes=15.0,
        bars_per_session=float(BARS),
        sessions_per_year=252.0,
        features=np.log(c / o).astype(np.float32)[:, :, None],
        feature_names=("gap",),
        time_features=np.zeros((n, 0), np.float32),
        time_feature_names=(),
        sigma=np.full((n, a), 0.01),
        adv=np.full((n, a), 1e6),
    )


def daily_bars(n: int, seed: int = 0, scale: float = 50.0) -> pl.DataFrame:
    """``n`` daily OHLCV bars from 2020-01-01 as a file holds them (a random walk of closes
    starting near ``scale``, opens off the close, highs and lows around both)."""
    rng = np.random.default_rng(seed)
    close = scale * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    return pl.DataFrame(
        {
            "timestamp": [dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(n)],
            "open": open_,
            "high": np.maximum(open_, close) * 1.003,
            "low": np.minimum(open_, close) * 0.997,
            "close": close,
            "volume": rng.integers(100, 10_000, n).astype(float),
        }
    )
