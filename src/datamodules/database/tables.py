"""Tables of bars: created with proper types and a primary key on (ticker, timestamp), filled in
one transaction, never overwritten unless asked.

``write_bars(uri, frame, table, if_exists)`` with ``if_exists``:

- ``fail`` (the default): an existing table is left alone and the call refused;
- ``append``: the rows are added; a bar the table already holds (same ticker and timestamp)
  breaks the primary key and nothing is written;
- ``replace``: the table is dropped and written anew, in the same transaction, so a failed
  write leaves the old table as it was.

Columns: ticker (text), timestamp (a timestamp without time zone, in the data's own time),
open, high, low, close (price units), volume (shares per bar), all double precision, none
null. PostgreSQL receives the rows by ADBC's bulk ingest (binary COPY), DuckDB from Arrow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import polars as pl

from datamodules.columns import BAR_COLUMNS
from datamodules.database.connection import Database, connect
from datamodules.database.statements import Bound, quote, quoted_table, table_parts
from datamodules.database.uri import DatabaseURI
from datamodules.errors import DataError

IF_EXISTS = ("fail", "append", "replace")
COLUMNS = ("ticker", *BAR_COLUMNS)
TYPES = {
    "duckdb": {"ticker": "VARCHAR", "timestamp": "TIMESTAMP", "number": "DOUBLE"},
    "postgresql": {"ticker": "text", "timestamp": "timestamp", "number": "double precision"},
}


@dataclass(frozen=True)
class Written:
    """What :func:`write_bars` did: ``action`` (created, appended to, replaced), the rows
    written per ticker, their first and last timestamp, and the table's rows after."""

    table: str
    action: str
    rows: int
    per_ticker: dict[str, int]
    first: str
    last: str
    table_rows: int


def create_statement(kind: str, table: tuple[str, ...]) -> str:
    """``CREATE TABLE`` of bars with the primary key (ticker, timestamp)."""
    types = TYPES[kind]
    columns = [f"{quote('ticker')} {types['ticker']} NOT NULL"]
    columns.append(f"{quote('timestamp')} {types['timestamp']} NOT NULL")
    columns += [f"{quote(c)} {types['number']} NOT NULL" for c in BAR_COLUMNS[1:]]
    key = f"PRIMARY KEY ({quote('ticker')}, {quote('timestamp')})"
    return f"CREATE TABLE {quoted_table(table)} ({', '.join(columns)}, {key})"


def write_bars(
    uri: DatabaseURI,
    frame: pl.DataFrame,
    table: str = "bars",
    if_exists: Literal["fail", "append", "replace"] = "fail",
) -> Written:
    """Write ``frame`` (ticker, timestamp, open, high, low, close, volume) to ``table`` of
    ``uri``; see the module docs for ``if_exists``. A DataError (one paragraph, the password
    masked) when the table exists and ``if_exists`` is fail, when its columns are not ours,
    or when appended bars are already there; nothing is written then."""
    if if_exists not in IF_EXISTS:
        raise DataError(f"if_exists is {if_exists!r}; choose fail, append or replace.")
    parts = table_parts(table, "--table")
    frame = frame.select(
        pl.col("ticker").cast(pl.String),
        pl.col("timestamp").cast(pl.Datetime("us")),
        *(pl.col(c).cast(pl.Float64) for c in BAR_COLUMNS[1:]),
    ).sort("ticker", "timestamp")  # stored in key order, so reads come back in it
    with connect(uri, write=True) as db:
        found = db.find_table(parts)
        target = found or parts
        shown = (
            ".".join(target) if len(target) == 2 and target[0] != db.default_schema else target[-1]
        )
        if found is not None and if_exists == "fail":
            raise DataError(
                f"{uri.where()} already has a table '{shown}' ({_rows(db, found)} rows); it is "
                "left as it is. Pass --if-exists append to add these bars to it, or --if-exists "
                "replace to drop it and write these bars instead."
            )
        if found is not None and if_exists == "append":
            _check_columns(db, found, shown)
        db.begin()
        try:
            if len(parts) == 2 and found is None:
                db.execute(
                    f"CREATE SCHEMA IF NOT EXISTS {quote(parts[0])}", (), "creating the schema"
                )
            if found is not None and if_exists == "replace":
                db.execute(f"DROP TABLE {quoted_table(found)}", (), f"dropping table {shown}")
            if found is None or if_exists == "replace":
                db.execute(create_statement(uri.kind, target), (), f"creating table {shown}")
            db.insert(tuple(target), frame, f"writing {frame.height} rows to table {shown}")
            if uri.kind == "postgresql":  # statistics for the planner, in the same transaction
                db.execute(f"ANALYZE {quoted_table(target)}", (), f"analyzing table {shown}")
            db.commit()
        except DataError as err:
            db.rollback()
            raise _refused(err, uri, shown, if_exists) from None
        except BaseException:
            db.rollback()
            raise
        total = _rows(db, target)
    per_ticker = dict(frame.group_by("ticker").len().sort("ticker").iter_rows())
    action = (
        "created" if found is None else ("replaced" if if_exists == "replace" else "appended to")
    )
    return Written(
        table=shown,
        action=action,
        rows=frame.height,
        per_ticker={str(k): int(v) for k, v in per_ticker.items()},
        first=str(frame["timestamp"].min()),
        last=str(frame["timestamp"].max()),
        table_rows=total,
    )


def _rows(db: Database, table: tuple[str, ...]) -> int:
    got = db.read(Bound(f"SELECT count(*) AS n FROM {quoted_table(table)}", ()), "counting rows")
    return int(got["n"][0])


def _check_columns(db: Database, table: tuple[str, ...], shown: str) -> None:
    empty = db.read(Bound(f"SELECT * FROM {quoted_table(table)} LIMIT 0", ()), "reading columns")
    missing = [c for c in COLUMNS if c not in empty.columns]
    if missing:
        raise DataError(
            f"{db.uri.where()}: table '{shown}' has the columns {', '.join(empty.columns)}, "
            f"not {', '.join(COLUMNS)}, so bars cannot be appended to it (missing "
            f"{', '.join(missing)}). Write to another --table, or --if-exists replace."
        )


def _refused(err: DataError, uri: DatabaseURI, shown: str, if_exists: str) -> DataError:
    text = str(err)
    low = text.lower()
    if "duplicate key" in low or "primary key" in low or "unique constraint" in low:
        return DataError(
            f"{uri.where()}: table '{shown}' already holds some of these bars (its primary key "
            f"is ticker and timestamp: {_key_detail(text)}); nothing was written, the rows go in "
            "one transaction. Append only the bars it lacks, or pass --if-exists replace to "
            "write the table anew."
        )
    return DataError(f"{text} Nothing was written (if exists: {if_exists}).")


def _key_detail(text: str) -> str:
    pg = re.search(r"Key \((.+?)\)=\((.+?)\) already exists", text)
    if pg:
        return f"({pg.group(2)}) is there already"
    duck = re.search(r'Duplicate key "(.+?)"', text)
    if duck:
        return f"{duck.group(1)} is there already"
    return "a duplicate key"
