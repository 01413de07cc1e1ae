"""Bar sizes, ticker alignment, resampling and trading sessions."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import polars as pl

from datamodules.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_BAR = re.compile(r"^\s*(\d+)\s*(min|m|h|d)\s*$")
_UNIT_MINUTES = {"min": 1, "m": 1, "h": 60, "d": 1440}


def bar_minutes(bar_size: str) -> int:
    """Minutes in a bar size such as ``1min``, ``15min``, ``1h`` or ``1d``."""
    match = _BAR.match(str(bar_size))
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(
            f"data.bar_size '{bar_size}' is not a bar size; use e.g. 1min, 2min, 5min, 10min, "
            "15min, 30min, 1h or 1d."
        )
    minutes = int(match.group(1)) * _UNIT_MINUTES[match.group(2)]
    if minutes > 1440:
        raise ConfigError(f"data.bar_size '{bar_size}' is longer than a day; use 1d or finer.")
    return minutes


def source_minutes(frame: pl.DataFrame) -> float:
    """The data's own bar length: the most common step between bars within a day."""
    steps = (
        frame.sort("ticker", "timestamp")
        .select(
            (pl.col("timestamp").diff().over("ticker").dt.total_seconds() / 60).alias("step"),
            (pl.col("timestamp").dt.date() == pl.col("timestamp").dt.date().shift(1))
            .over("ticker")
            .alias("same_day"),
        )
        .filter(pl.col("same_day") & (pl.col("step") > 0))["step"]
    )
    if steps.is_empty():
        return 1440.0
    return float(steps.mode().min())


def align(frame: pl.DataFrame, tickers: list[str], min_share: float) -> pl.DataFrame:
    """Keep the timestamps every ticker has (an inner join), reporting what each loses."""
    if len(tickers) == 1:
        return frame
    common = None
    for ticker in tickers:
        stamps = frame.filter(pl.col("ticker") == ticker).select("timestamp")
        common = stamps if common is None else common.join(stamps, on="timestamp", how="inner")
    kept = frame.join(common, on="timestamp", how="semi")
    before = frame.group_by("ticker").len().rows()
    after = dict(kept.group_by("ticker").len().rows())
    for ticker, n in sorted(before):
        share = after.get(ticker, 0) / n
        log.info(
            "align: %s keeps %d of %d bars (%d dropped)",
            ticker,
            after.get(ticker, 0),
            n,
            n - after.get(ticker, 0),
        )
        if share < min_share:
            raise DataError(
                f"Aligning {', '.join(tickers)} on common timestamps keeps only "
                f"{after.get(ticker, 0)} of {n} bars of {ticker} ({share:.0%}), below "
                f"data.min_aligned_share={min_share}. The tickers' files cover different "
                "periods or times; trim them to a common range or lower data.min_aligned_share."
            )
    return kept


def resample(frame: pl.DataFrame, target_minutes: int, bar_size: str) -> pl.DataFrame:
    """Aggregate bars to ``target_minutes`` (open first, high max, low min, close last, volume sum)."""
    native = source_minutes(frame)
    if target_minutes < native - 1e-9:
        raise DataError(
            f"data.bar_size={bar_size} is finer than the data's own bars "
            f"({_describe_minutes(native)}, from {frame['_file'][0]}). Choose "
            f"{_describe_minutes(native)} or a coarser bar size."
        )
    if math.isclose(target_minutes, native):
        return frame
    every = "1d" if target_minutes == 1440 else f"{target_minutes}m"
    offset = f"{session_open_minute(frame) % target_minutes}m" if target_minutes < 1440 else "0m"
    out = (
        frame.sort("ticker", "timestamp")
        .group_by_dynamic(
            "timestamp",
            every=every,
            offset=offset,  # bars start at the usual session open, not at midnight
            group_by="ticker",
            closed="left",
            label="left",
            start_by="window",
        )
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            pl.col("_file").first(),
            pl.col("_row").first(),
        )
    )
    return out.sort("ticker", "timestamp")


def session_open_minute(frame: pl.DataFrame) -> int:
    """Most common minute of the day of each session's first bar (e.g. 570 for 09:30)."""
    first = frame.group_by(pl.col("timestamp").dt.date().alias("day")).agg(
        pl.col("timestamp").min()
    )
    minute = first.select(
        pl.col("timestamp").dt.hour().cast(pl.Int64) * 60 + pl.col("timestamp").dt.minute()
    )
    return int(minute.to_series().mode().min())


def sessions(timestamps: np.ndarray) -> np.ndarray:
    """Session index of each bar: bars of one calendar day (in the data's timezone) share it."""
    days = timestamps.astype("datetime64[D]")
    change = np.ones(len(days), dtype=bool)
    change[1:] = days[1:] != days[:-1]
    return np.cumsum(change) - 1


def session_stats(
    timestamps: np.ndarray, session: np.ndarray, sessions_per_year: float | None
) -> tuple[float, float]:
    """(bars per session, sessions per year); the latter inferred when not configured.

    Inferred as the number of sessions per 365.25 calendar days of data, rounded, so daily
    US equities give about 252, FX about 260 and crypto 365.
    """
    counts = np.bincount(session)
    per_session = float(np.median(counts))
    if sessions_per_year:
        return per_session, float(sessions_per_year)
    days = timestamps.astype("datetime64[D]")
    span_days = (days[-1] - days[0]) / np.timedelta64(1, "D")
    n = int(session[-1]) + 1
    if span_days < 28 or n < 20:
        raise DataError(
            f"The data covers only {n} sessions over {span_days:.0f} days, too little to infer "
            "how many sessions a year it trades; set data.sessions_per_year (252 for "
            "equities, 260 for FX, 365 for crypto)."
        )
    return per_session, float(round(n / ((span_days + 1) / 365.25)))


def _describe_minutes(minutes: float) -> str:
    if minutes >= 1440:
        return "1d"
    if minutes >= 60 and minutes % 60 == 0:
        return f"{int(minutes // 60)}h"
    return f"{minutes:g}min"
