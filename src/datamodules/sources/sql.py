"""The SQL source: bars read from a database table or query, DuckDB (embedded) or PostgreSQL
(and so TimescaleDB).

``uri`` names the database (:mod:`datamodules.database.uri`). Either ``table`` (``bars`` when
neither is set) with the same column mapping as the file source (``columns``: our name -> the
table's column, ``ticker_column``), or ``query``: a SELECT whose columns are (or are mapped
to) ticker, timestamp, open, high, low, close, volume. The tickers and the time range
(``data.start``, ``data.end``) reach the database as data, never pasted into the SQL
(:mod:`datamodules.database.statements`: parameters in DuckDB, rows of temporary tables in
PostgreSQL): the read wraps the table or query as ``SELECT ... FROM (source) WHERE ticker is
one of the tickers AND timestamp >= lower AND timestamp < upper``, and a query may also name
``:tickers``, ``:start`` and ``:end`` itself to filter earlier. Long ranges are read in
partitions of ``partition_days`` days, one query each.

The feature cache key holds the URI without credentials, the table or query, the mapping and
a data-version probe: per ticker, the row count, the first and last timestamp in the range and
an exact digest of the prices, volumes and times (one query: each price and volume column's
sum in whole millionths and the times' sum in microseconds since the epoch, which the database
adds exactly and in any order). Appended rows, and bars corrected or moved in place, rebuild the
features; an unchanged table reuses them. The digest makes the probe read the rows
themselves: for 5M rows of 100 tickers it takes about 1.25 s instead of 0.60 s on PostgreSQL and
0.15 s instead of 0.06 s in DuckDB, against a read of about 2.3 s and 0.5 s. A correction smaller
than a millionth of a price is not seen. The read stops
at the probed last timestamp, so the features always match the key they are stored under.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np
import polars as pl

from datamodules.columns import BAR_COLUMNS, LOAD_COLUMNS, column_mapping
from datamodules.database.connection import Database, connect
from datamodules.database.statements import (
    CONFIGURED,
    Range,
    TempTables,
    Values,
    quote,
    quoted_table,
    substitute,
    table_parts,
)
from datamodules.database.uri import DatabaseURI, mask_credentials, parse_uri
from datamodules.errors import ConfigError, DataError
from datamodules.sources.base import BarSource

log = logging.getLogger(__name__)

DEFAULT_TABLE = "bars"
LISTED = 20  # tickers named in a message at most
DIGEST_COLUMNS = ("open", "high", "low", "close", "volume")  # summed exactly by the probe
DIGEST_SCALE = 1_000_000  # the probe sums values in millionths (integers: exact, any order)
DIGEST_LIMIT = 9e12  # |values| summed (NaN, inf and larger ones are left to the validation)
# A bar's time as whole microseconds since the epoch, per database: DuckDB's own integer, and
# PostgreSQL's date_part (a double; its extract is a numeric, which took the probe from 0.9 s to
# 2.1 s for 5M rows), the same integer for the same time on every probe.
_EPOCH_US = {
    "duckdb": "epoch_us({})",
    "postgresql": "CAST(floor(date_part('epoch', {}) * 1000000) AS BIGINT)",
}


@dataclass(frozen=True)
class Relation:
    """What the read selects from: a table or the user's query, and how to name it."""

    label: str  # "table bars" or "data.query"
    table: tuple[str, str] | None  # (schema, name) of a table; None: data.query

    def sql(self, query: str | None, values: Values) -> str:
        """The FROM item: the quoted table, or the query in parentheses with its
        placeholders filled from ``values``."""
        if self.table is not None:
            return quoted_table(self.table)
        return f"({substitute(query, values)})"


