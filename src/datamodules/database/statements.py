"""SQL text built from names we check and values we never paste: identifiers are validated and
quoted, and the tickers and time bounds of a read reach the database as data, not as SQL.

Two ways of sending the values, chosen by the connection (:meth:`Database.values`):

- :class:`Parameters` (DuckDB, and PostgreSQL when it cannot create temporary tables):
  positional ``$n`` parameters; the tickers are one list parameter in DuckDB
  (``list_contains($1, ticker)``), one parameter each otherwise.
- :class:`TempTables` (PostgreSQL): the tickers and the bounds are the rows of two
  session-temporary tables the driver fills by binary COPY; the read's own text then has no
  parameter, so ADBC streams its result by ``COPY ... TO STDOUT`` (binary), which it cannot do
  for a statement with parameters.

A user's ``data.query`` may name ``:tickers`` (for ``IN (:tickers)``), ``:start`` and ``:end``
(the configured range, the widest one when unset); :func:`substitute` fills them in the same
way. A range is referred to by a whole number ``k``: -1 the configured range, 0, 1, ... the
partitions of a long read.
"""

from __future__ import annotations

import datetime as dt
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from datamodules.errors import ConfigError

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")
PLACEHOLDER = re.compile(r"(?<![:\w]):(tickers|start|end)\b")
# The widest range, bound for :start / :end when data.start / data.end are unset.
EARLIEST = dt.datetime(1, 1, 1)
LATEST = dt.datetime(9999, 12, 31, 23, 59, 59)
CONFIGURED = -1  # k of the configured range (data.start, data.end)
TICKER_TABLE = "pg_temp.bars_filter_tickers"
RANGE_TABLE = "pg_temp.bars_filter_ranges"

Range = tuple[dt.datetime | None, dt.datetime | None]


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def table_parts(name: object, key: str = "data.table") -> tuple[str, ...]:
    """``table`` or ``schema.table`` as its parts; a ConfigError naming ``key`` otherwise."""
    if not isinstance(name, str) or not all(IDENTIFIER.match(p) for p in name.split(".")):
        raise ConfigError(
            f"{key} is {name!r}; give a table name (letters, digits, _), optionally with its "
            "schema: bars or market.bars."
        )
    parts = tuple(name.split("."))
    if len(parts) > 2:
        raise ConfigError(f"{key} is {name!r}; give table or schema.table.")
    return parts


def quoted_table(parts: Sequence[str]) -> str:
    return ".".join(quote(p) for p in parts)


@dataclass(frozen=True)
class Bound:
    """SQL text with ``$n`` placeholders and the values bound to them, in order."""

    text: str
    params: tuple = ()


class Values(ABC):
    """The tickers and ranges of one statement, as SQL snippets that carry no value."""

    def __init__(self, tickers: Sequence[str], ranges: dict[int, Range]) -> None:
        self.tickers = [str(t) for t in tickers]
        self.ranges = dict(ranges)
        self.params: list = []

    @abstractmethod
    def member(self, column: str) -> str:
        """A predicate: ``column`` (quoted SQL) is one of the tickers."""

    @abstractmethod
    def ticker_set(self) -> str:
        """What goes inside ``IN ( ... )`` for ``:tickers``."""

    @abstractmethod
    def bound(self, side: str, k: int) -> str:
        """An expression of range ``k``'s ``lower`` or ``upper`` bound (never NULL)."""

    def where(self, ticker: str | None, timestamp: str, k: int) -> str:
        """``WHERE`` the ticker (quoted column, or None for every ticker) is one of ours and
        the timestamp lies in range ``k`` (each bound only when it is set)."""
        lower, upper = self.ranges.get(k, (None, None))
        parts = [self.member(quote(ticker))] if ticker is not None else []
        if lower is not None:
            parts.append(f"{quote(timestamp)} >= {self.bound('lower', k)}")
        if upper is not None:
            parts.append(f"{quote(timestamp)} < {self.bound('upper', k)}")
        return " WHERE " + (" AND ".join(parts) if parts else "TRUE")

    def bound_statement(self, text: str) -> Bound:
        return Bound(text, tuple(self.params))


class Parameters(Values):
    """Positional ``$n`` parameters; ``list_param``: the tickers as one list parameter
    (DuckDB), else one parameter per ticker."""

    def __init__(self, tickers, ranges, list_param: bool) -> None:
        super().__init__(tickers, ranges)
        self.list_param = list_param

    def value(self, value: object) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def member(self, column: str) -> str:
        if self.list_param:
            return f"list_contains({self.value(self.tickers)}, {column})"
        return f"{column} IN ({self.ticker_set()})"

    def ticker_set(self) -> str:
        if self.list_param:
            return f"SELECT unnest({self.value(self.tickers)})"
        return ", ".join(self.value(t) for t in self.tickers) or "NULL"

    def bound(self, side: str, k: int) -> str:
        lower, upper = self.ranges.get(k, (None, None))
        value = lower if side == "lower" else upper
        return self.value(value if value is not None else (EARLIEST if side == "lower" else LATEST))


class TempTables(Values):
    """The values as rows of :data:`TICKER_TABLE` (ticker) and :data:`RANGE_TABLE` (k, lower,
    upper), which the connection fills before the statement runs."""

    def member(self, column: str) -> str:
        return f"{column} = ANY(ARRAY(SELECT ticker FROM {TICKER_TABLE}))"

    def ticker_set(self) -> str:
        return f"SELECT ticker FROM {TICKER_TABLE}"

    def bound(self, side: str, k: int) -> str:
        return f"(SELECT {side} FROM {RANGE_TABLE} WHERE k = {int(k)})"

    def rows(self) -> tuple[list[str], list[tuple[int, dt.datetime, dt.datetime]]]:
        """The tickers, and (k, lower, upper) of every range, unset bounds widest."""
        ranges = [
            (k, lower or EARLIEST, upper or LATEST) for k, (lower, upper) in self.ranges.items()
        ]
        return self.tickers, ranges


def substitute(query: str, values: Values) -> str:
    """``query`` with ``:tickers``, ``:start`` and ``:end`` replaced by ``values``' snippets
    for the configured range."""

    def one(match: re.Match) -> str:
        name = match.group(1)
        if name == "tickers":
            return values.ticker_set()
        return values.bound("lower" if name == "start" else "upper", CONFIGURED)

    return PLACEHOLDER.sub(one, query)
