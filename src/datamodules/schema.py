"""Validation of raw bars with pandera's polars backend, with errors a user can act on."""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

from datamodules.errors import DataError


class BarSchema(pa.DataFrameModel):
    """Long-format OHLCV bars: one row per (ticker, timestamp).

    ``_file`` and ``_row`` say where each row came from, so an error can point at it.
    """

    ticker: str
    timestamp: pl.Datetime = pa.Field(nullable=False)
    open: float = pa.Field(gt=0)
    high: float = pa.Field(gt=0)
    low: float = pa.Field(gt=0)
    close: float = pa.Field(gt=0)
    volume: float = pa.Field(ge=0)

    @pa.dataframe_check(name="no duplicate timestamps")
    def unique_timestamps(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(~pl.struct("ticker", "timestamp").is_duplicated())

    @pa.dataframe_check(name="timestamps strictly increasing")
    def increasing(cls, data: pa.PolarsData) -> pl.LazyFrame:
        step = pl.col("timestamp").diff().over("ticker")
        duplicate = pl.struct("ticker", "timestamp").is_duplicated()
        return data.lazyframe.select((step.is_null() | (step > pl.duration())) | duplicate)

    @pa.dataframe_check(name="high >= max(open, close)")
    def high_above(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("high") >= pl.max_horizontal("open", "close"))

    @pa.dataframe_check(name="low <= min(open, close)")
    def low_below(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col("low") <= pl.min_horizontal("open", "close"))

    class Config:
        strict = False  # _file, _row ride along
        coerce = False


_CHECK_COLUMNS = {
    "no duplicate timestamps": "timestamp",
    "timestamps strictly increasing": "timestamp",
    "high >= max(open, close)": "high",
    "low <= min(open, close)": "low",
}

_HINTS = {
    "not_nullable": "fill or drop the missing values",
    "no duplicate timestamps": "keep one row per timestamp",
    "timestamps strictly increasing": "sort the file by time",
    "high >= max(open, close)": "fix the high (or the open/close) of that bar",
    "low <= min(open, close)": "fix the low (or the open/close) of that bar",
}


def validate_bars(frame: pl.DataFrame) -> pl.DataFrame:
    """Check every rule on ``frame`` (with ``_file`` and ``_row`` columns) and return it.

    Raises :class:`DataError` naming the file, ticker, row, column, check and value of the
    first failure of each check, and how many rows fail it.
    """
    try:
        return BarSchema.validate(frame, lazy=True)
    except (pa.errors.SchemaErrors, pa.errors.SchemaError) as err:
        cases = getattr(err, "failure_cases", None)
        if not isinstance(cases, pl.DataFrame) or cases.is_empty():
            raise DataError(f"Market data failed validation: {err}") from None
        raise DataError(_describe(frame, cases)) from None


def _describe(frame: pl.DataFrame, cases: pl.DataFrame) -> str:
    lines = []
    cases = cases.filter(pl.col("index").is_not_null())
    for check, group in cases.group_by("check", maintain_order=True):
        check_name = str(check[0])
        first = group.sort("index").row(0, named=True)
        where = frame.row(int(first["index"]), named=True)
        column = first["column"] if first["column"] not in (None, "BarSchema") else None
        column = column or _CHECK_COLUMNS.get(check_name, "?")
        value = where.get(column)
        hint = _HINTS.get(check_name, "correct the value")
        lines.append(
            f"{where['_file']}: ticker {where['ticker']}, row {where['_row']}, column "
            f"'{column}' fails check '{check_name}' (value {value!r}; {group.height} row(s) "
            f"fail it) - {hint}."
        )
    if not lines:
        return "Market data failed validation (pandera reported no row)."
    return "Market data failed validation before training: " + " ".join(lines)
