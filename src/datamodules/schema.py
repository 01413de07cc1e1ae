"""Validation of raw bars with pandera's polars backend, with errors a user can act on."""

from __future__ import annotations

import math

import pandera.polars as pa
import polars as pl

from datamodules.errors import DataError

VALUES = ("open", "high", "low", "close", "volume")
FINITE = "finite (not inf or NaN)"
TEXT_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt")


def _finite_row() -> pl.Expr:
    """True where every price and the volume is finite (a missing value is not_nullable's)."""
    return pl.all_horizontal([pl.col(c).is_finite() | pl.col(c).is_null() for c in VALUES])


def position(file: object, row: object) -> str:
    """Where a bar is, as the user finds it: ``line N`` of a text file (an editor's line
    numbers, the header being line 1), else ``row N`` (1-based)."""
    text = str(file).lower().endswith(TEXT_SUFFIXES)
    return f"line {row}" if text else f"row {row}"


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

    @pa.dataframe_check(name=FINITE)
    def finite(cls, data: pa.PolarsData) -> pl.LazyFrame:
        return data.lazyframe.select(_finite_row())

    # A bar with a non-finite value is reported by the check above, not by these two.
    @pa.dataframe_check(name="high >= max(open, close)")
    def high_above(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ok = pl.col("high") >= pl.max_horizontal("open", "close")
        return data.lazyframe.select(ok | ~_finite_row())

    @pa.dataframe_check(name="low <= min(open, close)")
    def low_below(cls, data: pa.PolarsData) -> pl.LazyFrame:
        ok = pl.col("low") <= pl.min_horizontal("open", "close")
        return data.lazyframe.select(ok | ~_finite_row())

    class Config:
        strict = False  # _file, _row ride along
        coerce = False


_CHECK_COLUMNS = {
    FINITE: "close",
    "no duplicate timestamps": "timestamp",
    "timestamps strictly increasing": "timestamp",
    "high >= max(open, close)": "high",
    "low <= min(open, close)": "low",
}

_HINTS = {
    "not_nullable": "fill or drop the missing values",
    FINITE: "prices and volumes must be finite numbers: fix or drop that bar",
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
    # A NaN also fails greater_than(0): a non-finite bar is reported once, as non-finite.
    nonfinite = set(cases.filter(pl.col("check") == FINITE)["index"].cast(pl.Int64).to_list())
    cases = cases.filter(
        (pl.col("check") == FINITE) | ~pl.col("index").cast(pl.Int64).is_in(list(nonfinite))
    )
    for check, group in cases.group_by("check", maintain_order=True):
        check_name = str(check[0])
        first = group.sort("index").row(0, named=True)
        where = frame.row(int(first["index"]), named=True)
        column = first["column"] if first["column"] not in (None, "BarSchema") else None
        column = column or _CHECK_COLUMNS.get(check_name, "?")
        if check_name == FINITE:  # the first column of that bar that is not finite
            column = next(
                (c for c in VALUES if where[c] is not None and not math.isfinite(where[c])), column
            )
        value = where.get(column)
        hint = _HINTS.get(check_name, "correct the value")
        lines.append(
            f"{where['_file']}: ticker {where['ticker']}, {position(where['_file'], where['_row'])}, column "
            f"'{column}' fails check '{check_name}' (value {value!r}; {group.height} row(s) "
            f"fail it) - {hint}."
        )
    if not lines:
        return "Market data failed validation (pandera reported no row)."
    return "Market data failed validation before training: " + " ".join(lines)
