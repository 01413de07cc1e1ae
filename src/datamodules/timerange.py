"""The time range a run reads (``data.start`` and ``data.end``), the same for every source.

Both ends are inclusive and in the data's own (naive) time: ``data.start=2005-01-01`` keeps
bars from midnight of that day, ``data.end=2012-12-31`` keeps every bar of that day, and a
time of day (``"2012-12-31 12:00"``) keeps bars up to and including that time. Internally
the range is half-open, ``[lower, upper)``, which is what the SQL source binds as its
parameters and what splits a long range into partitions. Light: stdlib and polars only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from datamodules.errors import ConfigError, DataError

FORMS = "YYYY-MM-DD or 'YYYY-MM-DD HH:MM[:SS]'"


@dataclass(frozen=True)
class TimeRange:
    """Bars with ``lower <= timestamp < upper``; None = unbounded on that side."""

    lower: dt.datetime | None = None
    upper: dt.datetime | None = None
    start: str | None = None  # as configured, for messages
    end: str | None = None

    @classmethod
    def from_config(cls, start: object, end: object) -> TimeRange:
        """The range of ``data.start`` and ``data.end`` (strings, dates or None); a
        ConfigError naming the key when one is not a date or time, or start is after end."""
        lower, start_text = _parse(start, "data.start")
        upper, end_text = _parse(end, "data.end")
        if upper is not None:
            whole_day = isinstance(end, dt.date) and not isinstance(end, dt.datetime)
            whole_day = whole_day or (isinstance(end, str) and len(end.strip()) == 10)
            upper = upper + (dt.timedelta(days=1) if whole_day else dt.timedelta(microseconds=1))
        if lower is not None and upper is not None and lower >= upper:
            raise ConfigError(
                f"data.start={start_text} is after data.end={end_text}; the range keeps bars "
                "from data.start to data.end, both included."
            )
        return cls(lower, upper, start_text, end_text)

    @property
    def bounded(self) -> bool:
        return self.lower is not None or self.upper is not None

    def describe(self) -> str:
        """``between data.start=... and data.end=...`` (the ends that are set), or ''."""
        parts = []
        if self.start is not None:
            parts.append(f"from data.start={self.start}")
        if self.end is not None:
            parts.append(f"to data.end={self.end}")
        return " ".join(parts)

    def key(self) -> list[str | None]:
        """JSON-able bounds, for the feature cache key."""
        return [_text(self.lower), _text(self.upper)]

    def expr(self, column: str = "timestamp") -> pl.Expr:
        """A polars predicate keeping the bars of the range."""
        keep = pl.lit(True)
        if self.lower is not None:
            keep = keep & (pl.col(column) >= self.lower)
        if self.upper is not None:
            keep = keep & (pl.col(column) < self.upper)
        return keep

    def apply(self, frame: pl.DataFrame, tickers: list[str], where: str) -> pl.DataFrame:
        """The rows of ``frame`` inside the range; a DataError when a ticker keeps none,
        naming its own first and last bar (``where`` names the source)."""
        if not self.bounded:
            return frame
        kept = frame.filter(self.expr())
        present = set(kept["ticker"].unique().to_list())
        empty = [t for t in tickers if t not in present]
        if empty:
            spans = []
            for ticker in empty:
                own = frame.filter(pl.col("ticker") == ticker)["timestamp"]
                if own.len():
                    spans.append(f"{ticker}'s bars run from {own.min()} to {own.max()}")
            raise DataError(
                f"{', '.join(empty)}: no bars {self.describe()} in {where}"
                + (f" ({'; '.join(spans)})" if spans else "")
                + ". Widen data.start / data.end or choose other env.tickers."
            )
        return kept


def _parse(value: object, key: str) -> tuple[dt.datetime | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and value.strip():
        try:
            stamp = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(
                f"{key} is {value!r}, which is not a date or time; give {FORMS} (in the data's "
                "own time), or null for no bound."
            ) from None
    else:
        raise ConfigError(f"{key} is {value!r}; give {FORMS}, or null for no bound.")
    if stamp.tzinfo is not None:
        raise ConfigError(
            f"{key} is {value!r}, with a time zone; give it without one: the range is in the "
            "data's own time (data.timezone for files and SQL)."
        )
    return stamp, str(value).strip()


def _text(stamp: dt.datetime | None) -> str | None:
    return None if stamp is None else stamp.isoformat()