@dataclass(frozen=True, kw_only=True)
class SQLSource(BarSource):
    """Bars from a database: ``uri`` (``duckdb:///PATH`` or ``postgresql://USER@HOST:PORT/DB``);
    ``table`` (``bars`` or ``schema.bars``; None = ``bars`` unless ``query`` is set) or
    ``query`` (a SELECT; see the module docs for ``:tickers``, ``:start``, ``:end``);
    ``columns``: our name (timestamp, open, high, low, close, volume) -> the table's column
    (unset or None = the same name, matched case-insensitively); ``ticker_column``: the
    column of ticker names; ``timezone``: the zone of the data: zone-aware timestamps
    (``timestamptz``) are converted to it and naive ones kept as stored (None = UTC), and it is
    the session zone the range's bounds meet zone-aware columns in; ``partition_days``: days of
    data per query when reading a long range (None = one query). Prices are in the table's
    units, volume in shares per bar.
    """

    uri: str = "duckdb:///outputs/market.duckdb"
    table: str | None = None
    query: str | None = None
    columns: Mapping[str, str | None] = field(default_factory=dict)
    ticker_column: str = "ticker"
    timezone: str | None = None
    partition_days: int | None = 366

    name: ClassVar[str] = "sql"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_uri", parse_uri(self.uri, "data.uri"))
        if self.table is not None and self.query is not None:
            raise ConfigError(
                f"data.table is {self.table!r} and data.query is set; give one of them: a table "
                "(with data.columns mapping its columns) or a query (null the other)."
            )
        if self.query is not None:
            if not isinstance(self.query, str) or not self.query.strip():
                raise ConfigError(
                    f"data.query is {self.query!r}; give a SELECT returning ticker, timestamp, "
                    "open, high, low, close, volume, or null to read data.table."
                )
            text = self.query.strip().rstrip(";").strip()
            if ";" in text:
                raise ConfigError(
                    "data.query holds more than one statement (a ';' inside it); give one SELECT."
                )
            object.__setattr__(self, "query", text)
        else:
            table_parts(self.table or DEFAULT_TABLE)
        object.__setattr__(
            self,
            "columns",
            column_mapping(
                self.columns,
                "the table",
                "{timestamp: ts, volume: vol}",
                "; the ticker column is data.ticker_column",
            ),
        )
        if not isinstance(self.ticker_column, str) or not self.ticker_column.strip():
            raise ConfigError(
                f"data.ticker_column is {self.ticker_column!r}; give the column of ticker names."
            )
        if self.timezone is not None:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
                raise ConfigError(
                    f"data.timezone is {self.timezone!r}, which is not a time zone name; use "
                    "an IANA name such as America/New_York, Europe/London or UTC."
                ) from None
        days = self.partition_days
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 1):
            raise ConfigError(
                f"data.partition_days is {days!r}; it must be a whole number of days >= 1 per "
                "query, or null to read the range in one query."
            )

    def __repr__(self) -> str:
        """The dataclass's repr with the URI's password masked."""
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return mask_credentials(f"{type(self).__name__}({shown})")

    # ------------------------------------------------------------------ BarSource
    @property
    def database(self) -> DatabaseURI:
        """``uri`` parsed (kind, file or server, user; never the password)."""
        return self._uri

    def fingerprint(self) -> dict:
        probe = self._version()
        return {
            "uri": self.database.without_credentials(),
            "table": list(probe["table"]) if probe["table"] else None,
            "query": self.query,
            "columns": probe["columns"],
            "timezone": self.timezone,
            "range": self.time_range.key(),
            "version": probe["tickers"],
        }

    def load(self) -> pl.DataFrame:
        started = time.perf_counter()
        probe = self._version()
        partitions = self._partitions(probe["tickers"])
        with self._connect() as db:
            relation = self._relation(db)
            values = db.values(self.tickers, {**self._configured(), **dict(enumerate(partitions))})
            parts = [
                self._read(db, relation, probe["columns"], values, k)
                for k in range(len(partitions))
            ]
        frame = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
        frame = self._typed(frame, relation)
        log.info(
            "sql: %d rows of %s from %s of %s in %.2f s (%d %s)",
            frame.height,
            ", ".join(self.tickers),
            relation.label,
            self.database.masked(),
            time.perf_counter() - started,
            len(parts),
            "query" if len(parts) == 1 else "partitions",
        )
        return frame

    # ------------------------------------------------------------------ the probe
    def _version(self) -> dict:
        """The data-version probe (once per source object): the mapped columns, the table,
        and per ticker [rows, first, last] inside the range."""
        cached = self.__dict__.get("_probe")
        if cached is not None:
            return cached
        with self._connect() as db:
            relation = self._relation(db)
            values = db.values(self.tickers, self._configured())
            selected = self._columns(db, relation, values)
            tcol, scol = selected["ticker"], selected["timestamp"]
            v = values()
            digest = [selected[c] for c in DIGEST_COLUMNS]
            found = db.read(
                v.bound_statement(
                    _probe_sql(relation, self.query, v, tcol, scol, digest, _EPOCH_US[db.uri.kind])
                ),
                f"probing {relation.label}",
            )
            found = found.with_columns(
                _naive(found["first"], self.timezone), _naive(found["last"], self.timezone)
            )
            versions = {
                str(t): [int(n), _iso(first), _iso(last), *map(_exact, sums)]
                for t, n, first, last, *sums in found.iter_rows()
            }
            missing = [t for t in self.tickers if t not in versions]
            if missing:
                raise self._no_rows(db, relation, selected, missing)
        probe = {
            "table": relation.table,
            "columns": selected,
            "tickers": {t: versions[t] for t in self.tickers},
        }
        object.__setattr__(self, "_probe", probe)
        return probe

    def _configured(self) -> dict[int, Range]:
        return {CONFIGURED: (self.time_range.lower, self.time_range.upper)}

    def _no_rows(
        self, db: Database, relation: Relation, selected: dict, missing: list[str]
    ) -> DataError:
        tcol, scol = selected["ticker"], selected["timestamp"]
        rng = self.time_range
        within = f" {rng.describe()}" if rng.bounded else ""
        v = db.values(self.tickers, self._configured())()
        present = db.read(
            v.bound_statement(
                f"SELECT DISTINCT CAST({quote(tcol)} AS VARCHAR) AS t FROM "
                f"{relation.sql(self.query, v)} AS source{v.where(None, scol, CONFIGURED)} "
                f"ORDER BY 1 LIMIT {LISTED + 1}"
            ),
            f"listing the tickers of {relation.label}",
        )["t"].to_list()
        has = ", ".join(map(str, present[:LISTED])) + (", ..." if len(present) > LISTED else "")
        spans = []
        if rng.bounded:
            for ticker in missing[:LISTED]:
                one = db.values([ticker], self._configured())()
                span = db.read(
                    one.bound_statement(
                        f"SELECT min({quote(scol)}) AS a, max({quote(scol)}) AS b FROM "
                        f"{relation.sql(self.query, one)} AS source WHERE {one.member(quote(tcol))}"
                    ),
                    f"reading the range of {ticker}",
                )
                if span["a"][0] is not None:
                    spans.append(f"{ticker}'s rows run from {span['a'][0]} to {span['b'][0]}")
        return DataError(
            f"env.tickers asks for {', '.join(missing)}, but {relation.label} of "
            f"{self.database.where()} has no rows of "
            f"{'it' if len(missing) == 1 else 'them'}{within}"
            + (f" ({'; '.join(spans)})" if spans else "")
            + f". It has {'rows of ' + has if has else 'no rows'}{within}. Choose other "
            "env.tickers, widen data.start / data.end, or ingest the bars (python -m "
            "experiments.ingest)."
        )

    # ------------------------------------------------------------------ reading
    def _connect(self) -> Database:
        return connect(self.database, timezone=self.timezone)

    def _relation(self, db: Database) -> Relation:
        if self.query is not None:
            return Relation("data.query", None)
        name = self.table or DEFAULT_TABLE
        found = db.find_table(table_parts(name))
        if found is None:
            raise DataError(
                f"data.table: there is no table '{name}' in {self.database.where()}; it has "
                f"{db.table_names()}. Set data.table to one of them, or load the bars with "
                f"`python -m experiments.ingest sample --to {self.database.masked()}"
                + (f" --table {name}`." if name != DEFAULT_TABLE else "`.")
            )
        schema, table = found
        label = f"table {table if schema == db.default_schema else f'{schema}.{table}'}"
        return Relation(label, found)

    def _columns(self, db: Database, relation: Relation, values) -> dict[str, str]:
        """Our name -> the relation's column, checked to exist and to hold the right types."""
        v = values()
        empty = db.read(
            v.bound_statement(f"SELECT * FROM {relation.sql(self.query, v)} AS source LIMIT 0"),
            f"reading the columns of {relation.label}",
        )
        by_lower = {c.lower(): c for c in empty.columns}
        selected: dict[str, str] = {}
        for ours in ("ticker", *BAR_COLUMNS):
            theirs = self.ticker_column if ours == "ticker" else (self.columns.get(ours) or ours)
            found = theirs if theirs in empty.columns else by_lower.get(theirs.lower())
            if found is None:
                key = "data.ticker_column" if ours == "ticker" else f"data.columns.{ours}"
                raise DataError(
                    f"{relation.label} of {self.database.where()} has no column '{theirs}' for "
                    f"{ours} ({key}); its columns are {', '.join(empty.columns) or 'none'}. Set "
                    f"{key}=NAME"
                    + (", or alias it in data.query (... AS " + ours + ")." if self.query else ".")
                )
            selected[ours] = found
        for ours in BAR_COLUMNS:
            dtype = empty.schema[selected[ours]]
            ok = (
                (dtype == pl.Date or isinstance(dtype, pl.Datetime))
                if ours == "timestamp"
                else dtype.is_numeric()
            )
            if not ok:
                raise self._wrong_type(db, relation, values, selected, ours, dtype)
        return selected

    def _wrong_type(
        self,
        db: Database,
        relation: Relation,
        values,
        selected: dict,
        ours: str,
        dtype: pl.DataType,
    ) -> DataError:
        column = selected[ours]
        v = values()
        sample = db.read(
            v.bound_statement(
                f"SELECT CAST({quote(column)} AS VARCHAR) AS v FROM "
                f"{relation.sql(self.query, v)} AS source WHERE "
                f"{v.member(quote(selected['ticker']))} AND {quote(column)} IS NOT NULL LIMIT 1"
            ),
            f"reading column {column}",
        )
        example = f", e.g. {sample['v'][0]!r}" if sample.height else ""
        if ours == "timestamp":
            want = "a timestamp or date type (TIMESTAMP, TIMESTAMPTZ, DATE)"
            cast = f"CAST({column} AS TIMESTAMP) AS timestamp"
        else:
            want = "a number type (DOUBLE PRECISION, NUMERIC, INTEGER...)"
            cast = f"CAST({column} AS DOUBLE PRECISION) AS {ours}"
        return DataError(
            f"{relation.label} of {self.database.where()}: column '{column}' ({ours}) holds "
            f"{_type_name(dtype)}{example}; it must be {want}. Fix the column's type, or read "
            f"it through data.query with {cast}."
        )

    def _partitions(self, versions: dict) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
        """Half-open [lower, upper) ranges covering the probed bars, ``partition_days`` each."""
        firsts = [dt.datetime.fromisoformat(v[1]) for v in versions.values()]
        lasts = [dt.datetime.fromisoformat(v[2]) for v in versions.values()]
        rng = self.time_range
        lower = min(firsts) if rng.lower is None else max(rng.lower, min(firsts))
        upper = max(lasts) + dt.timedelta(microseconds=1)  # up to the probed version
        if rng.upper is not None:
            upper = min(upper, rng.upper)
        if self.partition_days is None:
            return [(lower, upper)]
        step = dt.timedelta(days=self.partition_days)
        cuts = []
        at = lower
        while at < upper:
            cuts.append((at, min(at + step, upper)))
            at += step
        return cuts

    def _read(
        self, db: Database, relation: Relation, selected: dict[str, str], values, k: int
    ) -> pl.DataFrame:
        """The mapped columns of partition ``k``."""
        listing = ", ".join(
            f"{quote(theirs)} AS {quote(ours)}" for ours, theirs in selected.items()
        )
        v = values()
        where = v.where(selected["ticker"], selected["timestamp"], k)
        return db.read_keyed(
            v.bound_statement(
                f"SELECT {listing} FROM {relation.sql(self.query, v)} AS source{where}"
            ),
            f"reading {relation.label}",
        )

    def _typed(self, frame: pl.DataFrame, relation: Relation) -> pl.DataFrame:
        """The rows in :data:`LOAD_COLUMNS` order and types, sorted by ticker and time. A table
        stored in its key's order (as the ingest command writes one) comes back in it, which
        is checked and kept; anything else is sorted."""
        stamp = frame["timestamp"]
        if stamp.dtype == pl.Date:
            stamp = stamp.cast(pl.Datetime("us"))
        frame = frame.with_columns(
            pl.col("ticker").cast(pl.String),
            _naive(stamp, self.timezone).cast(pl.Datetime("us")).alias("timestamp"),
            *(pl.col(c).cast(pl.Float64) for c in BAR_COLUMNS[1:]),
        )
        names = pl.Series(sorted(set(self.tickers)), dtype=pl.String)  # what the read returns
        starts = _ordered_starts(frame, names)
        if starts is None:
            frame = frame.sort("ticker", "timestamp", maintain_order=True)
            starts = frame["ticker"].search_sorted(names, side="left").to_numpy()
        counts = np.diff(np.append(starts, frame.height))
        rows = np.arange(frame.height, dtype=np.int64) - np.repeat(starts, counts) + 1
        frame = frame.with_columns(
            pl.lit(f"{self.database.masked()} {relation.label}").alias("_file"),
            pl.Series("_row", rows),  # 1-based per ticker
        )
        # the read selects our columns in order; a select would copy every chunk to align them
        return frame if frame.columns == list(LOAD_COLUMNS) else frame.select(*LOAD_COLUMNS)


