"""Connections to the two kinds of database, with reads straight into polars and errors a
user can act on.

- DuckDB (embedded): ``duckdb.connect``; a read is ``connection.sql(text, params=...).pl()``,
  DuckDB's own polars output.
- PostgreSQL: ADBC's libpq driver (``adbc_driver_postgresql``), read with
  ``polars.read_database`` over the ADBC connection (Arrow batches, no pandas in between).
  libpq resolves what the URI leaves out: PGPASSWORD, PGUSER, ``~/.pgpass``... (connectorx,
  polars' other engine, cannot bind parameters, and we never paste values into SQL.)

Every failure becomes a :class:`~datamodules.errors.DataError` of one paragraph that names
the database with its password masked: an unreachable server, a refused password, a missing
database, table or column, a query the database rejects, a DuckDB file another process has
locked. The drivers are imported when a connection is made, not with this module.
"""

from __future__ import annotations

import contextlib
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from datamodules.database.statements import (
    RANGE_TABLE,
    TICKER_TABLE,
    Bound,
    Parameters,
    Range,
    TempTables,
    Values,
    quote,
)
from datamodules.database.uri import DatabaseURI, mask_credentials
from datamodules.errors import DataError

log = logging.getLogger(__name__)

SYSTEM_SCHEMAS = ("information_schema", "pg_catalog", "pg_toast")
CREDENTIAL_HELP = (
    "The password comes from data.uri (postgresql://user:PASSWORD@host/db), the PGPASSWORD "
    "environment variable or the password file (~/.pgpass, or the file PGPASSFILE names)."
)


class Database(ABC):
    """An open connection: reads into polars, statements, transactions, the tables it holds."""

    uri: DatabaseURI
    default_schema: str

    @abstractmethod
    def read(self, bound: Bound, doing: str) -> pl.DataFrame:
        """The rows of ``bound`` (text and parameters) as a polars frame; ``doing`` names the
        action in error messages (e.g. "reading data.table bars")."""

    def read_keyed(self, bound: Bound, doing: str) -> pl.DataFrame:
        """:meth:`read` of rows whose first two columns are a key (ticker, timestamp), in the
        stored order where the database can keep it cheaply."""
        return self.read(bound, doing)

    @abstractmethod
    def execute(self, text: str, params: Sequence = (), doing: str = "") -> None:
        """Run a statement that returns no rows."""

    @abstractmethod
    def insert(self, table: tuple[str, ...], frame: pl.DataFrame, doing: str) -> None:
        """Append ``frame`` (its columns by name) to an existing table, in the open transaction."""

    @abstractmethod
    def values(self, tickers: Sequence[str], ranges: dict[int, Range]) -> Callable[[], Values]:
        """A maker of :class:`~datamodules.database.statements.Values` (one per statement)
        that send ``tickers`` and ``ranges`` to the database without pasting them."""

    @abstractmethod
    def begin(self) -> None: ...

    # Both drivers hold a DB-API connection as ``con``: commit, rollback and close are its own.
    con: Any

    def commit(self) -> None:
        self.con.commit()

    def rollback(self) -> None:
        self.con.rollback()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def tables(self) -> list[tuple[str, str]]:
        """(schema, table) of every table and view outside the system schemas."""
        frame = self.read(
            Bound(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('information_schema', 'pg_catalog', 'pg_toast') "
                "AND table_schema NOT LIKE '\\_timescaledb%' ESCAPE '\\' "
                "ORDER BY table_schema, table_name",
                (),
            ),
            "listing the tables",
        )
        return [(str(s), str(t)) for s, t in frame.iter_rows()]

    def find_table(self, parts: tuple[str, ...]) -> tuple[str, str] | None:
        """The (schema, table) that ``table`` or ``schema.table`` names, matched exactly or
        else case-insensitively (unquoted names fold to lower case in PostgreSQL); None when
        there is none."""
        schema, name = parts if len(parts) == 2 else (self.default_schema, parts[0])
        tables = self.tables()
        for s, t in tables:
            if s == schema and t == name:
                return s, t
        for s, t in tables:
            if s.lower() == schema.lower() and t.lower() == name.lower():
                return s, t
        return None

    def table_names(self) -> str:
        """The tables as a user names them (no schema for the default one), for messages."""
        names = [t if s == self.default_schema else f"{s}.{t}" for s, t in self.tables()]
        return ", ".join(names) if names else "no tables"


def connect(uri: DatabaseURI, *, write: bool = False, timezone: str | None = None) -> Database:
    """Open ``uri`` (read-only unless ``write``); ``timezone`` (an IANA name already checked)
    is the session time zone, in which naive bounds meet zone-aware columns."""
    if uri.kind == "duckdb":
        return DuckDB(uri, write=write, timezone=timezone)
    return Postgres(uri, write=write, timezone=timezone)


