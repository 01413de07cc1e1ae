"""Sources of raw bars: user CSV/Parquet files and the shipped sample of real daily prices.

Every source returns the same long polars frame: ``ticker``, ``timestamp`` (naive, in the
data's timezone), ``open``, ``high``, ``low``, ``close``, ``volume`` (Float64), plus
``_file`` and ``_row`` so validation errors can point at the offending row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import polars as pl

from datamodules.errors import DataError
from datamodules.schema import BAR_COLUMNS

SAMPLE_TICKERS = ("AAPL", "GOOG", "IBM", "MSFT")


def sample_path() -> Path:
    """Path of the shipped Parquet file of real daily prices (see SAMPLE_DATA.md)."""
    return Path(str(resources.files("datamodules") / "data" / "sample_stocks.parquet"))


def load_sample(tickers: Sequence[str]) -> pl.DataFrame:
    """Split-adjusted daily OHLCV of AAPL, GOOG, IBM, MSFT (2000-03 to 2013-03, Quandl WIKI)."""
    unknown = [t for t in tickers if t not in SAMPLE_TICKERS]
    if unknown:
        raise DataError(
            f"env.tickers asks for {', '.join(unknown)}, but data=sample only has "
            f"{', '.join(SAMPLE_TICKERS)}. Set env.tickers to some of those, or use "
            "data=synthetic (any ticker name) or data=csv with your own files."
        )
    path = sample_path()
    frame = pl.read_parquet(path).filter(pl.col("ticker").is_in(list(tickers)))
    frame = frame.with_columns(
        pl.lit(f"{path.name}").alias("_file"),
        (pl.int_range(pl.len()).over("ticker") + 1).alias("_row"),
    )
    return frame.select("ticker", *BAR_COLUMNS, "_file", "_row")


def load_files(
    files: str | Mapping[str, str] | Sequence[str],
    tickers: Sequence[str],
    fmt: str,
    columns: Mapping[str, str] | None = None,
    ticker_column: str | None = None,
    timestamp_format: str | None = None,
    timezone: str | None = None,
) -> pl.DataFrame:
    """Read user files: ``files`` maps ticker -> path, or is one path with ``ticker_column``.

    ``columns`` maps our names (timestamp, open, high, low, close, volume) to the file's
    column names; unmapped names are matched case-insensitively. Extra columns are ignored.
    ``timestamp_format`` is a strptime format (ISO 8601 when unset); ``timezone`` is the zone
    of naive timestamps and the zone sessions are counted in (aware ones are converted to it).
    """
    if isinstance(files, str) or (isinstance(files, Sequence) and not isinstance(files, Mapping)):
        paths = [files] if isinstance(files, str) else list(files)
        if not ticker_column:
            raise DataError(
                "data.files is a path, so the tickers must come from a column: set "
                "data.ticker_column to the name of that column, or give data.files as a "
                "mapping ticker -> path."
            )
        frames = [
            _read_one(p, None, fmt, columns, ticker_column, timestamp_format, timezone)
            for p in paths
        ]
        frame = pl.concat(frames)
        present = set(frame["ticker"].unique().to_list())
        unknown = [t for t in tickers if t not in present]
        if unknown:
            raise DataError(
                f"env.tickers asks for {', '.join(unknown)}, but column '{ticker_column}' of "
                f"{', '.join(map(str, paths))} only has {', '.join(sorted(present))}."
            )
        return frame.filter(pl.col("ticker").is_in(list(tickers)))
    unknown = [t for t in tickers if t not in files]
    if unknown:
        raise DataError(
            f"env.tickers asks for {', '.join(unknown)}, but data.files only maps "
            f"{', '.join(files) or 'nothing'}. Add data.files.{unknown[0]}=PATH or change "
            "env.tickers."
        )
    return pl.concat(
        [
            _read_one(files[t], t, fmt, columns, ticker_column, timestamp_format, timezone)
            for t in tickers
        ]
    )


def _read_one(
    path_str: str,
    ticker: str | None,
    fmt: str,
    columns: Mapping[str, str] | None,
    ticker_column: str | None,
    timestamp_format: str | None,
    timezone: str | None,
) -> pl.DataFrame:
    path = Path(path_str).expanduser()
    key = f"data.files.{ticker}" if ticker else "data.files"
    if not path.is_file():
        raise DataError(
            f"{key}: file '{path_str}' does not exist (looked at {path.resolve()}). Fix the "
            "path; relative paths are taken from the folder you ran the command in."
        )
    try:
        if fmt == "csv":
            raw = pl.read_csv(path, infer_schema_length=0)  # all strings; we cast below
        elif fmt == "parquet":
            raw = pl.read_parquet(path)
        else:
            raise DataError(f"data.source '{fmt}' is not a file format (csv or parquet).")
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(f"{path}: cannot be read as {fmt}: {err}".splitlines()[0]) from None
    if raw.is_empty():
        raise DataError(f"{path}: the file has no rows.")
    wanted = dict(columns or {})
    selected = {}
    by_lower = {c.lower(): c for c in raw.columns}
    for ours in BAR_COLUMNS:
        theirs = wanted.get(ours) or ours
        found = theirs if theirs in raw.columns else by_lower.get(str(theirs).lower())
        if found is None:
            raise DataError(
                f"{path}: no column '{theirs}' for {ours} (data.columns.{ours}); the file's "
                f"columns are {', '.join(raw.columns)}. Set data.columns.{ours}=NAME."
            )
        selected[ours] = found
    frame = raw.select(
        pl.int_range(1, raw.height + 1).alias("_row"),
        *(pl.col(theirs).alias(ours) for ours, theirs in selected.items()),
    )
    if ticker is None:
        if ticker_column not in raw.columns:
            raise DataError(
                f"{path}: no column '{ticker_column}' (data.ticker_column); the file's columns "
                f"are {', '.join(raw.columns)}."
            )
        frame = frame.with_columns(raw[ticker_column].cast(pl.String).alias("ticker"))
    else:
        frame = frame.with_columns(pl.lit(ticker).alias("ticker"))
    frame = frame.with_columns(
        _parse_timestamps(frame, path, timestamp_format, timezone),
        pl.lit(str(path)).alias("_file"),
    )
    for name in ("open", "high", "low", "close", "volume"):
        frame = frame.with_columns(_to_float(frame, name, path))
    return frame.select("ticker", *BAR_COLUMNS, "_file", "_row")


def _to_float(frame: pl.DataFrame, name: str, path: Path) -> pl.Series:
    col = frame[name]
    if col.dtype.is_numeric():
        return col.cast(pl.Float64)
    parsed = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    bad = parsed.is_null() & col.is_not_null() & (col.cast(pl.String).str.strip_chars() != "")
    if bad.any():
        i = int(bad.arg_true()[0])
        raise DataError(
            f"{path}: column '{name}', row {frame['_row'][i]}: value {col[i]!r} is not a "
            "number. Fix the value or map another column with data.columns."
        )
    return parsed


def _parse_timestamps(
    frame: pl.DataFrame, path: Path, timestamp_format: str | None, timezone: str | None
) -> pl.Series:
    col = frame["timestamp"]
    if col.dtype == pl.String:
        text = col.str.strip_chars()
        if timestamp_format:
            parsed = text.str.strptime(pl.Datetime("us"), timestamp_format, strict=False)
        else:
            try:
                parsed = text.str.to_datetime(time_unit="us", strict=False)
            except pl.exceptions.PolarsError:
                parsed = pl.Series([None] * len(text), dtype=pl.Datetime("us"))
        bad = parsed.is_null() & text.is_not_null()
        if bad.any():
            i = int(bad.arg_true()[0])
            how = (
                f"the format data.timestamp_format='{timestamp_format}'"
                if timestamp_format
                else "ISO 8601 (set data.timestamp_format to a strptime format such as "
                "'%d/%m/%Y %H:%M')"
            )
            raise DataError(
                f"{path}: column 'timestamp', row {frame['_row'][i]}: {text[i]!r} does not "
                f"match {how}."
            )
        col = parsed
    elif col.dtype == pl.Date:
        col = col.cast(pl.Datetime("us"))
    elif not isinstance(col.dtype, pl.Datetime):
        raise DataError(
            f"{path}: column 'timestamp' has type {col.dtype}; it must hold dates or times."
        )
    tz = getattr(col.dtype, "time_zone", None)
    if tz is not None:
        col = col.dt.convert_time_zone(timezone or "UTC").dt.replace_time_zone(None)
    return col.cast(pl.Datetime("us")).alias("timestamp")