def _ordered_starts(frame: pl.DataFrame, names: pl.Series) -> np.ndarray | None:
    """The first row of each ticker in ``names`` when the rows are sorted by ticker and, within
    a ticker, by time (ties included); None when they are not."""
    tickers = frame["ticker"]
    if frame.height == 0 or not tickers.is_sorted():
        return None
    starts = tickers.search_sorted(names, side="left").to_numpy()
    back = frame.select((pl.col("timestamp").diff() < pl.duration(microseconds=0)).arg_true())
    # a step back in time is only allowed where a new ticker starts
    return starts if set(back.to_series().to_list()) <= set(starts[1:].tolist()) else None


def _probe_sql(
    relation: Relation,
    query: str | None,
    v: Values,
    tcol: str,
    scol: str,
    digest: list[str],
    epoch_us: str,
) -> str:
    """Per ticker: the row count, the first and last timestamp inside the configured range,
    the exact sum of each ``digest`` column in millionths and of the bars' times in
    microseconds since the epoch.

    Of a table whose tickers are in a temporary table (PostgreSQL), one lookup per ticker (a
    LATERAL join on the primary key's leading column); else one grouped scan."""
    sums = "".join(  # as text: an exact big integer (Arrow hands a huge integer over as a double)
        f", CAST(sum(CASE WHEN abs({quote(c)}) < {DIGEST_LIMIT:g} "
        f"THEN CAST(floor({quote(c)} * {DIGEST_SCALE}) AS BIGINT) END) AS VARCHAR) AS d{i}"
        for i, c in enumerate(digest)
    )
    # The bars' times too, in whole microseconds since the epoch: a bar moved inside the range.
    sums += f", CAST(sum({epoch_us.format(quote(scol))}) AS VARCHAR) AS dt"
    count = f"count(*) AS n, min({quote(scol)}) AS first, max({quote(scol)}) AS last{sums}"
    if relation.table is not None and isinstance(v, TempTables):
        inside = v.where(None, scol, CONFIGURED).replace(" WHERE ", " AND ", 1)
        return (
            f"SELECT wanted.ticker, found.* FROM ({v.ticker_set()}) "
            f"AS wanted(ticker), LATERAL (SELECT {count} FROM {relation.sql(query, v)} AS source "
            f"WHERE {quote(tcol)} = wanted.ticker{inside}) AS found WHERE found.n > 0"
        )
    return (
        f"SELECT CAST({quote(tcol)} AS VARCHAR) AS ticker, {count} FROM "
        f"{relation.sql(query, v)} AS source{v.where(tcol, scol, CONFIGURED)} "
        f"GROUP BY {quote(tcol)}"
    )


def _exact(total: object) -> str | None:
    """A digest sum as an exact decimal string (the probe reads it as text)."""
    return None if total is None else str(int(total))


def _naive(series: pl.Series, timezone: str | None) -> pl.Series:
    """Zone-aware times converted to ``timezone`` (UTC when None) with the zone dropped."""
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
        return series.dt.convert_time_zone(timezone or "UTC").dt.replace_time_zone(None)
    return series


def _iso(value: object) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day).isoformat()
    return str(value)


def _type_name(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "text"
    return f"values of type {dtype}"
