"""A data source of a user's own: bars in a SQLite table (Python's built-in ``sqlite3``).

The table has one row per (ticker, timestamp) with columns ticker, timestamp (ISO 8601 text),
open, high, low, close, volume. The source only loads the rows of the run's tickers; the
project's pipeline validates, aligns, resamples, adds features, caches and splits them as it
does for every source.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import polars as pl

from datamodules.errors import ConfigError, DataError
from datamodules.sources.base import BarSource

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, kw_only=True)
class SQLiteSource(BarSource):
    """``data.path``: the SQLite file; ``data.table``: the table of bars."""

    path: str
    table: str = "bars"

    name: ClassVar[str] = "sqlite"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not IDENTIFIER.match(self.table):
            raise ConfigError(f"data.table is {self.table!r}; give a plain table name.")
        if not Path(self.path).is_file():
            raise ConfigError(f"data.path: no SQLite file at {self.path}.")

    def load(self) -> pl.DataFrame:
        marks = ", ".join("?" for _ in self.tickers)
        query = (
            "SELECT ticker, timestamp, open, high, low, close, volume FROM "
            f"{self.table} WHERE ticker IN ({marks}) ORDER BY ticker, timestamp"
        )
        with sqlite3.connect(self.path) as db:
            rows = db.execute(query, list(self.tickers)).fetchall()
        if not rows:
            raise DataError(
                f"{self.path}: table {self.table} has no rows for {list(self.tickers)}."
            )
        frame = pl.DataFrame(
            rows,
            schema=["ticker", "timestamp", "open", "high", "low", "close", "volume"],
            orient="row",
        )
        return frame.with_columns(
            pl.col("timestamp").str.to_datetime(time_unit="us"),
            pl.lit(f"{Path(self.path).name}:{self.table}").alias("_file"),
            (pl.int_range(pl.len()).over("ticker") + 1).alias("_row"),
        )

    def fingerprint(self) -> dict:
        stat = Path(self.path).stat()
        return {
            "path": str(Path(self.path).resolve()),
            "table": self.table,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