# ------------------------------------------------------------------------------ DuckDB
class DuckDB(Database):
    default_schema = "main"

    def __init__(self, uri: DatabaseURI, *, write: bool, timezone: str | None) -> None:
        import duckdb

        self.uri = uri
        self._duckdb = duckdb
        path = Path(uri.path)
        if not write and not path.is_file():
            raise DataError(
                f"data.uri: there is no DuckDB file at {path} (looked at {path.resolve()}). "
                "Create one with `python -m experiments.ingest sample --to "
                f"{uri.masked()}` (or a CSV / Parquet file instead of sample), or fix the path; "
                "relative paths are taken from the folder you ran the command in."
            )
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.con = duckdb.connect(str(path), read_only=not write)
        except duckdb.Error as err:
            raise _duckdb_error(err, uri, "opening it") from None
        if timezone:
            self.execute(
                f"SET TimeZone = '{timezone.replace(chr(39), '')}'", (), "setting the zone"
            )

    def read(self, bound: Bound, doing: str) -> pl.DataFrame:
        try:
            return self.con.sql(bound.text, params=list(bound.params) or None).pl()
        except self._duckdb.Error as err:
            raise _duckdb_error(err, self.uri, doing) from None

    def read_keyed(self, bound: Bound, doing: str) -> pl.DataFrame:
        """The read in one thread: a parallel scan hands its vectors back in the order its
        threads finish them, and putting millions of rows back in key order costs more than a
        second thread saves (``bench/sql_read.py``); one thread returns a table stored in key
        order (as the ingest command writes it) in that order."""
        self.execute("SET threads = 1", (), doing)
        try:
            return self.read(bound, doing)
        finally:
            self.execute("RESET threads", (), doing)

    def execute(self, text: str, params: Sequence = (), doing: str = "") -> None:
        try:
            self.con.execute(text, list(params) or None)
        except self._duckdb.Error as err:
            raise _duckdb_error(err, self.uri, doing or "running a statement") from None

    def insert(self, table: tuple[str, ...], frame: pl.DataFrame, doing: str) -> None:
        columns = ", ".join(quote(c) for c in frame.columns)
        # stored in key order: reads come back in it, and scans skip blocks by ticker
        keyed = {"ticker", "timestamp"} <= set(frame.columns)
        order = f" ORDER BY {quote('ticker')}, {quote('timestamp')}" if keyed else ""
        self.con.register("_incoming_bars", frame.to_arrow())
        try:
            self.execute(
                f"INSERT INTO {'.'.join(quote(p) for p in table)} ({columns}) "
                f"SELECT {columns} FROM _incoming_bars{order}",
                (),
                doing,
            )
        finally:
            # in an aborted transaction the view goes with the rollback
            with contextlib.suppress(self._duckdb.Error):
                self.con.unregister("_incoming_bars")

    def values(self, tickers: Sequence[str], ranges: dict[int, Range]) -> Callable[[], Values]:
        return lambda: Parameters(tickers, ranges, list_param=True)

    def begin(self) -> None:
        self.con.begin()


def _duckdb_error(err: Exception, uri: DatabaseURI, doing: str) -> DataError:
    text = _first_line(err)
    kind = type(err).__name__
    if "lock" in text.lower():
        return DataError(
            f"data.uri: {uri.where()} is locked by another process ({text}); {doing} needs it. "
            "Close the program that holds it open for writing (a DuckDB file has one writer "
            "at a time), then run again."
        )
    if kind == "ConstraintException":
        return DataError(f"{uri.where()}: {doing} broke a constraint: {text}.")
    return DataError(f"{uri.where()}: {doing} failed: {text}")


# ------------------------------------------------------------------------------ PostgreSQL
class Postgres(Database):
    default_schema = "public"

    def __init__(self, uri: DatabaseURI, *, write: bool, timezone: str | None) -> None:
        import adbc_driver_manager
        import adbc_driver_postgresql.dbapi as pg

        self.uri = uri
        self._errors = adbc_driver_manager.Error
        try:
            # Reads run one statement each (autocommit); writes go in one transaction.
            self.con = pg.connect(uri.libpq(), autocommit=not write)
        except adbc_driver_manager.Error as err:
            raise _connect_error(err, uri) from None
        if timezone:
            self.read(
                Bound("SELECT set_config('TimeZone', $1, false)", (timezone,)), "setting the zone"
            )
        row = self.read(Bound("SELECT current_schema() AS s", ()), "reading the schema")
        self.default_schema = str(row["s"][0] or "public")

    def read(self, bound: Bound, doing: str) -> pl.DataFrame:
        options = {"parameters": tuple(bound.params)} if bound.params else None
        try:
            return pl.read_database(bound.text, connection=self.con, execute_options=options)
        except self._errors as err:
            raise _pg_error(err, self.uri, doing) from None

    def execute(self, text: str, params: Sequence = (), doing: str = "") -> None:
        try:
            with self.con.cursor() as cursor:
                cursor.execute(text, tuple(params) or None)
        except self._errors as err:
            raise _pg_error(err, self.uri, doing or "running a statement") from None

    def insert(self, table: tuple[str, ...], frame: pl.DataFrame, doing: str) -> None:
        name = table[-1]
        schema = table[0] if len(table) == 2 else None
        try:
            with self.con.cursor() as cursor:  # COPY in binary, through ADBC's bulk ingest
                cursor.adbc_ingest(name, frame.to_arrow(), mode="append", db_schema_name=schema)
        except self._errors as err:
            raise _pg_error(err, self.uri, doing) from None

    def values(self, tickers: Sequence[str], ranges: dict[int, Range]) -> Callable[[], Values]:
        """Temporary tables filled by binary COPY (the read then streams by COPY too); bound
        parameters when the user may not create temporary tables."""
        import pyarrow as pa

        made = TempTables(tickers, ranges)
        names, bounds = made.rows()
        try:
            with self.con.cursor() as cursor:
                for table in (TICKER_TABLE, RANGE_TABLE):
                    cursor.execute(f"DROP TABLE IF EXISTS {table}")
                cursor.adbc_ingest(
                    TICKER_TABLE.split(".")[1],
                    pa.table({"ticker": pa.array(names, pa.string())}),
                    mode="create",
                    temporary=True,
                )
                cursor.adbc_ingest(
                    RANGE_TABLE.split(".")[1],
                    pa.table(
                        {
                            "k": pa.array([b[0] for b in bounds], pa.int32()),
                            "lower": pa.array([b[1] for b in bounds], pa.timestamp("us")),
                            "upper": pa.array([b[2] for b in bounds], pa.timestamp("us")),
                        }
                    ),
                    mode="create",
                    temporary=True,
                )
                for table in (TICKER_TABLE, RANGE_TABLE):  # row counts for the planner
                    cursor.execute(f"ANALYZE {table}")
        except self._errors as err:
            log.info(
                "no temporary tables on %s (%s); binding parameters",
                self.uri.where(),
                mask_credentials(_first_line(err)),
            )
            return lambda: Parameters(tickers, ranges, list_param=False)
        return lambda: TempTables(tickers, ranges)

    def begin(self) -> None:
        pass  # not autocommit when opened for writing: a transaction is always open


