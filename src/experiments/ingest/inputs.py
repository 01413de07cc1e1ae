"""The bars an ingest reads: the shipped sample, a synthetic market or a CSV / Parquet file,
as the long frame every data source loads, cut to a time range and validated by the same
schema as a run's data, so what goes into the database is what a run would accept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from datamodules.bars import bar_minutes
from datamodules.errors import DataError
from datamodules.schema import validate_bars
from datamodules.sources import SAMPLE_TICKERS, load_sample
from datamodules.sources.files import FileSource, read_bar_file
from datamodules.synthetic import SyntheticConfig, generate_bars
from datamodules.timerange import TimeRange

SYNTHETIC_TICKERS = ("NVDA", "MSFT")


def sample_bars(tickers: Sequence[str] | None) -> pl.DataFrame:
    """The shipped daily prices of ``tickers`` (all four when None)."""
    return load_sample(list(tickers or SAMPLE_TICKERS))


def synthetic_bars(
    tickers: Sequence[str] | None, bar_size: str, sessions: int, seed: int
) -> pl.DataFrame:
    """The synthetic market (as ``data=synthetic``): NOT real data."""
    cfg = SyntheticConfig(sessions=sessions)
    return generate_bars(list(tickers or SYNTHETIC_TICKERS), bar_minutes(bar_size), seed, cfg)


def file_bars(
    path: str,
    *,
    ticker: str | None,
    ticker_column: str | None,
    tickers: Sequence[str] | None,
    fmt: str,
    columns: Mapping[str, str],
    timestamp_format: str | None,
    timezone: str | None,
) -> pl.DataFrame:
    """A CSV or Parquet file of one ticker (``ticker``) or of many (``ticker_column``),
    read by the file source's reader."""
    if not Path(path).expanduser().is_file():
        raise DataError(
            f"SOURCE: file '{path}' does not exist (looked at {Path(path).expanduser().resolve()}); "
            "give sample, synthetic or the path of a CSV or Parquet file."
        )
    if (ticker is None) == (ticker_column is None):
        raise DataError(
            f"{path}: say whose bars the file holds: --ticker NAME (one ticker) or "
            "--ticker-column COLUMN (a column naming each row's ticker)."
        )
    # The file source's own checks of the settings (format, zone, column keys, the file).
    FileSource(
        tickers=[ticker] if ticker else list(tickers or ["_"]),
        files={ticker: path} if ticker else path,
        format=fmt,
        columns=dict(columns),
        ticker_column=ticker_column,
        timestamp_format=timestamp_format,
        timezone=timezone,
        cache_dir=None,
    )
    frame = read_bar_file(
        path, ticker, fmt, columns, ticker_column, timestamp_format, timezone, key="SOURCE"
    )
    if tickers:
        present = set(frame["ticker"].unique().to_list())
        unknown = [t for t in tickers if t not in present]
        if unknown:
            raise DataError(
                f"--tickers asks for {', '.join(unknown)}, but column '{ticker_column}' of "
                f"{path} only has {', '.join(sorted(present))}."
            )
        frame = frame.filter(pl.col("ticker").is_in(list(tickers)))
    return frame


def checked(frame: pl.DataFrame, time_range: TimeRange, where: str) -> pl.DataFrame:
    """``frame`` cut to ``time_range`` and validated (pandera), as a run would read it."""
    tickers = frame["ticker"].unique(maintain_order=True).to_list()
    frame = time_range.apply(frame, tickers, where)
    return validate_bars(frame.sort("ticker", "timestamp", maintain_order=True))


def describe_path(path: str) -> str:
    return str(Path(path).expanduser())