def _connect_error(err: Exception, uri: DatabaseURI) -> DataError:
    text = mask_credentials(str(err))
    low = text.lower()
    where = uri.where()
    libpq = _libpq_reason(text)
    masked = (
        " data.uri's password is *** (as a saved config shows it), so it was not sent; "
        "give the real one through PGPASSWORD or the password file."
        if uri.masked_password
        else ""
    )
    if "password authentication failed" in low:
        return DataError(
            f"data.uri: {where} refused the password (password authentication failed for "
            f"user '{uri.user or 'the default user'}').{masked} {CREDENTIAL_HELP} The password "
            "itself is never shown."
        )
    if "no password supplied" in low or "password is required" in low:
        return DataError(
            f"data.uri: {where} asks for a password and none was given.{masked} {CREDENTIAL_HELP}"
        )
    if 'database "' in low and "does not exist" in low:
        return DataError(
            f"data.uri: {where}: the database does not exist ({libpq}). Create it (createdb) "
            "or name another one in data.uri."
        )
    if "role" in low and "does not exist" in low:
        return DataError(f"data.uri: {where}: the user does not exist ({libpq}).")
    unreachable = (
        "connection refused",
        "could not translate host name",
        "timeout expired",
        "no route to host",
        "network is unreachable",
        "could not connect",
        "no such file or directory",
    )
    if any(s in low for s in unreachable):
        return DataError(
            f"data.uri: cannot reach {where} ({libpq}). Check that the server is running "
            "and accepts TCP connections on that host and port, and that data.uri names it "
            f"({uri.masked()})."
        )
    return DataError(f"data.uri: cannot connect to {where}: {libpq}.")


def _pg_error(err: Exception, uri: DatabaseURI, doing: str) -> DataError:
    text = mask_credentials(str(err))
    state = getattr(err, "sqlstate", None) or _sqlstate(text)
    reason = _server_message(text)
    if state in ("08000", "08003", "08006", "57P01") or "server closed" in text.lower():
        return DataError(f"{uri.where()}: the connection was lost while {doing} ({reason}).")
    if state == "23505":
        return DataError(f"{uri.where()}: {doing} broke a constraint: {reason}.")
    return DataError(f"{uri.where()}: {doing} failed: {reason}.")


def _libpq_reason(text: str) -> str:
    """The useful part of a libpq connection error: after 'failed:' and without hints."""
    match = re.search(r"failed:\s*(?:FATAL:\s*)?(.+?)(?:\n|$)", text)
    reason = match.group(1) if match else _first_line(text)
    return reason.strip().rstrip(".")


def _server_message(text: str) -> str:
    """The server's ``ERROR:`` line (and DETAIL) of an ADBC error, without the query echo."""
    match = re.search(r"ERROR:\s*(.+?)(?:\n|$)", text)
    reason = match.group(1).strip() if match else _first_line(text)
    detail = re.search(r"DETAIL:\s*(.+?)(?:\n|$)", text)
    if detail:
        reason += f" ({detail.group(1).strip().rstrip('.')})"
    return reason.rstrip(".")


def _sqlstate(text: str) -> str | None:
    match = re.search(r"SQLSTATE:\s*([0-9A-Z]{5})", text)
    return match.group(1) if match else None


def _first_line(err: object) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return mask_credentials(lines[0].strip() if lines else type(err).__name__)
